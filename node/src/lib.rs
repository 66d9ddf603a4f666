//! The Meridian server: configuration, the thread-per-core runtime and the
//! `meridian` binary (server and CLI).
//!
//! One glommio executor per shard owns a share of the node's vnodes (one
//! engine store each); shards share nothing and reach each other only over
//! bounded inboxes. Every shard accepts client connections on the same port
//! (SO_REUSEPORT) and coordinates the requests it receives.
#![deny(unsafe_code)]

pub mod cli;
pub mod cluster;
pub mod config;
pub mod connection;
pub mod hlc;
pub mod info;
pub mod journal;
pub mod metrics;
pub mod partition;
pub mod server;
pub mod shard;
pub mod sync;
pub mod xdc;

pub use config::Config;

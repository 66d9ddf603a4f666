//! Benchmarks of Meridian against its peers.
//!
//! - [`engine_peers`]: the storage engine against fjall, redb and LMDB
//!   (heed), one thread, same data, alternated rounds; driven by the
//!   `engine_compare` binary (`cargo run --release -p meridian-bench --bin
//!   engine_compare`).
#![deny(unsafe_code)]

pub mod engine_peers;

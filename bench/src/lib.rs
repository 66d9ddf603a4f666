//! Benchmarks of Meridian against its peers.
//!
//! - [`engine_peers`]: the storage engine against fjall, redb and LMDB
//!   (heed), one thread, same data, alternated rounds; driven by the
//!   `engine_compare` binary (`cargo run --release -p meridian-bench --bin
//!   engine_compare`).
//! - [`load`]: the `meridian-bench` load generator (Meridian's protocol or
//!   RESP, closed loop or constant rate, HdrHistogram latencies), used by
//!   `bench/scripts/compare_server.sh` to compare the server with Redis.
#![deny(unsafe_code)]

pub mod engine_peers;
pub mod load;

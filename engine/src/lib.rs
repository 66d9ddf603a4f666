//! Meridian's storage engine: one memory-mapped, log-structured store per
//! vnode (Bitcask-like).
//!
//! This crate is plain synchronous Rust with no runtime and no knowledge of
//! the rest of Meridian; it is usable embedded. A store is a directory of
//! append-only segment files of checksummed records ([`format`] draws the
//! bytes), an in-memory key directory pointing at each key's newest record,
//! hint files that let start-up skip values, compaction in bounded slices,
//! a log-tailing cursor API (replication's durable queue) and anti-entropy
//! digests per bucket of key hashes.
//!
//! ```no_run
//! use meridian_engine::{Options, Store, Version};
//! let mut store = Store::open("/tmp/vnode-0", Options::default())?;
//! store.put(b"key", b"value", Version::new(1 << 16, 1), 0)?;
//! store.sync()?;
//! assert_eq!(&store.get(b"key")?.expect("present").value[..], b"value");
//! # Ok::<(), meridian_engine::Error>(())
//! ```
//!
//! Durability is the caller's to drive: every write returns the log
//! position it must reach; [`Store::sync_plan`] lists the files to
//! fdatasync and [`Store::sync_completed`] records that they were, so a
//! thread-per-core server can issue the syncs through io_uring and
//! acknowledge a whole group of writes with one sync (group commit).
//! [`Store::sync`] does it inline.
#![deny(unsafe_code)]

mod compaction;
mod cursor;
mod digest;
mod error;
pub mod format;
mod fsutil;
mod hints;
pub mod journal;
mod keydir;
mod mapped;
mod options;
mod prefetch;
mod recovery;
mod salvage;
mod segment;
mod slot_index;
mod store;
mod words;

pub use compaction::CompactionProgress;
pub use cursor::{CursorStatus, LogBatch, LogRecord};
pub use error::{Applied, Error, Result};
pub use format::{RecordKind, Version};
pub use fsutil::{replace_file, sync_directory};
pub use options::{Clock, Durability, Options, SystemClock};
pub use salvage::{salvage, SalvageReport};
pub use store::{
    LogPosition, LookupWarmup, Stats, Store, StoredEntry, SyncPlan, SyncTarget, WriteReceipt,
};

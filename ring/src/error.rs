//! The ring's errors.
//!
//! A refused plan (the caller asked for something the ring cannot do) is kept
//! apart from a document that does not decode (bytes that do not check out)
//! and from I/O failure while persisting it, because each calls for a
//! different reaction: fix the request, discard the copy, or look at the disk.

use std::path::PathBuf;

/// Result alias of the ring.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A ring parameter is outside its limits.
    #[error("invalid ring setting {name}: {reason}")]
    InvalidSetting { name: &'static str, reason: String },
    /// The plan refers to a node the ring does not know, or asks for a
    /// membership change its state does not allow.
    #[error("cannot plan for node {node}: {reason}")]
    Refused { node: u16, reason: String },
    /// `complete_transfer` on a partition without a pending transfer.
    #[error("partition {partition} has no pending transfer")]
    NoTransfer { partition: u32 },
    /// Two documents of different clusters or ring sizes.
    #[error("ring documents do not match: {reason}")]
    Mismatch { reason: String },
    /// Bytes that are not a valid ring document.
    #[error("corrupt ring document at byte {offset}: {reason}")]
    Corrupt { offset: usize, reason: String },
    /// A decoded document whose content breaks a ring invariant.
    #[error("invalid ring document: {reason}")]
    Invalid { reason: String },
    /// Reading or replacing the persisted file failed.
    #[error("I/O error during {operation} on {}: {source}", path.display())]
    Io {
        operation: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The engine's file replacement helper failed.
    #[error("persisting the ring failed: {0}")]
    Persist(#[from] meridian_engine::Error),
}

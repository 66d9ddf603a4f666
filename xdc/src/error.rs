//! The crate's errors: decoding (corruption, kept apart from I/O), limits,
//! and the engine's errors passed through.

use std::path::PathBuf;

/// Why an XDC operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Fewer bytes than the layout needs.
    #[error("{what}: truncated, {needed} bytes needed, {available} available")]
    Truncated {
        what: &'static str,
        needed: u64,
        available: u64,
    },
    /// A format version this build does not read.
    #[error("{what}: unsupported format version {found}")]
    UnsupportedVersion { what: &'static str, found: u8 },
    /// A length or count above its limit (checked before allocating).
    #[error("{name} is {found}, above the limit {max}")]
    Limit {
        name: &'static str,
        found: u64,
        max: u64,
    },
    /// Bytes that are not a valid body.
    #[error("{what}: corrupt at offset {offset}: {reason}")]
    Corrupt {
        what: &'static str,
        offset: u64,
        reason: String,
    },
    /// The records do not hash to the stored checksum.
    #[error("{what}: checksum mismatch (stored {stored:#018x}, computed {computed:#018x})")]
    ChecksumMismatch {
        what: &'static str,
        stored: u64,
        computed: u64,
    },
    /// A body for another link.
    #[error("body for link {found}, expected link {expected}")]
    WrongLink { expected: u32, found: u32 },
    /// A cursor file that is not one (or not this link's).
    #[error("cursor file {path}: {reason}")]
    CursorFile { path: PathBuf, reason: String },
    /// The storage engine failed (reading the log, replacing a file).
    #[error(transparent)]
    Engine(#[from] meridian_engine::Error),
}

pub type Result<T> = std::result::Result<T, Error>;

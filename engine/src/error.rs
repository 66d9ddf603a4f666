//! The engine's errors.
//!
//! Corruption (bytes on disk that do not check out) is kept apart from I/O
//! failure (the operating system said no) and from refused input (a caller's
//! key or value breaks a limit), because an operator acts differently on each.

use std::io;
use std::path::PathBuf;

use crate::format::Version;

/// Result alias of the engine.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The operating system failed an operation on a file.
    #[error("I/O error during {operation} on {}: {source}", path.display())]
    Io {
        operation: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Bytes on disk that do not check out.
    #[error("corrupt data in {} at offset {offset}: {reason}", path.display())]
    Corrupt {
        path: PathBuf,
        offset: u64,
        reason: String,
    },
    #[error("key of {length} bytes exceeds the maximum of {maximum}")]
    KeyTooLarge { length: usize, maximum: usize },
    #[error("value of {length} bytes exceeds the maximum of {maximum}")]
    ValueTooLarge { length: usize, maximum: usize },
    #[error("keys must not be empty")]
    EmptyKey,
    /// A sync (or, in a server, a journal write) failed earlier; the kernel
    /// may have dropped dirty pages, so no more writes are accepted until
    /// the store is reopened (the server restarted).
    #[error("writes refused until restart: an earlier write or sync failed ({reason})")]
    WritesRefused { reason: String },
    /// The cursor asked for a position whose segment was compacted away.
    #[error("log cursor {name:?} fell behind: position {segment}:{offset} is no longer retained")]
    CursorFellBehind {
        name: String,
        segment: u32,
        offset: u32,
    },
    #[error("invalid log position {segment}:{offset}: {reason}")]
    InvalidPosition {
        segment: u32,
        offset: u32,
        reason: String,
    },
    #[error("invalid option {name}: {reason}")]
    InvalidOption { name: &'static str, reason: String },
    /// Another process holds the store's lock file.
    #[error("store {} is locked by another process", path.display())]
    Locked { path: PathBuf },
}

impl Error {
    pub(crate) fn io(
        operation: &'static str,
        path: impl Into<PathBuf>,
        source: io::Error,
    ) -> Error {
        Error::Io {
            operation,
            path: path.into(),
            source,
        }
    }

    pub(crate) fn corrupt(
        path: impl Into<PathBuf>,
        offset: u64,
        reason: impl Into<String>,
    ) -> Error {
        Error::Corrupt {
            path: path.into(),
            offset,
            reason: reason.into(),
        }
    }

    /// True for corruption on disk, as opposed to I/O or input errors.
    pub fn is_corruption(&self) -> bool {
        matches!(self, Error::Corrupt { .. })
    }
}

/// What a write did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Applied {
    /// The record was appended and is now the key's newest version.
    Written,
    /// The store already holds this version or a newer one: nothing written.
    Stale { current: Version },
}

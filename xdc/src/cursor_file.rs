//! The shipper's persisted cursor: one small file per link and vnode.
//!
//! ```text
//! offset size field
//!  0      1   format version (1)
//!  1      3   reserved, zero
//!  4      4   link id
//!  8      4   acknowledged log position: segment
//! 12      4   acknowledged log position: offset
//! 16      4   epoch (bumped at every start; high half of sequence numbers)
//! 20      4   reserved, zero
//! 24      8   xxh3-64 of bytes 0..24
//! ```
//!
//! Invariants:
//! - the file is only ever replaced whole, through
//!   [`meridian_engine::replace_file`] (temporary, fdatasync, rename, fsync
//!   of the directory): a crash leaves the old cursor or the new one;
//! - the position saved is one the remote side acknowledged, so a restart
//!   replays at most the unacknowledged tail (harmless: applying is
//!   idempotent);
//! - the epoch saved at a start is greater than every epoch used before, so
//!   sequence numbers are never reused across restarts.

use std::path::{Path, PathBuf};

use meridian_engine::LogPosition;
use xxhash_rust::xxh3::xxh3_64;

use crate::error::{Error, Result};
use crate::format::FORMAT_VERSION;

const LINK_AT: usize = 4;
const SEGMENT_AT: usize = 8;
const OFFSET_AT: usize = 12;
const EPOCH_AT: usize = 16;
const CHECKSUM_AT: usize = 24;
/// Bytes of a cursor file.
pub const CURSOR_FILE_LEN: usize = 32;
const _: () = assert!(CHECKSUM_AT + 8 == CURSOR_FILE_LEN);

/// What a cursor file holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CursorState {
    pub link_id: u32,
    pub position: LogPosition,
    pub epoch: u32,
}

impl CursorState {
    pub fn encode(&self) -> [u8; CURSOR_FILE_LEN] {
        let mut bytes = [0u8; CURSOR_FILE_LEN];
        bytes[0] = FORMAT_VERSION;
        bytes[LINK_AT..LINK_AT + 4].copy_from_slice(&self.link_id.to_le_bytes());
        bytes[SEGMENT_AT..SEGMENT_AT + 4].copy_from_slice(&self.position.segment.to_le_bytes());
        bytes[OFFSET_AT..OFFSET_AT + 4].copy_from_slice(&self.position.offset.to_le_bytes());
        bytes[EPOCH_AT..EPOCH_AT + 4].copy_from_slice(&self.epoch.to_le_bytes());
        let checksum = xxh3_64(&bytes[..CHECKSUM_AT]);
        bytes[CHECKSUM_AT..].copy_from_slice(&checksum.to_le_bytes());
        bytes
    }

    /// Decodes and checks; `Err(reason)` on anything but a valid file.
    pub fn decode(bytes: &[u8]) -> std::result::Result<CursorState, String> {
        if bytes.len() != CURSOR_FILE_LEN {
            return Err(format!("{} bytes, expected {CURSOR_FILE_LEN}", bytes.len()));
        }
        let word = |at: usize| {
            u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
        };
        let mut stored = [0u8; 8];
        stored.copy_from_slice(&bytes[CHECKSUM_AT..]);
        let stored = u64::from_le_bytes(stored);
        let computed = xxh3_64(&bytes[..CHECKSUM_AT]);
        if stored != computed {
            return Err(format!(
                "checksum mismatch (stored {stored:#018x}, computed {computed:#018x})"
            ));
        }
        if bytes[0] != FORMAT_VERSION {
            return Err(format!("unsupported format version {}", bytes[0]));
        }
        Ok(CursorState {
            link_id: word(LINK_AT),
            position: LogPosition {
                segment: word(SEGMENT_AT),
                offset: word(OFFSET_AT),
            },
            epoch: word(EPOCH_AT),
        })
    }
}

/// A link's cursor file on disk.
#[derive(Clone, Debug)]
pub struct CursorFile {
    path: PathBuf,
    link_id: u32,
}

impl CursorFile {
    pub fn new(path: impl Into<PathBuf>, link_id: u32) -> CursorFile {
        CursorFile {
            path: path.into(),
            link_id,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn corrupt(&self, reason: String) -> Error {
        Error::CursorFile {
            path: self.path.clone(),
            reason,
        }
    }

    /// Reads the saved state; `None` when no file exists yet.
    pub fn load(&self) -> Result<Option<CursorState>> {
        let bytes = match std::fs::read(&self.path) {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(self.corrupt(format!("read: {error}"))),
        };
        let state = CursorState::decode(&bytes).map_err(|reason| self.corrupt(reason))?;
        if state.link_id != self.link_id {
            return Err(self.corrupt(format!(
                "belongs to link {}, not link {}",
                state.link_id, self.link_id
            )));
        }
        Ok(Some(state))
    }

    /// Replaces the file (crash-safe). Call only with an acknowledged position.
    pub fn save(&self, position: LogPosition, epoch: u32) -> Result<()> {
        let state = CursorState {
            link_id: self.link_id,
            position,
            epoch,
        };
        meridian_engine::replace_file(&self.path, &state.encode())?;
        Ok(())
    }

    /// At a start: loads the saved state (or starts at `start` when there is
    /// none), bumps the epoch and saves it before anything is sent.
    pub fn start(&self, start: LogPosition) -> Result<CursorState> {
        let saved = self.load()?;
        let (position, epoch) = match saved {
            Some(state) => (
                state.position,
                state
                    .epoch
                    .checked_add(1)
                    .ok_or_else(|| self.corrupt("epoch exhausted".to_string()))?,
            ),
            None => (start, 1),
        };
        self.save(position, epoch)?;
        Ok(CursorState {
            link_id: self.link_id,
            position,
            epoch,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_bumps_the_epoch_and_keeps_the_position() {
        let directory = tempfile::tempdir().expect("tempdir");
        let file = CursorFile::new(directory.path().join("link-3.cursor"), 3);
        assert_eq!(file.load().expect("load"), None);
        let start = LogPosition {
            segment: 1,
            offset: 32,
        };
        let first = file.start(start).expect("start");
        assert_eq!((first.position, first.epoch), (start, 1));
        let acked = LogPosition {
            segment: 2,
            offset: 900,
        };
        file.save(acked, first.epoch).expect("save");
        let second = file.start(start).expect("restart");
        assert_eq!((second.position, second.epoch), (acked, 2));
    }

    #[test]
    fn corruption_and_wrong_link_are_refused() {
        let directory = tempfile::tempdir().expect("tempdir");
        let path = directory.path().join("cursor");
        let file = CursorFile::new(&path, 3);
        file.save(
            LogPosition {
                segment: 1,
                offset: 40,
            },
            1,
        )
        .expect("save");
        assert!(CursorFile::new(&path, 4).load().is_err());
        let mut bytes = std::fs::read(&path).expect("read");
        bytes[SEGMENT_AT] ^= 0x10;
        std::fs::write(&path, &bytes).expect("write");
        assert!(matches!(file.load(), Err(Error::CursorFile { .. })));
    }
}

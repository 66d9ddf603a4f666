//! The positions a link has shipped and had acknowledged, per vnode: one
//! small file per link, `<data_dir>/xdc/<link>/cursors.json`.
//!
//! One file per link (not per vnode) so that saving every vnode's position
//! costs one fsync, whatever the ring size. The file also carries the
//! link's epoch, bumped and saved at every start before anything is sent,
//! so batch sequence numbers (`epoch << 32 | counter`) are never reused.
//!
//! Invariants:
//! - a position is saved only after the remote side acknowledged
//!   everything before it: a crash replays, never skips;
//! - the file is replaced atomically; a file that does not parse is
//!   reported and treated as absent (shipping restarts from each vnode's
//!   oldest retained record — replay is harmless, applying is idempotent).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use meridian_engine::LogPosition;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkCursors {
    pub link_id: u32,
    pub epoch: u32,
    /// partition → (segment, offset) acknowledged.
    pub positions: BTreeMap<u32, (u32, u32)>,
}

impl LinkCursors {
    pub fn directory(data_dir: &Path, link: &str) -> PathBuf {
        data_dir.join("xdc").join(link)
    }

    fn path(data_dir: &Path, link: &str) -> PathBuf {
        LinkCursors::directory(data_dir, link).join("cursors.json")
    }

    /// Loads the link's cursors for `link_id` (a file of another link id —
    /// the remote datacenter changed — starts afresh), bumps the epoch and
    /// saves before returning.
    pub fn start(data_dir: &Path, link: &str, link_id: u32) -> Result<LinkCursors, String> {
        let path = LinkCursors::path(data_dir, link);
        let mut cursors = match std::fs::read(&path) {
            Ok(bytes) => match serde_json::from_slice::<LinkCursors>(&bytes) {
                Ok(saved) if saved.link_id == link_id => saved,
                Ok(saved) => {
                    tracing::warn!(
                        link,
                        old = saved.link_id,
                        new = link_id,
                        "xdc link now reaches another datacenter: cursors start afresh"
                    );
                    LinkCursors {
                        epoch: saved.epoch,
                        ..LinkCursors::default()
                    }
                }
                Err(error) => {
                    tracing::error!(path = %path.display(), %error, "xdc cursor file unreadable: shipping restarts from the oldest retained records");
                    LinkCursors::default()
                }
            },
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => LinkCursors::default(),
            Err(error) => return Err(format!("{}: {error}", path.display())),
        };
        cursors.link_id = link_id;
        cursors.epoch = cursors
            .epoch
            .checked_add(1)
            .ok_or_else(|| format!("{}: epoch exhausted", path.display()))?;
        cursors.save(data_dir, link)?;
        Ok(cursors)
    }

    /// The saved cursors as they are (no epoch bump), if readable.
    pub fn peek(data_dir: &Path, link: &str) -> Option<LinkCursors> {
        let bytes = std::fs::read(LinkCursors::path(data_dir, link)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    pub fn save(&self, data_dir: &Path, link: &str) -> Result<(), String> {
        let directory = LinkCursors::directory(data_dir, link);
        std::fs::create_dir_all(&directory).map_err(|e| format!("{}: {e}", directory.display()))?;
        let bytes = serde_json::to_vec(self).map_err(|e| e.to_string())?;
        meridian_engine::replace_file(&LinkCursors::path(data_dir, link), &bytes)
            .map_err(|e| e.to_string())
    }

    pub fn position(&self, partition: u32) -> LogPosition {
        self.positions
            .get(&partition)
            .map(|&(segment, offset)| LogPosition { segment, offset })
            .unwrap_or_default()
    }

    pub fn set(&mut self, partition: u32, position: LogPosition) {
        self.positions
            .insert(partition, (position.segment, position.offset));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epochs_grow_across_starts_and_positions_survive() {
        let directory = tempfile::tempdir().expect("tempdir");
        let mut first = LinkCursors::start(directory.path(), "west", 0x0102).expect("start");
        assert_eq!(first.epoch, 1);
        first.set(
            7,
            LogPosition {
                segment: 3,
                offset: 99,
            },
        );
        first.save(directory.path(), "west").expect("save");
        let second = LinkCursors::start(directory.path(), "west", 0x0102).expect("restart");
        assert_eq!(second.epoch, 2);
        assert_eq!(
            second.position(7),
            LogPosition {
                segment: 3,
                offset: 99
            }
        );
        assert_eq!(second.position(8), LogPosition::default());
        let other = LinkCursors::start(directory.path(), "west", 0x0103).expect("other dc");
        assert_eq!(other.epoch, 3);
        assert!(other.positions.is_empty());
    }
}

//! How a store is opened: limits, durability, compaction and the clock.

use std::fmt;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::error::{Error, Result};
use crate::format::{KEY_BYTES_MAX, SEGMENT_HEADER_LEN, VALUE_BYTES_MAX};

/// When acknowledged writes reach the disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// Left to the page cache; the caller may still call `sync`.
    None,
    /// Acknowledged at once; the caller syncs every `interval_ms`
    /// ([`crate::Store::sync_due`] tells when).
    Periodic { interval_ms: u32 },
    /// Acknowledged only after the sync that covers the write. Writes issued
    /// before one sync share it (group commit).
    Sync,
}

/// Wall-clock source, so tests can own time.
pub trait Clock: Send + Sync + fmt::Debug {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> u64;
    fn now_s(&self) -> u32 {
        (self.now_ms() / 1000).min(u32::MAX as u64) as u32
    }
}

/// The operating system's clock.
#[derive(Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    }
}

/// Settings of one store. Every field has a default.
#[derive(Clone, Debug)]
pub struct Options {
    /// Preallocated size of each segment file; the active segment rolls over
    /// when the next record does not fit.
    pub segment_bytes: u32,
    pub key_bytes_max: usize,
    pub value_bytes_max: usize,
    pub durability: Durability,
    /// A sealed segment is compacted once this fraction of its bytes is dead.
    pub compaction_dead_fraction: f64,
    /// Tombstones (and expired entries) are dropped only this long after
    /// they were written or expired.
    pub tombstone_grace_s: u32,
    /// Bytes of sealed segments kept for a lagging log cursor before the
    /// cursor is told it fell behind.
    pub cursor_retention_bytes: u64,
    /// Expected number of keys: sizes the key directory up front.
    pub expected_keys: usize,
    pub clock: Arc<dyn Clock>,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            segment_bytes: 64 << 20,
            key_bytes_max: KEY_BYTES_MAX,
            value_bytes_max: VALUE_BYTES_MAX,
            durability: Durability::None,
            compaction_dead_fraction: 0.5,
            tombstone_grace_s: 24 * 3600,
            cursor_retention_bytes: 8 << 30,
            expected_keys: 0,
            clock: Arc::new(SystemClock),
        }
    }
}

impl Options {
    pub(crate) fn validate(&self) -> Result<()> {
        let largest_record =
            crate::format::RECORD_HEADER_LEN + self.key_bytes_max + self.value_bytes_max;
        // A segment must hold its header, one largest record and a seal record.
        let needed = SEGMENT_HEADER_LEN + largest_record + crate::format::RECORD_HEADER_LEN;
        if (self.segment_bytes as usize) < needed {
            return Err(Error::InvalidOption {
                name: "segment_bytes",
                reason: format!(
                    "{} cannot hold one record of the largest key and value ({needed} bytes needed)",
                    self.segment_bytes
                ),
            });
        }
        if self.key_bytes_max == 0 || self.key_bytes_max > KEY_BYTES_MAX {
            return Err(Error::InvalidOption {
                name: "key_bytes_max",
                reason: format!("must be in 1..={KEY_BYTES_MAX}"),
            });
        }
        if self.value_bytes_max > VALUE_BYTES_MAX {
            return Err(Error::InvalidOption {
                name: "value_bytes_max",
                reason: format!("must be at most {VALUE_BYTES_MAX}"),
            });
        }
        if !(self.compaction_dead_fraction > 0.0 && self.compaction_dead_fraction <= 1.0) {
            return Err(Error::InvalidOption {
                name: "compaction_dead_fraction",
                reason: "must be in (0, 1]".to_string(),
            });
        }
        if let Durability::Periodic { interval_ms: 0 } = self.durability {
            return Err(Error::InvalidOption {
                name: "durability",
                reason: "periodic interval must be at least 1 ms".to_string(),
            });
        }
        Ok(())
    }
}

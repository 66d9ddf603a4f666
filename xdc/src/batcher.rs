//! Building batches from log records: which records a link ships, hot-key
//! coalescing, and when a batch is due (by size or after a short delay).
//!
//! The batcher is fed log records in log order and hands out one batch at a
//! time. It owns no clock: the caller passes `now_ms`, and [`Batcher::poll`]
//! says whether a batch is due now or at which time.
//!
//! Why coalesce: a hot key written many times between two batches costs the
//! link one record, not one per write. Shipping only the newest version is
//! safe because last-writer-wins makes the older versions no-ops on arrival.
//!
//! Invariants:
//! - a record whose origin datacenter is the link's remote datacenter is
//!   never shipped (a record never goes back to its origin); with
//!   `cascade == false` only records stamped in the local datacenter are
//!   shipped, with `cascade == true` records of third datacenters are too;
//! - within a batch, a key appears at most once, with the greatest version
//!   offered for it (the others are counted as coalesced);
//! - `end` is the log position just after the last record offered, shipped
//!   or not: acknowledging the batch acknowledges everything before `end`;
//! - a batch holds at most `batch_records_max` records, and is closed once
//!   its records reach `batch_bytes_max` (the shipper reads the log in
//!   slices sized by the room left, so it passes it by at most one slice's
//!   last record and the slice's record headers).

use std::collections::HashMap;

use bytes::Bytes;
use meridian_engine::{LogPosition, LogRecord, RecordKind};

use crate::format::XdcRecord;

/// The datacenter that stamped a version: the top 8 bits of `origin`.
pub const fn datacenter_of(origin: u32) -> u8 {
    (origin >> 24) as u8
}

/// One XDC link as the sending side sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinkConfig {
    pub link_id: u32,
    pub local_datacenter: u8,
    pub remote_datacenter: u8,
    /// Ship records that came from third datacenters too (chains, rings).
    pub cascade: bool,
}

impl LinkConfig {
    /// Whether a record stamped by `origin` crosses this link.
    pub fn ships(&self, origin: u32) -> bool {
        let datacenter = datacenter_of(origin);
        if datacenter == self.remote_datacenter {
            return false;
        }
        self.cascade || datacenter == self.local_datacenter
    }
}

/// Size and delay bounds of a batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatcherConfig {
    /// A batch closes once its encoded records reach this many bytes.
    pub batch_bytes_max: usize,
    pub batch_records_max: usize,
    /// A non-empty batch is due this long after its first record arrived.
    pub batch_delay_ms: u64,
}

impl Default for BatcherConfig {
    fn default() -> BatcherConfig {
        BatcherConfig {
            batch_bytes_max: 1 << 20,
            batch_records_max: 4096,
            batch_delay_ms: 5,
        }
    }
}

/// What happened to an offered record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Offered {
    Added,
    /// Same key as a record already in the batch: only the newest is kept.
    Coalesced,
    /// Not for this link (origin rules).
    Filtered,
}

/// When the current batch is due.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Due {
    /// Nothing offered since the last batch.
    Idle,
    /// Full, past its delay, or only filtered records (nothing to wait for).
    Now,
    /// Due at this time (ms), unless it fills first.
    At(u64),
}

/// A closed batch, ready to be numbered and encoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingBatch {
    /// Empty when every offered record was filtered.
    pub records: Vec<XdcRecord>,
    /// The log position just after the last record offered.
    pub end: LogPosition,
    /// Sum of the records' encoded lengths.
    pub bytes: u64,
    pub coalesced: u64,
    pub filtered: u64,
}

/// Totals since the batcher was made.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BatcherStats {
    pub records_batched: u64,
    pub records_coalesced: u64,
    pub records_filtered: u64,
}

/// Accumulates log records into the next batch of one link and vnode.
#[derive(Debug)]
pub struct Batcher {
    config: BatcherConfig,
    link: LinkConfig,
    partition: u32,
    records: Vec<XdcRecord>,
    by_key: HashMap<Bytes, usize>,
    bytes: usize,
    opened_at_ms: Option<u64>,
    end: Option<LogPosition>,
    coalesced: u64,
    filtered: u64,
    stats: BatcherStats,
}

impl Batcher {
    pub fn new(config: BatcherConfig, link: LinkConfig, partition: u32) -> Batcher {
        assert!(
            config.batch_records_max > 0,
            "batch_records_max must be positive"
        );
        assert!(
            config.batch_bytes_max > 0,
            "batch_bytes_max must be positive"
        );
        Batcher {
            config,
            link,
            partition,
            records: Vec::new(),
            by_key: HashMap::new(),
            bytes: 0,
            opened_at_ms: None,
            end: None,
            coalesced: 0,
            filtered: 0,
            stats: BatcherStats::default(),
        }
    }

    pub fn config(&self) -> &BatcherConfig {
        &self.config
    }

    pub fn stats(&self) -> BatcherStats {
        self.stats
    }

    /// Records in the open batch.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Encoded bytes of the open batch's records.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Whether the open batch has reached a size bound.
    pub fn is_full(&self) -> bool {
        self.records.len() >= self.config.batch_records_max
            || self.bytes >= self.config.batch_bytes_max
    }

    /// Offers a log record; `end` is the log position just after it.
    /// Must not be called once the batch holds `batch_records_max` records.
    pub fn offer(&mut self, record: &LogRecord, end: LogPosition, now_ms: u64) -> Offered {
        assert!(
            self.records.len() < self.config.batch_records_max,
            "offer to a batch that holds batch_records_max records"
        );
        assert!(
            self.end.is_none_or(|last| last < end),
            "log positions must grow"
        );
        self.end = Some(end);
        if record.kind == RecordKind::Seal || !self.link.ships(record.version.origin) {
            self.filtered += 1;
            self.stats.records_filtered += 1;
            return Offered::Filtered;
        }
        let incoming = XdcRecord {
            kind: record.kind,
            key: record.key.clone(),
            value: record.value.clone(),
            version: record.version,
            expires_at: record.expires_at,
            partition: self.partition,
        };
        self.opened_at_ms.get_or_insert(now_ms);
        if let Some(&index) = self.by_key.get(&record.key) {
            self.coalesced += 1;
            self.stats.records_coalesced += 1;
            let held = &mut self.records[index];
            if incoming.version > held.version {
                self.bytes = self.bytes - held.encoded_len() + incoming.encoded_len();
                *held = incoming;
            }
            return Offered::Coalesced;
        }
        self.bytes += incoming.encoded_len();
        self.by_key.insert(record.key.clone(), self.records.len());
        self.records.push(incoming);
        Offered::Added
    }

    /// Whether the open batch is due.
    pub fn poll(&self, now_ms: u64) -> Due {
        if self.end.is_none() {
            return Due::Idle;
        }
        let Some(opened_at_ms) = self.opened_at_ms else {
            return Due::Now;
        };
        let due_at = opened_at_ms.saturating_add(self.config.batch_delay_ms);
        if self.is_full() || now_ms >= due_at {
            Due::Now
        } else {
            Due::At(due_at)
        }
    }

    /// Closes the open batch (whether or not it is due).
    pub fn take(&mut self) -> Option<PendingBatch> {
        let end = self.end.take()?;
        self.by_key.clear();
        self.opened_at_ms = None;
        self.stats.records_batched += self.records.len() as u64;
        let batch = PendingBatch {
            records: std::mem::take(&mut self.records),
            end,
            bytes: std::mem::take(&mut self.bytes) as u64,
            coalesced: std::mem::take(&mut self.coalesced),
            filtered: std::mem::take(&mut self.filtered),
        };
        debug_assert_eq!(
            batch.bytes,
            batch
                .records
                .iter()
                .map(|r| r.encoded_len() as u64)
                .sum::<u64>()
        );
        Some(batch)
    }

    /// Drops the open batch (the link was lost: it will be read again).
    pub fn clear(&mut self) {
        self.records.clear();
        self.by_key.clear();
        self.bytes = 0;
        self.opened_at_ms = None;
        self.end = None;
        self.coalesced = 0;
        self.filtered = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meridian_engine::Version;

    const LOCAL: u8 = 1;
    const REMOTE: u8 = 2;
    const THIRD: u8 = 3;

    fn link(cascade: bool) -> LinkConfig {
        LinkConfig {
            link_id: 7,
            local_datacenter: LOCAL,
            remote_datacenter: REMOTE,
            cascade,
        }
    }

    fn origin(datacenter: u8) -> u32 {
        (datacenter as u32) << 24 | 5
    }

    fn log_record(offset: u32, key: &str, hlc: u64, datacenter: u8) -> LogRecord {
        LogRecord {
            position: LogPosition { segment: 1, offset },
            kind: RecordKind::Put,
            key: Bytes::copy_from_slice(key.as_bytes()),
            value: Bytes::from_static(b"value"),
            version: Version::new(hlc, origin(datacenter)),
            expires_at: 0,
        }
    }

    fn end(offset: u32) -> LogPosition {
        LogPosition {
            segment: 1,
            offset: offset + 1,
        }
    }

    #[test]
    fn origin_rules() {
        assert!(link(false).ships(origin(LOCAL)));
        assert!(!link(false).ships(origin(REMOTE)));
        assert!(!link(false).ships(origin(THIRD)));
        assert!(link(true).ships(origin(LOCAL)));
        assert!(!link(true).ships(origin(REMOTE)));
        assert!(link(true).ships(origin(THIRD)));
    }

    #[test]
    fn hot_keys_coalesce_to_the_newest_version() {
        let mut batcher = Batcher::new(BatcherConfig::default(), link(false), 0);
        assert_eq!(
            batcher.offer(&log_record(100, "hot", 1, LOCAL), end(100), 0),
            Offered::Added
        );
        assert_eq!(
            batcher.offer(&log_record(200, "cold", 2, LOCAL), end(200), 0),
            Offered::Added
        );
        assert_eq!(
            batcher.offer(&log_record(300, "hot", 3, LOCAL), end(300), 0),
            Offered::Coalesced
        );
        assert_eq!(
            batcher.offer(&log_record(400, "hot", 4, REMOTE), end(400), 0),
            Offered::Filtered
        );
        let batch = batcher.take().expect("batch");
        assert_eq!(batch.records.len(), 2);
        assert_eq!(batch.records[0].version.hlc, 3);
        assert_eq!((batch.coalesced, batch.filtered), (1, 1));
        assert_eq!(batch.end, end(400));
        assert!(batcher.take().is_none());
    }

    #[test]
    fn due_by_delay_and_by_size() {
        let config = BatcherConfig {
            batch_bytes_max: 1 << 20,
            batch_records_max: 2,
            batch_delay_ms: 10,
        };
        let mut batcher = Batcher::new(config, link(false), 0);
        assert_eq!(batcher.poll(0), Due::Idle);
        batcher.offer(&log_record(100, "a", 1, LOCAL), end(100), 1000);
        assert_eq!(batcher.poll(1005), Due::At(1010));
        assert_eq!(batcher.poll(1010), Due::Now);
        batcher.offer(&log_record(200, "b", 2, LOCAL), end(200), 1001);
        assert!(batcher.is_full());
        assert_eq!(batcher.poll(1001), Due::Now);
    }

    #[test]
    fn only_filtered_records_are_due_at_once() {
        let mut batcher = Batcher::new(BatcherConfig::default(), link(false), 0);
        batcher.offer(&log_record(100, "a", 1, REMOTE), end(100), 0);
        assert_eq!(batcher.poll(0), Due::Now);
        let batch = batcher.take().expect("batch");
        assert!(batch.records.is_empty());
        assert_eq!(batch.end, end(100));
    }
}

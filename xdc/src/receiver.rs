//! The receiving side of one link: decode a batch, apply its records,
//! acknowledge it, skip what was already applied.
//!
//! Records are applied through the caller's [`Apply`] (on a node: its
//! coordinator, with its own ring and W, preserving version and origin; in
//! tests: a model). Applying is idempotent (last-writer-wins), so the
//! receiver's duplicate detection saves work and gives exact counts; it is
//! not what makes replay safe.
//!
//! Duplicates are recognised by `(sequence, checksum)` among the last
//! `duplicate_window` batches applied on the link. Keying on the checksum
//! too means a sequence number reused by another sender (another vnode's
//! shipper, or a node that took over a range) is never mistaken for a
//! duplicate unless its records are byte-identical, in which case skipping
//! it is exactly as good as applying it.
//!
//! A conflict is counted when a record is stale against a *different*
//! version stamped in a *different* datacenter: two datacenters wrote the
//! key concurrently and LWW chose the local one. A stale record against a
//! version from its own datacenter is a replay or a reorder, not a conflict.
//!
//! Invariants:
//! - a batch is acknowledged only after every record in it was applied
//!   (an apply error leaves it unacknowledged and not remembered, so the
//!   shipper's rewind resends it);
//! - a remembered batch is acknowledged again, with its first counts and
//!   the duplicate flag, without applying anything;
//! - the memory of applied batches is bounded by `duplicate_window`;
//! - clock skew is reported, never refused.

use std::collections::BTreeMap;
use std::fmt;

use meridian_engine::{Applied, Store};

use crate::batcher::datacenter_of;
use crate::error::Error;
use crate::format::{
    decode_batch, decode_batch_header, encode_ack, Ack, BatchLimits, XdcRecord, ACK_LEN,
};
use crate::shipper::hlc_ms;

/// Where received records go.
pub trait Apply {
    type Error;
    /// Applies one record, keeping its version: `Written` when it was newer
    /// than what was held, `Stale { current }` otherwise.
    fn apply(&mut self, record: &XdcRecord) -> Result<Applied, Self::Error>;
}

/// A store applies directly (a single-vnode receiver, or tests).
impl Apply for Store {
    type Error = meridian_engine::Error;

    fn apply(&mut self, record: &XdcRecord) -> Result<Applied, meridian_engine::Error> {
        let receipt = Store::apply(
            self,
            record.kind,
            &record.key,
            &record.value,
            record.version,
            record.expires_at,
        )?;
        Ok(receipt.applied)
    }
}

/// Settings of one link's receiver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReceiverConfig {
    pub link_id: u32,
    pub limits: BatchLimits,
    /// A record whose hlc is ahead of the local clock by more is reported.
    pub max_clock_skew_ms: u64,
    /// Applied batches remembered for duplicate detection.
    pub duplicate_window: usize,
}

impl ReceiverConfig {
    pub fn new(link_id: u32) -> ReceiverConfig {
        ReceiverConfig {
            link_id,
            limits: BatchLimits::default(),
            max_clock_skew_ms: 500,
            duplicate_window: 1024,
        }
    }
}

/// Records of a batch stamped ahead of the local clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClockSkew {
    pub records: u32,
    /// The furthest ahead, in ms.
    pub ahead_ms_max: u64,
    /// The origin of that record.
    pub origin: u32,
}

/// What receiving a batch did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Received {
    pub ack: Ack,
    /// The ACK body to send back.
    pub ack_body: [u8; ACK_LEN],
    pub conflicts: u32,
    /// A warning: the remote clock runs ahead of ours.
    pub clock_skew: Option<ClockSkew>,
}

/// What [`Receiver::open`] found.
#[derive(Debug)]
pub enum Opened {
    /// Applied before: acknowledge again, apply nothing.
    Duplicate(Received),
    /// Records to apply, then [`Receiver::close`].
    Fresh(OpenedBatch),
}

/// A decoded batch waiting to be applied.
#[derive(Debug)]
pub struct OpenedBatch {
    key: (u64, u64),
    pub sequence: u64,
    pub link_id: u32,
    pub records: Vec<XdcRecord>,
}

/// Totals since the receiver started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReceiverStats {
    pub batches_applied: u64,
    pub batches_duplicate: u64,
    pub records_applied: u64,
    pub records_stale: u64,
    pub conflicts: u64,
    pub clock_skew_records: u64,
}

/// Why a batch was not acknowledged.
#[derive(Debug)]
#[non_exhaustive]
pub enum ReceiveError<E> {
    /// The body is not a valid batch for this link.
    Decode(Error),
    /// The target refused a record; the batch stays unacknowledged.
    Apply {
        sequence: u64,
        index: u32,
        source: E,
    },
}

impl<E: fmt::Display> fmt::Display for ReceiveError<E> {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReceiveError::Decode(error) => write!(formatter, "xdc batch: {error}"),
            ReceiveError::Apply {
                sequence,
                index,
                source,
            } => write!(
                formatter,
                "applying record {index} of xdc batch {sequence}: {source}"
            ),
        }
    }
}

impl<E: std::error::Error + 'static> std::error::Error for ReceiveError<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ReceiveError::Decode(error) => Some(error),
            ReceiveError::Apply { source, .. } => Some(source),
        }
    }
}

/// One link's receiver.
#[derive(Debug)]
pub struct Receiver {
    config: ReceiverConfig,
    /// `(sequence, checksum)` of applied batches → the ack sent.
    applied: BTreeMap<(u64, u64), Ack>,
    stats: ReceiverStats,
}

impl Receiver {
    pub fn new(config: ReceiverConfig) -> Receiver {
        assert!(
            config.duplicate_window > 0,
            "duplicate_window must be positive"
        );
        Receiver {
            config,
            applied: BTreeMap::new(),
            stats: ReceiverStats::default(),
        }
    }

    pub fn stats(&self) -> ReceiverStats {
        self.stats
    }

    /// The link this receiver serves.
    pub fn link_id(&self) -> u32 {
        self.config.link_id
    }

    /// Decodes, applies and acknowledges one BATCH body; `now_ms` is the
    /// local clock (Unix ms), used only to report skew. For a target that
    /// applies synchronously; a server that applies through an
    /// asynchronous coordinator calls [`Receiver::open`], applies the
    /// records itself, then [`Receiver::close`], which is what this does.
    pub fn receive<A: Apply>(
        &mut self,
        body: &[u8],
        now_ms: u64,
        target: &mut A,
    ) -> Result<Received, ReceiveError<A::Error>> {
        let batch = match self.open(body).map_err(ReceiveError::Decode)? {
            Opened::Duplicate(received) => return Ok(received),
            Opened::Fresh(batch) => batch,
        };
        let mut outcomes = Vec::with_capacity(batch.records.len());
        for (index, record) in batch.records.iter().enumerate() {
            match target.apply(record) {
                Ok(applied) => outcomes.push(applied),
                Err(source) => {
                    return Err(ReceiveError::Apply {
                        sequence: batch.sequence,
                        index: index as u32,
                        source,
                    })
                }
            }
        }
        Ok(self.close(&batch, &outcomes, now_ms))
    }

    /// Decodes a BATCH body: a batch already applied is acknowledged again
    /// (`Duplicate`, nothing to apply); otherwise the records to apply.
    pub fn open(&mut self, body: &[u8]) -> Result<Opened, Error> {
        let header = decode_batch_header(body, &self.config.limits)?;
        if header.link_id != self.config.link_id {
            return Err(Error::WrongLink {
                expected: self.config.link_id,
                found: header.link_id,
            });
        }
        let key = (header.sequence, header.checksum);
        if let Some(first) = self.applied.get(&key) {
            self.stats.batches_duplicate += 1;
            let ack = Ack {
                duplicate: true,
                ..*first
            };
            return Ok(Opened::Duplicate(Received {
                ack,
                ack_body: encode_ack(&ack),
                conflicts: 0,
                clock_skew: None,
            }));
        }
        let batch = decode_batch(body, &self.config.limits)?;
        Ok(Opened::Fresh(OpenedBatch {
            key,
            sequence: batch.sequence,
            link_id: batch.link_id,
            records: batch.records,
        }))
    }

    /// Acknowledges a batch from [`Receiver::open`] once every record was
    /// applied with `outcomes[i]` (one per record, in order): counts
    /// conflicts and clock skew, remembers the batch, builds the ACK.
    pub fn close(&mut self, batch: &OpenedBatch, outcomes: &[Applied], now_ms: u64) -> Received {
        assert_eq!(
            outcomes.len(),
            batch.records.len(),
            "one outcome per record"
        );
        let mut ack = Ack {
            link_id: batch.link_id,
            sequence: batch.sequence,
            applied: 0,
            stale: 0,
            duplicate: false,
        };
        let mut conflicts = 0u32;
        let mut clock_skew: Option<ClockSkew> = None;
        for (record, outcome) in batch.records.iter().zip(outcomes) {
            match *outcome {
                Applied::Written => ack.applied += 1,
                Applied::Stale { current } => {
                    ack.stale += 1;
                    if current != record.version
                        && datacenter_of(current.origin) != datacenter_of(record.version.origin)
                    {
                        conflicts += 1;
                    }
                }
            }
            let ahead_ms = hlc_ms(record.version.hlc).saturating_sub(now_ms);
            if ahead_ms > self.config.max_clock_skew_ms {
                let skew = clock_skew.get_or_insert(ClockSkew {
                    records: 0,
                    ahead_ms_max: 0,
                    origin: record.version.origin,
                });
                skew.records += 1;
                if ahead_ms > skew.ahead_ms_max {
                    skew.ahead_ms_max = ahead_ms;
                    skew.origin = record.version.origin;
                }
            }
        }
        self.remember(batch.key, ack);
        self.stats.batches_applied += 1;
        self.stats.records_applied += ack.applied as u64;
        self.stats.records_stale += ack.stale as u64;
        self.stats.conflicts += conflicts as u64;
        self.stats.clock_skew_records += clock_skew.map_or(0, |skew| skew.records as u64);
        Received {
            ack,
            ack_body: encode_ack(&ack),
            conflicts,
            clock_skew,
        }
    }

    /// Remembers an applied batch, forgetting the lowest sequence beyond
    /// the window (sequences grow, so that is the oldest).
    fn remember(&mut self, key: (u64, u64), ack: Ack) {
        self.applied.insert(key, ack);
        while self.applied.len() > self.config.duplicate_window {
            self.applied.pop_first();
        }
        assert!(self.applied.len() <= self.config.duplicate_window);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::{decode_ack, encode_batch, Compression};
    use bytes::Bytes;
    use meridian_engine::{RecordKind, Version};
    use std::collections::HashMap;

    /// Last-writer-wins over a map; refuses the key "refuse".
    #[derive(Default)]
    struct Target {
        entries: HashMap<Bytes, Version>,
        applies: u32,
    }

    impl Apply for Target {
        type Error = String;
        fn apply(&mut self, record: &XdcRecord) -> Result<Applied, String> {
            if &record.key[..] == b"refuse" {
                return Err("refused".to_string());
            }
            self.applies += 1;
            match self.entries.get(&record.key) {
                Some(current) if *current >= record.version => {
                    Ok(Applied::Stale { current: *current })
                }
                _ => {
                    self.entries.insert(record.key.clone(), record.version);
                    Ok(Applied::Written)
                }
            }
        }
    }

    fn record(key: &str, hlc_ms: u64, datacenter: u8) -> XdcRecord {
        XdcRecord {
            kind: RecordKind::Put,
            key: Bytes::copy_from_slice(key.as_bytes()),
            value: Bytes::from_static(b"v"),
            version: Version::new(hlc_ms << 16, (datacenter as u32) << 24),
            expires_at: 0,
            partition: 0,
        }
    }

    fn body(sequence: u64, records: &[XdcRecord]) -> Bytes {
        encode_batch(
            4,
            sequence,
            records,
            Compression::Lz4,
            &BatchLimits::default(),
        )
        .expect("encode")
    }

    #[test]
    fn a_duplicate_is_acknowledged_again_without_applying() {
        let mut receiver = Receiver::new(ReceiverConfig::new(4));
        let mut target = Target::default();
        let batch = body(9, &[record("a", 10, 1), record("b", 10, 1)]);
        let first = receiver.receive(&batch, 10, &mut target).expect("receive");
        assert_eq!(
            (first.ack.applied, first.ack.stale, first.ack.duplicate),
            (2, 0, false)
        );
        let again = receiver.receive(&batch, 10, &mut target).expect("receive");
        assert!(again.ack.duplicate);
        assert_eq!(again.ack.applied, 2);
        assert_eq!(decode_ack(&again.ack_body).expect("ack"), again.ack);
        assert_eq!(target.applies, 2);
        // The same sequence with other records is not a duplicate.
        let other = body(9, &[record("c", 11, 1)]);
        assert!(
            !receiver
                .receive(&other, 11, &mut target)
                .expect("receive")
                .ack
                .duplicate
        );
        assert_eq!(receiver.stats().batches_duplicate, 1);
    }

    #[test]
    fn conflicts_are_stale_records_against_another_datacenter() {
        let mut receiver = Receiver::new(ReceiverConfig::new(4));
        let mut target = Target::default();
        target
            .entries
            .insert(Bytes::from_static(b"a"), Version::new(50 << 16, 2 << 24));
        target
            .entries
            .insert(Bytes::from_static(b"b"), Version::new(50 << 16, 1 << 24));
        let received = receiver
            .receive(
                &body(1, &[record("a", 40, 1), record("b", 40, 1)]),
                60,
                &mut target,
            )
            .expect("receive");
        assert_eq!((received.ack.stale, received.conflicts), (2, 1));
        assert_eq!(receiver.stats().conflicts, 1);
    }

    #[test]
    fn clock_skew_is_reported_not_refused() {
        let mut receiver = Receiver::new(ReceiverConfig::new(4));
        let mut target = Target::default();
        let received = receiver
            .receive(
                &body(1, &[record("a", 1000, 1), record("b", 3000, 1)]),
                1000,
                &mut target,
            )
            .expect("receive");
        assert_eq!(received.ack.applied, 2);
        let skew = received.clock_skew.expect("skew");
        assert_eq!((skew.records, skew.ahead_ms_max), (1, 2000));
    }

    #[test]
    fn a_failed_apply_leaves_the_batch_unacknowledged() {
        let mut receiver = Receiver::new(ReceiverConfig::new(4));
        let mut target = Target::default();
        let batch = body(3, &[record("a", 1, 1), record("refuse", 1, 1)]);
        assert!(matches!(
            receiver.receive(&batch, 1, &mut target),
            Err(ReceiveError::Apply {
                sequence: 3,
                index: 1,
                ..
            })
        ));
        assert!(matches!(
            receiver.receive(&batch, 1, &mut target),
            Err(ReceiveError::Apply { .. })
        ));
        let wrong_link =
            encode_batch(5, 1, &[], Compression::None, &BatchLimits::default()).expect("encode");
        assert!(matches!(
            receiver.receive(&wrong_link, 1, &mut target),
            Err(ReceiveError::Decode(Error::WrongLink { .. }))
        ));
    }

    #[test]
    fn the_duplicate_window_is_bounded() {
        let mut config = ReceiverConfig::new(4);
        config.duplicate_window = 2;
        let mut receiver = Receiver::new(config);
        let mut target = Target::default();
        for sequence in 0..5 {
            receiver
                .receive(&body(sequence, &[record("a", 1, 1)]), 1, &mut target)
                .expect("receive");
        }
        assert_eq!(receiver.applied.len(), 2);
        // Forgotten: applied again, harmlessly (stale).
        let old = receiver
            .receive(&body(0, &[record("a", 1, 1)]), 1, &mut target)
            .expect("receive");
        assert_eq!((old.ack.duplicate, old.ack.stale), (false, 1));
    }
}

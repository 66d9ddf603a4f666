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

    /// Decodes, applies and acknowledges one BATCH body; `now_ms` is the
    /// local clock (Unix ms), used only to report skew.
    pub fn receive<A: Apply>(
        &mut self,
        body: &[u8],
        now_ms: u64,
        target: &mut A,
    ) -> Result<Received, ReceiveError<A::Error>> {
        let header =
            decode_batch_header(body, &self.config.limits).map_err(ReceiveError::Decode)?;
        if header.link_id != self.config.link_id {
            return Err(ReceiveError::Decode(Error::WrongLink {
                expected: self.config.link_id,
                found: header.link_id,
            }));
        }
        let key = (header.sequence, header.checksum);
        if let Some(first) = self.applied.get(&key) {
            self.stats.batches_duplicate += 1;
            let ack = Ack {
                duplicate: true,
                ..*first
            };
            return Ok(Received {
                ack,
                ack_body: encode_ack(&ack),
                conflicts: 0,
                clock_skew: None,
            });
        }
        let batch = decode_batch(body, &self.config.limits).map_err(ReceiveError::Decode)?;
        let mut ack = Ack {
            link_id: batch.link_id,
            sequence: batch.sequence,
            applied: 0,
            stale: 0,
            duplicate: false,
        };
        let mut conflicts = 0u32;
        let mut clock_skew: Option<ClockSkew> = None;
        for (index, record) in batch.records.iter().enumerate() {
            match target.apply(record) {
                Ok(Applied::Written) => ack.applied += 1,
                Ok(Applied::Stale { current }) => {
                    ack.stale += 1;
                    if current != record.version
                        && datacenter_of(current.origin) != datacenter_of(record.version.origin)
                    {
                        conflicts += 1;
                    }
                }
                Err(source) => {
                    return Err(ReceiveError::Apply {
                        sequence: batch.sequence,
                        index: index as u32,
                        source,
                    })
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
        assert_eq!((ack.applied + ack.stale) as usize, batch.records.len());
        self.remember(key, ack);
        self.stats.batches_applied += 1;
        self.stats.records_applied += ack.applied as u64;
        self.stats.records_stale += ack.stale as u64;
        self.stats.conflicts += conflicts as u64;
        self.stats.clock_skew_records += clock_skew.map_or(0, |skew| skew.records as u64);
        Ok(Received {
            ack,
            ack_body: encode_ack(&ack),
            conflicts,
            clock_skew,
        })
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

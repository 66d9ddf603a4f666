//! The sending side of one link for one vnode: reading the log, a window
//! of batches in flight, acknowledgements, rewinds and lag.
//!
//! The shipper is a synchronous state machine. The caller drives it:
//! [`Shipper::pump`] when the log grew or the time from [`Shipper::poll`]
//! came (it returns the next batch body to send, if one is due and the
//! window has room), [`Shipper::on_ack`] for every ACK body received, and
//! [`Shipper::on_link_lost`] when the connection broke or an ACK timed out.
//! The shipper never touches a socket, a thread or a clock.
//!
//! Why rewind rather than resend the exact bytes: keeping encoded batches
//! for a retry would hold up to `max_in_flight` batches of memory per link
//! and vnode; the log already holds them, and a re-read re-batches with the
//! newest versions. Replay is harmless because applying is idempotent
//! (last-writer-wins on `(hlc, origin)`).
//!
//! Sequence numbers are `epoch << 32 | counter`: the counter grows for every
//! batch sent, across rewinds, and the epoch (persisted in the
//! [`crate::CursorFile`] at every start) grows across restarts, so a number is
//! never reused for different contents and a receiver may safely skip a
//! sequence it has already applied.
//!
//! Invariants:
//! - `acknowledged <= read_from`, and both only grow, except that
//!   `on_link_lost` moves `read_from` back to `acknowledged`;
//! - `acknowledged` is the `end` of the longest prefix of sent batches that
//!   are all acknowledged (acks may arrive in any order);
//! - at most `max_in_flight` batches are sent and unacknowledged;
//! - in-flight batches are in sequence order and their `end`s grow.

use std::collections::VecDeque;

use bytes::Bytes;
use meridian_engine::{LogBatch, LogPosition, Store};

use crate::batcher::{Batcher, BatcherConfig, BatcherStats, Due, LinkConfig};
use crate::error::{Error, Result};
use crate::format::{encode_batch, Ack, BatchLimits, Compression};

/// The log a shipper reads: a [`Store`], or a test's stand-in.
pub trait LogSource {
    /// As [`Store::read_log`].
    fn read_log(
        &self,
        from: LogPosition,
        max_records: usize,
        max_bytes: usize,
    ) -> meridian_engine::Result<LogBatch>;
    /// The position just after the last record written.
    fn written_position(&self) -> LogPosition;
}

impl LogSource for Store {
    fn read_log(
        &self,
        from: LogPosition,
        max_records: usize,
        max_bytes: usize,
    ) -> meridian_engine::Result<LogBatch> {
        Store::read_log(self, from, max_records, max_bytes)
    }

    fn written_position(&self) -> LogPosition {
        Store::written_position(self)
    }
}

/// Settings of one shipper.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShipperConfig {
    /// The vnode whose log is read; carried in every record.
    pub partition: u32,
    /// Batches sent and not yet acknowledged, at most.
    pub max_in_flight: usize,
    pub batcher: BatcherConfig,
    pub compression: Compression,
    pub limits: BatchLimits,
}

impl Default for ShipperConfig {
    fn default() -> ShipperConfig {
        ShipperConfig {
            partition: 0,
            max_in_flight: 8,
            batcher: BatcherConfig::default(),
            compression: Compression::Lz4,
            limits: BatchLimits::default(),
        }
    }
}

/// A batch to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutgoingBatch {
    pub sequence: u64,
    /// The BATCH body (see [`crate::format`]).
    pub body: Bytes,
    pub records: u32,
    /// The log position just after the batch's last record.
    pub end: LogPosition,
}

/// A log read a shipper asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadRequest {
    pub from: LogPosition,
    pub max_records: usize,
    pub max_bytes: usize,
}

/// What [`Shipper::take_due`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Closed {
    /// A batch to send.
    Batch(OutgoingBatch),
    /// The batch held only records this link does not ship: its end was
    /// folded into the previous batch (or acknowledged at once).
    Folded,
    /// Nothing due yet (or the window is full).
    NotYet,
}

/// What an ACK did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AckOutcome {
    /// The acknowledged position moved here: persist it
    /// ([`crate::CursorFile::save`]) and advance the store's named cursor.
    Advanced(LogPosition),
    /// Recorded, but an earlier batch is still unacknowledged.
    Pending,
    /// Not a batch in flight (a late or repeated ack, or from before a
    /// rewind): ignored.
    Ignored,
}

/// How far behind the link is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Lag {
    pub batches_in_flight: u32,
    pub records_in_flight: u64,
    /// Encoded body bytes of the batches in flight.
    pub bytes_in_flight: u64,
    /// Records read into the batch being built, not yet sent.
    pub records_batching: u64,
    /// Log bytes between the acknowledged position and the written end:
    /// exact when both are in one segment, else `None` (take the store's
    /// named cursor status, `Store::cursor_status(..).bytes_behind`).
    pub log_bytes_behind: Option<u64>,
    /// Age (now − hlc milliseconds) of the first unacknowledged write in
    /// log order; `None` when everything is acknowledged.
    pub oldest_unacknowledged_age_ms: Option<u64>,
    /// Every write with an hlc before this time (ms) is acknowledged, as far
    /// as log order tells: the oldest unacknowledged hlc, or `now_ms`.
    pub watermark_ms: u64,
}

/// Totals since the shipper started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ShipperStats {
    pub batches_sent: u64,
    pub records_sent: u64,
    pub bytes_sent: u64,
    pub batches_acknowledged: u64,
    pub acks_ignored: u64,
    pub rewinds: u64,
    pub batcher: BatcherStats,
}

#[derive(Clone, Copy, Debug)]
struct InFlight {
    sequence: u64,
    end: LogPosition,
    records: u64,
    bytes: u64,
    oldest_hlc: Option<u64>,
    acknowledged: bool,
}

/// One link's shipper for one vnode.
#[derive(Debug)]
pub struct Shipper {
    link: LinkConfig,
    config: ShipperConfig,
    batcher: Batcher,
    read_from: LogPosition,
    acknowledged: LogPosition,
    next_sequence: u64,
    in_flight: VecDeque<InFlight>,
    stats: ShipperStats,
}

/// The millisecond part of an hlc.
pub const fn hlc_ms(hlc: u64) -> u64 {
    hlc >> 16
}

impl Shipper {
    /// A shipper that resumes after `acknowledged` (from the cursor file, or
    /// the log start) in `epoch` (from [`crate::CursorFile::start`]).
    pub fn new(
        link: LinkConfig,
        config: ShipperConfig,
        acknowledged: LogPosition,
        epoch: u32,
    ) -> Shipper {
        assert!(config.max_in_flight > 0, "max_in_flight must be positive");
        assert!(
            config.batcher.batch_records_max <= config.limits.batch_records_max as usize,
            "batch_records_max above the format limit"
        );
        Shipper {
            link,
            config,
            batcher: Batcher::new(config.batcher, link, config.partition),
            read_from: acknowledged,
            acknowledged,
            next_sequence: (epoch as u64) << 32,
            in_flight: VecDeque::new(),
            stats: ShipperStats::default(),
        }
    }

    pub fn link(&self) -> &LinkConfig {
        &self.link
    }

    /// Everything before this position is acknowledged by the remote side.
    pub fn acknowledged(&self) -> LogPosition {
        self.acknowledged
    }

    /// Where the next log read starts.
    pub fn read_position(&self) -> LogPosition {
        self.read_from
    }

    pub fn stats(&self) -> ShipperStats {
        ShipperStats {
            batcher: self.batcher.stats(),
            ..self.stats
        }
    }

    fn unacknowledged(&self) -> usize {
        self.in_flight
            .iter()
            .filter(|batch| !batch.acknowledged)
            .count()
    }

    /// Whether another batch may be sent now.
    pub fn window_open(&self) -> bool {
        self.unacknowledged() < self.config.max_in_flight
    }

    /// When the caller should call `pump` again at the latest (ms), if a
    /// batch is being built; `None` when idle or the window is full.
    pub fn poll(&self, now_ms: u64) -> Option<u64> {
        if !self.window_open() {
            return None;
        }
        match self.batcher.poll(now_ms) {
            Due::Idle => None,
            Due::Now => Some(now_ms),
            Due::At(at) => Some(at),
        }
    }

    /// Reads the log into the batch being built and returns the next batch
    /// to send, if one is due and the window has room. For a log the
    /// caller can read synchronously; a server whose log lives on another
    /// core drives [`Shipper::read_request`], [`Shipper::feed`] and
    /// [`Shipper::take_due`] itself, which is what this does.
    pub fn pump(&mut self, log: &impl LogSource, now_ms: u64) -> Result<Option<OutgoingBatch>> {
        let end = log.written_position();
        // Each turn either reads records, closes a filtered-only batch or
        // returns; reads are bounded by the log's end.
        loop {
            if !self.window_open() {
                return Ok(None);
            }
            if let Some(request) = self.read_request() {
                if self.read_from < end {
                    let batch =
                        log.read_log(request.from, request.max_records, request.max_bytes)?;
                    self.feed(request.from, &batch, now_ms)?;
                    continue;
                }
            }
            match self.take_due(now_ms)? {
                Closed::Batch(batch) => return Ok(Some(batch)),
                Closed::Folded => continue,
                Closed::NotYet => return Ok(None),
            }
        }
    }

    /// The log read the shipper wants next, if the window has room and the
    /// batch being built is not full. The caller reads from `from` (in
    /// whatever way its log allows) and passes the result to
    /// [`Shipper::feed`]; when the log holds nothing past `from`, it skips
    /// the read.
    pub fn read_request(&self) -> Option<ReadRequest> {
        if !self.window_open() || self.batcher.is_full() {
            return None;
        }
        let config = self.batcher.config();
        Some(ReadRequest {
            from: self.read_from,
            max_records: config.batch_records_max - self.batcher.len(),
            max_bytes: config
                .batch_bytes_max
                .saturating_sub(self.batcher.bytes())
                .max(1),
        })
    }

    /// Offers the records of a log read made for [`Shipper::read_request`]
    /// to the batch being built. `from` is the position the read started
    /// at; a read from another position than the current read position (a
    /// stale answer that crossed a rewind) is ignored, as is one that
    /// arrives when the window closed.
    pub fn feed(&mut self, from: LogPosition, batch: &LogBatch, now_ms: u64) -> Result<()> {
        let Some(request) = self.read_request() else {
            return Ok(());
        };
        if from != request.from {
            return Ok(());
        }
        if batch.records.len() > request.max_records {
            return Err(Error::Corrupt {
                what: "log read",
                offset: request.from.offset as u64,
                reason: format!(
                    "{} records returned for a read of at most {}",
                    batch.records.len(),
                    request.max_records
                ),
            });
        }
        let count = batch.records.len();
        for (index, record) in batch.records.iter().enumerate() {
            let end = match batch.records.get(index + 1) {
                Some(next) => next.position,
                None => batch.next,
            };
            self.batcher.offer(record, end, now_ms);
        }
        if batch.next <= self.read_from && count == 0 {
            // Nothing past `read_from`: the written end moved under us or
            // the position was normalised (segment 0); never spin.
            return Err(Error::Corrupt {
                what: "log read",
                offset: self.read_from.offset as u64,
                reason: format!("no progress reading from {:?}", self.read_from),
            });
        }
        self.read_from = batch.next;
        Ok(())
    }

    /// Closes the batch being built if it is due (full, or its delay
    /// passed) and the window has room.
    pub fn take_due(&mut self, now_ms: u64) -> Result<Closed> {
        if !self.window_open() {
            return Ok(Closed::NotYet);
        }
        match self.batcher.poll(now_ms) {
            Due::Idle | Due::At(_) => Ok(Closed::NotYet),
            Due::Now => Ok(match self.close_batch()? {
                Some(batch) => Closed::Batch(batch),
                None => Closed::Folded,
            }),
        }
    }

    /// Closes the batch being built: numbers, encodes and records it as in
    /// flight; a batch of only filtered records is folded into the previous
    /// one (or acknowledged at once when nothing is in flight).
    fn close_batch(&mut self) -> Result<Option<OutgoingBatch>> {
        let Some(pending) = self.batcher.take() else {
            return Ok(None);
        };
        if pending.records.is_empty() {
            match self.in_flight.back_mut() {
                Some(last) => last.end = pending.end,
                None => self.acknowledged = pending.end,
            }
            return Ok(None);
        }
        let sequence = self.next_sequence;
        self.next_sequence += 1;
        let body = encode_batch(
            self.link.link_id,
            sequence,
            &pending.records,
            self.config.compression,
            &self.config.limits,
        )?;
        let records = pending.records.len() as u64;
        let oldest_hlc = pending.records.iter().map(|r| r.version.hlc).min();
        if let Some(last) = self.in_flight.back() {
            assert!(last.sequence < sequence && last.end < pending.end);
        }
        self.in_flight.push_back(InFlight {
            sequence,
            end: pending.end,
            records,
            bytes: body.len() as u64,
            oldest_hlc,
            acknowledged: false,
        });
        self.stats.batches_sent += 1;
        self.stats.records_sent += records;
        self.stats.bytes_sent += body.len() as u64;
        Ok(Some(OutgoingBatch {
            sequence,
            body,
            records: records as u32,
            end: pending.end,
        }))
    }

    /// Records an ACK; moves the acknowledged position to the end of the
    /// longest acknowledged prefix of the batches in flight.
    pub fn on_ack(&mut self, ack: &Ack) -> Result<AckOutcome> {
        if ack.link_id != self.link.link_id {
            return Err(Error::WrongLink {
                expected: self.link.link_id,
                found: ack.link_id,
            });
        }
        let Some(batch) = self
            .in_flight
            .iter_mut()
            .find(|batch| batch.sequence == ack.sequence && !batch.acknowledged)
        else {
            self.stats.acks_ignored += 1;
            return Ok(AckOutcome::Ignored);
        };
        batch.acknowledged = true;
        self.stats.batches_acknowledged += 1;
        let before = self.acknowledged;
        while let Some(front) = self.in_flight.front() {
            if !front.acknowledged {
                break;
            }
            assert!(front.end > self.acknowledged);
            self.acknowledged = front.end;
            self.in_flight.pop_front();
        }
        assert!(self.acknowledged <= self.read_from);
        Ok(if self.acknowledged > before {
            AckOutcome::Advanced(self.acknowledged)
        } else {
            AckOutcome::Pending
        })
    }

    /// The link broke (or an ACK timed out): forget what is in flight and
    /// read again from the acknowledged position.
    pub fn on_link_lost(&mut self) {
        self.in_flight.clear();
        self.batcher.clear();
        self.read_from = self.acknowledged;
        self.stats.rewinds += 1;
    }

    /// Records and bytes sent and not yet acknowledged.
    pub fn lag_in_flight(&self) -> (u64, u64) {
        self.in_flight
            .iter()
            .filter(|batch| !batch.acknowledged)
            .fold((0, 0), |(records, bytes), batch| {
                (records + batch.records, bytes + batch.bytes)
            })
    }

    /// Lag figures; reads one record of the log (the first unacknowledged).
    pub fn lag(&self, log: &impl LogSource, now_ms: u64) -> Result<Lag> {
        let unacknowledged = self.in_flight.iter().filter(|batch| !batch.acknowledged);
        let mut lag = Lag {
            batches_in_flight: unacknowledged.clone().count() as u32,
            records_in_flight: unacknowledged.clone().map(|b| b.records).sum(),
            bytes_in_flight: unacknowledged.clone().map(|b| b.bytes).sum(),
            records_batching: self.batcher.len() as u64,
            ..Lag::default()
        };
        let end = log.written_position();
        lag.log_bytes_behind = if end.segment == self.acknowledged.segment {
            Some(end.offset.saturating_sub(self.acknowledged.offset) as u64)
        } else {
            None
        };
        let mut oldest_hlc = unacknowledged.filter_map(|b| b.oldest_hlc).min();
        if self.acknowledged < end {
            let first = log.read_log(self.acknowledged, 1, 1)?;
            if let Some(record) = first.records.first() {
                let hlc = record.version.hlc;
                oldest_hlc = Some(oldest_hlc.map_or(hlc, |oldest| oldest.min(hlc)));
            }
        }
        match oldest_hlc {
            Some(hlc) => {
                lag.oldest_unacknowledged_age_ms = Some(now_ms.saturating_sub(hlc_ms(hlc)));
                lag.watermark_ms = hlc_ms(hlc).min(now_ms);
            }
            None => lag.watermark_ms = now_ms,
        }
        Ok(lag)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meridian_engine::{Options, Version};

    const LOCAL_ORIGIN: u32 = 1 << 24;

    fn setup(records: usize) -> (tempfile::TempDir, Store, Shipper) {
        let directory = tempfile::tempdir().expect("tempdir");
        let mut store = Store::open(directory.path(), Options::default()).expect("open");
        for index in 0..records {
            let hlc = (1000 + index as u64) << 16;
            store
                .put(
                    format!("k{index}").as_bytes(),
                    b"v",
                    Version::new(hlc, LOCAL_ORIGIN),
                    0,
                )
                .expect("put");
        }
        let link = LinkConfig {
            link_id: 2,
            local_datacenter: 1,
            remote_datacenter: 2,
            cascade: false,
        };
        let config = ShipperConfig {
            max_in_flight: 3,
            batcher: BatcherConfig {
                batch_bytes_max: 1 << 20,
                batch_records_max: 2,
                batch_delay_ms: 0,
            },
            ..ShipperConfig::default()
        };
        let shipper = Shipper::new(link, config, store.log_start(), 7);
        (directory, store, shipper)
    }

    fn ack(sequence: u64) -> Ack {
        Ack {
            link_id: 2,
            sequence,
            applied: 2,
            stale: 0,
            duplicate: false,
        }
    }

    fn drain(shipper: &mut Shipper, store: &Store) -> Vec<OutgoingBatch> {
        let mut sent = Vec::new();
        while let Some(batch) = shipper.pump(store, 2000).expect("pump") {
            sent.push(batch);
        }
        sent
    }

    #[test]
    fn the_window_bounds_batches_in_flight() {
        let (_directory, store, mut shipper) = setup(10);
        let sent = drain(&mut shipper, &store);
        assert_eq!(sent.len(), 3);
        assert_eq!(sent[0].sequence, 7 << 32);
        assert!(!shipper.window_open());
        assert_eq!(shipper.poll(2000), None);
        assert_eq!(
            shipper.on_ack(&ack(sent[0].sequence)).expect("ack"),
            AckOutcome::Advanced(sent[0].end)
        );
        assert_eq!(drain(&mut shipper, &store).len(), 1);
    }

    #[test]
    fn out_of_order_acks_advance_only_the_acknowledged_prefix() {
        let (_directory, store, mut shipper) = setup(6);
        let sent = drain(&mut shipper, &store);
        assert_eq!(sent.len(), 3);
        let start = shipper.acknowledged();
        assert_eq!(
            shipper.on_ack(&ack(sent[2].sequence)).expect("ack"),
            AckOutcome::Pending
        );
        assert_eq!(
            shipper.on_ack(&ack(sent[1].sequence)).expect("ack"),
            AckOutcome::Pending
        );
        assert_eq!(shipper.acknowledged(), start);
        assert_eq!(
            shipper.on_ack(&ack(sent[1].sequence)).expect("ack"),
            AckOutcome::Ignored
        );
        assert_eq!(
            shipper.on_ack(&ack(sent[0].sequence)).expect("ack"),
            AckOutcome::Advanced(sent[2].end)
        );
        assert_eq!(shipper.acknowledged(), store.written_position());
        let wrong = Ack {
            link_id: 3,
            ..ack(0)
        };
        assert!(matches!(
            shipper.on_ack(&wrong),
            Err(Error::WrongLink { .. })
        ));
    }

    #[test]
    fn a_lost_link_rewinds_to_the_acknowledged_position_with_new_sequences() {
        let (_directory, store, mut shipper) = setup(6);
        let sent = drain(&mut shipper, &store);
        shipper.on_ack(&ack(sent[0].sequence)).expect("ack");
        shipper.on_link_lost();
        assert_eq!(shipper.read_position(), sent[0].end);
        let resent = drain(&mut shipper, &store);
        assert_eq!(resent.len(), 2);
        assert_eq!(resent[0].end, sent[1].end);
        assert!(resent[0].sequence > sent[2].sequence);
        // An ack from before the rewind is ignored.
        assert_eq!(
            shipper.on_ack(&ack(sent[1].sequence)).expect("ack"),
            AckOutcome::Ignored
        );
    }

    #[test]
    fn lag_reports_flight_age_and_watermark() {
        let (_directory, store, mut shipper) = setup(4);
        let lag = shipper.lag(&store, 5000).expect("lag");
        assert_eq!(lag.oldest_unacknowledged_age_ms, Some(4000));
        assert_eq!(lag.watermark_ms, 1000);
        assert!(lag.log_bytes_behind.expect("one segment") > 0);
        let sent = drain(&mut shipper, &store);
        let lag = shipper.lag(&store, 5000).expect("lag");
        assert_eq!((lag.batches_in_flight, lag.records_in_flight), (2, 4));
        assert!(lag.bytes_in_flight > 0);
        shipper.on_ack(&ack(sent[0].sequence)).expect("ack");
        assert_eq!(shipper.lag(&store, 5000).expect("lag").watermark_ms, 1002);
        shipper.on_ack(&ack(sent[1].sequence)).expect("ack");
        let lag = shipper.lag(&store, 5000).expect("lag");
        assert_eq!(lag.oldest_unacknowledged_age_ms, None);
        assert_eq!((lag.watermark_ms, lag.log_bytes_behind), (5000, Some(0)));
    }
}

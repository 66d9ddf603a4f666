//! Replication lag per record: the time a record becomes readable at the
//! remote datacenter minus the time its PUT was acknowledged at the origin.
//!
//! The writer hands each tracked write's (sequence, acknowledgement time)
//! to this poller through a bounded queue. The poller keeps the tracked
//! writes not yet seen, oldest first, and sweeps them with MGETs of
//! [`MGET_KEYS_MAX`] keys in turn (the next MGET starts where the last one
//! ended, back at the oldest after the newest), with no pause while any is
//! outstanding: every outstanding write is asked about once per sweep. A
//! key found in the answer is seen at the moment the answer arrived.
//!
//! Resolution: a record found by a poll became readable after the last poll
//! that asked for it and missed it was sent (or, if none missed it, after
//! its acknowledgement);
//! its lag is overstated by at most the span from there to the finding
//! poll's answer. That span is recorded for every found record, and its
//! percentiles are printed as the polling resolution.
//!
//! Why a sample: the writer tracks one write in `track_every`, chosen so
//! that the outstanding set stays near one MGET; polling every write at
//! 100K+ writes/s would make each poll, and so the resolution, slower.
//!
//! Invariants:
//! - a record's lag is recorded at most once, and only for a write the
//!   origin acknowledged;
//! - the outstanding set is bounded by the writer's bounded queue plus
//!   what was already taken from it ([`OUTSTANDING_MAX`] caps it; beyond
//!   it new writes are dropped from tracking and counted);
//! - after `stop`, polling goes on until every tracked write is seen or the
//!   drain deadline passes; the unseen ones are counted, not guessed.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use meridian_net::client::blocking::Client;
use meridian_net::client::ClientConfig;

use crate::writer::{key_of, KEY_BYTES};

/// Keys per MGET.
pub const MGET_KEYS_MAX: usize = 256;
/// Tracked writes held at once.
const OUTSTANDING_MAX: usize = 1 << 20;
/// Largest lag (and resolution) the histograms hold, microseconds.
const LAG_US_MAX: u64 = 600_000_000;
/// The pause when nothing is outstanding.
const IDLE_PAUSE: Duration = Duration::from_micros(50);

/// What the poller measured.
#[derive(Debug)]
pub struct LagResult {
    /// Lag of every seen record, microseconds.
    pub lag_us: Histogram<u64>,
    /// For every seen record, the most its lag can be overstated, microseconds.
    pub resolution_us: Histogram<u64>,
    /// MGETs sent.
    pub polls: u64,
    /// Tracked writes never seen before the drain deadline.
    pub unseen: u64,
    /// Tracked writes dropped because the outstanding set was full.
    pub dropped: u64,
    pub failures: Vec<String>,
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LAG_US_MAX, 3).expect("constant histogram bounds are valid")
}

fn micros(duration: Duration) -> u64 {
    (duration.as_micros() as u64).clamp(1, LAG_US_MAX)
}

/// A tracked write not yet seen at the remote.
struct Tracked {
    acknowledged: Instant,
    key: [u8; KEY_BYTES],
    /// When the last MGET that asked for it and missed it was sent.
    missed_at: Option<Instant>,
}

/// Polls `remote` for the writes `tracked` announces until `stop` is set
/// and everything is seen, or `drain_deadline_after_stop` passes.
pub fn run(
    remote: ClientConfig,
    key_tag: u8,
    tracked: Receiver<(u64, Instant)>,
    stop: Arc<AtomicBool>,
    drain_after_stop: Duration,
) -> LagResult {
    let mut result = LagResult {
        lag_us: histogram(),
        resolution_us: histogram(),
        polls: 0,
        unseen: 0,
        dropped: 0,
        failures: Vec::new(),
    };
    let mut client = match Client::connect(remote) {
        Ok(client) => client,
        Err(e) => {
            result.failures.push(format!("connect to the remote: {e}"));
            return result;
        }
    };
    // Oldest first; new writes are appended.
    let mut outstanding: Vec<Tracked> = Vec::new();
    // Where the next MGET starts: polls sweep the whole set in turn.
    let mut cursor = 0usize;
    let mut stopped_at: Option<Instant> = None;
    let mut writer_done = false;
    loop {
        while !writer_done {
            match tracked.try_recv() {
                Ok((seq, acknowledged)) => {
                    if outstanding.len() >= OUTSTANDING_MAX {
                        result.dropped += 1;
                        continue;
                    }
                    let mut key = [0u8; KEY_BYTES];
                    key_of(key_tag, seq, &mut key);
                    outstanding.push(Tracked {
                        acknowledged,
                        key,
                        missed_at: None,
                    });
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => writer_done = true,
            }
        }
        if stopped_at.is_none() && stop.load(Ordering::SeqCst) {
            stopped_at = Some(Instant::now());
        }
        if let Some(stopped) = stopped_at {
            let deadline_passed = stopped.elapsed() >= drain_after_stop;
            if (writer_done && outstanding.is_empty()) || deadline_passed {
                break;
            }
        }
        if outstanding.is_empty() {
            std::thread::sleep(IDLE_PAUSE);
            continue;
        }
        if cursor >= outstanding.len() {
            cursor = 0;
        }
        let end = (cursor + MGET_KEYS_MAX).min(outstanding.len());
        let keys: Vec<&[u8]> = outstanding[cursor..end]
            .iter()
            .map(|tracked| &tracked.key[..])
            .collect();
        let sent = Instant::now();
        let found = match client.mget(&keys) {
            Ok(found) => found,
            Err(e) => {
                result.failures.push(format!("MGET at the remote: {e}"));
                break;
            }
        };
        let answered = Instant::now();
        result.polls += 1;
        assert_eq!(found.len(), end - cursor, "MGET answers one entry per key");
        let mut index = 0;
        let mut kept_in_window = 0;
        outstanding.retain_mut(|entry| {
            let position = index;
            index += 1;
            if position < cursor || position >= end {
                return true;
            }
            if found[position - cursor].is_none() {
                entry.missed_at = Some(sent);
                kept_in_window += 1;
                return true;
            }
            let lag = answered.saturating_duration_since(entry.acknowledged);
            result.lag_us.saturating_record(micros(lag));
            let readable_after = entry.missed_at.unwrap_or(entry.acknowledged);
            let span = answered.saturating_duration_since(readable_after);
            result.resolution_us.saturating_record(micros(span));
            false
        });
        cursor += kept_in_window;
    }
    result.unseen = outstanding.len() as u64;
    // Writes still queued (never taken) are unseen too.
    result.unseen += tracked.try_iter().count() as u64;
    result
}

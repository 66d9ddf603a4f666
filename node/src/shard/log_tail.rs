//! What the XDC executor asks of a shard: log reads, cursor moves, the
//! partitions this node ships, and how far behind a link's cursors are.
//!
//! The vnode stores live on their shard; the XDC executor (its own core)
//! never touches them. It sends one call per shard per tick carrying every
//! read it wants, and the shard answers only for the vnodes whose log grew
//! past the asked position, so an idle link costs a shard one message per
//! tick and a comparison per vnode.
//!
//! Invariants:
//! - a read is answered with the position it was asked from, so the
//!   shipper can drop an answer that crossed a rewind;
//! - records are slices of the store's memory map (no copy); they keep the
//!   map alive until the XDC executor drops them;
//! - a cursor only moves forward (`Store::advance_cursor`); registering
//!   sets it, after a restart, to the position the link persisted.

use meridian_engine::{LogBatch, LogPosition};
use meridian_xdc::ReadRequest;

use super::Shard;

/// One vnode read asked by the XDC executor.
#[derive(Clone, Copy, Debug)]
pub struct TailRead {
    pub partition: u32,
    pub request: ReadRequest,
}

/// The answer to one [`TailRead`] whose vnode had records to give.
#[derive(Debug)]
pub struct TailAnswer {
    pub partition: u32,
    pub from: LogPosition,
    pub result: Result<LogBatch, TailError>,
}

/// Why a vnode's log could not be read.
#[derive(Clone, Debug)]
pub enum TailError {
    /// Compaction removed records the link had not shipped (the cursor
    /// passed its retention cap): the link needs a fullsync.
    FellBehind(String),
    Other(String),
}

/// How far a link's cursor on one vnode is behind its log.
#[derive(Clone, Copy, Debug, Default)]
pub struct CursorLag {
    pub bytes_behind: u64,
    /// hlc of the first record after the cursor, if any.
    pub oldest_unshipped_hlc: Option<u64>,
}

impl Shard {
    /// Answers the reads whose vnode log holds records past `from`.
    pub fn tail_reads(&self, reads: &[TailRead]) -> Vec<TailAnswer> {
        let stores = self.stores.borrow();
        let mut answers = Vec::new();
        for read in reads {
            let Some(store) = stores.get(&read.partition) else {
                continue;
            };
            let from = read.request.from;
            let start = if from.segment == 0 {
                store.log_start()
            } else {
                from
            };
            if store.written_position() <= start {
                continue;
            }
            let result = store
                .read_log(from, read.request.max_records, read.request.max_bytes)
                .map_err(|error| match error {
                    meridian_engine::Error::CursorFellBehind { .. } => {
                        TailError::FellBehind(error.to_string())
                    }
                    other => TailError::Other(other.to_string()),
                });
            answers.push(TailAnswer {
                partition: read.partition,
                from,
                result,
            });
        }
        answers
    }

    /// Registers (`register`) or advances a link's cursor on vnodes of this
    /// shard, opening none: a vnode without a store has no log to protect.
    pub fn move_cursors(&self, name: &str, moves: &[(u32, LogPosition)], register: bool) {
        let mut stores = self.stores.borrow_mut();
        for &(partition, position) in moves {
            let Some(store) = stores.get_mut(&partition) else {
                continue;
            };
            if register || store.cursor_status(name).is_none() {
                store.register_cursor(name, position);
            } else if let Err(error) = store.advance_cursor(name, position) {
                tracing::warn!(partition, name, %error, "xdc cursor not advanced");
            }
        }
    }

    /// Forgets a link's cursor on every vnode of this shard (the link was
    /// disconnected: its log no longer needs protecting).
    pub fn remove_cursors(&self, name: &str) {
        for store in self.stores.borrow_mut().values_mut() {
            store.remove_cursor(name);
        }
    }

    /// How far each acknowledged position is behind its vnode's log.
    pub fn cursor_lags(&self, positions: &[(u32, LogPosition)]) -> Vec<(u32, CursorLag)> {
        let stores = self.stores.borrow();
        positions
            .iter()
            .filter_map(|&(partition, position)| {
                let store = stores.get(&partition)?;
                let oldest_unshipped_hlc = store
                    .read_log(position, 1, 1)
                    .ok()
                    .and_then(|batch| batch.records.first().map(|record| record.version.hlc));
                Some((
                    partition,
                    CursorLag {
                        bytes_behind: store.bytes_after(position),
                        oldest_unshipped_hlc,
                    },
                ))
            })
            .collect()
    }

    /// The partitions this node ships to other datacenters: in a cluster,
    /// those whose first live *primary* is this node (a fallback holds only
    /// hints, which reach a primary's log and are shipped from there);
    /// alone, all of them.
    pub fn shipped_partitions(&self) -> Vec<u32> {
        let partitions = self.config.storage.partitions;
        match &self.cluster {
            None => (0..partitions).collect(),
            Some(cluster) => {
                let view = cluster.view();
                (0..partitions)
                    .filter(|&partition| {
                        view.ring
                            .primaries(partition)
                            .into_iter()
                            .find(|&node| cluster.is_live(node))
                            == Some(cluster.self_id)
                    })
                    .collect()
            }
        }
    }

    /// The newest records (tombstones included) of `keys` in vnode
    /// `partition`, for fullsync; absent keys are left out.
    pub fn read_records(
        &self,
        partition: u32,
        keys: Vec<bytes::Bytes>,
    ) -> Result<Vec<meridian_xdc::XdcRecord>, String> {
        let stores = self.stores.borrow();
        let Some(store) = stores.get(&partition) else {
            return Ok(Vec::new());
        };
        let mut records = Vec::with_capacity(keys.len());
        for key in keys {
            if let Some(entry) = store.read(&key).map_err(|e| e.to_string())? {
                records.push(meridian_xdc::XdcRecord {
                    kind: entry.kind,
                    partition,
                    key,
                    value: entry.value,
                    version: entry.version,
                    expires_at: entry.expires_at,
                });
            }
        }
        Ok(records)
    }

    /// Takes a version received from another datacenter into account, so
    /// this shard's next write is stamped after it.
    pub fn observe_remote(&self, hlc: u64) {
        self.clock.borrow_mut().observe(hlc);
    }
}

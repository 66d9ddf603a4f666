//! One shard: the vnodes a core owns, its clock, its journal and its group
//! commit.
//!
//! A shard is driven by one glommio executor and shares nothing with other
//! shards: another shard's request arrives over the shard's bounded inbox
//! (a flume channel) and is answered over a one-shot reply channel. Every
//! write goes through `Shard::write_record`: into its vnode store, then into
//! the shard's journal, which `group_commit` makes durable.
//!
//! Invariants:
//! - a vnode's store lives in exactly one shard;
//! - after a journal write or fdatasync failed, the shard accepts no write
//!   (the kernel may have dropped the pages) until it is restarted.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::task::Waker;

use bytes::Bytes;
use meridian_engine::journal::{JournalWriter, PreparedFile};
use meridian_engine::{Applied, LookupWarmup, Options, RecordKind, Store, Version, WriteReceipt};
use meridian_net::message::{Version as WireVersion, VersionedValue};
use meridian_net::{ErrorCode, Response};

use crate::config::{Config, DurabilityMode};
use crate::hlc::{origin, HybridClock};
use crate::metrics::ShardCounters;
use crate::partition::Partitioner;

mod group_commit;
mod log_tail;
mod replica;
pub use group_commit::SyncWait;
pub use log_tail::{CursorLag, TailAnswer, TailError, TailRead};
pub use replica::{
    entry_kind, hint_key, parse_hint_key, PeerFailure, PeerOp, WRITE_APPLIED, WRITE_STALE,
};

/// An operation on one vnode.
#[derive(Debug)]
pub enum VnodeOp {
    Get {
        key: Bytes,
    },
    Put {
        key: Bytes,
        value: Bytes,
        version: Version,
        expires_at: u32,
    },
    Delete {
        key: Bytes,
        version: Version,
    },
}

impl VnodeOp {
    /// The key the op is about (it decides the partition).
    pub fn key(&self) -> &Bytes {
        match self {
            VnodeOp::Get { key } | VnodeOp::Put { key, .. } | VnodeOp::Delete { key, .. } => key,
        }
    }
}

/// A call from another shard.
#[derive(Debug)]
pub enum ShardCall {
    Op {
        partition: u32,
        op: VnodeOp,
        reply: flume::Sender<Response>,
    },
    Peer {
        partition: u32,
        op: PeerOp,
        reply: flume::Sender<Result<meridian_net::peer::PeerResponse, PeerFailure>>,
    },
    Stats {
        reply: flume::Sender<ShardReport>,
    },
    /// A ring another shard of this node adopted.
    Ring {
        ring: Box<meridian_ring::Ring>,
    },
    /// A membership request, for shard 0.
    Membership {
        request: meridian_net::peer::Membership,
        reply: flume::Sender<Result<meridian_net::peer::PeerResponse, PeerFailure>>,
    },
    /// The CLUSTERINFO document, built by shard 0 (it holds the claimant's
    /// handoff reports).
    ClusterInfo {
        reply: flume::Sender<String>,
    },
    /// XDC: the reads of a tick whose vnodes have records to give.
    TailReads {
        reads: Vec<TailRead>,
        reply: flume::Sender<Vec<TailAnswer>>,
    },
    /// XDC: register (after a restart) or advance a link's cursors.
    MoveCursors {
        name: String,
        moves: Vec<(u32, meridian_engine::LogPosition)>,
        register: bool,
    },
    /// XDC: a link was disconnected; stop protecting its log.
    RemoveCursors {
        name: String,
    },
    /// XDC: how far a link's cursors are behind.
    CursorLags {
        positions: Vec<(u32, meridian_engine::LogPosition)>,
        reply: flume::Sender<Vec<(u32, CursorLag)>>,
    },
    /// XDC: apply records fetched from another datacenter (fullsync),
    /// through this shard's coordinator, keeping their versions.
    XdcApply {
        records: Vec<meridian_xdc::XdcRecord>,
        reply: flume::Sender<Result<Vec<meridian_engine::Applied>, String>>,
    },
    /// XDC: the records of some keys of one vnode (fullsync).
    ReadRecords {
        partition: u32,
        keys: Vec<Bytes>,
        reply: flume::Sender<Result<Vec<meridian_xdc::XdcRecord>, String>>,
    },
    /// XDC: the addresses of the ring's other members (asked of shard 0).
    PeerAddresses {
        reply: flume::Sender<Vec<String>>,
    },
    /// XDC: the partitions this node ships (asked of shard 0).
    ShippedPartitions {
        reply: flume::Sender<Vec<u32>>,
    },
}

/// Keys one `Shard::warm_lookups` warms at most (a pipelined batch's
/// first ones; the misses of more than this many would not all be in
/// flight at once anyway).
pub const WARM_KEYS_MAX: usize = 32;

/// What a shard reports for STATS, NODEHEALTH and the metrics.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct ShardReport {
    pub shard: usize,
    pub vnodes: usize,
    pub keys: u64,
    pub live_bytes: u64,
    pub disk_bytes: u64,
    pub keydir_bytes: u64,
    pub requests: u64,
    pub gets: u64,
    pub puts: u64,
    pub deletes: u64,
    pub errors: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub connections: u64,
    pub syncs: u64,
    pub sync_failures: u64,
    pub journal_bytes: u64,
    pub checkpoints: u64,
    pub compactions: u64,
    pub read_repairs: u64,
    pub hints_delivered: u64,
    pub anti_entropy_repairs: u64,
    pub handoff_records: u64,
    pub ring_epoch: u64,
    pub transfers_pending: u64,
    pub xdc_records_applied: u64,
    pub xdc_records_stale: u64,
    pub xdc_conflicts: u64,
    pub xdc_clock_skew_records: u64,
    pub writes_refused: bool,
    /// (partition, XOR of its bucket digests) of every local vnode.
    pub partition_digests: Vec<(u32, u64)>,
}

pub struct Shard {
    pub index: usize,
    pub config: Arc<Config>,
    pub partitioner: Partitioner,
    pub inboxes: Vec<flume::Sender<ShardCall>>,
    pub shutdown: Arc<AtomicBool>,
    pub counters: ShardCounters,
    /// The ring and the links to other members; `None` for a cluster of one.
    pub cluster: Option<crate::cluster::Cluster>,
    /// The way to the XDC executor (operators' commands, synchronous links).
    pub xdc: crate::xdc::XdcHandle,
    stores: RefCell<HashMap<u32, Store, PartitionHash>>,
    /// Hints for down primaries (opened on first use).
    hints: RefCell<Option<Store>>,
    clock: RefCell<HybridClock>,
    origin: u32,
    sync_started: Cell<u64>,
    sync_completed: Cell<u64>,
    sync_requested: Cell<u64>,
    /// Recent failed sync epochs with their reasons (bounded).
    sync_failures: RefCell<Vec<(u64, String)>>,
    sync_waiters: RefCell<Vec<Waker>>,
    sync_loop_waker: RefCell<Option<Waker>>,
    /// The write-ahead journal; `None` under `durability = "none"`.
    journal: RefCell<Option<JournalWriter>>,
    /// The next journal file, zero-filled in the background.
    spare_journal: RefCell<Option<PreparedFile>>,
    checkpointing: Cell<bool>,
    /// Why writes are refused since a journal write or sync failed.
    journal_failure: RefCell<Option<String>>,
    /// Keys of lone GETs waiting for `warm_queued` (at most `WARM_KEYS_MAX`).
    warm_queue: RefCell<Vec<Bytes>>,
}

impl std::fmt::Debug for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shard").field("index", &self.index).finish()
    }
}

/// Hashes a partition number for the map of stores, looked up once per
/// request: one multiply (Fibonacci hashing) instead of SipHash, whose
/// resistance to chosen keys buys nothing for numbers this node assigns.
type PartitionHash = std::hash::BuildHasherDefault<PartitionHasher>;

#[derive(Debug, Default)]
struct PartitionHasher(u64);

impl std::hash::Hasher for PartitionHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(byte)).wrapping_mul(FIBONACCI_MULTIPLIER);
        }
    }

    fn write_u32(&mut self, partition: u32) {
        // The high bits (hashbrown's control byte) and the low bits (its
        // bucket index) both depend on every bit of the partition.
        self.0 = (u64::from(partition) ^ self.0).wrapping_mul(FIBONACCI_MULTIPLIER);
        self.0 ^= self.0 >> 32;
    }
}

/// 2^64 / golden ratio.
const FIBONACCI_MULTIPLIER: u64 = 0x9E37_79B9_7F4A_7C15;

/// The partition number that names the hint store in sync plans and in the
/// journal.
pub const HINT_STORE: u32 = u32::MAX;

/// Where vnode `partition`'s store lives.
pub fn vnode_directory(data_dir: &std::path::Path, partition: u32) -> PathBuf {
    data_dir.join(format!("vnode-{partition:05}"))
}

/// Where shard `shard`'s hint store lives.
pub fn hint_directory(data_dir: &std::path::Path, shard: usize) -> PathBuf {
    data_dir.join(format!("hints-shard-{shard:03}"))
}

/// Where shard `shard`'s journal files live.
pub fn journal_directory(data_dir: &std::path::Path, shard: usize) -> PathBuf {
    data_dir.join("journal").join(format!("shard-{shard:03}"))
}

fn storage_error(error: meridian_engine::Error) -> Response {
    let code = match error {
        meridian_engine::Error::KeyTooLarge { .. } => ErrorCode::KeyTooLarge,
        meridian_engine::Error::ValueTooLarge { .. } => ErrorCode::ValueTooLarge,
        _ => ErrorCode::StorageError,
    };
    Response::Error {
        code,
        message: error.to_string(),
    }
}

fn wire(version: Version) -> WireVersion {
    WireVersion {
        hlc: version.hlc,
        origin: version.origin,
    }
}

impl Shard {
    pub fn new(
        index: usize,
        config: Arc<Config>,
        inboxes: Vec<flume::Sender<ShardCall>>,
        shutdown: Arc<AtomicBool>,
        xdc: crate::xdc::XdcHandle,
    ) -> Result<Shard, String> {
        let partitioner = Partitioner::new(config.storage.partitions, inboxes.len());
        let origin = origin(config.node.datacenter_id, config.node.node_id, index as u8);
        let cluster = crate::cluster::Cluster::build(&config)?;
        let journal = if config.journaled() {
            let directory = journal_directory(&config.storage.data_dir, index);
            let next = meridian_engine::journal::journal_files(&directory)
                .map_err(|e| e.to_string())?
                .last()
                .map_or(1, |(sequence, _)| sequence + 1);
            let bytes = config.storage.journal_file_bytes;
            let first = PreparedFile::create(&directory, next, bytes).map_err(|e| e.to_string())?;
            Some(JournalWriter::new(&directory, first, bytes))
        } else {
            None
        };
        Ok(Shard {
            cluster,
            xdc,
            index,
            partitioner,
            inboxes,
            shutdown,
            counters: ShardCounters::default(),
            stores: RefCell::new(HashMap::default()),
            hints: RefCell::new(None),
            clock: RefCell::new(HybridClock::default()),
            origin,
            sync_started: Cell::new(0),
            sync_completed: Cell::new(0),
            sync_requested: Cell::new(0),
            sync_failures: RefCell::new(Vec::new()),
            sync_waiters: RefCell::new(Vec::new()),
            sync_loop_waker: RefCell::new(None),
            journal: RefCell::new(journal),
            spare_journal: RefCell::new(None),
            checkpointing: Cell::new(false),
            journal_failure: RefCell::new(None),
            warm_queue: RefCell::new(Vec::new()),
            config,
        })
    }

    fn vnode_directory(&self, partition: u32) -> PathBuf {
        vnode_directory(&self.config.storage.data_dir, partition)
    }

    fn hint_directory(&self) -> PathBuf {
        hint_directory(&self.config.storage.data_dir, self.index)
    }

    fn store_options(&self) -> Options {
        let limits = &self.config.limits;
        Options {
            segment_bytes: self.config.storage.segment_bytes,
            key_bytes_max: limits.key_bytes_max as usize,
            value_bytes_max: limits.value_bytes_max as usize,
            // Stores write through their maps and never sync on their
            // own: the journal makes writes durable (checkpoints sync the
            // stores), or nothing does (`durability = "none"`).
            durability: meridian_engine::Durability::None,
            compaction_dead_fraction: self.config.storage.compaction_dead_fraction,
            tombstone_grace_s: self.config.storage.tombstone_grace_s,
            cursor_retention_bytes: self.config.xdc.retention_bytes,
            ..Options::default()
        }
    }

    /// Opens the vnodes of this shard that exist on disk.
    pub fn open_existing(&self) -> Result<(), meridian_engine::Error> {
        for partition in 0..self.config.storage.partitions {
            if self.partitioner.shard_of_partition(partition) == self.index
                && self.vnode_directory(partition).exists()
            {
                let store = Store::open(self.vnode_directory(partition), self.store_options())?;
                self.stores.borrow_mut().insert(partition, store);
            }
        }
        if self.hint_directory().exists() {
            *self.hints.borrow_mut() =
                Some(Store::open(self.hint_directory(), self.store_options())?);
        }
        Ok(())
    }

    /// Adopts `ring` if it wins over this shard's (see `cluster`); on a
    /// change, shard 0 persists it and, with `spread`, the node's other
    /// shards are sent it. Returns the new view when adopted.
    pub fn adopt_ring(
        &self,
        ring: meridian_ring::Ring,
        spread: bool,
    ) -> Option<Rc<crate::cluster::RingView>> {
        let cluster = self.cluster.as_ref()?;
        let view = match cluster.adopt(ring) {
            Ok(Some(view)) => view,
            Ok(None) => return None,
            Err(reason) => {
                tracing::debug!(%reason, "ring not adopted");
                return None;
            }
        };
        tracing::info!(
            shard = self.index,
            epoch = view.ring.epoch(),
            transfers = view.ring.transfers().len(),
            "adopted a ring"
        );
        if self.index == 0 {
            if let Err(error) = cluster.persist() {
                tracing::error!(%error, "the ring could not be persisted");
            }
        }
        if spread {
            for (index, inbox) in self.inboxes.iter().enumerate() {
                if index == self.index {
                    continue;
                }
                let (inbox, ring) = (inbox.clone(), Box::new(view.ring.clone()));
                glommio::spawn_local(async move {
                    let _ = inbox.send_async(ShardCall::Ring { ring }).await;
                })
                .detach();
            }
        }
        Some(view)
    }

    /// Stamps a new version for a write this shard coordinates.
    pub fn stamp(&self) -> Version {
        Version::new(self.clock.borrow_mut().next(), self.origin)
    }

    /// Warms the cache lines that looking up `keys` in this shard's stores
    /// will read (`Store::warm_index`, level by level over the batch), so
    /// that a pipelined batch waits for its cache misses together instead
    /// of one key after the other. Keys of other shards, and keys beyond
    /// the first `WARM_KEYS_MAX`, are skipped. Hints only: nothing changes.
    /// Queues `key` for the next `warm_queued` (at most `WARM_KEYS_MAX`
    /// keys wait); returns whether it was queued.
    pub fn queue_warmup(&self, key: Bytes) -> bool {
        let mut queued = self.warm_queue.borrow_mut();
        if queued.len() >= WARM_KEYS_MAX {
            return false;
        }
        queued.push(key);
        true
    }

    /// Warms the lookups of every queued key together and empties the
    /// queue (the connections that queued them find it empty).
    pub fn warm_queued(&self) {
        let keys = std::mem::take(&mut *self.warm_queue.borrow_mut());
        if !keys.is_empty() {
            self.warm_lookups(keys.iter().map(|key| &key[..]));
        }
    }

    pub fn warm_lookups<'k>(&self, keys: impl Iterator<Item = &'k [u8]>) {
        let stores = self.stores.borrow();
        let mut warming: [Option<(&Store, LookupWarmup)>; WARM_KEYS_MAX] = [None; WARM_KEYS_MAX];
        let mut count = 0;
        for key in keys {
            if count == WARM_KEYS_MAX {
                break;
            }
            let partition = self.partitioner.partition_of(key);
            if self.partitioner.shard_of_partition(partition) != self.index {
                continue;
            }
            if let Some(store) = stores.get(&partition) {
                warming[count] = Some((store, store.warm_index(key)));
                count += 1;
            }
        }
        for (store, warmup) in warming[..count].iter_mut().flatten() {
            store.warm_entry(warmup);
        }
        for (store, warmup) in warming[..count].iter().flatten() {
            store.warm_record(warmup);
        }
    }

    /// Applies an op to a local vnode. Returns the response and, for a write
    /// that must wait for a sync, the epoch to wait for.
    pub fn apply(&self, partition: u32, op: VnodeOp) -> (Response, Option<u64>) {
        debug_assert_eq!(self.partitioner.shard_of_partition(partition), self.index);
        let mut stores = self.stores.borrow_mut();
        if !stores.contains_key(&partition) {
            if let VnodeOp::Get { .. } = op {
                self.counters.gets.set(self.counters.gets.get() + 1);
                return (Response::NotFound, None);
            }
            match Store::open(self.vnode_directory(partition), self.store_options()) {
                Ok(store) => {
                    stores.insert(partition, store);
                }
                Err(error) => return (storage_error(error), None),
            }
        }
        let store = stores.get_mut(&partition).expect("opened above");
        match op {
            VnodeOp::Get { key } => {
                self.counters.gets.set(self.counters.gets.get() + 1);
                match store.get(&key) {
                    Ok(Some(entry)) => {
                        let value = VersionedValue {
                            version: wire(entry.version),
                            value: entry.value,
                        };
                        (Response::Value(value), None)
                    }
                    Ok(None) => (Response::NotFound, None),
                    Err(error) => (storage_error(error), None),
                }
            }
            VnodeOp::Put {
                key,
                value,
                version,
                expires_at,
            } => {
                self.counters.puts.set(self.counters.puts.get() + 1);
                let result = self.write_record(
                    store,
                    partition,
                    RecordKind::Put,
                    &key,
                    &value,
                    version,
                    expires_at,
                );
                self.finish_write(result, version)
            }
            VnodeOp::Delete { key, version } => {
                self.counters.deletes.set(self.counters.deletes.get() + 1);
                let result = self.write_record(
                    store,
                    partition,
                    RecordKind::Tombstone,
                    &key,
                    &[],
                    version,
                    0,
                );
                self.finish_write(result, version)
            }
        }
    }

    /// Writes a record to `store` (vnode `partition`, or `HINT_STORE`) and,
    /// when the store took it, to the journal: the one way a shard writes.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn write_record(
        &self,
        store: &mut Store,
        partition: u32,
        kind: RecordKind,
        key: &[u8],
        value: &[u8],
        version: Version,
        expires_at: u32,
    ) -> meridian_engine::Result<WriteReceipt> {
        if let Some(reason) = self.journal_failure.borrow().as_ref() {
            return Err(meridian_engine::Error::WritesRefused {
                reason: reason.clone(),
            });
        }
        let receipt = store.apply(kind, key, value, version, expires_at)?;
        if receipt.applied == Applied::Written {
            if let Some(journal) = self.journal.borrow_mut().as_mut() {
                let value = if kind == RecordKind::Tombstone {
                    &[][..]
                } else {
                    value
                };
                journal.append(
                    partition,
                    &meridian_engine::format::RecordFields {
                        kind,
                        key,
                        value,
                        version,
                        expires_at,
                    },
                );
            }
        }
        Ok(receipt)
    }

    fn finish_write(
        &self,
        result: meridian_engine::Result<meridian_engine::WriteReceipt>,
        version: Version,
    ) -> (Response, Option<u64>) {
        match result {
            Ok(receipt) => {
                let written = match receipt.applied {
                    Applied::Written => version,
                    Applied::Stale { current } => current,
                };
                let wait = (self.config.storage.durability == DurabilityMode::Sync)
                    .then(|| self.request_sync());
                (
                    Response::Written {
                        version: wire(written),
                    },
                    wait,
                )
            }
            Err(error) => (storage_error(error), None),
        }
    }

    /// One slice of background work (hints, compaction) on one vnode;
    /// returns true if there was work.
    pub fn maintenance_slice(&self, budget_bytes: u64) -> bool {
        let mut stores = self.stores.borrow_mut();
        let mut worked = false;
        for (partition, store) in stores.iter_mut() {
            match store.compact_step(budget_bytes) {
                Ok(progress) => {
                    if progress.finished_run {
                        self.counters
                            .compactions
                            .set(self.counters.compactions.get() + 1);
                    }
                    if !progress.idle {
                        worked = true;
                        break;
                    }
                }
                Err(error) => {
                    tracing::error!(partition, %error, "compaction failed");
                }
            }
        }
        worked
    }

    pub fn report(&self) -> ShardReport {
        let stores = self.stores.borrow();
        let mut report = self.counters.report(self.index);
        report.vnodes = stores.len();
        for store in stores.values() {
            let stats = store.stats();
            report.keys += stats.keys as u64;
            report.live_bytes += stats.live_bytes;
            report.disk_bytes += stats.disk_bytes;
            report.keydir_bytes += stats.keydir_bytes as u64;
        }
        let partitions = self.config.storage.partitions;
        report.partition_digests = stores
            .iter()
            .map(|(&partition, store)| {
                let (first, count) = crate::cluster::buckets_of_partition(partition, partitions);
                let digest =
                    (0..count).fold(0, |d, i| d ^ store.bucket_digest((first as u32 + i) as u16));
                (partition, digest)
            })
            .collect();
        report.partition_digests.sort_unstable();
        report.writes_refused =
            !self.sync_failures.borrow().is_empty() || self.journal_failure.borrow().is_some();
        if let Some(cluster) = self.cluster.as_ref() {
            let view = cluster.view();
            report.ring_epoch = view.ring.epoch();
            report.transfers_pending = view.ring.transfers().len() as u64;
        }
        report
    }

    /// Syncs and closes every store (writing missing hint files); once all
    /// closed cleanly the journal is no longer needed and goes.
    pub fn close_all(&self) {
        let mut stores: Vec<(u32, Store)> = self.stores.borrow_mut().drain().collect();
        if let Some(hints) = self.hints.borrow_mut().take() {
            stores.push((HINT_STORE, hints));
        }
        let mut clean = true;
        for (partition, store) in stores {
            if let Err(error) = store.close() {
                tracing::error!(partition, %error, "closing vnode failed");
                clean = false;
            }
        }
        let Some(journal) = self.journal.borrow_mut().take() else {
            return;
        };
        if clean {
            if let Err(error) =
                meridian_engine::journal::remove_files_before(journal.directory(), u64::MAX)
            {
                tracing::error!(%error, "journal files not removed (start-up replays them)");
            }
        }
    }
}

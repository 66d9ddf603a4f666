//! One shard: the vnodes a core owns, its clock, and its group commit.
//!
//! A shard is driven by one glommio executor and shares nothing with other
//! shards: another shard's request arrives over the shard's bounded inbox
//! (a flume channel) and is answered over a one-shot reply channel.
//!
//! Group commit: a write under `sync` durability is applied to its store at
//! once and then waits for the *next sync cycle to start* (`sync_started +
//! 1`). A cycle takes every store's sync plan, fdatasyncs the files off the
//! core, and marks the stores synced; every write applied before the cycle
//! started is covered by it, so all writes that arrive together share one
//! fdatasync per file.
//!
//! Invariants:
//! - `sync_completed <= sync_started`; a waiter for epoch `e` is released
//!   only when `sync_completed >= e` (or with an error if that cycle failed);
//! - a vnode's store lives in exactly one shard.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use meridian_engine::{Applied, Options, RecordKind, Store, Version};
use meridian_net::message::{Version as WireVersion, VersionedValue};
use meridian_net::{ErrorCode, Response};

use crate::config::{Config, DurabilityMode};
use crate::hlc::{origin, HybridClock};
use crate::metrics::ShardCounters;
use crate::partition::Partitioner;

mod log_tail;
mod replica;
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

/// The partition number that names the hint store in sync plans.
const HINT_STORE: u32 = u32::MAX;

/// Failed sync epochs remembered for waiters that poll late.
const SYNC_FAILURES_KEPT: usize = 64;

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
            config,
        })
    }

    fn vnode_directory(&self, partition: u32) -> PathBuf {
        self.config
            .storage
            .data_dir
            .join(format!("vnode-{partition:05}"))
    }

    fn hint_directory(&self) -> PathBuf {
        self.config
            .storage
            .data_dir
            .join(format!("hints-shard-{:03}", self.index))
    }

    fn store_options(&self) -> Options {
        let limits = &self.config.limits;
        Options {
            segment_bytes: self.config.storage.segment_bytes,
            key_bytes_max: limits.key_bytes_max as usize,
            value_bytes_max: limits.value_bytes_max as usize,
            durability: self.config.engine_durability(),
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
                let result = store.put(&key, &value, version, expires_at);
                self.finish_write(result, version)
            }
            VnodeOp::Delete { key, version } => {
                self.counters.deletes.set(self.counters.deletes.get() + 1);
                let result = store.apply(RecordKind::Tombstone, &key, &[], version, 0);
                self.finish_write(result, version)
            }
        }
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

    /// Asks for a sync cycle; returns the epoch that will cover what was
    /// written so far.
    pub fn request_sync(&self) -> u64 {
        let epoch = self.sync_started.get() + 1;
        self.sync_requested
            .set(self.sync_requested.get().max(epoch));
        if let Some(waker) = self.sync_loop_waker.borrow_mut().take() {
            waker.wake();
        }
        epoch
    }

    /// Waits until sync epoch `epoch` completed.
    pub fn wait_synced(&self, epoch: u64) -> SyncWait<'_> {
        SyncWait { shard: self, epoch }
    }

    /// The group-commit loop: one sync cycle whenever one is requested.
    pub async fn run_sync_loop(self: Rc<Self>) {
        loop {
            WaitForRequest { shard: &self }.await;
            if self.shutdown.load(Ordering::Relaxed)
                && self.sync_requested.get() <= self.sync_started.get()
            {
                return;
            }
            self.sync_cycle().await;
        }
    }

    /// Syncs every store with unsynced writes; completes one epoch.
    pub async fn sync_cycle(&self) {
        let epoch = self.sync_started.get() + 1;
        self.sync_started.set(epoch);
        let mut plans: Vec<(u32, meridian_engine::SyncPlan)> = self
            .stores
            .borrow()
            .iter()
            .filter_map(|(&partition, store)| store.sync_plan().map(|plan| (partition, plan)))
            .collect();
        if let Some(plan) = self
            .hints
            .borrow()
            .as_ref()
            .and_then(|store| store.sync_plan())
        {
            plans.push((HINT_STORE, plan));
        }
        // Every store's files are synced at once: one cycle costs about one
        // fdatasync, not one per vnode.
        let results = match self.config.storage.sync_method {
            crate::config::SyncMethod::Fdatasync => crate::sync::sync_plans(&plans).await,
            crate::config::SyncMethod::Syncfs => {
                let outcome = crate::sync::sync_filesystem(&self.config.storage.data_dir).await;
                plans
                    .iter()
                    .map(|_| crate::sync::clone_result(&outcome))
                    .collect()
            }
        };
        let mut failure = None;
        for ((partition, plan), result) in plans.iter().zip(results) {
            let mut stores = self.stores.borrow_mut();
            let mut hints = self.hints.borrow_mut();
            let store = if *partition == HINT_STORE {
                hints.as_mut()
            } else {
                stores.get_mut(partition)
            };
            let Some(store) = store else { continue };
            match result {
                Ok(()) => store.sync_completed(plan),
                Err(error) => {
                    store.sync_failed(&error);
                    self.counters
                        .sync_failures
                        .set(self.counters.sync_failures.get() + 1);
                    failure = Some(format!("fdatasync of vnode {partition} failed: {error}"));
                }
            }
        }
        self.counters.syncs.set(self.counters.syncs.get() + 1);
        if let Some(reason) = failure {
            let mut failures = self.sync_failures.borrow_mut();
            if failures.len() >= SYNC_FAILURES_KEPT {
                failures.remove(0);
            }
            failures.push((epoch, reason));
        }
        self.sync_completed.set(epoch);
        for waker in self.sync_waiters.borrow_mut().drain(..) {
            waker.wake();
        }
    }

    /// True when some store has writes no sync covered yet.
    pub fn has_unsynced(&self) -> bool {
        let unsynced = |store: &Store| store.durable_position() < store.written_position();
        self.stores.borrow().values().any(unsynced)
            || self.hints.borrow().as_ref().is_some_and(unsynced)
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
        report.writes_refused = !self.sync_failures.borrow().is_empty();
        if let Some(cluster) = self.cluster.as_ref() {
            let view = cluster.view();
            report.ring_epoch = view.ring.epoch();
            report.transfers_pending = view.ring.transfers().len() as u64;
        }
        report
    }

    /// Syncs and closes every store (writing missing hint files).
    pub fn close_all(&self) {
        let mut stores: Vec<(u32, Store)> = self.stores.borrow_mut().drain().collect();
        if let Some(hints) = self.hints.borrow_mut().take() {
            stores.push((HINT_STORE, hints));
        }
        for (partition, store) in stores {
            if let Err(error) = store.close() {
                tracing::error!(partition, %error, "closing vnode failed");
            }
        }
    }
}

/// Resolves when a sync epoch completed.
#[derive(Debug)]
pub struct SyncWait<'a> {
    shard: &'a Shard,
    epoch: u64,
}

impl Future for SyncWait<'_> {
    type Output = Result<(), String>;

    fn poll(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<Self::Output> {
        if self.shard.sync_completed.get() >= self.epoch {
            let failures = self.shard.sync_failures.borrow();
            if let Some((_, reason)) = failures.iter().find(|(failed, _)| *failed == self.epoch) {
                return Poll::Ready(Err(reason.clone()));
            }
            return Poll::Ready(Ok(()));
        }
        self.shard
            .sync_waiters
            .borrow_mut()
            .push(context.waker().clone());
        Poll::Pending
    }
}

struct WaitForRequest<'a> {
    shard: &'a Shard,
}

impl Future for WaitForRequest<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<()> {
        let shard = self.shard;
        if shard.sync_requested.get() > shard.sync_started.get()
            || shard.shutdown.load(Ordering::Relaxed)
        {
            return Poll::Ready(());
        }
        *shard.sync_loop_waker.borrow_mut() = Some(context.waker().clone());
        Poll::Pending
    }
}

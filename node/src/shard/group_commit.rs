//! Group commit and checkpoints: how a shard's writes become durable.
//!
//! Durability (`periodic` and `sync`): every write a vnode store accepts is
//! also appended to the shard's journal (the engine's `journal`). A *sync
//! cycle* writes the entries appended since the last one and fdatasyncs the
//! one journal file through io_uring, however many vnodes they touched; up
//! to `SYNC_CYCLES_IN_FLIGHT` cycles run at once and complete in order. A
//! write under `sync` is applied to its store at once and then waits for the
//! *next cycle to start* (`sync_started + 1`); all writes that arrive
//! together share one fdatasync. Under `periodic` a cycle runs every
//! `sync_interval_ms`. The stores write through their maps and are synced
//! only at a *checkpoint*: when the journal file is full, the shard switches
//! to the next file (prepared ahead, off the core), every store syncs, and
//! the older journal files are removed. Start-up replays what is left
//! (`crate::journal`).
//!
//! Invariants:
//! - `sync_completed <= sync_started`; a waiter for epoch `e` is released
//!   only when `sync_completed >= e`, with an error if that cycle or an
//!   earlier one failed;
//! - every write a store accepted is in the journal's pending entries, or in
//!   a journal file, or synced in its store (and then its journal file may
//!   be gone): a journal file is removed only after a checkpoint synced
//!   every store;
//! - no batch is in flight to a journal file once a batch goes to the next
//!   one (replay cuts a torn batch only in the newest file a batch reached).

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

use meridian_engine::journal::{JournalBatch, JournalWriter, PreparedFile};

use super::{journal_directory, Shard, HINT_STORE};
use crate::metrics::ShardCounters;

/// Failed sync epochs remembered for waiters that poll late.
const SYNC_FAILURES_KEPT: usize = 64;

/// Journal fdatasyncs in flight at once: the next group starts while the
/// last one's sync is still running.
const SYNC_CYCLES_IN_FLIGHT: u64 = 2;

/// A sync cycle between its start (batch written) and its fdatasync.
struct Cycle {
    epoch: u64,
    /// The batch written, or why it could not be; `None` without entries.
    written: Option<Result<JournalBatch, String>>,
}

impl Shard {
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

    /// The group-commit loop: a sync cycle whenever one is requested (up to
    /// `SYNC_CYCLES_IN_FLIGHT` at once), and a checkpoint whenever the
    /// journal file is full.
    pub async fn run_sync_loop(self: Rc<Self>) {
        if let Some(journal) = self.journal.borrow().as_ref() {
            let next = journal.sequence() + 1;
            glommio::spawn_local(Rc::clone(&self).prepare_spare_journal(next)).detach();
        }
        loop {
            WaitForRequest { shard: &self }.await;
            let started = self.sync_started.get();
            if self.shutdown.load(Ordering::Relaxed) && self.sync_requested.get() <= started {
                let _ = self.wait_synced(started).await;
                return;
            }
            if self.journal_switch_due() {
                // No batch may still be on its way to the old file once one
                // goes to the new file: replay cuts a torn batch only in
                // the newest file a batch reached. (Checked again after the
                // wait: shutdown's last cycle may start meanwhile.)
                if self.sync_completed.get() < started {
                    let _ = self.wait_synced(started).await;
                    continue;
                }
                if let Some(sequence) = self.switch_journal() {
                    glommio::spawn_local(Rc::clone(&self).checkpoint(sequence)).detach();
                }
            }
            if started - self.sync_completed.get() >= SYNC_CYCLES_IN_FLIGHT {
                let _ = self.wait_synced(started + 1 - SYNC_CYCLES_IN_FLIGHT).await;
            }
            let cycle = self.start_cycle();
            glommio::spawn_local(Rc::clone(&self).finish_cycle(cycle)).detach();
        }
    }

    /// One whole sync cycle, waited for (shutdown's last one).
    pub async fn sync_cycle(self: &Rc<Self>) {
        let cycle = self.start_cycle();
        Rc::clone(self).finish_cycle(cycle).await;
    }

    /// Starts epoch `sync_started + 1`: takes the journal entries appended
    /// so far and writes them into the page cache (a few KB: microseconds).
    fn start_cycle(&self) -> Cycle {
        let epoch = self.sync_started.get() + 1;
        self.sync_started.set(epoch);
        let batch = self
            .journal
            .borrow_mut()
            .as_mut()
            .and_then(JournalWriter::take_batch);
        let written = batch.map(|batch| {
            ShardCounters::add(&self.counters.journal_bytes, batch.bytes.len() as u64);
            batch
                .write()
                .map(|()| batch)
                .map_err(|error| error.to_string())
        });
        Cycle { epoch, written }
    }

    /// fdatasyncs the cycle's journal file through io_uring while the core
    /// keeps serving, then completes its epoch once the one before it
    /// completed (epochs complete in order; a later fdatasync also covers
    /// the earlier batches, but not an earlier failure).
    async fn finish_cycle(self: Rc<Self>, cycle: Cycle) {
        let mut outcome = match cycle.written {
            None => Ok(()),
            Some(Err(reason)) => Err(reason),
            Some(Ok(batch)) => {
                glommio::meridian_fdatasync(std::os::unix::io::AsRawFd::as_raw_fd(&*batch.file))
                    .await
                    .map_err(|error| {
                        format!(
                            "fdatasync of journal {} failed: {error}",
                            batch.path.display()
                        )
                    })
            }
        };
        if let Err(reason) = &outcome {
            tracing::error!(%reason, "journal failed; this shard refuses writes until restarted");
            self.journal_failure
                .borrow_mut()
                .get_or_insert_with(|| reason.clone());
            self.counters
                .sync_failures
                .set(self.counters.sync_failures.get() + 1);
        }
        if let Err(reason) = self.wait_synced(cycle.epoch - 1).await {
            outcome = outcome.and(Err(format!("an earlier journal sync failed: {reason}")));
        }
        self.counters.syncs.set(self.counters.syncs.get() + 1);
        self.complete_epoch(cycle.epoch, outcome.err());
    }

    fn complete_epoch(&self, epoch: u64, failure: Option<String>) {
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

    /// True when the journal file is full, no checkpoint runs and the next
    /// file is ready.
    fn journal_switch_due(&self) -> bool {
        !self.checkpointing.get()
            && self.spare_journal.borrow().is_some()
            && self
                .journal
                .borrow()
                .as_ref()
                .is_some_and(JournalWriter::is_full)
    }

    /// Switches the journal to the prepared file (the caller made sure no
    /// batch is in flight) and returns its sequence: the checkpoint then
    /// removes every file before it.
    fn switch_journal(&self) -> Option<u64> {
        let mut journal = self.journal.borrow_mut();
        let journal = journal.as_mut()?;
        let next = self.spare_journal.borrow_mut().take()?;
        self.checkpointing.set(true);
        Some(journal.switch_to(next))
    }

    /// Syncs every store (what they wrote before journal file `started`
    /// began is then durable in them), removes the journal files before
    /// `started`, and prepares the next file.
    async fn checkpoint(self: Rc<Self>, started: u64) {
        let failed = self.sync_stores().await;
        let directory = journal_directory(&self.config.storage.data_dir, self.index);
        if failed {
            tracing::error!("checkpoint: a store failed to sync; journal files kept");
        } else {
            let removal = {
                let directory = directory.clone();
                glommio::executor()
                    .spawn_blocking(move || {
                        meridian_engine::journal::remove_files_before(&directory, started)
                    })
                    .await
            };
            match removal {
                Ok(_) => ShardCounters::add(&self.counters.checkpoints, 1),
                Err(error) => tracing::error!(%error, "checkpoint: old journal files not removed"),
            }
        }
        Rc::clone(&self).prepare_spare_journal(started + 1).await;
        self.checkpointing.set(false);
    }

    /// Zero-fills journal file `sequence` off the core and keeps it as the
    /// next file to switch to.
    async fn prepare_spare_journal(self: Rc<Self>, sequence: u64) {
        let directory = journal_directory(&self.config.storage.data_dir, self.index);
        let bytes = self.config.storage.journal_file_bytes;
        let prepared = glommio::executor()
            .spawn_blocking(move || PreparedFile::create(&directory, sequence, bytes))
            .await;
        match prepared {
            Ok(file) => *self.spare_journal.borrow_mut() = Some(file),
            Err(error) => {
                // The current file keeps taking batches past its size.
                tracing::error!(%error, "the next journal file could not be prepared")
            }
        }
    }

    /// Syncs every store with unsynced writes, all at once; returns true if
    /// some store failed (it then refuses writes).
    async fn sync_stores(&self) -> bool {
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
        let results = crate::sync::sync_plans(&plans).await;
        let mut failed = false;
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
                    tracing::error!(partition, %error, "fdatasync of a vnode failed");
                    store.sync_failed(&error);
                    self.counters
                        .sync_failures
                        .set(self.counters.sync_failures.get() + 1);
                    failed = true;
                }
            }
        }
        failed
    }

    /// True when journal entries wait for a sync cycle.
    pub fn has_unsynced(&self) -> bool {
        self.journal
            .borrow()
            .as_ref()
            .is_some_and(JournalWriter::has_pending)
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

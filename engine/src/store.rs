//! One vnode's store: the write path, the read path and durability.
//!
//! The store is synchronous and single-owner (`&mut self` writes, `&self`
//! reads); a thread-per-core server gives each core its own stores. It never
//! starts a thread or blocks on a sync unless asked: [`Store::sync_plan`]
//! says which files need an fdatasync, the caller issues them (through
//! io_uring on a shard core) and reports back with
//! [`Store::sync_completed`]. [`Store::sync`] does the same inline for
//! embedded users.
//!
//! Invariants:
//! - a key's entry in the key directory is the record with its greatest
//!   `(hlc, origin)`; a write that is not newer appends nothing;
//! - positions only grow: `durable_position <= written_position`;
//! - after a failed sync the store appends nothing (`write_failure`).

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;

use crate::compaction::CompactionRun;
use crate::cursor::CursorState;
use crate::digest::DigestTable;
use crate::error::{Applied, Error, Result};
use crate::format::{self, RecordFields, RecordKind, Version};
use crate::fsutil::{DirectoryLock, Preallocation};
use crate::keydir::{Entry, KeyDir};
use crate::options::{Durability, Options};
use crate::segment::{segment_path, Segment};

/// A place in the log: a segment id and a byte offset in it. Ordered.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LogPosition {
    pub segment: u32,
    pub offset: u32,
}

/// What a write did and where its record ends in the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WriteReceipt {
    pub applied: Applied,
    /// The write is durable once [`Store::durable_position`] reaches this.
    pub position: LogPosition,
}

/// A key's newest record, as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredEntry {
    pub kind: RecordKind,
    /// Shares the segment's memory map; empty for a tombstone.
    pub value: Bytes,
    pub version: Version,
    /// Unix seconds; 0 = never.
    pub expires_at: u32,
}

/// A lookup of one key, warmed level by level: see [`Store::warm_index`].
#[derive(Clone, Copy, Debug)]
pub struct LookupWarmup {
    hash_high: u32,
    /// The entry the lookup will most likely read, once `warm_entry` ran.
    slot: Option<u32>,
}

/// The files an fdatasync must cover to make everything written so far durable.
#[derive(Debug, Clone)]
pub struct SyncPlan {
    pub files: Vec<SyncTarget>,
    /// A directory to fsync too: a segment was created since the last sync.
    pub directory: Option<Arc<File>>,
    pub up_to: LogPosition,
    directory_generation: u64,
}

/// One file of a [`SyncPlan`].
#[derive(Debug, Clone)]
pub struct SyncTarget {
    pub segment: u32,
    pub file: Arc<File>,
    pub up_to_offset: u32,
}

/// Counters an operator or a benchmark reads.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Stats {
    pub keys: usize,
    pub segments: usize,
    pub live_bytes: u64,
    pub disk_bytes: u64,
    pub keydir_bytes: usize,
    pub torn_bytes_cut: u64,
    pub segments_loaded_from_hints: usize,
    pub segments_scanned: usize,
    pub compactions_completed: u64,
    pub compaction_bytes_reclaimed: u64,
    pub tombstones_dropped: u64,
    pub written: LogPosition,
    pub durable: LogPosition,
}

#[derive(Debug)]
pub struct Store {
    pub(crate) directory: PathBuf,
    pub(crate) options: Options,
    pub(crate) preallocation: Preallocation,
    /// Segments by slot; a slot is what key directory entries name.
    pub(crate) segments: Vec<Option<Segment>>,
    pub(crate) free_slots: Vec<u32>,
    /// Committed segments: disk id → slot.
    pub(crate) by_id: BTreeMap<u32, u32>,
    pub(crate) active: u32,
    pub(crate) next_segment_id: u32,
    pub(crate) keydir: KeyDir,
    pub(crate) digests: DigestTable,
    pub(crate) durable: LogPosition,
    pub(crate) directory_handle: Arc<File>,
    pub(crate) directory_generation: u64,
    pub(crate) directory_synced_generation: u64,
    pub(crate) write_failure: Option<String>,
    pub(crate) cursors: BTreeMap<String, CursorState>,
    pub(crate) compaction: Option<CompactionRun>,
    pub(crate) stats: Stats,
    pub(crate) last_sync_ms: u64,
    pub(crate) _lock: DirectoryLock,
}

impl Store {
    /// Opens (or creates) the store in `directory`, recovering as needed.
    pub fn open(directory: impl AsRef<Path>, options: Options) -> Result<Store> {
        crate::recovery::open(directory.as_ref(), options)
    }

    pub fn directory(&self) -> &Path {
        &self.directory
    }

    pub fn options(&self) -> &Options {
        &self.options
    }

    pub(crate) fn segment(&self, slot: u32) -> &Segment {
        self.segments[slot as usize]
            .as_ref()
            .expect("slot names a live segment")
    }

    pub(crate) fn segment_mut(&mut self, slot: u32) -> &mut Segment {
        self.segments[slot as usize]
            .as_mut()
            .expect("slot names a live segment")
    }

    pub(crate) fn add_segment(&mut self, segment: Segment) -> u32 {
        match self.free_slots.pop() {
            Some(slot) => {
                self.segments[slot as usize] = Some(segment);
                slot
            }
            None => {
                self.segments.push(Some(segment));
                (self.segments.len() - 1) as u32
            }
        }
    }

    pub(crate) fn remove_segment(&mut self, slot: u32) -> Segment {
        let segment = self.segments[slot as usize]
            .take()
            .expect("removing a live segment");
        self.free_slots.push(slot);
        segment
    }

    /// The key directory slot of `key`, if the store has an entry for it.
    ///
    /// Compares the key stored in the log without checking the record's
    /// checksum: a damaged key can only fail to match. Paths that must not
    /// turn damage into "absent" use [`Store::find_checked`].
    pub(crate) fn find(&self, hash_high: u32, key: &[u8]) -> Option<u32> {
        let segments = &self.segments;
        self.keydir.find(hash_high, |entry| {
            segments[entry.segment as usize]
                .as_ref()
                .and_then(|segment| segment.key_at(entry.offset))
                == Some(key)
        })
    }

    /// Like [`Store::find`], but when an entry with the key's hash holds a
    /// different key, that record's checksum is verified: a bit flip in a
    /// stored key (or its header) is reported as corruption, never as a
    /// missing key. Costs a checksum only on 32-bit hash collisions.
    pub(crate) fn find_checked(&self, hash_high: u32, key: &[u8]) -> Result<Option<u32>> {
        let segments = &self.segments;
        let mut mismatched: Option<(u32, u32)> = None;
        let found = self.keydir.find(hash_high, |entry| {
            let matches = segments[entry.segment as usize]
                .as_ref()
                .and_then(|segment| segment.key_at(entry.offset))
                == Some(key);
            if !matches {
                mismatched = Some((entry.segment, entry.offset));
            }
            matches
        });
        if found.is_none() {
            if let Some((segment, offset)) = mismatched {
                self.segment(segment).record_at(offset)?;
            }
        }
        Ok(found)
    }

    /// Writes `value` under `key` if `version` is newer than what is stored.
    pub fn put(
        &mut self,
        key: &[u8],
        value: &[u8],
        version: Version,
        expires_at: u32,
    ) -> Result<WriteReceipt> {
        self.write(RecordKind::Put, key, value, version, expires_at)
    }

    /// Writes a tombstone for `key` if `version` is newer than what is stored.
    pub fn delete(&mut self, key: &[u8], version: Version) -> Result<WriteReceipt> {
        self.write(RecordKind::Tombstone, key, &[], version, 0)
    }

    /// Applies a record from elsewhere (a replica, another datacenter), kind
    /// and all: the same newest-wins rule as `put` and `delete`.
    pub fn apply(
        &mut self,
        kind: RecordKind,
        key: &[u8],
        value: &[u8],
        version: Version,
        expires_at: u32,
    ) -> Result<WriteReceipt> {
        if kind == RecordKind::Seal {
            return Err(Error::InvalidOption {
                name: "kind",
                reason: "seal records are internal".to_string(),
            });
        }
        self.write(
            kind,
            key,
            if kind == RecordKind::Tombstone {
                &[]
            } else {
                value
            },
            version,
            expires_at,
        )
    }

    fn check_write(&self, key: &[u8], value: &[u8]) -> Result<()> {
        if let Some(reason) = &self.write_failure {
            return Err(Error::WritesRefused {
                reason: reason.clone(),
            });
        }
        if key.len() > self.options.key_bytes_max {
            return Err(Error::KeyTooLarge {
                length: key.len(),
                maximum: self.options.key_bytes_max,
            });
        }
        if value.len() > self.options.value_bytes_max {
            return Err(Error::ValueTooLarge {
                length: value.len(),
                maximum: self.options.value_bytes_max,
            });
        }
        Ok(())
    }

    fn write(
        &mut self,
        kind: RecordKind,
        key: &[u8],
        value: &[u8],
        version: Version,
        expires_at: u32,
    ) -> Result<WriteReceipt> {
        self.check_write(key, value)?;
        let hash_high = format::hash_high(key);
        let existing = self.find_checked(hash_high, key)?;
        if let Some(slot) = existing {
            let current = self.keydir.get(slot).version();
            if current >= version {
                return Ok(WriteReceipt {
                    applied: Applied::Stale { current },
                    position: self.written_position(),
                });
            }
        }
        let fields = RecordFields {
            kind,
            key,
            value,
            version,
            expires_at,
        };
        let record_len = fields.record_len();
        self.ensure_room(record_len)?;
        let active = self.active;
        let segment = self.segment_mut(active);
        let offset = match segment.try_append(&fields) {
            Ok(offset) => offset,
            Err(error) => {
                // The record may be half written: append nothing after it.
                self.write_failure = Some(error.to_string());
                return Err(error);
            }
        };
        segment.live_bytes += record_len as u64;
        let position = LogPosition {
            segment: segment.id,
            offset: segment.written,
        };
        let entry = Entry::new(
            hash_high,
            active,
            offset,
            record_len as u32,
            kind == RecordKind::Tombstone,
            version,
            expires_at,
        );
        let bucket = format::bucket_of_hash_high(hash_high);
        match existing {
            Some(slot) => {
                let old = *self.keydir.get(slot);
                self.segment_mut(old.segment).live_bytes -= old.record_len() as u64;
                self.digests
                    .toggle(bucket, format::entry_digest(key, old.version()));
                self.keydir.set(slot, entry);
            }
            None => {
                self.keydir.insert(entry);
            }
        }
        self.digests
            .toggle(bucket, format::entry_digest(key, version));
        Ok(WriteReceipt {
            applied: Applied::Written,
            position,
        })
    }

    /// Makes sure the active segment can take a record of `record_len`
    /// bytes, rolling over to a new segment if not. The new segment is
    /// created before the old one is sealed, so a failure (a full disk)
    /// leaves the store as it was.
    fn ensure_room(&mut self, record_len: usize) -> Result<()> {
        if self.segment(self.active).fits(record_len) {
            let active = self.active;
            return self.segment_mut(active).reserve(record_len);
        }
        let id = self.next_segment_id;
        let now_ms = self.options.clock.now_ms();
        let segment = Segment::create(
            segment_path(&self.directory, id),
            id,
            self.options.segment_bytes,
            self.preallocation,
            now_ms,
            0,
        )?;
        let mut segment = segment;
        if let Err(error) = segment.reserve(record_len) {
            // The disk had room for the new segment's header but not for
            // the record: remove the file, or the next try could not create
            // it again (and would fail even once there is room).
            let path = segment.path.clone();
            drop(segment);
            let _ = std::fs::remove_file(&path);
            return Err(error);
        }
        let active = self.active;
        if let Err(error) = self.segment_mut(active).try_seal() {
            // Only a pwrite seal fails; it may be half written.
            let _ = std::fs::remove_file(&segment.path);
            self.write_failure = Some(error.to_string());
            return Err(error);
        }
        self.next_segment_id += 1;
        let slot = self.add_segment(segment);
        self.by_id.insert(id, slot);
        self.active = slot;
        self.directory_generation += 1;
        Ok(())
    }

    /// The key's newest record, tombstones and expired entries included.
    pub fn read(&self, key: &[u8]) -> Result<Option<StoredEntry>> {
        match self.find_checked(format::hash_high(key), key)? {
            Some(slot) => self.read_slot(slot).map(Some),
            None => Ok(None),
        }
    }

    /// The record the key directory entry in `slot` names, verified.
    fn read_slot(&self, slot: u32) -> Result<StoredEntry> {
        let entry = self.keydir.get(slot);
        let segment = self.segment(entry.segment);
        let header = segment.record_at(entry.offset)?;
        if header.version != entry.version() {
            return Err(Error::corrupt(
                &segment.path,
                entry.offset as u64,
                "record version differs from key directory",
            ));
        }
        Ok(StoredEntry {
            kind: header.kind,
            value: segment.value_bytes(entry.offset, &header),
            version: header.version,
            expires_at: header.expires_at,
        })
    }

    /// Round 1 of warming a batch of lookups (a `get`, or the lookup a
    /// write makes): hints the index bucket of `key`. Call it for every key
    /// of the batch, then [`Store::warm_entry`] for each, then
    /// [`Store::warm_record`] for each: the lookups that follow find their
    /// lines in the cache, and the batch waited for its misses of each level
    /// together instead of one after the other. Hints only: nothing changes,
    /// and a warmup made stale by a write in between just warms other lines.
    pub fn warm_index(&self, key: &[u8]) -> LookupWarmup {
        let hash_high = format::hash_high(key);
        self.keydir.prefetch_bucket(hash_high);
        LookupWarmup {
            hash_high,
            slot: None,
        }
    }

    /// Round 2: reads the bucket and hints the directory entry.
    pub fn warm_entry(&self, warmup: &mut LookupWarmup) {
        warmup.slot = self.keydir.prefetch_entry(warmup.hash_high);
    }

    /// Round 3: reads the entry and hints the record's first lines.
    pub fn warm_record(&self, warmup: &LookupWarmup) {
        let Some(slot) = warmup.slot else { return };
        let Some(entry) = self.keydir.entry(slot) else {
            return;
        };
        if let Some(Some(segment)) = self.segments.get(entry.segment as usize) {
            segment.prefetch(entry.offset, entry.record_len());
        }
    }

    /// The key's live value: `None` when absent, deleted or expired.
    pub fn get(&self, key: &[u8]) -> Result<Option<StoredEntry>> {
        let Some(slot) = self.find_checked(format::hash_high(key), key)? else {
            return Ok(None);
        };
        let entry = self.keydir.get(slot);
        if entry.is_tombstone()
            || (entry.expires_at != 0 && entry.is_expired(self.options.clock.now_s()))
        {
            return Ok(None);
        }
        self.read_slot(slot).map(Some)
    }

    /// The version stored for `key` (tombstones included), from memory only.
    pub fn version_of(&self, key: &[u8]) -> Option<(Version, RecordKind)> {
        let slot = self.find(format::hash_high(key), key)?;
        let entry = self.keydir.get(slot);
        Some((
            entry.version(),
            if entry.is_tombstone() {
                RecordKind::Tombstone
            } else {
                RecordKind::Put
            },
        ))
    }

    /// Number of keys in the directory, tombstones included.
    pub fn len(&self) -> usize {
        self.keydir.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keydir.len() == 0
    }

    pub fn written_position(&self) -> LogPosition {
        let active = self.segment(self.active);
        LogPosition {
            segment: active.id,
            offset: active.written,
        }
    }

    pub fn durable_position(&self) -> LogPosition {
        self.durable
    }

    pub fn durability(&self) -> Durability {
        self.options.durability
    }

    /// True once a write whose receipt named `position` is durable.
    pub fn is_durable(&self, position: LogPosition) -> bool {
        position <= self.durable
    }

    /// Under `Periodic`, true once the interval since the last sync passed
    /// and there is something to sync.
    pub fn sync_due(&self, now_ms: u64) -> bool {
        match self.options.durability {
            Durability::Periodic { interval_ms } => {
                self.durable < self.written_position()
                    && now_ms >= self.last_sync_ms + interval_ms as u64
            }
            Durability::Sync => self.durable < self.written_position(),
            Durability::None => false,
        }
    }

    /// What to fdatasync to make everything written so far durable; `None`
    /// when it already is.
    pub fn sync_plan(&self) -> Option<SyncPlan> {
        let up_to = self.written_position();
        let directory_dirty = self.directory_generation != self.directory_synced_generation;
        if up_to <= self.durable && !directory_dirty {
            return None;
        }
        let files = self
            .by_id
            .range(self.durable.segment..)
            .map(|(_, &slot)| self.segment(slot))
            .filter(|segment| segment.synced < segment.written)
            .map(|segment| SyncTarget {
                segment: segment.id,
                file: Arc::clone(&segment.file),
                up_to_offset: segment.written,
            })
            .collect();
        Some(SyncPlan {
            files,
            directory: directory_dirty.then(|| Arc::clone(&self.directory_handle)),
            up_to,
            directory_generation: self.directory_generation,
        })
    }

    /// Records that every file of `plan` was synced.
    pub fn sync_completed(&mut self, plan: &SyncPlan) {
        for target in &plan.files {
            if let Some(&slot) = self.by_id.get(&target.segment) {
                let segment = self.segment_mut(slot);
                segment.synced = segment.synced.max(target.up_to_offset);
            }
        }
        if plan.directory.is_some() {
            self.directory_synced_generation = self
                .directory_synced_generation
                .max(plan.directory_generation);
        }
        if self.directory_synced_generation >= plan.directory_generation {
            self.durable = self.durable.max(plan.up_to);
        }
        self.last_sync_ms = self.options.clock.now_ms();
    }

    /// Records that a sync failed. The kernel may have dropped the dirty
    /// pages, so nothing written since the last good sync can be trusted to
    /// reach the disk: the store refuses writes from now on.
    pub fn sync_failed(&mut self, error: &io::Error) {
        tracing::error!(directory = %self.directory.display(), %error, "fdatasync failed; store refuses writes");
        self.write_failure = Some(error.to_string());
    }

    /// Syncs everything written so far, blocking; returns the durable position.
    pub fn sync(&mut self) -> Result<LogPosition> {
        let Some(plan) = self.sync_plan() else {
            return Ok(self.durable);
        };
        for target in &plan.files {
            if let Err(error) = target.file.sync_data() {
                self.sync_failed(&error);
                return Err(Error::io(
                    "fdatasync",
                    segment_path(&self.directory, target.segment),
                    error,
                ));
            }
        }
        if let Some(directory) = &plan.directory {
            if let Err(error) = directory.sync_all() {
                self.sync_failed(&error);
                return Err(Error::io("fsync directory", &self.directory, error));
            }
        }
        self.sync_completed(&plan);
        Ok(self.durable)
    }

    /// Syncs, writes the hint files still missing, and closes the store.
    pub fn close(mut self) -> Result<()> {
        self.sync()?;
        while self.write_next_hint()? {}
        Ok(())
    }

    /// Anti-entropy digest of one bucket (top 16 bits of the key hash).
    pub fn bucket_digest(&self, bucket: u16) -> u64 {
        self.digests.bucket(bucket)
    }

    /// The keys of one bucket with their versions and kinds (tombstones
    /// included), for comparing a differing bucket with a peer's.
    pub fn bucket_entries(&self, bucket: u16) -> Result<Vec<(Bytes, Version, RecordKind)>> {
        let mut found = Vec::new();
        for (_, entry) in self.keydir.iter() {
            if format::bucket_of_hash_high(entry.hash_high) != bucket {
                continue;
            }
            let segment = self.segment(entry.segment);
            let header = segment.record_at(entry.offset)?;
            found.push((
                segment.key_shared(entry.offset, &header),
                header.version,
                header.kind,
            ));
        }
        Ok(found)
    }

    /// Every entry — key and newest record, tombstones and expired ones
    /// included — for handoff and fullsync. Order is unspecified.
    pub fn entries(&self) -> impl Iterator<Item = Result<(Bytes, StoredEntry)>> + '_ {
        self.keydir.iter().map(move |(_, entry)| {
            let segment = self.segment(entry.segment);
            let header = segment.record_at(entry.offset)?;
            Ok((
                segment.key_shared(entry.offset, &header),
                StoredEntry {
                    kind: header.kind,
                    value: segment.value_bytes(entry.offset, &header),
                    version: header.version,
                    expires_at: header.expires_at,
                },
            ))
        })
    }

    /// Every live entry: not deleted, not expired.
    pub fn iter(&self) -> impl Iterator<Item = Result<(Bytes, StoredEntry)>> + '_ {
        let now_s = self.options.clock.now_s();
        self.entries().filter(move |item| match item {
            Ok((_, entry)) => {
                entry.kind == RecordKind::Put
                    && !(entry.expires_at != 0 && now_s >= entry.expires_at)
            }
            Err(_) => true,
        })
    }

    pub fn stats(&self) -> Stats {
        let mut stats = self.stats.clone();
        stats.keys = self.keydir.len();
        stats.segments = self.by_id.len();
        stats.live_bytes = self
            .by_id
            .values()
            .map(|&slot| self.segment(slot).live_bytes)
            .sum();
        stats.disk_bytes = self
            .by_id
            .values()
            .map(|&slot| self.segment(slot).capacity() as u64)
            .sum();
        stats.keydir_bytes = self.keydir.memory_bytes();
        stats.written = self.written_position();
        stats.durable = self.durable;
        stats
    }
}

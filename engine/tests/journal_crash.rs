//! Goal: stores opened with `Durability::None` behind one shared write-ahead
//! journal (`meridian_engine::journal`) lose no acknowledged write to a power
//! cut at any moment, never make a value appear that was not written (or
//! that a recovery already lost), and keep working after recovery.
//!
//! The protocol is the server's, reimplemented here (the server lives in
//! another crate):
//! - `PARTITIONS` stores, one directory each, never sync on their own;
//! - every write a store accepts is appended to the journal
//!   (`JournalWriter::append`); a group commit takes the batch, writes it,
//!   fdatasyncs the journal file, and only then acknowledges its writes;
//! - the next journal file is prepared *ahead* (node/src/shard.rs,
//!   `prepare_spare_journal`): at start-up right after the first file, and
//!   at the end of each checkpoint, by a helper thread while group commits
//!   go on writing into the current file. Its `PreparedFile::create` is a
//!   workload step of its own, some ~25 steps after it began, so a file
//!   sometimes fills before its spare is ready and then takes batches past
//!   its size;
//! - a checkpoint (`switch_journal_if_full`, after a group commit): once
//!   the file is full, no checkpoint runs and the spare is ready,
//!   `switch_to` the spare (sequence S), then every store is synced through
//!   `sync_plan` / `sync_completed` (writes, group commits and compaction go
//!   on in between), then `remove_files_before(S)`, then the next spare
//!   (S + 1) starts being prepared. Each store's sync and the removal are
//!   separate steps of the workload. Crash points are steered: over a third
//!   into a checkpoint's windows (after the switch with 0, 1, .. or all
//!   stores synced), one in seven to a checkpoint's end with its spare
//!   being prepared, three in fourteen to a ready spare; then a few writes
//!   and group commits, so batches are in flight in the current file;
//! - recovery: reopen every store (each cuts its own torn tail), replay the
//!   journal into them (newest-wins), sync every store through its plan (or,
//!   one time in five, close and reopen them so hints are used), check, only
//!   then remove every journal file, and start a new journal.
//!
//! Method (as in `crash.rs`): the test issues the protocol's fdatasyncs and
//! directory fsyncs itself and copies a file into `images` (its picture of
//! the disk) right after the fdatasync that covered it; a directory fsync
//! makes every name in that directory durable (and removals final). Work a
//! store syncs on its own is inferred from its effects: a compaction step
//! that wrote a hint (`write_next_hint`, `finish_run`) synced the segment it
//! vouches for and then the directory, so that segment and its hint become
//! images and every name there durable. Recovery promises what it kept is
//! durable, so right after `Store::open` a store's directory is trusted
//! whole; nothing else is (the replayed writes count only once the test's
//! own plan sync covered them). `PreparedFile::create` leaves a synced,
//! durably named file.
//!
//! At a power cut every store and the journal writer are dropped; the files
//! then hold what the page cache held, and are turned into what a power cut
//! may leave: dirty bytes (those differing from the image; zeros past it)
//! revert after a tear point within them, or by independent 4 KiB pages,
//! or turn to garbage for a stretch (a torn sector); segments whose names
//! were never made durable may vanish or be empty, newest first; a
//! compaction output not yet installed may vanish. Crash variants, which
//! combine: a group commit's batch written but not yet synced (half the
//! power cuts: a torn batch in the current file, which is not the last
//! file when a spare is ready or was being prepared); a spare being
//! prepared is always cut inside its `PreparedFile::create` (the file
//! absent, empty, or zeros of some page length, with or without its
//! header); a crash inside `remove_files_before` (a prefix of the removals
//! reached the disk); and a second power cut during recovery, after the
//! replay, with some stores synced and others not. One crash point in four
//! is a process crash instead (no damage; a spare being prepared is left
//! absent, empty, zero-filled without its header, or whole): then every
//! write, acknowledged or not, must survive exactly.
//!
//! Checks after each recovery, for every key of every partition: the store
//! holds at least the key's newest acknowledged version (or what the last
//! recovery found, durable since); the version it holds was written, to
//! that key, with that kind and value, and was not lost by an earlier
//! recovery; a store holds no other key. On even seeds the tombstone grace
//! is 0, so compaction drops tombstones and "absent" also satisfies an
//! acknowledged tombstone. What a recovery finds becomes the key's new
//! floor and the writes it lost are forgotten: one coming back later fails.
//!
//! Sizes: 16 KiB segments and 16 KiB journal files (a checkpoint every ~30
//! writes; the journal restarts empty at every recovery, so a larger file
//! would rarely fill between crash points). Each test runs `CRASH_POINTS`
//! (100) crash points and prints its seed and counters (checkpoints, crash
//! windows, the spare's state at the crash, variants, entries replayed,
//! torn bytes cut, and cuts in a file with a later one after it); set
//! `MERIDIAN_JOURNAL_CRASH_SEED` to replay one seed (every test then runs it).
//!
//! Deliberate breakages of the protocol this test caught (each in every
//! seed, within the first ~90 crash points): acknowledging before the
//! journal's fdatasync; removing the old journal files right at the switch;
//! removing them before the last store's sync; skipping a store's sync at
//! the checkpoint; skipping its directory fsync; recovery removing the
//! journal before syncing the stores; recovery skipping the replay; replay
//! of the newest journal file only. And (seeds 1-12, by crash point 31,
//! with the spare ready in 7 and being prepared in 5) a replay that cuts a
//! torn batch only in the last file, refusing one in the current file
//! before a prepared-ahead spare (`replay` before df4f5af).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use meridian_engine::format::RecordFields;
use meridian_engine::journal::{
    self, JournalWriter, PreparedFile, ENTRY_HEADER_LEN, JOURNAL_HEADER_LEN,
};
use meridian_engine::{Applied, Durability, Options, RecordKind, Store, Version};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

mod support;

use support::value_bytes;

const CRASH_POINTS: usize = 100;
const PARTITIONS: usize = 4;
const KEYS: u32 = 240;
const SEGMENT_BYTES: u32 = 16 * 1024;
const JOURNAL_FILE_BYTES: u64 = 16 * 1024;
const PAGE: usize = 4096;

/// One write a store accepted.
#[derive(Clone, Debug)]
struct Written {
    key: u32,
    kind: RecordKind,
    value: Vec<u8>,
    version: Version,
}

#[derive(Clone, Debug, Default)]
struct KeyState {
    /// The version the key must hold at least after a crash: its newest
    /// acknowledged write, or what the last recovery found (durable since).
    floor: Option<Version>,
    /// The versions the key may hold after a crash: the floor and every
    /// write since, each with its index in `Crasher::writes`.
    allowed: BTreeMap<Version, usize>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Checkpoint {
    Idle,
    /// Switched to the file of `sequence`; `synced[p]` once store p synced.
    Switched {
        sequence: u64,
        synced: [bool; PARTITIONS],
    },
}

/// The next journal file, prepared ahead as the server does
/// (`prepare_spare_journal` in node/src/shard.rs): at start-up right after
/// the first file, and at the end of each checkpoint.
#[derive(Debug)]
enum Spare {
    /// The switch took it; the checkpoint prepares the next one at its end.
    None,
    /// A helper thread is inside `PreparedFile::create` for `sequence`
    /// (nothing of it is known to be on the disk yet).
    Preparing { sequence: u64 },
    /// Synced and named durably; the next switch takes it.
    Ready(PreparedFile),
}

#[derive(Debug, Default)]
struct Counters {
    writes: u64,
    group_commits: u64,
    checkpoints: u64,
    spares_prepared: u64,
    /// Group commits that found the file full with no spare ready yet (the
    /// file then takes batches past its size).
    switches_waiting_for_spare: u64,
    compaction_steps: u64,
    crash_idle: u64,
    crash_after_switch: u64,
    crash_after_store_syncs: u64,
    crash_spare_preparing: u64,
    crash_spare_ready: u64,
    crash_spare_none: u64,
    process_crashes: u64,
    torn_batches: u64,
    /// Torn batches in the current file while the spare was ready (a later,
    /// empty file on the disk).
    torn_batches_spare_ready: u64,
    /// Torn batches in the current file while the spare was being prepared.
    torn_batches_spare_preparing: u64,
    prepare_crashes: u64,
    partial_removals: u64,
    recovery_cuts: u64,
    replayed_entries: u64,
    replay_torn_bytes: u64,
    /// Replays that cut a torn batch in a file with a later journal file
    /// after it (a replay cutting only in the last file refuses these).
    replay_torn_before_later_file: u64,
    unacknowledged_lost: u64,
    compactions_completed: u64,
}

struct Crasher {
    root: tempfile::TempDir,
    options: Options,
    drop_tombstones: bool,
    rng: StdRng,
    seed: u64,
    stores: Option<Vec<Store>>,
    journal: Option<JournalWriter>,
    spare: Spare,
    next_sequence: u64,
    writes: Vec<Written>,
    keys: Vec<KeyState>,
    /// Writes appended to the journal since the last batch was taken.
    pending: Vec<usize>,
    checkpoint: Checkpoint,
    last_hlc: u64,
    /// What the disk holds of each file (a file with none: zeros).
    images: HashMap<PathBuf, Vec<u8>>,
    /// Names a directory fsync made durable.
    durable_names: HashSet<PathBuf>,
    crash_points: usize,
    counters: Counters,
}

fn key_bytes(key: u32) -> Vec<u8> {
    format!("key-{key}-{}", "x".repeat(key as usize % 5)).into_bytes()
}

fn partition_of(key: u32) -> usize {
    key as usize % PARTITIONS
}

/// The files of a store or journal directory, sorted (the lock file left out).
fn files_in(directory: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(directory)
        .expect("list directory")
        .map(|item| item.expect("directory entry").path())
        .filter(|path| path.file_name().is_some_and(|name| name != "LOCK"))
        .collect();
    files.sort();
    files
}

fn has_extension(path: &Path, extension: &str) -> bool {
    path.extension().is_some_and(|ext| ext == extension)
}

/// The segment a hint file vouches for.
fn segment_of_hint(hint: &Path) -> PathBuf {
    hint.with_extension("seg")
}

impl Crasher {
    fn new(seed: u64) -> Crasher {
        let drop_tombstones = seed.is_multiple_of(2);
        let options = Options {
            segment_bytes: SEGMENT_BYTES,
            key_bytes_max: 64,
            value_bytes_max: 2048,
            durability: Durability::None,
            tombstone_grace_s: if drop_tombstones { 0 } else { 24 * 3600 },
            clock: Arc::new(support::FixedClock),
            ..Options::default()
        };
        let root = tempfile::tempdir().expect("temporary directory");
        let mut crasher = Crasher {
            root,
            options,
            drop_tombstones,
            rng: StdRng::seed_from_u64(seed),
            seed,
            stores: None,
            journal: None,
            spare: Spare::None,
            next_sequence: 1,
            writes: Vec::new(),
            keys: vec![KeyState::default(); KEYS as usize],
            pending: Vec::new(),
            checkpoint: Checkpoint::Idle,
            last_hlc: 1_700_000_000_000 << 16,
            images: HashMap::new(),
            durable_names: HashSet::new(),
            crash_points: 0,
            counters: Counters::default(),
        };
        let stores = (0..PARTITIONS)
            .map(|p| Store::open(crasher.store_dir(p), crasher.options.clone()).expect("open"))
            .collect();
        crasher.stores = Some(stores);
        crasher.start_journal();
        crasher.trust_everything();
        crasher
    }

    fn store_dir(&self, partition: usize) -> PathBuf {
        self.root.path().join(format!("p{partition}"))
    }

    fn journal_dir(&self) -> PathBuf {
        self.root.path().join("journal")
    }

    fn all_dirs(&self) -> Vec<PathBuf> {
        let mut dirs: Vec<PathBuf> = (0..PARTITIONS).map(|p| self.store_dir(p)).collect();
        dirs.push(self.journal_dir());
        dirs
    }

    fn store(&mut self, partition: usize) -> &mut Store {
        &mut self.stores.as_mut().expect("stores open")[partition]
    }

    fn journal(&mut self) -> &mut JournalWriter {
        self.journal.as_mut().expect("journal open")
    }

    /// Takes a directory's files as they are now as the disk's content.
    fn trust_dir(&mut self, directory: &Path) {
        self.images
            .retain(|path, _| path.parent() != Some(directory));
        self.durable_names
            .retain(|path| path.parent() != Some(directory));
        for path in files_in(directory) {
            self.images
                .insert(path.clone(), fs::read(&path).expect("read file"));
            self.durable_names.insert(path);
        }
    }

    fn trust_everything(&mut self) {
        for directory in self.all_dirs() {
            self.trust_dir(&directory);
        }
    }

    /// A directory fsync: every name now in `directory` is durable, and the
    /// names that went are gone for good.
    fn directory_synced(&mut self, directory: &Path) {
        let present: HashSet<PathBuf> = files_in(directory).into_iter().collect();
        self.images
            .retain(|path, _| path.parent() != Some(directory) || present.contains(path));
        self.durable_names
            .retain(|path| path.parent() != Some(directory) || present.contains(path));
        self.durable_names.extend(present);
    }

    /// An fdatasync of `path` returned: the disk holds its bytes.
    fn file_synced(&mut self, path: &Path) {
        self.images.insert(
            path.to_path_buf(),
            fs::read(path).expect("read synced file"),
        );
    }

    /// Prepares the first journal file (synced, named durably), starts a
    /// writer on it, and starts preparing the spare after it (as the
    /// server's sync loop does at start-up).
    fn start_journal(&mut self) {
        let directory = self.journal_dir();
        let sequence = self.next_sequence;
        self.next_sequence += 1;
        let first = PreparedFile::create(&directory, sequence, JOURNAL_FILE_BYTES)
            .expect("prepare journal file");
        self.journal = Some(JournalWriter::new(&directory, first, JOURNAL_FILE_BYTES));
        self.directory_synced(&directory);
        let path = self.journal_path(sequence);
        self.file_synced(&path);
        self.start_spare();
    }

    /// A helper thread starts preparing the file after the current one.
    fn start_spare(&mut self) {
        assert!(matches!(self.spare, Spare::None), "seed {}", self.seed);
        let sequence = self.next_sequence;
        self.next_sequence += 1;
        assert_eq!(
            sequence,
            self.journal().sequence() + 1,
            "seed {}",
            self.seed
        );
        self.spare = Spare::Preparing { sequence };
    }

    /// The helper thread's `PreparedFile::create` returns: the spare is
    /// synced and its name durable.
    fn finish_spare(&mut self) {
        let Spare::Preparing { sequence } = self.spare else {
            return;
        };
        let directory = self.journal_dir();
        let file = PreparedFile::create(&directory, sequence, JOURNAL_FILE_BYTES)
            .expect("prepare journal file");
        self.directory_synced(&directory);
        self.file_synced(&self.journal_path(sequence));
        self.spare = Spare::Ready(file);
        self.counters.spares_prepared += 1;
    }

    /// A crash inside the spare's `PreparedFile::create`: the file is on
    /// the disk as far as the call got (its name not durable), and
    /// `power_cut` or `process_crash_in_prepare` decides how far that was.
    fn crash_in_prepare(&mut self) -> Option<PathBuf> {
        let Spare::Preparing { sequence } = self.spare else {
            return None;
        };
        PreparedFile::create(&self.journal_dir(), sequence, JOURNAL_FILE_BYTES)
            .expect("prepare journal file");
        self.spare = Spare::None;
        self.counters.prepare_crashes += 1;
        Some(self.journal_path(sequence))
    }

    fn journal_path(&self, sequence: u64) -> PathBuf {
        self.journal_dir().join(format!("{sequence:016x}.journal"))
    }

    fn write(&mut self) {
        let key = self.rng.random_range(0..KEYS);
        let partition = partition_of(key);
        let key_bytes = key_bytes(key);
        self.last_hlc += self.rng.random_range(1..100);
        let version = Version::new(self.last_hlc, self.rng.random_range(1..4));
        let (kind, value) = if self.rng.random_bool(0.2) {
            (RecordKind::Tombstone, Vec::new())
        } else {
            let len = self.rng.random_range(0..1000);
            (RecordKind::Put, value_bytes(version, len))
        };
        let receipt = self
            .store(partition)
            .apply(kind, &key_bytes, &value, version, 0)
            .unwrap_or_else(|error| panic!("seed {}: write: {error}", self.seed));
        assert_eq!(receipt.applied, Applied::Written, "seed {}", self.seed);
        self.journal().append(
            partition as u32,
            &RecordFields {
                kind,
                key: &key_bytes,
                value: &value,
                version,
                expires_at: 0,
            },
        );
        let index = self.writes.len();
        self.writes.push(Written {
            key,
            kind,
            value,
            version,
        });
        self.keys[key as usize].allowed.insert(version, index);
        self.pending.push(index);
        self.counters.writes += 1;
    }

    /// A group commit: write the batch, fdatasync the journal file, then
    /// acknowledge the batch's writes.
    fn group_commit(&mut self) {
        let Some(batch) = self.journal().take_batch() else {
            return;
        };
        assert_eq!(batch.entries, self.pending.len(), "seed {}", self.seed);
        batch.write().expect("write batch");
        batch.file.sync_data().expect("fdatasync journal");
        self.file_synced(&batch.path);
        for index in std::mem::take(&mut self.pending) {
            let version = self.writes[index].version;
            let state = &mut self.keys[self.writes[index].key as usize];
            state.floor = Some(version);
            state.allowed.retain(|&allowed, _| allowed >= version);
        }
        self.counters.group_commits += 1;
        self.switch_if_full();
    }

    /// After a group commit (the server's `switch_journal_if_full`): when
    /// the file is full, no checkpoint runs and the spare is ready, the
    /// writer switches to the spare and a checkpoint starts. Without a
    /// ready spare the file keeps taking batches past its size.
    fn switch_if_full(&mut self) {
        if self.checkpoint != Checkpoint::Idle || !self.journal().is_full() {
            return;
        }
        let Spare::Ready(_) = self.spare else {
            self.counters.switches_waiting_for_spare += 1;
            return;
        };
        let Spare::Ready(next) = std::mem::replace(&mut self.spare, Spare::None) else {
            unreachable!()
        };
        let sequence = next.sequence();
        let started = self.journal().switch_to(next);
        assert_eq!(started, sequence);
        self.checkpoint = Checkpoint::Switched {
            sequence,
            synced: [false; PARTITIONS],
        };
    }

    /// Syncs one store as a checkpoint does, issuing each fdatasync.
    fn sync_store(&mut self, partition: usize) {
        let mut stores = self.stores.take().expect("stores open");
        self.sync_with_plan(&mut stores[partition], partition);
        self.stores = Some(stores);
    }

    /// Syncs a store through its plan, issuing each fdatasync and recording
    /// what reached the disk.
    fn sync_with_plan(&mut self, store: &mut Store, partition: usize) {
        let directory = self.store_dir(partition);
        let plan = store.sync_plan();
        if let Some(plan) = plan {
            for target in &plan.files {
                target.file.sync_data().expect("fdatasync segment");
                self.file_synced(&directory.join(format!("{:08}.seg", target.segment)));
            }
            if let Some(handle) = &plan.directory {
                handle.sync_all().expect("fsync directory");
                self.directory_synced(&directory);
            }
            store.sync_completed(&plan);
        }
        let seed = self.seed;
        assert_eq!(
            store.durable_position(),
            store.written_position(),
            "seed {seed}: a store sync left writes not durable"
        );
    }

    /// One step of a checkpoint under way (the switch started it): one
    /// store's sync, or, all synced, the removal of the files before the
    /// switch and then the spare's preparation.
    fn checkpoint_step(&mut self) {
        match self.checkpoint {
            Checkpoint::Idle => {}
            Checkpoint::Switched {
                sequence,
                mut synced,
            } => {
                let unsynced: Vec<usize> = (0..PARTITIONS).filter(|&p| !synced[p]).collect();
                if unsynced.is_empty() {
                    let directory = self.journal_dir();
                    journal::remove_files_before(&directory, sequence).expect("remove journal");
                    self.directory_synced(&directory);
                    self.checkpoint = Checkpoint::Idle;
                    self.counters.checkpoints += 1;
                    // The server's `checkpoint` ends preparing the next
                    // spare (and takes no switch until it is ready).
                    self.start_spare();
                } else {
                    let partition = unsynced[self.rng.random_range(0..unsynced.len())];
                    self.sync_store(partition);
                    synced[partition] = true;
                    self.checkpoint = Checkpoint::Switched { sequence, synced };
                }
            }
        }
    }

    /// A compaction step; what it synced is read from the hints it wrote.
    fn compact(&mut self) {
        let partition = self.rng.random_range(0..PARTITIONS);
        let directory = self.store_dir(partition);
        let hints = |directory: &Path| -> HashMap<PathBuf, Vec<u8>> {
            files_in(directory)
                .into_iter()
                .filter(|path| has_extension(path, "hint"))
                .map(|path| {
                    let bytes = fs::read(&path).expect("read hint");
                    (path, bytes)
                })
                .collect()
        };
        let names_before: HashSet<PathBuf> = files_in(&directory).into_iter().collect();
        let hints_before = hints(&directory);
        let completed_before = self.store(partition).stats().compactions_completed;
        let budget = self.rng.random_range(2048..32768);
        self.store(partition)
            .compact_step(budget)
            .unwrap_or_else(|error| panic!("seed {}: compact_step: {error}", self.seed));
        let completed = self.store(partition).stats().compactions_completed - completed_before;
        self.counters.compactions_completed += completed;
        self.counters.compaction_steps += 1;
        let names_after: HashSet<PathBuf> = files_in(&directory).into_iter().collect();
        let changed: Vec<PathBuf> = hints(&directory)
            .into_iter()
            .filter(|(path, bytes)| hints_before.get(path) != Some(bytes))
            .map(|(path, _)| path)
            .collect();
        let vanished = names_before.difference(&names_after).count();
        if changed.is_empty() && vanished == 0 {
            assert_eq!(
                completed, 0,
                "seed {}: a compaction run left no trace",
                self.seed
            );
            return;
        }
        // `replace_file` (a hint) and `finish_run` both end with a directory
        // fsync, after syncing the segment the new hint vouches for.
        self.directory_synced(&directory);
        for hint in changed {
            self.file_synced(&hint);
            self.file_synced(&segment_of_hint(&hint));
        }
    }

    fn step(&mut self) {
        match self.rng.random_range(0..100) {
            0..=64 => self.write(),
            65..=78 => self.group_commit(),
            79..=89 => self.checkpoint_step(),
            // The helper thread finishes the spare after ~25 steps on
            // average (~16 writes, ~4 group commits; a file fills every
            // ~30-40 writes), so a file sometimes fills before its spare is
            // ready.
            90..=93 => self.finish_spare(),
            _ => self.compact(),
        }
    }

    /// Writes and group commits only: they keep the checkpoint's and the
    /// spare's state (a group commit switches only when both are idle and
    /// ready), and leave batches in flight.
    fn writes_in_flight(&mut self) {
        for _ in 0..self.rng.random_range(0..12) {
            if self.rng.random_bool(0.8) {
                self.write();
            } else {
                self.group_commit();
            }
        }
    }

    fn workload(&mut self) {
        for _ in 0..self.rng.random_range(1..150) {
            self.step();
        }
        // Aim over a third of the crash points at a checkpoint's windows:
        // after the switch with `window` stores synced (0 to all; all: the
        // old files not yet removed); one in seven at a checkpoint's end,
        // its spare being prepared; three in fourteen at a ready spare (the
        // rest land where the workload left off). Then writes and group
        // commits, so batches are in flight in the current file.
        let window = self.rng.random_range(0..PARTITIONS * 2 + 6);
        let checkpoints_before = self.counters.checkpoints;
        for _ in 0..1000 {
            let reached = match (window, &self.checkpoint, &self.spare) {
                (w, Checkpoint::Switched { synced, .. }, _) if w <= PARTITIONS => {
                    synced.iter().filter(|&&s| s).count() == w
                }
                (w, _, _) if w <= PARTITIONS => false,
                (w, Checkpoint::Idle, Spare::Preparing { .. }) if w <= PARTITIONS + 2 => {
                    self.counters.checkpoints > checkpoints_before
                }
                (w, _, _) if w <= PARTITIONS + 2 => false,
                (w, Checkpoint::Idle, Spare::Ready(_)) if w <= PARTITIONS + 5 => true,
                (w, _, _) if w <= PARTITIONS + 5 => false,
                _ => true,
            };
            if reached {
                break;
            }
            self.step();
        }
        self.writes_in_flight();
    }

    /// Reverts some of the dirty bytes of one file to its image.
    fn tear(&mut self, path: &Path) {
        let mut bytes = fs::read(path).expect("read file");
        let empty = Vec::new();
        let image = self.images.get(path).unwrap_or(&empty);
        if support::tear(&mut bytes, image, &mut self.rng, true) {
            fs::write(path, &bytes).expect("write torn file");
        }
    }

    /// A journal file whose preparation the power cut interrupted: absent,
    /// empty, or zeros of some page length, with or without its header.
    fn interrupted_prepare(&mut self, path: &Path) {
        match self.rng.random_range(0..4) {
            0 => fs::remove_file(path).expect("remove journal file"),
            1 => fs::write(path, b"").expect("empty journal file"),
            _ => {
                let full = fs::read(path).expect("read journal file");
                let pages = self.rng.random_range(0..=full.len() / PAGE);
                let mut bytes = vec![0u8; pages * PAGE];
                if !bytes.is_empty() && self.rng.random_bool(0.5) {
                    bytes[..JOURNAL_HEADER_LEN].copy_from_slice(&full[..JOURNAL_HEADER_LEN]);
                }
                fs::write(path, &bytes).expect("write journal file");
            }
        }
    }

    /// Drops everything without a sync and damages what a power cut may;
    /// the damaged files are then the disk.
    fn power_cut(&mut self) {
        self.stores = None;
        self.journal = None;
        self.spare = Spare::None;
        for partition in 0..PARTITIONS {
            let files = files_in(&self.store_dir(partition));
            let fresh: Vec<&PathBuf> = files
                .iter()
                .filter(|path| has_extension(path, "seg") && !self.durable_names.contains(*path))
                .collect();
            let mut lost: HashSet<PathBuf> = HashSet::new();
            if !fresh.is_empty() && self.rng.random_bool(0.4) {
                let from = self.rng.random_range(0..fresh.len());
                for path in &fresh[from..] {
                    if self.rng.random_bool(0.5) {
                        fs::remove_file(path).expect("remove segment");
                    } else {
                        fs::write(path, b"").expect("empty segment");
                    }
                    lost.insert((*path).clone());
                }
            }
            for path in &files {
                if lost.contains(path) {
                    continue;
                }
                if !self.durable_names.contains(path) && !has_extension(path, "seg") {
                    // A compaction output not installed yet: its name may go.
                    assert!(has_extension(path, "compact"), "unexpected {path:?}");
                    if self.rng.random_bool(0.5) {
                        fs::remove_file(path).expect("remove compaction output");
                        continue;
                    }
                }
                self.tear(path);
            }
        }
        for path in files_in(&self.journal_dir()) {
            if self.durable_names.contains(&path) {
                self.tear(&path);
            } else {
                self.interrupted_prepare(&path);
            }
        }
        self.trust_everything();
    }

    /// The crash variants that need the stores and journal still open. A
    /// spare being prepared is always cut inside `PreparedFile::create`
    /// (what the power cut leaves of it: `interrupted_prepare`), and a
    /// batch may be in flight in the current file at the same moment.
    fn before_power_cut(&mut self) {
        let all_synced = matches!(
            self.checkpoint,
            Checkpoint::Switched { synced, .. } if synced.iter().all(|&s| s)
        );
        let spare_preparing = matches!(self.spare, Spare::Preparing { .. });
        let spare_ready = matches!(self.spare, Spare::Ready(_));
        if self.rng.random_bool(0.5) {
            // A group commit wrote its batch; the crash came before its
            // fdatasync returned.
            if let Some(batch) = self.journal().take_batch() {
                batch.write().expect("write batch");
                self.pending.clear();
                self.counters.torn_batches += 1;
                if spare_ready {
                    self.counters.torn_batches_spare_ready += 1;
                }
                if spare_preparing {
                    self.counters.torn_batches_spare_preparing += 1;
                }
            }
        }
        if let Checkpoint::Switched { sequence, .. } = self.checkpoint {
            if all_synced && self.rng.random_bool(0.8) {
                // Inside remove_files_before (on a helper thread, while
                // group commits go on): a prefix of the removals reached
                // the disk, the directory fsync did not return.
                let old: Vec<PathBuf> = journal::journal_files(&self.journal_dir())
                    .expect("list journal")
                    .into_iter()
                    .filter(|(s, _)| *s < sequence)
                    .map(|(_, path)| path)
                    .collect();
                let removed = self.rng.random_range(0..=old.len());
                for path in &old[..removed] {
                    fs::remove_file(path).expect("remove journal file");
                }
                self.counters.partial_removals += 1;
            }
        }
        self.crash_in_prepare();
    }

    /// A process crash inside the spare's `PreparedFile::create`: the page
    /// cache keeps what the call did so far (nothing, the emptied file, the
    /// zeros without the header, or all of it).
    fn process_crash_in_prepare(&mut self) {
        let Some(path) = self.crash_in_prepare() else {
            return;
        };
        match self.rng.random_range(0..4) {
            0 => fs::remove_file(&path).expect("remove journal file"),
            1 => fs::write(&path, b"").expect("empty journal file"),
            2 => fs::write(&path, vec![0u8; JOURNAL_FILE_BYTES as usize]).expect("zero-fill"),
            _ => {}
        }
    }

    fn open_stores(&mut self) -> Vec<Store> {
        let stores = (0..PARTITIONS)
            .map(|p| {
                Store::open(self.store_dir(p), self.options.clone()).unwrap_or_else(|error| {
                    panic!(
                        "seed {}, crash point {}: reopening store {p} failed: {error}",
                        self.seed, self.crash_points
                    )
                })
            })
            .collect();
        // Recovery promises what it kept is durable.
        for p in 0..PARTITIONS {
            self.trust_dir(&self.store_dir(p));
        }
        stores
    }

    /// Reopens, replays, syncs, checks, removes the journal, starts anew.
    fn recover(&mut self, mut process_crash: bool) {
        let seed = self.seed;
        let crash_point = self.crash_points;
        let mut stores = loop {
            let mut stores = self.open_stores();
            let report = journal::replay(&self.journal_dir(), |entry| {
                stores[entry.partition as usize]
                    .apply(
                        entry.kind,
                        entry.key,
                        entry.value,
                        entry.version,
                        entry.expires_at,
                    )
                    .map(|_| ())
            })
            .unwrap_or_else(|error| {
                panic!("seed {seed}, crash point {crash_point}: journal replay failed: {error}")
            });
            self.counters.replayed_entries += report.entries;
            self.counters.replay_torn_bytes += report.torn_bytes;
            if report.torn_bytes > 0 && self.torn_file_is_not_last() {
                self.counters.replay_torn_before_later_file += 1;
            }
            if self.rng.random_bool(0.08) {
                // A power cut during recovery, some stores synced.
                for (p, store) in stores.iter_mut().enumerate() {
                    if self.rng.random_bool(0.5) {
                        self.sync_with_plan(store, p);
                    }
                }
                drop(stores);
                self.power_cut();
                self.counters.recovery_cuts += 1;
                process_crash = false;
                continue;
            }
            break stores;
        };
        if self.rng.random_bool(0.2) {
            // A clean close (it syncs and writes every missing hint) and a
            // reopen that loads the hints.
            for store in stores {
                store.close().expect("close");
            }
            stores = self.open_stores();
        } else {
            for (p, store) in stores.iter_mut().enumerate() {
                self.sync_with_plan(store, p);
            }
        }
        self.check(&stores, process_crash);
        // Only now may the journal go: every replayed write is durable in
        // its store. (What reached the disk is tracked, not assumed: the
        // next crash point checks these syncs.)
        let directory = self.journal_dir();
        journal::remove_files_before(&directory, u64::MAX).expect("remove journal");
        self.directory_synced(&directory);
        self.stores = Some(stores);
        self.pending.clear();
        self.checkpoint = Checkpoint::Idle;
        self.start_journal();
    }

    /// True when the newest journal file a batch reached (the one a torn
    /// batch is in) has a later file after it: a prepared spare, or what an
    /// interrupted preparation left.
    fn torn_file_is_not_last(&self) -> bool {
        let files = journal::journal_files(&self.journal_dir()).expect("list journal");
        let written = files.iter().rposition(|(_, path)| {
            let bytes = fs::read(path).expect("read journal file");
            bytes
                .get(JOURNAL_HEADER_LEN..JOURNAL_HEADER_LEN + ENTRY_HEADER_LEN)
                .is_some_and(|first| first.iter().any(|&byte| byte != 0))
        });
        written.is_some_and(|index| index + 1 < files.len())
    }

    /// Every key holds an allowed version at or above its floor (exactly
    /// its newest write after a process crash); nothing else exists. What
    /// was found becomes the floor; lost writes are forgotten.
    fn check(&mut self, stores: &[Store], process_crash: bool) {
        let seed = self.seed;
        let at = self.crash_points;
        let mut found_keys = [0usize; PARTITIONS];
        for key in 0..KEYS {
            let partition = partition_of(key);
            let entry = stores[partition]
                .read(&key_bytes(key))
                .unwrap_or_else(|error| panic!("seed {seed}, crash point {at}: read: {error}"));
            let state = &self.keys[key as usize];
            let newest = state.allowed.last_key_value().map(|(_, &index)| index);
            let floor_index = state.floor.map(|floor| state.allowed[&floor]);
            let found = match &entry {
                Some(entry) => {
                    found_keys[partition] += 1;
                    if let Some(floor) = state.floor {
                        assert!(
                            entry.version >= floor,
                            "seed {seed}, crash point {at}: key {key} (partition {partition}) \
                             lost an acknowledged write: holds {:?}, acknowledged {floor:?}",
                            entry.version
                        );
                    }
                    let index = *state.allowed.get(&entry.version).unwrap_or_else(|| {
                        let known = self.writes.iter().any(|w| w.version == entry.version);
                        panic!(
                            "seed {seed}, crash point {at}: key {key} holds {:?}, {}",
                            entry.version,
                            if known {
                                "a write an earlier recovery had lost (it came back)"
                            } else {
                                "a version never written to it"
                            }
                        )
                    });
                    let written = &self.writes[index];
                    assert_eq!(written.key, key, "seed {seed}");
                    assert_eq!(entry.kind, written.kind, "seed {seed}: kind of key {key}");
                    assert!(
                        entry.value[..] == written.value[..],
                        "seed {seed}, crash point {at}: value of key {key} differs from the write"
                    );
                    if process_crash {
                        assert_eq!(
                            Some(index),
                            newest,
                            "seed {seed}, crash point {at}: a process crash lost a write of key {key}"
                        );
                    }
                    Some(index)
                }
                None => {
                    // Absent: never acknowledged, or a dropped tombstone.
                    let absent_ok = |index: Option<usize>| {
                        index.is_none_or(|index| {
                            self.drop_tombstones && self.writes[index].kind == RecordKind::Tombstone
                        })
                    };
                    assert!(
                        absent_ok(floor_index),
                        "seed {seed}, crash point {at}: key {key} (partition {partition}) \
                         lost its acknowledged write {:?}",
                        state.floor
                    );
                    if process_crash {
                        assert!(
                            absent_ok(newest),
                            "seed {seed}, crash point {at}: a process crash lost key {key}"
                        );
                    }
                    None
                }
            };
            let state = &mut self.keys[key as usize];
            let lost = state
                .allowed
                .values()
                .filter(|&&index| Some(index) > found)
                .count();
            self.counters.unacknowledged_lost += lost as u64;
            state.allowed.clear();
            state.floor = None;
            if let Some(index) = found {
                let version = self.writes[index].version;
                state.allowed.insert(version, index);
                state.floor = Some(version);
            }
        }
        for (partition, store) in stores.iter().enumerate() {
            assert_eq!(
                store.len(),
                found_keys[partition],
                "seed {seed}, crash point {at}: store {partition} holds keys never written"
            );
        }
    }

    fn crash_point(&mut self) {
        self.workload();
        match self.checkpoint {
            Checkpoint::Idle => self.counters.crash_idle += 1,
            Checkpoint::Switched { synced, .. } if synced.iter().all(|&s| s) => {
                self.counters.crash_after_store_syncs += 1
            }
            Checkpoint::Switched { .. } => self.counters.crash_after_switch += 1,
        }
        match self.spare {
            Spare::None => self.counters.crash_spare_none += 1,
            Spare::Preparing { .. } => self.counters.crash_spare_preparing += 1,
            Spare::Ready(_) => self.counters.crash_spare_ready += 1,
        }
        if self.crash_points % 4 == 3 {
            if self.rng.random_bool(0.3) {
                if let Some(batch) = self.journal().take_batch() {
                    batch.write().expect("write batch");
                }
            }
            self.process_crash_in_prepare();
            self.stores = None;
            self.journal = None;
            self.spare = Spare::None;
            self.counters.process_crashes += 1;
            self.recover(true);
        } else {
            self.before_power_cut();
            self.power_cut();
            self.recover(false);
        }
        self.crash_points += 1;
    }
}

fn run(default_seed: u64) {
    let seed = std::env::var("MERIDIAN_JOURNAL_CRASH_SEED")
        .ok()
        .and_then(|seed| seed.parse().ok())
        .unwrap_or(default_seed);
    println!("journal_crash: seed {seed} (replay with MERIDIAN_JOURNAL_CRASH_SEED={seed})");
    let started = Instant::now();
    let mut crasher = Crasher::new(seed);
    for _ in 0..CRASH_POINTS {
        crasher.crash_point();
    }
    // A clean shutdown: commit, finish the checkpoint, close; nothing lost.
    crasher.workload();
    crasher.group_commit();
    while crasher.checkpoint != Checkpoint::Idle {
        crasher.checkpoint_step();
    }
    for store in crasher.stores.take().expect("stores open") {
        store.close().expect("close");
    }
    crasher.journal = None;
    crasher.spare = Spare::None;
    crasher.recover(true);
    println!(
        "journal_crash: seed {seed}: {} crash points in {:.1?}; {:?}",
        crasher.crash_points,
        started.elapsed(),
        crasher.counters
    );
}

#[test]
fn journal_power_cuts_seed_1() {
    run(1);
}

#[test]
fn journal_power_cuts_seed_2() {
    run(2);
}

#[test]
fn journal_power_cuts_seed_3() {
    run(3);
}

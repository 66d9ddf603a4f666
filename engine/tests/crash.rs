//! Goal: under `Durability::Sync`, a power cut at any moment loses no
//! acknowledged write, never makes a value appear that was not written, and
//! leaves a store that opens, takes new writes and keeps them.
//!
//! Method: a random workload of puts, deletes and group-commit syncs runs on
//! 16 KiB segments (so rollovers are frequent). A write is acknowledged once
//! a sync made `durable_position() >= receipt.position`; the test syncs
//! through `sync_plan` / `sync_completed`, issuing each fdatasync itself, so
//! it knows exactly which bytes reached the disk: right after each fdatasync
//! it copies the file into `images` (its picture of the disk), and after a
//! directory fsync it marks every segment name as durable.
//!
//! At each crash point the store is dropped without a sync; the files then
//! hold everything written, as the page cache would. The test turns them
//! into what a power cut can leave on disk:
//! - a byte equal to its image survives (below the durable point every
//!   byte does); a dirty byte either reached the disk or still holds its
//!   image (zeros for a file never synced), decided by a tear point after
//!   which dirty bytes revert, by independent 4 KiB pages, or by a tear
//!   followed by a run of garbage (a torn sector);
//! - segment files whose names were never made durable by a directory fsync
//!   may vanish or be empty, newest first (directory operations reach the
//!   disk in order, as on ext4 and XFS with a journal).
//!
//! Then the store is reopened and the recovered state must be exactly the
//! state after some prefix of the writes that covers every acknowledged
//! one: each key reads back the newest write of that prefix, with its value,
//! `read_log` returns that prefix in order, and nothing else exists. The
//! writes after the prefix are forgotten, the workload goes on from the
//! recovered store, and the next crash point checks that the new writes
//! survived. Every fourth crash point is a process crash instead (drop and
//! reopen with no damage): nothing may be lost at all.
//!
//! Why files are a faithful model of the disk for this writer: segments are
//! written through a shared memory map, so every store lands directly in
//! the file's page-cache pages, the same pages `read` sees; on Linux,
//! fdatasync on the file descriptor writes back every page dirtied through a
//! shared mapping of it (msync is not needed for MAP_SHARED file pages). So
//! "the file's bytes at the moment fdatasync returned" is exactly what the
//! disk holds for that file, and "the file's bytes when the store is
//! dropped" is the page cache a power cut throws away. Recovery itself
//! promises that what it found is durable (`durable_position()` equals the
//! written end after `open`), so after each reopen the whole directory
//! becomes the test's new picture of the disk.
//!
//! Each test runs 260 crash points (1,040 per run over the four seeds); set
//! `MERIDIAN_CRASH_SEED` to replay one seed.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use meridian_engine::{Applied, Durability, LogPosition, Options, RecordKind, Store, Version};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

mod support;

use support::value_bytes;

const CRASH_POINTS: usize = 260;
const KEYS: u32 = 48;

/// One write the store accepted.
#[derive(Clone, Debug)]
struct Written {
    key: Vec<u8>,
    kind: RecordKind,
    value: Vec<u8>,
    version: Version,
    end: LogPosition,
}

struct Crasher {
    directory: tempfile::TempDir,
    options: Options,
    rng: StdRng,
    seed: u64,
    store: Option<Store>,
    /// Every write in the log, oldest first.
    history: Vec<Written>,
    /// `history[..acknowledged]` are acknowledged.
    acknowledged: usize,
    last_hlc: u64,
    /// What the disk holds of each segment file.
    images: BTreeMap<PathBuf, Vec<u8>>,
    /// Segment names a directory fsync made durable.
    durable_names: BTreeSet<PathBuf>,
    crash_points: usize,
}

fn key_bytes(key: u32) -> Vec<u8> {
    format!("key-{key}-{}", "x".repeat(key as usize % 5)).into_bytes()
}

fn segment_files(directory: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(directory)
        .expect("list directory")
        .map(|item| item.expect("directory entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "seg"))
        .collect();
    files.sort();
    files
}

impl Crasher {
    fn new(seed: u64) -> Crasher {
        let options = Options {
            segment_bytes: 16 * 1024,
            key_bytes_max: 64,
            value_bytes_max: 2048,
            durability: Durability::Sync,
            clock: Arc::new(support::FixedClock),
            ..Options::default()
        };
        let directory = tempfile::tempdir().expect("temporary directory");
        let store = Store::open(directory.path(), options.clone()).expect("open new store");
        let mut crasher = Crasher {
            directory,
            options,
            rng: StdRng::seed_from_u64(seed),
            seed,
            store: Some(store),
            history: Vec::new(),
            acknowledged: 0,
            last_hlc: 1_700_000_000_000 << 16,
            images: BTreeMap::new(),
            durable_names: BTreeSet::new(),
            crash_points: 0,
        };
        crasher.trust_the_directory();
        crasher
    }

    fn store(&mut self) -> &mut Store {
        self.store.as_mut().expect("store open")
    }

    /// Takes the files as they are now as the disk's content.
    fn trust_the_directory(&mut self) {
        self.images.clear();
        self.durable_names.clear();
        for path in segment_files(self.directory.path()) {
            self.images
                .insert(path.clone(), fs::read(&path).expect("read segment"));
            self.durable_names.insert(path);
        }
    }

    fn write(&mut self) {
        let key = key_bytes(self.rng.random_range(0..KEYS));
        self.last_hlc += self.rng.random_range(1..100);
        let version = Version::new(self.last_hlc, self.rng.random_range(1..4));
        let (kind, value) = if self.rng.random_bool(0.2) {
            (RecordKind::Tombstone, Vec::new())
        } else {
            let len = self.rng.random_range(0..1500);
            (RecordKind::Put, value_bytes(version, len))
        };
        let receipt = self
            .store()
            .apply(kind, &key, &value, version, 0)
            .expect("write");
        assert_eq!(receipt.applied, Applied::Written);
        self.history.push(Written {
            key,
            kind,
            value,
            version,
            end: receipt.position,
        });
    }

    /// Group commit through the plan, recording what reached the disk.
    fn sync(&mut self) {
        let store = self.store.as_mut().expect("store open");
        if let Some(plan) = store.sync_plan() {
            for target in &plan.files {
                target.file.sync_data().expect("fdatasync");
            }
            if let Some(directory) = &plan.directory {
                directory.sync_all().expect("fsync directory");
            }
            for target in &plan.files {
                let path = self
                    .directory
                    .path()
                    .join(format!("{:08}.seg", target.segment));
                let bytes = fs::read(&path).expect("read synced segment");
                self.images.insert(path, bytes);
            }
            if plan.directory.is_some() {
                self.durable_names
                    .extend(segment_files(self.directory.path()));
            }
            store.sync_completed(&plan);
        }
        let store = self.store.as_ref().expect("store open");
        for written in &self.history[self.acknowledged..] {
            assert!(
                store.is_durable(written.end),
                "seed {}: sync left {:?} not durable (durable {:?})",
                self.seed,
                written.end,
                store.durable_position()
            );
        }
        self.acknowledged = self.history.len();
    }

    fn workload(&mut self) {
        for _ in 0..self.rng.random_range(1..40) {
            if self.rng.random_bool(0.1) {
                self.sync();
            } else {
                self.write();
            }
        }
    }

    /// Drops the store without a sync and damages what a power cut may.
    fn power_cut(&mut self) {
        drop(self.store.take());
        let files = segment_files(self.directory.path());
        let fresh: Vec<&PathBuf> = files
            .iter()
            .filter(|path| !self.durable_names.contains(*path))
            .collect();
        let mut lost = BTreeSet::new();
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
        for path in files.iter().filter(|path| !lost.contains(*path)) {
            self.tear(path);
        }
    }

    /// Reverts some of the dirty bytes of one file to its image.
    fn tear(&mut self, path: &Path) {
        let mut bytes = fs::read(path).expect("read segment");
        let empty = Vec::new();
        let image = self.images.get(path).unwrap_or(&empty);
        if support::tear(&mut bytes, image, &mut self.rng, false) {
            fs::write(path, &bytes).expect("write torn segment");
        }
    }

    /// Reopens and checks the recovered state is a prefix covering every
    /// acknowledged write; forgets the writes after it.
    fn recover(&mut self) {
        let store =
            Store::open(self.directory.path(), self.options.clone()).unwrap_or_else(|error| {
                panic!("seed {}: reopen after a crash failed: {error}", self.seed)
            });
        let seed = self.seed;
        let index_of: HashMap<Version, usize> = self
            .history
            .iter()
            .enumerate()
            .map(|(index, written)| (written.version, index))
            .collect();
        let mut found = BTreeMap::new();
        for key in (0..KEYS).map(key_bytes) {
            let Some(entry) = store.read(&key).expect("read after recovery") else {
                continue;
            };
            let index = *index_of.get(&entry.version).unwrap_or_else(|| {
                panic!("seed {seed}: {key:?} read a version never written: {entry:?}")
            });
            let written = &self.history[index];
            assert_eq!(written.key, key, "seed {seed}: version of another key");
            assert_eq!(entry.kind, written.kind, "seed {seed}: kind of {key:?}");
            assert!(
                entry.value[..] == written.value[..],
                "seed {seed}: value of {key:?} differs from what was written"
            );
            found.insert(key, index);
        }
        let prefix = found.values().map(|&index| index + 1).max().unwrap_or(0);
        assert!(
            prefix >= self.acknowledged,
            "seed {seed}: acknowledged writes lost: state ends at write {prefix}, {} acknowledged",
            self.acknowledged
        );
        let mut expected = BTreeMap::new();
        for (index, written) in self.history[..prefix].iter().enumerate() {
            expected.insert(written.key.clone(), index);
        }
        if found != expected {
            let differing: Vec<_> = expected
                .keys()
                .chain(found.keys())
                .filter(|key| found.get(*key) != expected.get(*key))
                .map(|key| {
                    let name = String::from_utf8_lossy(key).into_owned();
                    (name, found.get(key).copied(), expected.get(key).copied())
                })
                .collect();
            panic!(
                "seed {seed}: state is not the prefix of {prefix} writes \
                 ({} acknowledged, {} written); (key, found, expected): {differing:?}",
                self.acknowledged,
                self.history.len()
            );
        }
        assert_eq!(store.len(), expected.len(), "seed {seed}: unknown keys");
        self.check_log(&store, prefix);
        self.history.truncate(prefix);
        self.acknowledged = prefix;
        self.store = Some(store);
    }

    /// The whole log must be exactly `history[..prefix]`, in order.
    fn check_log(&self, store: &Store, prefix: usize) {
        let mut position = LogPosition::default();
        let mut index = 0;
        loop {
            let batch = store
                .read_log(position, 256, usize::MAX)
                .unwrap_or_else(|error| panic!("seed {}: read_log: {error}", self.seed));
            if batch.records.is_empty() {
                break;
            }
            for record in &batch.records {
                let written = self.history[..prefix].get(index).unwrap_or_else(|| {
                    panic!(
                        "seed {}: log has a record past the state: {record:?}",
                        self.seed
                    )
                });
                assert_eq!(record.version, written.version, "seed {}", self.seed);
                assert_eq!(&record.key[..], &written.key[..], "seed {}", self.seed);
                assert!(record.value[..] == written.value[..], "seed {}", self.seed);
                let length = 32 + record.key.len() as u32 + record.value.len() as u32;
                assert_eq!(record.position.offset + length, written.end.offset);
                assert_eq!(record.position.segment, written.end.segment);
                index += 1;
            }
            position = batch.next;
        }
        assert_eq!(index, prefix, "seed {}: log ends early", self.seed);
        assert_eq!(position, store.written_position(), "seed {}", self.seed);
    }

    fn crash_point(&mut self) {
        self.workload();
        if self.crash_points % 4 == 3 {
            drop(self.store.take());
            let written = self.history.len();
            self.recover();
            assert_eq!(
                self.history.len(),
                written,
                "seed {}: process crash lost writes",
                self.seed
            );
        } else {
            self.power_cut();
            self.recover();
        }
        self.trust_the_directory();
        self.crash_points += 1;
    }
}

fn run(default_seed: u64) {
    let seed = std::env::var("MERIDIAN_CRASH_SEED")
        .ok()
        .and_then(|seed| seed.parse().ok())
        .unwrap_or(default_seed);
    let mut crasher = Crasher::new(seed);
    for _ in 0..CRASH_POINTS {
        crasher.crash_point();
    }
    // A clean close and reopen (hints) keeps everything written since.
    crasher.workload();
    crasher.sync();
    crasher
        .store
        .take()
        .expect("store open")
        .close()
        .expect("close");
    let written = crasher.history.len();
    crasher.recover();
    assert_eq!(crasher.history.len(), written);
}

#[test]
fn power_cuts_seed_1() {
    run(1);
}

#[test]
fn power_cuts_seed_2() {
    run(2);
}

#[test]
fn power_cuts_seed_3() {
    run(3);
}

#[test]
fn power_cuts_seed_4() {
    run(4);
}

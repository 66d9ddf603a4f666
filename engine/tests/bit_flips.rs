//! Goal: a single flipped bit anywhere in a stored record (header, key,
//! value; of a put and of a tombstone) never yields a wrong value: a read
//! reports `Corrupt` naming the file and the record's offset, or, when the
//! flip is found at reopen in a tail segment, the record is cut with what
//! follows it. In a sealed (hinted) segment a flip makes `read` fail; without
//! the hint `Store::open` refuses with the file and offset; `salvage` then
//! recovers every other record.
//!
//! Method: one record between two others in a small store; each bit of it is
//! flipped in the file (the store's shared map sees the change at once),
//! checked on the open store and, from a saved copy of the file, across a
//! reopen; then restored.
//!
//! A flip in the key bytes or in a header field the key comparison decodes
//! (kind, flags, key_len, value_len) makes the stored key differ from the
//! one asked for; the lookup then verifies that record's checksum, so it too
//! reports `Corrupt` rather than "absent". (A `get` of a tombstone answers
//! from memory that the key is deleted, which stays true.)

use std::fs::{self, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use meridian_engine::{Error, LogPosition, Options, RecordKind, Store, StoredEntry, Version};

const RECORD_HEADER_LEN: usize = 32;

fn options() -> Options {
    Options {
        segment_bytes: 16 * 1024,
        key_bytes_max: 64,
        value_bytes_max: 2048,
        ..Options::default()
    }
}

fn version(counter: u64) -> Version {
    Version::new((1_700_000_000_000 << 16) + counter, 1)
}

fn flip(path: &Path, offset: usize, bit: usize) {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .expect("open segment");
    let mut byte = [0u8; 1];
    file.read_exact_at(&mut byte, offset as u64)
        .expect("read byte");
    byte[0] ^= 1 << bit;
    file.write_all_at(&byte, offset as u64).expect("write byte");
}

fn assert_corrupt_at(result: Result<Option<StoredEntry>, Error>, path: &Path, offset: usize) {
    match result {
        Err(Error::Corrupt {
            path: named,
            offset: at,
            ..
        }) => {
            assert_eq!(named, path, "corruption names the segment");
            assert_eq!(at, offset as u64, "corruption names the record's offset");
        }
        other => panic!("expected Corrupt at {offset}, got {other:?}"),
    }
}

/// A store holding `before`, the target record and `after`; returns the
/// segment path and the target record's offset and length.
fn store_with_target(directory: &Path, kind: RecordKind) -> (PathBuf, usize, usize) {
    let mut store = Store::open(directory, options()).expect("open");
    store
        .put(b"before", b"first value", version(1), 0)
        .expect("put");
    store
        .apply(kind, b"target", b"the value under test", version(2), 0)
        .expect("write target");
    store
        .put(b"after", b"last value", version(3), 0)
        .expect("put");
    let batch = store
        .read_log(LogPosition::default(), 16, usize::MAX)
        .expect("read_log");
    let record = &batch.records[1];
    assert_eq!(&record.key[..], b"target");
    let offset = record.position.offset as usize;
    let len = RECORD_HEADER_LEN + record.key.len() + record.value.len();
    store.close().expect("close");
    let path = directory.join(format!("{:08}.seg", record.position.segment));
    (path, offset, len)
}

fn flips_on_an_open_store(kind: RecordKind) {
    let directory = tempfile::tempdir().expect("temporary directory");
    let (path, offset, len) = store_with_target(directory.path(), kind);
    let store = Store::open(directory.path(), options()).expect("open");
    for byte in 0..len {
        for bit in 0..8 {
            flip(&path, offset + byte, bit);
            assert_corrupt_at(store.read(b"target"), &path, offset);
            match store.get(b"target") {
                Ok(None) if kind == RecordKind::Tombstone => {}
                result => assert_corrupt_at(result, &path, offset),
            }
            let before = store.get(b"before").expect("neighbour reads");
            assert_eq!(&before.expect("before present").value[..], b"first value");
            flip(&path, offset + byte, bit);
        }
    }
    assert!(store.read(b"target").expect("restored").is_some());
}

fn flips_found_at_reopen(kind: RecordKind) {
    let directory = tempfile::tempdir().expect("temporary directory");
    let (path, offset, len) = store_with_target(directory.path(), kind);
    let original = fs::read(&path).expect("read segment");
    for byte in 0..len {
        for bit in 0..8 {
            fs::write(&path, &original).expect("restore segment");
            flip(&path, offset + byte, bit);
            let store = Store::open(directory.path(), options()).expect("reopen");
            assert!(
                store.stats().torn_bytes_cut > 0,
                "flip of bit {bit} of byte {byte} was not cut"
            );
            assert_eq!(store.read(b"target").expect("read"), None);
            assert_eq!(store.read(b"after").expect("read"), None);
            let before = store.get(b"before").expect("read").expect("before kept");
            assert_eq!(&before.value[..], b"first value");
        }
    }
}

#[test]
fn put_flips_are_detected_on_an_open_store() {
    flips_on_an_open_store(RecordKind::Put);
}

#[test]
fn tombstone_flips_are_detected_on_an_open_store() {
    flips_on_an_open_store(RecordKind::Tombstone);
}

#[test]
fn put_flips_in_a_tail_segment_are_cut_at_reopen() {
    flips_found_at_reopen(RecordKind::Put);
}

#[test]
fn tombstone_flips_in_a_tail_segment_are_cut_at_reopen() {
    flips_found_at_reopen(RecordKind::Tombstone);
}

#[test]
fn flip_in_a_sealed_segment_fails_reads_then_open_then_salvage_recovers() {
    let directory = tempfile::tempdir().expect("temporary directory");
    let value_of = |i: u64| format!("value-{i}-").repeat(20).into_bytes();
    let mut store = Store::open(directory.path(), options()).expect("open");
    for i in 0..200u64 {
        let key = format!("key-{i}");
        store
            .put(key.as_bytes(), &value_of(i), version(i + 1), 0)
            .expect("put");
    }
    let batch = store
        .read_log(LogPosition::default(), 1, usize::MAX)
        .expect("read_log");
    let victim = batch.records[0].clone();
    assert_eq!(victim.position.segment, 1);
    store.close().expect("close");
    let segment = directory.path().join("00000001.seg");
    let hint = directory.path().join("00000001.hint");
    assert!(hint.exists(), "sealed segment has a hint");
    let value_offset = victim.position.offset as usize + RECORD_HEADER_LEN + victim.key.len();
    flip(&segment, value_offset + 5, 3);

    let store = Store::open(directory.path(), options()).expect("open trusts the hint");
    assert_corrupt_at(
        store.read(&victim.key),
        &segment,
        victim.position.offset as usize,
    );
    drop(store);

    fs::remove_file(&hint).expect("remove hint");
    match Store::open(directory.path(), options()) {
        Err(Error::Corrupt { path, offset, .. }) => {
            assert_eq!(path, segment);
            assert_eq!(offset, u64::from(victim.position.offset));
        }
        other => panic!("open of a corrupt sealed segment: {other:?}"),
    }

    let target = tempfile::tempdir().expect("temporary directory");
    let target = target.path().join("salvaged");
    let report = meridian_engine::salvage(directory.path(), &target, options()).expect("salvage");
    assert_eq!(report.records_recovered, 199, "{report:?}");
    assert_eq!(report.damaged_regions, 1, "{report:?}");
    let salvaged = Store::open(&target, options()).expect("open salvaged store");
    for i in 0..200u64 {
        let key = format!("key-{i}");
        let entry = salvaged.get(key.as_bytes()).expect("read salvaged");
        if key.as_bytes() == &victim.key[..] {
            assert_eq!(entry, None);
        } else {
            assert_eq!(&entry.expect("salvaged").value[..], &value_of(i)[..]);
        }
    }
}

//! Goal: the fuzz targets' seed corpus (`engine/fuzz/corpus/<target>/seed-*`)
//! holds valid inputs, made by the engine itself, and stays in step with the
//! format.
//! Method: build each seed here; the test fails if a committed seed differs.
//! `MERIDIAN_WRITE_FUZZ_CORPUS=1 cargo test -p meridian-engine --test
//! fuzz_seed_corpus` (re)writes them.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use meridian_engine::format::{self, HintEntry, RecordFields, RecordKind};
use meridian_engine::{Clock, Options, Store, Version};

#[derive(Debug)]
struct FixedClock;

impl Clock for FixedClock {
    fn now_ms(&self) -> u64 {
        1_700_000_000_000
    }
}

fn record(kind: RecordKind, key: &[u8], value: &[u8], hlc: u64) -> Vec<u8> {
    let fields = RecordFields {
        kind,
        key,
        value,
        version: Version::new(hlc, 1),
        expires_at: 0,
    };
    let mut bytes = vec![0u8; fields.record_len()];
    format::encode_record(&fields, &mut bytes);
    bytes
}

/// A small real segment, written by a store, without its trailing zeros.
fn small_segment() -> Vec<u8> {
    let directory = tempfile::tempdir().expect("temporary directory");
    let options = Options {
        segment_bytes: 64 * 1024,
        key_bytes_max: 1024,
        value_bytes_max: 16 * 1024,
        clock: Arc::new(FixedClock),
        ..Options::default()
    };
    let mut store = Store::open(directory.path(), options).expect("open");
    let base = 1_700_000_000_000u64 << 16;
    store
        .put(b"alpha", b"one", Version::new(base + 1, 1), 0)
        .expect("put");
    store
        .put(b"beta", b"two", Version::new(base + 2, 2), 1_700_000_100)
        .expect("put");
    store
        .delete(b"alpha", Version::new(base + 3, 1))
        .expect("delete");
    store
        .put(b"gamma", &[7u8; 100], Version::new(base + 4, 1), 0)
        .expect("put");
    store.close().expect("close");
    let mut bytes = std::fs::read(directory.path().join("00000001.seg")).expect("read");
    let end = bytes
        .iter()
        .rposition(|&byte| byte != 0)
        .map_or(0, |at| at + 1);
    bytes.truncate(end);
    bytes
}

fn seeds() -> Vec<(PathBuf, Vec<u8>)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    let put = record(RecordKind::Put, b"key", b"value", 42 << 16);
    let tombstone = record(RecordKind::Tombstone, b"key", b"", 43 << 16);
    let seal = record(RecordKind::Seal, b"", b"", 0);
    let hint = format::encode_hint_file(
        1,
        77,
        32 + put.len() as u32,
        &[HintEntry {
            hash_high: format::hash_high(b"key"),
            offset: 32,
            record_len: put.len() as u32,
            kind: RecordKind::Put,
            version: Version::new(42 << 16, 1),
            expires_at: 0,
            digest: format::entry_digest(b"key", Version::new(42 << 16, 1)),
        }],
    );
    let segment = small_segment();
    let records = segment[format::SEGMENT_HEADER_LEN..].to_vec();
    let decoder = root.join("record_decoder");
    let recovery = root.join("recovery");
    vec![
        (decoder.join("seed-put.bin"), put.clone()),
        (decoder.join("seed-tombstone.bin"), tombstone),
        (decoder.join("seed-seal.bin"), seal),
        (decoder.join("seed-hint.bin"), hint),
        (decoder.join("seed-segment.bin"), segment.clone()),
        (
            recovery.join("seed-segment.bin"),
            [&[0u8][..], &segment].concat(),
        ),
        (
            recovery.join("seed-records.bin"),
            [&[1u8][..], &records].concat(),
        ),
        (
            recovery.join("seed-one-record.bin"),
            [&[1u8][..], &put].concat(),
        ),
    ]
}

#[test]
fn seed_corpus_is_current() {
    let write = std::env::var_os("MERIDIAN_WRITE_FUZZ_CORPUS").is_some();
    for (path, bytes) in seeds() {
        if write {
            std::fs::create_dir_all(path.parent().expect("parent")).expect("create corpus");
            std::fs::write(&path, &bytes).expect("write seed");
        }
        let committed = std::fs::read(&path)
            .unwrap_or_else(|error| panic!("{}: {error}; regenerate the corpus", path.display()));
        assert!(
            committed == bytes,
            "{} is stale; regenerate the corpus",
            path.display()
        );
    }
}

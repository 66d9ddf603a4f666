//! Goal: the store's basic contract — newest version wins, deletes, expiry,
//! rollover, reopen (scan and hints), compaction and log reading — on a real
//! directory. Method: small segments so every path runs in a few hundred ops.

use meridian_engine::{Applied, Durability, LogPosition, Options, RecordKind, Store, Version};

fn small_options() -> Options {
    Options {
        segment_bytes: 64 * 1024,
        value_bytes_max: 4096,
        key_bytes_max: 1024,
        ..Options::default()
    }
}

fn v(counter: u64) -> Version {
    // Realistic hlc: the test's start in milliseconds in the top 48 bits.
    static BASE: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let base = *BASE.get_or_init(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64
    });
    Version::new((base << 16) + counter, 1)
}

#[test]
fn newest_version_wins_and_stale_writes_are_noops() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path(), small_options()).unwrap();
    assert_eq!(
        store.put(b"k", b"two", v(2), 0).unwrap().applied,
        Applied::Written
    );
    assert_eq!(
        store.put(b"k", b"one", v(1), 0).unwrap().applied,
        Applied::Stale { current: v(2) }
    );
    assert_eq!(&store.get(b"k").unwrap().unwrap().value[..], b"two");
    store.delete(b"k", v(3)).unwrap();
    assert!(store.get(b"k").unwrap().is_none());
    assert_eq!(
        store.read(b"k").unwrap().unwrap().kind,
        RecordKind::Tombstone
    );
    assert!(matches!(
        store.put(b"k", b"old", v(2), 0).unwrap().applied,
        Applied::Stale { .. }
    ));
}

#[test]
fn survives_rollover_reopen_and_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let options = Options {
        durability: Durability::Sync,
        compaction_dead_fraction: 0.3,
        ..small_options()
    };
    let mut store = Store::open(dir.path(), options.clone()).unwrap();
    for round in 0..12u64 {
        for i in 0..300u64 {
            let key = format!("key-{i}");
            let value = format!("value-{i}-{round}").repeat(4);
            store
                .put(key.as_bytes(), value.as_bytes(), v(round * 1000 + i), 0)
                .unwrap();
        }
    }
    store.sync().unwrap();
    assert!(store.stats().segments > 3, "{:?}", store.stats());
    let before = store.stats().segments;
    for _ in 0..1000 {
        if store.compact_step(16 * 1024).unwrap().idle {
            break;
        }
    }
    assert!(store.stats().compactions_completed > 0);
    assert!(store.stats().segments < before);
    let check = |store: &Store| {
        for i in 0..300u64 {
            let value = store.get(format!("key-{i}").as_bytes()).unwrap().unwrap();
            assert_eq!(value.value, format!("value-{i}-11").repeat(4).as_bytes());
        }
    };
    check(&store);
    store.close().unwrap();
    let store = Store::open(dir.path(), options.clone()).unwrap();
    assert!(
        store.stats().segments_loaded_from_hints > 0,
        "{:?}",
        store.stats()
    );
    check(&store);
    drop(store);
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "hint") {
            std::fs::remove_file(path).unwrap();
        }
    }
    let store = Store::open(dir.path(), options).unwrap();
    assert_eq!(store.stats().segments_loaded_from_hints, 0);
    check(&store);
}

#[test]
fn log_reads_every_write_in_order_across_segments() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path(), small_options()).unwrap();
    for i in 0..1000u64 {
        store
            .put(format!("k{i}").as_bytes(), &[7u8; 200], v(i + 1), 0)
            .unwrap();
    }
    let mut position = LogPosition::default();
    let mut seen = Vec::new();
    loop {
        let batch = store.read_log(position, 64, 1 << 20).unwrap();
        if batch.records.is_empty() {
            break;
        }
        seen.extend(batch.records.iter().map(|r| r.version));
        position = batch.next;
    }
    assert_eq!(seen.len(), 1000);
    assert!(seen.windows(2).all(|w| w[0] < w[1]));
}

#[test]
fn expired_values_read_as_absent() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path(), small_options()).unwrap();
    store.put(b"gone", b"x", v(1), 1).unwrap();
    store.put(b"kept", b"y", v(2), u32::MAX).unwrap();
    assert!(store.get(b"gone").unwrap().is_none());
    assert!(store.get(b"kept").unwrap().is_some());
}

#[test]
fn limits_are_refused_with_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path(), small_options()).unwrap();
    let error = store.put(&[1u8; 1025], b"v", v(1), 0).unwrap_err();
    assert!(
        error
            .to_string()
            .contains("key of 1025 bytes exceeds the maximum of 1024"),
        "{error}"
    );
    let error = store.put(b"k", &[1u8; 4097], v(1), 0).unwrap_err();
    assert!(error.to_string().contains("value of 4097 bytes"), "{error}");
    assert!(Store::open(dir.path(), small_options())
        .unwrap_err()
        .to_string()
        .contains("locked"));
}

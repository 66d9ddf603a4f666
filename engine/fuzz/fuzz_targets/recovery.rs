//! Goal: opening a store over any segment file returns `Ok` or `Err`, never
//! panics, and a store that opens serves `read_log` and `get` without
//! panicking.
//! Method: the input's first byte chooses whether a valid segment header
//! (segment 1) goes before the rest; the bytes are written as
//! `00000001.seg` in a fresh directory and the store is opened over it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meridian_engine::format::encode_segment_header;
use meridian_engine::{LogPosition, Options, Store};

fn options() -> Options {
    Options {
        segment_bytes: 64 * 1024,
        key_bytes_max: 1024,
        value_bytes_max: 16 * 1024,
        ..Options::default()
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mut file = Vec::with_capacity(rest.len() + 32);
    if mode & 1 == 1 {
        file.extend_from_slice(&encode_segment_header(1, 0));
    }
    file.extend_from_slice(rest);
    let directory = tempfile::tempdir().expect("temporary directory");
    std::fs::write(directory.path().join("00000001.seg"), &file).expect("write segment");
    let Ok(mut store) = Store::open(directory.path(), options()) else {
        return;
    };
    let mut position = LogPosition::default();
    for _ in 0..1000 {
        let Ok(batch) = store.read_log(position, 64, 1 << 20) else {
            break;
        };
        if batch.records.is_empty() {
            break;
        }
        for record in &batch.records {
            let _ = store.get(&record.key);
            let _ = store.read(&record.key);
        }
        position = batch.next;
    }
    let _ = store.put(
        b"after-recovery",
        b"value",
        meridian_engine::Version::new(u64::MAX, 1),
        0,
    );
    let _ = store.get(b"after-recovery");
});

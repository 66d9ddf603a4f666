//! Meridian's store, through its public API only.

use std::path::Path;
use std::time::{Duration, Instant};

use meridian_engine::{Durability, Options, Store, Version};

use super::{check_value, key_of, value_of, BenchResult, GroupCommitPeer, Peer, PutGet, Workload};

/// Puts between two samples of the key directory's size.
pub const KEYDIR_SAMPLE_PUTS: usize = 10_000;
const ORIGIN: u32 = 1;

fn version_of(index: u64) -> Version {
    Version::new((index + 1) << 16, ORIGIN)
}

fn options(durability: Durability, expected_keys: usize) -> Options {
    Options {
        durability,
        expected_keys,
        ..Options::default()
    }
}

#[derive(Debug, Default)]
pub struct Meridian;

impl Peer for Meridian {
    fn name(&self) -> &'static str {
        "meridian"
    }

    fn settings(&self) -> String {
        let defaults = Options::default();
        format!(
            "meridian-engine {}: Store::put, Durability::None (no sync), expected_keys = keys, \
             segment_bytes {} MiB; get = Store::get (checksum verified, value shares the map)",
            env!("CARGO_PKG_VERSION"),
            defaults.segment_bytes >> 20
        )
    }

    fn put_get(&self, directory: &Path, workload: &Workload) -> BenchResult<PutGet> {
        let keys = workload.keys.len();
        let mut store = Store::open(directory, options(Durability::None, keys))?;
        let mut peak_bytes = store.stats().keydir_bytes;
        let start = Instant::now();
        for (index, key) in workload.keys.iter().enumerate() {
            let index = index as u64;
            store.put(key, &value_of(index), version_of(index), 0)?;
            if index as usize % KEYDIR_SAMPLE_PUTS == 0 {
                peak_bytes = peak_bytes.max(store.stats().keydir_bytes);
            }
        }
        let put_elapsed = start.elapsed();
        let steady_bytes = store.stats().keydir_bytes;
        peak_bytes = peak_bytes.max(steady_bytes);
        if store.len() != keys {
            return Err(format!("meridian holds {} keys, expected {keys}", store.len()).into());
        }
        let start = Instant::now();
        for &index in &workload.reads {
            let key = &workload.keys[index as usize];
            let entry = store.get(key)?.ok_or("meridian: key missing")?;
            check_value(index as u64, &entry.value)?;
        }
        let get_elapsed = start.elapsed();
        Ok(PutGet {
            put_elapsed,
            get_elapsed,
            keydir_bytes_per_key: Some((
                steady_bytes as f64 / keys as f64,
                peak_bytes as f64 / keys as f64,
            )),
        })
    }
}

impl GroupCommitPeer for Meridian {
    fn name(&self) -> &'static str {
        "meridian"
    }

    fn settings(&self) -> String {
        "Durability::Sync: records appended with pwrite into segments zero-filled \
         4 MiB at a time ahead of the writer (inside the clock), N puts then \
         Store::sync() (one fdatasync per group)"
            .to_string()
    }

    fn group_commit(
        &self,
        directory: &Path,
        workload: &Workload,
        groups: usize,
        group_len: usize,
    ) -> BenchResult<Duration> {
        let total = groups * group_len;
        assert!(total <= workload.keys.len(), "more puts than keys");
        let mut store = Store::open(directory, options(Durability::Sync, total))?;
        let start = Instant::now();
        for group in 0..groups {
            for index in group * group_len..(group + 1) * group_len {
                let index_u64 = index as u64;
                store.put(
                    &workload.keys[index],
                    &value_of(index_u64),
                    version_of(index_u64),
                    0,
                )?;
            }
            let position = store.sync()?;
            if !store.is_durable(position) {
                return Err("meridian: sync did not make the group durable".into());
            }
        }
        Ok(start.elapsed())
    }
}

/// Builds a store of `keys` keys in `directory` and closes it (hint files
/// written). Returns how long the load and the close took.
pub fn build_for_startup(directory: &Path, keys: usize) -> BenchResult<(Duration, Duration)> {
    let mut store = Store::open(directory, options(Durability::None, keys))?;
    let start = Instant::now();
    for index in 0..keys as u64 {
        store.put(&key_of(index), &value_of(index), version_of(index), 0)?;
    }
    let loaded = start.elapsed();
    let start = Instant::now();
    store.close()?;
    Ok((loaded, start.elapsed()))
}

/// Opens the store in `directory` (built by [`build_for_startup`]), checks
/// it holds `keys` keys and one of them reads back, and returns the open's
/// duration and how many segments came from hint files.
pub fn timed_open(directory: &Path, keys: usize) -> BenchResult<(Duration, usize, usize)> {
    let start = Instant::now();
    let store = Store::open(directory, options(Durability::None, keys))?;
    let elapsed = start.elapsed();
    let stats = store.stats();
    if stats.keys != keys {
        return Err(format!("reopened store holds {} keys, expected {keys}", stats.keys).into());
    }
    let probe = keys as u64 / 2;
    let entry = store
        .get(&key_of(probe))?
        .ok_or("reopened store: key missing")?;
    check_value(probe, &entry.value)?;
    Ok((elapsed, stats.segments_loaded_from_hints, stats.segments))
}

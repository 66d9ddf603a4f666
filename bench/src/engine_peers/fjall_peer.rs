//! fjall (LSM tree) with its journal persisted manually: no sync per write.

use std::path::Path;
use std::time::Instant;

use fjall::{Database, KeyspaceCreateOptions, PersistMode};

use super::{check_value, value_of, BenchResult, Peer, PutGet, Workload};

/// Block cache: fjall's docs advise more than the data set when it fits.
const CACHE_BYTES: u64 = 1 << 30;

#[derive(Debug, Default)]
pub struct Fjall;

impl Peer for Fjall {
    fn name(&self) -> &'static str {
        "fjall"
    }

    fn settings(&self) -> String {
        format!(
            "fjall 3.1: Keyspace::insert one by one, manual_journal_persist(true), one \
             persist(PersistMode::Buffer) at the end (inside the clock), no fsync; cache {} MiB; \
             default worker threads (pinned with the process)",
            CACHE_BYTES >> 20
        )
    }

    fn put_get(&self, directory: &Path, workload: &Workload) -> BenchResult<PutGet> {
        let database = Database::builder(directory)
            .manual_journal_persist(true)
            .cache_size(CACHE_BYTES)
            .open()?;
        let keyspace = database.keyspace("bench", KeyspaceCreateOptions::default)?;
        let start = Instant::now();
        for (index, key) in workload.keys.iter().enumerate() {
            keyspace.insert(&key[..], &value_of(index as u64)[..])?;
        }
        database.persist(PersistMode::Buffer)?;
        let put_elapsed = start.elapsed();
        let start = Instant::now();
        for &index in &workload.reads {
            let value = keyspace
                .get(workload.keys[index as usize])?
                .ok_or("fjall: key missing")?;
            check_value(index as u64, &value)?;
        }
        let get_elapsed = start.elapsed();
        Ok(PutGet {
            put_elapsed,
            get_elapsed,
            keydir_bytes_per_key: None,
        })
    }
}

//! LMDB through heed: 1,000 puts per transaction, WRITE_MAP, no syncs.
//!
//! heed marks opening an environment `unsafe` (LMDB must not open the same
//! file twice in one process, and the flags chosen here trade durability
//! for speed); this module is the benchmark's only `unsafe` code.
#![allow(unsafe_code)]

use std::path::Path;
use std::time::Instant;

use heed::types::Bytes;
use heed::{CommitOrAbort, Database, EnvFlags, EnvOpenOptions};

use super::{check_value, value_of, BenchResult, Peer, PutGet, Workload};

/// Puts per write transaction.
pub const PUTS_PER_TRANSACTION: usize = 1_000;
/// Map size: far above what 1M small records need (random inserts leave
/// pages about 2/3 full).
const MAP_BYTES: usize = 8 << 30;

fn flags() -> EnvFlags {
    EnvFlags::WRITE_MAP | EnvFlags::NO_SYNC | EnvFlags::MAP_ASYNC | EnvFlags::NO_META_SYNC
}

#[derive(Debug, Default)]
pub struct Lmdb;

impl Peer for Lmdb {
    fn name(&self) -> &'static str {
        "lmdb"
    }

    fn settings(&self) -> String {
        format!(
            "heed 0.23 (LMDB): {PUTS_PER_TRANSACTION} puts per write transaction, \
             WRITE_MAP|NO_SYNC|MAP_ASYNC|NO_META_SYNC, map {} GiB; gets in one read transaction",
            MAP_BYTES >> 30
        )
    }

    fn put_get(&self, directory: &Path, workload: &Workload) -> BenchResult<PutGet> {
        // SAFETY: `directory` is fresh and private to this call, so no other
        // environment in this process maps the same file; the flags only
        // weaken durability, which this no-sync benchmark does not need.
        let env = unsafe {
            EnvOpenOptions::new()
                .map_size(MAP_BYTES)
                .flags(flags())
                .open(directory)?
        };
        let transaction = env.write_txn()?;
        let database: Database<Bytes, Bytes> = env
            .create_databases_and_commit(transaction, |creator, transaction| {
                creator
                    .create_database(transaction, None)
                    .map(CommitOrAbort::<_, ()>::Commit)
            })?
            .unwrap_commit();
        let start = Instant::now();
        for (batch, keys) in workload.keys.chunks(PUTS_PER_TRANSACTION).enumerate() {
            let mut transaction = env.write_txn()?;
            for (offset, key) in keys.iter().enumerate() {
                let index = (batch * PUTS_PER_TRANSACTION + offset) as u64;
                database.put(&mut transaction, &key[..], &value_of(index)[..])?;
            }
            transaction.commit()?;
        }
        let put_elapsed = start.elapsed();
        let start = Instant::now();
        let transaction = env.read_txn()?;
        for &index in &workload.reads {
            let value = database
                .get(&transaction, &workload.keys[index as usize][..])?
                .ok_or("lmdb: key missing")?;
            check_value(index as u64, value)?;
        }
        let get_elapsed = start.elapsed();
        drop(transaction);
        Ok(PutGet {
            put_elapsed,
            get_elapsed,
            keydir_bytes_per_key: None,
        })
    }
}

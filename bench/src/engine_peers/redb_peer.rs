//! redb (copy-on-write B-tree): 1,000 puts per transaction, no durability.

use std::path::Path;
use std::time::{Duration, Instant};

use redb::{Database, Durability, ReadableDatabase, TableDefinition};

use super::{check_value, value_of, BenchResult, GroupCommitPeer, Peer, PutGet, Workload};

const TABLE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("bench");
/// Puts per write transaction in the no-sync load.
pub const PUTS_PER_TRANSACTION: usize = 1_000;
/// redb's default page cache, stated so it is printed.
const CACHE_BYTES: usize = 1 << 30;

fn create(directory: &Path) -> BenchResult<Database> {
    Ok(Database::builder()
        .set_cache_size(CACHE_BYTES)
        .create(directory.join("redb.db"))?)
}

#[derive(Debug, Default)]
pub struct Redb;

impl Peer for Redb {
    fn name(&self) -> &'static str {
        "redb"
    }

    fn settings(&self) -> String {
        format!(
            "redb 4.5: {PUTS_PER_TRANSACTION} puts per write transaction, Durability::None; \
             cache {} MiB; gets in one read transaction",
            CACHE_BYTES >> 20
        )
    }

    fn put_get(&self, directory: &Path, workload: &Workload) -> BenchResult<PutGet> {
        let database = create(directory)?;
        let start = Instant::now();
        for (batch, keys) in workload.keys.chunks(PUTS_PER_TRANSACTION).enumerate() {
            let mut transaction = database.begin_write()?;
            transaction.set_durability(Durability::None)?;
            {
                let mut table = transaction.open_table(TABLE)?;
                for (offset, key) in keys.iter().enumerate() {
                    let index = (batch * PUTS_PER_TRANSACTION + offset) as u64;
                    table.insert(&key[..], &value_of(index)[..])?;
                }
            }
            transaction.commit()?;
        }
        let put_elapsed = start.elapsed();
        let start = Instant::now();
        let transaction = database.begin_read()?;
        let table = transaction.open_table(TABLE)?;
        for &index in &workload.reads {
            let value = table
                .get(&workload.keys[index as usize][..])?
                .ok_or("redb: key missing")?;
            check_value(index as u64, value.value())?;
        }
        let get_elapsed = start.elapsed();
        Ok(PutGet {
            put_elapsed,
            get_elapsed,
            keydir_bytes_per_key: None,
        })
    }
}

impl GroupCommitPeer for Redb {
    fn name(&self) -> &'static str {
        "redb"
    }

    fn settings(&self) -> String {
        "one write transaction per group, Durability::Immediate (durable when commit returns)"
            .to_string()
    }

    fn group_commit(
        &self,
        directory: &Path,
        workload: &Workload,
        groups: usize,
        group_len: usize,
    ) -> BenchResult<Duration> {
        assert!(
            groups * group_len <= workload.keys.len(),
            "more puts than keys"
        );
        let database = create(directory)?;
        let start = Instant::now();
        for group in 0..groups {
            let mut transaction = database.begin_write()?;
            transaction.set_durability(Durability::Immediate)?;
            {
                let mut table = transaction.open_table(TABLE)?;
                for index in group * group_len..(group + 1) * group_len {
                    table.insert(&workload.keys[index][..], &value_of(index as u64)[..])?;
                }
            }
            transaction.commit()?;
        }
        Ok(start.elapsed())
    }
}

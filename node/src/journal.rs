//! Start-up replay of the shards' journals, before any shard opens a store.
//!
//! Each shard keeps a journal (`DATA_DIR/journal/shard-NNN/`) of every write
//! its stores accepted since their last checkpoint. After a crash the vnode
//! logs may miss any of those (they are synced only at checkpoints). Replay
//! runs once, on the starting thread: every entry is applied to its store
//! again (newest-wins by version, so what a store already holds is a no-op),
//! every touched store is synced and closed, then the journal files go. It
//! runs before the shards start because the number of shards may have
//! changed since the journal was written: a journal names partitions, not
//! the shard that will own them now.
//!
//! Invariant: journal files are removed only after every store they touched
//! closed cleanly (synced, hint files written).

use std::collections::HashMap;
use std::path::Path;

use meridian_engine::{journal, Options, Store};

use crate::config::Config;
use crate::shard::{hint_directory, journal_directory, vnode_directory, HINT_STORE};

/// What start-up replay did, for the log.
#[derive(Debug, Default)]
pub struct Recovered {
    pub files: usize,
    pub entries: u64,
    pub stores: usize,
    pub torn_bytes: u64,
}

/// Replays every shard's journal under `config.storage.data_dir`.
pub fn recover(config: &Config) -> Result<Recovered, String> {
    let data_dir = &config.storage.data_dir;
    let root = data_dir.join("journal");
    let mut recovered = Recovered::default();
    let Ok(listing) = std::fs::read_dir(&root) else {
        return Ok(recovered);
    };
    let mut shards: Vec<(usize, std::path::PathBuf)> = listing
        .filter_map(|item| item.ok())
        .filter_map(|item| {
            let name = item.file_name();
            let shard = name.to_str()?.strip_prefix("shard-")?.parse().ok()?;
            Some((shard, item.path()))
        })
        .collect();
    shards.sort();
    for (shard, directory) in shards {
        debug_assert_eq!(directory, journal_directory(data_dir, shard));
        replay_shard(config, shard, &directory, &mut recovered)?;
    }
    if recovered.entries > 0 {
        tracing::info!(
            files = recovered.files,
            entries = recovered.entries,
            stores = recovered.stores,
            torn_bytes = recovered.torn_bytes,
            "journal replayed"
        );
    }
    Ok(recovered)
}

fn replay_shard(
    config: &Config,
    shard: usize,
    directory: &Path,
    recovered: &mut Recovered,
) -> Result<(), String> {
    let data_dir = &config.storage.data_dir;
    // The shards' own store options. (A record accepted under larger limits
    // than today's is refused by name: restore the limits to replay it.)
    let options = Options {
        segment_bytes: config.storage.segment_bytes,
        key_bytes_max: config.limits.key_bytes_max as usize,
        value_bytes_max: config.limits.value_bytes_max as usize,
        durability: meridian_engine::Durability::None,
        compaction_dead_fraction: config.storage.compaction_dead_fraction,
        tombstone_grace_s: config.storage.tombstone_grace_s,
        cursor_retention_bytes: config.xdc.retention_bytes,
        ..Options::default()
    };
    let mut stores: HashMap<u32, Store> = HashMap::new();
    let report = journal::replay(directory, |entry| {
        let store = match stores.entry(entry.partition) {
            std::collections::hash_map::Entry::Occupied(store) => store.into_mut(),
            std::collections::hash_map::Entry::Vacant(slot) => {
                let path = if entry.partition == HINT_STORE {
                    hint_directory(data_dir, shard)
                } else {
                    vnode_directory(data_dir, entry.partition)
                };
                slot.insert(Store::open(path, options.clone())?)
            }
        };
        store.apply(
            entry.kind,
            entry.key,
            entry.value,
            entry.version,
            entry.expires_at,
        )?;
        Ok(())
    })
    .map_err(|error| format!("journal {}: {error}", directory.display()))?;
    recovered.files += report.files;
    recovered.entries += report.entries;
    recovered.torn_bytes += report.torn_bytes;
    recovered.stores += stores.len();
    for (partition, store) in stores {
        store
            .close()
            .map_err(|error| format!("replaying the journal into vnode {partition}: {error}"))?;
    }
    journal::remove_files_before(directory, u64::MAX)
        .map_err(|error| format!("journal {}: {error}", directory.display()))?;
    Ok(())
}

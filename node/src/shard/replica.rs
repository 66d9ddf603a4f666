//! Replica operations on a shard's vnodes: what other nodes ask of this one.
//!
//! Reads return tombstones too (a coordinator must see a delete to order it
//! against other replicas' values); writes apply records with the version
//! they carry (newest wins, so every replication path may retry freely) and
//! advance this shard's clock past it. A write that arrives as a fallback
//! for a down primary also leaves a hint: a reference (primary, partition,
//! key) in the shard's hint store, delivered when the primary returns.

use bytes::{BufMut, Bytes, BytesMut};
use meridian_engine::{Applied, RecordKind, Store, Version};
use meridian_net::peer::{EntryKind, EntrySummary, PeerResponse, ReplicaRecord};
use meridian_net::ErrorCode;

use super::Shard;

/// An operation a peer asks of one vnode.
#[derive(Debug)]
pub enum PeerOp {
    Read {
        key: Bytes,
    },
    Write {
        records: Vec<ReplicaRecord>,
        hint_for: Option<u16>,
    },
    Digests {
        first_bucket: u16,
        count: u32,
    },
    BucketEntries {
        bucket: u16,
    },
}

/// A peer operation's refusal: a code and a message for an ERROR frame.
pub type PeerFailure = (ErrorCode, String);

/// Status bytes of [`PeerResponse::ReplicaWritten`].
pub const WRITE_APPLIED: u8 = 0;
pub const WRITE_STALE: u8 = 1;
pub const WRITE_REFUSED: u8 = 2;

pub fn entry_kind(kind: RecordKind) -> EntryKind {
    if kind == RecordKind::Tombstone {
        EntryKind::Tombstone
    } else {
        EntryKind::Put
    }
}

fn record_kind(kind: EntryKind) -> RecordKind {
    match kind {
        EntryKind::Put => RecordKind::Put,
        EntryKind::Tombstone => RecordKind::Tombstone,
    }
}

/// The key of a hint: primary node, partition, then the record's key.
pub fn hint_key(primary: u16, partition: u32, key: &[u8]) -> Bytes {
    let mut hint = BytesMut::with_capacity(6 + key.len());
    hint.put_u16(primary);
    hint.put_u32(partition);
    hint.put_slice(key);
    hint.freeze()
}

/// Splits a hint key into (primary, partition, key).
pub fn parse_hint_key(hint: &[u8]) -> Option<(u16, u32, &[u8])> {
    if hint.len() < 6 {
        return None;
    }
    let primary = u16::from_be_bytes([hint[0], hint[1]]);
    let partition = u32::from_be_bytes([hint[2], hint[3], hint[4], hint[5]]);
    Some((primary, partition, &hint[6..]))
}

fn storage_failure(error: meridian_engine::Error) -> PeerFailure {
    (ErrorCode::StorageError, error.to_string())
}

impl Shard {
    /// Applies a peer's op to local vnode `partition`; for a write that must
    /// be durable before its answer, also the sync epoch to wait for.
    pub fn apply_peer(
        &self,
        partition: u32,
        op: PeerOp,
    ) -> (Result<PeerResponse, PeerFailure>, Option<u64>) {
        if partition >= self.config.storage.partitions {
            return (
                Err((
                    ErrorCode::MalformedBody,
                    format!("partition {partition} out of range"),
                )),
                None,
            );
        }
        debug_assert_eq!(self.partitioner.shard_of_partition(partition), self.index);
        match op {
            PeerOp::Write { records, hint_for } => self.replica_write(partition, records, hint_for),
            read => (self.replica_read(partition, read), None),
        }
    }

    fn replica_read(&self, partition: u32, op: PeerOp) -> Result<PeerResponse, PeerFailure> {
        let stores = self.stores.borrow();
        let store = stores.get(&partition);
        match op {
            PeerOp::Read { key } => {
                let Some(store) = store else {
                    return Ok(PeerResponse::ReplicaEntry(None));
                };
                let entry = store.read(&key).map_err(storage_failure)?;
                Ok(PeerResponse::ReplicaEntry(entry.map(|entry| {
                    ReplicaRecord {
                        partition,
                        kind: entry_kind(entry.kind),
                        key,
                        value: entry.value,
                        hlc: entry.version.hlc,
                        origin: entry.version.origin,
                        expires_at: entry.expires_at,
                    }
                })))
            }
            PeerOp::Digests {
                first_bucket,
                count,
            } => {
                let digests = (0..count)
                    .map(|i| {
                        let bucket = (first_bucket as u32 + i) as u16;
                        store.map_or(0, |store| store.bucket_digest(bucket))
                    })
                    .collect();
                Ok(PeerResponse::DigestsReply { digests })
            }
            PeerOp::BucketEntries { bucket } => {
                let Some(store) = store else {
                    return Ok(PeerResponse::BucketEntriesReply {
                        entries: Vec::new(),
                    });
                };
                let entries = store
                    .bucket_entries(bucket)
                    .map_err(storage_failure)?
                    .into_iter()
                    .map(|(key, version, kind)| EntrySummary {
                        key,
                        hlc: version.hlc,
                        origin: version.origin,
                        kind: entry_kind(kind),
                    })
                    .collect();
                Ok(PeerResponse::BucketEntriesReply { entries })
            }
            PeerOp::Write { .. } => unreachable!("writes are applied by replica_write"),
        }
    }

    fn replica_write(
        &self,
        partition: u32,
        records: Vec<ReplicaRecord>,
        hint_for: Option<u16>,
    ) -> (Result<PeerResponse, PeerFailure>, Option<u64>) {
        let mut stores = self.stores.borrow_mut();
        if !stores.contains_key(&partition) {
            match Store::open(self.vnode_directory(partition), self.store_options()) {
                Ok(store) => {
                    stores.insert(partition, store);
                }
                Err(error) => return (Err(storage_failure(error)), None),
            }
        }
        let store = stores.get_mut(&partition).expect("opened above");
        let mut statuses = Vec::with_capacity(records.len());
        let mut wrote = false;
        for record in &records {
            if record.partition != partition {
                statuses.push(WRITE_REFUSED);
                continue;
            }
            self.clock.borrow_mut().observe(record.hlc);
            let version = Version::new(record.hlc, record.origin);
            let kind = record_kind(record.kind);
            let written = self.write_record(
                store,
                partition,
                kind,
                &record.key,
                &record.value,
                version,
                record.expires_at,
            );
            match written {
                Ok(receipt) if receipt.applied == Applied::Written => {
                    wrote = true;
                    statuses.push(WRITE_APPLIED);
                }
                Ok(_) => statuses.push(WRITE_STALE),
                Err(error) => {
                    tracing::warn!(partition, %error, "replica write refused");
                    statuses.push(WRITE_REFUSED);
                }
            }
        }
        drop(stores);
        if let Some(primary) = hint_for {
            for (record, &status) in records.iter().zip(&statuses) {
                if status != WRITE_REFUSED {
                    self.record_hint(primary, partition, record);
                }
            }
            wrote = true;
        }
        let wait = (wrote && self.config.storage.durability == crate::config::DurabilityMode::Sync)
            .then(|| self.request_sync());
        (Ok(PeerResponse::ReplicaWritten { statuses }), wait)
    }

    /// Remembers that `record` must reach `primary` once it is back.
    fn record_hint(&self, primary: u16, partition: u32, record: &ReplicaRecord) {
        let mut hints = self.hints.borrow_mut();
        let store = match hints.as_mut() {
            Some(store) => store,
            None => match Store::open(self.hint_directory(), self.store_options()) {
                Ok(store) => hints.insert(store),
                Err(error) => {
                    tracing::error!(%error, "hint store cannot open; hint lost (anti-entropy will repair)");
                    return;
                }
            },
        };
        let key = hint_key(primary, partition, &record.key);
        let version = Version::new(record.hlc, record.origin);
        if let Err(error) = self.write_record(
            store,
            super::HINT_STORE,
            RecordKind::Put,
            &key,
            &[],
            version,
            0,
        ) {
            tracing::error!(%error, "hint not stored (anti-entropy will repair)");
        }
    }

    /// Hints waiting for delivery: (hint key, version).
    pub fn pending_hints(&self, limit: usize) -> Vec<(Bytes, Version)> {
        let hints = self.hints.borrow();
        let Some(store) = hints.as_ref() else {
            return Vec::new();
        };
        store
            .iter()
            .filter_map(|item| item.ok())
            .take(limit)
            .map(|(key, entry)| (key, entry.version))
            .collect()
    }

    /// Forgets a delivered hint (unless a newer one replaced it meanwhile).
    pub fn hint_delivered(&self, hint: &[u8], version: Version) {
        if let Some(store) = self.hints.borrow_mut().as_mut() {
            if store.version_of(hint).map(|(current, _)| current) == Some(version) {
                // The smallest version above the delivered one: a newer hint
                // for the same key (any greater version but this one) still
                // lands after the delete.
                let successor = match version.origin.checked_add(1) {
                    Some(origin) => Version::new(version.hlc, origin),
                    None => Version::new(version.hlc + 1, 0),
                };
                let _ = self.write_record(
                    store,
                    super::HINT_STORE,
                    RecordKind::Tombstone,
                    hint,
                    &[],
                    successor,
                    0,
                );
            }
        }
    }

    /// The local record of `key` in vnode `partition`, for hint delivery,
    /// read repair and anti-entropy.
    pub fn local_record(&self, partition: u32, key: &Bytes) -> Option<ReplicaRecord> {
        let stores = self.stores.borrow();
        let entry = stores.get(&partition)?.read(key).ok()??;
        Some(ReplicaRecord {
            partition,
            kind: entry_kind(entry.kind),
            key: key.clone(),
            value: entry.value,
            hlc: entry.version.hlc,
            origin: entry.version.origin,
            expires_at: entry.expires_at,
        })
    }

    /// Partitions with a store on this shard.
    pub fn local_partitions(&self) -> Vec<u32> {
        let mut partitions: Vec<u32> = self.stores.borrow().keys().copied().collect();
        partitions.sort_unstable();
        partitions
    }
}

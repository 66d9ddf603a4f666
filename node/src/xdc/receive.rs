//! The receiving end of an XDC link: one connection whose HELLO named the
//! `xdc` role.
//!
//! The connection first proves the link (OPEN → CHALLENGE → PROVE →
//! PROVEN, see `meridian_xdc::handshake`) against this datacenter's
//! `xdc.secret`; until then any other XDC frame is refused and the
//! connection closed. Once open, each BATCH is decoded by the link's
//! [`Receiver`] and its records applied through this node — the owning
//! shard when the datacenter is one node, the coordinator (this datacenter's
//! ring and W) otherwise — keeping each record's version and origin; the
//! ACK goes back only when every record is applied.
//!
//! Invariants:
//! - no batch is applied on a connection that has not proven the secret;
//! - a batch is acknowledged only after all its records are durable here
//!   as the local durability setting says (a record this datacenter
//!   already had newer counts as applied-stale, not as a failure);
//! - an apply failure answers ERROR and leaves the batch unacknowledged:
//!   the sender rewinds and sends it again.

use std::cell::RefCell;
use std::rc::Rc;

use bytes::Bytes;
use meridian_engine::{Applied, RecordKind, Version};
use meridian_net::peer::{EntryKind, PeerRequest, PeerResponse, ReplicaRecord};
use meridian_net::xdc::{
    XdcMessage, XDC_BATCH, XDC_BATCH_ACK, XDC_CHALLENGE, XDC_DIGESTS, XDC_DIGESTS_REPLY,
    XDC_ENTRIES, XDC_ENTRIES_REPLY, XDC_FETCH, XDC_FETCHED, XDC_OPEN, XDC_PROVE, XDC_PROVEN,
};
use meridian_net::{ErrorCode, Frame, Response};
use meridian_xdc::handshake::{self, Introduction, Side, PROOF_LEN};
use meridian_xdc::{fullsync, Opened, Receiver, ReceiverConfig, XdcRecord};

use crate::cluster::coordinator::local_peer_op;
use crate::shard::PeerOp;

use crate::config::Config;
use crate::shard::{Shard, ShardCall, VnodeOp};

/// This node's introduction, with a fresh nonce.
pub fn local_introduction(config: &Config) -> Introduction {
    Introduction {
        protocol_version: meridian_net::PROTOCOL_VERSION,
        datacenter_id: config.node.datacenter_id,
        capabilities: handshake::CAPABILITIES,
        partitions: config.storage.partitions,
        nonce: handshake::fresh_nonce(),
        cluster: config.node.cluster.clone(),
        datacenter: config.node.datacenter.clone(),
    }
}

enum Phase {
    AwaitOpen,
    AwaitProof {
        opener: Introduction,
        answerer: Introduction,
    },
    Open {
        receiver: Rc<RefCell<Receiver>>,
    },
}

/// What the connection does with an XDC frame.
#[allow(missing_debug_implementations)] // holds a glommio task
pub enum Step {
    /// Answer now; close after it when `close` is set.
    Answer {
        answer: Result<XdcMessage, Response>,
        close: bool,
    },
    /// A batch being applied; answer when it finishes.
    Applying(glommio::Task<Result<XdcMessage, Response>>),
}

/// One inbound link's state.
pub struct Session {
    phase: Phase,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self.phase {
            Phase::AwaitOpen => "Session(await open)",
            Phase::AwaitProof { .. } => "Session(await proof)",
            Phase::Open { .. } => "Session(open)",
        })
    }
}

fn refuse(code: ErrorCode, message: impl Into<String>) -> Step {
    Step::Answer {
        answer: Err(Response::Error {
            code,
            message: message.into(),
        }),
        close: true,
    }
}

impl Default for Session {
    fn default() -> Session {
        Session {
            phase: Phase::AwaitOpen,
        }
    }
}

impl Session {
    pub fn handle(&mut self, shard: &Rc<Shard>, frame: Frame) -> Step {
        let secret = shard.config.xdc.secret.as_bytes();
        match (&self.phase, frame.opcode) {
            (Phase::AwaitOpen, XDC_OPEN) => {
                let opener = match Introduction::decode(&frame.body) {
                    Ok(opener) => opener,
                    Err(error) => {
                        return refuse(ErrorCode::MalformedBody, format!("XDC_OPEN: {error}"))
                    }
                };
                let answerer = local_introduction(&shard.config);
                if let Some(reason) = answerer.refusal(&opener) {
                    return refuse(
                        ErrorCode::ClusterMismatch,
                        format!("xdc link refused: {reason}"),
                    );
                }
                let proof = handshake::proof(secret, Side::Answerer, &opener, &answerer);
                let mut body = proof.to_vec();
                body.extend_from_slice(&answerer.encode());
                self.phase = Phase::AwaitProof { opener, answerer };
                Step::Answer {
                    answer: Ok(XdcMessage::new(XDC_CHALLENGE, body)),
                    close: false,
                }
            }
            (Phase::AwaitProof { opener, answerer }, XDC_PROVE) => {
                if frame.body.len() != PROOF_LEN
                    || !handshake::verify(secret, Side::Opener, opener, answerer, &frame.body)
                {
                    tracing::warn!(datacenter = %opener.datacenter, "xdc link refused: wrong secret");
                    return refuse(
                        ErrorCode::AuthFailed,
                        format!(
                            "xdc link refused: datacenter {:?} did not prove this datacenter's xdc.secret (wrong secret)",
                            opener.datacenter
                        ),
                    );
                }
                let link_id = handshake::link_id(opener.datacenter_id, answerer.datacenter_id);
                let mut config = ReceiverConfig::new(link_id);
                config.max_clock_skew_ms = u64::from(shard.config.xdc.max_clock_skew_ms);
                tracing::info!(datacenter = %opener.datacenter, link_id, "xdc link opened");
                self.phase = Phase::Open {
                    receiver: Rc::new(RefCell::new(Receiver::new(config))),
                };
                Step::Answer {
                    answer: Ok(XdcMessage::new(XDC_PROVEN, Bytes::new())),
                    close: false,
                }
            }
            (Phase::Open { receiver }, XDC_BATCH) => {
                let task = glommio::spawn_local(apply_batch(
                    Rc::clone(shard),
                    Rc::clone(receiver),
                    frame.body,
                ));
                Step::Applying(task)
            }
            (Phase::Open { receiver }, XDC_DIGESTS | XDC_ENTRIES | XDC_FETCH) => {
                let link_id = receiver.borrow().link_id();
                Step::Applying(glommio::spawn_local(serve_fullsync(
                    Rc::clone(shard),
                    frame,
                    link_id,
                )))
            }
            (Phase::Open { .. }, opcode) => refuse(
                ErrorCode::UnknownOpcode,
                format!("{opcode} is not an XDC request this node serves on an open link"),
            ),
            (_, opcode) => refuse(
                ErrorCode::AuthFailed,
                format!("{opcode} before the xdc link was proven (OPEN, then PROVE, come first)"),
            ),
        }
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

async fn apply_batch(
    shard: Rc<Shard>,
    receiver: Rc<RefCell<Receiver>>,
    body: Bytes,
) -> Result<XdcMessage, Response> {
    let opened = receiver
        .borrow_mut()
        .open(&body)
        .map_err(|error| Response::Error {
            code: ErrorCode::MalformedBody,
            message: format!("xdc batch refused: {error}"),
        })?;
    let batch = match opened {
        Opened::Duplicate(received) => {
            return Ok(XdcMessage::new(XDC_BATCH_ACK, received.ack_body.to_vec()));
        }
        Opened::Fresh(batch) => batch,
    };
    let outcomes = apply_records(&shard, &batch.records).await?;
    let received = receiver.borrow_mut().close(&batch, &outcomes, now_ms());
    let counters = &shard.counters;
    counters
        .xdc_records_applied
        .set(counters.xdc_records_applied.get() + u64::from(received.ack.applied));
    counters
        .xdc_records_stale
        .set(counters.xdc_records_stale.get() + u64::from(received.ack.stale));
    counters
        .xdc_conflicts
        .set(counters.xdc_conflicts.get() + u64::from(received.conflicts));
    if let Some(skew) = received.clock_skew {
        counters
            .xdc_clock_skew_records
            .set(counters.xdc_clock_skew_records.get() + u64::from(skew.records));
        tracing::warn!(
            records = skew.records,
            ahead_ms = skew.ahead_ms_max,
            origin = skew.origin,
            "xdc: received versions ahead of the local clock by more than xdc.max_clock_skew_ms"
        );
    }
    Ok(XdcMessage::new(XDC_BATCH_ACK, received.ack_body.to_vec()))
}

/// Answers a fullsync request from this node's vnodes (or, in a cluster,
/// from a live primary of each).
async fn serve_fullsync(
    shard: Rc<Shard>,
    frame: Frame,
    link_id: u32,
) -> Result<XdcMessage, Response> {
    let malformed = |error: meridian_xdc::Error| Response::Error {
        code: ErrorCode::MalformedBody,
        message: format!("{}: {error}", frame.opcode),
    };
    let failed = |message: String| Response::Error {
        code: ErrorCode::StorageError,
        message,
    };
    let partitions = shard.config.storage.partitions;
    let buckets_per_partition = fullsync::BUCKETS / partitions;
    match frame.opcode {
        XDC_DIGESTS => {
            let (first, count) =
                fullsync::decode_digests_request(&frame.body).map_err(malformed)?;
            let mut digests = Vec::with_capacity(count as usize);
            let mut bucket = u32::from(first);
            let end = u32::from(first) + count;
            while bucket < end {
                let partition = bucket / buckets_per_partition;
                let partition_end = ((partition + 1) * buckets_per_partition).min(end);
                let op = PeerOp::Digests {
                    first_bucket: bucket as u16,
                    count: partition_end - bucket,
                };
                match vnode_call(&shard, partition, op).await.map_err(failed)? {
                    PeerResponse::DigestsReply { digests: part } => digests.extend(part),
                    other => return Err(failed(format!("digests answered with {other:?}"))),
                }
                bucket = partition_end;
            }
            Ok(XdcMessage::new(
                XDC_DIGESTS_REPLY,
                fullsync::encode_digests(&digests),
            ))
        }
        XDC_ENTRIES => {
            let (bucket, asked) =
                fullsync::decode_entries_request(&frame.body).map_err(malformed)?;
            let partition = u32::from(bucket) / buckets_per_partition;
            let entries = match vnode_call(&shard, partition, PeerOp::BucketEntries { bucket })
                .await
                .map_err(failed)?
            {
                PeerResponse::BucketEntriesReply { entries } => entries,
                other => return Err(failed(format!("entries answered with {other:?}"))),
            };
            let summaries: Vec<fullsync::Summary> = entries
                .into_iter()
                .map(|entry| fullsync::Summary {
                    key: entry.key,
                    version: Version::new(entry.hlc, entry.origin),
                    kind: match entry.kind {
                        EntryKind::Put => RecordKind::Put,
                        _ => RecordKind::Tombstone,
                    },
                })
                .collect();
            let (missing, differing) = fullsync::answer_entries(&asked, &summaries);
            Ok(XdcMessage::new(
                XDC_ENTRIES_REPLY,
                fullsync::encode_entries_reply(&missing, &differing),
            ))
        }
        _ => {
            let keys = fullsync::decode_fetch(&frame.body).map_err(malformed)?;
            let mut records = Vec::with_capacity(keys.len());
            for key in keys {
                let partition = shard.partitioner.partition_of(&key);
                match vnode_call(&shard, partition, PeerOp::Read { key })
                    .await
                    .map_err(failed)?
                {
                    PeerResponse::ReplicaEntry(Some(record)) => records.push(xdc_record(record)),
                    PeerResponse::ReplicaEntry(None) => {}
                    other => return Err(failed(format!("read answered with {other:?}"))),
                }
            }
            let body = meridian_xdc::format::encode_batch(
                link_id,
                0,
                &records,
                meridian_xdc::Compression::Lz4,
                &meridian_xdc::BatchLimits::default(),
            )
            .map_err(|error| failed(format!("fetched records not encodable: {error}")))?;
            Ok(XdcMessage::new(XDC_FETCHED, body))
        }
    }
}

/// A replica's record as XDC carries it.
pub fn xdc_record(record: ReplicaRecord) -> XdcRecord {
    XdcRecord {
        kind: match record.kind {
            EntryKind::Put => RecordKind::Put,
            _ => RecordKind::Tombstone,
        },
        partition: record.partition,
        key: record.key,
        value: record.value,
        version: Version::new(record.hlc, record.origin),
        expires_at: record.expires_at,
    }
}

/// Runs a read-only vnode op on this node's replica of `partition`, or on
/// its first live primary when this node holds none.
pub async fn vnode_call(
    shard: &Rc<Shard>,
    partition: u32,
    op: PeerOp,
) -> Result<PeerResponse, String> {
    let Some(cluster) = shard.cluster.as_ref() else {
        return local_peer_op(shard, partition, op).await;
    };
    if cluster.is_primary(partition) {
        return local_peer_op(shard, partition, op).await;
    }
    let primary = cluster
        .view()
        .ring
        .primaries(partition)
        .into_iter()
        .find(|&node| cluster.is_live(node))
        .ok_or_else(|| format!("no live primary of partition {partition}"))?;
    let address = cluster
        .address(primary)
        .ok_or_else(|| format!("node {primary} has no address"))?;
    let request = match op {
        PeerOp::Digests {
            first_bucket,
            count,
        } => PeerRequest::Digests {
            partition,
            first_bucket,
            count,
        },
        PeerOp::BucketEntries { bucket } => PeerRequest::BucketEntries { partition, bucket },
        PeerOp::Read { key } => PeerRequest::ReplicaRead { partition, key },
        PeerOp::Write { .. } => return Err("writes go through the coordinator".to_string()),
    };
    cluster
        .links
        .call(primary, &address, &request, cluster.request_timeout)
        .await
        .map_err(|e| e.to_string())
}

/// Applies every record (concurrently), in the order of `records`.
pub async fn apply_records(
    shard: &Rc<Shard>,
    records: &[XdcRecord],
) -> Result<Vec<Applied>, Response> {
    let mut outcomes = vec![Applied::Written; records.len()];
    let (sender, results) = flume::unbounded();
    let mut spawned = 0;
    let mut wait_epoch = None;
    for (index, record) in records.iter().enumerate() {
        shard.observe_remote(record.version.hlc);
        if shard.cluster.is_none() {
            // Alone: this shard's own records are applied inline (one
            // group-commit wait for the whole batch), no task per record.
            let partition = shard.partitioner.partition_of(&record.key);
            if shard.partitioner.shard_of_partition(partition) == shard.index {
                let (response, epoch) = shard.apply(partition, vnode_op(record.clone())?);
                wait_epoch = epoch.or(wait_epoch);
                outcomes[index] =
                    outcome_of(response, record.version).map_err(|message| Response::Error {
                        code: ErrorCode::StorageError,
                        message: format!("xdc record {index} not applied: {message}"),
                    })?;
                continue;
            }
        }
        spawned += 1;
        let (shard, record, sender) = (Rc::clone(shard), record.clone(), sender.clone());
        glommio::spawn_local(async move {
            let _ = sender.send((index, apply_record(&shard, record).await));
        })
        .detach();
    }
    drop(sender);
    if let Some(epoch) = wait_epoch {
        shard
            .wait_synced(epoch)
            .await
            .map_err(|reason| Response::Error {
                code: ErrorCode::StorageError,
                message: format!("xdc batch not durable: {reason}"),
            })?;
    }
    let mut answered = 0;
    while let Ok((index, outcome)) = results.recv_async().await {
        outcomes[index] = outcome.map_err(|message| Response::Error {
            code: ErrorCode::StorageError,
            message: format!("xdc record {index} not applied: {message}"),
        })?;
        answered += 1;
    }
    if answered != spawned {
        return Err(Response::Error {
            code: ErrorCode::Internal,
            message: "an xdc apply task stopped".to_string(),
        });
    }
    Ok(outcomes)
}

/// Applies one record here, keeping its version: through the coordinator
/// in a cluster, on the owning shard alone.
async fn apply_record(shard: &Rc<Shard>, record: XdcRecord) -> Result<Applied, String> {
    let version = record.version;
    if !matches!(record.kind, RecordKind::Put | RecordKind::Tombstone) {
        return Err(format!("record kind {:?} is never shipped", record.kind));
    }
    if shard.cluster.is_some() {
        let replica = ReplicaRecord {
            partition: shard.partitioner.partition_of(&record.key),
            kind: match record.kind {
                RecordKind::Put => EntryKind::Put,
                _ => EntryKind::Tombstone,
            },
            key: record.key,
            value: record.value,
            hlc: version.hlc,
            origin: version.origin,
            expires_at: record.expires_at,
        };
        let (partition, key) = (replica.partition, replica.key.clone());
        return match crate::cluster::coordinator::write_record(shard, replica, None).await {
            Ok(true) => Ok(Applied::Written),
            // The replicas do not say which version they held: read it from
            // one (so a write that lost to another datacenter's counts as a
            // conflict); unreadable, report the record's own version, which
            // counts as stale but not as a conflict.
            Ok(false) => {
                let current = match vnode_call(shard, partition, PeerOp::Read { key }).await {
                    Ok(PeerResponse::ReplicaEntry(Some(held))) => {
                        Version::new(held.hlc, held.origin)
                    }
                    _ => version,
                };
                Ok(Applied::Stale { current })
            }
            Err(refusal) => Err(describe(refusal)),
        };
    }
    let partition = shard.partitioner.partition_of(&record.key);
    let op = vnode_op(record).map_err(describe)?;
    let owner = shard.partitioner.shard_of_partition(partition);
    let response = if owner == shard.index {
        let (response, epoch) = shard.apply(partition, op);
        if let Some(epoch) = epoch {
            shard
                .wait_synced(epoch)
                .await
                .map_err(|reason| format!("not durable: {reason}"))?;
        }
        response
    } else {
        let (reply, answer) = flume::bounded(1);
        shard.inboxes[owner]
            .send_async(ShardCall::Op {
                partition,
                op,
                reply,
            })
            .await
            .map_err(|_| "the owning shard stopped".to_string())?;
        answer
            .recv_async()
            .await
            .map_err(|_| "the owning shard stopped".to_string())?
    };
    outcome_of(response, version)
}

/// The vnode op that writes `record` with its own version.
fn vnode_op(record: XdcRecord) -> Result<VnodeOp, Response> {
    match record.kind {
        RecordKind::Put => Ok(VnodeOp::Put {
            key: record.key,
            value: record.value,
            version: record.version,
            expires_at: record.expires_at,
        }),
        RecordKind::Tombstone => Ok(VnodeOp::Delete {
            key: record.key,
            version: record.version,
        }),
        other => Err(Response::Error {
            code: ErrorCode::MalformedBody,
            message: format!("record kind {other:?} is never shipped"),
        }),
    }
}

/// Written when the store kept `version`, stale when it held newer.
fn outcome_of(response: Response, version: Version) -> Result<Applied, String> {
    match response {
        Response::Written { version: stored } => {
            let stored = Version::new(stored.hlc, stored.origin);
            Ok(if stored == version {
                Applied::Written
            } else {
                Applied::Stale { current: stored }
            })
        }
        other => Err(describe(other)),
    }
}

fn describe(response: Response) -> String {
    match response {
        Response::Error { code, message } => format!("{code}: {message}"),
        other => format!("unexpected answer {other:?}"),
    }
}

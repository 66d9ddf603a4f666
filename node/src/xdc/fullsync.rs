//! Fullsync from the initiating side: make the remote datacenter hold
//! everything this node ships, shipping only what differs.
//!
//! Run by `xdc fullsync NAME` (and by a link whose cursor fell past the
//! log's retention), on a connection of its own, proven like the link's.
//! For each partition this node ships: this node's bucket digests against
//! the remote's, then, for each bucket that differs, the (key, version)
//! lists of both sides; records newer here (or only here) are read and
//! shipped as BATCHes, and — with `both` — records newer there are
//! fetched and applied here through a shard's coordinator.
//!
//! Invariants:
//! - only keys whose versions differ cross the link, never whole buckets;
//! - a batch counts as shipped only once the remote acknowledged it;
//! - progress (buckets compared, records and bytes each way) is visible in
//!   `xdc status` while it runs.

use std::rc::Rc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use meridian_net::peer::PeerResponse;
use meridian_net::xdc::{
    XdcMessage, XDC_BATCH, XDC_BATCH_ACK, XDC_DIGESTS, XDC_DIGESTS_REPLY, XDC_ENTRIES,
    XDC_ENTRIES_REPLY, XDC_FETCH, XDC_FETCHED,
};
use meridian_net::{Frame, Limits, Opcode, Response};
use meridian_xdc::fullsync::{self, Summary};
use meridian_xdc::{BatchLimits, Compression, XdcRecord};

use super::ship::{open_link, Link, OpenLink};
use super::Executor;
use crate::cluster::buckets_of_partition;
use crate::shard::{PeerOp, ShardCall};

/// Records per BATCH shipped by fullsync.
const PUSH_BATCH: usize = 512;
/// Keys per FETCH.
const FETCH_BATCH: usize = 512;
/// Sequence numbers of fullsync batches live in their own epoch (the top
/// one), apart from every shipper's.
const FULLSYNC_EPOCH: u64 = u32::MAX as u64;

/// Progress and outcome of one fullsync, shown in `xdc status`.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct FullsyncProgress {
    pub running: bool,
    pub both_ways: bool,
    pub partitions_total: u64,
    pub partitions_done: u64,
    pub buckets_compared: u64,
    pub buckets_differing: u64,
    pub records_pushed: u64,
    pub records_pulled: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub elapsed_ms: u64,
    pub eta_ms: Option<u64>,
    pub error: Option<String>,
}

struct Session {
    open: OpenLink,
    limits: Limits,
    next_id: u32,
    chunk: Vec<u8>,
    sequence: u64,
}

impl Session {
    /// One request, its answer (an ERROR answer becomes `Err`).
    async fn call(
        &mut self,
        opcode: Opcode,
        body: impl Into<Bytes>,
        link: &Link,
    ) -> Result<Frame, String> {
        let mut out = BytesMut::new();
        let request_id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1).max(16);
        XdcMessage::new(opcode, body)
            .encode(request_id, &self.limits, &mut out)
            .map_err(|e| e.to_string())?;
        link.fullsync.borrow_mut().bytes_sent += out.len() as u64;
        self.open
            .stream
            .write_all(&out)
            .await
            .map_err(|e| e.to_string())?;
        loop {
            if let Some(frame) = self
                .open
                .decoder
                .decode(&mut self.open.input)
                .map_err(|e| e.to_string())?
            {
                link.fullsync.borrow_mut().bytes_received += 16 + frame.body.len() as u64;
                if frame.opcode == Opcode::ERROR {
                    return Err(match frame.response(&self.limits) {
                        Ok(Response::Error { code, message }) => format!("{code}: {message}"),
                        _ => "an undecodable ERROR".to_string(),
                    });
                }
                if frame.request_id != request_id {
                    return Err(format!(
                        "answer to request {} while waiting for {request_id}",
                        frame.request_id
                    ));
                }
                return Ok(frame);
            }
            let read = self
                .open
                .stream
                .read(&mut self.chunk)
                .await
                .map_err(|e| e.to_string())?;
            if read == 0 {
                return Err("the remote closed the connection".to_string());
            }
            self.open.input.extend_from_slice(&self.chunk[..read]);
        }
    }

    async fn push(&mut self, records: &[XdcRecord], link: &Link) -> Result<(), String> {
        let sequence = (FULLSYNC_EPOCH << 32) | self.sequence;
        self.sequence += 1;
        let body = meridian_xdc::format::encode_batch(
            self.open.link_id,
            sequence,
            records,
            Compression::Lz4,
            &BatchLimits::default(),
        )
        .map_err(|e| e.to_string())?;
        let answer = self.call(XDC_BATCH, body, link).await?;
        if answer.opcode != XDC_BATCH_ACK {
            return Err(format!(
                "a fullsync batch was answered with {}",
                answer.opcode
            ));
        }
        link.fullsync.borrow_mut().records_pushed += records.len() as u64;
        Ok(())
    }
}

async fn local_op(executor: &Executor, partition: u32, op: PeerOp) -> Result<PeerResponse, String> {
    executor
        .ask_owner(partition, |reply| ShardCall::Peer {
            partition,
            op,
            reply,
        })
        .await?
        .map_err(|(code, message)| format!("{code}: {message}"))
}

async fn local_entries(
    executor: &Executor,
    partition: u32,
    bucket: u16,
) -> Result<Vec<Summary>, String> {
    match local_op(executor, partition, PeerOp::BucketEntries { bucket }).await? {
        PeerResponse::BucketEntriesReply { entries } => Ok(entries
            .into_iter()
            .map(|entry| Summary {
                key: entry.key,
                version: meridian_engine::Version::new(entry.hlc, entry.origin),
                kind: match entry.kind {
                    meridian_net::peer::EntryKind::Put => meridian_engine::RecordKind::Put,
                    _ => meridian_engine::RecordKind::Tombstone,
                },
            })
            .collect()),
        other => Err(format!("bucket entries answered with {other:?}")),
    }
}

/// Runs one fullsync of `link`; progress goes to `link.fullsync`.
pub async fn run(executor: Rc<Executor>, link: Rc<Link>, both_ways: bool) -> Result<(), String> {
    let started = Instant::now();
    *link.fullsync.borrow_mut() = FullsyncProgress {
        running: true,
        both_ways,
        ..FullsyncProgress::default()
    };
    let outcome = run_inner(&executor, &link, both_ways, started).await;
    let mut progress = link.fullsync.borrow_mut();
    progress.running = false;
    progress.elapsed_ms = started.elapsed().as_millis() as u64;
    progress.eta_ms = None;
    progress.error = outcome.as_ref().err().cloned();
    if outcome.is_ok() {
        link.status.borrow_mut().needs_fullsync = false;
    }
    match &outcome {
        Ok(()) => {
            tracing::info!(link = %link.spec.borrow().name, pushed = progress.records_pushed, pulled = progress.records_pulled, "xdc fullsync done")
        }
        Err(error) => {
            tracing::error!(link = %link.spec.borrow().name, %error, "xdc fullsync failed")
        }
    }
    outcome
}

async fn run_inner(
    executor: &Rc<Executor>,
    link: &Rc<Link>,
    both_ways: bool,
    started: Instant,
) -> Result<(), String> {
    let spec = link.spec.borrow().clone();
    let open = open_link(executor, &spec).await?;
    let mut session = Session {
        limits: open_limits(executor),
        open,
        next_id: 16,
        chunk: vec![0u8; 64 * 1024],
        sequence: 0,
    };
    let partitions = executor.shipped_partitions().await?;
    let ring_size = executor.config.storage.partitions;
    link.fullsync.borrow_mut().partitions_total = partitions.len() as u64;
    for (done, &partition) in partitions.iter().enumerate() {
        let (first, count) = buckets_of_partition(partition, ring_size);
        let ours = match local_op(
            executor,
            partition,
            PeerOp::Digests {
                first_bucket: first,
                count,
            },
        )
        .await?
        {
            PeerResponse::DigestsReply { digests } => digests,
            other => return Err(format!("digests answered with {other:?}")),
        };
        let answer = session
            .call(
                XDC_DIGESTS,
                fullsync::encode_digests_request(first, count),
                link,
            )
            .await?;
        if answer.opcode != XDC_DIGESTS_REPLY {
            return Err(format!("digests answered with {}", answer.opcode));
        }
        let theirs = fullsync::decode_digests(&answer.body).map_err(|e| e.to_string())?;
        if theirs.len() != ours.len() {
            return Err(format!(
                "{} digests asked, {} received",
                ours.len(),
                theirs.len()
            ));
        }
        let mut push = Vec::new();
        let mut pull = Vec::new();
        for (offset, (mine, remote)) in ours.iter().zip(&theirs).enumerate() {
            link.fullsync.borrow_mut().buckets_compared += 1;
            if mine == remote {
                continue;
            }
            link.fullsync.borrow_mut().buckets_differing += 1;
            let bucket = first + offset as u16;
            let local = local_entries(executor, partition, bucket).await?;
            let prints: Vec<u64> = local.iter().map(fullsync::fingerprint).collect();
            let answer = session
                .call(
                    XDC_ENTRIES,
                    fullsync::encode_entries_request(bucket, &prints),
                    link,
                )
                .await?;
            if answer.opcode != XDC_ENTRIES_REPLY {
                return Err(format!("entries answered with {}", answer.opcode));
            }
            let (missing, differing) = fullsync::decode_entries_reply(&answer.body, prints.len())
                .map_err(|e| e.to_string())?;
            let diff = fullsync::diff_fingerprinted(&local, &missing, &differing);
            push.extend(diff.push);
            pull.extend(diff.pull);
        }
        for keys in push.chunks(PUSH_BATCH) {
            let records = read_records(executor, partition, keys.to_vec()).await?;
            if !records.is_empty() {
                session.push(&records, link).await?;
            }
        }
        if both_ways {
            for keys in pull.chunks(FETCH_BATCH) {
                let answer = session
                    .call(XDC_FETCH, fullsync::encode_fetch(keys), link)
                    .await?;
                if answer.opcode != XDC_FETCHED {
                    return Err(format!("fetch answered with {}", answer.opcode));
                }
                let batch =
                    meridian_xdc::format::decode_batch(&answer.body, &BatchLimits::default())
                        .map_err(|e| e.to_string())?;
                let count = batch.records.len() as u64;
                apply_here(executor, batch.records).await?;
                link.fullsync.borrow_mut().records_pulled += count;
            }
        }
        let mut progress = link.fullsync.borrow_mut();
        progress.partitions_done = done as u64 + 1;
        let elapsed = started.elapsed().as_millis() as u64;
        progress.elapsed_ms = elapsed;
        let left = partitions.len() as u64 - progress.partitions_done;
        progress.eta_ms = Some(elapsed / progress.partitions_done * left);
    }
    Ok(())
}

async fn read_records(
    executor: &Executor,
    partition: u32,
    keys: Vec<Bytes>,
) -> Result<Vec<XdcRecord>, String> {
    executor
        .ask_owner(partition, |reply| ShardCall::ReadRecords {
            partition,
            keys,
            reply,
        })
        .await?
}

fn open_limits(executor: &Executor) -> Limits {
    Limits {
        frame_bytes_max: executor.config.limits.frame_bytes_max,
        key_bytes_max: executor.config.limits.key_bytes_max,
        value_bytes_max: executor.config.limits.value_bytes_max,
        ..Limits::default()
    }
}

/// Applies fetched records here, through shard 0's coordinator.
async fn apply_here(executor: &Executor, records: Vec<XdcRecord>) -> Result<(), String> {
    if records.is_empty() {
        return Ok(());
    }
    executor
        .ask(0, |reply| ShardCall::XdcApply { records, reply })
        .await?
        .map(|_| ())
}

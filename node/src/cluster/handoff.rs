//! Handoff: a node that a planned join or leave makes a new replica of a
//! partition pulls the partition's records before ownership flips.
//!
//! Each shard looks after the partitions it holds: while the ring has a
//! plan (transfers pending), every partition for which this node is a
//! primary in the target ring but not in the current one is pulled from
//! every live current primary, bucket by bucket: digests are compared in
//! pages, and for each bucket that differs the records the source holds
//! newer are read and written here (tombstones included), throttled to
//! `cluster.handoff_records_per_second`. Pulling from every current primary,
//! not one, gathers every acknowledged write, since each is held by W of
//! them. A partition pulled is reported to the claimant (MEMBERSHIP
//! HANDOFF_READY, again every round, so a lost report or a new claimant
//! does no harm), which flips ownership once every report is in.
//!
//! A pull starts only after every live peer reported (in its heartbeats) the
//! epoch at which this shard first saw the plan, plus one request timeout:
//! from then on every coordinator writes to the target replicas as well, and
//! writes coordinated with an older ring have finished, so the pull misses
//! nothing that a later write does not bring itself.
//!
//! Invariants:
//! - a partition is reported only after a complete pass over all of its
//!   buckets against every live current primary, under the same plan;
//! - a change of plan forgets every partition pulled under the old one
//!   (pulling again is cheap: equal buckets are skipped by digest);
//! - records move at most `handoff_records_per_second` per shard.

use std::collections::{BTreeSet, HashMap};
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use meridian_net::peer::{
    EntrySummary, Membership, MembershipCommand, PeerRequest, PeerResponse, ReplicaRecord,
};

use super::buckets_of_partition;
use super::coordinator::local_peer_op;
use crate::shard::{PeerOp, Shard};

/// Bucket digests asked for in one message (under the codec's batch limit).
const DIGEST_PAGE: u32 = 1024;
/// Records read from a source at once.
const READS_IN_FLIGHT: usize = 32;

/// One shard's progress on the plan it holds.
#[derive(Debug, Default)]
struct HandoffState {
    plan: u64,
    /// The epoch at which this shard first saw the plan.
    plan_epoch: u64,
    /// When every live peer was first seen at `plan_epoch` or later.
    peers_caught_up_at: Option<Instant>,
    pulled: BTreeSet<u32>,
}

pub async fn run_handoff(shard: Rc<Shard>) {
    let Some(cluster) = shard.cluster.as_ref() else {
        return;
    };
    let interval = Duration::from_millis(shard.config.cluster.heartbeat_interval_ms as u64);
    let mut state = HandoffState::default();
    loop {
        glommio::timer::sleep(interval).await;
        let view = cluster.view();
        if view.plan != state.plan {
            state = HandoffState {
                plan: view.plan,
                plan_epoch: view.ring.epoch(),
                ..HandoffState::default()
            };
        }
        if view.plan == 0 {
            continue;
        }
        if state.peers_caught_up_at.is_none() && cluster.live_peers_reached(state.plan_epoch) {
            state.peers_caught_up_at = Some(Instant::now());
        }
        let Some(caught_up) = state.peers_caught_up_at else {
            continue;
        };
        if caught_up.elapsed() < cluster.request_timeout {
            continue;
        }
        let wanted: Vec<u32> = view
            .handoffs_needed()
            .into_iter()
            .filter(|&(node, partition)| {
                node == cluster.self_id
                    && shard.partitioner.shard_of_partition(partition) == shard.index
            })
            .map(|(_, partition)| partition)
            .collect();
        if wanted.is_empty() {
            continue;
        }
        for &partition in &wanted {
            if state.pulled.contains(&partition) {
                continue;
            }
            match pull_partition(&shard, partition).await {
                Ok(records) => {
                    tracing::info!(partition, records, "handoff: partition pulled");
                    state.pulled.insert(partition);
                }
                Err(error) => {
                    tracing::warn!(partition, %error, "handoff: pull failed, retrying");
                }
            }
            if cluster.view().plan != state.plan {
                break;
            }
        }
        if !state.pulled.is_empty() {
            report(&shard, state.plan, &state.pulled).await;
        }
    }
}

/// Tells the claimant which partitions this shard holds for `plan`.
async fn report(shard: &Rc<Shard>, plan: u64, pulled: &BTreeSet<u32>) {
    let Some(cluster) = shard.cluster.as_ref() else {
        return;
    };
    let Some(claimant) = cluster.claimant() else {
        return;
    };
    let request = Membership {
        command: MembershipCommand::HandoffReady,
        forwarded: false,
        node_id: cluster.self_id,
        plan,
        address: Bytes::new(),
        rack: Bytes::new(),
        partitions: pulled.iter().copied().collect(),
    };
    let outcome = if claimant == cluster.self_id {
        super::membership::serve(Rc::clone(shard), request)
            .await
            .map(|_| ())
            .map_err(|(code, message)| format!("{code}: {message}"))
    } else {
        let Some(address) = cluster.address(claimant) else {
            return;
        };
        cluster
            .links
            .call(
                claimant,
                &address,
                &PeerRequest::Membership(request),
                cluster.request_timeout,
            )
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    };
    if let Err(error) = outcome {
        tracing::debug!(claimant, %error, "handoff report not delivered");
    }
}

/// Pulls `partition` from every live current primary; returns the records
/// written here.
async fn pull_partition(shard: &Rc<Shard>, partition: u32) -> Result<usize, String> {
    let cluster = shard.cluster.as_ref().ok_or("not clustered")?;
    let sources: Vec<u16> = cluster
        .view()
        .ring
        .primaries(partition)
        .into_iter()
        .filter(|&node| node != cluster.self_id && cluster.is_live(node))
        .collect();
    if sources.is_empty() {
        return Err(format!(
            "no live primary of partition {partition} to pull from"
        ));
    }
    let mut records = 0;
    for source in sources {
        records += pull_from(shard, partition, source).await?;
    }
    Ok(records)
}

/// One complete pass over the buckets of `partition` against `source`.
async fn pull_from(shard: &Rc<Shard>, partition: u32, source: u16) -> Result<usize, String> {
    let cluster = shard.cluster.as_ref().ok_or("not clustered")?;
    let address = cluster
        .address(source)
        .ok_or_else(|| format!("node {source} has no address"))?;
    let call = |request: PeerRequest| {
        let address = Rc::clone(&address);
        async move {
            cluster
                .links
                .call(source, &address, &request, cluster.request_timeout)
                .await
                .map_err(|e| e.to_string())
        }
    };
    let (first_bucket, count) = buckets_of_partition(partition, shard.config.storage.partitions);
    let mut pulled = 0;
    let mut page_start = 0u32;
    while page_start < count {
        let page = (count - page_start).min(DIGEST_PAGE);
        let first = (first_bucket as u32 + page_start) as u16;
        let digests = PeerRequest::Digests {
            partition,
            first_bucket: first,
            count: page,
        };
        let theirs = match call(digests).await? {
            PeerResponse::DigestsReply { digests } => digests,
            other => return Err(format!("unexpected answer {other:?}")),
        };
        let local = PeerOp::Digests {
            first_bucket: first,
            count: page,
        };
        let ours = match local_peer_op(shard, partition, local).await? {
            PeerResponse::DigestsReply { digests } => digests,
            other => return Err(format!("unexpected local answer {other:?}")),
        };
        for index in 0..page as usize {
            if ours.get(index) != theirs.get(index) {
                let bucket = (first as usize + index) as u16;
                pulled += pull_bucket(shard, partition, bucket, &call).await?;
            }
        }
        page_start += page;
    }
    Ok(pulled)
}

fn version(entry: &EntrySummary) -> (u64, u32) {
    (entry.hlc, entry.origin)
}

/// Copies the records of one bucket that `source` holds newer.
async fn pull_bucket<F, Fut>(
    shard: &Rc<Shard>,
    partition: u32,
    bucket: u16,
    call: &F,
) -> Result<usize, String>
where
    F: Fn(PeerRequest) -> Fut,
    Fut: std::future::Future<Output = Result<PeerResponse, String>>,
{
    let theirs = match call(PeerRequest::BucketEntries { partition, bucket }).await? {
        PeerResponse::BucketEntriesReply { entries } => entries,
        other => return Err(format!("unexpected answer {other:?}")),
    };
    let ours = match local_peer_op(shard, partition, PeerOp::BucketEntries { bucket }).await? {
        PeerResponse::BucketEntriesReply { entries } => entries,
        other => return Err(format!("unexpected local answer {other:?}")),
    };
    let our_versions: HashMap<&[u8], (u64, u32)> =
        ours.iter().map(|e| (&e.key[..], version(e))).collect();
    let missing: Vec<Bytes> = theirs
        .iter()
        .filter(|entry| {
            our_versions
                .get(&entry.key[..])
                .is_none_or(|&ours| ours < version(entry))
        })
        .map(|entry| entry.key.clone())
        .collect();
    let rate = f64::from(shard.config.cluster.handoff_records_per_second);
    let mut written = 0;
    for keys in missing.chunks(READS_IN_FLIGHT) {
        let started = Instant::now();
        let reads = keys.iter().map(|key| {
            call(PeerRequest::ReplicaRead {
                partition,
                key: key.clone(),
            })
        });
        let mut records: Vec<ReplicaRecord> = Vec::with_capacity(keys.len());
        for read in join_all(reads).await {
            if let PeerResponse::ReplicaEntry(Some(record)) = read? {
                records.push(record);
            }
        }
        let count = records.len();
        if count > 0 {
            let write = PeerOp::Write {
                records,
                hint_for: None,
            };
            local_peer_op(shard, partition, write).await?;
            written += count;
            crate::metrics::ShardCounters::add(&shard.counters.handoff_records, count as u64);
        }
        // Throttle: this batch may take no less than count / rate seconds.
        let floor = Duration::from_secs_f64(count as f64 / rate);
        if let Some(left) = floor.checked_sub(started.elapsed()) {
            glommio::timer::sleep(left).await;
        }
    }
    Ok(written)
}

/// Polls every future together (their requests share the peer connection,
/// pipelined) and returns their outputs in order.
fn join_all<F: std::future::Future>(futures: impl Iterator<Item = F>) -> JoinAll<F> {
    let futures: Vec<_> = futures.map(|future| Some(Box::pin(future))).collect();
    let outputs = futures.iter().map(|_| None).collect();
    JoinAll { futures, outputs }
}

struct JoinAll<F: std::future::Future> {
    futures: Vec<Option<std::pin::Pin<Box<F>>>>,
    outputs: Vec<Option<F::Output>>,
}

// The futures are boxed and the outputs are never pinned: moving a
// JoinAll moves neither.
impl<F: std::future::Future> Unpin for JoinAll<F> {}

impl<F: std::future::Future> std::future::Future for JoinAll<F> {
    type Output = Vec<F::Output>;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        context: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Vec<F::Output>> {
        let this = self.get_mut();
        for (slot, output) in this.futures.iter_mut().zip(this.outputs.iter_mut()) {
            if let Some(future) = slot {
                if let std::task::Poll::Ready(value) = future.as_mut().poll(context) {
                    *output = Some(value);
                    *slot = None;
                }
            }
        }
        if this.futures.iter().any(Option::is_some) {
            return std::task::Poll::Pending;
        }
        std::task::Poll::Ready(
            this.outputs
                .iter_mut()
                .map(|o| o.take().expect("ready"))
                .collect(),
        )
    }
}

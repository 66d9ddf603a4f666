//! A shard's background cluster work: heartbeats, hint delivery and
//! anti-entropy. Each loop is bounded per round and sleeps between rounds.
//!
//! Anti-entropy compares, for one local vnode at a time, the digests of its
//! buckets with one other replica's; for each bucket that differs it
//! compares the (key, version) lists and pushes what this node has newer and
//! pulls what the peer has newer. Because digests cover tombstones, a
//! replica whose data was lost, or that missed writes while down without a
//! hint reaching it, converges.

use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use meridian_net::peer::{EntrySummary, PeerRequest, PeerResponse, ReplicaRecord};

use super::buckets_of_partition;
use super::coordinator::{local_peer_op, replicate};
use crate::shard::{parse_hint_key, PeerOp, Shard};

/// Buckets of one vnode compared in one anti-entropy round.
const BUCKETS_PER_ROUND: usize = 64;
/// Bucket digests asked for in one message (under the codec's batch limit).
const DIGEST_PAGE: u32 = 1024;
/// Records pushed to a peer in one write.
const PUSH_BATCH: usize = 128;
/// Hints tried per delivery round.
const HINTS_PER_ROUND: usize = 512;

/// Heartbeat rounds between two unconditional gossip rounds of shard 0 (a
/// ring of the same epoch but other content is found this way).
const GOSSIP_EVERY_ROUNDS: u64 = 10;

pub async fn run_heartbeats(shard: Rc<Shard>) {
    let Some(cluster) = shard.cluster.as_ref() else {
        return;
    };
    let interval = Duration::from_millis(shard.config.cluster.heartbeat_interval_ms as u64);
    let mut round = 0u64;
    loop {
        round += 1;
        let gossip_anyway = shard.index == 0 && round.is_multiple_of(GOSSIP_EVERY_ROUNDS);
        for peer in cluster.peers() {
            let shard = Rc::clone(&shard);
            glommio::spawn_local(async move {
                heartbeat(&shard, peer, interval * 2, gossip_anyway).await;
            })
            .detach();
        }
        glommio::timer::sleep(interval).await;
    }
}

/// One heartbeat to `peer`; a ring gossip follows when the epochs differ
/// (or `gossip_anyway`).
async fn heartbeat(shard: &Rc<Shard>, peer: u16, timeout: Duration, gossip_anyway: bool) {
    let Some(cluster) = shard.cluster.as_ref() else {
        return;
    };
    let Some(address) = cluster.address(peer) else {
        return;
    };
    let request = PeerRequest::Heartbeat {
        node_id: cluster.self_id,
        ring_epoch: cluster.epoch(),
    };
    let Ok(PeerResponse::HeartbeatReply { ring_epoch, .. }) =
        cluster.links.call(peer, &address, &request, timeout).await
    else {
        return;
    };
    cluster.heard_from(peer);
    cluster.peer_reported_epoch(peer, ring_epoch);
    if ring_epoch == cluster.epoch() && !gossip_anyway {
        return;
    }
    let gossip = PeerRequest::Gossip {
        ring: Bytes::from(meridian_ring::encode(&cluster.view().ring)),
    };
    match cluster.links.call(peer, &address, &gossip, timeout).await {
        Ok(PeerResponse::GossipReply { ring }) => {
            super::membership::adopt_bytes(shard, &ring);
        }
        Ok(other) => tracing::debug!(peer, ?other, "unexpected answer to GOSSIP"),
        Err(error) => tracing::debug!(peer, %error, "gossip failed"),
    }
}

pub async fn run_hint_delivery(shard: Rc<Shard>) {
    let Some(cluster) = shard.cluster.as_ref() else {
        return;
    };
    let interval = Duration::from_millis(shard.config.cluster.hint_delivery_interval_ms as u64);
    loop {
        glommio::timer::sleep(interval).await;
        for (hint, version) in shard.pending_hints(HINTS_PER_ROUND) {
            let Some((primary, partition, key)) = parse_hint_key(&hint) else {
                continue;
            };
            if primary != cluster.self_id && !cluster.is_live(primary) {
                continue;
            }
            let key = Bytes::copy_from_slice(key);
            let delivered = match shard.local_record(partition, &key) {
                Some(record) if primary != cluster.self_id => {
                    replicate(&shard, primary, record, None).await.is_ok()
                }
                // Nothing left to deliver (or the hint names this node).
                _ => true,
            };
            if delivered {
                shard.hint_delivered(&hint, version);
                shard
                    .counters
                    .hints_delivered
                    .set(shard.counters.hints_delivered.get() + 1);
            }
            glommio::yield_if_needed().await;
        }
    }
}

pub async fn run_anti_entropy(shard: Rc<Shard>) {
    let Some(cluster) = shard.cluster.as_ref() else {
        return;
    };
    let interval = Duration::from_millis(shard.config.cluster.anti_entropy_interval_ms as u64);
    let mut turn = 0usize;
    loop {
        glommio::timer::sleep(interval).await;
        let partitions: Vec<u32> = (0..shard.config.storage.partitions)
            .filter(|&p| {
                shard.partitioner.shard_of_partition(p) == shard.index && cluster.is_primary(p)
            })
            .collect();
        if partitions.is_empty() {
            continue;
        }
        turn = turn.wrapping_add(1);
        let partition = partitions[turn % partitions.len()];
        let peers: Vec<u16> = cluster
            .view()
            .ring
            .primaries(partition)
            .into_iter()
            .filter(|&node| node != cluster.self_id && cluster.is_live(node))
            .collect();
        if peers.is_empty() {
            continue;
        }
        let peer = peers[(turn / partitions.len()) % peers.len()];
        match compare_partition(&shard, partition, peer).await {
            Ok(repaired) if repaired > 0 => {
                tracing::info!(partition, peer, repaired, "anti-entropy repaired records");
            }
            Ok(_) => {}
            Err(error) => tracing::warn!(partition, peer, %error, "anti-entropy round failed"),
        }
    }
}

/// Compares one vnode with `peer`'s copy; returns records repaired.
async fn compare_partition(shard: &Rc<Shard>, partition: u32, peer: u16) -> Result<usize, String> {
    let cluster = shard.cluster.as_ref().ok_or("not clustered")?;
    let address = cluster.address(peer).ok_or("unknown peer")?.to_string();
    let timeout = cluster.request_timeout;
    let call = |request: PeerRequest| {
        let address = address.clone();
        async move {
            cluster
                .links
                .call(peer, &address, &request, timeout)
                .await
                .map_err(|e| e.to_string())
        }
    };
    let (first_bucket, count) = buckets_of_partition(partition, shard.config.storage.partitions);
    let mut differing: Vec<u16> = Vec::new();
    let mut page_start = 0u32;
    // Digests travel in pages: one message holds at most DIGEST_PAGE of them.
    while page_start < count && differing.len() < BUCKETS_PER_ROUND {
        let page = (count - page_start).min(DIGEST_PAGE);
        let first = (first_bucket as u32 + page_start) as u16;
        let remote = match call(PeerRequest::Digests {
            partition,
            first_bucket: first,
            count: page,
        })
        .await?
        {
            PeerResponse::DigestsReply { digests } => digests,
            other => return Err(format!("unexpected answer {other:?}")),
        };
        let local = match local_peer_op(
            shard,
            partition,
            PeerOp::Digests {
                first_bucket: first,
                count: page,
            },
        )
        .await?
        {
            PeerResponse::DigestsReply { digests } => digests,
            other => return Err(format!("unexpected local answer {other:?}")),
        };
        differing.extend(
            (0..page as usize)
                .filter(|&i| local.get(i) != remote.get(i))
                .map(|i| (first as usize + i) as u16),
        );
        page_start += page;
    }
    differing.truncate(BUCKETS_PER_ROUND);
    let mut repaired = 0;
    for bucket in differing {
        let theirs = match call(PeerRequest::BucketEntries { partition, bucket }).await? {
            PeerResponse::BucketEntriesReply { entries } => entries,
            other => return Err(format!("unexpected answer {other:?}")),
        };
        let ours = match local_peer_op(shard, partition, PeerOp::BucketEntries { bucket }).await? {
            PeerResponse::BucketEntriesReply { entries } => entries,
            other => return Err(format!("unexpected local answer {other:?}")),
        };
        repaired += reconcile(shard, partition, &ours, &theirs, &call).await?;
    }
    Ok(repaired)
}

fn version(entry: &EntrySummary) -> (u64, u32) {
    (entry.hlc, entry.origin)
}

async fn reconcile<F, Fut>(
    shard: &Rc<Shard>,
    partition: u32,
    ours: &[EntrySummary],
    theirs: &[EntrySummary],
    call: &F,
) -> Result<usize, String>
where
    F: Fn(PeerRequest) -> Fut,
    Fut: std::future::Future<Output = Result<PeerResponse, String>>,
{
    let their_versions: HashMap<&[u8], (u64, u32)> =
        theirs.iter().map(|e| (&e.key[..], version(e))).collect();
    let our_versions: HashMap<&[u8], (u64, u32)> =
        ours.iter().map(|e| (&e.key[..], version(e))).collect();
    let mut push: Vec<ReplicaRecord> = Vec::new();
    for entry in ours {
        if their_versions
            .get(&entry.key[..])
            .is_none_or(|&theirs| theirs < version(entry))
        {
            if let Some(record) = shard.local_record(partition, &entry.key) {
                push.push(record);
            }
        }
    }
    let mut repaired = 0;
    for batch in push.chunks(PUSH_BATCH) {
        call(PeerRequest::ReplicaWrite {
            hint_for: None,
            records: batch.to_vec(),
        })
        .await?;
        repaired += batch.len();
    }
    // Pull what the peer has newer; apply the pulled records as one write,
    // so they share one sync.
    let mut pulled: Vec<ReplicaRecord> = Vec::new();
    for entry in theirs {
        if our_versions
            .get(&entry.key[..])
            .is_some_and(|&ours| ours >= version(entry))
        {
            continue;
        }
        let request = PeerRequest::ReplicaRead {
            partition,
            key: entry.key.clone(),
        };
        if let PeerResponse::ReplicaEntry(Some(record)) = call(request).await? {
            pulled.push(record);
        }
    }
    for batch in pulled.chunks(PUSH_BATCH) {
        local_peer_op(
            shard,
            partition,
            PeerOp::Write {
                records: batch.to_vec(),
                hint_for: None,
            },
        )
        .await?;
        repaired += batch.len();
    }
    shard
        .counters
        .anti_entropy_repairs
        .set(shard.counters.anti_entropy_repairs.get() + repaired as u64);
    Ok(repaired)
}

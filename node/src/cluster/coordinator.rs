//! Coordinating a client's request across the key's replicas.
//!
//! The shard that received the request coordinates it: a write gets this
//! shard's version and goes to every node of the key's preference list (a
//! fallback stores it with a hint for the primary it stands in for); the
//! client is answered after W acknowledgements. A read asks every node of
//! the list, answers with the newest version among the first R answers, and
//! repairs the replicas that answered with something older (read repair),
//! including those that answer late.
//!
//! During a handoff (the ring has transfers pending) a key has two
//! preference lists, the current ring's and the target ring's: a request
//! goes to every node of both, and needs its quorum in each. A write is then
//! held by W current replicas (what reads of the current ring see) and by W
//! target replicas (what reads see once ownership flips); a read meets every
//! write coordinated with either ring, including a write of a coordinator
//! that already adopted the flipped ring.
//!
//! Invariants:
//! - a write is acknowledged only after W replicas applied it durably (as
//!   their durability setting says) or already held something newer;
//! - a failure names how many replicas answered and what was needed.

use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use meridian_net::message::{Version as WireVersion, VersionedValue};
use meridian_net::peer::{EntryKind, PeerRequest, PeerResponse, ReplicaRecord};
use meridian_net::{ErrorCode, Response};
use meridian_ring::Role as ReplicaRole;

use crate::shard::{PeerOp, Shard, WRITE_APPLIED, WRITE_STALE};

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn quorum_error(code: ErrorCode, message: String) -> Response {
    Response::Error { code, message }
}

/// Applies `records` to this node's vnode `partition` (on whichever shard
/// owns it), waiting for durability as configured.
pub async fn local_peer_op(
    shard: &Rc<Shard>,
    partition: u32,
    op: PeerOp,
) -> Result<PeerResponse, String> {
    let owner = shard.partitioner.shard_of_partition(partition);
    if owner == shard.index {
        let (result, epoch) = shard.apply_peer(partition, op);
        if let Some(epoch) = epoch {
            shard
                .wait_synced(epoch)
                .await
                .map_err(|reason| format!("not durable: {reason}"))?;
        }
        return result.map_err(|(code, message)| format!("{code}: {message}"));
    }
    let (reply, answer) = flume::bounded(1);
    let call = crate::shard::ShardCall::Peer {
        partition,
        op,
        reply,
    };
    shard.inboxes[owner]
        .send_async(call)
        .await
        .map_err(|_| "shard stopped".to_string())?;
    answer
        .recv_async()
        .await
        .map_err(|_| "shard stopped".to_string())?
        .map_err(|(code, message)| format!("{code}: {message}"))
}

/// Writes `record` to one replica; Ok when it applied it (`true`) or had
/// it or newer (`false`).
pub async fn replicate(
    shard: &Rc<Shard>,
    node: u16,
    record: ReplicaRecord,
    hint_for: Option<u16>,
) -> Result<bool, String> {
    let Some(cluster) = shard.cluster.as_ref() else {
        return Err("not clustered".to_string());
    };
    let partition = record.partition;
    let response = if node == cluster.self_id {
        local_peer_op(
            shard,
            partition,
            PeerOp::Write {
                records: vec![record],
                hint_for,
            },
        )
        .await?
    } else {
        let address = cluster
            .address(node)
            .ok_or_else(|| format!("node {node} unknown"))?;
        let request = PeerRequest::ReplicaWrite {
            hint_for,
            records: vec![record],
        };
        let response = cluster
            .links
            .call(node, &address, &request, cluster.request_timeout)
            .await
            .map_err(|e| e.to_string())?;
        cluster.heard_from(node);
        response
    };
    match response {
        PeerResponse::ReplicaWritten { statuses } if statuses.first() == Some(&WRITE_APPLIED) => {
            Ok(true)
        }
        PeerResponse::ReplicaWritten { statuses } if statuses.first() == Some(&WRITE_STALE) => {
            Ok(false)
        }
        other => Err(format!("node {node} did not apply the write: {other:?}")),
    }
}

/// Where one request goes and the answers it needs.
struct QuorumPlan {
    partition: u32,
    /// Every node asked, once each, current list first; a node's role is
    /// the one it has in the first list that names it.
    replicas: Vec<meridian_ring::Replica>,
    /// The lists whose quorum must each be met: the current preference
    /// list and, during a handoff, the target ring's.
    lists: Vec<Vec<u16>>,
    /// R or W.
    wanted: usize,
}

impl QuorumPlan {
    /// True when `answered` holds `wanted` nodes of every list.
    fn met(&self, answered: &[u16]) -> bool {
        self.lists
            .iter()
            .all(|list| list.iter().filter(|node| answered.contains(node)).count() >= self.wanted)
    }
}

/// The key's partition, where the request goes and the quorum wanted (`R`
/// or `W`: the request's override, else the cluster's, at most N); refused
/// when a list has fewer live replicas than the quorum.
fn plan<'a>(
    shard: &'a Shard,
    key: &[u8],
    requested: Option<u8>,
    which: &str,
) -> Result<(&'a super::Cluster, QuorumPlan), Response> {
    let Some(cluster) = shard.cluster.as_ref() else {
        return Err(quorum_error(ErrorCode::Internal, "not clustered".into()));
    };
    let configured = if which == "R" {
        cluster.read_quorum
    } else {
        cluster.write_quorum
    };
    let partition = shard.partitioner.partition_of(key);
    let view = cluster.view();
    let wanted = requested
        .unwrap_or(configured)
        .clamp(1, view.ring.replicas()) as usize;
    let is_live = |node| cluster.is_live(node);
    let current = view.ring.preference_list_with(partition, is_live);
    let mut replicas = current.replicas.clone();
    let mut lists = vec![current.nodes().collect::<Vec<u16>>()];
    if let Some(target) = &view.target {
        let pending = target.preference_list_with(partition, is_live);
        let nodes: Vec<u16> = pending.nodes().collect();
        if nodes != lists[0] {
            for replica in pending.replicas {
                if !replicas.iter().any(|r| r.node == replica.node) {
                    replicas.push(replica);
                }
            }
            lists.push(nodes);
        }
    }
    for (index, list) in lists.iter().enumerate() {
        if list.len() < wanted {
            let which_list = if index == 0 {
                ""
            } else {
                " in the handoff's target ring"
            };
            return Err(quorum_error(
                ErrorCode::QuorumUnavailable,
                format!(
                    "partition {partition}: {} live replicas{which_list}, {which} = {wanted} needed",
                    list.len()
                ),
            ));
        }
    }
    Ok((
        cluster,
        QuorumPlan {
            partition,
            replicas,
            lists,
            wanted,
        },
    ))
}

/// Coordinates a PUT or DELETE.
pub async fn write(
    shard: Rc<Shard>,
    key: Bytes,
    kind: EntryKind,
    value: Bytes,
    expires_at: u32,
    write_quorum: Option<u8>,
) -> Response {
    let version = shard.stamp();
    let record = ReplicaRecord {
        partition: shard.partitioner.partition_of(&key),
        kind,
        key,
        value,
        hlc: version.hlc,
        origin: version.origin,
        expires_at,
    };
    match write_record(&shard, record, write_quorum).await {
        Ok(_) => Response::Written {
            version: WireVersion {
                hlc: version.hlc,
                origin: version.origin,
            },
        },
        Err(refusal) => refusal,
    }
}

/// Writes a versioned record to the key's replicas and waits for W of
/// them (in each list during a handoff): `Ok(true)` when at least one
/// replica applied it, `Ok(false)` when the replicas that answered all held
/// it or something newer. Used for clients' writes (stamped here) and for
/// records from other datacenters (which keep their version and origin).
pub async fn write_record(
    shard: &Rc<Shard>,
    record: ReplicaRecord,
    write_quorum: Option<u8>,
) -> Result<bool, Response> {
    let (cluster, plan) = plan(shard, &record.key, write_quorum, "W")?;
    let partition = plan.partition;
    let (sender, results) = flume::unbounded();
    for replica in &plan.replicas {
        let hint_for = match replica.role {
            ReplicaRole::Fallback { primary } => Some(primary),
            ReplicaRole::Primary => None,
        };
        let (shard, record, sender, node) = (
            Rc::clone(shard),
            record.clone(),
            sender.clone(),
            replica.node,
        );
        glommio::spawn_local(async move {
            let _ = sender.send((node, replicate(&shard, node, record, hint_for).await));
        })
        .detach();
    }
    drop(sender);
    let (acknowledged, applied, last_error) =
        wait_for(&results, &plan, cluster.request_timeout).await;
    if plan.met(&acknowledged) {
        return Ok(applied);
    }
    Err(quorum_error(
        ErrorCode::QuorumUnavailable,
        format!(
            "{} of {} replicas acknowledged the write of partition {partition}, W = {} needed{}{}",
            acknowledged.len(),
            plan.replicas.len(),
            plan.wanted,
            if plan.lists.len() > 1 {
                " in the current and the target ring"
            } else {
                ""
            },
            last_error
                .map(|e| format!(" (last error: {e})"))
                .unwrap_or_default()
        ),
    ))
}

/// The next result on `results`, or `None` once every sender is gone or
/// `deadline` passed.
async fn next_before<T>(results: &flume::Receiver<T>, deadline: Instant) -> Option<T> {
    let left = deadline.saturating_duration_since(Instant::now());
    let next = async { results.recv_async().await.ok() };
    let expired = async {
        glommio::timer::sleep(left).await;
        None
    };
    futures_lite::future::or(next, expired).await
}

/// Gathers the nodes that acknowledged until the plan's quorums are met,
/// every result is in, or the deadline passed; also whether any of them
/// applied the write (rather than holding it already).
async fn wait_for(
    results: &flume::Receiver<(u16, Result<bool, String>)>,
    plan: &QuorumPlan,
    timeout: Duration,
) -> (Vec<u16>, bool, Option<String>) {
    let mut acknowledged = Vec::with_capacity(plan.replicas.len());
    let mut applied = false;
    let mut last_error = None;
    let deadline = Instant::now() + timeout;
    while !plan.met(&acknowledged) {
        match next_before(results, deadline).await {
            Some((node, Ok(written))) => {
                acknowledged.push(node);
                applied |= written;
            }
            Some((_, Err(error))) => last_error = Some(error),
            None => break,
        }
    }
    (acknowledged, applied, last_error)
}

type ReadAnswer = (u16, ReplicaRole, Result<Option<ReplicaRecord>, String>);

async fn read_replica(
    shard: &Rc<Shard>,
    node: u16,
    partition: u32,
    key: Bytes,
) -> Result<Option<ReplicaRecord>, String> {
    let Some(cluster) = shard.cluster.as_ref() else {
        return Err("not clustered".to_string());
    };
    let response = if node == cluster.self_id {
        local_peer_op(shard, partition, PeerOp::Read { key }).await?
    } else {
        let address = cluster
            .address(node)
            .ok_or_else(|| format!("node {node} unknown"))?;
        let request = PeerRequest::ReplicaRead { partition, key };
        let response = cluster
            .links
            .call(node, &address, &request, cluster.request_timeout)
            .await
            .map_err(|e| e.to_string())?;
        cluster.heard_from(node);
        response
    };
    match response {
        PeerResponse::ReplicaEntry(entry) => Ok(entry),
        other => Err(format!("node {node} answered a read with {other:?}")),
    }
}

fn newer(candidate: &ReplicaRecord, than: Option<&ReplicaRecord>) -> bool {
    than.is_none_or(|current| (candidate.hlc, candidate.origin) > (current.hlc, current.origin))
}

/// Coordinates a GET.
pub async fn read(shard: Rc<Shard>, key: Bytes, read_quorum: Option<u8>) -> Response {
    let (cluster, plan) = match plan(&shard, &key, read_quorum, "R") {
        Ok(plan) => plan,
        Err(refusal) => return refusal,
    };
    let partition = plan.partition;
    let (sender, results) = flume::unbounded::<ReadAnswer>();
    for replica in &plan.replicas {
        let (shard, sender, key, node, role) = (
            Rc::clone(&shard),
            sender.clone(),
            key.clone(),
            replica.node,
            replica.role,
        );
        glommio::spawn_local(async move {
            let _ = sender.send((node, role, read_replica(&shard, node, partition, key).await));
        })
        .detach();
    }
    drop(sender);
    let mut answers: Vec<(u16, ReplicaRole, Option<ReplicaRecord>)> = Vec::new();
    let mut answered: Vec<u16> = Vec::with_capacity(plan.replicas.len());
    let mut last_error = None;
    let deadline = Instant::now() + cluster.request_timeout;
    while !plan.met(&answered) {
        match next_before(&results, deadline).await {
            Some((node, role, Ok(entry))) => {
                answered.push(node);
                answers.push((node, role, entry));
            }
            Some((_, _, Err(error))) => last_error = Some(error),
            None => break,
        }
    }
    if !plan.met(&answered) {
        return quorum_error(
            ErrorCode::QuorumUnavailable,
            format!(
                "{} of {} replicas answered the read of partition {partition}, R = {} needed{}{}",
                answers.len(),
                plan.replicas.len(),
                plan.wanted,
                if plan.lists.len() > 1 {
                    " in the current and the target ring"
                } else {
                    ""
                },
                last_error
                    .map(|e| format!(" (last error: {e})"))
                    .unwrap_or_default()
            ),
        );
    }
    let mut newest: Option<ReplicaRecord> = None;
    for (_, _, entry) in &answers {
        if let Some(entry) = entry {
            if newer(entry, newest.as_ref()) {
                newest = Some(entry.clone());
            }
        }
    }
    if let Some(newest) = newest.clone() {
        glommio::spawn_local(repair(Rc::clone(&shard), newest, answers, results)).detach();
    }
    match newest {
        Some(record)
            if record.kind == EntryKind::Put
                && !(record.expires_at != 0 && now_s() >= record.expires_at as u64) =>
        {
            Response::Value(VersionedValue {
                version: WireVersion {
                    hlc: record.hlc,
                    origin: record.origin,
                },
                value: record.value,
            })
        }
        _ => Response::NotFound,
    }
}

/// Read repair: sends the newest record to every replica that answered
/// with something older, and to those that answer late with something older.
async fn repair(
    shard: Rc<Shard>,
    newest: ReplicaRecord,
    answers: Vec<(u16, ReplicaRole, Option<ReplicaRecord>)>,
    late: flume::Receiver<ReadAnswer>,
) {
    let stale = |entry: &Option<ReplicaRecord>| newer(&newest, entry.as_ref());
    let mut targets: Vec<(u16, ReplicaRole)> = answers
        .iter()
        .filter(|(_, _, entry)| stale(entry))
        .map(|(node, role, _)| (*node, *role))
        .collect();
    while let Ok((node, role, answer)) = late.recv_async().await {
        if let Ok(entry) = answer {
            if stale(&entry) {
                targets.push((node, role));
            }
        }
    }
    for (node, role) in targets {
        let hint_for = match role {
            ReplicaRole::Fallback { primary } => Some(primary),
            ReplicaRole::Primary => None,
        };
        match replicate(&shard, node, newest.clone(), hint_for).await {
            Ok(_) => shard
                .counters
                .read_repairs
                .set(shard.counters.read_repairs.get() + 1),
            Err(error) => tracing::debug!(node, %error, "read repair failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    //! Goal: during a handoff a quorum is met only in both lists.

    use super::*;
    use meridian_ring::{Replica, Role};

    fn plan(lists: Vec<Vec<u16>>, wanted: usize) -> QuorumPlan {
        let mut replicas: Vec<Replica> = Vec::new();
        for node in lists.iter().flatten() {
            if !replicas.iter().any(|r| r.node == *node) {
                replicas.push(Replica {
                    node: *node,
                    role: Role::Primary,
                });
            }
        }
        QuorumPlan {
            partition: 0,
            replicas,
            lists,
            wanted,
        }
    }

    #[test]
    fn one_list_needs_its_quorum() {
        let plan = plan(vec![vec![1, 2, 3]], 2);
        assert!(!plan.met(&[1]));
        assert!(plan.met(&[3, 1]));
    }

    #[test]
    fn a_handoff_needs_the_quorum_in_the_current_and_the_target_list() {
        // Current {1, 2, 3}; target {1, 2, 4}: node 4 joins, 3 hands off.
        let plan = plan(vec![vec![1, 2, 3], vec![1, 2, 4]], 2);
        assert_eq!(plan.replicas.len(), 4);
        assert!(!plan.met(&[3, 4]), "one answer in each list");
        assert!(!plan.met(&[1, 3]), "the target list has only node 1");
        assert!(plan.met(&[1, 3, 4]));
        assert!(plan.met(&[2, 1]));
    }
}

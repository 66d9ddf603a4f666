//! The JSON documents of BUILDINFO, CLUSTERINFO, NODEHEALTH and STATS.

use serde_json::json;

use crate::shard::{Shard, ShardCall, ShardReport};

pub fn build_info() -> String {
    json!({
        "name": "meridian",
        "version": env!("CARGO_PKG_VERSION"),
        "protocol_version": meridian_net::PROTOCOL_VERSION,
        "engine_format_version": meridian_engine::format::FORMAT_VERSION,
        "target": std::env::consts::ARCH,
        "os": std::env::consts::OS,
        "debug_assertions": cfg!(debug_assertions),
    })
    .to_string()
}

/// The CLUSTERINFO document, built by shard 0 (which holds the claimant's
/// handoff reports).
pub async fn cluster_info(shard: &Shard) -> String {
    if shard.index == 0 || shard.cluster.is_none() {
        return cluster_info_here(shard);
    }
    let (reply, answer) = flume::bounded(1);
    if shard.inboxes[0]
        .send_async(ShardCall::ClusterInfo { reply })
        .await
        .is_ok()
    {
        if let Ok(json) = answer.recv_async().await {
            return json;
        }
    }
    cluster_info_here(shard)
}

/// The ring as this shard sees it: members with their status (this shard's
/// failure detector) and ring status, ring epoch, partitions each member
/// owns and is a replica of (now and once the pending transfers complete),
/// the owner of every partition (clients route by it), the claimant, and
/// pending handoffs with their progress (known to the claimant). A cluster
/// of one owns every partition.
pub fn cluster_info_here(shard: &Shard) -> String {
    let config = &shard.config;
    let Some(cluster) = shard.cluster.as_ref() else {
        return json!({
            "cluster": config.node.cluster,
            "datacenter": config.node.datacenter,
            "ring_epoch": 1,
            "partitions": config.storage.partitions,
            "replicas": 1,
            "members": [{
                "node_id": config.node.node_id,
                "address": config.node.listen.to_string(),
                "rack": config.own_rack(),
                "status": "up",
                "ring_status": "up",
                "partitions_owned": config.storage.partitions,
                "partitions_replicated": config.storage.partitions,
                "shards": shard.inboxes.len(),
                "this_node": true,
            }],
            "claimant": config.node.node_id,
            "owners": vec![config.node.node_id; config.storage.partitions as usize],
            "pending_handoffs": 0,
            "handoff": null,
        })
        .to_string();
    };
    let view = cluster.view();
    let ring = &view.ring;
    let target = view.target.as_ref().unwrap_or(ring);
    let primaries = ring.all_primaries();
    let members: Vec<serde_json::Value> = ring
        .members()
        .iter()
        .map(|member| {
            let owned = |ring: &meridian_ring::Ring| {
                ring.owners()
                    .iter()
                    .filter(|&&owner| owner == member.id)
                    .count()
            };
            let replicated = primaries
                .iter()
                .filter(|nodes| nodes.contains(&member.id))
                .count();
            json!({
                "node_id": member.id,
                "address": member.address,
                "rack": member.rack,
                "status": if cluster.is_live(member.id) { "up" } else { "down" },
                "ring_status": format!("{:?}", member.status).to_lowercase(),
                "partitions_owned": owned(ring),
                "partitions_owned_after_handoff": owned(target),
                "partitions_replicated": replicated,
                "this_node": member.id == cluster.self_id,
            })
        })
        .collect();
    let (racks, sharing) = ring.rack_spread(&primaries);
    let handoff = view.target.as_ref().map(|_| {
        let (ready, needed) = crate::cluster::membership::handoff_progress(cluster, &view);
        let transfers: Vec<serde_json::Value> = ring
            .transfers()
            .iter()
            .map(|t| json!({"partition": t.partition, "source": t.source, "target": t.target}))
            .collect();
        json!({
            "plan": format!("{:016x}", view.plan),
            "partition_copies_needed": needed,
            "partition_copies_reported": ready,
            "progress_known": cluster.claimant() == Some(cluster.self_id),
            "transfers": transfers,
        })
    });
    json!({
        "cluster": config.node.cluster,
        "datacenter": config.node.datacenter,
        "node_id": cluster.self_id,
        "ring_epoch": ring.epoch(),
        "partitions": ring.partitions(),
        "replicas": ring.replicas(),
        "read_quorum": cluster.read_quorum,
        "write_quorum": cluster.write_quorum,
        "claimant": cluster.claimant(),
        "members": members,
        "owners": ring.owners(),
        "racks": racks,
        "partitions_with_replicas_sharing_a_rack": sharing,
        "pending_handoffs": ring.transfers().len(),
        "handoff": handoff,
    })
    .to_string()
}

/// Every shard's report, this one's first-hand and the others' over their inboxes.
pub async fn gather_reports(shard: &Shard) -> Vec<ShardReport> {
    let mut reports = Vec::with_capacity(shard.inboxes.len());
    for (index, inbox) in shard.inboxes.iter().enumerate() {
        if index == shard.index {
            reports.push(shard.report());
            continue;
        }
        let (reply, answer) = flume::bounded(1);
        if inbox.send_async(ShardCall::Stats { reply }).await.is_ok() {
            if let Ok(report) = answer.recv_async().await {
                reports.push(report);
            }
        }
    }
    reports
}

pub async fn node_health(shard: &Shard) -> String {
    let reports = gather_reports(shard).await;
    let writes_refused = reports.iter().any(|r| r.writes_refused);
    json!({
        "node_id": shard.config.node.node_id,
        "status": if writes_refused { "degraded" } else { "ok" },
        "shards": reports.len(),
        "shards_answering": reports.len(),
        "writes_refused": writes_refused,
        "durability": format!("{:?}", shard.config.storage.durability).to_lowercase(),
    })
    .to_string()
}

pub async fn stats(shard: &Shard) -> String {
    let reports = gather_reports(shard).await;
    let sum = |field: fn(&ShardReport) -> u64| reports.iter().map(field).sum::<u64>();
    json!({
        "requests": sum(|r| r.requests),
        "gets": sum(|r| r.gets),
        "puts": sum(|r| r.puts),
        "deletes": sum(|r| r.deletes),
        "errors": sum(|r| r.errors),
        "keys": sum(|r| r.keys),
        "disk_bytes": sum(|r| r.disk_bytes),
        "keydir_bytes": sum(|r| r.keydir_bytes),
        "syncs": sum(|r| r.syncs),
        "shards": reports,
    })
    .to_string()
}

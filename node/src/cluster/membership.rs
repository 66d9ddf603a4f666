//! Membership changes: joining, leaving, and completing a handoff.
//!
//! One claimant plans and commits every change: the lowest id among the
//! members that are up in the ring and live in its own view
//! ([`super::Cluster::claimant`]). A member that receives a change it is not
//! the claimant for passes it on once (flag `forwarded`); a forwarded
//! request that reaches a node which is not the claimant either is refused,
//! so a request never circles. The claimant plans with the ring crate
//! (`plan_join`, `plan_leave`), adopts the new ring, and gossip spreads it.
//!
//! A join is asked of the joining node (`meridian cli cluster join ADDR`,
//! or at start through `cluster.seeds`): it asks a member to admit it and
//! adopts the ring that comes back, in which it is `Joining`.
//!
//! Transfers complete all at once: when every (node, partition) pair that
//! the plan adds to a preference list was reported held (module
//! `handoff`), the claimant completes every pending transfer in one new
//! ring. Completing them one by one would route through intermediate rings
//! whose preference lists were never streamed to.
//!
//! Everything here runs on shard 0 of a node (other shards pass membership
//! requests to it over its inbox), so a node plans one change at a time.
//!
//! Invariants:
//! - only the claimant of the ring it holds commits a change;
//! - transfers complete only when every pair of `RingView::handoffs_needed`
//!   was reported for the same plan hash;
//! - a retried join or leave of a node already joining or leaving answers
//!   the current ring instead of failing (idempotent).

use std::collections::HashSet;
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use meridian_net::peer::{Membership, MembershipCommand, PeerRequest, PeerResponse};
use meridian_net::ErrorCode;
use meridian_ring::{Ring, Status};

use super::{Cluster, RingView};
use crate::shard::{PeerFailure, Shard, ShardCall};

/// Handoff reports the claimant gathered for one plan.
#[derive(Debug, Default)]
pub struct HandoffReports {
    plan: u64,
    ready: HashSet<(u16, u32)>,
}

impl HandoffReports {
    /// How many of `needed` were reported for `plan`.
    pub fn progress(&self, plan: u64, needed: &[(u16, u32)]) -> usize {
        if plan != self.plan {
            return 0;
        }
        needed
            .iter()
            .filter(|pair| self.ready.contains(pair))
            .count()
    }
}

/// The handoff progress this shard knows of: pairs reported and pairs
/// needed for the held plan (reports reach shard 0 of the claimant only).
pub fn handoff_progress(cluster: &Cluster, view: &RingView) -> (usize, usize) {
    let needed = view.handoffs_needed();
    let ready = cluster.reports.borrow().progress(view.plan, &needed);
    (ready, needed.len())
}

fn refuse(code: ErrorCode, message: impl Into<String>) -> PeerFailure {
    (code, message.into())
}

fn ring_reply(view: &RingView) -> PeerResponse {
    PeerResponse::MembershipReply {
        ring: Bytes::from(meridian_ring::encode(&view.ring)),
    }
}

/// Serves a MEMBERSHIP request on any shard: shard 0 acts, the others pass
/// it to shard 0.
pub async fn serve(shard: Rc<Shard>, request: Membership) -> Result<PeerResponse, PeerFailure> {
    if shard.index == 0 {
        return handle(shard, request).await;
    }
    let (reply, answer) = flume::bounded(1);
    let stopped = || refuse(ErrorCode::ShuttingDown, "shard 0 stopped");
    shard.inboxes[0]
        .send_async(ShardCall::Membership { request, reply })
        .await
        .map_err(|_| stopped())?;
    answer.recv_async().await.map_err(|_| stopped())?
}

/// Acts on a MEMBERSHIP request (shard 0).
pub async fn handle(shard: Rc<Shard>, request: Membership) -> Result<PeerResponse, PeerFailure> {
    debug_assert_eq!(shard.index, 0);
    let Some(cluster) = shard.cluster.as_ref() else {
        return Err(refuse(
            ErrorCode::ClusterMismatch,
            "this node is a cluster of one: start it with cluster.seeds to let it join",
        ));
    };
    if request.command == MembershipCommand::JoinVia {
        let address = std::str::from_utf8(&request.address)
            .map_err(|_| refuse(ErrorCode::MalformedBody, "the seed address is not UTF-8"))?;
        join_through(&shard, &[address.to_string()], 1).await?;
        return Ok(ring_reply(&cluster.view()));
    }
    match cluster.claimant() {
        Some(claimant) if claimant == cluster.self_id => {
            commit(&shard, &request)?;
            Ok(ring_reply(&cluster.view()))
        }
        Some(claimant) if !request.forwarded => {
            let address = cluster.address(claimant).ok_or_else(|| {
                refuse(
                    ErrorCode::Internal,
                    format!("claimant {claimant} has no address"),
                )
            })?;
            let forwarded = PeerRequest::Membership(Membership {
                forwarded: true,
                ..request
            });
            let response = cluster
                .links
                .call(claimant, &address, &forwarded, cluster.request_timeout)
                .await
                .map_err(|e| refuse(ErrorCode::QuorumUnavailable, e.to_string()))?;
            if let PeerResponse::MembershipReply { ring } = &response {
                adopt_bytes(&shard, ring);
            }
            Ok(response)
        }
        claimant => Err(refuse(
            ErrorCode::QuorumUnavailable,
            format!(
                "node {} is not the claimant (it sees {}); retry",
                cluster.self_id,
                claimant.map_or("none".to_string(), |c| format!("node {c}"))
            ),
        )),
    }
}

/// The claimant's side of ADMIT, LEAVE and HANDOFF_READY.
fn commit(shard: &Shard, request: &Membership) -> Result<(), PeerFailure> {
    let cluster = shard.cluster.as_ref().expect("checked by the caller");
    let view = cluster.view();
    let node = request.node_id;
    let refused = |e: meridian_ring::Error| refuse(ErrorCode::MalformedBody, e.to_string());
    let next = match request.command {
        MembershipCommand::Admit => {
            let address = std::str::from_utf8(&request.address)
                .map_err(|_| refuse(ErrorCode::MalformedBody, "the address is not UTF-8"))?;
            let rack = std::str::from_utf8(&request.rack)
                .map_err(|_| refuse(ErrorCode::MalformedBody, "the rack is not UTF-8"))?;
            let rack = (!rack.is_empty()).then(|| rack.to_string());
            if address.parse::<std::net::SocketAddr>().is_err() {
                return Err(refuse(
                    ErrorCode::MalformedBody,
                    format!("node {node} asked to join with address {address:?}, not HOST:PORT"),
                ));
            }
            match view.ring.member(node) {
                Some(member) if member.status != Status::Removed => {
                    let differs = if member.address != address {
                        Some(format!("at {}, not {address}", member.address))
                    } else if member.rack != rack {
                        Some(format!(
                            "in rack {:?}, not {rack:?} (a node moves to another rack by leaving and joining again)",
                            member.rack
                        ))
                    } else {
                        None
                    };
                    if let Some(differs) = differs {
                        return Err(refuse(
                            ErrorCode::MalformedBody,
                            format!("node id {node} is already a member {differs}"),
                        ));
                    }
                    return Ok(());
                }
                _ => {
                    let member = super::member_in(node, address.to_string(), rack);
                    meridian_ring::plan_join(&view.ring, member).map_err(refused)?
                }
            }
        }
        MembershipCommand::Leave => match view.ring.member(node) {
            Some(member) if matches!(member.status, Status::Leaving | Status::Removed) => {
                return Ok(())
            }
            _ => meridian_ring::plan_leave(&view.ring, node).map_err(refused)?,
        },
        MembershipCommand::HandoffReady => {
            record_report(cluster, &view, node, request.plan, &request.partitions);
            complete_if_ready(shard);
            return Ok(());
        }
        MembershipCommand::JoinVia => {
            return Err(refuse(
                ErrorCode::MalformedBody,
                "JOIN_VIA is asked of the joining node, never passed on",
            ))
        }
    };
    tracing::info!(
        command = ?request.command,
        node,
        epoch = next.epoch(),
        transfers = next.transfers().len(),
        "claimant planned a ring change"
    );
    shard.adopt_ring(next, true);
    Ok(())
}

fn record_report(cluster: &Cluster, view: &RingView, node: u16, plan: u64, partitions: &[u32]) {
    if plan == 0 || plan != view.plan {
        return;
    }
    let mut reports = cluster.reports.borrow_mut();
    if reports.plan != plan {
        reports.plan = plan;
        reports.ready.clear();
    }
    reports
        .ready
        .extend(partitions.iter().map(|&partition| (node, partition)));
}

/// On the claimant: completes every pending transfer once every handoff
/// the plan needs was reported.
pub fn complete_if_ready(shard: &Shard) {
    let Some(cluster) = shard.cluster.as_ref() else {
        return;
    };
    let view = cluster.view();
    if view.target.is_none() || cluster.claimant() != Some(cluster.self_id) {
        return;
    }
    let (ready, needed) = handoff_progress(cluster, &view);
    if ready < needed {
        return;
    }
    let next: Ring = match meridian_ring::complete_all(&view.ring) {
        Ok(ring) => ring,
        Err(error) => {
            tracing::error!(%error, "cannot complete the handoff's transfers");
            return;
        }
    };
    tracing::info!(
        epoch = next.epoch(),
        transfers = view.ring.transfers().len(),
        "claimant completed the handoff"
    );
    shard.adopt_ring(next, true);
}

/// Decodes a ring from a peer and adopts it; failures are logged (a peer's
/// ring that does not name this node or does not decode is ignored).
pub fn adopt_bytes(shard: &Shard, bytes: &[u8]) {
    match meridian_ring::decode(bytes) {
        Ok(ring) => {
            shard.adopt_ring(ring, true);
        }
        Err(error) => tracing::warn!(%error, "a peer sent a ring that does not decode"),
    }
}

/// Joins the cluster of `seeds`: asks each seed for its ring (GOSSIP) until
/// `min_contact_points` answered, then asks one that answered to admit this
/// node, and adopts the ring it answers.
pub async fn join_through(
    shard: &Rc<Shard>,
    seeds: &[String],
    min_contact_points: usize,
) -> Result<(), PeerFailure> {
    let cluster = shard.cluster.as_ref().expect("checked by the caller");
    let view = cluster.view();
    let others = view
        .ring
        .members()
        .iter()
        .any(|m| m.id != cluster.self_id && m.status != Status::Removed);
    if others {
        // A removed node may join again (its ring names it, so the answer
        // is adopted); any other member is already in.
        match view.ring.member(cluster.self_id).map(|m| m.status) {
            Some(Status::Joining | Status::Up) => return Ok(()),
            Some(Status::Removed) => {}
            status => {
                return Err(refuse(
                    ErrorCode::MalformedBody,
                    format!("this node is already a member of the ring (as {status:?})"),
                ))
            }
        }
    }
    let mut answered: Vec<&String> = Vec::new();
    let mut last_error = String::from("no seed");
    let gossip = PeerRequest::Gossip {
        ring: Bytes::from(meridian_ring::encode(&view.ring)),
    };
    for seed in seeds {
        match cluster
            .links
            .call_address(0, seed, &gossip, cluster.request_timeout)
            .await
        {
            Ok(PeerResponse::GossipReply { ring }) => {
                check_seed_ring(&view.ring, seed, &ring)?;
                answered.push(seed);
            }
            Ok(other) => last_error = format!("seed {seed} answered {other:?}"),
            Err(error) => last_error = format!("seed {seed}: {error}"),
        }
    }
    if answered.len() < min_contact_points {
        return Err(refuse(
            ErrorCode::QuorumUnavailable,
            format!(
                "{} of {} seeds answered, {min_contact_points} needed (last error: {last_error})",
                answered.len(),
                seeds.len()
            ),
        ));
    }
    let admit = PeerRequest::Membership(Membership {
        command: MembershipCommand::Admit,
        forwarded: false,
        node_id: cluster.self_id,
        plan: 0,
        address: Bytes::from(shard.config.node.listen.to_string()),
        rack: Bytes::from(shard.config.own_rack().unwrap_or_default()),
        partitions: Vec::new(),
    });
    let seed = answered[0];
    let response = cluster
        .links
        .call_address(0, seed, &admit, cluster.request_timeout * 2)
        .await
        .map_err(|e| refuse(ErrorCode::QuorumUnavailable, format!("seed {seed}: {e}")))?;
    let PeerResponse::MembershipReply { ring } = response else {
        return Err(refuse(
            ErrorCode::Internal,
            format!("seed {seed} answered ADMIT with {response:?}"),
        ));
    };
    let ring = meridian_ring::decode(&ring)
        .map_err(|e| refuse(ErrorCode::Internal, format!("seed {seed}'s ring: {e}")))?;
    if ring.member(cluster.self_id).map(|m| m.address.as_str())
        != Some(&*shard.config.node.listen.to_string())
    {
        return Err(refuse(
            ErrorCode::Internal,
            format!("seed {seed} answered a ring that does not admit this node"),
        ));
    }
    // Gossip may have brought the new ring first: what counts is the ring
    // held afterwards.
    shard.adopt_ring(ring, true);
    let held = cluster.view();
    let admitted = held.ring.members().len() > 1
        && matches!(
            held.ring.member(cluster.self_id).map(|m| m.status),
            Some(Status::Joining | Status::Up)
        );
    if !admitted {
        return Err(refuse(
            ErrorCode::Internal,
            format!(
                "seed {seed} admitted this node, but the ring held (epoch {}) does not",
                held.ring.epoch()
            ),
        ));
    }
    tracing::info!(seed = %seed, epoch = cluster.epoch(), "joined the cluster");
    Ok(())
}

/// A seed's ring must be of this node's cluster and ring size, or the
/// node could not adopt it once admitted.
fn check_seed_ring(own: &Ring, seed: &str, bytes: &[u8]) -> Result<(), PeerFailure> {
    let ring = meridian_ring::decode(bytes).map_err(|e| {
        refuse(
            ErrorCode::Internal,
            format!("seed {seed} sent a ring that does not decode: {e}"),
        )
    })?;
    if ring.cluster() != own.cluster() || ring.partitions() != own.partitions() {
        return Err(refuse(
            ErrorCode::ClusterMismatch,
            format!(
                "seed {seed} is in cluster {:?} with {} partitions; this node is configured for {:?} with {} (storage.partitions)",
                ring.cluster(),
                ring.partitions(),
                own.cluster(),
                own.partitions()
            ),
        ));
    }
    Ok(())
}

/// Shard 0's membership duties: join through the seeds at start (when
/// configured), then, as claimant, complete handoffs that are ready.
pub async fn run_membership(shard: Rc<Shard>) {
    if shard.index != 0 || shard.cluster.is_none() {
        return;
    }
    let settings = &shard.config.cluster;
    let interval = Duration::from_millis(settings.heartbeat_interval_ms as u64);
    if !settings.seeds.is_empty() && settings.join_on_start {
        let minimum = settings.min_contact_points as usize;
        while let Err((_, reason)) = join_through(&shard, &settings.seeds, minimum).await {
            tracing::warn!(%reason, "cannot join through the seeds yet");
            glommio::timer::sleep(interval * 5).await;
        }
    }
    loop {
        glommio::timer::sleep(interval).await;
        complete_if_ready(&shard);
    }
}

//! The planner: pure functions from one ring document to the next.
//!
//! Only the claimant plans (the lowest id among members that are up); every
//! other node adopts what it hears. Each function takes a ring and returns a
//! new one with `epoch + 1`, so a plan can be computed, inspected, gossiped
//! and persisted before anything moves.
//!
//! A join or a leave does not flip ownership at once: it computes the target
//! owners with [`crate::claim`] and records one [`Transfer`] per partition
//! whose owner changes. The target streams the partition from the source;
//! then [`complete_transfer`] flips the owner. Planning again while transfers
//! are pending starts from the target owners, so plans compose; a transfer
//! whose target changes is replaced, one whose target becomes its current
//! owner again is dropped.
//!
//! Invariants:
//! - every function returns a ring that passes [`Ring::validate`], with
//!   `epoch` one above its input, or an error and no ring;
//! - a joining member becomes `Up` when the last transfer to it completes;
//!   a leaving member becomes `Removed` when it owns nothing and no transfer
//!   names it;
//! - `adopt` is a total order on documents of one cluster: the higher epoch,
//!   then the higher content hash.

use crate::claim::{claim, Claimant};
use crate::error::{Error, Result};
use crate::ring::{Member, NodeId, Ring, Status, Transfer};

/// Plans `member` into the ring (status `Joining`). A removed member may
/// join again under its old id.
pub fn plan_join(ring: &Ring, member: Member) -> Result<Ring> {
    let refuse = |reason: &str| Error::Refused {
        node: member.id,
        reason: reason.to_owned(),
    };
    let mut next = ring.clone();
    let joining = Member {
        status: Status::Joining,
        ..member.clone()
    };
    match ring.member_index(member.id) {
        Some(i) if ring.members[i].status != Status::Removed => {
            return Err(refuse("already a member"))
        }
        Some(i) => next.members[i] = joining,
        None => {
            let at = next.members.partition_point(|m| m.id < member.id);
            next.members.insert(at, joining);
        }
    }
    replan(next)
}

/// Plans `node` out of the ring (status `Leaving`): its partitions go to the
/// others. A down node may be planned out too; its partitions are then
/// rebuilt by the targets from the other replicas (anti-entropy) rather than
/// streamed from it.
pub fn plan_leave(ring: &Ring, node: NodeId) -> Result<Ring> {
    let refuse = |reason: &str| Error::Refused {
        node,
        reason: reason.to_owned(),
    };
    let index = ring
        .member_index(node)
        .ok_or_else(|| refuse("not a member"))?;
    if matches!(
        ring.members[index].status,
        Status::Leaving | Status::Removed
    ) {
        return Err(refuse("already leaving or removed"));
    }
    let remaining = ring
        .members
        .iter()
        .filter(|m| m.id != node && owns_after_plan(m.status))
        .count();
    if remaining == 0 {
        return Err(refuse("the last member cannot leave"));
    }
    let mut next = ring.clone();
    next.members[index].status = Status::Leaving;
    replan(next)
}

/// Marks a member down or up again (`Down` or `Up`), without moving any
/// partition: preference lists route around a down node.
pub fn set_status(ring: &Ring, node: NodeId, status: Status) -> Result<Ring> {
    let index = ring.member_index(node).ok_or(Error::Refused {
        node,
        reason: "not a member".to_owned(),
    })?;
    let current = ring.members[index].status;
    let allowed = matches!(
        (current, status),
        (Status::Up, Status::Down) | (Status::Down, Status::Up)
    );
    if !allowed {
        return Err(Error::Refused {
            node,
            reason: format!("cannot go from {current:?} to {status:?}"),
        });
    }
    let mut next = ring.clone();
    next.members[index].status = status;
    next.epoch += 1;
    next.validate()?;
    Ok(next)
}

/// Flips the owner of `partition` to its transfer's target, once the target
/// holds the partition's records.
pub fn complete_transfer(ring: &Ring, partition: u32) -> Result<Ring> {
    let transfer = ring
        .transfer(partition)
        .ok_or(Error::NoTransfer { partition })?;
    let mut next = ring.clone();
    next.owners[partition as usize] = transfer.target;
    next.transfers.retain(|t| t.partition != partition);
    settle_statuses(&mut next);
    next.epoch += 1;
    next.validate()?;
    Ok(next)
}

/// Completes every pending transfer at once: the ring that completing them
/// one by one with [`complete_transfer`] gives (the same owners and
/// statuses, the epoch one higher per transfer), in one pass and one
/// validation. One by one costs a copy and a validation of the whole ring
/// per transfer: about 40,000 × 65,536 steps when a leave re-tiles a ring
/// of 65,536 partitions, tens of seconds on the claimant's shard.
pub fn complete_all(ring: &Ring) -> Result<Ring> {
    let mut next = ring.clone();
    for transfer in &ring.transfers {
        next.owners[transfer.partition as usize] = transfer.target;
    }
    next.transfers.clear();
    settle_statuses(&mut next);
    next.epoch += ring.transfers.len() as u64;
    next.validate()?;
    Ok(next)
}

/// The document a node keeps when it hears `remote` while holding `local`:
/// the higher epoch; on equal epochs, the higher content hash (any
/// deterministic choice works; every node makes the same one).
pub fn adopt<'a>(local: &'a Ring, remote: &'a Ring) -> Result<&'a Ring> {
    if local.cluster != remote.cluster || local.partitions != remote.partitions {
        return Err(Error::Mismatch {
            reason: format!(
                "local {}/{} partitions, remote {}/{} partitions",
                local.cluster, local.partitions, remote.cluster, remote.partitions
            ),
        });
    }
    let key = |ring: &Ring| (ring.epoch, ring.content_hash());
    Ok(if key(remote) > key(local) {
        remote
    } else {
        local
    })
}

/// Members that will own partitions once the plan completes.
fn owns_after_plan(status: Status) -> bool {
    matches!(status, Status::Joining | Status::Up | Status::Down)
}

/// Recomputes the target owners from the current targets and rewrites the
/// transfers; bumps the epoch.
fn replan(mut next: Ring) -> Result<Ring> {
    let claimants: Vec<Claimant<'_>> = next
        .members
        .iter()
        .filter(|m| owns_after_plan(m.status))
        .map(|m| Claimant {
            id: m.id,
            rack: m.rack.as_deref(),
        })
        .collect();
    let targets = claim(&next.target_owners(), &claimants, next.replicas);
    assert_eq!(targets.len(), next.owners.len());
    next.transfers = next
        .owners
        .iter()
        .zip(&targets)
        .enumerate()
        .filter(|(_, (owner, target))| owner != target)
        .map(|(partition, (&source, &target))| Transfer {
            partition: partition as u32,
            source,
            target,
        })
        .collect();
    settle_statuses(&mut next);
    next.epoch += 1;
    next.validate()?;
    Ok(next)
}

/// Joining members with nothing left to receive are up; leaving members
/// that own nothing are removed.
fn settle_statuses(ring: &mut Ring) {
    for i in 0..ring.members.len() {
        let id = ring.members[i].id;
        let receiving = ring.transfers.iter().any(|t| t.target == id);
        let owning = ring.owners.contains(&id);
        match ring.members[i].status {
            Status::Joining if !receiving => ring.members[i].status = Status::Up,
            Status::Leaving if !owning => ring.members[i].status = Status::Removed,
            _ => {}
        }
    }
}

//! Goal: the planner moves the document forward one epoch at a time, flips
//! ownership only through completed transfers, walks members through their
//! statuses, and every node adopts the same document. Method: scripted
//! scenarios on small rings.

mod common;

use common::{grown, member, owned, settle};
use meridian_ring::{
    adopt, complete_transfer, partition_of, plan_join, plan_leave, set_status, Error, Ring, Status,
};

#[test]
fn partition_of_is_the_top_bits_of_the_engine_key_hash() {
    for key in [&b""[..], b"a", b"user:42", &[0xff; 300]] {
        let hash = meridian_engine::format::key_hash(key);
        assert_eq!(partition_of(key, 256), (hash >> 56) as u32);
        assert_eq!(partition_of(key, 65_536), (hash >> 48) as u32);
        assert_eq!(partition_of(key, 8), (hash >> 61) as u32);
    }
}

#[test]
fn settings_outside_their_limits_are_refused() {
    for (partitions, replicas) in [(4, 3), (100, 3), (131_072, 3), (256, 0), (256, 6)] {
        let refused = Ring::new("c", partitions, replicas, member(0, 0));
        assert!(
            matches!(refused, Err(Error::InvalidSetting { .. })),
            "{partitions}/{replicas}"
        );
    }
}

#[test]
fn a_join_is_pending_until_its_transfers_complete() {
    let ring = grown(64, 3, 3, 0);
    let epoch = ring.epoch();
    let planned = plan_join(&ring, member(3, 0)).expect("join");
    assert_eq!(planned.epoch(), epoch + 1);
    assert_eq!(planned.member(3).map(|m| m.status), Some(Status::Joining));
    assert_eq!(
        owned(&planned, 3),
        0,
        "nothing flips before a transfer completes"
    );
    assert_eq!(planned.transfers().len(), 16);
    assert!(planned.transfers().iter().all(|t| t.target == 3));
    let first = planned.transfers()[0];
    let stepped = complete_transfer(&planned, first.partition).expect("complete");
    assert_eq!(stepped.owner(first.partition), 3);
    assert_eq!(stepped.epoch(), epoch + 2);
    assert!(matches!(
        complete_transfer(&stepped, first.partition),
        Err(Error::NoTransfer { .. })
    ));
    let done = settle(stepped);
    assert_eq!(done.member(3).map(|m| m.status), Some(Status::Up));
    assert_eq!(owned(&done, 3), 16);
}

#[test]
fn a_leaver_is_removed_once_it_owns_nothing_and_may_rejoin() {
    let ring = grown(64, 2, 4, 0);
    let planned = plan_leave(&ring, 1).expect("leave");
    assert_eq!(planned.member(1).map(|m| m.status), Some(Status::Leaving));
    assert!(planned.transfers().iter().all(|t| t.source == 1));
    let done = settle(planned);
    assert_eq!(done.member(1).map(|m| m.status), Some(Status::Removed));
    assert!(plan_leave(&done, 1).is_err());
    assert!(plan_join(&done, member(2, 0)).is_err(), "already a member");
    let back = settle(plan_join(&done, member(1, 0)).expect("rejoin"));
    assert_eq!(back.member(1).map(|m| m.status), Some(Status::Up));
}

#[test]
fn the_last_member_cannot_leave() {
    let ring = grown(8, 1, 1, 0);
    assert!(matches!(
        plan_leave(&ring, 0),
        Err(Error::Refused { node: 0, .. })
    ));
}

#[test]
fn plans_compose_while_transfers_are_pending() {
    let ring = grown(64, 3, 4, 0);
    let first = plan_join(&ring, member(4, 0)).expect("join 4");
    let second = plan_join(&first, member(5, 0)).expect("join 5");
    let target = second.target_owners();
    assert!(target.contains(&4) && target.contains(&5));
    assert_eq!(meridian_ring::window_violations(&target, 3), 0);
    let done = settle(second);
    assert_eq!(done.owners(), &target[..]);
}

#[test]
fn the_claimant_is_the_lowest_member_that_is_up() {
    let ring = grown(64, 3, 4, 0);
    assert_eq!(ring.claimant(), Some(0));
    let ring = set_status(&ring, 0, Status::Down).expect("down");
    assert_eq!(ring.claimant(), Some(1));
    assert!(set_status(&ring, 0, Status::Leaving).is_err());
    let ring = set_status(&ring, 0, Status::Up).expect("up");
    assert_eq!(ring.claimant(), Some(0));
}

#[test]
fn adopt_keeps_the_higher_epoch_and_breaks_ties_the_same_way_everywhere() {
    let ring = grown(64, 3, 4, 0);
    let newer = plan_join(&ring, member(9, 0)).expect("join");
    assert_eq!(adopt(&ring, &newer).expect("same cluster"), &newer);
    assert_eq!(adopt(&newer, &ring).expect("same cluster"), &newer);
    // Two different plans of the same epoch: both sides pick the same one.
    let other = plan_join(&ring, member(8, 0)).expect("join");
    assert_eq!(other.epoch(), newer.epoch());
    let here = adopt(&newer, &other).expect("same cluster");
    let there = adopt(&other, &newer).expect("same cluster");
    assert_eq!(here, there);
    let foreign = Ring::new("elsewhere", 64, 3, member(0, 0)).expect("ring");
    assert!(matches!(
        adopt(&ring, &foreign),
        Err(Error::Mismatch { .. })
    ));
}

/// `complete_all` gives the ring that completing each pending transfer in
/// turn gives: owners, statuses, epoch, no transfer left; for a join and
/// for a leave, with racks.
#[test]
fn completing_all_transfers_at_once_equals_one_by_one() {
    let grown = grown(256, 3, 7, 4);
    let joined = meridian_ring::plan_join(&grown, member(7, 4)).expect("join");
    let left = meridian_ring::plan_leave(&grown, 3).expect("leave");
    for planned in [joined, left] {
        assert!(!planned.transfers().is_empty());
        let at_once = meridian_ring::complete_all(&planned).expect("complete all");
        let one_by_one = settle(planned.clone());
        assert_eq!(at_once.owners(), one_by_one.owners());
        assert_eq!(at_once.members(), one_by_one.members());
        assert_eq!(at_once.epoch(), one_by_one.epoch());
        assert!(at_once.transfers().is_empty());
        assert_eq!(at_once.content_hash(), one_by_one.content_hash());
    }
}

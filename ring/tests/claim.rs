//! Goal: the claim keeps N consecutive partitions on N distinct nodes (and
//! racks) and moves close to the minimum on every join and leave.
//! Method: grow clusters one join at a time from 1 to 64 nodes for every N
//! in 1..=5 (exhaustive, deterministic), then random join/leave sequences
//! (proptest), checking distinctness after every step and movement against
//! 1.25 × the ideal (the joiner's fair share; the leaver's own partitions).

mod common;

use common::{grown, member, movement_bound, owned, rack_violations, settle};
use meridian_ring::{claim::count_short_windows, plan_join, plan_leave, window_violations, Ring};
use proptest::prelude::*;

const PARTITIONS: u32 = 256;

/// Checks the distinctness guarantee of `claim`'s module doc for a settled
/// ring of `size` nodes.
fn assert_distinct(ring: &Ring, size: usize, context: &str) {
    let replicas = usize::from(ring.replicas());
    let violations = window_violations(ring.owners(), ring.replicas());
    let partitions = ring.partitions() as usize;
    if size == replicas && partitions.rem_euclid(replicas) != 0 {
        // Exactly N nodes cannot tile the ring: the wrap-around leaves at
        // most N-1 windows short, each by one node.
        assert!(
            violations < replicas,
            "{context}: {violations} short windows"
        );
        let short = count_short_windows(ring.owners(), replicas, replicas - 1);
        assert_eq!(short, 0, "{context}: a window short by more than one node");
    } else {
        assert_eq!(violations, 0, "{context}: windows not distinct");
    }
}

#[test]
fn growing_from_1_to_64_nodes_keeps_windows_distinct_and_moves_one_share() {
    for replicas in 1..=5u8 {
        let mut ring = Ring::new("test", PARTITIONS, replicas, member(0, 0)).expect("ring");
        for size in 2..=64u16 {
            let planned = plan_join(&ring, member(size - 1, 0)).expect("join");
            let moved = planned.transfers().len();
            let context = format!("N={replicas} join to {size} nodes");
            if usize::from(size) > usize::from(replicas) {
                let bound = movement_bound(f64::from(PARTITIONS) / f64::from(size));
                assert!(moved <= bound, "{context}: moved {moved} > {bound}");
            }
            ring = settle(planned);
            assert_distinct(&ring, usize::from(size), &context);
            let least = (0..size).map(|id| owned(&ring, id)).min().unwrap_or(0);
            assert!(least > 0, "{context}: a node owns nothing");
        }
    }
}

#[test]
fn growing_with_racks_keeps_racks_distinct() {
    for replicas in 2..=5u8 {
        for racks in [u16::from(replicas) + 1, u16::from(replicas) + 2] {
            let mut ring = Ring::new("test", PARTITIONS, replicas, member(0, racks)).expect("ring");
            for size in 2..=64u16 {
                ring = settle(plan_join(&ring, member(size - 1, racks)).expect("join"));
                if usize::from(size) > usize::from(replicas) {
                    let context = format!("N={replicas} racks={racks} size={size}");
                    assert_eq!(rack_violations(&ring), 0, "{context}: racks");
                    assert_eq!(
                        window_violations(ring.owners(), replicas),
                        0,
                        "{context}: nodes"
                    );
                }
            }
        }
    }
}

#[test]
fn fewer_nodes_than_n_are_spread_as_far_as_possible() {
    // Two nodes, N = 3: every window of three holds both.
    let ring = grown(PARTITIONS, 3, 2, 0);
    assert_eq!(count_short_windows(ring.owners(), 3, 2), 0);
    assert_eq!(count_short_windows(ring.owners(), 2, 2), 0);
    // One node: it owns everything.
    let ring = grown(PARTITIONS, 5, 1, 0);
    assert!(ring.owners().iter().all(|&o| o == 0));
}

proptest! {
    #![proptest_config(common::walk_config(64))]

    /// Random walks of joins and leaves: distinct windows after every step;
    /// a leave that leaves at least 2N nodes moves at most
    /// 1.25 × what the leaver owned, a join at most 1.25 × a fair share.
    #[test]
    fn random_joins_and_leaves_keep_the_guarantees(
        replicas in 1..=5u8,
        start in 6..=40u16,
        steps in proptest::collection::vec((any::<bool>(), any::<u16>()), 1..12),
    ) {
        let mut ring = grown(PARTITIONS, replicas, start, 0);
        let mut alive: Vec<u16> = (0..start).collect();
        let mut next_id = start;
        for (join, pick) in steps {
            let size = alive.len();
            if join || size <= 2 * usize::from(replicas) {
                let planned = plan_join(&ring, member(next_id, 0)).expect("join");
                let bound = movement_bound(f64::from(PARTITIONS) / (size + 1) as f64);
                prop_assert!(planned.transfers().len() <= bound, "join to {} moved {}", size + 1, planned.transfers().len());
                alive.push(next_id);
                next_id += 1;
                ring = settle(planned);
            } else {
                let node = alive.remove(usize::from(pick) % size);
                let had = owned(&ring, node);
                let planned = plan_leave(&ring, node).expect("leave");
                let bound = movement_bound(had as f64);
                prop_assert!(planned.transfers().len() <= bound, "leave to {} moved {} of {had}", size - 1, planned.transfers().len());
                ring = settle(planned);
                prop_assert_eq!(owned(&ring, node), 0);
            }
            assert_distinct(&ring, alive.len(), "random walk");
        }
    }
}

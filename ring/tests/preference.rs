//! Goal: preference lists never repeat a node, never name a down node, and
//! name min(N, live nodes) nodes, each fallback standing in for a down
//! primary. Method: random settled rings of 1..=20 nodes with random nodes
//! down, every partition checked.

mod common;

use common::grown;
use meridian_ring::{set_status, Role, Status};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn preference_lists_skip_down_nodes_to_distinct_fallbacks(
        replicas in 1..=5u8,
        size in 1..=20u16,
        down_mask in any::<u32>(),
    ) {
        let mut ring = grown(64, replicas, size, 0);
        for node in 0..size {
            if down_mask & (1 << node) != 0 {
                ring = set_status(&ring, node, Status::Down).expect("mark down");
            }
        }
        let live = (0..size).filter(|&n| down_mask & (1 << n) == 0).count();
        for partition in 0..ring.partitions() {
            let list = ring.preference_list(partition);
            let nodes: Vec<u16> = list.nodes().collect();
            let mut sorted = nodes.clone();
            sorted.sort_unstable();
            sorted.dedup();
            prop_assert_eq!(sorted.len(), nodes.len(), "repeated node in {:?}", list);
            prop_assert!(nodes.iter().all(|&n| down_mask & (1 << n) == 0), "down node in {:?}", list);
            prop_assert_eq!(nodes.len(), usize::from(replicas).min(live));
            let primaries = ring.primaries(partition);
            prop_assert_eq!(primaries.len(), usize::from(replicas).min(usize::from(size)));
            for replica in &list.replicas {
                match replica.role {
                    Role::Primary => prop_assert!(primaries.contains(&replica.node)),
                    Role::Fallback { primary } => {
                        prop_assert!(primaries.contains(&primary));
                        prop_assert!(down_mask & (1 << primary) != 0);
                        prop_assert!(!primaries.contains(&replica.node));
                    }
                }
            }
        }
    }
}

#[test]
fn a_down_primary_gets_the_next_live_node_as_its_fallback() {
    let ring = grown(64, 3, 5, 0);
    let primaries = ring.primaries(0);
    assert_eq!(primaries.len(), 3);
    // The claim puts the first three partitions on three distinct nodes.
    assert_eq!(primaries, ring.owners()[..3].to_vec());
    let ring = set_status(&ring, primaries[1], Status::Down).expect("down");
    let list = ring.preference_list(0);
    assert_eq!(list.replicas.len(), 3);
    assert_eq!(list.first(), Some(primaries[0]));
    let fallback = list.replicas[2];
    assert_eq!(
        fallback.role,
        Role::Fallback {
            primary: primaries[1]
        }
    );
    // The fallback is the first owner after the primaries, in ring order.
    let next = ring
        .owners()
        .iter()
        .find(|o| !primaries.contains(o))
        .copied();
    assert_eq!(Some(fallback.node), next);
    assert!(list.uncovered.is_empty());
}

#[test]
fn with_every_node_down_the_list_is_empty_and_uncovered() {
    let mut ring = grown(8, 2, 2, 0);
    for node in 0..2 {
        ring = set_status(&ring, node, Status::Down).expect("down");
    }
    let list = ring.preference_list(3);
    assert!(list.replicas.is_empty());
    assert_eq!(list.uncovered.len(), 2);
}

#[test]
fn a_caller_supplied_liveness_overrides_member_status() {
    let ring = grown(64, 3, 6, 0);
    let primaries = ring.primaries(10);
    let list = ring.preference_list_with(10, |node| node != primaries[0]);
    assert!(!list.nodes().any(|n| n == primaries[0]));
    assert_eq!(list.replicas.len(), 3);
}

/// `rack_spread` counts the racks of the owners and the partitions whose
/// primaries sit on fewer than min(N, racks) racks, checked against a count
/// made here from the primaries and the members' racks.
#[test]
fn rack_spread_counts_partitions_whose_replicas_share_a_rack() {
    let spread = |ring: &meridian_ring::Ring| ring.rack_spread(&ring.all_primaries());
    assert_eq!(spread(&grown(64, 3, 5, 0)), (0, 0), "no racks");
    assert_eq!(spread(&grown(64, 3, 8, 4)), (4, 0), "4 racks of 2");
    // Four nodes in rack a and one in rack b (N=3): rack b would need every
    // other partition, more than one node can hold and stay 3 apart, so
    // some partitions' replicas sit on rack a alone.
    let mut ring =
        meridian_ring::Ring::new("test", 64, 3, common::member(0, 0).in_rack("a")).expect("ring");
    for (id, rack) in [(1, "a"), (2, "a"), (3, "a"), (4, "b")] {
        let joining = common::member(id, 0).in_rack(rack);
        ring = common::settle(meridian_ring::plan_join(&ring, joining).expect("join"));
    }
    let sharing = (0..ring.partitions())
        .filter(|&p| {
            let racks: std::collections::BTreeSet<_> = ring
                .primaries(p)
                .into_iter()
                .map(|id| ring.member(id).and_then(|m| m.rack.clone()))
                .collect();
            racks.len() < 2
        })
        .count() as u32;
    assert!(sharing > 0, "rack b is in every partition's replicas");
    assert_eq!(spread(&ring), (2, sharing));
}

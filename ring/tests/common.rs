//! Helpers shared by the ring's test files.
#![allow(dead_code)]

use meridian_ring::{complete_transfer, plan_join, Member, NodeId, Ring};

pub fn member(id: NodeId, racks: u16) -> Member {
    let member = Member::new(id, format!("10.0.0.{id}:7000"));
    if racks > 0 {
        member.in_rack(format!("rack-{}", id % racks))
    } else {
        member
    }
}

/// Completes every pending transfer.
pub fn settle(mut ring: Ring) -> Ring {
    while let Some(transfer) = ring.transfers().first().copied() {
        ring = complete_transfer(&ring, transfer.partition).expect("pending transfer completes");
    }
    assert!(ring.transfers().is_empty());
    ring
}

/// A settled ring of `size` nodes (ids 0..size) grown one join at a time.
pub fn grown(partitions: u32, replicas: u8, size: u16, racks: u16) -> Ring {
    let mut ring = Ring::new("test", partitions, replicas, member(0, racks)).expect("ring");
    for id in 1..size {
        ring = settle(plan_join(&ring, member(id, racks)).expect("join"));
    }
    ring
}

pub fn owned(ring: &Ring, node: NodeId) -> usize {
    ring.owners().iter().filter(|&&o| o == node).count()
}

/// Windows of N consecutive partitions whose racks are not
/// `min(N, racks in use)` distinct.
pub fn rack_violations(ring: &Ring) -> usize {
    let racks: Vec<String> = ring
        .owners()
        .iter()
        .map(|&o| {
            ring.member(o)
                .and_then(|m| m.rack.clone())
                .unwrap_or_default()
        })
        .collect();
    let distinct = racks
        .iter()
        .collect::<std::collections::BTreeSet<_>>()
        .len();
    let replicas = usize::from(ring.replicas());
    meridian_ring::claim::count_short_windows(&racks, replicas, replicas.min(distinct))
}

/// The most a plan may move: 1.25 × the ideal, rounded up.
pub fn movement_bound(ideal: f64) -> usize {
    (1.25 * ideal).ceil() as usize
}

/// The proptest settings of the claim's random walks.
///
/// The walks check measured bounds (how much a join or a leave moves), not
/// proven ones, so a run of the test suite replays the same walks every time
/// (a fixed seed; `default_walks` of them) and never fails on a walk no one
/// has seen. To search for new failures, set `CLAIM_WALKS` to a number of
/// walks: they then start from a random seed, and a failure is saved to the
/// test's `.proptest-regressions` file, which every later run replays first.
pub fn walk_config(default_walks: u32) -> proptest::test_runner::Config {
    use proptest::test_runner::{Config, RngSeed};
    let soak: Option<u32> = std::env::var("CLAIM_WALKS")
        .ok()
        .and_then(|v| v.parse().ok());
    Config {
        cases: soak.unwrap_or(default_walks),
        rng_seed: match soak {
            Some(_) => RngSeed::Random,
            None => RngSeed::Fixed(WALK_SEED),
        },
        ..Config::default()
    }
}

/// The seed of the walks a test run replays.
const WALK_SEED: u64 = 0x6d65_7269_6469_616e;

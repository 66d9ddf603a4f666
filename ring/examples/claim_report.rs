//! Prints how the claim behaves as a cluster grows from 1 to 64 nodes and
//! shrinks back: partitions moved against the ideal, windows that are not
//! distinct, and the spread of shares.
//!
//! `cargo run --release -p meridian-ring --example claim_report [partitions] [racks]`

use meridian_ring::{complete_transfer, plan_join, plan_leave, Member, NodeId, Ring};

fn settle(mut ring: Ring) -> Ring {
    while let Some(t) = ring.transfers().first().copied() {
        ring = complete_transfer(&ring, t.partition).expect("pending transfer");
    }
    ring
}

fn rack_windows(ring: &Ring) -> usize {
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
    let n = usize::from(ring.replicas());
    meridian_ring::claim::count_short_windows(&racks, n, n.min(distinct))
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let partitions: u32 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(256);
    let racks: u16 = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(0);
    let member = |id: NodeId| {
        let m = Member::new(id, format!("10.0.0.{id}:7000"));
        if racks > 0 {
            m.in_rack(format!("r{}", id % racks))
        } else {
            m
        }
    };
    for replicas in 1..=5u8 {
        let mut ring = Ring::new("report", partitions, replicas, member(0)).expect("ring");
        let mut worst_join = 0.0f64;
        let mut worst_leave = 0.0f64;
        let mut bad_sizes = Vec::new();
        for size in 2..=64u16 {
            let next = plan_join(&ring, member(size - 1)).expect("join");
            let moved = next.transfers().len() as f64;
            let ideal = f64::from(partitions) / f64::from(size);
            if size as usize > usize::from(replicas) {
                worst_join = worst_join.max(moved / ideal);
            }
            ring = settle(next);
            let v = meridian_ring::window_violations(ring.owners(), replicas);
            let rv = if racks > 0 { rack_windows(&ring) } else { 0 };
            let loads: Vec<usize> = (0..size)
                .map(|id| ring.owners().iter().filter(|&&o| o == id).count())
                .collect();
            let spread = (
                loads.iter().min().copied().unwrap_or(0),
                loads.iter().max().copied().unwrap_or(0),
            );
            if v > 0 || rv > 0 || moved / ideal > 1.25 {
                bad_sizes.push(format!(
                    "{size}:v{v}/r{rv}/m{:.2}/{spread:?}",
                    moved / ideal
                ));
            }
        }
        // shrink: leave nodes in a scrambled order down to 1
        let mut alive: Vec<NodeId> = (0..64).collect();
        let mut step = 0usize;
        while alive.len() > 1 {
            step = (step * 7 + 3) % alive.len();
            let node = alive.remove(step);
            let owned = ring.owners().iter().filter(|&&o| o == node).count();
            let next = plan_leave(&ring, node).expect("leave");
            let moved = next.transfers().len() as f64;
            let ideal = f64::from(partitions) / (alive.len() as f64 + 1.0);
            if alive.len() >= usize::from(replicas) {
                worst_leave = worst_leave.max(moved / ideal);
            }
            ring = settle(next);
            let v = meridian_ring::window_violations(ring.owners(), replicas);
            let rv = if racks > 0 { rack_windows(&ring) } else { 0 };
            if v > 0 || rv > 0 || moved / ideal > 1.25 {
                bad_sizes.push(format!(
                    "-{}:v{v}/r{rv}/m{:.2}(owned {owned})",
                    alive.len(),
                    moved / ideal
                ));
            }
        }
        println!("N={replicas} worst join {worst_join:.3} worst leave {worst_leave:.3} issues {bad_sizes:?}");
    }
}

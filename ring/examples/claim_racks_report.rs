//! Goal: a report, not a check: the worst movement ratio with racks per
//! (N, racks), growing 1..64 then shrinking in a scrambled order, and each
//! size where movement passes 1.25 × the ideal (`size:ratio`, leaves as
//! `-size:moved/owned`) or a window is short after a join or a leave
//! (`size:vNODESrRACKS`, `-size:vNODESrRACKS`).
//! `cargo run --release -p meridian-ring --example claim_racks_report`
#[path = "../tests/common.rs"]
mod common;
use common::{member, owned, rack_violations, settle};
use meridian_ring::{plan_join, plan_leave, window_violations, Ring};

fn main() {
    for replicas in 2..=5u8 {
        for racks in 1..=u16::from(replicas) + 2 {
            let mut ring = Ring::new("test", 256, replicas, member(0, racks)).expect("ring");
            let mut worst = (0.0f64, 0u16);
            let mut bad = Vec::new();
            for size in 2..=64u16 {
                let planned = plan_join(&ring, member(size - 1, racks)).expect("join");
                let ratio = planned.transfers().len() as f64 / (256.0 / f64::from(size));
                if planned.transfers().len() > common::movement_bound(256.0 / f64::from(size)) {
                    bad.push(format!("{size}:{ratio:.2}"));
                }
                if ratio > worst.0 {
                    worst = (ratio, size);
                }
                ring = settle(planned);
                let (v, r) = (
                    window_violations(ring.owners(), replicas),
                    rack_violations(&ring),
                );
                if v + r > 0 {
                    bad.push(format!("{size}:v{v}r{r}"));
                }
            }
            let mut lworst = (0.0f64, 0usize);
            let mut alive: Vec<u16> = (0..64).collect();
            let mut step = 0usize;
            while alive.len() > 1 {
                step = (step * 7 + 3) % alive.len();
                let node = alive.remove(step);
                let had = owned(&ring, node);
                let planned = plan_leave(&ring, node).expect("leave");
                let ratio = planned.transfers().len() as f64 / had as f64;
                if alive.len() >= 2 * usize::from(replicas) && ratio > lworst.0 {
                    lworst = (ratio, alive.len());
                }
                if alive.len() >= 2 * usize::from(replicas)
                    && planned.transfers().len() > common::movement_bound(had as f64)
                {
                    bad.push(format!(
                        "-{}:{}/{had}",
                        alive.len(),
                        planned.transfers().len()
                    ));
                }
                ring = settle(planned);
                let (v, r) = (
                    window_violations(ring.owners(), replicas),
                    rack_violations(&ring),
                );
                if v + r > 0 && alive.len() > usize::from(replicas) {
                    bad.push(format!("-{}:v{v}r{r}", alive.len()));
                }
            }
            println!("N={replicas} racks={racks} join worst {:.2}@{} leave(>=2N) worst {:.2}@{} issues {:?}", worst.0, worst.1, lworst.0, lworst.1, bad);
        }
    }
}

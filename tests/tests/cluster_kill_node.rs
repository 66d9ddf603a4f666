//! Goal: in a three-node ring of two-shard members (N = 3, W = 2, R = 2,
//! `durability = "sync"`) a member SIGKILLed under write load loses no
//! acknowledged write, the survivors keep taking writes, and the member,
//! once back, catches up.
//!
//! Method: two writer threads pipeline PUTs of unique keys through members
//! 1 and 2 and record every acknowledgement. Member 3 is SIGKILLed once
//! some writes are acknowledged; the writers go on until as many again are
//! acknowledged without it (none may fail: two replicas are enough). Every
//! acknowledged write must read back (R = 2) through each survivor. Member
//! 3 restarts on its own directory; anti-entropy must bring all three to
//! equal digests for every partition. Last, members 1 and 2 stop and member
//! 3 alone must answer every acknowledged key (R = 1): it holds them all
//! itself.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use meridian_tests::cluster::{read_all, TestCluster};
use meridian_tests::load::write_until_stopped;
use meridian_tests::wait_until;

/// Acknowledged writes before the kill, and again after it.
const WRITES_PER_PHASE: usize = 1000;
/// Bound on each load phase and on a writer's whole run.
const LOAD_DEADLINE: Duration = Duration::from_secs(30);
const CONVERGENCE_DEADLINE: Duration = Duration::from_secs(30);

#[test]
fn acknowledged_writes_survive_a_killed_member_and_reach_it_again() {
    let mut cluster = TestCluster::start(3, |config| {
        config
            .shards(2)
            .durability("sync")
            .set("cluster", "request_timeout_ms", "5000")
            .set("cluster", "anti_entropy_interval_ms", "100")
    });
    let acknowledged_count = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = [1, 2]
        .into_iter()
        .map(|id| {
            let config = cluster.node(id).client_config();
            let (count, stop) = (Arc::clone(&acknowledged_count), Arc::clone(&stop));
            let prefix = format!("through-{id}");
            std::thread::spawn(move || {
                write_until_stopped(config, prefix, count, stop, LOAD_DEADLINE * 2)
            })
        })
        .collect();
    let enough = |target: usize| {
        wait_until(Instant::now() + LOAD_DEADLINE, || {
            acknowledged_count.load(Ordering::SeqCst) >= target
        })
    };
    assert!(
        enough(WRITES_PER_PHASE),
        "fewer than {WRITES_PER_PHASE} writes acknowledged with all members up"
    );
    cluster.node_mut(3).kill();
    let at_kill = acknowledged_count.load(Ordering::SeqCst);
    let loaded = enough(at_kill + WRITES_PER_PHASE);
    stop.store(true, Ordering::SeqCst);
    let mut acknowledged = Vec::new();
    for writer in writers {
        let report = writer.join().expect("writer thread");
        assert!(
            report.error_answers.is_empty(),
            "writes failed with two of three replicas up: {:?}",
            &report.error_answers[..report.error_answers.len().min(5)]
        );
        acknowledged.extend(report.acknowledged);
    }
    assert!(
        loaded,
        "fewer than {WRITES_PER_PHASE} writes acknowledged after the kill"
    );
    println!(
        "{} writes acknowledged, {at_kill} before the kill",
        acknowledged.len()
    );
    for id in [1, 2] {
        read_all(
            &mut cluster.client(id),
            &acknowledged,
            None,
            &format!("through member {id} with member 3 down"),
        );
    }

    // CLUSTERINFO shows what the failure detector saw: member 3 down, then up.
    let status_of_3 = |cluster: &TestCluster| -> String {
        let info = cluster.client(1).clusterinfo().expect("clusterinfo");
        let info: serde_json::Value = serde_json::from_str(&info).expect("clusterinfo is JSON");
        assert_eq!(info["replicas"], 3);
        let members = info["members"].as_array().expect("members").clone();
        assert_eq!(members.len(), 3);
        let member = members
            .iter()
            .find(|m| m["node_id"] == 3)
            .expect("member 3 listed");
        member["status"].as_str().expect("status").to_string()
    };
    assert!(
        wait_until(Instant::now() + CONVERGENCE_DEADLINE, || status_of_3(
            &cluster
        ) == "down"),
        "member 1 never reported member 3 down"
    );
    cluster.node_mut(3).restart();
    assert!(
        wait_until(Instant::now() + CONVERGENCE_DEADLINE, || status_of_3(
            &cluster
        ) == "up"),
        "member 1 never reported member 3 up again"
    );
    let restarted = Instant::now();
    let converged =
        cluster.wait_for_equal_digests(&[1, 2, 3], 8, Instant::now() + CONVERGENCE_DEADLINE);
    assert!(
        converged,
        "partition digests still differ after {CONVERGENCE_DEADLINE:?}: {:?}",
        cluster.all_digests(&[1, 2, 3])
    );
    println!("converged {:?} after the restart", restarted.elapsed());
    assert!(
        cluster.cluster_counter("anti_entropy_repairs") > 0,
        "the members converged without an anti-entropy repair: member 3 missed nothing?"
    );

    cluster.node_mut(1).stop();
    cluster.node_mut(2).stop();
    read_all(
        &mut cluster.client(3),
        &acknowledged,
        Some(1),
        "member 3 alone, after catching up",
    );
    cluster.stop_all();
}

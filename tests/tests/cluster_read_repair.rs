//! Goal: a read that finds a stale replica answers with the newest value
//! and repairs the stale replica.
//!
//! Method: a three-node ring with anti-entropy rounds an hour apart (so
//! only reads can repair; three members have no fallbacks, so no hints
//! either) takes a set of keys. Member 3 is SIGKILLed, one key is
//! overwritten with W = 2, and member 3 restarts with the old value. A GET
//! of that key with R = 3 (every replica must answer, the stale one too)
//! must return the new value; then member 3's digests must come to equal
//! the others' for every partition, with the read repair counted.

use std::time::{Duration, Instant};

use meridian_net::{ErrorCode, Request, Response};
use meridian_tests::cluster::{entries, put_all, TestCluster};
use meridian_tests::wait_until;

const KEYS: usize = 64;
const REPAIR_DEADLINE: Duration = Duration::from_secs(20);

#[test]
fn a_quorum_read_returns_the_newest_value_and_repairs_the_stale_replica() {
    let mut cluster = TestCluster::start(3, |config| {
        config.set("cluster", "anti_entropy_interval_ms", "3600000")
    });
    let keys = entries("repair", KEYS, "old");
    put_all(&mut cluster.client(1), &keys, "the first round");
    // W = 2: the third replica may still be applying the last writes.
    let settled = wait_until(Instant::now() + REPAIR_DEADLINE, || {
        let digests = cluster.partition_digests(3);
        digests.as_ref().is_some_and(|digests| !digests.is_empty())
            && [1, 2]
                .iter()
                .all(|&id| cluster.partition_digests(id) == digests)
    });
    assert!(
        settled,
        "the members never agreed on the first round: {:?}",
        cluster.all_digests(&[1, 2, 3])
    );
    let digests_before = cluster.partition_digests(3).expect("member 3 runs");

    cluster.node_mut(3).kill();
    let (key, _) = &keys[KEYS / 2];
    let new_value = format!("{key}=new").into_bytes();
    cluster
        .client(1)
        .put(key.as_bytes(), &new_value)
        .expect("a W = 2 write with two members up");
    cluster.node_mut(3).restart();
    assert_eq!(
        cluster.partition_digests(3).as_ref(),
        Some(&digests_before),
        "member 3 should come back with the data it had (the old value)"
    );
    assert_ne!(
        cluster.partition_digests(1).as_ref(),
        Some(&digests_before),
        "the overwrite should have changed member 1's digests"
    );

    // Member 1 must see member 3 up again before an R = 3 read can be
    // coordinated; until then the read is refused as QuorumUnavailable.
    let mut client = cluster.client(1);
    let read = Request::Get {
        key: bytes::Bytes::copy_from_slice(key.as_bytes()),
        read_quorum: Some(3),
    };
    let mut answer = None;
    let answered = wait_until(Instant::now() + REPAIR_DEADLINE, || {
        match client.call(&read).expect("GET R = 3") {
            Response::Error {
                code: ErrorCode::QuorumUnavailable,
                ..
            } => false,
            other => {
                answer = Some(other);
                true
            }
        }
    });
    assert!(
        answered,
        "no R = 3 read succeeded within {REPAIR_DEADLINE:?}"
    );
    match answer {
        Some(Response::Value(found)) => assert_eq!(
            found.value[..],
            new_value[..],
            "the R = 3 read returned {:?}",
            String::from_utf8_lossy(&found.value)
        ),
        other => panic!("the R = 3 read answered {other:?}"),
    }

    let repaired = wait_until(Instant::now() + REPAIR_DEADLINE, || {
        let digests: Vec<_> = [1, 2, 3]
            .into_iter()
            .map(|id| cluster.partition_digests(id))
            .collect();
        digests.iter().all(|other| other == &digests[0])
            && cluster.shard_counter(1, "read_repairs") > 0
    });
    assert!(
        repaired,
        "member 3 not repaired within {REPAIR_DEADLINE:?}: read_repairs = {}, digests {:?}",
        cluster.shard_counter(1, "read_repairs"),
        cluster.all_digests(&[1, 2, 3])
    );
    assert_eq!(cluster.cluster_counter("anti_entropy_repairs"), 0);
    cluster.stop_all();
}

//! Goal: with a primary down, writes go to a fallback with a hint, and the
//! hints alone bring the primary up to date once it is back.
//!
//! Method: a four-node ring (N = 3, W = 2) with anti-entropy rounds an hour
//! apart, so only hints can repair. A first set of keys is written with
//! every member up and reaches all three primaries of its partition. Member
//! 4 is SIGKILLed; the test waits until each survivor counts it down (an R
//! = 3 read of keys in every partition succeeds only once the survivor
//! asks a fallback instead of member 4), then writes a second set through
//! all three survivors and overwrites and deletes some of the first: every
//! write must succeed. Member 4 restarts; hints
//! must be delivered and every partition's primaries must hold equal data.
//!
//! The check of "the primaries agree" without computing the ring in the
//! test: for each partition, the nodes reporting it, grouped by digest,
//! must include a group of N = 3 equal digests (its primaries); a fourth
//! node reporting it is a fallback, which keeps its copy of the hinted
//! writes and so differs. Member 4 was never a fallback (it was either
//! down or everyone was up), so every partition it reports must be one of
//! its primaries: its digest must be in that group of 3.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use meridian_net::{Request, Response};
use meridian_tests::cluster::{entries, pipeline, put_all, read_all, TestCluster};
use meridian_tests::wait_until;

const REPLICAS: usize = 3;
const FIRST_KEYS: usize = 300;
/// Written through each survivor while member 4 is down.
const SECOND_KEYS_PER_MEMBER: usize = 200;
const PROBE_KEYS: usize = 64;
const DEADLINE: Duration = Duration::from_secs(30);

/// Why the partitions' primaries do not agree yet, or `None` when they do.
fn disagreement(digests: &HashMap<usize, Option<BTreeMap<u32, u64>>>) -> Option<String> {
    let mut holders: BTreeMap<u32, BTreeMap<u64, Vec<usize>>> = BTreeMap::new();
    for (&id, node_digests) in digests {
        let Some(node_digests) = node_digests else {
            return Some(format!("member {id} gave no STATS"));
        };
        for (&partition, &digest) in node_digests {
            let group = holders.entry(partition).or_default().entry(digest);
            group.or_default().push(id);
        }
    }
    if holders.is_empty() {
        return Some("no member reports any data".to_string());
    }
    for (partition, groups) in &holders {
        let Some(primaries) = groups.values().find(|ids| ids.len() >= REPLICAS) else {
            return Some(format!(
                "partition {partition}: no {REPLICAS} members agree: {groups:?}"
            ));
        };
        if groups.values().flatten().any(|&id| id == 4) && !primaries.contains(&4) {
            return Some(format!(
                "partition {partition}: member 4 differs from the primaries: {groups:?}"
            ));
        }
    }
    None
}

/// True when every R = 3 read of the probe keys through member `id` is
/// answered. With member 4 dead, that means member `id` asks a fallback
/// instead: while it still counts member 4 up, the reads of the keys
/// member 4 is a primary for get two answers and are refused.
fn counts_member_4_down(cluster: &TestCluster, id: usize) -> bool {
    let reads: Vec<Request> = (0..PROBE_KEYS)
        .map(|index| Request::Get {
            key: bytes::Bytes::from(format!("probe-{index}")),
            read_quorum: Some(3),
        })
        .collect();
    pipeline(&mut cluster.client(id), &reads, "probe reads")
        .iter()
        .all(|answer| matches!(answer, Response::NotFound))
}

#[test]
fn hints_bring_a_restarted_primary_up_to_date() {
    let mut cluster = TestCluster::start(4, |config| {
        config
            .set("cluster", "anti_entropy_interval_ms", "3600000")
            .set("cluster", "hint_delivery_interval_ms", "200")
    });
    let all = [1, 2, 3, 4];
    let first = entries("before", FIRST_KEYS, "first");
    put_all(&mut cluster.client(1), &first, "all members up");
    let settled = wait_until(Instant::now() + DEADLINE, || {
        disagreement(&cluster.all_digests(&all)).is_none()
    });
    assert!(
        settled,
        "the primaries never agreed with every member up: {:?}",
        disagreement(&cluster.all_digests(&all))
    );

    cluster.node_mut(4).kill();
    for id in [1, 2, 3] {
        let noticed = wait_until(Instant::now() + DEADLINE, || {
            counts_member_4_down(&cluster, id)
        });
        assert!(noticed, "member {id} never counted member 4 down");
    }
    let mut second = Vec::new();
    for id in [1, 2, 3] {
        let batch = entries(&format!("during-{id}"), SECOND_KEYS_PER_MEMBER, "second");
        put_all(
            &mut cluster.client(id),
            &batch,
            &format!("through member {id}, member 4 down"),
        );
        second.extend(batch);
    }
    // Overwrites and deletes of the first set travel as hints too.
    let overwritten: Vec<(String, Vec<u8>)> = entries("before", FIRST_KEYS, "overwritten")
        .into_iter()
        .step_by(7)
        .collect();
    put_all(
        &mut cluster.client(2),
        &overwritten,
        "overwrites, member 4 down",
    );
    let deleted: Vec<String> = (3..FIRST_KEYS)
        .step_by(7)
        .map(|index| first[index].0.clone())
        .collect();
    let deletes: Vec<Request> = deleted
        .iter()
        .map(|key| meridian_net::client::core::delete_request(key.as_bytes()))
        .collect();
    for (key, answer) in deleted.iter().zip(pipeline(
        &mut cluster.client(3),
        &deletes,
        "deletes, member 4 down",
    )) {
        assert!(
            matches!(answer, Response::Written { .. }),
            "DELETE {key} answered {answer:?}"
        );
    }
    let mut expected: BTreeMap<String, Vec<u8>> = first.into_iter().collect();
    expected.extend(overwritten);
    for key in &deleted {
        expected.remove(key);
    }
    expected.extend(second);
    let expected: Vec<(String, Vec<u8>)> = expected.into_iter().collect();
    let survivors = [1, 2, 3];
    assert!(
        disagreement(&cluster.all_digests(&survivors)).is_some(),
        "the survivors alone look complete: no write went to a fallback"
    );
    assert_eq!(cluster.cluster_counter("hints_delivered"), 0);

    cluster.node_mut(4).restart();
    let repaired = wait_until(Instant::now() + DEADLINE, || {
        cluster.cluster_counter("hints_delivered") > 0
            && disagreement(&cluster.all_digests(&all)).is_none()
    });
    assert!(
        repaired,
        "member 4 not brought up to date by hints within {DEADLINE:?}: {} hints delivered; {:?}",
        cluster.cluster_counter("hints_delivered"),
        disagreement(&cluster.all_digests(&all))
    );
    let member_4 = cluster.partition_digests(4).expect("member 4 runs");
    assert!(!member_4.is_empty(), "member 4 holds no partition");
    println!(
        "{} hints delivered; member 4 holds partitions {:?}",
        cluster.cluster_counter("hints_delivered"),
        member_4.keys().collect::<Vec<_>>()
    );
    assert_eq!(cluster.cluster_counter("anti_entropy_repairs"), 0);
    let mut client = cluster.client(4);
    read_all(&mut client, &expected, None, "through member 4");
    let gets: Vec<Request> = deleted
        .iter()
        .map(|key| meridian_net::client::core::get_request(key.as_bytes()))
        .collect();
    for (key, answer) in deleted.iter().zip(pipeline(
        &mut client,
        &gets,
        "deleted keys through member 4",
    )) {
        assert!(
            matches!(answer, Response::NotFound),
            "deleted key {key} answered {answer:?}"
        );
    }
    cluster.stop_all();
}

//! Goal: with racks configured, the founding members and a node that joins
//! later put every partition's N replicas on N distinct racks; CLUSTERINFO
//! and `cluster status` show each member's rack and the spread; a node
//! restarted with another rack than the ring's is refused, naming both.
//!
//! Method: five founding members in racks a, a, b, c, d (N = 3, 16
//! partitions), each listed as `ID@HOST:PORT/RACK`. The spread is checked
//! from CLUSTERINFO's owners and racks, walking the ring as the preference
//! list does (the first N distinct owners from the partition on), not from
//! the server's own count. A sixth node with `node.rack = "b"` joins through
//! a seed; once its handoff is done the spread is checked again, with the
//! CLI's table. It is then stopped and started once with `node.rack = "e"`.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use meridian_tests::cluster::TestCluster;
use meridian_tests::wait_until;
use serde_json::Value;

const RACKS: [Option<&str>; 5] = [Some("a"), Some("a"), Some("b"), Some("c"), Some("d")];
const REPLICAS: usize = 3;
/// Bound on the join and its handoff.
const JOIN_DEADLINE: Duration = Duration::from_secs(30);

fn configure(config: meridian_tests::ServerConfig) -> meridian_tests::ServerConfig {
    config
        .set("storage", "partitions", "16")
        .set("cluster", "replicas", &REPLICAS.to_string())
}

/// The rack of every member, by node id.
fn racks_by_node(info: &Value) -> Vec<(u64, Option<String>)> {
    info["members"]
        .as_array()
        .expect("members")
        .iter()
        .map(|m| {
            (
                m["node_id"].as_u64().expect("node_id"),
                m["rack"].as_str().map(str::to_string),
            )
        })
        .collect()
}

/// Partitions whose first N distinct owners (walking the ring from the
/// partition on) sit on fewer than N racks.
fn partitions_sharing_a_rack(info: &Value) -> Vec<usize> {
    let racks = racks_by_node(info);
    let rack_of = |node: u64| {
        racks
            .iter()
            .find(|(id, _)| *id == node)
            .and_then(|(_, rack)| rack.clone())
            .unwrap_or_else(|| panic!("node {node} has no rack"))
    };
    let owners: Vec<u64> = info["owners"]
        .as_array()
        .expect("owners")
        .iter()
        .map(|o| o.as_u64().expect("an owner id"))
        .collect();
    (0..owners.len())
        .filter(|&partition| {
            let mut nodes: Vec<u64> = Vec::new();
            for step in 0..owners.len() {
                let owner = owners[(partition + step) % owners.len()];
                if !nodes.contains(&owner) {
                    nodes.push(owner);
                }
                if nodes.len() == REPLICAS {
                    break;
                }
            }
            let on: BTreeSet<String> = nodes.into_iter().map(rack_of).collect();
            on.len() < REPLICAS
        })
        .collect()
}

#[test]
fn replicas_sit_on_distinct_racks_and_a_node_keeps_its_rack() {
    let mut cluster = TestCluster::start_in_racks(&RACKS, configure);
    let info = cluster
        .try_cluster_info(1)
        .expect("CLUSTERINFO of member 1");
    let expected: Vec<(u64, Option<String>)> = RACKS
        .iter()
        .enumerate()
        .map(|(index, rack)| (index as u64 + 1, rack.map(str::to_string)))
        .collect();
    assert_eq!(racks_by_node(&info), expected);
    assert_eq!(partitions_sharing_a_rack(&info), Vec::<usize>::new());
    assert_eq!(info["racks"], 4);
    assert_eq!(info["partitions_with_replicas_sharing_a_rack"], 0);

    let joiner = cluster.start_joining_node(&[1], true, |config| {
        configure(config).set("node", "rack", "\"b\"")
    });
    let mut settled = None;
    let joined = wait_until(Instant::now() + JOIN_DEADLINE, || {
        let Some(info) = cluster.try_cluster_info(1) else {
            return false;
        };
        let member = info["members"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|m| m["node_id"] == joiner)
            .cloned();
        let done =
            member.is_some_and(|m| m["ring_status"] == "up") && info["pending_handoffs"] == 0;
        if done {
            settled = Some(info);
        }
        done
    });
    assert!(
        joined,
        "node {joiner} did not join within {JOIN_DEADLINE:?}"
    );
    let info = settled.expect("the settled ring");
    let joiner_rack = racks_by_node(&info)
        .into_iter()
        .find(|(id, _)| *id == joiner as u64)
        .and_then(|(_, rack)| rack);
    assert_eq!(joiner_rack.as_deref(), Some("b"));
    assert_eq!(partitions_sharing_a_rack(&info), Vec::<usize>::new());
    let owned = info["members"]
        .as_array()
        .expect("members")
        .iter()
        .find(|m| m["node_id"] == joiner)
        .and_then(|m| m["partitions_owned"].as_u64());
    assert!(owned > Some(0), "node {joiner} owns nothing: {info}");

    let status = cluster.node(1).cli(&["cluster", "status"]);
    let table = String::from_utf8_lossy(&status.stdout);
    assert!(status.status.success(), "cluster status failed: {table}");
    assert!(
        table.contains("racks 4: every partition's replicas on distinct racks"),
        "{table}"
    );
    let joiner_line = table
        .lines()
        .find(|line| line.starts_with(&format!("{joiner} ")))
        .unwrap_or_else(|| panic!("no line for node {joiner}: {table}"));
    assert!(
        joiner_line.split_whitespace().nth(2) == Some("b"),
        "{joiner_line}"
    );

    let node = cluster.node_mut(joiner);
    node.stop();
    let moved = node.config().clone().set("node", "rack", "\"e\"");
    let output = node.run_once_with(&moved);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success(),
        "a changed rack was accepted: {stderr}"
    );
    assert!(
        stderr.contains("in rack b") && stderr.contains("rack e"),
        "the refusal names neither rack: {stderr}"
    );
    node.restart();
    cluster.stop_all();
}

//! Goal: the routing client sends each key straight to one of its replicas,
//! so the node that coordinates a write holds a copy, and it follows the
//! ring when a node joins.
//!
//! Method: four members with N = 2 (so most nodes are not replicas of a
//! given key). A write's version names the node that coordinated it
//! (`origin` bits 8..24). Through a plain client connected to member 1,
//! some writes must be coordinated by a node that is not a replica (the
//! check can fail); through the routing client, connected to member 1
//! only, every write must be coordinated by a replica of its key (from the
//! ring in CLUSTERINFO) and read back. Then a fifth node joins: the routing
//! client must come to hold the new epoch, and its writes keep landing on
//! replicas of the new ring.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use meridian_net::client::ring::ClientRing;
use meridian_net::client::routing::RoutingClient;
use meridian_tests::cluster::{coordinator_of, ring_of, TestCluster};
use meridian_tests::wait_until;

const KEYS: usize = 200;

/// Writes keys `prefix-n`; counts those coordinated by a non-replica.
fn writes_off_replica(
    put: &mut dyn FnMut(&[u8]) -> u32,
    ring: &ClientRing,
    ids: &HashMap<String, u16>,
    prefix: &str,
) -> usize {
    (0..KEYS)
        .filter(|index| {
            let key = format!("{prefix}-{index}");
            let coordinator = coordinator_of(put(key.as_bytes()));
            let replicas: Vec<u16> = ring
                .replica_addresses(key.as_bytes())
                .iter()
                .map(|address| ids[*address])
                .collect();
            !replicas.contains(&coordinator)
        })
        .count()
}

#[test]
fn the_routing_client_sends_each_key_to_a_replica_and_follows_a_join() {
    let configure = |config: meridian_tests::ServerConfig| {
        config
            .set("storage", "partitions", "16")
            .set("cluster", "replicas", "2")
            .set("cluster", "read_quorum", "1")
            .set("cluster", "write_quorum", "2")
            .set("cluster", "heartbeat_interval_ms", "100")
    };
    let mut cluster = TestCluster::start(4, configure);
    let (ring, ids) = ring_of(&cluster, 1);

    let mut plain = cluster.client(1);
    let mut plain_put = |key: &[u8]| plain.put(key, b"plain").expect("PUT").origin;
    let off = writes_off_replica(&mut plain_put, &ring, &ids, "plain");
    assert!(
        off > 0,
        "member 1 is a replica of every key: the check below proves nothing"
    );

    let config = cluster.node(1).client_config();
    let mut routing = RoutingClient::connect(config, Duration::from_millis(200)).expect("connect");
    assert_eq!(routing.ring_epoch(), ring.epoch());
    let mut routed_put = |key: &[u8]| routing.put(key, b"routed").expect("PUT").origin;
    let off = writes_off_replica(&mut routed_put, &ring, &ids, "routed");
    assert_eq!(
        off, 0,
        "{off} routed writes were coordinated by a non-replica"
    );
    for index in 0..KEYS {
        let key = format!("routed-{index}");
        let found = routing.get(key.as_bytes()).expect("GET").expect("present");
        assert_eq!(&found.value[..], b"routed");
    }

    let joiner = cluster.start_joining_node(&[1], false, configure);
    let seed = cluster.node(2).address().to_string();
    let joined = cluster.node(joiner).cli(&["cluster", "join", &seed]);
    assert!(joined.status.success(), "{joined:?}");
    let settled = wait_until(Instant::now() + Duration::from_secs(20), || {
        cluster.try_cluster_info(1).is_some_and(|info| {
            info["handoff"].is_null() && info["members"].as_array().map(Vec::len) == Some(5)
        })
    });
    assert!(
        settled,
        "the join never completed: {:?}",
        cluster.try_cluster_info(1)
    );
    let (ring, ids) = ring_of(&cluster, 1);
    let caught_up = wait_until(Instant::now() + Duration::from_secs(10), || {
        let _ = routing.refresh_ring();
        routing.ring_epoch() >= ring.epoch()
    });
    assert!(
        caught_up,
        "the routing client kept epoch {}",
        routing.ring_epoch()
    );
    let mut routed_put = |key: &[u8]| routing.put(key, b"after").expect("PUT").origin;
    let off = writes_off_replica(&mut routed_put, &ring, &ids, "after-join");
    assert_eq!(
        off, 0,
        "{off} writes after the join were coordinated by a non-replica"
    );
    cluster.stop_all();
}

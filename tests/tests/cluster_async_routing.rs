//! Goal: the async routing client sends each key straight to one of its
//! replicas, so the node that coordinates a write holds a copy, also when
//! many tasks share it, and its periodic refresh follows the ring when a
//! node joins (no explicit refresh is asked for).
//!
//! Method: as `cluster_client_routing.rs`, on a tokio runtime. Four members
//! with N = 2 (so most nodes are not replicas of a given key). A write's
//! version names the node that coordinated it (`origin` bits 8..24).
//! Through a plain async client connected to member 1, some writes must be
//! coordinated by a node that is not a replica (the check can fail);
//! through the routing client, connected to member 1 only, every write —
//! each from its own task, all at once — must be coordinated by a replica
//! of its key (from the ring in CLUSTERINFO) and read back. Then a fifth
//! node joins: requests through the client must bring it, within a bounded
//! wait, to the new epoch by the periodic refresh alone, and its writes
//! keep landing on replicas of the new ring.

use std::collections::HashMap;
use std::future::Future;
use std::time::{Duration, Instant};

use meridian_net::client::asynchronous::Client;
use meridian_net::client::ring::ClientRing;
use meridian_net::client::AsyncRoutingClient;
use meridian_tests::cluster::{coordinator_of, ring_of, TestCluster};
use meridian_tests::wait_until;

const KEYS: usize = 200;
const REFRESH_INTERVAL: Duration = Duration::from_millis(200);

/// Writes keys `prefix-n`, each from its own task, all at once; returns
/// each key with the origin of its version.
async fn put_concurrently<F, Fut>(prefix: &str, put: F) -> Vec<(String, u32)>
where
    F: Fn(String) -> Fut,
    Fut: Future<Output = u32> + Send + 'static,
{
    let tasks: Vec<_> = (0..KEYS)
        .map(|index| {
            let key = format!("{prefix}-{index}");
            (key.clone(), tokio::spawn(put(key)))
        })
        .collect();
    let mut written = Vec::with_capacity(KEYS);
    for (key, task) in tasks {
        written.push((key, task.await.expect("the PUT task")));
    }
    written
}

/// How many of `written` were coordinated by a node that is not a replica.
fn off_replica(written: &[(String, u32)], ring: &ClientRing, ids: &HashMap<String, u16>) -> usize {
    written
        .iter()
        .filter(|(key, origin)| {
            let replicas: Vec<u16> = ring
                .replica_addresses(key.as_bytes())
                .iter()
                .map(|address| ids[*address])
                .collect();
            !replicas.contains(&coordinator_of(*origin))
        })
        .count()
}

fn routed_put(
    client: &AsyncRoutingClient,
    value: &'static [u8],
) -> impl Fn(String) -> std::pin::Pin<Box<dyn Future<Output = u32> + Send>> {
    let client = client.clone();
    move |key| {
        let client = client.clone();
        Box::pin(async move { client.put(key.as_bytes(), value).await.expect("PUT").origin })
    }
}

#[test]
fn the_async_routing_client_sends_each_key_to_a_replica_and_follows_a_join() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
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
    let config = cluster.node(1).client_config();

    let plain = runtime
        .block_on(Client::connect(config.clone()))
        .expect("connect");
    let written = runtime.block_on(put_concurrently("plain", |key| {
        let plain = plain.clone();
        async move {
            plain
                .put(key.as_bytes(), b"plain")
                .await
                .expect("PUT")
                .origin
        }
    }));
    assert!(
        off_replica(&written, &ring, &ids) > 0,
        "member 1 is a replica of every key: the check below proves nothing"
    );

    let routing = runtime
        .block_on(AsyncRoutingClient::connect(config, REFRESH_INTERVAL))
        .expect("connect");
    assert_eq!(routing.ring_epoch(), ring.epoch());
    let written = runtime.block_on(put_concurrently("routed", routed_put(&routing, b"routed")));
    let off = off_replica(&written, &ring, &ids);
    assert_eq!(
        off, 0,
        "{off} routed writes were coordinated by a non-replica"
    );
    runtime.block_on(async {
        for (key, _) in &written {
            let found = routing.get(key.as_bytes()).await.expect("GET");
            assert_eq!(&found.expect("present").value[..], b"routed", "{key}");
        }
    });

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
    let caught_up = runtime.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            // Requests only: the refresh they trigger runs in a task.
            routing.get(b"probe").await.expect("GET");
            if routing.ring_epoch() >= ring.epoch() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    });
    assert!(
        caught_up,
        "the async routing client kept epoch {}, the ring is at {}",
        routing.ring_epoch(),
        ring.epoch()
    );
    let written = runtime.block_on(put_concurrently(
        "after-join",
        routed_put(&routing, b"after"),
    ));
    let off = off_replica(&written, &ring, &ids);
    assert_eq!(
        off, 0,
        "{off} writes after the join were coordinated by a non-replica"
    );
    drop((plain, routing));
    cluster.stop_all();
}

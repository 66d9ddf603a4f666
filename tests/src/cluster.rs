//! Several `meridian` processes as the members of one datacenter's ring.
//!
//! Every member's config lists every member (`cluster.members`), so the
//! ports are chosen before the first process starts: each is a loopback
//! port that was free a moment ago ([`free_loopback_port`]), passed as the
//! member's fixed `--listen`. A member keeps its port across restarts.
//!
//! What a test observes is what an operator would: client requests through
//! any member, and STATS (per shard `partition_digests`, `read_repairs`,
//! `hints_delivered`, `anti_entropy_repairs`).
//!
//! Invariants:
//! - member `id` is `nodes[id - 1]`; ids run from 1;
//! - the `[node]` identity and `[cluster] members` are set last, so a
//!   test's own settings cannot break them;
//! - every wait has a deadline (the helpers that wait take it).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;

use meridian_net::client::blocking::Client;
use meridian_net::{Request, Response};

use crate::{free_loopback_port, ServerConfig, ServerProcess};

/// Requests a pipelined helper keeps in flight on one connection.
const WINDOW: usize = 32;

/// The members of one ring, each a [`ServerProcess`].
#[derive(Debug)]
pub struct TestCluster {
    nodes: Vec<ServerProcess>,
}

impl TestCluster {
    /// Starts `members` servers (ids 1..=members), each waiting until it
    /// listens. `configure` adds settings to each member's config; the test
    /// defaults under it are 8 partitions, one shard and 200 ms between
    /// anti-entropy rounds.
    pub fn start(members: usize, configure: impl Fn(ServerConfig) -> ServerConfig) -> TestCluster {
        TestCluster::start_in_racks(&vec![None; members], configure)
    }

    /// As [`TestCluster::start`], one member per entry of `racks`, each
    /// listed in `cluster.members` in its rack (`ID@HOST:PORT/RACK`) when it
    /// has one.
    pub fn start_in_racks(
        racks: &[Option<&str>],
        configure: impl Fn(ServerConfig) -> ServerConfig,
    ) -> TestCluster {
        let members = racks.len();
        assert!(
            (2..=16).contains(&members),
            "a test cluster has 2 to 16 members"
        );
        let mut ports = HashSet::new();
        while ports.len() < members {
            ports.insert(free_loopback_port());
        }
        let addresses: Vec<SocketAddr> = ports
            .into_iter()
            .map(|port| SocketAddr::from(([127, 0, 0, 1], port)))
            .collect();
        let member_list = addresses
            .iter()
            .enumerate()
            .map(|(index, address)| match racks[index] {
                Some(rack) => format!("\"{}@{address}/{rack}\"", index + 1),
                None => format!("\"{}@{address}\"", index + 1),
            })
            .collect::<Vec<_>>()
            .join(", ");
        let nodes = addresses
            .iter()
            .enumerate()
            .map(|(index, &address)| {
                let base =
                    ServerConfig::default().set("cluster", "anti_entropy_interval_ms", "200");
                let config = configure(base)
                    .listen(address)
                    .set("node", "node_id", &(index + 1).to_string())
                    .set("cluster", "members", &format!("[{member_list}]"));
                ServerProcess::start(config)
            })
            .collect();
        TestCluster { nodes }
    }

    /// Starts one more node (id = members + 1) that is not a founding
    /// member: its config names members `seeds` in `cluster.seeds`; with
    /// `join_on_start` false it joins only when told to (`meridian cli
    /// cluster join`). Its port is fixed, like the founders'. Returns its id.
    pub fn start_joining_node(
        &mut self,
        seeds: &[usize],
        join_on_start: bool,
        configure: impl Fn(ServerConfig) -> ServerConfig,
    ) -> usize {
        let id = self.nodes.len() + 1;
        let taken: HashSet<u16> = self.nodes.iter().map(|n| n.address().port()).collect();
        let port = std::iter::repeat_with(free_loopback_port)
            .take(100)
            .find(|port| !taken.contains(port))
            .expect("a free loopback port");
        let address = SocketAddr::from(([127, 0, 0, 1], port));
        let seed_list: Vec<String> = seeds
            .iter()
            .map(|&seed| format!("\"{}\"", self.node(seed).address()))
            .collect();
        let base = ServerConfig::default().set("cluster", "anti_entropy_interval_ms", "200");
        let config = configure(base)
            .listen(address)
            .set("node", "node_id", &id.to_string())
            .set("cluster", "seeds", &format!("[{}]", seed_list.join(", ")))
            .set("cluster", "join_on_start", &join_on_start.to_string());
        self.nodes.push(ServerProcess::start(config));
        id
    }

    /// Member `id`'s CLUSTERINFO document; `None` if it cannot be had.
    pub fn try_cluster_info(&self, id: usize) -> Option<serde_json::Value> {
        let node = self.node(id);
        node.pid()?;
        let mut config = node.client_config();
        config.reconnect_attempts_max = 1;
        let mut client = Client::connect(config).ok()?;
        let text = client.clusterinfo().ok()?;
        Some(serde_json::from_str(&text).expect("CLUSTERINFO is JSON"))
    }

    /// Member ids, 1..=members.
    pub fn ids(&self) -> Vec<usize> {
        (1..=self.nodes.len()).collect()
    }

    pub fn node(&self, id: usize) -> &ServerProcess {
        &self.nodes[id - 1]
    }

    pub fn node_mut(&mut self, id: usize) -> &mut ServerProcess {
        &mut self.nodes[id - 1]
    }

    /// A connected blocking client of member `id`.
    pub fn client(&self, id: usize) -> Client {
        self.node(id).client()
    }

    /// Member `id`'s STATS document; `None` if it cannot be had (the member
    /// is down or restarting).
    pub fn try_stats(&self, id: usize) -> Option<serde_json::Value> {
        let node = self.node(id);
        node.pid()?;
        let mut config = node.client_config();
        config.reconnect_attempts_max = 1;
        let mut client = Client::connect(config).ok()?;
        let text = client.stats().ok()?;
        Some(serde_json::from_str(&text).expect("STATS is JSON"))
    }

    /// Member `id`'s STATS document; panics if it cannot be had.
    pub fn stats(&self, id: usize) -> serde_json::Value {
        self.try_stats(id)
            .unwrap_or_else(|| panic!("no STATS from member {id}"))
    }

    /// Member `id`'s counter `field` summed over its shards (0 if down).
    pub fn shard_counter(&self, id: usize, field: &str) -> u64 {
        self.try_stats(id)
            .map_or(0, |stats| shard_sum(&stats, field))
    }

    /// Counter `field` summed over every running member's shards.
    pub fn cluster_counter(&self, field: &str) -> u64 {
        self.ids()
            .into_iter()
            .map(|id| self.shard_counter(id, field))
            .sum()
    }

    /// Member `id`'s digest of each partition it holds data for (partitions
    /// with an empty or no vnode left out, so "never written" and "emptied"
    /// compare equal); `None` if the member is down.
    pub fn partition_digests(&self, id: usize) -> Option<BTreeMap<u32, u64>> {
        self.try_stats(id).map(|stats| digests_of(&stats))
    }

    /// Every listed member's partition digests, for failure messages and
    /// convergence checks; a down member maps to `None`.
    pub fn all_digests(&self, ids: &[usize]) -> HashMap<usize, Option<BTreeMap<u32, u64>>> {
        ids.iter()
            .map(|&id| (id, self.partition_digests(id)))
            .collect()
    }

    /// Waits until every member in `ids` reports the same digests for all
    /// `partitions` partitions; false if they still differ at `deadline`.
    pub fn wait_for_equal_digests(
        &self,
        ids: &[usize],
        partitions: usize,
        deadline: std::time::Instant,
    ) -> bool {
        crate::wait_until(deadline, || {
            let digests: Vec<_> = ids.iter().map(|&id| self.partition_digests(id)).collect();
            digests[0]
                .as_ref()
                .is_some_and(|first| first.len() == partitions)
                && digests.iter().all(|other| other == &digests[0])
        })
    }

    /// SIGTERM to every running member; each must exit 0.
    pub fn stop_all(&mut self) {
        for node in &mut self.nodes {
            if node.pid().is_some() {
                node.stop();
            }
        }
    }
}

/// Counter `field` summed over the shards of one STATS document.
pub fn shard_sum(stats: &serde_json::Value, field: &str) -> u64 {
    stats["shards"]
        .as_array()
        .expect("STATS lists shards")
        .iter()
        .map(|shard| {
            shard[field]
                .as_u64()
                .unwrap_or_else(|| panic!("shard counter {field} missing: {shard}"))
        })
        .sum()
}

/// `partition → digest` from one STATS document, non-zero digests only.
pub fn digests_of(stats: &serde_json::Value) -> BTreeMap<u32, u64> {
    let mut digests = BTreeMap::new();
    for shard in stats["shards"].as_array().expect("STATS lists shards") {
        let pairs = shard["partition_digests"]
            .as_array()
            .expect("a shard lists partition_digests");
        for pair in pairs {
            let partition = pair[0].as_u64().expect("a partition number") as u32;
            let digest = pair[1].as_u64().expect("a digest");
            if digest != 0 {
                digests.insert(partition, digest);
            }
        }
    }
    digests
}

/// Key `index` of a test's key set.
pub fn key(prefix: &str, index: usize) -> String {
    format!("{prefix}-{index:06}")
}

/// `(key, value)` pairs `prefix-000000…` with values naming key and round.
pub fn entries(prefix: &str, count: usize, round: &str) -> Vec<(String, Vec<u8>)> {
    (0..count)
        .map(|index| {
            let key = key(prefix, index);
            let value = format!("{key}={round}").into_bytes();
            (key, value)
        })
        .collect()
}

/// Sends `requests` pipelined (WINDOW in flight) and returns each answer,
/// in order. A broken connection panics with `context`.
pub fn pipeline(client: &mut Client, requests: &[Request], context: &str) -> Vec<Response> {
    let mut answers: Vec<Option<Response>> = vec![None; requests.len()];
    let mut index_of_id: HashMap<u32, usize> = HashMap::new();
    let mut next = 0;
    let mut received = 0;
    while received < requests.len() {
        while next < requests.len() && index_of_id.len() < WINDOW {
            let id = client
                .send(&requests[next])
                .unwrap_or_else(|error| panic!("{context}: send failed: {error}"));
            index_of_id.insert(id, next);
            next += 1;
        }
        let (id, response) = client
            .recv_any()
            .unwrap_or_else(|error| panic!("{context}: receive failed: {error}"));
        let index = index_of_id
            .remove(&id)
            .unwrap_or_else(|| panic!("{context}: answer to unknown request {id}"));
        answers[index] = Some(response);
        received += 1;
    }
    answers
        .into_iter()
        .map(|answer| answer.expect("every request answered"))
        .collect()
}

/// PUTs every entry (pipelined, the cluster's W); each must be WRITTEN.
pub fn put_all(client: &mut Client, entries: &[(String, Vec<u8>)], context: &str) {
    let requests: Vec<Request> = entries
        .iter()
        .map(|(key, value)| meridian_net::client::core::put_request(key.as_bytes(), value, None))
        .collect();
    for ((key, _), answer) in entries.iter().zip(pipeline(client, &requests, context)) {
        assert!(
            matches!(answer, Response::Written { .. }),
            "{context}: PUT {key} answered {answer:?}"
        );
    }
}

/// GETs every entry with `read_quorum` (pipelined); each must come back
/// with its value.
pub fn read_all(
    client: &mut Client,
    entries: &[(String, Vec<u8>)],
    read_quorum: Option<u8>,
    context: &str,
) {
    let requests: Vec<Request> = entries
        .iter()
        .map(|(key, _)| Request::Get {
            key: bytes::Bytes::copy_from_slice(key.as_bytes()),
            read_quorum,
        })
        .collect();
    for ((key, value), answer) in entries.iter().zip(pipeline(client, &requests, context)) {
        match answer {
            Response::Value(found) => assert!(
                found.value[..] == value[..],
                "{context}: {key} came back as {:?}, {:?} written",
                String::from_utf8_lossy(&found.value),
                String::from_utf8_lossy(value)
            ),
            other => panic!("{context}: GET {key} answered {other:?}"),
        }
    }
}

/// The node id that coordinated a write, from its version's origin
/// (datacenter 8 bits, node 16 bits, shard 8 bits).
pub fn coordinator_of(origin: u32) -> u16 {
    (origin >> 8) as u16
}

/// Member `id`'s ring as a routing client reads it, and each member's
/// address → node id.
pub fn ring_of(
    cluster: &TestCluster,
    id: usize,
) -> (meridian_net::client::ring::ClientRing, HashMap<String, u16>) {
    let info = cluster.try_cluster_info(id).expect("CLUSTERINFO");
    let ring = meridian_net::client::ring::ClientRing::from_cluster_info(&info.to_string())
        .expect("a routable ring");
    let ids = info["members"]
        .as_array()
        .expect("members")
        .iter()
        .map(|m| {
            let address = m["address"].as_str().expect("address").to_string();
            (address, m["node_id"].as_u64().expect("id") as u16)
        })
        .collect();
    (ring, ids)
}

//! Goal: with N = 3, W = 2, R = 2, a fourth node joins a three-node ring
//! under a write load, then a founding member leaves; no acknowledged
//! write is lost, every read during the moves returns the latest
//! acknowledged value of its key or a newer one, and `cluster status`
//! shows each change.
//!
//! Method: 2,000 keys are written once before the join and never again
//! (only a handoff can move them). Then two writer threads (through members 1 and 3) overwrite keys of
//! their own, round after round, each value naming its round; a shared
//! table keeps the latest acknowledged round of every key. Two readers
//! (through member 3, and through member 4 once it joined) read random
//! keys: a read must come back with a round at least the one acknowledged
//! before it was sent. Member 4 starts with only a seed and joins by
//! `meridian cli cluster join`; once its handoff completed, member 2 runs
//! `cluster leave`. When every member holds the final ring, member 2 stops,
//! the writers stop, and every key must read back (through members 1 and 4)
//! with its latest acknowledged round or a newer one. Anti-entropy is all
//! but off, so only the handoff can bring the moved partitions to their new
//! owners: once the writers stopped, members 1, 3 and 4 (each a replica of
//! every partition now) must hold equal digests for all 16 partitions.
//! Members are 2-shard processes, so each ring change crosses shards too.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use meridian_net::client::blocking::Client;
use meridian_net::client::core::put_request;
use meridian_net::client::ClientConfig;
use meridian_net::{Request, Response};
use meridian_tests::cluster::{entries, put_all, read_all, TestCluster};
use meridian_tests::wait_until;

/// Keys written once, before the join.
const SETTLED_KEYS: usize = 2000;
/// Keys each writer overwrites, round after round.
const KEYS_PER_WRITER: usize = 300;
/// Writes each writer keeps in flight (distinct keys).
const WINDOW: usize = 8;
/// Bound on each wait for a ring change and on the writers' whole run.
const CHANGE_DEADLINE: Duration = Duration::from_secs(25);
const LOAD_LIMIT: Duration = Duration::from_secs(60);

/// The latest acknowledged round of every key of the test.
struct Acknowledged {
    keys: Vec<String>,
    rounds: Vec<AtomicU64>,
}

impl Acknowledged {
    fn new(writers: usize) -> Acknowledged {
        let keys: Vec<String> = (0..writers * KEYS_PER_WRITER)
            .map(|index| format!("moving-{index:05}"))
            .collect();
        let rounds = keys.iter().map(|_| AtomicU64::new(0)).collect();
        Acknowledged { keys, rounds }
    }
}

fn value(key: &str, round: u64) -> Vec<u8> {
    format!("{key}={round}").into_bytes()
}

fn round_of(key: &str, value: &[u8]) -> u64 {
    let text = String::from_utf8_lossy(value);
    let (named, round) = text
        .split_once('=')
        .unwrap_or_else(|| panic!("{key}: malformed value {text:?}"));
    assert_eq!(named, key, "a read of {key} returned another key's value");
    round.parse().expect("a round number")
}

/// Overwrites keys `writer * KEYS_PER_WRITER ..` round after round until
/// `stop`; records acknowledged rounds; returns the error answers.
fn overwrite(
    config: ClientConfig,
    writer: usize,
    table: Arc<Acknowledged>,
    acknowledged_count: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
) -> Vec<String> {
    let mut errors = Vec::new();
    let mut client = match Client::connect(config) {
        Ok(client) => client,
        Err(error) => return vec![format!("connect: {error}")],
    };
    let first = writer * KEYS_PER_WRITER;
    let mut pending: HashMap<u32, (usize, u64)> = HashMap::new();
    let deadline = Instant::now() + LOAD_LIMIT;
    let mut sequence = 0usize;
    loop {
        let writing = !stop.load(Ordering::SeqCst) && Instant::now() < deadline;
        if !writing && pending.is_empty() {
            return errors;
        }
        while writing && pending.len() < WINDOW {
            let index = first + sequence % KEYS_PER_WRITER;
            let round = (sequence / KEYS_PER_WRITER) as u64 + 1;
            sequence += 1;
            let key = &table.keys[index];
            match client.send(&put_request(key.as_bytes(), &value(key, round), None)) {
                Ok(id) => pending.insert(id, (index, round)),
                Err(error) => {
                    errors.push(format!("send {key}: {error}"));
                    return errors;
                }
            };
        }
        let (id, response) = match client.recv_any() {
            Ok(answer) => answer,
            Err(error) => {
                errors.push(format!("connection lost: {error}"));
                return errors;
            }
        };
        let Some((index, round)) = pending.remove(&id) else {
            errors.push(format!("answer to unknown request {id}"));
            continue;
        };
        match response {
            Response::Written { .. } => {
                table.rounds[index].fetch_max(round, Ordering::SeqCst);
                acknowledged_count.fetch_add(1, Ordering::SeqCst);
            }
            other => errors.push(format!("PUT {}: {other:?}", table.keys[index])),
        }
    }
}

/// Reads keys in turn until `stop`: each must come back with at least the
/// round acknowledged before the read was sent. Returns (reads, failures).
fn check_reads(
    config: ClientConfig,
    table: Arc<Acknowledged>,
    stop: Arc<AtomicBool>,
) -> (usize, Vec<String>) {
    let mut failures = Vec::new();
    let mut client = match Client::connect(config) {
        Ok(client) => client,
        Err(error) => return (0, vec![format!("connect: {error}")]),
    };
    let deadline = Instant::now() + LOAD_LIMIT;
    let mut reads = 0;
    let mut index = 0usize;
    while !stop.load(Ordering::SeqCst) && Instant::now() < deadline && failures.len() < 10 {
        index = (index + 7919) % table.keys.len();
        let key = &table.keys[index];
        let acknowledged = table.rounds[index].load(Ordering::SeqCst);
        let request = Request::Get {
            key: bytes::Bytes::copy_from_slice(key.as_bytes()),
            read_quorum: None,
        };
        let read = match client.send(&request).and_then(|_| client.recv_any()) {
            Ok((_, Response::Value(found))) => round_of(key, &found.value),
            Ok((_, Response::NotFound)) => 0,
            Ok((_, other)) => {
                failures.push(format!("GET {key}: {other:?}"));
                continue;
            }
            Err(error) => {
                failures.push(format!("GET {key}: {error}"));
                return (reads, failures);
            }
        };
        reads += 1;
        if read < acknowledged {
            failures.push(format!(
                "GET {key} returned round {read}, round {acknowledged} was acknowledged before"
            ));
        }
    }
    (reads, failures)
}

/// Member `id`'s view of member `member`'s ring status and the handoff.
fn ring_status(cluster: &TestCluster, id: usize, member: usize) -> Option<(String, bool)> {
    let info = cluster.try_cluster_info(id)?;
    let status = info["members"]
        .as_array()?
        .iter()
        .find(|m| m["node_id"] == member as u64)?["ring_status"]
        .as_str()?
        .to_string();
    Some((status, info["handoff"].is_null()))
}

/// Waits until every member in `ids` sees `member` as `status` with no
/// handoff pending.
fn wait_for_ring(cluster: &TestCluster, ids: &[usize], member: usize, status: &str) -> bool {
    wait_until(Instant::now() + CHANGE_DEADLINE, || {
        ids.iter().all(|&id| {
            ring_status(cluster, id, member)
                .is_some_and(|(seen, settled)| seen == status && settled)
        })
    })
}

fn cli_text(output: &std::process::Output) -> String {
    format!(
        "status {:?}, stdout {:?}, stderr {:?}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[test]
fn a_node_joins_and_a_node_leaves_under_load_without_losing_a_write() {
    let configure = |config: meridian_tests::ServerConfig| {
        config
            .shards(2)
            .set("storage", "partitions", "16")
            .set("cluster", "heartbeat_interval_ms", "100")
            .set("cluster", "request_timeout_ms", "2000")
            .set("cluster", "anti_entropy_interval_ms", "600000")
    };
    let mut cluster = TestCluster::start(3, configure);
    let joiner = cluster.start_joining_node(&[1], false, configure);
    assert_eq!(joiner, 4);

    let settled = entries("settled", SETTLED_KEYS, "before the join");
    put_all(
        &mut cluster.client(1),
        &settled,
        "keys written before the join",
    );
    let table = Arc::new(Acknowledged::new(2));
    let acknowledged_count = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = [1, 3]
        .into_iter()
        .enumerate()
        .map(|(writer, id)| {
            let config = cluster.node(id).client_config();
            let (table, count, stop) = (
                Arc::clone(&table),
                Arc::clone(&acknowledged_count),
                Arc::clone(&stop),
            );
            std::thread::spawn(move || overwrite(config, writer, table, count, stop))
        })
        .collect();
    let reader = |id: usize| {
        let config = cluster.node(id).client_config();
        let (table, stop) = (Arc::clone(&table), Arc::clone(&stop));
        std::thread::spawn(move || check_reads(config, table, stop))
    };
    let mut readers = vec![reader(3)];
    let enough = |target: usize| {
        wait_until(Instant::now() + CHANGE_DEADLINE, || {
            acknowledged_count.load(Ordering::SeqCst) >= target
        })
    };
    assert!(
        enough(1000),
        "fewer than 1000 writes acknowledged before the join"
    );

    // The join, run against the joining node, naming a member.
    let seed = cluster.node(2).address().to_string();
    let joined = cluster.node(joiner).cli(&["cluster", "join", &seed]);
    assert!(
        joined.status.success(),
        "cluster join: {}",
        cli_text(&joined)
    );
    readers.push(reader(joiner));
    let at_join = acknowledged_count.load(Ordering::SeqCst);
    assert!(
        wait_for_ring(&cluster, &[1, 2, 3, 4], joiner, "up"),
        "member 4 never became up everywhere: {:?}",
        cluster.try_cluster_info(1)
    );
    // Member 4 replicates 12 of the 16 partitions (4 owned, N = 3): the
    // settled keys of those, about 1,500, reach it only by handoff.
    let pulled = cluster.shard_counter(joiner, "handoff_records");
    assert!(
        pulled >= (SETTLED_KEYS / 2) as u64,
        "member 4 became a replica after pulling only {pulled} records"
    );
    let status = cluster.node(3).cli(&["cluster", "status"]);
    let text = String::from_utf8_lossy(&status.stdout).to_string();
    assert!(
        status.status.success(),
        "cluster status: {}",
        cli_text(&status)
    );
    assert!(
        text.lines().filter(|line| line.contains(" up ")).count() == 4
            && text.contains("no handoff pending"),
        "cluster status after the join:\n{text}"
    );
    assert!(enough(at_join + 500), "writes stalled during the join");

    // The leave, run against the leaving node.
    let left = cluster.node(2).cli(&["cluster", "leave"]);
    assert!(left.status.success(), "cluster leave: {}", cli_text(&left));
    let at_leave = acknowledged_count.load(Ordering::SeqCst);
    assert!(
        wait_for_ring(&cluster, &[1, 2, 3, 4], 2, "removed"),
        "member 2 never became removed everywhere: {:?}",
        cluster.try_cluster_info(1)
    );
    let status = cluster.node(1).cli(&["cluster", "status"]);
    let text = String::from_utf8_lossy(&status.stdout).to_string();
    assert!(
        text.lines()
            .any(|line| line.starts_with('2') && line.contains("removed")),
        "cluster status after the leave:\n{text}"
    );
    assert!(enough(at_leave + 500), "writes stalled during the leave");
    cluster.node_mut(2).stop();
    assert!(
        enough(acknowledged_count.load(Ordering::SeqCst) + 300),
        "writes stalled once member 2 stopped"
    );

    stop.store(true, Ordering::SeqCst);
    for writer in writers {
        let errors = writer.join().expect("writer thread");
        assert!(
            errors.is_empty(),
            "writes failed: {:?}",
            &errors[..errors.len().min(5)]
        );
    }
    for reader in readers {
        let (reads, failures) = reader.join().expect("reader thread");
        assert!(failures.is_empty(), "reads failed: {failures:?}");
        assert!(reads > 100, "only {reads} reads ran during the moves");
    }
    println!(
        "{} writes acknowledged; {at_join} before the join, {at_leave} before the leave",
        acknowledged_count.load(Ordering::SeqCst)
    );
    let converged =
        cluster.wait_for_equal_digests(&[1, 3, 4], 16, Instant::now() + CHANGE_DEADLINE);
    assert!(
        converged,
        "the remaining members hold different data: {:?}",
        cluster.all_digests(&[1, 3, 4])
    );
    for id in [1, 4] {
        read_all(
            &mut cluster.client(id),
            &settled,
            Some(1),
            &format!("keys written before the join, through member {id} with R = 1"),
        );
    }
    for id in [1, 4] {
        let mut client = cluster.client(id);
        for (index, key) in table.keys.iter().enumerate() {
            let acknowledged = table.rounds[index].load(Ordering::SeqCst);
            let found = client.get(key.as_bytes()).expect("GET after the moves");
            let read = found.map_or(0, |entry| round_of(key, &entry.value));
            assert!(
                read >= acknowledged,
                "through member {id}: {key} reads round {read}, round {acknowledged} was acknowledged"
            );
        }
    }
    cluster.stop_all();
}

/// Goal: a node whose config names only seeds joins by itself at start once
/// `min_contact_points` of them answer, and after a restart it resumes from
/// its persisted ring, not from its config.
///
/// Method: three founders; a fourth node with two seeds and
/// `min_contact_points = 2`. Every member must come to see it up with no
/// handoff pending, and keys written before it joined must read back through
/// it. It then restarts on its own directory: its first CLUSTERINFO must
/// already name four members at the epoch it had (no rejoin), and the keys
/// must still read back through it. Last, the claimant (member 1) is asked
/// to leave through member 3: member 2 takes over as claimant and completes
/// the handoff, and the keys read back without member 1.
#[test]
fn a_node_with_seeds_joins_at_start_and_keeps_its_ring_across_a_restart() {
    let configure = |config: meridian_tests::ServerConfig| {
        config.set("cluster", "heartbeat_interval_ms", "100").set(
            "cluster",
            "min_contact_points",
            "2",
        )
    };
    let mut cluster = TestCluster::start(3, configure);
    let written = entries("before-join", 500, "one");
    put_all(
        &mut cluster.client(2),
        &written,
        "keys written before the join",
    );
    let joiner = cluster.start_joining_node(&[1, 3], true, configure);
    assert!(
        wait_for_ring(&cluster, &[1, 2, 3, joiner], joiner, "up"),
        "the seeded node never became up everywhere: {:?}",
        cluster.try_cluster_info(1)
    );
    read_all(
        &mut cluster.client(joiner),
        &written,
        None,
        "through the joined node",
    );
    let before = cluster.try_cluster_info(joiner).expect("CLUSTERINFO");

    cluster.node_mut(joiner).restart();
    let after = cluster
        .try_cluster_info(joiner)
        .expect("CLUSTERINFO after the restart");
    assert_eq!(
        after["members"].as_array().map(Vec::len),
        Some(4),
        "the restarted node lost its ring: {after}"
    );
    assert!(
        after["ring_epoch"].as_u64() >= before["ring_epoch"].as_u64(),
        "the restarted node went back to an older ring: {after}"
    );
    read_all(
        &mut cluster.client(joiner),
        &written,
        None,
        "through the restarted node",
    );

    // The claimant itself leaves, asked through another member: member 2
    // becomes the claimant and completes the handoff.
    let left = cluster.node(3).cli(&["cluster", "leave", "--node", "1"]);
    assert!(
        left.status.success(),
        "cluster leave --node 1: {}",
        cli_text(&left)
    );
    assert!(
        wait_for_ring(&cluster, &[1, 2, 3, joiner], 1, "removed"),
        "member 1 never became removed everywhere: {:?}",
        cluster.try_cluster_info(2)
    );
    let info = cluster.try_cluster_info(3).expect("CLUSTERINFO");
    assert_eq!(info["claimant"], 2, "{info}");
    cluster.node_mut(1).stop();
    read_all(
        &mut cluster.client(joiner),
        &written,
        None,
        "after member 1 left",
    );
    cluster.stop_all();
}

/// Goal: joining a cluster whose ring size differs is refused before the
/// node is planned in, with a message naming the setting; the cluster's
/// ring does not change.
///
/// Method: two founders with 8 partitions; a node configured with 16 runs
/// `cluster join`; the CLI must exit 2 naming `storage.partitions`, and the
/// founders must still list two members.
#[test]
fn a_join_with_another_ring_size_is_refused_by_name() {
    let mut cluster = TestCluster::start(2, |config| config);
    let joiner = cluster.start_joining_node(&[1], false, |config| {
        config.set("storage", "partitions", "16")
    });
    let seed = cluster.node(1).address().to_string();
    let joined = cluster.node(joiner).cli(&["cluster", "join", &seed]);
    assert_eq!(joined.status.code(), Some(2), "{}", cli_text(&joined));
    let stderr = String::from_utf8_lossy(&joined.stderr);
    assert!(stderr.contains("storage.partitions"), "{stderr}");
    let info = cluster.try_cluster_info(1).expect("CLUSTERINFO");
    assert_eq!(info["members"].as_array().map(Vec::len), Some(2), "{info}");
    cluster.stop_all();
}

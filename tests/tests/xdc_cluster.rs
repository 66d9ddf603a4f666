//! XDC from a datacenter of three nodes: the link made on one member
//! reaches them all, each node ships the vnodes it is first live primary
//! of, and when a shipping node dies the next primary takes its vnodes
//! over.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use meridian_tests::cluster::TestCluster;
use meridian_tests::xdc::{secret_of, start_datacenter, status, wait_for_values};
use meridian_tests::{wait_until, ServerProcess};

const CONVERGE: Duration = Duration::from_secs(90);

#[test]
fn a_three_node_datacenter_ships_and_the_next_owner_takes_over() {
    let mut east = TestCluster::start(3, |config| {
        config
            .secret("east-members")
            .set("node", "datacenter", "\"east\"")
            .set("node", "datacenter_id", "1")
            .set("xdc", "secret", "\"secret-of-east\"")
            .set("cluster", "down_after_ms", "1000")
            .set("cluster", "heartbeat_interval_ms", "200")
    });
    let west = start_datacenter("west", 2);
    let address = west.address().to_string();
    let output = east.node(1).cli(&[
        "--secret",
        "east-members",
        "xdc",
        "connect",
        "west",
        &address,
        "--link-secret",
        &secret_of("west"),
    ]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let answer: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON");
    assert_eq!(
        answer["members_updated"].as_array().map(Vec::len),
        Some(2),
        "{answer}"
    );
    // Every member ships a share of the vnodes, and together all of them.
    assert!(wait_until(Instant::now() + CONVERGE, || {
        (1..=3).map(|id| vnodes_shipped(east.node(id))).sum::<u64>() == 8
    }));

    let stop = Arc::new(AtomicBool::new(false));
    let writer_address = east.node(2).address();
    let flag = Arc::clone(&stop);
    let writer = std::thread::spawn(move || write_with_secret(writer_address, flag));
    std::thread::sleep(Duration::from_secs(1));
    east.node_mut(1).kill();
    // Node 1's vnodes move to the next live primaries.
    assert!(wait_until(Instant::now() + CONVERGE, || {
        vnodes_shipped(east.node(2)) + vnodes_shipped(east.node(3)) == 8
    }));
    std::thread::sleep(Duration::from_secs(1));
    stop.store(true, Ordering::SeqCst);
    let (acknowledged, errors) = writer.join().expect("writer");
    assert_eq!(errors, 0, "writes failed with one node of three down");
    assert!(acknowledged.len() > 500);
    let missing = wait_for_values(&west, &acknowledged, Instant::now() + CONVERGE);
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged writes never reached west, e.g. {:?}; west: {}",
        missing.len(),
        acknowledged.len(),
        &missing[..missing.len().min(3)],
        status(&west)
    );
    // A fullsync asked of one member runs on every live member, each for
    // the vnodes it ships; the datacenters already agree, so nothing moves.
    let mut client = secret_client(east.node(2));
    let answer: serde_json::Value =
        serde_json::from_str(&client.admin("xdc fullsync west").expect("fullsync")).expect("JSON");
    assert_eq!(
        answer["members_started"].as_array().map(Vec::len),
        Some(1),
        "{answer}"
    );
    for id in [2, 3] {
        let done = wait_until(Instant::now() + CONVERGE, || {
            link_status(east.node(id))["fullsync"]["running"] == false
        });
        let shown = link_status(east.node(id));
        assert!(
            done && shown["fullsync"]["error"].is_null(),
            "member {id}: {shown}"
        );
        assert!(
            shown["fullsync"]["buckets_compared"].as_u64() > Some(0),
            "member {id}: {shown}"
        );
        assert_eq!(
            shown["fullsync"]["records_pushed"], 0,
            "member {id}: {shown}"
        );
    }
}

/// A client of an east member, with the cluster's secret.
fn secret_client(node: &ServerProcess) -> meridian_net::client::blocking::Client {
    let mut config = node.client_config();
    config.credentials = Some(bytes::Bytes::from_static(b"east-members"));
    meridian_net::client::blocking::Client::connect(config).expect("connect")
}

/// A member's first link in `xdc status`.
fn link_status(node: &ServerProcess) -> serde_json::Value {
    let json = secret_client(node).admin("xdc status").expect("xdc status");
    serde_json::from_str::<serde_json::Value>(&json).expect("JSON")["links"][0].clone()
}

/// The vnodes a member ships (0 when it does not answer).
fn vnodes_shipped(node: &ServerProcess) -> u64 {
    let mut config = node.client_config();
    config.credentials = Some(bytes::Bytes::from_static(b"east-members"));
    meridian_net::client::blocking::Client::connect(config)
        .ok()
        .and_then(|mut client| client.admin("xdc status").ok())
        .and_then(|json| serde_json::from_str::<serde_json::Value>(&json).ok())
        .and_then(|status| status["links"][0]["vnodes_shipped"].as_u64())
        .unwrap_or(0)
}

/// Writes keys `takeover-{n}` through a member (with the cluster's secret)
/// until `stop`; the acknowledged writes and the number of failures.
fn write_with_secret(
    address: std::net::SocketAddr,
    stop: Arc<AtomicBool>,
) -> (Vec<(String, Vec<u8>)>, usize) {
    let mut config = meridian_net::client::ClientConfig::new(address.to_string());
    config.credentials = Some(bytes::Bytes::from_static(b"east-members"));
    config.request_timeout = Duration::from_secs(10);
    let mut client = meridian_net::client::blocking::Client::connect(config).expect("connect");
    let mut acknowledged = Vec::new();
    let mut errors = 0;
    let mut sequence = 0usize;
    let start = Instant::now();
    while !stop.load(Ordering::SeqCst) && start.elapsed() < Duration::from_secs(60) {
        let key = format!("takeover-{sequence:07}");
        let value = meridian_tests::load::value_for(&key, sequence);
        match client.put(key.as_bytes(), &value) {
            Ok(_) => acknowledged.push((key, value)),
            Err(_) => errors += 1,
        }
        sequence += 1;
        std::thread::sleep(Duration::from_millis(2));
    }
    (acknowledged, errors)
}

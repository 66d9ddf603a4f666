//! Cross-datacenter replication end to end: single-node datacenters, links
//! made with `meridian cli xdc connect`, most of them through a proxy that
//! can cut them.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use meridian_tests::proxy::LinkProxy;
use meridian_tests::xdc::{
    connect, counter, datacenter_config, secret_of, start_datacenter, status, try_connect,
    wait_for_equal_digests, wait_for_values, write_at_rate,
};
use meridian_tests::{wait_until, ServerProcess};

const CONVERGE: Duration = Duration::from_secs(60);

fn load_in_background(
    server: &ServerProcess,
    prefix: &'static str,
    rate: u32,
    limit: Duration,
) -> (
    Arc<AtomicBool>,
    std::thread::JoinHandle<(Vec<(String, Vec<u8>)>, usize)>,
) {
    let stop = Arc::new(AtomicBool::new(false));
    let address = server.address();
    let flag = Arc::clone(&stop);
    let handle = std::thread::spawn(move || write_at_rate(address, prefix, rate, flag, limit));
    (stop, handle)
}

#[test]
fn one_way_under_load_every_acknowledged_write_arrives() {
    let east = start_datacenter("east", 1);
    let west = start_datacenter("west", 2);
    let mut before = east.client();
    before.put(b"written-before-the-link", b"old").expect("put");
    connect(&east, "west", west.address(), &secret_of("west"), false);
    let (_, writer) = load_in_background(&east, "load", 2_000, Duration::from_secs(3));
    let (acknowledged, errors) = writer.join().expect("writer");
    assert_eq!(errors, 0);
    assert!(acknowledged.len() > 1_000, "{} writes", acknowledged.len());
    let mut expected = acknowledged;
    expected.push(("written-before-the-link".to_string(), b"old".to_vec()));
    let missing = wait_for_values(&west, &expected, Instant::now() + CONVERGE);
    assert!(
        missing.is_empty(),
        "{} writes missing in west, e.g. {:?}; log:\n{}",
        missing.len(),
        &missing[..missing.len().min(5)],
        east.log()
    );
    assert!(wait_for_equal_digests(
        &[&east, &west],
        Instant::now() + CONVERGE
    ));
    let shown = status(&east);
    let link = &shown["links"][0];
    assert_eq!(link["state"], "open", "{shown}");
    assert_eq!(link["remote_datacenter"], "west");
    assert!(wait_until(Instant::now() + CONVERGE, || status(&east)
        ["links"][0]["log_bytes_behind"]
        == 0));
    // Nothing came back: west's own writes are none, east applied nothing.
    assert_eq!(counter(&east, "xdc_records_applied"), 0);
}

#[test]
fn a_cut_link_drains_its_backlog_when_restored() {
    let east = start_datacenter("east", 1);
    let west = start_datacenter("west", 2);
    let proxy = LinkProxy::start(west.address()).expect("proxy");
    connect(&east, "west", proxy.addr(), &secret_of("west"), false);
    let (stop, writer) = load_in_background(&east, "cut", 1_000, Duration::from_secs(60));
    std::thread::sleep(Duration::from_secs(1));
    proxy.cut();
    // The cut lasts 30 s; the backlog then is 30 s of writes.
    let cut_until = Instant::now() + Duration::from_secs(30);
    assert!(
        wait_until(Instant::now() + Duration::from_secs(15), || {
            status(&east)["links"][0]["state"] != "open"
        }),
        "the link never noticed the cut: {}",
        status(&east)
    );
    while Instant::now() < cut_until {
        std::thread::sleep(Duration::from_millis(200));
    }
    let behind = status(&east)["links"][0]["log_bytes_behind"]
        .as_u64()
        .unwrap_or(0);
    assert!(behind > 0, "a cut link must show a backlog");
    proxy.restore();
    std::thread::sleep(Duration::from_secs(1));
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let (acknowledged, errors) = writer.join().expect("writer");
    assert_eq!(errors, 0);
    let missing = wait_for_values(&west, &acknowledged, Instant::now() + CONVERGE);
    assert!(
        missing.is_empty(),
        "{} of {} writes missing after the cut",
        missing.len(),
        acknowledged.len()
    );
    assert!(wait_for_equal_digests(
        &[&east, &west],
        Instant::now() + CONVERGE
    ));
    assert!(status(&east)["links"][0]["connects"].as_u64().unwrap_or(0) >= 2);
}

#[test]
fn killing_the_shipping_then_the_receiving_node_loses_nothing() {
    let mut east = start_datacenter("east", 1);
    let mut west = start_datacenter("west", 2);
    connect(&east, "west", west.address(), &secret_of("west"), false);
    let (_, writer) = load_in_background(&east, "first", 1_500, Duration::from_secs(2));
    let (mut acknowledged, errors) = writer.join().expect("writer");
    assert_eq!(errors, 0);
    east.kill();
    east.restart();
    let (_, writer) = load_in_background(&east, "second", 1_500, Duration::from_secs(2));
    let (more, errors) = writer.join().expect("writer");
    assert_eq!(errors, 0);
    acknowledged.extend(more);
    west.kill();
    let (_, writer) = load_in_background(&east, "third", 1_500, Duration::from_secs(1));
    let (more, errors) = writer.join().expect("writer");
    assert_eq!(errors, 0);
    acknowledged.extend(more);
    west.restart();
    let missing = wait_for_values(&west, &acknowledged, Instant::now() + CONVERGE);
    assert!(
        missing.is_empty(),
        "{} of {} writes missing; east log:\n{}",
        missing.len(),
        acknowledged.len(),
        east.log()
    );
    assert!(wait_for_equal_digests(
        &[&east, &west],
        Instant::now() + CONVERGE
    ));
}

#[test]
fn concurrent_writes_in_two_datacenters_converge_to_the_greatest_version() {
    let east = start_datacenter("east", 1);
    let west = start_datacenter("west", 2);
    connect(&east, "west", west.address(), &secret_of("west"), false);
    connect(&west, "east", east.address(), &secret_of("east"), false);
    let keys: Vec<String> = (0..1_000)
        .map(|index| format!("shared-{index:04}"))
        .collect();
    let writers: Vec<_> = [(&east, "from-east"), (&west, "from-west")]
        .into_iter()
        .map(|(server, tag)| {
            let config = server.client_config();
            let keys = keys.clone();
            std::thread::spawn(move || {
                let mut client =
                    meridian_net::client::blocking::Client::connect(config).expect("connect");
                for round in 0..2 {
                    for key in &keys {
                        client
                            .put(key.as_bytes(), format!("{tag}-{round}").as_bytes())
                            .expect("put");
                    }
                }
            })
        })
        .collect();
    for writer in writers {
        writer.join().expect("writer");
    }
    assert!(
        wait_for_equal_digests(&[&east, &west], Instant::now() + CONVERGE),
        "digests differ"
    );
    let mut east_client = east.client();
    let mut west_client = west.client();
    let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
    for chunk in refs.chunks(200) {
        let here = east_client.mget(chunk).expect("mget east");
        let there = west_client.mget(chunk).expect("mget west");
        for ((key, a), b) in chunk.iter().zip(here).zip(there) {
            let (a, b) = (a.expect("east has it"), b.expect("west has it"));
            assert_eq!(a.version, b.version, "{key}");
            assert_eq!(a.value, b.value, "{key}");
        }
    }
    let conflicts = counter(&east, "xdc_conflicts") + counter(&west, "xdc_conflicts");
    assert!(
        conflicts > 0,
        "two datacenters writing the same keys must meet conflicts"
    );
}

#[test]
fn chains_and_rings_of_three_apply_every_write_once_in_each() {
    // Chain a → b → c: b cascades a's writes to c.
    let a = start_datacenter("a", 1);
    let b = start_datacenter("b", 2);
    let c = start_datacenter("c", 3);
    connect(&a, "b", b.address(), &secret_of("b"), false);
    connect(&b, "c", c.address(), &secret_of("c"), true);
    let mut client = a.client();
    let written: Vec<(String, Vec<u8>)> = (0..300)
        .map(|index| {
            (
                format!("chain-{index:03}"),
                format!("v{index}").into_bytes(),
            )
        })
        .collect();
    for (key, value) in &written {
        client.put(key.as_bytes(), value).expect("put");
    }
    assert!(wait_for_values(&c, &written, Instant::now() + CONVERGE).is_empty());
    assert!(wait_until(Instant::now() + CONVERGE, || counter(
        &b,
        "xdc_records_applied"
    ) == 300));
    assert!(wait_until(Instant::now() + CONVERGE, || counter(
        &c,
        "xdc_records_applied"
    ) == 300));
    // Close the ring: c → a (cascading). Nothing of a's comes back to a,
    // and a new write at b goes around once: b → c → a.
    connect(&c, "a", a.address(), &secret_of("a"), true);
    connect(&a, "b", b.address(), &secret_of("b"), true);
    b.client().put(b"from-b", b"around").expect("put");
    let expected = vec![("from-b".to_string(), b"around".to_vec())];
    assert!(wait_for_values(&a, &expected, Instant::now() + CONVERGE).is_empty());
    assert!(wait_for_equal_digests(
        &[&a, &b, &c],
        Instant::now() + CONVERGE
    ));
    // Let the links go quiet, then count: every write was applied once in
    // each datacenter, never twice and never at its origin.
    assert!(wait_until(Instant::now() + CONVERGE, || {
        [&a, &b, &c].iter().all(|dc| {
            status(dc)["links"].as_array().is_some_and(|links| {
                links
                    .iter()
                    .all(|link| link["log_bytes_behind"] == 0 && link["records_in_flight"] == 0)
            })
        })
    }));
    assert_eq!(
        counter(&a, "xdc_records_applied"),
        1,
        "a applied only b's write"
    );
    assert_eq!(
        counter(&b, "xdc_records_applied"),
        300,
        "b applied a's writes once"
    );
    assert_eq!(counter(&c, "xdc_records_applied"), 301);
}

#[test]
fn datacenters_with_different_ring_sizes_converge() {
    let east = ServerProcess::start(datacenter_config("east", 1).set("storage", "partitions", "8"));
    let west =
        ServerProcess::start(datacenter_config("west", 2).set("storage", "partitions", "32"));
    connect(&east, "west", west.address(), &secret_of("west"), false);
    let (_, writer) = load_in_background(&east, "rings", 2_000, Duration::from_secs(1));
    let (acknowledged, _) = writer.join().expect("writer");
    assert!(wait_for_values(&west, &acknowledged, Instant::now() + CONVERGE).is_empty());
    assert_eq!(status(&east)["links"][0]["remote_partitions"], 32);
}

#[test]
fn links_are_refused_with_their_reason() {
    let east = start_datacenter("east", 1);
    let west = start_datacenter("west", 2);
    let wrong = try_connect(&east, "west", west.address(), "not-the-secret", false);
    assert!(!wrong.status.success());
    let text = String::from_utf8_lossy(&wrong.stderr);
    assert!(text.contains("wrong secret"), "{text}");
    let twin = start_datacenter("twin", 1);
    let same_id = try_connect(&east, "twin", twin.address(), &secret_of("twin"), false);
    let text = String::from_utf8_lossy(&same_id.stderr);
    assert!(text.contains("datacenter_id 1"), "{text}");
    let closed = ServerProcess::start(datacenter_config("closed", 3).set("xdc", "secret", "\"\""));
    let refused = try_connect(&east, "closed", closed.address(), "anything", false);
    let text = String::from_utf8_lossy(&refused.stderr);
    assert!(text.contains("accepts no xdc links"), "{text}");
    // A refused link is not stored.
    assert_eq!(status(&east)["links"].as_array().map(Vec::len), Some(0));
    // Another protocol version is refused at HELLO, naming it.
    let hello = meridian_tests::raw::frame(
        meridian_net::PROTOCOL_VERSION,
        meridian_net::Opcode::HELLO,
        1,
        &[9, 3, 0, 0, 0, 0, 0],
    );
    let exchange = meridian_tests::raw::exchange(
        west.address(),
        &hello,
        Instant::now() + Duration::from_secs(10),
    );
    let (_, _, message) = exchange.final_error();
    assert!(message.contains("protocol version 9"), "{message}");
    // An xdc connection skips node.secret (it proves xdc.secret instead),
    // so it carries nothing but XDC frames: a GET on it is refused.
    let mut bytes = meridian_tests::raw::frame(
        meridian_net::PROTOCOL_VERSION,
        meridian_net::Opcode::HELLO,
        1,
        &[meridian_net::PROTOCOL_VERSION, 3, 0, 0, 0, 0, 0],
    );
    bytes.extend(meridian_tests::raw::request(
        2,
        &meridian_net::Request::Get {
            key: bytes::Bytes::from_static(b"k"),
            read_quorum: None,
        },
    ));
    let exchange = meridian_tests::raw::exchange(
        west.address(),
        &bytes,
        Instant::now() + Duration::from_secs(10),
    );
    let (_, _, message) = exchange.final_error();
    assert!(message.contains("carries only XDC frames"), "{message}");
}

#[test]
fn pause_keeps_the_place_and_resume_ships_the_rest() {
    let east = start_datacenter("east", 1);
    let west = start_datacenter("west", 2);
    connect(&east, "west", west.address(), &secret_of("west"), false);
    let output = east.cli(&["xdc", "pause", "west"]);
    assert!(output.status.success());
    assert!(wait_until(Instant::now() + CONVERGE, || status(&east)
        ["links"][0]["state"]
        == "paused"));
    let mut client = east.client();
    client.put(b"while-paused", b"held").expect("put");
    // The paused link shows the write as held back, and west lacks it.
    assert!(wait_until(Instant::now() + CONVERGE, || {
        status(&east)["links"][0]["log_bytes_behind"].as_u64() > Some(0)
    }));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(status(&east)["links"][0]["state"], "paused");
    assert!(west.client().get(b"while-paused").expect("get").is_none());
    assert!(east.cli(&["xdc", "resume", "west"]).status.success());
    let expected = vec![("while-paused".to_string(), b"held".to_vec())];
    assert!(wait_for_values(&west, &expected, Instant::now() + CONVERGE).is_empty());
    assert!(east.cli(&["xdc", "disconnect", "west"]).status.success());
    assert_eq!(status(&east)["links"].as_array().map(Vec::len), Some(0));
    client.put(b"after-disconnect", b"stays").expect("put");
    std::thread::sleep(Duration::from_millis(300));
    assert!(west
        .client()
        .get(b"after-disconnect")
        .expect("get")
        .is_none());
}

#[test]
fn a_synchronous_link_answers_a_write_only_once_the_other_datacenter_has_it() {
    let east = meridian_tests::ServerProcess::start(datacenter_config("east", 1).set(
        "xdc",
        "sync_timeout_ms",
        "1000",
    ));
    let west = start_datacenter("west", 2);
    let proxy = LinkProxy::start(west.address()).expect("proxy");
    let address = proxy.addr().to_string();
    let output = east.cli(&[
        "xdc",
        "connect",
        "west",
        &address,
        "--link-secret",
        &secret_of("west"),
        "--sync",
    ]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(wait_until(Instant::now() + CONVERGE, || status(&east)
        ["links"][0]["state"]
        == "open"));
    let mut client = east.client();
    let mut remote = west.client();
    for index in 0..50 {
        let key = format!("sync-{index}");
        client
            .put(key.as_bytes(), b"both")
            .expect("a synchronous write");
        // No waiting: west has it when east answers.
        let found = remote.get(key.as_bytes()).expect("get at west");
        assert!(
            found.is_some_and(|entry| &entry.value[..] == b"both"),
            "{key} not at west yet"
        );
    }
    proxy.cut();
    let refused = client.put(b"during-the-cut", b"here-first");
    let message = format!("{refused:?}");
    assert!(
        refused.is_err(),
        "a synchronous write with the link cut must fail"
    );
    assert!(
        message.contains("not confirmed by the other datacenter"),
        "{message}"
    );
    // Stored here all the same, and shipped once the link is back.
    assert!(client.get(b"during-the-cut").expect("get").is_some());
    proxy.restore();
    let expected = vec![("during-the-cut".to_string(), b"here-first".to_vec())];
    assert!(wait_for_values(&west, &expected, Instant::now() + CONVERGE).is_empty());
}

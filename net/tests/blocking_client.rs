//! Goal: the blocking client does what its API promises against a real
//! socket. Method: a fake server (tests/support) on 127.0.0.1:0 that answers
//! batches in reverse order and fails on cue; every test is bounded by short
//! timeouts and stops its server on drop.

mod support;

use std::collections::HashSet;
use std::time::Duration;

use bytes::Bytes;
use meridian_net::client::blocking::Client;
use meridian_net::client::{ClientConfig, ClientError};
use meridian_net::{ErrorCode, Opcode, Request, Response};
use support::{FakeServer, CLUSTER};

fn config(server: &FakeServer) -> ClientConfig {
    ClientConfig {
        cluster: CLUSTER.to_owned(),
        request_timeout: Duration::from_millis(500),
        reconnect_attempts_max: 3,
        reconnect_backoff_initial: Duration::from_millis(5),
        reconnect_backoff_max: Duration::from_millis(20),
        ..ClientConfig::new(server.address.clone())
    }
}

#[test]
fn typed_operations_round_trip() {
    let server = FakeServer::start();
    let mut client = Client::connect(config(&server)).expect("connect");
    assert_eq!(client.server().map(|hello| hello.node_id), Some(42));

    assert_eq!(client.get(b"k").expect("get"), None);
    let version = client.put(b"k", b"v1").expect("put");
    let entry = client.get(b"k").expect("get").expect("found");
    assert_eq!(entry.value, Bytes::from_static(b"v1"));
    assert_eq!(entry.version, version);
    let ttl_version = client
        .put_with_ttl(b"k", b"v2", Duration::from_millis(1500))
        .expect("put ttl");
    assert!(ttl_version > version);
    let tombstone = client.delete(b"k").expect("delete");
    assert!(tombstone > ttl_version);
    assert_eq!(client.get(b"k").expect("get"), None);

    let versions = client.mput(&[(b"a", b"1"), (b"b", b"2")]).expect("mput");
    assert_eq!(versions.len(), 2);
    let entries = client
        .mget(&[b"a".as_slice(), b"missing", b"b"])
        .expect("mget");
    let values: Vec<_> = entries
        .iter()
        .map(|entry| entry.as_ref().map(|entry| entry.value.clone()))
        .collect();
    assert_eq!(
        values,
        vec![
            Some(Bytes::from_static(b"1")),
            None,
            Some(Bytes::from_static(b"2"))
        ]
    );

    client.ping().expect("ping");
    assert!(client.buildinfo().expect("buildinfo").contains("build"));
    assert!(client
        .clusterinfo()
        .expect("clusterinfo")
        .contains("cluster"));
    assert!(client.nodehealth().expect("nodehealth").contains("health"));
    assert!(client.stats().expect("stats").contains("stats"));
}

#[test]
fn pipelined_requests_match_by_id_in_any_order() {
    let server = FakeServer::start();
    let mut client = Client::connect(config(&server)).expect("connect");
    let mut ids = Vec::new();
    for index in 0..200u32 {
        let request = Request::Put {
            key: Bytes::from(format!("key-{index}")),
            value: Bytes::from(format!("value-{index}")),
            ttl_seconds: None,
            write_quorum: None,
        };
        ids.push(client.send(&request).expect("send"));
    }
    assert_eq!(client.in_flight(), 200);
    // Receive in an order unrelated to the server's (reverse) order.
    for id in ids.iter().step_by(2).chain(ids.iter().skip(1).step_by(2)) {
        assert!(matches!(
            client.recv(*id).expect("recv"),
            Response::Written { .. }
        ));
    }
    assert_eq!(client.in_flight(), 0);

    let mut sent = HashSet::new();
    for index in 0..50u32 {
        let request = Request::Get {
            key: Bytes::from(format!("key-{index}")),
            read_quorum: None,
        };
        sent.insert(client.send(&request).expect("send"));
    }
    let mut received = HashSet::new();
    while received.len() < sent.len() {
        let (id, response) = client.recv_any().expect("recv_any");
        assert!(matches!(response, Response::Value(_)));
        assert!(received.insert(id), "id {id} received twice");
    }
    assert_eq!(received, sent);
    assert!(matches!(
        client.recv_any(),
        Err(ClientError::NothingInFlight)
    ));
}

#[test]
fn raw_frames_for_a_load_generator() {
    let server = FakeServer::start();
    let mut client = Client::connect(config(&server)).expect("connect");
    let first = client.send_raw(Opcode::PING, &[]).expect("send");
    let second = client.send(&Request::Ping).expect("send");
    let mut ids = [
        client.recv_frame().expect("frame"),
        client.recv_frame().expect("frame"),
    ];
    ids.sort_by_key(|frame| frame.request_id);
    assert_eq!(ids[0].request_id, first);
    assert_eq!(ids[1].request_id, second);
    assert!(ids
        .iter()
        .all(|frame| frame.opcode == Opcode::PONG && frame.body.is_empty()));
}

#[test]
fn a_silent_server_times_out_and_the_client_keeps_working() {
    let server = FakeServer::start();
    let mut client = Client::connect(config(&server)).expect("connect");
    let error = client.get(b"silent").expect_err("timeout");
    assert!(matches!(error, ClientError::Timeout { .. }), "{error}");
    client.put(b"after", b"x").expect("put after timeout");
    assert_eq!(client.in_flight(), 0);
}

#[test]
fn a_broken_connection_is_replaced() {
    let server = FakeServer::start();
    let mut client = Client::connect(config(&server)).expect("connect");
    client
        .put(b"close-once", b"x")
        .expect_err("server closed the connection");
    // A read is retried once on a new connection; a write is not.
    let error = client.put(b"close-always", b"x").expect_err("closed again");
    assert!(error.is_connection_lost(), "{error}");
    client.ping().expect("ping on a new connection");
    assert_eq!(
        client
            .get(b"close-always")
            .map_err(|error| error.is_connection_lost())
            .err(),
        Some(true)
    );
    client.ping().expect("ping again");
    assert!(
        server.connections() >= 4,
        "connections: {}",
        server.connections()
    );
}

#[test]
fn server_errors_carry_code_and_message() {
    let server = FakeServer::start();
    let mut client = Client::connect(config(&server)).expect("connect");
    let error = client.get(b"fail").expect_err("server error");
    assert_eq!(error.code(), Some(ErrorCode::StorageError));
    assert!(error.to_string().contains("disk on fire"));
    client
        .ping()
        .expect("connection kept after an error response");
}

#[test]
fn hello_refusals_are_reported_without_retrying() {
    let server = FakeServer::start();
    let wrong_cluster = ClientConfig {
        cluster: "other".to_owned(),
        ..config(&server)
    };
    let error = Client::connect(wrong_cluster).expect_err("refused");
    assert_eq!(error.code(), Some(ErrorCode::ClusterMismatch));
    let bad_credentials = ClientConfig {
        credentials: Some(Bytes::from_static(b"bad")),
        ..config(&server)
    };
    let error = Client::connect(bad_credentials).expect_err("refused");
    assert_eq!(error.code(), Some(ErrorCode::AuthFailed));
    assert_eq!(server.connections(), 2, "a refusal must not be retried");
}

#[test]
fn connecting_to_nothing_gives_up_after_bounded_attempts() {
    let address = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr").to_string()
    };
    let config = ClientConfig {
        reconnect_attempts_max: 3,
        reconnect_backoff_initial: Duration::from_millis(1),
        ..ClientConfig::new(address)
    };
    match Client::connect(config) {
        Err(ClientError::Connect { attempts, .. }) => assert_eq!(attempts, 3),
        other => panic!("expected Connect error, got {other:?}"),
    }
}

#[test]
fn fails_over_to_the_next_address() {
    let dead = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr").to_string()
    };
    let server = FakeServer::start();
    let config = ClientConfig {
        addresses: vec![dead, server.address.clone()],
        ..config(&server)
    };
    let mut client = Client::connect(config).expect("second address");
    client.ping().expect("ping");
}

#[test]
fn oversized_requests_are_refused_before_sending() {
    let server = FakeServer::start();
    let limits = meridian_net::Limits {
        value_bytes_max: 8,
        ..Default::default()
    };
    let mut client = Client::connect(ClientConfig {
        limits,
        ..config(&server)
    })
    .expect("connect");
    let error = client.put(b"k", &[0u8; 9]).expect_err("too large");
    assert!(matches!(error, ClientError::Encode(_)), "{error}");
    assert_eq!(client.in_flight(), 0);
    client.ping().expect("still usable");
}

//! Goal: a write that cannot reach W replicas fails within the request
//! timeout with QuorumUnavailable and a message that says how many
//! replicas acknowledged and how many were needed; it never hangs and is
//! never acknowledged.
//!
//! Method: a three-node ring (W = 2, R = 2, request timeout 1 s, a member
//! counts as down after 3 s of silence). Three ways to lose two members,
//! each checked through member 1:
//! 1. members 2 and 3 frozen (SIGSTOP): their connections stay open and
//!    never answer, so the coordinator must give up at its timeout;
//! 2. the same members SIGKILLed, before member 1 notices: the attempts
//!    fail at once, and so must the write;
//! 3. once member 1 counts them down: refused up front, naming the live
//!    replicas. A read with R = 2 is refused the same way.

use std::time::{Duration, Instant};

use meridian_net::{ErrorCode, Request, Response};
use meridian_tests::cluster::TestCluster;
use meridian_tests::wait_until;

const REQUEST_TIMEOUT: Duration = Duration::from_millis(1000);
/// Scheduling slack on a loaded machine, on top of the request timeout.
const SLACK: Duration = Duration::from_secs(2);
const DOWN_DEADLINE: Duration = Duration::from_secs(15);

/// A PUT of `key`; returns the answer and how long it took.
fn put(client: &mut meridian_net::client::blocking::Client, key: &str) -> (Response, Duration) {
    let started = Instant::now();
    let request = meridian_net::client::core::put_request(key.as_bytes(), b"second", None);
    let answer = client.call(&request).expect("an answer to the PUT");
    (answer, started.elapsed())
}

fn quorum_message(answer: Response, context: &str) -> String {
    match answer {
        Response::Error {
            code: ErrorCode::QuorumUnavailable,
            message,
        } => message,
        other => panic!("{context}: expected QuorumUnavailable, got {other:?}"),
    }
}

#[test]
fn a_write_without_a_quorum_fails_in_time_and_says_why() {
    let mut cluster = TestCluster::start(3, |config| {
        config
            .set(
                "cluster",
                "request_timeout_ms",
                &REQUEST_TIMEOUT.as_millis().to_string(),
            )
            .set("cluster", "down_after_ms", "3000")
    });
    let key = "quorum-key";
    let mut client = cluster.client(1);
    client
        .put(key.as_bytes(), b"first")
        .expect("a write with all members up");

    // 1. Frozen members: the coordinator waits out its timeout.
    cluster.node(2).freeze();
    cluster.node(3).freeze();
    let (answer, took) = put(&mut client, key);
    let message = quorum_message(answer, "two members frozen");
    println!("frozen: {took:?}: {message}");
    assert!(
        took < REQUEST_TIMEOUT + SLACK,
        "the write failed only after {took:?}"
    );
    assert!(
        message.contains("1 of 3 replicas acknowledged") && message.contains("W = 2"),
        "two members frozen: {message:?}"
    );

    // 2. Killed members, still counted up: every attempt fails at once.
    cluster.node_mut(2).kill();
    cluster.node_mut(3).kill();
    let (answer, took) = put(&mut client, key);
    let message = quorum_message(answer, "two members killed");
    println!("killed: {took:?}: {message}");
    assert!(
        took < REQUEST_TIMEOUT + SLACK,
        "the write failed after {took:?}"
    );
    assert!(
        message.contains("acknowledged") && message.contains("W = 2"),
        "two members killed: {message:?}"
    );

    // 3. Counted down: refused before any attempt.
    let mut last_message = String::new();
    let refused_up_front = wait_until(Instant::now() + DOWN_DEADLINE, || {
        let (answer, took) = put(&mut client, key);
        assert!(
            took < REQUEST_TIMEOUT + SLACK,
            "the write failed after {took:?}"
        );
        last_message = quorum_message(answer, "two members down");
        last_message.contains("1 live replicas")
    });
    assert!(
        refused_up_front,
        "member 1 never counted members 2 and 3 down; last refusal: {last_message:?}"
    );
    assert!(last_message.contains("W = 2"), "{last_message:?}");
    let read = Request::Get {
        key: bytes::Bytes::copy_from_slice(key.as_bytes()),
        read_quorum: None,
    };
    let message = quorum_message(client.call(&read).expect("GET"), "a read, R = 2");
    assert!(
        message.contains("1 live replicas") && message.contains("R = 2"),
        "{message:?}"
    );
    cluster.stop_all();
}

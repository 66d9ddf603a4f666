//! Goal: the tokio client does what its API promises, including many tasks
//! pipelining on one shared connection. Method: the same fake server as the
//! blocking tests (answers batches in reverse order, fails on cue); short
//! timeouts bound every test.

#![cfg(feature = "tokio")]

mod support;

use std::time::Duration;

use bytes::Bytes;
use meridian_net::client::asynchronous::Client;
use meridian_net::client::{ClientConfig, ClientError};
use meridian_net::ErrorCode;
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

#[tokio::test]
async fn typed_operations_round_trip() {
    let server = FakeServer::start();
    let client = Client::connect(config(&server)).await.expect("connect");
    assert_eq!(client.server().await.map(|hello| hello.node_id), Some(42));
    assert_eq!(client.get(b"k").await.expect("get"), None);
    let version = client.put(b"k", b"v").await.expect("put");
    let entry = client.get(b"k").await.expect("get").expect("found");
    assert_eq!(
        (entry.version, entry.value),
        (version, Bytes::from_static(b"v"))
    );
    client
        .put_with_ttl(b"t", b"x", Duration::from_secs(10))
        .await
        .expect("ttl");
    client.delete(b"k").await.expect("delete");
    assert_eq!(client.get(b"k").await.expect("get"), None);
    let versions = client
        .mput(&[(b"a", b"1"), (b"b", b"2")])
        .await
        .expect("mput");
    assert_eq!(versions.len(), 2);
    let entries = client
        .mget(&[b"a".as_slice(), b"zz", b"b"])
        .await
        .expect("mget");
    assert_eq!(
        entries.iter().map(Option::is_some).collect::<Vec<_>>(),
        vec![true, false, true]
    );
    client.ping().await.expect("ping");
    assert!(client.buildinfo().await.expect("info").contains("build"));
    assert!(client
        .clusterinfo()
        .await
        .expect("info")
        .contains("cluster"));
    assert!(client.nodehealth().await.expect("info").contains("health"));
    assert!(client.stats().await.expect("info").contains("stats"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_tasks_pipeline_on_one_connection() {
    let server = FakeServer::start();
    let client = Client::connect(config(&server)).await.expect("connect");
    let mut tasks = Vec::new();
    for task in 0..32u32 {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            for index in 0..25u32 {
                let key = format!("task-{task}-{index}");
                let version = client.put(key.as_bytes(), key.as_bytes()).await?;
                let entry = client.get(key.as_bytes()).await?;
                let entry = entry.expect("written value is found");
                assert_eq!(entry.value, Bytes::from(key));
                assert_eq!(entry.version, version);
            }
            Ok::<_, ClientError>(())
        }));
    }
    for task in tasks {
        task.await.expect("task panicked").expect("task failed");
    }
    assert_eq!(server.connections(), 1, "all tasks share one connection");
}

#[tokio::test]
async fn timeouts_and_server_errors() {
    let server = FakeServer::start();
    let client = Client::connect(config(&server)).await.expect("connect");
    let error = client.get(b"silent").await.expect_err("timeout");
    assert!(matches!(error, ClientError::Timeout { .. }), "{error}");
    let error = client.put(b"fail", b"x").await.expect_err("server error");
    assert_eq!(error.code(), Some(ErrorCode::StorageError));
    client.ping().await.expect("still usable");
}

#[tokio::test]
async fn a_broken_connection_is_replaced() {
    let server = FakeServer::start();
    let client = Client::connect(config(&server)).await.expect("connect");
    let error = client.put(b"close-always", b"x").await.expect_err("closed");
    assert!(error.is_connection_lost(), "{error}");
    client.ping().await.expect("ping on a new connection");
    // close-once: the read is retried once on a new connection and succeeds.
    assert_eq!(client.get(b"close-once").await.expect("retried read"), None);
    assert!(
        server.connections() >= 3,
        "connections: {}",
        server.connections()
    );
}

#[tokio::test]
async fn hello_refusal_is_reported() {
    let server = FakeServer::start();
    let wrong = ClientConfig {
        cluster: "other".to_owned(),
        ..config(&server)
    };
    let error = Client::connect(wrong).await.expect_err("refused");
    assert_eq!(error.code(), Some(ErrorCode::ClusterMismatch));
    assert!(error.to_string().contains("other"));
}

//! Goal: the basic operations work end to end through both the blocking
//! client and the `meridian cli` process.
//!
//! Method: start one server with two shards (so requests cross shards),
//! write, read, delete, expire and batch through the client; do the same
//! through the CLI and check its exit statuses and output; parse every
//! info document as JSON.

use std::time::{Duration, Instant};

use meridian_net::ErrorCode;
use meridian_tests::{wait_until, ServerConfig, ServerProcess};
use serde_json::Value;

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|error| panic!("not JSON ({error}): {text}"))
}

#[test]
fn client_put_get_delete_and_batches() {
    let server = ServerProcess::start(ServerConfig::default().shards(2));
    let mut client = server.client();
    client.ping().expect("ping");

    let written = client.put(b"alpha", b"one").expect("put");
    let entry = client.get(b"alpha").expect("get").expect("alpha exists");
    assert_eq!(&entry.value[..], b"one");
    assert_eq!(entry.version, written);

    let rewritten = client.put(b"alpha", b"two").expect("overwrite");
    assert!(rewritten > written, "a later write has a later version");
    let entry = client.get(b"alpha").expect("get").expect("alpha exists");
    assert_eq!(&entry.value[..], b"two");

    let tombstone = client.delete(b"alpha").expect("delete");
    assert!(tombstone > rewritten);
    assert!(client.get(b"alpha").expect("get").is_none(), "deleted");
    assert!(client.get(b"never-written").expect("get").is_none());

    let empty_value = client.put(b"empty", b"").expect("put an empty value");
    let entry = client.get(b"empty").expect("get").expect("empty exists");
    assert!(entry.value.is_empty());
    assert_eq!(entry.version, empty_value);

    // Enough keys that both shards own some.
    let entries: Vec<(String, String)> = (0..64)
        .map(|index| (format!("batch-{index}"), format!("value-{index}")))
        .collect();
    let versions = client.mput(&entries).expect("mput");
    assert_eq!(versions.len(), entries.len());
    let mut keys: Vec<String> = entries.iter().map(|(key, _)| key.clone()).collect();
    keys.push("batch-missing".to_string());
    let found = client.mget(&keys).expect("mget");
    assert_eq!(found.len(), keys.len());
    for ((key, value), (entry, version)) in entries.iter().zip(found.iter().zip(&versions)) {
        let entry = entry.as_ref().unwrap_or_else(|| panic!("{key} missing"));
        assert_eq!(&entry.value[..], value.as_bytes(), "{key}");
        assert_eq!(entry.version, *version, "{key}");
    }
    assert!(
        found.last().expect("one per key").is_none(),
        "batch-missing"
    );
}

#[test]
fn value_with_ttl_expires() {
    let server = ServerProcess::start(ServerConfig::default());
    let mut client = server.client();
    // Expiry is in whole seconds from now, so a TTL of 2 s lives at least 1 s.
    client
        .put_with_ttl(b"short-lived", b"soon gone", Duration::from_secs(2))
        .expect("put with ttl");
    client.put(b"long-lived", b"stays").expect("put");
    let entry = client
        .get(b"short-lived")
        .expect("get")
        .expect("not yet expired");
    assert_eq!(&entry.value[..], b"soon gone");
    let expired = wait_until(Instant::now() + Duration::from_secs(10), || {
        client.get(b"short-lived").expect("get").is_none()
    });
    assert!(expired, "the value did not expire within 10 s of a 2 s TTL");
    assert!(client.get(b"long-lived").expect("get").is_some());
}

#[test]
fn info_commands_return_json() {
    let server = ServerProcess::start(ServerConfig::default().shards(2));
    let mut client = server.client();
    client.put(b"counted", b"1").expect("put");

    let build = json(&client.buildinfo().expect("buildinfo"));
    assert_eq!(build["name"], "meridian");
    assert_eq!(build["protocol_version"], 1);

    let cluster = json(&client.clusterinfo().expect("clusterinfo"));
    assert_eq!(cluster["cluster"], "meridian");
    assert_eq!(cluster["partitions"], 8);
    assert_eq!(cluster["members"][0]["shards"], 2);
    assert_eq!(
        cluster["members"][0]["address"],
        server.address().to_string()
    );

    let health = json(&client.nodehealth().expect("nodehealth"));
    assert_eq!(health["status"], "ok");
    assert_eq!(health["shards_answering"], 2);

    let stats = json(&client.stats().expect("stats"));
    assert!(stats["puts"].as_u64().expect("puts") >= 1, "{stats}");
    assert_eq!(stats["shards"].as_array().expect("shards").len(), 2);
}

#[test]
fn cli_put_get_delete_and_info() {
    let server = ServerProcess::start(ServerConfig::default().shards(2));
    let run = |args: &[&str]| {
        let output = server.cli(args);
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        (output.status.code(), stdout, stderr)
    };

    let (code, stdout, stderr) = run(&["put", "greeting", "hello world"]);
    assert_eq!(code, Some(0), "put: {stderr}");
    assert!(json(stdout.trim())["hlc"].as_u64().expect("hlc") > 0);

    let (code, stdout, _) = run(&["get", "greeting"]);
    assert_eq!((code, stdout.as_str()), (Some(0), "hello world\n"));

    // The CLI and the client see the same data.
    let mut client = server.client();
    let entry = client
        .get(b"greeting")
        .expect("get")
        .expect("written by the CLI");
    assert_eq!(&entry.value[..], b"hello world");
    client.put(b"from-client", b"42").expect("put");
    assert_eq!(run(&["get", "from-client"]).1, "42\n");

    let (code, stdout, _) = run(&["get", "nobody"]);
    assert_eq!(
        (code, stdout.as_str()),
        (Some(1), ""),
        "missing key: exit 1, no output"
    );

    let (code, _, stderr) = run(&["del", "greeting"]);
    assert_eq!(code, Some(0), "del: {stderr}");
    assert_eq!(run(&["get", "greeting"]).0, Some(1), "deleted");

    let (code, _, stderr) = run(&["put", "--ttl", "2", "ephemeral", "x"]);
    assert_eq!(code, Some(0), "put --ttl: {stderr}");
    let expired = wait_until(Instant::now() + Duration::from_secs(10), || {
        client.get(b"ephemeral").expect("get").is_none()
    });
    assert!(expired, "the CLI's TTL did not expire");

    assert_eq!(run(&["ping"]).1, "PONG\n");
    for command in ["buildinfo", "clusterinfo", "nodehealth", "stats"] {
        let (code, stdout, stderr) = run(&[command]);
        assert_eq!(code, Some(0), "{command}: {stderr}");
        assert!(json(stdout.trim()).is_object(), "{command}: {stdout}");
    }
}

#[test]
fn cli_errors_exit_2_with_the_message() {
    let server = ServerProcess::start(ServerConfig::default().secret("open sesame"));
    let output = server.cli(&["ping"]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("AuthFailed"), "{stderr}");

    let output = server.cli(&["--secret", "open sesame", "put", "k", "v"]);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let output = server.cli(&["--secret", "open sesame", "--cluster", "elsewhere", "ping"]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("ClusterMismatch") && stderr.contains("elsewhere"),
        "{stderr}"
    );

    // A refused HELLO is a server error, not a connection problem.
    let mut config = server.client_config();
    config.credentials = Some(bytes::Bytes::from_static(b"wrong"));
    let error = meridian_net::client::blocking::Client::connect(config).expect_err("refused");
    assert_eq!(error.code(), Some(ErrorCode::AuthFailed), "{error}");
}

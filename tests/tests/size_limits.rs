//! Goal: keys and values over the configured limits are refused with
//! KeyTooLarge / ValueTooLarge naming both sizes, and nothing of a refused
//! request is stored.
//!
//! Method: a server with `key_bytes_max = 1024` and `value_bytes_max = 1 MiB`
//! gets single and batch requests just over each limit (the client library
//! allows more, so the server's decoder is what refuses); requests exactly at
//! the limits must succeed; afterwards the key count and the PUT counter in
//! STATS show that no refused write reached a store.

use meridian_net::client::blocking::Client;
use meridian_net::client::ClientError;
use meridian_net::ErrorCode;
use meridian_tests::{ServerConfig, ServerProcess};

const KEY_BYTES_MAX: usize = 1024;
const VALUE_BYTES_MAX: usize = 1 << 20;

fn assert_refused<T: std::fmt::Debug>(
    result: Result<T, ClientError>,
    code: ErrorCode,
    sizes: [usize; 2],
) {
    let error = result.expect_err("over the limit");
    let ClientError::Server {
        code: found,
        message,
    } = &error
    else {
        panic!("expected a server error {code}, got {error}");
    };
    assert_eq!(*found, code, "{message}");
    for size in sizes {
        assert!(
            message.contains(&size.to_string()),
            "{message:?} does not name {size}"
        );
    }
}

fn stats(client: &mut Client) -> (u64, u64) {
    let json: serde_json::Value =
        serde_json::from_str(&client.stats().expect("stats")).expect("JSON");
    (
        json["keys"].as_u64().expect("keys"),
        json["puts"].as_u64().expect("puts"),
    )
}

#[test]
fn oversized_keys_and_values_are_refused_and_not_stored() {
    let server = ServerProcess::start(
        ServerConfig::default()
            .shards(2)
            .set("limits", "key_bytes_max", &KEY_BYTES_MAX.to_string())
            .set("limits", "value_bytes_max", &VALUE_BYTES_MAX.to_string()),
    );
    let long_key = vec![b'k'; KEY_BYTES_MAX + 1];
    let long_value = vec![b'v'; VALUE_BYTES_MAX + 1];
    let key_sizes = [KEY_BYTES_MAX + 1, KEY_BYTES_MAX];
    let value_sizes = [VALUE_BYTES_MAX + 1, VALUE_BYTES_MAX];

    // At the limits: accepted.
    let mut client = server.client();
    let limit_key = vec![b'k'; KEY_BYTES_MAX];
    let limit_value = vec![b'v'; VALUE_BYTES_MAX];
    client
        .put(&limit_key, &limit_value)
        .expect("a key and a value at the limits");
    let entry = client.get(&limit_key).expect("get").expect("stored");
    assert_eq!(entry.value.len(), VALUE_BYTES_MAX);
    let before = stats(&mut client);

    // A key or value over its limit comes in a well-formed frame: the
    // connection stays open and serves the next request.
    let mut same = server.client();
    assert_refused(same.put(&long_key, b"v"), ErrorCode::KeyTooLarge, key_sizes);
    same.ping()
        .expect("the connection survives an oversize refusal");
    assert_refused(
        same.put(b"small", &long_value),
        ErrorCode::ValueTooLarge,
        value_sizes,
    );
    same.ping()
        .expect("the connection survives an oversize refusal");

    assert_refused(
        server.client().put(&long_key, b"v"),
        ErrorCode::KeyTooLarge,
        key_sizes,
    );
    assert_refused(
        server.client().put(b"small", &long_value),
        ErrorCode::ValueTooLarge,
        value_sizes,
    );
    assert_refused(
        server.client().get(&long_key),
        ErrorCode::KeyTooLarge,
        key_sizes,
    );
    assert_refused(
        server.client().delete(&long_key),
        ErrorCode::KeyTooLarge,
        key_sizes,
    );
    assert_refused(
        server.client().mget(&[b"fine".to_vec(), long_key.clone()]),
        ErrorCode::KeyTooLarge,
        key_sizes,
    );
    let batch = vec![
        (b"batch-a".to_vec(), b"ok".to_vec()),
        (b"batch-b".to_vec(), long_value.clone()),
        (b"batch-c".to_vec(), b"ok".to_vec()),
    ];
    assert_refused(
        server.client().mput(&batch),
        ErrorCode::ValueTooLarge,
        value_sizes,
    );
    let batch = vec![
        (b"batch-d".to_vec(), b"ok".to_vec()),
        (long_key.clone(), b"ok".to_vec()),
    ];
    assert_refused(
        server.client().mput(&batch),
        ErrorCode::KeyTooLarge,
        key_sizes,
    );

    let mut client = server.client();
    let absent = ["small", "batch-a", "batch-b", "batch-c", "batch-d"];
    for (key, entry) in absent.iter().zip(client.mget(&absent).expect("mget")) {
        assert!(entry.is_none(), "{key} of a refused request was stored");
    }
    assert!(client
        .get(&long_key[..KEY_BYTES_MAX])
        .expect("get")
        .is_some());
    assert_eq!(
        stats(&mut client),
        before,
        "(keys, puts) changed by refused requests"
    );
}

//! Goal: a client may pipeline more requests than the server executes at
//! once (`limits.requests_in_flight_max`); every one is answered, and a
//! pipelined batch behaves as if its requests ran one after the other (the
//! server decodes a whole batch and warms its keys' lookups before running
//! it: that must change nothing).
//!
//! Method: with `requests_in_flight_max = 4`, send 64 requests in one write
//! (puts and gets, to both shards) and then receive all 64 answers, each
//! within the client's request timeout. Then, with the default limit, send
//! bursts of seeded random PUTs, GETs and DELETEs over a few keys, so that
//! one batch writes, reads and deletes the same key several times, and
//! check every answer against a model run in order.

use std::time::Duration;

use meridian_net::client::blocking::Client;
use meridian_net::client::core::{delete_request, get_request, put_request};
use meridian_net::{Request, Response};
use meridian_tests::{ServerConfig, ServerProcess};

const REQUESTS: usize = 64;

#[test]
fn more_pipelined_requests_than_in_flight_max_are_all_answered() {
    let server = ServerProcess::start(ServerConfig::default().shards(2).set(
        "limits",
        "requests_in_flight_max",
        "4",
    ));
    let mut config = server.client_config();
    config.request_timeout = Duration::from_secs(5);
    let mut client = Client::connect(config).expect("connect");
    let mut ids = Vec::new();
    for index in 0..REQUESTS {
        let key = format!("pipelined-{}", index / 2);
        let request = if index % 2 == 0 {
            put_request(key.as_bytes(), key.as_bytes(), None)
        } else {
            get_request(key.as_bytes())
        };
        ids.push((client.send(&request).expect("send"), request));
    }
    client.flush().expect("one burst");
    for (id, request) in ids {
        let response = client
            .recv(id)
            .unwrap_or_else(|error| panic!("request {id} ({request:?}): {error}"));
        match (&request, &response) {
            (Request::Put { .. }, Response::Written { .. }) => {}
            (Request::Get { key, .. }, Response::Value(entry)) => assert_eq!(entry.value, key),
            _ => panic!("{request:?} answered with {response:?}"),
        }
    }
}

const BURSTS: usize = 20;
const BURST_REQUESTS: usize = 48;
const MODEL_KEYS: u64 = 6;

#[test]
fn a_pipelined_batch_runs_in_request_order() {
    for shards in [1, 2] {
        let server = ServerProcess::start(ServerConfig::default().shards(shards));
        let mut client = Client::connect(server.client_config()).expect("connect");
        let mut model: std::collections::HashMap<Vec<u8>, Vec<u8>> = Default::default();
        let mut seed = 0x9E37_79B9_7F4A_7C15_u64 ^ shards as u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for burst in 0..BURSTS {
            let mut sent = Vec::new();
            for index in 0..BURST_REQUESTS {
                let draw = next();
                let key = format!("ordered-{}", draw % MODEL_KEYS).into_bytes();
                let request = match (draw >> 32) % 5 {
                    0 | 1 => {
                        let value = format!("value-{burst}-{index}").into_bytes();
                        model.insert(key.clone(), value.clone());
                        put_request(&key, &value, None)
                    }
                    2 => {
                        model.remove(&key);
                        delete_request(&key)
                    }
                    _ => get_request(&key),
                };
                let expected = model.get(&key).cloned();
                sent.push((client.send(&request).expect("send"), request, expected));
            }
            client.flush().expect("one burst");
            for (id, request, expected) in sent {
                let response = client
                    .recv(id)
                    .unwrap_or_else(|error| panic!("request {id} ({request:?}): {error}"));
                match (&request, &response, expected) {
                    (Request::Put { .. } | Request::Delete { .. }, Response::Written { .. }, _) => {}
                    (Request::Get { .. }, Response::Value(entry), Some(value)) => {
                        assert_eq!(entry.value, value, "{shards} shard(s), burst {burst}: {request:?}")
                    }
                    (Request::Get { .. }, Response::NotFound, None) => {}
                    (_, _, expected) => panic!(
                        "{shards} shard(s), burst {burst}: {request:?} answered with {response:?}, expected {expected:?}"
                    ),
                }
            }
        }
    }
}

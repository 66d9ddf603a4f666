//! Goal: a client may pipeline more requests than the server executes at
//! once (`limits.requests_in_flight_max`); every one is answered.
//!
//! Method: with `requests_in_flight_max = 4`, send 64 requests in one write
//! (puts and gets, to both shards) and then receive all 64 answers, each
//! within the client's request timeout.

use std::time::Duration;

use meridian_net::client::blocking::Client;
use meridian_net::client::core::{get_request, put_request};
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

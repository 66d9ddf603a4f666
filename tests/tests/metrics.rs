//! Goal: the metrics endpoint serves Prometheus text with the request
//! counter of every shard.
//!
//! Method: start a two-shard server with `--metrics-listen` on a free
//! loopback port, make some requests, GET /metrics over plain HTTP until the
//! endpoint answers, and check the status, content type, the HELP/TYPE lines,
//! one sample per shard, and that the counted requests cover ours.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use meridian_tests::{free_loopback_port, wait_until, ServerConfig, ServerProcess};

fn http_get(address: &str, path: &str) -> Option<String> {
    let mut stream = TcpStream::connect(address).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    Some(response)
}

/// The samples of `name`: (labels, value).
fn samples<'a>(body: &'a str, name: &str) -> Vec<(&'a str, f64)> {
    body.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let labels = series
                .strip_prefix(name)?
                .strip_prefix('{')?
                .strip_suffix('}')?;
            Some((labels, value.parse().expect("a numeric sample")))
        })
        .collect()
}

#[test]
fn metrics_endpoint_serves_request_counters() {
    let metrics_address = format!("127.0.0.1:{}", free_loopback_port());
    let server = ServerProcess::start(
        ServerConfig::default()
            .shards(2)
            .metrics_listen(&metrics_address),
    );
    let mut client = server.client();
    const REQUESTS: usize = 20;
    for index in 0..REQUESTS {
        client
            .put(format!("metric-{index}").as_bytes(), b"x")
            .expect("put");
    }

    let mut response = None;
    let answered = wait_until(Instant::now() + Duration::from_secs(10), || {
        response = http_get(&metrics_address, "/metrics");
        response.is_some()
    });
    assert!(answered, "no answer from http://{metrics_address}/metrics");
    let response = response.expect("answered");
    let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_lowercase().contains("content-type: text/plain"),
        "{head}"
    );
    assert!(
        body.contains("# TYPE meridian_requests_total counter"),
        "{body}"
    );

    let requests = samples(body, "meridian_requests_total");
    let mut shards: Vec<&str> = requests.iter().map(|(labels, _)| *labels).collect();
    shards.sort();
    assert_eq!(shards, ["shard=\"0\"", "shard=\"1\""], "{body}");
    let total: f64 = requests.iter().map(|(_, value)| value).sum();
    assert!(
        total >= REQUESTS as f64,
        "meridian_requests_total sums to {total}: {body}"
    );
    let puts: f64 = samples(body, "meridian_puts_total")
        .iter()
        .map(|(_, value)| value)
        .sum();
    assert_eq!(puts, REQUESTS as f64, "{body}");
}

//! Datacenters for the cross-datacenter tests: single-node `meridian`
//! servers with their own datacenter name, id and `xdc.secret`, links made
//! with the real CLI (`meridian cli xdc connect`), through a [`LinkProxy`]
//! when the test wants to delay or cut them.
//!
//! Invariants: every wait has a deadline; a helper that expects success
//! panics with the CLI's output or the server's log.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use meridian_net::client::blocking::Client;

use crate::cluster::digests_of;
use crate::{free_loopback_port, ServerConfig, ServerProcess};

/// A datacenter's configuration: one node, a fixed port (so a restart
/// keeps the address a link or proxy points at).
pub fn datacenter_config(name: &str, id: u8) -> ServerConfig {
    let port = free_loopback_port();
    ServerConfig::default()
        .listen(SocketAddr::from(([127, 0, 0, 1], port)))
        .set("node", "datacenter", &format!("{name:?}"))
        .set("node", "datacenter_id", &id.to_string())
        .set("xdc", "secret", &format!("\"secret-of-{name}\""))
}

/// Starts a datacenter of one node.
pub fn start_datacenter(name: &str, id: u8) -> ServerProcess {
    ServerProcess::start(datacenter_config(name, id))
}

/// The secret `start_datacenter` gives datacenter `name`.
pub fn secret_of(name: &str) -> String {
    format!("secret-of-{name}")
}

/// `xdc connect` from `from` to `address`, proving `secret`; the CLI's
/// output (exit status included).
pub fn try_connect(
    from: &ServerProcess,
    link: &str,
    address: SocketAddr,
    secret: &str,
    cascade: bool,
) -> std::process::Output {
    let address = address.to_string();
    let mut args = vec!["xdc", "connect", link, &address, "--link-secret", secret];
    if cascade {
        args.push("--cascade");
    }
    from.cli(&args)
}

/// `xdc connect` that must succeed.
pub fn connect(from: &ServerProcess, link: &str, address: SocketAddr, secret: &str, cascade: bool) {
    let output = try_connect(from, link, address, secret, cascade);
    assert!(
        output.status.success(),
        "xdc connect {link} failed: {}\n{}",
        String::from_utf8_lossy(&output.stderr),
        String::from_utf8_lossy(&output.stdout)
    );
}

/// `xdc status` as JSON.
pub fn status(server: &ServerProcess) -> serde_json::Value {
    let json = server.client().admin("xdc status").expect("xdc status");
    serde_json::from_str(&json).expect("xdc status is JSON")
}

/// STATS as JSON, or `None` when the server does not answer.
pub fn try_stats(server: &ServerProcess) -> Option<serde_json::Value> {
    let mut client = Client::connect(server.client_config()).ok()?;
    let text = client.stats().ok()?;
    serde_json::from_str(&text).ok()
}

/// Counter `field` summed over the server's shards (0 when it does not answer).
pub fn counter(server: &ServerProcess, field: &str) -> u64 {
    try_stats(server).map_or(0, |stats| crate::cluster::shard_sum(&stats, field))
}

/// The server's non-empty partition digests (`None` when it does not answer).
pub fn digests(server: &ServerProcess) -> Option<BTreeMap<u32, u64>> {
    try_stats(server).map(|stats| digests_of(&stats))
}

/// Waits until every server reports the same non-empty digests.
pub fn wait_for_equal_digests(servers: &[&ServerProcess], deadline: Instant) -> bool {
    crate::wait_until(deadline, || {
        let all: Vec<_> = servers.iter().map(|server| digests(server)).collect();
        all[0].as_ref().is_some_and(|first| !first.is_empty())
            && all.iter().all(|other| other == &all[0])
    })
}

/// Waits until `server` holds `value` under every key of `expected`;
/// returns the keys still missing or different at the deadline.
pub fn wait_for_values(
    server: &ServerProcess,
    expected: &[(String, Vec<u8>)],
    deadline: Instant,
) -> Vec<String> {
    let mut missing: Vec<&(String, Vec<u8>)> = expected.iter().collect();
    loop {
        if let Ok(mut client) = Client::connect(server.client_config()) {
            let mut still = Vec::new();
            for chunk in missing.chunks(256) {
                let keys: Vec<&str> = chunk.iter().map(|(key, _)| key.as_str()).collect();
                match client.mget(&keys) {
                    Ok(found) => {
                        for (entry, want) in found.iter().zip(chunk) {
                            if entry.as_ref().is_none_or(|e| e.value[..] != want.1[..]) {
                                still.push(*want);
                            }
                        }
                    }
                    Err(_) => still.extend(chunk.iter().copied()),
                }
            }
            missing = still;
        }
        if missing.is_empty() || Instant::now() >= deadline {
            return missing.into_iter().map(|(key, _)| key.clone()).collect();
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Writes keys `{prefix}-{n}` at about `rate` per second until `stop` is
/// set or `limit` passes; returns the writes the server acknowledged (the
/// latest value of each key) and the number of errors.
pub fn write_at_rate(
    server_address: SocketAddr,
    prefix: &str,
    rate: u32,
    stop: Arc<AtomicBool>,
    limit: Duration,
) -> (Vec<(String, Vec<u8>)>, usize) {
    let mut config = meridian_net::client::ClientConfig::new(server_address.to_string());
    config.request_timeout = Duration::from_secs(10);
    config.reconnect_attempts_max = 0;
    let mut acknowledged = Vec::new();
    let mut errors = 0;
    let Ok(mut client) = Client::connect(config) else {
        return (acknowledged, 1);
    };
    let start = Instant::now();
    let mut sequence = 0usize;
    while !stop.load(Ordering::SeqCst) && start.elapsed() < limit {
        let key = format!("{prefix}-{sequence:07}");
        let value = crate::load::value_for(&key, sequence);
        match client.put(key.as_bytes(), &value) {
            Ok(_) => acknowledged.push((key, value)),
            Err(_) => {
                errors += 1;
                return (acknowledged, errors);
            }
        }
        sequence += 1;
        let due = start + Duration::from_secs_f64(sequence as f64 / f64::from(rate));
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    (acknowledged, errors)
}

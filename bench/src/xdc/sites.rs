//! The two datacenters of the XDC benchmark: single-node `meridian server`
//! processes started with the end-to-end tests' [`ServerProcess`], pinned
//! with `taskset`, linked with the real CLI (`xdc connect`), optionally
//! through a [`LinkProxy`] that adds delay.
//!
//! Settings of every server (printed by the benchmark): 1 shard, 16
//! partitions, 32 MiB segments, `storage.durability = "periodic"` (the
//! default: fdatasync every 100 ms), `[xdc]` defaults, metrics off.
//!
//! Invariants: every wait has a deadline and fails with what it saw; a
//! server is pinned (all its threads) before any load reaches it.

use std::process::Command;
use std::time::{Duration, Instant};

use meridian_tests::proxy::LinkProxy;
use meridian_tests::xdc::{datacenter_config, secret_of};
use meridian_tests::{wait_until, ServerProcess};

/// The link's name at the origin.
pub const LINK: &str = "remote";
/// How long a link may take to open, drain, or a fullsync to finish.
pub const WAIT_MAX: Duration = Duration::from_secs(300);

/// The server settings every datacenter runs with, as text for the report.
pub const SETTINGS: &str = "1 node per datacenter, runtime.shards = 1, storage.partitions = 16, \
     storage.segment_bytes = 32 MiB, storage.durability = \"periodic\" (fdatasync every 100 ms), \
     [xdc] defaults (batch_delay_ms 2, batch_records_max 1024, max_in_flight 8, lz4 when smaller), \
     metrics off";

/// Starts datacenter `name` (id `id`) and pins every thread to `cpu`.
pub fn start(name: &str, id: u8, cpu: usize) -> Result<ServerProcess, String> {
    let config = datacenter_config(name, id)
        .set("storage", "partitions", "16")
        .set("storage", "segment_bytes", &(32u32 << 20).to_string())
        .durability("periodic");
    let server = ServerProcess::start(config);
    let pid = server.pid().ok_or("the server is not running")?;
    let output = Command::new("taskset")
        .args(["-a", "-p", "-c", &cpu.to_string(), &pid.to_string()])
        .output()
        .map_err(|e| format!("taskset: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "taskset -a -p -c {cpu} {pid}: {}",
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    let pinned = cpus_of(pid);
    if pinned != cpu.to_string() {
        return Err(format!(
            "{name} (pid {pid}) runs on cpus {pinned}, not {cpu}"
        ));
    }
    Ok(server)
}

/// The distinct `Cpus_allowed_list` of every thread of `pid`, joined by `/`.
pub fn cpus_of(pid: u32) -> String {
    let mut lists: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|tasks| {
            tasks
                .filter_map(Result::ok)
                .filter_map(|task| std::fs::read_to_string(task.path().join("status")).ok())
                .filter_map(|status| {
                    status
                        .lines()
                        .find_map(|line| line.strip_prefix("Cpus_allowed_list:"))
                        .map(|list| list.trim().to_string())
                })
                .collect()
        })
        .unwrap_or_default();
    lists.sort();
    lists.dedup();
    lists.join("/")
}

/// Links `origin` to `remote`, through a new proxy with `rtt` added to
/// each round trip when `rtt` is `Some`, directly otherwise; waits until
/// the link is open.
pub fn link(
    origin: &ServerProcess,
    remote: &ServerProcess,
    rtt: Option<Duration>,
) -> Result<Option<LinkProxy>, String> {
    let proxy = match rtt {
        Some(rtt) => {
            let proxy = LinkProxy::start(remote.address()).map_err(|e| format!("proxy: {e}"))?;
            proxy.set_delay(rtt / 2);
            Some(proxy)
        }
        None => None,
    };
    let address = proxy
        .as_ref()
        .map_or(remote.address(), LinkProxy::addr)
        .to_string();
    let secret = secret_of("remote");
    cli(
        origin,
        &["xdc", "connect", LINK, &address, "--link-secret", &secret],
    )?;
    let open = wait_until(Instant::now() + WAIT_MAX, || {
        link_status(origin)["state"] == "open"
    });
    if !open {
        return Err(format!("the link did not open: {}", link_status(origin)));
    }
    Ok(proxy)
}

/// Runs `meridian cli` against `server`; its stdout, or an error with stderr.
pub fn cli(server: &ServerProcess, args: &[&str]) -> Result<String, String> {
    let output = server.cli(args);
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(format!(
            "meridian cli {}: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr),
            String::from_utf8_lossy(&output.stdout)
        ))
    }
}

/// The origin's one link in `xdc status` (`Null` when unreadable).
pub fn link_status(origin: &ServerProcess) -> serde_json::Value {
    let Ok(mut client) = meridian_net::client::blocking::Client::connect(origin.client_config())
    else {
        return serde_json::Value::Null;
    };
    client
        .admin("xdc status")
        .ok()
        .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
        .map_or(serde_json::Value::Null, |status| status["links"][0].clone())
}

/// A field of the link's status as an integer (0 when absent).
pub fn field(status: &serde_json::Value, name: &str) -> u64 {
    status[name].as_u64().unwrap_or(0)
}

/// Records the remote applied from XDC batches (STATS, over its shards).
pub fn applied(remote: &ServerProcess) -> u64 {
    meridian_tests::xdc::counter(remote, "xdc_records_applied")
}

/// Waits until the link has nothing left to ship or acknowledge.
pub fn wait_drained(origin: &ServerProcess, limit: Duration) -> Result<Duration, String> {
    let started = Instant::now();
    let drained = wait_until(started + limit, || {
        let status = link_status(origin);
        status["log_bytes_behind"] == 0 && status["records_in_flight"] == 0
    });
    if drained {
        Ok(started.elapsed())
    } else {
        Err(format!(
            "the link did not drain in {limit:?}: {}",
            link_status(origin)
        ))
    }
}

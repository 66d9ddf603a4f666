//! `xdc-bench`: cross-datacenter replication measured end to end (issue #5).
//!
//! Two single-node datacenters (`origin`, `remote`) on loopback, the link
//! made with `meridian cli xdc connect`, through a user-space delaying
//! proxy ([`LinkProxy`](meridian_tests::proxy::LinkProxy)) where a round
//! trip is added. Phases, each with fresh servers and empty data
//! directories:
//!
//! 1. local maximum write rate: the origin alone, closed-loop writer;
//! 2. lag and throughput at 50% and 90% of that rate, with 0, 50 and 150 ms
//!    added to the link's round trip (random values), and once with
//!    compressible values (0 ms, 50%) for the bytes per record;
//! 3. fullsync of N keys (1M) when 1% differ, and when nothing differs;
//! 4. the origin's closed-loop write throughput with one link shipping
//!    against none, alternated.
//!
//! Pinning: the origin on `--origin-cpu` (0), the remote, this process
//! (writer, lag poller, proxy) on `--remote-cpu` (1); the script starts this
//! process under `taskset`, every server is re-pinned with `taskset -a -p`
//! and its threads' CPU lists are printed.
//!
//! The modules live in `bench/src/xdc/` and are included by path, since the
//! crate's `lib.rs` is not this benchmark's to change.
#![deny(unsafe_code)]

#[path = "../xdc/lag.rs"]
mod lag;
#[path = "../xdc/report.rs"]
mod report;
#[path = "../xdc/sites.rs"]
mod sites;
#[path = "../xdc/writer.rs"]
mod writer;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use clap::Parser;
use serde_json::json;

use report::span;
use writer::{Values, WriterPlan, WriterResult, KEY_BYTES, VALUE_BYTES};

/// Record header and batch header of the XDC wire format (`xdc/src/format.rs`).
const RECORD_HEADER_BYTES: u64 = meridian_xdc::format::RECORD_HEADER_LEN as u64;
const BATCH_HEADER_BYTES: u64 = meridian_xdc::format::BATCH_HEADER_LEN as u64;
/// Round trips added to the link, milliseconds.
const ADDED_RTTS_MS: [u64; 3] = [0, 50, 150];
/// Fractions of the local maximum write rate. The issue asks for 50% and
/// 90%; 5% is added because on this 2-core machine the remote, the writer
/// and the lag poller share one core, which saturates at the higher
/// loads: at 5% the poller keeps up and the lag measured is the link's.
const LOADS: [f64; 3] = [0.05, 0.5, 0.9];

#[derive(Parser, Debug, Clone)]
#[command(about = "Cross-datacenter replication benchmark (lag, bytes, fullsync, cost)")]
struct Args {
    /// Small key counts and short phases, for a smoke run.
    #[arg(long)]
    quick: bool,
    #[arg(long, default_value_t = 0)]
    origin_cpu: usize,
    #[arg(long, default_value_t = 1)]
    remote_cpu: usize,
    /// Writer connections.
    #[arg(long, default_value_t = 8)]
    connections: usize,
    /// PUTs in flight per connection.
    #[arg(long, default_value_t = 32)]
    pipeline: usize,
    /// Keys loaded for the fullsync phase (default 1M, 100K with --quick).
    #[arg(long)]
    fullsync_keys: Option<u64>,
    /// Figures in the shared schema.
    #[arg(long, default_value = "target/bench-results/xdc.json")]
    json: PathBuf,
    /// Every phase's raw measurements.
    #[arg(long, default_value = "target/bench-results/xdc-raw/run.json")]
    raw: PathBuf,
}

/// Lengths and counts of a run (`--quick` or full).
#[derive(Debug, Clone, Copy)]
struct Sizes {
    warmup: Duration,
    window: Duration,
    max_rounds: usize,
    lag_rounds: usize,
    cost_rounds: usize,
    fullsync_keys: u64,
    fullsync_repeats: usize,
}

fn sizes(args: &Args) -> Sizes {
    if args.quick {
        Sizes {
            warmup: Duration::from_millis(500),
            window: Duration::from_secs(2),
            max_rounds: 1,
            lag_rounds: 1,
            cost_rounds: 2,
            fullsync_keys: args.fullsync_keys.unwrap_or(100_000),
            fullsync_repeats: 2,
        }
    } else {
        Sizes {
            warmup: Duration::from_secs(1),
            window: Duration::from_secs(6),
            max_rounds: 3,
            lag_rounds: 2,
            cost_rounds: 3,
            fullsync_keys: args.fullsync_keys.unwrap_or(1_000_000),
            fullsync_repeats: 3,
        }
    }
}

/// Hands out a fresh key tag per phase, so no two phases share keys.
#[derive(Debug, Default)]
struct Tags(u8);

impl Tags {
    fn next(&mut self) -> u8 {
        self.0 += 1;
        assert!(self.0 < 100, "key tags are two digits");
        self.0
    }
}

fn closed_loop(args: &Args, sizes: Sizes, address: std::net::SocketAddr, tag: u8) -> WriterResult {
    writer::run(&WriterPlan {
        address,
        connections: args.connections,
        pipeline: args.pipeline,
        rate: None,
        start: Instant::now() + Duration::from_millis(100),
        warmup: sizes.warmup,
        duration: sizes.window,
        count_max: None,
        key_tag: tag,
        values: Values::Random,
        track_every: 1,
        tracker: None,
    })
}

fn check(result: &WriterResult, what: &str) -> Result<(), String> {
    if result.failures.is_empty() && result.errors == 0 && result.acknowledged > 0 {
        Ok(())
    } else {
        Err(format!(
            "{what}: {} acknowledged, {} error replies, failures {:?}",
            result.acknowledged, result.errors, result.failures
        ))
    }
}

/// Phase 1: the origin alone, closed loop; the median of the rounds.
fn local_maximum(args: &Args, sizes: Sizes, tags: &mut Tags) -> Result<(f64, Vec<f64>), String> {
    let mut rates = Vec::new();
    for round in 1..=sizes.max_rounds {
        let origin = sites::start("origin", 1, args.origin_cpu)?;
        let result = closed_loop(args, sizes, origin.address(), tags.next());
        check(&result, "local maximum")?;
        println!(
            "  local maximum, round {round}: {:.0} writes/s",
            result.throughput()
        );
        rates.push(result.throughput());
    }
    let (median, _, _) = span(&rates).ok_or("no local maximum measured")?;
    Ok((median, rates))
}

/// What one lag phase measured.
#[derive(Debug, Clone)]
struct LagPhase {
    load: f64,
    rtt_ms: u64,
    values: Values,
    target_rate: f64,
    writer: WriterResult,
    remote_applied_per_s: f64,
    lag_ms: [f64; 4],
    resolution_ms: [f64; 2],
    samples: u64,
    track_every: u64,
    unseen: u64,
    polls: u64,
    drain_s: f64,
    records_sent: u64,
    batches_sent: u64,
    bytes_sent: u64,
    proxy_bytes: u64,
}

impl LagPhase {
    fn per_record(&self, bytes: u64) -> f64 {
        bytes as f64 / self.records_sent.max(1) as f64
    }
    /// The records' encoded size without compression, per record.
    fn uncompressed_per_record(&self) -> f64 {
        let records = RECORD_HEADER_BYTES + KEY_BYTES as u64 + VALUE_BYTES as u64;
        self.per_record(self.records_sent * records + self.batches_sent * BATCH_HEADER_BYTES)
    }
    fn to_json(&self) -> serde_json::Value {
        json!({
            "load": self.load, "added_rtt_ms": self.rtt_ms, "values": format!("{:?}", self.values),
            "target_rate": self.target_rate, "sent_rate": self.writer.sent_rate(),
            "acknowledged_rate": self.writer.throughput(), "remote_applied_per_s": self.remote_applied_per_s,
            "lag_ms": {"p50": self.lag_ms[0], "p99": self.lag_ms[1], "p999": self.lag_ms[2], "max": self.lag_ms[3]},
            "polling_resolution_ms": {"p50": self.resolution_ms[0], "p99": self.resolution_ms[1]},
            "lag_samples": self.samples, "track_every": self.track_every, "unseen": self.unseen,
            "polls": self.polls, "drain_s": self.drain_s, "records_sent": self.records_sent,
            "batches_sent": self.batches_sent, "bytes_sent": self.bytes_sent,
            "proxy_bytes_toward_remote": self.proxy_bytes,
            "bytes_per_record": self.per_record(self.bytes_sent),
            "wire_bytes_per_record": self.per_record(self.proxy_bytes),
            "uncompressed_bytes_per_record": self.uncompressed_per_record(),
            "writer_untracked": self.writer.untracked, "writer_errors": self.writer.errors,
        })
    }
}

/// Phase 2: one (load, added round trip, values) combination.
fn lag_phase(
    args: &Args,
    sizes: Sizes,
    tag: u8,
    local_max: f64,
    load: f64,
    rtt_ms: u64,
    values: Values,
) -> Result<LagPhase, String> {
    let origin = sites::start("origin", 1, args.origin_cpu)?;
    let remote = sites::start("remote", 2, args.remote_cpu)?;
    let proxy =
        sites::link(&origin, &remote, Some(Duration::from_millis(rtt_ms)))?.ok_or("no proxy")?;
    let rate = local_max * load;
    // Keep about one MGET's worth of tracked writes outstanding.
    let expected_lag_s = rtt_ms as f64 / 2000.0 + 0.02;
    let track_every = ((rate * expected_lag_s / lag::MGET_KEYS_MAX as f64).ceil() as u64).max(1);
    let (sender, receiver) = mpsc::sync_channel(1 << 16);
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now() + Duration::from_millis(200);
    let plan = WriterPlan {
        address: origin.address(),
        connections: args.connections,
        pipeline: args.pipeline,
        rate: Some(rate),
        start,
        warmup: sizes.warmup,
        duration: sizes.window,
        count_max: None,
        key_tag: tag,
        values,
        track_every,
        tracker: Some(sender),
    };
    let writer_thread = std::thread::spawn(move || writer::run(&plan));
    let (remote_config, poll_stop) = (remote.client_config(), Arc::clone(&stop));
    let poller = std::thread::spawn(move || {
        lag::run(
            remote_config,
            tag,
            receiver,
            poll_stop,
            Duration::from_secs(60),
        )
    });
    sleep_until(start + sizes.warmup);
    let applied_before = sites::applied(&remote);
    sleep_until(start + sizes.warmup + sizes.window);
    let applied_after = sites::applied(&remote);
    let writer = writer_thread.join().map_err(|_| "the writer panicked")?;
    check(&writer, "lag writer")?;
    let drain = sites::wait_drained(&origin, sites::WAIT_MAX)?;
    stop.store(true, Ordering::SeqCst);
    let lag = poller.join().map_err(|_| "the poller panicked")?;
    if !lag.failures.is_empty() {
        return Err(format!("lag poller: {:?}", lag.failures));
    }
    let status = sites::link_status(&origin);
    let ms = |us: u64| us as f64 / 1000.0;
    Ok(LagPhase {
        load,
        rtt_ms,
        values,
        target_rate: rate,
        remote_applied_per_s: (applied_after - applied_before) as f64 / sizes.window.as_secs_f64(),
        lag_ms: [0.5, 0.99, 0.999, 1.0].map(|q| ms(lag.lag_us.value_at_quantile(q))),
        resolution_ms: [0.5, 0.99].map(|q| ms(lag.resolution_us.value_at_quantile(q))),
        samples: lag.lag_us.len(),
        track_every,
        unseen: lag.unseen,
        polls: lag.polls,
        drain_s: drain.as_secs_f64(),
        records_sent: sites::field(&status, "records_sent"),
        batches_sent: sites::field(&status, "batches_sent"),
        bytes_sent: sites::field(&status, "bytes_sent"),
        proxy_bytes: proxy.bytes_forwarded().0,
        writer,
    })
}

fn sleep_until(when: Instant) {
    if let Some(wait) = when.checked_duration_since(Instant::now()) {
        std::thread::sleep(wait);
    }
}

fn print_lag(phase: &LagPhase) {
    println!(
        "  {:>3.0}% load, +{:>3} ms RTT, {:?}: target {:.0}/s, sent {:.0}/s, remote applied {:.0}/s | lag ms p50 {:.2} p99 {:.2} p99.9 {:.2} max {:.2} \
         ({} samples, 1 in {}, {} unseen) | resolution ms p50 {:.2} p99 {:.2} | drain {:.2} s | {:.1} B/record sent ({:.1} uncompressed)",
        phase.load * 100.0, phase.rtt_ms, phase.values, phase.target_rate, phase.writer.sent_rate(),
        phase.remote_applied_per_s, phase.lag_ms[0], phase.lag_ms[1], phase.lag_ms[2], phase.lag_ms[3],
        phase.samples, phase.track_every, phase.unseen, phase.resolution_ms[0], phase.resolution_ms[1],
        phase.drain_s, phase.per_record(phase.bytes_sent), phase.uncompressed_per_record()
    );
}

#[path = "../xdc/phases.rs"]
mod phases;

fn main() {
    let args = Args::parse();
    if let Err(reason) = phases::run(&args) {
        eprintln!("xdc-bench: {reason}");
        std::process::exit(1);
    }
}

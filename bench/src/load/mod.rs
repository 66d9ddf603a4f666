//! `meridian-bench`'s load generator: drives a Meridian node (or Redis,
//! over RESP) with GET/PUT/PING from a few threads, each owning many
//! non-blocking connections, and reports throughput and latency
//! percentiles from an HdrHistogram.
//!
//! Why built this way: the comparison figures (Meridian against Redis,
//! glommio against tokio) are ratios measured with one loader on one core,
//! so the loader must be cheap per request (no allocation per request, one
//! `epoll_wait` per batch of replies) and identical for both sides (only
//! the [`protocol`] differs). Constant-rate runs measure from the intended
//! send time, so a stalled server cannot hide its stall (see [`driver`]).
//!
//! Invariants:
//! - Replies are counted only inside the measuring window, which starts
//!   after `warmup`; the server's CPU time is read at the same two instants.
//! - Every connection of a run uses the same key space, sizes and mix.

pub mod driver;
pub mod keys;
pub mod protocol;

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

use driver::{Source, ThreadPlan, ThreadResult, LATENCY_NS_MAX};
use keys::{key_bytes_min, Distribution, KeyChooser, Rng};
pub use protocol::Protocol;

/// Linux reports utime and stime in USER_HZ ticks, 100 per second on every
/// architecture the kernel exports to user space.
const USER_HZ: f64 = 100.0;

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// `host:port` of the server.
    pub address: String,
    /// Wire protocol.
    pub protocol: Protocol,
    /// Cluster name sent in Meridian's HELLO.
    pub cluster: String,
    /// Connections over all threads.
    pub connections: usize,
    /// Requests in flight per connection.
    pub pipeline: usize,
    /// Loader threads (connections are dealt round-robin).
    pub threads: usize,
    /// Keys in the key space.
    pub key_count: u64,
    /// How keys are chosen.
    pub distribution: Distribution,
    /// Key length in bytes.
    pub key_bytes: usize,
    /// Value length in bytes.
    pub value_bytes: usize,
    /// Fraction of requests that are GETs (the rest are PUTs).
    pub read_fraction: f64,
    /// PING only (transport comparison).
    pub ping: bool,
    /// Measuring window.
    pub duration: Duration,
    /// Time before the window opens.
    pub warmup: Duration,
    /// Constant total request rate, if set.
    pub rate: Option<f64>,
    /// Pin every loader thread to this CPU.
    pub cpu: Option<usize>,
    /// Write every key once before measuring.
    pub preload: bool,
    /// Requests in flight per connection during the preload.
    pub preload_pipeline: usize,
    /// Read this process's CPU time at the window's edges.
    pub server_pid: Option<u32>,
    /// Seed of the key and operation choices.
    pub seed: u64,
    /// A label copied into the report.
    pub label: String,
}

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    /// Median.
    pub p50_us: f64,
    /// 90th percentile.
    pub p90_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// 99.9th percentile.
    pub p999_us: f64,
    /// Largest.
    pub max_us: f64,
    /// Mean.
    pub mean_us: f64,
}

/// The outcome of a run, as written to `--json`.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The `--label` given.
    pub label: String,
    /// `meridian` or `resp`.
    pub protocol: String,
    /// Workload description.
    pub workload: String,
    /// Connections that measured.
    pub connections: usize,
    /// Pipeline depth.
    pub pipeline: usize,
    /// Keys in the key space.
    pub key_count: u64,
    /// Key length.
    pub key_bytes: usize,
    /// Value length.
    pub value_bytes: usize,
    /// Target rate, if paced.
    pub target_rate_ops: Option<f64>,
    /// Measuring window in seconds.
    pub duration_s: f64,
    /// Replies counted.
    pub operations: u64,
    /// Replies per second.
    pub throughput_ops: f64,
    /// GETs counted.
    pub reads: u64,
    /// PUTs counted.
    pub writes: u64,
    /// GETs that found nothing.
    pub misses: u64,
    /// Error replies.
    pub errors: u64,
    /// Connection failures.
    pub failures: Vec<String>,
    /// Latency percentiles.
    pub latency: Latency,
    /// Preload rate, if a preload ran.
    pub preload_ops: Option<f64>,
    /// Server CPU seconds (user + system) inside the window.
    pub server_cpu_s: Option<f64>,
    /// The kernel's part of `server_cpu_s` (stime): system calls, the TCP
    /// path, io_uring's completion work.
    pub server_cpu_system_s: Option<f64>,
    /// Server CPU microseconds per counted request.
    pub server_cpu_us_per_request: Option<f64>,
}

/// Runs the preload (if asked) and the measurement.
pub fn run(options: &Options) -> Result<Report, String> {
    check(options)?;
    let address = resolve(&options.address)?;
    let mut preload_ops = None;
    if options.preload {
        let (results, _) = run_phase(options, address, Phase::Preload)?;
        let merged = merge(results)?;
        if !merged.failures.is_empty() || merged.completed < options.key_count {
            return Err(format!(
                "preload wrote {} of {} keys; {} failures, first: {:?}",
                merged.completed,
                options.key_count,
                merged.failures.len(),
                merged.failures.first()
            ));
        }
        let ops = merged.completed as f64 / merged.elapsed.as_secs_f64().max(1e-9);
        eprintln!(
            "preloaded {} keys in {:.1} s ({:.0} writes/s)",
            merged.completed,
            merged.elapsed.as_secs_f64(),
            ops
        );
        preload_ops = Some(ops);
    }
    let (results, server_cpu) = run_phase(options, address, Phase::Measure)?;
    let merged = merge(results)?;
    Ok(report(options, merged, preload_ops, server_cpu))
}

fn check(options: &Options) -> Result<(), String> {
    if options.connections == 0 || options.pipeline == 0 || options.threads == 0 {
        return Err("connections, pipeline and threads must be at least 1".into());
    }
    if options.key_count == 0 {
        return Err("keys must be at least 1".into());
    }
    let needed = key_bytes_min(options.key_count);
    if options.key_bytes < needed {
        return Err(format!(
            "--key-size {} cannot hold {} distinct keys (needs {needed})",
            options.key_bytes, options.key_count
        ));
    }
    if !(0.0..=1.0).contains(&options.read_fraction) {
        return Err("--read-ratio must be in [0, 1]".into());
    }
    if matches!(options.rate, Some(rate) if !(rate > 0.0)) {
        return Err("--rate must be positive".into());
    }
    Ok(())
}

fn resolve(address: &str) -> Result<SocketAddr, String> {
    address
        .to_socket_addrs()
        .map_err(|e| format!("{address}: {e}"))?
        .next()
        .ok_or_else(|| format!("{address} resolves to nothing"))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Preload,
    Measure,
}

/// Starts the threads of one phase; returns their results and, for a
/// measurement with `server_pid`, the server's CPU seconds in the window.
fn run_phase(
    options: &Options,
    address: SocketAddr,
    phase: Phase,
) -> Result<(Vec<ThreadResult>, Option<CpuTime>), String> {
    let threads = options.threads.min(options.connections);
    let barrier = Arc::new(Barrier::new(threads + 1));
    let mut handles = Vec::with_capacity(threads);
    for thread in 0..threads {
        let plan = plan_for(options, address, phase, thread, threads);
        let (barrier, cpu) = (Arc::clone(&barrier), options.cpu);
        let handle = std::thread::Builder::new()
            .name(format!("load-{thread}"))
            .spawn(move || {
                if let Some(cpu) = cpu {
                    core_affinity::set_for_current(core_affinity::CoreId { id: cpu });
                }
                driver::run_thread(plan, &barrier)
            })
            .map_err(|e| format!("spawn: {e}"))?;
        handles.push(handle);
    }
    barrier.wait();
    let mut server_cpu = None;
    if phase == Phase::Measure {
        if let Some(pid) = options.server_pid {
            let started = Instant::now();
            std::thread::sleep(options.warmup);
            let before = cpu_seconds(pid)?;
            let window_start = Instant::now();
            std::thread::sleep((started + options.warmup + options.duration) - window_start);
            let after = cpu_seconds(pid)?;
            server_cpu = Some(CpuTime {
                user_s: after.user_s - before.user_s,
                system_s: after.system_s - before.system_s,
            });
        }
    }
    let mut results = Vec::with_capacity(threads);
    for handle in handles {
        results.push(handle.join().map_err(|_| "a loader thread panicked")?);
    }
    Ok((results, server_cpu))
}

fn plan_for(
    options: &Options,
    address: SocketAddr,
    phase: Phase,
    thread: usize,
    threads: usize,
) -> ThreadPlan {
    let connection_indexes: Vec<usize> = (thread..options.connections).step_by(threads).collect();
    let source = match phase {
        Phase::Preload => {
            let share = options.key_count.div_ceil(threads as u64);
            let next = (share * thread as u64).min(options.key_count);
            let end = (next + share).min(options.key_count);
            Source::Preload { next, end }
        }
        Phase::Measure if options.ping => Source::Ping,
        Phase::Measure => Source::Mix {
            chooser: KeyChooser::new(options.key_count, options.distribution),
            read_fraction: options.read_fraction,
            rng: Rng::new(options.seed ^ (thread as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)),
        },
    };
    ThreadPlan {
        address,
        protocol: options.protocol,
        cluster: options.cluster.clone(),
        connection_indexes,
        connections_total: options.connections,
        pipeline: match phase {
            Phase::Preload => options.preload_pipeline,
            Phase::Measure => options.pipeline,
        },
        key_bytes: options.key_bytes,
        value_bytes: options.value_bytes,
        source,
        rate: match phase {
            Phase::Preload => None,
            Phase::Measure => options.rate,
        },
        warmup: options.warmup,
        duration: options.duration,
    }
}

/// CPU time of a process (all its threads), in seconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CpuTime {
    /// utime: in user space.
    pub user_s: f64,
    /// stime: in the kernel on the process's behalf.
    pub system_s: f64,
}

impl CpuTime {
    pub fn total_s(&self) -> f64 {
        self.user_s + self.system_s
    }
}

/// utime and stime of a process (all its threads), in seconds.
pub fn cpu_seconds(pid: u32) -> Result<CpuTime, String> {
    let path = format!("/proc/{pid}/stat");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
    // The command name (field 2) may hold spaces; fields after it are plain.
    let after_name = text
        .rfind(')')
        .map(|at| &text[at + 1..])
        .ok_or_else(|| format!("{path}: no ')' in {text:?}"))?;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // Field 3 (state) is fields[0]; utime is field 14, stime field 15.
    let tick = |index: usize| -> Result<f64, String> {
        fields
            .get(index)
            .and_then(|f| f.parse::<u64>().ok())
            .map(|ticks| ticks as f64 / USER_HZ)
            .ok_or_else(|| format!("{path}: field {} unreadable", index + 3))
    };
    Ok(CpuTime {
        user_s: tick(11)?,
        system_s: tick(12)?,
    })
}

fn merge(results: Vec<ThreadResult>) -> Result<ThreadResult, String> {
    let mut merged = ThreadResult {
        histogram: Histogram::new_with_bounds(1, LATENCY_NS_MAX, 3)
            .map_err(|e| format!("histogram: {e}"))?,
        completed: 0,
        reads: 0,
        writes: 0,
        misses: 0,
        errors: 0,
        failures: Vec::new(),
        elapsed: Duration::ZERO,
    };
    for result in results {
        merged
            .histogram
            .add(&result.histogram)
            .map_err(|e| format!("histogram: {e}"))?;
        merged.completed += result.completed;
        merged.reads += result.reads;
        merged.writes += result.writes;
        merged.misses += result.misses;
        merged.errors += result.errors;
        merged.failures.extend(result.failures);
        merged.elapsed = merged.elapsed.max(result.elapsed);
    }
    Ok(merged)
}

fn report(
    options: &Options,
    merged: ThreadResult,
    preload_ops: Option<f64>,
    server_cpu: Option<CpuTime>,
) -> Report {
    let server_cpu_s = server_cpu.map(|cpu| cpu.total_s());
    let us = |ns: u64| ns as f64 / 1000.0;
    let histogram = &merged.histogram;
    let workload = if options.ping {
        "ping".to_string()
    } else {
        format!(
            "{:.0}% reads, {:?} keys",
            options.read_fraction * 100.0,
            options.distribution
        )
    };
    Report {
        label: options.label.clone(),
        protocol: match options.protocol {
            Protocol::Meridian => "meridian".into(),
            Protocol::Resp => "resp".into(),
        },
        workload: workload.to_lowercase(),
        connections: options.connections,
        pipeline: options.pipeline,
        key_count: options.key_count,
        key_bytes: options.key_bytes,
        value_bytes: options.value_bytes,
        target_rate_ops: options.rate,
        duration_s: merged.elapsed.as_secs_f64(),
        operations: merged.completed,
        throughput_ops: merged.completed as f64 / merged.elapsed.as_secs_f64().max(1e-9),
        reads: merged.reads,
        writes: merged.writes,
        misses: merged.misses,
        errors: merged.errors,
        failures: merged.failures,
        latency: Latency {
            p50_us: us(histogram.value_at_quantile(0.50)),
            p90_us: us(histogram.value_at_quantile(0.90)),
            p99_us: us(histogram.value_at_quantile(0.99)),
            p999_us: us(histogram.value_at_quantile(0.999)),
            max_us: us(histogram.max()),
            mean_us: histogram.mean() / 1000.0,
        },
        preload_ops,
        server_cpu_s,
        server_cpu_system_s: server_cpu.map(|cpu| cpu.system_s),
        server_cpu_us_per_request: server_cpu_s
            .filter(|_| merged.completed > 0)
            .map(|s| s * 1e6 / merged.completed as f64),
    }
}

impl Report {
    /// A few lines for a terminal.
    pub fn summary(&self) -> String {
        let mut text = format!(
            "{} {} | {} conns x pipeline {} | {} keys {}+{} B\n\
             throughput {:.0} ops/s ({} ops in {:.2} s; {} reads, {} writes, {} misses, {} errors)\n\
             latency us: p50 {:.1}  p90 {:.1}  p99 {:.1}  p99.9 {:.1}  max {:.1}",
            self.protocol,
            self.workload,
            self.connections,
            self.pipeline,
            self.key_count,
            self.key_bytes,
            self.value_bytes,
            self.throughput_ops,
            self.operations,
            self.duration_s,
            self.reads,
            self.writes,
            self.misses,
            self.errors,
            self.latency.p50_us,
            self.latency.p90_us,
            self.latency.p99_us,
            self.latency.p999_us,
            self.latency.max_us,
        );
        if let Some(rate) = self.target_rate_ops {
            text.push_str(&format!(
                "\ntarget rate {rate:.0} ops/s (latency from intended send time)"
            ));
        }
        if let (Some(cpu), Some(per)) = (self.server_cpu_s, self.server_cpu_us_per_request) {
            text.push_str(&format!(
                "\nserver cpu {cpu:.2} s = {:.1} s per million requests",
                per
            ));
            if let Some(system) = self.server_cpu_system_s.filter(|_| cpu > 0.0) {
                text.push_str(&format!(" ({:.0}% in the kernel)", system / cpu * 100.0));
            }
        }
        if !self.failures.is_empty() {
            text.push_str(&format!(
                "\nfailures ({}): {:?}",
                self.failures.len(),
                &self.failures[..self.failures.len().min(3)]
            ));
        }
        text
    }
}

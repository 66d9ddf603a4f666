//! `meridian-bench`: a load generator for Meridian (and Redis, over RESP).
//!
//! ```text
//! cargo run --release -p meridian-bench --bin meridian-bench -- \
//!     --addr 127.0.0.1:7411 --connections 50 --pipeline 1 --keys 1000000 \
//!     --read-ratio 0.9 --duration 10 --preload --cpu 1 --json out.json
//! ```
//!
//! See `meridian_bench::load` for how it measures, and
//! `bench/scripts/compare_server.sh` for the Meridian-against-Redis runs.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use meridian_bench::load::keys::Distribution;
use meridian_bench::load::{self, Options, Protocol};

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ProtocolArg {
    Meridian,
    Resp,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum DistributionArg {
    Uniform,
    Zipfian,
}

/// YCSB core workloads: a = 50% reads, b = 95%, c = 100%; zipfian keys.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum Workload {
    A,
    B,
    C,
}

#[derive(Debug, Parser)]
#[command(
    name = "meridian-bench",
    about = "Load generator for Meridian and RESP servers"
)]
struct Arguments {
    /// Server address.
    #[arg(long, default_value = "127.0.0.1:7411")]
    addr: String,
    /// Wire protocol.
    #[arg(long, value_enum, default_value = "meridian")]
    protocol: ProtocolArg,
    /// Cluster name for Meridian's HELLO.
    #[arg(long, default_value = "meridian")]
    cluster: String,
    /// Connections (over all threads).
    #[arg(short = 'c', long, default_value_t = 50)]
    connections: usize,
    /// Requests in flight per connection.
    #[arg(short = 'P', long, default_value_t = 1)]
    pipeline: usize,
    /// Loader threads, each driving its share of the connections.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Keys in the key space.
    #[arg(long, default_value_t = 1_000_000)]
    keys: u64,
    /// Key distribution.
    #[arg(long, value_enum, default_value = "uniform")]
    distribution: DistributionArg,
    /// Key size in bytes.
    #[arg(long, default_value_t = 16)]
    key_size: usize,
    /// Value size in bytes.
    #[arg(long, default_value_t = 100)]
    value_size: usize,
    /// Fraction of GETs; the rest are PUTs (SETs).
    #[arg(long, default_value_t = 0.9)]
    read_ratio: f64,
    /// YCSB workload; sets the read ratio and zipfian keys.
    #[arg(long, value_enum)]
    workload: Option<Workload>,
    /// PING only (transport comparison).
    #[arg(long)]
    ping: bool,
    /// Measuring window in seconds.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds of load before the window opens.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Constant total rate in requests/s; latency counts from the intended send time.
    #[arg(long)]
    rate: Option<f64>,
    /// Pin the loader's threads to this CPU.
    #[arg(long)]
    cpu: Option<usize>,
    /// Write every key once before measuring.
    #[arg(long)]
    preload: bool,
    /// Requests in flight per connection during the preload.
    #[arg(long, default_value_t = 64)]
    preload_pipeline: usize,
    /// Report this process's CPU time (utime + stime) over the window.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Seed of key and operation choices.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Label copied into the JSON report.
    #[arg(long, default_value = "")]
    label: String,
    /// Write the report as JSON to this file.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
}

fn options(arguments: &Arguments) -> Result<Options, String> {
    let seconds = |value: f64, name: &str| {
        Duration::try_from_secs_f64(value)
            .map_err(|_| format!("--{name} {value} is not a duration"))
    };
    let (mut read_fraction, mut distribution) = (
        arguments.read_ratio,
        match arguments.distribution {
            DistributionArg::Uniform => Distribution::Uniform,
            DistributionArg::Zipfian => Distribution::Zipfian,
        },
    );
    if let Some(workload) = arguments.workload {
        read_fraction = match workload {
            Workload::A => 0.5,
            Workload::B => 0.95,
            Workload::C => 1.0,
        };
        distribution = Distribution::Zipfian;
    }
    Ok(Options {
        address: arguments.addr.clone(),
        protocol: match arguments.protocol {
            ProtocolArg::Meridian => Protocol::Meridian,
            ProtocolArg::Resp => Protocol::Resp,
        },
        cluster: arguments.cluster.clone(),
        connections: arguments.connections,
        pipeline: arguments.pipeline,
        threads: arguments.threads,
        key_count: arguments.keys,
        distribution,
        key_bytes: arguments.key_size,
        value_bytes: arguments.value_size,
        read_fraction,
        ping: arguments.ping,
        duration: seconds(arguments.duration, "duration")?,
        warmup: seconds(arguments.warmup, "warmup")?,
        rate: arguments.rate,
        cpu: arguments.cpu,
        preload: arguments.preload,
        preload_pipeline: arguments.preload_pipeline.max(1),
        server_pid: arguments.server_pid,
        seed: arguments.seed,
        label: arguments.label.clone(),
    })
}

fn main() -> ExitCode {
    let arguments = Arguments::parse();
    let options = match options(&arguments) {
        Ok(options) => options,
        Err(reason) => {
            eprintln!("meridian-bench: {reason}");
            return ExitCode::from(2);
        }
    };
    if let Some(cpu) = options.cpu {
        if !core_affinity::set_for_current(core_affinity::CoreId { id: cpu }) {
            eprintln!("meridian-bench: cannot pin to cpu {cpu}");
            return ExitCode::from(2);
        }
    }
    let report = match load::run(&options) {
        Ok(report) => report,
        Err(reason) => {
            eprintln!("meridian-bench: {reason}");
            return ExitCode::from(1);
        }
    };
    println!("{}", report.summary());
    if let Some(path) = &arguments.json {
        let text = match serde_json::to_string_pretty(&report) {
            Ok(text) => text,
            Err(error) => {
                eprintln!("meridian-bench: JSON: {error}");
                return ExitCode::from(1);
            }
        };
        if let Err(error) = std::fs::write(path, text + "\n") {
            eprintln!("meridian-bench: {}: {error}", path.display());
            return ExitCode::from(1);
        }
    }
    if report.operations == 0 || !report.failures.is_empty() {
        eprintln!("meridian-bench: the run counted no replies or lost connections");
        return ExitCode::from(1);
    }
    ExitCode::SUCCESS
}

//! The XDC benchmark's run: the phases in order, then the figures (see the
//! binary's doc for what each phase does). Fullsync and the cost of a link
//! live here; lag phases in the binary.

use std::time::{Duration, Instant};

use meridian_tests::ServerProcess;
use serde_json::json;

use crate::report::{self, Row};
use crate::sites;
use crate::writer::{self, key_of, value_of, Values, WriterPlan, KEY_BYTES, VALUE_BYTES};
use crate::{
    check, closed_loop, lag_phase, local_maximum, print_lag, sizes, Args, LagPhase, Sizes, Tags,
    ADDED_RTTS_MS, LOADS,
};

/// Keys per MPUT or MGET of the fullsync phase.
const CHUNK_KEYS: usize = 256;
/// One key in this many is changed before the differing fullsync.
const DIFFER_EVERY: u64 = 100;

/// A key and the value written under it.
type Entry = (Vec<u8>, Vec<u8>);

/// One `xdc fullsync`: the progress it ended with and the wall time.
fn fullsync(origin: &ServerProcess) -> Result<(serde_json::Value, f64), String> {
    let started = Instant::now();
    sites::cli(origin, &["xdc", "fullsync", sites::LINK])?;
    loop {
        let progress = sites::link_status(origin)["fullsync"].clone();
        if progress["running"] == false {
            if !progress["error"].is_null() {
                return Err(format!("fullsync failed: {progress}"));
            }
            return Ok((progress, started.elapsed().as_secs_f64()));
        }
        if started.elapsed() > sites::WAIT_MAX {
            return Err(format!(
                "fullsync still running after {:?}: {progress}",
                sites::WAIT_MAX
            ));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Fullsync figures: identical datacenters, then 1% changed while paused.
#[derive(Debug, Default)]
struct FullsyncFigures {
    identical_s: Vec<f64>,
    identical_bytes: Vec<f64>,
    differing_s: f64,
    differing_bytes: f64,
    differing_data_bytes: f64,
    records_pushed: u64,
    mismatched_after: u64,
    raw: Vec<serde_json::Value>,
}

fn fullsync_phase(args: &Args, sizes: Sizes, tag: u8) -> Result<FullsyncFigures, String> {
    let keys = sizes.fullsync_keys;
    let origin = sites::start("origin", 1, args.origin_cpu)?;
    let remote = sites::start("remote", 2, args.remote_cpu)?;
    let proxy = sites::link(&origin, &remote, Some(Duration::ZERO))?.ok_or("no proxy")?;
    let load = writer::run(&WriterPlan {
        address: origin.address(),
        connections: args.connections,
        pipeline: args.pipeline,
        rate: None,
        start: Instant::now(),
        warmup: Duration::ZERO,
        duration: sites::WAIT_MAX,
        count_max: Some(keys),
        key_tag: tag,
        values: Values::Random,
        track_every: 1,
        tracker: None,
    });
    check(&load, "fullsync load")?;
    if load.acknowledged != keys {
        return Err(format!("loaded {} of {keys} keys", load.acknowledged));
    }
    sites::wait_drained(&origin, sites::WAIT_MAX)?;
    let replicated = meridian_tests::wait_until(Instant::now() + sites::WAIT_MAX, || {
        sites::applied(&remote) >= keys
    });
    if !replicated {
        return Err(format!(
            "the remote applied {} of {keys} keys",
            sites::applied(&remote)
        ));
    }
    println!("  loaded {keys} keys at the origin, replicated to the remote");
    let mut figures = FullsyncFigures::default();
    for repeat in 1..=sizes.fullsync_repeats {
        let (progress, wall_s) = fullsync(&origin)?;
        let seconds = sites::field(&progress, "elapsed_ms") as f64 / 1000.0;
        let bytes = (sites::field(&progress, "bytes_sent")
            + sites::field(&progress, "bytes_received")) as f64;
        println!("  identical, run {repeat}: {seconds:.3} s (wall {wall_s:.3} s), {bytes:.0} bytes: {progress}");
        figures.identical_s.push(seconds);
        figures.identical_bytes.push(bytes);
        figures
            .raw
            .push(json!({"kind": "identical", "progress": progress, "wall_s": wall_s}));
    }
    sites::cli(&origin, &["xdc", "pause", sites::LINK])?;
    let paused = meridian_tests::wait_until(Instant::now() + sites::WAIT_MAX, || {
        sites::link_status(&origin)["state"] == "paused"
    });
    if !paused {
        return Err(format!(
            "the link did not pause: {}",
            sites::link_status(&origin)
        ));
    }
    let changed = change_one_percent(&origin, tag, keys)?;
    figures.differing_data_bytes = (changed.len() * (KEY_BYTES + VALUE_BYTES)) as f64;
    let proxy_before = proxy.bytes_forwarded();
    let (progress, wall_s) = fullsync(&origin)?;
    let proxy_after = proxy.bytes_forwarded();
    figures.differing_s = sites::field(&progress, "elapsed_ms") as f64 / 1000.0;
    figures.differing_bytes =
        (sites::field(&progress, "bytes_sent") + sites::field(&progress, "bytes_received")) as f64;
    figures.records_pushed = sites::field(&progress, "records_pushed");
    figures.mismatched_after = mismatched(&remote, &changed)?;
    let proxy_bytes = (proxy_after.0 - proxy_before.0) + (proxy_after.1 - proxy_before.1);
    println!(
        "  {} of {keys} keys changed ({:.0} bytes of keys + values): {:.3} s (wall {wall_s:.3} s), {:.0} bytes \
         (proxy saw {proxy_bytes}), {} records pushed, {} still differ after: {progress}",
        changed.len(), figures.differing_data_bytes, figures.differing_s, figures.differing_bytes,
        figures.records_pushed, figures.mismatched_after
    );
    figures.raw.push(json!({"kind": "one percent differs", "changed": changed.len(), "progress": progress,
        "wall_s": wall_s, "proxy_bytes_both_ways": proxy_bytes, "mismatched_after": figures.mismatched_after}));
    sites::cli(&origin, &["xdc", "resume", sites::LINK])?;
    Ok(figures)
}

/// Overwrites every `DIFFER_EVERY`-th key at the origin with a new value;
/// returns the (key, value) pairs written.
fn change_one_percent(origin: &ServerProcess, tag: u8, keys: u64) -> Result<Vec<Entry>, String> {
    let mut rng = 0x2545_f491_4f6c_dd1d_u64;
    let changed: Vec<Entry> = (0..keys)
        .step_by(DIFFER_EVERY as usize)
        .map(|seq| {
            let (mut key, mut value) = ([0u8; KEY_BYTES], [0u8; VALUE_BYTES]);
            key_of(tag, seq, &mut key);
            value_of(Values::Random, seq, &mut rng, &mut value);
            (key.to_vec(), value.to_vec())
        })
        .collect();
    let mut client = meridian_net::client::blocking::Client::connect(origin.client_config())
        .map_err(|e| e.to_string())?;
    for chunk in changed.chunks(CHUNK_KEYS) {
        let entries: Vec<(&[u8], &[u8])> = chunk.iter().map(|(k, v)| (&k[..], &v[..])).collect();
        client
            .mput(&entries)
            .map_err(|e| format!("MPUT at the origin: {e}"))?;
    }
    Ok(changed)
}

/// How many of `expected` the remote does not hold with that value.
fn mismatched(remote: &ServerProcess, expected: &[Entry]) -> Result<u64, String> {
    let mut client = meridian_net::client::blocking::Client::connect(remote.client_config())
        .map_err(|e| e.to_string())?;
    let mut wrong = 0;
    for chunk in expected.chunks(CHUNK_KEYS) {
        let keys: Vec<&[u8]> = chunk.iter().map(|(k, _)| &k[..]).collect();
        let found = client
            .mget(&keys)
            .map_err(|e| format!("MGET at the remote: {e}"))?;
        wrong += found
            .iter()
            .zip(chunk)
            .filter(|(entry, (_, value))| entry.as_ref().is_none_or(|e| e.value[..] != value[..]))
            .count() as u64;
    }
    Ok(wrong)
}

/// Phase 4: closed-loop writes at the origin with a link shipping and with
/// none, alternated; returns (with link, without) per round.
fn cost_phase(args: &Args, sizes: Sizes, tags: &mut Tags) -> Result<Vec<(f64, f64)>, String> {
    let mut rounds = Vec::new();
    for round in 0..sizes.cost_rounds {
        let order = if round % 2 == 0 {
            [true, false]
        } else {
            [false, true]
        };
        let mut measured = [0.0; 2];
        for with_link in order {
            let origin = sites::start("origin", 1, args.origin_cpu)?;
            let remote = sites::start("remote", 2, args.remote_cpu)?;
            if with_link {
                sites::link(&origin, &remote, None)?;
            }
            let result = closed_loop(args, sizes, origin.address(), tags.next());
            check(&result, "link cost")?;
            let shipped = sites::field(&sites::link_status(&origin), "records_sent");
            if with_link && shipped == 0 {
                return Err("the link shipped nothing".into());
            }
            println!(
                "  round {}, {}: {:.0} writes/s ({shipped} records shipped)",
                round + 1,
                if with_link { "one link" } else { "no link" },
                result.throughput()
            );
            measured[usize::from(!with_link)] = result.throughput();
        }
        rounds.push((measured[0], measured[1]));
    }
    Ok(rounds)
}

/// Runs every phase, prints the table and writes the JSON files.
pub fn run(args: &Args) -> Result<(), String> {
    let sizes = sizes(args);
    let started = Instant::now();
    let mut tags = Tags::default();
    println!("== settings: {}", sites::SETTINGS);
    println!(
        "== pinning: origin on cpu {}, remote + writer + lag poller + link proxy on cpu {} (this process: cpus {}); \
         writer: {} connections x pipeline {}, keys {KEY_BYTES} B, values {VALUE_BYTES} B",
        args.origin_cpu, args.remote_cpu, sites::cpus_of(std::process::id()), args.connections, args.pipeline
    );
    println!("== 1. local maximum write rate (origin alone, no link, closed loop)");
    let (local_max, max_rounds) = local_maximum(args, sizes, &mut tags)?;
    println!("== 2. lag and throughput (added RTT via the proxy, writes paced at a fraction of {local_max:.0}/s)");
    let mut lag = Vec::new();
    for round in 0..sizes.lag_rounds {
        let rtts: Vec<u64> = if round % 2 == 0 {
            ADDED_RTTS_MS.to_vec()
        } else {
            ADDED_RTTS_MS.iter().rev().copied().collect()
        };
        for load in LOADS {
            for &rtt in &rtts {
                let phase = lag_phase(
                    args,
                    sizes,
                    tags.next(),
                    local_max,
                    load,
                    rtt,
                    Values::Random,
                )?;
                print_lag(&phase);
                lag.push((round, phase));
            }
        }
    }
    let compressible = lag_phase(
        args,
        sizes,
        tags.next(),
        local_max,
        0.5,
        0,
        Values::Compressible,
    )?;
    print_lag(&compressible);
    println!("== 3. fullsync ({} keys)", sizes.fullsync_keys);
    let full = fullsync_phase(args, sizes, tags.next())?;
    println!("== 4. origin write throughput, one link shipping vs none (alternated)");
    let cost = cost_phase(args, sizes, &mut tags)?;
    let rows = figures(
        sizes,
        local_max,
        &max_rounds,
        &lag,
        &compressible,
        &full,
        &cost,
    );
    println!("\n== measured in {:.0} s; {} (medians over rounds, [min–max]); the machine is shared and its speed drifts\n",
        started.elapsed().as_secs_f64(), if args.quick { "QUICK run" } else { "full run" });
    println!("{}", report::table(&rows));
    write_json(
        args,
        &rows,
        json!({
            "settings": sites::SETTINGS, "quick": args.quick, "origin_cpu": args.origin_cpu, "remote_cpu": args.remote_cpu,
            "connections": args.connections, "pipeline": args.pipeline, "local_max_rounds": max_rounds,
            "lag_phases": lag.iter().map(|(round, p)| json!({"round": round, "phase": p.to_json()})).collect::<Vec<_>>(),
            "compressible_phase": compressible.to_json(), "fullsync": full.raw,
            "cost_rounds": cost.iter().map(|(link, none)| json!({"one_link": link, "no_link": none})).collect::<Vec<_>>(),
        }),
    )
}

fn write_json(args: &Args, rows: &[Row], raw: serde_json::Value) -> Result<(), String> {
    for (path, value) in [
        (
            &args.json,
            serde_json::to_value(rows).map_err(|e| e.to_string())?,
        ),
        (&args.raw, raw),
    ] {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
        }
        let text = serde_json::to_string_pretty(&value).map_err(|e| e.to_string())?;
        std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

fn figures(
    sizes: Sizes,
    local_max: f64,
    max_rounds: &[f64],
    lag: &[(usize, LagPhase)],
    compressible: &LagPhase,
    full: &FullsyncFigures,
    cost: &[(f64, f64)],
) -> Vec<Row> {
    let mut rows = vec![Row::plain(
        "local maximum write rate (origin alone, closed loop)",
        "ops/s",
        max_rounds,
    )];
    debug_assert!(local_max > 0.0);
    let pick = |load: f64, rtt: u64| -> Vec<&LagPhase> {
        lag.iter()
            .filter(|(_, p)| p.load == load && p.rtt_ms == rtt)
            .map(|(_, p)| p)
            .collect()
    };
    for load in LOADS {
        for rtt in ADDED_RTTS_MS {
            let phases = pick(load, rtt);
            let at = format!("{:.0}% load, +{rtt} ms RTT", load * 100.0);
            let series =
                |f: &dyn Fn(&LagPhase) -> f64| phases.iter().map(|p| f(p)).collect::<Vec<_>>();
            let p99 = series(&|p| p.lag_ms[1]);
            let mut row = Row::plain(&format!("lag p99, {at}"), "ms", &p99);
            if load == 0.5 && rtt == 0 {
                let ratios: Vec<f64> = p99.iter().map(|v| 5.0 / v.max(1e-9)).collect();
                row = row.against("goal", &[5.0], &ratios).goal(1.0, "p99 ≤ 5 ms");
            }
            rows.push(Row::plain(
                &format!("lag p50, {at}"),
                "ms",
                &series(&|p| p.lag_ms[0]),
            ));
            rows.push(row);
            rows.push(Row::plain(
                &format!("lag p99.9, {at}"),
                "ms",
                &series(&|p| p.lag_ms[2]),
            ));
            rows.push(Row::plain(
                &format!("polling resolution p99, {at}"),
                "ms",
                &series(&|p| p.resolution_ms[1]),
            ));
            rows.push(Row::plain(
                &format!("writes sent (target {:.0}/s), {at}", local_max * load),
                "ops/s",
                &series(&|p| p.writer.sent_rate()),
            ));
            rows.push(Row::plain(
                &format!("applied at the remote, {at}"),
                "records/s",
                &series(&|p| p.remote_applied_per_s),
            ));
        }
    }
    // Sustained throughput at 150 ms against 0 ms, 90% load, paired by round.
    let paired: Vec<(f64, f64)> = lag
        .iter()
        .filter(|(_, p)| p.load == 0.9 && p.rtt_ms == 150)
        .filter_map(|(round, far)| {
            lag.iter()
                .find(|(r, p)| r == round && p.load == 0.9 && p.rtt_ms == 0)
                .map(|(_, near)| (far.remote_applied_per_s, near.remote_applied_per_s))
        })
        .collect();
    rows.push(
        Row::plain(
            "sustained throughput at +150 ms RTT, 90% load (applied at the remote)",
            "records/s",
            &paired.iter().map(|p| p.0).collect::<Vec<_>>(),
        )
        .against(
            "+0 ms RTT",
            &paired.iter().map(|p| p.1).collect::<Vec<_>>(),
            &paired
                .iter()
                .map(|p| p.0 / p.1.max(1e-9))
                .collect::<Vec<_>>(),
        )
        .goal(0.8, "≥ 0.8× no delay"),
    );
    rows.extend(byte_rows(lag, compressible));
    rows.extend(fullsync_rows(sizes, full));
    let ratios: Vec<f64> = cost
        .iter()
        .map(|(link, none)| link / none.max(1e-9))
        .collect();
    rows.push(
        Row::plain(
            "origin write throughput, one link shipping",
            "ops/s",
            &cost.iter().map(|c| c.0).collect::<Vec<_>>(),
        )
        .against(
            "no link",
            &cost.iter().map(|c| c.1).collect::<Vec<_>>(),
            &ratios,
        )
        .goal(0.9, "≥ 0.9× no link"),
    );
    rows
}

fn byte_rows(lag: &[(usize, LagPhase)], compressible: &LagPhase) -> Vec<Row> {
    let random: Vec<&LagPhase> = lag
        .iter()
        .filter(|(_, p)| p.load == 0.5 && p.rtt_ms == 0)
        .map(|(_, p)| p)
        .collect();
    let sent: Vec<f64> = random.iter().map(|p| p.per_record(p.bytes_sent)).collect();
    let plain: Vec<f64> = random.iter().map(|p| p.uncompressed_per_record()).collect();
    let ratios: Vec<f64> = sent
        .iter()
        .zip(&plain)
        .map(|(s, u)| u / s.max(1e-9))
        .collect();
    let c_sent = compressible.per_record(compressible.bytes_sent);
    let c_plain = compressible.uncompressed_per_record();
    vec![
        Row::plain("XDC bytes per record sent, random values (lz4 when smaller), 50% load", "bytes/record", &sent)
            .against("uncompressed (computed)", &plain, &ratios),
        Row::plain("XDC bytes per record sent, compressible values (lz4), 50% load", "bytes/record", &[c_sent])
            .against("uncompressed (computed)", &[c_plain], &[c_plain / c_sent.max(1e-9)]),
        Row::plain("bytes per record toward the remote on the wire (proxy count, frame headers included), random", "bytes/record",
            &random.iter().map(|p| p.per_record(p.proxy_bytes)).collect::<Vec<_>>()),
        Row::plain("bytes per record toward the remote on the wire (proxy count), compressible", "bytes/record",
            &[compressible.per_record(compressible.proxy_bytes)]),
    ]
}

fn fullsync_rows(sizes: Sizes, full: &FullsyncFigures) -> Vec<Row> {
    let keys = sizes.fullsync_keys;
    let limit_ratios: Vec<f64> = full.identical_s.iter().map(|s| 2.0 / s.max(1e-9)).collect();
    vec![
        Row::plain(
            &format!("fullsync, identical datacenters, {keys} keys: time"),
            "s",
            &full.identical_s,
        )
        .against("goal", &[2.0], &limit_ratios)
        .goal(1.0, "< 2 s"),
        Row::plain(
            &format!("fullsync, identical datacenters, {keys} keys: bytes both ways"),
            "bytes",
            &full.identical_bytes,
        ),
        Row::plain(
            &format!("fullsync, 1% of {keys} keys differ: time"),
            "s",
            &[full.differing_s],
        ),
        Row::plain(
            &format!("fullsync, 1% of {keys} keys differ: bytes both ways"),
            "bytes",
            &[full.differing_bytes],
        )
        .against(
            "differing keys + values",
            &[full.differing_data_bytes],
            &[full.differing_data_bytes / full.differing_bytes.max(1e-9)],
        )
        .goal(1.0 / 3.0, "≤ 3× differing data"),
        Row::plain(
            &format!("fullsync, 1% of {keys} keys differ: records pushed"),
            "records",
            &[full.records_pushed as f64],
        ),
        Row::plain(
            "keys still different after that fullsync",
            "keys",
            &[full.mismatched_after as f64],
        ),
    ]
}

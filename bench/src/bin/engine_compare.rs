//! Meridian's engine against fjall, redb and LMDB: one command, one table.
//!
//! `cargo run --release -p meridian-bench --bin engine_compare [-- options]`
//!
//! Runs every engine in this process on the same data (16-byte keys,
//! 100-byte values, one thread, pinned to one core), alternating the
//! engines within each round, and prints each figure's median (with min and
//! max) beside its peer's, the ratio and the goal. Writes the figures to
//! `target/bench-results/engine.json`. Options (all optional):
//! `--keys N` (1,000,000), `--rounds N` (3), `--groups N` (2,000),
//! `--group-len N` (64), `--startup-keys N` (10,000,000; 0 skips),
//! `--core N` (the last core), `--dir PATH` (the system temp dir),
//! `--json PATH`, `--only meridian,lmdb` (run only these engines' put/get
//! phase and print their figures, no table: for profiling),
//! `--startup-dir PATH` (keep the start-up store there and reuse it).

use std::path::{Path, PathBuf};

use meridian_bench::engine_peers::{
    fjall_peer::Fjall, lmdb_peer::Lmdb, meridian_peer, meridian_peer::Meridian, ops_per_s,
    redb_peer::Redb, BenchResult, GroupCommitPeer, Peer, Samples, Workload, KEY_LEN, VALUE_LEN,
};
use serde::Serialize;

#[derive(Debug)]
struct Settings {
    keys: usize,
    rounds: usize,
    groups: usize,
    group_len: usize,
    startup_keys: usize,
    core: Option<usize>,
    directory: PathBuf,
    json: PathBuf,
    /// Only these engines' put/get phase (for profiling one engine).
    only: Option<Vec<String>>,
    /// Keep the start-up store here and reuse it when present.
    startup_dir: Option<PathBuf>,
}

fn parse_settings() -> BenchResult<Settings> {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let mut settings = Settings {
        keys: 1_000_000,
        rounds: 3,
        groups: 2_000,
        group_len: 64,
        startup_keys: 10_000_000,
        core: None,
        directory: std::env::temp_dir(),
        json: target.join("bench-results/engine.json"),
        only: None,
        startup_dir: None,
    };
    let mut arguments = std::env::args().skip(1);
    while let Some(flag) = arguments.next() {
        let value = arguments.next().ok_or(format!("{flag} needs a value"))?;
        let number = || value.replace('_', "").parse::<usize>();
        match flag.as_str() {
            "--keys" => settings.keys = number()?,
            "--rounds" => settings.rounds = number()?,
            "--groups" => settings.groups = number()?,
            "--group-len" => settings.group_len = number()?,
            "--startup-keys" => settings.startup_keys = number()?,
            "--core" => settings.core = Some(number()?),
            "--dir" => settings.directory = PathBuf::from(&value),
            "--json" => settings.json = PathBuf::from(&value),
            "--startup-dir" => settings.startup_dir = Some(PathBuf::from(&value)),
            "--only" => settings.only = Some(value.split(',').map(str::to_string).collect()),
            _ => return Err(format!("unknown option {flag}").into()),
        }
    }
    if settings.rounds == 0 || settings.keys == 0 || settings.groups * settings.group_len == 0 {
        return Err("--keys, --rounds, --groups and --group-len must be positive".into());
    }
    Ok(settings)
}

/// Pins this thread (and so every thread it starts later) to one core.
fn pin(core: Option<usize>) -> String {
    let Some(cores) = core_affinity::get_core_ids() else {
        return "not pinned (core list unavailable)".to_string();
    };
    let Some(chosen) = core
        .and_then(|id| cores.iter().find(|c| c.id == id).copied())
        .or_else(|| cores.last().copied())
    else {
        return "not pinned (no cores listed)".to_string();
    };
    if core_affinity::set_for_current(chosen) {
        format!(
            "pinned to core {} of {} (engines' own threads inherit it)",
            chosen.id,
            cores.len()
        )
    } else {
        format!(
            "not pinned (sched_setaffinity to core {} failed)",
            chosen.id
        )
    }
}

/// Writes back every dirty page in the system (`sync(1)`), untimed, so one
/// engine's leftover writeback does not land in the next one's window.
fn flush_page_cache() {
    let _ = std::process::Command::new("sync").status();
}

/// One printed row and one JSON row.
#[derive(Debug)]
struct Figure {
    name: &'static str,
    unit: &'static str,
    meridian: Samples,
    peer: String,
    /// The peer's samples, or the goal itself when there is no peer.
    peer_samples: Samples,
    higher_is_better: bool,
    /// Ratio (Meridian better when > 1) the goal asks for.
    goal_ratio: f64,
    goal_text: String,
}

impl Figure {
    /// Meridian against the peer, > 1 when Meridian is better: the median
    /// of the per-round ratios when both sides ran every round (each pair
    /// ran minutes apart at most, so the VM's drift cancels), else the
    /// ratio of the medians.
    fn ratio(&self) -> f64 {
        let better = |meridian: f64, peer: f64| {
            if self.higher_is_better {
                meridian / peer
            } else {
                peer / meridian
            }
        };
        let (meridian, peer) = (&self.meridian.0, &self.peer_samples.0);
        if meridian.len() > 1 && meridian.len() == peer.len() {
            let rounds = meridian.iter().zip(peer).map(|(&m, &p)| better(m, p));
            return Samples(rounds.collect()).median();
        }
        better(self.meridian.median(), self.peer_samples.median())
    }
}

#[derive(Serialize)]
struct JsonRow<'a> {
    name: &'a str,
    value: f64,
    unit: &'a str,
    peer: &'a str,
    peer_value: f64,
    ratio: f64,
    goal_ratio: f64,
    value_min: f64,
    value_max: f64,
}

fn human(value: f64) -> String {
    if value >= 1e6 {
        format!("{:.2}M", value / 1e6)
    } else if value >= 1e4 {
        format!("{:.0}K", value / 1e3)
    } else if value >= 100.0 {
        format!("{value:.0}")
    } else {
        format!("{value:.3}")
    }
}

fn spread(samples: &Samples) -> String {
    if samples.0.len() <= 1 {
        return human(samples.median());
    }
    format!(
        "{} [{}–{}]",
        human(samples.median()),
        human(samples.min()),
        human(samples.max())
    )
}

fn print_table(figures: &[Figure]) {
    println!(
        "\n{:<46} {:<26} {:<6} {:<26} {:>8} {:>7} {:>4}",
        "figure",
        "meridian median [min–max]",
        "peer",
        "peer median [min–max]",
        "ratio",
        "goal",
        "met"
    );
    for figure in figures {
        let ratio = figure.ratio();
        println!(
            "{:<46} {:<26} {:<6} {:<26} {:>7.2}× {:>7} {:>4}",
            format!("{} ({})", figure.name, figure.unit),
            spread(&figure.meridian),
            figure.peer,
            spread(&figure.peer_samples),
            ratio,
            figure.goal_text,
            if figure.goal_ratio == 0.0 {
                "-"
            } else if ratio >= figure.goal_ratio {
                "yes"
            } else {
                "NO"
            }
        );
    }
}

/// What the table's columns mean, printed under it.
const TABLE_NOTE: &str =
    "* ratio > 1 means Meridian is better: for ops/s the median over rounds of \
meridian/peer measured in the same round; for bytes and seconds goal/meridian. \
open_10m_keys is a warm-cache open (the page cache cannot be dropped here).";

fn write_json(path: &Path, figures: &[Figure]) -> BenchResult<()> {
    let rows: Vec<JsonRow<'_>> = figures
        .iter()
        .map(|figure| JsonRow {
            name: figure.name,
            value: figure.meridian.median(),
            unit: figure.unit,
            peer: &figure.peer,
            peer_value: figure.peer_samples.median(),
            ratio: figure.ratio(),
            goal_ratio: figure.goal_ratio,
            value_min: figure.meridian.min(),
            value_max: figure.meridian.max(),
        })
        .collect();
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(path, serde_json::to_string_pretty(&rows)? + "\n")?;
    Ok(())
}

/// Samples of the put/get phase, per engine (in `peers` order).
#[derive(Debug, Default)]
struct PutGetSamples {
    puts: Vec<Samples>,
    gets: Vec<Samples>,
    keydir_steady: Samples,
    keydir_peak: Samples,
}

fn run_put_get(
    settings: &Settings,
    workload: &Workload,
    peers: &[&dyn Peer],
) -> BenchResult<PutGetSamples> {
    let mut samples = PutGetSamples {
        puts: vec![Samples::default(); peers.len()],
        gets: vec![Samples::default(); peers.len()],
        ..PutGetSamples::default()
    };
    for round in 0..settings.rounds {
        for turn in 0..peers.len() {
            let which = (turn + round) % peers.len();
            let peer = peers[which];
            let directory = tempfile::Builder::new()
                .prefix(&format!("engine-compare-{}-", peer.name()))
                .tempdir_in(&settings.directory)?;
            flush_page_cache();
            let measured = peer.put_get(directory.path(), workload)?;
            let (puts, gets) = (
                ops_per_s(workload.keys.len(), measured.put_elapsed),
                ops_per_s(workload.reads.len(), measured.get_elapsed),
            );
            println!(
                "round {} {:<9} put {:>9}/s  get {:>9}/s",
                round + 1,
                peer.name(),
                human(puts),
                human(gets)
            );
            samples.puts[which].push(puts);
            samples.gets[which].push(gets);
            if let Some((steady, peak)) = measured.keydir_bytes_per_key {
                samples.keydir_steady.push(steady);
                samples.keydir_peak.push(peak);
            }
        }
    }
    Ok(samples)
}

fn run_group_commit(
    settings: &Settings,
    workload: &Workload,
    peers: &[&dyn GroupCommitPeer],
) -> BenchResult<Vec<Samples>> {
    let mut samples = vec![Samples::default(); peers.len()];
    let puts = settings.groups * settings.group_len;
    for round in 0..settings.rounds {
        for turn in 0..peers.len() {
            let which = (turn + round) % peers.len();
            let peer = peers[which];
            let directory = tempfile::Builder::new()
                .prefix(&format!("engine-compare-sync-{}-", peer.name()))
                .tempdir_in(&settings.directory)?;
            flush_page_cache();
            let elapsed = peer.group_commit(
                directory.path(),
                workload,
                settings.groups,
                settings.group_len,
            )?;
            let rate = ops_per_s(puts, elapsed);
            println!(
                "round {} {:<9} synced puts {:>9}/s  ({:.3} ms per group)",
                round + 1,
                peer.name(),
                human(rate),
                elapsed.as_secs_f64() * 1e3 / settings.groups as f64
            );
            samples[which].push(rate);
        }
    }
    Ok(samples)
}

/// Builds a store of `--startup-keys` keys once and times `--rounds` opens.
fn run_startup(settings: &Settings) -> BenchResult<Samples> {
    let temporary;
    let directory = match &settings.startup_dir {
        Some(path) => path.clone(),
        None => {
            temporary = tempfile::Builder::new()
                .prefix("engine-compare-startup-")
                .tempdir_in(&settings.directory)?;
            temporary.path().to_path_buf()
        }
    };
    if directory.join("LOCK").exists() {
        println!("start-up store: reusing {}", directory.display());
    } else {
        let (loaded, closed) = meridian_peer::build_for_startup(&directory, settings.startup_keys)?;
        println!(
            "start-up store: {} keys loaded in {:.1} s, closed (hints written) in {:.1} s",
            settings.startup_keys,
            loaded.as_secs_f64(),
            closed.as_secs_f64()
        );
    }
    let mut samples = Samples::default();
    for round in 0..settings.rounds {
        let (elapsed, hinted, segments) =
            meridian_peer::timed_open(&directory, settings.startup_keys)?;
        println!(
            "round {} open of {} keys: {:.3} s ({hinted} of {segments} segments from hints)",
            round + 1,
            settings.startup_keys,
            elapsed.as_secs_f64()
        );
        samples.push(elapsed.as_secs_f64());
    }
    Ok(samples)
}

fn ratio_figure(
    name: &'static str,
    unit: &'static str,
    meridian: &Samples,
    peer: &str,
    peer_samples: &Samples,
    goal_ratio: f64,
) -> Figure {
    Figure {
        name,
        unit,
        meridian: meridian.clone(),
        peer: peer.to_string(),
        peer_samples: peer_samples.clone(),
        higher_is_better: true,
        goal_ratio,
        goal_text: format!("≥{goal_ratio}×"),
    }
}

/// A figure with no peer: compared with its goal (lower is better).
fn goal_figure(name: &'static str, unit: &'static str, meridian: Samples, goal: f64) -> Figure {
    Figure {
        name,
        unit,
        meridian,
        peer: "goal".to_string(),
        peer_samples: Samples(vec![goal]),
        higher_is_better: false,
        goal_ratio: 1.0,
        goal_text: format!("≤{goal}"),
    }
}

fn main() -> BenchResult<()> {
    let settings = parse_settings()?;
    let pinned = pin(settings.core);
    println!("engine_compare: {KEY_LEN}-byte keys, {VALUE_LEN}-byte values, {} keys, one thread, {} rounds (engines alternated), {pinned}", settings.keys, settings.rounds);
    println!(
        "temp dir: {} (page cache warm; figures are medians of the rounds)",
        settings.directory.display()
    );
    let workload = Workload::new(settings.keys, settings.keys, 0x5EED);
    let (meridian, fjall, redb, lmdb) = (Meridian, Fjall, Redb, Lmdb);
    let peers: [&dyn Peer; 4] = [&meridian, &fjall, &redb, &lmdb];
    for peer in peers {
        println!("  {:<9} {}", peer.name(), peer.settings());
    }
    if settings
        .only
        .as_ref()
        .is_some_and(|only| only.iter().any(|name| name == "startup"))
    {
        run_startup(&settings)?;
        return Ok(());
    }
    if let Some(only) = &settings.only {
        let chosen: Vec<&dyn Peer> = peers
            .into_iter()
            .filter(|peer| only.iter().any(|name| name == peer.name()))
            .collect();
        run_put_get(&settings, &workload, &chosen)?;
        return Ok(());
    }
    let put_get = run_put_get(&settings, &workload, &peers)?;

    let group_peers: [&dyn GroupCommitPeer; 2] = [&meridian, &redb];
    println!(
        "put under sync: {} groups of {} puts, each group durable before the next",
        settings.groups, settings.group_len
    );
    for peer in group_peers {
        println!(
            "  {:<9} {}",
            GroupCommitPeer::name(peer),
            GroupCommitPeer::settings(peer)
        );
    }
    let synced = run_group_commit(&settings, &workload, &group_peers)?;

    let mut figures = vec![
        ratio_figure(
            "put_no_sync",
            "ops/s",
            &put_get.puts[0],
            "fjall",
            &put_get.puts[1],
            8.0,
        ),
        ratio_figure(
            "put_no_sync",
            "ops/s",
            &put_get.puts[0],
            "lmdb",
            &put_get.puts[3],
            8.0,
        ),
        ratio_figure(
            "put_no_sync",
            "ops/s",
            &put_get.puts[0],
            "redb",
            &put_get.puts[2],
            15.0,
        ),
        ratio_figure(
            "get_warm_uniform",
            "ops/s",
            &put_get.gets[0],
            "lmdb",
            &put_get.gets[3],
            1.5,
        ),
        ratio_figure(
            "get_warm_uniform",
            "ops/s",
            &put_get.gets[0],
            "fjall",
            &put_get.gets[1],
            0.0,
        ),
        ratio_figure(
            "get_warm_uniform",
            "ops/s",
            &put_get.gets[0],
            "redb",
            &put_get.gets[2],
            0.0,
        ),
        ratio_figure(
            "put_sync_group64",
            "ops/s",
            &synced[0],
            "redb",
            &synced[1],
            5.0,
        ),
    ];
    // The fjall and redb gets are printed for reference; they carry no goal.
    for figure in &mut figures[4..6] {
        figure.goal_text = "-".to_string();
    }
    let goal_bytes = (KEY_LEN + 48) as f64;
    figures.push(goal_figure(
        "keydir_steady",
        "bytes/key, ratio=goal/value",
        put_get.keydir_steady,
        goal_bytes,
    ));
    figures.push(goal_figure(
        "keydir_peak",
        "bytes/key, ratio=goal/value",
        put_get.keydir_peak,
        goal_bytes,
    ));
    if settings.startup_keys > 0 {
        let startup = run_startup(&settings)?;
        figures.push(goal_figure(
            "open_10m_keys_warm_cache",
            "s, ratio=goal/value",
            startup,
            2.0,
        ));
    }
    print_table(&figures);
    println!("{TABLE_NOTE}");
    write_json(&settings.json, &figures)?;
    println!("\nwrote {}", settings.json.display());
    Ok(())
}

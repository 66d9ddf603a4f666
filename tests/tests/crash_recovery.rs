//! Goal: with `durability = "sync"`, every write the server acknowledged
//! survives a SIGKILL at any moment.
//!
//! Method: 20 cycles. In each, writer threads pipeline PUTs of unique keys
//! (a few values large enough to span pages) to a two-shard server and
//! record each acknowledged write; the server is SIGKILLed at a random
//! moment 40-400 ms into the load; a new process on the same directory must
//! return every write acknowledged so far, in this cycle and all before, with
//! its exact value. Writes in flight at the kill may or may not be there.
//! The moment comes from a seed printed at the start (set
//! `MERIDIAN_TEST_SEED` to replay one).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use meridian_tests::load::{verify_acknowledged, write_until_disconnected};
use meridian_tests::{wait_until, ServerConfig, ServerProcess};
use rand::{Rng, SeedableRng};

const CYCLES: usize = 20;
const WRITERS: usize = 3;
/// A writer's load ends here at the latest, even if the server never dies.
const LOAD_DEADLINE: Duration = Duration::from_secs(10);
const KILL_DELAY_MS: std::ops::RangeInclusive<u64> = 40..=400;

#[test]
fn acknowledged_sync_writes_survive_sigkill() {
    crash_cycles(ServerConfig::default().shards(2).durability("sync"), CYCLES);
}

/// The same with 1 MiB journal files: the load fills several, so kills land
/// before, during and after checkpoints (the switch to a new file, the
/// stores' sync, the removal of older files) and replay spans files.
#[test]
fn acknowledged_sync_writes_survive_sigkill_across_journal_checkpoints() {
    let config = ServerConfig::default().shards(2).durability("sync").set(
        "storage",
        "journal_file_bytes",
        "1048576",
    );
    crash_cycles(config, 8);
}

fn crash_cycles(config: ServerConfig, cycles: usize) {
    let seed = std::env::var("MERIDIAN_TEST_SEED")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or_else(rand::random::<u64>);
    println!("MERIDIAN_TEST_SEED={seed}");
    let mut random = rand::rngs::StdRng::seed_from_u64(seed);
    let mut server = ServerProcess::start(config);
    let mut all_acknowledged: Vec<(String, Vec<u8>)> = Vec::new();
    for cycle in 0..cycles {
        let acknowledged_count = Arc::new(AtomicUsize::new(0));
        let mut config = server.client_config();
        config.reconnect_attempts_max = 1;
        let writers: Vec<_> = (0..WRITERS)
            .map(|writer| {
                let (config, count) = (config.clone(), Arc::clone(&acknowledged_count));
                let prefix = format!("cycle-{cycle}-writer-{writer}");
                std::thread::spawn(move || {
                    write_until_disconnected(config, prefix, count, LOAD_DEADLINE)
                })
            })
            .collect();
        let loaded = wait_until(Instant::now() + LOAD_DEADLINE, || {
            acknowledged_count.load(Ordering::SeqCst) > 0
        });
        assert!(
            loaded,
            "cycle {cycle}: no write acknowledged within {LOAD_DEADLINE:?}"
        );
        let kill_at = Instant::now() + Duration::from_millis(random.random_range(KILL_DELAY_MS));
        // The kill moment is a deadline, not a condition: nothing to poll for.
        wait_until(kill_at, || false);
        server.kill();
        let mut cycle_count = 0;
        for writer in writers {
            let report = writer.join().expect("writer thread");
            assert!(
                report.error_answers.is_empty(),
                "cycle {cycle}: error answers under load: {:?}",
                report.error_answers
            );
            cycle_count += report.acknowledged.len();
            all_acknowledged.extend(report.acknowledged);
        }
        server.restart();
        let mut client = server.client();
        verify_acknowledged(
            &mut client,
            &all_acknowledged,
            &format!("cycle {cycle}, after SIGKILL"),
        );
        println!(
            "cycle {cycle}: {cycle_count} acknowledged, {} verified",
            all_acknowledged.len()
        );
    }
    server.restart();
    verify_acknowledged(
        &mut server.client(),
        &all_acknowledged,
        "after the last clean restart",
    );
    server.stop();
}

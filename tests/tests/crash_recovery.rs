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

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use meridian_net::client::blocking::Client;
use meridian_net::client::core::put_request;
use meridian_net::client::ClientConfig;
use meridian_net::Response;
use meridian_tests::{wait_until, ServerConfig, ServerProcess};
use rand::{Rng, SeedableRng};

const CYCLES: usize = 20;
const WRITERS: usize = 3;
/// Requests each writer keeps in flight.
const WINDOW: usize = 8;
/// A writer's load ends here at the latest, even if the server never dies.
const LOAD_DEADLINE: Duration = Duration::from_secs(10);
const KILL_DELAY_MS: std::ops::RangeInclusive<u64> = 40..=400;
const VERIFY_BATCH: usize = 500;

/// What one writer saw: the writes acknowledged, and any error answer
/// (under sync durability, with no fault but the kill, there must be none).
#[derive(Debug, Default)]
struct WriterReport {
    acknowledged: Vec<(String, Vec<u8>)>,
    error_answers: Vec<String>,
}

fn value_for(key: &str, sequence: usize) -> Vec<u8> {
    // Mostly small values; every 64th one is 20 KiB so records span pages.
    let length = if sequence % 64 == 63 {
        20 << 10
    } else {
        16 + sequence % 200
    };
    let mut value = key.as_bytes().to_vec();
    value.extend((0..length).map(|offset| b'a' + ((offset + sequence) % 26) as u8));
    value
}

/// Pipelines PUTs until the connection breaks (the kill) or the deadline.
fn write_until_killed(
    config: ClientConfig,
    prefix: String,
    acknowledged_count: Arc<AtomicUsize>,
) -> WriterReport {
    let mut report = WriterReport::default();
    let Ok(mut client) = Client::connect(config) else {
        return report;
    };
    let mut pending: HashMap<u32, (String, Vec<u8>)> = HashMap::new();
    let deadline = Instant::now() + LOAD_DEADLINE;
    let mut sequence = 0;
    while Instant::now() < deadline {
        while pending.len() < WINDOW {
            let key = format!("{prefix}-{sequence}");
            let value = value_for(&key, sequence);
            sequence += 1;
            match client.send(&put_request(key.as_bytes(), &value, None)) {
                Ok(id) => pending.insert(id, (key, value)),
                Err(_) => return report,
            };
        }
        let Ok((id, response)) = client.recv_any() else {
            return report;
        };
        let Some(write) = pending.remove(&id) else {
            report
                .error_answers
                .push(format!("answer to unknown request {id}"));
            continue;
        };
        match response {
            Response::Written { .. } => {
                report.acknowledged.push(write);
                acknowledged_count.fetch_add(1, Ordering::SeqCst);
            }
            other => report.error_answers.push(format!("{}: {other:?}", write.0)),
        }
    }
    report
}

fn verify(client: &mut Client, acknowledged: &[(String, Vec<u8>)], cycle: usize) {
    for chunk in acknowledged.chunks(VERIFY_BATCH) {
        let keys: Vec<&str> = chunk.iter().map(|(key, _)| key.as_str()).collect();
        let found = client.mget(&keys).expect("mget after restart");
        for ((key, value), entry) in chunk.iter().zip(found) {
            let entry = entry.unwrap_or_else(|| {
                panic!("cycle {cycle}: acknowledged write {key} is missing after SIGKILL")
            });
            assert!(
                entry.value[..] == value[..],
                "cycle {cycle}: {key} came back with {} bytes, {} written",
                entry.value.len(),
                value.len()
            );
        }
    }
}

#[test]
fn acknowledged_sync_writes_survive_sigkill() {
    let seed = std::env::var("MERIDIAN_TEST_SEED")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or_else(rand::random::<u64>);
    println!("MERIDIAN_TEST_SEED={seed}");
    let mut random = rand::rngs::StdRng::seed_from_u64(seed);
    let mut server = ServerProcess::start(ServerConfig::default().shards(2).durability("sync"));
    let mut all_acknowledged: Vec<(String, Vec<u8>)> = Vec::new();
    for cycle in 0..CYCLES {
        let acknowledged_count = Arc::new(AtomicUsize::new(0));
        let mut config = server.client_config();
        config.reconnect_attempts_max = 1;
        let writers: Vec<_> = (0..WRITERS)
            .map(|writer| {
                let (config, count) = (config.clone(), Arc::clone(&acknowledged_count));
                let prefix = format!("cycle-{cycle}-writer-{writer}");
                std::thread::spawn(move || write_until_killed(config, prefix, count))
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
        verify(&mut client, &all_acknowledged, cycle);
        println!(
            "cycle {cycle}: {cycle_count} acknowledged, {} verified",
            all_acknowledged.len()
        );
    }
    server.restart();
    verify(&mut server.client(), &all_acknowledged, CYCLES);
    server.stop();
}

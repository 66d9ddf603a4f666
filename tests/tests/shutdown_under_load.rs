//! Goal: SIGTERM in the middle of a write load stops the server cleanly
//! (exit 0, within the deadline) and keeps every acknowledged write, with
//! `durability = "periodic"`, whose acknowledgements come before any sync.
//!
//! Method: writer threads pipeline PUTs to a two-shard server while another
//! client sits idle on its connection; once writes are being acknowledged,
//! `stop()` sends SIGTERM and asserts exit status 0; a restarted server must
//! return every acknowledged write.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use meridian_tests::load::{verify_acknowledged, write_until_disconnected};
use meridian_tests::{wait_until, ServerConfig, ServerProcess};

const WRITERS: usize = 3;
const LOAD_DEADLINE: Duration = Duration::from_secs(20);

#[test]
fn sigterm_under_load_exits_0_and_keeps_acknowledged_writes() {
    let mut server = ServerProcess::start(ServerConfig::default().shards(2).durability("periodic"));
    let mut idle = server.client();
    idle.ping().expect("ping");
    let acknowledged_count = Arc::new(AtomicUsize::new(0));
    let writers: Vec<_> = (0..WRITERS)
        .map(|writer| {
            let mut config = server.client_config();
            config.reconnect_attempts_max = 1;
            let count = Arc::clone(&acknowledged_count);
            let prefix = format!("shutdown-writer-{writer}");
            std::thread::spawn(move || {
                write_until_disconnected(config, prefix, count, LOAD_DEADLINE)
            })
        })
        .collect();
    let loaded = wait_until(Instant::now() + LOAD_DEADLINE, || {
        acknowledged_count.load(Ordering::SeqCst) >= 500
    });
    assert!(loaded, "the load did not get going");
    let stopping = Instant::now();
    server.stop();
    println!("stopped in {:?}", stopping.elapsed());
    let mut acknowledged = Vec::new();
    for writer in writers {
        let report = writer.join().expect("writer thread");
        assert!(
            report
                .error_answers
                .iter()
                .all(|answer| answer.contains("ShuttingDown")),
            "error answers other than ShuttingDown: {:?}",
            report.error_answers
        );
        acknowledged.extend(report.acknowledged);
    }
    drop(idle);
    server.restart();
    verify_acknowledged(
        &mut server.client(),
        &acknowledged,
        "after SIGTERM under load",
    );
}

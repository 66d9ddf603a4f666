//! Regression test for glommio's sleep protocol, patched in
//! `vendor/glommio/src/sys/uring.rs` and `sys/mod.rs` (see vendor/README.md,
//! "Sixth change").
//!
//! Goal: a wake-up sent from another thread while an executor is going to
//! sleep is never lost. The executor announces that it sleeps
//! (`should_notify = true`), fences, and sweeps its foreign queues once more
//! before it blocks in `io_uring_enter`; a remote thread queues its waker,
//! fences, and writes the executor's eventfd if it finds the flag set. With
//! a fence missing on either side, both can miss each other and the
//! executor sleeps with a task ready to run. Meridian's shards wait like
//! this on every cross-shard reply (flume channels answered from another
//! executor's thread).
//!
//! Method: executor A awaits a flume channel; executor B on the other CPU,
//! blocking its thread, sends into it after a random spin of 0 to ~30 µs, so that the send
//! lands before, during and after A's last sweep, then waits for A's
//! answer. A runs with a preemption timer of one minute and no timer of its
//! own, so nothing but the eventfd wakes it: a lost wake-up stalls it for a
//! minute, and the test fails when A's progress stops for `STALL_LIMIT`.
//! Bounded by `ITERATIONS` and `TIME_LIMIT`.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use glommio::{LocalExecutorBuilder, Placement};

mod race_support;
use race_support::{spin, two_cpus, xorshift};

const ITERATIONS: u64 = 200_000;
const TIME_LIMIT: Duration = Duration::from_secs(5);
/// Far longer than any round trip, far shorter than A's preemption timer.
const STALL_LIMIT: Duration = Duration::from_secs(5);
/// Spins of at most this many pause instructions before each send.
const SPREAD: u64 = 1024;
/// A reports its progress every this many round trips (a few ms).
const REPORT_EVERY: u64 = 256;

#[test]
fn a_wake_up_sent_while_the_executor_goes_to_sleep_is_never_lost() {
    let cpus = two_cpus();
    let placement_a = cpus.map_or(Placement::Unbound, |(a, _)| Placement::Fixed(a));
    // Round trips A has completed, every REPORT_EVERY; closed when A ends.
    let (progress, reports) = mpsc::channel::<u64>();
    let (to_a, from_b) = flume::bounded::<u64>(1);
    let (to_b, from_a) = flume::bounded::<u64>(1);
    let started = Instant::now();
    let a = LocalExecutorBuilder::new(placement_a)
        .name("sleep-wakeups-a")
        .io_memory(1 << 20)
        .preempt_timer(Duration::from_secs(60))
        .spawn(move || async move {
            let mut done = 0u64;
            while let Ok(iteration) = from_b.recv_async().await {
                assert_eq!(iteration, done, "messages arrive in order");
                done += 1;
                if done % REPORT_EVERY == 0 {
                    let _ = progress.send(done);
                }
                if to_b.send(iteration).is_err() {
                    break;
                }
            }
            done
        })
        .expect("start executor A");
    // B blocks its own executor's thread on purpose: it stands for any
    // other thread (a shard, the XDC executor) answering A.
    let placement_b = cpus.map_or(Placement::Unbound, |(_, b)| Placement::Fixed(b));
    let b = LocalExecutorBuilder::new(placement_b)
        .name("sleep-wakeups-b")
        .io_memory(1 << 20)
        .spawn(move || async move {
            let mut random = 0x9E37_79B9_7F4A_7C15u64;
            for iteration in 0..ITERATIONS {
                if started.elapsed() > TIME_LIMIT {
                    break;
                }
                spin(xorshift(&mut random) % SPREAD);
                if to_a.send(iteration).is_err() {
                    return;
                }
                // A's answer; a lost wake-up leaves this waiting, and the
                // test thread reports it.
                if from_a.recv().is_err() {
                    return;
                }
            }
        })
        .expect("start executor B");
    // Watch A's progress: no report for STALL_LIMIT means a lost wake-up.
    // (On failure the stuck threads are left to the process's exit.)
    let mut seen = 0;
    loop {
        match reports.recv_timeout(STALL_LIMIT) {
            Ok(done) => seen = done,
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => panic!(
                "executor A made no progress for {STALL_LIMIT:?} after {seen} round trips: \
                 a wake-up was lost"
            ),
        }
    }
    b.join().expect("thread B failed");
    let done = a.join().expect("executor A failed");
    assert!(done > 1_000, "only {done} round trips ran");
    println!("{done} round trips in {:?}", started.elapsed());
}

//! Regression test for a use-after-free / double free in glommio's task
//! reference counting, patched in `vendor/glommio/src/task/raw.rs` (see
//! vendor/README.md, "Third change").
//!
//! The race: a thread other than a task's executor holds the task's last
//! waker and drops it while the executor drops the task's `JoinHandle`
//! after the task completed. Upstream glommio's foreign `drop_waker`
//! decremented the count to zero, then cloned the waker (back to one) to
//! queue it to the owner; `JoinHandle::drop` read zero in between and freed
//! the task, the clone wrote into freed memory and the queued waker freed it
//! again. In Meridian this is a serve_peer task (awaited, then dropped, by
//! its connection) whose cross-shard flume reply hook is dropped by the
//! replying shard's thread. Unpatched, this test fails within about a second
//! here: "Waker invariant broken", glibc's "double free or corruption", or
//! SIGSEGV.
//!
//! Method: executor A spawns a task that hands its waker to executor B and
//! waits; B wakes it, waits until A has awaited the task, and drops the
//! waker while A drops the task's handle. Small random spins on both sides
//! sweep the two drops across each other; two executors on two CPUs make
//! them truly concurrent (with one CPU the test proves nothing, and passes).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use glommio::{LocalExecutorBuilder, Placement};

mod race_support;
use race_support::{spin, two_cpus, xorshift};

const ITERATIONS: u64 = 100_000;
const TIME_LIMIT: Duration = Duration::from_secs(6);
/// Spins of at most this many pause instructions on each side.
const SPREAD: u64 = 32;

#[test]
fn a_waker_dropped_on_another_executor_as_the_join_handle_drops_frees_the_task_once() {
    let (placement_a, placement_b) = match two_cpus() {
        Some((a, b)) => (Placement::Fixed(a), Placement::Fixed(b)),
        None => (Placement::Unbound, Placement::Unbound),
    };
    // The iteration A has finished awaiting (u64::MAX: none yet).
    let awaited = Arc::new(AtomicU64::new(u64::MAX));
    let (to_b, from_a) = mpsc::channel::<(Waker, u64)>();
    let b_awaited = Arc::clone(&awaited);
    let b = LocalExecutorBuilder::new(placement_b)
        .name("foreign-waker-b")
        .io_memory(1 << 20)
        .spawn(move || async move {
            let mut random = 0x9E37_79B9_7F4A_7C15u64;
            for (waker, iteration) in from_a {
                waker.wake_by_ref();
                // Until A has awaited this task (bounded: A may have failed).
                let deadline = Instant::now() + Duration::from_secs(2);
                let mut polls = 0u32;
                while b_awaited.load(Ordering::Acquire) != iteration {
                    std::hint::spin_loop();
                    polls = polls.wrapping_add(1);
                    if polls % 256 == 0 && Instant::now() > deadline {
                        break;
                    }
                }
                spin(xorshift(&mut random) % SPREAD);
                drop(waker);
            }
        })
        .expect("start executor B");
    let started = Instant::now();
    let a = LocalExecutorBuilder::new(placement_a)
        .name("foreign-waker-a")
        .io_memory(1 << 20)
        .spawn(move || async move {
            let mut random = 0x2545_F491_4F6C_DD1Du64;
            let mut done = 0u64;
            for iteration in 0..ITERATIONS {
                if started.elapsed() > TIME_LIMIT {
                    break;
                }
                let to_b = to_b.clone();
                let mut handed = false;
                let mut task = glommio::spawn_local(futures_lite::future::poll_fn(move |cx| {
                    if handed {
                        Poll::Ready(iteration)
                    } else {
                        handed = true;
                        to_b.send((cx.waker().clone(), iteration))
                            .expect("executor B is gone");
                        Poll::Pending
                    }
                }));
                assert_eq!((&mut task).await, iteration);
                awaited.store(iteration, Ordering::Release);
                spin(xorshift(&mut random) % SPREAD);
                // JoinHandle::drop of a completed task: reads the count.
                drop(task);
                done += 1;
            }
            done
        })
        .expect("start executor A");
    let done = a.join().expect("executor A failed");
    b.join().expect("executor B failed");
    assert!(done > 0, "no iteration ran");
    println!("{done} iterations in {:?}", started.elapsed());
}

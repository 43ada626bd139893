//! Micro-benchmarks of the semaphore doorbell and of a contended MPMC
//! mailbox, beside crossbeam-queue's `ArrayQueue` in the same run.
//!
//! - `doorbell/post_no_waiter`: `post` then `try_wait` with nobody asleep
//!   (no system call).
//! - `doorbell/post_with_waiter`: `post` while a thread waits on the
//!   doorbell (a futex wake per post that finds it asleep).
//! - `mpmc/mailbox_2p2c` and `mpmc/array_queue_2p2c`: 2 producer and 2
//!   consumer threads move 100,000 8-byte messages through one hwlink
//!   mailbox (its MPMC ring in a hugepage or shm region) or one
//!   `ArrayQueue`, both of capacity 1024. Four threads share two CPUs
//!   here, so a thread that finds the queue full or empty yields.
//!
//! ```text
//! cargo bench -p hwlink-benches --bench mpmc
//! ```
// The workspace's clippy.toml steers `hwlink` to its loom-switchable atomics
// (its `sync` module); this crate is never model-checked and uses std's.
#![allow(clippy::disallowed_types)]

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use crossbeam_queue::ArrayQueue;
use hwlink::bench_support::Doorbell;
use hwlink::{Access, Buffering, MailboxBuilder, RecvError, SendError};
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const MESSAGES: u64 = 100_000;
const CAPACITY: u32 = 1024;

fn doorbell(c: &mut Criterion) {
    let mut group = c.benchmark_group("doorbell");
    group.throughput(Throughput::Elements(1));
    let bell = Doorbell::default();
    group.bench_function("post_no_waiter", |b| {
        b.iter(|| {
            bell.post();
            black_box(bell.try_wait())
        })
    });
    let stop = Arc::new(AtomicBool::new(false));
    let waiter = {
        let (bell, stop) = (bell.share(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                bell.wait(Some(Instant::now() + Duration::from_millis(10)));
            }
        })
    };
    group.bench_function("post_with_waiter", |b| b.iter(|| bell.post()));
    stop.store(true, Ordering::Relaxed);
    bell.post();
    waiter.join().unwrap();
    group.finish();
}

/// Runs `producers` + `consumers` threads moving MESSAGES messages; returns
/// the elapsed time from the start signal to the last message taken.
fn threads(
    producers: u64,
    consumers: u64,
    produce: impl Fn(u64) + Send + Sync + 'static,
    consume: impl Fn(&AtomicU64) + Send + Sync + 'static,
) -> Duration {
    let produce = Arc::new(produce);
    let consume = Arc::new(consume);
    let start = Arc::new(AtomicBool::new(false));
    let taken = Arc::new(AtomicU64::new(0));
    let mut handles = Vec::new();
    for p in 0..producers {
        let (produce, start) = (produce.clone(), start.clone());
        handles.push(std::thread::spawn(move || {
            while !start.load(Ordering::Acquire) {
                std::hint::spin_loop();
            }
            produce(p);
        }));
    }
    for _ in 0..consumers {
        let (consume, start, taken) = (consume.clone(), start.clone(), taken.clone());
        handles.push(std::thread::spawn(move || {
            while !start.load(Ordering::Acquire) {
                std::hint::spin_loop();
            }
            consume(&taken);
        }));
    }
    let t0 = Instant::now();
    start.store(true, Ordering::Release);
    for h in handles {
        h.join().unwrap();
    }
    t0.elapsed()
}

fn mpmc(c: &mut Criterion) {
    let mut group = c.benchmark_group("mpmc");
    group.throughput(Throughput::Elements(MESSAGES));
    group.sample_size(10);
    let name = format!("bench-mpmc-criterion-{}", std::process::id());
    let owner = MailboxBuilder::new()
        .name(&name)
        .buffering(Buffering::Bounded(CAPACITY))
        .slot_size(8)
        .create(Access::SendRecv)
        .expect("cannot create the mailbox");
    group.bench_function("mailbox_2p2c", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let (n1, n2) = (name.clone(), name.clone());
                total += threads(
                    2,
                    2,
                    move |p| {
                        let mut m = MailboxBuilder::new().open(&n1, Access::Send).unwrap();
                        for i in 0..MESSAGES / 2 {
                            let mut msg = (i << 1 | p).to_le_bytes();
                            loop {
                                match m.try_send(msg) {
                                    Ok(()) => break,
                                    Err(SendError::Full(back)) => {
                                        msg = back;
                                        std::thread::yield_now()
                                    }
                                    Err(e) => panic!("{e}"),
                                }
                            }
                        }
                    },
                    move |taken| {
                        let mut m = MailboxBuilder::new().open(&n2, Access::Recv).unwrap();
                        while taken.load(Ordering::Relaxed) < MESSAGES {
                            match m.try_recv_with(|b, _| black_box(b.get(0))) {
                                Ok(_) => {
                                    taken.fetch_add(1, Ordering::Relaxed);
                                }
                                Err(RecvError::Empty) => std::thread::yield_now(),
                                Err(e) => panic!("{e}"),
                            }
                        }
                    },
                );
            }
            total
        })
    });
    group.bench_function("array_queue_2p2c", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let q = Arc::new(ArrayQueue::<u64>::new(CAPACITY as usize));
                let q2 = q.clone();
                total += threads(
                    2,
                    2,
                    move |p| {
                        for i in 0..MESSAGES / 2 {
                            while q.push(i << 1 | p).is_err() {
                                std::thread::yield_now();
                            }
                        }
                    },
                    move |taken| {
                        while taken.load(Ordering::Relaxed) < MESSAGES {
                            match q2.pop() {
                                Some(v) => {
                                    black_box(v);
                                    taken.fetch_add(1, Ordering::Relaxed);
                                }
                                None => std::thread::yield_now(),
                            }
                        }
                    },
                );
            }
            total
        })
    });
    group.finish();
    owner.remove().expect("cannot remove the mailbox");
}

criterion_group!(benches, doorbell, mpmc);
criterion_main!(benches);

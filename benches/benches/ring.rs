//! In-process micro-benchmarks of one hwlink link: both ends in this
//! process, on this thread, so each figure is the cost of the operations
//! themselves (no cross-core traffic, no waiting). `crossbeam-queue`'s
//! `ArrayQueue` and `rtrb` push and pop the same 8 bytes for comparison.
//!
//! ```text
//! cargo bench -p hwlink-benches --bench ring
//! ```
// The workspace's clippy.toml steers `hwlink` to its loom-switchable atomics
// (its `sync` module); this crate is never model-checked and uses std's.
#![allow(clippy::disallowed_types)]

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use hwlink::{LinkBuilder, Receiver, Sender, WaitStrategy};
use std::hint::black_box;
use std::sync::atomic::{AtomicU32, Ordering};

/// Slots of every ring here; a multiple of the batch, so that batches of
/// `BATCH` never straddle a full ring.
const CAPACITY: u32 = 256;
/// Largest message of the hwlink link.
const SLOT_SIZE: u32 = 64;
/// Messages per batch in `push_pop_batch_32x8B`.
const BATCH: usize = 32;

static LINKS: AtomicU32 = AtomicU32::new(0);

/// A fresh link with a unique name, both ends waiting with `wait`: its
/// sender (the creator, which unlinks the region file when dropped) and its
/// receiver.
fn link(wait: WaitStrategy) -> (Sender, Receiver) {
    let name = format!(
        "bench-ring-{}-{}",
        std::process::id(),
        LINKS.fetch_add(1, Ordering::Relaxed)
    );
    let builder = LinkBuilder::new(name)
        .capacity(CAPACITY)
        .slot_size(SLOT_SIZE)
        .wait(wait);
    let tx = builder.create_sender().expect("cannot create the link");
    let rx = builder.open_receiver().expect("cannot open the link");
    (tx, rx)
}

fn hwlink_ring(c: &mut Criterion) {
    let mut group = c.benchmark_group("ring");
    // Default wait strategy (spin-then-park): created by the first benchmark
    // that runs, shared by the others.
    let mut ends: Option<(Sender, Receiver)> = None;
    let new_link = || link(WaitStrategy::default());
    let msg = [0x5au8; 8];

    group.throughput(Throughput::Elements(1));
    group.bench_function("push_pop_8B", |b| {
        let (tx, rx) = ends.get_or_insert_with(new_link);
        b.iter(|| {
            tx.try_send(black_box(&msg)).expect("try_send");
            rx.try_recv_with(|m| black_box(m.get(0)))
                .expect("try_recv_with")
        });
    });

    // The same with both ends busy-polling: neither publish nor release
    // then needs the fence and waiter check that a sleeping peer requires.
    let mut polling: Option<(Sender, Receiver)> = None;
    group.bench_function("push_pop_8B_busy_poll", |b| {
        let (tx, rx) = polling.get_or_insert_with(|| link(WaitStrategy::BusyPoll));
        b.iter(|| {
            tx.try_send(black_box(&msg)).expect("try_send");
            rx.try_recv_with(|m| black_box(m.get(0)))
                .expect("try_recv_with")
        });
    });

    group.throughput(Throughput::Elements(BATCH as u64));
    group.bench_function("push_pop_batch_32x8B", |b| {
        let (tx, rx) = ends.get_or_insert_with(new_link);
        b.iter(|| {
            let mut sent = 0;
            while sent < BATCH {
                let mut batch = tx.write_batch(BATCH - sent).expect("write_batch");
                for _ in 0..batch.remaining() {
                    batch.push(black_box(&msg)).expect("batch push");
                }
                sent += batch.commit();
            }
            let mut got = 0;
            let mut sum = 0u8;
            while got < BATCH {
                let batch = rx.read_batch(BATCH - got).expect("read_batch");
                for m in batch.iter() {
                    sum = sum.wrapping_add(m.expect("message").get(0).unwrap_or(0));
                }
                got += batch.len();
                batch.release();
            }
            sum
        });
    });

    group.throughput(Throughput::Elements(1));
    group.bench_function("reserve_commit_64B", |b| {
        let (tx, rx) = ends.get_or_insert_with(new_link);
        let payload = [0xa5u8; 64];
        b.iter(|| {
            let mut slot = tx.reserve(64).expect("reserve");
            slot.copy_from(black_box(&payload));
            slot.commit();
            let slot = rx.peek().expect("peek");
            let first = black_box(slot.bytes().get(0));
            slot.release();
            first
        });
    });
    group.finish();
}

fn baselines(c: &mut Criterion) {
    let mut group = c.benchmark_group("ring_baseline");
    let msg = [0x5au8; 8];
    group.throughput(Throughput::Elements(1));

    group.bench_function("crossbeam_array_queue_push_pop_8B", |b| {
        let q = crossbeam_queue::ArrayQueue::<[u8; 8]>::new(CAPACITY as usize);
        b.iter(|| {
            q.push(black_box(msg)).expect("push");
            q.pop().expect("pop")
        });
    });

    group.bench_function("rtrb_push_pop_8B", |b| {
        let (mut p, mut c) = rtrb::RingBuffer::<[u8; 8]>::new(CAPACITY as usize);
        b.iter(|| {
            p.push(black_box(msg)).expect("push");
            c.pop().expect("pop")
        });
    });
    group.finish();
}

criterion_group!(benches, hwlink_ring, baselines);
criterion_main!(benches);

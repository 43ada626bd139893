//! Tests of the unbounded segment chain over heap segments: growth, the
//! byte limit, retirement and exactly-once delivery with threads (also under
//! Miri); segments made ahead of need (offered, linked, raced, thrown away,
//! taken back), with the books of `bytes_in_use` checked against the
//! segments that exist; and loom models of producers racing to link a new
//! segment while a consumer drains, and of offers racing a full segment.

#[cfg(not(loom))]
use crate::ahead::{Runner, Spares};
use crate::chain::{self, Chain, Segment, SegmentStore, Size, StoreError, CLOSED};
#[cfg(not(loom))]
use crate::error::{RecvError, SendError};
use crate::mpmc::{MpmcGeometry, MpmcMem, MpmcRing};
use crate::shm::{ShmCells, ShmSlice, ShmSliceMut};
use crate::sync::AtomicU64;
#[cfg(not(loom))]
use crate::sync::Ordering;
use std::collections::HashMap;
use std::sync::Arc;

#[cfg(loom)]
use loom::sync::Mutex;
#[cfg(not(loom))]
use std::sync::Mutex;

/// The owner tag consumers hold slots under in these tests.
const CONSUMER: u32 = 40;

/// Payload bytes per slot in these tests.
const SLOT: usize = 8;

/// A segment's ring words and slots on the heap.
pub(crate) struct SegMem {
    enq: AtomicU64,
    deq: AtomicU64,
    seq: Vec<AtomicU64>,
    meta: Vec<AtomicU64>,
    /// Payload cells (loom cells under loom: loom checks that the ring
    /// protocol orders every access).
    payload: ShmCells,
}

/// One MPMC ring's words and payload cells on the heap (loom cells under
/// loom); also used by the MPMC ring's own loom models.
#[derive(Clone)]
pub(crate) struct MemRef(Arc<SegMem>);

/// A zero-filled ring of `cap` slots: a new, empty ring (hw/SPEC.md §9).
pub(crate) fn cell_mem(cap: usize) -> MemRef {
    MemRef(Arc::new(SegMem {
        enq: AtomicU64::new(0),
        deq: AtomicU64::new(0),
        seq: (0..cap).map(|_| AtomicU64::new(0)).collect(),
        meta: (0..cap).map(|_| AtomicU64::new(0)).collect(),
        payload: ShmCells::new(cap, SLOT),
    }))
}

impl MpmcMem for MemRef {
    fn enqueue(&self) -> &AtomicU64 {
        &self.0.enq
    }
    fn dequeue(&self) -> &AtomicU64 {
        &self.0.deq
    }
    fn seq(&self, index: u32) -> &AtomicU64 {
        &self.0.seq[index as usize]
    }
    fn meta(&self, index: u32) -> &AtomicU64 {
        &self.0.meta[index as usize]
    }
    fn with_payload_mut<R>(&self, index: u32, f: impl FnOnce(ShmSliceMut<'_>) -> R) -> R {
        self.0.payload.with_mut(index as usize, f)
    }
    fn with_payload<R>(&self, index: u32, f: impl FnOnce(ShmSlice<'_>) -> R) -> R {
        self.0.payload.with(index as usize, f)
    }
}

struct HeapSeg {
    ring: MpmcRing<MemRef>,
    next: AtomicU64,
    number: u64,
}

impl Segment for HeapSeg {
    type Mem = MemRef;
    fn ring(&self) -> &MpmcRing<MemRef> {
        &self.ring
    }
    fn next_segment(&self) -> &AtomicU64 {
        &self.next
    }
    fn number(&self) -> u64 {
        self.number
    }
    fn bytes(&self) -> u64 {
        u64::from(self.ring.geometry().capacity) * 64
    }
}

fn new_segment(number: u64, geometry: &MpmcGeometry) -> Arc<HeapSeg> {
    let ring = MpmcRing::new(cell_mem(geometry.capacity as usize), *geometry);
    Arc::new(HeapSeg {
        ring,
        next: AtomicU64::new(0),
        number,
    })
}

/// Chain state and segments shared by the handles of one queue.
struct Shared {
    bytes: AtomicU64,
    last: AtomicU64,
    head: AtomicU64,
    tail: AtomicU64,
    spare: AtomicU64,
    limit: u64,
    segments: Mutex<HashMap<u64, Arc<HeapSeg>>>,
}

#[derive(Clone)]
struct HeapStore(Arc<Shared>);

impl SegmentStore for HeapStore {
    type Seg = HeapSeg;
    fn bytes_in_use(&self) -> &AtomicU64 {
        &self.0.bytes
    }
    fn last_segment(&self) -> &AtomicU64 {
        &self.0.last
    }
    fn head_segment(&self) -> &AtomicU64 {
        &self.0.head
    }
    fn tail_segment(&self) -> &AtomicU64 {
        &self.0.tail
    }
    fn spare_segment(&self) -> &AtomicU64 {
        &self.0.spare
    }
    fn byte_limit(&self) -> u64 {
        self.0.limit
    }
    fn estimate(&self, geometry: &MpmcGeometry) -> u64 {
        u64::from(geometry.capacity) * 64
    }
    fn open(&self, id: u64) -> Result<Option<Arc<HeapSeg>>, StoreError> {
        Ok(self.0.segments.lock().unwrap().get(&id).cloned())
    }
    fn create(&self, id: u64, geometry: &MpmcGeometry) -> Result<Arc<HeapSeg>, String> {
        let seg = new_segment(id, geometry);
        self.0.segments.lock().unwrap().insert(id, seg.clone());
        Ok(seg)
    }
    fn remove(&self, id: u64) {
        self.0.segments.lock().unwrap().remove(&id);
    }
}

fn geometry(capacity: u32) -> MpmcGeometry {
    MpmcGeometry {
        capacity,
        slot_size: SLOT as u32,
        stride: 64,
        solo: false,
    }
}

/// The geometry of a solo chain's segments (one producer, one consumer:
/// a direction of a domain link, SPEC §9, "Solo rings").
fn solo(capacity: u32) -> MpmcGeometry {
    MpmcGeometry {
        solo: true,
        ..geometry(capacity)
    }
}

/// A queue whose first segment has `capacity` slots, limited to `limit`
/// bytes (segment bytes are capacity * 64).
fn queue(capacity: u32, limit: u64) -> HeapStore {
    queue_of(geometry(capacity), limit)
}

/// A queue whose first segment has geometry `first`.
fn queue_of(first: MpmcGeometry, limit: u64) -> HeapStore {
    let first = new_segment(0, &first);
    HeapStore(Arc::new(Shared {
        bytes: AtomicU64::new(first.bytes()),
        last: AtomicU64::new(0),
        head: AtomicU64::new(0),
        tail: AtomicU64::new(0),
        spare: AtomicU64::new(0),
        limit,
        segments: Mutex::new(HashMap::from([(0, first)])),
    }))
}

fn handle(store: &HeapStore, capacity: u32) -> Chain<HeapStore> {
    handle_of(store, geometry(capacity))
}

fn handle_of(store: &HeapStore, base: MpmcGeometry) -> Chain<HeapStore> {
    Chain::new(store.clone(), base)
        .map_err(|e| format!("{e:?}"))
        .unwrap()
}

fn msg(p: u8, i: u32) -> [u8; 5] {
    let b = i.to_le_bytes();
    [p, b[0], b[1], b[2], b[3]]
}

/// A handle whose next segments are made ahead of need by `runner`.
#[cfg(not(loom))]
fn ahead_handle(store: &HeapStore, capacity: u32, runner: Runner) -> Chain<HeapStore> {
    let mut chain = handle(store, capacity);
    chain.prepare_ahead(Some(Spares::new(runner)));
    chain
}

/// Makes a segment ahead of need, after a full segment of `after_cap` slots,
/// as a preparation does.
#[cfg(not(loom))]
fn make(store: &HeapStore, after_cap: u32) -> Arc<HeapSeg> {
    chain::make_segment(store, &geometry(2), Size::After(after_cap), 0)
        .map_err(|e| format!("{e:?}"))
        .unwrap()
}

/// The books balance: `bytes_in_use` is the bytes of the segments that
/// exist, and each of them is segment 0, linked into the chain (walking
/// from the head) or the one offered in `spare_segment`: nothing made is
/// lost track of, nothing given back twice.
fn assert_books(store: &HeapStore) {
    use crate::sync::Ordering::Relaxed;
    let segs = store.0.segments.lock().unwrap();
    let total: u64 = segs.values().map(|s| s.bytes()).sum();
    assert_eq!(store.0.bytes.load(Relaxed), total, "bytes_in_use");
    let mut linked = vec![0];
    let mut id = store.0.head.load(Relaxed);
    while let Some(s) = segs.get(&id) {
        linked.push(id);
        match s.next.load(Relaxed) {
            0 | CLOSED => break,
            next => id = next,
        }
    }
    let spare = store.0.spare.load(Relaxed);
    for id in segs.keys() {
        assert!(
            linked.contains(id) || *id == spare,
            "segment {id} is neither linked nor offered (linked {linked:?}, offered {spare})"
        );
    }
    if spare != 0 {
        assert!(segs.contains_key(&spare), "offered segment {spare} is gone");
        assert!(
            !linked.contains(&spare),
            "offered segment {spare} is linked"
        );
    }
}

#[cfg(not(loom))]
mod heap {
    use super::*;

    /// A receiver that polls an empty chain many times (a worker waiting
    /// for jobs) never trips the walk limit: only steps of one walk count.
    #[test]
    fn polling_an_empty_chain_for_long_is_not_a_corrupt_walk() {
        let store = queue(2, u64::MAX);
        let mut tx = handle(&store, 2);
        let mut rx = handle(&store, 2);
        let polls = if cfg!(miri) { 100 } else { 10_000 };
        for round in 0..3u32 {
            for _ in 0..polls {
                assert_eq!(
                    rx.try_pop_with(CONSUMER, &(), false, |b, _| b.to_vec()),
                    Err(RecvError::Empty)
                );
            }
            tx.try_push(&msg(1, round), 1, &()).unwrap();
            assert_eq!(
                rx.try_pop_with(CONSUMER, &(), false, |b, _| b.to_vec()),
                Ok(msg(1, round).to_vec())
            );
        }
    }

    #[test]
    fn grows_past_full_segments_then_retires_them() {
        let store = queue(2, u64::MAX);
        let mut tx = handle(&store, 2);
        let mut rx = handle(&store, 2);
        let n = if cfg!(miri) { 40 } else { 1000 };
        for i in 0..n {
            tx.try_push(&msg(1, i), 1, &()).unwrap();
        }
        let segments = store.0.segments.lock().unwrap().len();
        assert!(segments > 3, "only {segments} segments for {n} messages");
        assert_eq!(rx.len(), u64::from(n));
        for i in 0..n {
            assert_eq!(
                rx.try_pop_with(CONSUMER, &(), false, |b, s| (b.to_vec(), s))
                    .unwrap(),
                (msg(1, i).to_vec(), 1)
            );
        }
        assert_eq!(
            rx.try_pop_with(CONSUMER, &(), false, |b, _| b.to_vec()),
            Err(RecvError::Empty)
        );
        // Every drained segment was retired: only the newest is left
        // besides segment 0 (which lives as long as the mailbox).
        let left = store.0.segments.lock().unwrap().len();
        assert!(left <= 2, "{left} segments left");
        let tail_bytes = {
            let segs = store.0.segments.lock().unwrap();
            segs.values().map(|s| s.bytes()).sum::<u64>()
        };
        assert_eq!(store.0.bytes.load(Ordering::Relaxed), tail_bytes);
    }

    #[test]
    fn byte_limit_refuses_then_recovers_after_draining() {
        // Segment 0: 2 slots (128 B); segment 1: 4 slots (256 B).
        let store = queue(2, 128 + 256);
        let mut tx = handle(&store, 2);
        let mut rx = handle(&store, 2);
        for i in 0..6 {
            tx.try_push(&msg(1, i), 1, &()).unwrap();
        }
        match tx.try_push(&msg(1, 6), 1, &()) {
            Err(SendError::MemoryLimit { limit, .. }) => assert_eq!(limit, 384),
            other => panic!("past the limit: {other:?}"),
        }
        assert_eq!(store.0.bytes.load(Ordering::Relaxed), 384);
        for i in 0..6 {
            assert_eq!(
                rx.try_pop_with(CONSUMER, &(), false, |b, _| b.to_vec())
                    .unwrap(),
                msg(1, i)
            );
        }
        tx.try_push(&msg(1, 6), 1, &()).unwrap();
        assert_eq!(
            rx.try_pop_with(CONSUMER, &(), false, |b, _| b.to_vec())
                .unwrap(),
            msg(1, 6)
        );
    }

    /// A corrupt enqueue position where nothing is published: a blocking
    /// receive's first attempt and a waiter's hot polls leave that word
    /// alone and find the queue empty; a full look (a waiter's clock tick,
    /// any attempt after a wait) reports it, so a blocking receive ends
    /// with the error instead of being woken again and again.
    #[test]
    fn a_corrupt_enqueue_position_is_found_by_a_thorough_look() {
        let store = queue(2, u64::MAX);
        let mut rx = handle(&store, 2);
        let first = store.0.segments.lock().unwrap()[&0].clone();
        first
            .ring
            .mem()
            .enqueue()
            .store(u64::MAX >> 1, Ordering::Relaxed);
        assert!(!rx.head_in(&(), false, false));
        assert!(
            rx.head_in(&(), false, true),
            "a full look says a receive can act"
        );
        let mut f = Some(|_: ShmSlice<'_>, _: u32| ());
        assert_eq!(
            rx.try_pop(CONSUMER, &(), false, false, &mut f),
            Err(RecvError::Empty)
        );
        assert!(matches!(
            rx.try_pop(CONSUMER, &(), false, true, &mut f),
            Err(RecvError::Corrupt(_))
        ));
    }

    #[test]
    fn corrupt_links_are_errors() {
        let store = queue(2, u64::MAX);
        let mut tx = handle(&store, 2);
        let mut rx = handle(&store, 2);
        tx.try_push(&msg(1, 0), 1, &()).unwrap();
        tx.try_push(&msg(1, 1), 1, &()).unwrap();
        // Seal segment 0 with a link to a segment never handed out.
        let first = store.0.segments.lock().unwrap()[&0].clone();
        first.next.store(99, Ordering::Relaxed);
        first.ring.seal();
        assert!(matches!(
            tx.try_push(&msg(1, 2), 1, &()),
            Err(SendError::Corrupt(_))
        ));
        rx.try_pop_with(CONSUMER, &(), false, |_, _| ()).unwrap();
        rx.try_pop_with(CONSUMER, &(), false, |_, _| ()).unwrap();
        assert!(matches!(
            rx.try_pop_with(CONSUMER, &(), false, |_, _| ()),
            Err(RecvError::Corrupt(_))
        ));
        // Sealed and drained with no successor is not corrupt: it is how
        // a consumer gives a segment back; the receive links a new one.
        first.next.store(0, Ordering::Relaxed);
        assert_eq!(
            rx.try_pop_with(CONSUMER, &(), false, |_, _| ()),
            Err(RecvError::Empty)
        );
        let second = store.0.segments.lock().unwrap()[&1].clone();
        assert_eq!(first.next.load(Ordering::Relaxed), 1);
        // A link backwards (to itself).
        second.next.store(1, Ordering::Relaxed);
        second.ring.seal();
        assert!(matches!(
            rx.try_pop_with(CONSUMER, &(), false, |_, _| ()),
            Err(RecvError::Corrupt(_))
        ));
    }

    /// A solo chain (one producer, one consumer) grows through full
    /// segments, gives a drained large one back by linking a small one,
    /// and refuses a segment of the other protocol.
    #[test]
    fn solo_chain_grows_gives_back_and_refuses_a_foreign_segment() {
        let store = queue_of(solo(2), u64::MAX);
        let mut tx = handle_of(&store, solo(2));
        let mut rx = handle_of(&store, solo(2));
        for i in 0..100 {
            tx.try_push(&msg(1, i), 1, &()).unwrap();
        }
        for i in 0..100 {
            let got = rx.try_pop_with(CONSUMER, &(), false, |b, _| b.to_vec());
            assert_eq!(got.unwrap(), msg(1, i));
        }
        assert_eq!(
            rx.try_pop_with(CONSUMER, &(), false, |b, _| b.to_vec()),
            Err(RecvError::Empty)
        );
        assert_books(&store);
        // Segment 0 and one small segment: 2 + 2 slots of 64 bytes.
        assert_eq!(store.0.bytes.load(Ordering::Relaxed), 4 * 64);
        for seg in store.0.segments.lock().unwrap().values() {
            assert!(seg.ring.geometry().solo, "segment {}", seg.number);
        }
        tx.try_push(&msg(2, 0), 2, &()).unwrap();
        assert_eq!(
            rx.try_pop_with(CONSUMER, &(), false, |b, _| b.to_vec())
                .unwrap(),
            msg(2, 0)
        );

        // A multi-producer segment linked into a solo chain (as a hostile
        // or mismatched peer would make it): an error, not a protocol mix.
        let store = queue_of(solo(2), u64::MAX);
        let mut tx = handle_of(&store, solo(2));
        let mut rx = handle_of(&store, solo(2));
        tx.try_push(&msg(1, 0), 1, &()).unwrap();
        let first = store.0.segments.lock().unwrap()[&0].clone();
        store
            .0
            .segments
            .lock()
            .unwrap()
            .insert(1, new_segment(1, &geometry(2)));
        store.0.last.store(1, Ordering::Relaxed);
        first.next.store(1, Ordering::Relaxed);
        first.ring.seal();
        rx.try_pop_with(CONSUMER, &(), false, |_, _| ()).unwrap();
        assert!(matches!(
            rx.try_pop_with(CONSUMER, &(), false, |_, _| ()),
            Err(RecvError::Corrupt(c)) if c.what.contains("solo")
        ));
        assert!(matches!(
            tx.try_push(&msg(1, 1), 1, &()),
            Err(SendError::Corrupt(c)) if c.what.contains("solo")
        ));
    }

    /// One producer and one consumer thread through a solo chain that
    /// keeps growing, giving back and retiring: each message exactly once,
    /// in order.
    #[test]
    fn solo_threads_exactly_once_in_order_across_segments() {
        let per = if cfg!(miri) { 60u32 } else { 200_000u32 };
        let store = queue_of(solo(2), u64::MAX);
        let producer = {
            let store = store.clone();
            std::thread::spawn(move || {
                let mut tx = handle_of(&store, solo(2));
                for i in 0..per {
                    tx.try_push(&msg(1, i), 1, &()).unwrap();
                    if i % 1000 == 999 {
                        // Let the consumer catch up now and then, so that
                        // large segments drain and are given back.
                        std::thread::yield_now();
                    }
                }
            })
        };
        let mut rx = handle_of(&store, solo(2));
        let mut next = 0u32;
        while next < per {
            match rx.try_pop_with(CONSUMER, &(), false, |b, s| (b.to_vec(), s)) {
                Ok((b, s)) => {
                    assert_eq!(s, 1);
                    assert_eq!(b, msg(1, next), "out of order, lost or duplicated");
                    next += 1;
                }
                Err(RecvError::Empty) => std::thread::yield_now(),
                Err(e) => panic!("{e:?}"),
            }
        }
        producer.join().unwrap();
        assert_eq!(
            rx.try_pop_with(CONSUMER, &(), false, |b, _| b.to_vec()),
            Err(RecvError::Empty)
        );
        assert_books(&store);
    }

    /// A segment sealed and drained with no successor holds nothing and
    /// leads nowhere: not "ready" for a waiter, also when the receive
    /// cannot link the small successor (here, a full byte limit), so that a
    /// receiver whose producer died is not told "ready" for ever. Producers
    /// link one themselves, and the receive then moves on.
    #[test]
    fn a_drained_segment_with_no_successor_is_not_ready() {
        let store = queue_of(solo(2), 256);
        let mut tx = handle_of(&store, solo(2));
        let mut rx = handle_of(&store, solo(2));
        tx.try_push(&msg(1, 0), 1, &()).unwrap();
        assert_eq!(
            rx.try_pop_with(CONSUMER, &(), false, |b, _| b.to_vec())
                .unwrap(),
            msg(1, 0)
        );
        let first = store.0.segments.lock().unwrap()[&0].clone();
        first.ring.seal();
        // No room for a successor (the books say the limit is used up):
        // the receive cannot link one.
        store.0.bytes.store(1 << 40, Ordering::Relaxed);
        assert_eq!(
            rx.try_pop_with(CONSUMER, &(), false, |b, _| b.to_vec()),
            Err(RecvError::Empty)
        );
        assert!(
            !rx.head_in(&(), false, true),
            "nothing to take, nowhere to go"
        );
        assert!(rx.head_in(&(), true, true), "a removed queue gets closed");
        // With room, the producer links the successor and the receive
        // follows it.
        store.0.bytes.store(2 * 64, Ordering::Relaxed);
        tx.try_push(&msg(1, 1), 1, &()).unwrap();
        assert!(rx.head_in(&(), false, true));
        assert_eq!(
            rx.try_pop_with(CONSUMER, &(), false, |b, _| b.to_vec())
                .unwrap(),
            msg(1, 1)
        );
    }

    /// A removed queue: receivers drain every segment, then close the
    /// chain; a send after that fails, and nothing accepted is lost.
    #[test]
    fn removal_drains_then_closes() {
        let store = queue(2, u64::MAX);
        let mut tx = handle(&store, 2);
        let mut rx = handle(&store, 2);
        for i in 0..7 {
            tx.try_push(&msg(1, i), 1, &()).unwrap();
        }
        for i in 0..7 {
            let got = rx.try_pop_with(CONSUMER, &(), true, |b, _| b.to_vec());
            assert_eq!(got.unwrap(), msg(1, i));
        }
        assert_eq!(
            rx.try_pop_with(CONSUMER, &(), true, |b, _| b.to_vec()),
            Err(RecvError::Disconnected)
        );
        assert!(matches!(
            tx.try_push(&msg(1, 7), 1, &()),
            Err(SendError::Disconnected(()))
        ));
        assert_eq!(
            rx.try_pop_with(CONSUMER, &(), true, |b, _| b.to_vec()),
            Err(RecvError::Disconnected)
        );
    }

    /// A dead producer's hole in a segment is stepped over; the chain goes
    /// on past it.
    #[test]
    fn holes_are_stepped_over_across_segments() {
        let store = queue(2, u64::MAX);
        let mut tx = handle(&store, 2);
        let mut rx = handle(&store, 2);
        let first = store.0.segments.lock().unwrap()[&0].clone();
        first.ring.claim_and_abandon(3).unwrap();
        for i in 0..5 {
            tx.try_push(&msg(1, i), 1, &()).unwrap();
        }
        let dead = |o: u32| o == 3;
        for i in 0..5 {
            let got = rx.try_pop_with(CONSUMER, &dead, false, |b, _| b.to_vec());
            assert_eq!(got.unwrap(), msg(1, i));
        }
    }

    /// Draining a large newest segment gives it back: a small one takes
    /// its place and the bytes in use drop.
    #[test]
    fn a_drained_queue_gives_back_its_large_segment() {
        let store = queue(2, u64::MAX);
        let mut tx = handle(&store, 2);
        let mut rx = handle(&store, 2);
        for i in 0..100 {
            tx.try_push(&msg(1, i), 1, &()).unwrap();
        }
        let peak = store.0.bytes.load(Ordering::Relaxed);
        for i in 0..100 {
            let got = rx.try_pop_with(CONSUMER, &(), false, |b, _| b.to_vec());
            assert_eq!(got.unwrap(), msg(1, i));
        }
        assert_eq!(
            rx.try_pop_with(CONSUMER, &(), false, |b, _| b.to_vec()),
            Err(RecvError::Empty)
        );
        let now = store.0.bytes.load(Ordering::Relaxed);
        // Segment 0 and one small segment: 2 + 2 slots of 64 bytes.
        assert_eq!(now, 4 * 64, "peak {peak}");
        tx.try_push(&msg(2, 0), 2, &()).unwrap();
        assert_eq!(
            rx.try_pop_with(CONSUMER, &(), false, |b, _| b.to_vec())
                .unwrap(),
            msg(2, 0)
        );
    }

    /// The byte limit bounds the memory of all segments, and growth uses
    /// what is left of it: the last segment shrinks to fit.
    #[test]
    fn growth_fills_the_byte_limit() {
        // Segment 0: 2 slots (128 B). Limit 128 + 256 + 128: segment 1 gets
        // 4 slots, segment 2 (which would want 8) gets the 2 that fit.
        let store = queue(2, 128 + 256 + 128);
        let mut tx = handle(&store, 2);
        for i in 0..8 {
            tx.try_push(&msg(1, i), 1, &()).unwrap();
        }
        assert!(matches!(
            tx.try_push(&msg(1, 8), 1, &()),
            Err(SendError::MemoryLimit { limit: 512, .. })
        ));
        assert_eq!(store.0.bytes.load(Ordering::Relaxed), 512);
    }

    /// Producers and consumers on threads through a chain that keeps
    /// growing and retiring: each message exactly once, in order per
    /// producer.
    #[test]
    fn threads_exactly_once_across_segments() {
        let (producers, consumers, per) = if cfg!(miri) {
            (2, 2, 30u32)
        } else {
            (3, 3, 20_000u32)
        };
        let store = queue(2, u64::MAX);
        let taken = Arc::new(AtomicU64::new(0));
        let total = u64::from(per) * producers as u64;
        let mut threads = Vec::new();
        for p in 0..producers {
            let store = store.clone();
            threads.push(std::thread::spawn(move || {
                let mut tx = handle(&store, 2);
                for i in 0..per {
                    tx.try_push(&msg(p, i), u32::from(p), &()).unwrap();
                }
                Vec::new()
            }));
        }
        for _ in 0..consumers {
            let store = store.clone();
            let taken = taken.clone();
            threads.push(std::thread::spawn(move || {
                let mut rx = handle(&store, 2);
                let mut last = vec![None::<u32>; producers as usize];
                let mut got = Vec::new();
                while taken.load(Ordering::Relaxed) < total {
                    match rx.try_pop_with(CONSUMER, &(), false, |b, s| (b.to_vec(), s)) {
                        Ok((b, s)) => {
                            taken.fetch_add(1, Ordering::Relaxed);
                            assert_eq!(b[0] as u32, s);
                            let i = u32::from_le_bytes(b[1..5].try_into().unwrap());
                            let prev = last[s as usize].replace(i);
                            assert!(prev.map_or(true, |p| p < i), "out of order");
                            got.push((s, i));
                        }
                        Err(RecvError::Empty) => std::thread::yield_now(),
                        Err(e) => panic!("{e:?}"),
                    }
                }
                got
            }));
        }
        let mut all: Vec<(u32, u32)> = threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect();
        all.sort_unstable();
        let want: Vec<(u32, u32)> = (0..u32::from(producers))
            .flat_map(|p| (0..per).map(move |i| (p, i)))
            .collect();
        assert_eq!(all, want);
    }

    /// Once a producer pushes into the newest segment its successor is made
    /// and offered; the send that fills the segment links the offer: no
    /// segment is made inside a send. Dropping the handle takes back the
    /// offer nobody took.
    #[test]
    fn segments_are_made_ahead_and_linked_by_the_send_that_fills() {
        let store = queue(2, u64::MAX);
        let mut tx = ahead_handle(&store, 2, Runner::Inline);
        let mut rx = handle(&store, 2);
        let n = if cfg!(miri) { 60 } else { 1000 };
        for i in 0..n {
            tx.try_push(&msg(1, i), 1, &()).unwrap();
            assert_books(&store);
        }
        // Segments of 2, 4, 8, ... slots: the newest holds message n.
        let tail = store.0.tail.load(Ordering::Relaxed);
        let held: u32 = (0..=tail).map(|k| 2u32 << k).sum();
        assert!(held >= n && held - (2 << tail) < n, "tail {tail} for {n}");
        let st = tx.stats();
        assert_eq!((st.linked_ahead, st.linked_inline, st.waited), (tail, 0, 0));
        // One more is offered already: the newest was pushed into.
        assert_eq!((st.prepared, st.discarded), (tail + 1, 0));
        assert_eq!(store.0.spare.load(Ordering::Relaxed), tail + 1);
        tx.stop_ahead();
        assert_eq!(tx.stats().discarded, 1);
        assert_eq!(store.0.spare.load(Ordering::Relaxed), 0);
        assert!(!store.0.segments.lock().unwrap().contains_key(&(tail + 1)));
        assert_books(&store);
        for i in 0..n {
            let got = rx.try_pop_with(CONSUMER, &(), false, |b, _| b.to_vec());
            assert_eq!(got.unwrap(), msg(1, i));
        }
        assert_books(&store);
    }

    /// A handle dropped with its offer untaken removes it and gives its
    /// bytes back.
    #[test]
    fn a_dropped_handle_takes_back_its_offer() {
        let store = queue(2, u64::MAX);
        let mut tx = ahead_handle(&store, 2, Runner::Inline);
        tx.try_push(&msg(1, 0), 1, &()).unwrap();
        assert_eq!(store.0.spare.load(Ordering::Relaxed), 1);
        assert_eq!(store.0.bytes.load(Ordering::Relaxed), (2 + 4) * 64);
        drop(tx);
        assert_eq!(store.0.spare.load(Ordering::Relaxed), 0);
        assert_eq!(store.0.bytes.load(Ordering::Relaxed), 2 * 64);
        assert_eq!(store.0.segments.lock().unwrap().len(), 1);
    }

    /// Offers count against the byte limit like any segment: the queue
    /// fills the same limit, the last offer shrinks to fit, and none is
    /// made past it.
    #[test]
    fn offers_never_take_the_queue_past_its_limit() {
        // As `growth_fills_the_byte_limit`: 2 + 4 + 2 slots fit.
        let store = queue(2, 128 + 256 + 128);
        let mut tx = ahead_handle(&store, 2, Runner::Inline);
        for i in 0..8 {
            tx.try_push(&msg(1, i), 1, &()).unwrap();
            assert!(store.0.bytes.load(Ordering::Relaxed) <= 512);
            assert_books(&store);
        }
        assert!(matches!(
            tx.try_push(&msg(1, 8), 1, &()),
            Err(SendError::MemoryLimit { limit: 512, .. })
        ));
        assert_eq!(store.0.bytes.load(Ordering::Relaxed), 512);
        let st = tx.stats();
        assert_eq!((st.linked_ahead, st.linked_inline, st.prepared), (2, 0, 2));
        assert_eq!(store.0.spare.load(Ordering::Relaxed), 0);
        assert_books(&store);
    }

    /// Two preparations race to offer: one wins, the loser's segment is
    /// removed and its bytes given back; a send (of a handle that makes
    /// nothing ahead itself) links the winner's.
    #[test]
    fn racing_offers_one_wins_the_loser_is_removed() {
        let store = queue(2, u64::MAX);
        let (a, b) = (make(&store, 2), make(&store, 2));
        assert!(chain::offer(&store, &a));
        assert!(!chain::offer(&store, &b));
        chain::discard(&store, &b);
        assert_eq!(store.0.spare.load(Ordering::Relaxed), a.number());
        assert!(!store.0.segments.lock().unwrap().contains_key(&b.number()));
        assert_books(&store);
        let mut tx = handle(&store, 2);
        for i in 0..3 {
            tx.try_push(&msg(1, i), 1, &()).unwrap();
        }
        assert_eq!((tx.stats().linked_ahead, tx.stats().linked_inline), (1, 0));
        assert_eq!(store.0.tail.load(Ordering::Relaxed), a.number());
        assert_eq!(store.0.spare.load(Ordering::Relaxed), 0);
        assert_books(&store);
    }

    /// An offer that can no longer follow the chain (a process that knows
    /// nothing of offers linked a segment numbered above it) is not linked
    /// behind the newer segment; the next preparation throws it away and
    /// offers a new one.
    #[test]
    fn an_offer_that_can_no_longer_follow_is_thrown_away() {
        let store = queue(2, u64::MAX);
        let stale = make(&store, 2);
        assert!(chain::offer(&store, &stale));
        // Segment 2, linked after segment 0 the old way.
        let newer = make(&store, 2);
        let first = store.0.segments.lock().unwrap()[&0].clone();
        first.next.store(newer.number(), Ordering::Relaxed);
        store.0.tail.store(newer.number(), Ordering::Relaxed);
        first.ring.seal();
        assert_books(&store);
        // Fill segment 2 (4 slots) with a handle that makes nothing ahead:
        // the stale offer is not linked; the send makes segment 3 itself.
        let mut old = handle(&store, 2);
        for i in 0..5 {
            old.try_push(&msg(1, i), 1, &()).unwrap();
        }
        assert_eq!(
            (old.stats().linked_ahead, old.stats().linked_inline),
            (0, 1)
        );
        assert_eq!(store.0.spare.load(Ordering::Relaxed), stale.number());
        // A preparation after segment 3 throws the stale offer away.
        let mut tx = ahead_handle(&store, 2, Runner::Inline);
        tx.try_push(&msg(2, 0), 2, &()).unwrap();
        tx.try_push(&msg(2, 1), 2, &()).unwrap();
        let st = tx.stats();
        assert_eq!((st.prepared, st.discarded), (1, 1));
        assert!(!store
            .0
            .segments
            .lock()
            .unwrap()
            .contains_key(&stale.number()));
        assert!(store.0.spare.load(Ordering::Relaxed) > 3);
        assert_books(&store);
    }

    /// Giving back a drained large segment also gives back the offer made
    /// while the queue grew (it could only follow the large one).
    #[test]
    fn giving_back_a_drained_segment_throws_away_the_offer_too() {
        let store = queue(2, u64::MAX);
        let mut tx = ahead_handle(&store, 2, Runner::Inline);
        let mut rx = handle(&store, 2);
        for i in 0..100 {
            tx.try_push(&msg(1, i), 1, &()).unwrap();
        }
        assert_ne!(store.0.spare.load(Ordering::Relaxed), 0);
        for i in 0..100 {
            let got = rx.try_pop_with(CONSUMER, &(), false, |b, _| b.to_vec());
            assert_eq!(got.unwrap(), msg(1, i));
        }
        assert_eq!(
            rx.try_pop_with(CONSUMER, &(), false, |b, _| b.to_vec()),
            Err(RecvError::Empty)
        );
        // Segment 0 and one small segment: 2 + 2 slots of 64 bytes.
        assert_eq!(store.0.bytes.load(Ordering::Relaxed), 4 * 64);
        assert_eq!(store.0.spare.load(Ordering::Relaxed), 0);
        assert_books(&store);
        tx.try_push(&msg(2, 0), 2, &()).unwrap();
        assert_eq!(
            rx.try_pop_with(CONSUMER, &(), false, |b, _| b.to_vec())
                .unwrap(),
            msg(2, 0)
        );
        assert_books(&store);
    }

    /// `spare_segment` is untrusted: a number never handed out, or a
    /// segment that was used, is reported corrupt by the send that would
    /// link it; one naming a linked segment is not removed by a
    /// preparation, only no longer offered.
    #[test]
    fn hostile_offers_are_corrupt_or_ignored_never_linked_or_removed() {
        // Never handed out.
        let store = queue(2, u64::MAX);
        let mut tx = handle(&store, 2);
        store.0.spare.store(99, Ordering::Relaxed);
        tx.try_push(&msg(1, 0), 1, &()).unwrap();
        tx.try_push(&msg(1, 1), 1, &()).unwrap();
        assert!(matches!(
            tx.try_push(&msg(1, 2), 1, &()),
            Err(SendError::Corrupt(_))
        ));
        // A segment made ahead, then pushed into: not fresh.
        let store = queue(2, u64::MAX);
        let mut tx = handle(&store, 2);
        let used = make(&store, 2);
        used.ring.try_push(&msg(9, 0), 9, &()).unwrap();
        store.0.spare.store(used.number(), Ordering::Relaxed);
        tx.try_push(&msg(1, 0), 1, &()).unwrap();
        tx.try_push(&msg(1, 1), 1, &()).unwrap();
        assert!(matches!(
            tx.try_push(&msg(1, 2), 1, &()),
            Err(SendError::Corrupt(_))
        ));
        assert!(store
            .0
            .segments
            .lock()
            .unwrap()
            .contains_key(&used.number()));
        // The linked segment 0 itself: a preparation after it stops
        // offering it, and removes nothing.
        let store = queue(2, u64::MAX);
        store.0.spare.store(0, Ordering::Relaxed);
        let first = store.0.segments.lock().unwrap()[&0].clone();
        let grown = make(&store, 2);
        first.next.store(grown.number(), Ordering::Relaxed);
        store.0.tail.store(grown.number(), Ordering::Relaxed);
        first.ring.seal();
        store.0.spare.store(grown.number(), Ordering::Relaxed);
        let mut tx = ahead_handle(&store, 2, Runner::Inline);
        tx.try_push(&msg(1, 0), 1, &()).unwrap();
        assert!(store
            .0
            .segments
            .lock()
            .unwrap()
            .contains_key(&grown.number()));
        assert_eq!(tx.stats().discarded, 0);
        assert_ne!(store.0.spare.load(Ordering::Relaxed), grown.number());
        assert_books(&store);
        for i in 1..20 {
            tx.try_push(&msg(1, i), 1, &()).unwrap();
        }
        let mut rx = handle(&store, 2);
        for i in 0..20 {
            let got = rx.try_pop_with(CONSUMER, &(), false, |b, _| b.to_vec());
            assert_eq!(got.unwrap(), msg(1, i));
        }
    }

    /// Producers with their segments made on the background thread,
    /// consumers retiring and giving back: each message exactly once, in
    /// order per producer; once every handle is gone, the books balance
    /// and no offer is left.
    #[test]
    // Miri: the background thread outlives the test (it ends when idle).
    #[cfg_attr(miri, ignore)]
    fn threads_exactly_once_with_segments_made_ahead() {
        let (producers, consumers, per) = if cfg!(miri) {
            (2, 1, 30u32)
        } else {
            (3, 2, 20_000u32)
        };
        let store = queue(2, u64::MAX);
        let taken = Arc::new(AtomicU64::new(0));
        let total = u64::from(per) * producers as u64;
        let mut threads = Vec::new();
        for p in 0..producers {
            let store = store.clone();
            threads.push(std::thread::spawn(move || {
                let mut tx = ahead_handle(&store, 2, Runner::Background);
                for i in 0..per {
                    tx.try_push(&msg(p, i), u32::from(p), &()).unwrap();
                }
                Vec::new()
            }));
        }
        for _ in 0..consumers {
            let store = store.clone();
            let taken = taken.clone();
            threads.push(std::thread::spawn(move || {
                let mut rx = handle(&store, 2);
                let mut last = vec![None::<u32>; producers as usize];
                let mut got = Vec::new();
                while taken.load(Ordering::Relaxed) < total {
                    match rx.try_pop_with(CONSUMER, &(), false, |b, s| (b.to_vec(), s)) {
                        Ok((b, s)) => {
                            taken.fetch_add(1, Ordering::Relaxed);
                            let i = u32::from_le_bytes(b[1..5].try_into().unwrap());
                            let prev = last[s as usize].replace(i);
                            assert!(prev.map_or(true, |p| p < i), "out of order");
                            got.push((s, i));
                        }
                        Err(RecvError::Empty) => std::thread::yield_now(),
                        Err(e) => panic!("{e:?}"),
                    }
                }
                got
            }));
        }
        let mut all: Vec<(u32, u32)> = threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect();
        all.sort_unstable();
        let want: Vec<(u32, u32)> = (0..u32::from(producers))
            .flat_map(|p| (0..per).map(move |i| (p, i)))
            .collect();
        assert_eq!(all, want);
        assert_eq!(store.0.spare.load(Ordering::Relaxed), 0);
        assert_books(&store);
    }
}

#[cfg(loom)]
mod loom_models {
    use super::*;

    /// Two producers fill a two-slot segment and race to link the next
    /// one while a consumer drains: one link wins, no message is lost,
    /// duplicated or left behind a seal, and each producer's messages
    /// come out in order.
    #[test]
    fn chain_producers_race_to_link_a_segment() {
        let mut builder = loom::model::Builder::new();
        builder.preemption_bound = Some(2);
        builder.check(|| {
            let store = queue(2, u64::MAX);
            let producers: Vec<_> = (0..2u8)
                .map(|p| {
                    let store = store.clone();
                    loom::thread::spawn(move || {
                        let mut tx = handle(&store, 2);
                        tx.try_push(&msg(p, 0), u32::from(p), &()).unwrap();
                        tx.try_push(&msg(p, 1), u32::from(p), &()).unwrap();
                    })
                })
                .collect();
            let mut rx = handle(&store, 2);
            let mut got = Vec::new();
            if let Ok(m) = rx.try_pop_with(CONSUMER, &(), false, |b, _| b.to_vec()) {
                got.push(m);
            }
            for t in producers {
                t.join().unwrap();
            }
            while let Ok(m) = rx.try_pop_with(CONSUMER, &(), false, |b, _| b.to_vec()) {
                got.push(m);
            }
            assert_eq!(got.len(), 4, "{got:?}");
            for p in 0..2u8 {
                let mine: Vec<_> = got.iter().filter(|m| m[0] == p).collect();
                assert_eq!(mine, vec![&msg(p, 0).to_vec(), &msg(p, 1).to_vec()]);
            }
        });
    }
}

#[cfg(loom)]
mod loom_solo {
    use super::*;

    /// The producer of a solo chain fills a two-slot segment and links a
    /// larger one, whose consumer drains it and (finding it empty, large
    /// and newest) seals it to give it back while the producer pushes
    /// into it: every message arrives exactly once, in order, and none is
    /// left behind a seal.
    #[test]
    fn chain_solo_growth_races_give_back() {
        let mut builder = loom::model::Builder::new();
        builder.preemption_bound = Some(2);
        builder.check(|| {
            let store = queue_of(solo(2), u64::MAX);
            let producer = {
                let store = store.clone();
                loom::thread::spawn(move || {
                    let mut tx = handle_of(&store, solo(2));
                    for i in 0..4 {
                        tx.try_push(&msg(1, i), 1, &()).unwrap();
                    }
                })
            };
            let mut rx = handle_of(&store, solo(2));
            let mut got = Vec::new();
            for _ in 0..6 {
                if let Ok(m) = rx.try_pop_with(CONSUMER, &(), false, |b, _| b.to_vec()) {
                    got.push(m);
                }
            }
            producer.join().unwrap();
            while let Ok(m) = rx.try_pop_with(CONSUMER, &(), false, |b, _| b.to_vec()) {
                got.push(m);
            }
            let want: Vec<Vec<u8>> = (0..4).map(|i| msg(1, i).to_vec()).collect();
            assert_eq!(got, want);
        });
    }
}

#[cfg(loom)]
mod loom_offers {
    use super::*;
    use crate::sync::Ordering;

    /// A producer fills a two-slot segment while a preparation makes and
    /// offers the next one, and its handle, dropped at once, takes the
    /// offer back (as `Spares::close` does): the producer links the offer
    /// or makes a segment itself, never one taken back; no message is lost
    /// or reordered, and the books balance with every segment linked.
    #[test]
    fn chain_an_offer_races_a_full_segment() {
        let mut builder = loom::model::Builder::new();
        builder.preemption_bound = Some(2);
        builder.check(|| {
            let store = queue(2, u64::MAX);
            let preparer = {
                let store = store.clone();
                loom::thread::spawn(move || {
                    let seg = chain::make_segment(&store, &geometry(2), Size::After(2), 0)
                        .map_err(|e| format!("{e:?}"))
                        .unwrap();
                    if !chain::offer(&store, &seg) {
                        chain::discard(&store, &seg);
                    } else if store
                        .spare_segment()
                        .compare_exchange(seg.number(), 0, Ordering::AcqRel, Ordering::Acquire)
                        .is_ok()
                    {
                        chain::discard(&store, &seg);
                    }
                })
            };
            let mut tx = handle(&store, 2);
            for i in 0..3 {
                tx.try_push(&msg(1, i), 1, &()).unwrap();
            }
            preparer.join().unwrap();
            assert_eq!(store.0.spare.load(Ordering::Relaxed), 0);
            assert_books(&store);
            let mut rx = handle(&store, 2);
            for i in 0..3 {
                let got = rx.try_pop_with(CONSUMER, &(), false, |b, _| b.to_vec());
                assert_eq!(got.unwrap(), msg(1, i));
            }
        });
    }

    /// Two preparations race to offer while two producers fill a segment
    /// and race to link: one offer at most is taken, the losing offer is
    /// removed, and the books balance throughout.
    #[test]
    fn chain_offers_race_producers_race() {
        let mut builder = loom::model::Builder::new();
        builder.preemption_bound = Some(2);
        builder.check(|| {
            let store = queue(2, u64::MAX);
            let preparers: Vec<_> = (0..2)
                .map(|_| {
                    let store = store.clone();
                    loom::thread::spawn(move || {
                        let seg = chain::make_segment(&store, &geometry(2), Size::After(2), 0)
                            .map_err(|e| format!("{e:?}"))
                            .unwrap();
                        if !chain::offer(&store, &seg) {
                            chain::discard(&store, &seg);
                        }
                    })
                })
                .collect();
            let producer = {
                let store = store.clone();
                loom::thread::spawn(move || {
                    let mut tx = handle(&store, 2);
                    tx.try_push(&msg(1, 0), 1, &()).unwrap();
                    tx.try_push(&msg(1, 1), 1, &()).unwrap();
                })
            };
            let mut tx = handle(&store, 2);
            tx.try_push(&msg(0, 0), 0, &()).unwrap();
            producer.join().unwrap();
            for t in preparers {
                t.join().unwrap();
            }
            assert_books(&store);
            let mut rx = handle(&store, 2);
            let mut got = Vec::new();
            while let Ok(m) = rx.try_pop_with(CONSUMER, &(), false, |b, _| b.to_vec()) {
                got.push(m);
            }
            got.sort();
            assert_eq!(got, vec![msg(0, 0), msg(1, 0), msg(1, 1)]);
        });
    }
}

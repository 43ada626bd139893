//! Tests of the MPMC ring over heap memory: unit, multi-thread and property
//! tests (also run under Miri), corruption tests, and loom models.

#[cfg(not(loom))]
use crate::mpmc::{Head, RawMpmc, CONTROL_BYTES};
use crate::mpmc::{MpmcGeometry, MpmcRing, PopError, PushError};

/// The owner tag the tests' consumers hold slots under.
const CONSUMER: u32 = 40;

fn geometry(capacity: u32, slot_size: u32) -> MpmcGeometry {
    MpmcGeometry {
        capacity,
        slot_size,
        stride: crate::mpmc::slot_stride(slot_size).unwrap(),
        solo: false,
    }
}

/// A solo ring's geometry (one producer, one consumer: SPEC §9, "Solo rings").
fn solo(capacity: u32, slot_size: u32) -> MpmcGeometry {
    MpmcGeometry {
        solo: true,
        ..geometry(capacity, slot_size)
    }
}

#[cfg(not(loom))]
mod heap {
    use super::*;
    use crate::shm::ShmView;
    use crate::sync::{AtomicU64, Ordering};
    use std::sync::Arc;

    /// A ring object on the heap, page aligned, zero-filled.
    struct HeapRing {
        view: ShmView,
        geometry: MpmcGeometry,
    }

    impl HeapRing {
        fn new(capacity: u32, slot_size: u32) -> Arc<HeapRing> {
            Self::with(geometry(capacity, slot_size))
        }
        fn new_solo(capacity: u32, slot_size: u32) -> Arc<HeapRing> {
            Self::with(solo(capacity, slot_size))
        }
        fn with(g: MpmcGeometry) -> Arc<HeapRing> {
            let (capacity, slot_size) = (g.capacity, g.slot_size);
            let bytes = crate::mpmc::ring_bytes(capacity, slot_size).unwrap() as usize;
            let view = ShmView::heap(bytes);
            Arc::new(HeapRing { view, geometry: g })
        }
        fn ring(&self) -> MpmcRing<RawMpmc> {
            MpmcRing::new(
                RawMpmc::new(self.view.clone(), &self.geometry),
                self.geometry,
            )
        }
        /// The word at byte `offset` of the object.
        fn word(&self, offset: usize) -> &AtomicU64 {
            self.view.u64_at(offset)
        }
        fn slot_word(&self, index: usize, word: usize) -> &AtomicU64 {
            self.word(CONTROL_BYTES as usize + index * self.geometry.stride as usize + word * 8)
        }
        /// Stores `turn` in slot `index`'s seq word as a process would
        /// (XOR the index, SPEC §9).
        fn set_turn(&self, index: usize, turn: u64) {
            self.slot_word(index, 0)
                .store(turn ^ index as u64, Ordering::Relaxed);
        }
    }

    fn pop(ring: &MpmcRing<RawMpmc>) -> Result<(Vec<u8>, u32), PopError> {
        ring.try_pop_with(CONSUMER, &(), |b, s| (b.to_vec(), s))
    }

    /// A producer (owner 3) that died after claiming position 0: the
    /// position is a hole. While its owner is alive, consumers wait; once
    /// it is dead, they void the position and step over it, and every
    /// other producer's message arrives, in order.
    #[test]
    fn a_dead_producers_hole_is_stepped_over() {
        let heap = HeapRing::new(4, 8);
        let ring = heap.ring();
        assert_eq!(ring.claim_and_abandon(3), Ok(0));
        ring.try_push(b"b1", 5, &()).unwrap();
        ring.try_push(b"b2", 5, &()).unwrap();
        assert_eq!(
            pop(&ring),
            Err(PopError::Empty),
            "the owner may still write"
        );
        assert_eq!(ring.head_in(&(), true), Head::Empty);
        let dead = |o: u32| o == 3;
        assert_eq!(ring.head_in(&dead, true), Head::Ready);
        let got = ring.try_pop_with(CONSUMER, &dead, |b, s| (b.to_vec(), s));
        assert_eq!(got, Ok((b"b1".to_vec(), 5)));
        assert_eq!(pop(&ring).unwrap().0, b"b2");
        assert_eq!(pop(&ring), Err(PopError::Empty));
        // The voided slot went round: the ring still holds 4 messages.
        for i in 0..4u8 {
            ring.try_push(&[i], 5, &()).unwrap();
        }
        assert_eq!(ring.try_push(b"x", 5, &()), Err(PushError::Full));
        for i in 0..4u8 {
            assert_eq!(pop(&ring).unwrap().0, [i]);
        }
    }

    /// A consumer (owner 7) that died while reading position 0: producers
    /// find the ring full until they see it dead, then take the slot back.
    #[test]
    fn a_dead_consumers_slot_is_taken_back() {
        let heap = HeapRing::new(2, 8);
        let ring = heap.ring();
        ring.try_push(b"a", 1, &()).unwrap();
        ring.try_push(b"b", 1, &()).unwrap();
        let claim = ring.try_claim(7, &()).unwrap();
        let _dies_holding_it = claim;
        assert_eq!(pop(&ring).unwrap().0, b"b");
        // Position 2 needs slot 0, which the consumer still holds.
        assert_eq!(ring.try_push(b"c", 1, &()), Err(PushError::Full));
        assert!(!ring.has_room(&()));
        let dead = |o: u32| o == 7;
        assert!(ring.has_room(&dead));
        assert_eq!(ring.try_push(b"c", 1, &dead), Ok(()));
        assert_eq!(ring.try_push(b"d", 1, &()), Ok(()));
        assert_eq!(pop(&ring).unwrap().0, b"c");
        assert_eq!(pop(&ring).unwrap().0, b"d");
    }

    /// Whoever reuses a dead attachment's entry first takes back what it
    /// held: its hole is voided and its read released.
    #[test]
    fn recover_owner_takes_back_every_slot() {
        let heap = HeapRing::new(4, 8);
        let ring = heap.ring();
        ring.try_push(b"a", 1, &()).unwrap();
        let _dies_holding_it = ring.try_claim(9, &()).unwrap();
        assert_eq!(ring.claim_and_abandon(9), Ok(1));
        ring.try_push(b"c", 1, &()).unwrap();
        ring.recover_owner(9);
        // Entry 9 now names a live process: nothing depends on it any more.
        assert_eq!(pop(&ring).unwrap().0, b"c");
        for i in 0..4u8 {
            ring.try_push(&[i], 1, &()).unwrap();
        }
        for i in 0..4u8 {
            assert_eq!(pop(&ring).unwrap().0, [i]);
        }
    }

    /// A closure that panics still releases its slot.
    #[test]
    fn a_panicking_reader_releases_its_slot() {
        let heap = HeapRing::new(2, 8);
        let ring = heap.ring();
        ring.try_push(b"a", 1, &()).unwrap();
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            ring.try_pop_with(CONSUMER, &(), |_, _| panic!("reader fails"))
        }));
        assert!(r.is_err());
        for i in 0..2u8 {
            ring.try_push(&[i], 1, &()).unwrap();
        }
        assert_eq!(pop(&ring).unwrap().0, [0]);
    }

    /// Sealed while a producer holds a slot it has not counted yet: the
    /// push reports Sealed and gives the slot back, and consumers see the
    /// ring drained.
    #[test]
    fn seal_between_claim_and_count() {
        let heap = HeapRing::new(4, 8);
        let ring = heap.ring();
        ring.try_push(b"a", 1, &()).unwrap();
        // Claim position 1's slot by hand, as a producer does first.
        // (Turns are stored XOR the slot's index.)
        let seq = heap.slot_word(1, 0);
        let mine = hwlink_hw::HWL_MPMC_SEQ_WRITING | (1u64 << 56) | 1;
        seq.compare_exchange(1 ^ 1, mine ^ 1, Ordering::SeqCst, Ordering::SeqCst)
            .unwrap();
        ring.seal();
        assert_eq!(pop(&ring).unwrap().0, b"a");
        assert_eq!(pop(&ring), Err(PopError::Drained));
        assert_eq!(ring.head_in(&(), true), Head::Drained);
    }

    /// A zero-filled ring is a new one, and turns are stored XOR the
    /// slot's index (SPEC §9): the layout another implementation follows.
    #[test]
    fn zero_filled_slots_are_a_new_ring_and_turns_are_stored_xor_index() {
        let heap = HeapRing::new(4, 8);
        let ring = heap.ring();
        for i in 0..4 {
            assert_eq!(heap.slot_word(i, 0).load(Ordering::Relaxed), 0);
        }
        assert!(ring.has_room(&()));
        ring.try_push(b"a", 1, &()).unwrap();
        ring.try_push(b"b", 1, &()).unwrap();
        // Published: turn pos + 1.
        assert_eq!(heap.slot_word(0, 0).load(Ordering::Relaxed), 1);
        assert_eq!(heap.slot_word(1, 0).load(Ordering::Relaxed), 2 ^ 1);
        assert_eq!(pop(&ring).unwrap().0, b"a");
        // Consumed: turn pos + capacity, the next lap's free turn.
        assert_eq!(heap.slot_word(0, 0).load(Ordering::Relaxed), 4);
        // Untouched slots still read as their first lap's free turn.
        assert_eq!(heap.slot_word(3, 0).load(Ordering::Relaxed), 0);
    }

    #[test]
    fn push_pop_in_order_until_full_and_empty() {
        let heap = HeapRing::new(4, 40);
        let ring = heap.ring();
        for lap in 0..3u8 {
            for i in 0..4u8 {
                ring.try_push(&[lap, i], 7, &()).unwrap();
            }
            assert_eq!(ring.try_push(b"x", 7, &()), Err(PushError::Full));
            assert_eq!(ring.len().unwrap(), 4);
            for i in 0..4u8 {
                assert_eq!(pop(&ring).unwrap(), (vec![lap, i], 7));
            }
            assert_eq!(pop(&ring), Err(PopError::Empty));
        }
        assert_eq!(ring.try_push(&[0; 41], 0, &()), Err(PushError::TooLarge));
        ring.try_push(&[0; 40], 0, &()).unwrap();
        assert_eq!(pop(&ring).unwrap().0.len(), 40);
        ring.try_push(&[], 0, &()).unwrap();
        assert_eq!(pop(&ring).unwrap().0.len(), 0);
    }

    #[test]
    fn sealed_ring_drains_then_reports_drained() {
        let heap = HeapRing::new(4, 8);
        let ring = heap.ring();
        ring.try_push(b"a", 0, &()).unwrap();
        ring.try_push(b"b", 0, &()).unwrap();
        ring.seal();
        assert!(ring.is_sealed());
        assert_eq!(ring.try_push(b"c", 0, &()), Err(PushError::Sealed));
        assert_eq!(pop(&ring).unwrap().0, b"a");
        assert_eq!(pop(&ring).unwrap().0, b"b");
        assert_eq!(pop(&ring), Err(PopError::Drained));
        assert_eq!(pop(&ring), Err(PopError::Drained));
        ring.seal();
        assert_eq!(ring.len().unwrap(), 0);
    }

    #[test]
    fn corrupt_words_give_errors_not_panics() {
        // A length longer than the slot: error, and the slot is released
        // so the next message still flows.
        let heap = HeapRing::new(2, 8);
        let ring = heap.ring();
        ring.try_push(b"abc", 0, &()).unwrap();
        ring.try_push(b"def", 0, &()).unwrap();
        heap.slot_word(0, 1).store(9, Ordering::Relaxed);
        assert!(matches!(pop(&ring), Err(PopError::Corrupt(c)) if c.what == "mpmc message length"));
        assert_eq!(pop(&ring).unwrap().0, b"def");

        // A turn far behind the position.
        let heap = HeapRing::new(4, 8);
        let ring = heap.ring();
        heap.set_turn(0, 1000);
        heap.word(0).store(1100, Ordering::Relaxed);
        assert!(matches!(
            ring.try_push(b"x", 0, &()),
            Err(PushError::Corrupt(_))
        ));
        heap.word(128).store(1100, Ordering::Relaxed);
        assert!(matches!(pop(&ring), Err(PopError::Corrupt(_))));

        // A turn ahead of an enqueue position that does not move.
        let heap = HeapRing::new(4, 8);
        let ring = heap.ring();
        heap.set_turn(0, 5);
        assert!(
            matches!(ring.try_push(b"x", 0, &()), Err(PushError::Corrupt(c)) if c.what.contains("turn"))
        );
        heap.set_turn(0, 50);
        assert!(matches!(pop(&ring), Err(PopError::Corrupt(c)) if c.what.contains("turn")));
        // A turn one lap ahead that a correct producer could have stored,
        // but the position does not move: ahead, corrupt.
        heap.set_turn(0, 1);
        assert!(
            matches!(ring.try_push(b"x", 0, &()), Err(PushError::Corrupt(c)) if c.what.contains("ahead"))
        );

        // Positions at the top of the range: errors, never an overflow.
        for pos in [u64::MAX >> 1, (1 << 56) - 1, u64::MAX >> 8] {
            let heap = HeapRing::new(4, 8);
            let ring = heap.ring();
            heap.word(0).store(pos, Ordering::Relaxed);
            heap.word(128).store(pos, Ordering::Relaxed);
            assert!(matches!(
                ring.try_push(b"x", 0, &()),
                Err(PushError::Corrupt(_))
            ));
            assert!(matches!(pop(&ring), Err(PopError::Corrupt(_))));
            assert_eq!(
                ring.head_in(&(), true),
                Head::Ready,
                "a corrupt head is reported, not waited on"
            );
        }
        // A dequeue position of u64::MAX (the reproduction).
        let heap = HeapRing::new(4, 8);
        heap.word(128).store(u64::MAX, Ordering::Relaxed);
        assert!(matches!(pop(&heap.ring()), Err(PopError::Corrupt(_))));

        // A dequeue position beyond the sealed end.
        let heap = HeapRing::new(4, 8);
        let ring = heap.ring();
        heap.word(128).store(3, Ordering::Relaxed);
        heap.set_turn(3, 3);
        ring.seal();
        assert!(matches!(pop(&ring), Err(PopError::Corrupt(c)) if c.what.contains("sealed")));

        // Occupancy out of range.
        let heap = HeapRing::new(4, 8);
        heap.word(0).store(1000, Ordering::Relaxed);
        assert!(heap.ring().len().is_err());
    }

    #[test]
    fn geometry_read_from_memory_is_checked() {
        assert!(MpmcGeometry::validate(3, 8, 64, CONTROL_BYTES, 1 << 20).is_err());
        assert!(MpmcGeometry::validate(1, 8, 64, CONTROL_BYTES, 1 << 20).is_err());
        assert!(MpmcGeometry::validate(4, 8, 128, CONTROL_BYTES, 1 << 20).is_err());
        assert!(MpmcGeometry::validate(4, 8, 64, 64, 1 << 20).is_err());
        assert!(MpmcGeometry::validate(4, 8, 64, CONTROL_BYTES, 100).is_err());
        assert!(MpmcGeometry::validate(1 << 25, 8, 64, CONTROL_BYTES, u64::MAX).is_err());
        assert!(MpmcGeometry::validate(4, 8, 64, CONTROL_BYTES, 384 + 256).is_ok());
    }

    /// Producers and consumers on threads: every message is taken exactly
    /// once, and each consumer sees each producer's messages in order.
    #[test]
    fn threads_deliver_exactly_once_in_order_per_producer() {
        let (producers, consumers, per) = if cfg!(miri) {
            (2, 2, 30u32)
        } else {
            (4, 4, 50_000u32)
        };
        let heap = HeapRing::new(8, 16);
        let taken = Arc::new(AtomicU64::new(0));
        let total = u64::from(per) * producers as u64;
        let mut threads = Vec::new();
        for p in 0..producers {
            let heap = heap.clone();
            threads.push(std::thread::spawn(move || {
                let ring = heap.ring();
                for i in 0..per {
                    let mut msg = [0u8; 8];
                    msg[..4].copy_from_slice(&i.to_le_bytes());
                    msg[4..].copy_from_slice(&(i ^ 0xa5a5_a5a5).to_le_bytes());
                    while let Err(e) = ring.try_push(&msg, p, &()) {
                        assert_eq!(e, PushError::Full);
                        std::thread::yield_now();
                    }
                }
                Vec::new()
            }));
        }
        for _ in 0..consumers {
            let heap = heap.clone();
            let taken = taken.clone();
            threads.push(std::thread::spawn(move || {
                let ring = heap.ring();
                let mut last = vec![None::<u32>; producers as usize];
                let mut got = Vec::new();
                while taken.load(Ordering::Relaxed) < total {
                    match ring.try_pop_with(CONSUMER, &(), |b, s| (b.to_vec(), s)) {
                        Ok((b, s)) => {
                            taken.fetch_add(1, Ordering::Relaxed);
                            let i = u32::from_le_bytes(b[..4].try_into().unwrap());
                            let check = u32::from_le_bytes(b[4..].try_into().unwrap());
                            assert_eq!(check, i ^ 0xa5a5_a5a5, "torn message");
                            let prev = last[s as usize].replace(i);
                            assert!(prev.map_or(true, |p| p < i), "out of order");
                            got.push((s, i));
                        }
                        Err(PopError::Empty) => std::thread::yield_now(),
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
        let want: Vec<(u32, u32)> = (0..producers)
            .flat_map(|p| (0..per).map(move |i| (p, i)))
            .collect();
        assert_eq!(all, want, "every message exactly once");
    }

    /// A solo ring: a FIFO of `capacity` across laps; the consumer writes
    /// no turn (a consumed slot keeps its published turn) and moves its
    /// position only once the message is read, also when the reader
    /// panics; a seal stops the producer and drains as on any ring.
    #[test]
    fn solo_ring_fifo_laps_and_seal() {
        let heap = HeapRing::new_solo(4, 16);
        let ring = heap.ring();
        for lap in 0..3u8 {
            for i in 0..4u8 {
                ring.try_push(&[lap, i], 7, &()).unwrap();
            }
            assert!(!ring.has_room(&()));
            assert_eq!(ring.try_push(b"x", 7, &()), Err(PushError::Full));
            assert_eq!(ring.len().unwrap(), 4);
            assert_eq!(ring.head_in(&(), false), Head::Ready);
            for i in 0..4u8 {
                assert_eq!(pop(&ring).unwrap(), (vec![lap, i], 7));
                // Published turn of this lap's position, left as it was.
                let pos = u64::from(lap) * 4 + u64::from(i);
                let raw = heap.slot_word(i as usize, 0).load(Ordering::Relaxed);
                assert_eq!(raw ^ u64::from(i), pos + 1);
            }
            assert_eq!(pop(&ring), Err(PopError::Empty));
            assert_eq!(ring.head_in(&(), true), Head::Empty);
            assert!(ring.has_room(&()));
        }
        // A reader that panics still passes its position on.
        ring.try_push(b"boom", 1, &()).unwrap();
        ring.try_push(b"next", 1, &()).unwrap();
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _ = ring.try_pop_with(CONSUMER, &(), |_, _| -> () { panic!("reader") });
        }));
        assert!(r.is_err());
        assert_eq!(pop(&ring).unwrap().0, b"next");
        ring.try_push(b"last", 1, &()).unwrap();
        ring.seal();
        assert_eq!(ring.try_push(b"c", 0, &()), Err(PushError::Sealed));
        assert!(ring.has_room(&()), "a sealed ring reports the seal");
        assert_eq!(pop(&ring).unwrap().0, b"last");
        assert_eq!(pop(&ring), Err(PopError::Drained));
        assert_eq!(ring.head_in(&(), true), Head::Drained);
        // Nobody holds a slot of a solo ring: nothing to recover.
        ring.recover_owner(CONSUMER);
        assert_eq!(ring.len().unwrap(), 0);
    }

    /// A solo ring's producer reads the consumer's position only when its
    /// last reading is used up: a lap of pushes costs one read.
    #[test]
    fn solo_producer_reads_the_consumer_position_once_a_lap() {
        let heap = HeapRing::new_solo(4, 8);
        let ring = heap.ring();
        ring.try_push(b"a", 0, &()).unwrap();
        // A consumer position the producer has not read: a hostile value
        // past the producer's is only seen at the next reading.
        heap.word(128).store(1000, Ordering::Relaxed);
        for _ in 0..3 {
            ring.try_push(b"b", 0, &()).unwrap();
        }
        assert!(matches!(
            ring.try_push(b"c", 0, &()),
            Err(PushError::Corrupt(c)) if c.what.contains("dequeue position past")
        ));
    }

    /// Hostile words on a solo ring: a turn that is neither published nor
    /// unpublished for the consumer's position, a position past the limit,
    /// an enqueue position moved under the producer, and a length past the
    /// slot are errors, never panics or out-of-bounds reads.
    #[test]
    fn solo_corrupt_words_give_errors() {
        let heap = HeapRing::new_solo(4, 8);
        let ring = heap.ring();
        heap.set_turn(0, 77);
        assert!(matches!(pop(&ring), Err(PopError::Corrupt(_))));
        assert_eq!(
            ring.head_in(&(), false),
            Head::Ready,
            "the claim reports it"
        );
        heap.set_turn(0, 0);
        // A length longer than the slot: an error, and the position moves
        // on so the next message flows.
        ring.try_push(b"ok", 0, &()).unwrap();
        heap.slot_word(0, 1).store(9, Ordering::Relaxed);
        assert!(matches!(pop(&ring), Err(PopError::Corrupt(_))));
        ring.try_push(b"ok2", 0, &()).unwrap();
        assert_eq!(pop(&ring).unwrap().0, b"ok2");
        heap.word(128).store(u64::MAX >> 1, Ordering::Relaxed);
        assert!(matches!(pop(&ring), Err(PopError::Corrupt(_))));
        heap.word(128).store(2, Ordering::Relaxed);
        // enqueue_pos moved by somebody else between the producer's load
        // and its count cannot be staged from one thread; one beyond the
        // limit can.
        heap.word(0).store(u64::MAX >> 1, Ordering::Relaxed);
        assert!(matches!(
            ring.try_push(b"x", 0, &()),
            Err(PushError::Corrupt(_))
        ));
    }

    #[cfg(not(miri))]
    mod props {
        use super::*;
        use proptest::prelude::*;
        use std::collections::VecDeque;

        proptest! {
            /// Any sequence of pushes, pops and a seal behaves like a
            /// bounded FIFO that stops accepting once sealed.
            #[test]
            fn behaves_like_a_bounded_fifo(
                cap_log in 1u32..4,
                ops in proptest::collection::vec((0u8..10, 0usize..24), 0..200),
                solo in proptest::bool::ANY,
            ) {
                let cap = 1u32 << cap_log;
                let heap = if solo {
                    HeapRing::new_solo(cap, 16)
                } else {
                    HeapRing::new(cap, 16)
                };
                let ring = heap.ring();
                let mut model: VecDeque<Vec<u8>> = VecDeque::new();
                let mut sealed = false;
                for (n, (op, len)) in ops.into_iter().enumerate() {
                    match op {
                        0..=4 => {
                            let msg = vec![n as u8; len];
                            let got = ring.try_push(&msg, 1, &());
                            let want = if len > 16 {
                                Err(PushError::TooLarge)
                            } else if sealed {
                                Err(PushError::Sealed)
                            } else if model.len() == cap as usize {
                                Err(PushError::Full)
                            } else {
                                model.push_back(msg);
                                Ok(())
                            };
                            prop_assert_eq!(got, want);
                        }
                        5..=8 => {
                            let got = ring.try_pop_with(CONSUMER, &(), |b, _| b.to_vec());
                            let want = match model.pop_front() {
                                Some(m) => Ok(m),
                                None if sealed => Err(PopError::Drained),
                                None => Err(PopError::Empty),
                            };
                            prop_assert_eq!(got, want);
                        }
                        _ => {
                            ring.seal();
                            sealed = true;
                        }
                    }
                    prop_assert_eq!(ring.len().unwrap(), model.len() as u64);
                }
            }
        }
    }
}

#[cfg(loom)]
mod loom_models {
    use super::*;
    use crate::chain_tests::{cell_mem, MemRef as Shared};

    fn ring(cap: u32) -> (MpmcRing<Shared>, Shared) {
        let shared = cell_mem(cap as usize);
        let r = MpmcRing::new(shared.clone(), geometry(cap, 8));
        (r, shared)
    }

    fn push_spin(r: &MpmcRing<Shared>, msg: &[u8], sender: u32) {
        loop {
            match r.try_push(msg, sender, &()) {
                Ok(()) => return,
                Err(PushError::Full) => loom::thread::yield_now(),
                Err(e) => panic!("{e:?}"),
            }
        }
    }

    /// Two producers race for the slots of a two-slot ring that a consumer
    /// empties: both messages arrive exactly once, with their bytes.
    #[test]
    fn mpmc_two_producers_one_consumer() {
        let mut builder = loom::model::Builder::new();
        builder.preemption_bound = Some(3);
        builder.check(|| {
            let (r, shared) = ring(2);
            let threads: Vec<_> = (0..2u32)
                .map(|p| {
                    let shared = shared.clone();
                    loom::thread::spawn(move || {
                        let r = MpmcRing::new(shared, geometry(2, 8));
                        push_spin(&r, &[p as u8 + 10; 3], p);
                    })
                })
                .collect();
            let mut got = Vec::new();
            while got.len() < 2 {
                match r.try_pop_with(CONSUMER, &(), |b, s| (b.to_vec(), s)) {
                    Ok(m) => got.push(m),
                    Err(PopError::Empty) => loom::thread::yield_now(),
                    Err(e) => panic!("{e:?}"),
                }
            }
            for t in threads {
                t.join().unwrap();
            }
            got.sort();
            assert_eq!(got, vec![(vec![10; 3], 0), (vec![11; 3], 1)]);
        });
    }

    /// Two consumers race a producer for two messages (each consumer tries
    /// twice, then the main thread drains the rest): each message is taken
    /// exactly once, with its bytes.
    #[test]
    fn mpmc_one_producer_two_consumers() {
        let mut builder = loom::model::Builder::new();
        builder.preemption_bound = Some(3);
        builder.check(|| {
            let (r, shared) = ring(2);
            let threads: Vec<_> = (0..2)
                .map(|_| {
                    let shared = shared.clone();
                    loom::thread::spawn(move || {
                        let r = MpmcRing::new(shared, geometry(2, 8));
                        let mut mine = Vec::new();
                        for _ in 0..2 {
                            match r.try_pop_with(CONSUMER, &(), |b, _| b.to_vec()) {
                                Ok(v) => mine.push(v),
                                Err(PopError::Empty) => {}
                                Err(e) => panic!("{e:?}"),
                            }
                        }
                        mine
                    })
                })
                .collect();
            push_spin(&r, &[1, 1], 0);
            push_spin(&r, &[2, 2], 0);
            let mut all: Vec<Vec<u8>> = threads
                .into_iter()
                .flat_map(|t| t.join().unwrap())
                .collect();
            while let Ok(v) = r.try_pop_with(CONSUMER, &(), |b, _| b.to_vec()) {
                all.push(v);
            }
            all.sort();
            assert_eq!(all, vec![vec![1, 1], vec![2, 2]]);
        });
    }

    /// A producer dies holding the slot of position 0 while another
    /// pushes and a consumer (told the first is dead) drains: the live
    /// producer's message arrives exactly once, the hole is stepped over,
    /// and the slots all go round.
    #[test]
    fn mpmc_dead_producer_hole() {
        let mut builder = loom::model::Builder::new();
        builder.preemption_bound = Some(3);
        builder.check(|| {
            let (r, shared) = ring(2);
            let dying = {
                let shared = shared.clone();
                loom::thread::spawn(move || {
                    let r = MpmcRing::new(shared, geometry(2, 8));
                    r.claim_and_abandon(1)
                })
            };
            let live = {
                let shared = shared.clone();
                loom::thread::spawn(move || {
                    let r = MpmcRing::new(shared, geometry(2, 8));
                    push_spin(&r, b"live", 2);
                })
            };
            let dead = |o: u32| o == 1;
            let mut got = Vec::new();
            while got.is_empty() {
                match r.try_pop_with(CONSUMER, &dead, |b, s| (b.to_vec(), s)) {
                    Ok(m) => got.push(m),
                    Err(PopError::Empty) => loom::thread::yield_now(),
                    Err(e) => panic!("{e:?}"),
                }
            }
            let hole = dying.join().unwrap().unwrap();
            assert!(hole < 2, "{hole}");
            live.join().unwrap();
            assert_eq!(got, vec![(b"live".to_vec(), 2)]);
            assert_eq!(
                r.try_pop_with(CONSUMER, &dead, |b, _| b.to_vec()),
                Err(PopError::Empty)
            );
            assert_eq!(r.len().unwrap(), 0, "the hole was stepped over");
        });
    }

    /// A solo ring of two slots carries three messages from its producer
    /// to its consumer: each exactly once, in order, with its bytes (the
    /// producer's writes of a slot come after the consumer's reads of the
    /// lap before: M1s/M3s; the consumer's reads after the publish: M0s).
    #[test]
    fn mpmc_solo_producer_consumer() {
        let mut builder = loom::model::Builder::new();
        builder.preemption_bound = Some(3);
        builder.check(|| {
            let shared = cell_mem(2);
            let r = MpmcRing::new(shared.clone(), solo(2, 8));
            let t = loom::thread::spawn(move || {
                let r = MpmcRing::new(shared, solo(2, 8));
                for i in 0..3u8 {
                    push_spin(&r, &[i; 4], 1);
                }
            });
            let mut got = Vec::new();
            while got.len() < 3 {
                match r.try_pop_with(CONSUMER, &(), |b, s| (b.to_vec(), s)) {
                    Ok(m) => got.push(m),
                    Err(PopError::Empty) => loom::thread::yield_now(),
                    Err(e) => panic!("{e:?}"),
                }
            }
            t.join().unwrap();
            let want: Vec<_> = (0..3u8).map(|i| (vec![i; 4], 1)).collect();
            assert_eq!(got, want);
        });
    }

    /// Sealing races with a push (`g`: a multi-producer or a solo ring):
    /// the push either lands before the seal (and is drained) or reports
    /// Sealed; never both, never lost.
    fn seal_races_push(g: MpmcGeometry) {
        loom::model(move || {
            let shared = cell_mem(2);
            let r = MpmcRing::new(shared.clone(), g);
            let t = loom::thread::spawn(move || {
                let r = MpmcRing::new(shared, g);
                r.try_push(b"m", 0, &())
            });
            r.seal();
            let pushed = t.join().unwrap();
            let mut got = 0;
            loop {
                match r.try_pop_with(CONSUMER, &(), |b, _| b.to_vec()) {
                    Ok(m) => {
                        assert_eq!(m, b"m");
                        got += 1;
                    }
                    Err(PopError::Drained) => break,
                    Err(PopError::Empty) => loom::thread::yield_now(),
                    Err(e) => panic!("{e:?}"),
                }
            }
            match pushed {
                Ok(()) => assert_eq!(got, 1),
                Err(PushError::Sealed) => assert_eq!(got, 0),
                Err(e) => panic!("{e:?}"),
            }
        });
    }

    #[test]
    fn mpmc_seal_races_push() {
        seal_races_push(geometry(2, 8));
    }

    /// A consumer's seal races the solo producer's count of its position.
    #[test]
    fn mpmc_solo_seal_races_push() {
        seal_races_push(solo(2, 8));
    }
}

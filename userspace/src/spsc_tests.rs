//! Tests of the SPSC ring algorithm over heap memory: unit and property
//! tests (also run under Miri) and loom models of the ring with its
//! doorbells.

use crate::doorbell::Doorbell;
use crate::shm::ShmWord;
use crate::spsc::{Consumer, Geometry, Producer, RingWords, SlotMem};
use crate::sync::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

/// Indices of the control words in `HeapRing::words`.
const TAIL: usize = 0;
const HEAD: usize = 1;
const PWM: usize = 2;
const CWM: usize = 3;
const NE_COUNT: usize = 4;
const NE_WAITERS: usize = 5;
const NF_COUNT: usize = 6;
const NF_WAITERS: usize = 7;
const PUBLISHED: usize = 8;
const RELEASED: usize = 9;

fn geometry(capacity: u32, slot_size: u32) -> Geometry {
    Geometry {
        capacity,
        slot_size,
        stride: hwlink_hw::slot_stride(slot_size).unwrap(),
        packed: false,
        max_messages: 0,
    }
}

/// A ring's control words on the heap.
struct HeapWords(Arc<[AtomicU32; 10]>);

impl HeapWords {
    fn new(start: u32) -> Self {
        let w: [AtomicU32; 10] = Default::default();
        w[TAIL].store(start, Ordering::Relaxed);
        w[HEAD].store(start, Ordering::Relaxed);
        HeapWords(Arc::new(w))
    }

    fn ring_words(&self) -> (RingWords, Arc<[AtomicU32; 10]>) {
        let w = |i: usize| ShmWord::owned(self.0.clone(), move |w| &w[i]);
        let words = RingWords::new(
            [w(TAIL), w(HEAD), w(PUBLISHED), w(RELEASED)],
            w(PWM),
            w(CWM),
            Doorbell::new(w(NE_COUNT), w(NE_WAITERS)),
            Doorbell::new(w(NF_COUNT), w(NF_WAITERS)),
        );
        (words, self.0.clone())
    }
}

#[cfg(not(loom))]
mod heap {
    use super::*;
    use crate::shm::ShmView;
    use crate::spsc::RawSlots;

    pub(super) struct Ends {
        pub p: Producer<RawSlots>,
        pub c: Consumer<RawSlots>,
        pub words: Arc<[AtomicU32; 10]>,
        pub mem: ShmView,
        pub _keep: [Arc<[AtomicU32; 10]>; 2],
    }

    /// A heap ring with indices starting at `start`.
    pub(super) fn ring(capacity: u32, slot_size: u32, start: u32) -> Ends {
        let g = geometry(capacity, slot_size);
        let mem = ShmView::heap((g.capacity * g.stride) as usize);
        let slots = || RawSlots::new(mem.clone(), &g);
        // Positions start at `start`, not 0: mark every slot "previous lap".
        let probe = slots();
        for p in (0..capacity).map(|k| start.wrapping_add(k)) {
            let previous_lap = p.wrapping_sub(capacity).wrapping_add(1);
            probe
                .header(p & (capacity - 1))
                .store(u64::from(previous_lap) << 32, Ordering::Relaxed);
        }
        let w = HeapWords::new(start);
        let (pw, k1) = w.ring_words();
        let (cw, k2) = w.ring_words();
        Ends {
            p: Producer::new(pw, slots(), g).unwrap(),
            c: Consumer::new(cw, slots(), g).unwrap(),
            words: w.0.clone(),
            mem: mem.clone(),
            _keep: [k1, k2],
        }
    }
}

#[cfg(not(loom))]
mod packed_heap {
    use super::*;
    use crate::shm::ShmView;
    use crate::spsc::{RawSlots, RingLayout};

    /// A packed heap ring for `messages` of up to `slot_size` bytes whose
    /// unit positions start at `start` (the unit area zero-filled, as a
    /// new region is).
    pub(super) fn packed(messages: u32, slot_size: u32, start: u32) -> super::heap::Ends {
        let g = Geometry::for_ring(messages, slot_size, RingLayout::Packed).unwrap();
        assert!(g.packed);
        let mem = ShmView::heap((g.capacity * g.stride) as usize);
        let slots = || RawSlots::new(mem.clone(), &g);
        let w = HeapWords::new(start);
        let (pw, k1) = w.ring_words();
        let (cw, k2) = w.ring_words();
        super::heap::Ends {
            p: Producer::new(pw, slots(), g).unwrap(),
            c: Consumer::new(cw, slots(), g).unwrap(),
            words: w.0.clone(),
            mem: mem.clone(),
            _keep: [k1, k2],
        }
    }
}

#[cfg(not(loom))]
mod packed_tests {
    use super::packed_heap::packed;
    use super::*;

    fn push(p: &mut Producer<impl SlotMem>, msg: &[u8]) -> bool {
        if p.free_for(msg.len()).unwrap() == 0 {
            return false;
        }
        p.write(0, msg);
        p.publish(1);
        true
    }

    fn pop(c: &mut Consumer<impl SlotMem>) -> Option<Vec<u8>> {
        if c.available() == 0 {
            return None;
        }
        let v = c.read(0, |m| m.to_vec());
        c.release(1);
        Some(v.unwrap())
    }

    fn msg(i: u32, len: usize) -> Vec<u8> {
        (0..len).map(|k| (i as usize * 7 + k) as u8).collect()
    }

    /// Several small messages share a cache line: 8-byte messages take one
    /// 16-byte unit each.
    #[test]
    fn small_messages_share_lines() {
        let r = packed(64, 8, 0);
        assert_eq!(r.p.geometry().capacity, 128, "(64 + 1) units, rounded up");
        let mut r = r;
        for i in 0..4 {
            assert!(push(&mut r.p, &msg(i, 8)));
        }
        // Four records in the first 64 bytes: headers at 0, 16, 32, 48.
        for k in 0..4u32 {
            let header = r.mem.u64_at(k as usize * 16).load(Ordering::Relaxed);
            assert_eq!(header, 8 | (u64::from(k + 1) << 32));
        }
        // The header after the last record is zero (not yet published).
        assert_eq!(r.mem.u64_at(64).load(Ordering::Relaxed), 0);
        assert_eq!(r.words[TAIL].load(Ordering::Relaxed), 4);
        assert_eq!(r.words[PUBLISHED].load(Ordering::Relaxed), 4);
        for i in 0..4 {
            assert_eq!(pop(&mut r.c), Some(msg(i, 8)));
        }
        assert_eq!(r.words[RELEASED].load(Ordering::Relaxed), 4);
        assert_eq!(r.words[HEAD].load(Ordering::Relaxed), 4);
    }

    /// `RingLayout::Auto` is fixed slots; a packed ring keeps the message
    /// bound and room for that many of the largest size.
    #[test]
    fn layout_choice_and_sizes() {
        use crate::spsc::RingLayout;
        let auto = |n, slot| Geometry::for_ring(n, slot, RingLayout::Auto).unwrap();
        let packed = |n, slot| Geometry::for_ring(n, slot, RingLayout::Packed).unwrap();
        assert!(!auto(1024, 8).packed);
        assert!(!auto(1024, 1016).packed);
        // 8-byte slots: (1024 + 1) units -> 2048 units = 32 KiB, where
        // fixed slots take 64 KiB.
        let g = packed(1024, 8);
        assert_eq!((g.capacity, g.stride, g.max_messages), (2048, 16, 1024));
        assert_eq!(g.messages(), 1024);
        assert_eq!(g.object_bytes(), Some(512 + 2048 * 16));
        // 64-byte slots: 5 units a record.
        assert_eq!(packed(1024, 64).capacity, 8192);
        let fixed = auto(1024, 64);
        assert_eq!(
            (fixed.capacity, fixed.stride, fixed.packed),
            (1024, 128, false)
        );
        // A large slot packed; a capacity not a power of two is refused
        // either way; packed rings whose units would pass 2^24 are refused.
        assert!(packed(4, 1 << 20).packed);
        assert!(Geometry::for_ring(1000, 8, RingLayout::Auto).is_err());
        assert!(Geometry::for_ring(1000, 8, RingLayout::Packed).is_err());
        assert!(Geometry::for_ring(1 << 23, 100, RingLayout::Packed).is_err());
    }

    /// A packed ring is a bounded buffer of `messages`, whatever their
    /// sizes, in order, across many laps with padding records.
    #[test]
    fn bounded_fifo_with_padding_over_many_laps() {
        for (messages, slot) in [(4u32, 8u32), (4, 40), (8, 100), (16, 56), (2, 1000)] {
            let mut r = packed(messages, slot, 0);
            let (mut next, mut expect) = (0u32, 0u32);
            let rounds = if cfg!(miri) { 12 } else { 300 };
            for round in 0..rounds {
                let mut pushed = 0;
                loop {
                    let len = ((next * 13 + round) % (slot + 1)) as usize;
                    if !push(&mut r.p, &msg(next, len)) {
                        break;
                    }
                    next += 1;
                    pushed += 1;
                }
                assert!(pushed <= messages, "at most {messages} held");
                if round % 3 == 0 {
                    // A full drain: exactly `messages` fit, of any size.
                    assert_eq!(next - expect, messages, "slot {slot}");
                }
                let take = if round % 2 == 0 { u32::MAX } else { 1 };
                let mut taken = 0;
                while taken < take {
                    let Some(m) = pop(&mut r.c) else { break };
                    assert_eq!(m, msg(expect, m.len()), "message {expect}");
                    expect += 1;
                    taken += 1;
                }
            }
            while let Some(m) = pop(&mut r.c) {
                assert_eq!(m, msg(expect, m.len()));
                expect += 1;
            }
            assert_eq!(expect, next);
            assert!(
                next > rounds,
                "{next} messages through ({messages}, {slot})"
            );
        }
    }

    /// Unit positions wrap around u32, through position 2^32 - 1 (whose
    /// record takes seq 1, not 0) and a zeroed header there.
    #[test]
    fn positions_wrap_around_u32() {
        for start in [u32::MAX - 40, u32::MAX - 1, u32::MAX] {
            let mut r = packed(8, 24, start);
            for i in 0..if cfg!(miri) { 40 } else { 200 } {
                let len = (i % 25) as usize;
                assert!(push(&mut r.p, &msg(i, len)));
                if i % 3 == 2 {
                    assert!(pop(&mut r.c).is_some());
                }
                while r.p.free_for(24).unwrap() == 0 {
                    assert!(pop(&mut r.c).is_some());
                }
            }
            // Empty it, then no phantom message at any position.
            while pop(&mut r.c).is_some() {}
            assert_eq!(pop(&mut r.c), None);
            assert!(!r.c.has_data_now());
        }
        // The consumer at 2^32 - 1 with a zeroed header sees nothing.
        let mut r = packed(8, 24, u32::MAX);
        assert_eq!(pop(&mut r.c), None);
        assert!(push(&mut r.p, b"x"));
        assert_eq!(pop(&mut r.c), Some(b"x".to_vec()));
    }

    /// A batch of records (with a padding record among them) becomes
    /// visible at once, with the first header stored last.
    #[test]
    fn batch_publish_with_padding() {
        let mut r = packed(8, 40, 0);
        // 40 bytes take 3 units; capacity (8 + 1) * 3 = 27 -> 32 units.
        assert_eq!(r.p.geometry().capacity, 32);
        for i in 0..9 {
            assert!(push(&mut r.p, &msg(i, 40)));
            assert_eq!(pop(&mut r.c), Some(msg(i, 40)));
        }
        // tail is now 27: three records from 27 cross the end at 32.
        let n = r.p.free_for(40).unwrap();
        assert!(n >= 3, "{n}");
        for k in 0..3 {
            r.p.write(k, &msg(100 + k, 40));
        }
        assert_eq!(r.c.available(), 0, "nothing before publish");
        r.p.publish(3);
        assert_eq!(r.c.refresh_available().unwrap(), 3);
        for k in 0..3 {
            assert_eq!(r.c.read(k, |m| m.to_vec()).unwrap(), msg(100 + k, 40));
        }
        r.c.release(3);
        // Records at 27 and (after a padding record that fills 30..32) at
        // 32 and 35.
        assert_eq!(r.words[HEAD].load(Ordering::Relaxed), 38);
        let pad = r.mem.u64_at(30 * 16).load(Ordering::Relaxed);
        assert_eq!(pad, u64::from(hwlink_hw::HWL_RECORD_PAD) | (31u64 << 32));
    }

    /// In-place writes: a record placed for 40 bytes and committed with
    /// 5 keeps its place (and any padding before it).
    #[test]
    fn place_then_shrink() {
        let mut r = packed(4, 40, 0);
        for i in 0..6 {
            assert!(push(&mut r.p, &msg(i, 16)));
            assert_eq!(pop(&mut r.c), Some(msg(i, 16)));
        }
        assert!(r.p.cached_room(40));
        r.p.place(0, 40);
        r.p.payload_mut(0, 40).copy_from(&msg(9, 40));
        r.p.set_len(0, 5);
        r.p.publish(1);
        assert_eq!(pop(&mut r.c), Some(msg(9, 5)));
        assert!(push(&mut r.p, &msg(10, 8)));
        assert_eq!(pop(&mut r.c), Some(msg(10, 8)));
    }

    fn corrupt_header(r: &super::heap::Ends, unit: usize, len: u32, seq: u32) {
        set_header(&r.mem, unit, len, seq)
    }

    fn set_header(mem: &crate::shm::ShmView, unit: usize, len: u32, seq: u32) {
        mem.u64_at(unit * 16)
            .store(u64::from(len) | (u64::from(seq) << 32), Ordering::Release);
    }

    /// A hostile producer's records are refused, never read out of bounds.
    #[test]
    fn hostile_records_are_corruption() {
        // Length beyond the slot.
        let mut r = packed(8, 24, 0);
        corrupt_header(&r, 0, 25, 1);
        assert_eq!(r.c.available(), 1);
        let e = r.c.read(0, |m| m.len()).unwrap_err();
        assert_eq!(e.what, "message length");
        // A record past the end of the units.
        let mut r = packed(8, 24, 0);
        let last = r.p.geometry().capacity as usize - 1;
        for _ in 0..last {
            // Move the consumer to the last unit through 0-byte records.
            corrupt_header_at(&r.mem, &mut r.c, 0);
        }
        set_header(&r.mem, last, 24, last as u32 + 1);
        assert_eq!(r.c.available(), 1);
        let e = r.c.read(0, |m| m.len()).unwrap_err();
        assert_eq!(e.what, "record end (units)");
        // Padding at the start of a lap would skip a whole lap.
        let mut r = packed(8, 24, 0);
        corrupt_header(&r, 0, hwlink_hw::HWL_RECORD_PAD, 1);
        assert_eq!(r.c.available(), 1);
        assert!(r.c.read(0, |m| m.len()).is_err());
        // More messages held than max_messages.
        let mut r = packed(8, 24, 0);
        r.words[RELEASED].store(u32::MAX - 20, Ordering::Relaxed);
        let e = r.p.refresh_free().unwrap_err();
        assert_eq!(e.what, "ring messages (published - released)");
        assert!(
            r.p.has_room_now(),
            "a waiter stops and the next free() reports it"
        );
        // A tail that moved too far.
        let mut r = packed(8, 24, 0);
        r.words[TAIL].store(1 << 20, Ordering::Relaxed);
        assert!(r.c.refresh_available().is_err());
    }

    /// Writes a published empty record at the consumer's next unit and
    /// consumes it.
    fn corrupt_header_at(
        mem: &crate::shm::ShmView,
        c: &mut Consumer<crate::spsc::RawSlots>,
        len: u32,
    ) {
        let pos = c.walk_position();
        let unit = (pos & (c.geometry().capacity - 1)) as usize;
        mem.u64_at(unit * 16).store(
            u64::from(len) | (u64::from(pos + 1) << 32),
            Ordering::Release,
        );
        assert_eq!(c.available(), 1);
        c.read(0, |_| ()).unwrap();
        c.release(1);
    }

    #[test]
    fn two_threads_transfer_in_order() {
        let n: u32 = if cfg!(miri) { 100 } else { 200_000 };
        let r = packed(16, 40, 0);
        let (mut p, mut c) = (r.p, r.c);
        let t = std::thread::spawn(move || {
            for i in 0..n {
                let m = msg(i, (i % 41) as usize);
                while !push(&mut p, &m) {
                    std::hint::spin_loop();
                }
            }
            p
        });
        for i in 0..n {
            let m = loop {
                if let Some(m) = pop(&mut c) {
                    break m;
                }
                std::hint::spin_loop();
            };
            assert_eq!(m, msg(i, (i % 41) as usize));
        }
        drop(t.join().unwrap());
    }

    #[cfg(not(miri))]
    mod props {
        use super::*;
        use proptest::prelude::*;
        use std::collections::VecDeque;

        proptest! {
            /// A packed ring behaves as a bounded FIFO of `messages` for any
            /// interleaving of single and batched pushes and pops of any
            /// lengths, from any start position.
            #[test]
            fn packed_ring_is_a_bounded_fifo(
                start in any::<u32>(),
                msgs_log in 0u32..5,
                slot in 0u32..100,
                ops in proptest::collection::vec((0u8..4, 0usize..200), 1..200),
            ) {
                let messages = 1u32 << msgs_log;
                let mut r = packed(messages, slot, start);
                let mut model: VecDeque<Vec<u8>> = VecDeque::new();
                let mut seq = 0u32;
                for (op, arg) in ops {
                    let len = arg % (slot as usize + 1);
                    match op {
                        0 => {
                            let m = msg(seq, len);
                            let ok = push(&mut r.p, &m);
                            // Room for `messages` of any size: a push fails
                            // only when that many are held.
                            prop_assert_eq!(ok, model.len() < messages as usize);
                            if ok { model.push_back(m); seq += 1; }
                        }
                        1 => prop_assert_eq!(pop(&mut r.c), model.pop_front()),
                        2 => {
                            let n = r.p.free_for(slot as usize).unwrap().min(arg as u32 % 5);
                            for k in 0..n {
                                let m = msg(seq, (len + k as usize) % (slot as usize + 1));
                                r.p.write(k, &m);
                                model.push_back(m);
                                seq += 1;
                            }
                            if n > 0 { r.p.publish(n); }
                        }
                        _ => {
                            let n = r.c.refresh_available().unwrap().min(arg as u32 % 5);
                            for k in 0..n {
                                let got = r.c.read(k, |m| m.to_vec()).unwrap();
                                prop_assert_eq!(Some(got), model.pop_front());
                            }
                            r.c.release(n);
                        }
                    }
                    let ready = r.c.refresh_available().unwrap() as usize;
                    prop_assert_eq!(ready, model.len().min(64));
                    prop_assert_eq!(r.p.refresh_free().unwrap() == 0, model.len() == messages as usize);
                }
            }
        }
    }
}

#[cfg(not(loom))]
mod tests {
    use super::heap::ring;
    use super::*;

    fn push(p: &mut Producer<impl SlotMem>, msg: &[u8]) -> bool {
        if p.free().unwrap() == 0 {
            return false;
        }
        p.write(0, msg);
        p.publish(1);
        true
    }

    fn pop(c: &mut Consumer<impl SlotMem>) -> Option<Vec<u8>> {
        if c.available() == 0 {
            return None;
        }
        let v = c.read(0, |m| m.to_vec());
        c.release(1);
        Some(v.unwrap())
    }

    #[test]
    fn fills_drains_and_wraps_in_order() {
        let mut r = ring(4, 24, 0);
        let mut next = 0u32;
        let mut expect = 0u32;
        for _round in 0..50 {
            while push(&mut r.p, &next.to_le_bytes()) {
                next += 1;
            }
            assert_eq!(r.p.free().unwrap(), 0, "a full ring has no free slot");
            while let Some(m) = pop(&mut r.c) {
                assert_eq!(m, expect.to_le_bytes());
                expect += 1;
            }
        }
        assert_eq!(next, 200);
        assert_eq!(expect, 200);
    }

    /// A consumer lagging behind a stream counts its backlog from `tail`
    /// after BACKLOG_EVERY messages found at the first look, then reads on
    /// without probing; every message still arrives in order, across the
    /// wrap of the indices.
    #[test]
    fn lagging_consumer_counts_its_backlog_and_reads_in_order() {
        let mut r = ring(64, 24, u32::MAX - 100);
        let (mut next, mut expect) = (0u32, 0u32);
        while push(&mut r.p, &next.to_le_bytes()) {
            next += 1;
        }
        for _ in 0..16 {
            assert_eq!(pop(&mut r.c).unwrap(), expect.to_le_bytes());
            expect += 1;
        }
        assert_eq!(r.c.cached_available(), 48, "the backlog was counted");
        for _ in 0..200 {
            while next - expect < 64 && push(&mut r.p, &next.to_le_bytes()) {
                next += 1;
            }
            for _ in 0..23 {
                assert_eq!(pop(&mut r.c).unwrap(), expect.to_le_bytes());
                expect += 1;
            }
        }
        while let Some(m) = pop(&mut r.c) {
            assert_eq!(m, expect.to_le_bytes());
            expect += 1;
        }
        assert_eq!(expect, next);
    }

    #[test]
    fn indices_wrap_around_u32() {
        let mut r = ring(8, 24, u32::MAX - 5);
        for i in 0..100u32 {
            assert!(push(&mut r.p, &i.to_le_bytes()));
            assert!(push(&mut r.p, &[i as u8; 24]));
            assert_eq!(pop(&mut r.c).unwrap(), i.to_le_bytes());
            assert_eq!(pop(&mut r.c).unwrap(), vec![i as u8; 24]);
        }
        assert!(r.words[TAIL].load(Ordering::Relaxed) < 1000, "tail wrapped");
    }

    #[test]
    fn variable_lengths_including_empty_and_max() {
        let mut r = ring(4, 100, 0);
        for len in [0usize, 1, 7, 8, 63, 64, 99, 100] {
            let msg: Vec<u8> = (0..len as u8).collect();
            assert!(push(&mut r.p, &msg));
            assert_eq!(pop(&mut r.c).unwrap(), msg);
        }
    }

    #[test]
    fn batch_publish_is_one_store() {
        let mut r = ring(8, 16, 0);
        let free = r.p.free().unwrap();
        assert_eq!(free, 8);
        for k in 0..5 {
            r.p.write(k, &[k as u8]);
        }
        assert_eq!(r.c.available(), 0, "nothing visible before publish");
        r.p.publish(5);
        assert_eq!(r.c.available(), 1, "the probe finds the first message");
        assert_eq!(r.c.refresh_available().unwrap(), 5, "tail counts the batch");
        for k in 0..5 {
            let b = r.c.read(k, |m| m.to_vec());
            assert_eq!(b.unwrap(), [k as u8]);
        }
        r.c.release(5);
        assert_eq!(r.p.refresh_free().unwrap(), 8);
    }

    #[test]
    fn cached_index_is_refreshed_only_when_needed() {
        let mut r = ring(4, 16, 0);
        assert!(push(&mut r.p, b"a"));
        assert_eq!(
            r.c.cached_available(),
            0,
            "consumer cache is stale until refreshed"
        );
        assert_eq!(r.c.available(), 1);
        assert!(push(&mut r.p, b"b"));
        assert_eq!(
            r.c.cached_available(),
            1,
            "no refresh while the cache says non-empty"
        );
    }

    #[test]
    fn out_of_range_tail_is_corruption() {
        let mut r = ring(4, 16, 0);
        // A hostile producer moves tail beyond head + capacity.
        r.words[TAIL].store(5, Ordering::Release);
        let e = r.c.refresh_available().unwrap_err();
        assert_eq!(e.what, "ring occupancy (tail - head)");
        assert_eq!((e.value, e.limit), (5, 4));
        // ...or far backwards from head.
        r.words[TAIL].store(u32::MAX - 4, Ordering::Release);
        assert!(r.c.refresh_available().is_err());
        // Slightly behind head is what a consumer that found messages
        // through the slots' seq words can see: nothing more to read.
        r.words[TAIL].store(u32::MAX, Ordering::Release);
        assert_eq!(r.c.refresh_available().unwrap(), 0);
    }

    #[test]
    fn out_of_range_head_is_corruption() {
        let mut r = ring(4, 16, 0);
        for _ in 0..4 {
            assert!(push(&mut r.p, b"x"));
        }
        r.words[HEAD].store(9, Ordering::Release);
        assert!(r.p.free().is_err());
    }

    #[test]
    fn out_of_range_length_is_corruption() {
        let mut r = ring(4, 16, 0);
        assert!(push(&mut r.p, b"hello"));
        // A hostile producer rewrites the published header: seq stays
        // right (position 0 -> 1), len grows past the slot.
        header0(&r).store((1 << 32) | 17, Ordering::Release);
        assert_eq!(r.c.available(), 1);
        let e = r.c.read(0, |_| ()).unwrap_err();
        assert_eq!((e.what, e.value, e.limit), ("message length", 17, 16));
    }

    fn header0(r: &super::heap::Ends) -> &AtomicU64 {
        // Slot 0's header word: the first 8 bytes of the slot area.
        r.mem.u64_at(0)
    }

    #[test]
    fn wrong_sequence_under_tail_is_corruption() {
        let mut r = ring(4, 16, 0);
        assert!(push(&mut r.p, b"hello"));
        // The producer's tail says one message, but the slot's seq does not
        // name position 0.
        header0(&r).store((7 << 32) | 5, Ordering::Release);
        assert_eq!(r.c.refresh_available().unwrap(), 1);
        let e = r.c.read(0, |_| ()).unwrap_err();
        assert_eq!(e.what, "slot sequence behind tail (seq - position - 1)");
    }

    #[test]
    fn two_threads_transfer_in_order() {
        let n: u32 = if cfg!(miri) { 300 } else { 200_000 };
        let r = ring(16, 32, 0);
        let (mut p, mut c) = (r.p, r.c);
        let t = std::thread::spawn(move || {
            for i in 0..n {
                let msg = [
                    i.to_le_bytes().as_slice(),
                    &[i as u8; 11][..(i % 12) as usize],
                ]
                .concat();
                while !push(&mut p, &msg) {
                    std::hint::spin_loop();
                }
            }
            p
        });
        for i in 0..n {
            let m = loop {
                if let Some(m) = pop(&mut c) {
                    break m;
                }
                std::hint::spin_loop();
            };
            assert_eq!(m.len(), 4 + (i % 12) as usize);
            assert_eq!(&m[..4], i.to_le_bytes());
            assert!(m[4..].iter().all(|&b| b == i as u8));
        }
        drop(t.join().unwrap());
    }

    /// The inline copies (up to 64 bytes) and the memcpy beyond them move
    /// exactly `len` bytes, whatever the length and alignment, into shared
    /// memory and out of it.
    #[test]
    fn copy_bytes_moves_exactly_len_bytes() {
        let src: Vec<u8> = (0..200u8).collect();
        for len in 0..=130 {
            for offset in [0, 1, 7] {
                // Into shared memory.
                let shm = crate::shm::ShmView::heap(200);
                shm.slice_mut(0, 200).unwrap().fill(0xEE);
                let copied = shm
                    .slice_mut(offset, len)
                    .unwrap()
                    .copy_from(&src[offset..offset + len]);
                assert_eq!(copied, len);
                let dst = shm.slice(0, 200).unwrap().to_vec();
                assert_eq!(dst[offset..offset + len], src[offset..offset + len]);
                assert!(dst[..offset].iter().all(|&b| b == 0xEE), "len {len}");
                assert!(dst[offset + len..].iter().all(|&b| b == 0xEE), "len {len}");
                // Out of it.
                shm.slice_mut(0, 200).unwrap().copy_from(&src);
                let mut dst = [0xEEu8; 200];
                let copied = shm
                    .slice(offset, len)
                    .unwrap()
                    .copy_to(&mut dst[offset..offset + len]);
                assert_eq!(copied, len);
                assert_eq!(dst[offset..offset + len], src[offset..offset + len]);
                assert!(dst[..offset].iter().all(|&b| b == 0xEE), "len {len}");
                assert!(dst[offset + len..].iter().all(|&b| b == 0xEE), "len {len}");
            }
        }
    }

    #[cfg(not(miri))]
    mod props {
        use super::*;
        use proptest::prelude::*;
        use std::collections::VecDeque;

        proptest! {
            /// The ring behaves as a bounded FIFO for any interleaving of
            /// single and batched pushes and pops, from any start index.
            #[test]
            fn ring_is_a_bounded_fifo(
                start in any::<u32>(),
                cap_log in 0u32..5,
                ops in proptest::collection::vec((0u8..4, 0usize..40), 1..200),
            ) {
                let capacity = 1u32 << cap_log;
                let mut r = ring(capacity, 32, start);
                let mut model = VecDeque::new();
                let mut seq = 0u64;
                for (op, arg) in ops {
                    match op {
                        0 => {
                            let msg = [&seq.to_le_bytes()[..], &vec![seq as u8; arg % 25]].concat();
                            let ok = push(&mut r.p, &msg);
                            prop_assert_eq!(ok, model.len() < capacity as usize);
                            if ok { model.push_back(msg); seq += 1; }
                        }
                        1 => prop_assert_eq!(pop(&mut r.c), model.pop_front()),
                        2 => {
                            let n = r.p.free().unwrap().min(arg as u32 % 5);
                            for k in 0..n {
                                let msg = seq.to_le_bytes();
                                r.p.write(k, &msg);
                                model.push_back(msg.to_vec());
                                seq += 1;
                            }
                            r.p.publish(n);
                        }
                        _ => {
                            let n = r.c.refresh_available().unwrap().min(arg as u32 % 5);
                            for k in 0..n {
                                let got = r.c.read(k, |m| m.to_vec()).unwrap();
                                prop_assert_eq!(Some(got), model.pop_front());
                            }
                            r.c.release(n);
                        }
                    }
                    prop_assert_eq!(r.p.refresh_free().unwrap() as usize, capacity as usize - model.len());
                    let ready = r.c.refresh_available().unwrap() as usize;
                    prop_assert_eq!(ready, model.len());
                }
            }
        }
    }
}

#[cfg(loom)]
mod loom_models {
    use super::*;
    use crate::shm::{ShmCells, ShmSlice, ShmSliceMut};

    const STRIDE: usize = 64;

    /// Slots in loom cells, so loom reports any unsynchronised access, with
    /// their header words as loom atomics beside them.
    struct CellSlots(Arc<ShmCells>, Arc<Vec<AtomicU64>>);

    fn cell_slots(n: usize, start: u32) -> CellSlots {
        let seqs: Vec<AtomicU64> = (0..n).map(|_| AtomicU64::new(0)).collect();
        for p in (0..n as u32).map(|k| start.wrapping_add(k)) {
            let previous_lap = p.wrapping_sub(n as u32).wrapping_add(1);
            seqs[(p as usize) & (n - 1)].store(u64::from(previous_lap) << 32, Ordering::Relaxed);
        }
        CellSlots(Arc::new(ShmCells::new(n, STRIDE)), Arc::new(seqs))
    }

    impl CellSlots {
        fn share(&self) -> CellSlots {
            CellSlots(self.0.clone(), self.1.clone())
        }
    }

    impl SlotMem for CellSlots {
        fn header(&self, index: u32) -> &AtomicU64 {
            &self.1[index as usize]
        }
        fn with_slot_mut<R>(&self, index: u32, f: impl FnOnce(ShmSliceMut<'_>) -> R) -> R {
            self.0.with_mut(index as usize, f)
        }
        fn with_slot<R>(&self, index: u32, f: impl FnOnce(ShmSlice<'_>) -> R) -> R {
            self.0.with(index as usize, f)
        }
    }

    /// Sends `msg`, sleeping on `not_full` while there is no room for it
    /// (either layout).
    fn send_blocking(p: &mut Producer<impl SlotMem>, msg: &[u8]) {
        let len = msg.len();
        loop {
            if p.free_for(len).unwrap() > 0 {
                p.write(0, msg);
                p.publish(1);
                return;
            }
            let r: Result<_, ()> = p.words.not_full.sleep_until(
                |_| Ok(p.has_room_for_now(len).then_some(())),
                None,
                None,
            );
            r.unwrap();
        }
    }

    fn recv_blocking(c: &mut Consumer<impl SlotMem>) -> Vec<u8> {
        loop {
            if c.available() > 0 {
                let v = c.read(0, |m| m.to_vec()).unwrap();
                c.release(1);
                return v;
            }
            let r: Result<_, ()> =
                c.words
                    .not_empty
                    .sleep_until(|_| Ok(c.has_data_now().then_some(())), None, None);
            r.unwrap();
        }
    }

    /// A producer and a consumer, both blocking on doorbells, pass three
    /// messages through a two-slot ring: every message arrives, in order,
    /// with its bytes (loom checks the slot accesses are ordered), and no
    /// wake-up is lost (a lost one would deadlock the model).
    #[test]
    fn spsc_blocking_transfer() {
        let mut builder = loom::model::Builder::new();
        builder.preemption_bound = Some(3);
        builder.check(|| {
            let g = geometry(2, 56);
            let cells = cell_slots(2, u32::MAX - 1);
            let w = HeapWords::new(u32::MAX - 1);
            let (pw, k1) = w.ring_words();
            let (cw, k2) = w.ring_words();
            let mut p = Producer::new(pw, cells.share(), g).unwrap();
            let mut c = Consumer::new(cw, cells, g).unwrap();
            let t = loom::thread::spawn(move || {
                let _keep = k1;
                for i in 0..3u8 {
                    send_blocking(&mut p, &[i, i, i][..(i as usize + 1)]);
                }
            });
            for i in 0..3u8 {
                assert_eq!(recv_blocking(&mut c), vec![i; i as usize + 1]);
            }
            t.join().unwrap();
            drop(k2);
        });
    }

    /// Units of a packed ring in loom cells (16 bytes each), with their
    /// header words as loom atomics beside them. (Loom cannot model a
    /// header that is also payload bytes of an older lap; the heap tests
    /// check that the zeroed header after the last record is what a
    /// consumer finds, and hw/SPEC.md argues it.)
    struct UnitCells(Arc<ShmCells>, Arc<Vec<AtomicU64>>);

    impl UnitCells {
        fn new(n: usize) -> UnitCells {
            let heads = (0..n).map(|_| AtomicU64::new(0)).collect();
            UnitCells(Arc::new(ShmCells::new(n, 16)), Arc::new(heads))
        }
        fn share(&self) -> UnitCells {
            UnitCells(self.0.clone(), self.1.clone())
        }
    }

    impl SlotMem for UnitCells {
        fn header(&self, index: u32) -> &AtomicU64 {
            &self.1[index as usize]
        }
        fn with_slot_mut<R>(&self, index: u32, f: impl FnOnce(ShmSliceMut<'_>) -> R) -> R {
            self.0.with_mut(index as usize, f)
        }
        fn with_slot<R>(&self, index: u32, f: impl FnOnce(ShmSlice<'_>) -> R) -> R {
            self.0.with(index as usize, f)
        }
        fn write_span(&self, index: u32, at: usize, data: &[u8]) -> bool {
            self.0.write_span(index as usize, at, data)
        }
        fn with_span<R>(
            &self,
            index: u32,
            at: usize,
            len: usize,
            f: impl FnOnce(ShmSlice<'_>) -> R,
        ) -> Option<R> {
            self.0.with_span(index as usize, at, len, f)
        }
    }

    /// A packed ring of 8 units holding 2 messages: a producer and a
    /// consumer, both blocking on doorbells, pass three messages of one
    /// and two units, starting at position 2^32 - 1 (the last unit), so
    /// that the first needs a padding record and the positions wrap. Every
    /// message arrives in order with its bytes (loom checks the payload
    /// cells are ordered by the headers), the bound of 2 messages holds,
    /// and no wake-up is lost.
    #[test]
    fn packed_blocking_transfer_with_padding() {
        let mut builder = loom::model::Builder::new();
        builder.preemption_bound = Some(3);
        builder.check(|| {
            let g = Geometry::for_ring(2, 24, crate::spsc::RingLayout::Packed).unwrap();
            assert_eq!((g.capacity, g.max_messages), (8, 2));
            let cells = UnitCells::new(8);
            let w = HeapWords::new(u32::MAX);
            let (pw, k1) = w.ring_words();
            let (cw, k2) = w.ring_words();
            let mut p = Producer::new(pw, cells.share(), g).unwrap();
            let mut c = Consumer::new(cw, cells, g).unwrap();
            let lens = [20usize, 1, 9];
            let t = loom::thread::spawn(move || {
                let _keep = k1;
                for (i, &len) in lens.iter().enumerate() {
                    send_blocking(&mut p, &vec![i as u8 + 1; len]);
                }
            });
            for (i, &len) in lens.iter().enumerate() {
                assert_eq!(recv_blocking(&mut c), vec![i as u8 + 1; len]);
            }
            t.join().unwrap();
            drop(k2);
        });
    }

    /// hw/SPEC.md §12.4 [L4]: a domain member publishes on a link, then
    /// checks the receiving member's inbox with no fence of its own: it
    /// shares the ring's [F0], which the publish executes because the
    /// consumer's endpoint does not say HWL_WAIT_POLL (the word the check
    /// reads too: `Sender::receiver_may_sleep`, `ChannelSender::send`).
    /// The receiver, in `recv_any`, registers on its inbox, fences (F1)
    /// and probes the ring before it sleeps there. It must always wake and
    /// find the message. (Had the publish skipped F0, the same check
    /// would lose the wake-up: the model then deadlocks.)
    #[test]
    fn inbox_check_shares_the_rings_fence() {
        use crate::doorbell::{sleep_all, HeapDoorbell, Slept};
        use hwlink_hw::HWL_WAIT_POLL;
        loom::model(|| {
            let g = geometry(2, 56);
            let cells = cell_slots(2, 0);
            let w = HeapWords::new(0);
            let (pw, k1) = w.ring_words();
            let (cw, k2) = w.ring_words();
            let mut p = Producer::new(pw, cells.share(), g).unwrap();
            let c = Consumer::new(cw, cells, g).unwrap();
            let inbox = HeapDoorbell::new();
            let senders_view = inbox.share();
            let t = loom::thread::spawn(move || {
                let _keep = k1;
                p.refresh_peer_mode();
                p.write(0, b"m");
                p.publish(1);
                if p.words.consumer_wait_mode().load(Ordering::Relaxed) != HWL_WAIT_POLL {
                    senders_view.bell.notify();
                }
            });
            let got: Result<_, ()> = sleep_all(
                &[&inbox.bell],
                |_| Ok(c.has_data_now().then_some(())),
                true,
                None,
                None,
                &[],
            );
            assert_eq!(got, Ok(Slept::Ready(())));
            t.join().unwrap();
            drop(k2);
        });
    }

    /// Publishing a batch with one store makes all of it visible.
    #[test]
    fn spsc_batch_publish() {
        loom::model(|| {
            let g = geometry(4, 56);
            let cells = cell_slots(4, 0);
            let w = HeapWords::new(0);
            let (pw, k1) = w.ring_words();
            let (cw, k2) = w.ring_words();
            let mut p = Producer::new(pw, cells.share(), g).unwrap();
            let mut c = Consumer::new(cw, cells, g).unwrap();
            let t = loom::thread::spawn(move || {
                let _keep = k1;
                p.write(0, b"a");
                p.write(1, b"bb");
                p.write(2, b"ccc");
                p.publish(3);
            });
            let mut got = Vec::new();
            while got.len() < 3 {
                let n = c.refresh_available().unwrap();
                assert!(n == 0 || n == 3, "a batch's tail is published at once");
                for k in 0..n {
                    got.push(c.read(k, |m| m.to_vec()).unwrap());
                }
                c.release(n);
                if n == 0 {
                    loom::thread::yield_now();
                }
            }
            assert_eq!(got, vec![b"a".to_vec(), b"bb".to_vec(), b"ccc".to_vec()]);
            t.join().unwrap();
            drop(k2);
        });
    }
}

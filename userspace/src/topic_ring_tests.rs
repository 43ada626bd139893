//! Tests of the topic ring over heap words (also run under Miri): Block
//! never overwrites what a reader still needs, Overwrite reports exactly
//! what a reader missed and never hands out a torn message, joiners get
//! exactly the history they ask for, hostile cursors are contained; and
//! loom models of publishing, of the overwrite race and of the join
//! handshake.

use crate::sync::{AtomicU32, AtomicU64, Ordering};
use crate::topic_ring::{self, Look, TopicGeometry, TopicMem, Writer, BITMAP_WORDS};
use std::sync::Arc;

/// Payload bytes per slot in these tests.
const SLOT: usize = 8;

/// A topic's words on the heap; payload bytes as relaxed atomics, so that
/// the seqlock's racy reads are well defined for loom and Miri alike.
pub(crate) struct Cells {
    tail: AtomicU64,
    reclaim: AtomicU64,
    attached: Vec<AtomicU64>,
    cursor: Vec<AtomicU64>,
    token: Vec<AtomicU32>,
    seq: Vec<AtomicU64>,
    len: Vec<AtomicU32>,
    payload: Vec<Vec<crate::sync::AtomicU8>>,
}

#[derive(Clone)]
pub(crate) struct Mem(Arc<Cells>);

pub(crate) fn mem(cap: u32, subs: u32) -> Mem {
    let n = |k: u32| k as usize;
    Mem(Arc::new(Cells {
        tail: AtomicU64::new(0),
        reclaim: AtomicU64::new(0),
        attached: (0..BITMAP_WORDS).map(|_| AtomicU64::new(0)).collect(),
        cursor: (0..n(subs)).map(|_| AtomicU64::new(0)).collect(),
        token: (0..n(subs)).map(|_| AtomicU32::new(0)).collect(),
        seq: (0..n(cap)).map(|_| AtomicU64::new(0)).collect(),
        len: (0..n(cap)).map(|_| AtomicU32::new(0)).collect(),
        payload: (0..n(cap))
            .map(|_| (0..SLOT).map(|_| crate::sync::AtomicU8::new(0)).collect())
            .collect(),
    }))
}

impl TopicMem for Mem {
    fn tail(&self) -> &AtomicU64 {
        &self.0.tail
    }
    fn reclaim(&self) -> &AtomicU64 {
        &self.0.reclaim
    }
    fn attached(&self, w: u32) -> &AtomicU64 {
        &self.0.attached[w as usize]
    }
    fn cursor(&self, e: u32) -> &AtomicU64 {
        &self.0.cursor[e as usize]
    }
    fn token(&self, e: u32) -> &AtomicU32 {
        &self.0.token[e as usize]
    }
    fn seq(&self, index: u32) -> &AtomicU64 {
        &self.0.seq[index as usize]
    }
    fn len(&self, index: u32) -> &AtomicU32 {
        &self.0.len[index as usize]
    }
    fn write_payload(&self, index: u32, offset: usize, src: &[u8]) {
        for (i, b) in src.iter().enumerate() {
            self.0.payload[index as usize][offset + i].store(*b, Ordering::Relaxed);
        }
    }
    fn read_payload(&self, index: u32, dst: &mut [u8]) {
        for (i, b) in dst.iter_mut().enumerate() {
            *b = self.0.payload[index as usize][i].load(Ordering::Relaxed);
        }
    }
}

fn geometry(cap: u32, subs: u32, history: u32, overwrite: bool) -> TopicGeometry {
    TopicGeometry::validate(cap, SLOT as u32, subs, history, overwrite).unwrap()
}

/// Claims entry `e` for a reader with `token` and joins it.
fn join(m: &Mem, g: &TopicGeometry, e: u32, token: u32, want: u32) -> u64 {
    m.token(e).store(token, Ordering::Release);
    m.attached(e / 64).fetch_or(1 << (e % 64), Ordering::SeqCst);
    topic_ring::join(m, g, e, want)
}

/// Every test message: 8 bytes, all the low byte of its position, so a
/// torn read (bytes of two messages) shows.
fn msg(pos: u64) -> [u8; SLOT] {
    [pos as u8; SLOT]
}

/// A reader's step: Ok(Some(bytes)) and its cursor advanced, Ok(None) for
/// empty, Err(n) lagged by n (cursor moved).
fn read(m: &Mem, g: &TopicGeometry, e: u32, c: &mut u64) -> Result<Option<Vec<u8>>, u64> {
    let mut buf = Vec::new();
    match topic_ring::read_into(m, g, *c, &mut buf).unwrap() {
        Look::Ready(_) => {
            *c += 1;
            m.cursor(e).store(*c, Ordering::Release);
            Ok(Some(buf))
        }
        Look::Empty => Ok(None),
        Look::Lagged(to) => {
            let n = to - *c;
            *c = to;
            m.cursor(e).store(*c, Ordering::Release);
            Err(n)
        }
    }
}

fn alive(_: u32, _: u32) -> bool {
    true
}

#[cfg(not(loom))]
mod heap {
    use super::*;

    #[test]
    fn block_waits_for_the_slowest_reader_and_loses_nothing() {
        let g = geometry(4, 2, 0, false);
        let m = mem(4, 2);
        let mut w = Writer::new(m.clone(), g).unwrap();
        let mut fast = join(&m, &g, 0, 1, 0);
        let mut slow = join(&m, &g, 1, 2, 0);
        let mut pos = 0u64;
        // Four fit; the fifth waits for both readers.
        for _ in 0..4 {
            assert!(w.has_room_cached() || w.refresh(&mut alive));
            w.write(&msg(pos));
            pos += 1;
        }
        assert!(!w.has_room_cached() && !w.refresh(&mut alive));
        assert_eq!(w.slowest(), Some(0));
        for p in 0..4 {
            assert_eq!(read(&m, &g, 0, &mut fast), Ok(Some(msg(p).to_vec())));
        }
        assert!(
            !w.refresh(&mut alive),
            "the slow reader still holds the ring"
        );
        assert_eq!(w.slowest(), Some(1));
        assert_eq!(read(&m, &g, 1, &mut slow), Ok(Some(msg(0).to_vec())));
        assert!(w.refresh(&mut alive));
        w.write(&msg(pos));
        for p in 1..5 {
            assert_eq!(read(&m, &g, 1, &mut slow), Ok(Some(msg(p).to_vec())));
        }
        assert_eq!(read(&m, &g, 0, &mut fast), Ok(Some(msg(4).to_vec())));
        assert_eq!(read(&m, &g, 0, &mut fast), Ok(None));
    }

    #[test]
    fn a_dead_reader_stops_holding_the_writer_back() {
        let g = geometry(2, 2, 0, false);
        let m = mem(2, 2);
        let mut w = Writer::new(m.clone(), g).unwrap();
        join(&m, &g, 0, 7, 0);
        for p in 0..2 {
            assert!(w.has_room_cached() || w.refresh(&mut alive));
            w.write(&msg(p));
        }
        assert!(!w.refresh(&mut alive));
        // The handle's liveness check says token 7 is gone.
        assert!(w.refresh(&mut |_, t| t != 7));
    }

    #[test]
    fn overwrite_reports_exactly_what_was_missed() {
        let g = geometry(4, 1, 0, true);
        let m = mem(4, 1);
        let mut w = Writer::new(m.clone(), g).unwrap();
        let mut c = join(&m, &g, 0, 1, 0);
        for p in 0..10 {
            assert!(w.has_room_cached());
            w.write(&msg(p));
        }
        // Positions 6..10 are held; 0..6 were overwritten.
        assert_eq!(read(&m, &g, 0, &mut c), Err(7));
        let mut got = Vec::new();
        while let Ok(Some(b)) = read(&m, &g, 0, &mut c) {
            got.push(b[0]);
        }
        assert_eq!(got, vec![7, 8, 9]);
    }

    #[test]
    fn a_joiner_gets_exactly_the_history_it_asks_for() {
        for overwrite in [false, true] {
            let g = geometry(8, 2, 4, overwrite);
            let m = mem(8, 2);
            let mut w = Writer::new(m.clone(), g).unwrap();
            for p in 0..20 {
                assert!(
                    w.has_room_cached() || w.refresh(&mut alive),
                    "no reader: never full"
                );
                w.write(&msg(p));
            }
            let mut c = join(&m, &g, 0, 1, 3);
            let mut got = Vec::new();
            while let Ok(Some(b)) = read(&m, &g, 0, &mut c) {
                got.push(b[0]);
            }
            assert_eq!(got, vec![17, 18, 19], "overwrite: {overwrite}");
            // Asking for more than the history gets the history.
            let mut c = join(&m, &g, 1, 2, 100);
            assert_eq!(c, 16);
            assert_eq!(read(&m, &g, 1, &mut c), Ok(Some(msg(16).to_vec())));
        }
    }

    #[test]
    fn hostile_cursors_are_contained() {
        let g = geometry(4, 2, 0, false);
        let m = mem(4, 2);
        let mut w = Writer::new(m.clone(), g).unwrap();
        join(&m, &g, 0, 1, 0);
        // Far ahead of the tail: counts as caught up.
        m.cursor(0).store(u64::MAX, Ordering::Relaxed);
        for p in 0..8 {
            assert!(w.has_room_cached() || w.refresh(&mut alive));
            w.write(&msg(p));
        }
        // Far behind: holds the writer back (a stalled reader), no panic.
        m.cursor(0).store(0, Ordering::Relaxed);
        assert!(!w.refresh(&mut alive));
        // A stale or hostile tail under a reader whose slot was
        // overwritten: the slot's own sequence says how far to skip.
        let g2 = geometry(2, 1, 0, true);
        let m2 = mem(2, 1);
        let mut w2 = Writer::new(m2.clone(), g2).unwrap();
        for p in 0..4 {
            w2.write(&msg(p));
        }
        m2.tail().store(1, Ordering::Relaxed);
        assert_eq!(topic_ring::look(&m2, &g2, 0), Ok(Look::Lagged(2)));
        // A tail past the limit, or a sequence that is no lap of the
        // reader's position: an error.
        m2.tail().store(u64::MAX, Ordering::Relaxed);
        assert!(topic_ring::look(&m2, &g2, 0).is_err());
        m2.tail().store(4, Ordering::Relaxed);
        m2.seq(0).store(6, Ordering::Relaxed);
        assert!(topic_ring::look(&m2, &g2, 0).is_err());
        m2.seq(0).store(3, Ordering::Relaxed);
        // A length past the slot: an error, not a read out of bounds.
        m2.len(1).store(1 << 20, Ordering::Relaxed);
        assert!(topic_ring::look(&m2, &g2, 3).is_err());
    }

    /// One writer, three readers on threads, Overwrite with a tiny ring:
    /// no read is torn, and each reader's received plus lagged equals the
    /// messages published.
    #[test]
    fn overwrite_with_threads_is_exact_and_never_torn() {
        let total: u64 = if cfg!(miri) { 200 } else { 200_000 };
        let g = geometry(4, 3, 0, true);
        let m = mem(4, 3);
        let starts: Vec<u64> = (0..3).map(|e| join(&m, &g, e, e + 1, 0)).collect();
        let readers: Vec<_> = (0..3u32)
            .map(|e| {
                let m = m.clone();
                let mut c = starts[e as usize];
                std::thread::spawn(move || {
                    let (mut got, mut lost) = (0u64, 0u64);
                    while c < total {
                        match read(&m, &g, e, &mut c) {
                            Ok(Some(b)) => {
                                assert!(b.iter().all(|&x| x == b[0]), "torn: {b:?}");
                                assert_eq!(b[0], (c - 1) as u8);
                                got += 1;
                            }
                            Ok(None) => std::thread::yield_now(),
                            Err(n) => lost += n,
                        }
                    }
                    (got, lost)
                })
            })
            .collect();
        let mut w = Writer::new(m.clone(), g).unwrap();
        for p in 0..total {
            w.write(&msg(p));
        }
        for r in readers {
            let (got, lost) = r.join().unwrap();
            assert_eq!(got + lost, total);
        }
    }

    /// Block with threads: every reader gets every message once, in order.
    #[test]
    fn block_with_threads_delivers_everything_in_order() {
        let total: u64 = if cfg!(miri) { 100 } else { 100_000 };
        let g = geometry(8, 2, 0, false);
        let m = mem(8, 2);
        let starts: Vec<u64> = (0..2).map(|e| join(&m, &g, e, e + 1, 0)).collect();
        let readers: Vec<_> = (0..2u32)
            .map(|e| {
                let m = m.clone();
                let mut c = starts[e as usize];
                std::thread::spawn(move || {
                    let mut next = 0u64;
                    while next < total {
                        match read(&m, &g, e, &mut c) {
                            Ok(Some(b)) => {
                                assert_eq!(b, msg(next).to_vec());
                                next += 1;
                            }
                            Ok(None) => std::thread::yield_now(),
                            Err(n) => panic!("lagged {n} under Block"),
                        }
                    }
                })
            })
            .collect();
        let mut w = Writer::new(m.clone(), g).unwrap();
        for p in 0..total {
            while !(w.has_room_cached() || w.refresh(&mut alive)) {
                std::thread::yield_now();
            }
            w.write(&msg(p));
        }
        for r in readers {
            r.join().unwrap();
        }
    }
}

#[cfg(loom)]
mod loom_models {
    use super::*;

    /// Block, two slots, one reader: three messages arrive whole, in order,
    /// and the writer never overwrites one the reader has not passed.
    #[test]
    fn topic_publish_block() {
        let mut b = loom::model::Builder::new();
        b.preemption_bound = Some(3);
        b.check(|| {
            let g = geometry(2, 1, 0, false);
            let m = mem(2, 1);
            let mut c = join(&m, &g, 0, 1, 0);
            let wm = m.clone();
            let t = loom::thread::spawn(move || {
                let mut w = Writer::new(wm, g).unwrap();
                for p in 0..3 {
                    while !(w.has_room_cached() || w.refresh(&mut alive)) {
                        loom::thread::yield_now();
                    }
                    w.write(&msg(p));
                }
            });
            let mut next = 0;
            while next < 3 {
                match read(&m, &g, 0, &mut c) {
                    Ok(Some(b)) => {
                        assert_eq!(b, msg(next).to_vec());
                        next += 1;
                    }
                    Ok(None) => loom::thread::yield_now(),
                    Err(n) => panic!("lagged {n} under Block"),
                }
            }
            t.join().unwrap();
        });
    }

    /// Overwrite, two slots: the writer laps a reader mid-read. Every
    /// message the reader takes is whole and the right one; taken plus
    /// reported lagged is all three.
    #[test]
    fn topic_overwrite_race() {
        let mut b = loom::model::Builder::new();
        b.preemption_bound = Some(3);
        b.check(|| {
            let g = geometry(2, 1, 0, true);
            let m = mem(2, 1);
            let mut c = join(&m, &g, 0, 1, 0);
            let wm = m.clone();
            let t = loom::thread::spawn(move || {
                let mut w = Writer::new(wm, g).unwrap();
                for p in 0..3 {
                    w.write(&msg(p));
                }
            });
            let (mut got, mut lost) = (0, 0);
            while c < 3 {
                match read(&m, &g, 0, &mut c) {
                    Ok(Some(b)) => {
                        assert_eq!(b, msg(c - 1).to_vec(), "a torn or wrong message");
                        got += 1;
                    }
                    Ok(None) => loom::thread::yield_now(),
                    Err(n) => lost += n,
                }
            }
            t.join().unwrap();
            assert_eq!(got + lost, 3);
        });
    }

    /// A reader joins with history while a Block writer refreshes its
    /// limit: the joiner's start is never overwritten under it (no lag),
    /// whichever side's fence comes first (T4).
    #[test]
    fn topic_join_handshake() {
        let mut b = loom::model::Builder::new();
        b.preemption_bound = Some(2);
        b.check(|| {
            let g = geometry(2, 1, 1, false);
            let m = mem(2, 1);
            let mut w = Writer::new(m.clone(), g).unwrap();
            // One message out: the history the joiner asks for.
            assert!(w.refresh(&mut alive));
            w.write(&msg(0));
            let jm = m.clone();
            let t = loom::thread::spawn(move || {
                let mut c = join(&jm, &g, 0, 1, 1);
                let mut seen = Vec::new();
                for _ in 0..3 {
                    match read(&jm, &g, 0, &mut c) {
                        Ok(Some(b)) => seen.push(b[0]),
                        Ok(None) => loom::thread::yield_now(),
                        Err(n) => panic!("joiner lagged {n} under Block"),
                    }
                }
                seen
            });
            for p in 1..3 {
                if w.has_room_cached() || w.refresh(&mut alive) {
                    w.write(&msg(p));
                }
            }
            let seen = t.join().unwrap();
            // Whatever it saw is consecutive from its start.
            for pair in seen.windows(2) {
                assert_eq!(pair[1], pair[0] + 1);
            }
        });
    }
}

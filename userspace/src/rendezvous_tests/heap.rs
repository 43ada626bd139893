//! The rendezvous over heap memory with threads (also run under Miri), its
//! corruption and dead-party tests, and real processes over a shared
//! anonymous mapping.

#[cfg(not(miri))]
use crate::liveness::test_process::{fork_child, kill, reap};
use crate::rendezvous::{
    init, HeapRendezvous, RdvRecvError, RdvSendError, Rendezvous, RDV_CONTROL_BYTES,
};
use crate::shm::ShmView;
use crate::sync::{AtomicU32, AtomicU64, Ordering};
use crate::wait::WaitStrategy;
use hwlink_hw::{
    hwl_rendezvous, HWL_RDV_CLAIMED, HWL_RDV_FREE, HWL_RDV_RECV_WAITING, HWL_RDV_SEND_WAITING,
};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const STATE: usize = core::mem::offset_of!(hwl_rendezvous, state);

fn state(h: &HeapRendezvous, cell: usize) -> &AtomicU64 {
    h.view().u64_at(STATE + 8 * cell)
}

/// A 32-bit word of the object at `offset` (tests that scribble).
fn word32(h: &HeapRendezvous, offset: usize) -> &AtomicU32 {
    h.view().u32_at(offset)
}

fn kinds(h: &HeapRendezvous, cells: usize) -> Vec<u32> {
    (0..cells)
        .map(|c| state(h, c).load(Ordering::SeqCst) as u32)
        .collect()
}

fn wait_until_some_cell_is(h: &HeapRendezvous, cells: usize, kind: u32) {
    let t0 = Instant::now();
    while !kinds(h, cells).contains(&kind) {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "no cell became {kind}"
        );
        std::thread::yield_now();
    }
}

fn ok() -> Result<(), ()> {
    Ok(())
}

fn strategies() -> [WaitStrategy; 3] {
    [
        WaitStrategy::Park,
        WaitStrategy::SpinPark,
        WaitStrategy::BusyPoll,
    ]
}

/// Whichever side arrives first (the sender posts, or the receiver
/// registers), `send` returns Ok only after the receiver's closure has
/// run: the closure records 1 after a pause, the sender checks it.
#[test]
fn rendezvous_sender_returns_only_after_the_receiver_closure_ran() {
    for sender_first in [true, false] {
        for wait in strategies() {
            let h = Arc::new(HeapRendezvous::new(4, 32));
            let done = Arc::new(AtomicU32::new(0));
            let (h2, done2) = (h.clone(), done.clone());
            let receiver = move || {
                h2.recv_with(
                    |m| {
                        std::thread::sleep(Duration::from_millis(5));
                        done2.store(1, Ordering::Relaxed);
                        m.to_vec()
                    },
                    None,
                    wait,
                    &mut ok,
                )
                .unwrap()
            };
            let (h3, done3) = (h.clone(), done.clone());
            let sender = move || {
                h3.send(b"hello", None, wait, &mut ok).unwrap();
                // Ok means the closure has run (and its store is visible:
                // the ack is a Release/Acquire edge).
                assert_eq!(done3.load(Ordering::Relaxed), 1, "released before receipt");
            };
            let got = if sender_first {
                let s = std::thread::spawn(sender);
                wait_until_some_cell_is(&h, 4, HWL_RDV_SEND_WAITING);
                let got = receiver();
                s.join().unwrap();
                got
            } else {
                let r = std::thread::spawn(receiver);
                wait_until_some_cell_is(&h, 4, HWL_RDV_RECV_WAITING);
                sender();
                r.join().unwrap()
            };
            assert_eq!(got, b"hello");
            assert_eq!(kinds(&h, 4), vec![HWL_RDV_FREE; 4], "every cell freed");
        }
    }
}

#[test]
fn rendezvous_try_send_needs_a_waiting_receiver() {
    let h = Arc::new(HeapRendezvous::new(2, 16));
    assert_eq!(h.try_send(b"x"), Err(RdvSendError::NoReceiver));
    assert_eq!(kinds(&h, 2), vec![HWL_RDV_FREE; 2], "try_send never posts");
    let h2 = h.clone();
    let r =
        std::thread::spawn(move || h2.recv_with(|m| m.to_vec(), None, WaitStrategy::Park, &mut ok));
    wait_until_some_cell_is(&h, 2, HWL_RDV_RECV_WAITING);
    assert_eq!(h.try_send(b"to you"), Ok(()));
    assert_eq!(r.join().unwrap().unwrap(), b"to you");
    assert_eq!(h.try_send(b"x"), Err(RdvSendError::NoReceiver));
}

#[test]
fn rendezvous_try_recv_needs_a_waiting_sender() {
    let h = Arc::new(HeapRendezvous::new(2, 16));
    let mut ran = false;
    assert_eq!(h.try_recv_with(|_| ran = true), Err(RdvRecvError::NoSender));
    assert!(!ran);
    let h2 = h.clone();
    let s = std::thread::spawn(move || h2.send(b"posted", None, WaitStrategy::Park, &mut ok));
    wait_until_some_cell_is(&h, 2, HWL_RDV_SEND_WAITING);
    assert_eq!(h.try_recv_with(|m| m.to_vec()).unwrap(), b"posted");
    assert_eq!(s.join().unwrap(), Ok(()));
}

#[test]
fn rendezvous_timeouts_return_nothing_and_free_the_cell() {
    let h = HeapRendezvous::new(2, 16);
    for wait in strategies() {
        let t0 = Instant::now();
        let deadline = Some(t0 + Duration::from_millis(20));
        assert_eq!(
            h.recv_with(|m| m.to_vec(), deadline, wait, &mut ok),
            Err(RdvRecvError::Timeout)
        );
        assert!(t0.elapsed() >= Duration::from_millis(20));
        assert_eq!(kinds(&h, 2), vec![HWL_RDV_FREE; 2]);
        let t0 = Instant::now();
        let deadline = Some(t0 + Duration::from_millis(20));
        assert_eq!(
            h.send(b"late", deadline, wait, &mut ok),
            Err(RdvSendError::Timeout)
        );
        assert!(t0.elapsed() >= Duration::from_millis(20));
        assert_eq!(kinds(&h, 2), vec![HWL_RDV_FREE; 2]);
        // The withdrawn message is not left behind for a receiver.
        assert_eq!(h.try_recv_with(|_| ()), Err(RdvRecvError::NoSender));
    }
}

#[test]
fn rendezvous_hook_errors_end_the_wait() {
    let h = HeapRendezvous::new(2, 16);
    let mut calls = 0;
    let mut gone = || {
        calls += 1;
        Err("peer gone")
    };
    assert_eq!(
        h.send(b"m", None, WaitStrategy::Park, &mut gone),
        Err(RdvSendError::Peer("peer gone"))
    );
    assert!(calls >= 1);
    assert_eq!(
        h.recv_with(|_| (), None, WaitStrategy::SpinPark, &mut || Err(7)),
        Err(RdvRecvError::Peer(7))
    );
    assert_eq!(kinds(&h, 2), vec![HWL_RDV_FREE; 2]);
}

#[test]
fn rendezvous_too_large_is_refused() {
    let h = HeapRendezvous::new(1, 8);
    assert_eq!(h.slot_size(), 8);
    assert_eq!(
        h.try_send(&[0; 9]),
        Err(RdvSendError::TooLarge { len: 9, max: 8 })
    );
    assert_eq!(
        h.send(&[0; 9], None, WaitStrategy::Park, &mut ok),
        Err(RdvSendError::TooLarge { len: 9, max: 8 })
    );
}

/// A tiny xorshift generator: the stress test's random choices.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// N senders and M receivers on few cells, with random deadlines and
/// strategies: every message a sender saw delivered (`Ok`) was received
/// exactly once, and no message whose send failed was received.
#[test]
fn rendezvous_stress_exactly_once_with_random_timeouts() {
    let (senders, receivers, per_sender, cells) = if cfg!(miri) {
        (2u64, 2, 6u64, 2)
    } else {
        (4, 4, 400, 3)
    };
    // Miri runs a thousand times slower: stretch the deadlines.
    let slow: u32 = if cfg!(miri) { 100 } else { 1 };
    let h = Arc::new(HeapRendezvous::new(cells, 16));
    let received = Arc::new(Mutex::new(Vec::new()));
    let senders_left = Arc::new(AtomicU32::new(senders as u32));
    let mut threads = Vec::new();
    for r in 0..receivers {
        let (h, received, left) = (h.clone(), received.clone(), senders_left.clone());
        threads.push(std::thread::spawn(move || {
            let mut rng = Rng(0x9E37_79B9 + r);
            let mut got = Vec::new();
            while left.load(Ordering::SeqCst) > 0 {
                let wait = strategies()[(rng.next() % 3) as usize];
                let deadline = match rng.next() % 4 {
                    0 => Some(Instant::now()),
                    1 => Some(Instant::now() + Duration::from_micros(rng.next() % 2000) * slow),
                    _ => Some(Instant::now() + Duration::from_millis(5) * slow),
                };
                let res = if rng.next() % 5 == 0 {
                    h.try_recv_with(|m| u64::from_le_bytes(m.read_array(0).unwrap()))
                        .map_err(|e| format!("{e:?}"))
                } else {
                    h.recv_with(
                        |m| u64::from_le_bytes(m.read_array(0).unwrap()),
                        deadline,
                        wait,
                        &mut ok,
                    )
                    .map_err(|e| format!("{e:?}"))
                };
                match res {
                    Ok(id) => got.push(id),
                    Err(e) => assert!(e == "Timeout" || e == "NoSender", "{e}"),
                }
            }
            received.lock().unwrap().extend(got);
        }));
    }
    let mut sent_threads = Vec::new();
    for s in 0..senders {
        let (h, left) = (h.clone(), senders_left.clone());
        sent_threads.push(std::thread::spawn(move || {
            let mut rng = Rng(0x51_7CC1_B727 + s);
            let mut delivered = Vec::new();
            for i in 0..per_sender {
                let id = s << 32 | i;
                let wait = strategies()[(rng.next() % 3) as usize];
                let res = match rng.next() % 5 {
                    0 => h.try_send(&id.to_le_bytes()).map_err(|e| format!("{e:?}")),
                    1 => h
                        .send(&id.to_le_bytes(), Some(Instant::now()), wait, &mut ok)
                        .map_err(|e| format!("{e:?}")),
                    // No deadline: the receivers keep receiving until
                    // every sender is done, so this is always delivered.
                    2 => h
                        .send(&id.to_le_bytes(), None, wait, &mut ok)
                        .map_err(|e| format!("{e:?}")),
                    _ => {
                        let deadline =
                            Instant::now() + Duration::from_micros(rng.next() % 3000) * slow;
                        h.send(&id.to_le_bytes(), Some(deadline), wait, &mut ok)
                            .map_err(|e| format!("{e:?}"))
                    }
                };
                match res {
                    Ok(()) => delivered.push(id),
                    Err(e) => assert!(e == "Timeout" || e == "NoReceiver", "{e}"),
                }
            }
            left.fetch_sub(1, Ordering::SeqCst);
            delivered
        }));
    }
    let mut delivered: Vec<u64> = Vec::new();
    for t in sent_threads {
        delivered.extend(t.join().unwrap());
    }
    for t in threads {
        t.join().unwrap();
    }
    let mut received = received.lock().unwrap().clone();
    let unique: HashSet<u64> = received.iter().copied().collect();
    assert_eq!(unique.len(), received.len(), "a message was received twice");
    received.sort_unstable();
    delivered.sort_unstable();
    assert_eq!(
        received, delivered,
        "received set != set the senders saw delivered"
    );
    assert!(!delivered.is_empty(), "the stress test delivered nothing");
    assert_eq!(
        kinds(&h, cells as usize),
        vec![HWL_RDV_FREE; cells as usize]
    );
}

#[test]
fn rendezvous_corrupt_state_words_are_errors() {
    let h = HeapRendezvous::new(2, 16);
    // An unknown state.
    state(&h, 1).store(77, Ordering::SeqCst);
    assert!(matches!(h.try_send(b"x"), Err(RdvSendError::Corrupt(_))));
    assert!(matches!(
        h.try_recv_with(|_| ()),
        Err(RdvRecvError::Corrupt(_))
    ));
    assert!(matches!(
        h.send(b"x", Some(Instant::now()), WaitStrategy::Park, &mut ok),
        Err(RdvSendError::Corrupt(_))
    ));
    assert!(matches!(
        h.recv_with(|_| (), Some(Instant::now()), WaitStrategy::Park, &mut ok),
        Err(RdvRecvError::Corrupt(_))
    ));
    // FREE with a token in the high half.
    state(&h, 1).store(5 << 32, Ordering::SeqCst);
    let e = h.try_send(b"x").unwrap_err();
    assert!(
        matches!(e, RdvSendError::Corrupt(c) if c.what == "process token in a free rendezvous cell")
    );
}

#[test]
fn rendezvous_length_beyond_the_slot_is_corruption() {
    let h = HeapRendezvous::new(1, 16);
    let cell = RDV_CONTROL_BYTES as usize;
    let len = cell + core::mem::offset_of!(hwlink_hw::hwl_rdv_cell, len);
    // A hostile "sender" posts a message claiming 17 bytes.
    word32(&h, len).store(17, Ordering::SeqCst);
    state(&h, 0).store(
        u64::from(HWL_RDV_SEND_WAITING) | (u64::from(crate::liveness::my_token()) << 32),
        Ordering::SeqCst,
    );
    let mut ran = false;
    let e = h.try_recv_with(|_| ran = true).unwrap_err();
    assert!(!ran, "the closure must not see an oversized message");
    match e {
        RdvRecvError::Corrupt(c) => {
            assert_eq!(
                (c.what, c.value, c.limit),
                ("rendezvous message length", 17, 16)
            )
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(kinds(&h, 1), vec![HWL_RDV_FREE], "the cell was given up");
}

#[test]
fn rendezvous_bad_config_is_refused() {
    let cells = 2u32;
    let len = crate::rendezvous::rendezvous_bytes(cells, 16).unwrap() as usize;
    let mem = ShmView::heap(len + 64);
    let word = |offset: usize| -> &AtomicU32 { mem.u32_at(offset) };
    let open = |len: usize| Rendezvous::from_view(mem.sub(0, len).unwrap()).map(drop);
    let whole = mem.sub(0, len).unwrap();
    init(&whole, cells, 16).unwrap();
    open(len).unwrap();
    assert!(open(len - 1).is_err(), "object too short for its cells");
    assert!(open(100).is_err(), "object too short for the control block");
    use core::mem::offset_of;
    let tamper = |offset: usize, value: u32, what: &str| {
        let old = word(offset).swap(value, Ordering::SeqCst);
        let e = open(len).unwrap_err();
        assert!(e.what.contains(what), "{e:?} for {what}");
        word(offset).store(old, Ordering::SeqCst);
    };
    tamper(offset_of!(hwl_rendezvous, cells), 0, "cells");
    tamper(offset_of!(hwl_rendezvous, cells), 65, "cells");
    tamper(offset_of!(hwl_rendezvous, slot_size), u32::MAX, "slot size");
    tamper(offset_of!(hwl_rendezvous, slot_size), 100, "stride");
    tamper(offset_of!(hwl_rendezvous, cell_stride), 64, "stride");
    tamper(offset_of!(hwl_rendezvous, flags), 1, "flags");
    tamper(offset_of!(hwl_rendezvous, cells_offset), 64, "cells offset");
    // Misaligned and wrong-shape creation (these fail before writing
    // anything).
    let misaligned = mem.sub(8, len).unwrap();
    assert!(init(&misaligned, cells, 16).is_err());
    assert!(init(&whole, 0, 16).is_err());
    assert!(init(&whole, 65, 16).is_err());
    assert!(init(&whole, cells, 1000).is_err());
    assert!(Rendezvous::from_view(misaligned).is_err());
}

/// A process token that names no running process: no liveness file
/// has it.
#[cfg(not(miri))]
fn dead_token() -> u32 {
    (0xdead_0001u32..)
        .find(|&t| hwlink_drivers::process::Watch::open(t).is_none())
        .unwrap()
}

/// A receiver that was killed while registered cannot swallow a message:
/// the sender finds it dead before parking, reclaims the message and
/// reports that nobody is waiting; the cell is free again.
#[cfg(not(miri))]
#[test]
fn rendezvous_dead_receiver_does_not_swallow_the_message() {
    let h = HeapRendezvous::new(1, 16);
    let dead = dead_token();
    let cell = RDV_CONTROL_BYTES as usize;
    word32(&h, cell).store(dead, Ordering::SeqCst); // owner
    state(&h, 0).store(
        u64::from(HWL_RDV_RECV_WAITING) | (u64::from(dead) << 32),
        Ordering::SeqCst,
    );
    let t0 = Instant::now();
    assert_eq!(h.try_send(b"lost?"), Err(RdvSendError::NoReceiver));
    assert!(t0.elapsed() < Duration::from_secs(1));
    assert_eq!(kinds(&h, 1), vec![HWL_RDV_FREE]);
    // A blocking send retries, posts, and is then taken normally.
    state(&h, 0).store(
        u64::from(HWL_RDV_RECV_WAITING) | (u64::from(dead) << 32),
        Ordering::SeqCst,
    );
    let h = Arc::new(h);
    let h2 = h.clone();
    let s = std::thread::spawn(move || h2.send(b"again", None, WaitStrategy::Park, &mut ok));
    wait_until_some_cell_is(&h, 1, HWL_RDV_SEND_WAITING);
    assert_eq!(h.try_recv_with(|m| m.to_vec()).unwrap(), b"again");
    assert_eq!(s.join().unwrap(), Ok(()));
}

/// Cells held by a dead process are reaped while every cell is busy.
#[cfg(not(miri))]
#[test]
fn rendezvous_dead_owners_are_reaped_when_cells_run_out() {
    let h = Arc::new(HeapRendezvous::new(1, 16));
    let dead = dead_token();
    state(&h, 0).store(
        u64::from(HWL_RDV_CLAIMED) | (u64::from(dead) << 32),
        Ordering::SeqCst,
    );
    let h2 = h.clone();
    let r =
        std::thread::spawn(move || h2.recv_with(|m| m.to_vec(), None, WaitStrategy::Park, &mut ok));
    // The receiver reaps the dead claim and registers.
    wait_until_some_cell_is(&h, 1, HWL_RDV_RECV_WAITING);
    assert_eq!(h.try_send(b"reaped"), Ok(()));
    assert_eq!(r.join().unwrap().unwrap(), b"reaped");
}

/// Opens the rendezvous object in a shared mapping.
#[cfg(not(miri))]
fn open_shared(map: &ShmView) -> Rendezvous {
    Rendezvous::from_view(map.clone()).unwrap()
}

/// Real processes: a forked receiver takes 200 messages in order (each
/// send waits for its receipt). Then a receiver is SIGKILLed inside its
/// closure while the sender waits for the ack: the sender finds it dead,
/// reclaims the message and reports "not delivered" (Timeout, since
/// nobody else receives before the deadline), and every cell ends FREE.
#[cfg(not(miri))]
#[test]
fn rendezvous_across_processes_and_a_killed_receiver() {
    if hwlink_drivers::qemu::skip_under_qemu(
        "rendezvous_tests::heap::rendezvous_across_processes_and_a_killed_receiver",
        "qemu-user 7.2 aborts (cpu_exec: assertion cpu == current_cpu) when the fork()ed \
         child of a multithreaded process starts a thread (the child's liveness thread)",
    ) {
        return;
    }
    let cells = 4;
    let len = crate::rendezvous::rendezvous_bytes(cells, 64).unwrap() as usize;
    let map = ShmView::shared_anonymous(len);
    // A fresh mapping: nobody else uses it yet.
    init(&map, cells, 64).unwrap();
    let n = 200u32;
    let child = fork_child(|| {
        let rdv = open_shared(&map);
        let deadline = Some(Instant::now() + Duration::from_secs(20));
        (0..n).all(|i| {
            rdv.recv_with(
                |m| m == i.to_le_bytes(),
                deadline,
                WaitStrategy::SpinPark,
                &mut ok,
            ) == Ok(true)
        })
    });
    let rdv = open_shared(&map);
    let deadline = Some(Instant::now() + Duration::from_secs(20));
    for i in 0..n {
        assert_eq!(
            rdv.send(&i.to_le_bytes(), deadline, WaitStrategy::SpinPark, &mut ok),
            Ok(())
        );
    }
    assert_eq!(reap(child), 0, "the receiving child failed");

    // A receiver that dies inside its closure, before acknowledging.
    let child = fork_child(|| {
        let rdv = open_shared(&map);
        let _ = rdv.recv_with(
            |_| loop {
                std::thread::sleep(Duration::from_secs(1));
            },
            None,
            WaitStrategy::Park,
            &mut ok,
        );
        true
    });
    let killer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(200));
        kill(child);
        reap(child)
    });
    let t0 = Instant::now();
    let deadline = Some(t0 + Duration::from_secs(2));
    assert_eq!(
        rdv.send(b"swallowed?", deadline, WaitStrategy::Park, &mut ok),
        Err(RdvSendError::Timeout),
        "a killed receiver must not count as a delivery"
    );
    assert!(t0.elapsed() < Duration::from_secs(3));
    let status = killer.join().unwrap();
    assert!(libc::WIFSIGNALED(status), "the child was killed");
    let states = core::mem::offset_of!(hwl_rendezvous, state);
    for cell in 0..cells as usize {
        let w = map.u64_at(states + 8 * cell);
        assert_eq!(w.load(Ordering::SeqCst), 0, "cell {cell} left busy");
    }
    drop(rdv);
}

/// Another handle, as another process would open it, shares the object.
#[test]
fn rendezvous_two_handles_meet() {
    let h = Arc::new(HeapRendezvous::new(2, 16));
    let h2 = h.clone();
    let r = std::thread::spawn(move || {
        let other = h2.open_again().unwrap();
        other.recv_with(|m| m.to_vec(), None, WaitStrategy::SpinPark, &mut ok)
    });
    h.send(b"across", None, WaitStrategy::SpinPark, &mut ok)
        .unwrap();
    assert_eq!(r.join().unwrap().unwrap(), b"across");
}

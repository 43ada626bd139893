//! Select within one process (threads as peers): the index and message
//! reported, fairness, timeouts, waking a parked select, sends, a peer
//! gone. Between processes: `tests/readiness.rs`.

use super::*;
use crate::{LinkBuilder, Receiver, Sender};
use crate::sync::{AtomicU32 as Counter, Ordering as O};

fn links(tag: &str, n: usize, wait: WaitStrategy) -> (Vec<Sender>, Vec<Receiver>) {
    static NEXT: Counter = Counter::new(0);
    (0..n)
        .map(|_| {
            let name = format!(
                "sel{}-{tag}-{}",
                std::process::id(),
                NEXT.fetch_add(1, O::Relaxed)
            );
            let b = LinkBuilder::new(name)
                .capacity(8)
                .slot_size(64)
                .wait(wait)
                .backend(hwlink_drivers::Backend::Shm);
            let rx = b.create_receiver().unwrap();
            let tx = b.open_sender().unwrap();
            (tx, rx)
        })
        .unzip()
}

#[test]
fn reports_the_end_the_message_came_on() {
    let (mut txs, mut rxs) = links("index", 4, WaitStrategy::SpinPark);
    for round in 0..20usize {
        let k = round % 4;
        txs[k].send([round as u8]).unwrap();
        let mut sel = Select::new();
        let idx: Vec<usize> = rxs.iter_mut().map(|r| sel.recv(r)).collect();
        let done = sel.select();
        assert_eq!(done.index, idx[k]);
        assert_eq!(done.into_message().unwrap(), vec![round as u8]);
    }
    let mut sel = Select::new();
    for r in rxs.iter_mut() {
        sel.recv(r);
    }
    assert_eq!(sel.try_select().unwrap_err(), SelectError::WouldBlock);
    let t = Instant::now();
    assert_eq!(
        sel.select_timeout(Duration::from_millis(30)).unwrap_err(),
        SelectError::Timeout
    );
    assert!(t.elapsed() >= Duration::from_millis(30));
}

#[test]
fn every_ready_end_is_served_in_turn() {
    let (mut txs, mut rxs) = links("fair", 3, WaitStrategy::BusyPoll);
    // Every link full (8 each): one select served 24 times must go round
    // robin, never twice in a row to one end while another is ready.
    for tx in txs.iter_mut() {
        while tx.try_send([1]).is_ok() {}
    }
    let mut sel = Select::new();
    for r in rxs.iter_mut() {
        sel.recv(r);
    }
    let order: Vec<usize> = (0..24).map(|_| sel.select().index).collect();
    let expected: Vec<usize> = (0..24).map(|i| i % 3).collect();
    assert_eq!(order, expected, "round robin over ready ends");
    assert_eq!(sel.try_select().unwrap_err(), SelectError::WouldBlock);
}

#[test]
fn a_parked_select_wakes_for_any_end() {
    for wait in [WaitStrategy::Park, WaitStrategy::SpinPark] {
        let (txs, mut rxs) = links("park", 4, wait);
        let feeder = std::thread::spawn(move || {
            let mut txs = txs;
            for i in 0..40u8 {
                std::thread::sleep(Duration::from_millis(2));
                txs[usize::from(i) % 4].send([i]).unwrap();
            }
            txs
        });
        let mut got = Vec::new();
        let mut sel = Select::new();
        for r in rxs.iter_mut() {
            sel.recv(r);
        }
        assert_eq!(sel.strategy(), wait);
        while got.len() < 40 {
            let done = sel.select_timeout(Duration::from_secs(10)).unwrap();
            let m = done.into_message().unwrap();
            got.push(m[0]);
        }
        got.sort_unstable();
        assert_eq!(got, (0..40).collect::<Vec<u8>>());
        drop(sel);
        let _txs = feeder.join().unwrap();
    }
}

#[test]
fn a_send_completes_once_there_is_room() {
    let (mut txs, mut rxs) = links("send", 2, WaitStrategy::Park);
    // Fill link 0.
    while txs[0].try_send([0]).is_ok() {}
    let mut rx0 = rxs.remove(0);
    let drain = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(20));
        rx0.recv().unwrap();
        rx0
    });
    let mut sel = Select::new();
    let (a, b) = txs.split_at_mut(1);
    let s0 = sel.send(&mut a[0], b"late");
    let r1 = sel.recv(&mut rxs[0]);
    let done = sel.select_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(done.index, s0);
    assert!(matches!(done.outcome, Outcome::Sent));
    assert_ne!(r1, s0);
    drop(sel);
    let _ = b;
    let _ = drain.join().unwrap();
}

#[test]
fn a_closed_peer_completes_the_receive_with_its_error() {
    let (mut txs, mut rxs) = links("gone", 2, WaitStrategy::Park);
    let tx = txs.remove(1);
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(10));
        drop(tx);
    });
    let mut sel = Select::new();
    let (first, second) = rxs.split_at_mut(1);
    let _ = sel.recv(&mut first[0]);
    let gone = sel.recv(&mut second[0]);
    let done = sel.select_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(done.index, gone);
    assert!(matches!(
        done.outcome,
        Outcome::RecvFailed(RecvError::Disconnected)
    ));
}

//! Loom models of the rendezvous hand-off over loom atomics and cells.

use crate::doorbell::Doorbell;
use crate::rendezvous::{Field, Rdv, RdvMem, RdvRecvError, RdvSendError};
use crate::shm::{ShmCells, ShmWord};
use crate::sync::{AtomicU32, AtomicU64, Ordering};
use crate::wait::WaitStrategy;
use crate::ShmSlice;
use std::sync::Arc;
use std::time::Instant;

const PAYLOAD: usize = 8;

/// The words of a rendezvous object as loom atomics, payloads in loom
/// cells (so loom reports any unsynchronised payload access).
struct Words {
    states: Vec<AtomicU64>,
    ticket: AtomicU32,
    /// Per cell: owner, len, ticket, owner count/waiters, peer
    /// count/waiters.
    fields: Vec<[AtomicU32; 7]>,
    bell: [AtomicU32; 2],
    payload: ShmCells,
}

struct ModelMem {
    words: Arc<Words>,
    cells_bell: Doorbell,
    owner: Vec<Doorbell>,
    peer: Vec<Doorbell>,
}

fn model_mem(words: &Arc<Words>) -> ModelMem {
    let w = words.clone();
    // Every word lives in the Arc, which each doorbell keeps.
    let word = |pick: fn(&Words) -> &AtomicU32| ShmWord::owned(w.clone(), pick);
    let cell_word = |c: usize, i: usize| ShmWord::owned(w.clone(), move |w| &w.fields[c][i]);
    let cells = w.fields.len();
    ModelMem {
        cells_bell: Doorbell::new(word(|w| &w.bell[0]), word(|w| &w.bell[1])),
        owner: (0..cells)
            .map(|c| Doorbell::new(cell_word(c, 3), cell_word(c, 4)))
            .collect(),
        peer: (0..cells)
            .map(|c| Doorbell::new(cell_word(c, 5), cell_word(c, 6)))
            .collect(),
        words: w,
    }
}

impl RdvMem for ModelMem {
    fn state(&self, cell: u32) -> &AtomicU64 {
        &self.words.states[cell as usize]
    }
    fn next_ticket(&self) -> &AtomicU32 {
        &self.words.ticket
    }
    fn field(&self, cell: u32, field: Field) -> &AtomicU32 {
        let i = match field {
            Field::Owner => 0,
            Field::Len => 1,
            Field::Ticket => 2,
        };
        &self.words.fields[cell as usize][i]
    }
    fn cells_bell(&self) -> &Doorbell {
        &self.cells_bell
    }
    fn owner_bell(&self, cell: u32) -> &Doorbell {
        &self.owner[cell as usize]
    }
    fn peer_bell(&self, cell: u32) -> &Doorbell {
        &self.peer[cell as usize]
    }
    fn write_payload(&self, cell: u32, msg: &[u8]) {
        // loom checks this access is exclusive.
        self.words.payload.with_mut(cell as usize, |mut p| {
            assert!(p.write_at(0, msg), "message longer than a cell")
        })
    }
    fn read_payload<R>(&self, cell: u32, len: usize, f: impl FnOnce(ShmSlice<'_>) -> R) -> R {
        // loom checks this access is ordered after the write.
        self.words.payload.with(cell as usize, |p| {
            f(p.sub(0, len).expect("length within a cell"))
        })
    }
}

fn words(cells: usize) -> Arc<Words> {
    Arc::new(Words {
        states: (0..cells).map(|_| AtomicU64::new(0)).collect(),
        ticket: AtomicU32::new(0),
        fields: (0..cells).map(|_| Default::default()).collect(),
        bell: Default::default(),
        payload: ShmCells::new(cells, PAYLOAD),
    })
}

/// Every party of a model is the same (live) process.
fn handle(w: &Arc<Words>, cells: u32) -> Rdv<ModelMem> {
    Rdv::with_parts(model_mem(w), cells, PAYLOAD as u32, 1, |_| true)
}

fn ok() -> Result<(), ()> {
    Ok(())
}

/// One blocking sender, one blocking receiver (both parking): the
/// message arrives intact (loom checks the payload accesses are
/// ordered), the sender returns only after the receiver's closure ran,
/// no wake-up is lost (that would deadlock the model), and both cells
/// end FREE.
#[test]
fn loom_rendezvous_blocking_handoff() {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(3);
    let runs = Arc::new(crate::sync::unmodelled::AtomicUsize::new(0));
    let counter = runs.clone();
    builder.check(move || {
        counter.fetch_add(1, crate::sync::unmodelled::Ordering::Relaxed);
        let w = words(2);
        let seen = Arc::new(AtomicU32::new(0));
        let (w2, seen2) = (w.clone(), seen.clone());
        let t = loom::thread::spawn(move || {
            let rx = handle(&w2, 2);
            rx.recv_with(
                |m| {
                    seen2.store(1, Ordering::Relaxed);
                    m.to_vec()
                },
                None,
                WaitStrategy::Park,
                &mut ok,
            )
            .unwrap()
        });
        let tx = handle(&w, 2);
        tx.send(b"abc", None, WaitStrategy::Park, &mut ok).unwrap();
        assert_eq!(
            seen.load(Ordering::Relaxed),
            1,
            "sender released before receipt"
        );
        assert_eq!(t.join().unwrap(), b"abc");
        for s in &w.states {
            assert_eq!(s.load(Ordering::Relaxed), 0, "cell left busy");
        }
    });
    eprintln!("loom_rendezvous_blocking_handoff: {runs:?} executions");
}

/// A sender and a receiver whose deadlines have both already passed
/// race: either both see the hand-off (send Ok and the message
/// received, once) or neither does. Never one without the other.
#[test]
fn loom_rendezvous_timeout_races_take() {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(3);
    let runs = Arc::new(crate::sync::unmodelled::AtomicUsize::new(0));
    let counter = runs.clone();
    // Which outcomes the model reached: [not delivered, delivered].
    let outcomes = Arc::new([
        crate::sync::unmodelled::AtomicBool::new(false),
        crate::sync::unmodelled::AtomicBool::new(false),
    ]);
    let reached = outcomes.clone();
    builder.check(move || {
        counter.fetch_add(1, crate::sync::unmodelled::Ordering::Relaxed);
        let w = words(2);
        let w2 = w.clone();
        let t = loom::thread::spawn(move || {
            let rx = handle(&w2, 2);
            match rx.recv_with(
                |m| m.to_vec(),
                Some(Instant::now()),
                WaitStrategy::Park,
                &mut ok,
            ) {
                Ok(m) => Some(m),
                Err(RdvRecvError::Timeout) => None,
                Err(e) => panic!("{e:?}"),
            }
        });
        let tx = handle(&w, 2);
        let sent = match tx.send(b"xy", Some(Instant::now()), WaitStrategy::Park, &mut ok) {
            Ok(()) => true,
            Err(RdvSendError::Timeout) => false,
            Err(e) => panic!("{e:?}"),
        };
        let got = t.join().unwrap();
        assert_eq!(sent, got.is_some(), "delivered {sent} but received {got:?}");
        if let Some(m) = got {
            assert_eq!(m, b"xy");
        }
        reached[usize::from(sent)].store(true, crate::sync::unmodelled::Ordering::Relaxed);
        for s in &w.states {
            assert_eq!(s.load(Ordering::Relaxed), 0, "cell left busy");
        }
    });
    eprintln!("loom_rendezvous_timeout_races_take: {runs:?} executions");
    assert!(
        outcomes
            .iter()
            .all(|o| o.load(crate::sync::unmodelled::Ordering::Relaxed)),
        "the model must reach both a delivery and a withdrawal"
    );
}

/// `try_send` against a receiver whose deadline has already passed:
/// try_send succeeds exactly when the receiver received the message
/// (it may only fill a registered cell, and the receiver's cancel and
/// the sender's claim are decided by one compare-exchange); a failed
/// try_send leaves nothing behind.
#[test]
fn loom_rendezvous_try_send_races_receiver_timeout() {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(3);
    let runs = Arc::new(crate::sync::unmodelled::AtomicUsize::new(0));
    let counter = runs.clone();
    let delivered = Arc::new(crate::sync::unmodelled::AtomicBool::new(false));
    let seen_delivery = delivered.clone();
    builder.check(move || {
        counter.fetch_add(1, crate::sync::unmodelled::Ordering::Relaxed);
        let w = words(2);
        let w2 = w.clone();
        let t = loom::thread::spawn(move || match handle(&w2, 2).try_send(b"t") {
            Ok(()) => true,
            Err(RdvSendError::NoReceiver) => false,
            Err(e) => panic!("{e:?}"),
        });
        let rx = handle(&w, 2);
        let got = match rx.recv_with(
            |m| m.to_vec(),
            Some(Instant::now()),
            WaitStrategy::Park,
            &mut ok,
        ) {
            Ok(m) => Some(m),
            Err(RdvRecvError::Timeout) => None,
            Err(e) => panic!("{e:?}"),
        };
        let sent = t.join().unwrap();
        assert_eq!(sent, got.is_some(), "delivered {sent} but received {got:?}");
        if got.is_some() {
            seen_delivery.store(true, crate::sync::unmodelled::Ordering::Relaxed);
        }
        for s in &w.states {
            assert_eq!(s.load(Ordering::Relaxed), 0, "cell left busy");
        }
    });
    assert!(
        delivered.load(crate::sync::unmodelled::Ordering::Relaxed),
        "the model never explored a delivery"
    );
    eprintln!("loom_rendezvous_try_send_races_receiver_timeout: {runs:?} executions");
}

/// Three parties: a blocking sender, a blocking receiver and a receiver
/// whose deadline has passed. The message is received exactly once
/// (by either receiver) and the sender returns Ok.
#[test]
fn loom_rendezvous_two_receivers_one_sender() {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(2);
    let runs = Arc::new(crate::sync::unmodelled::AtomicUsize::new(0));
    let counter = runs.clone();
    // Which receiver got the message: [the blocking one, the late one].
    let outcomes = Arc::new([
        crate::sync::unmodelled::AtomicBool::new(false),
        crate::sync::unmodelled::AtomicBool::new(false),
    ]);
    let reached = outcomes.clone();
    builder.check(move || {
        counter.fetch_add(1, crate::sync::unmodelled::Ordering::Relaxed);
        let w = words(2);
        let w2 = w.clone();
        let late = loom::thread::spawn(move || {
            match handle(&w2, 2).recv_with(
                |m| m.to_vec(),
                Some(Instant::now()),
                WaitStrategy::Park,
                &mut ok,
            ) {
                Ok(m) => Some(m),
                Err(RdvRecvError::Timeout) => None,
                Err(e) => panic!("{e:?}"),
            }
        });
        let w3 = w.clone();
        let tx = loom::thread::spawn(move || {
            handle(&w3, 2).send(b"one", None, WaitStrategy::Park, &mut ok)
        });
        let rx = handle(&w, 2);
        let late_got = late.join().unwrap();
        reached[usize::from(late_got.is_some())]
            .store(true, crate::sync::unmodelled::Ordering::Relaxed);
        if late_got.is_none() {
            let got = rx
                .recv_with(|m| m.to_vec(), None, WaitStrategy::Park, &mut ok)
                .unwrap();
            assert_eq!(got, b"one");
        } else {
            assert_eq!(late_got.unwrap(), b"one");
        }
        assert_eq!(tx.join().unwrap(), Ok(()));
        for s in &w.states {
            assert_eq!(s.load(Ordering::Relaxed), 0, "cell left busy");
        }
    });
    eprintln!("loom_rendezvous_two_receivers_one_sender: {runs:?} executions");
    assert!(
        outcomes
            .iter()
            .all(|o| o.load(crate::sync::unmodelled::Ordering::Relaxed)),
        "the model must reach a delivery to each receiver"
    );
}

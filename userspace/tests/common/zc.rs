//! The zero-copy script, shared by the writer and the reader: reserve and
//! commit, commit_len, a dropped reservation, write_batch; peek and
//! release, recv, read_batch.

use super::child::PEER_WAIT;
use super::message::message;
use hwlink::{RecvError, SendError};
use std::time::Duration;

/// Rounds of the zero-copy script.
const ZC_ROUNDS: u64 = 20;

/// The messages the zero-copy writer sends, in order, per round `r`:
/// `[reserve+commit, reserve+commit_len(10), batch x5 (3 push + 2 slot)]`;
/// the dropped reservation sends nothing.
fn zc_expected(round: u64) -> Vec<Vec<u8>> {
    let base = round * 100;
    let mut out = vec![message(base)];
    out.push(zc_long(round)[..10].to_vec());
    for k in 0..5 {
        out.push(message(base + 10 + k));
    }
    out
}

/// The 40-byte message of round `r` that is committed with `commit_len(10)`.
fn zc_long(round: u64) -> Vec<u8> {
    (0..40u64).map(|i| (round * 7 + i * 13) as u8).collect()
}

/// Writes the zero-copy script with `tx`.
fn zc_write(tx: &mut hwlink::Sender) {
    for round in 0..ZC_ROUNDS {
        let base = round * 100;
        // reserve + write + commit
        let m = message(base);
        let mut slot = tx.reserve(m.len()).expect("reserve");
        assert_eq!(slot.len(), m.len());
        assert_eq!(slot.copy_from(&m), m.len());
        slot.commit();
        // reserve a whole slot, write 10 bytes, commit_len(10)
        let m = zc_long(round);
        let mut slot = tx.reserve(tx.max_message()).expect("reserve");
        assert!(slot.write_at(0, &m));
        slot.commit_len(10);
        // a reservation dropped without commit sends nothing
        {
            let mut slot = tx.reserve(32).expect("reserve");
            slot.copy_from(&[0xee; 32]);
        }
        // a batch: 3 pushes and 2 in-place slots, one commit
        let mut written = 0;
        while written < 5 {
            let mut batch = tx.write_batch(5 - written).expect("write_batch");
            assert!(batch.remaining() >= 1 && batch.remaining() <= 5 - written);
            let mut n = 0;
            while batch.remaining() > 0 {
                let k = (written + n) as u64;
                let m = message(base + 10 + k);
                if k < 3 {
                    batch.push(&m[..]).expect("push");
                } else {
                    let mut s = batch.slot(m.len()).expect("slot");
                    s.copy_from(&m);
                }
                n += 1;
            }
            // A full batch hands the message back.
            match batch.push(&b"extra"[..]) {
                Err(SendError::Full(m)) => assert_eq!(m, b"extra"),
                other => panic!("push on a full batch: {other:?}"),
            }
            assert!(batch.slot(1).is_none(), "slot on a full batch");
            assert_eq!(batch.commit(), n);
            written += n;
        }
    }
}

/// Reads the zero-copy script with `rx`: peek (and peek again without
/// release), recv, and read_batch.
fn zc_read(rx: &mut hwlink::Receiver) {
    for round in 0..ZC_ROUNDS {
        let want = zc_expected(round);
        // peek without release: the message is seen again
        {
            let p = rx.peek().expect("peek");
            assert_eq!(p.to_vec(), want[0], "round {round}: first peek");
        }
        let p = rx.peek().expect("peek again");
        assert_eq!(p.to_vec(), want[0], "round {round}: second peek");
        p.release();
        // commit_len(10)
        let m = rx.recv_timeout(PEER_WAIT).expect("recv");
        assert_eq!(m, want[1], "round {round}: commit_len message");
        // then the 5 batch messages, through read_batch
        let mut got: Vec<Vec<u8>> = Vec::new();
        while got.len() < 5 {
            let batch = rx.read_batch(5 - got.len()).expect("read_batch");
            assert!(!batch.is_empty() && batch.len() <= 5 - got.len());
            // A batch not released is seen again.
            let first = batch.get(0).expect("get").to_vec();
            let _ = batch; // not released
            let batch = rx.read_batch(5 - got.len()).expect("read_batch");
            assert_eq!(batch.get(0).unwrap().to_vec(), first, "unreleased batch");
            for m in batch.iter() {
                got.push(m.expect("batch message").to_vec());
            }
            batch.release();
        }
        assert_eq!(&got[..], &want[2..], "round {round}: batch messages");
    }
}

/// How the two sides of the script, each in its own process, tell each
/// other where they are: the parent through its `Peer`, a child through
/// its `Ctx`. The same two sides run in either process.
pub trait Chan {
    /// Tells the other side `word`.
    fn tell(&mut self, word: &str);
    /// Waits for `word` from the other side.
    fn hear(&mut self, word: &str);
}

/// The writing side: waits for the reader, writes the script, tells
/// `WRITTEN`, waits until the reader has checked that nothing else came,
/// then closes.
pub fn writer_side(mut tx: hwlink::Sender, ch: &mut impl Chan) {
    ch.hear("READY");
    zc_write(&mut tx);
    ch.tell("WRITTEN");
    ch.hear("CHECKED");
    drop(tx);
}

/// The reading side: nothing before the writer starts; reads the script
/// (peek, peek again without release, recv, read_batch); once the writer
/// has written everything, nothing more is there (the dropped
/// reservations sent nothing); then the writer's close is `Disconnected`.
pub fn reader_side(mut rx: hwlink::Receiver, ch: &mut impl Chan) {
    assert!(matches!(rx.try_peek(), Err(RecvError::Empty)));
    ch.tell("READY");
    zc_read(&mut rx);
    ch.hear("WRITTEN");
    assert_eq!(rx.try_recv(), Err(RecvError::Empty), "after the script");
    ch.tell("CHECKED");
    match rx.recv_timeout(Duration::from_secs(10)) {
        Err(RecvError::Disconnected) => {}
        other => panic!("after the writer closed: {other:?}"),
    }
}

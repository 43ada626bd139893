//! hwlink ends waited on otherwise than by their own receive: a select over four links.
//!
//! `hwlink-select-poll` and `hwlink-select-park`: the measuring side
//! creates [`LINKS`] links to the echo side and sends message `i` on link
//! `i % LINKS`, one message in flight; the echo side waits in one
//! [`hwlink::Select`] over its four receivers (a new `Select` per message,
//! as the API suggests) and replies on one link back. Every end busy-polls
//! or parks, so the rows compare with `hwlink-poll` and `hwlink-park`'s
//! single links: what waiting on four ends at once costs. Round trips
//! only: four links carry no order between them, and a stream is verified
//! in order.

use super::hw::{builder, link_err};
use super::{BenchError, ParentSide, PeerSpec, Transport, Workload};
use hwlink::{Outcome, Receiver, Select, Sender};

/// Links the echo side selects over.
pub(super) const LINKS: usize = 4;

/// The measuring side: sends on the links in turn, receives on one.
struct Rotating {
    txs: Vec<Sender>,
    rx: Receiver,
    next: usize,
}

impl Transport for Rotating {
    fn send(&mut self, msg: &[u8]) -> Result<(), BenchError> {
        let k = self.next % self.txs.len();
        self.next = self.next.wrapping_add(1);
        self.txs[k].send(msg).map_err(link_err)
    }
    fn recv(&mut self, buf: &mut [u8]) -> Result<(), BenchError> {
        let n = self.rx.recv_into(buf).map_err(link_err)?;
        expect_len(n, buf.len())
    }
}

/// The echo side: receives through a select over every link, replies on one.
struct Selecting {
    rxs: Vec<Receiver>,
    tx: Sender,
}

impl Transport for Selecting {
    fn send(&mut self, msg: &[u8]) -> Result<(), BenchError> {
        self.tx.send(msg).map_err(link_err)
    }
    fn recv(&mut self, buf: &mut [u8]) -> Result<(), BenchError> {
        let mut sel = Select::new();
        for rx in self.rxs.iter_mut() {
            sel.recv(rx);
        }
        match sel.select().outcome {
            Outcome::Received(m) => {
                expect_len(m.len(), buf.len())?;
                buf.copy_from_slice(&m);
                Ok(())
            }
            Outcome::RecvFailed(e) => Err(link_err(e)),
            other => Err(BenchError::Verify(format!(
                "a select over receives completed {other:?}"
            ))),
        }
    }
}

fn expect_len(n: usize, want: usize) -> Result<(), BenchError> {
    if n == want {
        Ok(())
    } else {
        Err(BenchError::Verify(format!(
            "received {n} bytes, expected {want}"
        )))
    }
}

/// The name of link `k` to the echo side.
fn out_link(k: usize) -> String {
    format!("s{k}")
}

pub(super) fn select_parent(spec: &PeerSpec) -> Result<ParentSide, BenchError> {
    if spec.workload == Workload::Stream {
        return Err(BenchError::Unsupported(
            "round trips only: four links keep no order between them, and a stream is verified in order"
                .into(),
        ));
    }
    let txs = (0..LINKS)
        .map(|k| {
            builder(spec, &out_link(k))
                .create_sender()
                .map_err(link_err)
        })
        .collect::<Result<Vec<_>, _>>()?;
    let rx = builder(spec, "b").create_receiver().map_err(link_err)?;
    Ok(ParentSide::new(Rotating { txs, rx, next: 0 }))
}

pub(super) fn select_child(spec: &PeerSpec) -> Result<Box<dyn Transport>, BenchError> {
    let rxs = (0..LINKS)
        .map(|k| {
            builder(spec, &out_link(k))
                .open_receiver()
                .map_err(link_err)
        })
        .collect::<Result<Vec<_>, _>>()?;
    let tx = builder(spec, "b").open_sender().map_err(link_err)?;
    Ok(Box::new(Selecting { rxs, tx }))
}

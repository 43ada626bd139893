//! hwlink ends waited on otherwise than by their own receive: a select over four links, and epoll on a receiver's descriptor.
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
//!
//! `hwlink-epoll`: one link each way, every end spin-then-park (the
//! default). The echo side (the stream's receiver) never waits in the
//! link: it calls `try_recv_with` and, on `Empty` (which re-arms the
//! receiver's descriptor), sleeps in `epoll_wait` on `rx.as_fd()`, as an
//! event loop would. The measuring side receives the echo with an
//! ordinary spin-then-park `recv_into`, as `hwlink-spin-park` does.

use super::epoll::Epoll;
use super::hw::{builder, link_err};
use super::{BenchError, ParentSide, PeerSpec, Transport, Workload};
use hwlink::{Outcome, ReadinessError, Receiver, RecvError, Select, Sender};
use std::os::fd::AsRawFd;
use std::sync::OnceLock;

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

/// The echo side of `hwlink-epoll` (the receiver of its stream).
struct EpollEcho {
    rx: Receiver,
    /// The reply link (none when streaming).
    tx: Option<Sender>,
    /// Watches `rx`'s descriptor.
    ready: Epoll,
}

impl Transport for EpollEcho {
    fn send(&mut self, msg: &[u8]) -> Result<(), BenchError> {
        let tx = self
            .tx
            .as_mut()
            .ok_or_else(|| link_err("no sending link"))?;
        tx.send(msg).map_err(link_err)
    }
    fn recv(&mut self, buf: &mut [u8]) -> Result<(), BenchError> {
        loop {
            let got = self.rx.try_recv_with(|m| {
                if m.len() == buf.len() {
                    m.copy_to(buf);
                }
                m.len()
            });
            match got {
                Ok(n) => return expect_len(n, buf.len()),
                // The attempt re-armed the descriptor.
                Err(RecvError::Empty) => self.ready.wait()?,
                Err(e) => return Err(link_err(e)),
            }
        }
    }
}

/// A descriptor the kernel cannot give is a skip with the reason.
pub(super) fn readiness_err(e: ReadinessError) -> BenchError {
    match e {
        ReadinessError::Unsupported { .. } => BenchError::Unsupported(e.to_string()),
        other => link_err(other),
    }
}

/// `hwlink-epoll`'s echo side; the measuring side is `hw::link_parent`'s.
pub(super) fn epoll_child(spec: &PeerSpec) -> Result<Box<dyn Transport>, BenchError> {
    let mut rx = builder(spec, "a").open_receiver().map_err(link_err)?;
    let fd = rx.as_fd().map_err(readiness_err)?.as_raw_fd();
    // The receiver keeps its descriptor open and the same while it lives.
    let ready = Epoll::readable(fd)?;
    let tx = match spec.workload {
        Workload::RoundTrip => Some(builder(spec, "b").open_sender().map_err(link_err)?),
        Workload::Stream => None,
    };
    Ok(Box::new(EpollEcho { rx, tx, ready }))
}

/// Whether this kernel gives link ends a pollable descriptor (asked once
/// per process, on a link of its own): the measuring side asks before it
/// spawns the echo side, so that a kernel without one skips the row with
/// the reason.
pub(super) fn probe_readiness(spec: &PeerSpec) -> Result<(), BenchError> {
    static REFUSED: OnceLock<Option<String>> = OnceLock::new();
    let refused = REFUSED.get_or_init(|| {
        let b = builder(spec, "probe")
            .capacity(1)
            .slot_size(8)
            .backend(hwlink::Backend::Shm);
        // Any other failure shows in the session itself.
        let mut rx = b.create_receiver().ok()?;
        match rx.as_fd() {
            Err(e @ ReadinessError::Unsupported { .. }) => Some(e.to_string()),
            _ => None,
        }
    });
    match refused {
        Some(reason) => Err(BenchError::Unsupported(reason.clone())),
        None => Ok(()),
    }
}

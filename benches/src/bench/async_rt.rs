//! Async runtimes: a tokio Unix stream socket and hwlink's tokio ends, each side on a current-thread runtime of its own.
//!
//! `tokio-unix`: a Unix stream socketpair; each process converts its end
//! (made non-blocking) with `tokio::net::UnixStream::from_std` and moves
//! messages with `write_all` and `read_exact`. Every send and receive is
//! one `block_on` of the process's current-thread runtime, so a receive
//! that finds nothing parks the runtime in its I/O driver (`epoll_wait`)
//! until the socket is readable: what a task in a tokio program pays.
//!
//! `hwlink-async`: one hwlink link each way, every end spin-then-park (the
//! default), wrapped in `hwlink::tokio::AsyncSender` and `AsyncReceiver`
//! on both sides, driven the same way: a receive polls the ring for a
//! short while, then awaits the receiver's descriptor in the runtime.

use super::fd::{inherited, socketpair};
use super::hw::{builder, link_err};
use super::hw_wait::readiness_err;
use super::{BenchError, ParentSide, PeerSpec, Transport, Workload};
use hwlink::tokio::{AsyncReceiver, AsyncSender};
use std::os::fd::OwnedFd;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::runtime::Runtime;

/// A current-thread runtime with I/O and timers, as each side runs.
pub(crate) fn runtime() -> Result<Runtime, BenchError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| BenchError::io("building a tokio runtime", e))
}

/// One side of `tokio-unix`.
struct TokioUnix {
    // Deregistered from the runtime before the runtime goes: field order.
    stream: tokio::net::UnixStream,
    rt: Runtime,
}

impl TokioUnix {
    /// Takes over one end of a socketpair.
    fn new(fd: OwnedFd) -> Result<TokioUnix, BenchError> {
        let rt = runtime()?;
        let std = std::os::unix::net::UnixStream::from(fd);
        std.set_nonblocking(true)
            .map_err(|e| BenchError::io("making a Unix socket non-blocking", e))?;
        // from_std registers the socket with the runtime's I/O driver.
        let stream = {
            let _in_rt = rt.enter();
            tokio::net::UnixStream::from_std(std)
                .map_err(|e| BenchError::io("registering a Unix socket with tokio", e))?
        };
        Ok(TokioUnix { stream, rt })
    }
}

/// A failed socket call; end of file means the peer closed its end.
fn stream_err(what: &str, e: std::io::Error) -> BenchError {
    if e.kind() == std::io::ErrorKind::UnexpectedEof {
        BenchError::Peer("closed its end of the channel".into())
    } else {
        BenchError::io(what.to_string(), e)
    }
}

impl Transport for TokioUnix {
    fn send(&mut self, msg: &[u8]) -> Result<(), BenchError> {
        let s = &mut self.stream;
        self.rt
            .block_on(s.write_all(msg))
            .map_err(|e| stream_err("tokio write_all", e))
    }
    fn recv(&mut self, buf: &mut [u8]) -> Result<(), BenchError> {
        let s = &mut self.stream;
        self.rt
            .block_on(s.read_exact(buf))
            .map(drop)
            .map_err(|e| stream_err("tokio read_exact", e))
    }
}

pub(super) fn unix_parent(_spec: &PeerSpec) -> Result<ParentSide, BenchError> {
    let (a, b) = socketpair(libc::SOCK_STREAM)?;
    let mut side = ParentSide::new(TokioUnix::new(a)?);
    side.child_fds = vec![b];
    Ok(side)
}

pub(super) fn unix_child(spec: &PeerSpec) -> Result<Box<dyn Transport>, BenchError> {
    let fd = inherited(spec, 1)?.pop().expect("one descriptor");
    Ok(Box::new(TokioUnix::new(fd)?))
}

/// One side of `hwlink-async` (the reverse link is absent when streaming).
struct HwlinkAsync {
    // The ends leave the runtime before the runtime goes: field order.
    tx: Option<AsyncSender>,
    rx: Option<AsyncReceiver>,
    rt: Runtime,
}

impl HwlinkAsync {
    fn new(tx: Option<hwlink::Sender>, rx: Option<hwlink::Receiver>) -> Result<Self, BenchError> {
        let rt = runtime()?;
        // The ends register their descriptors with the runtime's driver.
        let _in_rt = rt.enter();
        let tx = tx
            .map(AsyncSender::new)
            .transpose()
            .map_err(readiness_err)?;
        let rx = rx
            .map(AsyncReceiver::new)
            .transpose()
            .map_err(readiness_err)?;
        drop(_in_rt);
        Ok(HwlinkAsync { tx, rx, rt })
    }
}

impl Transport for HwlinkAsync {
    fn send(&mut self, msg: &[u8]) -> Result<(), BenchError> {
        let tx = self
            .tx
            .as_mut()
            .ok_or_else(|| link_err("no sending link"))?;
        self.rt.block_on(tx.send(msg)).map_err(link_err)
    }
    fn recv(&mut self, buf: &mut [u8]) -> Result<(), BenchError> {
        let rx = self
            .rx
            .as_mut()
            .ok_or_else(|| link_err("no receiving link"))?;
        let m = self.rt.block_on(rx.recv()).map_err(link_err)?;
        if m.len() != buf.len() {
            return Err(BenchError::Verify(format!(
                "received {} bytes, expected {}",
                m.len(),
                buf.len()
            )));
        }
        buf.copy_from_slice(&m);
        Ok(())
    }
}

pub(super) fn hwlink_parent(spec: &PeerSpec) -> Result<ParentSide, BenchError> {
    super::hw_wait::probe_readiness(spec)?;
    let tx = builder(spec, "a").create_sender().map_err(link_err)?;
    let rx = match spec.workload {
        Workload::RoundTrip => Some(builder(spec, "b").create_receiver().map_err(link_err)?),
        Workload::Stream => None,
    };
    Ok(ParentSide::new(HwlinkAsync::new(Some(tx), rx)?))
}

pub(super) fn hwlink_child(spec: &PeerSpec) -> Result<Box<dyn Transport>, BenchError> {
    let rx = builder(spec, "a").open_receiver().map_err(link_err)?;
    let tx = match spec.workload {
        Workload::RoundTrip => Some(builder(spec, "b").open_sender().map_err(link_err)?),
        Workload::Stream => None,
    };
    Ok(Box::new(HwlinkAsync::new(tx, Some(rx))?))
}

//! Async runtimes: a tokio Unix stream socket, each side on a current-thread runtime of its own.
//!
//! `tokio-unix`: a Unix stream socketpair; each process converts its end
//! (made non-blocking) with `tokio::net::UnixStream::from_std` and moves
//! messages with `write_all` and `read_exact`. Every send and receive is
//! one `block_on` of the process's current-thread runtime, so a receive
//! that finds nothing parks the runtime in its I/O driver (`epoll_wait`)
//! until the socket is readable: what a task in a tokio program pays.

use super::fd::{inherited, socketpair};
use super::{BenchError, ParentSide, PeerSpec, Transport};
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
    rt: Runtime,
    stream: tokio::net::UnixStream,
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
        Ok(TokioUnix { rt, stream })
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

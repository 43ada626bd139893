//! Kernel byte streams and datagrams over file descriptors: pipe, Unix sockets and loopback TCP.
//!
//! Each side blocks in `read` and `write`, except `unix-epoll`'s: its
//! socket is non-blocking and a call that would block waits in
//! `epoll_wait` (the readiness path of an event loop), then retries.

use super::epoll::{would_block, Epoll};
use super::{check, BenchError, Mechanism, ParentSide, PeerSpec, Transport};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};

/// Whether a descriptor carries bytes or whole messages.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Bytes,
    Datagrams,
}

/// The readiness waits of a non-blocking descriptor channel.
struct Ready {
    /// Input on `rd`.
    rd: Epoll,
    /// Room on `wr`.
    wr: Epoll,
}

/// One side: reads from `rd`, writes to `wr` (the same socket, or two pipes).
pub(crate) struct FdChannel {
    rd: RawFd,
    wr: RawFd,
    kind: Kind,
    /// Set when the descriptors are non-blocking: wait in epoll.
    ready: Option<Ready>,
    _owned: Vec<OwnedFd>,
}

impl FdChannel {
    pub(crate) fn new(rd: RawFd, wr: RawFd, kind: Kind, owned: Vec<OwnedFd>) -> FdChannel {
        FdChannel {
            rd,
            wr,
            kind,
            ready: None,
            _owned: owned,
        }
    }

    /// A byte channel over non-blocking descriptors that waits in
    /// `epoll_wait` whenever a read or a write would block.
    fn with_epoll(rd: RawFd, wr: RawFd, owned: Vec<OwnedFd>) -> Result<FdChannel, BenchError> {
        for fd in [rd, wr] {
            set_nonblocking(fd)?;
        }
        let mut ch = FdChannel::new(rd, wr, Kind::Bytes, owned);
        ch.ready = Some(Ready {
            rd: Epoll::readable(rd)?,
            wr: Epoll::writable(wr)?,
        });
        Ok(ch)
    }
}

/// Sets O_NONBLOCK on `fd` (its open file description: shared with the
/// peer's copy of it, if any).
fn set_nonblocking(fd: RawFd) -> Result<(), BenchError> {
    // SAFETY: fcntl on a descriptor we own, reading its status flags.
    let flags = check(unsafe { libc::fcntl(fd, libc::F_GETFL) }, "fcntl(F_GETFL)")?;
    // SAFETY: as above, adding O_NONBLOCK.
    let rc = unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) };
    check(rc, "fcntl(F_SETFL, O_NONBLOCK)").map(drop)
}

/// Writes all of `msg` to `fd`, retrying after signals and short writes;
/// on a non-blocking `fd`, a write that would block waits in `ready` first.
fn write_all(fd: RawFd, mut msg: &[u8], ready: Option<&Epoll>) -> Result<(), BenchError> {
    while !msg.is_empty() {
        // SAFETY: the pointer and length describe `msg`.
        let n = unsafe { libc::write(fd, msg.as_ptr().cast(), msg.len()) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            if let (Some(ep), true) = (ready, would_block(&e)) {
                ep.wait()?;
                continue;
            }
            return Err(BenchError::io("write", e));
        }
        msg = &msg[n as usize..];
    }
    Ok(())
}

/// Fills all of `buf` from `fd` (end of file is an error); on a
/// non-blocking `fd`, a read that would block waits in `ready` first.
fn read_exact(fd: RawFd, buf: &mut [u8], ready: Option<&Epoll>) -> Result<(), BenchError> {
    let mut at = 0;
    while at < buf.len() {
        let rest = &mut buf[at..];
        // SAFETY: the pointer and length describe `rest`.
        let n = unsafe { libc::read(fd, rest.as_mut_ptr().cast(), rest.len()) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            if let (Some(ep), true) = (ready, would_block(&e)) {
                ep.wait()?;
                continue;
            }
            return Err(BenchError::io("read", e));
        }
        if n == 0 {
            return Err(BenchError::Peer("closed its end of the channel".into()));
        }
        at += n as usize;
    }
    Ok(())
}

impl Transport for FdChannel {
    fn send(&mut self, msg: &[u8]) -> Result<(), BenchError> {
        match self.kind {
            Kind::Bytes => write_all(self.wr, msg, self.ready.as_ref().map(|r| &r.wr)),
            Kind::Datagrams => loop {
                // SAFETY: the pointer and length describe `msg`.
                let n = unsafe { libc::send(self.wr, msg.as_ptr().cast(), msg.len(), 0) };
                if n < 0
                    && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted
                {
                    continue;
                }
                if n as usize != msg.len() {
                    return Err(BenchError::last_os("send of a datagram"));
                }
                return Ok(());
            },
        }
    }
    fn recv(&mut self, buf: &mut [u8]) -> Result<(), BenchError> {
        match self.kind {
            Kind::Bytes => read_exact(self.rd, buf, self.ready.as_ref().map(|r| &r.rd)),
            Kind::Datagrams => loop {
                // SAFETY: the pointer and length describe `buf`.
                let n = unsafe { libc::recv(self.rd, buf.as_mut_ptr().cast(), buf.len(), 0) };
                if n < 0 {
                    let e = std::io::Error::last_os_error();
                    if e.kind() == std::io::ErrorKind::Interrupted {
                        continue;
                    }
                    return Err(BenchError::io("recv of a datagram", e));
                }
                if n as usize != buf.len() {
                    return Err(BenchError::Verify(format!(
                        "received a datagram of {n} bytes, expected {}",
                        buf.len()
                    )));
                }
                return Ok(());
            },
        }
    }
}

/// A pipe: (read end, write end), close-on-exec.
pub(crate) fn pipe() -> Result<(OwnedFd, OwnedFd), BenchError> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two descriptors into the array.
    let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    check(rc, "pipe2")?;
    // SAFETY: both descriptors are new and owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// A connected pair of Unix sockets of type `ty`, close-on-exec.
pub(crate) fn socketpair(ty: libc::c_int) -> Result<(OwnedFd, OwnedFd), BenchError> {
    let mut fds = [0; 2];
    // SAFETY: socketpair writes two descriptors into the array.
    let rc =
        unsafe { libc::socketpair(libc::AF_UNIX, ty | libc::SOCK_CLOEXEC, 0, fds.as_mut_ptr()) };
    check(rc, "socketpair")?;
    // SAFETY: both descriptors are new and owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Asks for socket buffers of `bytes` each way on both ends (the forced
/// variants first, which root may use past net.core.[rw]mem_max).
pub(crate) fn grow_buffers(a: &OwnedFd, b: &OwnedFd, bytes: usize) {
    let v = bytes.min(i32::MAX as usize) as i32;
    for s in [a, b] {
        for (force, plain) in [
            (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF),
            (libc::SO_RCVBUFFORCE, libc::SO_RCVBUF),
        ] {
            set_int_opt(s.as_raw_fd(), libc::SOL_SOCKET, plain, v);
            set_int_opt(s.as_raw_fd(), libc::SOL_SOCKET, force, v);
        }
    }
}

fn set_int_opt(fd: RawFd, level: libc::c_int, opt: libc::c_int, v: libc::c_int) {
    // SAFETY: the value pointer and length describe `v`. A refused size is
    // not an error: the probe below finds the limit that matters.
    unsafe {
        libc::setsockopt(
            fd,
            level,
            opt,
            (&v as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
}

/// Checks that a datagram of `size` bytes fits through the pair (after
/// asking for buffers that hold a few), and drains the probe.
pub(crate) fn probe_datagram(
    a: &OwnedFd,
    b: &OwnedFd,
    size: usize,
    what: &str,
) -> Result<(), BenchError> {
    let want = size
        .saturating_mul(4)
        .saturating_add(4096)
        .min(i32::MAX as usize) as i32;
    for s in [a, b] {
        set_int_opt(s.as_raw_fd(), libc::SOL_SOCKET, libc::SO_SNDBUF, want);
        set_int_opt(s.as_raw_fd(), libc::SOL_SOCKET, libc::SO_RCVBUF, want);
    }
    let probe = vec![0u8; size];
    // SAFETY: the pointer and length describe `probe`.
    let n = unsafe {
        libc::send(
            a.as_raw_fd(),
            probe.as_ptr().cast(),
            size,
            libc::MSG_DONTWAIT,
        )
    };
    if n < 0 {
        let e = std::io::Error::last_os_error();
        return Err(BenchError::Unsupported(format!(
            "a {what} socket cannot carry a {size}-byte message here ({e}); raise net.core.wmem_max to allow larger ones"
        )));
    }
    let mut sink = vec![0u8; size];
    // SAFETY: the pointer and length describe `sink`.
    let r = unsafe { libc::recv(b.as_raw_fd(), sink.as_mut_ptr().cast(), size, 0) };
    if r as usize != size {
        return Err(BenchError::last_os(format!("draining the {what} probe")));
    }
    Ok(())
}

/// A connected loopback TCP pair with `TCP_NODELAY` on both ends.
pub(crate) fn tcp_pair() -> Result<(OwnedFd, OwnedFd), BenchError> {
    fn io(what: &'static str) -> impl Fn(std::io::Error) -> BenchError {
        move |e| BenchError::io(what, e)
    }
    let listener = TcpListener::bind("127.0.0.1:0").map_err(io("binding 127.0.0.1:0"))?;
    let addr = listener.local_addr().map_err(io("getsockname"))?;
    let client = TcpStream::connect(addr).map_err(io("connecting over loopback"))?;
    let (server, _) = listener.accept().map_err(io("accepting over loopback"))?;
    for s in [&client, &server] {
        s.set_nodelay(true).map_err(io("setting TCP_NODELAY"))?;
    }
    // SAFETY: into_raw_fd hands over ownership of each socket.
    Ok(unsafe {
        (
            OwnedFd::from_raw_fd(client.into_raw_fd()),
            OwnedFd::from_raw_fd(server.into_raw_fd()),
        )
    })
}

pub(super) fn parent(spec: &PeerSpec) -> Result<ParentSide, BenchError> {
    let (mine, theirs, kind) = match spec.mechanism {
        Mechanism::Pipe => {
            let (down_r, down_w) = pipe()?;
            let (up_r, up_w) = pipe()?;
            let ch = FdChannel::new(
                up_r.as_raw_fd(),
                down_w.as_raw_fd(),
                Kind::Bytes,
                vec![up_r, down_w],
            );
            let mut side = ParentSide::new(ch);
            side.child_fds = vec![down_r, up_w];
            return Ok(side);
        }
        Mechanism::UnixStream => {
            let (a, b) = socketpair(libc::SOCK_STREAM)?;
            (a, b, Kind::Bytes)
        }
        Mechanism::UnixEpoll => {
            let (a, b) = socketpair(libc::SOCK_STREAM)?;
            let fd = a.as_raw_fd();
            let mut side = ParentSide::new(FdChannel::with_epoll(fd, fd, vec![a])?);
            side.child_fds = vec![b];
            return Ok(side);
        }
        Mechanism::UnixDgram => {
            let (a, b) = socketpair(libc::SOCK_DGRAM)?;
            probe_datagram(&a, &b, spec.size, "Unix datagram")?;
            (a, b, Kind::Datagrams)
        }
        Mechanism::UnixSeqpacket => {
            let (a, b) = socketpair(libc::SOCK_SEQPACKET)?;
            probe_datagram(&a, &b, spec.size, "Unix seqpacket")?;
            (a, b, Kind::Datagrams)
        }
        Mechanism::Tcp => {
            let (a, b) = tcp_pair()?;
            (a, b, Kind::Bytes)
        }
        other => unreachable!("{other} is not a descriptor mechanism"),
    };
    let fd = mine.as_raw_fd();
    let mut side = ParentSide::new(FdChannel::new(fd, fd, kind, vec![mine]));
    side.child_fds = vec![theirs];
    Ok(side)
}

/// Takes ownership of the descriptors the peer inherited.
pub(crate) fn inherited(spec: &PeerSpec, n: usize) -> Result<Vec<OwnedFd>, BenchError> {
    if spec.fds.len() != n {
        return Err(BenchError::PeerArgs(format!(
            "expected {n} descriptors, got {:?}",
            spec.fds
        )));
    }
    // SAFETY: the parent passed these descriptors, open in this process and
    // used by nothing else here.
    Ok(spec
        .fds
        .iter()
        .map(|&fd| unsafe { OwnedFd::from_raw_fd(fd) })
        .collect())
}

pub(super) fn child(spec: &PeerSpec) -> Result<Box<dyn Transport>, BenchError> {
    let kind = match spec.mechanism {
        Mechanism::UnixDgram | Mechanism::UnixSeqpacket => Kind::Datagrams,
        _ => Kind::Bytes,
    };
    if spec.mechanism == Mechanism::Pipe {
        let fds = inherited(spec, 2)?;
        let (rd, wr) = (fds[0].as_raw_fd(), fds[1].as_raw_fd());
        return Ok(Box::new(FdChannel::new(rd, wr, kind, fds)));
    }
    let fds = inherited(spec, 1)?;
    let fd = fds[0].as_raw_fd();
    if spec.mechanism == Mechanism::UnixEpoll {
        return Ok(Box::new(FdChannel::with_epoll(fd, fd, fds)?));
    }
    Ok(Box::new(FdChannel::new(fd, fd, kind, fds)))
}

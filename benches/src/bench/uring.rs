//! A pipe and a Unix stream socket driven through io_uring: submit and wait, optionally with SQPOLL.

use super::fd::{inherited, pipe, socketpair};
use super::{BenchError, Mechanism, ParentSide, PeerSpec, Transport};
use io_uring::{opcode, types, IoUring};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

/// Submission-queue entries: one operation is in flight at a time.
const ENTRIES: u32 = 8;
/// How long the SQPOLL kernel thread spins without work before it sleeps.
const SQPOLL_IDLE_MS: u32 = 50;
/// "Use the file position": right for pipes and sockets alike.
const NO_OFFSET: u64 = u64::MAX;

/// SQPOLL gives each process's ring a kernel thread that busy-polls its
/// submission queue: it only helps with a core of its own. On a machine
/// without one spare CPU per ring beside the `cpus_used` the measured
/// `processes` run on, those threads steal the measured processes' time
/// (8 to 80 ms per trip on two CPUs), so the row is skipped with the reason.
pub(super) fn sqpoll_fits(processes: usize, cpus_used: usize) -> Result<(), BenchError> {
    let online = hwlink::liveness::online_cpus();
    let needed = cpus_used.saturating_add(processes);
    if online < needed {
        return Err(BenchError::Unsupported(format!(
            "each of the {processes} processes' SQPOLL kernel threads needs a spare core beside \
             the {cpus_used} CPU(s) measured ({needed} CPUs in all); this machine has {online}"
        )));
    }
    Ok(())
}

fn ring_for(m: Mechanism) -> Result<IoUring, BenchError> {
    if m == Mechanism::UringUnixSqpoll {
        IoUring::builder()
            .setup_sqpoll(SQPOLL_IDLE_MS)
            .build(ENTRIES)
            .map_err(|e| {
                BenchError::Unsupported(format!(
                    "io_uring with IORING_SETUP_SQPOLL refused here ({e}); it needs Linux 5.11+ and kernel.io_uring_disabled=0"
                ))
            })
    } else {
        IoUring::new(ENTRIES).map_err(|e| {
            BenchError::Unsupported(format!(
                "io_uring is not available here ({e}); it needs Linux 5.6+ and kernel.io_uring_disabled=0"
            ))
        })
    }
}

struct UringChannel {
    ring: IoUring,
    rd: RawFd,
    wr: RawFd,
    _owned: Vec<OwnedFd>,
}

impl UringChannel {
    /// Submits one entry and waits for its completion; returns its result.
    fn run(&mut self, entry: io_uring::squeue::Entry, what: &str) -> Result<usize, BenchError> {
        // SAFETY: the buffer the entry points to outlives this call, which
        // waits for the entry's completion before returning.
        unsafe { self.ring.submission().push(&entry) }
            .map_err(|_| BenchError::Peer("io_uring submission queue full".into()))?;
        loop {
            match self.ring.submit_and_wait(1) {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(BenchError::io("io_uring_enter", e)),
            }
            if let Some(cqe) = self.ring.completion().next() {
                let r = cqe.result();
                if r < 0 {
                    return Err(BenchError::io(
                        what.to_string(),
                        std::io::Error::from_raw_os_error(-r),
                    ));
                }
                return Ok(r as usize);
            }
        }
    }
}

impl Transport for UringChannel {
    fn send(&mut self, msg: &[u8]) -> Result<(), BenchError> {
        let mut at = 0;
        while at < msg.len() {
            let rest = &msg[at..];
            let e = opcode::Write::new(types::Fd(self.wr), rest.as_ptr(), rest.len() as u32)
                .offset(NO_OFFSET)
                .build();
            at += self.run(e, "io_uring write")?;
        }
        Ok(())
    }
    fn recv(&mut self, buf: &mut [u8]) -> Result<(), BenchError> {
        let mut at = 0;
        while at < buf.len() {
            let rest = &mut buf[at..];
            let e = opcode::Read::new(types::Fd(self.rd), rest.as_mut_ptr(), rest.len() as u32)
                .offset(NO_OFFSET)
                .build();
            let n = self.run(e, "io_uring read")?;
            if n == 0 {
                return Err(BenchError::Peer("closed its end of the channel".into()));
            }
            at += n;
        }
        Ok(())
    }
}

pub(super) fn parent(spec: &PeerSpec) -> Result<ParentSide, BenchError> {
    let ring = ring_for(spec.mechanism)?;
    if spec.mechanism == Mechanism::UringPipe {
        let (down_r, down_w) = pipe()?;
        let (up_r, up_w) = pipe()?;
        let mut side = ParentSide::new(UringChannel {
            ring,
            rd: up_r.as_raw_fd(),
            wr: down_w.as_raw_fd(),
            _owned: vec![up_r, down_w],
        });
        side.child_fds = vec![down_r, up_w];
        return Ok(side);
    }
    let (a, b) = socketpair(libc::SOCK_STREAM)?;
    let fd = a.as_raw_fd();
    let mut side = ParentSide::new(UringChannel {
        ring,
        rd: fd,
        wr: fd,
        _owned: vec![a],
    });
    side.child_fds = vec![b];
    Ok(side)
}

pub(super) fn child(spec: &PeerSpec) -> Result<Box<dyn Transport>, BenchError> {
    let fds = inherited(
        spec,
        if spec.mechanism == Mechanism::UringPipe {
            2
        } else {
            1
        },
    )?;
    let (rd, wr) = (fds[0].as_raw_fd(), fds[fds.len() - 1].as_raw_fd());
    chain_end(spec.mechanism, rd, wr, fds)
}

/// An end over io_uring (a peer's, or a pipeline stage's): reads `rd`,
/// writes `wr` (both in `owned`), through a ring of its own.
pub(super) fn chain_end(
    m: Mechanism,
    rd: RawFd,
    wr: RawFd,
    owned: Vec<OwnedFd>,
) -> Result<Box<dyn Transport>, BenchError> {
    Ok(Box::new(UringChannel {
        ring: ring_for(m)?,
        rd,
        wr,
        _owned: owned,
    }))
}

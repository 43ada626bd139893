//! Waiting for readiness the kernel's way: an epoll instance per descriptor and direction, level-triggered.
//!
//! The `*-epoll` rows make every receive (and every send that finds a
//! full buffer) non-blocking: a read or write that would block waits in
//! `epoll_wait` for the descriptor to become ready, then retries. Each
//! [`Epoll`] watches one descriptor for one kind of readiness, so a wait
//! for input is never woken by a descriptor that is merely writable (level
//! triggering would make that a busy loop).

use super::{check, BenchError};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// One epoll instance watching one descriptor, level-triggered.
pub(crate) struct Epoll {
    ep: OwnedFd,
}

impl Epoll {
    /// Watches `fd` for `events` (`EPOLLIN` or `EPOLLOUT`).
    pub(crate) fn new(fd: RawFd, events: libc::c_int) -> Result<Epoll, BenchError> {
        // SAFETY: epoll_create1 takes a flag and returns a new descriptor.
        let raw = check(
            unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) },
            "epoll_create1",
        )?;
        // SAFETY: the descriptor is new and owned by nobody else.
        let ep = unsafe { OwnedFd::from_raw_fd(raw) };
        let mut ev = libc::epoll_event {
            events: events as u32,
            u64: fd as u64,
        };
        // SAFETY: registers `fd` with our instance; the kernel copies `ev`.
        let rc = unsafe { libc::epoll_ctl(ep.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut ev) };
        check(rc, "epoll_ctl(EPOLL_CTL_ADD)")?;
        Ok(Epoll { ep })
    }

    /// Input readiness of `fd`.
    pub(crate) fn readable(fd: RawFd) -> Result<Epoll, BenchError> {
        Epoll::new(fd, libc::EPOLLIN)
    }

    /// Output readiness of `fd`.
    pub(crate) fn writable(fd: RawFd) -> Result<Epoll, BenchError> {
        Epoll::new(fd, libc::EPOLLOUT)
    }

    /// Sleeps in `epoll_wait` until the descriptor is ready (or in error,
    /// or hung up: the retried call then reports it).
    pub(crate) fn wait(&self) -> Result<(), BenchError> {
        let mut ev = libc::epoll_event { events: 0, u64: 0 };
        loop {
            // SAFETY: room for one event in `ev`; no timeout.
            let n = unsafe { libc::epoll_wait(self.ep.as_raw_fd(), &mut ev, 1, -1) };
            if n > 0 {
                return Ok(());
            }
            let e = std::io::Error::last_os_error();
            if n < 0 && e.kind() != std::io::ErrorKind::Interrupted {
                return Err(BenchError::io("epoll_wait", e));
            }
        }
    }
}

/// Whether a failed non-blocking call would have blocked.
pub(crate) fn would_block(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::WouldBlock
}

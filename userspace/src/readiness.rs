//! A pollable descriptor per end (hw/SPEC.md §8.11): an io_uring instance
//! whose one request is a `FUTEX_WAITV` on the end's doorbell count word
//! and its peer's liveness word. The ring's descriptor is readable while a
//! completion is pending, so it works with `epoll`, `poll`, mio, tokio's
//! `AsyncFd` and io_uring's own `POLL_ADD`.
//!
//! Nothing passes between processes: the peer rings the same doorbell it
//! always rings, and only when this end is *armed*: registered in the
//! doorbell's `waiters` word, as a sleeping waiter is (io_uring's
//! `NEED_WAKEUP`, in effect). An end arms when it is created and whenever
//! an attempt finds nothing to do (`Empty`, `Full`); the completion stays
//! (the descriptor readable) until the next such attempt reaps it and arms
//! again. A polling peer's hot path is unchanged: with nobody armed it
//! reads `waiters` and makes no system call.
//!
//! Ordering (F4): arming takes the pending tokens, reads the count, then
//! executes `fence(SeqCst)` and looks at the end; the request then waits
//! only while the count still holds the value read. A poster publishes,
//! executes its fence (F0/F2) and reads `waiters`: either it sees us
//! registered and posts (changing the count, which completes the request at
//! once or wakes it), or our look sees what it published (and we complete
//! at once with a no-op).
#![warn(clippy::arithmetic_side_effects)]

use crate::doorbell::Doorbell;
use crate::liveness::Watched;
use crate::sync::{AtomicU32, Ordering};
use hwlink_hw::{HWL_PROCESS_OWNER_DIED, HWL_PROCESS_WAITERS};
use io_uring::{opcode, types, IoUring};
use std::os::fd::{AsRawFd, BorrowedFd};
use std::sync::Arc;
use std::time::Duration;

/// Why an end cannot give a pollable descriptor.
#[derive(Debug, thiserror::Error)]
pub enum ReadinessError {
    /// The kernel gives no io_uring with `FUTEX_WAITV` here.
    #[error(
        "no pollable descriptor: {reason}; it needs Linux 6.7 or later with io_uring enabled \
         (sysctl kernel.io_uring_disabled=0; in a container, a seccomp profile that allows \
         io_uring_setup and io_uring_enter): wait with `Select` or the blocking forms instead"
    )]
    Unsupported {
        /// What the kernel said.
        reason: String,
    },
    /// The end busy-polls, so its peer never rings its doorbell.
    #[error(
        "this end busy-polls (WaitStrategy::BusyPoll), so its peer never rings its doorbell and \
         no descriptor can wake: open it with WaitStrategy::SpinPark or WaitStrategy::Park"
    )]
    BusyPoll,
    /// The end's doorbell is a device register (device memory).
    #[error(
        "this end wakes through a device's doorbell register, which no descriptor follows: \
         wait with the blocking forms or `Select`"
    )]
    DeviceDoorbell,
    /// Setting up the descriptor failed.
    #[error("cannot set up the pollable descriptor: {0}; check the open-file limit (ulimit -n)")]
    Io(#[from] std::io::Error),
}

/// What the one request in flight is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Armed {
    /// Nothing: reaped, or never armed.
    No,
    /// A `FUTEX_WAITV`, with this end registered in the doorbell's
    /// `waiters`.
    Futex,
    /// A no-op or a timeout: completes by itself.
    Other,
}

/// How long the descriptor waits without a peer's liveness word to watch
/// (the peer has not attached yet) before it reads as ready: the next
/// attempt looks at the peer then.
const NO_PEER_SLICE: Duration = crate::wait::SLEEP_SLICE;
/// How long it naps while a count is flooded (a hostile peer keeps
/// writing it): a futex wait on it would return at once.
const FLOOD_NAP: Duration = Duration::from_millis(1);
/// Tokens taken in one arming before the count counts as flooded.
const FLOOD_TOKENS: u32 = 64;

/// The pollable descriptor of one end.
pub(crate) struct Readiness {
    ring: IoUring,
    /// The doorbell (a copy of the end's, keeping its memory mapped).
    bell: Doorbell,
    /// The `futex_waitv` entries the request names; the kernel reads them
    /// at submission, and they stay put (boxed) while it is in flight.
    futexv: Box<[types::FutexWaitV; 2]>,
    /// The timeout of a timed request, at a stable address.
    timeout: Box<types::Timespec>,
    /// The peer's liveness watch, kept alive while its word is watched.
    death: Option<Arc<Watched>>,
    armed: Armed,
    /// The user data of the request in flight (never 0).
    tag: u64,
    one_peer: bool,
    /// Armed by every attempt that finds nothing (a descriptor handed
    /// out); else only when its owner is about to wait on it (the async
    /// ends, which spin first).
    pub(crate) auto: bool,
}

impl std::fmt::Debug for Readiness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Readiness")
            .field("fd", &self.ring.as_raw_fd())
            .field("armed", &self.armed)
            .finish()
    }
}

/// Whether this kernel's io_uring has `FUTEX_WAITV` (and io_uring works at
/// all): probed once per process.
fn supported() -> Result<(), ReadinessError> {
    use std::sync::OnceLock;
    static PROBED: OnceLock<Result<(), String>> = OnceLock::new();
    PROBED
        .get_or_init(|| {
            let ring = IoUring::new(2).map_err(|e| format!("io_uring_setup failed: {e}"))?;
            let mut probe = io_uring::Probe::new();
            ring.submitter()
                .register_probe(&mut probe)
                .map_err(|e| format!("io_uring probe failed: {e}"))?;
            if !probe.is_supported(opcode::FutexWaitV::CODE) {
                return Err("this kernel's io_uring has no FUTEX_WAITV".to_string());
            }
            Ok(())
        })
        .clone()
        .map_err(|reason| ReadinessError::Unsupported { reason })
}

impl Readiness {
    /// A descriptor following `bell` (and the peer's death, once known).
    /// `one_peer`: the end has one peer process (a link), which it must
    /// look for until the peer's liveness word is known.
    pub(crate) fn new(bell: &Doorbell, one_peer: bool) -> Result<Readiness, ReadinessError> {
        if !bell.is_futex() {
            return Err(ReadinessError::DeviceDoorbell);
        }
        supported()?;
        let ring = IoUring::builder().setup_clamp().build(4)?;
        Ok(Readiness {
            ring,
            bell: bell.clone(),
            futexv: Box::new([types::FutexWaitV::new(), types::FutexWaitV::new()]),
            timeout: Box::new(types::Timespec::new()),
            death: None,
            armed: Armed::No,
            tag: 0,
            one_peer,
            auto: true,
        })
    }

    /// The descriptor: readable while a completion is pending.
    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        // SAFETY: the ring's descriptor is open for as long as `self`, to
        // which the borrow is tied.
        unsafe { BorrowedFd::borrow_raw(self.ring.as_raw_fd()) }
    }

    /// Takes every completion: the descriptor reads as not ready after.
    /// Once the request in flight completed, leaves `waiters` (a futex
    /// request) and lets the next arming submit another.
    fn reap(&mut self) {
        let mut done = false;
        for cqe in self.ring.completion() {
            // Linked timeouts complete under tag 0: not the request.
            done |= cqe.user_data() == self.tag;
        }
        if done {
            if self.armed == Armed::Futex {
                self.bell.unregister();
            }
            self.armed = Armed::No;
        }
    }

    /// The end found nothing to do: make the descriptor readable when it
    /// may (a post on the doorbell, the peer's death), or now if `ready()`
    /// (looked at after the fence) says it already may. `death`: the peer's
    /// liveness watch, once it attached. A request still in flight stays.
    /// True if the end was found ready (the request is a no-op: the
    /// descriptor reads ready at once).
    pub(crate) fn arm_now(
        &mut self,
        death: Option<Arc<Watched>>,
        ready: impl FnOnce() -> bool,
    ) -> bool {
        self.reap();
        if self.armed != Armed::No {
            return false;
        }
        if death.is_some() {
            self.death = death;
        }
        // Registered before the look, as a sleeper is; F4 pairs with the
        // poster's F0/F2 (see the module header).
        let count = self.bell.register_and_read(FLOOD_TOKENS);
        let word: Option<&AtomicU32> = self.death.as_deref().and_then(Watched::lock_word);
        let seen = word.map(|w| w.load(Ordering::Acquire));
        // A peer without a robust list (its word lacks FUTEX_WAITERS, §8.8):
        // the kernel will never mark the word, so its death must be looked
        // for (by lock) at every arming and every slice.
        let unmarked = seen.is_some_and(|s| s & HWL_PROCESS_WAITERS == 0);
        let dead = seen.is_some_and(|s| s & HWL_PROCESS_OWNER_DIED != 0)
            || (unmarked && self.death.as_deref().is_some_and(|w| w.died()));
        self.tag = self.tag.wrapping_add(1).max(1);
        let tag = self.tag;
        let now = ready() || dead;
        let (entries, futex) = if now {
            (vec![opcode::Nop::new().build().user_data(tag)], false)
        } else if count != 0 {
            // Flooded: a futex wait on it would return at once.
            (vec![self.timed(FLOOD_NAP).user_data(tag)], false)
        } else {
            let mut n = 1u32;
            self.futexv[0] = types::FutexWaitV::new()
                .val(u64::from(count))
                .uaddr(self.bell.count().as_ptr() as u64)
                .flags(FUTEX2_SIZE_U32);
            if let (Some(w), Some(s)) = (word, seen) {
                self.futexv[1] = types::FutexWaitV::new()
                    .val(u64::from(s))
                    .uaddr(w.as_ptr() as u64)
                    .flags(FUTEX2_SIZE_U32);
                n = 2;
            }
            let wait = opcode::FutexWaitV::new(self.futexv.as_ptr(), n)
                .build()
                .user_data(tag);
            if (word.is_none() && self.one_peer) || unmarked {
                // No peer to watch yet, or one whose death the kernel will
                // not signal: read as ready a slice later, so that the next
                // attempt looks for it.
                *self.timeout = types::Timespec::from(NO_PEER_SLICE);
                let limit = opcode::LinkTimeout::new(&*self.timeout)
                    .build()
                    .user_data(0);
                (
                    vec![wait.flags(io_uring::squeue::Flags::IO_LINK), limit],
                    true,
                )
            } else {
                (vec![wait], true)
            }
        };
        if !futex {
            self.bell.unregister();
        }
        if self.submit(&entries) {
            self.armed = if futex { Armed::Futex } else { Armed::Other };
        } else if futex {
            self.bell.unregister();
        }
        now
    }

    /// A timeout request of `after`: completes by itself.
    fn timed(&mut self, after: Duration) -> io_uring::squeue::Entry {
        *self.timeout = types::Timespec::from(after);
        opcode::Timeout::new(&*self.timeout).build()
    }

    /// Submits `entries`; false if the kernel refused (then nothing is in
    /// flight, and the descriptor is made readable by a no-op if possible
    /// so that the caller's next attempt comes).
    fn submit(&mut self, entries: &[io_uring::squeue::Entry]) -> bool {
        {
            let mut sq = self.ring.submission();
            // SAFETY: every buffer an entry names (the futexv array, the
            // timeout) lives in a box owned by `self`; the kernel copies
            // both when it prepares the request, within this submit, and
            // a new request rewrites them only after that.
            if unsafe { sq.push_multiple(entries) }.is_err() {
                return false;
            }
        }
        loop {
            match self.ring.submit() {
                Ok(_) => return true,
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                    // Completions overflowed: take them and retry.
                    for _ in self.ring.completion() {}
                }
                Err(_) => return false,
            }
        }
    }
}

/// An end's descriptor, made on first use into `slot` (as by
/// [`Readiness::new`]); true if it is new (its end arms it now).
pub(crate) fn ensure(
    slot: &mut Option<Box<Readiness>>,
    strategy: crate::WaitStrategy,
    bell: &Doorbell,
    one_peer: bool,
) -> Result<bool, ReadinessError> {
    if strategy == crate::WaitStrategy::BusyPoll {
        return Err(ReadinessError::BusyPoll);
    }
    if slot.is_some() {
        return Ok(false);
    }
    *slot = Some(Box::new(Readiness::new(bell, one_peer)?));
    Ok(true)
}

/// The descriptor of a slot that [`ensure`] filled.
pub(crate) fn fd_of(slot: &Option<Box<Readiness>>) -> Result<BorrowedFd<'_>, ReadinessError> {
    slot.as_ref()
        .map(|r| r.fd())
        .ok_or(ReadinessError::BusyPoll)
}

/// `FUTEX2_SIZE_U32`; no `FUTEX2_PRIVATE`: the words are process-shared.
const FUTEX2_SIZE_U32: u32 = 0x02;

impl Drop for Readiness {
    fn drop(&mut self) {
        if self.armed == Armed::Futex {
            self.bell.unregister();
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::{LinkBuilder, RecvError, WaitStrategy};
    use std::os::fd::{AsRawFd, RawFd};

    fn readable(fd: RawFd, ms: i32) -> bool {
        let mut p = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd on our stack.
        let n = unsafe { libc::poll(&mut p, 1, ms) };
        n == 1 && p.revents & libc::POLLIN != 0
    }

    #[test]
    fn readable_for_a_message_then_for_the_peer_gone() {
        let name = format!("rdy{}-link", std::process::id());
        let b = LinkBuilder::new(name)
            .capacity(4)
            .slot_size(16)
            .wait(WaitStrategy::Park)
            .backend(hwlink_drivers::Backend::Shm);
        let mut rx = b.create_receiver().unwrap();
        let mut tx = b.open_sender().unwrap();
        if hwlink_drivers::qemu::skip_without_io_uring(
            "readiness::tests::readable_for_a_message_then_for_the_peer_gone",
        ) {
            return;
        }
        let fd = rx.as_fd().unwrap().as_raw_fd();
        // (The peer is this process, whose liveness word it does not
        // watch: the descriptor reads ready every NO_PEER_SLICE, 20 ms, to
        // look for it; hence the short windows below.)
        assert!(!readable(fd, 5), "nothing sent yet");
        tx.send(b"one").unwrap();
        assert!(readable(fd, 1000), "a message is waiting");
        assert!(
            readable(fd, 0),
            "stays readable until an attempt finds nothing"
        );
        assert_eq!(rx.try_recv().unwrap(), b"one");
        assert_eq!(rx.try_recv().unwrap_err(), RecvError::Empty);
        assert!(!readable(fd, 5), "re-armed by the empty attempt");
        // The sender's descriptor: readable when there is room.
        let tfd = tx.as_fd().unwrap().as_raw_fd();
        assert!(readable(tfd, 0), "room now");
        while tx.try_send(b"x").is_ok() {}
        assert!(!readable(tfd, 5), "full, re-armed by the full attempt");
        rx.try_recv().unwrap();
        assert!(readable(tfd, 1000), "room again");
        while rx.try_recv().is_ok() {}
        assert!(!readable(fd, 5));
        drop(tx);
        assert!(readable(fd, 1000), "the sender closed");
        assert_eq!(rx.try_recv().unwrap_err(), RecvError::Disconnected);
    }

    #[test]
    fn busy_polling_ends_have_none() {
        let name = format!("rdy{}-poll", std::process::id());
        let b = LinkBuilder::new(name)
            .wait(WaitStrategy::BusyPoll)
            .backend(hwlink_drivers::Backend::Shm);
        let mut rx = b.create_receiver().unwrap();
        let e = rx.as_fd().unwrap_err();
        assert!(e.to_string().contains("WaitStrategy::SpinPark"), "{e}");
    }
}

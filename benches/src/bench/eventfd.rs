//! eventfd doorbells with the payload in a shared-memory ring of slots.
//!
//! Each direction has `slots` payload slots in a shared region and two
//! semaphore-mode eventfds: `full` counts messages ready, `empty` counts
//! free slots. The sender takes a free slot (read `empty`), copies the
//! message in and posts `full`; the receiver does the reverse. The eventfd
//! system calls order the copies.
//!
//! `eventfd` blocks in `read`. `eventfd-epoll` makes the eventfds
//! non-blocking, and a take that finds the count at zero waits in
//! `epoll_wait` (level-triggered, one epoll instance per eventfd waited
//! on), then reads: the kernel's readiness path, as an event loop does.

use super::epoll::{would_block, Epoll};
use super::{check, fd::inherited, BenchError, Mechanism, ParentSide, PeerSpec, Transport};
use hwlink_drivers::Region;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// Slots per direction: a few MiB at most, between 4 and 64.
fn slots_for(size: usize) -> usize {
    ((4 << 20) / size.max(1)).clamp(4, 64)
}

/// Whether a session's eventfds are non-blocking, waited on in epoll.
fn in_epoll(spec: &PeerSpec) -> bool {
    spec.mechanism == Mechanism::EventfdEpoll
}

/// A semaphore eventfd counting from `initial`; non-blocking if `nonblock`.
fn eventfd(initial: u32, nonblock: bool) -> Result<OwnedFd, BenchError> {
    let mut flags = libc::EFD_CLOEXEC | libc::EFD_SEMAPHORE;
    if nonblock {
        flags |= libc::EFD_NONBLOCK;
    }
    // SAFETY: eventfd takes plain integers and returns a new descriptor.
    let fd = check(unsafe { libc::eventfd(initial, flags) }, "eventfd")?;
    // SAFETY: the descriptor is new and owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Takes one from a semaphore eventfd, waiting for it: in `read`, or, for
/// a non-blocking eventfd, in `ready` (which watches it) before reading.
fn take(fd: RawFd, ready: Option<&Epoll>) -> Result<(), BenchError> {
    let mut v = 0u64;
    loop {
        // SAFETY: reads 8 bytes into `v`.
        let n = unsafe { libc::read(fd, (&mut v as *mut u64).cast(), 8) };
        if n == 8 {
            return Ok(());
        }
        let e = std::io::Error::last_os_error();
        match ready {
            Some(ep) if would_block(&e) => ep.wait()?,
            _ if e.kind() == std::io::ErrorKind::Interrupted => {}
            _ => return Err(BenchError::io("read of an eventfd", e)),
        }
    }
}

/// Adds one to an eventfd.
fn post(fd: RawFd) -> Result<(), BenchError> {
    let v = 1u64;
    loop {
        // SAFETY: writes the 8 bytes of `v`.
        let n = unsafe { libc::write(fd, (&v as *const u64).cast(), 8) };
        if n == 8 {
            return Ok(());
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(BenchError::io("write of an eventfd", e));
        }
    }
}

/// One direction as seen from one side.
struct Lane {
    full: RawFd,
    empty: RawFd,
    /// Offset of this direction's first slot in the region.
    base: usize,
    next: usize,
    /// With non-blocking eventfds: the epoll instance watching the one
    /// this side takes from (`empty` when it sends on the lane, `full`
    /// when it receives).
    ready: Option<Epoll>,
}

impl Lane {
    /// This side's view of a lane: it takes from `full` if it receives on
    /// it (else from `empty`), through epoll if `epoll`.
    fn new(
        full: RawFd,
        empty: RawFd,
        base: usize,
        receives: bool,
        epoll: bool,
    ) -> Result<Lane, BenchError> {
        let taken = if receives { full } else { empty };
        Ok(Lane {
            full,
            empty,
            base,
            next: 0,
            ready: if epoll {
                Some(Epoll::readable(taken)?)
            } else {
                None
            },
        })
    }
}

struct EventfdChannel {
    region: Region,
    size: usize,
    slots: usize,
    out: Lane,
    inn: Lane,
    _fds: Vec<OwnedFd>,
}

impl EventfdChannel {
    fn slot(&self, lane: &Lane) -> *mut u8 {
        let off = lane.base + (lane.next % self.slots) * self.size;
        assert!(off + self.size <= self.region.len());
        // SAFETY: the offset plus a message fits in the mapping (checked).
        unsafe { self.region.as_ptr().add(off) }
    }
}

impl Transport for EventfdChannel {
    fn send(&mut self, msg: &[u8]) -> Result<(), BenchError> {
        take(self.out.empty, self.out.ready.as_ref())?;
        let dst = self.slot(&self.out);
        // SAFETY: the slot holds `size` bytes (msg.len()) and is ours: the
        // receiver gave it back through `empty` and reads it only after our
        // post of `full`.
        unsafe { std::ptr::copy_nonoverlapping(msg.as_ptr(), dst, msg.len().min(self.size)) };
        self.out.next += 1;
        post(self.out.full)
    }
    fn recv(&mut self, buf: &mut [u8]) -> Result<(), BenchError> {
        take(self.inn.full, self.inn.ready.as_ref())?;
        let src = self.slot(&self.inn);
        // SAFETY: the slot holds `size` bytes, published by the sender's post
        // of `full`, and is not reused before our post of `empty`.
        unsafe { std::ptr::copy_nonoverlapping(src, buf.as_mut_ptr(), buf.len().min(self.size)) };
        self.inn.next += 1;
        post(self.inn.empty)
    }
}

/// The round trip's two directions are a chain of two lanes: the parent
/// sends on lane 0 and receives on lane 1; the peer is stage 1.
pub(super) fn parent(spec: &PeerSpec) -> Result<ParentSide, BenchError> {
    let c = chain_parent(spec, 2)?;
    Ok(ParentSide {
        transport: c.end,
        child_fds: c.lanes,
        id: -1,
    })
}

pub(super) fn child(spec: &PeerSpec) -> Result<Box<dyn Transport>, BenchError> {
    chain_child(spec, 1)
}

fn region_name(spec: &PeerSpec) -> String {
    format!("{}-evfd", spec.name)
}

/// Stage 0's side of a pipeline of eventfd lanes.
pub(super) struct ChainParent {
    /// Stage 0's end: sends on lane 0, receives on the last.
    pub end: Box<dyn Transport>,
    /// Each lane's two eventfds (`full`, then `empty`), for the other stages.
    pub lanes: Vec<OwnedFd>,
    /// Messages one lane holds.
    pub holds: usize,
}

/// Creates a pipeline of `stages` eventfd lanes (lane k carries stage k's
/// messages to stage k + 1, mod `stages`) in a region of its own.
pub(super) fn chain_parent(spec: &PeerSpec, stages: usize) -> Result<ChainParent, BenchError> {
    let slots = slots_for(spec.size);
    let lane_bytes = slots * spec.size;
    let region = Region::create(&region_name(spec), stages * lane_bytes, spec.backend)
        .map_err(|e| BenchError::Link(e.to_string()))?;
    let epoll = in_epoll(spec);
    let mut fds = Vec::with_capacity(2 * stages);
    for _ in 0..stages {
        fds.push(eventfd(0, epoll)?);
        fds.push(eventfd(slots as u32, epoll)?);
    }
    let lane = |k: usize, receives| {
        let (full, empty) = (fds[2 * k].as_raw_fd(), fds[2 * k + 1].as_raw_fd());
        Lane::new(full, empty, k * lane_bytes, receives, epoll)
    };
    let (out, inn) = (lane(0, false)?, lane(stages - 1, true)?);
    // The other stages get duplicates; this end keeps the originals.
    let dups = fds
        .iter()
        .map(OwnedFd::try_clone)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| BenchError::io("dup of an eventfd", e))?;
    let ch = EventfdChannel {
        region,
        size: spec.size,
        slots,
        out,
        inn,
        _fds: fds,
    };
    Ok(ChainParent {
        end: Box::new(ch),
        lanes: dups,
        holds: slots,
    })
}

/// Pipeline stage `stage`'s end (1 to `stages - 1`): it inherited lane
/// `stage - 1`'s eventfds and then lane `stage`'s (`full`, `empty` each).
pub(super) fn chain_child(spec: &PeerSpec, stage: usize) -> Result<Box<dyn Transport>, BenchError> {
    let fds = inherited(spec, 4)?;
    let raw: Vec<RawFd> = fds.iter().map(AsRawFd::as_raw_fd).collect();
    let slots = slots_for(spec.size);
    let lane_bytes = slots * spec.size;
    let region = Region::open(&region_name(spec), spec.backend)
        .map_err(|e| BenchError::Link(e.to_string()))?;
    let epoll = in_epoll(spec);
    Ok(Box::new(EventfdChannel {
        region,
        size: spec.size,
        slots,
        out: Lane::new(raw[2], raw[3], stage * lane_bytes, false, epoll)?,
        inn: Lane::new(raw[0], raw[1], (stage - 1) * lane_bytes, true, epoll)?,
        _fds: fds,
    }))
}

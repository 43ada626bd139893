//! Links: the public `Sender` and `Receiver` ends of an SPSC ring in a named
//! region, with blocking, timed, non-blocking and zero-copy operations.
#![warn(clippy::arithmetic_side_effects)]

use crate::doorbell::Doorbell;
use crate::error::{Corruption, OpenError, RecvError, SendError, Side};
use crate::hw_doorbell;
use crate::liveness::{PeerWatch, Watched};
use crate::objects::{Endpoint, RingParts};
use crate::region;
use crate::shm::{ShmSlice, ShmSliceMut};
pub use crate::spsc::RingLayout;
use crate::spsc::{Consumer, Geometry, Producer, RawSlots, RingWords};
use crate::typed::ValueSlot;
use crate::wait::{always, Alive, Patience, SpinPolicy, Tick, Wait, WaitStrategy};
use hwlink_drivers::{Backend, DeviceMemory, FileAccess, IvshmemDoorbell};
use hwlink_hw::{HWL_EP_ATTACHED, HWL_EP_FREE, HWL_WAIT_MAY_SLEEP, HWL_WAIT_POLL};
use std::sync::Arc;
use std::time::{Duration, Instant};
use zerocopy::{FromBytes, Immutable, IntoBytes};

mod receiver;
mod sender;
pub use self::receiver::*;
pub use self::sender::*;

/// Sends on the fast path between full checks (the receiver's wait mode,
/// corruption of `head`, the receiver's liveness word).
const FULL_CHECK_EVERY: u32 = 1 << 8;
/// Shortest time between two checks of the peer's liveness lock (a system
/// call) while an end waits. A killed peer is noticed sooner, from its
/// robust word; the lock only catches one that overwrote that word.
const LOCK_CHECK_EVERY: Duration = Duration::from_millis(50);

/// Default slots per ring.
pub const DEFAULT_CAPACITY: u32 = 1024;
/// Default largest message, chosen so a default ring fills one 2 MiB page.
pub const DEFAULT_SLOT_SIZE: u32 = 1016;

/// Creates or opens one end of a link.
#[derive(Debug, Clone)]
pub struct LinkBuilder {
    name: String,
    capacity: u32,
    slot_size: u32,
    layout: RingLayout,
    backend: Backend,
    wait: WaitStrategy,
    ready_timeout: Duration,
    device: Option<Arc<DeviceMemory>>,
    doorbell: Option<Arc<dyn IvshmemDoorbell>>,
    access: FileAccess,
}

impl LinkBuilder {
    /// A link named `name`: letters, digits, `_`, `-` and `.`, up to 48.
    pub fn new(name: impl Into<String>) -> Self {
        LinkBuilder {
            name: name.into(),
            capacity: DEFAULT_CAPACITY,
            slot_size: DEFAULT_SLOT_SIZE,
            layout: RingLayout::Auto,
            backend: Backend::Auto,
            wait: WaitStrategy::default(),
            ready_timeout: Duration::from_secs(1),
            device: None,
            doorbell: None,
            access: FileAccess::private(),
        }
    }
    setters! {
        /// Messages of the largest size the ring holds (a power of two;
        /// packed, one fewer: one unit stays free, and smaller messages
        /// fit in larger numbers); used on creation.
        capacity: u32;
        /// Largest message in bytes; used on creation.
        slot_size: u32;
        /// How messages are laid out in the ring: fixed slots (the
        /// default, `Auto`) or packed records; used on creation.
        layout: RingLayout;
        /// Which memory to use (hugepages, /dev/shm, or auto with fallback).
        backend: Backend;
        /// How this end waits.
        wait: WaitStrategy;
        /// How long `open_*` waits for a creator that is still initialising.
        ready_timeout: Duration;
    }

    /// File mode of the link's file (e.g. `0o660` to share it with a group; the
    /// default, 0600, keeps it to this user): the kernel's own check on
    /// who may map it. Used on creation; both ends' processes need read and write.
    pub fn file_mode(mut self, mode: u32) -> Self {
        self.access = self.access.with_mode(mode);
        self
    }

    /// The group the link's file belongs to (a name or a gid; default: this
    /// process's group, or that of the shared hugetlbfs mount that
    /// `hwlink setup --group` made). This process must be a member. With
    /// `file_mode(0o660)`, every member of the group may use it. Used on
    /// creation.
    pub fn group(mut self, group: impl Into<hwlink_drivers::Group>) -> Self {
        self.access = self.access.with_group(group);
        self
    }

    /// Puts the link on device memory shared with another kernel (an
    /// ivshmem BAR in a guest, or the host file behind it) instead of a
    /// named region file; `backend` is then ignored. Several links share
    /// one device memory, found by name.
    pub fn on_device(mut self, memory: Arc<DeviceMemory>) -> Self {
        self.device = Some(memory);
        self
    }

    /// Sleeps and wakes through an ivshmem hardware doorbell (with
    /// [`on_device`](Self::on_device)): blocking operations then work
    /// between host and guest, unchanged.
    pub fn ivshmem_doorbell(mut self, bell: Arc<dyn IvshmemDoorbell>) -> Self {
        self.doorbell = Some(bell);
        self
    }

    /// Futexes do not cross kernels: on device memory an end that may sleep
    /// needs the hardware doorbell.
    fn check_wake_path(&self) -> Result<(), OpenError> {
        if self.device.is_some() && self.doorbell.is_none() && self.wait != WaitStrategy::BusyPoll {
            return Err(OpenError::InvalidConfig(format!(
                "wait strategy {} sleeps, and a futex cannot wake a process in another kernel: \
                 use busy-polling (WaitStrategy::BusyPoll, --wait poll) or give the link an \
                 ivshmem doorbell",
                self.wait
            )));
        }
        Ok(())
    }

    fn geometry(&self) -> Result<Geometry, OpenError> {
        if hwlink_hw::slot_stride(self.slot_size).is_none() {
            return Err(OpenError::InvalidConfig(format!(
                "slot size {} is too large",
                self.slot_size
            )));
        }
        Geometry::for_ring(self.capacity, self.slot_size, self.layout).map_err(|c| {
            OpenError::InvalidConfig(format!(
                "{} {} is not allowed (limit {}): capacity must be a power of two up to 2^24 slots, slot size up to 1 GiB",
                c.what, c.value, c.limit
            ))
        })
    }

    fn create(&self) -> Result<RingParts, OpenError> {
        self.check_wake_path()?;
        let map = match &self.device {
            Some(device) => {
                region::create_on_device(device, &self.name, self.geometry()?, self.ready_timeout)?
            }
            None => region::create_ring_region(
                &self.name,
                self.geometry()?,
                self.backend,
                &self.access,
            )?,
        };
        let info = region::validate(&map)?;
        RingParts::locate(map, &info)
    }

    fn open(&self) -> Result<RingParts, OpenError> {
        self.check_wake_path()?;
        let (map, info) = match &self.device {
            Some(device) => region::open_on_device(device, &self.name, self.ready_timeout)?,
            None => region::open_region(&self.name, self.backend, self.ready_timeout)?,
        };
        RingParts::locate(map, &info)
    }

    /// Creates the link's region and returns its sending end. The region's
    /// file is removed when this end is dropped (processes that have it
    /// open keep using it).
    pub fn create_sender(&self) -> Result<Sender, OpenError> {
        Sender::attach(self.create()?, self.wait, self.doorbell.as_ref())
    }
    /// Creates the link's region and returns its receiving end.
    pub fn create_receiver(&self) -> Result<Receiver, OpenError> {
        Receiver::attach(self.create()?, self.wait, self.doorbell.as_ref())
    }
    /// Opens the sending end of an existing link.
    pub fn open_sender(&self) -> Result<Sender, OpenError> {
        Sender::attach(self.open()?, self.wait, self.doorbell.as_ref())
    }
    /// Opens the receiving end of an existing link.
    pub fn open_receiver(&self) -> Result<Receiver, OpenError> {
        Receiver::attach(self.open()?, self.wait, self.doorbell.as_ref())
    }
}

/// What the peer end is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Peer {
    /// Not attached yet: messages wait for it.
    Absent,
    /// Attached.
    Present,
    /// Closed, or its process died.
    Gone,
}

/// Tracks the peer endpoint: its state word, and its process through its
/// liveness file once it attached.
#[derive(Debug)]
struct PeerTracker {
    ep: Endpoint,
    /// False when the peer may run under another kernel (device memory):
    /// then only its state word tells whether it is there.
    by_process: bool,
    watch: Option<PeerWatch>,
    gone: bool,
    /// When the peer's liveness lock was last checked (a system call).
    last_lock_check: Option<Instant>,
}

impl PeerTracker {
    /// Reads the peer's state word and the robust word of its liveness
    /// file: two loads, no system call. With `waiting` (the end waits
    /// anyway), also checks the peer's liveness lock, at most every
    /// LOCK_CHECK_EVERY: that catches a peer that wrote over its robust
    /// word before it died.
    fn status(&mut self, policy: &mut SpinPolicy, waiting: bool) -> Peer {
        if self.gone {
            return Peer::Gone;
        }
        if !waiting {
            if let Some(w) = &self.watch {
                if self.ep.state_now() == HWL_EP_ATTACHED {
                    // Hot path: a line that only changes on attach/close,
                    // and one the kernel writes only when the peer dies.
                    if w.died() {
                        self.gone = true;
                        return Peer::Gone;
                    }
                    return Peer::Present;
                }
            }
        }
        let snap = self.ep.snapshot();
        match snap.state {
            HWL_EP_FREE => Peer::Absent,
            HWL_EP_ATTACHED if !self.by_process => Peer::Present,
            HWL_EP_ATTACHED => {
                let watch = self.watch.get_or_insert_with(|| {
                    policy.set_masks(crate::liveness::cpu_mask(), snap.cpu_mask);
                    PeerWatch::new(snap.token)
                });
                let lock_due = waiting
                    && self
                        .last_lock_check
                        .map_or(true, |t| t.elapsed() >= LOCK_CHECK_EVERY);
                if lock_due {
                    self.last_lock_check = Some(Instant::now());
                }
                if watch.died() || (lock_due && !watch.is_alive()) {
                    self.gone = true;
                    return Peer::Gone;
                }
                Peer::Present
            }
            // HWL_EP_CLOSED, or garbage: either way nobody will come.
            _ => {
                self.gone = true;
                Peer::Gone
            }
        }
    }

    /// Asks the kernel now, whatever the last check: for
    /// [`Sender::is_disconnected`].
    fn status_now(&mut self, policy: &mut SpinPolicy) -> Peer {
        self.last_lock_check = None;
        self.status(policy, true)
    }
}

/// Everything an end needs besides its half of the ring.
#[derive(Debug)]
struct EndState {
    parts: RingParts,
    me: Endpoint,
    peer: PeerTracker,
    strategy: WaitStrategy,
    policy: SpinPolicy,
    poisoned: Option<Corruption>,
    /// The peer's liveness watch, taken from `peer` once it exists: what a
    /// parked wait also sleeps on. Kept here so that a wait borrows it
    /// (no reference count touched on the hot path).
    death: Option<Arc<Watched>>,
}

impl EndState {
    fn new(
        parts: RingParts,
        side: Side,
        strategy: WaitStrategy,
        bell: Option<&Arc<dyn IvshmemDoorbell>>,
    ) -> Result<EndState, OpenError> {
        let me = parts.endpoint(side);
        let wait_mode = if strategy == WaitStrategy::BusyPoll {
            HWL_WAIT_POLL
        } else {
            HWL_WAIT_MAY_SLEEP
        };
        let doorbell = bell.map_or(0, |b| {
            hw_doorbell::endpoint_word(&**b, hw_doorbell::vector_for(side, &**b))
        });
        me.attach(parts.map().name(), side, wait_mode, doorbell)?;
        let other = match side {
            Side::Sender => Side::Receiver,
            Side::Receiver => Side::Sender,
        };
        let peer = PeerTracker {
            ep: parts.endpoint(other),
            by_process: !parts.map().spans_kernels(),
            watch: None,
            gone: false,
            last_lock_check: None,
        };
        let mut end = EndState {
            parts,
            me,
            peer,
            strategy,
            policy: SpinPolicy::new(),
            poisoned: None,
            death: None,
        };
        end.peer.status(&mut end.policy, false);
        Ok(end)
    }

    fn poison(&mut self, c: Corruption) -> Corruption {
        self.me.close();
        self.poisoned = Some(c.clone());
        c
    }

    /// The corruption to report if another process shrank the region file
    /// under us (its lost pages read as zeros now).
    fn truncation(&self) -> Result<(), Corruption> {
        truncation(&self.parts)
    }
}

/// The corruption to report if another process shrank the region file of
/// `parts` under us (its lost pages read as zeros now).
fn truncation(parts: &RingParts) -> Result<(), Corruption> {
    if parts.map().truncated() {
        return Err(Corruption::new(
            "region size (the file was truncated by another process)",
            0,
            parts.map().len() as u64,
        ));
    }
    Ok(())
}

/// On device memory with a doorbell register: both of the ring's doorbells
/// wake through `bell` instead of a futex.
fn wake_through(
    bell: Option<&Arc<dyn IvshmemDoorbell>>,
    side: Side,
    parts: &RingParts,
    words: &mut RingWords,
) {
    if let Some(bell) = bell {
        let wake = hw_doorbell::wake(bell, side, parts);
        words.not_empty.set_wake(wake.clone());
        words.not_full.set_wake(wake);
    }
}

impl Sender {
    /// Whether the receiving end may sleep on a doorbell: it has not
    /// advertised `HWL_WAIT_POLL` (not attached yet counts as may sleep,
    /// `HWL_WAIT_MAY_SLEEP` being 0). One load of the consumer's endpoint
    /// line, which the send's fast path reads anyway and which changes
    /// only on attach and close.
    ///
    /// What a domain's inbox check after a send relies on (hw/SPEC.md
    /// §12.4, [L4]): whenever this says yes, the send's publish executed
    /// the ring's [F0] fence after it published (§8.5: the producer skips
    /// F0 only once it has read `HWL_WAIT_POLL` from this same word, which
    /// a receiver sets once, at attach), so that fence also orders the
    /// inbox check that follows.
    #[inline(always)]
    pub(crate) fn receiver_may_sleep(&self) -> bool {
        self.ring
            .words
            .consumer_wait_mode()
            .load(crate::sync::Ordering::Relaxed)
            != HWL_WAIT_POLL
    }
}

/// Why a wait ended without the ring becoming ready.
enum WaitEnd {
    Ready,
    TimedOut,
    PeerGone,
}

/// Waits until `ready(audit)` (a read of shared memory that does not change
/// any cache) returns true, through the one wait engine ([`Wait`]) with the
/// end's strategy. Re-checks the ring after the peer is seen gone, since it
/// publishes before it closes. `audit` asks `ready` to also validate the
/// peer's index, which the hot polling loop skips: it is set at every
/// periodic look. `alive`: the caller's own check that the peer is still
/// there (a domain's directory), made on slow looks; false ends the wait
/// as if the peer closed.
fn wait_ready(
    end: &mut EndState,
    bell: &Doorbell,
    deadline: Option<Instant>,
    alive: Alive<'_>,
    ready: impl Fn(bool) -> Result<bool, Corruption>,
) -> Result<WaitEnd, Corruption> {
    if end.peer.watch.is_none() && end.peer.by_process {
        // Once per end, at its first wait: watch the peer (its CPUs, its
        // liveness file) as soon as it attached, so that this setup, with
        // its system calls, is done before the polling that follows, not
        // at the first slow look of some later wait.
        end.peer.status(&mut end.policy, false);
    }
    if end.death.is_none() {
        // Once per end: the watch exists once the peer attached.
        end.death = end.peer.watch.as_ref().and_then(PeerWatch::shared);
    }
    let EndState {
        parts,
        peer,
        strategy,
        policy,
        death,
        ..
    } = end;
    // Also woken by the kernel when the peer dies (its liveness word).
    Wait::new(bell, *strategy, deadline)
        .death(death.as_deref().and_then(|w| w.lock_word()))
        .run(policy, |tick, policy| {
            if tick == Tick::Poll {
                return Ok(ready(false)?.then_some(WaitEnd::Ready));
            }
            truncation(parts)?;
            if ready(true)? {
                return Ok(Some(WaitEnd::Ready));
            }
            // The peer's liveness lock (a system call, at most every
            // LOCK_CHECK_EVERY) and the caller's own check only on slow
            // looks.
            let slow = tick == Tick::Slice;
            if peer.status(policy, slow) == Peer::Gone || (slow && !alive()) {
                return Ok(Some(if ready(false)? {
                    WaitEnd::Ready
                } else {
                    WaitEnd::PeerGone
                }));
            }
            Ok(crate::wait::past(deadline).then_some(WaitEnd::TimedOut))
        })
}

/// What a select (`crate::select`) and a readiness descriptor
/// (`crate::readiness`) need of an end: its doorbell, its peer's death, a
/// look from memory alone and a slow look.
impl EndState {
    /// Whether the peer is known gone from memory alone (its state word,
    /// the kernel's mark in its liveness word): no system call.
    fn peer_gone_now(&self) -> bool {
        self.peer.gone
            || self.peer.ep.state_now() > HWL_EP_ATTACHED
            || self.peer.watch.as_ref().is_some_and(PeerWatch::died)
    }

    /// The peer's liveness watch, once it attached: what a sleep also
    /// watches, so that the kernel's mark of its death wakes it.
    fn death_watch(&mut self) -> Option<Arc<Watched>> {
        if self.death.is_none() {
            self.death = self.peer.watch.as_ref().and_then(PeerWatch::shared);
        }
        self.death.clone()
    }

    /// The slow look of a waiter: the peer's state and, at most every
    /// LOCK_CHECK_EVERY, its liveness lock (a system call).
    fn look_slowly(&mut self) {
        self.peer.status(&mut self.policy, true);
    }
}

macro_rules! waitable_end {
    ($ty:ty, $bell:ident, $ready:ident) => {
        impl $ty {
            /// Whether the operation could make progress now, or would fail
            /// at once (peer gone, end poisoned), judged from memory alone.
            pub(crate) fn ready_now(&self) -> bool {
                self.end.poisoned.is_some() || self.ring.$ready() || self.end.peer_gone_now()
            }
            /// The doorbell the peer rings when this end may make progress.
            pub(crate) fn doorbell(&self) -> &Doorbell {
                &self.ring.words.$bell
            }
            /// See `EndState::death_watch`.
            pub(crate) fn death_watch(&mut self) -> Option<Arc<Watched>> {
                self.end.death_watch()
            }
            /// See `EndState::look_slowly`.
            pub(crate) fn look_slowly(&mut self) {
                self.end.look_slowly()
            }

            /// A descriptor for `epoll`, `poll`, mio, tokio's `AsyncFd` or
            /// io_uring's `POLL_ADD`: readable when this end may make
            /// progress (see the type's documentation), or its peer is
            /// gone. It is armed now and again whenever an attempt finds
            /// nothing to do, and stays readable until then: after it
            /// reads ready, try until the attempt says `Empty` (`Full`).
            /// Costs nothing while unused: the peer rings only an armed
            /// end. Not for busy-polling ends (their peer never rings).
            pub fn as_fd(&mut self) -> Result<std::os::fd::BorrowedFd<'_>, crate::ReadinessError> {
                let (strategy, bell) = (self.end.strategy, &self.ring.words.$bell);
                if crate::readiness::ensure(&mut self.readiness, strategy, bell, true)? {
                    self.arm_readiness();
                }
                crate::readiness::fd_of(&self.readiness)
            }

            /// An attempt found nothing to do: arm the descriptor, if it
            /// arms itself.
            #[cold]
            fn arm_readiness(&mut self) {
                if self.readiness.as_ref().is_some_and(|r| r.auto) {
                    self.arm_for_wait();
                }
            }

            /// Arms the descriptor now (an async end about to await it);
            /// true if the end was found ready instead.
            pub(crate) fn arm_for_wait(&mut self) -> bool {
                let Some(r) = &mut self.readiness else {
                    return true;
                };
                // Sets up the peer's watch once it attached.
                self.end.peer.status(&mut self.end.policy, false);
                let death = self.end.death_watch();
                let (ring, end) = (&self.ring, &self.end);
                r.arm_now(death, || ring.$ready() || end.peer_gone_now())
            }

            /// Hands the descriptor to an owner that arms it itself
            /// ([`arm_for_wait`](Self::arm_for_wait)) before it waits.
            #[cfg_attr(not(feature = "tokio"), allow(dead_code))]
            pub(crate) fn arm_explicitly(&mut self) {
                if let Some(r) = &mut self.readiness {
                    r.auto = false;
                }
            }
        }
    };
}
waitable_end!(Receiver, not_empty, has_data_now);
waitable_end!(Sender, not_full, has_room_now);

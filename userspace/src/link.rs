//! Links: the public `Sender` and `Receiver` ends of an SPSC ring in a named
//! region, with blocking, timed, non-blocking and zero-copy operations.
#![warn(clippy::arithmetic_side_effects)]

use crate::doorbell::Doorbell;
use crate::error::{Corruption, OpenError, RecvError, SendError, Side};
use crate::hw_doorbell;
use crate::liveness::PeerWatch;
use crate::objects::{Endpoint, RingParts};
use crate::region;
use crate::shm::{ShmSlice, ShmSliceMut};
use crate::spsc::{Consumer, Geometry, Producer, RawSlots, RingWords};
use crate::wait::{always, Alive, SpinPolicy, Tick, Wait, WaitStrategy};
use hwlink_drivers::{Backend, DeviceMemory, IvshmemDoorbell};
use hwlink_hw::{HWL_EP_ATTACHED, HWL_EP_FREE, HWL_WAIT_MAY_SLEEP, HWL_WAIT_POLL};
use std::sync::Arc;
use std::time::{Duration, Instant};

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
    backend: Backend,
    wait: WaitStrategy,
    ready_timeout: Duration,
    device: Option<Arc<DeviceMemory>>,
    doorbell: Option<Arc<dyn IvshmemDoorbell>>,
}

impl LinkBuilder {
    /// A link named `name`: letters, digits, `_`, `-` and `.`, up to 48.
    pub fn new(name: impl Into<String>) -> Self {
        LinkBuilder {
            name: name.into(),
            capacity: DEFAULT_CAPACITY,
            slot_size: DEFAULT_SLOT_SIZE,
            backend: Backend::Auto,
            wait: WaitStrategy::default(),
            ready_timeout: Duration::from_secs(1),
            device: None,
            doorbell: None,
        }
    }
    setters! {
        /// Slots in the ring (a power of two); used on creation.
        capacity: u32;
        /// Largest message in bytes; used on creation.
        slot_size: u32;
        /// Which memory to use (hugepages, /dev/shm, or auto with fallback).
        backend: Backend;
        /// How this end waits.
        wait: WaitStrategy;
        /// How long `open_*` waits for a creator that is still initialising.
        ready_timeout: Duration;
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
        let stride = hwlink_hw::slot_stride(self.slot_size).ok_or_else(|| {
            OpenError::InvalidConfig(format!("slot size {} is too large", self.slot_size))
        })?;
        let object = hwlink_hw::ring_bytes(self.capacity, stride).unwrap_or(u64::MAX);
        let slots_offset =
            object.saturating_sub(u64::from(self.capacity).saturating_mul(u64::from(stride)));
        Geometry::validate(self.capacity, self.slot_size, stride, slots_offset, object).map_err(|c| {
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
            None => region::create_ring_region(&self.name, self.geometry()?, self.backend)?,
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
    let EndState {
        parts,
        peer,
        strategy,
        policy,
        ..
    } = end;
    // Also woken by the kernel when the peer dies (its liveness word).
    let watched = peer.watch.as_ref().and_then(PeerWatch::shared);
    Wait::new(bell, *strategy, deadline)
        .death(watched.as_deref().and_then(|w| w.lock_word()))
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

/// The sending end of a link. `Send` but not `Sync`: one thread sends.
#[derive(Debug)]
pub struct Sender {
    ring: Producer<RawSlots>,
    end: EndState,
    /// Largest message (the slot size), kept here for the fast path.
    max: usize,
    /// Sends left before the fast path defers to a full check (peer
    /// process liveness, corruption); 0 forces the slow path.
    fast_budget: u32,
}

impl Sender {
    /// Opens the sending end of the link `name` with default options.
    pub fn open(name: &str) -> Result<Sender, OpenError> {
        LinkBuilder::new(name).open_sender()
    }

    pub(crate) fn attach(
        parts: RingParts,
        strategy: WaitStrategy,
        bell: Option<&Arc<dyn IvshmemDoorbell>>,
    ) -> Result<Sender, OpenError> {
        let mut ring = Producer::new(parts.words(), parts.slots(), parts.geometry())
            .map_err(|c| parts.corrupt(c))?;
        let end = EndState::new(parts, Side::Sender, strategy, bell)?;
        wake_through(bell, Side::Sender, &end.parts, &mut ring.words);
        let max = ring.geometry().slot_size as usize;
        Ok(Sender {
            ring,
            end,
            max,
            fast_budget: 0,
        })
    }

    /// The link's name.
    pub fn name(&self) -> &str {
        self.end.parts.map().name()
    }
    /// Largest message this link carries.
    pub fn max_message(&self) -> usize {
        self.max
    }
    /// Slots in the ring.
    pub fn capacity(&self) -> usize {
        self.ring.geometry().capacity as usize
    }
    /// This end's wait strategy.
    pub fn wait_strategy(&self) -> WaitStrategy {
        self.end.strategy
    }
    /// Whether this end decided it shares one CPU with its peer.
    pub fn shares_core_with_peer(&self) -> bool {
        self.end.policy.shared_core()
    }
    /// The backing memory kind.
    pub fn backing(&self) -> hwlink_drivers::BackingKind {
        self.end.parts.map().kind()
    }
    /// Whether messages are queued for a receiver that has not attached
    /// yet (so the region must outlive this end for them to be delivered).
    pub(crate) fn awaits_receiver(&self) -> bool {
        self.end.peer.ep.state_now() == HWL_EP_FREE
            && self
                .end
                .parts
                .words()
                .occupancy(self.ring.geometry().capacity)
                .is_ok_and(|n| n > 0)
    }

    /// Whether the receiver has closed or died (checks the process).
    pub fn is_disconnected(&mut self) -> bool {
        self.end.peer.status_now(&mut self.end.policy) == Peer::Gone
    }

    /// The fast path's test: a message of `len` bytes can go into a free
    /// slot right now, the receiver has not closed, and no full check is
    /// due. One load of shared memory (the receiver's state word), which
    /// only changes on attach and close.
    #[inline(always)]
    fn fast_slot(&self, len: usize) -> bool {
        len <= self.max
            && self.fast_budget > 0
            && self.ring.cached_free() > 0
            && self.end.peer.ep.state_now() <= HWL_EP_ATTACHED
    }

    /// Free slots now, or the reason there can be none: the slow path,
    /// which also checks the receiver's process every FULL_CHECK_EVERY
    /// sends (the fast path defers to it that often).
    fn ready_slots(&mut self) -> Result<u32, SendError<()>> {
        if let Some(c) = &self.end.poisoned {
            return Err(SendError::Corrupt(c.clone()));
        }
        if let Err(c) = self.end.truncation() {
            return Err(SendError::Corrupt(self.end.poison(c)));
        }
        let check = self.fast_budget == 0;
        if check {
            self.ring.refresh_peer_mode();
        }
        if self.end.peer.status(&mut self.end.policy, false) == Peer::Gone {
            return Err(SendError::Disconnected(()));
        }
        match self.ring.free() {
            Ok(0) => {
                // Full: the receiver may have died with the ring full.
                if self.end.peer.status(&mut self.end.policy, false) == Peer::Gone {
                    return Err(SendError::Disconnected(()));
                }
                Err(SendError::Full(()))
            }
            Ok(n) => {
                if check {
                    self.fast_budget = FULL_CHECK_EVERY;
                }
                Ok(n)
            }
            Err(c) => Err(SendError::Corrupt(self.end.poison(c))),
        }
    }

    /// Blocks (per the wait strategy) until a slot is free.
    fn wait_slot(
        &mut self,
        deadline: Option<Instant>,
        alive: Alive<'_>,
    ) -> Result<u32, SendError<()>> {
        if self.ring.cached_free() > 0 {
            return self.ready_slots();
        }
        loop {
            match self.ready_slots() {
                Err(SendError::Full(())) => {}
                other => return other,
            }
            let ring = &self.ring;
            // has_room_now reads `head` itself: a corrupt one ends the wait
            // and is reported by the next free().
            let ready = |_audit: bool| Ok(ring.has_room_now());
            match wait_ready(&mut self.end, &ring.words.not_full, deadline, alive, ready) {
                Ok(WaitEnd::Ready) => {}
                Ok(WaitEnd::TimedOut) => return Err(SendError::Timeout(())),
                Ok(WaitEnd::PeerGone) => return Err(SendError::Disconnected(())),
                Err(c) => return Err(SendError::Corrupt(self.end.poison(c))),
            }
        }
    }

    #[inline(always)]
    /// The one send: without `block`, fails with `Full` at once; with it,
    /// waits until `deadline` (none: for ever), and while `alive` (the
    /// caller's own check on slow looks) says the receiver is there.
    pub(crate) fn send_deadline<M: AsRef<[u8]>>(
        &mut self,
        msg: M,
        deadline: Option<Instant>,
        block: bool,
        alive: Alive<'_>,
    ) -> Result<(), SendError<M>> {
        let len = msg.as_ref().len();
        if self.fast_slot(len) {
            self.fast_budget = self.fast_budget.saturating_sub(1);
            self.ring.write(0, msg.as_ref());
            self.ring.publish(1);
            return Ok(());
        }
        self.send_slow(msg, deadline, block, alive)
    }

    /// Everything but the fast path: full checks, waiting, errors.
    #[cold]
    #[inline(never)]
    fn send_slow<M: AsRef<[u8]>>(
        &mut self,
        msg: M,
        deadline: Option<Instant>,
        block: bool,
        alive: Alive<'_>,
    ) -> Result<(), SendError<M>> {
        let len = msg.as_ref().len();
        if len > self.max_message() {
            return Err(SendError::TooLarge {
                msg,
                len,
                max: self.max_message(),
            });
        }
        let got = if block {
            self.wait_slot(deadline, alive)
        } else {
            self.ready_slots()
        };
        match got {
            Ok(_) => {
                self.ring.write(0, msg.as_ref());
                self.ring.publish(1);
                Ok(())
            }
            Err(e) => Err(rebind(e, msg)),
        }
    }

    send_forms!();

    /// Reserves a slot for an in-place write of up to `len` bytes, waiting
    /// for space. Nothing is sent until [`WriteSlot::commit`].
    pub fn reserve(&mut self, len: usize) -> Result<WriteSlot<'_>, SendError<()>> {
        self.reserve_deadline(len, None, true)
    }
    /// Like [`reserve`](Self::reserve), without waiting.
    pub fn try_reserve(&mut self, len: usize) -> Result<WriteSlot<'_>, SendError<()>> {
        self.reserve_deadline(len, None, false)
    }

    fn reserve_deadline(
        &mut self,
        len: usize,
        deadline: Option<Instant>,
        block: bool,
    ) -> Result<WriteSlot<'_>, SendError<()>> {
        // The same fast path as a send: a cached free slot and an attached
        // receiver, with the full checks every FULL_CHECK_EVERY calls.
        if self.fast_slot(len) {
            self.fast_budget = self.fast_budget.saturating_sub(1);
            return Ok(WriteSlot { sender: self, len });
        }
        if len > self.max_message() {
            return Err(SendError::TooLarge {
                msg: (),
                len,
                max: self.max_message(),
            });
        }
        if block {
            self.wait_slot(deadline, &mut always)?
        } else {
            self.ready_slots()?
        };
        Ok(WriteSlot { sender: self, len })
    }

    /// Starts a batch of up to `max` messages written in place and published
    /// with one store; waits until at least one slot is free.
    pub fn write_batch(&mut self, max: usize) -> Result<WriteBatch<'_>, SendError<()>> {
        let free = self.wait_slot(None, &mut always)?;
        Ok(WriteBatch {
            limit: free.min(max.min(u32::MAX as usize) as u32),
            written: 0,
            sender: self,
        })
    }
    /// Like [`write_batch`](Self::write_batch), without waiting.
    pub fn try_write_batch(&mut self, max: usize) -> Result<WriteBatch<'_>, SendError<()>> {
        let free = self.ready_slots()?;
        Ok(WriteBatch {
            limit: free.min(max.min(u32::MAX as usize) as u32),
            written: 0,
            sender: self,
        })
    }
}

fn rebind<M>(e: SendError<()>, msg: M) -> SendError<M> {
    e.with_msg(msg)
}

impl Drop for Sender {
    fn drop(&mut self) {
        self.end.me.close();
        // Wake a receiver asleep on an empty ring so it sees the close.
        self.ring.words.not_empty.post();
    }
}

/// A slot reserved for an in-place write; dereferences to its bytes.
#[derive(Debug)]
pub struct WriteSlot<'a> {
    sender: &'a mut Sender,
    len: usize,
}

impl WriteSlot<'_> {
    /// Publishes the slot with its full reserved length.
    pub fn commit(self) {
        let len = self.len;
        self.commit_len(len)
    }
    /// Publishes the first `len` bytes (at most the reserved length).
    pub fn commit_len(self, len: usize) {
        let len = len.min(self.len) as u32;
        self.sender.ring.set_len(0, len);
        self.sender.ring.publish(1);
    }
}

impl WriteSlot<'_> {
    /// The reserved length.
    pub fn len(&self) -> usize {
        self.len
    }
    /// Whether zero bytes were reserved.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// The reserved bytes, to write in place. They live in shared memory,
    /// so they are written by copy (see [`ShmSliceMut`]), never through a
    /// Rust reference.
    pub fn bytes_mut(&mut self) -> ShmSliceMut<'_> {
        // The slot is free and owned by this producer until publish; it
        // holds at least `len` <= slot_size payload bytes; the `&mut self`
        // borrow keeps the view exclusive in this process.
        self.sender.ring.payload_mut(0, self.len)
    }
    /// Copies `src` to `offset` of the reserved bytes; false (nothing
    /// written) if it does not fit.
    pub fn write_at(&mut self, offset: usize, src: &[u8]) -> bool {
        self.bytes_mut().write_at(offset, src)
    }
    /// Copies `src` to the start of the reserved bytes; returns how many
    /// (the smaller of the two lengths).
    pub fn copy_from(&mut self, src: &[u8]) -> usize {
        self.bytes_mut().copy_from(src)
    }
}

/// Messages written in place and published together by one store.
#[derive(Debug)]
pub struct WriteBatch<'a> {
    sender: &'a mut Sender,
    limit: u32,
    written: u32,
}

impl WriteBatch<'_> {
    /// Slots left in this batch.
    pub fn remaining(&self) -> usize {
        self.limit.saturating_sub(self.written) as usize
    }
    /// Copies one message into the batch; hands it back if the batch is full
    /// or it is too large.
    pub fn push<M: AsRef<[u8]>>(&mut self, msg: M) -> Result<(), SendError<M>> {
        let len = msg.as_ref().len();
        if len > self.sender.max_message() {
            return Err(SendError::TooLarge {
                msg,
                len,
                max: self.sender.max_message(),
            });
        }
        if self.written == self.limit {
            return Err(SendError::Full(msg));
        }
        self.sender.ring.write(self.written, msg.as_ref());
        self.written = self.written.saturating_add(1);
        Ok(())
    }
    /// Reserves the next slot for `len` bytes and returns them for writing
    /// (in place, by copy: see [`ShmSliceMut`]).
    pub fn slot(&mut self, len: usize) -> Option<ShmSliceMut<'_>> {
        if self.written == self.limit || len > self.sender.max_message() {
            return None;
        }
        let k = self.written;
        self.sender.ring.set_len(k, len as u32);
        self.written = self.written.saturating_add(1);
        // Slot k is free and ours until publish, and holds `len` payload
        // bytes; the borrow of self keeps it exclusive.
        Some(self.sender.ring.payload_mut(k, len))
    }
    /// Publishes every message of the batch with one release store; returns
    /// how many.
    pub fn commit(self) -> usize {
        if self.written > 0 {
            self.sender.ring.publish(self.written);
        }
        self.written as usize
    }
}

/// The receiving end of a link. `Send` but not `Sync`: one thread receives.
#[derive(Debug)]
pub struct Receiver {
    ring: Consumer<RawSlots>,
    end: EndState,
}

impl Receiver {
    /// Opens the receiving end of the link `name` with default options.
    pub fn open(name: &str) -> Result<Receiver, OpenError> {
        LinkBuilder::new(name).open_receiver()
    }

    pub(crate) fn attach(
        parts: RingParts,
        strategy: WaitStrategy,
        bell: Option<&Arc<dyn IvshmemDoorbell>>,
    ) -> Result<Receiver, OpenError> {
        let mut ring = Consumer::new(parts.words(), parts.slots(), parts.geometry())
            .map_err(|c| parts.corrupt(c))?;
        let end = EndState::new(parts, Side::Receiver, strategy, bell)?;
        wake_through(bell, Side::Receiver, &end.parts, &mut ring.words);
        Ok(Receiver { ring, end })
    }

    /// The link's name.
    pub fn name(&self) -> &str {
        self.end.parts.map().name()
    }
    /// Largest message this link carries.
    pub fn max_message(&self) -> usize {
        self.ring.geometry().slot_size as usize
    }
    /// This end's wait strategy.
    pub fn wait_strategy(&self) -> WaitStrategy {
        self.end.strategy
    }
    /// Whether this end decided it shares one CPU with its peer.
    pub fn shares_core_with_peer(&self) -> bool {
        self.end.policy.shared_core()
    }
    /// Messages ready to be received now.
    pub fn len(&mut self) -> usize {
        self.ring.refresh_available().unwrap_or(0) as usize
    }
    /// Whether no message is ready now.
    pub fn is_empty(&mut self) -> bool {
        self.len() == 0
    }

    /// Whether a message can be received now, judged from memory alone (no
    /// system call, no cache update): for waiting on several links at once.
    /// A poisoned end counts as ready so that the next receive reports it.
    pub(crate) fn has_message_now(&self) -> bool {
        self.end.poisoned.is_some() || self.ring.cached_available() > 0 || self.ring.has_data_now()
    }

    /// The fast path's test: a message is ready (cached count, or the slot
    /// at head is published) and this end is healthy.
    #[inline(always)]
    fn fast_ready(&mut self) -> bool {
        self.end.poisoned.is_none() && self.ring.available() > 0
    }

    /// Messages ready now, or why there are none.
    fn ready_messages(&mut self) -> Result<u32, RecvError> {
        if let Some(c) = &self.end.poisoned {
            return Err(RecvError::Corrupt(c.clone()));
        }
        if let Err(c) = self.end.truncation() {
            return Err(RecvError::Corrupt(self.end.poison(c)));
        }
        let n = self.ring.available();
        if n > 0 {
            return Ok(n);
        }
        // A miss: look at `tail` too, so that a corrupt one is reported on
        // this call. (The fast path never reads `tail`.)
        match self.ring.refresh_available() {
            Ok(0) => {}
            Ok(n) => return Ok(n),
            Err(c) => return Err(RecvError::Corrupt(self.end.poison(c))),
        }
        if self.end.peer.status(&mut self.end.policy, false) == Peer::Gone {
            // The sender publishes before it closes: look once more.
            return match self.ring.refresh_available() {
                Ok(0) => Err(RecvError::Disconnected),
                Ok(n) => Ok(n),
                Err(c) => Err(RecvError::Corrupt(self.end.poison(c))),
            };
        }
        Err(RecvError::Empty)
    }

    #[inline(never)]
    fn wait_message(
        &mut self,
        deadline: Option<Instant>,
        alive: Alive<'_>,
    ) -> Result<u32, RecvError> {
        // Waiting anyway: a good moment to learn whether the sender polls.
        self.ring.refresh_peer_mode();
        loop {
            match self.ready_messages() {
                Err(RecvError::Empty) => {}
                other => return other,
            }
            let ring = &self.ring;
            let ready = |audit: bool| {
                if ring.has_data_now() {
                    return Ok(true);
                }
                if audit {
                    ring.check_tail()?;
                }
                Ok(false)
            };
            match wait_ready(&mut self.end, &ring.words.not_empty, deadline, alive, ready) {
                Ok(WaitEnd::Ready) => {}
                Ok(WaitEnd::TimedOut) => return Err(RecvError::Timeout),
                Ok(WaitEnd::PeerGone) => return Err(RecvError::Disconnected),
                Err(c) => return Err(RecvError::Corrupt(self.end.poison(c))),
            }
        }
    }

    fn take_with<R>(&mut self, f: impl FnOnce(ShmSlice<'_>) -> R) -> Result<R, RecvError> {
        // `read` checked len <= slot_size; the slot is published and not
        // reused before our release below.
        let r = self.ring.read(0, f);
        match r {
            Ok(r) => {
                self.ring.release(1);
                Ok(r)
            }
            Err(c) => Err(RecvError::Corrupt(self.end.poison(c))),
        }
    }

    /// Receives one message, waiting per the wait strategy, and passes its
    /// bytes to `f` in place, without copying them first (they stay in
    /// shared memory: [`ShmSlice`] copies out what `f` needs).
    pub fn recv_with<R>(&mut self, f: impl FnOnce(ShmSlice<'_>) -> R) -> Result<R, RecvError> {
        if !self.fast_ready() {
            self.wait_message(None, &mut always)?;
        }
        self.take_with(f)
    }
    /// The one receive into a new vector: without `block`, fails with
    /// `Empty` at once; with it, waits until `deadline` (none: for ever),
    /// and while `alive` (the caller's own check on slow looks) says the
    /// sender is there.
    pub(crate) fn recv_deadline(
        &mut self,
        deadline: Option<Instant>,
        block: bool,
        alive: Alive<'_>,
    ) -> Result<Vec<u8>, RecvError> {
        if !block {
            self.ready_messages()?;
        } else if !self.fast_ready() {
            self.wait_message(deadline, alive)?;
        }
        self.take_with(|b| b.to_vec())
    }
    /// Receives one message into a new vector.
    pub fn recv(&mut self) -> Result<Vec<u8>, RecvError> {
        self.recv_with(|b| b.to_vec())
    }
    /// Receives one message, waiting at most `timeout`.
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<Vec<u8>, RecvError> {
        self.wait_message(crate::wait::deadline_after(timeout), &mut always)?;
        self.take_with(|b| b.to_vec())
    }
    /// Receives one message if one is ready now.
    pub fn try_recv(&mut self) -> Result<Vec<u8>, RecvError> {
        self.ready_messages()?;
        self.take_with(|b| b.to_vec())
    }
    /// Like [`try_recv`](Self::try_recv), passing the bytes to `f`.
    pub fn try_recv_with<R>(&mut self, f: impl FnOnce(ShmSlice<'_>) -> R) -> Result<R, RecvError> {
        self.ready_messages()?;
        self.take_with(f)
    }
    /// Receives one message into `buf`, waiting per the wait strategy;
    /// returns its length. No allocation.
    #[inline]
    pub fn recv_into(&mut self, buf: &mut [u8]) -> Result<usize, RecvError> {
        if !self.fast_ready() {
            self.wait_message(None, &mut always)?;
        }
        let cap = buf.len();
        let copied = self.ring.read(0, |m| {
            let len = m.len();
            if len > cap {
                return Err(len);
            }
            // `read` checked len <= slot_size; the slot is published and
            // stays ours until the release below; `buf` holds len bytes.
            m.copy_to(buf);
            Ok(len)
        });
        match copied {
            Ok(Ok(len)) => {
                self.ring.release(1);
                Ok(len)
            }
            Ok(Err(len)) => Err(RecvError::BufferTooSmall { len, cap }),
            Err(c) => Err(self.corrupt(c)),
        }
    }

    /// Poisons this end and returns the error to report.
    #[cold]
    #[inline(never)]
    fn corrupt(&mut self, c: Corruption) -> RecvError {
        RecvError::Corrupt(self.end.poison(c))
    }

    /// Borrows the next message in place, waiting for one. It stays queued
    /// until [`ReadSlot::release`].
    pub fn peek(&mut self) -> Result<ReadSlot<'_>, RecvError> {
        self.wait_message(None, &mut always)?;
        self.peek_ready()
    }
    /// Like [`peek`](Self::peek), without waiting.
    pub fn try_peek(&mut self) -> Result<ReadSlot<'_>, RecvError> {
        self.ready_messages()?;
        self.peek_ready()
    }

    /// Counts every ready message through `tail` (at least the one already
    /// found).
    fn count_ready(&mut self) -> Result<u32, RecvError> {
        self.ring
            .refresh_available()
            .map_err(|c| RecvError::Corrupt(self.end.poison(c)))
    }

    fn peek_ready(&mut self) -> Result<ReadSlot<'_>, RecvError> {
        let len = self
            .ring
            .read(0, |m| m.len())
            .map_err(|c| RecvError::Corrupt(self.end.poison(c)))?;
        Ok(ReadSlot {
            receiver: self,
            len,
        })
    }

    /// Borrows up to `max` ready messages in place, waiting for at least one;
    /// they are released together by [`ReadBatch::release`].
    pub fn read_batch(&mut self, max: usize) -> Result<ReadBatch<'_>, RecvError> {
        self.wait_message(None, &mut always)?;
        let n = self.count_ready()?;
        Ok(ReadBatch {
            count: n.min(max.min(u32::MAX as usize) as u32),
            receiver: self,
        })
    }
    /// Like [`read_batch`](Self::read_batch), without waiting.
    pub fn try_read_batch(&mut self, max: usize) -> Result<ReadBatch<'_>, RecvError> {
        self.ready_messages()?;
        let n = self.count_ready()?;
        Ok(ReadBatch {
            count: n.min(max.min(u32::MAX as usize) as u32),
            receiver: self,
        })
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.end.me.close();
        // Wake a sender asleep on a full ring so it sees the close.
        self.ring.words.not_full.post();
    }
}

/// A received message borrowed in place, until [`release`](Self::release).
/// Its bytes stay in shared memory: [`bytes`](Self::bytes) copies out what
/// is needed, never a Rust reference into memory the sender can write.
#[derive(Debug)]
pub struct ReadSlot<'a> {
    receiver: &'a mut Receiver,
    len: usize,
}

impl ReadSlot<'_> {
    /// The message's bytes, in place.
    pub fn bytes(&self) -> ShmSlice<'_> {
        // `read` checked len <= slot_size; the slot stays published and
        // unreleased while this borrow of the receiver lives.
        self.receiver.ring.payload(0, self.len)
    }
    /// The message's length.
    pub fn len(&self) -> usize {
        self.len
    }
    /// Whether the message is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// A copy of the message.
    pub fn to_vec(&self) -> Vec<u8> {
        self.bytes().to_vec()
    }
    /// Consumes the message, handing its slot back to the sender.
    pub fn release(self) {
        self.receiver.ring.release(1);
    }
}

/// Ready messages borrowed in place and released together.
#[derive(Debug)]
pub struct ReadBatch<'a> {
    receiver: &'a mut Receiver,
    count: u32,
}

impl ReadBatch<'_> {
    /// Messages in the batch.
    pub fn len(&self) -> usize {
        self.count as usize
    }
    /// Whether the batch is empty.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }
    /// The `i`-th message's bytes, in place; an error if the peer corrupted
    /// its length.
    pub fn get(&self, i: usize) -> Result<ShmSlice<'_>, Corruption> {
        assert!(
            i < self.len(),
            "batch index {i} out of range {}",
            self.len()
        );
        // Checked length, published slot, not released while the batch
        // borrows the receiver.
        self.receiver.ring.read_slice(i as u32)
    }
    /// Iterates over the batch's messages.
    pub fn iter(&self) -> impl Iterator<Item = Result<ShmSlice<'_>, Corruption>> + '_ {
        (0..self.len()).map(|i| self.get(i))
    }
    /// Releases every message of the batch with one store.
    pub fn release(self) {
        self.receiver.ring.release(self.count);
    }
}

//! Rendezvous (zero-capacity) hand-off between many senders and many
//! receivers in different processes, through cells in shared memory.
//!
//! Layout: `struct hwl_rendezvous` and `struct hwl_rdv_cell`
//! (hw/include/hwlink_abi.h). Protocol, states and ordering edges: hw/SPEC.md,
//! "Rendezvous". In short: a receiver that must wait *registers* a
//! RECV_WAITING cell, which a sender fills and then waits for the receiver's
//! acknowledgement; a sender that finds no receiver *posts* a SEND_WAITING
//! cell holding its message and waits until a receiver has taken it. A send
//! returns `Ok` only after a receiver's closure has run on the message.
//!
//! Every change of a cell's state word is a compare-exchange, so each message
//! is either delivered exactly once (`Ok`) or handed back to its sender with
//! an error, never both. Shared memory is untrusted: state words and lengths
//! are read once and checked, cell indices never come from shared memory, and
//! every wait ends at the caller's deadline, or (past the point of no return)
//! when the party it waits for finishes or is found dead.
#![cfg_attr(any(not(test), loom), allow(dead_code))]
#![warn(clippy::arithmetic_side_effects)]

use crate::doorbell::Doorbell;
use crate::error::Corruption;
use crate::shm::ShmSlice;
use crate::sync::{fence, AtomicU32, AtomicU64, Ordering};
use crate::wait::{past, SpinPolicy, Tick, Wait, WaitStrategy};
#[cfg_attr(loom, allow(unused_imports))]
use hwlink_hw::{
    hwl_rendezvous, HWL_CACHELINE, HWL_RDV_ACKED, HWL_RDV_CELL_HDR_SIZE, HWL_RDV_CLAIMED,
    HWL_RDV_FILLED, HWL_RDV_FILLING, HWL_RDV_FREE, HWL_RDV_MAX_CELLS, HWL_RDV_READING,
    HWL_RDV_RECV_WAITING, HWL_RDV_SEND_WAITING, HWL_RDV_TAKEN, HWL_RDV_TAKING,
    HWL_RING_MAX_SLOT_SIZE,
};
use std::time::{Duration, Instant};

const FREE: u32 = HWL_RDV_FREE;
const CLAIMED: u32 = HWL_RDV_CLAIMED;
const RECV_WAITING: u32 = HWL_RDV_RECV_WAITING;
const FILLING: u32 = HWL_RDV_FILLING;
const FILLED: u32 = HWL_RDV_FILLED;
const READING: u32 = HWL_RDV_READING;
const ACKED: u32 = HWL_RDV_ACKED;
const SEND_WAITING: u32 = HWL_RDV_SEND_WAITING;
const TAKING: u32 = HWL_RDV_TAKING;
const TAKEN: u32 = HWL_RDV_TAKEN;

/// The layout arithmetic of a rendezvous object (control block bytes, cell
/// stride, object bytes): computed in `hwlink_hw`.
#[cfg_attr(loom, allow(unused_imports))]
pub(crate) use hwlink_hw::{rdv_cell_stride as cell_stride, rendezvous_bytes, RDV_CONTROL_BYTES};

/// How often a waiting party checks the other party's liveness and the
/// caller's hook (hw/SPEC.md §8.8): the slow look of the wait engine.
const SLICE: Duration = Duration::from_millis(20);

/// How long a sender past its deadline (or with its peer gone) lets a
/// receiver that started taking its message finish before taking it back.
const TAKE_GRACE: Duration = Duration::from_millis(5);
/// How long `try_send` waits for the receiver it handed a message to
/// (under loom: no time at all, so that every branch is decided by the
/// model's schedule, never by the clock; under Miri, which runs a thousand
/// times slower, long enough for the receiver's thread to be scheduled).
const TRY_HANDOFF: Duration = if cfg!(loom) {
    Duration::ZERO
} else if cfg!(miri) {
    Duration::from_secs(2)
} else {
    Duration::from_millis(5)
};
/// Sleep slice while every cell is busy: waiters of different kinds share
/// `cells_bell`, so a wake-up may go to the wrong one; they re-scan this often.
const FULL_SLICE: Duration = Duration::from_millis(2);

/// A state word: `HWL_RDV_*` in the low half, a process token in the high
/// half.
#[inline(always)]
fn word(kind: u32, pid: u32) -> u64 {
    u64::from(kind) | (u64::from(pid) << 32)
}
#[inline(always)]
fn kind(w: u64) -> u32 {
    w as u32
}
#[inline(always)]
fn token_of(w: u64) -> u32 {
    (w >> 32) as u32
}

/// Checks a state word read from shared memory.
fn checked(w: u64) -> Result<u64, Corruption> {
    if kind(w) > TAKEN {
        return Err(Corruption::new(
            "rendezvous cell state",
            kind(w).into(),
            TAKEN.into(),
        ));
    }
    if kind(w) == FREE && token_of(w) != 0 {
        return Err(Corruption::new(
            "process token in a free rendezvous cell",
            token_of(w).into(),
            0,
        ));
    }
    Ok(w)
}

/// A state word that no well-behaved party could have stored at this point.
fn out_of_turn(found: u64) -> Corruption {
    Corruption::new(
        "rendezvous cell state word (moved out of turn)",
        found,
        u64::from(TAKEN) | (u64::from(u32::MAX) << 32),
    )
}

/// Why a rendezvous send failed. Every error means the message was **not**
/// delivered (the caller still has it and may send it again); `Ok` means a
/// receiver has received it: its closure has run.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum RdvSendError<E> {
    /// `try_send`: no receiver was waiting.
    NoReceiver,
    /// The deadline passed before a receiver took the message.
    Timeout,
    /// The caller's liveness hook failed while waiting; the message was
    /// withdrawn.
    Peer(E),
    /// The message is longer than a cell.
    TooLarge {
        /// Its length.
        len: usize,
        /// The slot size.
        max: usize,
    },
    /// A state word or length was out of range. The hand-off was abandoned:
    /// no well-behaved receiver received the message (a hostile process that
    /// scribbles on the region may have seen its bytes).
    Corrupt(Corruption),
}

/// Why a rendezvous receive failed. Nothing was received: the closure has
/// not run.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum RdvRecvError<E> {
    /// `try_recv_with`: no sender was waiting.
    NoSender,
    /// The deadline passed before a message arrived.
    Timeout,
    /// The caller's liveness hook failed while waiting.
    Peer(E),
    /// A state word or length was out of range.
    Corrupt(Corruption),
}

/// Why a wait ended early, before the public error types.
enum Stop<E> {
    Timeout,
    Peer(E),
    Corrupt(Corruption),
}

impl<E> From<Corruption> for Stop<E> {
    fn from(c: Corruption) -> Self {
        Stop::Corrupt(c)
    }
}

impl<E> From<Stop<E>> for RdvSendError<E> {
    fn from(s: Stop<E>) -> Self {
        match s {
            Stop::Timeout => RdvSendError::Timeout,
            Stop::Peer(e) => RdvSendError::Peer(e),
            Stop::Corrupt(c) => RdvSendError::Corrupt(c),
        }
    }
}

impl<E> From<Stop<E>> for RdvRecvError<E> {
    fn from(s: Stop<E>) -> Self {
        match s {
            Stop::Timeout => RdvRecvError::Timeout,
            Stop::Peer(e) => RdvRecvError::Peer(e),
            Stop::Corrupt(c) => RdvRecvError::Corrupt(c),
        }
    }
}

impl<E> From<Corruption> for RdvSendError<E> {
    fn from(c: Corruption) -> Self {
        RdvSendError::Corrupt(c)
    }
}

impl<E> From<Corruption> for RdvRecvError<E> {
    fn from(c: Corruption) -> Self {
        RdvRecvError::Corrupt(c)
    }
}

/// A 32-bit word of a cell header.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Field {
    /// `owner`: the token of the process that claimed the cell.
    Owner,
    /// `len`
    Len,
    /// `ticket`
    Ticket,
}

/// Where a rendezvous object's words and payloads live: a mapped region (or
/// the heap) in production and Miri, loom cells under loom. `cell` is always
/// below the validated cell count: it comes from this process, never from
/// shared memory.
pub(crate) trait RdvMem {
    /// `state[cell]`.
    fn state(&self, cell: u32) -> &AtomicU64;
    /// `next_ticket`.
    fn next_ticket(&self) -> &AtomicU32;
    /// A 32-bit header word of `cell`.
    fn field(&self, cell: u32, field: Field) -> &AtomicU32;
    /// `cells_bell`.
    fn cells_bell(&self) -> &Doorbell;
    /// The doorbell on `owner_count` / `owner_waiters` of `cell`.
    fn owner_bell(&self, cell: u32) -> &Doorbell;
    /// The doorbell on `peer_count` / `peer_waiters` of `cell`.
    fn peer_bell(&self, cell: u32) -> &Doorbell;
    /// Copies `msg` into the payload of `cell`. The caller holds `cell`
    /// for writing (CLAIMED or FILLING by this party) and checked
    /// `msg.len() <= slot_size` (else this panics).
    fn write_payload(&self, cell: u32, msg: &[u8]);
    /// Runs `f` on the first `len` payload bytes of `cell`. The caller holds
    /// `cell` for reading (READING or TAKING by this party, reached with
    /// Acquire) and checked `len <= slot_size` (else this panics).
    fn read_payload<R>(&self, cell: u32, len: usize, f: impl FnOnce(ShmSlice<'_>) -> R) -> R;
}

/// A party past its point of no return, whose counterpart has held the
/// cell since `since`: why to take the cell back now (past the deadline,
/// or the caller's hook failed, looked at on slice ticks), or None while
/// the counterpart's `TAKE_GRACE` lasts (and on polls).
fn overdue<E>(
    tick: Tick,
    since: Instant,
    deadline: Option<Instant>,
    peer_ok: &mut dyn FnMut() -> Result<(), E>,
) -> Option<Stop<E>> {
    if tick == Tick::Poll || since.elapsed() < TAKE_GRACE {
        None
    } else if past(deadline) {
        Some(Stop::Timeout)
    } else if tick == Tick::Slice {
        peer_ok().err().map(Stop::Peer)
    } else {
        None
    }
}

/// The result of offering a message to a registered receiver.
enum Handed {
    Delivered,
    /// Nobody was waiting (or every waiting receiver was taken by others).
    NoneWaiting,
    /// The receiver died before acknowledging; the message is back with us.
    ReceiverDied,
}

/// One party's handle on a rendezvous object. Any number of handles, in any
/// number of processes and threads, may use one object at once; `&self`
/// methods only.
pub(crate) struct Rdv<M: RdvMem> {
    mem: M,
    cells: u32,
    slot_size: u32,
    /// This process's token, as recorded in the cells it owns or is paired
    /// with.
    token: u32,
    /// Liveness check of another party by its token (0 is nobody):
    /// `crate::liveness::is_alive`.
    alive: fn(u32) -> bool,
    policy: SpinPolicy,
}

impl<M: RdvMem> std::fmt::Debug for Rdv<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rdv")
            .field("cells", &self.cells)
            .field("slot_size", &self.slot_size)
            .field("token", &self.token)
            .finish_non_exhaustive()
    }
}

impl<M: RdvMem> Rdv<M> {
    /// A handle over validated memory, for the party with token `me`.
    pub(crate) fn with_parts(
        mem: M,
        cells: u32,
        slot_size: u32,
        me: u32,
        alive: fn(u32) -> bool,
    ) -> Self {
        debug_assert!((1..=HWL_RDV_MAX_CELLS).contains(&cells));
        Rdv {
            mem,
            cells,
            slot_size,
            token: me,
            alive,
            policy: SpinPolicy::new(),
        }
    }

    /// Most payload bytes of one message.
    pub(crate) fn slot_size(&self) -> usize {
        self.slot_size as usize
    }

    /// Whether a sender is waiting with a message now (memory only: what
    /// `recv_any` polls). A corrupt state word counts as "look closer".
    pub(crate) fn sender_waiting(&self) -> bool {
        self.oldest(SEND_WAITING).map_or(true, |c| c.is_some())
    }

    /// What the cells hold now (for `hwlink ls`): cells, senders offering,
    /// receivers waiting, cells in the middle of a hand-off. A state word
    /// out of range counts as busy.
    pub(crate) fn census(&self) -> (u32, u32, u32, u32) {
        let (mut senders, mut receivers, mut busy) = (0u32, 0u32, 0u32);
        for cell in 0..self.cells {
            match checked(self.state(cell).load(Ordering::Relaxed)).map(kind) {
                Ok(FREE) => {}
                Ok(SEND_WAITING) => senders = senders.saturating_add(1),
                Ok(RECV_WAITING) => receivers = receivers.saturating_add(1),
                _ => busy = busy.saturating_add(1),
            }
        }
        (self.cells, senders, receivers, busy)
    }

    fn state(&self, cell: u32) -> &AtomicU64 {
        self.mem.state(cell)
    }

    fn mine(&self, kind: u32) -> u64 {
        word(kind, self.token)
    }

    fn retries(&self) -> u32 {
        self.cells.saturating_mul(4).saturating_add(4)
    }

    // ----- sending -------------------------------------------------------

    /// Hands `msg` to a receiver that is already waiting, and returns once
    /// it has received it. Fails at once with `NoReceiver` if none waits;
    /// once a receiver is committed it waits for its acknowledgement (or its
    /// death, which hands the message back and tries the next receiver).
    pub(crate) fn try_send(
        &self,
        msg: &[u8],
    ) -> Result<(), RdvSendError<core::convert::Infallible>> {
        self.check_len(msg)?;
        // A receiver that is really waiting takes the message within
        // microseconds; one that does not take it by then (descheduled for
        // long, or a cell a hostile process forged as waiting) gets it
        // withdrawn, and the try reports nobody waiting: never delivered.
        let deadline = crate::wait::deadline_after(TRY_HANDOFF);
        loop {
            match self.hand_to_waiting(msg, deadline, WaitStrategy::SpinPark, &mut || Ok(())) {
                Ok(Handed::Delivered) => return Ok(()),
                Ok(Handed::NoneWaiting) | Err(RdvSendError::Timeout) => {
                    return Err(RdvSendError::NoReceiver)
                }
                Ok(Handed::ReceiverDied) => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Sends `msg` and returns only after a receiver has received it, or
    /// with an error (the message not delivered) when `deadline` passes or
    /// `peer_ok` fails. `peer_ok` is called about once per sleep slice
    /// (50 ms) while the message can still be withdrawn, so a link can
    /// report its dead peer.
    pub(crate) fn send<E>(
        &self,
        msg: &[u8],
        deadline: Option<Instant>,
        wait: WaitStrategy,
        peer_ok: &mut dyn FnMut() -> Result<(), E>,
    ) -> Result<(), RdvSendError<E>> {
        self.check_len(msg)?;
        loop {
            match self.hand_to_waiting(msg, deadline, wait, peer_ok)? {
                Handed::Delivered => return Ok(()),
                Handed::ReceiverDied => continue,
                Handed::NoneWaiting => {}
            }
            if let Some(cell) = self.claim_free()? {
                return self.post_and_wait(cell, msg, deadline, wait, peer_ok);
            }
            self.wait_for_cells(RECV_WAITING, deadline, wait, peer_ok)?;
        }
    }

    fn check_len<E>(&self, msg: &[u8]) -> Result<(), RdvSendError<E>> {
        if msg.len() > self.slot_size as usize {
            return Err(RdvSendError::TooLarge {
                len: msg.len(),
                max: self.slot_size as usize,
            });
        }
        Ok(())
    }

    /// Fills the oldest RECV_WAITING cell and waits for its ack.
    fn hand_to_waiting<E>(
        &self,
        msg: &[u8],
        deadline: Option<Instant>,
        wait: WaitStrategy,
        peer_ok: &mut dyn FnMut() -> Result<(), E>,
    ) -> Result<Handed, RdvSendError<E>> {
        for _ in 0..self.retries() {
            let Some((cell, rw)) = self.oldest(RECV_WAITING)? else {
                return Ok(Handed::NoneWaiting);
            };
            let filling = self.mine(FILLING);
            // [A-reg]: pairs with the receiver's R-reg; the cell header is
            // visible, and nobody else writes the payload until we free it.
            if self
                .state(cell)
                .compare_exchange(rw, filling, Ordering::Acquire, Ordering::Relaxed)
                .is_err()
            {
                continue;
            }
            let owner = self.mem.field(cell, Field::Owner).load(Ordering::Relaxed);
            // The cell is FILLING by us; msg.len() <= slot_size (checked
            // by every caller).
            self.mem.write_payload(cell, msg);
            self.mem
                .field(cell, Field::Len)
                .store(msg.len() as u32, Ordering::Relaxed);
            // [R-fill]: pairs with the receiver's A-fill; publishes payload
            // and len. Only we move FILLING|us onward while we live.
            if let Err(found) = self.state(cell).compare_exchange(
                filling,
                self.mine(FILLED),
                Ordering::Release,
                Ordering::Relaxed,
            ) {
                return Err(out_of_turn(found).into());
            }
            // [F-fill]: pairs with the fence in the owner's doorbell sleep.
            fence(Ordering::SeqCst);
            self.mem.owner_bell(cell).notify();
            return self.wait_ack(cell, rw, owner, deadline, wait, peer_ok);
        }
        Ok(Handed::NoneWaiting)
    }

    /// Waits until the receiver of `cell` acknowledges our message. Before
    /// it starts reading, the message can be withdrawn (deadline, hook) by
    /// giving the cell back to the receiver (FILLED → its RECV_WAITING
    /// word `rw`); a dead receiver's cell is freed and the message is ours
    /// again.
    fn wait_ack<E>(
        &self,
        cell: u32,
        rw: u64,
        owner: u32,
        deadline: Option<Instant>,
        wait: WaitStrategy,
        peer_ok: &mut dyn FnMut() -> Result<(), E>,
    ) -> Result<Handed, RdvSendError<E>> {
        let (filled, reading, acked) = (self.mine(FILLED), self.mine(READING), self.mine(ACKED));
        let state = self.state(cell);
        let alive = self.alive;
        let mut reading_since: Option<Instant> = None;
        let outcome = self.wait_for(
            self.mem.peer_bell(cell),
            wait,
            deadline,
            SLICE,
            |tick| -> Result<Option<Result<Handed, Stop<E>>>, Stop<E>> {
                // [A-ack]: pairs with the receiver's R-ack.
                let w = checked(state.load(Ordering::Acquire))?;
                if w == acked {
                    return Ok(Some(Ok(Handed::Delivered)));
                }
                if w == filled {
                    let mut stop = None;
                    if tick >= Tick::Clock && past(deadline) {
                        stop = Some(Stop::Timeout);
                    } else if tick == Tick::Slice {
                        if let Err(e) = peer_ok() {
                            stop = Some(Stop::Peer(e));
                        } else if !alive(owner) {
                            // The receiver died before reading: reclaim.
                            if state
                                .compare_exchange(filled, 0, Ordering::Release, Ordering::Relaxed)
                                .is_ok()
                            {
                                return Ok(Some(Ok(Handed::ReceiverDied)));
                            }
                            return Ok(None);
                        }
                    }
                    if let Some(stop) = stop {
                        // Withdraw: the receiver keeps waiting for another.
                        if state
                            .compare_exchange(filled, rw, Ordering::Relaxed, Ordering::Relaxed)
                            .is_ok()
                        {
                            return Ok(Some(Err(stop)));
                        }
                        // Lost: the receiver is reading; wait for its ack.
                    }
                    return Ok(None);
                }
                if w == reading {
                    if tick == Tick::Slice
                        && !alive(owner)
                        && state
                            .compare_exchange(reading, 0, Ordering::Release, Ordering::Relaxed)
                            .is_ok()
                    {
                        return Ok(Some(Ok(Handed::ReceiverDied)));
                    }
                    // Reading for too long, past our deadline or with the
                    // peer gone: take the message back (a real reader that
                    // finishes after all fails its ack: never delivered).
                    let since = *reading_since.get_or_insert_with(Instant::now);
                    let stop = overdue(tick, since, deadline, &mut *peer_ok);
                    return match stop {
                        Some(stop)
                            if state
                                .compare_exchange(reading, 0, Ordering::AcqRel, Ordering::Relaxed)
                                .is_ok() =>
                        {
                            Ok(Some(Err(stop)))
                        }
                        _ => Ok(None),
                    };
                }
                Err(out_of_turn(w).into())
            },
        );
        match outcome {
            Ok(Ok(Handed::Delivered)) => {
                // [R-free]: the receiver's reads happened before its ack,
                // which we acquired; the next claimant acquires this.
                state.store(0, Ordering::Release);
                self.announce_free();
                Ok(Handed::Delivered)
            }
            Ok(Ok(other)) => {
                self.announce_free();
                Ok(other)
            }
            Ok(Err(stop)) => {
                // The cell went back to RECV_WAITING: wake its owner, whose
                // own deadline may have passed meanwhile.
                fence(Ordering::SeqCst);
                self.mem.owner_bell(cell).notify();
                Err(stop.into())
            }
            Err(stop) => Err(stop.into()),
        }
    }

    /// Posts `msg` in our CLAIMED `cell` and waits until a receiver has taken
    /// it, or withdraws it at the deadline.
    fn post_and_wait<E>(
        &self,
        cell: u32,
        msg: &[u8],
        deadline: Option<Instant>,
        wait: WaitStrategy,
        peer_ok: &mut dyn FnMut() -> Result<(), E>,
    ) -> Result<(), RdvSendError<E>> {
        // The cell is CLAIMED by us; msg.len() <= slot_size.
        self.mem.write_payload(cell, msg);
        self.mem
            .field(cell, Field::Len)
            .store(msg.len() as u32, Ordering::Relaxed);
        let posted = self.mine(SEND_WAITING);
        // [R-post]: pairs with a receiver's A-post; publishes the message.
        self.state(cell).store(posted, Ordering::Release);
        self.announce_post();
        let state = self.state(cell);
        let alive = self.alive;
        // The TAKING word we see and since when: a taker copies one message
        // and is done in far less than TAKE_GRACE, unless it is no taker
        // at all (a word a hostile or broken process wrote).
        let mut taking: Option<(u64, Instant)> = None;
        let outcome = self.wait_for(
            self.mem.owner_bell(cell),
            wait,
            deadline,
            SLICE,
            |tick| -> Result<Option<Result<(), Stop<E>>>, Stop<E>> {
                // [A-take]: pairs with the receiver's R-take.
                let w = checked(state.load(Ordering::Acquire))?;
                if w == posted {
                    let mut stop = None;
                    if tick >= Tick::Clock && past(deadline) {
                        stop = Some(Stop::Timeout);
                    } else if tick == Tick::Slice {
                        stop = peer_ok().err().map(Stop::Peer);
                    }
                    if let Some(stop) = stop {
                        if state
                            .compare_exchange(posted, 0, Ordering::Release, Ordering::Relaxed)
                            .is_ok()
                        {
                            return Ok(Some(Err(stop)));
                        }
                        // Lost: a receiver is taking it; wait for it.
                    }
                    return Ok(None);
                }
                match kind(w) {
                    TAKEN => Ok(Some(Ok(()))),
                    TAKING => {
                        if tick == Tick::Slice
                            && !alive(token_of(w))
                            && state
                                .compare_exchange(w, posted, Ordering::Relaxed, Ordering::Relaxed)
                                .is_ok()
                        {
                            // The taker died before its ack: offer again.
                            self.announce_post();
                            taking = None;
                            return Ok(None);
                        }
                        let since = match taking {
                            Some((seen, t)) if seen == w => t,
                            _ => {
                                taking = Some((w, Instant::now()));
                                return Ok(None);
                            }
                        };
                        // Taking for too long, past our deadline or with
                        // the peer gone: take the message back. A real
                        // taker that finishes after all fails its ack and
                        // reports the cell out of turn: never delivered,
                        // as we report.
                        let stop = overdue(tick, since, deadline, &mut *peer_ok);
                        match stop {
                            Some(stop)
                                if state
                                    .compare_exchange(w, 0, Ordering::AcqRel, Ordering::Relaxed)
                                    .is_ok() =>
                            {
                                Ok(Some(Err(stop)))
                            }
                            _ => Ok(None),
                        }
                    }
                    _ => Err(out_of_turn(w).into()),
                }
            },
        );
        match outcome {
            Ok(Ok(())) => {
                // [R-free]
                state.store(0, Ordering::Release);
                self.announce_free();
                Ok(())
            }
            Ok(Err(stop)) => {
                self.announce_free();
                Err(stop.into())
            }
            Err(stop) => Err(stop.into()),
        }
    }

    // ----- receiving -----------------------------------------------------

    /// Receives a message from a sender that is already waiting, passing it
    /// to `f`; fails at once with `NoSender` otherwise.
    pub(crate) fn try_recv_with<R>(
        &self,
        f: impl FnOnce(ShmSlice<'_>) -> R,
    ) -> Result<R, RdvRecvError<core::convert::Infallible>> {
        let mut f = Some(f);
        match self.take_posted(&mut f)? {
            Some(r) => Ok(r),
            None => Err(RdvRecvError::NoSender),
        }
    }

    /// Receives one message, passing it to `f` (which runs before the sender
    /// is released), or fails when `deadline` passes or `peer_ok` fails
    /// (called about once per sleep slice while waiting).
    pub(crate) fn recv_with<R, E>(
        &self,
        f: impl FnOnce(ShmSlice<'_>) -> R,
        deadline: Option<Instant>,
        wait: WaitStrategy,
        peer_ok: &mut dyn FnMut() -> Result<(), E>,
    ) -> Result<R, RdvRecvError<E>> {
        let mut f = Some(f);
        loop {
            if let Some(r) = self.take_posted(&mut f)? {
                return Ok(r);
            }
            if let Some(cell) = self.claim_free()? {
                return self.register_and_wait(cell, &mut f, deadline, wait, peer_ok);
            }
            self.wait_for_cells(SEND_WAITING, deadline, wait, peer_ok)?;
        }
    }

    /// Takes the oldest posted message, if any.
    fn take_posted<R>(
        &self,
        f: &mut Option<impl FnOnce(ShmSlice<'_>) -> R>,
    ) -> Result<Option<R>, Corruption> {
        for _ in 0..self.retries() {
            let Some((cell, posted)) = self.oldest(SEND_WAITING)? else {
                return Ok(None);
            };
            let taking = self.mine(TAKING);
            // [A-post]: pairs with the sender's R-post: payload and len.
            if self
                .state(cell)
                .compare_exchange(posted, taking, Ordering::Acquire, Ordering::Relaxed)
                .is_err()
            {
                continue;
            }
            let r = match self.read_out(cell, f) {
                Ok(r) => r,
                Err(c) => {
                    // Give the cell up; its sender sees FREE and reports it.
                    self.state(cell).store(0, Ordering::Release);
                    self.announce_free();
                    return Err(c);
                }
            };
            // [R-take]: pairs with the sender's A-take; our reads and `f`
            // happen before the sender returns and reuses the cell.
            let done = self.state(cell).compare_exchange(
                taking,
                self.mine(TAKEN),
                Ordering::Release,
                Ordering::Relaxed,
            );
            // [F-take]: pairs with the fence in the sender's doorbell sleep.
            fence(Ordering::SeqCst);
            self.mem.owner_bell(cell).notify();
            return match done {
                Ok(_) => Ok(Some(r)),
                Err(found) => Err(out_of_turn(found)),
            };
        }
        Ok(None)
    }

    /// Reads the message out of a cell we hold for reading: `len` once,
    /// checked, then `f` on the payload.
    fn read_out<R>(
        &self,
        cell: u32,
        f: &mut Option<impl FnOnce(ShmSlice<'_>) -> R>,
    ) -> Result<R, Corruption> {
        let len = self.mem.field(cell, Field::Len).load(Ordering::Relaxed);
        if len > self.slot_size {
            return Err(Corruption::new(
                "rendezvous message length",
                len.into(),
                self.slot_size.into(),
            ));
        }
        let f = f.take().expect("a receive runs its closure once");
        // We hold the cell for reading (TAKING or READING, reached with
        // Acquire after the writer's Release) and len <= slot_size.
        Ok(self.mem.read_payload(cell, len as usize, f))
    }

    /// Registers our CLAIMED `cell` as RECV_WAITING and waits for a sender
    /// to fill it; meanwhile takes a posted message instead if one appears.
    fn register_and_wait<R, E>(
        &self,
        cell: u32,
        f: &mut Option<impl FnOnce(ShmSlice<'_>) -> R>,
        deadline: Option<Instant>,
        wait: WaitStrategy,
        peer_ok: &mut dyn FnMut() -> Result<(), E>,
    ) -> Result<R, RdvRecvError<E>> {
        enum Event<E> {
            Filled(u32),
            Posted,
            Cancelled(Stop<E>),
            /// Given up while a filler held the cell, which stays ours.
            Abandoned(Stop<E>),
        }
        let registered = self.mine(RECV_WAITING);
        let claimed = self.mine(CLAIMED);
        let state = self.state(cell);
        let alive = self.alive;
        let mut register = true;
        let mut filling: Option<(u64, Instant)> = None;
        loop {
            if register {
                // [R-reg]: pairs with a sender's A-reg; publishes the header.
                state.store(registered, Ordering::Release);
                // [F-reg]: Dekker with a sender's F-post: either it sees our
                // RECV_WAITING (and wakes us), or our scan sees its post.
                fence(Ordering::SeqCst);
                self.mem.cells_bell().notify();
            }
            let event = self.wait_for(
                self.mem.owner_bell(cell),
                wait,
                deadline,
                SLICE,
                |tick| -> Result<Option<Event<E>>, Stop<E>> {
                    let w = checked(state.load(Ordering::Acquire))?;
                    if w == registered {
                        let mut stop = None;
                        if tick >= Tick::Clock && past(deadline) {
                            stop = Some(Stop::Timeout);
                        } else if tick == Tick::Slice {
                            stop = peer_ok().err().map(Stop::Peer);
                        }
                        if let Some(stop) = stop {
                            if state
                                .compare_exchange(
                                    registered,
                                    0,
                                    Ordering::Release,
                                    Ordering::Relaxed,
                                )
                                .is_ok()
                            {
                                return Ok(Some(Event::Cancelled(stop)));
                            }
                            // Lost: a sender is filling it; take its message.
                            return Ok(None);
                        }
                        if self.oldest(SEND_WAITING)?.is_some() {
                            return Ok(Some(Event::Posted));
                        }
                        return Ok(None);
                    }
                    match kind(w) {
                        FILLING => {
                            if tick == Tick::Slice && !alive(token_of(w)) {
                                // The filler died mid-copy: wait again.
                                let _ = state.compare_exchange(
                                    w,
                                    registered,
                                    Ordering::Relaxed,
                                    Ordering::Relaxed,
                                );
                                filling = None;
                                return Ok(None);
                            }
                            let since = match filling {
                                Some((seen, t)) if seen == w => t,
                                _ => {
                                    filling = Some((w, Instant::now()));
                                    return Ok(None);
                                }
                            };
                            // Filling for too long, past our deadline or
                            // with the peer gone: give up on it. The cell
                            // stays ours (CLAIMED) while we live, so that a
                            // real filler still copying writes into no one
                            // else's message; its publish then fails.
                            let stop = overdue(tick, since, deadline, &mut *peer_ok);
                            match stop {
                                Some(stop)
                                    if state
                                        .compare_exchange(
                                            w,
                                            claimed,
                                            Ordering::AcqRel,
                                            Ordering::Relaxed,
                                        )
                                        .is_ok() =>
                                {
                                    Ok(Some(Event::Abandoned(stop)))
                                }
                                _ => Ok(None),
                            }
                        }
                        FILLED => {
                            // [A-fill]: pairs with the sender's R-fill.
                            let reading = word(READING, token_of(w));
                            match state.compare_exchange(
                                w,
                                reading,
                                Ordering::Acquire,
                                Ordering::Relaxed,
                            ) {
                                Ok(_) => Ok(Some(Event::Filled(token_of(w)))),
                                Err(_) => Ok(None), // withdrawn; look again
                            }
                        }
                        _ => Err(out_of_turn(w).into()),
                    }
                },
            )?;
            match event {
                Event::Filled(sender) => {
                    let r = match self.read_out(cell, f) {
                        Ok(r) => r,
                        Err(c) => {
                            // The sender sees FREE and reports corruption.
                            state.store(0, Ordering::Release);
                            self.announce_free();
                            return Err(c.into());
                        }
                    };
                    // [R-ack]: pairs with the sender's A-ack; after this we
                    // never touch the cell again (the sender frees it). A
                    // CAS: a sender that took its message back (we were too
                    // slow) has the cell, and the message was not delivered.
                    let acked = state.compare_exchange(
                        word(READING, sender),
                        word(ACKED, sender),
                        Ordering::Release,
                        Ordering::Relaxed,
                    );
                    // [F-ack]: pairs with the fence in the sender's sleep.
                    fence(Ordering::SeqCst);
                    self.mem.peer_bell(cell).notify();
                    return match acked {
                        Ok(_) => Ok(r),
                        Err(found) => Err(out_of_turn(found).into()),
                    };
                }
                Event::Cancelled(stop) => {
                    self.announce_free();
                    return Err(stop.into());
                }
                Event::Abandoned(stop) => return Err(stop.into()),
                Event::Posted => {
                    // Withdraw first, so no sender can fill our cell while
                    // we take another's message.
                    if state
                        .compare_exchange(registered, claimed, Ordering::Relaxed, Ordering::Relaxed)
                        .is_err()
                    {
                        // A sender claimed our cell first: wait for its
                        // message (the wait handles FILLING and FILLED, and
                        // RECV_WAITING again if the sender withdraws).
                        register = false;
                        continue;
                    }
                    match self.take_posted(f) {
                        Ok(Some(r)) => {
                            state.store(0, Ordering::Release);
                            self.announce_free();
                            return Ok(r);
                        }
                        Ok(None) => register = true, // taken by another: register again
                        Err(c) => {
                            state.store(0, Ordering::Release);
                            self.announce_free();
                            return Err(c.into());
                        }
                    }
                }
            }
        }
    }

    // ----- cells ---------------------------------------------------------

    /// Claims a FREE cell (FREE → CLAIMED, Acquire: pairs with R-free) and
    /// writes its header.
    fn claim_free(&self) -> Result<Option<u32>, Corruption> {
        for cell in 0..self.cells {
            let w = checked(self.state(cell).load(Ordering::Relaxed))?;
            if w == 0
                && self
                    .state(cell)
                    .compare_exchange(0, self.mine(CLAIMED), Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
            {
                self.mem
                    .field(cell, Field::Owner)
                    .store(self.token, Ordering::Relaxed);
                let ticket = self.mem.next_ticket().fetch_add(1, Ordering::Relaxed);
                self.mem
                    .field(cell, Field::Ticket)
                    .store(ticket, Ordering::Relaxed);
                return Ok(Some(cell));
            }
        }
        Ok(None)
    }

    /// The cell in state `want` with the oldest ticket, and its state word.
    fn oldest(&self, want: u32) -> Result<Option<(u32, u64)>, Corruption> {
        let now = self.mem.next_ticket().load(Ordering::Relaxed);
        let mut best: Option<(u32, u64, i32)> = None;
        for cell in 0..self.cells {
            let w = checked(self.state(cell).load(Ordering::Acquire))?;
            if kind(w) == want {
                // A hint only: the ticket may belong to a later occupant.
                let ticket = self.mem.field(cell, Field::Ticket).load(Ordering::Relaxed);
                let age = now.wrapping_sub(ticket) as i32;
                if best.map_or(true, |(_, _, a)| age > a) {
                    best = Some((cell, w, age));
                }
            }
        }
        Ok(best.map(|(cell, w, _)| (cell, w)))
    }

    /// After freeing a cell: wake one party waiting for a cell.
    fn announce_free(&self) {
        fence(Ordering::SeqCst);
        self.mem.cells_bell().notify();
    }

    /// After posting (R-post): [F-post], then wake every registered
    /// receiver, so that one of them takes the message, and one party
    /// waiting for a cell.
    fn announce_post(&self) {
        // [F-post]: Dekker with a receiver's F-reg.
        fence(Ordering::SeqCst);
        self.mem.cells_bell().notify();
        for cell in 0..self.cells {
            if kind(self.state(cell).load(Ordering::Relaxed)) == RECV_WAITING {
                self.mem.owner_bell(cell).notify();
            }
        }
    }

    /// Every cell is busy: waits until one is FREE or in state `useful`,
    /// reaping cells of dead processes once per slice.
    fn wait_for_cells<E>(
        &self,
        useful: u32,
        deadline: Option<Instant>,
        wait: WaitStrategy,
        peer_ok: &mut dyn FnMut() -> Result<(), E>,
    ) -> Result<(), Stop<E>> {
        // Checked once at the first slice tick, then every SLICE.
        let mut last_slow: Option<Instant> = None;
        self.wait_for(
            self.mem.cells_bell(),
            wait,
            deadline,
            FULL_SLICE,
            |tick| -> Result<Option<()>, Stop<E>> {
                for cell in 0..self.cells {
                    let w = checked(self.state(cell).load(Ordering::Relaxed))?;
                    if w == 0 || kind(w) == useful {
                        return Ok(Some(()));
                    }
                }
                if tick >= Tick::Clock && past(deadline) {
                    return Err(Stop::Timeout);
                }
                // Slice ticks come every FULL_SLICE here; the slow checks
                // keep to their usual pace.
                if tick == Tick::Slice && last_slow.map_or(true, |t| t.elapsed() >= SLICE) {
                    last_slow = Some(Instant::now());
                    peer_ok().map_err(Stop::Peer)?;
                    if self.reap_dead()? {
                        return Ok(Some(()));
                    }
                }
                Ok(None)
            },
        )
    }

    /// Frees cells that nobody alive will ever free: their responsible
    /// process died. Slow (reads /proc): only while every cell is busy.
    fn reap_dead(&self) -> Result<bool, Corruption> {
        let mut freed = false;
        for cell in 0..self.cells {
            let w = checked(self.state(cell).load(Ordering::Acquire))?;
            let owner = || self.mem.field(cell, Field::Owner).load(Ordering::Relaxed);
            let dead = |token: u32| !(self.alive)(token);
            let reap = match kind(w) {
                // The pid in the word is the one who must move it on.
                CLAIMED | RECV_WAITING | ACKED => dead(token_of(w)),
                // The owner frees TAKEN.
                TAKEN => dead(owner()),
                // Both parties are involved: reap only if both died.
                FILLING | FILLED | READING | TAKING => dead(token_of(w)) && dead(owner()),
                // A dead sender's message may still be taken.
                _ => false,
            };
            if reap
                && self
                    .state(cell)
                    .compare_exchange(w, 0, Ordering::Release, Ordering::Relaxed)
                    .is_ok()
            {
                freed = true;
            }
        }
        Ok(freed)
    }

    // ----- waiting -------------------------------------------------------

    /// Waits until `step` yields a value, through the one wait engine
    /// ([`Wait::run`]) with strategy `wait`, sleeping on `bell` in slices
    /// of at most `slice`. `step` sees each look tagged with how much to
    /// check; the deadline is only `step`'s business (it may be past the
    /// point of no return), and the sleeps merely wake up in time for it.
    fn wait_for<T, X>(
        &self,
        bell: &Doorbell,
        wait: WaitStrategy,
        deadline: Option<Instant>,
        slice: Duration,
        mut step: impl FnMut(Tick) -> Result<Option<T>, X>,
    ) -> Result<T, X> {
        let mut policy = self.policy;
        Wait::new(bell, wait, deadline)
            .slice(slice)
            .run(&mut policy, |tick, _| step(tick))
    }
}

// ----- raw memory (a mapped region, or the heap) -------------------------

#[cfg(not(loom))]
#[cfg_attr(not(test), allow(unused_imports))]
pub(crate) use raw::{init, HeapRendezvous, Rendezvous};

#[cfg(not(loom))]
mod raw {
    use super::*;
    use crate::shm::ShmView;
    use core::mem::offset_of;
    use hwlink_hw::hwl_rdv_cell;

    /// A rendezvous object in a mapping.
    pub(crate) type Rendezvous = Rdv<RawMem>;

    /// The words and cells of a rendezvous object in a view of memory.
    pub(crate) struct RawMem {
        view: ShmView,
        cells: u32,
        cells_offset: usize,
        stride: usize,
        cells_bell: Doorbell,
        owner_bells: Box<[Doorbell]>,
        peer_bells: Box<[Doorbell]>,
    }

    impl RawMem {
        #[inline(always)]
        fn cell_offset(&self, cell: u32) -> usize {
            assert!(cell < self.cells, "rendezvous cell index out of range");
            // In bounds: cell < cells, and the object holds every cell.
            (cell as usize)
                .wrapping_mul(self.stride)
                .wrapping_add(self.cells_offset)
        }

        #[inline(always)]
        fn payload_offset(&self, cell: u32) -> usize {
            self.cell_offset(cell)
                .wrapping_add(HWL_RDV_CELL_HDR_SIZE as usize)
        }
    }

    impl RdvMem for RawMem {
        fn state(&self, cell: u32) -> &AtomicU64 {
            assert!(cell < self.cells, "rendezvous cell index out of range");
            self.view.u64_at(
                offset_of!(hwl_rendezvous, state).wrapping_add(8usize.wrapping_mul(cell as usize)),
            )
        }
        fn next_ticket(&self) -> &AtomicU32 {
            self.view.u32_at(offset_of!(hwl_rendezvous, next_ticket))
        }
        fn field(&self, cell: u32, field: Field) -> &AtomicU32 {
            let within = match field {
                Field::Owner => offset_of!(hwl_rdv_cell, owner),
                Field::Len => offset_of!(hwl_rdv_cell, len),
                Field::Ticket => offset_of!(hwl_rdv_cell, ticket),
            };
            self.view
                .u32_at(self.cell_offset(cell).wrapping_add(within))
        }
        fn cells_bell(&self) -> &Doorbell {
            &self.cells_bell
        }
        fn owner_bell(&self, cell: u32) -> &Doorbell {
            &self.owner_bells[cell as usize]
        }
        fn peer_bell(&self, cell: u32) -> &Doorbell {
            &self.peer_bells[cell as usize]
        }
        fn write_payload(&self, cell: u32, msg: &[u8]) {
            // The payload area has slot_size >= msg.len() bytes (caller),
            // inside the object; the caller holds the cell, so no
            // well-behaved party accesses these bytes meanwhile.
            let mut dst = self
                .view
                .slice_mut(self.payload_offset(cell), msg.len())
                .expect("rendezvous payload inside its object");
            dst.copy_from(msg);
        }
        fn read_payload<R>(&self, cell: u32, len: usize, f: impl FnOnce(ShmSlice<'_>) -> R) -> R {
            // len <= slot_size bytes of the payload area (caller); the
            // writer finished before its Release, which we acquired, and
            // does not write again until the cell is freed after our ack.
            let src = self
                .view
                .slice(self.payload_offset(cell), len)
                .expect("rendezvous payload inside its object");
            f(src)
        }
    }

    fn bad(what: &'static str, value: u64, limit: u64) -> Corruption {
        Corruption::new(what, value, limit)
    }

    fn misaligned(view: &ShmView) -> Option<Corruption> {
        let off = view.addr().checked_rem(HWL_CACHELINE as usize).unwrap_or(0);
        (off != 0).then(|| bad("rendezvous address misalignment", off as u64, 0))
    }

    /// Lays out a rendezvous object of `cells` cells of `slot_size` bytes in
    /// `view` (creator side, before the region is published: nobody else
    /// uses the bytes yet): configuration, FREE states, zeroed headers and
    /// doorbells.
    pub(crate) fn init(view: &ShmView, cells: u32, slot_size: u32) -> Result<(), Corruption> {
        let len = view.len();
        let need = rendezvous_bytes(cells, slot_size).ok_or_else(|| {
            if cells == 0 || cells > HWL_RDV_MAX_CELLS {
                bad(
                    "rendezvous cells (1..)",
                    cells.into(),
                    HWL_RDV_MAX_CELLS.into(),
                )
            } else {
                bad(
                    "rendezvous slot size",
                    slot_size.into(),
                    HWL_RING_MAX_SLOT_SIZE.into(),
                )
            }
        })?;
        if need > len as u64 {
            return Err(bad(
                "rendezvous bytes missing",
                need.saturating_sub(len as u64),
                0,
            ));
        }
        if let Some(e) = misaligned(view) {
            return Err(e);
        }
        let stride = cell_stride(slot_size).expect("checked by rendezvous_bytes");
        let config = hwl_rendezvous {
            cells,
            slot_size,
            cell_stride: stride,
            cells_offset: RDV_CONTROL_BYTES,
            ..Default::default()
        };
        // `need <= len` bytes of the 64-aligned view are ours to write; the
        // control block and every cell header lie inside.
        let mut ok = view.zero(0, RDV_CONTROL_BYTES as usize) && view.write(0, config);
        for cell in 0..cells as usize {
            let at = cell
                .wrapping_mul(stride as usize)
                .wrapping_add(RDV_CONTROL_BYTES as usize);
            ok &= view.zero(at, HWL_RDV_CELL_HDR_SIZE as usize);
        }
        assert!(ok, "rendezvous layout inside its checked size");
        Ok(())
    }

    impl Rdv<RawMem> {
        /// Opens the rendezvous object in `view` (its whole object),
        /// reading its configuration once and validating it against the
        /// view's length. Other parties must access the bytes only as the
        /// rendezvous protocol says (atomics for every word); the view
        /// keeps them mapped.
        pub(crate) fn from_view(view: ShmView) -> Result<Self, Corruption> {
            let len = view.len();
            if let Some(e) = misaligned(&view) {
                return Err(e);
            }
            if (len as u64) < RDV_CONTROL_BYTES {
                return Err(bad(
                    "rendezvous bytes missing",
                    RDV_CONTROL_BYTES.saturating_sub(len as u64),
                    0,
                ));
            }
            let word = |offset| view.u32_at(offset).load(Ordering::Relaxed);
            // Read every configuration word once.
            let cells = word(offset_of!(hwl_rendezvous, cells));
            let slot_size = word(offset_of!(hwl_rendezvous, slot_size));
            let stride = word(offset_of!(hwl_rendezvous, cell_stride));
            let flags = word(offset_of!(hwl_rendezvous, flags));
            let cells_offset = view
                .u64_at(offset_of!(hwl_rendezvous, cells_offset))
                .load(Ordering::Relaxed);
            if cells == 0 || cells > HWL_RDV_MAX_CELLS {
                return Err(bad(
                    "rendezvous cells (1..)",
                    cells.into(),
                    HWL_RDV_MAX_CELLS.into(),
                ));
            }
            if slot_size > HWL_RING_MAX_SLOT_SIZE {
                return Err(bad(
                    "rendezvous slot size",
                    slot_size.into(),
                    HWL_RING_MAX_SLOT_SIZE.into(),
                ));
            }
            let want_stride = cell_stride(slot_size).unwrap_or(u32::MAX);
            if stride != want_stride {
                return Err(bad(
                    "rendezvous cell stride",
                    stride.into(),
                    want_stride.into(),
                ));
            }
            if flags != 0 {
                return Err(bad("rendezvous flags", flags.into(), 0));
            }
            if cells_offset != RDV_CONTROL_BYTES {
                return Err(bad(
                    "rendezvous cells offset",
                    cells_offset,
                    RDV_CONTROL_BYTES,
                ));
            }
            let need = rendezvous_bytes(cells, slot_size).expect("validated above");
            if need > len as u64 {
                return Err(bad(
                    "rendezvous bytes missing",
                    need.saturating_sub(len as u64),
                    0,
                ));
            }
            let stride = stride as usize;
            let cell_bells = |field: usize| -> Box<[Doorbell]> {
                (0..cells as usize)
                    .map(|c| {
                        let at = c
                            .wrapping_mul(stride)
                            .wrapping_add(RDV_CONTROL_BYTES as usize)
                            .wrapping_add(field);
                        bell(&view, at)
                    })
                    .collect()
            };
            let owner_bells = cell_bells(offset_of!(hwl_rdv_cell, owner_count));
            let peer_bells = cell_bells(offset_of!(hwl_rdv_cell, peer_count));
            let mem = RawMem {
                cells,
                cells_offset: RDV_CONTROL_BYTES as usize,
                stride,
                cells_bell: bell(&view, offset_of!(hwl_rendezvous, cells_bell)),
                owner_bells,
                peer_bells,
                view,
            };
            Ok(Rdv::with_parts(
                mem,
                cells,
                slot_size,
                crate::liveness::my_token(),
                crate::liveness::is_alive,
            ))
        }
    }

    /// A doorbell whose count word is at `offset` and whose waiters word
    /// follows it (the layout of `hwl_doorbell` and of the cell bells).
    fn bell(view: &ShmView, offset: usize) -> Doorbell {
        Doorbell::at(view, offset, offset.wrapping_add(4))
    }

    /// A rendezvous object in its own heap allocation (tests, Miri).
    pub(crate) struct HeapRendezvous {
        rdv: Rendezvous,
        view: ShmView,
    }

    impl HeapRendezvous {
        /// Allocates and initialises an object of `cells` cells of
        /// `slot_size` bytes. Panics on an invalid shape.
        pub(crate) fn new(cells: u32, slot_size: u32) -> Self {
            let len = rendezvous_bytes(cells, slot_size).expect("valid rendezvous shape") as usize;
            let view = ShmView::heap(len);
            init(&view, cells, slot_size).expect("valid rendezvous shape");
            let rdv = Rdv::from_view(view.clone()).expect("freshly initialised");
            HeapRendezvous { rdv, view }
        }

        /// The object's bytes (tests that scribble on it).
        pub(crate) fn view(&self) -> &ShmView {
            &self.view
        }

        /// Another handle on the same object, as another process would open
        /// it (tests).
        pub(crate) fn open_again(&self) -> Result<Rendezvous, Corruption> {
            Rdv::from_view(self.view.clone())
        }
    }

    impl core::ops::Deref for HeapRendezvous {
        type Target = Rendezvous;
        fn deref(&self) -> &Rendezvous {
            &self.rdv
        }
    }
}

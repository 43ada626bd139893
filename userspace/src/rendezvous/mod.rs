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

mod cells;
mod recv;
mod send;

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
            policy: SpinPolicy::for_unknown_peers(),
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

    /// Whether a receiver is waiting for a message now (memory only: what
    /// a select's zero-capacity send polls). A corrupt state word counts
    /// as "look closer".
    pub(crate) fn receiver_waiting(&self) -> bool {
        self.oldest(RECV_WAITING).map_or(true, |c| c.is_some())
    }

    /// The doorbell rung when a sender posts a message or a receiver
    /// registers (and when a cell frees): what a select sleeps on.
    pub(crate) fn offers_bell(&self) -> &Doorbell {
        self.mem.cells_bell()
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

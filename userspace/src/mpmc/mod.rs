//! The bounded multi-producer multi-consumer ring behind mailboxes (and each
//! segment of an unbounded queue): Vyukov's queue with one sequence word
//! ("turn") per slot, 64-bit positions, a seal bit that closes the ring to
//! producers, and slots *held* by an owner while a producer writes or a
//! consumer reads them, so that a process that dies holding one never
//! wedges the ring: a slot it was writing is voided (its message dropped,
//! never half-delivered) and one it was reading is released, once the
//! kernel says the holder is gone (as Aeron's unblocker pads over a stalled
//! claim).
//!
//! Layout: `struct hwl_mpmc_ring` and `struct hwl_mpmc_slot`
//! (hw/include/hwlink_abi.h); protocol and ordering edges (M0..M3): hw/SPEC.md
//! §9. Everything read from shared memory is untrusted: each position and
//! sequence word is read once and checked, and a value no correct peer can
//! produce is reported as [`Corruption`], never followed. No arithmetic on
//! a shared value can overflow (clippy's `arithmetic_side_effects` gate).
#![warn(clippy::arithmetic_side_effects)]

use crate::error::Corruption;
#[cfg(not(loom))]
use crate::shm::ShmView;
use crate::shm::{ShmSlice, ShmSliceMut};
use crate::sync::{AtomicU64, Ordering};
use hwlink_hw::{
    HWL_MPMC_POS_LIMIT, HWL_MPMC_SEALED, HWL_MPMC_SEQ_OWNER_MASK, HWL_MPMC_SEQ_OWNER_SHIFT,
    HWL_MPMC_SEQ_READING, HWL_MPMC_SEQ_TAG_MASK, HWL_MPMC_SEQ_VOID, HWL_MPMC_SEQ_WRITING,
    HWL_MPMC_SLOT_HDR_SIZE, HWL_RING_MAX_CAPACITY, HWL_RING_MAX_SLOT_SIZE,
};

mod pop;
mod push;

/// Bit 63 of `enqueue_pos`: the ring is sealed.
pub(crate) const SEALED: u64 = HWL_MPMC_SEALED as u64;
const TAG_MASK: u64 = HWL_MPMC_SEQ_TAG_MASK as u64;
const WRITING: u64 = HWL_MPMC_SEQ_WRITING;
const READING: u64 = HWL_MPMC_SEQ_READING as u64;
const VOID: u64 = HWL_MPMC_SEQ_VOID as u64;
const OWNER_MASK: u64 = HWL_MPMC_SEQ_OWNER_MASK;
const OWNER_SHIFT: u32 = HWL_MPMC_SEQ_OWNER_SHIFT;
/// Positions stay below this, so that every turn (`pos + capacity` at
/// most) fits below `HWL_MPMC_POS_LIMIT`: 2^56 - 2^24, 45 years of
/// messages at 50 million a second.
const MAX_POS: u64 = HWL_MPMC_POS_LIMIT - HWL_RING_MAX_CAPACITY as u64;
/// Owners are attachment entries: 0..64.
pub(crate) const MAX_OWNERS: u32 = 64;
/// Rounds one call may take before a ring whose words keep changing under
/// it (a hostile peer rewriting them) is reported as corrupt.
const MAX_ROUNDS: u32 = 1 << 16;
/// Bytes of the control block (`struct hwl_mpmc_ring`), and the layout
/// arithmetic of a ring object: computed in `hwlink_hw`.
pub(crate) use hwlink_hw::{
    mpmc_ring_bytes as ring_bytes, mpmc_slot_stride as slot_stride,
    MPMC_CONTROL_BYTES as CONTROL_BYTES,
};
const SLOT_HDR: u64 = HWL_MPMC_SLOT_HDR_SIZE as u64;

/// The shape of an MPMC ring, validated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct MpmcGeometry {
    pub capacity: u32,
    pub slot_size: u32,
    pub stride: u32,
    /// One producer and one consumer (`HWL_MPMC_SOLO`): the solo
    /// protocol (SPEC §9, "Solo rings").
    pub solo: bool,
}

impl MpmcGeometry {
    /// Checks a geometry asked for by a caller or read from shared memory.
    pub(crate) fn validate(
        capacity: u32,
        slot_size: u32,
        stride: u32,
        slots_offset: u64,
        object_size: u64,
    ) -> Result<MpmcGeometry, Corruption> {
        // One slot is not enough: a published turn (pos + 1) would read as
        // "free" for the next position.
        if !capacity.is_power_of_two() || !(2..=HWL_RING_MAX_CAPACITY).contains(&capacity) {
            return Err(Corruption::new(
                "mpmc ring capacity (a power of two, at least 2)",
                capacity.into(),
                HWL_RING_MAX_CAPACITY.into(),
            ));
        }
        if slot_size > HWL_RING_MAX_SLOT_SIZE {
            return Err(Corruption::new(
                "mpmc slot size",
                slot_size.into(),
                HWL_RING_MAX_SLOT_SIZE.into(),
            ));
        }
        let want = slot_stride(slot_size).unwrap_or(u32::MAX);
        if stride != want {
            return Err(Corruption::new(
                "mpmc slot stride",
                stride.into(),
                want.into(),
            ));
        }
        if slots_offset != CONTROL_BYTES {
            return Err(Corruption::new(
                "mpmc slots offset",
                slots_offset,
                CONTROL_BYTES,
            ));
        }
        let need = ring_bytes(capacity, slot_size).unwrap_or(u64::MAX);
        if need > object_size {
            return Err(Corruption::new("mpmc ring size", need, object_size));
        }
        Ok(MpmcGeometry {
            capacity,
            slot_size,
            stride,
            solo: false,
        })
    }
}

/// Where the ring's words and slots live: a mapped region, or (for loom)
/// model-checked cells.
pub(crate) trait MpmcMem {
    /// `enqueue_pos`.
    fn enqueue(&self) -> &AtomicU64;
    /// `dequeue_pos`.
    fn dequeue(&self) -> &AtomicU64;
    /// The `seq` word of slot `index` (masked, `< capacity`).
    fn seq(&self, index: u32) -> &AtomicU64;
    /// The `len | sender << 32` word of slot `index`.
    fn meta(&self, index: u32) -> &AtomicU64;
    /// Runs `f` with the payload bytes of slot `index` (at least
    /// `slot_size`), for writing.
    fn with_payload_mut<R>(&self, index: u32, f: impl FnOnce(ShmSliceMut<'_>) -> R) -> R;
    /// Runs `f` with the payload bytes of slot `index`, for reading.
    fn with_payload<R>(&self, index: u32, f: impl FnOnce(ShmSlice<'_>) -> R) -> R;
}

/// A ring control block and its slots in a view of memory (a mapped
/// region's object, or the heap).
#[cfg(not(loom))]
#[derive(Debug)]
pub(crate) struct RawMpmc {
    view: ShmView,
    stride: usize,
}

#[cfg(not(loom))]
impl RawMpmc {
    /// The ring object of `geometry` at the start of `view`, which must
    /// hold its control block and every slot (panics otherwise).
    pub(crate) fn new(view: ShmView, geometry: &MpmcGeometry) -> Self {
        let need = ring_bytes(geometry.capacity, geometry.slot_size);
        assert!(
            need.is_some_and(|n| n <= view.len() as u64),
            "mpmc ring object smaller than its geometry"
        );
        RawMpmc {
            view,
            stride: geometry.stride as usize,
        }
    }

    /// Offset of slot `index` (masked, < capacity) in the object.
    #[inline(always)]
    fn slot(&self, index: u32) -> usize {
        // No overflow: index < capacity <= 2^24 and stride <= 2^30 + 64
        // (validated geometry).
        (index as usize)
            .wrapping_mul(self.stride)
            .wrapping_add(CONTROL_BYTES as usize)
    }

    #[inline(always)]
    fn payload_len(&self) -> usize {
        self.stride.saturating_sub(SLOT_HDR as usize)
    }
}

#[cold]
#[inline(never)]
#[cfg(not(loom))]
fn outside_ring(index: u32) -> ! {
    panic!("mpmc slot {index} outside its ring object")
}

#[cfg(not(loom))]
impl MpmcMem for RawMpmc {
    #[inline(always)]
    fn enqueue(&self) -> &AtomicU64 {
        self.view
            .u64_at(core::mem::offset_of!(hwlink_hw::hwl_mpmc_ring, enqueue_pos))
    }
    #[inline(always)]
    fn dequeue(&self) -> &AtomicU64 {
        self.view
            .u64_at(core::mem::offset_of!(hwlink_hw::hwl_mpmc_ring, dequeue_pos))
    }
    #[inline(always)]
    fn seq(&self, index: u32) -> &AtomicU64 {
        self.view.u64_at(self.slot(index))
    }
    #[inline(always)]
    fn meta(&self, index: u32) -> &AtomicU64 {
        self.view.u64_at(self.slot(index).wrapping_add(8))
    }
    #[inline(always)]
    fn with_payload_mut<R>(&self, index: u32, f: impl FnOnce(ShmSliceMut<'_>) -> R) -> R {
        let at = self.slot(index).wrapping_add(SLOT_HDR as usize);
        match self.view.slice_mut(at, self.payload_len()) {
            Some(p) => f(p),
            None => outside_ring(index),
        }
    }
    #[inline(always)]
    fn with_payload<R>(&self, index: u32, f: impl FnOnce(ShmSlice<'_>) -> R) -> R {
        let at = self.slot(index).wrapping_add(SLOT_HDR as usize);
        match self.view.slice(at, self.payload_len()) {
            Some(p) => f(p),
            None => outside_ring(index),
        }
    }
}

/// Why a push did not happen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PushError {
    /// Every slot holds a message (or one is being read out).
    Full,
    /// The ring was sealed: no message will ever be accepted again.
    Sealed,
    /// The message is longer than a slot.
    TooLarge,
    /// A value in shared memory no correct peer can produce.
    Corrupt(Corruption),
}

/// Why a pop did not happen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PopError {
    /// No message is ready (one may be being written).
    Empty,
    /// Sealed, and every message ever accepted has been taken.
    Drained,
    /// A value in shared memory no correct peer can produce.
    Corrupt(Corruption),
}

/// What the ring may ask about the processes that hold slots: whether the
/// one attached at entry `owner` is dead. It must answer yes only once no
/// thread of that process can write shared memory any more (its liveness
/// lock is gone): the ring then takes the slot from it.
pub(crate) trait Owners {
    /// Whether the holder attached at `owner` (< [`MAX_OWNERS`]) is gone.
    fn dead(&self, owner: u32) -> bool;
}

/// Nobody ever dies (tests and models of live parties).
impl Owners for () {
    fn dead(&self, _: u32) -> bool {
        false
    }
}

impl<F: Fn(u32) -> bool> Owners for F {
    fn dead(&self, owner: u32) -> bool {
        self(owner)
    }
}

/// A sequence word, decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Turn {
    /// A plain turn: `pos` (may be written), `pos + 1` (published) or
    /// `pos + capacity` (consumed).
    Plain(u64),
    /// A producer copies the message of `pos`.
    Writing { owner: u32, pos: u64 },
    /// A consumer reads the message of `pos`.
    Reading { owner: u32, pos: u64 },
    /// `pos` carries no message: its producer died writing it.
    Void(u64),
}

/// Moves `position` past `pos` for whoever claimed `pos` and has not moved
/// it yet; returns the position now (`pos + 1`, or what another moved it
/// to).
fn move_past(position: &AtomicU64, pos: u64) -> u64 {
    match position.compare_exchange(
        pos,
        pos.wrapping_add(1),
        Ordering::AcqRel,
        Ordering::Acquire,
    ) {
        Ok(_) => pos.wrapping_add(1),
        Err(now) => now,
    }
}

fn decode(s: u64) -> Turn {
    let pos = s & !(TAG_MASK | OWNER_MASK);
    let owner = ((s & OWNER_MASK) >> OWNER_SHIFT) as u32;
    match s & TAG_MASK {
        WRITING => Turn::Writing { owner, pos },
        READING => Turn::Reading { owner, pos },
        VOID => Turn::Void(pos),
        // Tag 0: the owner bits are part of the plain value (and too large
        // for any turn: the callers' range checks report it).
        _ => Turn::Plain(s),
    }
}

fn held(tag: u64, owner: u32, pos: u64) -> u64 {
    debug_assert!(owner < MAX_OWNERS && pos < MAX_POS);
    tag | (u64::from(owner) << OWNER_SHIFT) | pos
}

fn beyond_limit(what: &'static str, pos: u64) -> Corruption {
    Corruption::new(what, pos, MAX_POS)
}

/// A message claimed by [`MpmcRing::try_claim`], to be read (and its slot
/// released) with [`MpmcRing::read`].
#[derive(Debug)]
#[must_use = "a claimed slot must be read, or the ring stalls"]
pub(crate) struct Claim {
    index: u32,
    pos: u64,
    owner: u32,
}

/// What the slot at the head of a ring says, for waiters: whether a
/// receive could make progress now, without changing anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Head {
    /// A message (or a hole to step over, or a dead holder to take a slot
    /// from, or a corrupt word to report) is there.
    Ready,
    /// Nothing yet (perhaps a message being written).
    Empty,
    /// Sealed and everything taken.
    Drained,
}

/// A slot's `seq` word, which holds the slot's turn XOR its index (the
/// index is below 2^24, so tags, owners and the range checks on positions
/// see the turn itself).
#[derive(Clone, Copy)]
struct TurnWord<'a> {
    word: &'a AtomicU64,
    key: u64,
}

impl TurnWord<'_> {
    #[inline(always)]
    fn load(self, order: Ordering) -> u64 {
        self.word.load(order) ^ self.key
    }

    #[inline(always)]
    fn store(self, value: u64, order: Ordering) {
        self.word.store(value ^ self.key, order)
    }

    #[inline(always)]
    fn compare_exchange(
        self,
        current: u64,
        new: u64,
        success: Ordering,
        failure: Ordering,
    ) -> Result<u64, u64> {
        match self
            .word
            .compare_exchange(current ^ self.key, new ^ self.key, success, failure)
        {
            Ok(v) => Ok(v ^ self.key),
            Err(v) => Err(v ^ self.key),
        }
    }
}

/// One process's handle on a ring. Every method takes `&self`: any number
/// of producers and consumers, in any processes, may use one ring at once
/// (a solo ring: one of each).
#[derive(Debug)]
pub(crate) struct MpmcRing<M: MpmcMem> {
    mem: M,
    geometry: MpmcGeometry,
    mask: u64,
    /// Solo producer: positions below this are known free (the consumer's
    /// `dequeue_pos` plus the capacity, as last read). Local to this
    /// handle (only its one producer uses it): relaxed.
    free_until: AtomicU64,
}

impl<M: MpmcMem> MpmcRing<M> {
    /// A handle over `mem`, whose geometry was validated.
    pub(crate) fn new(mem: M, geometry: MpmcGeometry) -> Self {
        MpmcRing {
            mem,
            geometry,
            mask: u64::from(geometry.capacity).saturating_sub(1),
            free_until: AtomicU64::new(0),
        }
    }

    /// Slot `index`'s turn word (`index < capacity`), as the ring sees it:
    /// turns are stored XOR the slot's index (SPEC §9), so that a
    /// zero-filled ring is a new, empty one (slot i: turn i). Creating a
    /// ring writes none of its slots, and a segment's pages can be faulted
    /// in later, by whoever comes first.
    #[inline(always)]
    fn turn(&self, index: u32) -> TurnWord<'_> {
        TurnWord {
            word: self.mem.seq(index),
            key: u64::from(index),
        }
    }

    /// Where the ring's words live (tests write them as a hostile process
    /// would).
    #[cfg(test)]
    pub(crate) fn mem(&self) -> &M {
        &self.mem
    }

    pub(crate) fn geometry(&self) -> &MpmcGeometry {
        &self.geometry
    }

    fn cap(&self) -> u64 {
        u64::from(self.geometry.capacity)
    }

    fn index(&self, pos: u64) -> u32 {
        (pos & self.mask) as u32
    }

    /// Solo rings: whether turn `s` of `pos`'s slot says nothing is
    /// published there yet: `pos` (the first lap's "may write") or the
    /// previous lap's published turn (`pos + 1 - capacity`: its message
    /// was consumed or is being read; the consumer writes no turn). Any
    /// other value but `pos + 1` is corrupt.
    #[inline(always)]
    fn solo_unpublished(&self, pos: u64, s: u64) -> bool {
        s == pos
            || pos
                .checked_sub(self.cap())
                .is_some_and(|p| s == p.wrapping_add(1))
    }

    /// What a receive would find now, without changing anything: for
    /// waiters, whose sleep must end exactly when a receive can make
    /// progress (a hole whose producer is alive is not progress; one whose
    /// producer died is). Without `seal` (a waiter's hot polls), where
    /// the head slot's turn says nothing is there yet, it answers Empty
    /// without reading `enqueue_pos`, sealed or not. That word is the
    /// producers' (their claim moves it): a poll that read it would pull
    /// its cache line away from them before every message, and a seal is
    /// rare (a removal, or a full segment whose successor gets linked),
    /// so the caller looks for it otherwise and on slower ticks (as
    /// [`try_claim_in`](Self::try_claim_in) does).
    pub(crate) fn head_in(&self, owners: &impl Owners, seal: bool) -> Head {
        let pos = self.mem.dequeue().load(Ordering::Acquire);
        if pos >= MAX_POS {
            return Head::Ready;
        }
        let previous = pos.checked_sub(self.cap());
        let s = self.turn(self.index(pos)).load(Ordering::Acquire);
        let waiting = if self.geometry.solo {
            // Not published yet: this lap's "may write" or the last lap's
            // message (consumed: the consumer writes no turn).
            self.solo_unpublished(pos, s)
        } else {
            match decode(s) {
                Turn::Plain(t) if t == pos => true,
                Turn::Writing { owner, pos: p } if p == pos => !owners.dead(owner),
                Turn::Reading { owner, pos: p } if Some(p) == previous => !owners.dead(owner),
                _ => false,
            }
        };
        if !waiting {
            return Head::Ready;
        }
        if !seal {
            return Head::Empty;
        }
        match self.empty_or_drained(pos) {
            Ok(PopError::Drained) => Head::Drained,
            Ok(_) => Head::Empty,
            Err(_) => Head::Ready,
        }
    }

    /// Whether a push could make progress now, without changing anything:
    /// a free slot, a slot a dead consumer holds, or a sealed ring (the push
    /// then reports it).
    pub(crate) fn has_room(&self, owners: &impl Owners) -> bool {
        let pos = self.mem.enqueue().load(Ordering::Acquire);
        if pos & SEALED != 0 || pos >= MAX_POS {
            return true;
        }
        if self.geometry.solo {
            // Room below the consumer's position plus a lap (a position
            // behind it is corrupt: the push reports it).
            let deq = self.mem.dequeue().load(Ordering::Acquire);
            return pos.wrapping_sub(deq) < self.cap() || deq > pos;
        }
        let previous = pos.checked_sub(self.cap());
        let s = self.turn(self.index(pos)).load(Ordering::Acquire);
        match decode(s) {
            Turn::Plain(t) if Some(t) == previous.map(|p| p.wrapping_add(1)) => false,
            Turn::Writing { pos: p, .. } | Turn::Void(p) if Some(p) == previous => false,
            Turn::Reading { owner, pos: p } if Some(p) == previous => owners.dead(owner),
            _ => true,
        }
    }

    /// Takes back every slot that the attachment `owner` holds (it died,
    /// and its entry is about to be reused): positions it was writing are
    /// voided, slots it was reading released. Whoever reuses an entry does
    /// this first, since afterwards the entry names a live process.
    pub(crate) fn recover_owner(&self, owner: u32) {
        if self.geometry.solo {
            // Nobody holds a slot of a solo ring.
            return;
        }
        for index in 0..self.geometry.capacity {
            let s = self.turn(index).load(Ordering::Acquire);
            match decode(s) {
                Turn::Writing { owner: o, .. } | Turn::Reading { owner: o, .. } if o == owner => {
                    let _ = self.take_back(index, s);
                }
                _ => {}
            }
        }
    }

    /// Takes slot `index`, whose turn `s` says a dead holder holds it, from
    /// that holder. A position being written is voided (consumers step over
    /// it), or freed if the ring was sealed right there (it never counted);
    /// a slot being read is handed to the next lap. The holder may have died
    /// before it moved the position past its claim: then we move it first,
    /// or the ring would say a later lap's turn is ahead of its position.
    fn take_back(&self, index: u32, s: u64) -> Result<(), Corruption> {
        let (position, pos) = match decode(s) {
            Turn::Writing { pos, .. } => (self.mem.enqueue(), pos),
            Turn::Reading { pos, .. } => (self.mem.dequeue(), pos),
            _ => return Ok(()),
        };
        let mut p = position.load(Ordering::Acquire);
        for _ in 0..MAX_ROUNDS {
            let end = p & !SEALED;
            if end > pos {
                break;
            }
            if end < pos {
                return Err(Corruption::new("mpmc position behind a held slot", p, pos));
            }
            if p & SEALED != 0 {
                // Sealed at exactly the claimed position (enqueue only): the
                // claim never counted; the slot is free for it again.
                let _ =
                    self.turn(index)
                        .compare_exchange(s, pos, Ordering::Release, Ordering::Relaxed);
                return Ok(());
            }
            p = move_past(position, pos);
        }
        let new = match decode(s) {
            Turn::Writing { .. } => VOID | pos,
            _ => pos.wrapping_add(self.cap()),
        };
        // Release: the next holder's accesses come after the dead one's
        // (which were all before its death, which we learned of).
        let _ = self
            .turn(index)
            .compare_exchange(s, new, Ordering::Release, Ordering::Relaxed);
        Ok(())
    }

    /// Closes the ring to producers for good (idempotent). Messages already
    /// accepted stay to be taken.
    pub(crate) fn seal(&self) {
        self.mem.enqueue().fetch_or(SEALED, Ordering::AcqRel);
    }

    /// Whether nothing was ever pushed, claimed or sealed: a segment made
    /// ahead and not linked yet is always so.
    pub(crate) fn untouched(&self) -> bool {
        self.mem.enqueue().load(Ordering::Acquire) == 0
            && self.mem.dequeue().load(Ordering::Acquire) == 0
    }

    /// Whether [`seal`](Self::seal) was called.
    #[cfg(test)]
    pub(crate) fn is_sealed(&self) -> bool {
        self.mem.enqueue().load(Ordering::Acquire) & SEALED != 0
    }

    /// Messages accepted and not yet taken (holes included), as seen now
    /// (diagnostics and admin), checked against the capacity.
    pub(crate) fn len(&self) -> Result<u64, Corruption> {
        let deq = self.mem.dequeue().load(Ordering::Acquire);
        let enq = self.mem.enqueue().load(Ordering::Acquire) & !SEALED;
        let n = enq.wrapping_sub(deq);
        let cap = self.cap();
        // A consumer's claim may be seen before the producer's: count 0.
        if n > cap && deq.wrapping_sub(enq) > cap {
            return Err(Corruption::new("mpmc occupancy", n, cap));
        }
        Ok(if n > cap { 0 } else { n })
    }
}

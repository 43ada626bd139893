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

/// One process's handle on a ring. Every method takes `&self`: any number
/// of producers and consumers, in any processes, may use one ring at once.
#[derive(Debug)]
pub(crate) struct MpmcRing<M: MpmcMem> {
    mem: M,
    geometry: MpmcGeometry,
    mask: u64,
}

impl<M: MpmcMem> MpmcRing<M> {
    /// A handle over `mem`, whose geometry was validated.
    pub(crate) fn new(mem: M, geometry: MpmcGeometry) -> Self {
        MpmcRing {
            mem,
            geometry,
            mask: u64::from(geometry.capacity).saturating_sub(1),
        }
    }

    /// Writes the initial sequence words (slot i: turn i) of a zero-filled
    /// ring. Only its creator calls this, before publishing it.
    pub(crate) fn init(&self) {
        for i in 0..self.geometry.capacity {
            self.mem.seq(i).store(u64::from(i), Ordering::Relaxed);
        }
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

    /// Appends `msg`, as the producer attached at entry `me` (also the
    /// sender tag the consumer sees). A slot of the previous lap that a
    /// dead consumer held is released on the way.
    pub(crate) fn try_push(
        &self,
        msg: &[u8],
        me: u32,
        owners: &impl Owners,
    ) -> Result<(), PushError> {
        if msg.len() > self.geometry.slot_size as usize {
            return Err(PushError::TooLarge);
        }
        let cap = self.cap();
        // Positions are read with acquire and moved with acquire-release
        // (free on x86), so a sequence word read after them is at most one
        // lap stale, which bounds the corruption checks below.
        let mut pos = self.mem.enqueue().load(Ordering::Acquire);
        for _ in 0..MAX_ROUNDS {
            // A sealed word still holds a position, which must be in range.
            if pos & !SEALED >= MAX_POS {
                return Err(PushError::Corrupt(beyond_limit(
                    "mpmc enqueue position",
                    pos & !SEALED,
                )));
            }
            if pos & SEALED != 0 {
                return Err(PushError::Sealed);
            }
            let index = self.index(pos);
            let seq = self.mem.seq(index);
            // M1 (acquire): pairs with a consumer's M3 release of this turn,
            // so its reads of the old message happen before our writes.
            let s = seq.load(Ordering::Acquire);
            let previous = pos.checked_sub(cap);
            match decode(s) {
                // Free for pos: claim the slot, then move the position.
                Turn::Plain(t) if t == pos => {
                    let mine = held(WRITING, me, pos);
                    if seq
                        .compare_exchange(pos, mine, Ordering::Acquire, Ordering::Relaxed)
                        .is_ok()
                    {
                        match self.advance_enqueue(pos) {
                            Ok(()) => return self.write(index, pos, mine, msg, me),
                            Err(e) => {
                                // Sealed before our position counted: give
                                // the slot back unwritten.
                                let _ = seq.compare_exchange(
                                    mine,
                                    pos,
                                    Ordering::Release,
                                    Ordering::Relaxed,
                                );
                                return Err(e);
                            }
                        }
                    }
                }
                // Claimed by another producer that has not moved the
                // position yet: move it for them.
                Turn::Writing { pos: p, .. } if p == pos => {
                    pos = match self.mem.enqueue().compare_exchange(
                        pos,
                        pos.wrapping_add(1),
                        Ordering::AcqRel,
                        Ordering::Acquire,
                    ) {
                        Ok(_) => pos.wrapping_add(1),
                        Err(now) => now,
                    };
                    continue;
                }
                // The previous lap is being read by a consumer: full, unless
                // that consumer died holding it.
                Turn::Reading { owner, pos: p } if Some(p) == previous => {
                    if !owners.dead(owner) {
                        return Err(PushError::Full);
                    }
                    self.take_back(index, s).map_err(PushError::Corrupt)?;
                    continue;
                }
                // The previous lap's message is still there (published, being
                // written, or a hole consumers have not stepped over).
                Turn::Plain(t) if Some(t) == previous.map(|p| p.wrapping_add(1)) => {
                    return Err(PushError::Full)
                }
                Turn::Writing { pos: p, .. } | Turn::Void(p) if Some(p) == previous => {
                    return Err(PushError::Full)
                }
                // Ahead of us (by any number of laps: we may have been
                // preempted since we read the position): another producer
                // took pos, so a fresh read must be further on.
                Turn::Plain(t) if t > pos && t < HWL_MPMC_POS_LIMIT => {
                    pos = self.fresh_enqueue(pos, s)?;
                    continue;
                }
                // Taken, published, read or voided at pos or later: our
                // position is stale.
                Turn::Writing { pos: p, .. } if p > pos && p < MAX_POS => {
                    pos = self.fresh_enqueue(pos, s)?;
                    continue;
                }
                Turn::Reading { pos: p, .. } | Turn::Void(p) if p >= pos && p < MAX_POS => {
                    pos = self.fresh_enqueue(pos, s)?;
                    continue;
                }
                _ => {
                    return Err(PushError::Corrupt(Corruption::new(
                        "mpmc slot turn for the enqueue position",
                        s,
                        pos,
                    )))
                }
            }
            // Our claim lost a race for the slot: look again.
            pos = self.mem.enqueue().load(Ordering::Acquire);
        }
        Err(PushError::Corrupt(Corruption::new(
            "mpmc push rounds (turns keep changing)",
            MAX_ROUNDS.into(),
            MAX_ROUNDS.into(),
        )))
    }

    /// Tests and models: what a producer does before it dies in the middle
    /// of a copy. Claims the slot of the enqueue position as `me` and moves
    /// the position, then leaves the slot held. Returns the position.
    #[cfg(test)]
    pub(crate) fn claim_and_abandon(&self, me: u32) -> Result<u64, PushError> {
        loop {
            let pos = self.mem.enqueue().load(Ordering::Acquire);
            if pos & SEALED != 0 {
                return Err(PushError::Sealed);
            }
            let seq = self.mem.seq(self.index(pos));
            let s = seq.load(Ordering::Acquire);
            match decode(s) {
                Turn::Plain(t) if t == pos => {
                    let mine = held(WRITING, me, pos);
                    if seq
                        .compare_exchange(pos, mine, Ordering::Acquire, Ordering::Relaxed)
                        .is_ok()
                    {
                        self.advance_enqueue(pos)?;
                        return Ok(pos);
                    }
                }
                Turn::Writing { pos: p, .. } if p == pos => {
                    let _ = self.mem.enqueue().compare_exchange(
                        pos,
                        pos.wrapping_add(1),
                        Ordering::AcqRel,
                        Ordering::Acquire,
                    );
                }
                Turn::Plain(t) if t < pos => return Err(PushError::Full),
                _ => crate::sync::spin_loop(),
            }
        }
    }

    /// `enqueue_pos` again, after a turn ahead of `pos` (`s`): it must have
    /// moved.
    fn fresh_enqueue(&self, pos: u64, s: u64) -> Result<u64, PushError> {
        let now = self.mem.enqueue().load(Ordering::Acquire);
        if now == pos {
            return Err(PushError::Corrupt(Corruption::new(
                "mpmc slot turn ahead of the enqueue position",
                s,
                pos,
            )));
        }
        Ok(now)
    }

    /// Moves `enqueue_pos` past `pos`, whose slot we hold (or finds it moved
    /// by a helper). Sealed at `pos`: our position is not part of the ring.
    fn advance_enqueue(&self, pos: u64) -> Result<(), PushError> {
        let enqueue = self.mem.enqueue();
        let mut e = enqueue.load(Ordering::Acquire);
        for _ in 0..MAX_ROUNDS {
            if e == pos {
                match enqueue.compare_exchange(
                    pos,
                    pos.wrapping_add(1),
                    Ordering::AcqRel,
                    Ordering::Acquire,
                ) {
                    Ok(_) => return Ok(()),
                    Err(now) => e = now,
                }
                continue;
            }
            let end = e & !SEALED;
            return if end > pos {
                Ok(())
            } else if e & SEALED != 0 && end == pos {
                Err(PushError::Sealed)
            } else {
                Err(PushError::Corrupt(Corruption::new(
                    "mpmc enqueue position behind a held slot",
                    e,
                    pos,
                )))
            };
        }
        Err(PushError::Corrupt(beyond_limit("mpmc enqueue position", e)))
    }

    /// Copies `msg` into our held slot and publishes it (M0). If our hold
    /// was taken from us (we were judged dead: only a hostile write can do
    /// that to a live process), the message was not delivered.
    fn write(&self, index: u32, pos: u64, mine: u64, msg: &[u8], me: u32) -> Result<(), PushError> {
        // The slot is ours until we publish it (we hold its turn); the
        // payload has slot_size >= msg.len() bytes.
        let written = self
            .mem
            .with_payload_mut(index, |mut dst| dst.write_at(0, msg));
        assert!(written, "message longer than an mpmc slot");
        let meta = msg.len() as u64 | u64::from(me) << 32;
        self.mem.meta(index).store(meta, Ordering::Relaxed);
        // M0 (release): publishes the payload and meta.
        match self.mem.seq(index).compare_exchange(
            mine,
            pos.wrapping_add(1),
            Ordering::Release,
            Ordering::Relaxed,
        ) {
            Ok(_) => Ok(()),
            Err(found) => Err(PushError::Corrupt(Corruption::new(
                "mpmc slot taken from its live producer",
                found,
                mine,
            ))),
        }
    }

    /// Takes the oldest message and runs `f(payload, sender)` on it in
    /// place, as the consumer attached at `me`; the slot is released after
    /// `f` returns (or unwinds).
    #[cfg(test)]
    pub(crate) fn try_pop_with<R>(
        &self,
        me: u32,
        owners: &impl Owners,
        f: impl FnOnce(ShmSlice<'_>, u32) -> R,
    ) -> Result<R, PopError> {
        let claim = self.try_claim(me, owners)?;
        self.read(claim, f)
    }

    /// First half of a pop: claims the oldest published message for the
    /// consumer attached at `me`, stepping over holes of dead producers and
    /// taking back slots dead consumers held. The caller must pass the claim
    /// to [`read`](Self::read), which releases the slot.
    pub(crate) fn try_claim(&self, me: u32, owners: &impl Owners) -> Result<Claim, PopError> {
        let cap = self.cap();
        let mut pos = self.mem.dequeue().load(Ordering::Acquire);
        for _ in 0..MAX_ROUNDS {
            if pos >= MAX_POS {
                return Err(PopError::Corrupt(beyond_limit(
                    "mpmc dequeue position",
                    pos,
                )));
            }
            let index = self.index(pos);
            let seq = self.mem.seq(index);
            // M2 (acquire): pairs with the producer's M0 (or a voider's).
            let s = seq.load(Ordering::Acquire);
            let previous = pos.checked_sub(cap);
            match decode(s) {
                // Published, or a hole: claim it, then move the position.
                Turn::Plain(t) if t == pos.wrapping_add(1) => {
                    let mine = held(READING, me, pos);
                    if seq
                        .compare_exchange(s, mine, Ordering::Acquire, Ordering::Relaxed)
                        .is_ok()
                    {
                        self.advance_dequeue(pos)?;
                        return Ok(Claim {
                            index,
                            pos,
                            owner: me,
                        });
                    }
                }
                Turn::Void(p) if p == pos => {
                    let mine = held(READING, me, pos);
                    if seq
                        .compare_exchange(s, mine, Ordering::Acquire, Ordering::Relaxed)
                        .is_ok()
                    {
                        self.advance_dequeue(pos)?;
                        // Nothing to read: hand the slot to the next lap.
                        self.release(index, pos, mine)?;
                        pos = pos.wrapping_add(1);
                        continue;
                    }
                }
                // Claimed by another consumer that has not moved the
                // position yet: move it for them.
                Turn::Reading { pos: p, .. } if p == pos => {
                    pos = match self.mem.dequeue().compare_exchange(
                        pos,
                        pos.wrapping_add(1),
                        Ordering::AcqRel,
                        Ordering::Acquire,
                    ) {
                        Ok(_) => pos.wrapping_add(1),
                        Err(now) => now,
                    };
                    continue;
                }
                // Being written. If its producer died, void the position:
                // its message is dropped, never half-delivered.
                Turn::Writing { owner, pos: p } if p == pos => {
                    if !owners.dead(owner) {
                        return Err(self.empty_or_drained(pos)?);
                    }
                    self.take_back(index, s).map_err(PopError::Corrupt)?;
                    continue;
                }
                // Not claimed by any producer yet.
                Turn::Plain(t) if t == pos => return Err(self.empty_or_drained(pos)?),
                // The previous lap's message is still being read: if its
                // consumer died, give the slot to this lap.
                Turn::Reading { owner, pos: p } if Some(p) == previous => {
                    if !owners.dead(owner) {
                        return Err(self.empty_or_drained(pos)?);
                    }
                    self.take_back(index, s).map_err(PopError::Corrupt)?;
                    continue;
                }
                // Ahead of us (by any number of laps): another consumer
                // took pos.
                Turn::Plain(t) if t > pos.wrapping_add(1) && t < HWL_MPMC_POS_LIMIT => {
                    pos = self.fresh_dequeue(pos, s)?;
                    continue;
                }
                Turn::Writing { pos: p, .. } | Turn::Reading { pos: p, .. } | Turn::Void(p)
                    if p > pos && p < MAX_POS =>
                {
                    pos = self.fresh_dequeue(pos, s)?;
                    continue;
                }
                _ => {
                    return Err(PopError::Corrupt(Corruption::new(
                        "mpmc slot turn for the dequeue position",
                        s,
                        pos,
                    )))
                }
            }
            // Our claim lost a race for the slot: look again.
            pos = self.mem.dequeue().load(Ordering::Acquire);
        }
        Err(PopError::Corrupt(Corruption::new(
            "mpmc pop rounds (turns keep changing)",
            MAX_ROUNDS.into(),
            MAX_ROUNDS.into(),
        )))
    }

    fn fresh_dequeue(&self, pos: u64, s: u64) -> Result<u64, PopError> {
        let now = self.mem.dequeue().load(Ordering::Acquire);
        if now == pos {
            return Err(PopError::Corrupt(Corruption::new(
                "mpmc slot turn ahead of the dequeue position",
                s,
                pos,
            )));
        }
        Ok(now)
    }

    /// Moves `dequeue_pos` past `pos`, whose slot we hold (or finds it
    /// moved by a helper).
    fn advance_dequeue(&self, pos: u64) -> Result<(), PopError> {
        match self.mem.dequeue().compare_exchange(
            pos,
            pos.wrapping_add(1),
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            Ok(_) => Ok(()),
            Err(now) if now > pos => Ok(()),
            Err(now) => Err(PopError::Corrupt(Corruption::new(
                "mpmc dequeue position behind a held slot",
                now,
                pos,
            ))),
        }
    }

    /// M3 (release): hands a slot we hold back for the next lap; our reads
    /// of it happen before the next producer's writes.
    fn release(&self, index: u32, pos: u64, mine: u64) -> Result<(), PopError> {
        let next = pos.wrapping_add(self.cap());
        match self
            .mem
            .seq(index)
            .compare_exchange(mine, next, Ordering::Release, Ordering::Relaxed)
        {
            Ok(_) => Ok(()),
            Err(found) => Err(PopError::Corrupt(Corruption::new(
                "mpmc slot taken from its live consumer",
                found,
                mine,
            ))),
        }
    }

    /// Second half of a pop: runs `f(payload, sender)` on the claimed
    /// message in place, then releases the slot, also when its length is
    /// corrupt (so one bad message cannot wedge the ring) or `f` unwinds.
    pub(crate) fn read<R>(
        &self,
        claim: Claim,
        f: impl FnOnce(ShmSlice<'_>, u32) -> R,
    ) -> Result<R, PopError> {
        struct Release<'a, M: MpmcMem> {
            ring: &'a MpmcRing<M>,
            claim: &'a Claim,
            done: bool,
        }
        impl<M: MpmcMem> Drop for Release<'_, M> {
            fn drop(&mut self) {
                if !self.done {
                    let c = self.claim;
                    let _ = self
                        .ring
                        .release(c.index, c.pos, held(READING, c.owner, c.pos));
                }
            }
        }
        let mut guard = Release {
            ring: self,
            claim: &claim,
            done: false,
        };
        let index = claim.index;
        let meta = self.mem.meta(index).load(Ordering::Relaxed);
        let len = meta as u32;
        let sender = (meta >> 32) as u32;
        let out = if len > self.geometry.slot_size {
            Err(PopError::Corrupt(Corruption::new(
                "mpmc message length",
                len.into(),
                self.geometry.slot_size.into(),
            )))
        } else {
            // The slot is ours until we release it below; `len` was checked
            // against the payload size.
            Ok(self.mem.with_payload(index, |src| {
                let msg = src.sub(0, len as usize);
                f(
                    msg.expect("message length checked against the slot"),
                    sender,
                )
            }))
        };
        guard.done = true;
        let released = self.release(index, claim.pos, held(READING, claim.owner, claim.pos));
        let out = out?;
        released?;
        Ok(out)
    }

    /// Empty, or drained if the ring is sealed at `pos`.
    fn empty_or_drained(&self, pos: u64) -> Result<PopError, PopError> {
        let enq = self.mem.enqueue().load(Ordering::Acquire);
        let last = enq & !SEALED;
        if last >= MAX_POS {
            return Err(PopError::Corrupt(beyond_limit(
                "mpmc enqueue position",
                last,
            )));
        }
        if enq & SEALED == 0 {
            return Ok(PopError::Empty);
        }
        if last == pos {
            Ok(PopError::Drained)
        } else if last < pos {
            Err(PopError::Corrupt(Corruption::new(
                "mpmc dequeue position past the sealed end",
                pos,
                last,
            )))
        } else {
            Ok(PopError::Empty)
        }
    }

    /// What a receive would find now, without changing anything: for
    /// waiters, whose sleep must end exactly when a receive can make
    /// progress (a hole whose producer is alive is not progress; one whose
    /// producer died is).
    pub(crate) fn head(&self, owners: &impl Owners) -> Head {
        let pos = self.mem.dequeue().load(Ordering::Acquire);
        if pos >= MAX_POS {
            return Head::Ready;
        }
        let previous = pos.checked_sub(self.cap());
        let s = self.mem.seq(self.index(pos)).load(Ordering::Acquire);
        let waiting = match decode(s) {
            Turn::Plain(t) if t == pos => true,
            Turn::Writing { owner, pos: p } if p == pos => !owners.dead(owner),
            Turn::Reading { owner, pos: p } if Some(p) == previous => !owners.dead(owner),
            _ => false,
        };
        if !waiting {
            return Head::Ready;
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
        let previous = pos.checked_sub(self.cap());
        let s = self.mem.seq(self.index(pos)).load(Ordering::Acquire);
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
        for index in 0..self.geometry.capacity {
            let s = self.mem.seq(index).load(Ordering::Acquire);
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
                let _ = self.mem.seq(index).compare_exchange(
                    s,
                    pos,
                    Ordering::Release,
                    Ordering::Relaxed,
                );
                return Ok(());
            }
            p = match position.compare_exchange(
                pos,
                pos.wrapping_add(1),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => pos.wrapping_add(1),
                Err(now) => now,
            };
        }
        let new = match decode(s) {
            Turn::Writing { .. } => VOID | pos,
            _ => pos.wrapping_add(self.cap()),
        };
        // Release: the next holder's accesses come after the dead one's
        // (which were all before its death, which we learned of).
        let _ = self
            .mem
            .seq(index)
            .compare_exchange(s, new, Ordering::Release, Ordering::Relaxed);
        Ok(())
    }

    /// Closes the ring to producers for good (idempotent). Messages already
    /// accepted stay to be taken.
    pub(crate) fn seal(&self) {
        self.mem.enqueue().fetch_or(SEALED, Ordering::AcqRel);
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

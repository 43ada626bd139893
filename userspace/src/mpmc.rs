//! The bounded multi-producer multi-consumer ring behind mailboxes (and each
//! segment of an unbounded queue): Vyukov's queue, with one sequence word per
//! slot, 64-bit positions and a seal bit that closes the ring to producers.
//!
//! Layout: `struct hwl_mpmc_ring` and `struct hwl_mpmc_slot`
//! (hw/include/hwlink_abi.h); protocol and ordering edges (M0..M3): hw/SPEC.md,
//! "MPMC ring". Everything read from shared memory is untrusted: each
//! position and sequence word is read once and checked, and a value no
//! correct peer can produce is reported as [`Corruption`], never followed.

use crate::error::Corruption;
use crate::sync::{AtomicU64, Ordering};
use core::ptr::NonNull;
use hwlink_hw::{
    HWL_MPMC_SEALED, HWL_MPMC_SLOT_HDR_SIZE, HWL_RING_MAX_CAPACITY, HWL_RING_MAX_SLOT_SIZE,
};

/// Bit 63 of `enqueue_pos`: the ring is sealed.
pub(crate) const SEALED: u64 = HWL_MPMC_SEALED as u64;
/// Bytes of the control block (`struct hwl_mpmc_ring`): six cache lines.
pub(crate) const CONTROL_BYTES: u64 = 384;
const SLOT_HDR: u64 = HWL_MPMC_SLOT_HDR_SIZE as u64;

/// Bytes per slot for payloads of at most `slot_size`: header plus payload,
/// rounded up to a cache line. None if it does not fit in a u32.
pub(crate) fn slot_stride(slot_size: u32) -> Option<u32> {
    let bytes = (u64::from(slot_size) + SLOT_HDR).div_ceil(64) * 64;
    u32::try_from(bytes).ok()
}

/// Bytes of a whole ring object: control block and slots.
pub(crate) fn ring_bytes(capacity: u32, slot_size: u32) -> Option<u64> {
    let stride = slot_stride(slot_size)?;
    u64::from(capacity)
        .checked_mul(u64::from(stride))?
        .checked_add(CONTROL_BYTES)
}

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
    /// Runs `f` with the payload of slot `index`, for writing.
    fn with_payload_mut<R>(&self, index: u32, f: impl FnOnce(*mut u8) -> R) -> R;
    /// Runs `f` with the payload of slot `index`, for reading.
    fn with_payload<R>(&self, index: u32, f: impl FnOnce(*const u8) -> R) -> R;
}

/// A ring control block and its slots at a fixed address.
#[derive(Debug)]
pub(crate) struct RawMpmc {
    base: NonNull<u8>,
    stride: usize,
}

// SAFETY: a pointer into memory its owner keeps mapped (contract of `new`);
// only atomics and the slot protocol are used through it.
unsafe impl Send for RawMpmc {}
// SAFETY: as above; concurrent use is what the algorithm is for.
unsafe impl Sync for RawMpmc {}

impl RawMpmc {
    /// # Safety
    /// `base` must point to a ring object of `geometry` (control block and
    /// slots, `ring_bytes` long), 64-byte aligned, that stays mapped and
    /// writable for the life of the value, whose words are only accessed
    /// atomically.
    pub(crate) unsafe fn new(base: *mut u8, geometry: &MpmcGeometry) -> Self {
        RawMpmc {
            base: NonNull::new(base).expect("mpmc base is null"),
            stride: geometry.stride as usize,
        }
    }

    #[inline(always)]
    fn slot(&self, index: u32) -> *mut u8 {
        // SAFETY: `index` is masked (< capacity), so the slot lies inside the
        // ring object promised in `new`.
        unsafe {
            self.base
                .as_ptr()
                .add(CONTROL_BYTES as usize + index as usize * self.stride)
        }
    }

    #[inline(always)]
    fn word(&self, p: *mut u8) -> &AtomicU64 {
        // SAFETY: callers pass an 8-aligned word inside the ring object
        // (control block offsets 0/128, slot offsets 0/8 of a 64-aligned
        // slot), accessed only atomically (contract of `new`).
        unsafe { &*p.cast::<AtomicU64>() }
    }
}

impl MpmcMem for RawMpmc {
    #[inline(always)]
    fn enqueue(&self) -> &AtomicU64 {
        self.word(self.base.as_ptr())
    }
    #[inline(always)]
    fn dequeue(&self) -> &AtomicU64 {
        self.word(self.base.as_ptr().wrapping_add(128))
    }
    #[inline(always)]
    fn seq(&self, index: u32) -> &AtomicU64 {
        self.word(self.slot(index))
    }
    #[inline(always)]
    fn meta(&self, index: u32) -> &AtomicU64 {
        self.word(self.slot(index).wrapping_add(8))
    }
    #[inline(always)]
    fn with_payload_mut<R>(&self, index: u32, f: impl FnOnce(*mut u8) -> R) -> R {
        f(self.slot(index).wrapping_add(SLOT_HDR as usize))
    }
    #[inline(always)]
    fn with_payload<R>(&self, index: u32, f: impl FnOnce(*const u8) -> R) -> R {
        f(self.slot(index).wrapping_add(SLOT_HDR as usize))
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

/// A message claimed by [`MpmcRing::try_claim`], to be read (and its slot
/// released) with [`MpmcRing::read`].
#[derive(Debug)]
#[must_use = "a claimed slot must be read, or the ring stalls"]
pub(crate) struct Claim {
    index: u32,
    pos: u64,
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
            mask: u64::from(geometry.capacity) - 1,
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

    /// Appends `msg`, tagged with the producer's `sender` number.
    pub(crate) fn try_push(&self, msg: &[u8], sender: u32) -> Result<(), PushError> {
        if msg.len() > self.geometry.slot_size as usize {
            return Err(PushError::TooLarge);
        }
        let cap = u64::from(self.geometry.capacity);
        // Positions are read with acquire and moved with acquire-release (free
        // on x86), so a sequence word read after them is at most one lap
        // stale, which bounds the corruption checks below.
        let mut pos = self.mem.enqueue().load(Ordering::Acquire);
        loop {
            if pos & SEALED != 0 {
                return Err(PushError::Sealed);
            }
            let index = (pos & self.mask) as u32;
            // M1 (acquire): pairs with a consumer's M3 release of this turn,
            // so its reads of the old message happen before our writes.
            let seq = self.mem.seq(index).load(Ordering::Acquire);
            let diff = seq.wrapping_sub(pos) as i64;
            if diff == 0 {
                match self.mem.enqueue().compare_exchange_weak(
                    pos,
                    pos + 1,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                ) {
                    Ok(_) => {
                        self.mem.with_payload_mut(index, |dst| {
                            // SAFETY: the slot is ours until we publish it
                            // (we won its turn); the payload has slot_size
                            // >= msg.len() bytes.
                            unsafe { crate::spsc::copy_bytes(msg.as_ptr(), dst, msg.len()) }
                        });
                        let meta = msg.len() as u64 | u64::from(sender) << 32;
                        self.mem.meta(index).store(meta, Ordering::Relaxed);
                        // M0 (release): publishes the payload and meta.
                        self.mem.seq(index).store(pos + 1, Ordering::Release);
                        return Ok(());
                    }
                    Err(now) => pos = now,
                }
            } else if diff < 0 {
                // The slot still holds (or is handing out) the message one
                // lap back: turn pos - cap or pos - cap + 1.
                if diff < -(cap as i64) {
                    return Err(PushError::Corrupt(Corruption::new(
                        "mpmc slot turn behind the enqueue position",
                        pos.wrapping_sub(seq),
                        cap,
                    )));
                }
                return Err(PushError::Full);
            } else {
                // Another producer took this position; it moved enqueue_pos
                // before publishing the turn we acquired, so a fresh read
                // must be further on.
                let now = self.mem.enqueue().load(Ordering::Acquire);
                if now == pos {
                    return Err(PushError::Corrupt(Corruption::new(
                        "mpmc slot turn ahead of the enqueue position",
                        seq,
                        pos,
                    )));
                }
                pos = now;
            }
        }
    }

    /// Takes the oldest message and runs `f(payload, sender)` on it in
    /// place; the slot is released after `f` returns.
    pub(crate) fn try_pop_with<R>(&self, f: impl FnOnce(&[u8], u32) -> R) -> Result<R, PopError> {
        let claim = self.try_claim()?;
        self.read(claim, f)
    }

    /// First half of a pop: claims the oldest published message. The caller
    /// must pass the claim to [`read`](Self::read), which releases the slot;
    /// until then producers cannot reuse it.
    pub(crate) fn try_claim(&self) -> Result<Claim, PopError> {
        let cap = u64::from(self.geometry.capacity);
        let mut pos = self.mem.dequeue().load(Ordering::Acquire);
        loop {
            let index = (pos & self.mask) as u32;
            // M2 (acquire): pairs with the producer's M0.
            let seq = self.mem.seq(index).load(Ordering::Acquire);
            let diff = seq.wrapping_sub(pos.wrapping_add(1)) as i64;
            if diff == 0 {
                match self.mem.dequeue().compare_exchange_weak(
                    pos,
                    pos + 1,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                ) {
                    Ok(_) => return Ok(Claim { index, pos }),
                    Err(now) => pos = now,
                }
            } else if diff < 0 {
                // Not published yet (turn pos), or the turn read is from
                // before the previous lap's release (down to pos - cap).
                if diff < -(cap as i64) - 1 {
                    return Err(PopError::Corrupt(Corruption::new(
                        "mpmc slot turn behind the dequeue position",
                        pos.wrapping_sub(seq),
                        cap,
                    )));
                }
                return Err(self.empty_or_drained(pos)?);
            } else {
                let now = self.mem.dequeue().load(Ordering::Acquire);
                if now == pos {
                    return Err(PopError::Corrupt(Corruption::new(
                        "mpmc slot turn ahead of the dequeue position",
                        seq,
                        pos,
                    )));
                }
                pos = now;
            }
        }
    }

    /// Second half of a pop: runs `f(payload, sender)` on the claimed
    /// message in place, then releases the slot.
    pub(crate) fn read<R>(
        &self,
        claim: Claim,
        f: impl FnOnce(&[u8], u32) -> R,
    ) -> Result<R, PopError> {
        self.take(claim.index, claim.pos, f)
    }

    /// Reads the message at `pos` (claimed by us) and releases the slot
    /// for the next lap, also when its length is corrupt, so that one bad
    /// message cannot wedge the ring.
    fn take<R>(
        &self,
        index: u32,
        pos: u64,
        f: impl FnOnce(&[u8], u32) -> R,
    ) -> Result<R, PopError> {
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
            Ok(self.mem.with_payload(index, |src| {
                // SAFETY: the slot is ours until we release it below; `len`
                // was checked against the payload size.
                f(
                    unsafe { core::slice::from_raw_parts(src, len as usize) },
                    sender,
                )
            }))
        };
        // M3 (release): our reads happen before the next producer's writes.
        self.mem
            .seq(index)
            .store(pos + u64::from(self.geometry.capacity), Ordering::Release);
        out
    }

    /// Empty, or drained if the ring is sealed at `pos`.
    fn empty_or_drained(&self, pos: u64) -> Result<PopError, PopError> {
        let enq = self.mem.enqueue().load(Ordering::Acquire);
        if enq & SEALED == 0 {
            return Ok(PopError::Empty);
        }
        let last = enq & !SEALED;
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

    /// Closes the ring to producers for good (idempotent). Messages already
    /// accepted stay to be taken.
    pub(crate) fn seal(&self) {
        self.mem.enqueue().fetch_or(SEALED, Ordering::AcqRel);
    }

    /// Whether [`seal`](Self::seal) was called.
    pub(crate) fn is_sealed(&self) -> bool {
        self.mem.enqueue().load(Ordering::Acquire) & SEALED != 0
    }

    /// Messages accepted and not yet taken, as seen now (diagnostics and
    /// admin), checked against the capacity.
    pub(crate) fn len(&self) -> Result<u64, Corruption> {
        let deq = self.mem.dequeue().load(Ordering::Acquire);
        let enq = self.mem.enqueue().load(Ordering::Acquire) & !SEALED;
        let n = enq.wrapping_sub(deq);
        let cap = u64::from(self.geometry.capacity);
        // A consumer's claim may be seen before the producer's: count 0.
        if n > cap && deq.wrapping_sub(enq) > cap {
            return Err(Corruption::new("mpmc occupancy", n, cap));
        }
        Ok(if n > cap { 0 } else { n })
    }
}

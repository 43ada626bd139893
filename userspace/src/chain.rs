//! Unbounded queues: a chain of MPMC ring segments that producers extend
//! when the newest one is full and consumers retire once drained, within a
//! byte limit set at creation.
//!
//! A producer that finds its segment full creates the next one, links it
//! with a CAS on `next_segment` (one winner; a loser removes its own and
//! follows the winner's), then seals the full one so that no message can
//! land behind the link. A consumer that finds a sealed segment drained
//! moves to the next; the first to do so advances `head_segment` and
//! removes the drained segment (its memory goes when the last process
//! unmaps it). The algorithm is generic over where segments live
//! ([`SegmentStore`]): region files in production (`segments.rs`), the heap
//! in the loom model. Protocol: hw/SPEC.md, "Unbounded chain".

use crate::error::{Corruption, RecvError, SendError};
use crate::mpmc::{MpmcGeometry, MpmcMem, MpmcRing, PopError, PushError};
use crate::sync::{AtomicU64, Ordering};
use std::sync::Arc;

/// Largest segment a chain grows to (bytes of slots).
const MAX_SEGMENT_BYTES: u64 = 64 << 20;
/// Times a producer or consumer follows the chain in one call before it
/// reports the chain as corrupt (each step needs another process to have
/// sealed a segment, so a long walk means a hostile peer).
const MAX_STEPS: u32 = 1 << 16;

/// The ring geometry of segment `id`: the first segment's capacity,
/// doubling with each segment up to [`MAX_SEGMENT_BYTES`].
pub(crate) fn segment_geometry(base: MpmcGeometry, id: u64) -> MpmcGeometry {
    let mut capacity = base.capacity;
    for _ in 0..id.min(16) {
        let doubled = capacity.saturating_mul(2);
        if doubled > hwlink_hw::HWL_RING_MAX_CAPACITY
            || u64::from(doubled) * u64::from(base.stride) > MAX_SEGMENT_BYTES
        {
            break;
        }
        capacity = doubled;
    }
    MpmcGeometry { capacity, ..base }
}

/// One segment: a ring and its link to the next.
pub(crate) trait Segment {
    /// Where the ring's words live.
    type Mem: MpmcMem;
    /// The segment's ring.
    fn ring(&self) -> &MpmcRing<Self::Mem>;
    /// `next_segment`: 0 until a producer links the next segment (once).
    fn next_segment(&self) -> &AtomicU64;
    /// The segment number recorded in the segment (checked on open).
    fn number(&self) -> u64;
    /// Bytes of memory it takes.
    fn bytes(&self) -> u64;
}

/// Where segments live, and the chain state shared by every process.
pub(crate) trait SegmentStore {
    /// A mapped segment.
    type Seg: Segment;
    /// Bytes in use by all live segments.
    fn bytes_in_use(&self) -> &AtomicU64;
    /// Highest segment number handed out.
    fn last_segment(&self) -> &AtomicU64;
    /// Oldest segment not yet retired.
    fn head_segment(&self) -> &AtomicU64;
    /// Newest linked segment.
    fn tail_segment(&self) -> &AtomicU64;
    /// Most bytes all segments may take.
    fn byte_limit(&self) -> u64;
    /// Bytes a new segment of `geometry` will take (before creating it).
    fn estimate(&self, geometry: &MpmcGeometry) -> u64;
    /// Opens segment `id`: None if it was retired and removed.
    fn open(&self, id: u64, geometry: &MpmcGeometry) -> Result<Option<Arc<Self::Seg>>, StoreError>;
    /// Creates segment `id` (initialised, not linked yet).
    fn create(&self, id: u64, geometry: &MpmcGeometry) -> Result<Arc<Self::Seg>, String>;
    /// Removes segment `id` (no longer reachable).
    fn remove(&self, id: u64);
}

/// Opening a segment failed.
#[derive(Debug)]
pub(crate) enum StoreError {
    /// It holds values no correct process writes.
    Corrupt(Corruption),
    /// It cannot be mapped (the store's message says why and what to do).
    Unavailable(String),
}

impl From<StoreError> for SendError<()> {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Corrupt(c) => SendError::Corrupt(c),
            StoreError::Unavailable(reason) => SendError::MemoryLimit {
                msg: (),
                limit: 0,
                reason: format!("the next segment cannot be mapped: {reason}"),
            },
        }
    }
}

impl From<StoreError> for RecvError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Corrupt(c) => RecvError::Corrupt(c),
            StoreError::Unavailable(reason) => RecvError::Unavailable { reason },
        }
    }
}

/// Which chain-state word names where to start after a removed segment.
#[derive(Clone, Copy)]
enum Restart {
    Tail,
    Head,
}

/// One process's view of an unbounded queue: where it pushes and where it
/// pops.
#[derive(Debug)]
pub(crate) struct Chain<S: SegmentStore> {
    store: S,
    base: MpmcGeometry,
    push_seg: Arc<S::Seg>,
    pop_seg: Arc<S::Seg>,
}

impl<S: SegmentStore> Chain<S> {
    /// Joins the chain of `store`, whose segment 0 has geometry `base`.
    pub(crate) fn new(store: S, base: MpmcGeometry) -> Result<Chain<S>, StoreError> {
        let first = store
            .open(0, &base)?
            .ok_or_else(|| StoreError::Unavailable("segment 0 is missing".into()))?;
        let mut chain = Chain {
            store,
            base,
            push_seg: first.clone(),
            pop_seg: first,
        };
        chain.push_seg = chain.restart(Restart::Tail)?;
        chain.pop_seg = chain.restart(Restart::Head)?;
        Ok(chain)
    }

    fn open(&self, id: u64) -> Result<Option<Arc<S::Seg>>, StoreError> {
        let geometry = segment_geometry(self.base, id);
        let seg = self.store.open(id, &geometry)?;
        if let Some(s) = &seg {
            if s.number() != id {
                return Err(StoreError::Corrupt(Corruption::new(
                    "segment number",
                    s.number(),
                    id,
                )));
            }
            if *s.ring().geometry() != geometry {
                return Err(StoreError::Corrupt(Corruption::new(
                    "segment capacity",
                    s.ring().geometry().capacity.into(),
                    geometry.capacity.into(),
                )));
            }
        }
        Ok(seg)
    }

    /// A segment number read from shared memory must have been handed out.
    fn check_id(&self, id: u64) -> Result<(), StoreError> {
        let last = self.store.last_segment().load(Ordering::Acquire);
        if id > last {
            return Err(StoreError::Corrupt(Corruption::new(
                "segment number",
                id,
                last,
            )));
        }
        Ok(())
    }

    /// Opens the segment the head or tail word names, retrying while it is
    /// removed under us (the word has moved on by then).
    fn restart(&self, from: Restart) -> Result<Arc<S::Seg>, StoreError> {
        for _ in 0..MAX_STEPS {
            let word = match from {
                Restart::Tail => self.store.tail_segment(),
                Restart::Head => self.store.head_segment(),
            };
            let id = word.load(Ordering::Acquire);
            self.check_id(id)?;
            if let Some(seg) = self.open(id)? {
                return Ok(seg);
            }
        }
        Err(StoreError::Corrupt(Corruption::new(
            "segment chain walk",
            MAX_STEPS.into(),
            MAX_STEPS.into(),
        )))
    }

    /// The segment after the sealed `seg`.
    fn successor(&self, seg: &S::Seg, from: Restart) -> Result<Arc<S::Seg>, StoreError> {
        // C1 (acquire): the sealer linked `next_segment` (C0) before it
        // sealed, and we saw the seal with acquire.
        let next = seg.next_segment().load(Ordering::Acquire);
        if next <= seg.number() {
            return Err(StoreError::Corrupt(Corruption::new(
                "next segment",
                next,
                seg.number() + 1,
            )));
        }
        self.check_id(next)?;
        match self.open(next)? {
            Some(s) => Ok(s),
            // Drained and removed already: start from what the chain names.
            None => self.restart(from),
        }
    }

    /// Appends `msg`; never waits. Errors carry no message.
    pub(crate) fn try_push(&mut self, msg: &[u8], sender: u32) -> Result<(), SendError<()>> {
        for _ in 0..MAX_STEPS {
            let seg = self.push_seg.clone();
            match seg.ring().try_push(msg, sender) {
                Ok(()) => return Ok(()),
                Err(PushError::TooLarge) => {
                    return Err(SendError::TooLarge {
                        msg: (),
                        len: msg.len(),
                        max: self.base.slot_size as usize,
                    })
                }
                Err(PushError::Corrupt(c)) => return Err(SendError::Corrupt(c)),
                Err(PushError::Sealed) => {
                    // Acquire the seal before following the link (C1).
                    let _ = seg.ring().is_sealed();
                    self.push_seg = self.successor(&seg, Restart::Tail)?;
                }
                Err(PushError::Full) => {
                    if seg.next_segment().load(Ordering::Acquire) == 0 {
                        self.grow(&*seg)?;
                    }
                    // C2: seal after the link exists, so a sealed segment
                    // always names its successor.
                    seg.ring().seal();
                    self.push_seg = self.successor(&seg, Restart::Tail)?;
                }
            }
        }
        Err(SendError::Corrupt(Corruption::new(
            "segment chain walk",
            MAX_STEPS.into(),
            MAX_STEPS.into(),
        )))
    }

    /// Creates the segment after the full `seg` and links it, unless
    /// another producer links one first.
    fn grow(&self, seg: &S::Seg) -> Result<(), SendError<()>> {
        let limit = self.store.byte_limit();
        let last = self.store.last_segment().load(Ordering::Acquire);
        let estimate = self.store.estimate(&segment_geometry(self.base, last + 1));
        let before = self
            .store
            .bytes_in_use()
            .fetch_add(estimate, Ordering::AcqRel);
        if before.saturating_add(estimate) > limit {
            self.store
                .bytes_in_use()
                .fetch_sub(estimate, Ordering::AcqRel);
            return Err(SendError::MemoryLimit {
                msg: (),
                limit,
                reason: format!("{before} bytes in use, the next segment needs {estimate}"),
            });
        }
        let id = self.store.last_segment().fetch_add(1, Ordering::AcqRel) + 1;
        let geometry = segment_geometry(self.base, id);
        let new = match self.store.create(id, &geometry) {
            Ok(s) => s,
            Err(reason) => {
                self.store
                    .bytes_in_use()
                    .fetch_sub(estimate, Ordering::AcqRel);
                return Err(SendError::MemoryLimit {
                    msg: (),
                    limit,
                    reason: format!("segment {id} could not be created: {reason}"),
                });
            }
        };
        // Account for what it really takes (page rounding may differ).
        let real = new.bytes();
        if real != estimate {
            self.store.bytes_in_use().fetch_add(real, Ordering::AcqRel);
            self.store
                .bytes_in_use()
                .fetch_sub(estimate, Ordering::AcqRel);
        }
        // C0 (release): link the new segment; one producer wins.
        match seg
            .next_segment()
            .compare_exchange(0, id, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => {
                self.store.tail_segment().fetch_max(id, Ordering::AcqRel);
            }
            Err(_) => {
                // Another producer linked first: ours was never reachable.
                drop(new);
                self.store.remove(id);
                self.store.bytes_in_use().fetch_sub(real, Ordering::AcqRel);
            }
        }
        Ok(())
    }

    /// Claims the oldest message and runs `f` on it; never waits.
    pub(crate) fn try_pop_with<R>(
        &mut self,
        f: impl FnOnce(&[u8], u32) -> R,
    ) -> Result<R, RecvError> {
        for _ in 0..MAX_STEPS {
            let seg = self.pop_seg.clone();
            match seg.ring().try_claim() {
                Ok(claim) => {
                    return seg.ring().read(claim, f).map_err(|e| match e {
                        PopError::Corrupt(c) => RecvError::Corrupt(c),
                        PopError::Empty | PopError::Drained => RecvError::Empty,
                    })
                }
                Err(PopError::Empty) => return Err(RecvError::Empty),
                Err(PopError::Corrupt(c)) => return Err(RecvError::Corrupt(c)),
                Err(PopError::Drained) => {
                    let next = self.successor(&seg, Restart::Head)?;
                    self.retire(&*seg, next.number());
                    self.pop_seg = next;
                }
            }
        }
        Err(RecvError::Corrupt(Corruption::new(
            "segment chain walk",
            MAX_STEPS.into(),
            MAX_STEPS.into(),
        )))
    }

    /// `seg` is sealed and drained: the first consumer to move the head
    /// past it removes it and gives its bytes back (C3).
    fn retire(&self, seg: &S::Seg, next: u64) {
        let id = seg.number();
        if self
            .store
            .head_segment()
            .compare_exchange(id, next, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
            && id != 0
        {
            self.store.remove(id);
            self.store
                .bytes_in_use()
                .fetch_sub(seg.bytes(), Ordering::AcqRel);
        }
    }

    /// Whether a message may be ready (for sleep re-checks): cheap, claims
    /// nothing.
    pub(crate) fn maybe_ready(&self) -> bool {
        match self.pop_seg.ring().len() {
            Ok(n) => n > 0 || self.pop_seg.ring().is_sealed(),
            Err(_) => true,
        }
    }

    /// Messages queued in the live segments (diagnostics).
    pub(crate) fn len(&self) -> u64 {
        let mut n = 0;
        let mut seg = Some(self.pop_seg.clone());
        let mut steps = 0;
        while let Some(s) = seg.take() {
            n += s.ring().len().unwrap_or(0);
            steps += 1;
            let next = s.next_segment().load(Ordering::Acquire);
            if next > s.number() && steps < 64 {
                seg = self.open(next).ok().flatten();
            }
        }
        n
    }
}

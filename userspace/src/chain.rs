//! Unbounded queues: a chain of MPMC ring segments that producers extend
//! when the newest one is full and consumers retire once drained, within a
//! byte limit set at creation.
//!
//! A producer that finds its segment full links the next one (twice as
//! large, or as large as the byte limit still allows) with a CAS on
//! `next_segment` (one winner; a loser follows the winner's), then seals
//! the full one so that no message can land behind the link. The next
//! segment is normally made ahead of need: as soon as a producer pushes
//! into the newest segment, it asks for its successor to be created off the
//! sending path (this process's background thread, `ahead.rs`), which
//! offers it in `spare_segment`; the producer that finds the segment full
//! takes the offer (C4) and links it. Only when no offer is ready does it
//! create the segment itself, inside `send`. A consumer that finds a sealed
//! segment drained moves to the next; the first to do so advances
//! `head_segment` and removes the drained segment. A consumer that drains
//! a large newest segment seals it and links a small one, so an idle queue
//! gives its memory back. When the queue is removed, consumers drain it,
//! seal the newest segment and close its link (`CLOSED`): from then on
//! every send fails and every receive says Disconnected, and nothing
//! accepted is left behind. The algorithm is generic over where segments
//! live ([`SegmentStore`]): region files in production (`segments.rs`),
//! the heap in tests and the loom model. Protocol: hw/SPEC.md §11.
#![warn(clippy::arithmetic_side_effects)]

use crate::ahead::Spares;
use crate::error::{Corruption, RecvError, SendError};
use crate::mpmc::{Head, MpmcGeometry, MpmcMem, MpmcRing, Owners, PopError, PushError};
use crate::shm::ShmSlice;
use crate::sync::{AtomicU64, Ordering};
use std::sync::Arc;

/// Largest segment a chain grows to (bytes of slots).
const MAX_SEGMENT_BYTES: u64 = 64 << 20;
/// Times a producer or consumer follows the chain in one call before it
/// reports the chain as corrupt (each step needs another process to have
/// sealed a segment, so a long walk means a hostile peer).
const MAX_STEPS: u32 = 1 << 16;
/// Receive steps (segments sealed, given back or stepped over) in a row,
/// across calls cut short by [`WALK_BUDGET`], without the walk ending in a
/// message, an empty ring or an error, before the chain counts as corrupt.
const MAX_WALK: u32 = 1 << 12;
/// Longest one receive walks the chain before it reports nothing for now.
const WALK_BUDGET: std::time::Duration = std::time::Duration::from_millis(2);
/// `next_segment` of the last segment of a removed queue: no segment will
/// ever follow.
pub(crate) const CLOSED: u64 = u64::MAX;
/// Times a producer that finds the newest segment full, with no offer to
/// take, looks again whether another producer (which took the offer a
/// moment ago) has linked it, before it makes a segment itself.
const LINK_SPINS: u32 = 256;

/// The largest segment capacity for slots of `stride` bytes.
fn max_capacity(stride: u32) -> u32 {
    let by_bytes = MAX_SEGMENT_BYTES
        .checked_div(u64::from(stride))
        .unwrap_or(0)
        .min(u64::from(hwlink_hw::HWL_RING_MAX_CAPACITY)) as u32;
    // A power of two no larger.
    match by_bytes.checked_ilog2() {
        Some(bits) => 1 << bits,
        None => 2,
    }
    .max(2)
}

/// One segment: a ring and its link to the next.
pub(crate) trait Segment: Send + Sync + 'static {
    /// Where the ring's words live.
    type Mem: MpmcMem;
    /// The segment's ring.
    fn ring(&self) -> &MpmcRing<Self::Mem>;
    /// `next_segment`: 0 until a producer links the next segment (once),
    /// or [`CLOSED`].
    fn next_segment(&self) -> &AtomicU64;
    /// The segment number recorded in the segment (checked on open).
    fn number(&self) -> u64;
    /// Bytes of memory it takes.
    fn bytes(&self) -> u64;
    /// Faults in part `k` (of [`POPULATE_PART`] bytes) of a segment made
    /// ahead, so that its sender takes no page fault there: false past the
    /// end, or if it cannot be done (the pages are faulted in when
    /// touched).
    fn populate(&self, k: u64) -> bool {
        let _ = k;
        false
    }
}

/// Bytes a segment made ahead is faulted in at a time (off the sending
/// path, between checks for more urgent work): 512 KiB, about 1 ms of
/// page clearing where memory is slowest to come by. (Loom builds have no
/// region-backed segments.)
#[cfg_attr(loom, allow(dead_code))]
pub(crate) const POPULATE_PART: u64 = 512 << 10;

/// Where segments live, and the chain state shared by every process. A
/// clone is another handle on the same segments (a preparation running on
/// the background thread holds one).
pub(crate) trait SegmentStore: Clone + Send + 'static {
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
    /// A segment made ahead of need and not linked yet (0: none).
    fn spare_segment(&self) -> &AtomicU64;
    /// Most bytes all segments may take.
    fn byte_limit(&self) -> u64;
    /// Bytes a new segment of `geometry` will take (before creating it).
    fn estimate(&self, geometry: &MpmcGeometry) -> u64;
    /// Opens segment `id`, its ring validated: None if it was retired and
    /// removed.
    fn open(&self, id: u64) -> Result<Option<Arc<Self::Seg>>, StoreError>;
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

impl From<Corruption> for StoreError {
    fn from(c: Corruption) -> Self {
        StoreError::Corrupt(c)
    }
}

/// Which chain-state word names where to start after a removed segment.
#[derive(Clone, Copy)]
enum Restart {
    Tail,
    Head,
}

/// How large a new segment should be.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Size {
    /// Twice the full segment it follows (the queue is growing).
    After(u32),
    /// The first segment's size (the queue drained).
    Small,
}

/// What a consumer learned about the queue.
enum Step<R> {
    Got(R),
    /// Look again (moved to the next segment, stepped over a hole, ...).
    Again,
}

/// How this handle's producer grew an unbounded queue, and what its
/// preparations made (diagnostics: `hwlink bench-unbounded`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(loom, allow(dead_code))]
pub struct SegmentStats {
    /// Segments this handle linked that had been made ahead of need (by
    /// this process's background thread or another process's).
    pub linked_ahead: u64,
    /// Segments this handle created and linked inside a send or receive,
    /// because no segment made ahead was ready.
    pub linked_inline: u64,
    /// Times a send that found the newest segment full waited for this
    /// handle's own preparation, already running, to finish.
    pub waited: u64,
    /// Segments this handle's preparations made and offered.
    pub prepared: u64,
    /// Segments made ahead that were thrown away: an offer that lost to
    /// another process's, one that could no longer follow the chain, or
    /// this handle's own, taken back when it was dropped.
    pub discarded: u64,
}

/// What a producer that found the newest segment full did about it.
enum Extended<Seg> {
    /// It linked this segment.
    Linked(Arc<Seg>),
    /// Another process linked a segment (or closed the chain) first.
    ByOther,
    /// Nothing was linked.
    No,
}

/// One process's view of an unbounded queue: where it pushes and where it
/// pops.
#[derive(Debug)]
pub(crate) struct Chain<S: SegmentStore> {
    store: S,
    base: MpmcGeometry,
    push_seg: Arc<S::Seg>,
    pop_seg: Arc<S::Seg>,
    /// Receive steps walked since the last message taken, across calls.
    walked: u32,
    /// Preparations of segments ahead of need for this handle; None: it
    /// creates every segment inline.
    ahead: Option<Arc<Spares<S::Seg>>>,
    /// The segment whose successor this handle last asked to be made (it
    /// asks once per segment).
    asked: Option<u64>,
    /// Segments this handle linked: made ahead, made inline; sends that
    /// waited for this handle's own preparation; what earlier (stopped)
    /// preparations offered and threw away.
    linked_ahead: u64,
    linked_inline: u64,
    waited: u64,
    stopped: (u64, u64),
    /// The pop segment as last seen sealed where nothing was published
    /// (its number; `u64::MAX`: none): from then on its receives look for
    /// the seal, whatever else says (a producer that died between its seal
    /// and its link, a hostile one).
    seen_sealed: core::cell::Cell<u64>,
}

/// The geometry of a new segment of `size` after the queue's first ring
/// `base`, within the byte limit: the largest power-of-two capacity, at
/// least 2 slots, that is no larger than wanted and whose segment fits in
/// what is left. None if not even 2 slots fit.
fn new_geometry<S: SegmentStore>(
    store: &S,
    base: &MpmcGeometry,
    size: Size,
    in_use: u64,
) -> Option<MpmcGeometry> {
    let limit = store.byte_limit();
    let want = match size {
        Size::After(cap) => cap.saturating_mul(2),
        Size::Small => base.capacity,
    }
    .clamp(2, max_capacity(base.stride).max(base.capacity));
    let room = limit.saturating_sub(in_use);
    let mut capacity = 1u32 << want.ilog2();
    loop {
        let g = MpmcGeometry { capacity, ..*base };
        if store.estimate(&g) <= room {
            return Some(g);
        }
        if capacity <= 2 {
            return None;
        }
        capacity >>= 1;
    }
}

/// Makes a new segment of `size`, not linked: counts its bytes against the
/// limit (failing at once past it), takes the next number, creates it and
/// corrects the count to what it really takes. `freed`: bytes that count
/// as given back already (a sealed, drained segment the new one replaces).
/// Used inline by `grow` and off the sending path by preparations.
pub(crate) fn make_segment<S: SegmentStore>(
    store: &S,
    base: &MpmcGeometry,
    size: Size,
    freed: u64,
) -> Result<Arc<S::Seg>, SendError<()>> {
    let limit = store.byte_limit();
    let budget = limit.saturating_add(freed);
    let in_use = store.bytes_in_use().load(Ordering::Acquire);
    let Some(geometry) = new_geometry(store, base, size, in_use.saturating_sub(freed)) else {
        let smallest = store.estimate(&MpmcGeometry {
            capacity: 2,
            ..*base
        });
        return Err(SendError::MemoryLimit {
            msg: (),
            limit,
            reason: format!(
                "{in_use} bytes of segments in use, the smallest next segment needs {smallest}"
            ),
        });
    };
    let estimate = store.estimate(&geometry);
    let before = store.bytes_in_use().fetch_add(estimate, Ordering::AcqRel);
    // Gives the estimate back when no segment comes of it.
    let give_back = || store.bytes_in_use().fetch_sub(estimate, Ordering::AcqRel);
    if before.saturating_add(estimate) > budget {
        give_back();
        return Err(SendError::MemoryLimit {
            msg: (),
            limit,
            reason: format!("{before} bytes of segments in use, the next needs {estimate}"),
        });
    }
    // Hand out the next number by CAS, so that a corrupt word is reported
    // (and stays as found) rather than wrapped around.
    let word = store.last_segment();
    let mut last = word.load(Ordering::Acquire);
    let id = loop {
        let Some(id) = last.checked_add(1).filter(|&id| id < CLOSED) else {
            give_back();
            return Err(SendError::Corrupt(Corruption::new(
                "last segment number",
                last,
                CLOSED,
            )));
        };
        match word.compare_exchange_weak(last, id, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => break id,
            Err(now) => last = now,
        }
    };
    let new = match store.create(id, &geometry) {
        Ok(s) => s,
        Err(reason) => {
            give_back();
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
        store.bytes_in_use().fetch_add(real, Ordering::AcqRel);
        store.bytes_in_use().fetch_sub(estimate, Ordering::AcqRel);
    }
    Ok(new)
}

/// Throws away `seg`, which is reachable by nobody else (never linked, and
/// taken out of `spare_segment` or never put there): removes it and gives
/// its bytes back.
pub(crate) fn discard<S: SegmentStore>(store: &S, seg: &S::Seg) {
    store.remove(seg.number());
    store
        .bytes_in_use()
        .fetch_sub(seg.bytes(), Ordering::AcqRel);
}

/// Offers `seg`, just made ahead of need, in `spare_segment`: true if it is
/// the offer now; false if another offer was there first (only one segment
/// waits at a time: the caller then throws `seg` away).
pub(crate) fn offer<S: SegmentStore>(store: &S, seg: &S::Seg) -> bool {
    // C5 (release): the segment is initialised and published (its region's
    // magic) before its number can be taken; pairs with C4's acquire.
    store
        .spare_segment()
        .compare_exchange(0, seg.number(), Ordering::AcqRel, Ordering::Acquire)
        .is_ok()
}

/// Whether `seg`, numbered `k`, can be an offer: made ahead and never
/// linked, so never pushed into, claimed from, sealed or linked onwards.
/// Anything else named in `spare_segment` was put there by a hostile or
/// broken process.
fn fresh<Seg: Segment>(seg: &Seg, k: u64) -> bool {
    seg.number() == k && seg.ring().untouched() && seg.next_segment().load(Ordering::Acquire) == 0
}

/// Takes the offer in `spare_segment` if it can no longer follow the chain
/// (its number is below `after`'s, a linked segment: every segment linked
/// from now on is numbered above `after`), and throws it away; true if it
/// did. A number never handed out is left as found (the next send reports
/// it corrupt); a segment that is not fresh (linked, used) is never
/// removed, only no longer offered.
pub(crate) fn discard_stale<S: SegmentStore>(store: &S, after: u64) -> bool {
    let word = store.spare_segment();
    let k = word.load(Ordering::Acquire);
    if k == 0 || k > after || k > store.last_segment().load(Ordering::Acquire) {
        return false;
    }
    // C4: whoever moves the word off k owns segment k.
    if word
        .compare_exchange(k, 0, Ordering::AcqRel, Ordering::Acquire)
        .is_err()
    {
        return false;
    }
    match store.open(k) {
        Ok(Some(seg)) if k != after && fresh(&*seg, k) => {
            discard(store, &seg);
            true
        }
        // Missing (deleted by hand: its bytes cannot be told), or not a
        // segment made ahead at all: nothing to remove.
        _ => false,
    }
}

impl<S: SegmentStore> Chain<S> {
    /// Joins the chain of `store`, whose segment 0 has geometry `base`.
    /// It creates segments inline until [`Chain::prepare_ahead`].
    pub(crate) fn new(store: S, base: MpmcGeometry) -> Result<Chain<S>, StoreError> {
        let first = store
            .open(0)?
            .ok_or_else(|| StoreError::Unavailable("segment 0 is missing".into()))?;
        let mut chain = Chain {
            store,
            base,
            push_seg: first.clone(),
            pop_seg: first,
            walked: 0,
            ahead: None,
            asked: None,
            linked_ahead: 0,
            linked_inline: 0,
            waited: 0,
            stopped: (0, 0),
            seen_sealed: core::cell::Cell::new(u64::MAX),
        };
        chain.push_seg = chain.restart(Restart::Tail)?;
        chain.pop_seg = chain.restart(Restart::Head)?;
        Ok(chain)
    }

    /// From now on this handle's producer has its next segments made ahead
    /// of need by `spares` (None: inline, as before).
    #[cfg_attr(loom, allow(dead_code))]
    pub(crate) fn prepare_ahead(&mut self, spares: Option<Arc<Spares<S::Seg>>>) {
        self.stop_ahead();
        self.ahead = spares;
    }

    /// Stops this handle's preparations: waits for one running to end, and
    /// takes back and removes the segment it offered if nobody took it, so
    /// that nothing made for this handle outlives it. Idempotent.
    pub(crate) fn stop_ahead(&mut self) {
        if let Some(spares) = self.ahead.take() {
            spares.close(&self.store);
            let (prepared, discarded) = spares.counts();
            self.stopped.0 = self.stopped.0.saturating_add(prepared);
            self.stopped.1 = self.stopped.1.saturating_add(discarded);
        }
    }

    /// How this handle grew the chain.
    #[cfg_attr(loom, allow(dead_code))]
    pub(crate) fn stats(&self) -> SegmentStats {
        let (prepared, discarded) = self.ahead.as_ref().map_or((0, 0), |s| s.counts());
        SegmentStats {
            linked_ahead: self.linked_ahead,
            linked_inline: self.linked_inline,
            waited: self.waited,
            prepared: prepared.saturating_add(self.stopped.0),
            discarded: discarded.saturating_add(self.stopped.1),
        }
    }

    fn open(&self, id: u64) -> Result<Option<Arc<S::Seg>>, StoreError> {
        let seg = self.store.open(id)?;
        if let Some(s) = &seg {
            if s.number() != id {
                return Err(Corruption::new("segment number", s.number(), id).into());
            }
            let g = s.ring().geometry();
            if g.slot_size != self.base.slot_size || g.stride != self.base.stride {
                return Err(Corruption::new(
                    "segment slot size",
                    g.slot_size.into(),
                    self.base.slot_size.into(),
                )
                .into());
            }
            // One protocol for the whole queue: a segment made solo where
            // the first ring is not (or not where it is) is not ours.
            if g.solo != self.base.solo {
                return Err(Corruption::new(
                    "segment solo flag",
                    g.solo.into(),
                    self.base.solo.into(),
                )
                .into());
            }
            let max = max_capacity(self.base.stride).max(self.base.capacity);
            if g.capacity > max {
                return Err(
                    Corruption::new("segment capacity", g.capacity.into(), max.into()).into(),
                );
            }
        }
        Ok(seg)
    }

    /// A segment number read from shared memory must have been handed out.
    fn check_id(&self, id: u64) -> Result<(), StoreError> {
        let last = self.store.last_segment().load(Ordering::Acquire);
        if id > last {
            return Err(Corruption::new("segment number", id, last).into());
        }
        Ok(())
    }

    /// Opens the segment the head or tail word names, retrying while it is
    /// removed under us (the word has moved on by then).
    fn restart(&self, from: Restart) -> Result<Arc<S::Seg>, StoreError> {
        let word = match from {
            Restart::Tail => self.store.tail_segment(),
            Restart::Head => self.store.head_segment(),
        };
        let mut missing = None;
        for _ in 0..MAX_STEPS {
            let id = word.load(Ordering::Acquire);
            self.check_id(id)?;
            if let Some(seg) = self.open(id)? {
                return Ok(seg);
            }
            // Removed under us: the word must have moved on. The same
            // missing segment twice means it is gone for good.
            if missing == Some(id) {
                return Err(StoreError::Unavailable(format!(
                    "segment {id}, which the queue names as its {}, is missing: the queue \
                     was removed by hand (`hwlink rm`) or its files deleted",
                    match from {
                        Restart::Tail => "newest",
                        Restart::Head => "oldest",
                    }
                )));
            }
            missing = Some(id);
            std::thread::yield_now();
        }
        Err(Corruption::new("segment chain walk", MAX_STEPS.into(), MAX_STEPS.into()).into())
    }

    /// The segment after the sealed `seg`, whose `next_segment` is `next`
    /// (neither 0 nor CLOSED).
    fn successor(&self, seg: &S::Seg, next: u64, from: Restart) -> Result<Arc<S::Seg>, StoreError> {
        if next <= seg.number() {
            return Err(
                Corruption::new("next segment", next, seg.number().saturating_add(1)).into(),
            );
        }
        self.check_id(next)?;
        match self.open(next)? {
            Some(s) => Ok(s),
            // Drained and removed already: start from what the chain names.
            None => self.restart(from),
        }
    }

    /// Appends `msg` as the producer attached at `me`. Errors carry no
    /// message. It never waits for a consumer; only (bounded) for this
    /// handle's own preparation of the next segment, when it is still
    /// running as the newest segment fills (see `extend`).
    pub(crate) fn try_push(
        &mut self,
        msg: &[u8],
        me: u32,
        owners: &impl Owners,
    ) -> Result<(), SendError<()>> {
        for _ in 0..MAX_STEPS {
            // The common case borrows the segment: no reference count is
            // touched, since a locked instruction right after the copy
            // would wait for the slot's cache line to arrive.
            let pushed = self.push_seg.ring().try_push(msg, me, owners);
            if pushed.is_ok() {
                if self.ahead.is_some() && self.asked != Some(self.push_seg.number()) {
                    let seg = self.push_seg.clone();
                    self.maybe_prepare(&seg);
                }
                return Ok(());
            }
            let seg = self.push_seg.clone();
            match pushed {
                Ok(()) => unreachable!("handled above"),
                Err(PushError::TooLarge) => {
                    return Err(SendError::TooLarge {
                        msg: (),
                        len: msg.len(),
                        max: self.base.slot_size as usize,
                    })
                }
                Err(PushError::Corrupt(c)) => return Err(SendError::Corrupt(c)),
                Err(PushError::Sealed) => {
                    // C1: the sealer linked (or closed) before it sealed,
                    // and we saw the seal with acquire. A consumer gives a
                    // drained segment back by sealing it and then linking.
                    match seg.next_segment().load(Ordering::Acquire) {
                        CLOSED => return Err(SendError::Disconnected(())),
                        0 => {
                            // Sealed drained (see `pop_step`): its bytes are
                            // as good as given back.
                            if let Some(new) = self.grow(&*seg, Size::Small, seg.bytes())? {
                                self.linked_inline = self.linked_inline.saturating_add(1);
                                drop(seg);
                                self.move_push(new);
                            }
                        }
                        next => {
                            let succ = self.successor(&seg, next, Restart::Tail)?;
                            drop(seg);
                            self.move_push(succ);
                        }
                    }
                }
                Err(PushError::Full) => {
                    let mut linked = None;
                    if seg.next_segment().load(Ordering::Acquire) == 0 {
                        if let Extended::Linked(new) = self.extend(&seg)? {
                            linked = Some(new);
                        }
                    }
                    // C2: seal after the link exists, so a sealed segment
                    // always names its successor.
                    seg.ring().seal();
                    if let Some(new) = linked {
                        drop(seg);
                        self.move_push(new);
                    }
                }
            }
        }
        Err(SendError::Corrupt(Corruption::new(
            "segment chain walk",
            MAX_STEPS.into(),
            MAX_STEPS.into(),
        )))
    }

    /// Pushes into `new` from now on; the segment left is unmapped off the
    /// sending path when there is a background thread (unmapping 64 MiB
    /// takes milliseconds). Callers drop their own clones of the segment
    /// left first, or the last of them would unmap it here after all.
    fn move_push(&mut self, new: Arc<S::Seg>) {
        let old = std::mem::replace(&mut self.push_seg, new);
        match &self.ahead {
            Some(spares) => spares.dispose(old),
            None => drop(old),
        }
    }

    /// Links a successor to the full segment `seg` (whose `next_segment`
    /// was 0): the segment made ahead if one is offered, else one made
    /// here. When the offer this handle's own preparation is making is not
    /// ready yet, it waits for it (bounded): less time than making another.
    fn extend(&mut self, seg: &Arc<S::Seg>) -> Result<Extended<S::Seg>, SendError<()>> {
        match self.link_spare(seg)? {
            Extended::No => {}
            done => return Ok(done),
        }
        // Another producer may have taken the offer a moment ago and be
        // about to link it: give it that moment before making another.
        for _ in 0..LINK_SPINS {
            if seg.next_segment().load(Ordering::Acquire) != 0 {
                return Ok(Extended::ByOther);
            }
            if cfg!(loom) {
                break;
            }
            std::hint::spin_loop();
        }
        if let Some(spares) = &self.ahead {
            if spares.wait_running() {
                self.waited = self.waited.saturating_add(1);
                match self.link_spare(seg)? {
                    Extended::No => {}
                    done => return Ok(done),
                }
            }
        }
        let cap = seg.ring().geometry().capacity;
        match self.grow(seg, Size::After(cap), 0)? {
            Some(new) => {
                self.linked_inline = self.linked_inline.saturating_add(1);
                Ok(Extended::Linked(new))
            }
            None => Ok(Extended::ByOther),
        }
    }

    /// Takes the segment offered in `spare_segment` and links it after the
    /// full segment `seg`, if one is offered that can follow it.
    fn link_spare(&mut self, seg: &S::Seg) -> Result<Extended<S::Seg>, SendError<()>> {
        let word = self.store.spare_segment();
        let k = word.load(Ordering::Acquire);
        // None, or one that can no longer follow (numbers grow along the
        // chain): the next preparation throws that one away.
        if k == 0 || k <= seg.number() {
            return Ok(Extended::No);
        }
        self.check_id(k)?;
        // C4 (acquire-release): take the offer. Whoever moves the word off
        // k owns segment k: nobody else links it or throws it away.
        if word
            .compare_exchange(k, 0, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return Ok(Extended::No);
        }
        let made = self.ahead.as_ref().and_then(|s| s.take_made(k));
        let spare = match made {
            Some(s) => s,
            None => match self.open(k) {
                Ok(Some(s)) => s,
                // Deleted by hand: nothing to link, nothing to give back.
                Ok(None) => return Ok(Extended::No),
                Err(e) => {
                    // Not ours to throw away on a doubt: offer it again.
                    let _ = word.compare_exchange(0, k, Ordering::AcqRel, Ordering::Acquire);
                    return Err(e.into());
                }
            },
        };
        if !fresh(&*spare, k) {
            // Linked or used already: never linked twice, never removed.
            return Err(SendError::Corrupt(Corruption::new(
                "offered segment (in use)",
                k,
                seg.number(),
            )));
        }
        // C0 (release): link it; one producer wins.
        match seg
            .next_segment()
            .compare_exchange(0, k, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => {
                self.store.tail_segment().fetch_max(k, Ordering::AcqRel);
                self.linked_ahead = self.linked_ahead.saturating_add(1);
                Ok(Extended::Linked(spare))
            }
            Err(_) => {
                // Another producer linked one first (or the chain was
                // closed): offer ours again for the next segment, or throw
                // it away if another offer took its place.
                if word
                    .compare_exchange(0, k, Ordering::AcqRel, Ordering::Acquire)
                    .is_err()
                {
                    discard(&self.store, &spare);
                }
                Ok(Extended::ByOther)
            }
        }
    }

    /// After the first push into `seg`: if it has no successor and no offer
    /// that can follow it, asks for one to be made ahead. As early as that,
    /// because making a segment takes about as long as filling one at full
    /// speed (writing memory the kernel must first zero); the cost is one
    /// segment, twice the newest's size, made before it is needed.
    fn maybe_prepare(&mut self, seg: &Arc<S::Seg>) {
        self.asked = Some(seg.number());
        if seg.next_segment().load(Ordering::Acquire) != 0
            || self.store.spare_segment().load(Ordering::Acquire) > seg.number()
        {
            return;
        }
        if let Some(spares) = &self.ahead {
            spares.request(&self.store, &self.base, seg);
        }
    }

    /// Creates the segment after `seg` and links it, unless another
    /// process links one first (or the queue was closed): the new segment
    /// if it linked it. `freed`: bytes of `seg` that count as given back
    /// already (it is sealed and drained: it is retired as soon as the new
    /// segment is linked). A stale offer that stands in the way of the byte
    /// limit is thrown away first.
    fn grow(
        &self,
        seg: &S::Seg,
        size: Size,
        freed: u64,
    ) -> Result<Option<Arc<S::Seg>>, SendError<()>> {
        let new = match make_segment(&self.store, &self.base, size, freed) {
            Err(SendError::MemoryLimit { .. }) if discard_stale(&self.store, seg.number()) => {
                make_segment(&self.store, &self.base, size, freed)?
            }
            other => other?,
        };
        let id = new.number();
        // C0 (release): link the new segment; one process wins.
        match seg
            .next_segment()
            .compare_exchange(0, id, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => {
                self.store.tail_segment().fetch_max(id, Ordering::AcqRel);
                Ok(Some(new))
            }
            Err(_) => {
                // Another process linked first (or closed the chain): ours
                // was never reachable.
                discard(&self.store, &new);
                Ok(None)
            }
        }
    }

    /// Claims the oldest message and runs `f` on it, as the consumer
    /// attached at `me`; never waits. With `removed` (the queue was
    /// removed), an empty queue is closed for good and reported as
    /// Disconnected once drained.
    #[cfg(test)]
    pub(crate) fn try_pop_with<R>(
        &mut self,
        me: u32,
        owners: &impl Owners,
        removed: bool,
        f: impl FnOnce(ShmSlice<'_>, u32) -> R,
    ) -> Result<R, RecvError> {
        self.try_pop(me, owners, removed, true, &mut Some(f))
    }

    /// [`try_pop_with`](Self::try_pop_with), with the closure taken out of
    /// `f` only when a message is claimed. Without `thorough`, a segment
    /// where no seal can be is not looked at for one (see `pop_step`).
    pub(crate) fn try_pop<R>(
        &mut self,
        me: u32,
        owners: &impl Owners,
        removed: bool,
        thorough: bool,
        f: &mut Option<impl FnOnce(ShmSlice<'_>, u32) -> R>,
    ) -> Result<R, RecvError> {
        // The clock is read only once a receive walks (never on a plain
        // pop or an empty ring).
        let mut start = None;
        while self.walked < MAX_WALK {
            match self.pop_step(me, owners, removed, thorough, f) {
                Ok(Step::Again) => {
                    self.walked = self.walked.saturating_add(1);
                    start.get_or_insert_with(std::time::Instant::now);
                }
                // A message, or the walk ended (empty, drained, an error):
                // the next receive walks afresh.
                Ok(Step::Got(r)) => {
                    self.walked = 0;
                    return Ok(r);
                }
                Err(e) => {
                    self.walked = 0;
                    return Err(e);
                }
            }
            // Each step may open a segment file: a chain a hostile process
            // keeps relinking must not hold one receive for thousands of
            // opens. Past the budget, report nothing now; the walk so far
            // is kept (pop_seg, walked), and a waiting caller looks again
            // by its own deadline.
            if self.walked % 64 == 0 && start.is_some_and(|t| t.elapsed() >= WALK_BUDGET) {
                return Err(RecvError::Empty);
            }
        }
        Err(RecvError::Corrupt(Corruption::new(
            "segment chain walk (steps without a message)",
            MAX_WALK.into(),
            MAX_WALK.into(),
        )))
    }

    fn pop_step<R>(
        &mut self,
        me: u32,
        owners: &impl Owners,
        removed: bool,
        thorough: bool,
        f: &mut Option<impl FnOnce(ShmSlice<'_>, u32) -> R>,
    ) -> Result<Step<R>, RecvError> {
        // A message, or nothing yet, is the common case: the segment is
        // borrowed, not cloned (a locked instruction on the reference
        // count would wait for the stores of the send before).
        let ring = self.pop_seg.ring();
        let number = self.pop_seg.number();
        // A seal can be where nothing is published only once the queue is
        // removed, once a producer sealed the segment full (it then links
        // a successor), or on a large segment, which this consumer seals
        // when drained: otherwise the producers' enqueue position is left
        // alone (`MpmcRing::try_claim_in`), unless the caller asks for a
        // thorough look (a try, or a receive after a wait that said it
        // can make progress: a seal left by a producer that died before
        // its link, or a corrupt word, is then found).
        let large = number > 0 && ring.geometry().capacity > self.base.capacity;
        let sealable = removed
            || thorough
            || large
            || self.seen_sealed.get() == number
            || self.pop_seg.next_segment().load(Ordering::Acquire) != 0;
        let claim = ring.try_claim_in(me, owners, sealable);
        match claim {
            Ok(claim) => {
                let f = f.take().expect("the receive closure runs once");
                return ring.read(claim, f).map(Step::Got).map_err(|e| match e {
                    PopError::Corrupt(c) => RecvError::Corrupt(c),
                    PopError::Empty | PopError::Drained => RecvError::Empty,
                });
            }
            Err(PopError::Corrupt(c)) => return Err(RecvError::Corrupt(c)),
            Err(PopError::Empty) => {
                let next = self.pop_seg.next_segment().load(Ordering::Acquire);
                let large = number > 0
                    && ring.geometry().capacity > self.base.capacity
                    && ring.len().is_ok_and(|n| n == 0);
                if removed || (next == 0 && large) {
                    // Removed: seal, so that Empty and Drained tell exactly
                    // whether anything accepted is left. Drained and large:
                    // seal, so that the next message goes into a small
                    // segment and this one can be given back.
                    ring.seal();
                    return Ok(Step::Again);
                }
                return Err(RecvError::Empty);
            }
            Err(PopError::Drained) => self.seen_sealed.set(number),
        }
        let seg = self.pop_seg.clone();
        match seg.next_segment().load(Ordering::Acquire) {
            CLOSED => Err(RecvError::Disconnected),
            0 if removed => {
                // Nothing may follow: close the link, unless a
                // producer linked a segment first.
                let _ = seg.next_segment().compare_exchange(
                    0,
                    CLOSED,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                );
                Ok(Step::Again)
            }
            0 => {
                // Sealed to be given back: link a small successor
                // (its bytes count against those of this one). If
                // even that fails, a producer links one later.
                match self.grow(&*seg, Size::Small, seg.bytes()) {
                    Ok(linked) => {
                        if let Some(small) = linked {
                            // An offer made while the queue grew
                            // can no longer follow the small one:
                            // give its memory back too.
                            discard_stale(&self.store, small.number());
                        }
                        Ok(Step::Again)
                    }
                    Err(SendError::Corrupt(c)) => Err(RecvError::Corrupt(c)),
                    Err(_) => Err(RecvError::Empty),
                }
            }
            next => {
                let succ = self.successor(&seg, next, Restart::Head)?;
                self.retire(&*seg, succ.number());
                // Ours first, so that the handle's is the last.
                drop(seg);
                let old = std::mem::replace(&mut self.pop_seg, succ);
                match &self.ahead {
                    Some(spares) => spares.dispose(old),
                    None => drop(old),
                }
                Ok(Step::Again)
            }
        }
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

    /// Whether a receive could make progress now (a message, a hole to step
    /// over, a drained segment to leave): cheap, claims nothing. With
    /// `removed`, an empty queue is progress too (it gets closed). Without
    /// `thorough` (a waiter's hot polls), the segment's `enqueue_pos` is
    /// read (to see it sealed) only once its successor is linked, the way a
    /// producer's seal shows, or once this handle saw it sealed
    /// (`MpmcRing::head_in`).
    pub(crate) fn head_in(&self, owners: &impl Owners, removed: bool, thorough: bool) -> bool {
        let ring = self.pop_seg.ring();
        let seal = thorough
            || self.seen_sealed.get() == self.pop_seg.number()
            || self.pop_seg.next_segment().load(Ordering::Acquire) != 0;
        let head = ring.head_in(owners, seal);
        if head == Head::Drained {
            self.seen_sealed.set(self.pop_seg.number());
        }
        match head {
            Head::Ready => true,
            // Drained: progress is leaving it for its successor, or closing
            // a removed queue. With no successor (a segment its consumer
            // sealed to give back) nothing is queued anywhere: a receive
            // would only link a small segment for the producers, who link
            // one themselves when they send. Not progress, so that a
            // receiver whose producer died ends (Disconnected) even when
            // that link cannot be made (a full byte limit, a hostile file
            // in the way), instead of being told "ready" for ever.
            Head::Drained => removed || self.pop_seg.next_segment().load(Ordering::Acquire) != 0,
            Head::Empty => removed,
        }
    }

    /// Messages queued in the live segments (diagnostics).
    pub(crate) fn len(&self) -> u64 {
        let mut n = 0u64;
        let mut seg = Some(self.pop_seg.clone());
        let mut steps = 0u32;
        while let Some(s) = seg.take() {
            n = n.saturating_add(s.ring().len().unwrap_or(0));
            steps = steps.saturating_add(1);
            let next = s.next_segment().load(Ordering::Acquire);
            if next > s.number() && next != CLOSED && steps < 64 {
                seg = self.open(next).ok().flatten();
            }
        }
        n
    }

    /// Takes back every slot the dead attachment `owner` holds, in every
    /// live segment (before its entry is reused).
    pub(crate) fn recover_owner(&self, owner: u32) {
        let mut seg = Some(self.pop_seg.clone());
        let mut steps = 0u32;
        while let Some(s) = seg.take() {
            s.ring().recover_owner(owner);
            steps = steps.saturating_add(1);
            let next = s.next_segment().load(Ordering::Acquire);
            if next > s.number() && next != CLOSED && steps < MAX_STEPS {
                seg = self.open(next).ok().flatten();
            }
        }
    }
}

impl<S: SegmentStore> Drop for Chain<S> {
    fn drop(&mut self) {
        self.stop_ahead();
    }
}

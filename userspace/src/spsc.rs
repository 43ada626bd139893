//! The SPSC ring algorithm: reserve, copy, publish; peek, copy, release.
//!
//! It works on any memory that provides the ring's words ([`RingWords`]) and
//! its slots ([`SlotMem`]): a mapped region in production, the heap under
//! Miri, loom cells under loom. Layout: `struct hwl_spsc_ring` in
//! hw/include/hwlink_abi.h. Ordering edges (A0/R0 on tail, A1/R1 on head,
//! F0..F3 for wake-ups) are those of hw/SPEC.md.
//!
//! Both indices are free-running u32 counters. Each side owns one index and
//! keeps the authoritative copy locally; it only ever *reads* the peer's
//! index, caches it, and refreshes the cache when the cache says the ring
//! is full (producer) or empty (consumer), and (consumer) now and then
//! while it lags behind a stream, to count its backlog. Every value read
//! from shared memory is bounds-checked before use, so a hostile peer can
//! cause a [`Corruption`] error but never an out-of-bounds access.
#![warn(clippy::arithmetic_side_effects)]

use crate::doorbell::Doorbell;
use crate::error::Corruption;
#[cfg(not(loom))]
use crate::shm::ShmView;
use crate::shm::{ShmSlice, ShmSliceMut, ShmWord};
use crate::sync::{fence, AtomicU32, AtomicU64, Ordering};
use hwlink_hw::{HWL_RING_MAX_CAPACITY, HWL_RING_MAX_SLOT_SIZE, HWL_SLOT_HDR_SIZE, HWL_WAIT_POLL};

/// How many slots ahead the producer prefetches for writing (of `tail`)
/// and the consumer for reading (of `head`, within the known backlog).
const PREFETCH_AHEAD: u32 = 8;
/// Messages found in a row at the first look after which the consumer
/// reads `tail` to count its backlog.
const BACKLOG_EVERY: u32 = 16;

/// The shape of a ring, copied out of shared memory once and validated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Geometry {
    /// Slots in the ring, a power of two.
    pub capacity: u32,
    /// Most payload bytes per message.
    pub slot_size: u32,
    /// Bytes per slot, header included.
    pub stride: u32,
}

impl Geometry {
    /// Checks a geometry read from (untrusted) shared memory, or asked for by
    /// a caller. `object_size` is the size of the ring object it must fit in.
    pub(crate) fn validate(
        capacity: u32,
        slot_size: u32,
        stride: u32,
        slots_offset: u64,
        object_size: u64,
    ) -> Result<Geometry, Corruption> {
        if !capacity.is_power_of_two() || capacity > HWL_RING_MAX_CAPACITY {
            return Err(Corruption::new(
                "ring capacity",
                capacity.into(),
                HWL_RING_MAX_CAPACITY.into(),
            ));
        }
        if slot_size > HWL_RING_MAX_SLOT_SIZE {
            return Err(Corruption::new(
                "ring slot size",
                slot_size.into(),
                HWL_RING_MAX_SLOT_SIZE.into(),
            ));
        }
        let want_stride = hwlink_hw::slot_stride(slot_size).unwrap_or(u32::MAX);
        if stride != want_stride {
            return Err(Corruption::new(
                "ring slot stride",
                stride.into(),
                want_stride.into(),
            ));
        }
        let need = hwlink_hw::ring_bytes(capacity, stride).unwrap_or(u64::MAX);
        if need > object_size {
            return Err(Corruption::new("ring size", need, object_size));
        }
        let want_offset = u64::from(capacity)
            .checked_mul(u64::from(stride))
            .and_then(|slots| need.checked_sub(slots))
            .unwrap_or(u64::MAX);
        if slots_offset != want_offset {
            return Err(Corruption::new(
                "ring slots offset",
                slots_offset,
                want_offset,
            ));
        }
        Ok(Geometry {
            capacity,
            slot_size,
            stride,
        })
    }

    #[inline(always)]
    fn mask(&self) -> u32 {
        self.capacity.wrapping_sub(1)
    }
}

/// Where a ring's slot bytes live.
pub(crate) trait SlotMem {
    /// Runs `f` with the `stride` bytes of slot `index` (already masked,
    /// `< capacity`), for writing.
    fn with_slot_mut<R>(&self, index: u32, f: impl FnOnce(ShmSliceMut<'_>) -> R) -> R;
    /// Runs `f` with the bytes of slot `index`, for reading.
    fn with_slot<R>(&self, index: u32, f: impl FnOnce(ShmSlice<'_>) -> R) -> R;
    /// The header of slot `index` (`struct hwl_slot`: `len` in the low
    /// and `seq` in the high half of one little-endian u64), only ever
    /// accessed atomically and as a whole; the payload after it is accessed
    /// through the views.
    fn header(&self, index: u32) -> &AtomicU64;
    /// Hints that slot `index` is about to be written: fetches its first
    /// cache lines for ownership. Only a hint; the default does nothing.
    #[inline(always)]
    fn prefetch_for_write(&self, _index: u32) {}
    /// Hints that slot `index` (published) is about to be read: fetches its
    /// first cache lines. Only a hint; the default does nothing.
    #[inline(always)]
    fn prefetch_for_read(&self, _index: u32) {}
}

/// Slots in a view of memory: a mapped region, or a heap buffer.
#[cfg(not(loom))]
#[derive(Debug)]
pub(crate) struct RawSlots {
    view: ShmView,
    stride: usize,
}

#[cfg(not(loom))]
impl RawSlots {
    /// The slots of a ring of `geometry` at the start of `view`, which must
    /// hold all of them (panics otherwise).
    pub(crate) fn new(view: ShmView, geometry: &Geometry) -> Self {
        let bytes = (geometry.capacity as usize).checked_mul(geometry.stride as usize);
        assert!(
            bytes.is_some_and(|b| b <= view.len()),
            "slot area smaller than the ring"
        );
        RawSlots {
            view,
            stride: geometry.stride as usize,
        }
    }

    /// Offset of slot `index` (masked, < capacity) in the view.
    #[inline(always)]
    fn offset(&self, index: u32) -> usize {
        // No overflow: index < capacity <= 2^24, stride <= 2^30 + 64.
        (index as usize).wrapping_mul(self.stride)
    }

    /// The first `len` payload bytes of slot `index` (masked), writable;
    /// panics if `len` exceeds the slot.
    #[inline(always)]
    pub(crate) fn payload_mut(&self, index: u32, len: usize) -> ShmSliceMut<'_> {
        let at = self.offset(index).wrapping_add(HWL_SLOT_HDR_SIZE as usize);
        match self.view.slice_mut(at, len) {
            Some(s) if len <= self.stride.saturating_sub(HWL_SLOT_HDR_SIZE as usize) => s,
            _ => outside_slot(len),
        }
    }

    /// The first `len` payload bytes of slot `index` (masked), readable;
    /// panics if `len` exceeds the slot.
    #[inline(always)]
    pub(crate) fn payload(&self, index: u32, len: usize) -> ShmSlice<'_> {
        let at = self.offset(index).wrapping_add(HWL_SLOT_HDR_SIZE as usize);
        match self.view.slice(at, len) {
            Some(s) if len <= self.stride.saturating_sub(HWL_SLOT_HDR_SIZE as usize) => s,
            _ => outside_slot(len),
        }
    }
}

#[cold]
#[inline(never)]
#[cfg(not(loom))]
fn outside_slot(len: usize) -> ! {
    panic!("{len} payload bytes do not fit a slot")
}

#[cfg(not(loom))]
impl SlotMem for RawSlots {
    #[inline(always)]
    fn with_slot_mut<R>(&self, index: u32, f: impl FnOnce(ShmSliceMut<'_>) -> R) -> R {
        match self.view.slice_mut(self.offset(index), self.stride) {
            Some(slot) => f(slot),
            None => outside_slot(self.stride),
        }
    }
    #[inline(always)]
    fn with_slot<R>(&self, index: u32, f: impl FnOnce(ShmSlice<'_>) -> R) -> R {
        match self.view.slice(self.offset(index), self.stride) {
            Some(slot) => f(slot),
            None => outside_slot(self.stride),
        }
    }
    #[inline(always)]
    fn header(&self, index: u32) -> &AtomicU64 {
        // The header is the first 8 bytes of the 64-aligned slot.
        self.view.u64_at(self.offset(index))
    }
    #[inline(always)]
    fn prefetch_for_write(&self, index: u32) {
        self.view.prefetch::<true>(self.offset(index), self.stride);
    }
    #[inline(always)]
    fn prefetch_for_read(&self, index: u32) {
        self.view.prefetch::<false>(self.offset(index), self.stride);
    }
}

/// The slot header word: `len` low, `seq` high (`struct hwl_slot` read as
/// one little-endian u64).
#[inline(always)]
fn header_word(len: u32, seq: u32) -> u64 {
    u64::from(len) | (u64::from(seq) << 32)
}

/// The shared words of one ring: indices, doorbells and the two endpoints'
/// advertised wait modes.
#[derive(Debug)]
pub(crate) struct RingWords {
    tail: ShmWord,
    head: ShmWord,
    producer_wait_mode: ShmWord,
    consumer_wait_mode: ShmWord,
    pub(crate) not_empty: Doorbell,
    pub(crate) not_full: Doorbell,
    /// The ring lives in write-combining memory: every publishing store is
    /// preceded and followed by a store fence (hw/SPEC.md, "Memory kinds").
    /// Chosen once, when the ring is attached.
    store_fences: bool,
}

impl RingWords {
    /// The ring's words (each keeps its memory alive).
    pub(crate) fn new(
        tail: ShmWord,
        head: ShmWord,
        producer_wait_mode: ShmWord,
        consumer_wait_mode: ShmWord,
        not_empty: Doorbell,
        not_full: Doorbell,
    ) -> Self {
        RingWords {
            tail,
            head,
            producer_wait_mode,
            consumer_wait_mode,
            not_empty,
            not_full,
            store_fences: false,
        }
    }

    /// Fences every publishing store (for write-combining memory).
    pub(crate) fn with_store_fences(mut self, yes: bool) -> Self {
        self.store_fences = yes;
        self
    }

    /// The store fence write-combining memory needs, or nothing.
    #[inline(always)]
    fn fence_stores(&self) {
        if self.store_fences {
            crate::sync::store_fence();
        }
    }

    #[inline(always)]
    pub(crate) fn tail(&self) -> &AtomicU32 {
        self.tail.get()
    }
    #[inline(always)]
    pub(crate) fn head(&self) -> &AtomicU32 {
        self.head.get()
    }
    #[inline(always)]
    pub(crate) fn producer_wait_mode(&self) -> &AtomicU32 {
        self.producer_wait_mode.get()
    }
    #[inline(always)]
    pub(crate) fn consumer_wait_mode(&self) -> &AtomicU32 {
        self.consumer_wait_mode.get()
    }

    /// Messages in the ring as seen from outside (diagnostics), checked.
    pub(crate) fn occupancy(&self, capacity: u32) -> Result<u32, Corruption> {
        let head = self.head().load(Ordering::Acquire);
        let tail = self.tail().load(Ordering::Acquire);
        consumer_distance(tail, head, capacity)
    }
}

/// `tail - head` (mod 2^32), which must never exceed the capacity: a vhost
/// style "moved index" check. Used by the producer, whose own `tail` is
/// never behind the consumer's `head`.
#[inline(always)]
fn check_distance(tail: u32, head: u32, capacity: u32) -> Result<u32, Corruption> {
    let used = tail.wrapping_sub(head);
    if used > capacity {
        return Err(Corruption::new(
            "ring occupancy (tail - head)",
            used.into(),
            capacity.into(),
        ));
    }
    Ok(used)
}

/// Messages between a shared `tail` and the consumer's `head`. The consumer
/// may run ahead of the shared `tail` by up to one batch, because it also
/// finds messages through the slots' headers, which are published before
/// `tail`: that counts as zero. Anything else out of range is corruption.
#[inline(always)]
fn consumer_distance(tail: u32, head: u32, capacity: u32) -> Result<u32, Corruption> {
    let ahead = tail.wrapping_sub(head);
    if ahead <= capacity {
        return Ok(ahead);
    }
    if head.wrapping_sub(tail) <= capacity {
        return Ok(0);
    }
    Err(Corruption::new(
        "ring occupancy (tail - head)",
        ahead.into(),
        capacity.into(),
    ))
}

/// The sending side's half of the algorithm.
#[derive(Debug)]
pub(crate) struct Producer<M: SlotMem> {
    pub(crate) words: RingWords,
    slots: M,
    geometry: Geometry,
    /// Next slot to fill; the authoritative copy (shared `tail` mirrors it).
    tail: u32,
    /// Last `head` seen; stale means the ring is *possibly* full.
    head_cache: u32,
    /// The consumer advertised HWL_WAIT_POLL: it never sleeps, so no
    /// wake-up check is needed. Only ever goes from false to true (an
    /// endpoint's wait mode is set once, at attach), so a stale false costs
    /// a fence, never a lost wake-up.
    peer_polls: bool,
    /// The consumer shares this thread's only CPU: after waking it, hand
    /// it the CPU at once (yield) instead of running out the time slice.
    pub(crate) hand_over: bool,
    /// Lengths of the written, not yet published messages, indexed by `k`
    /// (their distance from `tail`): the slot header is stored only once,
    /// by `publish`, together with `seq`.
    lens: Box<[u32]>,
}

impl<M: SlotMem> Producer<M> {
    /// Takes over the producer side, reading both indices once.
    pub(crate) fn new(words: RingWords, slots: M, geometry: Geometry) -> Result<Self, Corruption> {
        let tail = words.tail().load(Ordering::Relaxed);
        let head = words.head().load(Ordering::Acquire);
        check_distance(tail, head, geometry.capacity)?;
        Ok(Producer {
            words,
            slots,
            geometry,
            tail,
            head_cache: head,
            peer_polls: false,
            hand_over: false,
            lens: vec![0; geometry.capacity as usize].into_boxed_slice(),
        })
    }

    pub(crate) fn geometry(&self) -> &Geometry {
        &self.geometry
    }

    /// Re-reads the consumer's advertised wait mode (off the hot path).
    pub(crate) fn refresh_peer_mode(&mut self) {
        self.peer_polls = self.words.consumer_wait_mode().load(Ordering::Relaxed) == HWL_WAIT_POLL;
    }

    /// Free slots according to the cache, without touching shared memory.
    #[inline(always)]
    pub(crate) fn cached_free(&self) -> u32 {
        // head_cache was checked: tail - head <= capacity.
        self.geometry
            .capacity
            .saturating_sub(self.tail.wrapping_sub(self.head_cache))
    }

    /// Free slots: the cached answer if it is non-zero, else a fresh one.
    #[inline]
    pub(crate) fn free(&mut self) -> Result<u32, Corruption> {
        let cached = self.cached_free();
        if cached > 0 {
            return Ok(cached);
        }
        self.refresh_free()
    }

    /// Reloads `head` (A1, pairs with the consumer's R1) and returns the free
    /// slots.
    pub(crate) fn refresh_free(&mut self) -> Result<u32, Corruption> {
        let head = self.words.head().load(Ordering::Acquire);
        let used = check_distance(self.tail, head, self.geometry.capacity)?;
        self.head_cache = head;
        Ok(self.geometry.capacity.saturating_sub(used))
    }

    /// Whether a fresh look at `head` (A1) shows a free slot, without
    /// updating the cache. A corrupt `head` also answers true, so that the
    /// waiter stops and the next [`free`](Self::free) reports it.
    #[inline]
    pub(crate) fn has_room_now(&self) -> bool {
        let head = self.words.head().load(Ordering::Acquire);
        self.tail.wrapping_sub(head) != self.geometry.capacity
    }

    /// Writes one message into the `k`-th free slot after `tail`. The caller
    /// has checked `k < free()` and `len <= slot_size`; nothing is visible to
    /// the consumer before [`publish`](Self::publish).
    #[inline(always)]
    pub(crate) fn write(&mut self, k: u32, msg: &[u8]) {
        debug_assert!(k < self.cached_free() && msg.len() <= self.geometry.slot_size as usize);
        let index = self.tail.wrapping_add(k) & self.geometry.mask();
        // The slot is free (k < free), so the consumer does not read its
        // payload until we publish; it has stride >= 8 + slot_size bytes, so
        // the payload fits after the header.
        let written = self.slots.with_slot_mut(index, |mut slot| {
            slot.write_at(HWL_SLOT_HDR_SIZE as usize, msg)
        });
        assert!(written, "message longer than a slot");
        self.lens[k as usize] = msg.len() as u32;
    }

    /// Makes the next `n` written slots visible (R0', R0) and wakes the
    /// consumer if it may be asleep (F0).
    #[inline(always)]
    pub(crate) fn publish(&mut self, n: u32) {
        debug_assert!(n <= self.cached_free());
        // Payload stores first, even in write-combining memory.
        self.words.fence_stores();
        for k in 0..n {
            let position = self.tail.wrapping_add(k);
            let header = header_word(self.lens[k as usize], position.wrapping_add(1));
            // R0': one store of len and seq; pairs with the consumer's A0'.
            self.slots
                .header(position & self.geometry.mask())
                .store(header, Ordering::Release);
        }
        self.tail = self.tail.wrapping_add(n);
        // R0: pairs with the consumer's A0; makes the slot contents visible.
        self.words.tail().store(self.tail, Ordering::Release);
        self.words.fence_stores();
        // A slot a few ahead is free (the consumer released it): ask for its
        // lines now, so that a stream's copies do not wait for them.
        if self.cached_free() > PREFETCH_AHEAD {
            self.slots
                .prefetch_for_write(self.tail.wrapping_add(PREFETCH_AHEAD) & self.geometry.mask());
        }
        if !self.peer_polls {
            // F0: pairs with F1 in Doorbell::sleep.
            fence(Ordering::SeqCst);
            if self.words.not_empty.notify() && self.hand_over {
                hand_over_cpu();
            }
        }
    }

    /// The first `len` (<= slot_size) payload bytes of the `k`-th free
    /// slot, for in-place writes: free and ours until published, so the
    /// borrow of `self` keeps the view exclusive in this process.
    #[cfg(not(loom))]
    #[inline(always)]
    pub(crate) fn payload_mut(&self, k: u32, len: usize) -> ShmSliceMut<'_>
    where
        M: AsRawSlots,
    {
        let index = self.tail.wrapping_add(k) & self.geometry.mask();
        self.slots.raw().payload_mut(index, len)
    }

    /// Sets the length of the `k`-th free slot after an in-place write.
    #[inline(always)]
    pub(crate) fn set_len(&mut self, k: u32, len: u32) {
        debug_assert!(k < self.cached_free() && len <= self.geometry.slot_size);
        self.lens[k as usize] = len;
    }
}

/// The receiving side's half of the algorithm.
#[derive(Debug)]
pub(crate) struct Consumer<M: SlotMem> {
    pub(crate) words: RingWords,
    slots: M,
    geometry: Geometry,
    /// Next slot to read; the authoritative copy (shared `head` mirrors it).
    head: u32,
    /// Last `tail` seen; stale means the ring is *possibly* empty.
    tail_cache: u32,
    /// The producer advertised HWL_WAIT_POLL (see `Producer::peer_polls`).
    peer_polls: bool,
    /// As `Producer::hand_over`, for waking the producer.
    pub(crate) hand_over: bool,
    /// Messages in a row found at the first look (a stream the consumer
    /// lags behind); every BACKLOG_EVERY of them, `tail` is read to learn
    /// the whole backlog.
    streak: u32,
}

impl<M: SlotMem> Consumer<M> {
    /// Takes over the consumer side, reading both indices once.
    pub(crate) fn new(words: RingWords, slots: M, geometry: Geometry) -> Result<Self, Corruption> {
        let head = words.head().load(Ordering::Relaxed);
        let tail = words.tail().load(Ordering::Acquire);
        let ready = consumer_distance(tail, head, geometry.capacity)?;
        Ok(Consumer {
            words,
            slots,
            geometry,
            head,
            tail_cache: head.wrapping_add(ready),
            peer_polls: false,
            hand_over: false,
            streak: 0,
        })
    }

    pub(crate) fn geometry(&self) -> &Geometry {
        &self.geometry
    }

    /// Re-reads the producer's advertised wait mode (off the hot path).
    pub(crate) fn refresh_peer_mode(&mut self) {
        self.peer_polls = self.words.producer_wait_mode().load(Ordering::Relaxed) == HWL_WAIT_POLL;
    }

    /// Messages ready according to the cache.
    #[inline(always)]
    pub(crate) fn cached_available(&self) -> u32 {
        self.tail_cache.wrapping_sub(self.head)
    }

    /// Messages ready, cheaply: the cached count if non-zero, else one if the
    /// slot at `head` is published (A0'). It never touches `tail`, whose
    /// cache line thus stays with the producer; [`refresh_available`]
    /// (Self::refresh_available) counts a whole batch.
    #[inline]
    pub(crate) fn available(&mut self) -> u32 {
        let cached = self.cached_available();
        if cached > 0 {
            return cached;
        }
        if self.probe() {
            self.streak = self.streak.wrapping_add(1);
            // Lagging behind a stream: one look at `tail` now and then
            // counts the whole backlog, whose slots can then be prefetched
            // (see `release`). A round trip never gets here: each reply is
            // missed at least once before it lands. (`tail` may still lag
            // the header just found; then that message is all we count.)
            if self.streak % BACKLOG_EVERY == 0 {
                if let Ok(n @ 1..) = self.refresh_available() {
                    return n;
                }
            }
            self.tail_cache = self.head.wrapping_add(1);
            return 1;
        }
        self.streak = 0;
        0
    }

    /// A0': whether the slot at `head` holds the message for `head`. One
    /// cache line, the one the message is in.
    #[inline(always)]
    fn probe(&self) -> bool {
        let header = self
            .slots
            .header(self.head & self.geometry.mask())
            .load(Ordering::Acquire);
        (header >> 32) as u32 == self.head.wrapping_add(1)
    }

    /// Reloads `tail` (A0, pairs with the producer's R0).
    /// Never lowers the count: messages already found through their
    /// headers stay found even when `tail` lags behind them.
    pub(crate) fn refresh_available(&mut self) -> Result<u32, Corruption> {
        let tail = self.words.tail().load(Ordering::Acquire);
        let used = consumer_distance(tail, self.head, self.geometry.capacity)?
            .max(self.cached_available());
        self.tail_cache = self.head.wrapping_add(used);
        Ok(used)
    }

    /// Validates the shared `tail` (A0) without changing any cache.
    pub(crate) fn check_tail(&self) -> Result<(), Corruption> {
        let tail = self.words.tail().load(Ordering::Acquire);
        consumer_distance(tail, self.head, self.geometry.capacity).map(drop)
    }

    /// Whether the slot at `head` is published (A0'), without updating the
    /// cache or touching `tail`'s cache line: what waiters poll.
    #[inline]
    pub(crate) fn has_data_now(&self) -> bool {
        self.probe()
    }

    /// Reads the header of the `k`-th ready message once (A0'): its slot
    /// index and `len`, if its `seq` names this position.
    #[inline(always)]
    fn ready_header(&self, k: u32) -> Result<(u32, u32), Corruption> {
        debug_assert!(k < self.cached_available());
        let position = self.head.wrapping_add(k);
        let index = position & self.geometry.mask();
        let header = self.slots.header(index).load(Ordering::Acquire);
        let (len, seq) = (header as u32, (header >> 32) as u32);
        if seq != position.wrapping_add(1) {
            return Err(Corruption::new(
                "slot sequence behind tail (seq - position - 1)",
                seq.wrapping_sub(position).wrapping_sub(1).into(),
                0,
            ));
        }
        Ok((index, len))
    }

    /// The error for a message length beyond the slot.
    #[inline(always)]
    fn check_len(&self, len: u32) -> Result<usize, Corruption> {
        let slot_size = self.geometry.slot_size;
        if len > slot_size {
            return Err(Corruption::new(
                "message length",
                len.into(),
                slot_size.into(),
            ));
        }
        Ok(len as usize)
    }

    /// Reads the `k`-th ready message (`k < available()`), passing its
    /// payload to `f`. The header is read once (A0'); its `seq` must name
    /// this position and its `len` fit the slot before the payload is
    /// touched.
    #[inline(always)]
    pub(crate) fn read<R>(
        &self,
        k: u32,
        f: impl FnOnce(ShmSlice<'_>) -> R,
    ) -> Result<R, Corruption> {
        let (index, len) = self.ready_header(k)?;
        self.slots.with_slot(index, |slot| {
            let len = self.check_len(len)?;
            // len <= slot_size, and the slot holds header + slot_size.
            match slot.sub(HWL_SLOT_HDR_SIZE as usize, len) {
                Some(payload) => Ok(f(payload)),
                None => Err(Corruption::new(
                    "message length",
                    len as u64,
                    self.geometry.slot_size.into(),
                )),
            }
        })
    }

    /// The `k`-th ready message in place (`k < available()`), checked like
    /// [`read`](Self::read): published, and not reused before the release
    /// that the borrow of `self` keeps from happening.
    #[cfg(not(loom))]
    #[inline(always)]
    pub(crate) fn read_slice(&self, k: u32) -> Result<ShmSlice<'_>, Corruption>
    where
        M: AsRawSlots,
    {
        let (index, len) = self.ready_header(k)?;
        let len = self.check_len(len)?;
        Ok(self.slots.raw().payload(index, len))
    }

    /// The first `len` (<= slot_size) payload bytes of the `k`-th ready
    /// message, whose length `read` checked: a view kept valid by the
    /// borrow of `self` (no release meanwhile).
    #[cfg(not(loom))]
    #[inline(always)]
    pub(crate) fn payload(&self, k: u32, len: usize) -> ShmSlice<'_>
    where
        M: AsRawSlots,
    {
        let index = self.head.wrapping_add(k) & self.geometry.mask();
        self.slots.raw().payload(index, len)
    }

    /// Hands the next `n` read slots back to the producer (R1) and wakes it
    /// if it may be waiting for space (F2).
    #[inline(always)]
    pub(crate) fn release(&mut self, n: u32) {
        debug_assert!(n <= self.cached_available());
        self.head = self.head.wrapping_add(n);
        // R1: pairs with the producer's A1; the slots may be reused after it.
        self.words.head().store(self.head, Ordering::Release);
        self.words.fence_stores();
        // A slot a few ahead is known published (below the cached tail): ask
        // for its lines now, so that reading it does not wait for them.
        if self.cached_available() > PREFETCH_AHEAD {
            self.slots
                .prefetch_for_read(self.head.wrapping_add(PREFETCH_AHEAD) & self.geometry.mask());
        }
        if !self.peer_polls {
            // F2: pairs with F3 in Doorbell::sleep.
            fence(Ordering::SeqCst);
            if self.words.not_full.notify() && self.hand_over {
                hand_over_cpu();
            }
        }
    }
}

/// Gives the CPU to the peer just woken on it: a pipeline whose stages
/// share a core moves the message on at once, instead of after the rest
/// of this thread's time slice.
#[inline]
fn hand_over_cpu() {
    #[cfg(not(loom))]
    std::thread::yield_now();
}

/// Slot memory that can hand out views for zero-copy access.
#[cfg(not(loom))]
pub(crate) trait AsRawSlots {
    fn raw(&self) -> &RawSlots;
}

#[cfg(not(loom))]
impl AsRawSlots for RawSlots {
    fn raw(&self) -> &RawSlots {
        self
    }
}

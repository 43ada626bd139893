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
use crate::sync::{fence, AtomicU32, AtomicU64, Ordering};
use core::ptr::NonNull;
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
    /// Runs `f` with a pointer to the first byte of slot `index` (already
    /// masked, `< capacity`), for writing `stride` bytes.
    fn with_slot_mut<R>(&self, index: u32, f: impl FnOnce(*mut u8) -> R) -> R;
    /// Runs `f` with a pointer to the first byte of slot `index`, for reading.
    fn with_slot<R>(&self, index: u32, f: impl FnOnce(*const u8) -> R) -> R;
    /// The header of slot `index` (`struct hwl_slot`: `len` in the low
    /// and `seq` in the high half of one little-endian u64), only ever
    /// accessed atomically and as a whole; the payload after it is accessed
    /// through the pointers.
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

/// Slots at a fixed address: a mapped region, or a heap buffer.
#[derive(Debug)]
pub(crate) struct RawSlots {
    base: NonNull<u8>,
    stride: usize,
}

// SAFETY: RawSlots is a pointer into memory whose owner outlives it (see
// `new`); sending it to another thread moves no data.
unsafe impl Send for RawSlots {}

impl RawSlots {
    /// # Safety
    /// `base` must point to `geometry.capacity * geometry.stride` bytes that
    /// stay mapped and writable for the life of the value, aligned to 8.
    pub(crate) unsafe fn new(base: *mut u8, geometry: &Geometry) -> Self {
        RawSlots {
            base: NonNull::new(base).expect("slot base is null"),
            stride: geometry.stride as usize,
        }
    }

    #[inline(always)]
    pub(crate) fn slot_ptr(&self, index: u32) -> *mut u8 {
        // SAFETY: callers pass a masked index < capacity, so the offset stays
        // inside the slot area promised in `new`.
        // No overflow: index < capacity <= 2^24, stride <= 2^30 + 64.
        unsafe {
            self.base
                .as_ptr()
                .add((index as usize).wrapping_mul(self.stride))
        }
    }
}

impl SlotMem for RawSlots {
    #[inline(always)]
    fn with_slot_mut<R>(&self, index: u32, f: impl FnOnce(*mut u8) -> R) -> R {
        f(self.slot_ptr(index))
    }
    #[inline(always)]
    fn with_slot<R>(&self, index: u32, f: impl FnOnce(*const u8) -> R) -> R {
        f(self.slot_ptr(index))
    }
    #[inline(always)]
    fn header(&self, index: u32) -> &AtomicU64 {
        // SAFETY: the header is the first 8 bytes of the slot, which is
        // 64-byte aligned and inside the slot area (contract of `new`);
        // every access to it is atomic and 8 bytes wide.
        unsafe { &*self.slot_ptr(index).cast::<AtomicU64>() }
    }
    #[inline(always)]
    fn prefetch_for_write(&self, index: u32) {
        prefetch_slot::<true>(self.slot_ptr(index), self.stride);
    }
    #[inline(always)]
    fn prefetch_for_read(&self, index: u32) {
        prefetch_slot::<false>(self.slot_ptr(index), self.stride);
    }
}

/// Prefetches the first cache lines of a slot (the header's line and the
/// next: a small message's whole slot), for ownership (`WRITE`: PREFETCHW)
/// or for reading (PREFETCHT0). Only a hint; nothing under Miri or off x86.
#[inline(always)]
fn prefetch_slot<const WRITE: bool>(slot: *mut u8, stride: usize) {
    #[cfg(all(target_arch = "x86_64", not(miri)))]
    for line in 0..stride.min(128) / 64 {
        let p = slot.wrapping_add(line.wrapping_mul(64));
        // SAFETY: a prefetch only hints the cache: it cannot fault, and CPUs
        // without PREFETCHW treat it as a NOP. The address is inside the
        // slot all the same (line * 64 < stride).
        unsafe {
            if WRITE {
                core::arch::asm!("prefetchw [{p}]", p = in(reg) p, options(nostack, preserves_flags, readonly));
            } else {
                core::arch::asm!("prefetcht0 [{p}]", p = in(reg) p, options(nostack, preserves_flags, readonly));
            }
        }
    }
    #[cfg(not(all(target_arch = "x86_64", not(miri))))]
    let _ = (slot, stride);
}

/// The slot header word: `len` low, `seq` high (`struct hwl_slot` read as
/// one little-endian u64).
#[inline(always)]
fn header_word(len: u32, seq: u32) -> u64 {
    u64::from(len) | (u64::from(seq) << 32)
}

/// Copies `len` bytes. Messages are often a few bytes long, where a call
/// into `memcpy` costs more than the copy: up to 64 bytes are moved inline
/// with (possibly overlapping) unaligned loads and stores.
///
/// # Safety
/// As for `core::ptr::copy_nonoverlapping`.
#[inline(always)]
pub(crate) unsafe fn copy_bytes(src: *const u8, dst: *mut u8, len: usize) {
    // SAFETY: the caller guarantees `len` readable bytes at `src` and
    // writable bytes at `dst`, not overlapping; each access below, in every
    // arm, stays within the first `len` bytes.
    unsafe {
        if (8..=16).contains(&len) {
            let a = src.cast::<u64>().read_unaligned();
            let b = src.add(len.wrapping_sub(8)).cast::<u64>().read_unaligned();
            dst.cast::<u64>().write_unaligned(a);
            dst.add(len.wrapping_sub(8))
                .cast::<u64>()
                .write_unaligned(b);
        } else if (17..=32).contains(&len) {
            let a = src.cast::<u128>().read_unaligned();
            let b = src
                .add(len.wrapping_sub(16))
                .cast::<u128>()
                .read_unaligned();
            dst.cast::<u128>().write_unaligned(a);
            dst.add(len.wrapping_sub(16))
                .cast::<u128>()
                .write_unaligned(b);
        } else if (33..=64).contains(&len) {
            let a = src.cast::<[u128; 2]>().read_unaligned();
            let b = src
                .add(len.wrapping_sub(32))
                .cast::<[u128; 2]>()
                .read_unaligned();
            dst.cast::<[u128; 2]>().write_unaligned(a);
            dst.add(len.wrapping_sub(32))
                .cast::<[u128; 2]>()
                .write_unaligned(b);
        } else if (4..8).contains(&len) {
            let a = src.cast::<u32>().read_unaligned();
            let b = src.add(len.wrapping_sub(4)).cast::<u32>().read_unaligned();
            dst.cast::<u32>().write_unaligned(a);
            dst.add(len.wrapping_sub(4))
                .cast::<u32>()
                .write_unaligned(b);
        } else {
            core::ptr::copy_nonoverlapping(src, dst, len);
        }
    }
}

/// The shared words of one ring: indices, doorbells and the two endpoints'
/// advertised wait modes.
#[derive(Debug)]
pub(crate) struct RingWords {
    tail: NonNull<AtomicU32>,
    head: NonNull<AtomicU32>,
    producer_wait_mode: NonNull<AtomicU32>,
    consumer_wait_mode: NonNull<AtomicU32>,
    pub(crate) not_empty: Doorbell,
    pub(crate) not_full: Doorbell,
    /// The ring lives in write-combining memory: every publishing store is
    /// preceded and followed by a store fence (hw/SPEC.md, "Memory kinds").
    /// Chosen once, when the ring is attached.
    store_fences: bool,
}

// SAFETY: only atomics are reached through these pointers.
unsafe impl Send for RingWords {}
// SAFETY: as above.
unsafe impl Sync for RingWords {}

impl RingWords {
    /// # Safety
    /// Every pointer must be valid, aligned, accessed only atomically, and
    /// outlive the value.
    pub(crate) unsafe fn new(
        tail: *const AtomicU32,
        head: *const AtomicU32,
        producer_wait_mode: *const AtomicU32,
        consumer_wait_mode: *const AtomicU32,
        not_empty: Doorbell,
        not_full: Doorbell,
    ) -> Self {
        let nn = |p: *const AtomicU32| NonNull::new(p.cast_mut()).expect("ring word is null");
        RingWords {
            tail: nn(tail),
            head: nn(head),
            producer_wait_mode: nn(producer_wait_mode),
            consumer_wait_mode: nn(consumer_wait_mode),
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
        // SAFETY: valid for our lifetime (contract of `new`).
        unsafe { self.tail.as_ref() }
    }
    #[inline(always)]
    pub(crate) fn head(&self) -> &AtomicU32 {
        // SAFETY: valid for our lifetime (contract of `new`).
        unsafe { self.head.as_ref() }
    }
    #[inline(always)]
    pub(crate) fn producer_wait_mode(&self) -> &AtomicU32 {
        // SAFETY: valid for our lifetime (contract of `new`).
        unsafe { self.producer_wait_mode.as_ref() }
    }
    #[inline(always)]
    pub(crate) fn consumer_wait_mode(&self) -> &AtomicU32 {
        // SAFETY: valid for our lifetime (contract of `new`).
        unsafe { self.consumer_wait_mode.as_ref() }
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
        self.slots.with_slot_mut(index, |slot| {
            // SAFETY: the slot is free (k < free), so the consumer does not
            // read its payload until we publish; it has stride >= 8 +
            // slot_size bytes, so the payload fits after the header.
            unsafe {
                copy_bytes(
                    msg.as_ptr(),
                    slot.add(HWL_SLOT_HDR_SIZE as usize),
                    msg.len(),
                )
            }
        });
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
            self.words.not_empty.notify();
        }
    }

    /// Pointer to the payload of the `k`-th free slot, for in-place writes,
    /// and the slot index it maps to.
    #[inline(always)]
    pub(crate) fn payload_ptr(&self, k: u32) -> *mut u8
    where
        M: AsRawSlots,
    {
        let index = self.tail.wrapping_add(k) & self.geometry.mask();
        // SAFETY: the slot has HWL_SLOT_HDR_SIZE + slot_size bytes.
        unsafe {
            self.slots
                .raw()
                .slot_ptr(index)
                .add(HWL_SLOT_HDR_SIZE as usize)
        }
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

    /// Reads the `k`-th ready message (`k < available()`), passing its
    /// payload to `f`. The header is read once (A0'); its `seq` must name
    /// this position and its `len` fit the slot before the payload is
    /// touched.
    #[inline(always)]
    pub(crate) fn read<R>(
        &self,
        k: u32,
        f: impl FnOnce(*const u8, usize) -> R,
    ) -> Result<R, Corruption> {
        debug_assert!(k < self.cached_available());
        let position = self.head.wrapping_add(k);
        let index = position & self.geometry.mask();
        let slot_size = self.geometry.slot_size;
        let header = self.slots.header(index).load(Ordering::Acquire);
        let (len, seq) = (header as u32, (header >> 32) as u32);
        if seq != position.wrapping_add(1) {
            return Err(Corruption::new(
                "slot sequence behind tail (seq - position - 1)",
                seq.wrapping_sub(position).wrapping_sub(1).into(),
                0,
            ));
        }
        self.slots.with_slot(index, |slot| {
            if len > slot_size {
                return Err(Corruption::new(
                    "message length",
                    len.into(),
                    slot_size.into(),
                ));
            }
            // SAFETY: len <= slot_size, and the slot holds header + slot_size.
            let payload = unsafe { slot.add(HWL_SLOT_HDR_SIZE as usize) };
            Ok(f(payload, len as usize))
        })
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
            self.words.not_full.notify();
        }
    }
}

/// Slot memory that can hand out raw pointers for zero-copy access.
pub(crate) trait AsRawSlots {
    fn raw(&self) -> &RawSlots;
}

impl AsRawSlots for RawSlots {
    fn raw(&self) -> &RawSlots {
        self
    }
}

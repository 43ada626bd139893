//! The SPSC ring algorithm: reserve, copy, publish; peek, copy, release.
//!
//! It works on any memory that provides the ring's words ([`RingWords`]) and
//! its slots ([`SlotMem`]): a mapped region in production, the heap under
//! Miri, loom cells under loom. Layout: `struct hwl_spsc_ring` in
//! hw/include/hwlink_abi.h. Ordering edges (A0/R0 on tail, A1/R1 on head,
//! F0..F3 for wake-ups) are those of hw/SPEC.md.
//!
//! A ring is laid out in one of two ways (hw/SPEC.md, "Packed rings"):
//! fixed slots of one stride each, or packed records of 16-byte units,
//! where a message takes only the units its length needs, so several
//! small messages share a cache line. The same [`Producer`] and
//! [`Consumer`] drive both; `Geometry::packed` chooses, once, at attach.
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
use hwlink_hw::{
    HWL_RECORD_PAD, HWL_RECORD_UNIT, HWL_RING_MAX_CAPACITY, HWL_RING_MAX_SLOT_SIZE,
    HWL_SLOT_HDR_SIZE, HWL_WAIT_POLL,
};

/// How many slots ahead the producer prefetches for writing (of `tail`)
/// and the consumer for reading (of `head`, within the known backlog).
const PREFETCH_AHEAD: u32 = 8;
/// Messages found in a row at the first look after which the consumer
/// reads `tail` to count its backlog.
const BACKLOG_EVERY: u32 = 16;
/// Packed rings: the most records a consumer finds in one walk of the
/// headers (and then reads without another look at shared memory, making
/// its `head` known once for all of them), and the most a producer writes
/// in one batch.
const PACKED_RUN: u32 = 64;
/// Packed rings: units per cache line, less one (a mask).
const LINE_UNITS_MASK: u32 = 64 / HWL_RECORD_UNIT - 1;
/// Packed rings: how many units after its last record the producer keeps
/// zeroed ahead of need (P0 ahead).
const ZERO_AHEAD: u32 = 16;
/// The bytes before a record's payload (its `struct hwl_slot`).
const HDR: usize = HWL_SLOT_HDR_SIZE as usize;

/// Units of a packed record of `len` bytes (len <= 2^30: no overflow; a
/// larger, hostile length saturates and fails the bounds checks).
#[inline(always)]
fn record_units(len: u32) -> u32 {
    len.saturating_add(HWL_SLOT_HDR_SIZE + HWL_RECORD_UNIT - 1) / HWL_RECORD_UNIT
}

/// The `seq` of a packed record at unit position `pos`: `pos + 1`, except
/// that position 2^32 - 1 takes 1, not 0, since a zeroed header (the one
/// after the last record) must never read as published. (Position 0 also
/// takes 1, but sits at another unit.)
#[inline(always)]
fn record_tag(pos: u32) -> u32 {
    pos.wrapping_add(1).max(1)
}

/// How a link's messages are laid out in its ring.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RingLayout {
    /// The layout measured fastest for links used one message per call:
    /// fixed slots, at every size, on the machines we measured (hw/SPEC.md
    /// §17.5: with a reader that keeps up, packed records put the reader
    /// and the writer on the same cache line).
    #[default]
    Auto,
    /// One slot of a fixed stride (a multiple of 64 bytes) per message.
    Slots,
    /// Length-prefixed records packed back to back in 16-byte units:
    /// several small messages per cache line, and a smaller ring.
    Packed,
}
/// The shape of a ring, copied out of shared memory once and validated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Geometry {
    /// Slots in the ring (units when packed), a power of two.
    pub capacity: u32,
    /// Most payload bytes per message.
    pub slot_size: u32,
    /// Bytes per slot, header included (HWL_RECORD_UNIT when packed).
    pub stride: u32,
    /// Packed records (`HWL_RING_PACKED`) instead of fixed slots.
    pub packed: bool,
    /// Packed: most messages held at once (`max_messages`); else 0.
    pub max_messages: u32,
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
        Self::validate_layout(capacity, slot_size, stride, 0, slots_offset, object_size)
    }

    /// [`validate`](Self::validate) for either layout: packed when
    /// `max_messages` is non-zero.
    pub(crate) fn validate_layout(
        capacity: u32,
        slot_size: u32,
        stride: u32,
        max_messages: u32,
        slots_offset: u64,
        object_size: u64,
    ) -> Result<Geometry, Corruption> {
        if max_messages != 0 {
            return Self::validate_packed(
                capacity,
                slot_size,
                stride,
                max_messages,
                slots_offset,
                object_size,
            );
        }
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
            packed: false,
            max_messages: 0,
        })
    }

    fn validate_packed(
        units: u32,
        slot_size: u32,
        stride: u32,
        max_messages: u32,
        slots_offset: u64,
        object_size: u64,
    ) -> Result<Geometry, Corruption> {
        // Every record takes a unit and one unit stays free.
        if max_messages == 0 || max_messages >= units {
            return Err(Corruption::new(
                "packed ring max_messages",
                max_messages.into(),
                units.saturating_sub(1).into(),
            ));
        }
        if !units.is_power_of_two() || !(4..=HWL_RING_MAX_CAPACITY).contains(&units) {
            return Err(Corruption::new(
                "packed ring units",
                units.into(),
                HWL_RING_MAX_CAPACITY.into(),
            ));
        }
        if stride != HWL_RECORD_UNIT {
            return Err(Corruption::new(
                "packed ring unit size",
                stride.into(),
                HWL_RECORD_UNIT.into(),
            ));
        }
        let Some(need) = hwlink_hw::packed_ring_bytes(units, slot_size) else {
            // Two records of the largest size must fit.
            let most = (units / 2)
                .saturating_mul(HWL_RECORD_UNIT)
                .saturating_sub(HWL_SLOT_HDR_SIZE);
            return Err(Corruption::new(
                "packed ring slot size",
                slot_size.into(),
                most.into(),
            ));
        };
        if need > object_size {
            return Err(Corruption::new("ring size", need, object_size));
        }
        if slots_offset != hwlink_hw::RING_CONTROL_BYTES {
            return Err(Corruption::new(
                "ring slots offset",
                slots_offset,
                hwlink_hw::RING_CONTROL_BYTES,
            ));
        }
        Ok(Geometry {
            capacity: units,
            slot_size,
            stride,
            packed: true,
            max_messages,
        })
    }

    /// The geometry of a new ring that holds `messages` (a power of two)
    /// messages of up to `slot_size` bytes, laid out as `layout` says. The
    /// error names what is out of range.
    pub(crate) fn for_ring(
        messages: u32,
        slot_size: u32,
        layout: RingLayout,
    ) -> Result<Geometry, Corruption> {
        let packed = match layout {
            RingLayout::Slots | RingLayout::Auto => false,
            RingLayout::Packed => true,
        };
        if packed {
            if !messages.is_power_of_two() || messages > HWL_RING_MAX_CAPACITY {
                return Err(Corruption::new(
                    "capacity",
                    messages.into(),
                    HWL_RING_MAX_CAPACITY.into(),
                ));
            }
            // Units for `messages` of the largest size, a padding record
            // before one of them (at most one record less a unit) and the
            // unit kept free.
            let record = u64::from(record_units(slot_size.min(HWL_RING_MAX_SLOT_SIZE)));
            let units = (u64::from(messages) + 1)
                .saturating_mul(record)
                .max(record * 2)
                .max(4)
                .next_power_of_two();
            let units = u32::try_from(units).unwrap_or(u32::MAX);
            let object = hwlink_hw::packed_ring_bytes(units, slot_size).unwrap_or(u64::MAX);
            return Self::validate_packed(
                units,
                slot_size,
                HWL_RECORD_UNIT,
                messages,
                hwlink_hw::RING_CONTROL_BYTES,
                object,
            );
        }
        let stride = hwlink_hw::slot_stride(slot_size).unwrap_or(u32::MAX);
        let object = hwlink_hw::ring_bytes(messages, stride).unwrap_or(u64::MAX);
        let slots_offset =
            object.saturating_sub(u64::from(messages).saturating_mul(u64::from(stride)));
        Self::validate(messages, slot_size, stride, slots_offset, object)
    }

    /// Bytes of the ring object (control block and slots).
    pub(crate) fn object_bytes(&self) -> Option<u64> {
        if self.packed {
            hwlink_hw::packed_ring_bytes(self.capacity, self.slot_size)
        } else {
            hwlink_hw::ring_bytes(self.capacity, self.stride)
        }
    }

    /// `hwl_spsc_ring.flags` of this layout.
    pub(crate) fn flags(&self) -> u32 {
        if self.packed {
            hwlink_hw::HWL_RING_PACKED
        } else {
            0
        }
    }

    /// Messages the ring holds at most (and always has room for, of any
    /// size up to slot_size).
    pub(crate) fn messages(&self) -> u32 {
        if self.packed {
            self.max_messages
        } else {
            self.capacity
        }
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
    /// Packed rings: copies `data` to byte `at` of the span that starts at
    /// unit `index` (masked) and runs `at + data.len()` bytes, which the
    /// caller checked ends inside the unit area. False if it does not (and
    /// always, for slot memory that holds no packed ring).
    fn write_span(&self, _index: u32, _at: usize, _data: &[u8]) -> bool {
        false
    }
    /// Packed rings: runs `f` with the `len` bytes at byte `at` of the span
    /// that starts at unit `index` (masked), for reading; `None` if they
    /// are not inside the unit area (and always, for slot memory that holds
    /// no packed ring).
    fn with_span<R>(
        &self,
        _index: u32,
        _at: usize,
        _len: usize,
        _f: impl FnOnce(ShmSlice<'_>) -> R,
    ) -> Option<R> {
        None
    }
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

    /// Packed rings: the `len` payload bytes of the record at unit `index`
    /// (masked), writable; panics if they leave the unit area (the caller
    /// placed the record inside it).
    #[inline(always)]
    pub(crate) fn record_mut(&self, index: u32, len: usize) -> ShmSliceMut<'_> {
        let at = self.offset(index).wrapping_add(HDR);
        match self.view.slice_mut(at, len) {
            Some(s) => s,
            None => outside_slot(len),
        }
    }

    /// Packed rings: the `len` payload bytes of the record at unit `index`
    /// (masked), readable; panics if they leave the unit area (the caller
    /// checked the record's length against it).
    #[inline(always)]
    pub(crate) fn record(&self, index: u32, len: usize) -> ShmSlice<'_> {
        let at = self.offset(index).wrapping_add(HDR);
        match self.view.slice(at, len) {
            Some(s) => s,
            None => outside_slot(len),
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
        // The header is the first 8 bytes of the 64-aligned slot (the
        // 16-aligned unit, packed).
        self.view.u64_at(self.offset(index))
    }
    #[inline(always)]
    fn write_span(&self, index: u32, at: usize, data: &[u8]) -> bool {
        let start = self.offset(index).wrapping_add(at);
        match self.view.slice_mut(start, data.len()) {
            Some(mut s) => s.write_at(0, data),
            None => false,
        }
    }
    #[inline(always)]
    fn with_span<R>(
        &self,
        index: u32,
        at: usize,
        len: usize,
        f: impl FnOnce(ShmSlice<'_>) -> R,
    ) -> Option<R> {
        let start = self.offset(index).wrapping_add(at);
        self.view.slice(start, len).map(f)
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
    /// Packed: messages published and released (free-running counts).
    published: ShmWord,
    released: ShmWord,
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
        [tail, head, published, released]: [ShmWord; 4],
        producer_wait_mode: ShmWord,
        consumer_wait_mode: ShmWord,
        not_empty: Doorbell,
        not_full: Doorbell,
    ) -> Self {
        RingWords {
            tail,
            head,
            published,
            released,
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
    fn published(&self) -> &AtomicU32 {
        self.published.get()
    }
    #[inline(always)]
    fn released(&self) -> &AtomicU32 {
        self.released.get()
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
    pub(crate) fn occupancy(&self, geometry: &Geometry) -> Result<u32, Corruption> {
        if geometry.packed {
            let released = self.released().load(Ordering::Acquire);
            let published = self.published().load(Ordering::Acquire);
            return check_count(published, released, geometry.max_messages);
        }
        let head = self.head().load(Ordering::Acquire);
        let tail = self.tail().load(Ordering::Acquire);
        consumer_distance(tail, head, geometry.capacity)
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

/// Packed: `published - released` (mod 2^32), which must never exceed
/// `max_messages`.
#[inline(always)]
fn check_count(published: u32, released: u32, max: u32) -> Result<u32, Corruption> {
    let held = published.wrapping_sub(released);
    if held > max {
        return Err(Corruption::new(
            "ring messages (published - released)",
            held.into(),
            max.into(),
        ));
    }
    Ok(held)
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
    /// Next slot (unit, packed) to fill; the authoritative copy (shared
    /// `tail` mirrors it).
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
    /// Packed: the start unit of each placed, unpublished record (`k <
    /// placed`); a padding record fills any gap before one.
    starts: Box<[u32]>,
    /// Packed: records placed since the last publish.
    placed: u32,
    /// Packed: messages published (authoritative; shared `published`
    /// mirrors it) and the last `released` seen.
    sent: u32,
    released_cache: u32,
    /// Packed: the headers of the units from `tail` up to here are zero
    /// (P0 ahead); at least `tail + 1` after a publish.
    zeroed_to: u32,
}

impl<M: SlotMem> Producer<M> {
    /// Takes over the producer side, reading both indices once.
    pub(crate) fn new(words: RingWords, slots: M, geometry: Geometry) -> Result<Self, Corruption> {
        let tail = words.tail().load(Ordering::Relaxed);
        let head = words.head().load(Ordering::Acquire);
        check_distance(tail, head, geometry.capacity)?;
        let sent = words.published().load(Ordering::Relaxed);
        let released = words.released().load(Ordering::Acquire);
        if geometry.packed {
            check_count(sent, released, geometry.max_messages)?;
        }
        let run = if geometry.packed {
            PACKED_RUN
        } else {
            geometry.capacity
        };
        Ok(Producer {
            words,
            slots,
            geometry,
            tail,
            head_cache: head,
            peer_polls: false,
            hand_over: false,
            lens: vec![0; run as usize].into_boxed_slice(),
            starts: vec![0; if geometry.packed { run as usize } else { 0 }].into_boxed_slice(),
            placed: 0,
            sent,
            released_cache: released,
            zeroed_to: tail,
        })
    }

    pub(crate) fn geometry(&self) -> &Geometry {
        &self.geometry
    }

    /// Re-reads the consumer's advertised wait mode (off the hot path).
    pub(crate) fn refresh_peer_mode(&mut self) {
        self.peer_polls = self.words.consumer_wait_mode().load(Ordering::Relaxed) == HWL_WAIT_POLL;
    }

    /// Free slots according to the cache, without touching shared memory
    /// (packed: records of the largest size that surely fit).
    #[inline(always)]
    pub(crate) fn cached_free(&self) -> u32 {
        if self.geometry.packed {
            return self.packed_free(self.head_cache, self.geometry.slot_size);
        }
        // head_cache was checked: tail - head <= capacity.
        self.geometry
            .capacity
            .saturating_sub(self.tail.wrapping_sub(self.head_cache))
    }

    /// Whether a message of `len` (<= slot_size) bytes fits now according
    /// to the cache: the fast path's one test of the ring.
    #[inline(always)]
    pub(crate) fn cached_room(&self, len: usize) -> bool {
        if self.geometry.packed {
            return self.fits(self.head_cache, len as u32)
                && self.sent.wrapping_sub(self.released_cache) < self.geometry.max_messages;
        }
        self.tail.wrapping_sub(self.head_cache) < self.geometry.capacity
    }

    /// Packed: where a record of `units` placed at `at` starts: at `at`, or
    /// at the next lap if it would cross the end of the unit area (a
    /// padding record then fills the gap).
    #[inline(always)]
    fn place_at(&self, at: u32, units: u32) -> u32 {
        let index = at & self.geometry.mask();
        let left = self.geometry.capacity.wrapping_sub(index);
        if units > left {
            at.wrapping_add(left)
        } else {
            at
        }
    }

    /// Packed: whether one record of `len` bytes fits after `tail` with the
    /// consumer at `head` (one unit stays free: its header is the zeroed
    /// one after the last record).
    #[inline(always)]
    fn fits(&self, head: u32, len: u32) -> bool {
        let units = record_units(len);
        let end = self.place_at(self.tail, units).wrapping_add(units);
        end.wrapping_sub(head) < self.geometry.capacity
    }

    /// Packed: records of `len` bytes that surely fit after `tail` with the
    /// consumer at `head` and `released_cache`, at most PACKED_RUN.
    fn packed_free(&self, head: u32, len: u32) -> u32 {
        let held = self.sent.wrapping_sub(self.released_cache);
        let count_room = self.geometry.max_messages.saturating_sub(held);
        if count_room == 0 || !self.fits(head, len) {
            return 0;
        }
        let units = record_units(len).max(1);
        // Free units, one kept free, minus a padding record at worst.
        let room = self
            .geometry
            .capacity
            .saturating_sub(self.tail.wrapping_sub(head))
            .saturating_sub(1)
            .saturating_sub(units.saturating_sub(1));
        room.checked_div(units)
            .unwrap_or(0)
            .clamp(1, PACKED_RUN)
            .min(count_room)
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

    /// Slots for messages of `len` bytes (packed: records of that length
    /// that surely fit; fixed slots: as [`free`](Self::free)).
    #[inline]
    pub(crate) fn free_for(&mut self, len: usize) -> Result<u32, Corruption> {
        if !self.geometry.packed {
            return self.free();
        }
        let len = len as u32;
        let cached = self.packed_free(self.head_cache, len);
        if cached > 0 {
            return Ok(cached);
        }
        self.refresh_free()?;
        Ok(self.packed_free(self.head_cache, len))
    }

    /// Reloads `head` (A1, pairs with the consumer's R1) and returns the free
    /// slots.
    pub(crate) fn refresh_free(&mut self) -> Result<u32, Corruption> {
        let head = self.words.head().load(Ordering::Acquire);
        let used = check_distance(self.tail, head, self.geometry.capacity)?;
        self.head_cache = head;
        if self.geometry.packed {
            let released = self.words.released().load(Ordering::Acquire);
            check_count(self.sent, released, self.geometry.max_messages)?;
            self.released_cache = released;
            return Ok(self.cached_free());
        }
        Ok(self.geometry.capacity.saturating_sub(used))
    }

    /// Whether a fresh look at `head` (A1) shows a free slot (packed: room
    /// for a message of the largest size), without updating the cache. A
    /// corrupt `head` also answers true, so that the waiter stops and the
    /// next [`free`](Self::free) reports it.
    #[inline]
    pub(crate) fn has_room_now(&self) -> bool {
        self.has_room_for_now(self.geometry.slot_size as usize)
    }

    /// Like [`has_room_now`](Self::has_room_now), for a message of `len`
    /// bytes.
    #[inline]
    pub(crate) fn has_room_for_now(&self, len: usize) -> bool {
        let head = self.words.head().load(Ordering::Acquire);
        if self.geometry.packed {
            let released = self.words.released().load(Ordering::Acquire);
            let counted = check_count(self.sent, released, self.geometry.max_messages);
            let room = counted
                .as_ref()
                .is_ok_and(|&held| held < self.geometry.max_messages)
                && self.fits(head, len as u32);
            return room
                || counted.is_err()
                || check_distance(self.tail, head, self.geometry.capacity).is_err();
        }
        self.tail.wrapping_sub(head) != self.geometry.capacity
    }

    /// Packed: places the `k`-th record after `tail` for `len` bytes (k at
    /// most the records placed so far; placing record k again forgets
    /// those after it) and returns its start unit. The caller checked that
    /// it fits ([`free`](Self::free) or [`cached_room`](Self::cached_room)).
    #[inline(always)]
    fn place_record(&mut self, k: u32, len: u32) -> u32 {
        debug_assert!(k <= self.placed && k < PACKED_RUN);
        let at = match k.checked_sub(1) {
            None => self.tail,
            Some(prev) => {
                let prev = prev as usize;
                self.starts[prev].wrapping_add(record_units(self.lens[prev]))
            }
        };
        let start = self.place_at(at, record_units(len));
        self.starts[k as usize] = start;
        self.lens[k as usize] = len;
        self.placed = k.wrapping_add(1);
        start
    }

    /// Reserves the `k`-th free slot (packed: places its record) for an
    /// in-place write of up to `len` bytes; k follows the slots already
    /// reserved since the last publish.
    #[inline(always)]
    pub(crate) fn place(&mut self, k: u32, len: usize) {
        if self.geometry.packed {
            self.place_record(k, len as u32);
        }
    }

    /// Writes one message into the `k`-th free slot after `tail`. The caller
    /// has checked `k < free()` and `len <= slot_size`; nothing is visible to
    /// the consumer before [`publish`](Self::publish).
    #[inline(always)]
    pub(crate) fn write(&mut self, k: u32, msg: &[u8]) {
        debug_assert!(msg.len() <= self.geometry.slot_size as usize);
        if self.geometry.packed {
            let start = self.place_record(k, msg.len() as u32);
            // Placed inside the unit area, in units that are free.
            let written = self
                .slots
                .write_span(start & self.geometry.mask(), HDR, msg);
            assert!(written, "record outside the ring");
            return;
        }
        debug_assert!(k < self.cached_free());
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
        if self.geometry.packed {
            self.publish_packed(n);
        } else {
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
            // A slot a few ahead is free (the consumer released it): ask for
            // its lines now, so that a stream's copies do not wait for them.
            if self.cached_free() > PREFETCH_AHEAD {
                self.slots.prefetch_for_write(
                    self.tail.wrapping_add(PREFETCH_AHEAD) & self.geometry.mask(),
                );
            }
        }
        if !self.peer_polls {
            // F0: pairs with F1 in Doorbell::sleep.
            fence(Ordering::SeqCst);
            if self.words.not_empty.notify() && self.hand_over {
                hand_over_cpu();
            }
        }
    }

    /// Packed: publishes the `n` placed records (hw/SPEC.md, "Packed
    /// rings"). The header after the last one is zeroed first (P0), then
    /// the headers (and padding records) are stored from the last to the
    /// first, the first with release (R0'): a consumer that sees the first
    /// sees the whole batch, and the unit after it reads zero until the next
    /// batch, never stale bytes of an older lap.
    #[inline(always)]
    fn publish_packed(&mut self, n: u32) {
        debug_assert!(n > 0 && n <= self.placed);
        let mask = self.geometry.mask();
        let last = n.wrapping_sub(1) as usize;
        let end = self.starts[last].wrapping_add(record_units(self.lens[last]));
        self.words.fence_stores();
        // P0: the header at `end` (a free unit: one always is) must read
        // zero before the batch is visible. Usually an earlier publish
        // zeroed it ahead (below); else it is zeroed now.
        if self.zeroed_to.wrapping_sub(self.tail) <= end.wrapping_sub(self.tail) {
            self.slots.header(end & mask).store(0, Ordering::Relaxed);
            self.words.fence_stores();
            self.zeroed_to = end.wrapping_add(1);
        }
        let mut k = n as usize;
        while k > 0 {
            k = k.wrapping_sub(1);
            let start = self.starts[k];
            let prev_end = match k.checked_sub(1) {
                None => self.tail,
                Some(p) => self.starts[p].wrapping_add(record_units(self.lens[p])),
            };
            let padded = start != prev_end;
            let order = if k == 0 && !padded {
                Ordering::Release
            } else {
                Ordering::Relaxed
            };
            self.slots
                .header(start & mask)
                .store(header_word(self.lens[k], record_tag(start)), order);
            self.words.fence_stores();
            if padded {
                let order = if k == 0 {
                    Ordering::Release
                } else {
                    Ordering::Relaxed
                };
                self.slots
                    .header(prev_end & mask)
                    .store(header_word(HWL_RECORD_PAD, record_tag(prev_end)), order);
                self.words.fence_stores();
            }
        }
        self.tail = end;
        self.placed = 0;
        self.sent = self.sent.wrapping_add(n);
        self.words.published().store(self.sent, Ordering::Relaxed);
        // R0: for waiters' and auditors' counts; the consumer reads records
        // by their headers.
        self.words.tail().store(end, Ordering::Release);
        self.words.fence_stores();
        self.zero_ahead(end);
    }

    /// Packed, P0 ahead: zeroes the headers of the free units after `end`
    /// up to ZERO_AHEAD units, once fewer than half that many are zeroed,
    /// after the batch is visible: the next publishes then find their
    /// zeroed header in place, and the store that takes a new cache line
    /// from the consumer is not on a message's path. (Payload written
    /// later over a zeroed header is that record's; the header after a
    /// record is never written by it.)
    #[inline(always)]
    fn zero_ahead(&mut self, end: u32) {
        let ahead = self.zeroed_to.wrapping_sub(end);
        if ahead >= ZERO_AHEAD / 2 {
            return;
        }
        let mask = self.geometry.mask();
        // Units in [end, head_cache + capacity) are free.
        let room = self
            .head_cache
            .wrapping_add(self.geometry.capacity)
            .wrapping_sub(end);
        let upto = ZERO_AHEAD.min(room);
        let mut at = ahead;
        while at < upto {
            let q = end.wrapping_add(at);
            self.slots.header(q & mask).store(0, Ordering::Relaxed);
            at = at.wrapping_add(1);
        }
        if upto > ahead {
            self.zeroed_to = end.wrapping_add(upto);
            self.words.fence_stores();
        }
    }

    /// The first `len` (<= slot_size) payload bytes of the `k`-th free
    /// slot, for in-place writes: free and ours until published, so the
    /// borrow of `self` keeps the view exclusive in this process. Packed:
    /// record `k` must have been placed ([`place`](Self::place)) for at
    /// least `len` bytes.
    #[cfg(not(loom))]
    #[inline(always)]
    pub(crate) fn payload_mut(&self, k: u32, len: usize) -> ShmSliceMut<'_>
    where
        M: AsRawSlots,
    {
        if self.geometry.packed {
            debug_assert!(k < self.placed && len <= self.lens[k as usize] as usize);
            let start = self.starts[k as usize];
            return self
                .slots
                .raw()
                .record_mut(start & self.geometry.mask(), len);
        }
        let index = self.tail.wrapping_add(k) & self.geometry.mask();
        self.slots.raw().payload_mut(index, len)
    }

    /// Sets the length of the `k`-th free slot after an in-place write
    /// (packed: at most the length it was placed for).
    #[inline(always)]
    pub(crate) fn set_len(&mut self, k: u32, len: u32) {
        debug_assert!(len <= self.geometry.slot_size);
        if self.geometry.packed {
            debug_assert!(k < self.placed && len <= self.lens[k as usize]);
            let placed = self.lens[k as usize];
            self.lens[k as usize] = len.min(placed);
            return;
        }
        debug_assert!(k < self.cached_free());
        self.lens[k as usize] = len;
    }
}

/// The receiving side's half of the algorithm.
#[derive(Debug)]
pub(crate) struct Consumer<M: SlotMem> {
    pub(crate) words: RingWords,
    slots: M,
    geometry: Geometry,
    /// Next slot (unit, packed) to read; the authoritative copy (shared
    /// `head` mirrors it; packed: once per run of records).
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
    /// Packed: the records found published and not yet released, as (start
    /// unit, len) copied from their headers, from `found_at`.
    found: Box<[(u32, u32)]>,
    found_at: u32,
    found_n: u32,
    /// Packed: where the next walk of the headers starts (the end of the
    /// last record found).
    walk_from: u32,
    /// Packed: messages released (authoritative; shared `released`
    /// mirrors it).
    released: u32,
}

impl<M: SlotMem> Consumer<M> {
    /// Takes over the consumer side, reading both indices once.
    pub(crate) fn new(words: RingWords, slots: M, geometry: Geometry) -> Result<Self, Corruption> {
        let head = words.head().load(Ordering::Relaxed);
        let tail = words.tail().load(Ordering::Acquire);
        let ready = consumer_distance(tail, head, geometry.capacity)?;
        let found = if geometry.packed { PACKED_RUN } else { 0 };
        let released = words.released().load(Ordering::Relaxed);
        Ok(Consumer {
            words,
            slots,
            geometry,
            head,
            tail_cache: if geometry.packed {
                head
            } else {
                head.wrapping_add(ready)
            },
            peer_polls: false,
            hand_over: false,
            streak: 0,
            found: vec![(0, 0); found as usize].into_boxed_slice(),
            found_at: 0,
            found_n: 0,
            walk_from: head,
            released,
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
        if self.geometry.packed {
            return self.found_n;
        }
        self.tail_cache.wrapping_sub(self.head)
    }

    /// Messages ready, cheaply: the cached count if non-zero, else one if the
    /// slot at `head` is published (A0'). It never touches `tail`, whose
    /// cache line thus stays with the producer; [`refresh_available`]
    /// (Self::refresh_available) counts a whole batch. Packed: the records
    /// found by one walk of the headers from `head` (up to PACKED_RUN).
    #[inline]
    pub(crate) fn available(&mut self) -> u32 {
        if self.geometry.packed {
            if self.found_n == 0 {
                self.walk(true);
            }
            return self.found_n;
        }
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

    /// Packed: reads the headers from `walk_from` on (A0') and appends each
    /// published record to `found`, stepping over padding records. A header
    /// that is published but out of range (length beyond the slot, record
    /// past the end of the units, padding at the start of a lap) is found
    /// too, and stops the walk: [`read`](Self::read) reports it.
    fn walk(&mut self, this_line: bool) {
        let capacity = self.geometry.capacity;
        let mask = self.geometry.mask();
        if self.found_n == 0 {
            self.found_at = 0;
        } else if self.found_at > 0 {
            // Make room at the end: move the records found to the front.
            let (at, n) = (self.found_at as usize, self.found_n as usize);
            self.found.copy_within(at..at.wrapping_add(n), 0);
            self.found_at = 0;
        }
        let mut pos = self.walk_from;
        let before = self.found_n;
        loop {
            let slot = self.found_at.wrapping_add(self.found_n);
            if slot >= PACKED_RUN {
                break;
            }
            let index = pos & mask;
            // On the fast path, once something is found, not into the next
            // cache line: the producer may be writing it, and a message
            // should not wait for that line (the next walk reads it).
            if this_line && self.found_n != before && index & LINE_UNITS_MASK == 0 {
                break;
            }
            let header = self.slots.header(index).load(Ordering::Acquire);
            let (len, seq) = (header as u32, (header >> 32) as u32);
            if seq != record_tag(pos) {
                break;
            }
            if len == HWL_RECORD_PAD && index != 0 {
                // Fills the rest of the lap; the record after it starts the
                // next one. (Its header was stored before the padding's.)
                pos = pos.wrapping_add(capacity.wrapping_sub(index));
                continue;
            }
            self.found[slot as usize] = (pos, len);
            self.found_n = self.found_n.wrapping_add(1);
            if self.record_error(index, len).is_some() {
                break;
            }
            pos = pos.wrapping_add(record_units(len));
        }
        self.walk_from = pos;
    }

    /// Packed: what is wrong with a record of `len` at unit `index`, if
    /// anything.
    #[inline(always)]
    fn record_error(&self, index: u32, len: u32) -> Option<Corruption> {
        if len > self.geometry.slot_size {
            return Some(Corruption::new(
                "message length",
                len.into(),
                self.geometry.slot_size.into(),
            ));
        }
        let end = u64::from(index).saturating_add(u64::from(record_units(len)));
        if end > u64::from(self.geometry.capacity) {
            return Some(Corruption::new(
                "record end (units)",
                end,
                self.geometry.capacity.into(),
            ));
        }
        None
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

    /// Packed: where the next walk starts (tests).
    #[cfg(test)]
    pub(crate) fn walk_position(&self) -> u32 {
        self.walk_from
    }

    /// Packed: whether the walk would find a record now, without changing
    /// anything.
    fn peek_record(&self) -> bool {
        let mask = self.geometry.mask();
        let pos = self.walk_from;
        let header = self.slots.header(pos & mask).load(Ordering::Acquire);
        if (header >> 32) as u32 != record_tag(pos) {
            return false;
        }
        let index = pos & mask;
        if header as u32 != HWL_RECORD_PAD || index == 0 {
            return true;
        }
        let next = pos.wrapping_add(self.geometry.capacity.wrapping_sub(index));
        let header = self.slots.header(next & mask).load(Ordering::Acquire);
        (header >> 32) as u32 == record_tag(next)
    }

    /// Reloads `tail` (A0, pairs with the producer's R0).
    /// Never lowers the count: messages already found through their
    /// headers stay found even when `tail` lags behind them.
    pub(crate) fn refresh_available(&mut self) -> Result<u32, Corruption> {
        let tail = self.words.tail().load(Ordering::Acquire);
        if self.geometry.packed {
            consumer_distance(tail, self.head, self.geometry.capacity)?;
            self.walk(false);
            return Ok(self.found_n);
        }
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
        if self.geometry.packed {
            return self.found_n > 0 || self.peek_record();
        }
        self.probe()
    }

    /// Reads the header of the `k`-th ready message once (A0'): its slot
    /// index and `len`, if its `seq` names this position (packed: the
    /// record found by the walk, checked).
    #[inline(always)]
    fn ready_header(&self, k: u32) -> Result<(u32, u32), Corruption> {
        debug_assert!(k < self.cached_available());
        if self.geometry.packed {
            let (start, len) = self.found[self.found_at.wrapping_add(k) as usize];
            let index = start & self.geometry.mask();
            if let Some(c) = self.record_error(index, len) {
                return Err(c);
            }
            return Ok((index, len));
        }
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
        if self.geometry.packed {
            // ready_header checked the record lies inside the units.
            return self
                .slots
                .with_span(index, HDR, len as usize, f)
                .ok_or_else(|| Corruption::new("record end (bytes)", len.into(), 0));
        }
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
        if self.geometry.packed {
            return Ok(self.slots.raw().record(index, len));
        }
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
        if self.geometry.packed {
            let (start, _) = self.found[self.found_at.wrapping_add(k) as usize];
            return self.slots.raw().record(start & self.geometry.mask(), len);
        }
        let index = self.head.wrapping_add(k) & self.geometry.mask();
        self.slots.raw().payload(index, len)
    }

    /// Hands the next `n` read slots back to the producer (R1) and wakes it
    /// if it may be waiting for space (F2).
    #[inline(always)]
    pub(crate) fn release(&mut self, n: u32) {
        debug_assert!(n <= self.cached_available());
        if self.geometry.packed {
            if n == 0 {
                return;
            }
            let last = self.found_at.wrapping_add(n).wrapping_sub(1) as usize;
            let (start, len) = self.found[last];
            self.head = start.wrapping_add(record_units(len));
            self.found_at = self.found_at.wrapping_add(n);
            self.found_n = self.found_n.saturating_sub(n);
            self.released = self.released.wrapping_add(n);
            self.words
                .released()
                .store(self.released, Ordering::Release);
            // R1, as below. (Stored on every release, so that a message read
            // always frees its units at once, as a slot does.)
            self.words.head().store(self.head, Ordering::Release);
            self.words.fence_stores();
        } else {
            self.head = self.head.wrapping_add(n);
            // R1: pairs with the producer's A1; the slots may be reused after it.
            self.words.head().store(self.head, Ordering::Release);
            self.words.fence_stores();
            // A slot a few ahead is known published (below the cached tail):
            // ask for its lines now, so that reading it does not wait for them.
            if self.cached_available() > PREFETCH_AHEAD {
                self.slots.prefetch_for_read(
                    self.head.wrapping_add(PREFETCH_AHEAD) & self.geometry.mask(),
                );
            }
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

//! The topic object (`struct hwl_topic`, its subscriber entries and its
//! slots): initialising one, validating one an opener found, and the raw
//! view the topic ring and the handles work on.
#![warn(clippy::arithmetic_side_effects)]

use crate::doorbell::Doorbell;
use crate::error::{Corruption, OpenError};
use crate::region::{ObjectInfo, ObjectInit, RegionMap};
use crate::shm::{ShmSlice, ShmSliceMut, ShmView};
use crate::sync::{AtomicU32, AtomicU64};
use crate::topic_ring::{TopicGeometry, TopicMem, BITMAP_WORDS};
use core::mem::offset_of;
use hwlink_hw::{
    hwl_doorbell, hwl_topic, hwl_topic_slot, hwl_topic_sub, HWL_OBJ_TOPIC, HWL_TOPIC_BLOCK,
    HWL_TOPIC_OVERWRITE, TOPIC_CONTROL_BYTES, TOPIC_SUB_BYTES,
};
use std::sync::Arc;

/// A topic's configuration as its creator writes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TopicConfig {
    pub id: u64,
    pub geometry: TopicGeometry,
}

/// Bytes of a topic object of this shape.
pub(crate) fn topic_bytes(g: &TopicGeometry) -> Option<u64> {
    hwlink_hw::topic_layout(g.capacity, g.slot_size, g.max_subs).map(|(_, _, total)| total)
}

/// Writes a topic's configuration into a zero-filled object being created;
/// its creator counts as its first user.
pub(crate) fn init_topic(obj: ObjectInit, config: TopicConfig) {
    let g = config.geometry;
    let (subs, slots, total) = hwlink_hw::topic_layout(g.capacity, g.slot_size, g.max_subs)
        .expect("validated topic geometry");
    assert!(obj.size >= total, "topic object too small");
    let v = &obj.view;
    let stride = hwlink_hw::topic_slot_stride(g.slot_size).expect("validated slot size");
    let mode = if g.overwrite {
        HWL_TOPIC_OVERWRITE
    } else {
        HWL_TOPIC_BLOCK
    };
    let ok = v.write(offset_of!(hwl_topic, id), config.id)
        && v.write(offset_of!(hwl_topic, capacity), g.capacity)
        && v.write(offset_of!(hwl_topic, slot_size), g.slot_size)
        && v.write(offset_of!(hwl_topic, slot_stride), stride)
        && v.write(offset_of!(hwl_topic, max_subscribers), g.max_subs)
        && v.write(offset_of!(hwl_topic, history), g.history)
        && v.write(offset_of!(hwl_topic, backpressure), mode)
        && v.write(offset_of!(hwl_topic, subs_offset), subs)
        && v.write(offset_of!(hwl_topic, slots_offset), slots)
        && v.write(offset_of!(hwl_topic, users), 1u32);
    assert!(ok, "topic object too small");
}

/// A topic object in a view of memory (a mapped region's object, or the
/// heap in tests): every word and slot by checked offset.
#[derive(Debug, Clone)]
pub(crate) struct RawTopic {
    view: ShmView,
    subs: usize,
    slots: usize,
    stride: usize,
    payload: usize,
}

impl RawTopic {
    /// The topic of geometry `g` laid out the standard way at the start of
    /// `view`, which must hold all of it (panics otherwise).
    pub(crate) fn new(view: ShmView, g: &TopicGeometry) -> RawTopic {
        let (subs, slots, total) = hwlink_hw::topic_layout(g.capacity, g.slot_size, g.max_subs)
            .expect("validated topic geometry");
        assert!(
            total <= view.len() as u64,
            "topic object smaller than its geometry"
        );
        let stride = hwlink_hw::topic_slot_stride(g.slot_size).expect("validated slot size");
        RawTopic {
            view,
            subs: subs as usize,
            slots: slots as usize,
            stride: stride as usize,
            payload: g.slot_size as usize,
        }
    }

    #[inline(always)]
    fn entry(&self, e: u32) -> usize {
        // No overflow: e < max_subs <= 256 (validated), entries lie inside.
        (e as usize)
            .wrapping_mul(TOPIC_SUB_BYTES as usize)
            .wrapping_add(self.subs)
    }

    #[inline(always)]
    fn slot(&self, index: u32) -> usize {
        // No overflow: index < capacity, the slots lie inside the view.
        (index as usize)
            .wrapping_mul(self.stride)
            .wrapping_add(self.slots)
    }

    #[inline(always)]
    fn payload_at(&self, index: u32) -> usize {
        self.slot(index)
            .wrapping_add(hwlink_hw::HWL_TOPIC_SLOT_HDR_SIZE as usize)
    }

    /// The first `len` (<= slot_size) payload bytes of slot `index`, for
    /// reading.
    pub(crate) fn payload(&self, index: u32, len: usize) -> ShmSlice<'_> {
        assert!(len <= self.payload, "topic payload past the slot");
        self.view
            .slice(self.payload_at(index), len)
            .expect("topic slot inside its object")
    }

    /// The first `len` payload bytes of slot `index`, for writing.
    pub(crate) fn payload_mut(&self, index: u32, len: usize) -> ShmSliceMut<'_> {
        assert!(len <= self.payload, "topic payload past the slot");
        self.view
            .slice_mut(self.payload_at(index), len)
            .expect("topic slot inside its object")
    }

    /// Entry `e`'s doorbell (the subscriber parks on it).
    pub(crate) fn bell(&self, e: u32) -> Doorbell {
        let at = self.entry(e).wrapping_add(offset_of!(hwl_topic_sub, bell));
        Doorbell::at(
            &self.view,
            at.wrapping_add(offset_of!(hwl_doorbell, count)),
            at.wrapping_add(offset_of!(hwl_doorbell, waiters)),
        )
    }

    /// The `not_full` doorbell (a Block publisher parks on it).
    pub(crate) fn not_full(&self) -> Doorbell {
        let at = offset_of!(hwl_topic, not_full);
        Doorbell::at(
            &self.view,
            at.wrapping_add(offset_of!(hwl_doorbell, count)),
            at.wrapping_add(offset_of!(hwl_doorbell, waiters)),
        )
    }

    fn u32_word(&self, at: usize) -> &AtomicU32 {
        self.view.u32_at(at)
    }

    pub(crate) fn publisher(&self) -> &AtomicU32 {
        self.u32_word(offset_of!(hwl_topic, publisher))
    }
    pub(crate) fn publisher_pid(&self) -> &AtomicU32 {
        self.u32_word(offset_of!(hwl_topic, publisher_pid))
    }
    pub(crate) fn publisher_wait(&self) -> &AtomicU32 {
        self.u32_word(offset_of!(hwl_topic, publisher_wait))
    }
    pub(crate) fn publisher_cpus(&self) -> &AtomicU64 {
        self.view.u64_at(offset_of!(hwl_topic, publisher_cpus))
    }
    pub(crate) fn users(&self) -> &AtomicU32 {
        self.u32_word(offset_of!(hwl_topic, users))
    }
    pub(crate) fn sleepy(&self) -> &AtomicU32 {
        self.u32_word(offset_of!(hwl_topic, sleepy))
    }
    pub(crate) fn removed(&self) -> &AtomicU32 {
        self.u32_word(offset_of!(hwl_topic, removed))
    }
    /// Word `w` of the `sleeping` bitmap.
    pub(crate) fn sleeping(&self, w: u32) -> &AtomicU64 {
        assert!(w < BITMAP_WORDS);
        self.view
            .u64_at(offset_of!(hwl_topic, sleeping).wrapping_add((w as usize).wrapping_mul(8)))
    }
    pub(crate) fn entry_pid(&self, e: u32) -> &AtomicU32 {
        self.u32_word(self.entry(e).wrapping_add(offset_of!(hwl_topic_sub, pid)))
    }
    pub(crate) fn entry_lagged(&self, e: u32) -> &AtomicU64 {
        self.view.u64_at(
            self.entry(e)
                .wrapping_add(offset_of!(hwl_topic_sub, lagged)),
        )
    }
}

impl TopicMem for RawTopic {
    #[inline(always)]
    fn tail(&self) -> &AtomicU64 {
        self.view.u64_at(offset_of!(hwl_topic, tail))
    }
    #[inline(always)]
    fn reclaim(&self) -> &AtomicU64 {
        self.view.u64_at(offset_of!(hwl_topic, reclaim))
    }
    #[inline(always)]
    fn attached(&self, w: u32) -> &AtomicU64 {
        assert!(w < BITMAP_WORDS);
        self.view
            .u64_at(offset_of!(hwl_topic, attached).wrapping_add((w as usize).wrapping_mul(8)))
    }
    #[inline(always)]
    fn cursor(&self, e: u32) -> &AtomicU64 {
        self.view.u64_at(
            self.entry(e)
                .wrapping_add(offset_of!(hwl_topic_sub, cursor)),
        )
    }
    #[inline(always)]
    fn token(&self, e: u32) -> &AtomicU32 {
        self.u32_word(self.entry(e).wrapping_add(offset_of!(hwl_topic_sub, token)))
    }
    #[inline(always)]
    fn seq(&self, index: u32) -> &AtomicU64 {
        self.view.u64_at(
            self.slot(index)
                .wrapping_add(offset_of!(hwl_topic_slot, seq)),
        )
    }
    #[inline(always)]
    fn len(&self, index: u32) -> &AtomicU32 {
        self.u32_word(
            self.slot(index)
                .wrapping_add(offset_of!(hwl_topic_slot, len)),
        )
    }
    #[inline(always)]
    fn write_payload(&self, index: u32, offset: usize, src: &[u8]) {
        let ok = self.payload_mut(index, self.payload).write_at(offset, src);
        assert!(ok, "topic payload write past the slot");
    }
    #[cfg(test)]
    fn read_payload(&self, index: u32, dst: &mut [u8]) {
        let ok = self.payload(index, self.payload).read_at(0, dst);
        assert!(ok, "topic payload read past the slot");
    }
}

/// A validated topic object in a mapped region.
#[derive(Debug, Clone)]
pub(crate) struct TopicParts {
    map: Arc<RegionMap>,
    raw: RawTopic,
    config: TopicConfig,
}

impl TopicParts {
    /// Validates the topic in object `obj` of `map` (an entry of its
    /// validated table), copying its configuration out once.
    pub(crate) fn locate_object(
        map: Arc<RegionMap>,
        obj: &ObjectInfo,
    ) -> Result<TopicParts, OpenError> {
        let name = map.name().to_string();
        let corrupt = |source| OpenError::Corrupt {
            name: name.clone(),
            source,
        };
        if obj.kind != HWL_OBJ_TOPIC {
            return Err(OpenError::NotATopic { name });
        }
        if obj.size < TOPIC_CONTROL_BYTES {
            return Err(corrupt(Corruption::new(
                "topic object size",
                obj.size,
                TOPIC_CONTROL_BYTES,
            )));
        }
        let view = map.object_view(obj);
        // TOPIC_CONTROL_BYTES in-bounds bytes (checked above); one copy.
        let c: hwl_topic = view.read(0).expect("control block in its object");
        if c.backpressure > HWL_TOPIC_OVERWRITE {
            return Err(corrupt(Corruption::new(
                "topic backpressure",
                c.backpressure.into(),
                HWL_TOPIC_OVERWRITE.into(),
            )));
        }
        let g = TopicGeometry::validate(
            c.capacity,
            c.slot_size,
            c.max_subscribers,
            c.history,
            c.backpressure == HWL_TOPIC_OVERWRITE,
        )
        .map_err(corrupt)?;
        let (subs, slots, total) = hwlink_hw::topic_layout(g.capacity, g.slot_size, g.max_subs)
            .ok_or_else(|| corrupt(Corruption::new("topic size", u64::MAX, obj.size)))?;
        let stride = hwlink_hw::topic_slot_stride(g.slot_size).unwrap_or(u32::MAX);
        if c.slot_stride != stride {
            return Err(corrupt(Corruption::new(
                "topic slot stride",
                c.slot_stride.into(),
                stride.into(),
            )));
        }
        if c.subs_offset != subs || c.slots_offset != slots {
            return Err(corrupt(Corruption::new(
                "topic table offsets",
                c.subs_offset.max(c.slots_offset),
                slots,
            )));
        }
        if total > obj.size {
            return Err(corrupt(Corruption::new("topic size", total, obj.size)));
        }
        let raw = RawTopic::new(view, &g);
        Ok(TopicParts {
            map,
            raw,
            config: TopicConfig {
                id: c.id,
                geometry: g,
            },
        })
    }

    pub(crate) fn raw(&self) -> &RawTopic {
        &self.raw
    }
    pub(crate) fn config(&self) -> &TopicConfig {
        &self.config
    }
    pub(crate) fn map(&self) -> &Arc<RegionMap> {
        &self.map
    }
}

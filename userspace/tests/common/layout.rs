//! The layout of a link region (header, ring, slots) and reading its ring.

use super::raw::RawRegion;

/// Offset of the ring object in a link region.
pub const RING: usize = hwlink_hw::HWL_REGION_HDR_SIZE as usize;
/// Offset of the first slot from the ring object.
pub const SLOTS: usize = hwlink_hw::RING_CONTROL_BYTES as usize;

/// Offsets of `struct hwl_region` fields.
pub mod hdr {
    use core::mem::offset_of;
    use hwlink_hw::hwl_region;
    pub const MAGIC: usize = offset_of!(hwl_region, magic);
    pub const ABI_VERSION: usize = offset_of!(hwl_region, abi_version);
    pub const FEATURES: usize = offset_of!(hwl_region, features);
    pub const TOTAL_SIZE: usize = offset_of!(hwl_region, total_size);
    pub const OBJECT_COUNT: usize = offset_of!(hwl_region, object_count);
    pub const OBJECTS: usize = offset_of!(hwl_region, objects);
}

/// Offsets of `struct hwl_spsc_ring` fields, from the ring object.
pub mod ring {
    use core::mem::offset_of;
    use hwlink_hw::hwl_spsc_ring;
    pub const TAIL: usize = offset_of!(hwl_spsc_ring, tail);
    pub const HEAD: usize = offset_of!(hwl_spsc_ring, head);
    pub const CAPACITY: usize = offset_of!(hwl_spsc_ring, capacity);
    pub const SLOT_SIZE: usize = offset_of!(hwl_spsc_ring, slot_size);
    pub const SLOT_STRIDE: usize = offset_of!(hwl_spsc_ring, slot_stride);
}

/// Offsets of `struct hwl_slot` fields.
pub mod slot {
    use core::mem::offset_of;
    use hwlink_hw::hwl_slot;
    pub const SEQ: usize = offset_of!(hwl_slot, seq);
}

impl RawRegion {
    /// A ring field (offset from the ring object).
    pub fn ring32(&self, field: usize) -> u32 {
        self.get32(RING + field)
    }

    /// Offset from the region start of the slot that position `pos` uses.
    pub fn slot_offset(&self, pos: u32) -> usize {
        let cap = self.ring32(ring::CAPACITY);
        let stride = self.ring32(ring::SLOT_STRIDE);
        RING + SLOTS + (pos & (cap - 1)) as usize * stride as usize
    }
}

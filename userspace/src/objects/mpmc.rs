//! The MPMC ring object (`struct hwl_mpmc_ring` and its slots): one
//! mailbox queue or one segment of an unbounded one.
#![warn(clippy::arithmetic_side_effects)]

use crate::error::{Corruption, OpenError};
use crate::mpmc::{MpmcGeometry, MpmcRing, RawMpmc};
use crate::region::{ObjectInfo, ObjectInit, RegionMap};
use crate::shm::ShmView;
use crate::sync::AtomicU64;
use core::mem::offset_of;
use hwlink_hw::{hwl_mpmc_ring, HWL_MPMC_SOLO, HWL_OBJ_MPMC_RING};
use std::sync::Arc;

/// Bytes of the MPMC ring control block.
const MPMC_CTL: u64 = hwlink_hw::MPMC_CONTROL_BYTES;

/// Writes the configuration and initial turns of an MPMC ring into a
/// zero-filled object being created.
pub(crate) fn init_mpmc_ring(obj: ObjectInit, geometry: MpmcGeometry, segment: u64) {
    let need = crate::mpmc::ring_bytes(geometry.capacity, geometry.slot_size).unwrap_or(u64::MAX);
    assert!(obj.size >= need, "mpmc ring object too small");
    let c = &obj.view;
    // `obj` is exclusively owned, zero-filled, page aligned and at least
    // `need` bytes (checked above).
    let ok = c.write(offset_of!(hwl_mpmc_ring, capacity), geometry.capacity)
        && c.write(offset_of!(hwl_mpmc_ring, slot_size), geometry.slot_size)
        && c.write(offset_of!(hwl_mpmc_ring, slot_stride), geometry.stride)
        && c.write(offset_of!(hwl_mpmc_ring, slots_offset), MPMC_CTL)
        && c.write(
            offset_of!(hwl_mpmc_ring, flags),
            if geometry.solo { HWL_MPMC_SOLO } else { 0 },
        )
        && c.write(offset_of!(hwl_mpmc_ring, segment), segment);
    assert!(ok, "mpmc ring object too small");
    // The slots stay as they are: zero-filled slots hold a new ring's
    // turns (SPEC §9), so their pages are not touched here.
}

/// A validated MPMC ring object in a mapped region.
#[derive(Debug)]
pub(crate) struct MpmcParts {
    map: Arc<RegionMap>,
    /// The ring object.
    view: ShmView,
    ring: MpmcRing<RawMpmc>,
    segment: u64,
}

impl MpmcParts {
    /// Validates the MPMC ring in object `obj` of `map` (an entry of its
    /// validated table), copying its configuration out once.
    pub(crate) fn locate_object(
        map: Arc<RegionMap>,
        obj: &ObjectInfo,
    ) -> Result<MpmcParts, OpenError> {
        let name = map.name().to_string();
        let corrupt = |source| OpenError::Corrupt {
            name: name.clone(),
            source,
        };
        if obj.kind != HWL_OBJ_MPMC_RING {
            return Err(corrupt(Corruption::new(
                "object kind (MPMC ring)",
                obj.kind.into(),
                HWL_OBJ_MPMC_RING.into(),
            )));
        }
        if obj.size < MPMC_CTL {
            return Err(corrupt(Corruption::new(
                "mpmc ring object size",
                obj.size,
                MPMC_CTL,
            )));
        }
        let view = map.object_view(obj);
        // MPMC_CTL in-bounds bytes (checked above); one volatile copy.
        let copy: hwl_mpmc_ring = view.read(0).expect("control block in its object");
        let geometry = MpmcGeometry::validate(
            copy.capacity,
            copy.slot_size,
            copy.slot_stride,
            copy.slots_offset,
            obj.size,
        )
        .map_err(corrupt)?;
        if copy.flags & !HWL_MPMC_SOLO != 0 {
            return Err(OpenError::UnsupportedFeatures {
                name,
                unknown: copy.flags & !HWL_MPMC_SOLO,
            });
        }
        let geometry = MpmcGeometry {
            solo: copy.flags & HWL_MPMC_SOLO != 0,
            ..geometry
        };
        // Geometry validation proved the object holds the control block and
        // every slot; the view keeps it mapped.
        let ring = MpmcRing::new(RawMpmc::new(view.clone(), &geometry), geometry);
        Ok(MpmcParts {
            map,
            view,
            ring,
            segment: copy.segment,
        })
    }

    pub(crate) fn ring(&self) -> &MpmcRing<RawMpmc> {
        &self.ring
    }

    /// The segment number written by the creator (untrusted: checked by
    /// the chain against the number it opened).
    pub(crate) fn segment(&self) -> u64 {
        self.segment
    }

    /// `next_segment`: set once, by CAS, by the producer that chains.
    pub(crate) fn next_segment(&self) -> &AtomicU64 {
        self.view.u64_at(offset_of!(hwl_mpmc_ring, next_segment))
    }

    pub(crate) fn map(&self) -> &Arc<RegionMap> {
        &self.map
    }
}

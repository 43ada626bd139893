//! Segments of an unbounded queue as region files: segment 0 is the ring
//! inside the queue's own region (a mailbox, or one direction of a domain
//! link), segment k > 0 the region `<region>.<tag><k>` holding one MPMC ring
//! (tag `s` for mailboxes and a link's first direction, `t` for its second).
//! The chain state (bytes in use, segment numbers) lives in the queue's
//! control block (`struct hwl_mailbox`).
#![warn(clippy::arithmetic_side_effects)]

use crate::chain::{Segment, SegmentStore, StoreError};
use crate::error::{Corruption, OpenError};
use crate::mpmc::{self, MpmcGeometry, MpmcRing, RawMpmc};
use crate::objects::{self, MailboxParts, MpmcParts};
use crate::region::{self, ObjectInit, ObjectSpec};
use crate::sync::AtomicU64;
use hwlink_drivers::{Backend, MapError};
use hwlink_hw::{HWL_FEAT_MPMC_RING, HWL_OBJ_MPMC_RING, HWL_REGION_MAGIC};
use std::sync::Arc;
use std::time::Duration;

impl Segment for MpmcParts {
    type Mem = RawMpmc;
    fn ring(&self) -> &MpmcRing<RawMpmc> {
        MpmcParts::ring(self)
    }
    fn next_segment(&self) -> &AtomicU64 {
        MpmcParts::next_segment(self)
    }
    fn number(&self) -> u64 {
        self.segment()
    }
    fn bytes(&self) -> u64 {
        self.map().len() as u64
    }
    fn populate(&self, k: u64) -> bool {
        let Some(at) = k
            .checked_mul(crate::chain::POPULATE_PART)
            .filter(|&at| at < self.bytes())
            .and_then(|at| usize::try_from(at).ok())
        else {
            return false;
        };
        self.map()
            .populate(at, crate::chain::POPULATE_PART as usize)
    }
}

/// The segments of one mailbox, as region files. Clones share the
/// mappings.
#[derive(Debug, Clone)]
pub(crate) struct RegionStore {
    ctl: MailboxParts,
    first: Arc<MpmcParts>,
    root_name: String,
    tag: char,
    backend: Backend,
}

impl RegionStore {
    pub(crate) fn new(
        ctl: MailboxParts,
        first: MpmcParts,
        tag: char,
        backend: Backend,
    ) -> RegionStore {
        RegionStore {
            root_name: ctl.map().name().to_string(),
            ctl,
            first: Arc::new(first),
            tag,
            backend,
        }
    }

    fn name(&self, id: u64) -> String {
        format!("{}.{}{id}", self.root_name, self.tag)
    }
}

fn open_error(e: OpenError) -> StoreError {
    match e {
        OpenError::Corrupt { source, .. } => StoreError::Corrupt(source),
        other => StoreError::Unavailable(other.to_string()),
    }
}

impl SegmentStore for RegionStore {
    type Seg = MpmcParts;

    fn bytes_in_use(&self) -> &AtomicU64 {
        self.ctl.bytes_in_use()
    }
    fn last_segment(&self) -> &AtomicU64 {
        self.ctl.last_segment()
    }
    fn head_segment(&self) -> &AtomicU64 {
        self.ctl.head_segment()
    }
    fn tail_segment(&self) -> &AtomicU64 {
        self.ctl.tail_segment()
    }
    fn spare_segment(&self) -> &AtomicU64 {
        self.ctl.spare_segment()
    }
    fn byte_limit(&self) -> u64 {
        self.ctl.config().byte_limit
    }

    fn estimate(&self, geometry: &MpmcGeometry) -> u64 {
        let page = (self.first.map().page_size() as u64).max(hwlink_hw::OBJ_ALIGN);
        let ring = mpmc::ring_bytes(geometry.capacity, geometry.slot_size).unwrap_or(u64::MAX);
        let region = hwlink_hw::single_object_region_bytes(ring).unwrap_or(u64::MAX);
        region.checked_next_multiple_of(page).unwrap_or(u64::MAX)
    }

    fn open(&self, id: u64) -> Result<Option<Arc<MpmcParts>>, StoreError> {
        if id == 0 {
            return Ok(Some(self.first.clone()));
        }
        let name = self.name(id);
        // A segment is linked (and its number read here) only after its
        // creator published it: not ready means its header was overwritten,
        // and waiting for it would only stall the caller.
        let (map, info) = match region::open_region(&name, self.backend, Duration::ZERO) {
            Ok(found) => found,
            Err(OpenError::Map(MapError::NotFound { .. })) => return Ok(None),
            Err(OpenError::NotReady { .. }) => {
                return Err(StoreError::Corrupt(Corruption::new(
                    "segment magic (a linked segment is always published)",
                    0,
                    HWL_REGION_MAGIC,
                )))
            }
            Err(e) => return Err(open_error(e)),
        };
        let obj = info
            .objects
            .first()
            .ok_or_else(|| StoreError::Corrupt(Corruption::new("segment object count", 0, 1)))?
            .clone();
        let parts = MpmcParts::locate_object(map, &obj).map_err(open_error)?;
        Ok(Some(Arc::new(parts)))
    }

    fn create(&self, id: u64, geometry: &MpmcGeometry) -> Result<Arc<MpmcParts>, String> {
        let geometry = *geometry;
        let init = move |obj: ObjectInit| objects::init_mpmc_ring(obj, geometry, id);
        let size = mpmc::ring_bytes(geometry.capacity, geometry.slot_size)
            .ok_or_else(|| "segment size overflows".to_string())?;
        // Segments get the mailbox's file mode and group: whoever may map
        // the mailbox may map its segments.
        // Allocated but not faulted in (a 64 MiB segment would take tens of
        // milliseconds, far more where memory is slow to come by): the
        // preparation faults it in after offering it, ahead of the sender.
        let map = region::create_region_with(
            &self.name(id),
            self.backend,
            &self.first.map().access(),
            HWL_FEAT_MPMC_RING,
            &[ObjectSpec {
                kind: HWL_OBJ_MPMC_RING,
                name: "segment",
                size,
                init: &init,
            }],
            true,
            true,
        )
        .map_err(|e| e.to_string())?;
        let info = region::validate(&map).map_err(|e| e.to_string())?;
        let obj = info.objects[0].clone();
        MpmcParts::locate_object(map, &obj)
            .map(Arc::new)
            .map_err(|e| e.to_string())
    }

    fn remove(&self, id: u64) {
        if id != 0 {
            let _ = hwlink_drivers::remove_region(&self.name(id));
        }
    }
}

/// If `name` looks like a segment (`<root>.<letter><digits>`), its root
/// region's name and its number. Callers confirm by reading the region (an
/// MPMC ring whose `segment` is that number): names alone may collide with
/// a user's link name.
pub(crate) fn segment_root(name: &str) -> Option<(String, u64)> {
    let (root, last) = name.rsplit_once('.')?;
    let mut chars = last.chars();
    let tag = chars.next()?;
    let digits = chars.as_str();
    if root.is_empty() || !tag.is_ascii_lowercase() || digits.is_empty() {
        return None;
    }
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    (n > 0).then(|| (root.to_string(), n))
}

/// Removes region `name` and every segment region of its queues.
pub(crate) fn remove_with_segments(name: &str) -> Result<(), MapError> {
    for r in hwlink_drivers::list_regions()? {
        if segment_root(&r.name).is_some_and(|(root, _)| root == name) {
            let _ = hwlink_drivers::remove_region(&r.name);
        }
    }
    hwlink_drivers::remove_region(name)
}

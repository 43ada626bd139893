//! The SPSC ring object (`struct hwl_spsc_ring`): its configuration, its
//! shared words and slots, and its two endpoints.
#![warn(clippy::arithmetic_side_effects)]

use crate::doorbell::Doorbell;
use crate::error::{Corruption, OpenError, Side};
use crate::region::{ObjectInfo, ObjectInit, RegionInfo, RegionMap};
use crate::shm::{ShmView, ShmWord};
use crate::spsc::{Geometry, RawSlots, RingWords};
use crate::sync::{AtomicU32, AtomicU64, Ordering};
use core::mem::offset_of;
use hwlink_hw::{hwl_doorbell, hwl_endpoint, hwl_spsc_ring, HWL_OBJ_SPSC_RING};
use std::sync::Arc;

/// Bytes of the ring control block: the standard `slots_offset`.
pub(crate) const RING_CTL: u64 = hwlink_hw::RING_CONTROL_BYTES;

/// Bytes an SPSC ring object of `geometry` needs.
pub(crate) fn spsc_ring_bytes(geometry: &Geometry) -> Result<u64, OpenError> {
    geometry
        .object_bytes()
        .filter(|&s| s <= usize::MAX as u64 / 2)
        .ok_or_else(|| OpenError::InvalidConfig("capacity * slot size overflows".into()))
}

/// Writes the configuration of an SPSC ring of `geometry` into `view`, the
/// start of a zero-filled object (or region place) nobody else uses yet.
/// False if the view is too small for the control block.
pub(crate) fn write_config(view: &ShmView, geometry: Geometry) -> bool {
    view.write(offset_of!(hwl_spsc_ring, capacity), geometry.capacity)
        && view.write(offset_of!(hwl_spsc_ring, slot_size), geometry.slot_size)
        && view.write(offset_of!(hwl_spsc_ring, slot_stride), geometry.stride)
        && view.write(offset_of!(hwl_spsc_ring, flags), geometry.flags())
        && view.write(
            offset_of!(hwl_spsc_ring, max_messages),
            geometry.max_messages,
        )
        && view.write(offset_of!(hwl_spsc_ring, slots_offset), RING_CTL)
}

/// Writes the configuration of an SPSC ring of `geometry` into a zero-filled
/// object being created.
pub(crate) fn init_spsc_ring(obj: ObjectInit, geometry: Geometry) {
    debug_assert!(obj.size >= geometry.object_bytes().unwrap_or(u64::MAX));
    // The caller sized the object with spsc_ring_bytes.
    assert!(
        write_config(&obj.view, geometry),
        "spsc ring object too small"
    );
}

/// The validated location and shape of one SPSC ring in a mapped region.
#[derive(Debug, Clone)]
pub(crate) struct RingParts {
    map: Arc<RegionMap>,
    /// The ring object (control block, then slots).
    view: ShmView,
    geometry: Geometry,
    object_name: String,
}

impl RingParts {
    /// Finds the first SPSC ring in `info` and validates its configuration,
    /// copying it out of shared memory once.
    pub(crate) fn locate(map: Arc<RegionMap>, info: &RegionInfo) -> Result<RingParts, OpenError> {
        let obj = info
            .objects
            .iter()
            .find(|o| o.kind == HWL_OBJ_SPSC_RING)
            .ok_or_else(|| OpenError::NoRing {
                name: map.name().to_string(),
            })?;
        RingParts::locate_object(map, obj)
    }

    /// Validates the SPSC ring in object `obj` (an entry of the validated
    /// table of `map`), copying its configuration out once.
    pub(crate) fn locate_object(
        map: Arc<RegionMap>,
        obj: &ObjectInfo,
    ) -> Result<RingParts, OpenError> {
        let name = map.name().to_string();
        if obj.kind != HWL_OBJ_SPSC_RING {
            return Err(OpenError::NoRing { name });
        }
        if obj.size < RING_CTL {
            return Err(OpenError::Corrupt {
                name,
                source: Corruption::new("ring object size", obj.size, RING_CTL),
            });
        }
        let view = map.object_view(obj);
        // One volatile copy is taken and only the copy's config fields are
        // used (RING_CTL in-bounds bytes: checked above).
        let copy: hwl_spsc_ring = view.read(0).expect("ring control block in its object");
        let unknown = copy.flags & !hwlink_hw::HWL_RING_PACKED;
        if unknown != 0 {
            return Err(OpenError::UnsupportedFeatures { name, unknown });
        }
        let packed = copy.flags & hwlink_hw::HWL_RING_PACKED != 0;
        if packed && copy.max_messages == 0 {
            return Err(OpenError::Corrupt {
                name,
                source: Corruption::new("packed ring max_messages", 0, 1),
            });
        }
        let geometry = Geometry::validate_layout(
            copy.capacity,
            copy.slot_size,
            copy.slot_stride,
            if packed { copy.max_messages } else { 0 },
            copy.slots_offset,
            obj.size,
        )
        .map_err(|source| OpenError::Corrupt {
            name: name.clone(),
            source,
        })?;
        Ok(RingParts {
            map,
            view,
            geometry,
            object_name: obj.name.clone(),
        })
    }

    pub(crate) fn geometry(&self) -> Geometry {
        self.geometry
    }

    /// The error for a corrupt value found in this ring.
    pub(crate) fn corrupt(&self, source: Corruption) -> OpenError {
        OpenError::Corrupt {
            name: self.map.name().to_string(),
            source,
        }
    }

    /// The ring object's name in the object table.
    pub(crate) fn object_name(&self) -> &str {
        &self.object_name
    }

    pub(crate) fn map(&self) -> &Arc<RegionMap> {
        &self.map
    }

    fn word(&self, offset: usize) -> ShmWord {
        ShmWord::at(&self.view, offset)
    }

    fn doorbell(&self, at: usize) -> Doorbell {
        Doorbell::at(
            &self.view,
            at.wrapping_add(offset_of!(hwl_doorbell, count)),
            at.wrapping_add(offset_of!(hwl_doorbell, waiters)),
        )
    }

    /// The ring's shared words, for one end (each keeps the mapping alive).
    pub(crate) fn words(&self) -> RingWords {
        let ep_mode = |ep: usize| ep.wrapping_add(offset_of!(hwl_endpoint, wait_mode));
        RingWords::new(
            [
                self.word(offset_of!(hwl_spsc_ring, tail)),
                self.word(offset_of!(hwl_spsc_ring, head)),
                self.word(offset_of!(hwl_spsc_ring, published)),
                self.word(offset_of!(hwl_spsc_ring, released)),
            ],
            self.word(ep_mode(offset_of!(hwl_spsc_ring, producer))),
            self.word(ep_mode(offset_of!(hwl_spsc_ring, consumer))),
            self.doorbell(offset_of!(hwl_spsc_ring, not_empty)),
            self.doorbell(offset_of!(hwl_spsc_ring, not_full)),
        )
        .with_store_fences(self.map.memory_kind().needs_store_fence())
    }

    /// The slot area.
    pub(crate) fn slots(&self) -> RawSlots {
        // Geometry::validate checked that the ring object holds RING_CTL +
        // capacity * stride bytes; RING_CTL is a multiple of 64.
        let len = self.view.len().saturating_sub(RING_CTL as usize);
        let slots = self.view.sub(RING_CTL as usize, len);
        RawSlots::new(slots.expect("slot area in its object"), &self.geometry)
    }

    /// One endpoint's words.
    pub(crate) fn endpoint(&self, side: Side) -> Endpoint {
        let at = match side {
            Side::Sender => offset_of!(hwl_spsc_ring, producer),
            Side::Receiver => offset_of!(hwl_spsc_ring, consumer),
        };
        let ep = self.view.sub(at, core::mem::size_of::<hwl_endpoint>());
        Endpoint {
            ep: ep.expect("endpoint in its control block"),
            _parts: self.clone(),
        }
    }
}

/// One endpoint's words in shared memory (`struct hwl_endpoint`).
#[derive(Debug)]
pub(crate) struct Endpoint {
    ep: ShmView,
    _parts: RingParts,
}

/// A snapshot of an endpoint, for diagnostics and liveness.
#[derive(Debug, Clone, Copy)]
pub(crate) struct EndpointSnapshot {
    pub state: u32,
    pub pid: u32,
    pub token: u32,
    pub cpu_mask: u64,
}

impl Endpoint {
    fn state(&self) -> &AtomicU32 {
        self.ep.u32_at(offset_of!(hwl_endpoint, state))
    }
    fn pid(&self) -> &AtomicU32 {
        self.ep.u32_at(offset_of!(hwl_endpoint, pid))
    }
    fn token(&self) -> &AtomicU32 {
        self.ep.u32_at(offset_of!(hwl_endpoint, token))
    }
    fn cpu_mask(&self) -> &AtomicU64 {
        self.ep.u64_at(offset_of!(hwl_endpoint, cpu_mask))
    }
    fn wait_mode(&self) -> &AtomicU32 {
        self.ep.u32_at(offset_of!(hwl_endpoint, wait_mode))
    }
    fn doorbell(&self) -> &AtomicU32 {
        self.ep.u32_at(offset_of!(hwl_endpoint, doorbell))
    }
    /// The endpoint's doorbell word (how to wake it), read once; untrusted.
    pub(crate) fn doorbell_now(&self) -> u32 {
        self.doorbell().load(Ordering::Acquire)
    }

    /// The state word alone (A-ep).
    #[inline]
    pub(crate) fn state_now(&self) -> u32 {
        self.state().load(Ordering::Acquire)
    }

    /// Reads the endpoint: state first (A-ep), then the rest.
    pub(crate) fn snapshot(&self) -> EndpointSnapshot {
        let state = self.state().load(Ordering::Acquire);
        EndpointSnapshot {
            state,
            pid: self.pid().load(Ordering::Relaxed),
            token: self.token().load(Ordering::Relaxed),
            cpu_mask: self.cpu_mask().load(Ordering::Relaxed),
        }
    }

    /// Claims this endpoint for the calling process.
    pub(crate) fn attach(
        &self,
        name: &str,
        side: Side,
        wait_mode: u32,
        doorbell: u32,
    ) -> Result<(), OpenError> {
        let (pid, token) = crate::liveness::me()?;
        // Claimed by token: unlike pids, tokens are unique whatever pid
        // namespace each process is in.
        let claimed = if self._parts.map.memory_kind().allows_atomic_rmw() {
            self.token()
                .compare_exchange(0, token, Ordering::AcqRel, Ordering::Acquire)
        } else {
            // Write-combining memory has no reliable CAS: two processes
            // attaching the same end at the same moment go undetected there.
            match self.token().load(Ordering::Acquire) {
                0 => {
                    self.token().store(token, Ordering::Release);
                    Ok(0)
                }
                holder => Err(holder),
            }
        };
        if let Err(holder) = claimed {
            let snap = self.snapshot();
            // A peer in another kernel cannot be asked: attached is busy.
            let busy = if self._parts.map.spans_kernels() {
                snap.state == hwlink_hw::HWL_EP_ATTACHED
            } else {
                snap.state != hwlink_hw::HWL_EP_CLOSED && crate::liveness::is_alive(holder)
            };
            let name = name.to_string();
            let pid = snap.pid;
            return Err(if busy {
                OpenError::EndpointBusy { name, side, pid }
            } else {
                OpenError::EndpointUsed { name, side, pid }
            });
        }
        self.pid().store(pid, Ordering::Relaxed);
        self.cpu_mask()
            .store(crate::liveness::cpu_mask(), Ordering::Relaxed);
        self.wait_mode().store(wait_mode, Ordering::Relaxed);
        self.doorbell().store(doorbell, Ordering::Relaxed);
        // R-ep: publish the attachment.
        self.state()
            .store(hwlink_hw::HWL_EP_ATTACHED, Ordering::Release);
        Ok(())
    }

    /// Marks this endpoint closed (R-ep).
    pub(crate) fn close(&self) {
        self.state()
            .store(hwlink_hw::HWL_EP_CLOSED, Ordering::Release);
    }
}

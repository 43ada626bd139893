//! Regions: create one with its header and object table, open one and
//! validate everything read from it, and locate the words of a ring inside.
//!
//! This is the only module that turns region offsets into pointers. Layout:
//! hw/include/hwlink_abi.h; validation rules: hw/SPEC.md.
#![warn(clippy::arithmetic_side_effects)]

use crate::doorbell::Doorbell;
use crate::error::{Corruption, OpenError, Side};
use crate::mpmc::{MpmcGeometry, MpmcRing, RawMpmc};
use crate::spsc::{Geometry, RawSlots, RingWords};
use crate::sync::{AtomicU32, AtomicU64, Ordering};
use hwlink_drivers::{Backend, BackingKind, DeviceMemory, MemoryKind, Region};
use hwlink_hw::{
    hwl_domain, hwl_endpoint, hwl_mailbox, hwl_member, hwl_mpmc_ring, hwl_object, hwl_region,
    hwl_spsc_ring, HWL_ABI_VERSION, HWL_ACCESS_RECV, HWL_ACCESS_SEND, HWL_BUF_UNBOUNDED,
    HWL_DOMAIN_MAX_MEMBERS, HWL_FEAT_DOMAIN, HWL_FEAT_FUTEX_DOORBELL, HWL_FEAT_MAILBOX,
    HWL_FEAT_MPMC_RING, HWL_FEAT_SPSC_RING, HWL_MAX_ATTACHMENTS, HWL_MAX_OBJECTS,
    HWL_MEMBER_NAME_LEN, HWL_NAME_LEN, HWL_OBJ_ALIGN, HWL_OBJ_DOMAIN, HWL_OBJ_MAILBOX,
    HWL_OBJ_MPMC_RING, HWL_OBJ_SPSC_RING, HWL_REGION_CLAIMED, HWL_REGION_F_DEVICE,
    HWL_REGION_F_HUGEPAGE, HWL_REGION_MAGIC,
};
use std::ptr::addr_of_mut;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Feature bits this build understands.
pub(crate) const KNOWN_FEATURES: u32 = HWL_FEAT_SPSC_RING
    | HWL_FEAT_FUTEX_DOORBELL
    | hwlink_hw::HWL_FEAT_RENDEZVOUS
    | HWL_FEAT_MPMC_RING
    | HWL_FEAT_MAILBOX
    | HWL_FEAT_DOMAIN;
const HDR: u64 = hwlink_hw::REGION_HDR_BYTES;
const RING_CTL: u64 = hwlink_hw::RING_CONTROL_BYTES;

/// A mapped region; shared by every handle that points into it.
#[derive(Debug)]
pub(crate) struct RegionMap {
    memory: Memory,
}

/// What a region lives in.
#[derive(Debug)]
enum Memory {
    /// A region file of its own (hugepages or /dev/shm).
    File(Region),
    /// `len` bytes at `offset` of device memory shared with another kernel
    /// (an ivshmem BAR, or the host file behind one).
    Device {
        device: Arc<DeviceMemory>,
        offset: usize,
        len: usize,
        name: String,
    },
}

impl RegionMap {
    pub(crate) fn from_region(region: Region) -> Self {
        RegionMap {
            memory: Memory::File(region),
        }
    }
    pub(crate) fn name(&self) -> &str {
        match &self.memory {
            Memory::File(r) => r.name(),
            Memory::Device { name, .. } => name,
        }
    }
    pub(crate) fn base(&self) -> *mut u8 {
        match &self.memory {
            Memory::File(r) => r.as_ptr(),
            // In bounds: walk_device and create_on_device checked
            // offset + len <= device.len().
            Memory::Device { device, offset, .. } => device.as_ptr().wrapping_add(*offset),
        }
    }
    pub(crate) fn len(&self) -> usize {
        match &self.memory {
            Memory::File(r) => r.len(),
            Memory::Device { len, .. } => *len,
        }
    }
    /// The memory the region lives in.
    pub(crate) fn kind(&self) -> BackingKind {
        match &self.memory {
            Memory::File(r) => r.kind(),
            Memory::Device { .. } => BackingKind::Device,
        }
    }
    pub(crate) fn page_size(&self) -> usize {
        match &self.memory {
            Memory::File(r) => r.page_size(),
            Memory::Device { .. } => HWL_OBJ_ALIGN as usize,
        }
    }
    /// How the CPU caches the memory: decides the ring's fences.
    pub(crate) fn memory_kind(&self) -> MemoryKind {
        match &self.memory {
            Memory::File(_) => MemoryKind::Cached,
            Memory::Device { device, .. } => device.kind(),
        }
    }
    /// Whether the region's file was shrunk under this mapping by another
    /// process: the lost pages read as zeros now, and nothing read from the
    /// region can be trusted (hwlink_drivers' SIGBUS guard).
    pub(crate) fn truncated(&self) -> bool {
        match &self.memory {
            Memory::File(r) => r.truncated(),
            Memory::Device { device, .. } => device.truncated(),
        }
    }
    /// Whether the processes sharing the region may run under different
    /// kernels (host and VM): their pids mean nothing to each other, and
    /// futexes do not cross.
    pub(crate) fn spans_kernels(&self) -> bool {
        matches!(self.memory, Memory::Device { .. })
    }
    /// The region file, unless the region lives in device memory.
    pub(crate) fn file(&self) -> Option<&Region> {
        match &self.memory {
            Memory::File(r) => Some(r),
            Memory::Device { .. } => None,
        }
    }
    /// The first byte of `obj`, an entry of this region's validated object
    /// table (so `obj.offset + obj.size` is within the mapping). The memory
    /// stays mapped while `self` lives.
    pub(crate) fn object_base(&self, obj: &ObjectInfo) -> *mut u8 {
        debug_assert!(obj.offset.saturating_add(obj.size) <= self.len() as u64);
        self.base().wrapping_add(obj.offset as usize)
    }
}

/// One validated entry of the object table.
#[derive(Debug, Clone)]
pub(crate) struct ObjectInfo {
    pub kind: u32,
    pub offset: u64,
    pub size: u64,
    pub name: String,
}

/// The validated header of a region, copied out of shared memory.
#[derive(Debug, Clone)]
pub(crate) struct RegionInfo {
    pub flags: u32,
    pub page_size: u32,
    pub creator_pid: u32,
    pub creator_token: u32,
    pub objects: Vec<ObjectInfo>,
}

fn name_bytes(name: &str) -> [u8; HWL_NAME_LEN as usize] {
    let mut out = [0u8; HWL_NAME_LEN as usize];
    let n = name.len().min(out.len());
    out[..n].copy_from_slice(&name.as_bytes()[..n]);
    out
}

fn name_string(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

/// One object a creator puts into a new region.
#[derive(Clone, Copy)]
pub(crate) struct ObjectSpec<'a> {
    /// `HWL_OBJ_*`.
    pub kind: u32,
    /// Name in the object table (at most `HWL_NAME_LEN` bytes are kept).
    pub name: &'a str,
    /// Bytes the object needs; rounded up to `HWL_OBJ_ALIGN`.
    pub size: u64,
    /// Writes the object's initial contents into zero-filled memory at
    /// `base`, `size` bytes long, before the region is published. Runs while
    /// nobody else can have validated the region (the magic is still zero).
    pub init: &'a dyn Fn(ObjectInit),
}

/// Zero-filled, exclusively owned memory of one object being created.
pub(crate) struct ObjectInit {
    pub base: *mut u8,
    pub size: u64,
    region_len: u64,
}

impl ObjectInit {
    /// Bytes of the whole region being created (known once mapped).
    pub(crate) fn region_len(&self) -> u64 {
        self.region_len
    }
}

/// Creates region file `name` holding `objects`, laid out one after another
/// on `HWL_OBJ_ALIGN` boundaries, with `features` in its header; initialises
/// every object and publishes the region (R-mag).
///
/// With `keep_file`, the file outlives the creating handle (it is removed by
/// its owner's protocol, or by `hwlink rm`); otherwise dropping the last
/// handle of the creator unlinks it.
pub(crate) fn create_region(
    name: &str,
    backend: Backend,
    features: u32,
    objects: &[ObjectSpec<'_>],
    keep_file: bool,
) -> Result<Arc<RegionMap>, OpenError> {
    if objects.len() > HWL_MAX_OBJECTS as usize {
        return Err(OpenError::InvalidConfig(format!(
            "{} objects in one region (limit {HWL_MAX_OBJECTS})",
            objects.len()
        )));
    }
    debug_assert_eq!(features & !KNOWN_FEATURES, 0);
    let mut offsets = Vec::with_capacity(objects.len());
    let mut end = HDR;
    for o in objects {
        let size = hwlink_hw::object_bytes(o.size)
            .ok_or_else(|| OpenError::InvalidConfig("object size overflows".into()))?;
        offsets.push((end, size));
        end = end
            .checked_add(size)
            .filter(|&e| e <= isize::MAX as u64)
            .ok_or_else(|| OpenError::InvalidConfig("region size overflows".into()))?;
    }
    let mut region = Region::create(name, end as usize, backend)?;
    if keep_file {
        region.set_remove_on_drop(false);
    }
    let map = RegionMap::from_region(region);
    let len = map.len() as u64;
    let (pid, token) = crate::liveness::me()?;
    let hdr = map.base().cast::<hwl_region>();
    for (i, (o, &(offset, size))) in objects.iter().zip(&offsets).enumerate() {
        // The last object takes the rounding slack of the whole region.
        let size = if i.wrapping_add(1) == objects.len() {
            len.saturating_sub(offset)
        } else {
            size
        };
        let entry = hwl_object {
            kind: o.kind,
            flags: 0,
            offset,
            size,
            name: name_bytes(o.name),
        };
        // SAFETY: the region was just created by us (O_EXCL) and is `len`
        // bytes, zero-filled; nobody can have validated it yet because the
        // magic is still zero. The entry index is < HWL_MAX_OBJECTS.
        unsafe { addr_of_mut!((*hdr).objects[i]).write(entry) };
        (o.init)(ObjectInit {
            base: map.base().wrapping_add(offset as usize),
            size,
            region_len: len,
        });
    }
    let flags = if map.kind().is_hugepage() {
        HWL_REGION_F_HUGEPAGE
    } else {
        0
    };
    // SAFETY: as above: exclusive, in bounds, aligned (the mapping is page
    // aligned and hwl_region is repr(C)).
    unsafe {
        addr_of_mut!((*hdr).abi_version).write(HWL_ABI_VERSION);
        addr_of_mut!((*hdr).features).write(features);
        addr_of_mut!((*hdr).flags).write(flags);
        addr_of_mut!((*hdr).page_size).write(map.page_size() as u32);
        addr_of_mut!((*hdr).total_size).write(len);
        addr_of_mut!((*hdr).creator_pid).write(pid);
        addr_of_mut!((*hdr).creator_token).write(token);
        addr_of_mut!((*hdr).name).write(name_bytes(name));
        addr_of_mut!((*hdr).object_count).write(objects.len() as u32);
    }
    // R-mag: publish the region; pairs with A-mag in `validate`.
    magic_word(&map).store(HWL_REGION_MAGIC, Ordering::Release);
    Ok(Arc::new(map))
}

/// Bytes an SPSC ring object of `geometry` needs.
pub(crate) fn spsc_ring_bytes(geometry: &Geometry) -> Result<u64, OpenError> {
    hwlink_hw::ring_bytes(geometry.capacity, geometry.stride)
        .filter(|&s| s <= usize::MAX as u64 / 2)
        .ok_or_else(|| OpenError::InvalidConfig("capacity * slot size overflows".into()))
}

/// Writes the configuration of an SPSC ring of `geometry` into a zero-filled
/// object being created.
pub(crate) fn init_spsc_ring(obj: ObjectInit, geometry: Geometry) {
    let ring = obj.base.cast::<hwl_spsc_ring>();
    debug_assert!(
        obj.size
            >= u64::from(geometry.capacity)
                .saturating_mul(u64::from(geometry.stride))
                .saturating_add(RING_CTL)
    );
    // SAFETY: `obj` is exclusively owned, zero-filled, page aligned and at
    // least as large as the ring (the caller sized it with spsc_ring_bytes).
    unsafe {
        addr_of_mut!((*ring).capacity).write(geometry.capacity);
        addr_of_mut!((*ring).slot_size).write(geometry.slot_size);
        addr_of_mut!((*ring).slot_stride).write(geometry.stride);
        addr_of_mut!((*ring).slots_offset).write(RING_CTL);
    }
}

/// Bytes of a region holding one SPSC ring of `geometry`: header and ring,
/// the ring rounded up to whole objects.
fn ring_region_size(geometry: Geometry) -> Result<u64, OpenError> {
    hwlink_hw::ring_bytes(geometry.capacity, geometry.stride)
        .and_then(hwlink_hw::single_object_region_bytes)
        .filter(|&s| s <= usize::MAX as u64)
        .ok_or_else(|| OpenError::InvalidConfig("capacity * slot size overflows".into()))
}

/// Creates a region named `name` holding one SPSC ring of `geometry`.
pub(crate) fn create_ring_region(
    name: &str,
    geometry: Geometry,
    backend: Backend,
) -> Result<Arc<RegionMap>, OpenError> {
    let size = ring_region_size(geometry)?;
    let me = crate::liveness::me()?;
    let region = Region::create(name, size as usize, backend)?;
    let map = RegionMap::from_region(region);
    init_ring_region(&map, name, geometry, me);
    Ok(Arc::new(map))
}

/// Writes the header and ring configuration of a fresh, zero-filled region
/// that nobody else can have validated yet, then publishes it (R-mag).
fn init_ring_region(map: &RegionMap, name: &str, geometry: Geometry, (pid, token): (u32, u32)) {
    let len = map.len() as u64;
    let hdr = map.base().cast::<hwl_region>();
    let ring = map
        .base()
        .wrapping_add(HDR as usize)
        .cast::<hwl_spsc_ring>();
    let object = hwl_object {
        kind: HWL_OBJ_SPSC_RING,
        flags: 0,
        offset: HDR,
        size: len.saturating_sub(HDR),
        name: name_bytes("link"),
    };
    let flags = match map.kind() {
        BackingKind::Device => HWL_REGION_F_DEVICE,
        k if k.is_hugepage() => HWL_REGION_F_HUGEPAGE,
        _ => 0,
    };
    // SAFETY: the caller created (O_EXCL) or claimed (CAS of magic) this
    // region, which holds at least HDR + ring bytes and is zero-filled;
    // nobody can have validated it yet because the magic is not
    // HWL_REGION_MAGIC. All writes are in bounds and aligned (the region is
    // page aligned, the structs are repr(C)); volatile because on device
    // memory they must reach the device.
    unsafe {
        addr_of_mut!((*hdr).abi_version).write_volatile(HWL_ABI_VERSION);
        addr_of_mut!((*hdr).features).write_volatile(KNOWN_FEATURES);
        addr_of_mut!((*hdr).flags).write_volatile(flags);
        addr_of_mut!((*hdr).page_size).write_volatile(map.page_size() as u32);
        addr_of_mut!((*hdr).total_size).write_volatile(len);
        addr_of_mut!((*hdr).creator_pid).write_volatile(pid);
        addr_of_mut!((*hdr).creator_token).write_volatile(token);
        addr_of_mut!((*hdr).name).write_volatile(name_bytes(name));
        addr_of_mut!((*hdr).objects[0]).write_volatile(object);
        addr_of_mut!((*hdr).object_count).write_volatile(1);
        addr_of_mut!((*ring).capacity).write_volatile(geometry.capacity);
        addr_of_mut!((*ring).slot_size).write_volatile(geometry.slot_size);
        addr_of_mut!((*ring).slot_stride).write_volatile(geometry.stride);
        addr_of_mut!((*ring).slots_offset).write_volatile(RING_CTL);
    }
    if map.memory_kind().needs_store_fence() {
        crate::sync::store_fence();
    }
    // R-mag: publish the region; pairs with A-mag in `validate`.
    magic_word(map).store(HWL_REGION_MAGIC, Ordering::Release);
}

fn magic_word(map: &RegionMap) -> &AtomicU64 {
    // SAFETY: every mapping is at least one page, page aligned; the magic is
    // the first u64 and is only accessed atomically after creation.
    unsafe { &*map.base().cast::<AtomicU64>() }
}

/// Opens the region `name`, waiting up to `ready_timeout` for its creator to
/// finish initialising it, and validates its header.
pub(crate) fn open_region(
    name: &str,
    backend: Backend,
    ready_timeout: Duration,
) -> Result<(Arc<RegionMap>, RegionInfo), OpenError> {
    let map = RegionMap::from_region(Region::open(name, backend)?);
    let deadline = crate::wait::later(Instant::now(), ready_timeout);
    loop {
        match validate(&map) {
            Err(OpenError::NotReady { .. }) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(1))
            }
            Ok(info) => return Ok((Arc::new(map), info)),
            Err(e) => return Err(e),
        }
    }
}

/// What one place of device memory holds (regions lie back to back there).
enum DevicePlace {
    /// An initialised region with the wanted name: (offset, bytes).
    Found(usize, usize),
    /// Zero magic: free from here on.
    Free(usize),
    /// A creator is initialising a region here.
    Claimed,
    /// No room for another region header.
    End,
}

/// Walks the regions of `device` from offset 0 until one named `name`, a
/// free place, a place being claimed, or the end. Every header is read once
/// and its size bounds-checked before it is used to step.
fn walk_device(device: &DeviceMemory, name: &str) -> Result<DevicePlace, OpenError> {
    let dev_len = device.len();
    let corrupt = |what, value: u64, limit: u64| OpenError::Corrupt {
        name: format!("{} (device)", device.source()),
        source: Corruption::new(what, value, limit),
    };
    let mut offset = 0usize;
    loop {
        if !offset
            .checked_add(HDR as usize)
            .is_some_and(|end| end <= dev_len)
        {
            return Ok(DevicePlace::End);
        }
        let at = device.as_ptr().wrapping_add(offset);
        // SAFETY: `offset + HDR <= len`, and offset is a multiple of
        // HWL_OBJ_ALIGN (checked when stepping), so the u64 is aligned and
        // inside the live mapping; accessed only atomically by everybody.
        let magic = unsafe { &*at.cast::<AtomicU64>() }.load(Ordering::Acquire);
        match magic {
            0 => return Ok(DevicePlace::Free(offset)),
            HWL_REGION_CLAIMED => return Ok(DevicePlace::Claimed),
            HWL_REGION_MAGIC => {}
            other => {
                return Err(OpenError::BadMagic {
                    name: format!("{} at offset {offset}", device.source()),
                    found: other,
                    expected: HWL_REGION_MAGIC,
                })
            }
        }
        // SAFETY: HDR in-bounds bytes (checked above) of plain data, copied
        // once; only the copy is used.
        let hdr: hwl_region = unsafe { at.cast::<hwl_region>().read_volatile() };
        let left = dev_len.saturating_sub(offset) as u64;
        let total = hdr.total_size;
        if total < HDR || total > left || total.checked_rem(u64::from(HWL_OBJ_ALIGN)) != Some(0) {
            return Err(corrupt("region size on the device", total, left));
        }
        if name_string(&hdr.name) == name {
            return Ok(DevicePlace::Found(offset, total as usize));
        }
        offset = offset.saturating_add(total as usize);
    }
}

fn device_map(device: &Arc<DeviceMemory>, offset: usize, len: usize, name: &str) -> RegionMap {
    RegionMap {
        memory: Memory::Device {
            device: device.clone(),
            offset,
            len,
            name: name.to_owned(),
        },
    }
}

/// Creates a region named `name` holding one SPSC ring of `geometry` in the
/// first free place of `device`, claimed by a CAS of its magic (so host and
/// guest may create links at the same time). Waits up to `timeout` for
/// another creator's claim to be published.
pub(crate) fn create_on_device(
    device: &Arc<DeviceMemory>,
    name: &str,
    geometry: Geometry,
    timeout: Duration,
) -> Result<Arc<RegionMap>, OpenError> {
    hwlink_drivers::validate_name(name)?;
    let size = ring_region_size(geometry)? as usize;
    if !device.kind().allows_atomic_rmw() {
        return Err(OpenError::DeviceMemoryKind {
            device: device.source().to_owned(),
            kind: device.kind(),
            needs: "creating a link (a CAS claims its place)",
        });
    }
    let me = crate::liveness::me()?;
    let deadline = crate::wait::later(Instant::now(), timeout);
    loop {
        match walk_device(device, name)? {
            DevicePlace::Found(..) => {
                return Err(OpenError::DeviceNameTaken {
                    name: name.to_owned(),
                    device: device.source().to_owned(),
                })
            }
            DevicePlace::Free(offset) => {
                let free = device.len().saturating_sub(offset);
                if size > free {
                    return Err(OpenError::DeviceFull {
                        device: device.source().to_owned(),
                        need: size as u64,
                        free: free as u64,
                    });
                }
                let map = device_map(device, offset, size, name);
                if magic_word(&map)
                    .compare_exchange(0, HWL_REGION_CLAIMED, Ordering::AcqRel, Ordering::Acquire)
                    .is_err()
                {
                    continue;
                }
                // The place may hold bytes of an earlier use of the memory.
                zero_volatile(map.base().wrapping_add(8), size.saturating_sub(8));
                init_ring_region(&map, name, geometry, me);
                return Ok(Arc::new(map));
            }
            DevicePlace::Claimed if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(1))
            }
            DevicePlace::Claimed | DevicePlace::End => {
                return Err(OpenError::DeviceFull {
                    device: device.source().to_owned(),
                    need: size as u64,
                    free: 0,
                })
            }
        }
    }
}

fn zero_volatile(start: *mut u8, len: usize) {
    for i in (0..len).step_by(8) {
        // SAFETY: the caller owns `len` bytes from `start` (a claimed place
        // of device memory, in bounds), 8-aligned with `len` a multiple of 8.
        unsafe { start.add(i).cast::<u64>().write_volatile(0) };
    }
}

/// Opens the region named `name` on `device`, waiting up to `timeout` for
/// its creator (perhaps in another kernel) to publish it, and validates it.
pub(crate) fn open_on_device(
    device: &Arc<DeviceMemory>,
    name: &str,
    timeout: Duration,
) -> Result<(Arc<RegionMap>, RegionInfo), OpenError> {
    hwlink_drivers::validate_name(name)?;
    let deadline = crate::wait::later(Instant::now(), timeout);
    loop {
        if let DevicePlace::Found(offset, len) = walk_device(device, name)? {
            let map = device_map(device, offset, len, name);
            let info = validate(&map)?;
            return Ok((Arc::new(map), info));
        }
        if Instant::now() >= deadline {
            return Err(OpenError::NotOnDevice {
                name: name.to_owned(),
                device: device.source().to_owned(),
                waited: timeout,
            });
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Validates the header of a mapped region: every field is read once, into
/// a local copy, and checked.
pub(crate) fn validate(map: &RegionMap) -> Result<RegionInfo, OpenError> {
    let name = map.name().to_string();
    let len = map.len() as u64;
    if len < HDR {
        return Err(OpenError::SizeMismatch {
            name,
            header: HDR,
            file: len,
        });
    }
    // A-mag: pairs with the creator's R-mag.
    let magic = magic_word(map).load(Ordering::Acquire);
    // SAFETY: the mapping holds at least HDR bytes (checked above), and
    // hwl_region is plain old data valid for any bit pattern. A volatile read
    // copies it exactly once; only the copy is used from here on.
    let hdr: hwl_region = unsafe { map.base().cast::<hwl_region>().read_volatile() };
    if magic == 0 {
        return Err(OpenError::NotReady {
            name,
            creator_pid: hdr.creator_pid,
        });
    }
    if magic != HWL_REGION_MAGIC {
        return Err(OpenError::BadMagic {
            name,
            found: magic,
            expected: HWL_REGION_MAGIC,
        });
    }
    if hdr.abi_version != HWL_ABI_VERSION {
        return Err(OpenError::VersionMismatch {
            name,
            found: hdr.abi_version,
            expected: HWL_ABI_VERSION,
        });
    }
    if hdr.features & !KNOWN_FEATURES != 0 {
        return Err(OpenError::UnsupportedFeatures {
            name,
            unknown: hdr.features & !KNOWN_FEATURES,
        });
    }
    if hdr.total_size != len {
        return Err(OpenError::SizeMismatch {
            name,
            header: hdr.total_size,
            file: len,
        });
    }
    let corrupt = |source| OpenError::Corrupt {
        name: name.clone(),
        source,
    };
    if hdr.object_count > HWL_MAX_OBJECTS {
        return Err(corrupt(Corruption::new(
            "object count",
            hdr.object_count.into(),
            HWL_MAX_OBJECTS.into(),
        )));
    }
    let mut objects = Vec::with_capacity(hdr.object_count as usize);
    for o in &hdr.objects[..hdr.object_count as usize] {
        let end = o.offset.saturating_add(o.size);
        if o.offset < HDR || o.offset.checked_rem(u64::from(HWL_OBJ_ALIGN)) != Some(0) || end > len
        {
            return Err(corrupt(Corruption::new(
                "object end (offset + size)",
                end,
                len,
            )));
        }
        objects.push(ObjectInfo {
            kind: o.kind,
            offset: o.offset,
            size: o.size,
            name: name_string(&o.name),
        });
    }
    Ok(RegionInfo {
        flags: hdr.flags,
        page_size: hdr.page_size,
        creator_pid: hdr.creator_pid,
        creator_token: hdr.creator_token,
        objects,
    })
}

/// The creator's pid and token as written in a header that may not
/// validate (for telling whether an unreadable region is owned). Untrusted:
/// only used to ask the kernel whether that process lives. None if no pid
/// was written.
pub(crate) fn raw_creator(map: &RegionMap) -> Option<(u32, u32)> {
    if (map.len() as u64) < HDR {
        return None;
    }
    // SAFETY: the mapping holds at least HDR bytes; hwl_region is plain data
    // valid for any bit pattern; one volatile copy is taken.
    let hdr: hwl_region = unsafe { map.base().cast::<hwl_region>().read_volatile() };
    (hdr.creator_pid != 0).then_some((hdr.creator_pid, hdr.creator_token))
}

/// The validated location and shape of one SPSC ring in a mapped region.
#[derive(Debug, Clone)]
pub(crate) struct RingParts {
    map: Arc<RegionMap>,
    ctl: *mut hwl_spsc_ring,
    geometry: Geometry,
    object_name: String,
}

// SAFETY: RingParts is a location inside a mapping that it keeps alive (the
// Arc); it grants no access by itself.
unsafe impl Send for RingParts {}
// SAFETY: as above.
unsafe impl Sync for RingParts {}

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
        // In bounds: validate() checked offset + size <= len.
        let ctl = map
            .base()
            .wrapping_add(obj.offset as usize)
            .cast::<hwl_spsc_ring>();
        // SAFETY: `ctl` points to RING_CTL in-bounds, aligned bytes of the
        // mapping; hwl_spsc_ring is plain data. One volatile copy is taken
        // and only the copy's config fields are used.
        let copy: hwl_spsc_ring = unsafe { ctl.read_volatile() };
        let geometry = Geometry::validate(
            copy.capacity,
            copy.slot_size,
            copy.slot_stride,
            copy.slots_offset,
            obj.size,
        )
        .map_err(|source| OpenError::Corrupt {
            name: name.clone(),
            source,
        })?;
        if copy.flags != 0 {
            return Err(OpenError::UnsupportedFeatures {
                name,
                unknown: copy.flags,
            });
        }
        Ok(RingParts {
            map,
            ctl,
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

    fn word(&self, p: *mut u32) -> *const AtomicU32 {
        p.cast::<AtomicU32>()
    }

    /// The ring's shared words, for one end.
    pub(crate) fn words(&self) -> RingWords {
        let c = self.ctl;
        // SAFETY: all pointers are derived in bounds from `ctl` (validated by
        // `locate`), are 4-byte aligned, and are accessed only atomically from
        // now on; `self.map` keeps the mapping alive, and every end keeps a
        // clone of this RingParts next to the words.
        unsafe {
            let not_empty = Doorbell::from_raw(
                self.word(addr_of_mut!((*c).not_empty.count)),
                self.word(addr_of_mut!((*c).not_empty.waiters)),
            );
            let not_full = Doorbell::from_raw(
                self.word(addr_of_mut!((*c).not_full.count)),
                self.word(addr_of_mut!((*c).not_full.waiters)),
            );
            RingWords::new(
                self.word(addr_of_mut!((*c).tail)),
                self.word(addr_of_mut!((*c).head)),
                self.word(addr_of_mut!((*c).producer.wait_mode)),
                self.word(addr_of_mut!((*c).consumer.wait_mode)),
                not_empty,
                not_full,
            )
            .with_store_fences(self.map.memory_kind().needs_store_fence())
        }
    }

    /// The slot area.
    pub(crate) fn slots(&self) -> RawSlots {
        let base = self.ctl.cast::<u8>().wrapping_add(RING_CTL as usize);
        // SAFETY: Geometry::validate checked that the ring object holds
        // RING_CTL + capacity * stride bytes, inside the mapping kept alive
        // by `self.map`; RING_CTL is a multiple of 64.
        unsafe { RawSlots::new(base, &self.geometry) }
    }

    /// One endpoint's words.
    pub(crate) fn endpoint(&self, side: Side) -> Endpoint {
        let c = self.ctl;
        // SAFETY: in bounds of the validated ring control block.
        let ep = unsafe {
            match side {
                Side::Sender => addr_of_mut!((*c).producer),
                Side::Receiver => addr_of_mut!((*c).consumer),
            }
        };
        Endpoint {
            ep,
            _parts: self.clone(),
        }
    }
}

/// One endpoint's words in shared memory (`struct hwl_endpoint`).
#[derive(Debug)]
pub(crate) struct Endpoint {
    ep: *mut hwl_endpoint,
    _parts: RingParts,
}

// SAFETY: only atomics are reached through `ep`, and `_parts` keeps them mapped.
unsafe impl Send for Endpoint {}
// SAFETY: as above.
unsafe impl Sync for Endpoint {}

/// A snapshot of an endpoint, for diagnostics and liveness.
#[derive(Debug, Clone, Copy)]
pub(crate) struct EndpointSnapshot {
    pub state: u32,
    pub pid: u32,
    pub token: u32,
    pub cpu_mask: u64,
}

impl Endpoint {
    fn u32_at(&self, p: *mut u32) -> &AtomicU32 {
        // SAFETY: `p` is a field of `*self.ep`, valid and aligned while
        // `_parts` keeps the mapping; accessed only atomically.
        unsafe { &*p.cast::<AtomicU32>() }
    }
    fn u64_at(&self, p: *mut u64) -> &AtomicU64 {
        // SAFETY: as above; the u64 fields are 8-byte aligned (hw tests).
        unsafe { &*p.cast::<AtomicU64>() }
    }
    fn state(&self) -> &AtomicU32 {
        // SAFETY: field projection in bounds of the endpoint.
        self.u32_at(unsafe { addr_of_mut!((*self.ep).state) })
    }
    fn pid(&self) -> &AtomicU32 {
        // SAFETY: field projection in bounds of the endpoint.
        self.u32_at(unsafe { addr_of_mut!((*self.ep).pid) })
    }
    fn token(&self) -> &AtomicU32 {
        // SAFETY: field projection in bounds of the endpoint.
        self.u32_at(unsafe { addr_of_mut!((*self.ep).token) })
    }
    fn cpu_mask(&self) -> &AtomicU64 {
        // SAFETY: field projection in bounds of the endpoint.
        self.u64_at(unsafe { addr_of_mut!((*self.ep).cpu_mask) })
    }
    fn wait_mode(&self) -> &AtomicU32 {
        // SAFETY: field projection in bounds of the endpoint.
        self.u32_at(unsafe { addr_of_mut!((*self.ep).wait_mode) })
    }
    fn doorbell(&self) -> &AtomicU32 {
        // SAFETY: field projection in bounds of the endpoint.
        self.u32_at(unsafe { addr_of_mut!((*self.ep).doorbell) })
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

// ---------------------------------------------------------------------------
// Domains: the directory object (struct hwl_domain + struct hwl_member[])
// ---------------------------------------------------------------------------

const DOMAIN_HDR: u64 = hwlink_hw::DOMAIN_HDR_BYTES;
const MEMBER_BYTES: u64 = hwlink_hw::MEMBER_BYTES;

/// A domain's configuration, copied out of shared memory once and
/// validated (or asked for by a creator).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DomainConfig {
    pub max_members: u32,
    pub buffering: u32,
    pub capacity: u32,
    pub slot_size: u32,
    pub byte_limit: u64,
}

/// Bytes a domain object with `max_members` entries needs.
pub(crate) fn domain_object_bytes(max_members: u32) -> u64 {
    hwlink_hw::domain_bytes(max_members)
}

/// Writes a domain's configuration into a zero-filled object being
/// created; generations start at `first_generation`.
pub(crate) fn init_domain(obj: ObjectInit, cfg: DomainConfig, first_generation: u32) {
    let d = obj.base.cast::<hwl_domain>();
    assert!(obj.size >= domain_object_bytes(cfg.max_members));
    // SAFETY: `obj` is exclusively owned, zero-filled, page aligned and large
    // enough for the header and every entry (checked above).
    unsafe {
        addr_of_mut!((*d).max_members).write(cfg.max_members);
        addr_of_mut!((*d).buffering).write(cfg.buffering);
        addr_of_mut!((*d).capacity).write(cfg.capacity);
        addr_of_mut!((*d).slot_size).write(cfg.slot_size);
        addr_of_mut!((*d).byte_limit).write(cfg.byte_limit);
        addr_of_mut!((*d).members_offset).write(DOMAIN_HDR);
        addr_of_mut!((*d).next_generation).write(first_generation);
    }
}

/// The validated location of a domain directory in a mapped region.
#[derive(Debug, Clone)]
pub(crate) struct DomainParts {
    map: Arc<RegionMap>,
    head: *mut hwl_domain,
    members: *mut hwl_member,
    config: DomainConfig,
}

// SAFETY: a location inside a mapping it keeps alive; all shared words are
// reached through atomics only.
unsafe impl Send for DomainParts {}
// SAFETY: as above.
unsafe impl Sync for DomainParts {}

impl DomainParts {
    /// Finds the domain object in `info` and validates its configuration,
    /// copying it out of shared memory once. `None` if the region holds no
    /// domain.
    pub(crate) fn locate(
        map: Arc<RegionMap>,
        info: &RegionInfo,
    ) -> Option<Result<DomainParts, OpenError>> {
        let obj = info.objects.iter().find(|o| o.kind == HWL_OBJ_DOMAIN)?;
        let name = map.name().to_string();
        let corrupt = |source| OpenError::Corrupt {
            name: name.clone(),
            source,
        };
        if obj.size < DOMAIN_HDR {
            return Some(Err(corrupt(Corruption::new(
                "domain object size",
                obj.size,
                DOMAIN_HDR,
            ))));
        }
        let head = map.object_base(obj).cast::<hwl_domain>();
        // SAFETY: DOMAIN_HDR in-bounds, page-aligned bytes (validate checked
        // offset + size <= len); hwl_domain is plain data valid for any bit
        // pattern. One volatile copy is taken and only the copy is used.
        let copy: hwl_domain = unsafe { head.read_volatile() };
        let max = copy.max_members;
        if max == 0 || max > HWL_DOMAIN_MAX_MEMBERS {
            return Some(Err(corrupt(Corruption::new(
                "domain max_members",
                max.into(),
                HWL_DOMAIN_MAX_MEMBERS.into(),
            ))));
        }
        if copy.members_offset < DOMAIN_HDR || copy.members_offset % 64 != 0 {
            return Some(Err(corrupt(Corruption::new(
                "domain members_offset",
                copy.members_offset,
                DOMAIN_HDR,
            ))));
        }
        let end = copy
            .members_offset
            .saturating_add(u64::from(max) * MEMBER_BYTES);
        if end > obj.size {
            return Some(Err(corrupt(Corruption::new(
                "domain directory end",
                end,
                obj.size,
            ))));
        }
        if copy.flags != 0 || copy.resv0 != 0 || copy.resv1 != [0; 3] {
            return Some(Err(OpenError::UnsupportedFeatures {
                name,
                unknown: copy.flags,
            }));
        }
        let members = head
            .cast::<u8>()
            .wrapping_add(copy.members_offset as usize)
            .cast::<hwl_member>();
        Some(Ok(DomainParts {
            map,
            head,
            members,
            config: DomainConfig {
                max_members: max,
                buffering: copy.buffering,
                capacity: copy.capacity,
                slot_size: copy.slot_size,
                byte_limit: copy.byte_limit,
            },
        }))
    }

    pub(crate) fn config(&self) -> DomainConfig {
        self.config
    }

    pub(crate) fn map(&self) -> &Arc<RegionMap> {
        &self.map
    }

    fn u32_at(&self, p: *mut u32) -> &AtomicU32 {
        // SAFETY: `p` is a 4-aligned field of the validated domain object,
        // mapped while `self.map` lives; shared words are only accessed
        // atomically.
        unsafe { &*p.cast::<AtomicU32>() }
    }

    fn u64_at(&self, p: *mut u64) -> &AtomicU64 {
        // SAFETY: as in u32_at; the u64 fields are 8-byte aligned (hw tests,
        // and the object and members_offset are 64-aligned).
        unsafe { &*p.cast::<AtomicU64>() }
    }

    /// `hwl_domain.state`.
    pub(crate) fn state(&self) -> &AtomicU32 {
        // SAFETY: field projection in bounds of the validated header.
        self.u32_at(unsafe { addr_of_mut!((*self.head).state) })
    }

    /// `hwl_domain.next_generation`.
    pub(crate) fn next_generation(&self) -> &AtomicU32 {
        // SAFETY: field projection in bounds of the validated header.
        self.u32_at(unsafe { addr_of_mut!((*self.head).next_generation) })
    }

    fn entry(&self, i: usize) -> *mut hwl_member {
        assert!(i < self.config.max_members as usize, "member index {i}");
        self.members.wrapping_add(i)
    }

    /// Directory entry `i` (`< max_members`, else panics: callers mask
    /// indices read from shared memory first).
    pub(crate) fn member(&self, i: usize) -> MemberWords<'_> {
        MemberWords {
            parts: self,
            p: self.entry(i),
        }
    }

    /// The inbox doorbell of entry `i`, usable on its own.
    pub(crate) fn inbox(&self, i: usize) -> Inbox {
        let p = self.entry(i);
        // SAFETY: both words are in bounds of entry i, 4-aligned, accessed
        // only atomically; the Inbox keeps a clone of self, hence the mapping.
        let bell = unsafe {
            Doorbell::from_raw(
                addr_of_mut!((*p).inbox.count).cast::<AtomicU32>(),
                addr_of_mut!((*p).inbox.waiters).cast::<AtomicU32>(),
            )
        };
        Inbox {
            bell,
            _parts: self.clone(),
        }
    }
}

/// A member's inbox doorbell, keeping its mapping alive.
#[derive(Debug)]
pub(crate) struct Inbox {
    bell: Doorbell,
    _parts: DomainParts,
}

impl std::ops::Deref for Inbox {
    type Target = Doorbell;
    fn deref(&self) -> &Doorbell {
        &self.bell
    }
}

/// The shared words of one directory entry (`struct hwl_member`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct MemberWords<'a> {
    parts: &'a DomainParts,
    p: *mut hwl_member,
}

impl<'a> MemberWords<'a> {
    /// `state | generation << 32`, one 64-bit word.
    pub(crate) fn word(&self) -> &'a AtomicU64 {
        // SAFETY: state (offset 0) and generation (offset 4) form one
        // 8-aligned u64 at the start of the entry (hw layout tests).
        self.parts
            .u64_at(unsafe { addr_of_mut!((*self.p).state) }.cast::<u64>())
    }
    pub(crate) fn pid(&self) -> &'a AtomicU32 {
        // SAFETY: field projection in bounds of the entry.
        self.parts.u32_at(unsafe { addr_of_mut!((*self.p).pid) })
    }
    pub(crate) fn reaper(&self) -> &'a AtomicU32 {
        // SAFETY: field projection in bounds of the entry.
        self.parts.u32_at(unsafe { addr_of_mut!((*self.p).reaper) })
    }
    pub(crate) fn token(&self) -> &'a AtomicU32 {
        // SAFETY: field projection in bounds of the entry.
        self.parts.u32_at(unsafe { addr_of_mut!((*self.p).token) })
    }
    pub(crate) fn pending_links(&self) -> &'a AtomicU64 {
        // SAFETY: field projection in bounds of the entry.
        self.parts
            .u64_at(unsafe { addr_of_mut!((*self.p).pending_links) })
    }
    /// The name as `HWL_MEMBER_NAME_LEN / 8` little-endian u64 words.
    pub(crate) fn name_word(&self, k: usize) -> &'a AtomicU64 {
        assert!(k < HWL_MEMBER_NAME_LEN as usize / 8);
        // SAFETY: name is 32 bytes at offset 32 of the entry (8-aligned), so
        // word k < 4 is in bounds and aligned.
        let base = unsafe { addr_of_mut!((*self.p).name) }.cast::<u64>();
        self.parts.u64_at(base.wrapping_add(k))
    }
}

/// Bytes of the MPMC ring control block.
const MPMC_CTL: u64 = hwlink_hw::MPMC_CONTROL_BYTES;

/// Writes the configuration and initial turns of an MPMC ring into a
/// zero-filled object being created.
pub(crate) fn init_mpmc_ring(obj: ObjectInit, geometry: MpmcGeometry, segment: u64) {
    let ctl = obj.base.cast::<hwl_mpmc_ring>();
    let need = crate::mpmc::ring_bytes(geometry.capacity, geometry.slot_size).unwrap_or(u64::MAX);
    assert!(obj.size >= need, "mpmc ring object too small");
    // SAFETY: `obj` is exclusively owned, zero-filled, page aligned and at
    // least `need` bytes (checked above).
    unsafe {
        addr_of_mut!((*ctl).capacity).write(geometry.capacity);
        addr_of_mut!((*ctl).slot_size).write(geometry.slot_size);
        addr_of_mut!((*ctl).slot_stride).write(geometry.stride);
        addr_of_mut!((*ctl).slots_offset).write(MPMC_CTL);
        addr_of_mut!((*ctl).segment).write(segment);
    }
    // SAFETY: as above; the ring's words are in bounds of `obj`.
    let ring = MpmcRing::new(unsafe { RawMpmc::new(obj.base, &geometry) }, geometry);
    ring.init();
}

/// A validated MPMC ring object in a mapped region.
#[derive(Debug)]
pub(crate) struct MpmcParts {
    map: Arc<RegionMap>,
    ctl: *mut hwl_mpmc_ring,
    ring: MpmcRing<RawMpmc>,
    segment: u64,
}

// SAFETY: a location inside a mapping it keeps alive; only atomics and the
// ring protocol are used through it.
unsafe impl Send for MpmcParts {}
// SAFETY: as above.
unsafe impl Sync for MpmcParts {}

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
        let ctl = map.object_base(obj).cast::<hwl_mpmc_ring>();
        // SAFETY: MPMC_CTL in-bounds bytes (checked above against the
        // validated object); plain data; one volatile copy is taken.
        let copy: hwl_mpmc_ring = unsafe { ctl.read_volatile() };
        let geometry = MpmcGeometry::validate(
            copy.capacity,
            copy.slot_size,
            copy.slot_stride,
            copy.slots_offset,
            obj.size,
        )
        .map_err(corrupt)?;
        if copy.flags != 0 {
            return Err(OpenError::UnsupportedFeatures {
                name,
                unknown: copy.flags,
            });
        }
        // SAFETY: Geometry validation proved the object holds the control
        // block and every slot; `map` (kept in the value) keeps it mapped.
        let ring = MpmcRing::new(unsafe { RawMpmc::new(ctl.cast(), &geometry) }, geometry);
        Ok(MpmcParts {
            map,
            ctl,
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
        // SAFETY: an 8-aligned field of the validated control block, only
        // accessed atomically, mapped while `self.map` lives.
        unsafe { &*addr_of_mut!((*self.ctl).next_segment).cast::<AtomicU64>() }
    }

    pub(crate) fn map(&self) -> &Arc<RegionMap> {
        &self.map
    }
}

/// The configuration of a mailbox, copied out of shared memory once and
/// validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct MailboxConfig {
    pub id: u64,
    pub buffering: u32,
    pub access: u32,
    pub capacity: u32,
    pub slot_size: u32,
    pub byte_limit: u64,
}

const MAILBOX_BYTES: u64 = hwlink_hw::MAILBOX_CONTROL_BYTES;

/// Writes a mailbox's configuration into a zero-filled object being
/// created. `bytes_in_use` starts at `first_bytes` (the region itself).
pub(crate) fn init_mailbox(obj: ObjectInit, config: MailboxConfig, first_bytes: u64) {
    assert!(obj.size >= MAILBOX_BYTES, "mailbox object too small");
    let m = obj.base.cast::<hwl_mailbox>();
    // SAFETY: exclusively owned, zero-filled, page aligned, large enough.
    unsafe {
        addr_of_mut!((*m).id).write(config.id);
        addr_of_mut!((*m).buffering).write(config.buffering);
        addr_of_mut!((*m).access).write(config.access);
        addr_of_mut!((*m).capacity).write(config.capacity);
        addr_of_mut!((*m).slot_size).write(config.slot_size);
        addr_of_mut!((*m).byte_limit).write(config.byte_limit);
        addr_of_mut!((*m).bytes_in_use).write(first_bytes);
    }
}

/// A validated mailbox control block in a mapped region.
#[derive(Debug, Clone)]
pub(crate) struct MailboxParts {
    map: Arc<RegionMap>,
    ctl: *mut hwl_mailbox,
    config: MailboxConfig,
}

// SAFETY: a location inside a mapping it keeps alive; only atomics are
// reached through it.
unsafe impl Send for MailboxParts {}
// SAFETY: as above.
unsafe impl Sync for MailboxParts {}

/// One attachment entry's words.
pub(crate) struct AttachmentWords<'a> {
    pub pid: &'a AtomicU32,
    pub mode: &'a AtomicU32,
    pub token: &'a AtomicU32,
}

impl MailboxParts {
    /// Finds the mailbox object of a validated region and checks its
    /// configuration (read once).
    pub(crate) fn locate(
        map: Arc<RegionMap>,
        info: &RegionInfo,
    ) -> Result<MailboxParts, OpenError> {
        let obj = info
            .objects
            .iter()
            .find(|o| o.kind == HWL_OBJ_MAILBOX)
            .ok_or_else(|| OpenError::NotAMailbox {
                name: map.name().to_string(),
            })?;
        MailboxParts::locate_object(map, obj)
    }

    /// Checks the mailbox control block in object `obj` (an entry of the
    /// validated table of `map`), copying its configuration out once.
    pub(crate) fn locate_object(
        map: Arc<RegionMap>,
        obj: &ObjectInfo,
    ) -> Result<MailboxParts, OpenError> {
        let name = map.name().to_string();
        let corrupt = |source| OpenError::Corrupt {
            name: name.clone(),
            source,
        };
        if obj.kind != HWL_OBJ_MAILBOX {
            return Err(OpenError::NotAMailbox { name });
        }
        if obj.size < MAILBOX_BYTES {
            return Err(corrupt(Corruption::new(
                "mailbox object size",
                obj.size,
                MAILBOX_BYTES,
            )));
        }
        let ctl = map.object_base(obj).cast::<hwl_mailbox>();
        // SAFETY: MAILBOX_BYTES in-bounds bytes of the validated object;
        // plain data; one volatile copy.
        let copy: hwl_mailbox = unsafe { ctl.read_volatile() };
        if copy.buffering > HWL_BUF_UNBOUNDED {
            return Err(corrupt(Corruption::new(
                "mailbox buffering",
                copy.buffering.into(),
                HWL_BUF_UNBOUNDED.into(),
            )));
        }
        let all = HWL_ACCESS_SEND | HWL_ACCESS_RECV;
        if copy.access & !all != 0 {
            return Err(corrupt(Corruption::new(
                "mailbox access bits",
                copy.access.into(),
                all.into(),
            )));
        }
        if copy.slot_size > hwlink_hw::HWL_RING_MAX_SLOT_SIZE {
            return Err(corrupt(Corruption::new(
                "mailbox slot size",
                copy.slot_size.into(),
                hwlink_hw::HWL_RING_MAX_SLOT_SIZE.into(),
            )));
        }
        Ok(MailboxParts {
            map,
            ctl,
            config: MailboxConfig {
                id: copy.id,
                buffering: copy.buffering,
                access: copy.access,
                capacity: copy.capacity,
                slot_size: copy.slot_size,
                byte_limit: copy.byte_limit,
            },
        })
    }

    pub(crate) fn config(&self) -> &MailboxConfig {
        &self.config
    }

    pub(crate) fn map(&self) -> &Arc<RegionMap> {
        &self.map
    }

    fn u64_word(&self, p: *mut u64) -> &AtomicU64 {
        // SAFETY: `p` is an 8-aligned field of the validated control block,
        // accessed only atomically, mapped while `self.map` lives.
        unsafe { &*p.cast::<AtomicU64>() }
    }

    fn u32_word(&self, p: *mut u32) -> &AtomicU32 {
        // SAFETY: as above, 4-aligned.
        unsafe { &*p.cast::<AtomicU32>() }
    }

    pub(crate) fn bytes_in_use(&self) -> &AtomicU64 {
        // SAFETY: field projection inside the validated control block.
        self.u64_word(unsafe { addr_of_mut!((*self.ctl).bytes_in_use) })
    }
    pub(crate) fn last_segment(&self) -> &AtomicU64 {
        // SAFETY: as above.
        self.u64_word(unsafe { addr_of_mut!((*self.ctl).last_segment) })
    }
    pub(crate) fn head_segment(&self) -> &AtomicU64 {
        // SAFETY: as above.
        self.u64_word(unsafe { addr_of_mut!((*self.ctl).head_segment) })
    }
    pub(crate) fn tail_segment(&self) -> &AtomicU64 {
        // SAFETY: as above.
        self.u64_word(unsafe { addr_of_mut!((*self.ctl).tail_segment) })
    }
    pub(crate) fn removed(&self) -> &AtomicU32 {
        // SAFETY: as above.
        self.u32_word(unsafe { addr_of_mut!((*self.ctl).removed) })
    }

    /// The two doorbells: (not_empty, not_full).
    pub(crate) fn doorbells(&self) -> (Doorbell, Doorbell) {
        let c = self.ctl;
        // SAFETY: 4-aligned words of the validated control block, accessed
        // only atomically; every holder of the doorbells also holds a clone
        // of this MailboxParts, which keeps the mapping alive.
        unsafe {
            (
                Doorbell::from_raw(
                    addr_of_mut!((*c).not_empty.count).cast::<AtomicU32>(),
                    addr_of_mut!((*c).not_empty.waiters).cast::<AtomicU32>(),
                ),
                Doorbell::from_raw(
                    addr_of_mut!((*c).not_full.count).cast::<AtomicU32>(),
                    addr_of_mut!((*c).not_full.waiters).cast::<AtomicU32>(),
                ),
            )
        }
    }

    /// Entry `i` (< HWL_MAX_ATTACHMENTS) of the attachment table.
    pub(crate) fn attachment(&self, i: usize) -> AttachmentWords<'_> {
        assert!(i < HWL_MAX_ATTACHMENTS as usize);
        // SAFETY: `i` is in bounds of the table inside the validated
        // control block; the fields are aligned and only accessed atomically.
        unsafe {
            let a = addr_of_mut!((*self.ctl).attachments[i]);
            AttachmentWords {
                pid: self.u32_word(addr_of_mut!((*a).pid)),
                mode: self.u32_word(addr_of_mut!((*a).mode)),
                token: self.u32_word(addr_of_mut!((*a).token)),
            }
        }
    }
}

/// Lays out a rendezvous object of `cells` cells for messages of up to
/// `slot_size` bytes in a zero-filled object being created.
pub(crate) fn init_rendezvous(obj: ObjectInit, cells: u32, slot_size: u32) {
    // SAFETY: `obj` is exclusively owned (the region is not published yet)
    // and `obj.size` bytes long.
    unsafe { crate::rendezvous::init(obj.base, obj.size as usize, cells, slot_size) }
        .expect("rendezvous configuration checked by the creator");
}

/// A validated rendezvous object in a mapped region.
pub(crate) struct RendezvousParts {
    _map: Arc<RegionMap>,
    rdv: crate::rendezvous::Rendezvous,
}

impl std::fmt::Debug for RendezvousParts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RendezvousParts")
            .field("region", &self._map.name())
            .field("slot_size", &self.rdv.slot_size())
            .finish()
    }
}

impl RendezvousParts {
    /// Validates the rendezvous object `obj` of `map` (an entry of its
    /// validated table), reading its configuration once.
    pub(crate) fn locate_object(
        map: Arc<RegionMap>,
        obj: &ObjectInfo,
    ) -> Result<RendezvousParts, OpenError> {
        let name = map.name().to_string();
        if obj.kind != hwlink_hw::HWL_OBJ_RENDEZVOUS {
            return Err(OpenError::Corrupt {
                name,
                source: Corruption::new(
                    "object kind (rendezvous)",
                    obj.kind.into(),
                    hwlink_hw::HWL_OBJ_RENDEZVOUS.into(),
                ),
            });
        }
        // SAFETY: the object lies inside the mapping (validated table), is
        // page aligned, and `map` (kept in the value) keeps it mapped; other
        // processes use it only through the rendezvous protocol.
        let rdv = unsafe {
            crate::rendezvous::Rendezvous::from_raw(map.object_base(obj), obj.size as usize)
        }
        .map_err(|source| OpenError::Corrupt { name, source })?;
        Ok(RendezvousParts { _map: map, rdv })
    }

    pub(crate) fn rdv(&self) -> &crate::rendezvous::Rendezvous {
        &self.rdv
    }
}

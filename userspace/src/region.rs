//! Regions: map one (a file of its own, or a place of device memory),
//! create one with its header and object table, open one and validate
//! everything read from its header, and walk the regions of a device.
//!
//! This is the only module that turns a mapping into a [`ShmView`]; the
//! objects inside a region are viewed by `crate::objects`. Layout:
//! hw/include/hwlink_abi.h; validation rules: hw/SPEC.md.
#![warn(clippy::arithmetic_side_effects)]

use crate::error::{Corruption, OpenError};
use crate::shm::ShmView;
use crate::spsc::Geometry;
use crate::sync::{AtomicU64, Ordering};
use core::mem::offset_of;
use core::ptr::NonNull;
use hwlink_drivers::{Backend, BackingKind, DeviceMemory, FileAccess, MemoryKind, Region};
use hwlink_hw::{
    hwl_object, hwl_region, HWL_ABI_VERSION, HWL_FEAT_DOMAIN, HWL_FEAT_FUTEX_DOORBELL,
    HWL_FEAT_MAILBOX, HWL_FEAT_MPMC_RING, HWL_FEAT_SPSC_RING, HWL_MAX_OBJECTS, HWL_NAME_LEN,
    HWL_OBJ_ALIGN, HWL_OBJ_SPSC_RING, HWL_REGION_CLAIMED, HWL_REGION_F_DEVICE,
    HWL_REGION_F_HUGEPAGE, HWL_REGION_MAGIC,
};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Feature bits this build understands.
pub(crate) const KNOWN_FEATURES: u32 = HWL_FEAT_SPSC_RING
    | HWL_FEAT_FUTEX_DOORBELL
    | hwlink_hw::HWL_FEAT_RENDEZVOUS
    | HWL_FEAT_MPMC_RING
    | HWL_FEAT_MAILBOX
    | HWL_FEAT_DOMAIN
    | hwlink_hw::HWL_FEAT_TOPIC;
const HDR: u64 = hwlink_hw::REGION_HDR_BYTES;

/// A mapped region; shared by every handle that points into it.
#[derive(Debug)]
pub(crate) struct RegionMap {
    memory: Memory,
    /// The whole region (kept mapped by the file or device it holds).
    view: ShmView,
}

/// What a region lives in.
#[derive(Debug)]
enum Memory {
    /// A region file of its own (hugepages or /dev/shm).
    File(Arc<Region>),
    /// `len` bytes of device memory shared with another kernel
    /// (an ivshmem BAR, or the host file behind one).
    Device {
        device: Arc<DeviceMemory>,
        len: usize,
        name: String,
    },
}

impl RegionMap {
    pub(crate) fn from_region(region: Region) -> Self {
        let region = Arc::new(region);
        let ptr = NonNull::new(region.as_ptr()).expect("a mapping is never null");
        // SAFETY: the mapping is `len` readable and writable bytes for as
        // long as the Region (kept by the view) lives; its bytes are only
        // reached through views.
        let view = unsafe { ShmView::from_raw(ptr, region.len(), region.clone()) };
        RegionMap {
            memory: Memory::File(region),
            view,
        }
    }

    /// The `len` bytes at `offset` of `device` (the caller checked
    /// `offset + len <= device.len()`).
    fn on_device(device: &Arc<DeviceMemory>, offset: usize, len: usize, name: &str) -> Self {
        assert!(offset
            .checked_add(len)
            .is_some_and(|end| end <= device.len()));
        let ptr =
            NonNull::new(device.as_ptr().wrapping_add(offset)).expect("a mapping is never null");
        // SAFETY: in bounds of the device mapping (checked above), which the
        // view keeps mapped; its bytes are only reached through views.
        let view = unsafe { ShmView::from_raw(ptr, len, device.clone()) };
        RegionMap {
            memory: Memory::Device {
                device: device.clone(),
                len,
                name: name.to_owned(),
            },
            view,
        }
    }

    /// The whole region.
    /// Faults in bytes `[offset, offset + len)` of a region file's mapping
    /// (see `Region::populate`); false if it cannot be done (device
    /// memory, an old kernel): the pages are then faulted in when touched.
    pub(crate) fn populate(&self, offset: usize, len: usize) -> bool {
        match &self.memory {
            Memory::File(region) => region.populate(offset, len).is_ok(),
            Memory::Device { .. } => false,
        }
    }

    pub(crate) fn view(&self) -> &ShmView {
        &self.view
    }
    pub(crate) fn name(&self) -> &str {
        match &self.memory {
            Memory::File(r) => r.name(),
            Memory::Device { name, .. } => name,
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
    /// The mode and group of the region's file, for the files that belong
    /// to it (private for device memory and memfds).
    pub(crate) fn access(&self) -> FileAccess {
        self.file().map_or_else(FileAccess::private, Region::access)
    }

    /// The region file, unless the region lives in device memory.
    pub(crate) fn file(&self) -> Option<&Region> {
        match &self.memory {
            Memory::File(r) => Some(&**r),
            Memory::Device { .. } => None,
        }
    }
    /// The bytes of `obj`, an entry of this region's validated object
    /// table (so `obj.offset + obj.size` is within the mapping; panics
    /// otherwise). The view keeps them mapped.
    pub(crate) fn object_view(&self, obj: &ObjectInfo) -> ShmView {
        self.view
            .sub(obj.offset as usize, obj.size as usize)
            .expect("object of the validated table inside its region")
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
#[derive(Debug)]
pub(crate) struct ObjectInit {
    /// The object's bytes.
    pub view: ShmView,
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
    access: &FileAccess,
    features: u32,
    objects: &[ObjectSpec<'_>],
    keep_file: bool,
) -> Result<Arc<RegionMap>, OpenError> {
    create_region_with(name, backend, access, features, objects, keep_file, false)
}

/// [`create_region`]; `defer`: on 4 KiB pages, the memory is allocated but
/// not faulted in (`Region::create_deferred`): only the pages the header
/// and the objects' initialisation write are touched.
pub(crate) fn create_region_with(
    name: &str,
    backend: Backend,
    access: &FileAccess,
    features: u32,
    objects: &[ObjectSpec<'_>],
    keep_file: bool,
    defer: bool,
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
    let mut region = if defer {
        Region::create_deferred(name, end as usize, backend, access)?
    } else {
        Region::create_with_access(name, end as usize, backend, access)?
    };
    if keep_file {
        region.set_remove_on_drop(false);
    }
    let map = RegionMap::from_region(region);
    let len = map.len() as u64;
    let (pid, token) = crate::liveness::me()?;
    let hdr = map.view();
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
        // The region was just created by us (O_EXCL) and is `len` bytes,
        // zero-filled; nobody can have validated it yet because the magic
        // is still zero. The entry index is < HWL_MAX_OBJECTS.
        assert!(hdr.write(object_entry(i), entry), "object table entry");
        let view = hdr.sub(offset as usize, size as usize);
        (o.init)(ObjectInit {
            view: view.expect("object inside its region"),
            size,
            region_len: len,
        });
    }
    let flags = if map.kind().is_hugepage() {
        HWL_REGION_F_HUGEPAGE
    } else {
        0
    };
    // As above: exclusive, in bounds, aligned (the mapping is page aligned
    // and hwl_region is repr(C)).
    let header = write_header(
        hdr,
        Header {
            features,
            flags,
            page_size: map.page_size() as u32,
            total_size: len,
            creator: (pid, token),
            name,
            object_count: objects.len() as u32,
        },
    );
    assert!(header, "region header inside its region");
    // R-mag: publish the region; pairs with A-mag in `validate`.
    magic_word(&map).store(HWL_REGION_MAGIC, Ordering::Release);
    Ok(Arc::new(map))
}

/// Offset of entry `i` (< HWL_MAX_OBJECTS) of the object table.
fn object_entry(i: usize) -> usize {
    offset_of!(hwl_region, objects).wrapping_add(i.wrapping_mul(core::mem::size_of::<hwl_object>()))
}

/// The fields of a region header a creator writes (besides the magic).
struct Header<'a> {
    features: u32,
    flags: u32,
    page_size: u32,
    total_size: u64,
    creator: (u32, u32),
    name: &'a str,
    object_count: u32,
}

/// Writes the header fields of a region nobody else can have validated yet
/// (volatile: on device memory they must reach the device). False if the
/// view is too small.
fn write_header(hdr: &ShmView, h: Header<'_>) -> bool {
    hdr.write(offset_of!(hwl_region, abi_version), HWL_ABI_VERSION)
        && hdr.write(offset_of!(hwl_region, features), h.features)
        && hdr.write(offset_of!(hwl_region, flags), h.flags)
        && hdr.write(offset_of!(hwl_region, page_size), h.page_size)
        && hdr.write(offset_of!(hwl_region, total_size), h.total_size)
        && hdr.write(offset_of!(hwl_region, creator_pid), h.creator.0)
        && hdr.write(offset_of!(hwl_region, creator_token), h.creator.1)
        && hdr.write(offset_of!(hwl_region, name), name_bytes(h.name))
        && hdr.write(offset_of!(hwl_region, object_count), h.object_count)
}

/// Bytes of a region holding one SPSC ring of `geometry`: header and ring,
/// the ring rounded up to whole objects.
fn ring_region_size(geometry: Geometry) -> Result<u64, OpenError> {
    geometry
        .object_bytes()
        .and_then(hwlink_hw::single_object_region_bytes)
        .filter(|&s| s <= usize::MAX as u64)
        .ok_or_else(|| OpenError::InvalidConfig("capacity * slot size overflows".into()))
}

/// Creates a region named `name` holding one SPSC ring of `geometry`.
pub(crate) fn create_ring_region(
    name: &str,
    geometry: Geometry,
    backend: Backend,
    access: &FileAccess,
) -> Result<Arc<RegionMap>, OpenError> {
    let size = ring_region_size(geometry)?;
    let me = crate::liveness::me()?;
    let region = Region::create_with_access(name, size as usize, backend, access)?;
    let map = RegionMap::from_region(region);
    init_ring_region(&map, name, geometry, me);
    Ok(Arc::new(map))
}

/// Writes the header and ring configuration of a fresh, zero-filled region
/// that nobody else can have validated yet, then publishes it (R-mag).
fn init_ring_region(map: &RegionMap, name: &str, geometry: Geometry, creator: (u32, u32)) {
    let len = map.len() as u64;
    let hdr = map.view();
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
    // The caller created (O_EXCL) or claimed (CAS of magic) this region,
    // which holds at least HDR + ring bytes and is zero-filled; nobody can
    // have validated it yet because the magic is not HWL_REGION_MAGIC. The
    // writes are volatile because on device memory they must reach the
    // device.
    let mut ok = write_header(
        hdr,
        Header {
            features: KNOWN_FEATURES,
            flags,
            page_size: map.page_size() as u32,
            total_size: len,
            creator,
            name,
            object_count: 1,
        },
    );
    ok &= hdr.write(object_entry(0), object);
    let ring = hdr.sub(HDR as usize, len.saturating_sub(HDR) as usize);
    ok &= ring.is_some_and(|ring| crate::objects::spsc::write_config(&ring, geometry));
    assert!(ok, "link region smaller than its ring");
    if map.memory_kind().needs_store_fence() {
        crate::sync::store_fence();
    }
    // R-mag: publish the region; pairs with A-mag in `validate`.
    magic_word(map).store(HWL_REGION_MAGIC, Ordering::Release);
}

fn magic_word(map: &RegionMap) -> &AtomicU64 {
    // Every mapping is at least one page, page aligned; the magic is the
    // first u64 and is only accessed atomically after creation.
    map.view().u64_at(offset_of!(hwl_region, magic))
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
fn walk_device(device: &Arc<DeviceMemory>, name: &str) -> Result<DevicePlace, OpenError> {
    let dev_len = device.len();
    let ptr = NonNull::new(device.as_ptr()).expect("a mapping is never null");
    // SAFETY: the whole device mapping, kept mapped by the view; its bytes
    // are only reached through views.
    let whole = unsafe { ShmView::from_raw(ptr, dev_len, device.clone()) };
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
        // `offset + HDR <= len`, and offset is a multiple of HWL_OBJ_ALIGN
        // (checked when stepping), so the u64 is aligned and inside the live
        // mapping; accessed only atomically by everybody.
        let magic = whole.u64_at(offset).load(Ordering::Acquire);
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
        // HDR in-bounds bytes (checked above) of plain data, copied once;
        // only the copy is used.
        let hdr: hwl_region = whole.read(offset).expect("header checked in bounds");
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
    RegionMap::on_device(device, offset, len, name)
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
                let zeroed = map.view().zero(8, size.saturating_sub(8));
                assert!(zeroed, "a claimed place is whole 8-byte words");
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
    // The mapping holds at least HDR bytes (checked above), and hwl_region
    // is plain old data valid for any bit pattern. A volatile read copies it
    // exactly once; only the copy is used from here on.
    let hdr: hwl_region = map.view().read(0).expect("header checked in bounds");
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
    // The mapping holds at least HDR bytes; hwl_region is plain data valid
    // for any bit pattern; one volatile copy is taken.
    let hdr: hwl_region = map.view().read(0)?;
    (hdr.creator_pid != 0).then_some((hdr.creator_pid, hdr.creator_token))
}

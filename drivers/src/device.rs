//! Device memory: a mapped PCI BAR (through sysfs or VFIO), or the host file
//! that backs a VM's ivshmem BAR, together with the kind of memory it is.
//!
//! The kind decides which ring operations are allowed and which fences the
//! rings need on it (hw/SPEC.md, "Memory kinds"); it is fixed when the
//! memory is mapped and never changes.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

use crate::mapping::Mapping;

/// How the CPU caches a mapping of device memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MemoryKind {
    /// Ordinary write-back RAM: the host file behind an ivshmem BAR, or
    /// hugepages. Every ring operation is allowed; the Release/Acquire
    /// ordering of hw/SPEC.md §8 applies (on aarch64 too, §8.12).
    Cached,
    /// Uncached device memory (sysfs `resourceN`, VFIO BAR mmap): every
    /// access goes to the device in program order. Atomic read-modify-write
    /// (CAS) works when the BAR is backed by RAM (ivshmem), as locked bus
    /// cycles, on x86_64; on aarch64 this is Device memory, where atomics
    /// are not guaranteed and unaligned accesses fault (untested there,
    /// hw/SPEC.md §14.3).
    Uncached,
    /// Write-combining device memory (sysfs `resourceN_wc`): stores may be
    /// buffered and reordered, so a store fence must precede every
    /// publishing store. Atomic read-modify-write is not guaranteed.
    WriteCombining,
}

impl MemoryKind {
    /// Whether stores to this memory must be fenced (`sfence`) before a
    /// publishing store and after it.
    pub fn needs_store_fence(self) -> bool {
        self == MemoryKind::WriteCombining
    }

    /// Whether atomic read-modify-write operations (CAS, fetch-add) are
    /// guaranteed to be atomic on this memory.
    pub fn allows_atomic_rmw(self) -> bool {
        self != MemoryKind::WriteCombining
    }
}

impl fmt::Display for MemoryKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MemoryKind::Cached => "cached",
            MemoryKind::Uncached => "uncached",
            MemoryKind::WriteCombining => "write-combining",
        })
    }
}

/// Everything that can go wrong finding, enabling or mapping a device.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DeviceError {
    /// No PCI device with that address or id.
    #[error(
        "no PCI device {what} under /sys/bus/pci/devices: check `lspci -nn` (or ls \
         /sys/bus/pci/devices) and that the VM was started with the device"
    )]
    NoDevice { what: String },

    /// A BDF that is not `DDDD:BB:DD.F` or `BB:DD.F`.
    #[error(
        "{given:?} is not a PCI address: write it as 0000:00:03.0 (domain:bus:device.function)"
    )]
    BadAddress { given: String },

    /// The device has no such BAR, or it is empty.
    #[error(
        "PCI device {bdf} has no BAR {bar} ({reason}): ivshmem keeps its registers in BAR 0 \
         and its shared memory in BAR 2"
    )]
    NoBar {
        bdf: String,
        bar: u32,
        reason: String,
    },

    /// A sysfs or device file could not be read, written or mapped.
    #[error("{action} {}: {source}; run as root, and check the device is bound as expected", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },

    /// Device memory smaller than anything useful.
    #[error("{} holds only {len} bytes: give the VM at least 1 MiB of ivshmem memory", path.display())]
    TooSmall { path: PathBuf, len: u64 },

    /// A VFIO step failed.
    #[error("VFIO: {what} failed for {bdf}: {source}; {hint}")]
    Vfio {
        bdf: String,
        what: &'static str,
        source: io::Error,
        hint: &'static str,
    },

    /// The IOMMU group holds devices not bound to vfio-pci.
    #[error(
        "IOMMU group {group} of {bdf} is not viable: every device in the group must be \
         bound to vfio-pci (or no driver); bind them with `hwlink vfio bind BDF` for each of: \
         {members}"
    )]
    GroupNotViable {
        bdf: String,
        group: u32,
        members: String,
    },

    /// The device is in no IOMMU group: the IOMMU is off.
    #[error(
        "{bdf} is in no IOMMU group: the IOMMU is off; boot with intel_iommu=on (a VM \
         needs `-machine q35 -device intel-iommu,intremap=on`), or use the sysfs driver"
    )]
    NoIommuGroup { bdf: String },

    /// The VFIO kernel interface answered something this build cannot use.
    #[error("VFIO: {0}; load the modules with `modprobe vfio-pci` and check the kernel")]
    VfioUnsupported(String),

    /// A target without interrupts was asked for a doorbell.
    #[error(
        "{target} has no hardware doorbell: use vfio:BDF in the guest (QEMU's \
         ivshmem-doorbell device) and server:SOCKET on the host, or busy-poll (--wait poll)"
    )]
    NoDoorbell { target: String },

    /// A BAR that cannot be mapped.
    #[error("BAR {bar} of {bdf} cannot be mapped ({reason}): use the sysfs driver instead")]
    NotMappable {
        bdf: String,
        bar: u32,
        reason: &'static str,
    },
}

impl DeviceError {
    pub(crate) fn io(action: &'static str, path: &Path, source: io::Error) -> DeviceError {
        DeviceError::Io {
            action,
            path: path.to_owned(),
            source,
        }
    }
}

/// Mapped device memory, unmapped when dropped.
#[derive(Debug)]
pub struct DeviceMemory {
    map: Mapping,
    kind: MemoryKind,
    source: String,
    /// Whatever must stay open while the memory is mapped (a VFIO device).
    _keep: Option<Box<dyn fmt::Debug + Send + Sync>>,
}

impl DeviceMemory {
    pub(crate) fn new(
        map: Mapping,
        kind: MemoryKind,
        source: String,
        keep: Option<Box<dyn fmt::Debug + Send + Sync>>,
    ) -> DeviceMemory {
        DeviceMemory {
            map,
            kind,
            source,
            _keep: keep,
        }
    }

    /// Maps the whole file that backs a VM's ivshmem memory
    /// (`-object memory-backend-file,mem-path=FILE,share=on`) on the host:
    /// the same bytes the guest sees in BAR 2, as cached RAM.
    pub fn open_shared_file(path: &Path) -> Result<DeviceMemory, DeviceError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| DeviceError::io("open", path, e))?;
        let len = file
            .metadata()
            .map_err(|e| DeviceError::io("stat", path, e))?
            .len();
        Self::check_len(path, len)?;
        let map = Mapping::shared_populated(&file, len as usize)
            .map_err(|e| DeviceError::io("mmap", path, e))?;
        Ok(DeviceMemory::new(
            map,
            MemoryKind::Cached,
            path.display().to_string(),
            None,
        ))
    }

    /// Maps all `len` bytes of an open shared-memory file (the fd an
    /// ivshmem server hands out) as cached RAM.
    pub(crate) fn from_file(
        file: &File,
        path: &Path,
        len: u64,
    ) -> Result<DeviceMemory, DeviceError> {
        Self::check_len(path, len)?;
        let map = Mapping::shared_populated(file, len as usize)
            .map_err(|e| DeviceError::io("mmap the shared memory of", path, e))?;
        Ok(DeviceMemory::new(
            map,
            MemoryKind::Cached,
            format!("ivshmem server {}", path.display()),
            None,
        ))
    }

    /// Maps `len` bytes of a device file (sysfs `resourceN`, a VFIO device
    /// fd at a region offset).
    pub(crate) fn map_device_file(
        file: &File,
        path: &Path,
        offset: u64,
        len: u64,
        kind: MemoryKind,
        source: String,
        keep: Option<Box<dyn fmt::Debug + Send + Sync>>,
    ) -> Result<DeviceMemory, DeviceError> {
        let len_usize = usize::try_from(len).map_err(|_| DeviceError::TooSmall {
            path: path.to_owned(),
            len,
        })?;
        let map = Mapping::shared_device(file, offset, len_usize)
            .map_err(|e| DeviceError::io("mmap", path, e))?;
        Ok(DeviceMemory::new(map, kind, source, keep))
    }

    pub(crate) fn check_len(path: &Path, len: u64) -> Result<(), DeviceError> {
        if len < 1 << 20 {
            return Err(DeviceError::TooSmall {
                path: path.to_owned(),
                len,
            });
        }
        Ok(())
    }

    /// Start of the mapping, page aligned. Valid for [`len`](Self::len)
    /// bytes while `self` lives; another kernel may write it at any time, so
    /// access it with volatile or atomic operations only.
    pub fn as_ptr(&self) -> *mut u8 {
        self.map.as_ptr()
    }

    /// Bytes mapped.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Always false: device memory is at least one page.
    pub fn is_empty(&self) -> bool {
        self.map.len() == 0
    }

    /// Whether the file behind this memory (the host side of an ivshmem
    /// BAR) was shrunk under the mapping: the lost pages read as zeros.
    pub fn truncated(&self) -> bool {
        self.map.truncated()
    }

    /// How the CPU caches this memory.
    pub fn kind(&self) -> MemoryKind {
        self.kind
    }

    /// Where the memory comes from, for messages (a path or a PCI address).
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Volatile 32-bit register read (None when out of bounds).
    pub fn read_register(&self, offset: usize) -> Option<u32> {
        self.map.read_u32(offset)
    }

    /// Volatile 32-bit register write (false when out of bounds).
    pub fn write_register(&self, offset: usize, value: u32) -> bool {
        self.map.write_u32(offset, value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn a_shared_file_maps_as_cached_memory_both_ways() {
        let dir = crate::testutil::TempDir::new();
        let path = dir.path().join("ivshmem");
        let mut f = File::create(&path).unwrap();
        f.write_all(&vec![0u8; 1 << 20]).unwrap();
        let a = DeviceMemory::open_shared_file(&path).unwrap();
        let b = DeviceMemory::open_shared_file(&path).unwrap();
        assert_eq!(a.kind(), MemoryKind::Cached);
        assert_eq!(a.len(), 1 << 20);
        assert!(a.write_register(4096, 0xfeed_beef));
        assert_eq!(b.read_register(4096), Some(0xfeed_beef));
        assert_eq!(b.read_register(1 << 20), None, "out of bounds");
        assert_eq!(b.read_register(2), None, "misaligned");
    }

    #[test]
    fn a_small_file_is_refused_with_the_size_to_give() {
        let dir = crate::testutil::TempDir::new();
        let path = dir.path().join("tiny");
        File::create(&path).unwrap().set_len(4096).unwrap();
        let err = DeviceMemory::open_shared_file(&path).unwrap_err();
        assert!(err.to_string().contains("at least 1 MiB"), "{err}");
    }

    #[test]
    fn kinds_say_what_they_allow() {
        assert!(MemoryKind::WriteCombining.needs_store_fence());
        assert!(!MemoryKind::Uncached.needs_store_fence());
        assert!(MemoryKind::Uncached.allows_atomic_rmw());
        assert!(!MemoryKind::WriteCombining.allows_atomic_rmw());
    }
}

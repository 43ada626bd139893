//! Map the memory an hwlink region lives in.
//!
//! A region is one file, `hwlink.<name>`, mapped shared and read-write into
//! every process that uses it. This crate finds or creates that file on the
//! right kind of memory and maps it; it knows nothing about what is inside
//! (another crate validates the region header).
//!
//! Backings, best first:
//! - [`BackingKind::Hugetlbfs`]: a file on a hugetlbfs mount with 2 MiB pages
//!   (`/dev/hugepages`, mounted on demand when running as root);
//! - [`BackingKind::MemfdHugetlb`]: an `MFD_HUGETLB` memfd, found by name
//!   through a small locator file `<shm dir>/hwlink.<name>.memfd`;
//! - [`BackingKind::Shm`]: a file in `/dev/shm` with 4 KiB pages.
//!
//! Device memory ([`DeviceMemory`]): a PCI BAR mapped through sysfs
//! ([`PciDevice`]) or VFIO ([`VfioDevice`]), or the host file behind a VM's
//! ivshmem BAR ([`IvshmemTarget`]); and hardware doorbells between ivshmem
//! peers ([`IvshmemDoorbell`]: VFIO MSI-X in a guest, [`IvshmemClient`] of
//! an [`IvshmemServer`] on the host).
//!
//! Environment: `HWLINK_SHM_DIR` replaces `/dev/shm`, `HWLINK_HUGETLBFS_DIR`
//! replaces the hugetlbfs mount.

// The workspace's clippy.toml steers `hwlink` to its loom-switchable atomics
// (its `sync` module); this crate is never model-checked and uses std's.
#![allow(clippy::disallowed_types)]
// All unsafe code lives in `mapping`, `sigbus`, `process`, `vfio_sys` and
// `fd_passing` (which allow it); keep it that way.
#![deny(unsafe_code)]

mod access;
mod backend;
pub mod bridges;
mod device;
mod dirs;
mod doorbell;
mod error;
mod fd_passing;
pub mod ivshmem;
pub mod ivshmem_server;
mod mapping;
mod memfd;
mod name;
mod pci;
pub mod process;
#[doc(hidden)]
pub mod qemu;
mod region;
mod registry;
mod sigbus;
mod sysinfo;
mod vfio;
mod vfio_sys;

#[cfg(test)]
mod testutil;

pub use access::{FileAccess, Group};
pub use backend::{Backend, BackingKind, HUGEPAGE_SIZE, SHM_PAGE_SIZE};
pub use device::{DeviceError, DeviceMemory, MemoryKind};
pub use dirs::{share_dirs, ShareOutcome, SHARED_HUGETLBFS_DIR};
pub use doorbell::{DoorbellCounts, IvshmemDoorbell, VfioDoorbell};
pub use error::MapError;
pub use ivshmem::IvshmemTarget;
pub use ivshmem_server::{IvshmemClient, IvshmemServer};
pub use name::{validate_name, MAX_NAME_LEN};
pub use pci::{parse_bdf, PciDevice, IVSHMEM_DEVICE, IVSHMEM_VENDOR};
pub use region::{silence_fallback_warning, Region};
pub use registry::{list_regions, remove_region, RegionFile};
pub use sysinfo::hugepages_free;
pub use vfio::{Interrupt, VfioDevice};

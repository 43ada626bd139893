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
//! Environment: `HWLINK_SHM_DIR` replaces `/dev/shm`, `HWLINK_HUGETLBFS_DIR`
//! replaces the hugetlbfs mount.

// All unsafe code lives in `mapping` (which allows it); keep it that way.
#![deny(unsafe_code)]

mod backend;
mod dirs;
mod error;
mod mapping;
mod memfd;
mod name;
mod region;
mod registry;
mod sysinfo;

#[cfg(test)]
mod testutil;

pub use backend::{Backend, BackingKind, HUGEPAGE_SIZE, SHM_PAGE_SIZE};
pub use error::MapError;
pub use name::{validate_name, MAX_NAME_LEN};
pub use region::Region;
pub use registry::{list_regions, remove_region, RegionFile};
pub use sysinfo::hugepages_free;

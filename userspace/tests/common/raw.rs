//! Raw access to a region file: the test maps it itself, to read or
//! corrupt its words the way a broken or hostile peer process would. The
//! accessors are in `raw_read.rs`, `raw_write.rs` and `raw64.rs`, so that
//! a test binary includes only those it uses.
// Raw words of a region file, as another program sees them: std atomics,
// not the library's loom-switchable shim.
#![allow(clippy::disallowed_types)]

use hwlink::admin;
use std::sync::atomic::AtomicU32;

/// The status of region `name`, if it exists.
pub fn region(name: &str) -> Option<admin::RegionStatus> {
    admin::list()
        .expect("admin::list failed")
        .into_iter()
        .find(|r| r.name == name)
}

#[path = "raw_map.rs"]
mod raw_map;
use raw_map::RawMap;

/// A region file mapped read-write by the test itself.
pub struct RawRegion {
    pub(crate) map: RawMap,
}

impl RawRegion {
    /// Maps the file of region `name` (found with `admin::list`) read-write.
    pub fn open(name: &str) -> RawRegion {
        let status = region(name).unwrap_or_else(|| panic!("region {name} is not listed"));
        assert_ne!(
            status.kind,
            hwlink::BackingKind::MemfdHugetlb,
            "a memfd region has no file to map"
        );
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&status.path)
            .unwrap_or_else(|e| panic!("open {}: {e}", status.path.display()));
        // The mapping is shared with processes that write it concurrently;
        // it is only ever accessed through the atomics of the accessors,
        // never through references to plain memory.
        let map =
            RawMap::new(&file).unwrap_or_else(|e| panic!("mmap {}: {e}", status.path.display()));
        RawRegion { map }
    }

    pub(crate) fn at<T>(&self, offset: usize) -> *mut T {
        assert!(offset + core::mem::size_of::<T>() <= self.map.len());
        assert_eq!(offset % core::mem::align_of::<T>(), 0);
        // SAFETY: in bounds of the mapping (checked above).
        unsafe { self.map.as_ptr().cast_mut().add(offset).cast::<T>() }
    }

    /// The u32 at `offset` from the region start.
    pub fn u32_at(&self, offset: usize) -> &AtomicU32 {
        // SAFETY: in bounds and aligned (checked by `at`); shared memory is
        // only accessed atomically.
        unsafe { &*self.at::<AtomicU32>(offset) }
    }
}

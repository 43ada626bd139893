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

/// A region file mapped read-write by the test itself.
pub struct RawRegion {
    pub(crate) map: RawMap,
}

/// A shared read-write mapping of a whole file, unmapped on drop. Not
/// memmap2's: a hugetlbfs file must be mapped on a 2 MiB boundary, which
/// qemu-user (the aarch64 CI step) does not choose by itself.
pub(crate) struct RawMap {
    ptr: *mut u8,
    len: usize,
}

// SAFETY: an address range of a shared mapping, usable from any thread;
// the memory is only accessed through atomics and volatile accesses.
unsafe impl Send for RawMap {}
// SAFETY: as above; `&RawMap` only gives out the address and length.
unsafe impl Sync for RawMap {}

impl RawMap {
    fn new(file: &std::fs::File) -> std::io::Result<RawMap> {
        use std::os::fd::AsRawFd;
        const ALIGN: usize = 2 << 20;
        let len = usize::try_from(file.metadata()?.len()).unwrap();
        let prot = libc::PROT_READ | libc::PROT_WRITE;
        // SAFETY: a fresh range the kernel chooses; nothing is replaced.
        let p = unsafe {
            libc::mmap(
                core::ptr::null_mut(),
                len,
                prot,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        if p != libc::MAP_FAILED {
            return Ok(RawMap { ptr: p.cast(), len });
        }
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINVAL) {
            return Err(e);
        }
        // Reserve len + 2 MiB, map the file over its aligned part, give the
        // rest back.
        let span = len + ALIGN;
        // SAFETY: as above.
        let base = unsafe {
            libc::mmap(
                core::ptr::null_mut(),
                span,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        let aligned = (base as usize + ALIGN - 1) & !(ALIGN - 1);
        // SAFETY: inside our own reservation.
        let p = unsafe {
            libc::mmap(
                aligned as *mut libc::c_void,
                len,
                prot,
                libc::MAP_SHARED | libc::MAP_FIXED,
                file.as_raw_fd(),
                0,
            )
        };
        let head = aligned - base as usize;
        // SAFETY: the unused parts of our reservation (all of it on failure).
        unsafe {
            if p == libc::MAP_FAILED {
                let e = std::io::Error::last_os_error();
                libc::munmap(base, span);
                return Err(e);
            }
            if head > 0 {
                libc::munmap(base, head);
            }
            if span - head - len > 0 {
                libc::munmap((aligned + len) as *mut libc::c_void, span - head - len);
            }
        }
        Ok(RawMap { ptr: p.cast(), len })
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn as_ptr(&self) -> *const u8 {
        self.ptr
    }
}

impl Drop for RawMap {
    fn drop(&mut self) {
        // SAFETY: exactly the range one successful mmap returned.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
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

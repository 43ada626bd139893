//! A shared read-write mapping of a whole region file, as another program
//! would make it (`raw.rs`; the hostile topic subscriber).
// Raw words of a region file, as another program sees them.
#![allow(clippy::disallowed_types)]

/// A shared read-write mapping of a whole file, unmapped on drop. Not
/// memmap2's: a hugetlbfs file must be mapped on a 2 MiB boundary, which
/// qemu-user (the aarch64 CI step) does not choose by itself.
pub struct RawMap {
    ptr: *mut u8,
    len: usize,
}

// SAFETY: an address range of a shared mapping, usable from any thread;
// the memory is only accessed through atomics and volatile accesses.
unsafe impl Send for RawMap {}
// SAFETY: as above; `&RawMap` only gives out the address and length.
unsafe impl Sync for RawMap {}

impl RawMap {
    pub fn new(file: &std::fs::File) -> std::io::Result<RawMap> {
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

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn as_ptr(&self) -> *const u8 {
        self.ptr
    }
}

impl Drop for RawMap {
    fn drop(&mut self) {
        // SAFETY: exactly the range one successful mmap returned.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

//! [`Mapping`], an owned shared `mmap` of a file that is unmapped on drop
//! and guarded against the file shrinking under it (`sigbus`), plus safe
//! wrappers for the other raw calls std lacks (`memfd_create` and its
//! seals, `mount`, `geteuid`).

#![allow(unsafe_code)]

use std::ffi::CStr;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::ptr::{self, NonNull};

use crate::sigbus;

/// `len` bytes of a file mapped `MAP_SHARED` (read-write, or read-only for
/// [`Mapping::shared_readonly`]). Unmapped when dropped. File mappings are
/// guarded: if the file shrinks under them, the lost pages read as zeros
/// and [`Mapping::truncated`] says so, instead of SIGBUS.
#[derive(Debug)]
pub(crate) struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
    /// Dropped (unregistered) before the memory is unmapped: see `Drop`.
    guard: Option<sigbus::Guard>,
}

// SAFETY: `Mapping` owns an address range of a shared file mapping; the
// kernel mapping is usable from any thread, `Mapping` itself has no
// thread-affine state, and it hands out only raw pointers whose use is the
// caller's responsibility.
unsafe impl Send for Mapping {}

// SAFETY: `&Mapping` only exposes the address and length (plain reads of
// immutable fields); all access to the memory goes through raw pointers.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Maps the first `len` bytes of `file` (which must be open read-write
    /// and at least `len` bytes long), shared and prefaulted.
    pub(crate) fn shared_populated(file: &File, len: usize) -> io::Result<Mapping> {
        Self::map_file(
            file,
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_POPULATE,
        )
    }

    /// Maps the first `len` bytes of `file` shared read-write, faulting
    /// pages in only when touched: a file whose size its header does not
    /// vouch for (not yet published, or grown by someone since).
    pub(crate) fn shared_lazy(file: &File, len: usize) -> io::Result<Mapping> {
        Self::map_file(file, len, libc::PROT_READ | libc::PROT_WRITE, 0)
    }

    /// Allocates the memory of `file`'s first `len` bytes now
    /// (`fallocate`), without clearing or mapping any of it: faulting a
    /// page in later cannot fail for want of memory (no SIGBUS), and
    /// running out of it is an error here instead.
    pub(crate) fn allocate(file: &File, len: usize) -> io::Result<()> {
        let len =
            libc::off_t::try_from(len).map_err(|_| io::Error::from_raw_os_error(libc::EFBIG))?;
        // SAFETY: a plain system call on a descriptor `file` keeps open for
        // its duration; it touches no memory of ours.
        let rc = unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, len) };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    /// Faults in (writable) the pages of `[offset, offset + len)`, clipped
    /// to the mapping and widened to whole 4 KiB pages, without changing
    /// their contents (`MADV_POPULATE_WRITE`, Linux 5.14): so that whoever
    /// writes them next takes no page fault.
    pub(crate) fn populate_write(&self, offset: usize, len: usize) -> io::Result<()> {
        const PAGE: usize = 4096;
        let start = offset.min(self.len) & !(PAGE - 1);
        let end = offset.saturating_add(len).min(self.len);
        if end <= start {
            return Ok(());
        }
        // SAFETY: [start, end) lies inside our own mapping (clipped above,
        // `start` page aligned, the mapping page aligned); populating pages
        // does not change the bytes any process sees, so no Rust object's
        // memory is affected.
        let rc = unsafe {
            libc::madvise(
                self.ptr.as_ptr().add(start).cast(),
                end - start,
                libc::MADV_POPULATE_WRITE,
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    /// Maps the first `len` bytes of `file` shared and read-only: a peer's
    /// liveness file, which only its owner (and the kernel) writes.
    pub(crate) fn shared_readonly(file: &File, len: usize) -> io::Result<Mapping> {
        Self::map_file(file, len, libc::PROT_READ, 0)
    }

    fn map_file(file: &File, len: usize, prot: i32, flags: i32) -> io::Result<Mapping> {
        if len == 0 {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        // The granularity in which a shrunk file loses pages: 2 MiB on
        // hugetlbfs (its block size), else 4 KiB.
        let page = file.metadata().map_or(4096, |m| m.blksize() as usize);
        // SAFETY: a null hint without MAP_FIXED makes the kernel choose a
        // fresh address range, so no existing Rust object is aliased or
        // replaced; the descriptor is valid for the duration of the call
        // because `file` is borrowed; the result is checked below.
        let addr = unsafe {
            libc::mmap(
                ptr::null_mut(),
                len,
                prot,
                libc::MAP_SHARED | flags,
                file.as_raw_fd(),
                0,
            )
        };
        let addr = if addr == libc::MAP_FAILED {
            let e = io::Error::last_os_error();
            // qemu-user picks the address itself, 4 KiB aligned, and the
            // kernel refuses a hugetlbfs mapping there: ask for one on a
            // block boundary instead, and report that attempt's error.
            // (The kernel aligns it on its own, so natively this path is
            // not taken.)
            if e.raw_os_error() != Some(libc::EINVAL) || page <= 4096 || !page.is_power_of_two() {
                return Err(e);
            }
            Self::map_file_aligned(file, len, prot, flags, page)?
        } else {
            addr
        };
        let ptr = NonNull::new(addr.cast::<u8>())
            .ok_or_else(|| io::Error::other("mmap returned a null address"))?;
        let guard = sigbus::register(ptr.as_ptr(), len, page, prot & libc::PROT_WRITE != 0);
        Ok(Mapping { ptr, len, guard })
    }

    /// [`Mapping::map_file`] at an address aligned to `align` (a power of
    /// two): reserves `len + align` bytes of address space, maps the file
    /// over the aligned part of the reservation (`MAP_FIXED` over our own
    /// reservation only) and gives back the rest.
    fn map_file_aligned(
        file: &File,
        len: usize,
        prot: i32,
        flags: i32,
        align: usize,
    ) -> io::Result<*mut libc::c_void> {
        let span = len
            .checked_add(align)
            .ok_or_else(|| io::Error::from_raw_os_error(libc::ENOMEM))?;
        // SAFETY: a fresh anonymous reservation at an address the kernel
        // chooses; nothing existing is touched.
        let base = unsafe {
            libc::mmap(
                ptr::null_mut(),
                span,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let start = base as usize;
        // Cannot overflow: the kernel handed out [start, start + span).
        let aligned = (start + (align - 1)) & !(align - 1);
        let head = aligned - start;
        // SAFETY: [aligned, aligned + len) lies inside the reservation made
        // above (head < align), which no Rust object uses: MAP_FIXED
        // replaces only our own PROT_NONE pages.
        let addr = unsafe {
            libc::mmap(
                aligned as *mut libc::c_void,
                len,
                prot,
                libc::MAP_SHARED | libc::MAP_FIXED | flags,
                file.as_raw_fd(),
                0,
            )
        };
        if addr == libc::MAP_FAILED {
            let e = io::Error::last_os_error();
            // SAFETY: exactly the reservation made above.
            unsafe { libc::munmap(base, span) };
            return Err(e);
        }
        let tail = span - head - len;
        // SAFETY: the parts of our reservation before and after the file
        // mapping, still PROT_NONE and unused.
        unsafe {
            if head > 0 {
                libc::munmap(base, head);
            }
            if tail > 0 {
                libc::munmap((aligned + len) as *mut libc::c_void, tail);
            }
        }
        Ok(addr)
    }

    /// Whether the file was shrunk under this mapping (a SIGBUS was caught
    /// in it): the bytes past the fault are zeros now, not the file's.
    pub(crate) fn truncated(&self) -> bool {
        self.guard.as_ref().is_some_and(sigbus::Guard::truncated)
    }

    /// Maps `len` bytes of `file` from `offset` (page aligned), shared and
    /// not prefaulted: for device memory (a PCI BAR through sysfs or VFIO),
    /// where the kernel decides the caching (uncached or write-combining)
    /// and prefaulting means nothing.
    pub(crate) fn shared_device(file: &File, offset: u64, len: usize) -> io::Result<Mapping> {
        if len == 0 {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        let offset = libc::off_t::try_from(offset)
            .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        // SAFETY: as in `shared_populated`: a fresh address range chosen by
        // the kernel, a descriptor borrowed for the call, the result checked.
        let addr = unsafe {
            libc::mmap(
                ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                offset,
            )
        };
        if addr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = NonNull::new(addr.cast::<u8>())
            .ok_or_else(|| io::Error::other("mmap returned a null address"))?;
        // Device files (sysfs resources, VFIO regions) cannot shrink.
        Ok(Mapping {
            ptr,
            len,
            guard: None,
        })
    }

    /// Volatile 32-bit load at `offset` (device registers). None when the
    /// word is not inside the mapping or not 4-byte aligned.
    pub(crate) fn read_u32(&self, offset: usize) -> Option<u32> {
        let end = offset.checked_add(4)?;
        if end > self.len || offset % 4 != 0 {
            return None;
        }
        // SAFETY: `offset + 4 <= len` and the mapping is page aligned, so the
        // address is an aligned u32 inside this live mapping; volatile so the
        // device sees exactly one 32-bit read.
        Some(unsafe { self.ptr.as_ptr().add(offset).cast::<u32>().read_volatile() })
    }

    /// Volatile 32-bit store at `offset` (device registers). False when the
    /// word is not inside the mapping or not 4-byte aligned.
    pub(crate) fn write_u32(&self, offset: usize, value: u32) -> bool {
        let Some(end) = offset.checked_add(4) else {
            return false;
        };
        if end > self.len || offset % 4 != 0 {
            return false;
        }
        // SAFETY: as in `read_u32`; one volatile 32-bit store.
        unsafe {
            self.ptr
                .as_ptr()
                .add(offset)
                .cast::<u32>()
                .write_volatile(value)
        };
        true
    }

    /// Start of the mapping (page aligned).
    pub(crate) fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// Length of the mapping in bytes.
    pub(crate) fn len(&self) -> usize {
        self.len
    }
}

/// Bytes a large mapping gives back at a time before it is unmapped (see
/// `Drop`): 2 MiB, a few hundred µs of page-table work here.
const ZAP_PART: usize = 2 << 20;

impl Drop for Mapping {
    fn drop(&mut self) {
        // A large file mapping gives its pages back a part at a time first
        // (`MADV_DONTNEED`, which holds the address space's lock only for
        // reading), so that munmap, which holds it for writing, finds
        // nothing left to tear down: unmapping 64 MiB of faulted-in pages
        // at once took 5-40 ms on a 2-vCPU VM, and every page fault of the
        // process's other threads (a sender writing a fresh segment)
        // waited for it. On a shared file mapping this only drops our page
        // table entries: the file keeps its data. Device mappings are left
        // to munmap; an error here (a kernel without it for hugetlbfs)
        // just leaves the work to munmap.
        if self.guard.is_some() && self.len > ZAP_PART {
            let mut at = 0;
            while at < self.len {
                let n = ZAP_PART.min(self.len - at);
                // SAFETY: [at, at + n) lies inside our own shared file
                // mapping, which no Rust reference outlives (this is its
                // drop); dropping page table entries of a shared mapping
                // changes no byte anyone can see.
                unsafe { libc::madvise(self.ptr.as_ptr().add(at).cast(), n, libc::MADV_DONTNEED) };
                at += n;
            }
        }
        // Unregister first: once unmapped, the range may be reused.
        drop(self.guard.take());
        // SAFETY: `ptr` and `len` are exactly the range one successful mmap
        // returned, owned by this `Mapping` alone and unmapped only here.
        // Pointers handed out by `as_ptr` are documented to die with it.
        let rc = unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
        debug_assert_eq!(rc, 0, "munmap: {}", io::Error::last_os_error());
    }
}

/// `memfd_create(name, MFD_HUGETLB | MFD_HUGE_2MB | MFD_CLOEXEC |
/// MFD_ALLOW_SEALING)`.
pub(crate) fn memfd_create_hugetlb_2m(name: &CStr) -> io::Result<File> {
    let flags =
        libc::MFD_HUGETLB | libc::MFD_HUGE_2MB | libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING;
    // SAFETY: `name` is a NUL-terminated string that outlives the call and
    // the flags are valid constants; the result is checked below.
    let fd = unsafe { libc::memfd_create(name.as_ptr(), flags) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by memfd_create, so it is open and
    // owned by nothing else; `OwnedFd` takes over closing it.
    Ok(File::from(unsafe { OwnedFd::from_raw_fd(fd) }))
}

/// Seals a memfd against shrinking (`F_SEAL_SHRINK`), so that no process
/// that maps it can be hit by SIGBUS through a truncation.
pub(crate) fn seal_shrink(file: &File) -> io::Result<()> {
    // SAFETY: F_ADD_SEALS takes an int argument; the descriptor is valid
    // while `file` is borrowed.
    let rc = unsafe {
        libc::fcntl(
            file.as_raw_fd(),
            libc::F_ADD_SEALS,
            libc::F_SEAL_SHRINK | libc::F_SEAL_GROW,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Whether a memfd carries `F_SEAL_SHRINK`.
pub(crate) fn sealed_against_shrinking(file: &File) -> bool {
    // SAFETY: F_GET_SEALS takes no argument; the descriptor is valid while
    // `file` is borrowed.
    let seals = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GET_SEALS) };
    seals >= 0 && seals & libc::F_SEAL_SHRINK != 0
}

/// `mount -t hugetlbfs -o pagesize=2M,mode=1770 none <target>`.
pub(crate) fn mount_hugetlbfs_2m(target: &CStr) -> io::Result<()> {
    mount_hugetlbfs(target, c"pagesize=2M,mode=1770")
}

/// `mount -t hugetlbfs -o <options> none <target>`.
pub(crate) fn mount_hugetlbfs(target: &CStr, options: &CStr) -> io::Result<()> {
    // SAFETY: every pointer is a NUL-terminated string that outlives the
    // call; mount(2) only reads them. The result is checked below.
    let rc = unsafe {
        libc::mount(
            c"none".as_ptr(),
            target.as_ptr(),
            c"hugetlbfs".as_ptr(),
            0,
            options.as_ptr().cast(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The effective user id of this process.
pub(crate) fn effective_uid() -> u32 {
    // SAFETY: geteuid takes no arguments, touches no memory and cannot fail.
    unsafe { libc::geteuid() }
}

#[cfg(test)]
impl Mapping {
    /// Test helper: volatile write of `bytes` at `offset`.
    pub(crate) fn write_at(&self, offset: usize, bytes: &[u8]) {
        assert!(offset
            .checked_add(bytes.len())
            .is_some_and(|end| end <= self.len));
        for (i, &b) in bytes.iter().enumerate() {
            // SAFETY: `offset + i < len` (asserted above), so the address is
            // inside this live, writable mapping; volatile because another
            // mapping of the same file may look at it.
            unsafe { self.as_ptr().add(offset + i).write_volatile(b) };
        }
    }

    /// Test helper: volatile read of `len` bytes at `offset`.
    pub(crate) fn read_at(&self, offset: usize, len: usize) -> Vec<u8> {
        assert!(offset.checked_add(len).is_some_and(|end| end <= self.len));
        (0..len)
            // SAFETY: `offset + i < self.len` (asserted above), so the
            // address is inside this live, readable mapping.
            .map(|i| unsafe { self.as_ptr().add(offset + i).read_volatile() })
            .collect()
    }
}

//! The SIGBUS guard: a region file that another process shrinks (truncate,
//! `ftruncate`) would kill every process touching its lost pages with
//! SIGBUS. Every shared file mapping registers its range here; a SIGBUS
//! inside a registered range maps anonymous zero pages over the lost part
//! (from the faulting page to the end of the mapping), marks the mapping
//! truncated and lets the access run again. The library then reports the
//! region as corrupt. A SIGBUS anywhere else goes to the handler installed
//! before ours (Rust's stack-overflow handler, a runtime's, or the default
//! action), so the guard changes nothing for faults that are not ours.
//!
//! The handler only reads a fixed table of atomics and calls `mmap`, both
//! async-signal-safe on Linux.

#![allow(unsafe_code)]

use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering};
use std::sync::Once;

/// Mappings one process can have guarded at once; beyond that a mapping
/// works unguarded (one warning per process).
const SLOTS: usize = 4096;
/// `start` of a slot being filled in.
const RESERVED: usize = usize::MAX;

struct Slot {
    /// First byte of the mapping; 0: free, RESERVED: being registered.
    start: AtomicUsize,
    len: AtomicUsize,
    /// Granularity of the backing pages (4 KiB, 2 MiB hugepages).
    page: AtomicUsize,
    writable: AtomicBool,
    truncated: AtomicBool,
}

impl Slot {
    const fn new() -> Slot {
        Slot {
            start: AtomicUsize::new(0),
            len: AtomicUsize::new(0),
            page: AtomicUsize::new(4096),
            writable: AtomicBool::new(false),
            truncated: AtomicBool::new(false),
        }
    }
}

static TABLE: [Slot; SLOTS] = [const { Slot::new() }; SLOTS];
/// The SIGBUS disposition before ours (leaked once, read by the handler).
static PREVIOUS: AtomicPtr<libc::sigaction> = AtomicPtr::new(ptr::null_mut());
static INSTALL: Once = Once::new();

/// A registered mapping; unregisters on drop.
#[derive(Debug)]
pub(crate) struct Guard {
    index: usize,
}

impl Guard {
    /// Whether a SIGBUS hit this mapping: its file was shrunk under it, and
    /// the part past the fault now reads as zeros.
    pub(crate) fn truncated(&self) -> bool {
        TABLE[self.index].truncated.load(Ordering::Acquire)
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        TABLE[self.index].start.store(0, Ordering::Release);
    }
}

/// Guards `len` bytes at `start` (a live shared mapping of a file whose
/// pages are `page` bytes). None when every slot is taken.
pub(crate) fn register(start: *mut u8, len: usize, page: usize, writable: bool) -> Option<Guard> {
    INSTALL.call_once(install);
    let start = start as usize;
    for (index, slot) in TABLE.iter().enumerate() {
        if slot
            .start
            .compare_exchange(0, RESERVED, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
        {
            slot.len.store(len, Ordering::Relaxed);
            slot.page.store(page.max(4096), Ordering::Relaxed);
            slot.writable.store(writable, Ordering::Relaxed);
            slot.truncated.store(false, Ordering::Relaxed);
            slot.start.store(start, Ordering::Release);
            return Some(Guard { index });
        }
    }
    static WARNED: Once = Once::new();
    WARNED.call_once(|| {
        eprintln!(
            "hwlink: warning: more than {SLOTS} shared mappings in this process; further ones \
             are not guarded against truncation (a peer that shrinks their file kills this \
             process with SIGBUS)"
        )
    });
    None
}

fn install() {
    // SAFETY: all-zero is a valid `sigaction` (no handler, empty mask); the
    // calls only read and write these locals and the process's SIGBUS
    // disposition. The previous one is saved before ours is installed.
    unsafe {
        let mut old: libc::sigaction = core::mem::zeroed();
        if libc::sigaction(libc::SIGBUS, ptr::null(), &mut old) != 0 {
            return;
        }
        PREVIOUS.store(Box::into_raw(Box::new(old)), Ordering::Release);
        let mut new: libc::sigaction = core::mem::zeroed();
        new.sa_sigaction = handler as *const () as usize;
        new.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
        libc::sigemptyset(&mut new.sa_mask);
        libc::sigaction(libc::SIGBUS, &new, ptr::null_mut());
    }
}

extern "C" fn handler(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo for an SA_SIGINFO handler.
    let (addr, code) = unsafe { ((*info).si_addr() as usize, (*info).si_code) };
    // Only faults (si_code > 0), not a SIGBUS someone sent with kill(2).
    if code > 0 {
        for slot in TABLE.iter() {
            let start = slot.start.load(Ordering::Acquire);
            if start == 0 || start == RESERVED {
                continue;
            }
            let len = slot.len.load(Ordering::Relaxed);
            let Some(offset) = addr.checked_sub(start).filter(|&o| o < len) else {
                continue;
            };
            let page = slot.page.load(Ordering::Relaxed);
            let from = start + offset / page * page;
            let prot = if slot.writable.load(Ordering::Relaxed) {
                libc::PROT_READ | libc::PROT_WRITE
            } else {
                libc::PROT_READ
            };
            // SAFETY: [from, start + len) lies inside a mapping this
            // process registered and has not unmapped (a slot is freed
            // before its munmap); replacing its pages with private zero
            // pages changes what they read, never which memory Rust owns.
            let p = unsafe {
                libc::mmap(
                    from as *mut libc::c_void,
                    start + len - from,
                    prot,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                    -1,
                    0,
                )
            };
            if p != libc::MAP_FAILED {
                slot.truncated.store(true, Ordering::Release);
                return;
            }
            break;
        }
    }
    chain(sig, info, ctx);
}

/// Hands the signal to the disposition that was there before ours.
fn chain(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    let prev = PREVIOUS.load(Ordering::Acquire);
    // SAFETY: `prev` is null or the leaked, never-freed copy made in
    // `install`; calling a handler with the arguments the kernel gave us is
    // what the kernel would have done; resetting to SIG_DFL and re-raising
    // only touches this process's disposition.
    unsafe {
        let action = if prev.is_null() {
            libc::SIG_DFL
        } else {
            (*prev).sa_sigaction
        };
        if action == libc::SIG_DFL || action == libc::SIG_IGN {
            let mut dfl: libc::sigaction = core::mem::zeroed();
            dfl.sa_sigaction = libc::SIG_DFL;
            libc::sigaction(sig, &dfl, ptr::null_mut());
            // A fault happens again on return and now kills the process as
            // it would have; a SIGBUS sent by kill(2) must be re-raised.
            if (*info).si_code <= 0 {
                libc::raise(sig);
            }
            return;
        }
        if (*prev).sa_flags & libc::SA_SIGINFO != 0 {
            let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
                core::mem::transmute(action);
            f(sig, info, ctx);
        } else {
            let f: extern "C" fn(libc::c_int) = core::mem::transmute(action);
            f(sig);
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::mapping::Mapping;
    use std::fs::OpenOptions;

    /// A file shrunk under a guarded mapping reads as zeros past the new
    /// end, and the mapping reports it; the process survives.
    #[test]
    fn truncation_is_caught() {
        let dir = std::env::temp_dir().join(format!("hwlink-sigbus-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("f");
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        file.set_len(4 * 4096).unwrap();
        let map = Mapping::shared_populated(&file, 4 * 4096).unwrap();
        map.write_at(3 * 4096, &[7; 8]);
        assert_eq!(map.read_at(3 * 4096, 1), vec![7]);
        assert!(!map.truncated());
        file.set_len(4096).unwrap();
        // Touching the lost pages would be SIGBUS: now zeros.
        assert_eq!(map.read_at(3 * 4096, 8), vec![0; 8]);
        map.write_at(2 * 4096, &[1]);
        assert!(map.truncated());
        // The first page is still the file's.
        map.write_at(0, &[5]);
        drop(map);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

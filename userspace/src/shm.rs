//! Views of bytes in shared memory that another process may write at any
//! time, so that zero-copy reads and writes never hand safe code a Rust
//! reference (`&[u8]`, `&mut [u8]`) into peer-writable memory: the
//! compiler may assume the bytes behind a reference do not change, which a
//! peer can break at will. Like rust-vmm's `VolatileSlice`, these types only
//! copy bytes in and out (through raw pointers, never references) or read
//! and write one value at a time with volatile accesses. A copy taken while
//! a peer writes the same bytes may mix old and new bytes: a misbehaving
//! peer can spoil the payload it shares, never memory safety. hw/SPEC.md
//! §8.7 states the rule.
//!
//! This module is also the one place that turns a mapping into such
//! views: [`ShmView`] (a mapping's base and length, kept alive by its
//! owner, like rust-vmm vm-memory's `VolatileSlice`) hands out, through
//! safe methods that bounds- and alignment-check every offset, the atomic
//! words (`&AtomicU32`, `&AtomicU64` of the loom-switchable `crate::sync`)
//! and the byte views every object of a region is made of; [`ShmWord`] is
//! one such word held on its own (a doorbell's), and `ShmCells` are payload
//! bytes off the heap (or in loom cells) for the ring algorithms' tests.
#![warn(clippy::arithmetic_side_effects)]

use core::marker::PhantomData;
use core::ptr::NonNull;
use std::sync::Arc;

use crate::sync::AtomicU32;
#[cfg(not(loom))]
use crate::sync::AtomicU64;

/// Bytes in shared memory, readable for `'a`. Returned by zero-copy
/// receives ([`Receiver::recv_with`](crate::Receiver::recv_with),
/// [`ReadSlot`](crate::ReadSlot), [`ReadBatch`](crate::ReadBatch),
/// [`Mailbox::recv_with`](crate::Mailbox::recv_with)).
///
/// A view handed to a closure cannot outlive it (the slot goes back to the
/// sender right after):
///
/// ```compile_fail
/// let mut rx = hwlink::Receiver::open("prices").unwrap();
/// let kept = rx.recv_with(|m| m).unwrap();
/// ```
#[derive(Clone, Copy)]
pub struct ShmSlice<'a> {
    ptr: *const u8,
    len: usize,
    _bytes: PhantomData<&'a [u8]>,
}

impl core::fmt::Debug for ShmSlice<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ShmSlice").field("len", &self.len).finish()
    }
}

impl<'a> ShmSlice<'a> {
    /// # Safety
    /// `ptr` must be valid for reads of `len` bytes for `'a` (other
    /// processes may write them meanwhile: that is what this type is for).
    pub(crate) unsafe fn new(ptr: *const u8, len: usize) -> ShmSlice<'a> {
        ShmSlice {
            ptr,
            len,
            _bytes: PhantomData,
        }
    }

    /// Number of bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Copies the bytes into the start of `dst`; returns how many (the
    /// smaller of the two lengths).
    pub fn copy_to(&self, dst: &mut [u8]) -> usize {
        let n = self.len.min(dst.len());
        // SAFETY: `n` bytes are readable at `ptr` (contract of `new`) and
        // writable at `dst`; our own buffer cannot overlap shared memory
        // that we only reach through this raw pointer.
        unsafe { copy_bytes(self.ptr, dst.as_mut_ptr(), n) };
        n
    }

    /// A copy of the bytes.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = vec![0; self.len];
        self.copy_to(&mut v);
        v
    }

    /// Copies `dst.len()` bytes from `offset`; false (nothing copied) if
    /// they are not all inside.
    pub fn read_at(&self, offset: usize, dst: &mut [u8]) -> bool {
        match self.sub(offset, dst.len()) {
            Some(s) => {
                s.copy_to(dst);
                true
            }
            None => false,
        }
    }

    /// `N` bytes from `offset`, copied, if they are all inside.
    pub fn read_array<const N: usize>(&self, offset: usize) -> Option<[u8; N]> {
        let mut out = [0u8; N];
        self.read_at(offset, &mut out).then_some(out)
    }

    /// The byte at `index`, read once (volatile).
    pub fn get(&self, index: usize) -> Option<u8> {
        // SAFETY: index < len bytes are readable at `ptr` (contract of
        // `new`); a volatile read of one byte.
        (index < self.len).then(|| unsafe { self.ptr.add(index).read_volatile() })
    }

    /// The `len` bytes from `offset`, if they are all inside.
    pub fn sub(&self, offset: usize, len: usize) -> Option<ShmSlice<'a>> {
        let end = offset.checked_add(len)?;
        // SAFETY: [offset, end) lies within the `len` readable bytes.
        (end <= self.len).then(|| unsafe { ShmSlice::new(self.ptr.add(offset), len) })
    }

    /// Whether the bytes equal `other` (compared on a copy, a chunk at a
    /// time).
    pub fn eq_bytes(&self, other: &[u8]) -> bool {
        if other.len() != self.len {
            return false;
        }
        let mut buf = [0u8; 256];
        other.chunks(buf.len()).enumerate().all(|(i, chunk)| {
            let dst = &mut buf[..chunk.len()];
            self.read_at(i.saturating_mul(256), dst) && dst == chunk
        })
    }

    /// Runs `f` on the bytes copied, `buf.len()` at a time, into `buf`
    /// (e.g. to checksum a large message without allocating).
    pub fn for_each_chunk(&self, buf: &mut [u8], mut f: impl FnMut(&[u8])) {
        if buf.is_empty() {
            return;
        }
        let mut offset = 0;
        while offset < self.len {
            let n = self.len.saturating_sub(offset).min(buf.len());
            self.read_at(offset, &mut buf[..n]);
            f(&buf[..n]);
            offset = offset.saturating_add(n);
        }
    }
}

impl PartialEq<[u8]> for ShmSlice<'_> {
    /// Compares a copy of the bytes.
    fn eq(&self, other: &[u8]) -> bool {
        self.eq_bytes(other)
    }
}

impl<const N: usize> PartialEq<[u8; N]> for ShmSlice<'_> {
    /// Compares a copy of the bytes.
    fn eq(&self, other: &[u8; N]) -> bool {
        self.eq_bytes(other)
    }
}

/// Bytes in shared memory, writable for `'a` (a slot reserved for an
/// in-place write: [`WriteSlot`](crate::WriteSlot),
/// [`WriteBatch::slot`](crate::WriteBatch::slot)).
pub struct ShmSliceMut<'a> {
    ptr: *mut u8,
    len: usize,
    _bytes: PhantomData<&'a mut [u8]>,
}

impl core::fmt::Debug for ShmSliceMut<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ShmSliceMut")
            .field("len", &self.len)
            .finish()
    }
}

impl<'a> ShmSliceMut<'a> {
    /// # Safety
    /// `ptr` must be valid for reads and writes of `len` bytes for `'a`,
    /// and no other handle of this process may write them meanwhile.
    pub(crate) unsafe fn new(ptr: *mut u8, len: usize) -> ShmSliceMut<'a> {
        ShmSliceMut {
            ptr,
            len,
            _bytes: PhantomData,
        }
    }

    /// Number of bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Copies `src` into the start; returns how many bytes (the smaller of
    /// the two lengths).
    pub fn copy_from(&mut self, src: &[u8]) -> usize {
        let n = self.len.min(src.len());
        // SAFETY: `n` bytes are writable at `ptr` (contract of `new`) and
        // readable at `src`, which is our own memory, not the slot.
        unsafe { copy_bytes(src.as_ptr(), self.ptr, n) };
        n
    }

    /// Copies `src` to `offset`; false (nothing written) if it does not
    /// fit inside.
    pub fn write_at(&mut self, offset: usize, src: &[u8]) -> bool {
        let fits = offset
            .checked_add(src.len())
            .is_some_and(|end| end <= self.len);
        if fits {
            // SAFETY: [offset, offset + len) lies within the writable bytes.
            let mut dst = unsafe { ShmSliceMut::new(self.ptr.add(offset), src.len()) };
            dst.copy_from(src);
        }
        fits
    }

    /// Sets every byte to `value`.
    pub fn fill(&mut self, value: u8) {
        // SAFETY: `len` writable bytes at `ptr` (contract of `new`).
        unsafe { core::ptr::write_bytes(self.ptr, value, self.len) };
    }

    /// The bytes, for reading back.
    pub fn as_slice(&self) -> ShmSlice<'_> {
        // SAFETY: readable for as long as we are borrowed.
        unsafe { ShmSlice::new(self.ptr, self.len) }
    }
}

/// Copies `len` bytes. Messages are often a few bytes long, where a call
/// into `memcpy` costs more than the copy: up to 64 bytes are moved inline
/// with (possibly overlapping) unaligned loads and stores.
///
/// # Safety
/// As for `core::ptr::copy_nonoverlapping`.
#[inline(always)]
unsafe fn copy_bytes(src: *const u8, dst: *mut u8, len: usize) {
    // SAFETY: the caller guarantees `len` readable bytes at `src` and
    // writable bytes at `dst`, not overlapping; each access below, in every
    // arm, stays within the first `len` bytes.
    unsafe {
        if (8..=16).contains(&len) {
            let a = src.cast::<u64>().read_unaligned();
            let b = src.add(len.wrapping_sub(8)).cast::<u64>().read_unaligned();
            dst.cast::<u64>().write_unaligned(a);
            dst.add(len.wrapping_sub(8))
                .cast::<u64>()
                .write_unaligned(b);
        } else if (17..=32).contains(&len) {
            let a = src.cast::<u128>().read_unaligned();
            let b = src
                .add(len.wrapping_sub(16))
                .cast::<u128>()
                .read_unaligned();
            dst.cast::<u128>().write_unaligned(a);
            dst.add(len.wrapping_sub(16))
                .cast::<u128>()
                .write_unaligned(b);
        } else if (33..=64).contains(&len) {
            let a = src.cast::<[u128; 2]>().read_unaligned();
            let b = src
                .add(len.wrapping_sub(32))
                .cast::<[u128; 2]>()
                .read_unaligned();
            dst.cast::<[u128; 2]>().write_unaligned(a);
            dst.add(len.wrapping_sub(32))
                .cast::<[u128; 2]>()
                .write_unaligned(b);
        } else if (4..8).contains(&len) {
            let a = src.cast::<u32>().read_unaligned();
            let b = src.add(len.wrapping_sub(4)).cast::<u32>().read_unaligned();
            dst.cast::<u32>().write_unaligned(a);
            dst.add(len.wrapping_sub(4))
                .cast::<u32>()
                .write_unaligned(b);
        } else {
            core::ptr::copy_nonoverlapping(src, dst, len);
        }
    }
}

/// Whatever keeps a view's memory mapped (a region mapping, a heap
/// allocation); only ever dropped.
type Keeper = Arc<dyn Send + Sync>;

/// Plain data that may be copied in and out of shared memory as a whole:
/// every bit pattern is a valid value and it holds no pointers.
///
/// # Safety
/// Only for `repr(C)` types made of integers and arrays of integers (the
/// `hwl_*` structs generated from the ABI header).
#[cfg(not(loom))]
pub(crate) unsafe trait Plain: Copy {}

// SAFETY: integers and arrays of integers: any bit pattern is valid.
#[cfg(not(loom))]
unsafe impl Plain for u32 {}
// SAFETY: as above.
#[cfg(not(loom))]
unsafe impl Plain for u64 {}
// SAFETY: as above.
#[cfg(not(loom))]
unsafe impl<const N: usize> Plain for [u8; N] {}
// SAFETY: the hwl_* structs are repr(C) plain data generated from the ABI
// header: integer fields and integer arrays only (hw layout tests).
#[cfg(not(loom))]
unsafe impl Plain for hwlink_hw::hwl_region {}
// SAFETY: as above.
#[cfg(not(loom))]
unsafe impl Plain for hwlink_hw::hwl_object {}
// SAFETY: as above.
#[cfg(not(loom))]
unsafe impl Plain for hwlink_hw::hwl_spsc_ring {}
// SAFETY: as above.
#[cfg(not(loom))]
unsafe impl Plain for hwlink_hw::hwl_mpmc_ring {}
// SAFETY: as above.
#[cfg(not(loom))]
unsafe impl Plain for hwlink_hw::hwl_mailbox {}
// SAFETY: as above.
#[cfg(not(loom))]
unsafe impl Plain for hwlink_hw::hwl_domain {}
// SAFETY: as above.
#[cfg(not(loom))]
unsafe impl Plain for hwlink_hw::hwl_rendezvous {}

/// A raw view of memory shared with other processes (a mapped region or
/// part of one) or, for tests and Miri, of a heap allocation standing in
/// for one: a base pointer and a length, kept alive by its owner. Every
/// accessor bounds- and alignment-checks the offset it is given, so an
/// offset computed from an untrusted value can at worst panic or be
/// refused, never reach outside the view. Words are reached only as
/// atomics, bytes only by copy ([`ShmSlice`], [`ShmSliceMut`]).
#[cfg(not(loom))]
#[derive(Clone)]
pub(crate) struct ShmView {
    ptr: NonNull<u8>,
    len: usize,
    _keep: Keeper,
}

// SAFETY: the view grants access only through atomics and copies, which
// any thread may perform; the keeper (Send + Sync) keeps the memory mapped.
#[cfg(not(loom))]
unsafe impl Send for ShmView {}
// SAFETY: as above.
#[cfg(not(loom))]
unsafe impl Sync for ShmView {}

#[cfg(not(loom))]
impl core::fmt::Debug for ShmView {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ShmView")
            .field("addr", &self.ptr)
            .field("len", &self.len)
            .finish()
    }
}

/// Zero-filled heap bytes standing in for a mapping.
#[cfg(not(loom))]
struct HeapBytes {
    ptr: NonNull<u8>,
    layout: std::alloc::Layout,
}

// SAFETY: a plain heap allocation, only freed on drop; access to its bytes
// goes through views (atomics and copies).
#[cfg(not(loom))]
unsafe impl Send for HeapBytes {}
// SAFETY: as above.
#[cfg(not(loom))]
unsafe impl Sync for HeapBytes {}

#[cfg(not(loom))]
impl Drop for HeapBytes {
    fn drop(&mut self) {
        // SAFETY: allocated in `ShmView::heap` with this layout; the last
        // view keeping it alive is gone.
        unsafe { std::alloc::dealloc(self.ptr.as_ptr(), self.layout) }
    }
}

/// Alignment of heap views: a page, like a mapping (`HWL_OBJ_ALIGN`).
#[cfg(not(loom))]
const HEAP_ALIGN: usize = hwlink_hw::HWL_OBJ_ALIGN as usize;

#[cfg(not(loom))]
impl ShmView {
    /// A view of `len` bytes at `ptr`, kept mapped by `keep`.
    ///
    /// # Safety
    /// `ptr` must be valid for reads and writes of `len` bytes for as long
    /// as `keep` lives. Other processes may read and write the bytes at any
    /// time; this process must reach them only through views (atomics for
    /// the words, copies for the rest).
    pub(crate) unsafe fn from_raw(ptr: NonNull<u8>, len: usize, keep: Keeper) -> ShmView {
        ShmView {
            ptr,
            len,
            _keep: keep,
        }
    }

    /// `len` zero-filled bytes on the heap, page aligned like a mapping
    /// (tests, Miri, heap doorbells and rings).
    pub(crate) fn heap(len: usize) -> ShmView {
        let layout =
            std::alloc::Layout::from_size_align(len.max(1), HEAP_ALIGN).expect("heap view size");
        // SAFETY: the size is non-zero.
        let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
        let ptr = NonNull::new(ptr).unwrap_or_else(|| std::alloc::handle_alloc_error(layout));
        let keep = Arc::new(HeapBytes { ptr, layout });
        ShmView {
            ptr,
            len,
            _keep: keep,
        }
    }

    /// Bytes in the view.
    #[inline(always)]
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The address of the first byte (for alignment checks).
    pub(crate) fn addr(&self) -> usize {
        self.ptr.as_ptr() as usize
    }

    /// A pointer to `len` bytes at `offset`, aligned to `align`, if they
    /// all lie inside the view.
    #[inline(always)]
    fn at(&self, offset: usize, len: usize, align: usize) -> Option<*mut u8> {
        let end = offset.checked_add(len)?;
        if end > self.len {
            return None;
        }
        let p = self.ptr.as_ptr().wrapping_add(offset);
        ((p as usize) & align.wrapping_sub(1) == 0).then_some(p)
    }

    /// The `len` bytes at `offset` as a view of their own (an object of a
    /// region), if they lie inside this one.
    pub(crate) fn sub(&self, offset: usize, len: usize) -> Option<ShmView> {
        let p = self.at(offset, len, 1)?;
        Some(ShmView {
            // In bounds of our non-null mapping.
            ptr: NonNull::new(p)?,
            len,
            _keep: self._keep.clone(),
        })
    }

    /// The 32-bit word at `offset`, if it lies inside and is 4-aligned.
    #[cfg(not(loom))]
    #[inline(always)]
    pub(crate) fn try_u32_at(&self, offset: usize) -> Option<&AtomicU32> {
        let p = self.at(offset, 4, 4)?;
        // SAFETY: 4 in-bounds, aligned bytes of live memory (contract of
        // `from_raw`), only ever accessed atomically by this process.
        Some(unsafe { &*p.cast::<AtomicU32>() })
    }

    /// The 64-bit word at `offset`, if it lies inside and is 8-aligned.
    #[cfg(not(loom))]
    #[inline(always)]
    pub(crate) fn try_u64_at(&self, offset: usize) -> Option<&AtomicU64> {
        let p = self.at(offset, 8, 8)?;
        // SAFETY: as in `try_u32_at`, 8 bytes, 8-aligned.
        Some(unsafe { &*p.cast::<AtomicU64>() })
    }

    /// The 32-bit word at `offset`; panics if it is outside the view or
    /// misaligned (offsets of validated layouts, never raw shared values).
    #[cfg(not(loom))]
    #[inline(always)]
    pub(crate) fn u32_at(&self, offset: usize) -> &AtomicU32 {
        match self.try_u32_at(offset) {
            Some(w) => w,
            None => out_of_view(offset, 4, self.len),
        }
    }

    /// The 64-bit word at `offset`; panics like [`u32_at`](Self::u32_at).
    #[cfg(not(loom))]
    #[inline(always)]
    pub(crate) fn u64_at(&self, offset: usize) -> &AtomicU64 {
        match self.try_u64_at(offset) {
            Some(w) => w,
            None => out_of_view(offset, 8, self.len),
        }
    }

    /// The `len` bytes at `offset`, readable, if they lie inside.
    #[inline(always)]
    pub(crate) fn slice(&self, offset: usize, len: usize) -> Option<ShmSlice<'_>> {
        let p = self.at(offset, len, 1)?;
        // SAFETY: in bounds of memory live while `self` is borrowed.
        Some(unsafe { ShmSlice::new(p, len) })
    }

    /// The `len` bytes at `offset`, writable by copy, if they lie inside.
    /// Like a peer process writing the same bytes, an overlapping view can
    /// only spoil their contents, never memory safety: views copy through
    /// raw pointers and never hand out references.
    #[inline(always)]
    pub(crate) fn slice_mut(&self, offset: usize, len: usize) -> Option<ShmSliceMut<'_>> {
        let p = self.at(offset, len, 1)?;
        // SAFETY: as in `slice`; writes go through raw pointers only.
        Some(unsafe { ShmSliceMut::new(p, len) })
    }

    /// One volatile copy of the plain-data value at `offset`, if it lies
    /// inside and is aligned: a configuration read once, then validated.
    pub(crate) fn read<T: Plain>(&self, offset: usize) -> Option<T> {
        let p = self.at(
            offset,
            core::mem::size_of::<T>(),
            core::mem::align_of::<T>(),
        )?;
        // SAFETY: in bounds and aligned; T is valid for any bit pattern.
        Some(unsafe { p.cast::<T>().read_volatile() })
    }

    /// Writes `value` at `offset` (volatile, so that it reaches device
    /// memory); false, writing nothing, unless it lies inside and aligned.
    /// For creators initialising memory nobody else uses yet.
    pub(crate) fn write<T: Plain>(&self, offset: usize, value: T) -> bool {
        match self.at(
            offset,
            core::mem::size_of::<T>(),
            core::mem::align_of::<T>(),
        ) {
            Some(p) => {
                // SAFETY: in bounds and aligned; plain data.
                unsafe { p.cast::<T>().write_volatile(value) };
                true
            }
            None => false,
        }
    }

    /// Zeroes `len` bytes at `offset` with 8-byte volatile stores; false,
    /// writing nothing, unless they lie inside, 8-aligned, `len` a multiple
    /// of 8.
    pub(crate) fn zero(&self, offset: usize, len: usize) -> bool {
        if len.checked_rem(8) != Some(0) {
            return false;
        }
        let Some(start) = self.at(offset, len, 8) else {
            return false;
        };
        for i in (0..len).step_by(8) {
            // SAFETY: [offset, offset + len) is inside the view, 8-aligned.
            unsafe { start.add(i).cast::<u64>().write_volatile(0) };
        }
        true
    }

    /// Hints that the first cache lines (at most two) of the `len` bytes at
    /// `offset` are about to be written (`WRITE`: PREFETCHW) or read
    /// (PREFETCHT0). Only a hint: nothing under Miri, off x86, or outside
    /// the view.
    #[inline(always)]
    pub(crate) fn prefetch<const WRITE: bool>(&self, offset: usize, len: usize) {
        #[cfg(all(target_arch = "x86_64", not(miri)))]
        if let Some(start) = self.at(offset, len, 1) {
            for line in 0..len.min(128) / 64 {
                let p = start.wrapping_add(line.wrapping_mul(64));
                // SAFETY: a prefetch only hints the cache: it cannot fault,
                // and CPUs without PREFETCHW treat it as a NOP. The address
                // is inside the view all the same (line * 64 < len).
                unsafe {
                    if WRITE {
                        core::arch::asm!("prefetchw [{p}]", p = in(reg) p, options(nostack, preserves_flags, readonly));
                    } else {
                        core::arch::asm!("prefetcht0 [{p}]", p = in(reg) p, options(nostack, preserves_flags, readonly));
                    }
                }
            }
        }
        #[cfg(not(all(target_arch = "x86_64", not(miri))))]
        let _ = (offset, len);
    }

    /// An anonymous shared mapping of `len` bytes, which `fork`ed children
    /// share (tests of real processes).
    #[cfg(all(test, not(miri), not(loom)))]
    pub(crate) fn shared_anonymous(len: usize) -> ShmView {
        struct Anon(NonNull<u8>, usize);
        // SAFETY: a mapping only unmapped on drop.
        unsafe impl Send for Anon {}
        // SAFETY: as above.
        unsafe impl Sync for Anon {}
        impl Drop for Anon {
            fn drop(&mut self) {
                // SAFETY: our own mapping; no view of it is left.
                unsafe { libc::munmap(self.0.as_ptr().cast(), self.1) };
            }
        }
        // SAFETY: a fresh anonymous shared mapping; no pointer is passed in.
        let p = unsafe {
            libc::mmap(
                core::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(p, libc::MAP_FAILED, "mmap failed");
        let ptr = NonNull::new(p.cast::<u8>()).expect("mmap returned null");
        ShmView {
            ptr,
            len,
            _keep: Arc::new(Anon(ptr, len)),
        }
    }
}

#[cold]
#[inline(never)]
#[cfg(not(loom))]
fn out_of_view(offset: usize, size: usize, len: usize) -> ! {
    panic!(
        "shared word at offset {offset} ({size} bytes) outside a view of {len} bytes or misaligned"
    )
}

/// One 32-bit word of shared (or heap) memory held on its own, kept alive
/// by its owner and only ever accessed atomically: a doorbell's count or
/// waiters, a ring's index.
pub(crate) struct ShmWord {
    ptr: NonNull<AtomicU32>,
    _keep: Keeper,
}

// SAFETY: only a shared reference to an atomic (Sync) is handed out; the
// keeper (Send + Sync) keeps it alive.
unsafe impl Send for ShmWord {}
// SAFETY: as above.
unsafe impl Sync for ShmWord {}

impl core::fmt::Debug for ShmWord {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_tuple("ShmWord").field(&self.ptr).finish()
    }
}

impl ShmWord {
    /// The word at `offset` of `view`; panics like [`ShmView::u32_at`].
    #[cfg(not(loom))]
    pub(crate) fn at(view: &ShmView, offset: usize) -> ShmWord {
        ShmWord {
            ptr: NonNull::from(view.u32_at(offset)),
            _keep: view._keep.clone(),
        }
    }

    /// A word that `owner` holds (heap words of tests, models and
    /// benchmarks): `project` picks it out, and the Arc keeps it alive.
    pub(crate) fn owned<O: Send + Sync + 'static>(
        owner: Arc<O>,
        project: impl for<'a> FnOnce(&'a O) -> &'a AtomicU32,
    ) -> ShmWord {
        let ptr = NonNull::from(project(&owner));
        ShmWord { ptr, _keep: owner }
    }

    /// The word.
    #[inline(always)]
    pub(crate) fn get(&self) -> &AtomicU32 {
        // SAFETY: the word lies in memory the keeper holds alive (a checked
        // offset of a view, or a reference borrowed from the owner, whose
        // Arc we hold and which never moves), and is only accessed
        // atomically.
        unsafe { self.ptr.as_ref() }
    }
}

/// Byte cells off shared memory, `len` bytes each, for the ring algorithms'
/// tests: a heap view normally, loom cells under loom (so that loom checks
/// every access is ordered by the protocol).
#[cfg(test)]
pub(crate) struct ShmCells {
    #[cfg(not(loom))]
    view: ShmView,
    #[cfg(loom)]
    cells: Box<[loom::cell::UnsafeCell<Box<[u8]>>]>,
    len: usize,
}

#[cfg(test)]
impl core::fmt::Debug for ShmCells {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ShmCells").field("len", &self.len).finish()
    }
}

// SAFETY: the cells are only reached through copies by the protocol under
// test (loom and Miri check its orderings).
#[cfg(all(test, loom))]
unsafe impl Send for ShmCells {}
// SAFETY: as above.
#[cfg(all(test, loom))]
unsafe impl Sync for ShmCells {}

#[cfg(test)]
impl ShmCells {
    /// `count` zero-filled cells of `len` bytes.
    pub(crate) fn new(count: usize, len: usize) -> ShmCells {
        ShmCells {
            #[cfg(not(loom))]
            view: ShmView::heap(count.checked_mul(len).expect("cells size")),
            #[cfg(loom)]
            cells: (0..count)
                .map(|_| loom::cell::UnsafeCell::new(vec![0u8; len].into_boxed_slice()))
                .collect(),
            len,
        }
    }

    #[cfg(not(loom))]
    fn offset(&self, i: usize) -> usize {
        i.checked_mul(self.len).expect("cell index")
    }

    /// Runs `f` on cell `i`, for reading.
    pub(crate) fn with<R>(&self, i: usize, f: impl FnOnce(ShmSlice<'_>) -> R) -> R {
        #[cfg(not(loom))]
        return f(self
            .view
            .slice(self.offset(i), self.len)
            .expect("cell index"));
        #[cfg(loom)]
        // SAFETY: loom hands us the box for the duration of the closure;
        // its bytes are read by copy only.
        self.cells[i].with(|b| f(unsafe { ShmSlice::new((*b).as_ptr(), self.len) }))
    }

    /// Runs `f` on cell `i`, for writing.
    pub(crate) fn with_mut<R>(&self, i: usize, f: impl FnOnce(ShmSliceMut<'_>) -> R) -> R {
        #[cfg(not(loom))]
        return f(self
            .view
            .slice_mut(self.offset(i), self.len)
            .expect("cell index"));
        #[cfg(loom)]
        // SAFETY: loom grants exclusive access for the duration of the
        // closure (and reports any unsynchronised overlap).
        self.cells[i].with_mut(|b| f(unsafe { ShmSliceMut::new((*b).as_mut_ptr(), self.len) }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_in_and_out_and_stays_in_bounds() {
        let mut backing = vec![0u8; 300];
        // SAFETY: the vector outlives the views and nothing else touches it.
        let mut w = unsafe { ShmSliceMut::new(backing.as_mut_ptr(), 300) };
        assert_eq!(w.copy_from(&[1, 2, 3]), 3);
        assert!(w.write_at(297, &[7, 8, 9]));
        assert!(!w.write_at(298, &[7, 8, 9]), "past the end");
        assert!(!w.write_at(usize::MAX, &[1]), "overflowing offset");
        let r = w.as_slice();
        assert_eq!(r.get(2), Some(3));
        assert_eq!(r.get(300), None);
        let mut out = [0u8; 3];
        assert!(r.read_at(297, &mut out));
        assert_eq!(out, [7, 8, 9]);
        assert!(!r.read_at(298, &mut out));
        assert!(r.sub(usize::MAX, 2).is_none());
        let v = r.to_vec();
        assert_eq!(v.len(), 300);
        assert!(r.eq_bytes(&v));
        let mut sum = 0u64;
        r.for_each_chunk(&mut [0u8; 7], |c| {
            sum += c.iter().map(|&b| u64::from(b)).sum::<u64>()
        });
        assert_eq!(sum, 1 + 2 + 3 + 7 + 8 + 9);
        w.fill(0xab);
        assert!(w.as_slice().eq_bytes(&[0xab; 300]));
    }
}

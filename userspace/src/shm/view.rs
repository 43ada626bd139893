//! ShmView: one raw view of a mapping (or heap memory standing in for one)
//! whose safe methods bounds- and alignment-check every offset before handing
//! out atomics or byte views; ShmWord and the test-only ShmCells.

use super::*;

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
pub(super) struct HeapBytes {
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
pub(super) const HEAP_ALIGN: usize = hwlink_hw::HWL_OBJ_ALIGN as usize;

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
    pub(super) fn at(&self, offset: usize, len: usize, align: usize) -> Option<*mut u8> {
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
    /// `offset` are about to be written (`WRITE`: x86 PREFETCHW, aarch64
    /// PRFM PSTL1KEEP) or read (PREFETCHT0, PRFM PLDL1KEEP). Only a hint:
    /// nothing under Miri, on other architectures, or outside the view.
    #[inline(always)]
    pub(crate) fn prefetch<const WRITE: bool>(&self, offset: usize, len: usize) {
        #[cfg(all(any(target_arch = "x86_64", target_arch = "aarch64"), not(miri)))]
        if let Some(start) = self.at(offset, len, 1) {
            for line in 0..len.min(128) / 64 {
                let p = start.wrapping_add(line.wrapping_mul(64));
                // SAFETY: a prefetch only hints the cache: it cannot fault
                // (x86: CPUs without PREFETCHW treat it as a NOP; aarch64:
                // PRFM never faults). The address is inside the view all
                // the same (line * 64 < len).
                unsafe {
                    #[cfg(target_arch = "x86_64")]
                    if WRITE {
                        core::arch::asm!("prefetchw [{p}]", p = in(reg) p, options(nostack, preserves_flags, readonly));
                    } else {
                        core::arch::asm!("prefetcht0 [{p}]", p = in(reg) p, options(nostack, preserves_flags, readonly));
                    }
                    #[cfg(target_arch = "aarch64")]
                    if WRITE {
                        core::arch::asm!("prfm pstl1keep, [{p}]", p = in(reg) p, options(nostack, preserves_flags, readonly));
                    } else {
                        core::arch::asm!("prfm pldl1keep, [{p}]", p = in(reg) p, options(nostack, preserves_flags, readonly));
                    }
                }
            }
        }
        #[cfg(not(all(any(target_arch = "x86_64", target_arch = "aarch64"), not(miri))))]
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
pub(super) fn out_of_view(offset: usize, size: usize, len: usize) -> ! {
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

impl Clone for ShmWord {
    fn clone(&self) -> Self {
        ShmWord {
            ptr: self.ptr,
            _keep: self._keep.clone(),
        }
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
    pub(super) fn offset(&self, i: usize) -> usize {
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

    /// Runs `f` on the `len` bytes at byte `at` of the cells from cell `i`
    /// on (a span across cells, as a packed record's payload is), for
    /// reading: each cell is read by copy, then `f` sees the copy.
    #[cfg(loom)]
    pub(crate) fn with_span<R>(
        &self,
        i: usize,
        at: usize,
        len: usize,
        f: impl FnOnce(ShmSlice<'_>) -> R,
    ) -> Option<R> {
        let mut bytes = vec![0u8; len];
        for (k, b) in bytes.iter_mut().enumerate() {
            let (cell, off) = self.locate(i, at.checked_add(k)?)?;
            *b = self.with(cell, |c| {
                let mut one = [0u8];
                c.sub(off, 1).map(|s| s.copy_to(&mut one));
                one[0]
            });
        }
        // SAFETY: `bytes` is a local buffer valid for `len` bytes for the
        // whole call of `f`.
        Some(f(unsafe { ShmSlice::new(bytes.as_ptr(), len) }))
    }

    /// Copies `data` to byte `at` of the cells from cell `i` on (a span
    /// across cells); false if it does not fit.
    #[cfg(loom)]
    pub(crate) fn write_span(&self, i: usize, at: usize, data: &[u8]) -> bool {
        for (k, &b) in data.iter().enumerate() {
            let Some((cell, off)) = at.checked_add(k).and_then(|o| self.locate(i, o)) else {
                return false;
            };
            if !self.with_mut(cell, |mut c| c.write_at(off, &[b])) {
                return false;
            }
        }
        true
    }

    /// The cell and offset in it of byte `offset` counted from cell `i`.
    #[cfg(loom)]
    fn locate(&self, i: usize, offset: usize) -> Option<(usize, usize)> {
        let cell = i.checked_add(offset.checked_div(self.len)?)?;
        (cell < self.cells.len()).then_some((cell, offset.checked_rem(self.len)?))
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

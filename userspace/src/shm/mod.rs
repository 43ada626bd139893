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
//!
//! The small copying methods are `#[inline]`: they run in closures compiled
//! in the caller's crate (`recv_with`, the typed forms), where a call per
//! copy costs more than copying a small message.
#![warn(clippy::arithmetic_side_effects)]

use core::marker::PhantomData;
use core::ptr::NonNull;
use std::sync::Arc;

use crate::sync::AtomicU32;
#[cfg(not(loom))]
use crate::sync::AtomicU64;

mod view;
pub(crate) use self::view::*;

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
    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The address of the first byte, for code that cannot take this type
    /// (the C API hands it to C). Reads through it follow this module's
    /// rule: copies only, never a Rust reference (the peer may write the
    /// bytes meanwhile), and only while the view's borrow lasts.
    pub fn as_ptr(&self) -> *const u8 {
        self.ptr
    }

    /// Copies the bytes into the start of `dst`; returns how many (the
    /// smaller of the two lengths).
    #[inline]
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
        let mut v = Vec::with_capacity(self.len);
        self.append_to(&mut v);
        v
    }

    /// Appends a copy of the bytes to `v`, without filling the new room
    /// with zeros first (one pass over the bytes instead of two).
    #[inline]
    pub fn append_to(&self, v: &mut Vec<u8>) {
        v.reserve(self.len);
        let old = v.len();
        // `reserve` succeeded, so old + len fits the capacity: no wrap.
        let new_len = old.wrapping_add(self.len);
        let spare = v.spare_capacity_mut();
        debug_assert!(spare.len() >= self.len);
        // SAFETY: `len` bytes are readable at `ptr` (contract of `new`);
        // `spare` has room for at least `len` bytes after `reserve`; our
        // heap buffer cannot overlap shared memory reached only through
        // this raw pointer. After the copy those `len` bytes are
        // initialised, so the new length covers only initialised bytes.
        unsafe {
            copy_bytes(self.ptr, spare.as_mut_ptr().cast::<u8>(), self.len);
            v.set_len(new_len);
        }
    }

    /// Copies `dst.len()` bytes from `offset`; false (nothing copied) if
    /// they are not all inside.
    #[inline]
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
    #[inline]
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
    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The address of the first byte, for code that cannot take this type
    /// (the C API hands it to C). Writes through it follow this module's
    /// rule: copies only, never a Rust reference, and only while the view's
    /// borrow lasts.
    pub fn as_mut_ptr(&mut self) -> *mut u8 {
        self.ptr
    }

    /// Copies `src` into the start; returns how many bytes (the smaller of
    /// the two lengths).
    #[inline]
    pub fn copy_from(&mut self, src: &[u8]) -> usize {
        let n = self.len.min(src.len());
        // SAFETY: `n` bytes are writable at `ptr` (contract of `new`) and
        // readable at `src`, which is our own memory, not the slot.
        unsafe { copy_bytes(src.as_ptr(), self.ptr, n) };
        n
    }

    /// Copies `src` to `offset`; false (nothing written) if it does not
    /// fit inside.
    #[inline]
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
// SAFETY: as above.
#[cfg(not(loom))]
unsafe impl Plain for hwlink_hw::hwl_topic {}

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

//! The one place atomics come from: `core` normally, `loom` under `--cfg loom`,
//! so every concurrent algorithm in this crate can be model-checked unchanged.
//!
//! Outside loom the atomics are thin `repr(transparent)` wrappers of
//! `core`'s, so that clippy's `disallowed-types` (clippy.toml) can catch a
//! `std::sync::atomic` type used anywhere else in the crate: one would
//! escape the model checker. [`unmodelled`] has the few that must stay
//! outside the model even under loom.
// The shim is the one module that may name the std atomics.
#![allow(clippy::disallowed_types)]

#[cfg(loom)]
#[allow(unused_imports)] // AtomicU64 is used by region code, which loom builds leave out.
pub(crate) use loom::sync::atomic::{fence, AtomicU32, AtomicU64, AtomicU8, Ordering};

#[cfg(not(loom))]
pub(crate) use core::sync::atomic::{fence, Ordering};

/// A `repr(transparent)` wrapper of a `core` atomic with the same methods.
macro_rules! atomic {
    ($(#[$doc:meta])* $name:ident, $inner:ty, $value:ty) => {
        $(#[$doc])*
        #[repr(transparent)]
        #[derive(Default)]
        pub(crate) struct $name($inner);

        impl core::fmt::Debug for $name {
            fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                self.0.fmt(f)
            }
        }

        #[allow(dead_code)]
        impl $name {
            #[inline(always)]
            pub(crate) const fn new(value: $value) -> Self {
                Self(<$inner>::new(value))
            }
            #[inline(always)]
            pub(crate) fn load(&self, order: Ordering) -> $value {
                self.0.load(order)
            }
            #[inline(always)]
            pub(crate) fn store(&self, value: $value, order: Ordering) {
                self.0.store(value, order)
            }
            #[inline(always)]
            pub(crate) fn swap(&self, value: $value, order: Ordering) -> $value {
                self.0.swap(value, order)
            }
            compare_exchanges!($value, compare_exchange compare_exchange_weak);
            #[inline(always)]
            pub(crate) fn fetch_update<F>(
                &self,
                set_order: Ordering,
                fetch_order: Ordering,
                f: F,
            ) -> Result<$value, $value>
            where
                F: FnMut($value) -> Option<$value>,
            {
                self.0.fetch_update(set_order, fetch_order, f)
            }
            #[inline(always)]
            pub(crate) fn into_inner(self) -> $value {
                self.0.into_inner()
            }
            #[inline(always)]
            pub(crate) fn get_mut(&mut self) -> &mut $value {
                self.0.get_mut()
            }
            #[inline(always)]
            pub(crate) fn as_ptr(&self) -> *mut $value {
                self.0.as_ptr()
            }
        }
    };
}

/// `compare_exchange` and `compare_exchange_weak`, forwarded to core's.
macro_rules! compare_exchanges {
    ($value:ty, $($op:ident)*) => {
        $(
            #[inline(always)]
            pub(crate) fn $op(
                &self,
                current: $value,
                new: $value,
                success: Ordering,
                failure: Ordering,
            ) -> Result<$value, $value> {
                self.0.$op(current, new, success, failure)
            }
        )*
    };
}

/// The arithmetic and bit operations of an integer atomic: each forwards
/// to core's of the same name.
macro_rules! integer_ops {
    ($name:ident, $value:ty) => {
        integer_ops!($name, $value, fetch_add fetch_sub fetch_and fetch_or fetch_xor fetch_max fetch_min);
    };
    ($name:ident, $value:ty, $($op:ident)*) => {
        #[allow(dead_code)]
        impl $name {
            $(
                #[inline(always)]
                pub(crate) fn $op(&self, value: $value, order: Ordering) -> $value {
                    self.0.$op(value, order)
                }
            )*
        }
    };
}

#[cfg(not(loom))]
atomic!(
    /// `core::sync::atomic::AtomicU32` (loom's under `--cfg loom`).
    AtomicU32,
    core::sync::atomic::AtomicU32,
    u32
);
#[cfg(not(loom))]
integer_ops!(AtomicU32, u32);

#[cfg(not(loom))]
impl AtomicU32 {
    /// A `core` atomic (one another crate hands out, e.g. a liveness
    /// file's lock word) seen as ours.
    #[inline(always)]
    pub(crate) fn from_core(word: &core::sync::atomic::AtomicU32) -> &AtomicU32 {
        // SAFETY: AtomicU32 is a repr(transparent) wrapper of the core type:
        // same layout, and the reference keeps the same lifetime.
        unsafe { &*(word as *const core::sync::atomic::AtomicU32).cast::<AtomicU32>() }
    }
}
#[cfg(not(loom))]
atomic!(
    /// `core::sync::atomic::AtomicU64` (loom's under `--cfg loom`).
    AtomicU64,
    core::sync::atomic::AtomicU64,
    u64
);
#[cfg(not(loom))]
integer_ops!(AtomicU64, u64);
#[cfg(not(loom))]
atomic!(
    /// `core::sync::atomic::AtomicU8` (loom's under `--cfg loom`): the
    /// payload bytes of the topic ring's heap tests.
    AtomicU8,
    core::sync::atomic::AtomicU8,
    u8
);

/// Atomics that stay outside the model checker even under loom: process
/// wide flags (in statics, which loom atomics cannot be) and counters of
/// the model's own runs.
pub(crate) mod unmodelled {
    #[allow(unused_imports)]
    pub(crate) use core::sync::atomic::Ordering;

    atomic!(
        /// `core::sync::atomic::AtomicBool`, never loom's.
        AtomicBool,
        core::sync::atomic::AtomicBool,
        bool
    );
    atomic!(
        /// `core::sync::atomic::AtomicUsize`, never loom's.
        AtomicUsize,
        core::sync::atomic::AtomicUsize,
        usize
    );
    integer_ops!(AtomicUsize, usize);
}

/// One iteration of a busy-wait loop (a `pause` instruction, or a yield to
/// the model checker).
#[inline(always)]
pub(crate) fn spin_loop() {
    #[cfg(loom)]
    loom::thread::yield_now();
    #[cfg(not(loom))]
    core::hint::spin_loop();
}

/// A store fence for write-combining device memory (hw/SPEC.md §14.3):
/// stores before it are visible before any store after it, and leave the
/// write-combining buffer without waiting for it to be evicted. Ordinary
/// (cached or uncached) memory never needs it.
///
/// - x86_64: `sfence` (WC stores are weakly ordered even under TSO);
/// - aarch64: `dsb st`, Linux's `wmb()`: waits until every earlier store
///   has completed, to any memory type and for every observer (a device, or
///   a CPU of another kernel through ivshmem), which orders them before
///   later stores and drains the Normal-NC (write-combining) buffer. A `dmb
///   oshst` would order them but not complete them;
/// - elsewhere (and under loom): a SeqCst fence.
#[inline(always)]
pub(crate) fn store_fence() {
    #[cfg(loom)]
    fence(Ordering::SeqCst);
    #[cfg(all(not(loom), target_arch = "x86_64"))]
    // SAFETY: sfence has no operands and only orders stores; SSE is part of
    // the x86_64 baseline.
    unsafe {
        core::arch::x86_64::_mm_sfence()
    };
    #[cfg(all(not(loom), target_arch = "aarch64"))]
    // SAFETY: a barrier with no operands; it touches no memory and no
    // registers. Not `nomem`: it must stay between the stores around it.
    unsafe {
        core::arch::asm!("dsb st", options(nostack, preserves_flags))
    };
    #[cfg(all(not(loom), not(any(target_arch = "x86_64", target_arch = "aarch64"))))]
    fence(Ordering::SeqCst);
}

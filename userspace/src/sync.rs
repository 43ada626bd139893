//! The one place atomics come from: `core` normally, `loom` under `--cfg loom`,
//! so every concurrent algorithm in this crate can be model-checked unchanged.

#[cfg(loom)]
#[allow(unused_imports)] // AtomicU64 is used by region code, which loom builds leave out.
pub(crate) use loom::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};

#[cfg(not(loom))]
pub(crate) use core::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};

/// One iteration of a busy-wait loop (a `pause` instruction, or a yield to
/// the model checker).
#[inline(always)]
pub(crate) fn spin_loop() {
    #[cfg(loom)]
    loom::thread::yield_now();
    #[cfg(not(loom))]
    core::hint::spin_loop();
}

/// A store fence (`sfence`): drains write-combining buffers, so that stores
/// to write-combining device memory before it are visible before any store
/// after it. Ordinary (cached or uncached) memory never needs it.
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
    #[cfg(all(not(loom), not(target_arch = "x86_64")))]
    fence(Ordering::SeqCst);
}

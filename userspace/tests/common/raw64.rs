//! The 64-bit words of a [`RawRegion`].
// Raw words of a region file, as another program sees them: std atomics,
// not the library's loom-switchable shim.
#![allow(clippy::disallowed_types)]

use super::raw::RawRegion;
use std::sync::atomic::{AtomicU64, Ordering};

impl RawRegion {
    /// The u64 at `offset` from the region start.
    pub fn u64_at(&self, offset: usize) -> &AtomicU64 {
        // SAFETY: in bounds and aligned (checked by `at`); shared memory is
        // only accessed atomically.
        unsafe { &*self.at::<AtomicU64>(offset) }
    }
    pub fn get64(&self, offset: usize) -> u64 {
        self.u64_at(offset).load(Ordering::SeqCst)
    }
    pub fn set64(&self, offset: usize, v: u64) {
        self.u64_at(offset).store(v, Ordering::SeqCst)
    }
}

//! Writing a 32-bit word of a [`RawRegion`].

use super::raw::RawRegion;
use std::sync::atomic::Ordering;

impl RawRegion {
    pub fn set32(&self, offset: usize, v: u32) {
        self.u32_at(offset).store(v, Ordering::SeqCst)
    }
}

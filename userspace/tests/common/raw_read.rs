//! Reading a 32-bit word of a [`RawRegion`].

use super::raw::RawRegion;
use std::sync::atomic::Ordering;

impl RawRegion {
    pub fn get32(&self, offset: usize) -> u32 {
        self.u32_at(offset).load(Ordering::SeqCst)
    }
}

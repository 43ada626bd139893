//! The hardware doorbell as a [`Wake`]: an end on ivshmem memory sleeps on
//! its own MSI-X vector (guest, through VFIO) or eventfd (host, through the
//! ivshmem server), and wakes its peer by ringing the peer id and vector
//! that the peer published in its endpoint's `doorbell` word.
//!
//! Receivers sleep on vector 0 and senders on vector 1 (when the device has
//! two), so one process can hold both ends of a round trip. Interrupts carry
//! no data and may be stale: the doorbell's sleep loop re-checks the ring
//! after every wake-up, and sleeps in slices, so a lost or early interrupt
//! costs time, never a message.
#![warn(clippy::arithmetic_side_effects)]

use crate::doorbell::Wake;
use crate::error::Side;
use crate::objects::{Endpoint, RingParts};
use crate::sync::{AtomicU32, Ordering};
use hwlink_drivers::IvshmemDoorbell;
use hwlink_hw::HWL_EP_DOORBELL_IVSHMEM;
use std::sync::Arc;
use std::time::Duration;

/// The vector an end of `side` sleeps on.
pub(crate) fn vector_for(side: Side, bell: &dyn IvshmemDoorbell) -> u16 {
    match side {
        Side::Sender if bell.vectors() >= 2 => 1,
        _ => 0,
    }
}

/// The endpoint `doorbell` word that tells a peer how to wake this end.
pub(crate) fn endpoint_word(bell: &dyn IvshmemDoorbell, vector: u16) -> u32 {
    HWL_EP_DOORBELL_IVSHMEM | (u32::from(bell.own_id() & 0x7fff) << 16) | u32::from(vector)
}

/// Sleeps on this end's vector, wakes the peer through its published word.
#[derive(Debug)]
pub(crate) struct IvshmemWake {
    bell: Arc<dyn IvshmemDoorbell>,
    vector: u16,
    peer: Endpoint,
}

impl IvshmemWake {
    pub(crate) fn new(bell: Arc<dyn IvshmemDoorbell>, vector: u16, peer: Endpoint) -> Self {
        IvshmemWake { bell, vector, peer }
    }
}

impl Wake for IvshmemWake {
    fn sleep(&self, count: &AtomicU32, timeout: Option<Duration>) -> bool {
        if count.load(Ordering::Acquire) != 0 {
            return true;
        }
        match self.bell.wait(self.vector, timeout) {
            Ok(rung) => rung,
            Err(_) => {
                // A broken doorbell degrades to short sleeps: the caller
                // re-checks the ring each time.
                std::thread::sleep(
                    timeout
                        .unwrap_or(Duration::from_millis(1))
                        .min(Duration::from_millis(1)),
                );
                false
            }
        }
    }

    fn wake(&self, _count: &AtomicU32) {
        // Untrusted word, read once: ring only what it names, and only a
        // well-formed ivshmem target; a failed ring is left to the peer's
        // sleep slice.
        let word = self.peer.doorbell_now();
        if word & HWL_EP_DOORBELL_IVSHMEM != 0 {
            let peer = ((word >> 16) & 0x7fff) as u16;
            let vector = (word & 0xffff) as u16;
            let _ = self.bell.ring(peer, vector);
        }
    }
}

/// The wake path of one end of `parts` on `side`: its own vector, its
/// peer's endpoint word.
pub(crate) fn wake(
    bell: &Arc<dyn IvshmemDoorbell>,
    side: Side,
    parts: &RingParts,
) -> Arc<dyn crate::doorbell::Wake> {
    let peer = match side {
        Side::Sender => Side::Receiver,
        Side::Receiver => Side::Sender,
    };
    Arc::new(IvshmemWake::new(
        bell.clone(),
        vector_for(side, &**bell),
        parts.endpoint(peer),
    ))
}

//! `ring-lamport`: the simplest correct shared-memory ring, the reference
//! hwlink's links must beat. Lamport's single-producer single-consumer
//! queue in a region of the same kind of memory: fixed slots (an 8-byte
//! length, then the payload), a tail the producer writes and a head the
//! consumer writes on cache lines of their own, and each side re-reads the
//! other's index for every message. Both sides busy-poll.

use super::hw::{link_capacity, link_err};
use super::{BenchError, ParentSide, PeerSpec, Transport, Workload};
use hwlink_drivers::Region;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

const TAIL: usize = 0;
const HEAD: usize = 128;
const SLOTS: usize = 256;
/// How long a side spins for the other before it gives up.
const PATIENCE: Duration = Duration::from_secs(10);

/// One direction: a region holding the two indices and the slots.
struct Ring {
    region: Region,
    capacity: u64,
    stride: usize,
    /// This side's own index (the tail for the producer, the head for the
    /// consumer), kept here and stored for the other side.
    mine: u64,
}

impl Ring {
    fn geometry(size: usize) -> (u64, usize) {
        let stride = (8 + size).next_multiple_of(8);
        (u64::from(link_capacity(size)), stride)
    }

    fn create(name: &str, size: usize, backend: hwlink::Backend) -> Result<Ring, BenchError> {
        let (capacity, stride) = Ring::geometry(size);
        let len = SLOTS + capacity as usize * stride;
        let region = Region::create(name, len, backend).map_err(link_err)?;
        Ok(Ring {
            region,
            capacity,
            stride,
            mine: 0,
        })
    }

    fn open(name: &str, size: usize, backend: hwlink::Backend) -> Result<Ring, BenchError> {
        let (capacity, stride) = Ring::geometry(size);
        let region = Region::open(name, backend).map_err(link_err)?;
        if region.len() < SLOTS + capacity as usize * stride {
            return Err(BenchError::Peer(format!(
                "ring {name} is {} bytes, too small",
                region.len()
            )));
        }
        Ok(Ring {
            region,
            capacity,
            stride,
            mine: 0,
        })
    }

    fn index(&self, offset: usize) -> &AtomicU64 {
        // SAFETY: the region is page aligned and longer than SLOTS (checked
        // at open; created so); both processes access the indices only
        // atomically.
        unsafe { &*self.region.as_ptr().add(offset).cast::<AtomicU64>() }
    }

    /// Start of the slot of position `pos`.
    fn slot(&self, pos: u64) -> *mut u8 {
        let at = SLOTS + (pos % self.capacity) as usize * self.stride;
        // SAFETY: at + stride <= SLOTS + capacity * stride <= the region's
        // length (checked at open; created so).
        unsafe { self.region.as_ptr().add(at) }
    }

    /// Spins until `ready` holds, for at most PATIENCE.
    fn spin(&self, mut ready: impl FnMut() -> bool, what: &str) -> Result<(), BenchError> {
        let mut spins = 0u32;
        let mut since: Option<Instant> = None;
        while !ready() {
            core::hint::spin_loop();
            spins = spins.wrapping_add(1);
            if spins % (1 << 20) == 0 && since.get_or_insert_with(Instant::now).elapsed() > PATIENCE
            {
                return Err(BenchError::Peer(format!(
                    "ring-lamport: {what} for 10 s: the peer stopped"
                )));
            }
        }
        Ok(())
    }

    fn push(&mut self, msg: &[u8]) -> Result<(), BenchError> {
        let tail = self.mine;
        let cap = self.capacity;
        let head = self.index(HEAD);
        self.spin(
            || tail.wrapping_sub(head.load(Ordering::Acquire)) < cap,
            "no free slot",
        )?;
        let slot = self.slot(tail);
        let len = msg.len().min(self.stride - 8);
        // SAFETY: the slot is ours until the tail moves past it (the
        // consumer's head is behind it by less than capacity); it has
        // stride bytes: the length, then up to stride - 8 payload bytes.
        unsafe {
            slot.cast::<u64>().write_volatile(len as u64);
            std::ptr::copy_nonoverlapping(msg.as_ptr(), slot.add(8), len);
        }
        self.mine = tail.wrapping_add(1);
        self.index(TAIL).store(self.mine, Ordering::Release);
        Ok(())
    }

    fn pop(&mut self, buf: &mut [u8]) -> Result<(), BenchError> {
        let head = self.mine;
        let tail = self.index(TAIL);
        self.spin(|| tail.load(Ordering::Acquire) != head, "no message")?;
        let slot = self.slot(head);
        // SAFETY: the message at `head` is published (the Acquire load of
        // the tail above) and stays until the head moves past it.
        let len = unsafe { slot.cast::<u64>().read_volatile() } as usize;
        if len != buf.len() || len > self.stride - 8 {
            return Err(BenchError::Verify(format!(
                "ring-lamport: a message of {len} bytes, expected {}",
                buf.len()
            )));
        }
        // SAFETY: as above; len <= stride - 8 bytes follow the length.
        unsafe { std::ptr::copy_nonoverlapping(slot.add(8), buf.as_mut_ptr(), len) };
        self.mine = head.wrapping_add(1);
        self.index(HEAD).store(self.mine, Ordering::Release);
        Ok(())
    }
}

/// One side: a ring out, and (round trips) a ring back.
struct Lamport {
    tx: Option<Ring>,
    rx: Option<Ring>,
}

impl Transport for Lamport {
    fn send(&mut self, msg: &[u8]) -> Result<(), BenchError> {
        self.tx
            .as_mut()
            .ok_or_else(|| link_err("no sending ring"))?
            .push(msg)
    }
    fn recv(&mut self, buf: &mut [u8]) -> Result<(), BenchError> {
        self.rx
            .as_mut()
            .ok_or_else(|| link_err("no receiving ring"))?
            .pop(buf)
    }
}

fn names(spec: &PeerSpec) -> (String, String) {
    (
        format!("{}-lamport-a", spec.name),
        format!("{}-lamport-b", spec.name),
    )
}

pub(super) fn parent(spec: &PeerSpec) -> Result<ParentSide, BenchError> {
    let (a, b) = names(spec);
    let tx = Ring::create(&a, spec.size, spec.backend)?;
    let rx = match spec.workload {
        Workload::RoundTrip => Some(Ring::create(&b, spec.size, spec.backend)?),
        Workload::Stream => None,
    };
    Ok(ParentSide::new(Lamport { tx: Some(tx), rx }))
}

pub(super) fn child(spec: &PeerSpec) -> Result<Box<dyn Transport>, BenchError> {
    let (a, b) = names(spec);
    let rx = Ring::open(&a, spec.size, spec.backend)?;
    let tx = match spec.workload {
        Workload::RoundTrip => Some(Ring::open(&b, spec.size, spec.backend)?),
        Workload::Stream => None,
    };
    Ok(Box::new(Lamport { tx, rx: Some(rx) }))
}

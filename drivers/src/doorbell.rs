//! Hardware doorbells between ivshmem peers: [`IvshmemDoorbell`], rung with
//! a peer id and vector, waited on per vector. Two kinds: a guest's device
//! through VFIO ([`VfioDoorbell`]: the BAR 0 Doorbell register out, MSI-X
//! eventfds in) and a host process joined to the ivshmem server
//! ([`IvshmemClient`](crate::ivshmem_server::IvshmemClient): the peers'
//! eventfds out, its own in).
//!
//! A doorbell carries no data and may ring spuriously or coalesce: whoever
//! sleeps on it re-checks what it waits for after every wake-up.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::device::{DeviceError, DeviceMemory};
use crate::ivshmem::{REG_DOORBELL, REG_INTR_MASK, REG_IV_POSITION};
use crate::vfio::{Interrupt, VfioDevice};

/// A doorbell to and from other ivshmem peers.
pub trait IvshmemDoorbell: Send + Sync + std::fmt::Debug {
    /// This peer's id (what others write to ring it).
    fn own_id(&self) -> u16;
    /// Vectors this peer can be rung on.
    fn vectors(&self) -> u16;
    /// Raises `vector` in peer `peer`.
    fn ring(&self, peer: u16, vector: u16) -> io::Result<()>;
    /// Waits until this peer's `vector` is rung or `timeout` passes (None:
    /// forever), consuming the rings; whether it was rung.
    fn wait(&self, vector: u16, timeout: Option<Duration>) -> io::Result<bool>;
    /// How the waits so far ended, for reports.
    fn counts(&self) -> DoorbellCounts;
}

/// How a doorbell's waits ended.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DoorbellCounts {
    /// Rings sent to peers.
    pub rung: u64,
    /// Waits that ended because this peer was rung.
    pub woken: u64,
    /// Waits that ended by their timeout.
    pub timed_out: u64,
}

/// Counters behind [`DoorbellCounts`], updated by each doorbell kind.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    rung: AtomicU64,
    woken: AtomicU64,
    timed_out: AtomicU64,
}

impl Counters {
    pub(crate) fn rang(&self) {
        self.rung.fetch_add(1, Ordering::Relaxed);
    }
    /// Records how a wait ended and passes its result through.
    pub(crate) fn waited(&self, result: io::Result<bool>) -> io::Result<bool> {
        match result {
            Ok(true) => self.woken.fetch_add(1, Ordering::Relaxed),
            Ok(false) => self.timed_out.fetch_add(1, Ordering::Relaxed),
            Err(_) => 0,
        };
        result
    }
    pub(crate) fn get(&self) -> DoorbellCounts {
        DoorbellCounts {
            rung: self.rung.load(Ordering::Relaxed),
            woken: self.woken.load(Ordering::Relaxed),
            timed_out: self.timed_out.load(Ordering::Relaxed),
        }
    }
}

/// A guest's ivshmem-doorbell device through VFIO.
#[derive(Debug)]
pub struct VfioDoorbell {
    registers: DeviceMemory,
    interrupts: Vec<Interrupt>,
    id: u16,
    counters: Counters,
}

impl VfioDoorbell {
    /// Maps BAR 0, reads IVPosition and enables `vectors` MSI-X vectors
    /// (bus mastering included), one eventfd each.
    pub fn open(device: &VfioDevice, vectors: u16) -> Result<VfioDoorbell, DeviceError> {
        let registers = device.map_registers()?;
        let position = registers.read_register(REG_IV_POSITION).unwrap_or(u32::MAX);
        let id = u16::try_from(position).map_err(|_| {
            DeviceError::VfioUnsupported(format!(
                "{} has no peer id (IVPosition {:#x}): it is ivshmem-plain, or its server is \
                 not running; start QEMU with -device ivshmem-doorbell,chardev=... and \
                 `hwlink ivshmem-server`",
                device.address(),
                position
            ))
        })?;
        let interrupts = device.enable_msix(u32::from(vectors))?;
        // With MSI-X the mask register is unused; clear it anyway (INTx).
        registers.write_register(REG_INTR_MASK, 0);
        Ok(VfioDoorbell {
            registers,
            interrupts,
            id,
            counters: Counters::default(),
        })
    }
}

impl IvshmemDoorbell for VfioDoorbell {
    fn own_id(&self) -> u16 {
        self.id
    }

    fn vectors(&self) -> u16 {
        self.interrupts.len() as u16
    }

    fn ring(&self, peer: u16, vector: u16) -> io::Result<()> {
        let value = (u32::from(peer) << 16) | u32::from(vector);
        if self.registers.write_register(REG_DOORBELL, value) {
            self.counters.rang();
            Ok(())
        } else {
            Err(io::Error::other("BAR 0 has no Doorbell register"))
        }
    }

    fn wait(&self, vector: u16, timeout: Option<Duration>) -> io::Result<bool> {
        let irq = self
            .interrupts
            .get(usize::from(vector))
            .ok_or_else(|| io::Error::other(format!("no MSI-X vector {vector}")))?;
        self.counters.waited(irq.wait(timeout))
    }

    fn counts(&self) -> DoorbellCounts {
        self.counters.get()
    }
}

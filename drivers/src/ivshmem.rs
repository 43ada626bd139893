//! QEMU's ivshmem device (1af4:1110) as hwlink memory: where a link's
//! memory comes from ([`IvshmemTarget`]) and the BAR 0 registers.
//!
//! The guest sees the shared memory as BAR 2; the host sees the same bytes
//! in the file given to QEMU's `memory-backend-file`. BAR 0 holds four
//! 32-bit registers (QEMU docs/specs/ivshmem-spec):
//! IntrMask, IntrStatus (legacy INTx only), IVPosition (this VM's peer id,
//! doorbell device only) and Doorbell (write `peer << 16 | vector` to raise
//! that MSI-X vector in that peer).

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use std::sync::Arc;

use crate::device::{DeviceError, DeviceMemory};
use crate::doorbell::{IvshmemDoorbell, VfioDoorbell};
use crate::ivshmem_server::IvshmemClient;
use crate::pci::{parse_bdf, PciDevice};

/// BAR 0: interrupt mask (INTx only).
pub const REG_INTR_MASK: usize = 0x00;
/// BAR 0: interrupt status (INTx only).
pub const REG_INTR_STATUS: usize = 0x04;
/// BAR 0: this VM's peer id (`ivshmem-doorbell`; -1 while unknown).
pub const REG_IV_POSITION: usize = 0x08;
/// BAR 0: write `peer << 16 | vector` to interrupt a peer.
pub const REG_DOORBELL: usize = 0x0c;
/// The BAR that holds the shared memory.
pub const SHARED_MEMORY_BAR: u32 = 2;

/// Where the memory of an ivshmem link comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IvshmemTarget {
    /// The host's file behind the VM's ivshmem memory (cached RAM).
    HostFile(PathBuf),
    /// A guest's ivshmem device through sysfs `resource2` (uncached), or
    /// `resource2_wc` (write-combining).
    Sysfs {
        /// The device's address.
        bdf: String,
        /// Map `resource2_wc` instead of `resource2`.
        write_combining: bool,
    },
    /// A guest's ivshmem device through VFIO (uncached; interrupts too).
    Vfio {
        /// The device's address.
        bdf: String,
    },
    /// A host process joined to `hwlink ivshmem-server` at this socket as a
    /// peer: the memory is the server's file (cached), doorbells are the
    /// peers' eventfds.
    Server(PathBuf),
}

/// Interrupt vectors a doorbell needs: receivers sleep on 0, senders on 1.
pub const DOORBELL_VECTORS: u16 = 2;

impl IvshmemTarget {
    /// The accepted spellings, for help texts.
    pub const SYNTAX: &'static str = "a host file (the VM's memory-backend-file mem-path), \
         server:SOCKET (join `hwlink ivshmem-server` as a host peer), BDF or pci:BDF (sysfs \
         resource2), pci-wc:BDF (resource2_wc), vfio:BDF, or a /sys/bus/pci/devices/BDF path";

    /// Maps the shared memory and, with `doorbell`, opens the hardware
    /// doorbell too (VFIO or an ivshmem server; the other targets have
    /// none and say so).
    pub fn open(
        &self,
        doorbell: bool,
    ) -> Result<(DeviceMemory, Option<Arc<dyn IvshmemDoorbell>>), DeviceError> {
        if !doorbell {
            return Ok((self.map()?, None));
        }
        match self {
            IvshmemTarget::Vfio { bdf } => {
                let dev = crate::vfio::VfioDevice::open(bdf)?;
                let memory = dev.map_shared_memory()?;
                let bell = VfioDoorbell::open(&dev, DOORBELL_VECTORS)?;
                Ok((memory, Some(Arc::new(bell))))
            }
            IvshmemTarget::Server(socket) => {
                let client = IvshmemClient::connect(socket, DOORBELL_VECTORS)?;
                let memory = client.take_memory().expect("a new client holds its memory");
                Ok((memory, Some(client)))
            }
            _ => Err(DeviceError::NoDoorbell {
                target: self.to_string(),
            }),
        }
    }

    /// Maps the shared memory (the whole file, or all of BAR 2).
    pub fn map(&self) -> Result<DeviceMemory, DeviceError> {
        match self {
            IvshmemTarget::Server(socket) => {
                let client = IvshmemClient::connect(socket, DOORBELL_VECTORS)?;
                Ok(client.take_memory().expect("a new client holds its memory"))
            }
            IvshmemTarget::HostFile(path) => DeviceMemory::open_shared_file(path),
            IvshmemTarget::Sysfs {
                bdf,
                write_combining,
            } => PciDevice::by_address(bdf)?.map_bar(SHARED_MEMORY_BAR, *write_combining),
            IvshmemTarget::Vfio { bdf } => {
                let dev = crate::vfio::VfioDevice::open(bdf)?;
                dev.map_shared_memory()
            }
        }
    }
}

impl FromStr for IvshmemTarget {
    type Err = DeviceError;

    fn from_str(s: &str) -> Result<IvshmemTarget, DeviceError> {
        if let Some(socket) = s.strip_prefix("server:") {
            return Ok(IvshmemTarget::Server(PathBuf::from(socket)));
        }
        if let Some(bdf) = s.strip_prefix("vfio:") {
            return Ok(IvshmemTarget::Vfio {
                bdf: parse_bdf(bdf)?,
            });
        }
        if let Some(bdf) = s.strip_prefix("pci-wc:") {
            return Ok(IvshmemTarget::Sysfs {
                bdf: parse_bdf(bdf)?,
                write_combining: true,
            });
        }
        if let Some(bdf) = s.strip_prefix("pci:") {
            return Ok(IvshmemTarget::Sysfs {
                bdf: parse_bdf(bdf)?,
                write_combining: false,
            });
        }
        let path = Path::new(s);
        if s.starts_with("/sys/") {
            let dev = PciDevice::by_sysfs_path(
                path.parent()
                    .filter(|_| s.contains("/resource"))
                    .unwrap_or(path),
            )?;
            return Ok(IvshmemTarget::Sysfs {
                bdf: dev.address().to_owned(),
                write_combining: s.ends_with("_wc"),
            });
        }
        if let Ok(bdf) = parse_bdf(s) {
            return Ok(IvshmemTarget::Sysfs {
                bdf,
                write_combining: false,
            });
        }
        if s.contains('/') || path.exists() {
            return Ok(IvshmemTarget::HostFile(path.to_owned()));
        }
        Err(DeviceError::BadAddress {
            given: format!("{s} (expected {})", IvshmemTarget::SYNTAX),
        })
    }
}

impl fmt::Display for IvshmemTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IvshmemTarget::HostFile(p) => write!(f, "{}", p.display()),
            IvshmemTarget::Sysfs {
                bdf,
                write_combining: false,
            } => write!(f, "pci:{bdf}"),
            IvshmemTarget::Sysfs {
                bdf,
                write_combining: true,
            } => write!(f, "pci-wc:{bdf}"),
            IvshmemTarget::Vfio { bdf } => write!(f, "vfio:{bdf}"),
            IvshmemTarget::Server(socket) => write!(f, "server:{}", socket.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse_and_display() {
        for (given, shown) in [
            ("/dev/shm/vm-mem", "/dev/shm/vm-mem"),
            ("00:03.0", "pci:0000:00:03.0"),
            ("pci:0000:00:03.0", "pci:0000:00:03.0"),
            ("pci-wc:00:03.0", "pci-wc:0000:00:03.0"),
            ("vfio:0000:00:03.0", "vfio:0000:00:03.0"),
            ("server:/run/ivshmem.sock", "server:/run/ivshmem.sock"),
        ] {
            let t: IvshmemTarget = given.parse().unwrap();
            assert_eq!(t.to_string(), shown, "{given}");
            assert_eq!(t.to_string().parse::<IvshmemTarget>().unwrap(), t);
        }
        let err = "nonsense".parse::<IvshmemTarget>().unwrap_err();
        assert!(err.to_string().contains("vfio:BDF"), "{err}");
        assert!("vfio:zz".parse::<IvshmemTarget>().is_err());
    }
}

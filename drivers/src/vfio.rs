//! The VFIO driver: a PCI device bound to vfio-pci, opened through its IOMMU
//! group. Container (API version, type1 IOMMU), group (viable, attached to
//! the container), device (info, regions, config space, MSI-X eventfds,
//! reset). Dropping the device disables its interrupts and releases the
//! group and container in order.

use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use vfio_bindings::bindings::vfio::{
    VFIO_API_VERSION, VFIO_DEVICE_FLAGS_RESET, VFIO_GROUP_FLAGS_VIABLE, VFIO_PCI_BAR0_REGION_INDEX,
    VFIO_PCI_BAR2_REGION_INDEX, VFIO_PCI_CONFIG_REGION_INDEX, VFIO_PCI_MSIX_IRQ_INDEX,
    VFIO_REGION_INFO_FLAG_MMAP, VFIO_TYPE1_IOMMU,
};

use crate::device::{DeviceError, DeviceMemory, MemoryKind};
use crate::pci::{parse_bdf, PciDevice};
use crate::vfio_sys as sys;

/// PCI config space: the command register and its bus-master bit.
const PCI_COMMAND: u64 = 0x04;
const PCI_COMMAND_MEMORY: u16 = 0x2;
const PCI_COMMAND_MASTER: u16 = 0x4;

/// The open container, group and device files. Shared (Arc) by every BAR
/// mapping and interrupt of the device, so that they stay valid.
#[derive(Debug)]
struct Handles {
    // Field order is drop order: device, then group, then container.
    device: File,
    group: File,
    _container: File,
}

impl Drop for Handles {
    fn drop(&mut self) {
        // Disable MSI-X (ignored if it was never enabled), then detach the
        // group; closing the files releases the rest.
        let _ = sys::set_irq_eventfds(&self.device, VFIO_PCI_MSIX_IRQ_INDEX, 0, &[]);
        let _ = sys::ioctl_value(&self.group, sys::GROUP_UNSET_CONTAINER, 0);
    }
}

/// A PCI device opened through VFIO.
#[derive(Debug, Clone)]
pub struct VfioDevice {
    bdf: String,
    handles: Arc<Handles>,
    info: DeviceInfo,
}

/// What `VFIO_DEVICE_GET_INFO` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceInfo {
    /// Regions (BARs, ROM, config space, ...).
    pub regions: u32,
    /// Interrupt indexes (INTx, MSI, MSI-X, ...).
    pub irqs: u32,
    /// Whether VFIO_DEVICE_RESET is supported.
    pub can_reset: bool,
}

/// What `VFIO_DEVICE_GET_REGION_INFO` says about one region.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegionInfo {
    /// Bytes.
    pub size: u64,
    /// Offset of the region in the device file.
    pub offset: u64,
    /// Whether it can be mmapped.
    pub mappable: bool,
}

fn err<'a>(
    bdf: &'a str,
    what: &'static str,
    hint: &'static str,
) -> impl FnOnce(io::Error) -> DeviceError + 'a {
    move |source| DeviceError::Vfio {
        bdf: bdf.to_owned(),
        what,
        source,
        hint,
    }
}

impl VfioDevice {
    /// Opens the device at `bdf`, which must be bound to vfio-pci (`hwlink
    /// vfio bind BDF`): creates a type1 container, checks the group is
    /// viable, attaches it, gets the device file and resets the device when
    /// it supports reset.
    pub fn open(bdf: &str) -> Result<VfioDevice, DeviceError> {
        let bdf = parse_bdf(bdf)?;
        let pci = PciDevice::by_address(&bdf)?;
        let group_no = pci
            .iommu_group()
            .ok_or_else(|| DeviceError::NoIommuGroup { bdf: bdf.clone() })?;
        let rw = |p: &Path| OpenOptions::new().read(true).write(true).open(p);

        let container = rw(Path::new("/dev/vfio/vfio")).map_err(err(
            &bdf,
            "open /dev/vfio/vfio",
            "load the vfio module (modprobe vfio-pci)",
        ))?;
        let version = sys::ioctl_value(&container, sys::GET_API_VERSION, 0).map_err(err(
            &bdf,
            "VFIO_GET_API_VERSION",
            "check the kernel's VFIO support",
        ))?;
        if version != VFIO_API_VERSION as i32 {
            return Err(DeviceError::VfioUnsupported(format!(
                "API version {version}, this build speaks {VFIO_API_VERSION}"
            )));
        }
        let type1 = sys::ioctl_value(&container, sys::CHECK_EXTENSION, VFIO_TYPE1_IOMMU.into())
            .map_err(err(&bdf, "VFIO_CHECK_EXTENSION", "load vfio_iommu_type1"))?;
        if type1 != 1 {
            return Err(DeviceError::VfioUnsupported(
                "the type1 IOMMU backend is missing (insmod vfio_iommu_type1)".into(),
            ));
        }

        let group_path = format!("/dev/vfio/{group_no}");
        let group = rw(Path::new(&group_path)).map_err(err(
            &bdf,
            "open the IOMMU group file",
            "bind the device to vfio-pci first: hwlink vfio bind BDF",
        ))?;
        let status = sys::group_status(&group).map_err(err(
            &bdf,
            "VFIO_GROUP_GET_STATUS",
            "check the group file",
        ))?;
        if status.flags & VFIO_GROUP_FLAGS_VIABLE == 0 {
            let members = pci.group_members_not_on(&["vfio-pci"], true).join(", ");
            return Err(DeviceError::GroupNotViable {
                bdf,
                group: group_no,
                members,
            });
        }
        sys::group_set_container(&group, &container).map_err(err(
            &bdf,
            "VFIO_GROUP_SET_CONTAINER",
            "is another process using the group?",
        ))?;
        sys::ioctl_value(&container, sys::SET_IOMMU, VFIO_TYPE1_IOMMU.into()).map_err(err(
            &bdf,
            "VFIO_SET_IOMMU (type1)",
            "check the IOMMU is on (intel_iommu=on)",
        ))?;
        let name = CString::new(bdf.clone()).expect("a BDF has no NUL");
        let device = sys::group_get_device_fd(&group, &name).map_err(err(
            &bdf,
            "VFIO_GROUP_GET_DEVICE_FD",
            "is the device bound to vfio-pci?",
        ))?;

        let raw = sys::device_info(&device).map_err(err(
            &bdf,
            "VFIO_DEVICE_GET_INFO",
            "check the device file",
        ))?;
        let info = DeviceInfo {
            regions: raw.num_regions,
            irqs: raw.num_irqs,
            can_reset: raw.flags & VFIO_DEVICE_FLAGS_RESET != 0,
        };
        let dev = VfioDevice {
            bdf,
            handles: Arc::new(Handles {
                device,
                group,
                _container: container,
            }),
            info,
        };
        // Start from a clean device (no interrupts left configured by an
        // earlier user); ivshmem's BAR 2 is host RAM and keeps its bytes.
        if dev.info.can_reset {
            dev.reset()?;
        }
        Ok(dev)
    }

    /// The device's address.
    pub fn address(&self) -> &str {
        &self.bdf
    }

    /// What VFIO_DEVICE_GET_INFO reported.
    pub fn info(&self) -> DeviceInfo {
        self.info
    }

    /// VFIO_DEVICE_GET_REGION_INFO for region `index`.
    pub fn region_info(&self, index: u32) -> Result<RegionInfo, DeviceError> {
        if index >= self.info.regions {
            return Err(DeviceError::NoBar {
                bdf: self.bdf.clone(),
                bar: index,
                reason: format!("the device has {} regions", self.info.regions),
            });
        }
        let raw = sys::region_info(&self.handles.device, index).map_err(err(
            &self.bdf,
            "VFIO_DEVICE_GET_REGION_INFO",
            "check the region index",
        ))?;
        Ok(RegionInfo {
            size: raw.size,
            offset: raw.offset,
            mappable: raw.flags & VFIO_REGION_INFO_FLAG_MMAP != 0,
        })
    }

    /// Maps the whole of BAR `bar` (uncached), after checking it is
    /// mappable. The mapping keeps the device open.
    pub fn map_bar(&self, bar: u32) -> Result<DeviceMemory, DeviceError> {
        let info = self.region_info(bar)?;
        if info.size == 0 {
            return Err(DeviceError::NoBar {
                bdf: self.bdf.clone(),
                bar,
                reason: "the BAR is empty".into(),
            });
        }
        if !info.mappable {
            return Err(DeviceError::NotMappable {
                bdf: self.bdf.clone(),
                bar,
                reason: "VFIO does not set VFIO_REGION_INFO_FLAG_MMAP for it",
            });
        }
        self.enable_memory_and_bus_master()?;
        DeviceMemory::map_device_file(
            &self.handles.device,
            Path::new("/dev/vfio"),
            info.offset,
            info.size,
            MemoryKind::Uncached,
            format!("vfio:{} BAR{bar}", self.bdf),
            Some(Box::new(self.clone())),
        )
    }

    /// BAR 2, the ivshmem shared memory.
    pub fn map_shared_memory(&self) -> Result<DeviceMemory, DeviceError> {
        self.map_bar(VFIO_PCI_BAR2_REGION_INDEX)
    }

    /// BAR 0, the ivshmem registers.
    pub fn map_registers(&self) -> Result<DeviceMemory, DeviceError> {
        self.map_bar(VFIO_PCI_BAR0_REGION_INDEX)
    }

    fn config(&self) -> Result<RegionInfo, DeviceError> {
        self.region_info(VFIO_PCI_CONFIG_REGION_INDEX)
    }

    /// Reads the PCI command register through the config-space region.
    pub fn command(&self) -> Result<u16, DeviceError> {
        let cfg = self.config()?;
        let mut b = [0u8; 2];
        self.handles
            .device
            .read_exact_at(&mut b, cfg.offset + PCI_COMMAND)
            .map_err(err(
                &self.bdf,
                "read the PCI command register",
                "check the config region",
            ))?;
        Ok(u16::from_le_bytes(b))
    }

    /// Sets memory decoding and bus mastering in the command register:
    /// without bus mastering, MSI-X messages never reach the CPU.
    pub fn enable_memory_and_bus_master(&self) -> Result<(), DeviceError> {
        let cfg = self.config()?;
        let cmd = self.command()?;
        let want = cmd | PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER;
        if want != cmd {
            self.handles
                .device
                .write_all_at(&want.to_le_bytes(), cfg.offset + PCI_COMMAND)
                .map_err(err(
                    &self.bdf,
                    "write the PCI command register",
                    "check the config region",
                ))?;
        }
        Ok(())
    }

    /// Vectors of MSI-X (VFIO_DEVICE_GET_IRQ_INFO); 0 when it has none.
    pub fn msix_vectors(&self) -> Result<u32, DeviceError> {
        let raw = sys::irq_info(&self.handles.device, VFIO_PCI_MSIX_IRQ_INDEX).map_err(err(
            &self.bdf,
            "VFIO_DEVICE_GET_IRQ_INFO",
            "check the device",
        ))?;
        Ok(raw.count)
    }

    /// Enables MSI-X with one eventfd per vector for the first `vectors`
    /// vectors (VFIO_DEVICE_SET_IRQS), after setting bus mastering.
    pub fn enable_msix(&self, vectors: u32) -> Result<Vec<Interrupt>, DeviceError> {
        let have = self.msix_vectors()?;
        if vectors == 0 || vectors > have {
            return Err(DeviceError::VfioUnsupported(format!(
                "{} has {have} MSI-X vectors, {vectors} asked for (start QEMU's ivshmem-doorbell \
                 with vectors=N)",
                self.bdf
            )));
        }
        self.enable_memory_and_bus_master()?;
        let fds = (0..vectors)
            .map(|_| sys::eventfd())
            .collect::<io::Result<Vec<OwnedFd>>>()
            .map_err(err(&self.bdf, "eventfd", "raise the open-files limit"))?;
        let raw: Vec<i32> = fds.iter().map(|f| f.as_raw_fd()).collect();
        sys::set_irq_eventfds(&self.handles.device, VFIO_PCI_MSIX_IRQ_INDEX, 0, &raw).map_err(
            err(
                &self.bdf,
                "VFIO_DEVICE_SET_IRQS (MSI-X)",
                "check the guest kernel's interrupt remapping (intremap=on)",
            ),
        )?;
        Ok(fds
            .into_iter()
            .map(|fd| Interrupt {
                fd: File::from(fd),
                _device: self.clone(),
            })
            .collect())
    }

    /// VFIO_DEVICE_RESET, when the device supports it.
    pub fn reset(&self) -> Result<(), DeviceError> {
        if !self.info.can_reset {
            return Err(DeviceError::VfioUnsupported(format!(
                "{} cannot be reset",
                self.bdf
            )));
        }
        sys::ioctl_value(&self.handles.device, sys::DEVICE_RESET, 0).map_err(err(
            &self.bdf,
            "VFIO_DEVICE_RESET",
            "close other users of the device",
        ))?;
        Ok(())
    }
}

/// One MSI-X vector's eventfd; keeps the device open.
#[derive(Debug)]
pub struct Interrupt {
    fd: File,
    _device: VfioDevice,
}

impl Interrupt {
    /// Waits for the interrupt for at most `timeout` (None: forever) and
    /// consumes every pending one. Returns whether any arrived.
    pub fn wait(&self, timeout: Option<Duration>) -> io::Result<bool> {
        if self.take()? {
            return Ok(true);
        }
        if !sys::poll_readable(self.fd.as_raw_fd(), timeout)? {
            return Ok(false);
        }
        self.take()
    }

    /// Consumes pending interrupts without waiting.
    pub fn take(&self) -> io::Result<bool> {
        let mut b = [0u8; 8];
        match (&self.fd).read(&mut b) {
            Ok(8) => Ok(true),
            Ok(_) => Ok(false),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(false),
            Err(e) => Err(e),
        }
    }
}

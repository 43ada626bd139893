//! PCI devices through sysfs (`/sys/bus/pci/devices/<BDF>`): find a device
//! by address or by vendor/device id, enable it, map a BAR through
//! `resourceN` (uncached) or `resourceN_wc` (write-combining), and switch
//! its driver (`driver_override` + `drivers_probe`).
//!
//! `HWLINK_SYSFS_PCI` replaces `/sys/bus/pci` (tests).

use std::fs::{self, OpenOptions};
use std::path::{Path, PathBuf};

use crate::device::{DeviceError, DeviceMemory, MemoryKind};

/// QEMU's ivshmem device: Red Hat's vendor id and the ivshmem device id.
pub const IVSHMEM_VENDOR: u16 = 0x1af4;
/// See [`IVSHMEM_VENDOR`].
pub const IVSHMEM_DEVICE: u16 = 0x1110;

fn sysfs_pci() -> PathBuf {
    std::env::var_os("HWLINK_SYSFS_PCI")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/sys/bus/pci"))
}

/// Normalises a PCI address to `DDDD:BB:DD.F` (lower case); `BB:DD.F`
/// means domain 0.
pub fn parse_bdf(given: &str) -> Result<String, DeviceError> {
    let bad = || DeviceError::BadAddress {
        given: given.to_owned(),
    };
    let s = given.trim().to_ascii_lowercase();
    let full = if s.matches(':').count() == 1 {
        format!("0000:{s}")
    } else {
        s
    };
    let (dom, rest) = full.split_once(':').ok_or_else(bad)?;
    let (bus, rest) = rest.split_once(':').ok_or_else(bad)?;
    let (dev, func) = rest.split_once('.').ok_or_else(bad)?;
    let hex = |x: &str, n: usize| x.len() == n && x.chars().all(|c| c.is_ascii_hexdigit());
    if !(hex(dom, 4) && hex(bus, 2) && hex(dev, 2) && hex(func, 1)) {
        return Err(bad());
    }
    Ok(full)
}

/// One PCI function, by its sysfs directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PciDevice {
    bdf: String,
    dir: PathBuf,
}

impl PciDevice {
    /// The device at `bdf` (e.g. `0000:00:03.0`).
    pub fn by_address(bdf: &str) -> Result<PciDevice, DeviceError> {
        let bdf = parse_bdf(bdf)?;
        let dir = sysfs_pci().join("devices").join(&bdf);
        if !dir.is_dir() {
            return Err(DeviceError::NoDevice { what: bdf });
        }
        Ok(PciDevice { bdf, dir })
    }

    /// The device whose sysfs directory is `dir` (`/sys/bus/pci/devices/<BDF>`
    /// or the path it links to).
    pub fn by_sysfs_path(dir: &Path) -> Result<PciDevice, DeviceError> {
        let name =
            dir.file_name()
                .and_then(|n| n.to_str())
                .ok_or_else(|| DeviceError::BadAddress {
                    given: dir.display().to_string(),
                })?;
        let bdf = parse_bdf(name)?;
        if !dir.join("vendor").is_file() {
            return Err(DeviceError::NoDevice { what: bdf });
        }
        Ok(PciDevice {
            bdf,
            dir: dir.to_owned(),
        })
    }

    /// Every device with this vendor and device id, in address order.
    pub fn find(vendor: u16, device: u16) -> Result<Vec<PciDevice>, DeviceError> {
        let root = sysfs_pci().join("devices");
        let entries = fs::read_dir(&root).map_err(|e| DeviceError::io("list", &root, e))?;
        let mut found = Vec::new();
        for entry in entries.flatten() {
            let Ok(dev) = PciDevice::by_sysfs_path(&entry.path()) else {
                continue;
            };
            if dev.ids().ok() == Some((vendor, device)) {
                found.push(dev);
            }
        }
        found.sort_by(|a, b| a.bdf.cmp(&b.bdf));
        Ok(found)
    }

    /// The first ivshmem device (1af4:1110).
    pub fn first_ivshmem() -> Result<PciDevice, DeviceError> {
        PciDevice::find(IVSHMEM_VENDOR, IVSHMEM_DEVICE)?
            .into_iter()
            .next()
            .ok_or_else(|| DeviceError::NoDevice {
                what: format!("{IVSHMEM_VENDOR:04x}:{IVSHMEM_DEVICE:04x} (ivshmem)"),
            })
    }

    /// `DDDD:BB:DD.F`.
    pub fn address(&self) -> &str {
        &self.bdf
    }

    /// The sysfs directory.
    pub fn sysfs_dir(&self) -> &Path {
        &self.dir
    }

    fn read_attr(&self, name: &str) -> Result<String, DeviceError> {
        let path = self.dir.join(name);
        fs::read_to_string(&path)
            .map(|s| s.trim().to_owned())
            .map_err(|e| DeviceError::io("read", &path, e))
    }

    fn write_attr(path: &Path, value: &str) -> Result<(), DeviceError> {
        fs::write(path, value).map_err(|e| DeviceError::io("write", path, e))
    }

    /// (vendor, device) ids.
    pub fn ids(&self) -> Result<(u16, u16), DeviceError> {
        let parse = |name: &str| -> Result<u16, DeviceError> {
            let v = self.read_attr(name)?;
            u16::from_str_radix(v.trim_start_matches("0x"), 16).map_err(|_| DeviceError::Io {
                action: "parse",
                path: self.dir.join(name),
                source: std::io::Error::other(format!("{v:?} is not a hex id")),
            })
        };
        Ok((parse("vendor")?, parse("device")?))
    }

    /// The bound driver's name, if any.
    pub fn driver(&self) -> Option<String> {
        fs::read_link(self.dir.join("driver"))
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
    }

    /// The IOMMU group number, if the IOMMU is on.
    pub fn iommu_group(&self) -> Option<u32> {
        fs::read_link(self.dir.join("iommu_group"))
            .ok()
            .and_then(|p| p.file_name()?.to_str()?.parse().ok())
    }

    /// The addresses of every device in this device's IOMMU group.
    pub fn iommu_group_members(&self) -> Vec<String> {
        let mut members: Vec<String> = fs::read_dir(self.dir.join("iommu_group/devices"))
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        members.sort();
        members
    }

    /// Size in bytes of BAR `bar` (0 when unused), from the `resource` file.
    pub fn bar_len(&self, bar: u32) -> Result<u64, DeviceError> {
        let text = self.read_attr("resource")?;
        let line = text
            .lines()
            .nth(bar as usize)
            .ok_or_else(|| DeviceError::NoBar {
                bdf: self.bdf.clone(),
                bar,
                reason: "no such line in sysfs resource".into(),
            })?;
        let mut fields = line
            .split_whitespace()
            .map(|f| u64::from_str_radix(f.trim_start_matches("0x"), 16));
        let (Some(Ok(start)), Some(Ok(end))) = (fields.next(), fields.next()) else {
            return Err(DeviceError::NoBar {
                bdf: self.bdf.clone(),
                bar,
                reason: format!("unreadable resource line {line:?}"),
            });
        };
        Ok(if end > start { end - start + 1 } else { 0 })
    }

    /// Turns the device on (`enable`), so that its BARs decode accesses.
    pub fn enable(&self) -> Result<(), DeviceError> {
        let path = self.dir.join("enable");
        if self.read_attr("enable").ok().as_deref() == Some("1") {
            return Ok(());
        }
        Self::write_attr(&path, "1")
    }

    /// Enables the device and maps the whole of BAR `bar` through sysfs:
    /// `resourceN` (uncached) or, with `write_combining`, `resourceN_wc`
    /// (only prefetchable BARs have one).
    pub fn map_bar(&self, bar: u32, write_combining: bool) -> Result<DeviceMemory, DeviceError> {
        let len = self.bar_len(bar)?;
        if len == 0 {
            return Err(DeviceError::NoBar {
                bdf: self.bdf.clone(),
                bar,
                reason: "the BAR is empty".into(),
            });
        }
        self.enable()?;
        let (name, kind) = if write_combining {
            (format!("resource{bar}_wc"), MemoryKind::WriteCombining)
        } else {
            (format!("resource{bar}"), MemoryKind::Uncached)
        };
        let path = self.dir.join(&name);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| DeviceError::io("open", &path, e))?;
        DeviceMemory::map_device_file(
            &file,
            &path,
            0,
            len,
            kind,
            format!("{} {name}", self.bdf),
            None,
        )
    }

    /// Binds the device to vfio-pci: sets `driver_override`, unbinds the
    /// current driver and asks the kernel to probe again. Returns the IOMMU
    /// group; fails clearly when the group is missing or not viable.
    pub fn bind_vfio(&self) -> Result<u32, DeviceError> {
        let group = self
            .iommu_group()
            .ok_or_else(|| DeviceError::NoIommuGroup {
                bdf: self.bdf.clone(),
            })?;
        self.rebind(Some("vfio-pci"))?;
        if self.driver().as_deref() != Some("vfio-pci") {
            return Err(DeviceError::VfioUnsupported(format!(
                "{} did not bind to vfio-pci (driver now: {})",
                self.bdf,
                self.driver().unwrap_or_else(|| "none".into())
            )));
        }
        let blocking = self.group_members_not_on(&["vfio-pci", "pcieport"], false);
        if !blocking.is_empty() {
            return Err(DeviceError::GroupNotViable {
                bdf: self.bdf.clone(),
                group,
                members: blocking.join(", "),
            });
        }
        Ok(group)
    }

    /// The members of this device's IOMMU group bound to a driver other
    /// than those in `allowed` (and, with `unbound_too`, those bound to
    /// none): what keeps the group from being viable for VFIO.
    pub(crate) fn group_members_not_on(&self, allowed: &[&str], unbound_too: bool) -> Vec<String> {
        self.iommu_group_members()
            .into_iter()
            .filter(
                |m| match PciDevice::by_address(m).ok().and_then(|d| d.driver()) {
                    Some(d) => !allowed.contains(&d.as_str()),
                    None => unbound_too,
                },
            )
            .collect()
    }

    /// Gives the device back to the kernel's default driver: clears
    /// `driver_override`, unbinds and probes again.
    pub fn unbind_vfio(&self) -> Result<(), DeviceError> {
        self.rebind(None)
    }

    fn rebind(&self, driver: Option<&str>) -> Result<(), DeviceError> {
        Self::write_attr(&self.dir.join("driver_override"), driver.unwrap_or("\n"))?;
        if self.driver().is_some() {
            Self::write_attr(&self.dir.join("driver/unbind"), &self.bdf)?;
        }
        // The kernel answers EINVAL/ENODEV when no driver wants the device:
        // not an error for unbinding.
        let probe = sysfs_pci().join("drivers_probe");
        match fs::write(&probe, &self.bdf) {
            Ok(()) => Ok(()),
            Err(_) if driver.is_none() => Ok(()),
            Err(e) => Err(DeviceError::io("write", &probe, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_normalise_and_bad_ones_say_the_format() {
        assert_eq!(parse_bdf("00:03.0").unwrap(), "0000:00:03.0");
        assert_eq!(parse_bdf("0000:0A:1f.7").unwrap(), "0000:0a:1f.7");
        for bad in ["", "00:03", "0000:00:03.10", "zz:00.0", "0:0:0.0"] {
            let err = parse_bdf(bad).unwrap_err();
            assert!(err.to_string().contains("0000:00:03.0"), "{bad}: {err}");
        }
    }

    /// A fake sysfs tree with one ivshmem device and one other device.
    fn fake_sysfs() -> crate::testutil::TempDir {
        let dir = crate::testutil::TempDir::new();
        let dev = |bdf: &str, vendor: &str, device: &str, resource: &str| {
            let d = dir.path().join("devices").join(bdf);
            fs::create_dir_all(&d).unwrap();
            fs::write(d.join("vendor"), vendor).unwrap();
            fs::write(d.join("device"), device).unwrap();
            fs::write(d.join("resource"), resource).unwrap();
        };
        let zero = "0x0000000000000000 0x0000000000000000 0x0000000000000000\n";
        dev(
            "0000:00:03.0",
            "0x1af4\n",
            "0x1110\n",
            &format!(
                "0x00000000fea00000 0x00000000fea000ff 0x0000000000040200\n{zero}\
                 0x0000000800000000 0x00000008003fffff 0x000000000014220c\n"
            ),
        );
        dev("0000:00:02.0", "0x8086\n", "0x10d3\n", zero);
        dir
    }

    #[test]
    fn finds_ivshmem_by_id_and_reads_bar_sizes() {
        let sys = fake_sysfs();
        // Tests share the process environment: only this test sets it.
        std::env::set_var("HWLINK_SYSFS_PCI", sys.path());
        let dev = PciDevice::first_ivshmem().unwrap();
        assert_eq!(dev.address(), "0000:00:03.0");
        assert_eq!(dev.ids().unwrap(), (IVSHMEM_VENDOR, IVSHMEM_DEVICE));
        assert_eq!(dev.bar_len(0).unwrap(), 256);
        assert_eq!(dev.bar_len(1).unwrap(), 0);
        assert_eq!(dev.bar_len(2).unwrap(), 4 << 20);
        assert!(matches!(dev.bar_len(5), Err(DeviceError::NoBar { .. })));
        let err = dev.map_bar(1, false).unwrap_err();
        assert!(err.to_string().contains("empty"), "{err}");
        assert!(PciDevice::by_address("00:09.0").is_err());
        assert_eq!(dev.iommu_group(), None);
        std::env::remove_var("HWLINK_SYSFS_PCI");
    }
}

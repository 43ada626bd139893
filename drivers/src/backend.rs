//! What the caller asks for ([`Backend`]) and what a region actually uses
//! ([`BackingKind`]).

use std::fmt;
use std::str::FromStr;

use crate::error::MapError;

/// Page size of a [`BackingKind::Shm`] region.
pub const SHM_PAGE_SIZE: usize = 4096;

/// Page size of a hugepage region (the only hugepage size hwlink uses).
pub const HUGEPAGE_SIZE: usize = 2 * 1024 * 1024;

/// The memory a caller asks for when creating or opening a region.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Backend {
    /// 2 MiB hugepages when enough are free, else 4 KiB pages in `/dev/shm`
    /// (with one warning on stderr).
    #[default]
    Auto,
    /// 2 MiB hugepages or an error; never falls back.
    Hugepage,
    /// 4 KiB pages in `/dev/shm`.
    Shm,
    /// Memory of QEMU's ivshmem device, shared between host and VM: given
    /// to a link with `LinkBuilder::on_device`, never a named region file.
    Ivshmem,
}

impl Backend {
    /// The spellings accepted by [`FromStr`], as shown by [`Display`](fmt::Display).
    pub const NAMES: [&'static str; 4] = ["auto", "hugepage", "shm", "ivshmem"];

    fn as_str(self) -> &'static str {
        match self {
            Backend::Auto => "auto",
            Backend::Hugepage => "hugepage",
            Backend::Shm => "shm",
            Backend::Ivshmem => "ivshmem",
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Backend {
    type Err = MapError;

    /// Parses `auto`, `hugepage` or `shm` (ASCII case-insensitive).
    fn from_str(s: &str) -> Result<Backend, MapError> {
        [
            Backend::Auto,
            Backend::Hugepage,
            Backend::Shm,
            Backend::Ivshmem,
        ]
        .into_iter()
        .find(|b| b.as_str().eq_ignore_ascii_case(s))
        .ok_or_else(|| MapError::UnknownBackend {
            given: s.to_owned(),
        })
    }
}

/// The memory a region actually lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BackingKind {
    /// A file on a hugetlbfs mount with 2 MiB pages.
    Hugetlbfs,
    /// An `MFD_HUGETLB | MFD_HUGE_2MB` memfd, reachable through a locator file.
    MemfdHugetlb,
    /// A file in the shm directory (tmpfs, 4 KiB pages).
    Shm,
    /// Device memory shared with another kernel: a PCI BAR (ivshmem), or
    /// the host file behind a VM's ivshmem BAR.
    Device,
}

impl BackingKind {
    /// Size in bytes of the pages backing the region.
    pub fn page_size(self) -> usize {
        if self.is_hugepage() {
            HUGEPAGE_SIZE
        } else {
            SHM_PAGE_SIZE
        }
    }

    /// Whether the region lives in 2 MiB hugepages.
    pub fn is_hugepage(self) -> bool {
        matches!(self, BackingKind::Hugetlbfs | BackingKind::MemfdHugetlb)
    }
}

impl fmt::Display for BackingKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BackingKind::Hugetlbfs => "hugetlbfs",
            BackingKind::MemfdHugetlb => "memfd-hugetlb",
            BackingKind::Shm => "shm",
            BackingKind::Device => "device",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_parses_what_it_displays() {
        for b in [
            Backend::Auto,
            Backend::Hugepage,
            Backend::Shm,
            Backend::Ivshmem,
        ] {
            assert_eq!(b.to_string().parse::<Backend>().unwrap(), b);
        }
        assert_eq!(Backend::NAMES, ["auto", "hugepage", "shm", "ivshmem"]);
        assert_eq!("SHM".parse::<Backend>().unwrap(), Backend::Shm);
        assert_eq!(Backend::default(), Backend::Auto);
    }

    #[test]
    fn unknown_backend_says_what_is_accepted() {
        let err = "huge".parse::<Backend>().unwrap_err();
        assert!(matches!(err, MapError::UnknownBackend { .. }));
        let msg = err.to_string();
        assert!(
            msg.contains("\"huge\"") && msg.contains("auto, hugepage, shm or ivshmem"),
            "{msg}"
        );
    }

    #[test]
    fn kinds_know_their_page_size() {
        assert_eq!(BackingKind::Hugetlbfs.page_size(), 2 << 20);
        assert_eq!(BackingKind::MemfdHugetlb.page_size(), 2 << 20);
        assert_eq!(BackingKind::Shm.page_size(), 4096);
        assert!(BackingKind::MemfdHugetlb.is_hugepage());
        assert!(!BackingKind::Shm.is_hugepage());
        assert_eq!(BackingKind::MemfdHugetlb.to_string(), "memfd-hugetlb");
    }
}

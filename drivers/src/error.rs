//! [`MapError`]: every way finding, creating or mapping a region can fail.
//! Each message says what to do next; OS failures carry their errno.

use std::io;
use std::path::PathBuf;

/// An error from this crate. Every message ends with what to do about it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MapError {
    /// The region name breaks the naming rule.
    #[error(
        "invalid region name {name:?}: {reason}; use 1 to 48 characters from \
         A-Z a-z 0-9 _ . - that do not start with '.'"
    )]
    InvalidName { name: String, reason: &'static str },

    /// A backend name that is not `auto`, `hugepage`, `shm` or `ivshmem`.
    #[error("unknown backend {given:?}: use one of auto, hugepage, shm or ivshmem")]
    UnknownBackend { given: String },

    /// `Backend::Ivshmem` names device memory, not a region file.
    #[error(
        "region {name:?}: the ivshmem backend has no region files; give the link its device \
         memory (LinkBuilder::on_device, or --device on the command line)"
    )]
    NeedsDevice { name: String },

    /// `create` found a region of that name in some backend directory.
    #[error(
        "a region named {name:?} already exists ({}): pick another name, or remove it \
         with `hwlink rm {name}` (`hwlink rm --stale` removes regions whose creator has exited)",
        path.display()
    )]
    AlreadyExists { name: String, path: PathBuf },

    /// `open` or `remove_region` found no region of that name.
    #[error(
        "no region named {name:?}: is the creating process running? `hwlink ls` lists regions"
    )]
    NotFound { name: String },

    /// A memfd locator whose creating process has exited: the memory is gone.
    #[error(
        "region {name:?} is stale: the process that created it{} has exited and its memory \
         is gone; restart the creator after removing the leftover {} with `hwlink rm {name}` \
         or `hwlink rm --stale`",
        pid.map(|p| format!(" (pid {p})")).unwrap_or_default(),
        path.display()
    )]
    Stale {
        name: String,
        path: PathBuf,
        pid: Option<u32>,
    },

    /// Fewer free 2 MiB hugepages than the region needs.
    #[error(
        "not enough free 2 MiB hugepages (need {need}, free {free}): reserve more with \
         `sudo sysctl vm.nr_hugepages={}` (or run `sudo ci/setup-hugepages.sh`), \
         or pass `--backend shm` to use 4 KiB pages",
        suggest_nr_hugepages(*.need)
    )]
    NoHugepages { need: u64, free: u64 },

    /// The kernel refused the hugepages (`mmap` failed with ENOMEM) although
    /// enough looked free: a hugetlbfs `size=` limit or a hugetlb cgroup.
    #[error(
        "the kernel refused {need} hugepages of 2 MiB for {} ({source}) although {free} are \
         free: raise the hugetlbfs mount's size= limit or the hugetlb cgroup limit, or pass \
         `--backend shm` to use 4 KiB pages",
        path.display()
    )]
    HugepagesDenied {
        need: u64,
        free: u64,
        path: PathBuf,
        source: io::Error,
    },

    /// The kernel reports no 2 MiB hugepage pool at all.
    #[error(
        "this kernel offers no 2 MiB hugepages (no HugePages_* in /proc/meminfo and no \
         /sys/kernel/mm/hugepages/hugepages-2048kB): pass `--backend shm` to use 4 KiB pages"
    )]
    HugepagesUnsupported,

    /// `memfd_create(MFD_HUGETLB)` failed.
    #[error(
        "cannot create a hugepage memfd for region {name:?}: {source}; mount hugetlbfs \
         (`sudo ci/setup-hugepages.sh`) or pass `--backend shm`"
    )]
    Memfd { name: String, source: io::Error },

    /// A memfd region that is not sealed against shrinking: any process
    /// mapping it could be killed by SIGBUS when someone truncates it.
    #[error(
        "memfd region `{name}` is not sealed against shrinking (F_SEAL_SHRINK): it was made by \
         an older hwlink or by hand; remove it with `hwlink rm {name}` and create it again"
    )]
    Unsealed { name: String },

    /// This process could not set up its liveness file, through which its
    /// peers learn that it died.
    #[error(
        "cannot set up this process's liveness file {}: {source}; check that the shm \
         directory is writable by you (HWLINK_SHM_DIR chooses another one)",
        path.display()
    )]
    Liveness { path: PathBuf, source: io::Error },

    /// A group name that the group database does not know.
    #[error(
        "unknown group {group:?}{}: create it (`sudo groupadd {group}`) or give a group \
         that `getent group` lists",
        source.as_ref().map(|e| format!(" ({e})")).unwrap_or_default()
    )]
    UnknownGroup {
        group: String,
        source: Option<io::Error>,
    },

    /// Giving a new region file to a group failed.
    #[error(
        "cannot give region file {} to group {gid}: {source}; the creating user must be a \
         member of that group (`id` lists them; `sudo usermod -aG GROUP USER`, then log in \
         again), or run as root",
        path.display()
    )]
    Chown {
        path: PathBuf,
        gid: u32,
        source: io::Error,
    },

    /// A hugepage region to be shared with other users, but no hugetlbfs
    /// directory serves them (a memfd cannot be shared between users).
    #[error(
        "region {name:?} is to be shared with other users, but no hugetlbfs mount lets {} \
         create files: run `sudo hwlink setup --group GROUP` once (it mounts one at \
         /dev/hugepages-hwlink), or pass `--backend shm`",
        gid.map(|g| format!("group {g}")).unwrap_or_else(|| "a group".into())
    )]
    NotShareable { name: String, gid: Option<u32> },

    /// `hwlink setup` could not mount or regroup the shared hugetlbfs.
    #[error(
        "cannot set up a shared hugetlbfs at {}: {source}; run it as root \
         (`sudo hwlink setup --group GROUP`), with hugetlbfs in the kernel",
        dir.display()
    )]
    Setup { dir: PathBuf, source: io::Error },

    /// Creating the region file failed.
    #[error(
        "cannot create region file {}: {source}; check that its directory exists and is \
         writable by you (HWLINK_SHM_DIR / HWLINK_HUGETLBFS_DIR choose other directories)",
        path.display()
    )]
    Create { path: PathBuf, source: io::Error },

    /// Opening an existing region file failed.
    #[error(
        "cannot open region file {}: {source}; run as the user that created it or as \
         root (regions are mode 0600 unless shared), or have its creator share it with a \
         group this user is in (`file_mode(0o660)` and `group(..)`, README: sharing \
         between users)",
        path.display()
    )]
    Open { path: PathBuf, source: io::Error },

    /// `ftruncate` of a new region file failed.
    #[error(
        "cannot size region file {} to {size} bytes: {source}; free space on its file \
         system (`df -h`) or ask for a smaller region",
        path.display()
    )]
    Resize {
        path: PathBuf,
        size: u64,
        source: io::Error,
    },

    /// `mmap` of a region file failed.
    #[error(
        "cannot map {size} bytes of region file {}: {source}; on ENOMEM free memory or ask \
         for a smaller region, on EACCES/EPERM run as the region's creator",
        path.display()
    )]
    Map {
        path: PathBuf,
        size: usize,
        source: io::Error,
    },

    /// An existing file whose size cannot be a whole region.
    #[error(
        "region file {} is {size} bytes, not a positive multiple of 4096: it is not a \
         complete hwlink region (its creator may have died while creating it); remove it \
         with `hwlink rm {name}` and create it again",
        path.display()
    )]
    BadSize {
        name: String,
        path: PathBuf,
        size: u64,
    },

    /// Reading or writing a memfd locator file failed.
    #[error(
        "cannot use memfd locator file {}: {source}; check that the shm directory is \
         writable (HWLINK_SHM_DIR chooses another), or remove the file with `hwlink rm --stale`",
        path.display()
    )]
    Locator { path: PathBuf, source: io::Error },

    /// Unlinking a region file failed.
    #[error(
        "cannot remove region file {}: {source}; remove it by hand with `sudo rm {}`",
        path.display(),
        path.display()
    )]
    Remove { path: PathBuf, source: io::Error },

    /// Listing a region directory failed.
    #[error(
        "cannot list region directory {}: {source}; check that it is readable by you \
         (HWLINK_SHM_DIR / HWLINK_HUGETLBFS_DIR choose other directories)",
        path.display()
    )]
    ListDir { path: PathBuf, source: io::Error },

    /// The requested size cannot be mapped at all.
    #[error("a region of {requested} bytes is too large to map: ask for a smaller region")]
    TooLarge { requested: usize },
}

impl MapError {
    /// Whether `Backend::Auto` should fall back to 4 KiB pages after this
    /// error from the hugepage path.
    pub(crate) fn is_hugepage_shortage(&self) -> bool {
        match self {
            MapError::NoHugepages { .. }
            | MapError::HugepagesDenied { .. }
            | MapError::HugepagesUnsupported => true,
            MapError::Memfd { source, .. } => source.raw_os_error() == Some(libc::EINVAL),
            MapError::NotShareable { .. } => true,
            _ => false,
        }
    }
}

/// A `vm.nr_hugepages` value that covers `need` pages: at least 64, else the
/// next power of two.
pub(crate) fn suggest_nr_hugepages(need: u64) -> u64 {
    need.checked_next_power_of_two().unwrap_or(need).max(64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_say_what_to_do_and_carry_errno() {
        let e = MapError::NoHugepages { need: 100, free: 3 };
        let m = e.to_string();
        assert!(m.contains("need 100, free 3"), "{m}");
        assert!(m.contains("sudo sysctl vm.nr_hugepages=128"), "{m}");
        assert!(m.contains("--backend shm"), "{m}");
        assert!(MapError::NoHugepages { need: 1, free: 0 }
            .to_string()
            .contains("vm.nr_hugepages=64"));

        let e = MapError::Open {
            path: "/dev/shm/hwlink.x".into(),
            source: io::Error::from_raw_os_error(libc::EACCES),
        };
        let m = e.to_string();
        assert!(
            m.contains("/dev/shm/hwlink.x") && m.contains("os error 13"),
            "{m}"
        );
        assert!(std::error::Error::source(&e).is_some());

        let m = MapError::NotFound { name: "x".into() }.to_string();
        assert!(m.contains("hwlink ls"), "{m}");
    }

    #[test]
    fn shortage_classification() {
        assert!(MapError::NoHugepages { need: 1, free: 0 }.is_hugepage_shortage());
        assert!(MapError::HugepagesUnsupported.is_hugepage_shortage());
        assert!(!MapError::NotFound { name: "x".into() }.is_hugepage_shortage());
    }
}

//! Where region files live: the shm directory and the hugetlbfs
//! directories. The only place that reads the environment.

use std::env;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::mapping;
use crate::name::{file_name, locator_file_name};
use crate::sysinfo;

/// Replaces `/dev/shm` as the directory of shm regions and memfd locators.
pub(crate) const SHM_DIR_ENV: &str = "HWLINK_SHM_DIR";
/// Replaces the discovered hugetlbfs mount.
pub(crate) const HUGETLBFS_DIR_ENV: &str = "HWLINK_HUGETLBFS_DIR";

const DEFAULT_SHM_DIR: &str = "/dev/shm";
const HUGETLBFS_MOUNT_POINT: &str = "/dev/hugepages";

/// The directories one operation works in.
#[derive(Debug, Clone)]
pub(crate) struct Dirs {
    /// Shm region files and memfd locators.
    pub(crate) shm: PathBuf,
    /// Hugetlbfs directories with 2 MiB pages; new hugepage regions go in
    /// the first, lookups scan all.
    pub(crate) hugetlbfs: Vec<PathBuf>,
    /// Whether [`Dirs::hugetlbfs_for_create`] may mount hugetlbfs at
    /// `/dev/hugepages` when `hugetlbfs` is empty.
    pub(crate) may_mount: bool,
}

impl Dirs {
    /// The directories named by `HWLINK_SHM_DIR` / `HWLINK_HUGETLBFS_DIR`,
    /// else `/dev/shm` and the 2 MiB hugetlbfs mounts in `/proc/mounts`.
    pub(crate) fn from_env() -> Dirs {
        let var = |name| env::var_os(name).filter(|v: &OsString| !v.is_empty());
        let shm = var(SHM_DIR_ENV).map_or_else(|| PathBuf::from(DEFAULT_SHM_DIR), PathBuf::from);
        match var(HUGETLBFS_DIR_ENV) {
            Some(dir) => Dirs {
                shm,
                hugetlbfs: vec![PathBuf::from(dir)],
                may_mount: false,
            },
            None => Dirs {
                shm,
                hugetlbfs: sysinfo::hugetlbfs_2m_mounts(),
                may_mount: true,
            },
        }
    }

    /// `<shm dir>/hwlink.<name>`.
    pub(crate) fn shm_file(&self, name: &str) -> PathBuf {
        self.shm.join(file_name(name))
    }

    /// `<shm dir>/hwlink.<name>.memfd`.
    pub(crate) fn locator(&self, name: &str) -> PathBuf {
        self.shm.join(locator_file_name(name))
    }

    /// `<dir>/hwlink.<name>` for every hugetlbfs directory.
    pub(crate) fn hugetlbfs_files(&self, name: &str) -> Vec<PathBuf> {
        let file = file_name(name);
        self.hugetlbfs.iter().map(|dir| dir.join(&file)).collect()
    }

    /// The hugetlbfs directory for a new region. With none mounted, and if
    /// allowed and running as root, mounts one at `/dev/hugepages` first.
    /// `None` means: use a memfd.
    pub(crate) fn hugetlbfs_for_create(&mut self) -> Option<PathBuf> {
        if self.hugetlbfs.is_empty() && self.may_mount && mapping::effective_uid() == 0 {
            self.hugetlbfs = mount_hugetlbfs();
        }
        self.hugetlbfs.first().cloned()
    }
}

/// Mounts hugetlbfs (2 MiB pages, mode 1770) at `/dev/hugepages` unless a
/// 2 MiB hugetlbfs is mounted already; returns the 2 MiB mounts afterwards.
/// A failed mount is not an error: the caller falls back to a memfd.
fn mount_hugetlbfs() -> Vec<PathBuf> {
    // Threads of one process must not stack two mounts on the same point.
    static MOUNTING: Mutex<()> = Mutex::new(());
    let _guard = MOUNTING.lock().unwrap_or_else(|e| e.into_inner());

    let found = sysinfo::hugetlbfs_2m_mounts();
    if !found.is_empty() {
        return found;
    }
    let dir = Path::new(HUGETLBFS_MOUNT_POINT);
    let made_dir = !dir.exists() && std::fs::create_dir_all(dir).is_ok();
    if mapping::mount_hugetlbfs_2m(c"/dev/hugepages").is_err() {
        if made_dir {
            let _ = std::fs::remove_dir(dir);
        }
        return Vec::new();
    }
    sysinfo::hugetlbfs_2m_mounts()
}

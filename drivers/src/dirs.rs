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

    /// The shared shm directories that `hwlink setup --group` made:
    /// `<shm dir>/hwlink-share.<group>`, owned by root and not writable by
    /// the world (a directory anyone made is not trusted), sorted.
    pub(crate) fn shared_shm(&self) -> Vec<PathBuf> {
        use std::os::unix::fs::MetadataExt;
        let Ok(entries) = std::fs::read_dir(&self.shm) else {
            return Vec::new();
        };
        let mut dirs: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .filter(|e| {
                e.file_name()
                    .to_str()
                    .is_some_and(|n| n.starts_with(SHARED_SHM_PREFIX))
            })
            .filter(|e| {
                std::fs::symlink_metadata(e.path())
                    .is_ok_and(|m| m.is_dir() && m.uid() == 0 && m.mode() & 0o002 == 0)
            })
            .map(|e| e.path())
            .collect();
        dirs.sort();
        dirs
    }

    /// `hwlink.<name>` in the shm directory, then in every shared one.
    pub(crate) fn shm_files(&self, name: &str) -> Vec<PathBuf> {
        let file = file_name(name);
        std::iter::once(self.shm.join(&file))
            .chain(self.shared_shm().into_iter().map(|d| d.join(&file)))
            .collect()
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

    /// The hugetlbfs directories for a new region, to try in order. With
    /// none mounted, and if allowed and running as root, mounts one at
    /// `/dev/hugepages` first. Empty means: use a memfd.
    pub(crate) fn hugetlbfs_for_create(&mut self) -> Vec<PathBuf> {
        if self.hugetlbfs.is_empty() && self.may_mount && mapping::effective_uid() == 0 {
            self.hugetlbfs = mount_hugetlbfs();
        }
        self.hugetlbfs.clone()
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

/// Where `hwlink setup --group` mounts the hugetlbfs it shares.
pub const SHARED_HUGETLBFS_DIR: &str = "/dev/hugepages-hwlink";

/// Name prefix of the shared directories in the shm directory.
const SHARED_SHM_PREFIX: &str = "hwlink-share.";

/// Mode of the shared directories: the group may create, use and remove
/// files (no sticky bit: whichever member is last out removes a region,
/// whoever created it); others may look a name up, so that they are
/// refused by the file's own mode with a clear error instead of not
/// finding it.
const SHARED_DIR_MODE: u32 = 0o771;

/// What [`share_dirs`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShareOutcome {
    /// The group's id.
    pub gid: u32,
    /// The shared shm directory.
    pub shm_dir: PathBuf,
    /// The shared hugetlbfs, unless `None` was asked for.
    pub hugetlbfs: Option<PathBuf>,
    /// Whether the hugetlbfs was mounted now (else it was one already and
    /// was given to the group).
    pub mounted: bool,
}

/// Lets the members of `group` share regions (root only; once per boot):
/// makes the shm directory `<shm dir>/hwlink-share.<group>` and, unless
/// `hugetlbfs_dir` is `None`, mounts a 2 MiB hugetlbfs there (or gives an
/// existing mount to the group), both the group's and mode 0771. Every
/// process finds them by themselves (the shm directory's listing,
/// `/proc/mounts`).
pub fn share_dirs(
    group: &crate::Group,
    hugetlbfs_dir: Option<&Path>,
) -> Result<ShareOutcome, crate::MapError> {
    use crate::MapError;
    use std::os::unix::fs::PermissionsExt;
    let gid = crate::FileAccess::new(0o660, Some(group.clone()))
        .gid()?
        .unwrap_or(0);
    let label = match group {
        crate::Group::Name(n)
            if n.chars()
                .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c)) =>
        {
            n.clone()
        }
        _ => gid.to_string(),
    };
    let give = |dir: &Path| -> Result<(), MapError> {
        let fail = |source: std::io::Error| MapError::Setup {
            dir: dir.to_owned(),
            source,
        };
        std::os::unix::fs::chown(dir, Some(0), Some(gid)).map_err(fail)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(SHARED_DIR_MODE))
            .map_err(fail)
    };
    let shm_dir = Dirs::from_env()
        .shm
        .join(format!("{SHARED_SHM_PREFIX}{label}"));
    match std::fs::create_dir(&shm_dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(source) => {
            return Err(MapError::Setup {
                dir: shm_dir,
                source,
            })
        }
    }
    give(&shm_dir)?;
    let mut outcome = ShareOutcome {
        gid,
        shm_dir,
        hugetlbfs: None,
        mounted: false,
    };
    let Some(dir) = hugetlbfs_dir else {
        return Ok(outcome);
    };
    let fail = |source: std::io::Error| MapError::Setup {
        dir: dir.to_owned(),
        source,
    };
    if !sysinfo::hugetlbfs_2m_mounts().iter().any(|m| m == dir) {
        std::fs::create_dir_all(dir).map_err(fail)?;
        let target = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes())
            .map_err(|_| fail(std::io::ErrorKind::InvalidInput.into()))?;
        let options = std::ffi::CString::new(format!(
            "pagesize=2M,uid=0,gid={gid},mode={SHARED_DIR_MODE:o}"
        ))
        .map_err(|_| fail(std::io::ErrorKind::InvalidInput.into()))?;
        mapping::mount_hugetlbfs(&target, &options).map_err(fail)?;
        outcome.mounted = true;
    }
    give(dir)?;
    outcome.hugetlbfs = Some(dir.to_owned());
    Ok(outcome)
}

//! [`Region`]: one mapped region file, and how `create` and `open` choose,
//! build and find its backing.

use std::fmt;
use std::fs::{self, File, Metadata, OpenOptions};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Once;

use crate::access::{self, FileAccess};
use crate::backend::{Backend, BackingKind, HUGEPAGE_SIZE, SHM_PAGE_SIZE};
use crate::dirs::Dirs;
use crate::error::{suggest_nr_hugepages, MapError};
use crate::mapping::Mapping;
use crate::memfd;
use crate::name::{file_name, validate_name};
use crate::sysinfo::hugepages_free;
use hwlink_hw::{hwl_region, HWL_REGION_MAGIC};

/// One `mmap` of one region file, shared and read-write.
///
/// Dropping it unmaps the memory and, if [`Region::set_remove_on_drop`] is
/// on (the default after [`Region::create`]), unlinks the file.
pub struct Region {
    map: Mapping,
    name: String,
    path: PathBuf,
    kind: BackingKind,
    /// Identity of `path` when created or opened: drop unlinks only that file.
    id: FileId,
    remove_on_drop: bool,
    /// A memfd region's creator keeps the memfd open so that other processes
    /// can reach it through `/proc/<pid>/fd/<fd>`.
    _memfd: Option<File>,
}

/// Device and inode of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FileId {
    dev: u64,
    ino: u64,
}

impl FileId {
    pub(crate) fn of(meta: &Metadata) -> FileId {
        FileId {
            dev: meta.dev(),
            ino: meta.ino(),
        }
    }

    /// The identity of the file at `path` itself (not following symlinks).
    pub(crate) fn of_path(path: &Path) -> Option<FileId> {
        fs::symlink_metadata(path).ok().map(|m| FileId::of(&m))
    }
}

impl Region {
    /// Creates region `name` of at least `min_size` bytes (rounded up to
    /// whole pages; 0 means one page) and maps it, prefaulted.
    ///
    /// Fails with [`MapError::AlreadyExists`] if a region of that name
    /// exists in any backend. See [`Backend`] for how the memory is chosen.
    /// The file is mode 0600 and is removed when the `Region` is dropped
    /// (see [`Region::set_remove_on_drop`]).
    pub fn create(name: &str, min_size: usize, backend: Backend) -> Result<Region, MapError> {
        Region::create_with_access(name, min_size, backend, &FileAccess::private())
    }

    /// [`Region::create`] with the file's mode and group from `access`.
    /// A region shared with other users lives in /dev/shm or on a hugetlbfs
    /// mount that lets them create files (`hwlink setup --group`), never in
    /// a memfd: `Backend::Hugepage` fails with [`MapError::NotShareable`]
    /// without such a mount, and `Backend::Auto` falls back to /dev/shm
    /// with one warning.
    pub fn create_with_access(
        name: &str,
        min_size: usize,
        backend: Backend,
        access: &FileAccess,
    ) -> Result<Region, MapError> {
        create_in_with(&mut Dirs::from_env(), name, min_size, backend, access)
    }

    /// The mode and group of this region's file, for the files that belong
    /// to it (a domain's links, a queue's segments); private for a memfd
    /// or a file replaced since it was mapped.
    pub fn access(&self) -> FileAccess {
        match fs::metadata(&self.path) {
            Ok(meta) if self.kind != BackingKind::MemfdHugetlb && FileId::of(&meta) == self.id => {
                FileAccess::of_file(&meta)
            }
            _ => FileAccess::private(),
        }
    }

    /// [`Region::create_with_access`], except that the region's memory is
    /// made sure of (so no later fault can fail: allocated on /dev/shm,
    /// reserved on hugetlbfs) but not faulted in: creating it costs
    /// microseconds per megabyte, and its pages are cleared by whoever
    /// touches them first, or ahead of time by [`Region::populate`]. For
    /// large regions made ahead of need (the segments of an unbounded
    /// queue). A hugepage memfd (no hugetlbfs mount) is prefaulted as
    /// always.
    pub fn create_deferred(
        name: &str,
        min_size: usize,
        backend: Backend,
        access: &FileAccess,
    ) -> Result<Region, MapError> {
        create_made(&mut Dirs::from_env(), name, min_size, backend, access, true)
    }

    /// Faults in the pages of bytes `[offset, offset + len)` of the region
    /// (clipped to it), writable, without changing them: for a region from
    /// [`Region::create_deferred`], so that its first writer takes no page
    /// fault there. An error (a kernel older than 5.14) changes nothing:
    /// the pages are faulted in when touched.
    pub fn populate(&self, offset: usize, len: usize) -> io::Result<()> {
        self.map.populate_write(offset, len)
    }

    /// Opens and maps the whole of existing region `name`. `Backend::Auto`
    /// looks in hugetlbfs, then for a memfd locator, then in shm;
    /// `Hugepage` and `Shm` look only there. The file is kept on drop.
    pub fn open(name: &str, backend: Backend) -> Result<Region, MapError> {
        open_in(&Dirs::from_env(), name, backend)
    }

    /// Start of the mapping, page aligned. Valid for [`Region::len`] bytes
    /// until the `Region` is dropped; other processes may write it at any
    /// time, so access it with volatile or atomic operations.
    pub fn as_ptr(&self) -> *mut u8 {
        self.map.as_ptr()
    }

    /// Bytes mapped, equal to the file size.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Always false: regions are at least one page.
    pub fn is_empty(&self) -> bool {
        self.map.len() == 0
    }

    /// The region name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The region file; for a memfd region, its locator file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The memory the region lives in.
    pub fn kind(&self) -> BackingKind {
        self.kind
    }

    /// Whether the region file was shrunk under this mapping (by another
    /// process, or by hand): the lost pages now read as zeros, and nothing
    /// in them can be trusted. See the SIGBUS guard (`sigbus.rs`).
    pub fn truncated(&self) -> bool {
        self.map.truncated()
    }

    /// Size of the pages backing the region.
    pub fn page_size(&self) -> usize {
        self.kind.page_size()
    }

    /// Whether dropping this `Region` unlinks its file (and memfd locator).
    /// `create` turns it on, `open` off.
    pub fn set_remove_on_drop(&mut self, yes: bool) {
        self.remove_on_drop = yes;
    }

    pub(crate) fn from_parts(
        map: Mapping,
        name: &str,
        path: PathBuf,
        kind: BackingKind,
        id: FileId,
        memfd: Option<File>,
        created: bool,
    ) -> Region {
        Region {
            map,
            name: name.to_owned(),
            path,
            kind,
            id,
            remove_on_drop: created,
            _memfd: memfd,
        }
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // Unlink only the file this Region made or opened, not a newer
        // region that reused the name after an `hwlink rm`.
        if self.remove_on_drop && FileId::of_path(&self.path) == Some(self.id) {
            let _ = fs::remove_file(&self.path);
        }
        // `map` unmaps and `_memfd` closes as the fields drop.
    }
}

impl fmt::Debug for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Region")
            .field("name", &self.name)
            .field("path", &self.path)
            .field("kind", &self.kind)
            .field("ptr", &self.map.as_ptr())
            .field("len", &self.map.len())
            .field("remove_on_drop", &self.remove_on_drop)
            .finish()
    }
}

/// [`Region::create`] in explicit directories.
#[cfg(test)]
pub(crate) fn create_in(
    dirs: &mut Dirs,
    name: &str,
    min_size: usize,
    backend: Backend,
) -> Result<Region, MapError> {
    create_in_with(dirs, name, min_size, backend, &FileAccess::private())
}

/// [`Region::create_with_access`] in explicit directories.
pub(crate) fn create_in_with(
    dirs: &mut Dirs,
    name: &str,
    min_size: usize,
    backend: Backend,
    access: &FileAccess,
) -> Result<Region, MapError> {
    create_made(dirs, name, min_size, backend, access, false)
}

/// Creates a region in `dirs`; `defer`: see [`Region::create_deferred`].
fn create_made(
    dirs: &mut Dirs,
    name: &str,
    min_size: usize,
    backend: Backend,
    access: &FileAccess,
    defer: bool,
) -> Result<Region, MapError> {
    validate_name(name)?;
    let gid = access.gid()?;
    let share = Share {
        mode: access.mode(),
        gid,
        shared: access.is_shared(),
        defer,
    };
    ensure_absent(dirs, name)?;
    match backend {
        Backend::Shm => create_shm(dirs, name, min_size, share),
        Backend::Hugepage => create_hugepage(dirs, name, min_size, share),
        Backend::Auto => create_auto(dirs, name, min_size, share),
        Backend::Ivshmem => Err(MapError::NeedsDevice {
            name: name.to_owned(),
        }),
    }
}

/// The mode and group a new region file gets.
#[derive(Debug, Clone, Copy)]
struct Share {
    mode: u32,
    /// Asked for explicitly (else the creator's, or a shared mount's).
    gid: Option<u32>,
    /// Other users may use it: not in a memfd, and only in a hugetlbfs
    /// directory that lets them create files.
    shared: bool,
    /// Memory made sure of, not prefaulted ([`Region::create_deferred`]).
    defer: bool,
}

/// Hugepages if enough are free and they can be had, else shm with one
/// warning per process.
fn create_auto(
    dirs: &mut Dirs,
    name: &str,
    min_size: usize,
    share: Share,
) -> Result<Region, MapError> {
    let need = (round_up(min_size, HUGEPAGE_SIZE)? / HUGEPAGE_SIZE) as u64;
    let mut why = None;
    if hugepages_free().is_some_and(|free| free >= need) {
        match create_hugepage(dirs, name, min_size, share) {
            Err(e) if e.is_hugepage_shortage() => why = Some(e),
            other => return other,
        }
    }
    warn_fallback_once(need, why.as_ref(), &dirs.shm);
    create_shm(dirs, name, min_size, share)
}

/// [`Region::open`] in explicit directories.
pub(crate) fn open_in(dirs: &Dirs, name: &str, backend: Backend) -> Result<Region, MapError> {
    validate_name(name)?;
    if backend == Backend::Ivshmem {
        return Err(MapError::NeedsDevice {
            name: name.to_owned(),
        });
    }
    let mut stale = None;
    if backend != Backend::Shm {
        for path in dirs.hugetlbfs_files(name) {
            if let Some(region) = open_file(name, &path, BackingKind::Hugetlbfs)? {
                return Ok(region);
            }
        }
        match memfd::open(dirs, name) {
            Ok(Some(region)) => return Ok(region),
            Ok(None) => {}
            Err(e @ MapError::Stale { .. }) => stale = Some(e),
            Err(e) => return Err(e),
        }
    }
    if backend != Backend::Hugepage {
        for path in dirs.shm_files(name) {
            if let Some(region) = open_file(name, &path, BackingKind::Shm)? {
                return Ok(region);
            }
        }
    }
    Err(stale.unwrap_or_else(|| MapError::NotFound {
        name: name.to_owned(),
    }))
}

/// Fails with `AlreadyExists` if region `name` exists in any backend;
/// removes a stale memfd locator (its memory is gone already).
fn ensure_absent(dirs: &Dirs, name: &str) -> Result<(), MapError> {
    let exists = |path: PathBuf| -> Result<(), MapError> {
        match fs::symlink_metadata(&path) {
            Ok(_) => Err(MapError::AlreadyExists {
                name: name.to_owned(),
                path,
            }),
            Err(_) => Ok(()),
        }
    };
    for path in dirs.hugetlbfs_files(name) {
        exists(path)?;
    }
    let locator = dirs.locator(name);
    let probed = FileId::of_path(&locator);
    match memfd::probe(name, &locator) {
        Ok(memfd::Probe::Absent) => {}
        // Unless another creator replaced it since it was probed.
        Ok(memfd::Probe::Stale(_)) if FileId::of_path(&locator) != probed => exists(locator)?,
        Ok(memfd::Probe::Stale(_)) => match fs::remove_file(&locator) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(MapError::Remove {
                    path: locator,
                    source,
                })
            }
        },
        Ok(memfd::Probe::Live(_)) | Err(_) => exists(locator)?,
    }
    for path in dirs.shm_files(name) {
        exists(path)?;
    }
    Ok(())
}

/// A file in the shm directory; one shared with other users goes to a
/// shared shm directory that serves them (made by `hwlink setup --group`),
/// taking its group unless it asked for one.
fn create_shm(dirs: &Dirs, name: &str, min_size: usize, share: Share) -> Result<Region, MapError> {
    let size = round_up(min_size, SHM_PAGE_SIZE)?;
    if share.shared {
        for dir in dirs.shared_shm() {
            match fs::metadata(&dir) {
                Ok(meta) if access::dir_serves(&meta, share.gid) => {
                    let share = Share {
                        gid: share.gid.or(Some(meta.gid())),
                        ..share
                    };
                    let path = dir.join(file_name(name));
                    return create_file(name, &path, size, BackingKind::Shm, share);
                }
                _ => {}
            }
        }
        warn_sticky_once(&dirs.shm);
    }
    create_file(name, &dirs.shm_file(name), size, BackingKind::Shm, share)
}

/// Tells the user, once per process, that a region shared with other
/// users went to the shm directory itself, whose sticky bit lets only a
/// file's owner remove it.
fn warn_sticky_once(shm_dir: &Path) {
    static WARNED: Once = Once::new();
    WARNED.call_once(|| {
        eprintln!(
            "hwlink: warning: a region shared with other users is in {}, where only its \
             creator may remove it (sticky bit): when another user is last out, its files stay \
             until `hwlink rm --stale` runs as the creator or root. Run `sudo hwlink setup \
             --group GROUP` once to give the group a directory of its own.",
            shm_dir.display()
        )
    });
}

/// A hugepage region: a hugetlbfs file if a hugetlbfs directory is (or can
/// be) mounted and writable, else a memfd. Never falls back to 4 KiB pages.
/// A shared region goes only to a hugetlbfs directory that serves the users
/// it is shared with, and takes that directory's group unless it asked for
/// one.
fn create_hugepage(
    dirs: &mut Dirs,
    name: &str,
    min_size: usize,
    share: Share,
) -> Result<Region, MapError> {
    let size = round_up(min_size, HUGEPAGE_SIZE)?;
    let need = (size / HUGEPAGE_SIZE) as u64;
    match hugepages_free() {
        None => return Err(MapError::HugepagesUnsupported),
        Some(free) if free < need => return Err(MapError::NoHugepages { need, free }),
        Some(_) => {}
    }
    for dir in dirs.hugetlbfs_for_create() {
        let mut share = share;
        if share.shared {
            match fs::metadata(&dir) {
                Ok(meta) if access::dir_serves(&meta, share.gid) => {
                    share.gid = share.gid.or(Some(meta.gid()));
                }
                _ => continue,
            }
        }
        match create_file(
            name,
            &dir.join(file_name(name)),
            size,
            BackingKind::Hugetlbfs,
            share,
        ) {
            // A hugetlbfs we may not write to (mode 1770, read-only): the
            // next one, or a memfd, which needs no permission.
            Err(MapError::Create { source, .. })
                if matches!(
                    source.raw_os_error(),
                    Some(libc::EACCES | libc::EPERM | libc::EROFS)
                ) => {}
            other => return other,
        }
    }
    if share.shared {
        return Err(MapError::NotShareable {
            name: name.to_owned(),
            gid: share.gid,
        });
    }
    memfd::create(dirs, name, size)
}

/// Creates `path` (`O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC`, mode 0600), gives
/// it `share`'s group and mode, sizes and maps it; unlinks it again if any
/// step after creation fails.
fn create_file(
    name: &str,
    path: &Path,
    size: usize,
    kind: BackingKind,
    share: Share,
) -> Result<Region, MapError> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)
        .map_err(|source| match source.kind() {
            io::ErrorKind::AlreadyExists => MapError::AlreadyExists {
                name: name.to_owned(),
                path: path.to_owned(),
            },
            _ => MapError::Create {
                path: path.to_owned(),
                source,
            },
        })?;
    let built = access::apply(&file, path, share.mode, share.gid)
        .and_then(|()| size_and_map(&file, path, size, kind, share.defer))
        .and_then(|map| {
            let meta = file.metadata().map_err(|source| MapError::Create {
                path: path.to_owned(),
                source,
            })?;
            Ok((map, FileId::of(&meta)))
        });
    match built {
        Ok((map, id)) => Ok(Region::from_parts(
            map,
            name,
            path.to_owned(),
            kind,
            id,
            None,
            true,
        )),
        Err(e) => {
            let _ = fs::remove_file(path);
            Err(e)
        }
    }
}

/// Makes a new, empty `file` (its mode already set) `size` bytes long, and
/// maps it prefaulted; with `defer`, its memory is only made sure of (on
/// tmpfs allocated by `fallocate`; on hugetlbfs reserved by the mapping
/// itself, as every shared hugetlbfs mapping is), so that no later fault
/// can fail, and faulted in when touched ([`Region::create_deferred`]).
/// `path` names it in errors.
pub(crate) fn size_and_map(
    file: &File,
    path: &Path,
    size: usize,
    kind: BackingKind,
    defer: bool,
) -> Result<Mapping, MapError> {
    let resize = |source| MapError::Resize {
        path: path.to_owned(),
        size: size as u64,
        source,
    };
    file.set_len(size as u64).map_err(resize)?;
    let mapped = if defer {
        if kind == BackingKind::Shm {
            Mapping::allocate(file, size).map_err(resize)?;
        }
        Mapping::shared_lazy(file, size)
    } else {
        Mapping::shared_populated(file, size)
    };
    mapped.map_err(|source| {
        let need = (size / HUGEPAGE_SIZE) as u64;
        match (kind.is_hugepage(), source.raw_os_error(), hugepages_free()) {
            (true, Some(libc::ENOMEM), Some(free)) if free >= need => MapError::HugepagesDenied {
                need,
                free,
                path: path.to_owned(),
                source,
            },
            (true, Some(libc::ENOMEM), free) => MapError::NoHugepages {
                need,
                free: free.unwrap_or(0),
            },
            _ => MapError::Map {
                path: path.to_owned(),
                size,
                source,
            },
        }
    })
}

/// Opens and maps existing region file `path`; `None` if there is none.
fn open_file(name: &str, path: &Path, kind: BackingKind) -> Result<Option<Region>, MapError> {
    let file = match OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)
    {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        // A directory we may not search (a root-only hugetlbfs mount): we
        // cannot see, let alone use, what is in it.
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied && !visible(path) => return Ok(None),
        Err(source) => {
            return Err(MapError::Open {
                path: path.to_owned(),
                source,
            })
        }
    };
    let meta = file.metadata().map_err(|source| MapError::Open {
        path: path.to_owned(),
        source,
    })?;
    let map = map_existing(&file, name, path, meta.len())?;
    let id = FileId::of(&meta);
    let region = Region::from_parts(map, name, path.to_owned(), kind, id, None, false);
    Ok(Some(region))
}

/// Whether `path` can be seen to exist (its directory is searchable).
pub(crate) fn visible(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok()
}

/// Maps all `size` bytes of an existing region file, refusing sizes no
/// complete region can have.
pub(crate) fn map_existing(
    file: &File,
    name: &str,
    path: &Path,
    size: u64,
) -> Result<Mapping, MapError> {
    if size == 0 || size % SHM_PAGE_SIZE as u64 != 0 {
        return Err(MapError::BadSize {
            name: name.to_owned(),
            path: path.to_owned(),
            size,
        });
    }
    let len = usize::try_from(size).map_err(|_| MapError::TooLarge {
        requested: usize::MAX,
    })?;
    let map = if size_vouched_for(file, size) {
        Mapping::shared_populated(file, len)
    } else {
        Mapping::shared_lazy(file, len)
    };
    map.map_err(|source| MapError::Map {
        path: path.to_owned(),
        size: len,
        source,
    })
}

/// Whether `file` may be prefaulted whole: its header is published and
/// gives `size` as the region's size, and (on tmpfs) every page of it is
/// allocated, as its creator left it. A file someone grew, or a header
/// overwritten, is mapped lazily instead, so that opening it cannot make
/// this process allocate memory no region needs (validation then reports
/// what is wrong with it).
fn size_vouched_for(file: &File, size: u64) -> bool {
    use std::os::unix::fs::FileExt;
    let mut head = [0u8; 32];
    if file.read_exact_at(&mut head, 0).is_err() {
        return false;
    }
    let word = |at: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&head[at..at + 8]);
        u64::from_ne_bytes(b)
    };
    let magic = word(std::mem::offset_of!(hwl_region, magic));
    let total = word(std::mem::offset_of!(hwl_region, total_size));
    if magic != HWL_REGION_MAGIC || total != size {
        return false;
    }
    match file.metadata() {
        // tmpfs counts allocated 512-byte blocks; hugetlbfs pages are
        // reserved up front and have no holes to fill.
        Ok(m) if m.blksize() == SHM_PAGE_SIZE as u64 => m.blocks().saturating_mul(512) >= size,
        Ok(_) => true,
        Err(_) => false,
    }
}

/// `min_size` (at least 1) rounded up to a multiple of `page`.
fn round_up(min_size: usize, page: usize) -> Result<usize, MapError> {
    min_size
        .max(1)
        .checked_next_multiple_of(page)
        .filter(|&size| size <= isize::MAX as usize)
        .ok_or(MapError::TooLarge {
            requested: min_size,
        })
}

/// Set by [`silence_fallback_warning`].
static FALLBACK_SILENT: AtomicBool = AtomicBool::new(false);

/// Stops this process from printing the hugepage fallback warning: for
/// helper processes (a benchmark's peers) whose parent has already told the
/// user, so that one command prints it once, not once per peer.
pub fn silence_fallback_warning() {
    FALLBACK_SILENT.store(true, Ordering::Relaxed);
}

/// Tells the user, once per process, that `Backend::Auto` fell back to
/// 4 KiB pages: because too few hugepages were free, or because of `why`.
fn warn_fallback_once(need: u64, why: Option<&MapError>, shm_dir: &Path) {
    static WARNED: Once = Once::new();
    if FALLBACK_SILENT.load(Ordering::Relaxed) {
        return;
    }
    WARNED.call_once(|| match why {
        None | Some(MapError::NoHugepages { .. }) => eprintln!(
            "hwlink: warning: no free 2 MiB hugepages (need {need}, free {}); using 4 KiB \
             pages in {}. Reserve hugepages with `sudo sysctl vm.nr_hugepages={}`, or pass \
             `--backend shm` to choose 4 KiB pages explicitly.",
            hugepages_free().unwrap_or(0),
            shm_dir.display(),
            suggest_nr_hugepages(need),
        ),
        Some(e) => eprintln!(
            "hwlink: warning: {e}; using 4 KiB pages in {} instead.",
            shm_dir.display()
        ),
    });
}

#[cfg(test)]
impl Region {
    pub(crate) fn write_at(&self, offset: usize, bytes: &[u8]) {
        self.map.write_at(offset, bytes);
    }

    pub(crate) fn read_at(&self, offset: usize, len: usize) -> Vec<u8> {
        self.map.read_at(offset, len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{unique_name, TempDir};

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().mode() & 0o7777
    }

    #[test]
    fn shm_create_open_share_memory() {
        let tmp = TempDir::new();
        let name = unique_name("share");
        let a = create_in(&mut tmp.dirs(), &name, 10_000, Backend::Shm).unwrap();
        assert_eq!(a.kind(), BackingKind::Shm);
        assert_eq!(a.page_size(), 4096);
        assert_eq!(a.len(), 12_288);
        assert!(!a.is_empty());
        assert_eq!(a.name(), name);
        assert_eq!(a.path(), tmp.path().join(format!("hwlink.{name}")));
        assert_eq!(a.as_ptr() as usize % 4096, 0);
        assert_eq!(fs::metadata(a.path()).unwrap().len(), 12_288);
        assert_eq!(mode(a.path()), 0o600);

        let b = open_in(&tmp.dirs(), &name, Backend::Shm).unwrap();
        let c = open_in(&tmp.dirs(), &name, Backend::Auto).unwrap();
        assert_eq!((b.kind(), b.len()), (BackingKind::Shm, 12_288));
        assert_ne!(a.as_ptr(), b.as_ptr());
        a.write_at(0, b"hello");
        a.write_at(12_283, b"world");
        assert_eq!(b.read_at(0, 5), b"hello");
        assert_eq!(c.read_at(12_283, 5), b"world");
        b.write_at(100, b"back");
        assert_eq!(a.read_at(100, 4), b"back");

        drop((b, c));
        assert!(a.path().exists(), "open() must not remove the file");
        drop(a);
        assert!(tmp.entries().is_empty(), "left behind: {:?}", tmp.entries());
    }

    /// A deferred region has all its memory allocated (tmpfs counts every
    /// block) and reads as zeros; populating it, in parts or past its end,
    /// changes nothing anyone sees.
    #[test]
    fn deferred_region_is_allocated_zeroed_and_populates() {
        use std::os::unix::fs::MetadataExt;
        let tmp = TempDir::new();
        let name = unique_name("defer");
        let size = 1 << 20;
        let r = create_made(
            &mut tmp.dirs(),
            &name,
            size,
            Backend::Shm,
            &FileAccess::private(),
            true,
        )
        .unwrap();
        assert_eq!(r.kind(), BackingKind::Shm);
        assert_eq!(r.len(), size);
        let meta = fs::metadata(r.path()).unwrap();
        assert_eq!(meta.len(), size as u64);
        assert!(
            meta.blocks() * 512 >= size as u64,
            "{} blocks allocated of {size} bytes",
            meta.blocks()
        );
        r.write_at(5000, b"kept");
        r.populate(0, 64 << 10).unwrap();
        r.populate(size - 4096, 1 << 30).unwrap();
        r.populate(size + 4096, 4096).unwrap();
        assert_eq!(r.read_at(5000, 4), b"kept");
        assert_eq!(r.read_at(size - 4, 4), [0; 4]);
    }

    /// A large mapping gives its pages back in parts before it is unmapped
    /// (`Mapping`'s drop): the file keeps every byte, as another mapping
    /// of it, and a new one, read them.
    #[test]
    fn dropping_a_large_mapping_keeps_the_files_bytes() {
        let tmp = TempDir::new();
        let name = unique_name("zap");
        // 5 MiB: two whole parts of 2 MiB and a partial one.
        let size = 5 << 20;
        let r = create_made(
            &mut tmp.dirs(),
            &name,
            size,
            Backend::Shm,
            &FileAccess::private(),
            false,
        )
        .unwrap();
        let marks = [0, 4096, (2 << 20) - 8, 2 << 20, (4 << 20) + 12, size - 8];
        let other = open_in(&tmp.dirs(), &name, Backend::Shm).unwrap();
        for (k, &at) in marks.iter().enumerate() {
            other.write_at(at, &[k as u8 + 1; 8]);
        }
        drop(other);
        let check = |m: &Region, how: &str| {
            for (k, &at) in marks.iter().enumerate() {
                assert_eq!(m.read_at(at, 8), [k as u8 + 1; 8], "at {at}, {how}");
            }
        };
        check(&r, "the creator's mapping");
        let again = open_in(&tmp.dirs(), &name, Backend::Shm).unwrap();
        check(&again, "reopened");
        // The creator's drop (which removes the file) spares the bytes a
        // mapping still holds.
        drop(r);
        check(&again, "after the creator's drop");
    }

    #[test]
    fn sizes_round_up_to_pages() {
        let tmp = TempDir::new();
        for (ask, got) in [(0, 4096), (1, 4096), (4096, 4096), (4097, 8192)] {
            let r = create_in(&mut tmp.dirs(), &unique_name("size"), ask, Backend::Shm).unwrap();
            assert_eq!(r.len(), got, "asked {ask}");
        }
        assert!(matches!(
            create_in(
                &mut tmp.dirs(),
                &unique_name("huge"),
                usize::MAX,
                Backend::Shm
            ),
            Err(MapError::TooLarge { .. })
        ));
        assert!(tmp.entries().is_empty(), "left behind: {:?}", tmp.entries());
    }

    #[test]
    fn create_twice_is_already_exists_in_any_backend() {
        let tmp = TempDir::new();
        let name = unique_name("twice");
        let first = create_in(&mut tmp.dirs(), &name, 4096, Backend::Shm).unwrap();
        first.write_at(0, b"keep");
        for backend in [Backend::Shm, Backend::Auto, Backend::Hugepage] {
            match create_in(&mut tmp.dirs(), &name, 4096, backend) {
                Err(e @ MapError::AlreadyExists { .. }) => {
                    let msg = e.to_string();
                    assert!(msg.contains(&format!("hwlink rm {name}")), "{msg}");
                    assert!(msg.contains("hwlink rm --stale"), "{msg}");
                }
                other => panic!("{backend}: {other:?}"),
            }
        }
        // The failed attempts must not have touched the first region's file.
        let again = open_in(&tmp.dirs(), &name, Backend::Shm).unwrap();
        assert_eq!(again.read_at(0, 4), b"keep");
        drop((again, first));
        assert!(tmp.entries().is_empty(), "left behind: {:?}", tmp.entries());
    }

    #[test]
    fn create_refuses_a_name_taken_in_the_hugetlbfs_dir() {
        let shm = TempDir::new();
        let huge = TempDir::new();
        let mut dirs = shm.dirs();
        dirs.hugetlbfs = vec![huge.path().to_owned()];
        let name = unique_name("taken");
        fs::write(huge.path().join(format!("hwlink.{name}")), b"").unwrap();
        assert!(matches!(
            create_in(&mut dirs, &name, 1, Backend::Shm),
            Err(MapError::AlreadyExists { path, .. }) if path.starts_with(huge.path())
        ));
        assert!(shm.entries().is_empty());
    }

    #[test]
    fn remove_on_drop_is_switchable() {
        let tmp = TempDir::new();
        let name = unique_name("keep");
        let mut r = create_in(&mut tmp.dirs(), &name, 1, Backend::Shm).unwrap();
        r.set_remove_on_drop(false);
        let path = r.path().to_owned();
        drop(r);
        assert!(path.exists());

        let mut opened = open_in(&tmp.dirs(), &name, Backend::Auto).unwrap();
        opened.set_remove_on_drop(true);
        drop(opened);
        assert!(!path.exists());
        assert!(tmp.entries().is_empty());
    }

    #[test]
    fn drop_leaves_a_newer_region_of_the_same_name_alone() {
        let tmp = TempDir::new();
        let name = unique_name("reuse");
        let old = create_in(&mut tmp.dirs(), &name, 1, Backend::Shm).unwrap();
        crate::registry::remove_in(&tmp.dirs(), &name).unwrap();
        let new = create_in(&mut tmp.dirs(), &name, 1, Backend::Shm).unwrap();
        drop(old);
        assert!(
            new.path().exists(),
            "dropping the old region removed the new file"
        );
        drop(new);
        assert!(tmp.entries().is_empty());
    }

    #[test]
    fn open_of_missing_region_is_not_found() {
        let tmp = TempDir::new();
        for backend in [Backend::Auto, Backend::Hugepage, Backend::Shm] {
            match open_in(&tmp.dirs(), "nobody-here", backend) {
                Err(e @ MapError::NotFound { .. }) => {
                    let msg = e.to_string();
                    assert!(msg.contains("is the creating process running?"), "{msg}");
                    assert!(msg.contains("hwlink ls"), "{msg}");
                }
                other => panic!("{backend}: {other:?}"),
            }
        }
    }

    #[test]
    fn open_refuses_files_that_cannot_be_regions() {
        let tmp = TempDir::new();
        for (name, size) in [("empty", 0), ("odd", 100), ("almost", 4097)] {
            let file = File::create(tmp.path().join(format!("hwlink.{name}"))).unwrap();
            file.set_len(size).unwrap();
            match open_in(&tmp.dirs(), name, Backend::Auto) {
                Err(e @ MapError::BadSize { .. }) => {
                    assert!(e.to_string().contains(&format!("hwlink rm {name}")), "{e}");
                }
                other => panic!("{name}: {other:?}"),
            }
        }
    }

    #[test]
    fn invalid_names_are_refused_everywhere() {
        let tmp = TempDir::new();
        for name in ["", ".x", "a/b", "../etc", &"n".repeat(49)] {
            let bad = |r: Result<Region, MapError>| matches!(r, Err(MapError::InvalidName { .. }));
            assert!(
                bad(create_in(&mut tmp.dirs(), name, 1, Backend::Shm)),
                "{name:?}"
            );
            assert!(bad(open_in(&tmp.dirs(), name, Backend::Auto)), "{name:?}");
            assert!(matches!(
                crate::registry::remove_in(&tmp.dirs(), name),
                Err(MapError::InvalidName { .. })
            ));
        }
        assert!(tmp.entries().is_empty());
    }

    #[test]
    fn hugepage_backend_never_falls_back() {
        let tmp = TempDir::new();
        let free = hugepages_free().unwrap_or(0);
        let name = unique_name("nohuge");
        match create_in(
            &mut tmp.dirs(),
            &name,
            (free as usize + 1) * HUGEPAGE_SIZE,
            Backend::Hugepage,
        ) {
            Err(e @ MapError::NoHugepages { .. }) => {
                assert!(
                    e.to_string().contains("sudo sysctl vm.nr_hugepages="),
                    "{e}"
                );
            }
            Err(MapError::HugepagesUnsupported) => {}
            other => panic!("{other:?}"),
        }
        assert!(tmp.entries().is_empty());
    }

    #[test]
    fn auto_falls_back_to_shm_when_hugepages_are_short() {
        let free = hugepages_free().unwrap_or(0);
        if free > 512 {
            println!("SKIPPED: {free} free hugepages; asking for more would map over 1 GiB");
            return;
        }
        let tmp = TempDir::new();
        let size = (free as usize + 1) * HUGEPAGE_SIZE;
        let r = create_in(&mut tmp.dirs(), &unique_name("auto"), size, Backend::Auto).unwrap();
        assert_eq!(r.kind(), BackingKind::Shm);
        assert_eq!(r.page_size(), 4096);
        assert_eq!(r.len(), size);
        assert!(r.path().starts_with(tmp.path()));
        drop(r);
        assert!(tmp.entries().is_empty());
    }

    #[test]
    fn auto_uses_hugepages_when_free() {
        if hugepages_free().unwrap_or(0) < 1 {
            println!("SKIPPED: no hugepages");
            return;
        }
        // No hugetlbfs dir and no mounting allowed: the memfd path.
        let tmp = TempDir::new();
        let r = create_in(&mut tmp.dirs(), &unique_name("autohuge"), 1, Backend::Auto).unwrap();
        assert_eq!(r.kind(), BackingKind::MemfdHugetlb);
        assert_eq!(r.len(), HUGEPAGE_SIZE);
        drop(r);
        assert!(tmp.entries().is_empty(), "left behind: {:?}", tmp.entries());
    }

    /// A private hugetlbfs limited to one 2 MiB page, unmounted on drop.
    struct TinyHugetlbfs(TempDir);

    impl TinyHugetlbfs {
        fn mount() -> Option<TinyHugetlbfs> {
            if crate::mapping::effective_uid() != 0 {
                return None;
            }
            let dir = TempDir::new();
            let mounted = std::process::Command::new("mount")
                .args(["-t", "hugetlbfs", "-o", "pagesize=2M,size=2M", "none"])
                .arg(dir.path())
                .status()
                .is_ok_and(|s| s.success());
            mounted.then_some(TinyHugetlbfs(dir))
        }
    }

    impl Drop for TinyHugetlbfs {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount")
                .arg(self.0.path())
                .status();
        }
    }

    #[test]
    fn hugepage_mmap_enomem_cleans_up_and_auto_falls_back() {
        if hugepages_free().unwrap_or(0) < 2 {
            println!("SKIPPED: no hugepages");
            return;
        }
        let Some(tiny) = TinyHugetlbfs::mount() else {
            println!("SKIPPED: needs root and a hugetlbfs mount");
            return;
        };
        let shm = TempDir::new();
        let mut dirs = shm.dirs();
        dirs.hugetlbfs = vec![tiny.0.path().to_owned()];

        // One page fits in the mount's limit.
        let one = create_in(&mut dirs, &unique_name("fits"), 1, Backend::Hugepage).unwrap();
        assert_eq!(
            (one.kind(), one.len()),
            (BackingKind::Hugetlbfs, HUGEPAGE_SIZE)
        );
        assert!(one.path().starts_with(tiny.0.path()));
        assert_eq!(mode(one.path()), 0o600);
        drop(one);
        assert!(tiny.0.entries().is_empty());

        // Two do not: mmap fails with ENOMEM after the file was created.
        match create_in(
            &mut dirs,
            &unique_name("enomem"),
            2 * HUGEPAGE_SIZE,
            Backend::Hugepage,
        ) {
            Err(e @ MapError::HugepagesDenied { need: 2, .. }) => {
                assert!(e.to_string().contains("os error 12"), "{e}");
            }
            other => panic!("{other:?}"),
        }
        assert!(
            tiny.0.entries().is_empty(),
            "left behind: {:?}",
            tiny.0.entries()
        );

        // Auto takes the ENOMEM as a shortage and falls back to shm.
        let r = create_in(
            &mut dirs,
            &unique_name("fallback"),
            2 * HUGEPAGE_SIZE,
            Backend::Auto,
        )
        .unwrap();
        assert_eq!(r.kind(), BackingKind::Shm);
        assert!(r.path().starts_with(shm.path()));
        drop(r);
        assert!(tiny.0.entries().is_empty() && shm.entries().is_empty());
    }
}

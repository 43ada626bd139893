//! Hugepage regions without a hugetlbfs mount: an `MFD_HUGETLB` memfd kept
//! open by its creator, found by name through the locator file
//! `<shm dir>/hwlink.<name>.memfd` that holds `"<pid> <fd>\n"`.

use std::ffi::CString;
use std::fs::{self, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::backend::BackingKind;
use crate::dirs::Dirs;
use crate::error::MapError;
use crate::mapping;
use crate::name::{file_name, locator_file_name};
use crate::region::{self, FileId, Region};

/// The contents of a locator file: where the memfd is open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Locator {
    pub(crate) pid: u32,
    pub(crate) fd: i32,
}

impl Locator {
    /// Parses exactly `"<pid> <fd>\n"`.
    pub(crate) fn parse(text: &str) -> Option<Locator> {
        let (pid, fd) = text.strip_suffix('\n')?.split_once(' ')?;
        let all_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if !all_digits(pid) || !all_digits(fd) {
            return None;
        }
        Some(Locator {
            pid: pid.parse().ok()?,
            fd: fd.parse().ok()?,
        })
    }

    pub(crate) fn render(&self) -> String {
        format!("{} {}\n", self.pid, self.fd)
    }

    /// `/proc/<pid>/fd/<fd>`: opening it reopens the memfd.
    pub(crate) fn proc_path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/{}/fd/{}", self.pid, self.fd))
    }
}

/// What a locator path holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Probe {
    /// No locator file.
    Absent,
    /// The creator is alive and still holds the memfd.
    Live(Locator),
    /// The creator is gone (pid, if the file was readable): the memory is too.
    Stale(Option<u32>),
}

/// Reads the locator at `path` and checks that its process still holds the
/// memfd of region `name`. Errors only when the file cannot be read.
pub(crate) fn probe(name: &str, path: &Path) -> io::Result<Probe> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Probe::Absent),
        Err(e) => return Err(e),
    };
    // Locators are published whole (see `publish`), so garbage is not a
    // half-written file: it is not ours to trust.
    let Some(loc) = Locator::parse(&String::from_utf8_lossy(&bytes)) else {
        return Ok(Probe::Stale(None));
    };
    let live = match fs::read_link(loc.proc_path()) {
        Ok(target) => target == Path::new(&format!("/memfd:{} (deleted)", file_name(name))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => false,
        // Another user's process: alive as long as /proc/<pid> is there.
        Err(_) => Path::new(&format!("/proc/{}", loc.pid)).exists(),
    };
    Ok(if live {
        Probe::Live(loc)
    } else {
        Probe::Stale(Some(loc.pid))
    })
}

/// Size of the memfd behind a live locator, if it can be reached.
pub(crate) fn live_size(name: &str, path: &Path) -> Option<u64> {
    match probe(name, path) {
        Ok(Probe::Live(loc)) => fs::metadata(loc.proc_path()).ok().map(|m| m.len()),
        _ => None,
    }
}

/// Creates hugepage region `name` of exactly `size` bytes (a multiple of
/// 2 MiB) as a memfd, maps it, then publishes its locator in the shm dir.
pub(crate) fn create(dirs: &Dirs, name: &str, size: usize) -> Result<Region, MapError> {
    let memfd_name = CString::new(file_name(name)).map_err(|_| MapError::InvalidName {
        name: name.to_owned(),
        reason: "the name contains a NUL byte",
    })?;
    let file = mapping::memfd_create_hugetlb_2m(&memfd_name).map_err(|source| MapError::Memfd {
        name: name.to_owned(),
        source,
    })?;
    let label = PathBuf::from(format!("memfd:{}", file_name(name)));
    crate::access::apply(&file, &label, 0o600, None)?;
    let map = region::size_and_map(&file, &label, size, BackingKind::MemfdHugetlb, false)?;
    mapping::seal_shrink(&file).map_err(|source| MapError::Memfd {
        name: name.to_owned(),
        source,
    })?;
    let loc = Locator {
        pid: process::id(),
        fd: file.as_raw_fd(),
    };
    let path = dirs.locator(name);
    let id = publish(name, &path, loc)?;
    Ok(Region::from_parts(
        map,
        name,
        path,
        BackingKind::MemfdHugetlb,
        id,
        Some(file),
        true,
    ))
}

/// Writes `loc` to `path` atomically and exclusively: a temporary file,
/// hard-linked into place (fails if `path` exists), then unlinked.
fn publish(name: &str, path: &Path, loc: Locator) -> Result<FileId, MapError> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let tmp = path.with_file_name(format!(
        ".{}.{}.{}.tmp",
        locator_file_name(name),
        process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let written = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.set_permissions(Permissions::from_mode(0o600))?;
        f.write_all(loc.render().as_bytes())?;
        fs::hard_link(&tmp, path)?;
        Ok(FileId::of(&f.metadata()?))
    })();
    let _ = fs::remove_file(&tmp);
    written.map_err(|source: io::Error| match source.kind() {
        io::ErrorKind::AlreadyExists => MapError::AlreadyExists {
            name: name.to_owned(),
            path: path.to_owned(),
        },
        _ => MapError::Locator {
            path: path.to_owned(),
            source,
        },
    })
}

/// Opens memfd region `name` through its locator; `None` if there is no
/// locator, `Stale` if its creator is gone.
pub(crate) fn open(dirs: &Dirs, name: &str) -> Result<Option<Region>, MapError> {
    let path = dirs.locator(name);
    let stale = |pid| MapError::Stale {
        name: name.to_owned(),
        path: path.clone(),
        pid,
    };
    let loc = match probe(name, &path) {
        Ok(Probe::Absent) => return Ok(None),
        Ok(Probe::Stale(pid)) => return Err(stale(pid)),
        Ok(Probe::Live(loc)) => loc,
        Err(source) => return Err(MapError::Locator { path, source }),
    };
    let Some(id) = FileId::of_path(&path) else {
        return Ok(None); // removed since the probe
    };
    let proc_path = loc.proc_path();
    let file = match OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(&proc_path)
    {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(stale(Some(loc.pid))),
        Err(source) => {
            return Err(MapError::Open {
                path: proc_path,
                source,
            })
        }
    };
    let size = file
        .metadata()
        .map_err(|source| MapError::Open {
            path: proc_path.clone(),
            source,
        })?
        .len();
    if !mapping::sealed_against_shrinking(&file) {
        return Err(MapError::Unsealed {
            name: name.to_owned(),
        });
    }
    let map = region::map_existing(&file, name, &proc_path, size)?;
    Ok(Some(Region::from_parts(
        map,
        name,
        path,
        BackingKind::MemfdHugetlb,
        id,
        None,
        false,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{Backend, HUGEPAGE_SIZE};
    use crate::region::{create_in, open_in};
    use crate::registry::{list_in, remove_in};
    use crate::sysinfo::hugepages_free;
    use crate::testutil::{unique_name, TempDir};
    use std::os::unix::fs::MetadataExt;

    fn dead_pid() -> u32 {
        let mut child = process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        pid
    }

    #[test]
    fn locator_text_round_trips() {
        let loc = Locator { pid: 1234, fd: 7 };
        assert_eq!(loc.render(), "1234 7\n");
        assert_eq!(Locator::parse("1234 7\n"), Some(loc));
        assert_eq!(loc.proc_path(), Path::new("/proc/1234/fd/7"));
        for bad in [
            "",
            "1234 7",
            "1234  7\n",
            "-1 7\n",
            "1234 x\n",
            "1 2 3\n",
            " 1 2\n",
        ] {
            assert_eq!(Locator::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn memfd_region_is_reachable_through_its_locator() {
        if hugepages_free().unwrap_or(0) < 2 {
            println!("SKIPPED: no hugepages");
            return;
        }
        let tmp = TempDir::new();
        let name = unique_name("memfd");
        let a = create(&tmp.dirs(), &name, 2 * HUGEPAGE_SIZE).unwrap();
        assert_eq!(a.kind(), BackingKind::MemfdHugetlb);
        assert_eq!(a.page_size(), HUGEPAGE_SIZE);
        assert_eq!(a.len(), 2 * HUGEPAGE_SIZE);
        assert_eq!(a.as_ptr() as usize % HUGEPAGE_SIZE, 0);
        assert_eq!(a.path(), tmp.path().join(format!("hwlink.{name}.memfd")));

        // The locator: "<pid> <fd>\n", mode 0600, and nothing else left behind.
        let text = fs::read_to_string(a.path()).unwrap();
        let loc = Locator::parse(&text).unwrap();
        assert_eq!(loc.pid, process::id());
        assert_eq!(fs::metadata(a.path()).unwrap().mode() & 0o777, 0o600);
        assert_eq!(tmp.entries(), [format!("hwlink.{name}.memfd")]);
        assert_eq!(probe(&name, a.path()).unwrap(), Probe::Live(loc));
        assert_eq!(
            fs::metadata(loc.proc_path()).unwrap().mode() & 0o777,
            0o600,
            "the memfd itself is mode 0600"
        );

        let b = open(&tmp.dirs(), &name).unwrap().expect("locator present");
        assert_eq!((b.kind(), b.len()), (BackingKind::MemfdHugetlb, a.len()));
        a.write_at(0, b"through a");
        b.write_at(HUGEPAGE_SIZE + 5, b"through b");
        assert_eq!(b.read_at(0, 9), b"through a");
        assert_eq!(a.read_at(HUGEPAGE_SIZE + 5, 9), b"through b");

        // The public lookups find it too, except the shm-only one.
        let c = open_in(&tmp.dirs(), &name, Backend::Hugepage).unwrap();
        assert_eq!(c.read_at(0, 9), b"through a");
        assert!(open_in(&tmp.dirs(), &name, Backend::Auto).is_ok());
        assert!(matches!(
            open_in(&tmp.dirs(), &name, Backend::Shm),
            Err(MapError::NotFound { .. })
        ));
        assert!(matches!(
            create_in(&mut tmp.dirs(), &name, 1, Backend::Shm),
            Err(MapError::AlreadyExists { .. })
        ));
        let listed = list_in(&tmp.dirs()).unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].name, name);
        assert_eq!(listed[0].kind, BackingKind::MemfdHugetlb);
        assert_eq!(listed[0].size, 2 * HUGEPAGE_SIZE as u64);
        assert!(!listed[0].is_stale());

        drop((b, c));
        assert!(a.path().exists(), "an opener must not remove the locator");
        drop(a);
        assert!(tmp.entries().is_empty(), "left behind: {:?}", tmp.entries());
    }

    #[test]
    fn locator_of_a_dead_process_is_stale() {
        let tmp = TempDir::new();
        let name = unique_name("stale");
        let path = tmp.dirs().locator(&name);
        let pid = dead_pid();
        fs::write(&path, Locator { pid, fd: 3 }.render()).unwrap();

        assert_eq!(probe(&name, &path).unwrap(), Probe::Stale(Some(pid)));
        match open_in(&tmp.dirs(), &name, Backend::Auto) {
            Err(e @ MapError::Stale { .. }) => {
                let msg = e.to_string();
                assert!(msg.contains(&format!("pid {pid}")), "{msg}");
                assert!(msg.contains("hwlink rm --stale"), "{msg}");
            }
            other => panic!("{other:?}"),
        }
        let listed = list_in(&tmp.dirs()).unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(
            (listed[0].kind, listed[0].size),
            (BackingKind::MemfdHugetlb, 0)
        );
        assert!(listed[0].is_stale());

        // create() clears the stale locator and takes the name.
        let r = create_in(&mut tmp.dirs(), &name, 1, Backend::Shm).unwrap();
        assert!(!path.exists());
        drop(r);
        assert!(tmp.entries().is_empty(), "left behind: {:?}", tmp.entries());
    }

    #[test]
    fn locator_pointing_at_another_file_or_garbage_is_stale() {
        let tmp = TempDir::new();
        let name = unique_name("wrongfd");
        let path = tmp.dirs().locator(&name);
        let other = fs::File::open("/proc/self/status").unwrap();
        let loc = Locator {
            pid: process::id(),
            fd: other.as_raw_fd(),
        };
        fs::write(&path, loc.render()).unwrap();
        assert_eq!(probe(&name, &path).unwrap(), Probe::Stale(Some(loc.pid)));

        fs::write(&path, "not a locator").unwrap();
        assert_eq!(probe(&name, &path).unwrap(), Probe::Stale(None));
        remove_in(&tmp.dirs(), &name).unwrap();
        assert_eq!(probe(&name, &path).unwrap(), Probe::Absent);
        assert!(tmp.entries().is_empty());
    }

    /// Set (only) in the child process of
    /// `memfd_region_opens_from_another_process`: "<shm dir>\n<name>".
    const CHILD_ENV: &str = "HWLINK_TEST_MEMFD_CHILD";

    #[test]
    fn memfd_region_opens_from_another_process() {
        if hugepages_free().unwrap_or(0) < 1 {
            println!("SKIPPED: no hugepages");
            return;
        }
        let tmp = TempDir::new();
        let name = unique_name("xproc");
        let a = create(&tmp.dirs(), &name, HUGEPAGE_SIZE).unwrap();
        a.write_at(64, b"from parent");
        let status = process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "memfd::tests::child_opens_region", "--nocapture"])
            .env(CHILD_ENV, format!("{}\n{name}", tmp.path().display()))
            .stdout(process::Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "child failed: {status}");
        assert_eq!(a.read_at(128, 10), b"from child");
        drop(a);
        assert!(tmp.entries().is_empty(), "left behind: {:?}", tmp.entries());
    }

    /// The child half of `memfd_region_opens_from_another_process`; does
    /// nothing in a normal test run.
    #[test]
    fn child_opens_region() {
        let Ok(spec) = std::env::var(CHILD_ENV) else {
            return;
        };
        let (dir, name) = spec.split_once('\n').unwrap();
        let dirs = Dirs {
            shm: PathBuf::from(dir),
            hugetlbfs: Vec::new(),
            may_mount: false,
        };
        let b = open_in(&dirs, name, Backend::Auto).unwrap();
        assert_eq!(b.kind(), BackingKind::MemfdHugetlb);
        assert_ne!(
            Locator::parse(&fs::read_to_string(b.path()).unwrap())
                .unwrap()
                .pid,
            process::id()
        );
        assert_eq!(b.read_at(64, 11), b"from parent");
        b.write_at(128, b"from child");
    }
}

//! The region files on this machine: [`list_regions`] and [`remove_region`].

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::backend::BackingKind;
use crate::dirs::Dirs;
use crate::error::MapError;
use crate::memfd;
use crate::name::{parse_file_name, validate_name, Entry};
use crate::region::visible;

/// One region file found by [`list_regions`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegionFile {
    /// The region name.
    pub name: String,
    /// The region file; for a memfd region, its locator file.
    pub path: PathBuf,
    /// The memory the region lives in.
    pub kind: BackingKind,
    /// Size in bytes; 0 for a memfd region whose memfd cannot be reached.
    pub size: u64,
}

impl RegionFile {
    /// Whether the region's memory is known to be gone: a memfd locator
    /// whose creating process has exited. Hugetlbfs and shm files outlive
    /// their creator, so they are never stale by this test (their header
    /// may tell more).
    pub fn is_stale(&self) -> bool {
        self.kind == BackingKind::MemfdHugetlb
            && matches!(
                memfd::probe(&self.name, &self.path),
                Ok(memfd::Probe::Stale(_))
            )
    }
}

/// Every hwlink region file on this machine, in all backends: files in the
/// hugetlbfs directories and the shm directory, and memfd locators (with the
/// memfd's size when reachable). Sorted by name. A hugetlbfs directory this
/// user may not read (root-only mount) is skipped.
pub fn list_regions() -> Result<Vec<RegionFile>, MapError> {
    list_in(&Dirs::from_env())
}

/// Unlinks region `name` wherever it is (hugetlbfs, memfd locator, shm).
/// A memfd region's memory lives on until its creator exits, but can no
/// longer be opened by name. [`MapError::NotFound`] if there was none.
pub fn remove_region(name: &str) -> Result<(), MapError> {
    remove_in(&Dirs::from_env(), name)
}

/// [`list_regions`] in explicit directories.
pub(crate) fn list_in(dirs: &Dirs) -> Result<Vec<RegionFile>, MapError> {
    let mut found = Vec::new();
    for dir in &dirs.hugetlbfs {
        match scan(dir, BackingKind::Hugetlbfs, &mut found) {
            // A root-only hugetlbfs mount (mode 1770): its regions are not
            // usable by this user, so they are not listed.
            Err(MapError::ListDir { source, .. })
                if source.kind() == io::ErrorKind::PermissionDenied => {}
            other => other?,
        }
    }
    scan(&dirs.shm, BackingKind::Shm, &mut found)?;
    for dir in dirs.shared_shm() {
        match scan(&dir, BackingKind::Shm, &mut found) {
            // Another group's directory: not this user's regions.
            Err(MapError::ListDir { source, .. })
                if source.kind() == io::ErrorKind::PermissionDenied => {}
            other => other?,
        }
    }
    found.sort_by(|a, b| (&a.name, &a.path).cmp(&(&b.name, &b.path)));
    found.dedup_by(|a, b| a.path == b.path);
    Ok(found)
}

/// Adds the region files of `dir` to `found`; a missing `dir` has none.
fn scan(dir: &Path, kind: BackingKind, found: &mut Vec<RegionFile>) -> Result<(), MapError> {
    let list_err = |source| MapError::ListDir {
        path: dir.to_owned(),
        source,
    };
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(list_err(e)),
    };
    for entry in entries {
        let entry = entry.map_err(list_err)?;
        let Some(parsed) = entry.file_name().to_str().and_then(parse_file_name) else {
            continue;
        };
        let path = entry.path();
        match parsed {
            Entry::Region(name) => {
                // Not following symlinks; skip whatever vanished meanwhile.
                let Ok(meta) = entry.metadata() else { continue };
                if meta.is_file() {
                    found.push(RegionFile {
                        name,
                        path,
                        kind,
                        size: meta.len(),
                    });
                }
            }
            Entry::Locator(name) if kind == BackingKind::Shm => {
                let size = memfd::live_size(&name, &path).unwrap_or(0);
                found.push(RegionFile {
                    name,
                    path,
                    kind: BackingKind::MemfdHugetlb,
                    size,
                });
            }
            Entry::Locator(_) => {}
        }
    }
    Ok(())
}

/// [`remove_region`] in explicit directories.
pub(crate) fn remove_in(dirs: &Dirs, name: &str) -> Result<(), MapError> {
    validate_name(name)?;
    let mut removed = false;
    let candidates = dirs
        .hugetlbfs_files(name)
        .into_iter()
        .chain([dirs.locator(name)])
        .chain(dirs.shm_files(name));
    for path in candidates {
        match fs::remove_file(&path) {
            Ok(()) => removed = true,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            // Not even visible to us (a root-only hugetlbfs mount).
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied && !visible(&path) => {}
            Err(source) => return Err(MapError::Remove { path, source }),
        }
    }
    if removed {
        Ok(())
    } else {
        Err(MapError::NotFound {
            name: name.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Backend;
    use crate::region::create_in;
    use crate::testutil::{unique_name, TempDir};

    #[test]
    fn lists_only_region_files_and_removes_them() {
        let shm = TempDir::new();
        let huge = TempDir::new();
        let mut dirs = shm.dirs();
        dirs.hugetlbfs = vec![huge.path().to_owned()];
        let (a, b) = (unique_name("a"), unique_name("b"));

        let mut ra = create_in(&mut dirs, &a, 5000, Backend::Shm).unwrap();
        ra.set_remove_on_drop(false);
        drop(ra);
        // A file in the hugetlbfs dir is listed as such (written by hand:
        // this test's "hugetlbfs" dir is plain tmpfs).
        fs::write(huge.path().join(format!("hwlink.{b}")), vec![0u8; 4096]).unwrap();
        // Not regions: other files, bad names, directories, temp locators.
        fs::write(shm.path().join("unrelated"), b"x").unwrap();
        fs::write(shm.path().join("hwlink.bad name"), b"x").unwrap();
        fs::write(
            shm.path().join(format!(".hwlink.{a}.memfd.1.0.tmp")),
            b"1 2\n",
        )
        .unwrap();
        fs::create_dir(shm.path().join("hwlink.somedir")).unwrap();

        let listed = list_in(&dirs).unwrap();
        assert_eq!(
            listed,
            vec![
                RegionFile {
                    name: a.clone(),
                    path: shm.path().join(format!("hwlink.{a}")),
                    kind: BackingKind::Shm,
                    size: 8192,
                },
                RegionFile {
                    name: b.clone(),
                    path: huge.path().join(format!("hwlink.{b}")),
                    kind: BackingKind::Hugetlbfs,
                    size: 4096,
                },
            ]
        );
        assert!(!listed[0].is_stale());

        remove_in(&dirs, &a).unwrap();
        remove_in(&dirs, &b).unwrap();
        match remove_in(&dirs, &a) {
            Err(e @ MapError::NotFound { .. }) => assert!(e.to_string().contains("hwlink ls")),
            other => panic!("{other:?}"),
        }
        assert!(list_in(&dirs).unwrap().is_empty());
        assert!(huge.entries().is_empty());
    }

    #[test]
    fn missing_directories_hold_no_regions() {
        let tmp = TempDir::new();
        let mut dirs = tmp.dirs();
        dirs.shm = tmp.path().join("does-not-exist");
        dirs.hugetlbfs = vec![tmp.path().join("nor-this")];
        assert!(list_in(&dirs).unwrap().is_empty());
        assert!(matches!(
            remove_in(&dirs, "x"),
            Err(MapError::NotFound { .. })
        ));
    }
}

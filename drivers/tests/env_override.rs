//! `HWLINK_SHM_DIR` and `HWLINK_HUGETLBFS_DIR` move where regions live.
//! Environment variables are process-global, so this file holds exactly one
//! test (its own process) and nothing races with it.

use std::path::PathBuf;

use hwlink_drivers::{
    hugepages_free, list_regions, remove_region, Backend, BackingKind, MapError, Region,
    HUGEPAGE_SIZE,
};

struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let base = if std::path::Path::new("/dev/shm").is_dir() {
            PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        };
        let dir = base.join(format!("hwlink-test-env-{}-{tag}", std::process::id()));
        std::fs::create_dir(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn env_vars_choose_the_directories() {
    let shm = TempDir::new("shm");
    let huge = TempDir::new("huge");
    std::env::set_var("HWLINK_SHM_DIR", &shm.0);
    // A plain directory stands in for hugetlbfs: nothing is created in it
    // here, it only hides the machine's real mount from list_regions.
    std::env::set_var("HWLINK_HUGETLBFS_DIR", &huge.0);

    let a = Region::create("env-a", 4096, Backend::Shm).unwrap();
    assert_eq!(a.path(), shm.0.join("hwlink.env-a"));
    assert_eq!(a.kind(), BackingKind::Shm);
    let b = Region::open("env-a", Backend::Auto).unwrap();
    assert_eq!(b.path(), a.path());

    // Auto with more than the free hugepages falls back to shm, here.
    let free = hugepages_free().unwrap_or(0);
    if free <= 512 {
        let size = (free as usize + 1) * HUGEPAGE_SIZE;
        let c = Region::create("env-auto", size, Backend::Auto).unwrap();
        assert_eq!((c.kind(), c.len()), (BackingKind::Shm, size));
        assert_eq!(c.path(), shm.0.join("hwlink.env-auto"));
    } else {
        println!("SKIPPED: Auto fallback ({free} free hugepages; would map over 1 GiB)");
    }

    let mut names: Vec<_> = list_regions()
        .unwrap()
        .into_iter()
        .map(|r| r.name)
        .collect();
    names.sort();
    assert_eq!(names, ["env-a"]);

    drop(b);
    let mut a = a;
    a.set_remove_on_drop(false);
    drop(a);
    remove_region("env-a").unwrap();
    assert!(matches!(
        remove_region("env-a"),
        Err(MapError::NotFound { .. })
    ));
    assert!(list_regions().unwrap().is_empty());
    assert_eq!(std::fs::read_dir(&shm.0).unwrap().count(), 0);
    assert_eq!(std::fs::read_dir(&huge.0).unwrap().count(), 0);
}

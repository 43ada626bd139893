//! Test helpers: private temporary region directories and unique names.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use crate::dirs::Dirs;

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A region name no other test or process uses.
pub(crate) fn unique_name(tag: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("t{}-{tag}-{n}", std::process::id())
}

/// A fresh directory on tmpfs (`/dev/shm` when present), removed on drop.
pub(crate) struct TempDir(PathBuf);

impl TempDir {
    pub(crate) fn new() -> TempDir {
        let base = Path::new("/dev/shm");
        let base = if base.is_dir() {
            base.to_owned()
        } else {
            std::env::temp_dir()
        };
        let dir = base.join(format!("hwlink-test-{}", unique_name("dir")));
        std::fs::create_dir(&dir).unwrap();
        TempDir(dir)
    }

    pub(crate) fn path(&self) -> &Path {
        &self.0
    }

    /// Dirs with this directory as shm dir and no hugetlbfs (so hugepage
    /// regions become memfds), never mounting anything.
    pub(crate) fn dirs(&self) -> Dirs {
        Dirs {
            shm: self.0.clone(),
            hugetlbfs: Vec::new(),
            may_mount: false,
        }
    }

    /// File names left in the directory.
    pub(crate) fn entries(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&self.0)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

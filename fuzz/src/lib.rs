//! What the fuzz targets share: a private region directory for this
//! process, and writing an input there as a region file, the way a hostile
//! process would leave one for us to open.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// This process's private region directory (set as `HWLINK_SHM_DIR` and
/// `HWLINK_HUGETLBFS_DIR` before hwlink is first used).
pub fn dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let d = PathBuf::from(format!("/dev/shm/hwlink-fuzz.{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("create the fuzz directory");
        // Edition 2021: set_var is safe; nothing else reads the environment
        // yet (hwlink starts its liveness thread only when first used).
        std::env::set_var("HWLINK_SHM_DIR", &d);
        std::env::set_var("HWLINK_HUGETLBFS_DIR", &d);
        d
    })
}

/// Writes `bytes` as the region file of `name` (`hwlink.<name>`), padded
/// with zeros to whole 4 KiB pages (a size that is no page multiple is
/// refused before anything is read: padding lets more inputs reach the
/// header checks).
pub fn put_region(name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir().join(format!("hwlink.{name}"));
    let len = bytes.len().max(1).next_multiple_of(4096);
    let mut data = bytes.to_vec();
    data.resize(len, 0);
    std::fs::write(&path, &data).expect("write the region file");
    path
}

/// Removes every file of the directory (what an input left, and what
/// hwlink made of it).
pub fn clean() {
    if let Ok(entries) = std::fs::read_dir(dir()) {
        for e in entries.flatten() {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// Splits an input into `n` parts: the first two bytes of each part's
/// header give its length (the rest goes to the last part).
pub fn split(mut data: &[u8], n: usize) -> Vec<&[u8]> {
    let mut parts = Vec::with_capacity(n);
    for _ in 1..n {
        if data.len() < 4 {
            break;
        }
        let len = u32::from_le_bytes([data[0], data[1], data[2], data[3]]) as usize;
        let len = len.min(data.len() - 4);
        parts.push(&data[4..4 + len]);
        data = &data[4 + len..];
    }
    parts.push(data);
    parts
}

/// Joins parts into one input for [`split`] (seeds).
pub fn join(parts: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, p) in parts.iter().enumerate() {
        if i + 1 < parts.len() {
            out.extend_from_slice(&(p.len() as u32).to_le_bytes());
        }
        out.extend_from_slice(p);
    }
    out
}

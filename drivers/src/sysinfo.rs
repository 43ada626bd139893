//! Read the kernel's hugepage state: free 2 MiB pages (`/proc/meminfo`,
//! sysfs) and hugetlbfs mounts with 2 MiB pages (`/proc/mounts`).

use std::fs;
use std::path::PathBuf;

use crate::backend::HUGEPAGE_SIZE;

const MEMINFO: &str = "/proc/meminfo";
const MOUNTS: &str = "/proc/mounts";
const SYSFS_2M: &str = "/sys/kernel/mm/hugepages/hugepages-2048kB";

/// Free 2 MiB hugepages that a new mapping can still reserve
/// (`HugePages_Free - HugePages_Rsvd`), or `None` if the kernel has no 2 MiB
/// hugepage pool.
///
/// Read from `/proc/meminfo` when 2 MiB is the default hugepage size, else
/// from `/sys/kernel/mm/hugepages/hugepages-2048kB`.
pub fn hugepages_free() -> Option<u64> {
    if let Ok(text) = fs::read_to_string(MEMINFO) {
        if meminfo_kb(&text, "Hugepagesize") == Some(HUGEPAGE_SIZE as u64 / 1024) {
            if let Some(free) = free_from_meminfo(&text) {
                return Some(free);
            }
        }
    }
    let read = |file: &str| -> Option<u64> {
        fs::read_to_string(format!("{SYSFS_2M}/{file}"))
            .ok()?
            .trim()
            .parse()
            .ok()
    };
    Some(read("free_hugepages")?.saturating_sub(read("resv_hugepages").unwrap_or(0)))
}

/// `HugePages_Free - HugePages_Rsvd` from the text of `/proc/meminfo`.
fn free_from_meminfo(text: &str) -> Option<u64> {
    let free = meminfo_kb(text, "HugePages_Free")?;
    let rsvd = meminfo_kb(text, "HugePages_Rsvd").unwrap_or(0);
    Some(free.saturating_sub(rsvd))
}

/// The number after `key:` in `/proc/meminfo` text (kB for sizes, a count
/// for `HugePages_*`).
fn meminfo_kb(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (k, v) = line.split_once(':')?;
        if k.trim() != key {
            return None;
        }
        v.split_whitespace().next()?.parse().ok()
    })
}

/// Mount points of every hugetlbfs in `/proc/mounts` whose page size is
/// 2 MiB, in mount order.
pub(crate) fn hugetlbfs_2m_mounts() -> Vec<PathBuf> {
    let Ok(mounts) = fs::read_to_string(MOUNTS) else {
        return Vec::new();
    };
    let default_kb = fs::read_to_string(MEMINFO)
        .ok()
        .and_then(|m| meminfo_kb(&m, "Hugepagesize"));
    parse_hugetlbfs_mounts(&mounts, default_kb.map(|kb| kb * 1024))
        .into_iter()
        .filter(|(_, page)| *page == Some(HUGEPAGE_SIZE as u64))
        .map(|(dir, _)| dir)
        .collect()
}

/// Every hugetlbfs mount in `/proc/mounts` text with its page size in bytes:
/// the `pagesize=` option, else `default_page` (the default hugepage size).
fn parse_hugetlbfs_mounts(mounts: &str, default_page: Option<u64>) -> Vec<(PathBuf, Option<u64>)> {
    mounts
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let (_source, dir, fstype, options) = (
                fields.next()?,
                fields.next()?,
                fields.next()?,
                fields.next()?,
            );
            if fstype != "hugetlbfs" {
                return None;
            }
            let page = match options.split(',').find_map(|o| o.strip_prefix("pagesize=")) {
                Some(size) => parse_size(size),
                None => default_page,
            };
            Some((PathBuf::from(unescape_mount_path(dir)), page))
        })
        .collect()
}

/// Parses a size such as `2M`, `2048k`, `1G` or `4096` into bytes.
fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let (digits, shift) = match s.as_bytes().last()?.to_ascii_uppercase() {
        b'K' => (&s[..s.len() - 1], 10),
        b'M' => (&s[..s.len() - 1], 20),
        b'G' => (&s[..s.len() - 1], 30),
        _ => (s, 0),
    };
    digits.parse::<u64>().ok()?.checked_mul(1 << shift)
}

/// Undoes the octal escapes (`\040` for space etc.) of `/proc/mounts` paths.
fn unescape_mount_path(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match (b[i], octal) {
            (b'\\', Some(d)) => {
                let v = d.iter().fold(0u32, |acc, c| acc * 8 + u32::from(c - b'0'));
                out.push(v as u8);
                i += 4;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MEMINFO_SAMPLE: &str = "MemTotal:       24683652 kB\n\
        HugePages_Total:      64\n\
        HugePages_Free:       60\n\
        HugePages_Rsvd:        5\n\
        HugePages_Surp:        0\n\
        Hugepagesize:       2048 kB\n";

    #[test]
    fn meminfo_free_minus_reserved() {
        assert_eq!(meminfo_kb(MEMINFO_SAMPLE, "Hugepagesize"), Some(2048));
        assert_eq!(meminfo_kb(MEMINFO_SAMPLE, "HugePages_Total"), Some(64));
        assert_eq!(meminfo_kb(MEMINFO_SAMPLE, "Missing"), None);
        assert_eq!(free_from_meminfo(MEMINFO_SAMPLE), Some(55));
        assert_eq!(free_from_meminfo("MemTotal: 1 kB\n"), None);
    }

    #[test]
    fn live_hugepages_free_is_consistent() {
        // Whatever the machine has, the answer must not exceed the total.
        let total = fs::read_to_string(MEMINFO)
            .ok()
            .and_then(|m| meminfo_kb(&m, "HugePages_Total"));
        if let (Some(free), Some(total)) = (hugepages_free(), total) {
            if meminfo_kb(&fs::read_to_string(MEMINFO).unwrap(), "Hugepagesize") == Some(2048) {
                assert!(free <= total, "free {free} > total {total}");
            }
        }
    }

    #[test]
    fn finds_hugetlbfs_mounts_and_page_sizes() {
        let mounts = "proc /proc proc rw,nosuid 0 0\n\
            hugetlbfs /dev/hugepages hugetlbfs rw,relatime,pagesize=2M 0 0\n\
            none /mnt/huge\\0401g hugetlbfs rw,relatime,pagesize=1024M 0 0\n\
            none /mnt/plain hugetlbfs rw,relatime 0 0\n\
            tmpfs /dev/shm tmpfs rw 0 0\n";
        let found = parse_hugetlbfs_mounts(mounts, Some(2 << 20));
        assert_eq!(
            found,
            vec![
                (PathBuf::from("/dev/hugepages"), Some(2 << 20)),
                (PathBuf::from("/mnt/huge 1g"), Some(1 << 30)),
                (PathBuf::from("/mnt/plain"), Some(2 << 20)),
            ]
        );
        let found = parse_hugetlbfs_mounts(mounts, None);
        assert_eq!(found[2], (PathBuf::from("/mnt/plain"), None));
    }

    #[test]
    fn sizes_and_escapes() {
        assert_eq!(parse_size("2M"), Some(2 << 20));
        assert_eq!(parse_size("2048k"), Some(2 << 20));
        assert_eq!(parse_size("1G"), Some(1 << 30));
        assert_eq!(parse_size("4096"), Some(4096));
        assert_eq!(parse_size("M"), None);
        assert_eq!(parse_size(""), None);
        assert_eq!(unescape_mount_path("/a\\040b\\134c"), "/a b\\c");
        assert_eq!(unescape_mount_path("/trailing\\04"), "/trailing\\04");
    }
}

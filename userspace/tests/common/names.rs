//! Names of the links a test creates, and the cleanup of their regions.

use hwlink::admin;

/// A link name unique to this process and test: `t-{pid}-{tag}`. Sub-links
/// of a test are named `t-{pid}-{tag}-{sub}`.
pub fn unique(tag: &str) -> String {
    let name = format!("t-{}-{tag}", std::process::id());
    assert!(name.len() <= 48, "link name {name} is too long");
    name
}

/// Whether region `name` belongs to the test whose base name is `base`.
fn belongs(name: &str, base: &str) -> bool {
    name == base || name.strip_prefix(base).is_some_and(|r| r.starts_with('-'))
}

/// The regions on this machine named after `base` (see [`unique`]).
pub fn regions_of(base: &str) -> Vec<admin::RegionStatus> {
    admin::list()
        .expect("admin::list failed")
        .into_iter()
        .filter(|r| belongs(&r.name, base))
        .collect()
}

/// Asserts that no region named after `base` is left, in hugetlbfs or shm.
pub fn assert_no_regions(base: &str) {
    let left = regions_of(base);
    assert!(
        left.is_empty(),
        "regions left behind: {:?}",
        left.iter().map(|r| &r.path).collect::<Vec<_>>()
    );
}

/// Removes, on drop, every region named after `base` that a failed test
/// left behind. A passing test asserts [`assert_no_regions`] first.
pub struct Cleanup(pub String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Ok(all) = admin::list() {
            for r in all.into_iter().filter(|r| belongs(&r.name, &self.0)) {
                if !std::thread::panicking() {
                    eprintln!("cleanup: removing leftover region {}", r.name);
                }
                let _ = admin::remove(&r.name);
            }
        }
    }
}

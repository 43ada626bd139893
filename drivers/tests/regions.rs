//! The public API against the machine's real region directories
//! (`/dev/shm`, the hugetlbfs mount). Names are unique per process and
//! every file is removed again.
// The workspace's clippy.toml steers `hwlink` to its loom-switchable atomics
// (its `sync` module); this crate is never model-checked and uses std's.
#![allow(clippy::disallowed_types)]

use std::os::unix::fs::MetadataExt;
use std::sync::atomic::{AtomicU32, Ordering};

use hwlink_drivers::{
    hugepages_free, list_regions, remove_region, validate_name, Backend, BackingKind, MapError,
    Region, HUGEPAGE_SIZE,
};

fn unique(tag: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "it{}-{tag}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

fn write(region: &Region, offset: usize, bytes: &[u8]) {
    assert!(offset + bytes.len() <= region.len());
    for (i, &b) in bytes.iter().enumerate() {
        // SAFETY: in bounds (asserted above) of a live read-write mapping.
        unsafe { region.as_ptr().add(offset + i).write_volatile(b) };
    }
}

fn read(region: &Region, offset: usize, len: usize) -> Vec<u8> {
    assert!(offset + len <= region.len());
    (0..len)
        // SAFETY: in bounds (asserted above) of a live readable mapping.
        .map(|i| unsafe { region.as_ptr().add(offset + i).read_volatile() })
        .collect()
}

#[test]
fn region_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Region>();
    check::<MapError>();
}

#[test]
fn shm_region_round_trip() {
    let name = unique("shm");
    let a = Region::create(&name, 100, Backend::Shm).unwrap();
    assert_eq!(
        (a.kind(), a.len(), a.page_size()),
        (BackingKind::Shm, 4096, 4096)
    );
    assert_eq!(std::fs::metadata(a.path()).unwrap().mode() & 0o777, 0o600);

    let b = Region::open(&name, Backend::Auto).unwrap();
    assert_eq!(b.path(), a.path());
    write(&a, 10, b"ping");
    assert_eq!(read(&b, 10, 4), b"ping");

    let listed = list_regions().unwrap();
    let mine = listed.iter().find(|r| r.name == name).expect("listed");
    assert_eq!((mine.kind, mine.size), (BackingKind::Shm, 4096));
    assert_eq!(mine.path, a.path());

    assert!(matches!(
        Region::create(&name, 100, Backend::Auto),
        Err(MapError::AlreadyExists { .. })
    ));
    let path = a.path().to_owned();
    drop((a, b));
    assert!(!path.exists(), "create() regions are removed on drop");
}

#[test]
fn hugepage_region_round_trip() {
    if hugepages_free().unwrap_or(0) < 2 {
        println!("SKIPPED: no hugepages");
        return;
    }
    let name = unique("huge");
    let a = Region::create(&name, HUGEPAGE_SIZE + 1, Backend::Hugepage).unwrap();
    assert!(
        matches!(a.kind(), BackingKind::Hugetlbfs | BackingKind::MemfdHugetlb),
        "{:?}",
        a.kind()
    );
    assert!(a.kind().is_hugepage());
    assert_eq!(a.len(), 2 * HUGEPAGE_SIZE);
    assert_eq!(a.len() % HUGEPAGE_SIZE, 0);
    assert_eq!(a.page_size(), HUGEPAGE_SIZE);
    assert_eq!(a.as_ptr() as usize % HUGEPAGE_SIZE, 0);
    println!(
        "hugepage region backed by {} at {}",
        a.kind(),
        a.path().display()
    );

    let b = Region::open(&name, Backend::Hugepage).unwrap();
    let c = Region::open(&name, Backend::Auto).unwrap();
    assert_eq!((b.kind(), b.len()), (a.kind(), a.len()));
    write(&a, HUGEPAGE_SIZE + 7, b"huge");
    assert_eq!(read(&b, HUGEPAGE_SIZE + 7, 4), b"huge");
    assert_eq!(read(&c, HUGEPAGE_SIZE + 7, 4), b"huge");
    assert!(matches!(
        Region::open(&name, Backend::Shm),
        Err(MapError::NotFound { .. })
    ));

    let listed = list_regions().unwrap();
    let mine = listed.iter().find(|r| r.name == name).expect("listed");
    assert_eq!((mine.kind, mine.size), (a.kind(), a.len() as u64));

    let path = a.path().to_owned();
    drop((a, b, c));
    assert!(!path.exists(), "create() regions are removed on drop");
}

#[test]
fn remove_region_unlinks_and_then_reports_not_found() {
    let name = unique("rm");
    let mut r = Region::create(&name, 1, Backend::Shm).unwrap();
    r.set_remove_on_drop(false);
    let path = r.path().to_owned();
    drop(r);
    assert!(path.exists());
    remove_region(&name).unwrap();
    assert!(!path.exists());
    assert!(matches!(
        remove_region(&name),
        Err(MapError::NotFound { .. })
    ));
}

#[test]
fn missing_and_invalid_names() {
    let missing = unique("missing");
    for backend in [Backend::Auto, Backend::Hugepage, Backend::Shm] {
        match Region::open(&missing, backend) {
            Err(e @ MapError::NotFound { .. }) => {
                assert!(e.to_string().contains("is the creating process running?"))
            }
            other => panic!("{backend}: {other:?}"),
        }
    }
    for bad in ["", ".dot", "sl/ash", "sp ace", &"x".repeat(49)] {
        assert!(matches!(
            validate_name(bad),
            Err(MapError::InvalidName { .. })
        ));
        assert!(matches!(
            Region::create(bad, 1, Backend::Shm),
            Err(MapError::InvalidName { .. })
        ));
        assert!(matches!(
            Region::open(bad, Backend::Auto),
            Err(MapError::InvalidName { .. })
        ));
    }
    validate_name(&"x".repeat(48)).unwrap();
}

#[test]
fn backend_names() {
    assert_eq!("auto".parse::<Backend>().unwrap(), Backend::Auto);
    assert_eq!("hugepage".parse::<Backend>().unwrap(), Backend::Hugepage);
    assert_eq!("shm".parse::<Backend>().unwrap(), Backend::Shm);
    assert!("tmpfs".parse::<Backend>().is_err());
    assert_eq!(Backend::default().to_string(), "auto");
}

//! Sharing between users: as root, the test makes a group and three users,
//! two in the group and one outside it. On each backend (/dev/shm, and
//! hugepages through the hugetlbfs mount that `hwlink setup --group`
//! makes), the first member creates a link, an unbounded mailbox and a
//! domain with `file_mode(0o660)` and the group; the second member opens
//! them and receives every message, checked (through mailbox segments and
//! domain links the first one created later, which take the group too);
//! the outsider is refused each with a clear error. Skipped, with the
//! reason, when not root.

mod common {
    // Helpers and parameters this binary does not use.
    #[allow(dead_code)]
    pub mod child;
    #[allow(dead_code)]
    pub mod drive;
    #[allow(dead_code)]
    pub mod peer;
}

use common::child::{Ctx, PEER_WAIT};
use common::peer::Peer;
use hwlink::{
    Access, Backend, Buffering, DomainBuilder, LinkBuilder, MailboxBuilder, OpenError, RecvError,
};
use std::os::unix::fs::MetadataExt;
use std::process::Command;
use std::time::Duration;

const GROUP: &str = "hwlshare";
const OWNER: &str = "hwlusr1";
const MEMBER: &str = "hwlusr2";
const OUTSIDER: &str = "hwlusr3";
/// The shared hugetlbfs mount of this test (not the default one, so that a
/// machine's own setup is left alone).
const HUGE_DIR: &str = "/dev/hugepages-hwltest";
const COUNT: u64 = 20_000;

#[test]
fn peer_entry() {
    common::child::peer_entry_with(roles);
}

fn roles(role: &str, ctx: &Ctx) -> bool {
    match role {
        "owner" => owner(ctx),
        "member" => member(ctx),
        "outsider" => outsider(ctx),
        _ => return false,
    }
    true
}

fn names(ctx: &Ctx) -> (String, String, String) {
    let base = ctx.name();
    (format!("{base}-l"), format!("{base}-m"), format!("{base}d"))
}

/// Message `seq` of `stream`: its numbers, then a varied tail.
fn message(stream: u8, seq: u64) -> Vec<u8> {
    let mut m = seq.to_le_bytes().to_vec();
    m.push(stream);
    m.extend((0..(seq % 61) as u8).map(|i| i ^ stream ^ seq as u8));
    m
}

/// Creates everything shared with the group, then sends COUNT messages on
/// each once told to.
fn owner(ctx: &Ctx) {
    let backend: Backend = ctx.var("BACKEND").parse().expect("a backend");
    let (link, mbx, dom) = names(ctx);
    let mut tx = LinkBuilder::new(&link)
        .backend(backend)
        .file_mode(0o660)
        .group(GROUP)
        .create_sender()
        .expect("create the shared link");
    let mut mb = MailboxBuilder::new()
        .name(&mbx)
        .buffering(Buffering::Unbounded {
            byte_limit: 256 << 20,
        })
        .slot_size(256)
        .backend(backend)
        .file_mode(0o660)
        .group(GROUP)
        .create(Access::Send)
        .expect("create the shared mailbox");
    let mut me = DomainBuilder::new(&dom)
        .backend(backend)
        .file_mode(0o660)
        .group(GROUP)
        .join("a")
        .expect("create and join the shared domain");
    ctx.report(&format!("READY {:?}", mb.backing()));
    ctx.command("GO", PEER_WAIT);
    // The mailbox first, all of it: nobody receives yet, so it grows
    // segments, created by this user.
    for seq in 0..COUNT {
        mb.send(message(1, seq)).expect("mailbox send");
    }
    for seq in 0..COUNT {
        tx.send_timeout(message(0, seq), PEER_WAIT)
            .expect("link send");
    }
    for seq in 0..COUNT {
        me.send_timeout("b", message(2, seq), PEER_WAIT)
            .expect("domain send");
    }
    ctx.report("SENT");
    ctx.command("DONE", PEER_WAIT);
    drop(tx);
    // The member, still attached, is the last out: it unlinks this user's
    // files (the shared directory has no sticky bit).
    mb.remove().expect("remove the mailbox");
    me.leave();
}

/// Opens what the owner shared and receives every message, checked.
fn member(ctx: &Ctx) {
    let (link, mbx, dom) = names(ctx);
    let mut rx = LinkBuilder::new(&link)
        .open_receiver()
        .expect("open the shared link");
    let mut mb = MailboxBuilder::new()
        .open(&mbx, Access::Recv)
        .expect("open the shared mailbox");
    let mut me = DomainBuilder::new(&dom)
        .join("b")
        .expect("join the shared domain");
    ctx.report("JOINED");
    let t = Duration::from_secs(30);
    for seq in 0..COUNT {
        assert_eq!(rx.recv_timeout(t).expect("link recv"), message(0, seq));
    }
    for seq in 0..COUNT {
        assert_eq!(mb.recv_timeout(t).expect("mailbox recv"), message(1, seq));
    }
    for seq in 0..COUNT {
        let m = me.recv_from_timeout("a", t).expect("domain recv");
        assert_eq!(m, message(2, seq));
    }
    assert_eq!(mb.try_recv(), Err(RecvError::Empty));
    ctx.report(&format!("GOT {COUNT} {COUNT} {COUNT}"));
    ctx.command("DONE", PEER_WAIT);
    me.leave();
}

/// Tries to open each shared object; reports every refusal.
fn outsider(ctx: &Ctx) {
    let (link, mbx, dom) = names(ctx);
    let refused = |what: &str, r: Result<(), OpenError>| match r {
        Ok(()) => panic!("the outsider could open the {what}"),
        Err(e) => ctx.report(&format!("REFUSED {what}: {e}")),
    };
    refused("link", LinkBuilder::new(&link).open_receiver().map(drop));
    refused(
        "mailbox",
        MailboxBuilder::new().open(&mbx, Access::Recv).map(drop),
    );
    refused(
        "domain",
        DomainBuilder::new(&dom)
            .join_timeout(Duration::from_secs(2))
            .join("c")
            .map(|m| m.leave()),
    );
    ctx.report("END");
}

fn root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// The numeric id of group `name`, from `getent group`.
fn group_id(name: &str) -> u32 {
    let out = Command::new("getent")
        .args(["group", name])
        .output()
        .unwrap();
    let line = String::from_utf8(out.stdout).unwrap();
    line.split(':').nth(2).unwrap().trim().parse().unwrap()
}

fn run(cmd: &mut Command) -> bool {
    cmd.status().is_ok_and(|s| s.success())
}

fn exists(db: &str, name: &str) -> bool {
    run(Command::new("getent")
        .args([db, name])
        .stdout(std::process::Stdio::null()))
}

/// The group and the three users (kept: other runs reuse them).
fn make_users() {
    if !exists("group", GROUP) {
        assert!(run(Command::new("groupadd").arg(GROUP)), "groupadd {GROUP}");
    }
    for (user, in_group) in [(OWNER, true), (MEMBER, true), (OUTSIDER, false)] {
        if !exists("passwd", user) {
            let mut c = Command::new("useradd");
            c.args(["-M", "-N", "-s", "/usr/sbin/nologin"]);
            if in_group {
                c.args(["-G", GROUP]);
            }
            assert!(run(c.arg(user)), "useradd {user}");
        }
    }
}

/// Spawns this test binary as `user` (its own groups) running `role`.
fn as_user(user: &str, role: &str, name: &str, backend: &str) -> Peer {
    let reuid = format!("--reuid={user}");
    let regid = format!("--regid={user}");
    // setpriv --regid wants a group; users made with -N have "users" (100).
    let regid = if exists("group", user) {
        regid
    } else {
        "--regid=users".to_string()
    };
    Peer::spawn_exe(
        &shared_exe(),
        &["setpriv", &reuid, &regid, "--init-groups"],
        role,
        &[
            ("NAME", name.to_string()),
            ("BACKEND", backend.to_string()),
            ("PEER_TIMEOUT", "120".to_string()),
        ],
    )
}

/// A copy of this test binary that every user may run (the build
/// directory may be closed to them, e.g. under /root), made once.
fn shared_exe() -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    static EXE: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    EXE.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("hwlink-users-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let exe = dir.join("users-test");
        std::fs::copy(std::env::current_exe().unwrap(), &exe).unwrap();
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
        exe
    })
    .clone()
}

/// The region files of this test's objects.
fn files_of(base: &str) -> Vec<hwlink_drivers::RegionFile> {
    hwlink_drivers::list_regions()
        .unwrap()
        .into_iter()
        .filter(|r| r.name.contains(base))
        .collect()
}

fn share_between_users(backend: &str, base: &str, dir: &std::path::Path) {
    let gid = group_id(GROUP);
    let t = Duration::from_secs(60);
    let mut owner = as_user(OWNER, "owner", base, backend);
    let backing = owner.expect("READY", t);
    eprintln!("{backend}: the owner's mailbox lives in {backing}");
    let mut member = as_user(MEMBER, "member", base, backend);
    member.expect("JOINED", t);
    owner.say("GO");
    owner.expect("SENT", t);
    assert_eq!(member.expect("GOT", t), format!("{COUNT} {COUNT} {COUNT}"));

    // Every file of the link, the mailbox (and its segments) and the
    // domain (and its links) is the group's, mode 0660.
    let files = files_of(base);
    let segments = files.iter().filter(|f| f.name.contains("-m.")).count();
    let links = files.iter().filter(|f| f.name.contains("d.")).count();
    eprintln!(
        "{backend}: {} files ({segments} mailbox segments, {links} domain links): {:?}",
        files.len(),
        files
            .iter()
            .map(|f| f.path.display().to_string())
            .collect::<Vec<_>>()
    );
    assert!(segments >= 1, "the mailbox grew no segment: {files:?}");
    assert!(links >= 1, "the domain has no link file: {files:?}");
    for f in &files {
        let meta = std::fs::metadata(&f.path).unwrap();
        assert_eq!(meta.gid(), gid, "{} is not the group's", f.path.display());
        assert_eq!(meta.mode() & 0o777, 0o660, "{}", f.path.display());
        assert!(
            f.path.starts_with(dir),
            "{} is not in {}",
            f.path.display(),
            dir.display()
        );
        assert_eq!(
            f.kind.is_hugepage(),
            backend == "hugepage",
            "{}",
            f.path.display()
        );
    }

    let mut outsider = as_user(OUTSIDER, "outsider", base, backend);
    for what in ["link", "mailbox", "domain"] {
        let line = outsider.expect("REFUSED", t);
        eprintln!("{backend}: outsider: {line}");
        assert!(line.starts_with(what), "{line}");
        assert!(
            line.contains("Permission denied") && line.contains("group"),
            "not a clear refusal: {line}"
        );
    }
    outsider.expect("END", t);
    outsider.wait_success(t);
    owner.say("DONE");
    member.say("DONE");
    owner.wait_success(t);
    member.wait_success(t);
    assert!(
        files_of(base).is_empty(),
        "left behind after a clean exit: {:?}",
        files_of(base)
    );
}

#[test]
fn a_link_a_mailbox_and_a_domain_are_shared_between_users_of_one_group() {
    if !root() {
        eprintln!("SKIPPED: needs root (to create users and a group)");
        return;
    }
    make_users();
    let base = format!("u{}", std::process::id());
    let huge = hwlink_drivers::hugepages_free().unwrap_or(0) >= 16;
    if huge && !std::path::Path::new(HUGE_DIR).exists() {
        // No hugetlbfs serves the group yet: a shared hugepage region is
        // refused (a memfd cannot be shared), with what to do.
        let e = LinkBuilder::new(format!("{base}-early"))
            .backend(Backend::Hugepage)
            .file_mode(0o660)
            .group(GROUP)
            .create_sender()
            .map(drop)
            .unwrap_err()
            .to_string();
        eprintln!("before setup: {e}");
        assert!(e.contains("hwlink setup --group"), "{e}");
    }
    // What `hwlink setup --group hwlshare --dir HUGE_DIR` does.
    let dir = std::path::Path::new(HUGE_DIR);
    let done = hwlink_drivers::share_dirs(&GROUP.into(), huge.then_some(dir)).expect("setup");
    let _undo = Undo(done.clone());
    share_between_users("shm", &format!("{base}s"), &done.shm_dir);
    if huge {
        share_between_users("hugepage", &format!("{base}h"), dir);
    } else {
        eprintln!("SKIPPED (hugepage backend): fewer than 16 free 2 MiB hugepages");
    }
}

/// Removes the test's shared directories (if empty), its mount and the
/// copy of the test binary.
struct Undo(hwlink_drivers::ShareOutcome);

impl Drop for Undo {
    fn drop(&mut self) {
        if let Some(dir) = shared_exe().parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
        let _ = std::fs::remove_dir(&self.0.shm_dir);
        if self.0.mounted {
            let _ = Command::new("umount").arg(HUGE_DIR).status();
            let _ = std::fs::remove_dir(HUGE_DIR);
        }
    }
}

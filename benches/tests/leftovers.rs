//! `hwlink bench` removes the mailboxes a killed earlier bench left behind
//! (named after its session, creator dead, nobody attached), and no other:
//! real creator processes (this test binary re-executed) leave both kinds.

use hwlink::{admin, Buffering, Mailbox};
use std::process::Command;

const ROLE: &str = "HWLINK_LEFTOVERS_CREATE";

/// In a child: creates mailbox `NAME` (`{pid}` replaced by this process's
/// id), sends one message, exits without removing it (mailboxes persist).
fn child() {
    let Ok(name) = std::env::var(ROLE) else {
        return;
    };
    let name = name.replace("{pid}", &std::process::id().to_string());
    let mut mbx = Mailbox::create(&name, Buffering::Bounded(64)).expect("create the mailbox");
    mbx.send(b"left").expect("send");
    drop(mbx);
    std::process::exit(0);
}

/// Runs a creator child for `name`; returns its pid.
fn create(name: &str) -> u32 {
    let mut c = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "bench_removes_only_the_mailboxes_a_killed_bench_left",
            "--nocapture",
        ])
        .env(ROLE, name)
        .spawn()
        .expect("spawn the creator");
    let pid = c.id();
    assert!(c.wait().unwrap().success(), "creator {name} failed");
    pid
}

fn regions_of(name: &str) -> Vec<String> {
    let root = format!("mbx.{name}");
    admin::list()
        .unwrap()
        .into_iter()
        .map(|r| r.name)
        .filter(|n| *n == root || n.starts_with(&format!("{root}.s")))
        .collect()
}

#[test]
fn bench_removes_only_the_mailboxes_a_killed_bench_left() {
    child();
    let pid = create("hb{pid}-0-h0");
    let left = format!("hb{pid}-0-h0");
    let keep = format!("keep-leftovers-{}", std::process::id());
    create(&keep);
    assert!(!regions_of(&left).is_empty(), "the creator made {left}");
    let removed = hwlink_benches::bench::remove_leftovers();
    let kept = regions_of(&keep);
    for n in regions_of(&keep).iter().chain(regions_of(&left).iter()) {
        let _ = admin::remove(n);
    }
    assert!(removed.contains(&format!("mbx.{left}")), "{removed:?}");
    assert!(regions_of(&left).is_empty());
    assert!(!kept.is_empty(), "a user's mailbox stays");
}

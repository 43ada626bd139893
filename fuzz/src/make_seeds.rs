//! Writes a seed corpus for each fuzz target: real regions made by the
//! library (a link with messages queued, bounded, unbounded and
//! zero-capacity mailboxes, an unbounded mailbox with two segments, a
//! domain with members and a link), copied byte for byte.
//!
//! Usage: make-seeds <corpus dir>   (writes <dir>/<target>/seed-*)

use hwlink::{Access, Backend, Buffering, Domain, LinkBuilder, MailboxBuilder};
use hwlink_fuzz::{dir, join};
use std::path::Path;

fn file(name: &str) -> Vec<u8> {
    std::fs::read(dir().join(format!("hwlink.{name}"))).unwrap_or_default()
}

fn put(corpus: &Path, target: &str, seed: &str, bytes: &[u8]) {
    let d = corpus.join(target);
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join(format!("seed-{seed}")), bytes).unwrap();
}

fn main() {
    let corpus = std::path::PathBuf::from(std::env::args().nth(1).expect("corpus directory"));
    dir();

    let mut tx = LinkBuilder::new("fz")
        .backend(Backend::Shm)
        .capacity(8)
        .slot_size(64)
        .create_sender()
        .unwrap();
    let rx = LinkBuilder::new("fz").open_receiver().unwrap();
    for i in 0..5u8 {
        tx.send([i; 24]).unwrap();
    }
    let link = file("fz");
    put(&corpus, "link", "five-queued", &link);
    put(&corpus, "ls", "link", &join(&[&link, &[]]));
    drop((tx, rx));

    for (tag, buffering) in [
        ("bounded", Buffering::Bounded(8)),
        (
            "unbounded",
            Buffering::Unbounded {
                byte_limit: 1 << 20,
            },
        ),
        ("zero", Buffering::Zero),
    ] {
        let mut m = MailboxBuilder::new()
            .name("fz")
            .backend(Backend::Shm)
            .slot_size(64)
            .buffering(buffering)
            .create(Access::SendRecv)
            .unwrap();
        let mut sent = 0;
        while sent < 600 && m.try_send([7u8; 40]).is_ok() {
            sent += 1;
        }
        let root = file("mbx.fz");
        let (s1, s2) = (file("mbx.fz.s1"), file("mbx.fz.s2"));
        put(&corpus, "mailbox", tag, &join(&[&root, &s1, &s2]));
        put(
            &corpus,
            "ls",
            &format!("mailbox-{tag}"),
            &join(&[&root, &[]]),
        );
        m.remove().unwrap();
    }

    let mut a = Domain::builder("fzd")
        .backend(Backend::Shm)
        .capacity(4)
        .slot_size(64)
        .join("a")
        .unwrap();
    let mut b = Domain::builder("fzd").join("b").unwrap();
    a.send("b", b"hello").unwrap();
    b.send("a", b"hello").unwrap();
    let dom = file("fzd");
    put(&corpus, "domain", "two-members", &dom);
    put(&corpus, "ls", "domain", &join(&[&dom, &[]]));
    for e in std::fs::read_dir(dir()).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with("hwlink.fzd.") {
            put(
                &corpus,
                "link",
                "domain-link",
                &std::fs::read(e.path()).unwrap(),
            );
        }
        if name.starts_with("hwlink-proc.") {
            put(
                &corpus,
                "ls",
                "process",
                &join(&[&link, &std::fs::read(e.path()).unwrap()]),
            );
        }
    }
    a.leave();
    b.leave();
    let _ = std::fs::remove_dir_all(dir());
    println!("seeds written to {}", corpus.display());
}

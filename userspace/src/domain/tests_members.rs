//! Two members of one domain in this process: the wake-up of a receiver's
//! inbox after a send (hw/SPEC.md §12.4, [L4]) and the last-used link
//! caches across a peer's departure and return.

use super::*;

fn unique(tag: &str) -> String {
    let name = format!("u{}-{tag}", std::process::id());
    assert!(name.len() <= MAX_DOMAIN_NAME_LEN, "{name} is too long");
    name
}

fn member(domain: &str, name: &str, buffering: Buffering, wait: WaitStrategy) -> Member {
    Domain::builder(domain)
        .backend(Backend::Shm)
        .buffering(buffering)
        .slot_size(64)
        .wait(wait)
        .join(name)
        .expect("join")
}

/// Tokens posted on `m`'s inbox and not taken.
fn inbox_tokens(m: &Member) -> u32 {
    m.inbox.count().load(SC)
}

/// A sender posts the receiver's inbox after a message only while a
/// sleeper is registered there (and never more tokens than sleepers),
/// whatever the channel: the check rides on the channel's own fence.
fn inbox_is_posted_only_for_a_sleeper(buffering: Buffering, tag: &str) {
    let d = unique(tag);
    let mut a = member(&d, "a", buffering, WaitStrategy::SpinPark);
    let mut b = member(&d, "b", buffering, WaitStrategy::SpinPark);
    a.send("b", *b"m0").unwrap();
    // b attaches its end (the consumer's wait mode is written then).
    assert_eq!(b.recv_from("a").unwrap(), b"m0");
    a.send("b", *b"m1").unwrap();
    assert_eq!(inbox_tokens(&b), 0, "nobody sleeps on the inbox: no post");
    // A sleeper registers (as recv_any does before it parks).
    b.inbox.waiters().fetch_add(1, SC);
    a.send("b", *b"m2").unwrap();
    assert_eq!(inbox_tokens(&b), 1, "the sleeper is woken");
    a.send("b", *b"m3").unwrap();
    assert_eq!(inbox_tokens(&b), 1, "one token per sleeper, no more");
    b.inbox.waiters().fetch_sub(1, SC);
    for want in [b"m1", b"m2", b"m3"] {
        assert_eq!(b.recv_from("a").unwrap(), want);
    }
}

#[test]
fn bounded_send_posts_the_inbox_only_for_a_sleeper() {
    inbox_is_posted_only_for_a_sleeper(Buffering::Bounded(8), "ib");
}

#[test]
fn unbounded_send_posts_the_inbox_only_for_a_sleeper() {
    inbox_is_posted_only_for_a_sleeper(
        Buffering::Unbounded {
            byte_limit: 1 << 20,
        },
        "iu",
    );
}

/// A busy-polling member never sleeps on its inbox: a bounded link's
/// sender, which reads its endpoint's wait mode, makes no check.
#[test]
fn no_inbox_check_for_a_busy_polling_receiver() {
    let d = unique("ip");
    let mut a = member(&d, "a", Buffering::Bounded(8), WaitStrategy::SpinPark);
    let mut b = member(&d, "b", Buffering::Bounded(8), WaitStrategy::BusyPoll);
    a.send("b", *b"m0").unwrap();
    assert_eq!(b.recv_from("a").unwrap(), b"m0");
    b.inbox.waiters().fetch_add(1, SC);
    a.send("b", *b"m1").unwrap();
    assert_eq!(inbox_tokens(&b), 0);
    b.inbox.waiters().fetch_sub(1, SC);
    assert_eq!(b.recv_from("a").unwrap(), b"m1");
}

/// A receiver that parks in recv_any on its inbox is woken by the send
/// (with a deadline far away: only the post, or a slice's look, ends the
/// sleep; the message must arrive either way, exactly once).
#[test]
fn recv_any_parked_gets_each_message_once() {
    for (buffering, tag) in [
        (Buffering::Bounded(8), "pb"),
        (
            Buffering::Unbounded {
                byte_limit: 1 << 20,
            },
            "pu",
        ),
    ] {
        let d = unique(tag);
        let mut b = member(&d, "b", buffering, WaitStrategy::Park);
        let mut a = member(&d, "a", buffering, WaitStrategy::Park);
        a.send("b", *b"hello").unwrap();
        assert_eq!(b.recv_any().unwrap(), ("a".to_string(), b"hello".to_vec()));
        let t = std::thread::spawn(move || {
            for i in 0..200u32 {
                a.send("b", i.to_le_bytes()).unwrap();
            }
            a
        });
        for i in 0..200u32 {
            let (from, m) = b.recv_any().unwrap();
            assert_eq!((from.as_str(), m), ("a", i.to_le_bytes().to_vec()));
        }
        drop(t.join().unwrap());
        assert!(matches!(b.try_recv_any(), Err(RecvError::Empty)));
    }
}

/// The last-used links are only a shortcut: a peer that leaves is
/// reported gone once, and a new member of the same name gets a new link.
#[test]
fn last_used_links_follow_a_peer_that_leaves_and_returns() {
    let d = unique("lc");
    let mut a = member(&d, "a", Buffering::Bounded(8), WaitStrategy::SpinPark);
    let mut b = member(&d, "b", Buffering::Bounded(8), WaitStrategy::SpinPark);
    a.send("b", *b"to b1").unwrap();
    assert_eq!(b.recv_from("a").unwrap(), b"to b1");
    b.send("a", *b"from b1").unwrap();
    assert_eq!(a.recv_from("b").unwrap(), b"from b1");
    assert!(a.last_tx.is_some() && a.last_rx.is_some());
    // b sends one more, then leaves: a still receives it, then b is gone.
    b.send("a", *b"last").unwrap();
    b.leave();
    assert_eq!(a.recv_from("b").unwrap(), b"last");
    assert!(matches!(
        a.try_recv_from("b"),
        Err(RecvError::MemberGone { .. })
    ));
    assert!(matches!(
        a.send("b", *b"lost"),
        Err(SendError::MemberGone { .. }) | Err(SendError::NoSuchMember { .. })
    ));
    // A new b: a's sends and receives reach it.
    let mut b2 = member(&d, "b", Buffering::Bounded(8), WaitStrategy::SpinPark);
    a.send("b", *b"to b2").unwrap();
    assert_eq!(b2.recv_from("a").unwrap(), b"to b2");
    b2.send("a", *b"from b2").unwrap();
    assert_eq!(a.recv_from("b").unwrap(), b"from b2");
    assert_eq!(a.link_names().len(), 1, "the departed b's link is gone");
}

//! Typed messages between real processes: a 64-byte `#[repr(C)]` struct
//! (zerocopy's derives) sent with `send_value` and received with
//! `recv_value` over a link (every form, the typed loan `reserve_value`
//! and the in-place `ReadSlot::read_value`), a mailbox and a domain, with
//! every field checked on both sides; a message of the wrong length gives
//! `WrongSize` and the next one is still received. With the `serde`
//! feature, structs holding a `String` and a `Vec` go through
//! `send_serialized` / `recv_deserialized`, and an undecodable message
//! gives `Deserialize` while the next one is still received.
//!
//! The test binary re-executes itself as the peer process (`peer_entry`,
//! with the roles below); `.config/nextest.toml` runs it in the serial
//! group.

mod common {
    // Parameters this binary's peers do not read, helpers it does not call.
    #[allow(dead_code)]
    pub mod child;
    #[allow(dead_code)]
    pub mod drive;
    pub mod names;
    #[allow(dead_code)]
    pub mod peer;
}

use common::child::{Ctx, PEER_WAIT};
use common::names::{assert_no_regions, unique, Cleanup};
use common::peer::Peer;
use hwlink::zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};
use hwlink::{
    Access, Backend, Buffering, Domain, LinkBuilder, Mailbox, MailboxBuilder, Member, Receiver,
    RecvError, SendError, Sender, WaitStrategy,
};
use std::mem::offset_of;
use std::time::{Duration, Instant};

/// The bound on any single wait (a peer's too).
const T: Duration = PEER_WAIT;
/// Values each way per test.
const COUNT: u64 = 2_000;
/// Before value BAD_AT, the sender slips in a message of the wrong length.
const BAD_AT: u64 = 100;

#[test]
fn peer_entry() {
    common::child::peer_entry_with(roles);
}

fn roles(role: &str, ctx: &Ctx) -> bool {
    match role {
        "link_echo" => link_echo(ctx),
        "mailbox_echo" => mailbox_echo(ctx),
        "member_echo" => member_echo(ctx),
        #[cfg(feature = "serde")]
        "link_serde_echo" => serialized::link_echo(ctx),
        #[cfg(feature = "serde")]
        "member_serde_echo" => serialized::member_echo(ctx),
        _ => return false,
    }
    true
}

// ---------------------------------------------------------------------------
// The value
// ---------------------------------------------------------------------------

/// A market tick or a camera frame header: 64 bytes, no padding.
#[derive(Clone, Copy, Debug, PartialEq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
struct Frame {
    seq: u64,
    timestamp_ns: u64,
    price: i64,
    quantity: u32,
    flags: u16,
    kind: u8,
    venue: u8,
    symbol: [u8; 16],
    checksum: u64,
    reserved: [u32; 2],
}

const _: () = assert!(std::mem::size_of::<Frame>() == 64);

/// Value `i` one way (`reply`: the other way): every field differs
/// between values and between the two directions.
fn frame(i: u64, reply: bool) -> Frame {
    let r = u64::from(reply);
    let mut symbol = [0u8; 16];
    for (j, b) in symbol.iter_mut().enumerate() {
        *b = (i as u8).wrapping_mul(31).wrapping_add(j as u8) ^ (r as u8);
    }
    Frame {
        seq: i,
        timestamp_ns: i.wrapping_mul(1_000_003) ^ (r << 63),
        price: -(i as i64) * 25 - r as i64,
        quantity: (i as u32).wrapping_mul(7) + r as u32,
        flags: (i as u16) ^ 0xa5a5 ^ (r as u16),
        kind: (i % 7) as u8 + 10 * r as u8,
        venue: (i % 251) as u8 ^ (r as u8),
        symbol,
        checksum: i.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ r,
        reserved: [i as u32, !(i as u32) ^ r as u32],
    }
}

/// Checks every field of `got` against value `i`, naming the first wrong.
fn check(got: &Frame, i: u64, reply: bool) {
    let want = frame(i, reply);
    assert_eq!(got.seq, want.seq, "seq of value {i}");
    assert_eq!(got.timestamp_ns, want.timestamp_ns, "timestamp_ns of {i}");
    assert_eq!(got.price, want.price, "price of {i}");
    assert_eq!(got.quantity, want.quantity, "quantity of {i}");
    assert_eq!(got.flags, want.flags, "flags of {i}");
    assert_eq!(got.kind, want.kind, "kind of {i}");
    assert_eq!(got.venue, want.venue, "venue of {i}");
    assert_eq!(got.symbol, want.symbol, "symbol of {i}");
    assert_eq!(got.checksum, want.checksum, "checksum of {i}");
    assert_eq!(got.reserved, want.reserved, "reserved of {i}");
    assert_eq!(*got, want);
}

/// Retries a `try_` form until it stops saying Full (or Empty), for at
/// most T.
fn retry<R>(mut attempt: impl FnMut() -> Option<R>) -> R {
    let deadline = Instant::now() + T;
    loop {
        if let Some(r) = attempt() {
            return r;
        }
        assert!(Instant::now() < deadline, "nothing changed within {T:?}");
        std::hint::spin_loop();
    }
}

/// A message one byte short of a `Frame`, and the error it must give.
const SHORT: [u8; 63] = [0xee; 63];
const WRONG_SIZE: RecvError = RecvError::WrongSize {
    len: 63,
    expected: 64,
};

// ---------------------------------------------------------------------------
// Links
// ---------------------------------------------------------------------------

/// Sends value `i` on a link in one of four ways.
fn link_send(tx: &mut Sender, i: u64, reply: bool) {
    let v = frame(i, reply);
    match i % 4 {
        0 => tx.send_value(&v).unwrap(),
        1 => retry(|| match tx.try_send_value(&v) {
            Ok(()) => Some(()),
            Err(SendError::Full(())) => None,
            Err(e) => panic!("try_send_value: {e}"),
        }),
        2 => tx.send_value_timeout(&v, T).unwrap(),
        _ => {
            // In place: the whole value with a wrong quantity, then the
            // right quantity over it, field by field.
            let mut slot = tx.reserve_value::<Frame>().unwrap();
            slot.write(&Frame { quantity: 0, ..v });
            assert!(slot.write_field_at(offset_of!(Frame, quantity), &v.quantity));
            assert!(!slot.write_field_at(62, &0u32), "past the end of the value");
            slot.commit();
        }
    }
}

/// Receives value `i` from a link in one of four ways and checks it.
fn link_recv(rx: &mut Receiver, i: u64, reply: bool) {
    let got: Frame = match i % 4 {
        0 => rx.recv_value().unwrap(),
        1 => retry(|| match rx.try_recv_value::<Frame>() {
            Ok(v) => Some(v),
            Err(RecvError::Empty) => None,
            Err(e) => panic!("try_recv_value: {e}"),
        }),
        2 => rx.recv_value_timeout(T).unwrap(),
        _ => {
            // In place: one field, then the whole value, then release.
            let slot = rx.peek().unwrap();
            let price: i64 = slot.read_field_at(offset_of!(Frame, price)).unwrap();
            assert_eq!(price, frame(i, reply).price);
            assert_eq!(slot.read_field_at::<u64>(60), None, "past the end");
            assert_eq!(
                slot.read_value::<[u8; 65]>(),
                Err(RecvError::WrongSize {
                    len: 64,
                    expected: 65
                })
            );
            let v = slot.read_value().unwrap();
            slot.release();
            v
        }
    };
    check(&got, i, reply);
}

fn link(name: &str, dir: &str) -> LinkBuilder {
    LinkBuilder::new(format!("{name}-{dir}"))
        .capacity(16)
        .slot_size(64)
        .backend(Backend::Shm)
        .wait(WaitStrategy::SpinPark)
        .ready_timeout(T)
}

/// The peer: receives every value (and the short message before BAD_AT,
/// which must give WrongSize) and answers each with its reply.
fn link_echo(ctx: &Ctx) {
    let name = ctx.name();
    let mut rx = link(&name, "a").open_receiver().unwrap();
    let mut tx = link(&name, "b").open_sender().unwrap();
    for i in 0..COUNT {
        if i == BAD_AT {
            assert_eq!(rx.recv_value::<Frame>(), Err(WRONG_SIZE));
        }
        link_recv(&mut rx, i, false);
        link_send(&mut tx, i, true);
    }
    ctx.report(&format!("done {COUNT}"));
}

#[test]
fn link_round_trip_of_a_64_byte_struct_between_processes() {
    let name = unique("typed-link");
    let _cleanup = Cleanup(name.clone());
    let mut tx = link(&name, "a").create_sender().unwrap();
    let mut rx = link(&name, "b").create_receiver().unwrap();
    // A value larger than a slot is refused before anything is sent.
    assert!(matches!(
        tx.try_send_value(&[0u8; 65]),
        Err(SendError::TooLarge {
            len: 65,
            max: 64,
            ..
        })
    ));
    let mut peer = Peer::spawn("link_echo", &[("NAME", name.clone())]);
    for i in 0..COUNT {
        if i == BAD_AT {
            tx.send(SHORT).unwrap();
        }
        link_send(&mut tx, i, false);
        link_recv(&mut rx, i, true);
    }
    assert_eq!(peer.expect("done", T), COUNT.to_string());
    peer.wait_success(T);
    assert_eq!(rx.try_recv_value::<Frame>(), Err(RecvError::Disconnected));
    drop((tx, rx));
    assert_no_regions(&name);
}

// ---------------------------------------------------------------------------
// Mailboxes
// ---------------------------------------------------------------------------

/// A mailbox name unique to this process (at most 32 characters).
fn mailbox_name(tag: &str) -> String {
    format!("t-{}-{tag}", std::process::id())
}

/// Removes the mailbox `name` when the test ends, however it ends.
struct RemoveMailbox(String);

impl Drop for RemoveMailbox {
    fn drop(&mut self) {
        let _ = hwlink::admin::remove(&format!("mbx.{}", self.0));
    }
}

fn mailbox() -> MailboxBuilder {
    MailboxBuilder::new()
        .buffering(Buffering::Bounded(16))
        .slot_size(64)
        .backend(Backend::Shm)
        .wait(WaitStrategy::SpinPark)
        .ready_timeout(T)
}

fn mailbox_send(mbx: &mut Mailbox, i: u64, reply: bool) {
    let v = frame(i, reply);
    match i % 3 {
        0 => mbx.send_value(&v).unwrap(),
        1 => retry(|| match mbx.try_send_value(&v) {
            Ok(()) => Some(()),
            Err(SendError::Full(())) => None,
            Err(e) => panic!("try_send_value: {e}"),
        }),
        _ => mbx.send_value_timeout(&v, T).unwrap(),
    }
}

fn mailbox_recv(mbx: &mut Mailbox, i: u64, reply: bool) {
    let got: Frame = match i % 3 {
        0 => mbx.recv_value().unwrap(),
        1 => retry(|| match mbx.try_recv_value::<Frame>() {
            Ok(v) => Some(v),
            Err(RecvError::Empty) => None,
            Err(e) => panic!("try_recv_value: {e}"),
        }),
        _ => mbx.recv_value_timeout(T).unwrap(),
    };
    check(&got, i, reply);
}

fn mailbox_echo(ctx: &Ctx) {
    let name = ctx.name();
    let mut requests = mailbox().open(&format!("{name}-q"), Access::Recv).unwrap();
    let mut replies = mailbox().open(&format!("{name}-r"), Access::Send).unwrap();
    for i in 0..COUNT {
        if i == BAD_AT {
            assert_eq!(requests.recv_value::<Frame>(), Err(WRONG_SIZE));
        }
        mailbox_recv(&mut requests, i, false);
        mailbox_send(&mut replies, i, true);
    }
    ctx.report(&format!("done {COUNT}"));
}

#[test]
fn mailbox_round_trip_of_a_64_byte_struct_between_processes() {
    let name = mailbox_name("tmbx");
    let (q, r) = (format!("{name}-q"), format!("{name}-r"));
    let _cleanup = (RemoveMailbox(q.clone()), RemoveMailbox(r.clone()));
    let mut requests = mailbox().name(&q).create(Access::Send).unwrap();
    let mut replies = mailbox().name(&r).create(Access::Recv).unwrap();
    let mut peer = Peer::spawn("mailbox_echo", &[("NAME", name.clone())]);
    for i in 0..COUNT {
        if i == BAD_AT {
            requests.send(SHORT).unwrap();
        }
        mailbox_send(&mut requests, i, false);
        mailbox_recv(&mut replies, i, true);
    }
    assert_eq!(peer.expect("done", T), COUNT.to_string());
    peer.wait_success(T);
    requests.remove().unwrap();
    replies.remove().unwrap();
}

// ---------------------------------------------------------------------------
// Domains
// ---------------------------------------------------------------------------

/// A domain name unique to this process (at most 24 characters).
fn domain_name(tag: &str) -> String {
    format!("d{}-{tag}", std::process::id())
}

/// Removes what a failed test left of domain `name`.
struct RemoveDomain(String);

impl Drop for RemoveDomain {
    fn drop(&mut self) {
        if let Ok(all) = hwlink::admin::list() {
            for r in all {
                if r.name == self.0 || r.name.starts_with(&format!("{}.", self.0)) {
                    let _ = hwlink::admin::remove(&r.name);
                }
            }
        }
    }
}

/// Joins `domain` as `member`; the first to join sets the slot size.
fn join(domain: &str, member: &str, slot_size: u32) -> Member {
    Domain::builder(domain)
        .backend(Backend::Shm)
        .capacity(16)
        .slot_size(slot_size)
        .wait(WaitStrategy::SpinPark)
        .join(member)
        .unwrap()
}

/// Sends `i` to `to` once it has joined (it may not have yet).
fn member_send(m: &mut Member, to: &str, i: u64, reply: bool) {
    let v = frame(i, reply);
    match i % 3 {
        0 => m.send_value(to, &v).unwrap(),
        1 => retry(|| match m.try_send_value(to, &v) {
            Ok(()) => Some(()),
            Err(SendError::Full(())) => None,
            Err(e) => panic!("try_send_value: {e}"),
        }),
        _ => m.send_value_timeout(to, &v, T).unwrap(),
    }
}

fn member_recv(m: &mut Member, from: &str, i: u64, reply: bool) {
    let got: Frame = match i % 4 {
        0 => m.recv_value_from(from).unwrap(),
        1 => m.recv_value_from_timeout(from, T).unwrap(),
        2 => {
            let (who, v) = m.recv_any_value().unwrap();
            assert_eq!(who, from);
            v
        }
        _ => {
            let (who, v) = retry(|| match m.try_recv_any_value::<Frame>() {
                Ok(got) => Some(got),
                Err(RecvError::Empty) => None,
                Err(e) => panic!("try_recv_any_value: {e}"),
            });
            assert_eq!(who, from);
            v
        }
    };
    check(&got, i, reply);
}

fn member_echo(ctx: &Ctx) {
    let mut b = join(&ctx.var("DOMAIN"), "b", 64);
    ctx.report("joined");
    for i in 0..COUNT {
        if i == BAD_AT {
            assert_eq!(b.recv_value_from::<Frame>("a"), Err(WRONG_SIZE));
        }
        member_recv(&mut b, "a", i, false);
        member_send(&mut b, "a", i, true);
    }
    ctx.report(&format!("done {COUNT}"));
    // Stay until a has received the last reply.
    let _ = b.recv_any_timeout(T);
}

#[test]
fn member_round_trip_of_a_64_byte_struct_between_processes() {
    let domain = domain_name("typed");
    let _cleanup = RemoveDomain(domain.clone());
    let mut a = join(&domain, "a", 64);
    let mut peer = Peer::spawn(
        "member_echo",
        &[("DOMAIN", domain.clone()), ("NAME", "b".to_string())],
    );
    peer.expect("joined", T);
    for i in 0..COUNT {
        if i == BAD_AT {
            a.send("b", SHORT).unwrap();
        }
        member_send(&mut a, "b", i, false);
        member_recv(&mut a, "b", i, true);
    }
    assert_eq!(peer.expect("done", T), COUNT.to_string());
    a.send("b", b"bye").unwrap();
    peer.wait_success(T);
    a.leave();
}

// ---------------------------------------------------------------------------
// Serialized messages (feature `serde`)
// ---------------------------------------------------------------------------

#[cfg(feature = "serde")]
mod serialized {
    use super::*;
    use ::serde::{Deserialize, Serialize};

    #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
    struct Fill {
        price: i64,
        quantity: u32,
    }

    /// A value of no fixed size: strings, a vector, an option.
    #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
    struct Order {
        id: u64,
        symbol: String,
        fills: Vec<Fill>,
        note: Option<String>,
    }

    const SERDE_COUNT: u64 = 500;

    fn order(i: u64, reply: bool) -> Order {
        Order {
            id: i * 2 + u64::from(reply),
            symbol: format!("SYM{i}{}", if reply { "r" } else { "" }),
            fills: (0..i % 6)
                .map(|k| Fill {
                    price: -(i as i64) * 100 + k as i64,
                    quantity: (i + k) as u32,
                })
                .collect(),
            note: (i % 3 == 0).then(|| "é".repeat((i % 40) as usize)),
        }
    }

    /// An undecodable message: ten 0xff bytes are no u64 in postcard.
    const GARBAGE: [u8; 12] = [0xff; 12];

    fn link(name: &str, dir: &str) -> LinkBuilder {
        super::link(name, dir).slot_size(256)
    }

    fn send(tx: &mut Sender, i: u64, reply: bool) {
        let o = order(i, reply);
        match i % 3 {
            0 => tx.send_serialized(&o).unwrap(),
            1 => retry(|| match tx.try_send_serialized(&o) {
                Ok(()) => Some(()),
                Err(SendError::Full(())) => None,
                Err(e) => panic!("try_send_serialized: {e}"),
            }),
            _ => tx.send_serialized_timeout(&o, T).unwrap(),
        }
    }

    fn recv(rx: &mut Receiver, i: u64, reply: bool) {
        let got: Order = match i % 3 {
            0 => rx.recv_deserialized().unwrap(),
            1 => retry(|| match rx.try_recv_deserialized::<Order>() {
                Ok(v) => Some(v),
                Err(RecvError::Empty) => None,
                Err(e) => panic!("try_recv_deserialized: {e}"),
            }),
            _ => rx.recv_deserialized_timeout(T).unwrap(),
        };
        assert_eq!(got, order(i, reply), "order {i}");
    }

    pub(super) fn link_echo(ctx: &Ctx) {
        let name = ctx.name();
        let mut rx = link(&name, "a").open_receiver().unwrap();
        let mut tx = link(&name, "b").open_sender().unwrap();
        for i in 0..SERDE_COUNT {
            if i == BAD_AT {
                let e = rx.recv_deserialized::<Order>().unwrap_err();
                assert!(matches!(e, RecvError::Deserialize(_)), "{e}");
            }
            recv(&mut rx, i, false);
            send(&mut tx, i, true);
        }
        ctx.report(&format!("done {SERDE_COUNT}"));
    }

    #[test]
    fn link_round_trip_of_strings_and_vectors_between_processes() {
        let name = unique("typed-serde");
        let _cleanup = Cleanup(name.clone());
        let mut tx = link(&name, "a").create_sender().unwrap();
        let mut rx = link(&name, "b").create_receiver().unwrap();
        // Larger than a slot once encoded: TooLarge with the encoded
        // length, and nothing sent.
        let big = Order {
            symbol: "x".repeat(300),
            ..order(1, false)
        };
        match tx.try_send_serialized(&big) {
            Err(SendError::TooLarge { len, max: 256, .. }) => assert!(len > 300, "{len}"),
            other => panic!("expected TooLarge, got {other:?}"),
        }
        let mut peer = Peer::spawn("link_serde_echo", &[("NAME", name.clone())]);
        for i in 0..SERDE_COUNT {
            if i == BAD_AT {
                tx.send(GARBAGE).unwrap();
            }
            send(&mut tx, i, false);
            recv(&mut rx, i, true);
        }
        assert_eq!(peer.expect("done", T), SERDE_COUNT.to_string());
        peer.wait_success(T);
        drop((tx, rx));
        assert_no_regions(&name);
    }

    pub(super) fn member_echo(ctx: &Ctx) {
        let mut b = join(&ctx.var("DOMAIN"), "b", 256);
        ctx.report("joined");
        for i in 0..SERDE_COUNT {
            let got: Order = match i % 2 {
                0 => b.recv_deserialized_from("a").unwrap(),
                _ => {
                    let (from, o) = b.recv_any_deserialized_timeout(T).unwrap();
                    assert_eq!(from, "a");
                    o
                }
            };
            assert_eq!(got, order(i, false));
            b.send_serialized("a", &order(i, true)).unwrap();
        }
        ctx.report(&format!("done {SERDE_COUNT}"));
        let _ = b.recv_any_timeout(T);
    }

    #[test]
    fn member_and_mailbox_round_trips_of_strings_and_vectors() {
        // Between two processes in a domain.
        let domain = domain_name("tserde");
        let _cleanup = RemoveDomain(domain.clone());
        let mut a = join(&domain, "a", 256);
        let mut peer = Peer::spawn(
            "member_serde_echo",
            &[("DOMAIN", domain.clone()), ("NAME", "b".to_string())],
        );
        peer.expect("joined", T);
        for i in 0..SERDE_COUNT {
            a.send_serialized_timeout("b", &order(i, false), T).unwrap();
            let got: Order = if i % 2 == 0 {
                a.recv_deserialized_from_timeout("b", T).unwrap()
            } else {
                let (from, o) = a.recv_any_deserialized().unwrap();
                assert_eq!(from, "b");
                o
            };
            assert_eq!(got, order(i, true));
        }
        assert_eq!(peer.expect("done", T), SERDE_COUNT.to_string());
        a.send("b", b"bye").unwrap();
        peer.wait_success(T);
        a.leave();

        // Through a mailbox, in this process; garbage in between.
        let name = mailbox_name("tmser");
        let _remove = RemoveMailbox(name.clone());
        let mut mbx = mailbox()
            .name(&name)
            .slot_size(256)
            .create(Access::SendRecv)
            .unwrap();
        for i in 0..10 {
            mbx.send_serialized(&order(i, false)).unwrap();
            mbx.send(GARBAGE).unwrap();
            mbx.try_send_serialized(&order(i, true)).unwrap();
            assert_eq!(mbx.recv_deserialized::<Order>().unwrap(), order(i, false));
            let e = mbx.try_recv_deserialized::<Order>().unwrap_err();
            assert!(matches!(e, RecvError::Deserialize(_)), "{e}");
            let got: Order = mbx.recv_deserialized_timeout(T).unwrap();
            assert_eq!(got, order(i, true));
        }
        assert_eq!(mbx.try_recv_deserialized::<Order>(), Err(RecvError::Empty));
        mbx.remove().unwrap();
    }
}

//! A hostile or broken peer: the test maps the region file itself and
//! writes bad values into the header, the ring or a slot. Every case must
//! give a clear error, never a crash, a hang or an out-of-bounds access.

mod common {
    pub mod child;
    pub mod drive;
    pub mod layout;
    pub mod message;
    pub mod msg;
    pub mod names;
    pub mod peer;
    pub mod raw;
    pub mod raw64;
    pub mod raw_read;
    pub mod raw_write;
    pub mod watchdog;
}

use common::child::{Ctx, PEER_WAIT};
use common::layout::{hdr, ring, slot, RING};
use common::message::message;
use common::msg::{check, MAX_MSG};
use common::names::{assert_no_regions, unique, Cleanup};
use common::peer::Peer;
use common::raw::RawRegion;
use common::watchdog::Watchdog;
use core::mem::offset_of;
use hwlink::{LinkBuilder, OpenError, RecvError, SendError};
use std::time::{Duration, Instant};

#[test]
fn peer_entry() {
    common::child::peer_entry_with(|role, ctx| {
        match role {
            "corrupt_victim" => role_corrupt_victim(ctx),
            "open_and_report" => role_open_and_report(ctx),
            _ => return false,
        }
        true
    });
}

/// The fields of `struct hwl_spsc_ring` and `struct hwl_slot` that only
/// these tests write (`common/ring.rs` has the rest).
mod ring_state {
    use core::mem::offset_of;
    use hwlink_hw::{hwl_endpoint, hwl_slot, hwl_spsc_ring};
    pub const FLAGS: usize = offset_of!(hwl_spsc_ring, flags);
    pub const PRODUCER_STATE: usize =
        offset_of!(hwl_spsc_ring, producer) + offset_of!(hwl_endpoint, state);
    pub const CONSUMER_STATE: usize =
        offset_of!(hwl_spsc_ring, consumer) + offset_of!(hwl_endpoint, state);
    pub const SLOT_LEN: usize = offset_of!(hwl_slot, len);
}

impl RawRegion {
    /// Writes a ring field (offset from the ring object).
    fn set_ring32(&self, field: usize, v: u32) {
        self.set32(RING + field, v)
    }

    /// The length of the mapping.
    fn len(&self) -> usize {
        self.map.len()
    }
}

// ---------------------------------------------------------------------------
// Hostile peers
// ---------------------------------------------------------------------------

/// A short name for a receive result, for reports.
fn recv_kind(r: &Result<Vec<u8>, RecvError>) -> String {
    match r {
        Ok(m) => format!("Ok({})", m.len()),
        Err(RecvError::Corrupt(c)) => format!("Corrupt({})", c.what.replace(' ', "_")),
        Err(e) => format!("{e:?}"),
    }
}

/// Opens the receiver of NAME, receives COUNT messages, reports READY and
/// waits for `go`; then reports what the next three receives return, and
/// the Display of the first error.
fn role_corrupt_victim(ctx: &Ctx) {
    let mut rx = LinkBuilder::new(ctx.name())
        .wait(ctx.wait())
        .open_receiver()
        .expect("open_receiver");
    let mut scratch = [0u8; MAX_MSG];
    for seq in 0..ctx.u64("COUNT") {
        let m = rx.recv_timeout(PEER_WAIT).expect("recv");
        check(seq, &m, &mut scratch).unwrap();
    }
    ctx.report("READY");
    ctx.command("go", PEER_WAIT);
    let first = rx.recv_timeout(Duration::from_secs(5));
    let second = rx.try_recv();
    let third = rx.recv_timeout(Duration::from_millis(50));
    ctx.report(&format!(
        "RESULT {} {} {}",
        recv_kind(&first),
        recv_kind(&second),
        recv_kind(&third)
    ));
    if let Err(e) = &first {
        ctx.report(&format!("DISPLAY {e}"));
    }
    ctx.command("exit", PEER_WAIT);
    drop(rx);
}

/// Opens the receiver of NAME with READY_MS as the ready timeout and
/// reports `OPEN <variant>` and `DISPLAY <text>`.
fn role_open_and_report(ctx: &Ctx) {
    let r = LinkBuilder::new(ctx.name())
        .ready_timeout(ctx.millis("READY_MS"))
        .open_receiver();
    match r {
        Ok(rx) => {
            ctx.report("OPEN Ok");
            drop(rx);
        }
        Err(e) => {
            let dbg = format!("{e:?}");
            let variant = dbg.split([' ', '(', '{']).next().unwrap_or("");
            ctx.report(&format!("OPEN {variant}"));
            ctx.report(&format!("DISPLAY {e}"));
        }
    }
}

const CAP: u32 = 16;
const SLOT: u32 = MAX_MSG as u32;

fn builder(name: &str) -> LinkBuilder {
    LinkBuilder::new(name)
        .capacity(CAP)
        .slot_size(SLOT)
        .ready_timeout(Duration::from_millis(200))
}

/// Creates a link (its sender), corrupts its region with `corrupt`, and
/// returns what opening the receiver gives.
fn open_after(tag: &str, corrupt: impl FnOnce(&RawRegion)) -> OpenError {
    let name = unique(tag);
    let _cleanup = Cleanup(name.clone());
    let tx = builder(&name).create_sender().unwrap();
    let raw = RawRegion::open(&name);
    assert_eq!(raw.get64(hdr::MAGIC), hwlink_hw::HWL_REGION_MAGIC);
    assert_eq!(
        raw.get64(hdr::OBJECTS + core::mem::offset_of!(hwlink_hw::hwl_object, offset)),
        RING as u64,
        "the ring object is at offset 4096"
    );
    corrupt(&raw);
    let err = match builder(&name).open_receiver() {
        Ok(_) => panic!("{tag}: opening a corrupt region succeeded"),
        Err(e) => e,
    };
    // The same from the sending side, which is attached already: a second
    // sender is refused before or after validation, but never crashes.
    assert!(builder(&name).open_sender().is_err());
    drop(raw);
    drop(tx);
    assert_no_regions(&name);
    err
}

#[test]
fn open_bad_magic() {
    let e = open_after("magic", |r| r.set64(hdr::MAGIC, 0x1234_5678_9abc_def0));
    match &e {
        OpenError::BadMagic {
            found, expected, ..
        } => {
            assert_eq!(*found, 0x1234_5678_9abc_def0);
            assert_eq!(*expected, hwlink_hw::HWL_REGION_MAGIC);
        }
        other => panic!("{other:?}"),
    }
    let text = e.to_string();
    assert!(text.contains("hwlink rm"), "{text}");
}

#[test]
fn open_wrong_abi_version() {
    let e = open_after("abi", |r| r.set32(hdr::ABI_VERSION, 99));
    match &e {
        OpenError::VersionMismatch {
            found, expected, ..
        } => assert_eq!((*found, *expected), (99, hwlink_hw::HWL_ABI_VERSION)),
        other => panic!("{other:?}"),
    }
    assert!(e.to_string().contains("version 99"), "{e}");
}

#[test]
fn open_wrong_total_size() {
    let mut file = 0;
    let e = open_after("size", |r| {
        file = r.len() as u64;
        r.set64(hdr::TOTAL_SIZE, file + 4096);
    });
    match &e {
        OpenError::SizeMismatch {
            header, file: f, ..
        } => {
            assert_eq!((*header, *f), (file + 4096, file))
        }
        other => panic!("{other:?}"),
    }
    let text = e.to_string();
    assert!(text.contains("hwlink rm"), "{text}");
}

#[test]
fn open_unknown_feature() {
    let e = open_after("feat", |r| {
        r.set32(hdr::FEATURES, r.get32(hdr::FEATURES) | 1 << 7)
    });
    match &e {
        OpenError::UnsupportedFeatures { unknown, .. } => assert_eq!(*unknown, 1 << 7),
        other => panic!("{other:?}"),
    }
}

#[test]
fn open_capacity_not_power_of_two() {
    let e = open_after("cap", |r| r.set_ring32(ring::CAPACITY, CAP - 1));
    match &e {
        OpenError::Corrupt { source, .. } => {
            assert_eq!(source.what, "ring capacity");
            assert_eq!(source.value, u64::from(CAP - 1));
        }
        other => panic!("{other:?}"),
    }
    let text = e.to_string();
    assert!(text.contains("hwlink rm"), "{text}");
}

#[test]
fn open_huge_capacity() {
    // A power of two, but the slots would run far past the region's end.
    let e = open_after("bigcap", |r| r.set_ring32(ring::CAPACITY, 1 << 20));
    assert!(matches!(e, OpenError::Corrupt { .. }), "{e:?}");
}

#[test]
fn open_inconsistent_slot_stride() {
    let e = open_after("stride", |r| {
        r.set_ring32(ring::SLOT_STRIDE, r.ring32(ring::SLOT_STRIDE) + 64)
    });
    match &e {
        OpenError::Corrupt { source, .. } => assert_eq!(source.what, "ring slot stride"),
        other => panic!("{other:?}"),
    }
    // And a slot size that no longer matches the stride.
    let e = open_after("slotsz", |r| r.set_ring32(ring::SLOT_SIZE, 4000));
    assert!(matches!(e, OpenError::Corrupt { .. }), "{e:?}");
}

#[test]
fn open_object_table_out_of_range() {
    let e = open_after("objcnt", |r| r.set32(hdr::OBJECT_COUNT, 1000));
    assert!(matches!(e, OpenError::Corrupt { .. }), "{e:?}");
    let size_field = hdr::OBJECTS + core::mem::offset_of!(hwlink_hw::hwl_object, size);
    let e = open_after("objsz", |r| r.set64(size_field, u64::MAX - 100));
    assert!(matches!(e, OpenError::Corrupt { .. }), "{e:?}");
}

#[test]
fn open_uninitialised_region_is_not_ready() {
    let e = open_after("magic0", |r| r.set64(hdr::MAGIC, 0));
    match &e {
        OpenError::NotReady { creator_pid, .. } => assert_eq!(*creator_pid, std::process::id()),
        other => panic!("{other:?}"),
    }
    let text = e.to_string();
    assert!(text.contains("hwlink rm --stale"), "{text}");

    // It waits for the ready timeout, then gives up.
    let name = unique("magic0t");
    let _cleanup = Cleanup(name.clone());
    let tx = builder(&name).create_sender().unwrap();
    let raw = RawRegion::open(&name);
    raw.set64(hdr::MAGIC, 0);
    let timeout = Duration::from_millis(300);
    let t0 = Instant::now();
    let r = LinkBuilder::new(&name)
        .ready_timeout(timeout)
        .open_receiver();
    let took = t0.elapsed();
    assert!(matches!(r, Err(OpenError::NotReady { .. })), "{r:?}");
    assert!(took >= timeout, "gave up after {took:?}");
    assert!(took < Duration::from_secs(5), "took {took:?}");
    // ... and sees the region once its creator publishes it.
    raw.set64(hdr::MAGIC, hwlink_hw::HWL_REGION_MAGIC);
    let rx = LinkBuilder::new(&name).open_receiver().unwrap();
    drop((rx, raw, tx));
    assert_no_regions(&name);
}

/// Open-time corruption seen by another process: the child reports the
/// error variant and its text.
#[test]
fn open_corrupt_region_in_child() {
    for (tag, field, value, want) in [
        ("cmagic", hdr::MAGIC, Some(0xdead_beef_u64), "BadMagic"),
        ("cmagic0", hdr::MAGIC, Some(0), "NotReady"),
        ("cabi", hdr::ABI_VERSION, None, "VersionMismatch"),
    ] {
        let name = unique(tag);
        let _cleanup = Cleanup(name.clone());
        let tx = builder(&name).create_sender().unwrap();
        let raw = RawRegion::open(&name);
        match value {
            Some(v) => raw.set64(field, v),
            None => raw.set32(field, 99),
        }
        let mut peer = Peer::spawn(
            "open_and_report",
            &[("NAME", name.clone()), ("READY_MS", "200".to_string())],
        );
        let got = peer.expect("OPEN", PEER_WAIT);
        assert_eq!(got, want, "{tag}");
        let text = peer.expect("DISPLAY", PEER_WAIT);
        assert!(text.contains(&name), "{tag}: {text}");
        peer.wait_success(PEER_WAIT);
        drop((raw, tx));
        assert_no_regions(&name);
    }
}

/// An open link whose receiver and sender both live in this process.
struct Pair {
    name: String,
    tx: hwlink::Sender,
    rx: hwlink::Receiver,
    raw: RawRegion,
    _cleanup: Cleanup,
}

/// A link with `n` messages sent and received.
fn pair(tag: &str, n: u64) -> Pair {
    let name = unique(tag);
    let cleanup = Cleanup(name.clone());
    let mut tx = builder(&name).create_sender().unwrap();
    let mut rx = builder(&name).open_receiver().unwrap();
    for seq in 0..n {
        tx.send(message(seq)).unwrap();
        assert_eq!(rx.recv().unwrap(), message(seq));
    }
    let raw = RawRegion::open(&name);
    Pair {
        name,
        tx,
        rx,
        raw,
        _cleanup: cleanup,
    }
}

fn finish(p: Pair) {
    let name = p.name.clone();
    drop(p.tx);
    drop(p.rx);
    drop(p.raw);
    assert_no_regions(&name);
}

fn assert_recv_corrupt(r: Result<Vec<u8>, RecvError>, what: &str) -> hwlink::Corruption {
    match r {
        Err(RecvError::Corrupt(c)) => c,
        other => panic!("{what}: expected Corrupt, got {other:?}"),
    }
}

/// `tail` moved more than `capacity` beyond `head` on an open link: the
/// receiver's next call reports corruption, and every call after.
#[test]
fn corrupt_tail_beyond_capacity() {
    let p = pair("tail", 5);
    let mut p = p;
    let head = p.raw.ring32(ring::HEAD);
    assert_eq!(head, 5);
    p.raw.set_ring32(ring::TAIL, head + CAP + 7);
    let c = assert_recv_corrupt(p.rx.try_recv(), "try_recv");
    assert_eq!(c.value, u64::from(CAP + 7));
    assert_recv_corrupt(
        p.rx.recv_timeout(Duration::from_millis(100)),
        "recv_timeout",
    );
    assert_recv_corrupt(p.rx.try_recv(), "try_recv again");
    assert!(matches!(p.rx.try_peek(), Err(RecvError::Corrupt(_))));
    finish(p);
}

/// The same, through `recv_timeout` first.
#[test]
fn corrupt_tail_beyond_capacity_recv_timeout() {
    let mut p = pair("tail2", 3);
    p.raw.set_ring32(ring::TAIL, 3 + CAP + 1);
    let t0 = Instant::now();
    let dog = Watchdog::new(Duration::from_secs(20), "recv_timeout on a corrupt tail");
    assert_recv_corrupt(p.rx.recv_timeout(Duration::from_secs(2)), "recv_timeout");
    drop(dog);
    assert!(
        t0.elapsed() < Duration::from_secs(2),
        "corruption found only at the deadline"
    );
    assert_recv_corrupt(p.rx.try_recv(), "try_recv after");
    finish(p);
}

/// A published slot whose length exceeds the slot size: `Corrupt`, for
/// this call and every later one, without touching memory out of bounds.
#[test]
fn corrupt_slot_length() {
    let mut p = pair("len", 4);
    let head = p.raw.ring32(ring::HEAD);
    let slot = p.raw.slot_offset(head);
    p.raw.set32(slot + ring_state::SLOT_LEN, 1 << 30);
    p.raw.set32(slot + slot::SEQ, head + 1);
    p.raw.set_ring32(ring::TAIL, head + 1);
    let c = assert_recv_corrupt(p.rx.try_recv(), "try_recv");
    assert_eq!(
        (c.what, c.value, c.limit),
        ("message length", 1 << 30, u64::from(SLOT))
    );
    let text = RecvError::Corrupt(c).to_string();
    assert!(text.contains("hwlink rm"), "{text}");
    assert_recv_corrupt(p.rx.try_recv(), "try_recv again");
    assert_recv_corrupt(p.rx.recv_timeout(Duration::from_millis(50)), "recv_timeout");
    let mut buf = [0u8; 256];
    assert!(matches!(
        p.rx.recv_into(&mut buf),
        Err(RecvError::Corrupt(_))
    ));
    assert!(matches!(p.rx.try_peek(), Err(RecvError::Corrupt(_))));
    // The poisoned receiver closed its end: the sender sees it gone.
    assert!(matches!(
        p.tx.send_timeout(b"x", Duration::from_secs(5)),
        Err(SendError::Disconnected(_))
    ));
    finish(p);
}

/// The same through each receive API on a fresh link.
#[test]
fn corrupt_slot_length_every_api() {
    for api in ["recv", "recv_into", "recv_with", "peek", "read_batch"] {
        let mut p = pair(&format!("len-{api}"), 2);
        let head = p.raw.ring32(ring::HEAD);
        let slot = p.raw.slot_offset(head);
        p.raw.set32(slot + ring_state::SLOT_LEN, SLOT + 1);
        p.raw.set32(slot + slot::SEQ, head + 1);
        p.raw.set_ring32(ring::TAIL, head + 1);
        let dog = Watchdog::new(Duration::from_secs(20), format!("corrupt length, {api}"));
        let r: Result<(), RecvError> = match api {
            "recv" => p.rx.recv().map(drop),
            "recv_into" => p.rx.recv_into(&mut [0u8; 512]).map(drop),
            "recv_with" => p.rx.recv_with(|m| assert!(m.len() <= SLOT as usize)),
            "peek" => p.rx.peek().map(drop),
            _ => {
                p.rx.read_batch(4)
                    .map(|b| assert!(b.iter().all(|m| m.is_err()), "a batch yields the error"))
            }
        };
        drop(dog);
        if api == "read_batch" {
            // read_batch hands out the batch; its messages report it.
            if let Err(e) = r {
                assert!(matches!(e, RecvError::Corrupt(_)), "{api}: {e:?}");
            }
        } else {
            assert!(matches!(r, Err(RecvError::Corrupt(_))), "{api}: {r:?}");
            assert!(
                matches!(p.rx.try_recv(), Err(RecvError::Corrupt(_))),
                "{api}"
            );
        }
        finish(p);
    }
}

/// `tail` moved beyond `head + capacity` while the slot at `head` looks
/// published: `read_batch`, which counts messages through `tail`, reports
/// corruption, and the receiver stays poisoned.
#[test]
fn corrupt_tail_seen_by_read_batch() {
    let mut p = pair("tailb", 2);
    let head = p.raw.ring32(ring::HEAD);
    let slot = p.raw.slot_offset(head);
    p.raw.set32(slot + ring_state::SLOT_LEN, 8);
    p.raw.set32(slot + slot::SEQ, head + 1);
    p.raw.set_ring32(ring::TAIL, head + CAP + 7);
    let dog = Watchdog::new(Duration::from_secs(20), "read_batch on a corrupt tail");
    match p.rx.read_batch(4) {
        Err(RecvError::Corrupt(c)) => assert_eq!(c.value, u64::from(CAP + 7)),
        Err(e) => panic!("read_batch: {e:?}"),
        Ok(b) => panic!("read_batch: a batch of {}", b.len()),
    }
    drop(dog);
    assert!(matches!(p.rx.try_recv(), Err(RecvError::Corrupt(_))));
    assert!(matches!(p.rx.try_read_batch(1), Err(RecvError::Corrupt(_))));
    finish(p);
}

/// `head` moved beyond `tail` (or more than `capacity` behind it): the
/// sender reports corruption, never `Full`, and keeps reporting it. It
/// works from a cached copy of `head` and reloads it only when that copy
/// says the ring is full, so up to `capacity` sends may succeed first.
#[test]
fn corrupt_head_beyond_tail() {
    for (tag, delta) in [("head", 1000i64), ("headb", -(i64::from(CAP) + 5))] {
        let mut p = pair(tag, 6);
        let tail = p.raw.ring32(ring::TAIL);
        p.raw
            .set_ring32(ring::HEAD, tail.wrapping_add_signed(delta as i32));
        let mut sends = 0;
        let c = loop {
            match p.tx.try_send(b"x") {
                Ok(()) => sends += 1,
                Err(SendError::Corrupt(c)) => break c,
                Err(e) => panic!("{tag}: after {sends} sends: {e:?}"),
            }
            assert!(
                sends <= CAP,
                "{tag}: {sends} sends and no corruption reported"
            );
        };
        eprintln!("{tag}: reported after {sends} successful sends: {c}");
        assert_eq!(c.what, "ring occupancy (tail - head)");
        assert!(c.to_string().contains("hwlink rm"), "{c}");
        assert!(matches!(p.tx.try_send(b"x"), Err(SendError::Corrupt(_))));
        let dog = Watchdog::new(Duration::from_secs(20), "send on a corrupt ring");
        assert!(matches!(p.tx.send(b"x"), Err(SendError::Corrupt(_))));
        drop(dog);
        assert!(matches!(
            p.tx.send_timeout(b"x", Duration::from_millis(10)),
            Err(SendError::Corrupt(_))
        ));
        assert!(matches!(p.tx.reserve(1), Err(SendError::Corrupt(_))));
        assert!(matches!(
            p.tx.try_write_batch(2),
            Err(SendError::Corrupt(_))
        ));
        finish(p);
    }
}

/// `head` moved beyond `tail` while the sender waits on a full ring.
#[test]
fn corrupt_head_while_sender_waits() {
    let name = unique("headw");
    let _cleanup = Cleanup(name.clone());
    let mut tx = builder(&name).create_sender().unwrap();
    let rx = builder(&name).open_receiver().unwrap();
    for seq in 0..u64::from(CAP) {
        tx.try_send(message(seq)).unwrap();
    }
    let raw = RawRegion::open(&name);
    let corrupter = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(200));
        raw.set_ring32(ring::HEAD, CAP + 100);
        raw
    });
    let dog = Watchdog::new(
        Duration::from_secs(20),
        "send on a full ring, head corrupted",
    );
    let r = tx.send_timeout(b"x", Duration::from_secs(10));
    drop(dog);
    assert!(matches!(r, Err(SendError::Corrupt(_))), "{r:?}");
    let raw = corrupter.join().unwrap();
    drop((tx, rx, raw));
    assert_no_regions(&name);
}

/// A hostile sender in this process writes a bad slot length; the receiver
/// is another process and reports `Corrupt` through its stdout, for its
/// next call and the calls after.
#[test]
fn corrupt_slot_length_seen_by_child() {
    let name = unique("clen");
    let _cleanup = Cleanup(name.clone());
    let mut tx = builder(&name).create_sender().unwrap();
    let mut peer = Peer::spawn(
        "corrupt_victim",
        &[("NAME", name.clone()), ("COUNT", "5".to_string())],
    );
    for seq in 0..5 {
        tx.send(message(seq)).unwrap();
    }
    peer.expect("READY", PEER_WAIT);
    let raw = RawRegion::open(&name);
    let head = raw.ring32(ring::HEAD);
    assert_eq!(head, 5);
    let slot = raw.slot_offset(head);
    raw.set32(slot + ring_state::SLOT_LEN, SLOT + 1);
    raw.set32(slot + slot::SEQ, head + 1);
    raw.set_ring32(ring::TAIL, head + 1);
    peer.say("go");
    let result = peer.expect("RESULT", PEER_WAIT);
    assert_eq!(
        result,
        "Corrupt(message_length) Corrupt(message_length) Corrupt(message_length)"
    );
    let text = peer.expect("DISPLAY", PEER_WAIT);
    assert!(text.contains("hwlink rm"), "{text}");
    // The child's receiver closed itself: the sender sees it gone.
    assert!(matches!(
        tx.send_timeout(b"x", Duration::from_secs(10)),
        Err(SendError::Disconnected(_))
    ));
    peer.say("exit");
    peer.wait_success(PEER_WAIT);
    drop((raw, tx));
    assert_no_regions(&name);
}

/// A hostile process rewrites the receiver's endpoint state to garbage:
/// the sender treats the receiver as gone, never crashes.
#[test]
fn garbage_endpoint_state() {
    let mut p = pair("epst", 1);
    p.raw.set_ring32(ring_state::CONSUMER_STATE, 77);
    assert!(matches!(
        p.tx.send_timeout(b"x", Duration::from_secs(5)),
        Err(SendError::Disconnected(_))
    ));
    p.raw.set_ring32(ring_state::PRODUCER_STATE, 0xffff_ffff);
    let dog = Watchdog::new(Duration::from_secs(20), "recv with a garbage sender state");
    assert_eq!(p.rx.recv(), Err(RecvError::Disconnected));
    drop(dog);
    // Ring flags other than HWL_RING_PACKED are reserved: a region with
    // any set is refused on open.
    let e = open_after("rflags", |r| r.set_ring32(ring_state::FLAGS, 2));
    assert!(matches!(e, OpenError::UnsupportedFeatures { .. }), "{e:?}");
    // A slotted ring that claims to be packed has no message bound and a
    // slot stride no packed ring has: refused as corrupt.
    let e = open_after("rpack", |r| r.set_ring32(ring_state::FLAGS, 1));
    assert!(matches!(e, OpenError::Corrupt { .. }), "{e:?}");
    finish(p);
}

/// Not corruption: a producer publishes a batch by storing each slot's
/// header, then `tail` once (hw/SPEC.md 8.3), so `tail` may lag a header
/// the consumer has already probed (a producer preempted, or killed,
/// between the two stores). This writes exactly that state by hand: the
/// slot at `head` published, `tail` not yet moved. `read_batch` must hand
/// out that one message, and the receiver must then see an empty ring.
#[test]
fn read_batch_while_tail_lags_the_headers() {
    let mut p = pair("lag", 3);
    let head = p.raw.ring32(ring::HEAD);
    assert_eq!(p.raw.ring32(ring::TAIL), head);
    let slot = p.raw.slot_offset(head);
    let payload = *b"lagging!";
    // Payload first, then the header, as the producer does.
    p.raw.set64(slot + 8, u64::from_le_bytes(payload));
    let header = payload.len() as u64 | u64::from(head + 1) << 32;
    p.raw.set64(slot, header);
    let dog = Watchdog::new(Duration::from_secs(20), "read_batch with a lagging tail");
    let batch = p.rx.read_batch(8).expect("read_batch");
    assert_eq!(batch.len(), 1);
    assert_eq!(
        batch.get(0).expect("the published message").to_vec(),
        payload
    );
    batch.release();
    drop(dog);
    // Nothing else is published.
    assert_eq!(p.rx.try_recv(), Err(RecvError::Empty));
    // The producer finishes its publication: still nothing more.
    p.raw.set_ring32(ring::TAIL, head + 1);
    assert_eq!(p.rx.try_recv(), Err(RecvError::Empty));
    assert_eq!(p.rx.len(), 0);
    finish(p);
}

/// The same state seen through `len()` and then single receives.
#[test]
fn len_while_tail_lags_the_headers() {
    let mut p = pair("lag2", 3);
    let head = p.raw.ring32(ring::HEAD);
    let slot = p.raw.slot_offset(head);
    p.raw.set64(slot + 8, u64::from_le_bytes(*b"lagging!"));
    p.raw.set64(slot, 8 | u64::from(head + 1) << 32);
    assert_eq!(p.rx.try_recv().unwrap(), b"lagging!");
    assert_eq!(p.rx.try_recv(), Err(RecvError::Empty));
    // Publish one more the same way, and ask len() first.
    let slot = p.raw.slot_offset(head + 1);
    p.raw.set64(slot + 8, u64::from_le_bytes(*b"second!!"));
    p.raw.set64(slot, 8 | u64::from(head + 2) << 32);
    assert_eq!(p.rx.try_peek().map(|m| m.to_vec()).unwrap(), b"second!!");
    assert!(!p.rx.is_empty(), "a probed message is ready");
    assert_eq!(p.rx.try_recv().unwrap(), b"second!!");
    assert_eq!(p.rx.try_recv(), Err(RecvError::Empty));
    finish(p);
}

/// Packed rings (hw/SPEC.md §17): 16 messages of up to 32 bytes.
fn packed_builder(name: &str) -> LinkBuilder {
    LinkBuilder::new(name)
        .capacity(16)
        .slot_size(32)
        .layout(hwlink::RingLayout::Packed)
        .ready_timeout(Duration::from_millis(200))
}

/// A link of packed records, `n` messages of 8 bytes sent and received.
fn packed_pair(tag: &str, n: u32) -> Pair {
    let name = unique(tag);
    let cleanup = Cleanup(name.clone());
    let mut tx = packed_builder(&name).create_sender().unwrap();
    let mut rx = packed_builder(&name).open_receiver().unwrap();
    assert!(tx.is_packed());
    for i in 0..n {
        tx.send(i.to_le_bytes().repeat(2)).unwrap();
        assert_eq!(rx.recv().unwrap(), i.to_le_bytes().repeat(2));
    }
    let raw = RawRegion::open(&name);
    Pair {
        name,
        tx,
        rx,
        raw,
        _cleanup: cleanup,
    }
}

/// Writes a published record header (`len`, `seq` = position + 1) at the
/// consumer's position.
fn packed_header_at_head(p: &Pair, len: u32) -> u32 {
    let head = p.raw.ring32(ring::HEAD);
    let at = p.raw.slot_offset(head);
    p.raw.set32(at + ring_state::SLOT_LEN, len);
    p.raw.set32(at + slot::SEQ, head.wrapping_add(1));
    head
}

/// A packed record whose length is beyond the slot size is corruption:
/// reported on receive, and on every call after.
#[test]
fn packed_record_length_beyond_slot() {
    let mut p = packed_pair("plen", 3);
    packed_header_at_head(&p, 33);
    let c = assert_recv_corrupt(p.rx.try_recv(), "try_recv");
    assert_eq!((c.what, c.value, c.limit), ("message length", 33, 32));
    assert_recv_corrupt(p.rx.recv_timeout(Duration::from_millis(50)), "again");
    finish(p);
}

/// A packed record that would cross the end of the unit area, and a
/// padding record at the start of a lap (which would skip a whole lap),
/// are corruption, never a read outside the ring.
#[test]
fn packed_record_past_the_end_and_padding_at_lap_start() {
    // 17 * 3 units for 16 messages of 32 bytes -> 64 units; 63 one-unit
    // messages move the consumer to the last unit.
    let mut p = packed_pair("pend", 63);
    assert_eq!(p.raw.ring32(ring::CAPACITY), 64);
    assert_eq!(packed_header_at_head(&p, 32) % 64, 63);
    let c = assert_recv_corrupt(p.rx.try_recv(), "try_recv");
    assert_eq!((c.what, c.value, c.limit), ("record end (units)", 66, 64));
    finish(p);

    let mut p = packed_pair("ppad", 64);
    assert_eq!(packed_header_at_head(&p, hwlink_hw::HWL_RECORD_PAD) % 64, 0);
    assert_recv_corrupt(p.rx.try_recv(), "try_recv");
    finish(p);
}

/// A consumer that claims to have released more messages than were sent
/// makes the sender report corruption, not send into a full ring.
#[test]
fn packed_message_count_beyond_bound() {
    let mut p = packed_pair("pcount", 5);
    p.raw
        .set_ring32(offset_of!(hwlink_hw::hwl_spsc_ring, released), 5 + 1000);
    // The cached counts still allow sends; the next fresh look reports it.
    let mut result = Ok(());
    for i in 0..64u32 {
        result = p.tx.try_send(i.to_le_bytes());
        if result.is_err() {
            break;
        }
    }
    match result {
        Err(SendError::Corrupt(c)) => {
            assert_eq!(c.what, "ring messages (published - released)")
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    finish(p);
}

/// An opener refuses a packed ring whose message bound is 0 or not below
/// its units, or whose unit size is not 16.
#[test]
fn packed_open_refuses_bad_geometry() {
    let max = offset_of!(hwlink_hw::hwl_spsc_ring, max_messages);
    for (tag, field, value) in [
        ("pmax0", max, 0),
        ("pmaxcap", max, 64),
        ("pstride", ring::SLOT_STRIDE, 64),
    ] {
        let name = unique(tag);
        let _cleanup = Cleanup(name.clone());
        let tx = packed_builder(&name).create_sender().unwrap();
        let raw = RawRegion::open(&name);
        raw.set_ring32(field, value);
        match packed_builder(&name).open_receiver() {
            Err(OpenError::Corrupt { .. }) => {}
            other => panic!("{tag}: expected Corrupt, got {other:?}"),
        }
        drop((tx, raw));
    }
}

//! Links between real processes: streaming millions of messages with every
//! wait strategy, full and empty rings, disconnection (clean and by
//! SIGKILL), the zero-copy and batch APIs, and region cleanup.
//!
//! The test binary re-executes itself as the peer process (see
//! `common::peer_entry`). Run these tests one at a time: two busy-polling
//! pairs on two cores starve each other (`.config/nextest.toml` puts this
//! binary in a serial test group; with `cargo test`, pass
//! `--test-threads=1`).

mod common {
    pub mod child;
    pub mod drive;
    pub mod kill;
    pub mod layout;
    pub mod message;
    pub mod msg;
    pub mod names;
    pub mod peer;
    pub mod peer_pid;
    pub mod raw;
    pub mod raw_read;
    pub mod roles;
    pub mod shm_dir;
    pub mod stream;
    pub mod watchdog;
    pub mod zc;
}

use common::child::PEER_WAIT;
use common::kill::kill_later;
use common::layout::{hdr, ring, slot, RING, SLOTS};
use common::message::message;
use common::msg::{check, fill, msg_len, MAX_MSG};
use common::names::{assert_no_regions, unique, Cleanup};
use common::peer::Peer;
use common::raw::{region, RawRegion};
use common::shm_dir::shm_dir;
use common::stream::{checksum, consume, produce, CHECKSUM_INIT};
use common::watchdog::Watchdog;
use common::zc::{reader_side, writer_side, Chan};
use hwlink::{LinkBuilder, RecvError, SendError, WaitStrategy};
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[test]
fn peer_entry() {
    common::child::peer_entry_with(common::roles::run);
}

/// The checksum of messages `0..count`, computed locally.
fn expected_checksum(count: u64) -> u64 {
    let mut buf = [0u8; MAX_MSG];
    (0..count).fold(CHECKSUM_INIT, |h, seq| {
        let len = fill(seq, &mut buf);
        checksum(h, &buf[..len])
    })
}

/// Parses `CHECKSUM <hex> <count>` as reported by a peer.
fn parse_checksum(rest: &str) -> (u64, u64) {
    let mut it = rest.split_whitespace();
    let h = u64::from_str_radix(it.next().expect("checksum"), 16).expect("hex checksum");
    let n = it.next().expect("count").parse().expect("count");
    (h, n)
}

impl RawRegion {
    /// The sequence word of the slot that position `pos` uses.
    fn slot_seq(&self, pos: u32) -> u32 {
        self.get32(self.slot_offset(pos) + slot::SEQ)
    }
}

/// Writes, by hand, a valid link region `name` in the shm directory whose
/// free-running indices both start at `start` (a creator always starts at
/// 0: this is how a test reaches the u32 wrap-around in reasonable time).
/// Slot headers hold "previous lap" values, as after a full lap. The
/// caller removes the file.
fn forge_link_region(name: &str, capacity: u32, slot_size: u32, start: u32) -> PathBuf {
    use core::mem::offset_of;
    use hwlink_hw::{hwl_object, hwl_region};
    let stride = hwlink_hw::slot_stride(slot_size).unwrap();
    let ring_bytes = hwlink_hw::ring_bytes(capacity, stride).unwrap() as usize;
    let total = RING + ring_bytes.next_multiple_of(4096);
    let mut b = vec![0u8; total];
    let mut put = |off: usize, bytes: &[u8]| b[off..off + bytes.len()].copy_from_slice(bytes);
    put(hdr::ABI_VERSION, &hwlink_hw::HWL_ABI_VERSION.to_le_bytes());
    put(
        hdr::FEATURES,
        &(hwlink_hw::HWL_FEAT_SPSC_RING | hwlink_hw::HWL_FEAT_FUTEX_DOORBELL).to_le_bytes(),
    );
    put(offset_of!(hwl_region, page_size), &4096u32.to_le_bytes());
    put(hdr::TOTAL_SIZE, &(total as u64).to_le_bytes());
    put(
        offset_of!(hwl_region, creator_pid),
        &std::process::id().to_le_bytes(),
    );
    put(hdr::OBJECT_COUNT, &1u32.to_le_bytes());
    put(
        offset_of!(hwl_region, creator_token),
        &hwlink_drivers::process::my_token().unwrap().to_le_bytes(),
    );
    put(offset_of!(hwl_region, name), name.as_bytes());
    let obj = hdr::OBJECTS;
    put(
        obj + offset_of!(hwl_object, kind),
        &hwlink_hw::HWL_OBJ_SPSC_RING.to_le_bytes(),
    );
    put(
        obj + offset_of!(hwl_object, offset),
        &(RING as u64).to_le_bytes(),
    );
    put(
        obj + offset_of!(hwl_object, size),
        &((total - RING) as u64).to_le_bytes(),
    );
    put(obj + offset_of!(hwl_object, name), b"link");
    put(RING + ring::CAPACITY, &capacity.to_le_bytes());
    put(RING + ring::SLOT_SIZE, &slot_size.to_le_bytes());
    put(RING + ring::SLOT_STRIDE, &stride.to_le_bytes());
    put(
        RING + core::mem::offset_of!(hwlink_hw::hwl_spsc_ring, slots_offset),
        &hwlink_hw::RING_CONTROL_BYTES.to_le_bytes(),
    );
    put(RING + ring::HEAD, &start.to_le_bytes());
    put(RING + ring::TAIL, &start.to_le_bytes());
    // Position p of the first lap finds the previous lap's seq there:
    // p + 1 - capacity, never p + 1.
    for k in 0..capacity {
        let p = start.wrapping_add(k);
        let off = RING + SLOTS + (p & (capacity - 1)) as usize * stride as usize;
        put(
            off + slot::SEQ,
            &p.wrapping_add(1).wrapping_sub(capacity).to_le_bytes(),
        );
    }
    // Published last, like a creator does.
    put(hdr::MAGIC, &hwlink_hw::HWL_REGION_MAGIC.to_le_bytes());
    let path = shm_dir().join(format!("hwlink.{name}"));
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
    f.write_all(&b).unwrap();
    path
}

/// Ring shape of the streaming tests: small, so that it wraps around
/// constantly and both ends wait on a full or empty ring.
const CAP: u32 = 256;
const SLOT: u32 = 256;

fn link(name: &str, wait: WaitStrategy) -> LinkBuilder {
    LinkBuilder::new(name)
        .capacity(CAP)
        .slot_size(SLOT)
        .wait(wait)
}

/// How the parent receives in a streaming test.
#[derive(Clone, Copy, Debug)]
enum RecvApi {
    /// `recv_with`, checking the bytes in place.
    With,
    /// `recv_into` a stack buffer.
    Into,
    /// `recv`, allocating.
    Vec,
}

/// Which process sends in a streaming test.
#[derive(Clone, Copy, Debug)]
enum Dir {
    /// A child sends (`produce`); the parent receives with a [`RecvApi`].
    ChildToParent(RecvApi),
    /// The parent sends with the blocking `send` (so it blocks on a full
    /// ring); a child receives (`consume`).
    ParentToChild,
}

/// One streaming case: `count` messages in direction `dir`, the parent
/// waiting with `wait` and the child with `child_wait`. The receiver checks
/// every message (sequence, length, contents) and then `Disconnected`;
/// both ends' checksums must match the generated messages'.
fn stream(tag: &str, dir: Dir, wait: WaitStrategy, child_wait: WaitStrategy, count: u64) {
    let name = unique(tag);
    let _cleanup = Cleanup(name.clone());
    let role = match dir {
        Dir::ChildToParent(_) => "produce",
        Dir::ParentToChild => "consume",
    };
    let b = link(&name, wait);
    let mut end = match dir {
        Dir::ChildToParent(api) => End::Rx(b.create_receiver().unwrap(), api),
        Dir::ParentToChild => End::Tx(b.create_sender().unwrap()),
    };
    let mut peer = Peer::spawn(
        role,
        &[
            ("NAME", name.clone()),
            ("COUNT", count.to_string()),
            ("WAIT", child_wait.to_string()),
        ],
    );
    let dog = Watchdog::new(Duration::from_secs(240), format!("{tag}: {dir:?}"));
    let t0 = Instant::now();
    let h = match &mut end {
        End::Rx(rx, api) => recv_stream(rx, *api, count),
        End::Tx(tx) => send_stream(tx, count),
    };
    let elapsed = t0.elapsed();
    // A sender closes after its last message: the receiver (a consumer
    // child) then sees Disconnected.
    drop(end);
    // A consumer child reports once it has seen the close.
    let report_wait = match dir {
        Dir::ChildToParent(_) => Duration::from_secs(30),
        Dir::ParentToChild => Duration::from_secs(60),
    };
    let (their_h, their_count) = parse_checksum(&peer.expect("CHECKSUM", report_wait));
    drop(dog);
    assert_eq!(their_count, count);
    assert_eq!(their_h, h, "sender and receiver checksums differ");
    assert_eq!(
        h,
        expected_checksum(count),
        "checksum of the generated messages"
    );
    peer.wait_success(Duration::from_secs(30));
    eprintln!(
        "{tag}: {count} messages {dir:?} ({child_wait} child, {wait} parent) in {elapsed:?}: {:.2} M msg/s",
        count as f64 / elapsed.as_secs_f64() / 1e6
    );
    assert_no_regions(&name);
}

/// The parent's end in [`stream`].
enum End {
    Rx(hwlink::Receiver, RecvApi),
    Tx(hwlink::Sender),
}

/// Receives messages `0..count` with `api`, checking each, then expects
/// `Disconnected`; returns their checksum.
fn recv_stream(rx: &mut hwlink::Receiver, api: RecvApi, count: u64) -> u64 {
    let h = consume(count, |seq, buf| {
        let got = match api {
            // The bytes stay in shared memory: copied out to be checked.
            RecvApi::With => rx.recv_with(|m| m.copy_to(buf)),
            RecvApi::Into => rx.recv_into(buf),
            RecvApi::Vec => rx.recv().map(|m| {
                buf[..m.len()].copy_from_slice(&m);
                m.len()
            }),
        };
        got.unwrap_or_else(|e| panic!("receiving message #{seq}: {e:?} ({e})"))
    });
    // The producer closes after its last message.
    match rx.recv_timeout(Duration::from_secs(30)) {
        Err(RecvError::Disconnected) => {}
        other => panic!("after the last message: {other:?}"),
    }
    h
}

/// Sends messages `0..count` with the blocking `send`; returns their
/// checksum.
fn send_stream(tx: &mut hwlink::Sender, count: u64) -> u64 {
    produce(count, |seq, m| {
        if let Err(e) = tx.send(m) {
            panic!("sending message #{seq}: {e:?} ({e}); the consumer's stderr is above");
        }
    })
}

/// One `#[test]` per streaming case: `name(tag): (direction, parent wait,
/// child wait, count)`; `tag` names its link.
macro_rules! stream_tests {
    ($($name:ident($tag:literal): ($dir:expr, $wait:ident, $child:ident, $count:expr),)*) => {$(
        #[test]
        fn $name() {
            stream(
                $tag,
                $dir,
                WaitStrategy::$wait,
                WaitStrategy::$child,
                $count,
            );
        }
    )*};
}

// Each end has its own wait strategy in the `mixed` cases: a busy-polling
// end tells its peer (through its endpoint's wait mode) that it never
// sleeps, so the peer skips waking it; a sleeping end must still be woken.
stream_tests! {
    stream_10m_busypoll_child_to_parent("sbp"): (Dir::ChildToParent(RecvApi::With), BusyPoll, BusyPoll, 10_000_000),
    stream_10m_spinpark_child_to_parent("ssp"): (Dir::ChildToParent(RecvApi::Into), SpinPark, SpinPark, 10_000_000),
    stream_100k_park_child_to_parent("spk"): (Dir::ChildToParent(RecvApi::Vec), Park, Park, 100_000),
    stream_10m_busypoll_parent_to_child("rbp"): (Dir::ParentToChild, BusyPoll, BusyPoll, 10_000_000),
    stream_10m_spinpark_parent_to_child("rsp"): (Dir::ParentToChild, SpinPark, SpinPark, 10_000_000),
    stream_100k_park_parent_to_child("rpk"): (Dir::ParentToChild, Park, Park, 100_000),
    stream_mixed_busypoll_parent_park_child("mx1"): (Dir::ChildToParent(RecvApi::Into), BusyPoll, Park, 1_000_000),
    stream_mixed_park_parent_busypoll_child("mx2"): (Dir::ChildToParent(RecvApi::Into), Park, BusyPoll, 1_000_000),
    stream_mixed_spinpark_parent_park_child("mx3"): (Dir::ChildToParent(RecvApi::Into), SpinPark, Park, 1_000_000),
    stream_mixed_park_parent_spinpark_child("mx4"): (Dir::ChildToParent(RecvApi::Into), Park, SpinPark, 1_000_000),
}

/// One `#[test]` per wait strategy of a body `fn(wait)`: `name: Strategy`.
macro_rules! per_wait {
    ($body:ident { $($name:ident: $wait:ident,)* }) => {$(
        #[test]
        fn $name() {
            $body(WaitStrategy::$wait);
        }
    )*};
}

// ---------------------------------------------------------------------------
// Full and empty rings
// ---------------------------------------------------------------------------

/// `try_send` on a full ring hands the message back in `Full`, and
/// `send_timeout` in `Timeout` after about the timeout, while a receiver in
/// another process is attached but does not read. Then it reads, and
/// everything arrives.
fn full_ring_try_send_and_send_timeout(wait: WaitStrategy) {
    const SMALL: u32 = 8;
    let name = unique(&format!("full-{wait}"));
    let _cleanup = Cleanup(name.clone());
    let mut tx = LinkBuilder::new(&name)
        .capacity(SMALL)
        .slot_size(MAX_MSG as u32)
        .wait(wait)
        .create_sender()
        .unwrap();
    let mut peer = Peer::spawn(
        "idle_receiver",
        &[
            ("NAME", name.clone()),
            ("WAIT", wait.to_string()),
            ("COUNT", SMALL.to_string()),
        ],
    );
    peer.expect("READY", PEER_WAIT);
    for seq in 0..u64::from(SMALL) {
        tx.try_send(message(seq))
            .unwrap_or_else(|e| panic!("{wait}: try_send #{seq}: {e:?}"));
    }
    let extra = message(1000);
    // Many times, so that the periodic liveness check runs too.
    for i in 0..1000 {
        match tx.try_send(extra.clone()) {
            Err(SendError::Full(back)) => assert_eq!(back, extra, "{wait}: Full hands back"),
            other => panic!("{wait}: try_send #{i} on a full ring: {other:?}"),
        }
    }
    assert!(!tx.is_disconnected(), "{wait}: the receiver is alive");
    let timeout = Duration::from_millis(300);
    let t0 = Instant::now();
    match tx.send_timeout(extra.clone(), timeout) {
        Err(SendError::Timeout(back)) => assert_eq!(back, extra),
        other => panic!("{wait}: send_timeout on a full ring: {other:?}"),
    }
    let took = t0.elapsed();
    assert!(
        took >= timeout,
        "{wait}: send_timeout returned after {took:?}"
    );
    assert!(
        took < Duration::from_secs(5),
        "{wait}: send_timeout took {took:?}"
    );
    match tx.reserve_timeout(8, Duration::from_millis(50)) {
        Err(SendError::Timeout(())) => {}
        other => panic!("{wait}: reserve_timeout on a full ring: {other:?}"),
    }
    // A message too large for a slot is handed back too.
    let big = vec![7u8; MAX_MSG + 1];
    match tx.try_send(big.clone()) {
        Err(SendError::TooLarge { msg, len, max }) => {
            assert_eq!((msg, len, max), (big, MAX_MSG + 1, MAX_MSG))
        }
        other => panic!("{wait}: too large: {other:?}"),
    }
    // Now the receiver drains: exactly the first SMALL messages arrive.
    peer.say("drain");
    let (h, _) = parse_checksum(&format!("{} 0", peer.expect("DRAINED", PEER_WAIT)));
    assert_eq!(h, expected_checksum(u64::from(SMALL)), "{wait}: drained");
    // Space again: a reservation waits for it and is dropped uncommitted
    // (nothing sent), then a send.
    let slot = tx
        .reserve_timeout(8, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("{wait}: reserve_timeout after the drain: {e:?}"));
    assert_eq!(slot.len(), 8, "{wait}: the reserved slot");
    tx.send_timeout(message(SMALL.into()), Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("{wait}: send after the drain: {e:?}"));
    peer.say("exit");
    peer.wait_success(PEER_WAIT);
    drop(tx);
    assert_no_regions(&name);
}

per_wait!(full_ring_try_send_and_send_timeout {
    full_ring_try_send_and_send_timeout_busypoll: BusyPoll,
    full_ring_try_send_and_send_timeout_spinpark: SpinPark,
    full_ring_try_send_and_send_timeout_park: Park,
});

/// `try_recv` on an empty ring is `Empty` and `recv_timeout` is `Timeout`
/// after about the timeout, with a sender attached in another process that
/// sends nothing yet; then a message it sends arrives.
fn empty_ring_try_recv_and_recv_timeout(wait: WaitStrategy) {
    let name = unique(&format!("empty-{wait}"));
    let _cleanup = Cleanup(name.clone());
    let mut rx = LinkBuilder::new(&name)
        .capacity(8)
        .slot_size(MAX_MSG as u32)
        .wait(wait)
        .create_receiver()
        .unwrap();
    let mut peer = Peer::spawn(
        "idle_sender",
        &[("NAME", name.clone()), ("WAIT", wait.to_string())],
    );
    peer.expect("READY", PEER_WAIT);
    for i in 0..1000 {
        match rx.try_recv() {
            Err(RecvError::Empty) => {}
            other => panic!("{wait}: try_recv #{i} on an empty ring: {other:?}"),
        }
    }
    assert!(
        matches!(rx.try_peek(), Err(RecvError::Empty)),
        "{wait}: try_peek"
    );
    assert!(
        matches!(rx.try_read_batch(4), Err(RecvError::Empty)),
        "{wait}: try_read_batch"
    );
    assert_eq!(rx.len(), 0, "{wait}: len");
    assert!(rx.is_empty(), "{wait}: is_empty");
    let timeout = Duration::from_millis(300);
    let t0 = Instant::now();
    match rx.recv_timeout(timeout) {
        Err(RecvError::Timeout) => {}
        other => panic!("{wait}: recv_timeout on an empty ring: {other:?}"),
    }
    let took = t0.elapsed();
    assert!(
        took >= timeout,
        "{wait}: recv_timeout returned after {took:?}"
    );
    assert!(
        took < Duration::from_secs(5),
        "{wait}: recv_timeout took {took:?}"
    );
    match rx.peek_timeout(Duration::from_millis(50)) {
        Err(RecvError::Timeout) => {}
        other => panic!("{wait}: peek_timeout on an empty ring: {other:?}"),
    }
    // The sender sends two: they arrive, in order.
    peer.say("send 2");
    peer.expect("SENT", PEER_WAIT);
    assert_eq!(rx.len(), 2, "{wait}: len after two sends");
    let mut small = [0u8; 4];
    match rx.recv_into(&mut small) {
        Err(RecvError::BufferTooSmall { len, cap }) => {
            assert_eq!((len, cap), (msg_len(0), 4));
        }
        other => panic!("{wait}: recv_into a small buffer: {other:?}"),
    }
    let slot = rx.peek_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(slot.to_vec(), message(0), "{wait}: peek_timeout");
    // The slot goes out of scope unreleased: the message stays queued.
    assert_eq!(
        rx.recv_timeout(Duration::from_secs(10)).unwrap(),
        message(0)
    );
    assert_eq!(rx.try_recv().unwrap(), message(1));
    assert!(matches!(rx.try_recv(), Err(RecvError::Empty)));
    peer.say("exit");
    peer.wait_success(PEER_WAIT);
    match rx.recv_timeout(Duration::from_secs(10)) {
        Err(RecvError::Disconnected) => {}
        other => panic!("{wait}: after the sender exited: {other:?}"),
    }
    drop(rx);
    assert_no_regions(&name);
}

per_wait!(empty_ring_try_recv_and_recv_timeout {
    empty_ring_try_recv_and_recv_timeout_busypoll: BusyPoll,
    empty_ring_try_recv_and_recv_timeout_spinpark: SpinPark,
    empty_ring_try_recv_and_recv_timeout_park: Park,
});

// ---------------------------------------------------------------------------
// Disconnection
// ---------------------------------------------------------------------------

/// Receives with the blocking `recv_with` until `Disconnected`, checking
/// that the messages are exactly `first, first+1, ...`; returns the next
/// sequence number and when `Disconnected` came.
fn drain_until_disconnected(rx: &mut hwlink::Receiver, first: u64, what: &str) -> (u64, Instant) {
    let dog = Watchdog::new(
        Duration::from_secs(20),
        format!("{what}: recv() until Disconnected"),
    );
    let mut scratch = [0u8; MAX_MSG];
    let mut seq = first;
    loop {
        match rx.recv_with(|m| check(seq, &m.to_vec(), &mut scratch)) {
            Ok(Ok(())) => seq += 1,
            Ok(Err(e)) => panic!("{what}: {e}"),
            Err(RecvError::Disconnected) => break,
            Err(e) => panic!("{what}: recv after message #{seq}: {e:?}"),
        }
    }
    drop(dog);
    (seq, Instant::now())
}

/// Checks, in the region itself, that the receiver got every message the
/// dead producer published: the slot after the last one received does not
/// hold a published message, and `tail` is not ahead.
fn assert_nothing_left(name: &str, received: u64, what: &str) {
    let raw = RawRegion::open(name);
    let pos = received as u32;
    let tail = raw.ring32(ring::TAIL);
    let head = raw.ring32(ring::HEAD);
    assert_eq!(head, pos, "{what}: head");
    // The producer stores the slot's seq, then tail: a kill in between
    // leaves tail one behind a message the receiver did get.
    assert!(
        tail == pos || tail.wrapping_add(1) == pos,
        "{what}: tail is {tail} but {received} messages were received"
    );
    assert_ne!(
        raw.slot_seq(pos),
        pos.wrapping_add(1),
        "{what}: message #{received} was published but not received"
    );
}

/// A producer process is SIGKILLed mid-stream (fast: the ring is full;
/// idle: the receiver is asleep in `recv()`): the receiver gets every
/// published message, then `Disconnected` within a few seconds.
fn kill_producer(tag: &str, wait: WaitStrategy) {
    for mode in ["fast", "idle"] {
        let what = format!("{tag} {mode}");
        let name = unique(&format!("{tag}-{mode}"));
        let _cleanup = Cleanup(name.clone());
        let mut rx = link(&name, wait).create_receiver().unwrap();
        let mut peer = Peer::spawn(
            "produce_forever",
            &[
                ("NAME", name.clone()),
                ("WAIT", wait.to_string()),
                ("MODE", mode.to_string()),
                ("COUNT", "1000".to_string()),
            ],
        );
        peer.expect("READY", PEER_WAIT);
        let mut first = 0;
        let killer = if mode == "fast" {
            kill_later(peer.pid(), Duration::from_millis(300))
        } else {
            // Receive the first 1000, so that recv() then blocks.
            let mut scratch = [0u8; MAX_MSG];
            for seq in 0..1000 {
                let m = rx.recv_timeout(PEER_WAIT).unwrap();
                check(seq, &m, &mut scratch).unwrap();
            }
            peer.expect("IDLE", PEER_WAIT);
            first = 1000;
            kill_later(peer.pid(), Duration::from_millis(200))
        };
        let (received, at) = drain_until_disconnected(&mut rx, first, &what);
        let killed_at = killer.join().unwrap();
        let lag = at.saturating_duration_since(killed_at);
        eprintln!("{what}: {received} messages, Disconnected {lag:?} after the SIGKILL");
        assert!(
            lag < Duration::from_secs(10),
            "{what}: Disconnected came {lag:?} after the kill"
        );
        if mode == "fast" {
            assert!(
                received > 1000,
                "{what}: only {received} messages before the kill"
            );
        } else {
            assert_eq!(received, 1000, "{what}");
        }
        assert_nothing_left(&name, received, &what);
        // It stays disconnected.
        assert_eq!(rx.try_recv(), Err(RecvError::Disconnected), "{what}");
        assert_eq!(
            rx.recv_timeout(Duration::from_millis(10)),
            Err(RecvError::Disconnected),
            "{what}"
        );
        let status = peer.wait(PEER_WAIT);
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(libc::SIGKILL),
            "{what}: the producer died of something else: {status}"
        );
        drop(rx);
        assert_no_regions(&name);
    }
}

/// One `#[test]` per wait strategy of a body `fn(tag, wait)`:
/// `name(tag): Strategy`.
macro_rules! per_strategy {
    ($body:ident { $($name:ident($tag:literal): $wait:ident,)* }) => {$(
        #[test]
        fn $name() {
            $body($tag, WaitStrategy::$wait);
        }
    )*};
}

per_strategy!(kill_producer {
    disconnect_producer_killed_busypoll("kbp"): BusyPoll,
    disconnect_producer_killed_spinpark("ksp"): SpinPark,
    disconnect_producer_killed_park("kpk"): Park,
});

/// A consumer process is SIGKILLed while the parent's `send()` blocks on a
/// full ring: `send` returns `Disconnected` with the message.
fn disconnect_consumer_killed_while_send_blocks(wait: WaitStrategy) {
    let name = unique(&format!("kc-{wait}"));
    let _cleanup = Cleanup(name.clone());
    let mut tx = LinkBuilder::new(&name)
        .capacity(16)
        .slot_size(MAX_MSG as u32)
        .wait(wait)
        .create_sender()
        .unwrap();
    let mut peer = Peer::spawn(
        "idle_receiver",
        &[("NAME", name.clone()), ("WAIT", wait.to_string())],
    );
    peer.expect("READY", PEER_WAIT);
    let mut sent = 0;
    while tx.try_send(message(sent)).is_ok() {
        sent += 1;
    }
    assert_eq!(sent, 16, "{wait}: the ring holds its capacity");
    let killer = kill_later(peer.pid(), Duration::from_millis(300));
    let msg = message(sent);
    let dog = Watchdog::new(
        Duration::from_secs(20),
        format!("kc {wait}: blocked send()"),
    );
    let r = tx.send(msg.clone());
    let at = Instant::now();
    drop(dog);
    let killed_at = killer.join().unwrap();
    match r {
        Err(SendError::Disconnected(back)) => assert_eq!(back, msg, "{wait}"),
        other => panic!("{wait}: send to a killed consumer: {other:?}"),
    }
    let lag = at.saturating_duration_since(killed_at);
    eprintln!("kc {wait}: Disconnected {lag:?} after the SIGKILL");
    assert!(lag < Duration::from_secs(10), "{wait}: {lag:?}");
    assert!(matches!(tx.try_send(b"x"), Err(SendError::Disconnected(_))));
    assert!(matches!(
        tx.send_timeout(b"x", Duration::from_millis(10)),
        Err(SendError::Disconnected(_))
    ));
    assert!(tx.is_disconnected());
    peer.wait(PEER_WAIT);
    drop(tx);
    assert_no_regions(&name);
}

per_wait!(disconnect_consumer_killed_while_send_blocks {
    disconnect_consumer_killed_while_send_blocks_busypoll: BusyPoll,
    disconnect_consumer_killed_while_send_blocks_spinpark: SpinPark,
    disconnect_consumer_killed_while_send_blocks_park: Park,
});

/// The sender process closes its end cleanly after N messages (and stays
/// alive): the receiver, asleep in `recv()`, gets all N, then
/// `Disconnected`.
fn disconnect_sender_closes_cleanly(wait: WaitStrategy) {
    const N: u64 = 1000;
    let name = unique(&format!("cc-{wait}"));
    let _cleanup = Cleanup(name.clone());
    let mut rx = link(&name, wait).create_receiver().unwrap();
    let mut peer = Peer::spawn(
        "send_then_close",
        &[
            ("NAME", name.clone()),
            ("WAIT", wait.to_string()),
            ("COUNT", N.to_string()),
            ("PAUSE_MS", "300".to_string()),
        ],
    );
    let (received, _) = drain_until_disconnected(&mut rx, 0, &format!("cc {wait}"));
    assert_eq!(received, N, "{wait}");
    peer.expect("CLOSED", PEER_WAIT);
    assert!(
        peer.try_wait().is_none(),
        "{wait}: the sender process must still run: the close alone disconnects"
    );
    assert_eq!(rx.try_recv(), Err(RecvError::Disconnected));
    assert_eq!(
        rx.recv_timeout(Duration::from_secs(1)),
        Err(RecvError::Disconnected)
    );
    peer.say("exit");
    peer.wait_success(PEER_WAIT);
    drop(rx);
    assert_no_regions(&name);
}

per_wait!(disconnect_sender_closes_cleanly {
    disconnect_sender_closes_cleanly_busypoll: BusyPoll,
    disconnect_sender_closes_cleanly_spinpark: SpinPark,
    disconnect_sender_closes_cleanly_park: Park,
});

/// The receiver process closes its end (and stays alive): a `send()`
/// blocked on a full ring returns `Disconnected`, and so does every send
/// after, handing the message back.
fn disconnect_receiver_drops(wait: WaitStrategy) {
    // (a) while send() blocks on a full ring
    let name = unique(&format!("rd-{wait}"));
    let _cleanup = Cleanup(name.clone());
    let mut tx = LinkBuilder::new(&name)
        .capacity(16)
        .slot_size(MAX_MSG as u32)
        .wait(wait)
        .create_sender()
        .unwrap();
    let mut peer = Peer::spawn(
        "idle_receiver",
        &[
            ("NAME", name.clone()),
            ("WAIT", wait.to_string()),
            ("DROP_AFTER_MS", "400".to_string()),
        ],
    );
    peer.expect("READY", PEER_WAIT);
    for seq in 0..16 {
        tx.try_send(message(seq)).unwrap();
    }
    let msg = message(16);
    let dog = Watchdog::new(
        Duration::from_secs(20),
        format!("rd {wait}: blocked send()"),
    );
    match tx.send(msg.clone()) {
        Err(SendError::Disconnected(back)) => assert_eq!(back, msg),
        other => panic!("{wait}: blocked send when the receiver drops: {other:?}"),
    }
    drop(dog);
    peer.expect("DROPPED", PEER_WAIT);
    assert!(peer.try_wait().is_none(), "{wait}: the receiver still runs");
    match tx.try_send(msg.clone()) {
        Err(SendError::Disconnected(back)) => assert_eq!(back, msg),
        other => panic!("{wait}: try_send after the drop: {other:?}"),
    }
    peer.say("exit");
    peer.wait_success(PEER_WAIT);
    drop(tx);
    assert_no_regions(&name);

    // (b) the receiver reads some, drops; then sends fail
    let name = unique(&format!("rd2-{wait}"));
    let _cleanup = Cleanup(name.clone());
    let mut tx = link(&name, wait).create_sender().unwrap();
    let mut peer = Peer::spawn(
        "recv_then_close",
        &[
            ("NAME", name.clone()),
            ("WAIT", wait.to_string()),
            ("COUNT", "100".to_string()),
        ],
    );
    for seq in 0..100 {
        tx.send(message(seq)).unwrap();
    }
    peer.expect("DROPPED", PEER_WAIT);
    let msg = message(100);
    let dog = Watchdog::new(Duration::from_secs(20), format!("rd2 {wait}: send()"));
    match tx.send(msg.clone()) {
        Err(SendError::Disconnected(back)) => assert_eq!(back, msg),
        other => panic!("{wait}: send after the receiver dropped: {other:?}"),
    }
    drop(dog);
    match tx.send_timeout(msg.clone(), Duration::from_millis(100)) {
        Err(SendError::Disconnected(back)) => assert_eq!(back, msg),
        other => panic!("{wait}: send_timeout after the receiver dropped: {other:?}"),
    }
    assert!(matches!(tx.reserve(8), Err(SendError::Disconnected(()))));
    assert!(matches!(
        tx.write_batch(8),
        Err(SendError::Disconnected(()))
    ));
    peer.say("exit");
    peer.wait_success(PEER_WAIT);
    drop(tx);
    assert_no_regions(&name);
}

per_wait!(disconnect_receiver_drops {
    disconnect_receiver_drops_busypoll: BusyPoll,
    disconnect_receiver_drops_spinpark: SpinPark,
    disconnect_receiver_drops_park: Park,
});

// ---------------------------------------------------------------------------
// Zero-copy and batch APIs
// ---------------------------------------------------------------------------

/// Capacity of the zero-copy link: small, so batches wrap around.
const ZC_CAPACITY: u32 = 8;

impl Chan for Peer {
    fn tell(&mut self, word: &str) {
        self.say(word);
    }
    fn hear(&mut self, word: &str) {
        self.expect(word, PEER_WAIT);
    }
}

/// The zero-copy script between two processes (`common/zc.rs`): the
/// writer uses reserve/commit, commit_len, a dropped reservation and
/// write_batch; the reader peek/release, recv and read_batch. The parent
/// runs the side `parent_writes` says, a child the other, with the same
/// code and checks.
fn zero_copy(tag: &str, parent_writes: bool) {
    let name = unique(tag);
    let _cleanup = Cleanup(name.clone());
    let b = LinkBuilder::new(&name)
        .capacity(ZC_CAPACITY)
        .slot_size(MAX_MSG as u32);
    let child_end = if parent_writes { "read" } else { "write" };
    let dog = Watchdog::new(Duration::from_secs(60), format!("{tag}: zero-copy script"));
    let mut peer = if parent_writes {
        let tx = b.create_sender().unwrap();
        let mut peer = Peer::spawn("zc", &[("NAME", name.clone()), ("END", child_end.into())]);
        writer_side(tx, &mut peer);
        peer
    } else {
        let rx = b.create_receiver().unwrap();
        let mut peer = Peer::spawn("zc", &[("NAME", name.clone()), ("END", child_end.into())]);
        reader_side(rx, &mut peer);
        peer
    };
    peer.wait_success(PEER_WAIT);
    drop(dog);
    assert_no_regions(&name);
}

#[test]
fn zero_copy_parent_writes_child_reads() {
    zero_copy("zcw", true);
}

#[test]
fn zero_copy_child_writes_parent_reads() {
    zero_copy("zcr", false);
}

// ---------------------------------------------------------------------------
// Cleanup
// ---------------------------------------------------------------------------

/// A child that created a link (either end) and exits cleanly leaves no
/// region file behind, even while the parent still has the other end open.
#[test]
fn creator_exit_removes_region() {
    for end in ["sender", "receiver"] {
        let name = unique(&format!("cl-{end}"));
        let _cleanup = Cleanup(name.clone());
        let mut peer = Peer::spawn(
            "create_and_wait",
            &[
                ("NAME", name.clone()),
                ("END", end.to_string()),
                ("COUNT", "3".to_string()),
            ],
        );
        let path = std::path::PathBuf::from(peer.expect("READY", PEER_WAIT));
        assert!(path.exists(), "{end}: {} does not exist", path.display());
        let status = region(&name).expect("listed");
        assert_eq!(status.creator_pid, peer.pid());
        assert!(status.creator_alive && !status.is_stale());
        if end == "sender" {
            let mut rx = LinkBuilder::new(&name).open_receiver().unwrap();
            for seq in 0..3 {
                assert_eq!(rx.recv_timeout(PEER_WAIT).unwrap(), message(seq));
            }
            peer.say("exit");
            peer.wait_success(PEER_WAIT);
            assert!(!path.exists(), "{end}: {} is left behind", path.display());
            assert_no_regions(&name);
            // The mapping stays valid; the sender has closed.
            assert_eq!(
                rx.recv_timeout(Duration::from_secs(10)),
                Err(RecvError::Disconnected)
            );
        } else {
            let mut tx = LinkBuilder::new(&name).open_sender().unwrap();
            tx.send(b"hello").unwrap();
            peer.say("exit");
            peer.wait_success(PEER_WAIT);
            assert!(!path.exists(), "{end}: {} is left behind", path.display());
            assert_no_regions(&name);
            assert!(matches!(
                tx.send_timeout(b"x", Duration::from_secs(10)),
                Err(SendError::Disconnected(_))
            ));
        }
        assert_no_regions(&name);
    }
}

// ---------------------------------------------------------------------------
// More: index wrap-around, endpoints, wake-ups, message sizes
// ---------------------------------------------------------------------------

/// The free-running u32 indices wrap around 2^32 in the middle of a
/// stream between two processes (the region is forged with both indices
/// just below the wrap: a creator starts them at 0).
#[test]
fn stream_across_u32_index_wrap() {
    let name = unique("wrap");
    let _cleanup = Cleanup(name.clone());
    let count: u64 = 1_000_000;
    let start = u32::MAX - 300_000;
    let path = forge_link_region(&name, CAP, SLOT, start);
    for wait in [WaitStrategy::BusyPoll, WaitStrategy::Park] {
        let sub = format!("{name}-{wait}");
        if wait != WaitStrategy::BusyPoll {
            // A second region for the second run.
            forge_link_region(&sub, CAP, SLOT, u32::MAX - 100);
        }
        let link_name = if wait == WaitStrategy::BusyPoll {
            &name
        } else {
            &sub
        };
        let count = if wait == WaitStrategy::BusyPoll {
            count
        } else {
            100_000
        };
        let mut tx = LinkBuilder::new(link_name)
            .wait(wait)
            .open_sender()
            .unwrap();
        let mut peer = Peer::spawn(
            "consume",
            &[
                ("NAME", link_name.clone()),
                ("COUNT", count.to_string()),
                ("WAIT", wait.to_string()),
            ],
        );
        let dog = Watchdog::new(Duration::from_secs(120), format!("wrap {wait}"));
        let mut buf = [0u8; MAX_MSG];
        for seq in 0..count {
            let len = fill(seq, &mut buf);
            if let Err(e) = tx.send(&buf[..len]) {
                panic!("wrap {wait}: sending #{seq}: {e:?}");
            }
        }
        drop(tx);
        let (h, n) = parse_checksum(&peer.expect("CHECKSUM", PEER_WAIT));
        drop(dog);
        assert_eq!((h, n), (expected_checksum(count), count), "wrap {wait}");
        peer.wait_success(PEER_WAIT);
        let raw = RawRegion::open(link_name);
        let first = if wait == WaitStrategy::BusyPoll {
            start
        } else {
            u32::MAX - 100
        };
        let end = first.wrapping_add(count as u32);
        assert!(end < first, "the indices wrapped");
        assert_eq!(raw.ring32(ring::TAIL), end, "wrap {wait}: tail");
        assert_eq!(raw.ring32(ring::HEAD), end, "wrap {wait}: head");
        drop(raw);
        // Nobody created the region through hwlink: remove it by hand.
        hwlink::admin::remove(link_name).unwrap();
    }
    assert!(!path.exists());
    assert_no_regions(&name);
}

/// Each end of a link belongs to one process: opening an end that a live
/// process holds is `EndpointBusy`, one whose process died is
/// `EndpointUsed`.
#[test]
fn endpoint_busy_then_used() {
    let name = unique("ep");
    let _cleanup = Cleanup(name.clone());
    let tx = LinkBuilder::new(&name).create_sender().unwrap();
    match LinkBuilder::new(&name).open_sender() {
        Err(hwlink::OpenError::EndpointBusy { side, pid, .. }) => {
            assert_eq!((side, pid), (hwlink::Side::Sender, std::process::id()))
        }
        other => panic!("second sender: {other:?}"),
    }
    let mut peer = Peer::spawn("idle_receiver", &[("NAME", name.clone())]);
    peer.expect("READY", PEER_WAIT);
    let child = peer.pid();
    match LinkBuilder::new(&name).open_receiver() {
        Err(e @ hwlink::OpenError::EndpointBusy { .. }) => {
            let hwlink::OpenError::EndpointBusy { side, pid, .. } = &e else {
                unreachable!()
            };
            assert_eq!((*side, *pid), (hwlink::Side::Receiver, child));
            assert!(e.to_string().contains(&child.to_string()), "{e}");
        }
        other => panic!("receiver held by a live child: {other:?}"),
    }
    let status = region(&name).unwrap();
    assert_eq!(status.rings[0].receiver.state, "attached");
    assert_eq!(status.rings[0].receiver.pid, child);
    assert!(status.rings[0].receiver.alive);
    peer.kill();
    match LinkBuilder::new(&name).open_receiver() {
        Err(e @ hwlink::OpenError::EndpointUsed { .. }) => {
            assert!(e.to_string().contains("hwlink rm"), "{e}")
        }
        other => panic!("receiver of a dead child: {other:?}"),
    }
    let status = region(&name).unwrap();
    assert!(!status.rings[0].receiver.alive);
    drop(tx);
    assert_no_regions(&name);
}

/// Round trips between two parking ends: every message wakes a sleeping
/// peer through the doorbell. A lost wake-up would stall a round trip
/// until the 50 ms sleep slice ends; allow a few such stalls (a loaded
/// machine), not a pattern.
#[test]
fn park_round_trips_lose_no_wakeups() {
    for peer_wait in [WaitStrategy::Park, WaitStrategy::BusyPoll] {
        park_round_trips(peer_wait);
    }
}

/// Round trips from a parking end to a peer echoing with `peer_wait`.
fn park_round_trips(peer_wait: WaitStrategy) {
    const N: usize = 2000;
    let name = unique(&format!("pp-{peer_wait}"));
    let _cleanup = Cleanup(name.clone());
    let b = |dir: &str| {
        LinkBuilder::new(format!("{name}-{dir}"))
            .capacity(16)
            .slot_size(64)
            .wait(WaitStrategy::Park)
    };
    let mut tx = b("a").create_sender().unwrap();
    let mut rx = b("b").create_receiver().unwrap();
    let mut peer = Peer::spawn(
        "echo",
        &[("NAME", name.clone()), ("WAIT", peer_wait.to_string())],
    );
    let dog = Watchdog::new(Duration::from_secs(120), "park round trips");
    let mut slow = 0;
    let mut times = Vec::with_capacity(N);
    for i in 0..N as u64 {
        let t = Instant::now();
        tx.send(i.to_le_bytes()).unwrap();
        let back = rx.recv().unwrap();
        let rtt = t.elapsed();
        assert_eq!(back, i.to_le_bytes());
        if rtt >= Duration::from_millis(45) {
            slow += 1;
        }
        times.push(rtt);
    }
    drop(tx);
    assert_eq!(peer.expect("DONE", PEER_WAIT), N.to_string());
    drop(dog);
    peer.wait_success(PEER_WAIT);
    times.sort();
    eprintln!(
        "park <-> {peer_wait} round trips: p50 {:?}, p99 {:?}, max {:?}, {slow} of {N} took >= 45 ms",
        times[N / 2],
        times[N * 99 / 100],
        times[N - 1]
    );
    assert!(
        slow <= N / 20,
        "{peer_wait}: {slow} of {N} round trips stalled for a sleep slice"
    );
    drop(rx);
    assert_no_regions(&name);
}

/// Every message length from 0 to the slot size, through both copy paths
/// (send/recv and reserve/recv_into), echoed back by another process.
#[test]
fn every_message_length() {
    let name = unique("len");
    let _cleanup = Cleanup(name.clone());
    let b = |dir: &str| {
        LinkBuilder::new(format!("{name}-{dir}"))
            .capacity(64)
            .wait(WaitStrategy::SpinPark)
    };
    let mut tx = b("a").create_sender().unwrap();
    let mut rx = b("b").create_receiver().unwrap();
    let max = tx.max_message();
    assert_eq!(max, hwlink::DEFAULT_SLOT_SIZE as usize);
    let mut peer = Peer::spawn("echo", &[("NAME", name.clone())]);
    let dog = Watchdog::new(Duration::from_secs(60), "every message length");
    let pattern = |len: usize, salt: usize| -> Vec<u8> {
        (0..len).map(|i| (i * 31 + len * 7 + salt) as u8).collect()
    };
    let mut buf = vec![0u8; max];
    for len in 0..=max {
        let m = pattern(len, 0);
        tx.send(&m[..]).unwrap();
        assert_eq!(rx.recv().unwrap(), m, "length {len} via send/recv");
        let m = pattern(len, 1);
        let mut slot = tx.reserve(len).unwrap();
        assert_eq!(slot.copy_from(&m), len);
        slot.commit();
        let n = rx.recv_into(&mut buf).unwrap();
        assert_eq!(&buf[..n], &m[..], "length {len} via reserve/recv_into");
    }
    drop(tx);
    assert_eq!(peer.expect("DONE", PEER_WAIT), (2 * (max + 1)).to_string());
    drop(dog);
    peer.wait_success(PEER_WAIT);
    drop(rx);
    assert_no_regions(&name);
}

/// A stream in batches: the child publishes with `write_batch` (one `tail`
/// store per batch, after the slots' headers), the parent receives with
/// `read_batch`, which counts through `tail` while it may lag the headers;
/// 2,000,000 messages.
fn batch_stream(tag: &str, wait: WaitStrategy) {
    let count: u64 = 2_000_000;
    let name = unique(tag);
    let _cleanup = Cleanup(name.clone());
    let mut rx = link(&name, wait).create_receiver().unwrap();
    let mut peer = Peer::spawn(
        "produce_batches",
        &[
            ("NAME", name.clone()),
            ("COUNT", count.to_string()),
            ("BATCH", "32".to_string()),
            ("WAIT", wait.to_string()),
        ],
    );
    let dog = Watchdog::new(Duration::from_secs(120), format!("{tag}: read_batch"));
    let t0 = Instant::now();
    let mut scratch = [0u8; MAX_MSG];
    let mut h = CHECKSUM_INIT;
    let mut seq = 0u64;
    let mut batches = 0u64;
    while seq < count {
        let batch = match rx.read_batch(64) {
            Ok(b) => b,
            Err(e) => panic!("{tag}: read_batch at message #{seq}: {e:?} ({e})"),
        };
        assert!(!batch.is_empty() && batch.len() <= 64);
        for m in batch.iter() {
            let m = m.unwrap_or_else(|c| panic!("{tag}: message #{seq}: {c}"));
            let m = m.to_vec();
            check(seq, &m, &mut scratch).unwrap_or_else(|e| panic!("{tag}: {e}"));
            h = checksum(h, &m);
            seq += 1;
        }
        batch.release();
        batches += 1;
    }
    let elapsed = t0.elapsed();
    assert_eq!(
        rx.recv_timeout(Duration::from_secs(30)),
        Err(RecvError::Disconnected)
    );
    drop(dog);
    let (their_h, their_count) = parse_checksum(&peer.expect("CHECKSUM", PEER_WAIT));
    assert_eq!((their_h, their_count), (h, count));
    peer.wait_success(PEER_WAIT);
    eprintln!("{tag}: {count} messages in {batches} batches ({wait}) in {elapsed:?}");
    drop(rx);
    assert_no_regions(&name);
}

per_strategy!(batch_stream {
    batch_stream_busypoll("bbp"): BusyPoll,
    batch_stream_spinpark("bsp"): SpinPark,
});

/// A producer creates a link, sends three messages and is SIGKILLed before
/// any receiver attaches. Its region is left behind (stale); a receiver
/// that opens it later still gets the three messages, then
/// `Disconnected`. The stale region is then removed by name.
#[test]
fn receiver_attaches_after_the_producer_died() {
    let name = unique("late");
    let _cleanup = Cleanup(name.clone());
    let mut peer = Peer::spawn(
        "create_and_wait",
        &[
            ("NAME", name.clone()),
            ("END", "sender".to_string()),
            ("COUNT", "3".to_string()),
        ],
    );
    peer.expect("READY", PEER_WAIT);
    peer.kill();
    let status = region(&name).expect("a killed creator leaves its region");
    assert!(status.is_stale(), "{status:?}");
    assert_eq!(status.rings[0].occupancy, Ok(3));
    let mut rx = LinkBuilder::new(&name).open_receiver().unwrap();
    let dog = Watchdog::new(Duration::from_secs(20), "late receiver");
    for seq in 0..3 {
        assert_eq!(rx.recv().unwrap(), message(seq));
    }
    assert_eq!(rx.recv(), Err(RecvError::Disconnected));
    drop(dog);
    // The receiver is attached and alive now: no longer stale.
    assert!(!region(&name).unwrap().is_stale());
    drop(rx);
    hwlink::admin::remove(&name).unwrap();
    assert_no_regions(&name);
}

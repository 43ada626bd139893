//! Topics between real processes: one publisher and four subscriber
//! processes under `Block` (ten million checked messages each), `Overwrite`
//! with a deliberately slow subscriber (exact lag accounting, nothing
//! torn), a late joiner's history, SIGKILLed subscribers and publishers, a
//! hostile subscriber scribbling over its cursor and the topic header, and
//! a subscriber's descriptor in `poll` and in a `Select`.
//!
//! The test binary re-executes itself as each peer (`peer_entry`).

use hwlink::{
    admin, Backend, Backpressure, LinkBuilder, Outcome, Publisher, RecvError, Select, SendError,
    Subscriber, Topic, TopicBuilder, WaitStrategy,
};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

mod common {
    #[allow(dead_code)]
    pub mod child;
    pub mod drive;
    #[allow(dead_code)]
    pub mod msg;
    pub mod peer;
    pub mod peer_pid;
    pub mod raw_map;
}
use common::child::{Ctx, PEER_WAIT};
use common::msg::{check, fill, MAX_MSG};
use common::peer::Peer;

/// Whether the topic's region exists.
fn listed(name: &str) -> bool {
    admin::list()
        .unwrap()
        .iter()
        .any(|r| r.name == format!("topic.{name}"))
}

/// A name unique to this test process.
fn unique(tag: &str) -> String {
    format!("t{}-{tag}", std::process::id())
}

/// Removes the topic's region however the test ends.
struct Cleanup(String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = admin::remove(&format!("topic.{}", self.0));
    }
}

fn builder(name: &str, ctx_or_env: &dyn Fn(&str) -> Option<String>) -> TopicBuilder {
    let mut b = TopicBuilder::new(name).backend(Backend::Auto);
    if let Some(c) = ctx_or_env("CAP") {
        b = b.capacity(c.parse().unwrap());
    }
    if let Some(m) = ctx_or_env("MODE") {
        b = b.backpressure(if m == "overwrite" {
            Backpressure::Overwrite
        } else {
            Backpressure::Block
        });
    }
    if let Some(h) = ctx_or_env("HISTORY") {
        b = b.history(h.parse().unwrap());
    }
    if let Some(r) = ctx_or_env("REPLAY") {
        b = b.replay(r.parse().unwrap());
    }
    if let Some(w) = ctx_or_env("WAIT") {
        b = b.wait(w.parse().unwrap());
    }
    b
}

fn peer_builder(ctx: &Ctx) -> TopicBuilder {
    builder(&ctx.name(), &|k| {
        let v = ctx.var_or(k, "");
        (!v.is_empty()).then_some(v)
    })
}

/// Messages of the big Block test (HWLINK_TOPIC_MESSAGES overrides).
fn big_count() -> u64 {
    std::env::var("HWLINK_TOPIC_MESSAGES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_000_000)
}

// ---------------------------------------------------------------------------
// Peers
// ---------------------------------------------------------------------------

#[test]
fn peer_entry() {
    common::child::peer_entry_with(roles);
}

fn roles(role: &str, ctx: &Ctx) -> bool {
    match role {
        "sub-all" => sub_all(ctx),
        "sub-overwrite" => sub_overwrite(ctx),
        "sub-history" => sub_history(ctx),
        "sub-idle" => {
            let _s = peer_builder(ctx).subscribe().unwrap();
            ctx.report("READY");
            std::thread::sleep(PEER_WAIT);
        }
        "publisher" => {
            let mut p = peer_builder(ctx).publish().unwrap();
            if ctx.var_or("ON_GO", "0") == "1" {
                ctx.report("READY");
                ctx.command("go", PEER_WAIT);
            }
            let n = ctx.u64("COUNT");
            let mut buf = [0u8; MAX_MSG];
            for seq in 0..n {
                let len = fill(seq, &mut buf);
                p.send(&buf[..len]).unwrap();
            }
            ctx.report("SENT");
            std::thread::sleep(PEER_WAIT);
        }
        "hostile" => hostile(ctx),
        "pub-typed" => {
            let mut p = peer_builder(ctx).publish().unwrap();
            ctx.report("READY");
            ctx.command("go", PEER_WAIT);
            for i in 0..1000u64 {
                if i % 2 == 0 {
                    p.send_value(&tick(i)).unwrap();
                } else {
                    let mut loan = p.loan_value::<Tick>().unwrap();
                    loan.write(&tick(i));
                    loan.write_field_at(core::mem::offset_of!(Tick, qty), &(i as u32));
                    loan.publish();
                }
            }
            // One of another size: the subscriber must say WrongSize.
            p.send(b"short").unwrap();
            p.send_value(&tick(1000)).unwrap();
            ctx.report("SENT");
            std::thread::sleep(PEER_WAIT);
        }
        _ => return false,
    }
    true
}

/// Receives every message until Disconnected, checking each one's
/// sequence, length and bytes; reports the count and a checksum.
fn sub_all(ctx: &Ctx) {
    let mut s = peer_builder(ctx).subscribe().unwrap();
    ctx.report("READY");
    let mut buf = [0u8; MAX_MSG];
    let mut scratch = [0u8; MAX_MSG];
    let (mut n, mut sum) = (0u64, 0u64);
    let zero_copy = ctx.var_or("ZC", "0") == "1";
    loop {
        let r = if zero_copy {
            s.read().map(|sample| sample.bytes().copy_to(&mut buf))
        } else {
            s.recv_into(&mut buf)
        };
        match r {
            Ok(len) => {
                if let Err(e) = check(n, &buf[..len], &mut scratch) {
                    panic!("subscriber: {e}");
                }
                sum = sum.wrapping_mul(31).wrapping_add(buf[len - 1] as u64);
                n += 1;
            }
            Err(RecvError::Disconnected) => break,
            Err(e) => panic!("subscriber: message {n}: {e}"),
        }
    }
    ctx.report(&format!("DONE {n} {sum}"));
}

/// Overwrite: fast ones read at once, the slow one sleeps between reads;
/// every message read is checked whole against the position it came from.
fn sub_overwrite(ctx: &Ctx) {
    let mut s = peer_builder(ctx).subscribe().unwrap();
    let slow = ctx.var_or("SLOW", "0") == "1";
    ctx.report("READY");
    let mut buf = [0u8; MAX_MSG];
    let mut scratch = [0u8; MAX_MSG];
    let (mut got, mut lagged, mut torn_seen) = (0u64, 0u64, 0u64);
    let mut k = 0u64;
    loop {
        if slow && k % 64 == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
        k += 1;
        let pos = s.position();
        // The slow one reads in place half the time: a guard it holds
        // while the publisher laps it must say so.
        let r = if slow && k % 2 == 0 {
            match s.read() {
                Ok(sample) => {
                    let len = sample.bytes().copy_to(&mut buf);
                    if slow {
                        std::hint::spin_loop();
                    }
                    if sample.intact() {
                        Ok(len)
                    } else {
                        torn_seen += 1;
                        continue;
                    }
                }
                Err(e) => Err(e),
            }
        } else {
            s.recv_into(&mut buf)
        };
        match r {
            Ok(len) => {
                if let Err(e) = check(pos, &buf[..len], &mut scratch) {
                    panic!("subscriber (slow {slow}): a torn or wrong message: {e}");
                }
                got += 1;
            }
            Err(RecvError::Lagged(n)) => lagged += n,
            Err(RecvError::Disconnected) => break,
            Err(e @ RecvError::Corrupt(_)) if ctx.var_or("HOSTILE", "0") == "1" => {
                // A hostile peer wrote the header: a clear error, then stop.
                ctx.report(&format!("ERROR {e}"));
                return;
            }
            Err(e) => panic!("subscriber: {e}"),
        }
    }
    assert_eq!(s.lagged(), lagged);
    ctx.report(&format!("DONE {got} {lagged} {torn_seen}"));
}

/// A late joiner: reports the positions of what it receives.
fn sub_history(ctx: &Ctx) {
    let mut s = peer_builder(ctx).subscribe().unwrap();
    let first = s.position();
    let mut seqs = Vec::new();
    while let Ok(m) = s.try_recv() {
        seqs.push(u64::from_le_bytes(m[..8].try_into().unwrap()));
    }
    ctx.report(&format!(
        "HISTORY {first} {}",
        seqs.iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>()
            .join(",")
    ));
    ctx.command("more", PEER_WAIT);
    let m = s.recv_timeout(PEER_WAIT).unwrap();
    let live = u64::from_le_bytes(m[..8].try_into().unwrap());
    let end = s.recv_timeout(PEER_WAIT);
    ctx.report(&format!(
        "LIVE {live} {}",
        end == Err(RecvError::Disconnected)
    ));
}

/// Subscribes, then writes garbage into its own entry and the topic's
/// header words for a while, as a broken or hostile process would.
fn hostile(ctx: &Ctx) {
    let s = peer_builder(ctx).subscribe().unwrap();
    let status = admin::list()
        .unwrap()
        .into_iter()
        .find(|r| r.name == format!("topic.{}", ctx.name()))
        .expect("the topic's region");
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&status.path)
        .unwrap();
    // A test scribbling over shared memory on purpose, through volatile
    // accesses only.
    let map = common::raw_map::RawMap::new(&file).unwrap();
    let word_at = |at: usize| {
        assert!(at + 8 <= map.len() && at % 4 == 0);
        map.as_ptr().wrapping_add(at).cast_mut()
    };
    let base = 4096usize; // the topic is the region's first object
    let me = std::process::id();
    let entries = 4096 / 128;
    let my_entry = (0..entries)
        .find(|e| {
            let at = base + 384 + e * 128 + 12;
            // SAFETY: in bounds of the mapping (checked), 4-aligned.
            let pid = unsafe { word_at(at).cast::<u32>().read_volatile() };
            pid == me
        })
        .expect("my entry");
    ctx.report("READY");
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let t0 = Instant::now();
    while t0.elapsed() < ctx.millis("FOR") {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let poke = |at: usize, v: u64| {
            assert_eq!(at % 8, 0);
            // SAFETY: in bounds of the mapping (checked), 8-aligned.
            unsafe { word_at(at).cast::<u64>().write_volatile(v) };
        };
        // Its own cursor, then the header: tail, reclaim, users/sleepy,
        // the removed/pad word, the sleeping and attached bitmaps.
        poke(base + 384 + my_entry * 128, x);
        let fields = [64usize, 72, 192, 256, 264, 288, 296];
        let at = base + fields[(x % fields.len() as u64) as usize];
        poke(at, x.rotate_left(17));
        std::thread::sleep(Duration::from_micros(50));
    }
    ctx.report("DONE");
    drop(s);
    std::thread::sleep(PEER_WAIT);
}

/// A 64-byte market tick, sent as is (no serialization).
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    zerocopy::FromBytes,
    zerocopy::IntoBytes,
    zerocopy::Immutable,
    zerocopy::KnownLayout,
)]
#[repr(C)]
struct Tick {
    seq: u64,
    instrument: u64,
    price: i64,
    qty: u32,
    side: u32,
    venue: [u8; 32],
}

fn tick(i: u64) -> Tick {
    Tick {
        seq: i,
        instrument: i * 7,
        price: -(i as i64),
        qty: i as u32,
        side: (i % 2) as u32,
        venue: [i as u8; 32],
    }
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

fn env(name: &str, extra: &[(&str, &str)]) -> Vec<(&'static str, String)> {
    let mut v = vec![("NAME", name.to_string())];
    for (k, val) in extra {
        let k: &'static str = Box::leak(k.to_string().into_boxed_str());
        v.push((k, val.to_string()));
    }
    v
}

/// One publisher, four subscriber processes, ten million messages of 8 to
/// 200 bytes under Block: each subscriber gets every message once, in
/// order, with its bytes (two read by copy, two in place).
#[test]
fn block_four_subscribers_get_every_message_in_order() {
    let name = unique("blk");
    let _c = Cleanup(name.clone());
    let n = big_count();
    let mut p = TopicBuilder::new(&name)
        .capacity(4096)
        .backpressure(Backpressure::Block)
        .publish()
        .unwrap();
    let mut subs: Vec<Peer> = (0..4)
        .map(|i| {
            let zc = if i % 2 == 0 { "0" } else { "1" };
            Peer::spawn("sub-all", &env(&name, &[("ZC", zc)]))
        })
        .collect();
    for s in &mut subs {
        s.expect("READY", PEER_WAIT);
    }
    assert_eq!(p.subscribers(), 4);
    let t0 = Instant::now();
    let mut buf = [0u8; MAX_MSG];
    let mut sum = 0u64;
    for seq in 0..n {
        let len = fill(seq, &mut buf);
        sum = sum.wrapping_mul(31).wrapping_add(buf[len - 1] as u64);
        p.send(&buf[..len]).unwrap();
    }
    drop(p);
    for s in &mut subs {
        let done = s.expect("DONE", Duration::from_secs(600));
        assert_eq!(done, format!("{n} {sum}"));
        s.wait_success(PEER_WAIT);
    }
    let secs = t0.elapsed().as_secs_f64();
    println!(
        "block: {n} messages to 4 subscriber processes in {secs:.1} s ({:.2} M msg/s published)",
        n as f64 / secs / 1e6
    );
}

/// Overwrite with one slow subscriber: the fast ones lose nothing, the
/// slow one's received plus lagged is everything, nothing read is torn.
/// The publisher paces itself on the fast subscribers' lag (read from the
/// topic, as `hwlink ls` does), so that only the slow one falls behind
/// even on a loaded machine.
#[test]
fn overwrite_slow_subscriber_accounts_for_every_message() {
    let name = unique("ovw");
    let _c = Cleanup(name.clone());
    let n: u64 = 1_000_000;
    let cap = 256u32;
    let mut p = TopicBuilder::new(&name)
        .capacity(cap)
        .backpressure(Backpressure::Overwrite)
        .publish()
        .unwrap();
    let mut fast: Vec<Peer> = (0..2)
        .map(|_| Peer::spawn("sub-overwrite", &env(&name, &[])))
        .collect();
    for f in &mut fast {
        f.expect("READY", PEER_WAIT);
    }
    let fast_pids: Vec<u32> = fast.iter().map(|f| f.pid()).collect();
    let mut slow = Peer::spawn("sub-overwrite", &env(&name, &[("SLOW", "1")]));
    slow.expect("READY", PEER_WAIT);
    let mut buf = [0u8; MAX_MSG];
    for seq in 0..n {
        if seq % 64 == 0 {
            // Wait until both fast subscribers are within half a ring.
            loop {
                let info = p.info();
                let behind = info
                    .subscribers
                    .iter()
                    .filter(|s| fast_pids.contains(&s.pid))
                    .map(|s| s.lag)
                    .max()
                    .unwrap_or(0);
                if behind < u64::from(cap / 2) {
                    break;
                }
                std::thread::yield_now();
            }
        }
        let len = fill(seq, &mut buf);
        p.send(&buf[..len]).unwrap();
    }
    drop(p);
    for f in &mut fast {
        let done = f.expect("DONE", PEER_WAIT);
        let v: Vec<u64> = done.split(' ').map(|x| x.parse().unwrap()).collect();
        assert_eq!((v[0], v[1]), (n, 0), "a fast subscriber lost messages");
        f.wait_success(PEER_WAIT);
    }
    let done = slow.expect("DONE", Duration::from_secs(300));
    let v: Vec<u64> = done.split(' ').map(|x| x.parse().unwrap()).collect();
    assert_eq!(
        v[0] + v[1],
        n,
        "received {} + lagged {} != published",
        v[0],
        v[1]
    );
    assert!(
        v[1] > 0,
        "the slow subscriber never lagged: the test proves nothing"
    );
    println!(
        "overwrite: slow subscriber received {}, lagged {} (of which {} found overwritten \
         while read in place), fast ones every message",
        v[0], v[1], v[2]
    );
    slow.wait_success(PEER_WAIT);
}

/// A late joiner asking for 10 of a 16-message history gets exactly the
/// last 10, then live messages, then Disconnected.
#[test]
fn late_joiner_gets_exactly_the_last_k() {
    for mode in ["block", "overwrite"] {
        let name = unique(&format!("hist-{mode}"));
        let _c = Cleanup(name.clone());
        let mut p = builder(&name, &|k| match k {
            "CAP" => Some("64".into()),
            "HISTORY" => Some("16".into()),
            "MODE" => Some(mode.into()),
            _ => None,
        })
        .publish()
        .unwrap();
        let mut buf = [0u8; MAX_MSG];
        for seq in 0..100 {
            let len = fill(seq, &mut buf);
            p.send(&buf[..len]).unwrap();
        }
        let mut s = Peer::spawn("sub-history", &env(&name, &[("REPLAY", "10")]));
        let h = s.expect("HISTORY", PEER_WAIT);
        let expect: Vec<String> = (90..100).map(|x: u64| x.to_string()).collect();
        assert_eq!(h, format!("90 {}", expect.join(",")), "{mode}");
        let len = fill(100, &mut buf);
        p.send(&buf[..len]).unwrap();
        s.say("more");
        drop(p);
        assert_eq!(s.expect("LIVE", PEER_WAIT), "100 true", "{mode}");
        s.wait_success(PEER_WAIT);
    }
}

/// A Block publisher held back by a subscriber that is SIGKILLed carries on
/// at once; subscribers of a SIGKILLed publisher drain, then Disconnected.
#[test]
fn sigkilled_subscriber_and_publisher() {
    let name = unique("kill");
    let _c = Cleanup(name.clone());
    let mut p = TopicBuilder::new(&name)
        .capacity(64)
        .wait(WaitStrategy::Park)
        .publish()
        .unwrap();
    let mut idle = Peer::spawn("sub-idle", &env(&name, &[]));
    idle.expect("READY", PEER_WAIT);
    for i in 0..64u64 {
        p.send(i.to_le_bytes()).unwrap();
    }
    assert!(matches!(p.try_send(b"x"), Err(SendError::Full(_))));
    assert!(matches!(
        p.send_timeout(b"x", Duration::from_millis(200)),
        Err(SendError::Timeout(_))
    ));
    let killed = {
        idle.kill();
        Instant::now()
    };
    p.send_timeout(b"after", Duration::from_secs(10))
        .expect("the publisher still held back by a dead subscriber");
    let sub_noticed = killed.elapsed();
    drop(p);
    assert!(!listed(&name), "the topic outlived its last live handle");

    // The publisher side.
    let name = unique("killp");
    let _c2 = Cleanup(name.clone());
    let mut s: Subscriber = TopicBuilder::new(&name)
        .capacity(4096)
        .wait(WaitStrategy::Park)
        .subscribe()
        .unwrap();
    let mut pubr = Peer::spawn("publisher", &env(&name, &[("COUNT", "1000")]));
    pubr.expect("SENT", PEER_WAIT);
    pubr.kill();
    let killed = Instant::now();
    let mut scratch = [0u8; MAX_MSG];
    for seq in 0..1000 {
        let m = s.recv_timeout(PEER_WAIT).unwrap();
        check(seq, &m, &mut scratch).unwrap();
    }
    assert_eq!(
        s.recv_timeout(Duration::from_secs(10)),
        Err(RecvError::Disconnected)
    );
    let pub_noticed = killed.elapsed();
    drop(s);
    assert!(
        !listed(&name),
        "the topic outlived its last live handle (its SIGKILLed publisher's use was not taken off)"
    );
    let _keep: Subscriber = Topic::subscribe(&name).unwrap();
    println!(
        "SIGKILL: a Block publisher carried on {sub_noticed:?} after its subscriber's kill; \
         a subscriber drained 1000 and saw Disconnected {pub_noticed:?} after its publisher's"
    );
    assert!(sub_noticed < Duration::from_secs(2) && pub_noticed < Duration::from_secs(2));
    // A second publisher is refused while the first lives.
    let mut first = Peer::spawn("publisher", &env(&name, &[("COUNT", "0")]));
    first.expect("SENT", PEER_WAIT);
    match Topic::publish(&name) {
        Err(hwlink::OpenError::PublisherTaken { pid, .. }) => assert_eq!(pid, first.pid()),
        other => panic!("a second publisher: {other:?}"),
    }
    first.kill();
}

/// A hostile subscriber writes garbage into its cursor and the topic's
/// header while a publisher and an honest subscriber work: nobody crashes
/// or hangs; errors are clear ones; once it is killed, all carries on.
#[test]
fn hostile_subscriber_is_contained() {
    let name = unique("host");
    let _c = Cleanup(name.clone());
    let mut p: Publisher = TopicBuilder::new(&name)
        .capacity(256)
        .max_subscribers(8)
        .publish()
        .unwrap();
    let mut honest = Peer::spawn("sub-overwrite", &env(&name, &[("HOSTILE", "1")]));
    honest.expect("READY", PEER_WAIT);
    let mut bad = Peer::spawn("hostile", &env(&name, &[("FOR", "1500")]));
    bad.expect("READY", PEER_WAIT);
    let (mut sent, mut timeouts, mut other) = (0u64, 0u64, Vec::new());
    let t0 = Instant::now();
    let mut buf = [0u8; MAX_MSG];
    while t0.elapsed() < Duration::from_millis(2000) {
        let len = fill(sent, &mut buf);
        match p.send_timeout(&buf[..len], Duration::from_millis(20)) {
            Ok(()) => sent += 1,
            Err(SendError::Timeout(_)) => timeouts += 1,
            Err(e) => {
                other.push(e.to_string());
                break;
            }
        }
    }
    bad.expect("DONE", PEER_WAIT);
    bad.kill();
    println!(
        "hostile subscriber: publisher sent {sent}, timed out {timeouts} times, other errors \
         {other:?}"
    );
    drop(p);
    // The honest subscriber ends with Disconnected (all it got was whole:
    // it checks every message), or with a clear error about the header the
    // hostile one wrote; never a hang or a crash.
    let end = honest.lines.recv_timeout(PEER_WAIT).expect("a last report");
    println!("honest subscriber: {end}");
    assert!(
        end.starts_with("DONE ") || end.starts_with("ERROR shared memory is corrupt"),
        "{end}"
    );
    honest.wait_success(PEER_WAIT);
}

/// A subscriber's descriptor in poll(2) and a subscriber in a Select beside
/// a link receiver, fed by a publisher process.
#[test]
fn subscriber_descriptor_and_select() {
    if hwlink_drivers::qemu::skip_without_io_uring("topics::subscriber_descriptor_and_select") {
        return;
    }
    let name = unique("sel");
    let _c = Cleanup(name.clone());
    let mut s = TopicBuilder::new(&name)
        .capacity(4096)
        .wait(WaitStrategy::Park)
        .subscribe()
        .unwrap();
    let mut pubr = Peer::spawn(
        "publisher",
        &env(&name, &[("COUNT", "100"), ("ON_GO", "1")]),
    );
    pubr.expect("READY", PEER_WAIT);
    let fd = s.as_fd().unwrap().as_raw_fd();
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    let poll = |pfd: &mut libc::pollfd, ms: i32| {
        // SAFETY: one valid pollfd we own.
        unsafe { libc::poll(pfd, 1, ms) }
    };
    assert_eq!(poll(&mut pfd, 50), 0, "readable with nothing sent");
    pubr.say("go");
    assert_eq!(poll(&mut pfd, 10_000), 1, "not readable after a publish");
    pubr.expect("SENT", PEER_WAIT);
    let link = unique("sel-l");
    let _l = Cleanup(link.clone());
    let mut rx = LinkBuilder::new(&link)
        .backend(Backend::Auto)
        .wait(WaitStrategy::Park)
        .create_receiver()
        .unwrap();
    let mut got = 0;
    while got < 100 {
        let mut sel = Select::new();
        let i = sel.recv(&mut s);
        sel.recv(&mut rx);
        let done = sel.select_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(done.index, i);
        match done.outcome {
            Outcome::Received(m) => {
                assert_eq!(u64::from_le_bytes(m[..8].try_into().unwrap()), got);
                got += 1;
            }
            other => panic!("{other:?}"),
        }
    }
    pubr.kill();
    let mut sel = Select::new();
    sel.recv(&mut s);
    let done = sel.select_timeout(Duration::from_secs(10)).unwrap();
    assert!(matches!(
        done.outcome,
        Outcome::RecvFailed(RecvError::Disconnected)
    ));
    drop(rx);
    let _ = admin::remove(&link);
}

/// The tokio front end: an `AsyncSubscriber` receives 200,000 messages from
/// a publisher process in order while a `select!` with a short timer
/// cancels its `recv()` again and again.
#[cfg(feature = "tokio")]
#[test]
fn async_subscriber_in_order_under_cancellation() {
    if hwlink_drivers::qemu::skip_without_io_uring(
        "topics::async_subscriber_in_order_under_cancellation",
    ) {
        return;
    }
    let name = unique("async");
    let _c = Cleanup(name.clone());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let sub = TopicBuilder::new(&name)
            .capacity(1024)
            .wait(WaitStrategy::SpinPark)
            .subscribe()
            .unwrap();
        let mut sub = hwlink::tokio::AsyncSubscriber::new(sub).unwrap();
        let n = 200_000u64;
        let mut pubr = Peer::spawn(
            "publisher",
            &env(&name, &[("COUNT", &n.to_string()), ("WAIT", "park")]),
        );
        let mut scratch = [0u8; MAX_MSG];
        let (mut next, mut cancelled) = (0u64, 0u64);
        while next < n {
            tokio::select! {
                m = sub.recv() => {
                    let m = m.unwrap();
                    check(next, &m, &mut scratch).unwrap();
                    next += 1;
                }
                _ = tokio::time::sleep(Duration::from_micros(5)) => cancelled += 1,
            }
        }
        pubr.expect("SENT", PEER_WAIT);
        pubr.kill();
        let end = tokio::time::timeout(Duration::from_secs(10), sub.recv()).await;
        assert_eq!(end.unwrap(), Err(RecvError::Disconnected));
        println!("async subscriber: {n} in order, {cancelled} receives cancelled");
    });
}

/// A topic whose only process was SIGKILLed is stale: `hwlink ls` says so
/// and `rm --stale` removes it; a topic a live subscriber holds is not.
#[test]
fn stale_topic_is_removed_and_a_live_one_kept() {
    let dead = unique("stale");
    let live = unique("live");
    let _c = Cleanup(dead.clone());
    let _c2 = Cleanup(live.clone());
    let mut p = Peer::spawn("publisher", &env(&dead, &[("COUNT", "10")]));
    p.expect("SENT", PEER_WAIT);
    let _keep = Topic::subscribe(&live).unwrap();
    p.kill();
    let find = |n: &str| {
        admin::list()
            .unwrap()
            .into_iter()
            .find(|r| r.name == format!("topic.{n}"))
    };
    assert!(find(&dead).expect("the dead topic is listed").is_stale());
    assert!(!find(&live).expect("the live topic is listed").is_stale());
    let removed = admin::remove_stale().unwrap();
    assert!(removed.contains(&format!("topic.{dead}")), "{removed:?}");
    assert!(find(&dead).is_none());
    assert!(find(&live).is_some(), "a topic in use was removed");
}

/// Typed values over a topic between processes: `send_value` and
/// `loan_value` on the publisher, `recv_value` and `Sample::read_value` on
/// the subscriber; a message of another size is `WrongSize`, and the next
/// one is still received.
#[test]
fn typed_values_over_a_topic() {
    let name = unique("typed");
    let _c = Cleanup(name.clone());
    let mut s = TopicBuilder::new(&name)
        .capacity(256)
        .slot_size(64)
        .subscribe()
        .unwrap();
    let mut p = Peer::spawn("pub-typed", &env(&name, &[]));
    p.expect("READY", PEER_WAIT);
    p.say("go");
    for i in 0..1000u64 {
        let t: Tick = if i % 3 == 0 {
            let sample = s.read_timeout(PEER_WAIT).unwrap();
            assert_eq!(sample.read_field_at::<u64>(0), Some(i));
            sample.read_value().unwrap()
        } else {
            s.recv_value_timeout(PEER_WAIT).unwrap()
        };
        assert_eq!(t, tick(i));
    }
    assert_eq!(
        s.recv_value::<Tick>(),
        Err(RecvError::WrongSize {
            len: 5,
            expected: 64
        })
    );
    assert_eq!(s.recv_value::<Tick>().unwrap(), tick(1000));
    p.expect("SENT", PEER_WAIT);
    p.kill();
}

/// Two subscribers join before the publisher; it sends, then is SIGKILLed.
/// One subscriber drains and leaves (freeing the dead publisher's word);
/// the other, which never looked at the word while the publisher lived,
/// still drains and ends with Disconnected (found by the kill -9 sweep).
#[test]
fn a_subscriber_learns_of_a_dead_publisher_whose_word_was_freed() {
    let name = unique("freed");
    let _c = Cleanup(name.clone());
    let b = TopicBuilder::new(&name)
        .capacity(256)
        .wait(WaitStrategy::Park);
    let mut first = b.subscribe().unwrap();
    let mut second = b.subscribe().unwrap();
    let mut p = Peer::spawn("publisher", &env(&name, &[("COUNT", "100")]));
    p.expect("SENT", PEER_WAIT);
    p.kill();
    for _ in 0..100 {
        first.recv_timeout(PEER_WAIT).unwrap();
    }
    assert_eq!(
        first.recv_timeout(Duration::from_secs(10)),
        Err(RecvError::Disconnected)
    );
    drop(first);
    for _ in 0..100 {
        second.recv_timeout(PEER_WAIT).unwrap();
    }
    assert_eq!(
        second.recv_timeout(Duration::from_secs(10)),
        Err(RecvError::Disconnected)
    );
}

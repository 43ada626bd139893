//! Waiting on many ends between real processes: `Select` over endpoints of
//! mixed kinds fed by separate processes, a select timeout racing sends,
//! a descriptor in `epoll` (a message, a SIGKILLed peer), the tokio
//! feature (a million messages in order, a `select!` cancelling `recv()`
//! thousands of times), and all of it with both processes on one CPU.
//!
//! The test binary re-executes itself as each peer (`peer_entry`).

use hwlink::{
    admin, Access, Buffering, Domain, LinkBuilder, MailboxBuilder, Outcome, RecvError, Select,
    SelectError, WaitStrategy,
};
use std::collections::HashMap;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

mod common {
    // Parameters this binary's peers do not read.
    #[allow(dead_code)]
    pub mod child;
    pub mod drive;
    pub mod peer;
}
use common::child::{Ctx, PEER_WAIT};
use common::peer::Peer;

const LONG: Duration = Duration::from_secs(60);

/// A name unique to this test process.
fn unique(tag: &str) -> String {
    format!("t-{}-{tag}", std::process::id())
}

/// Removes every region a test named after `base`, however it ends.
struct Cleanup(String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Ok(all) = admin::list() {
            for r in all.into_iter().filter(|r| r.name.contains(&self.0)) {
                let _ = admin::remove(&r.name);
            }
        }
    }
}

fn encode(id: u32, seq: u64) -> [u8; 12] {
    let mut m = [0u8; 12];
    m[..4].copy_from_slice(&id.to_le_bytes());
    m[4..].copy_from_slice(&seq.to_le_bytes());
    m
}

fn decode(m: &[u8]) -> (u32, u64) {
    assert_eq!(m.len(), 12, "message of {} bytes", m.len());
    (
        u32::from_le_bytes(m[..4].try_into().unwrap()),
        u64::from_le_bytes(m[4..].try_into().unwrap()),
    )
}

/// Pins this process to `cpu`.
fn pin(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is valid; CPU_SET writes within it;
    // sched_setaffinity reads it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        assert_eq!(
            libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set),
            0,
            "sched_setaffinity"
        );
    }
}

fn link(name: &str, wait: WaitStrategy) -> LinkBuilder {
    LinkBuilder::new(name)
        .capacity(64)
        .slot_size(64)
        .wait(wait)
        .backend(hwlink::Backend::Shm)
}

// ---------------------------------------------------------------------------
// Peers
// ---------------------------------------------------------------------------

#[test]
fn peer_entry() {
    common::child::peer_entry_with(roles);
}

/// One send of a peer's role.
type SendFn = Box<dyn FnMut(&[u8])>;

fn roles(role: &str, ctx: &Ctx) -> bool {
    if let Ok(cpu) = ctx.var_or("PIN", "").parse::<usize>() {
        pin(cpu);
    }
    let id = ctx.u64("ID") as u32;
    let count = ctx.u64("COUNT");
    let pace = Duration::from_micros(ctx.var_or("PACE_US", "0").parse().unwrap());
    if role == "link_recv" {
        let mut rx = link(&ctx.name(), ctx.wait())
            .open_receiver()
            .expect("open link");
        ctx.report("ready");
        for seq in 0..count {
            let m = rx.recv_timeout(PEER_WAIT).expect("link recv");
            assert_eq!(decode(&m), (id, seq));
        }
        ctx.report("received");
        return true;
    }
    let mut send: SendFn = match role {
        "link" => {
            let mut tx = link(&ctx.name(), ctx.wait())
                .open_sender()
                .expect("open link");
            Box::new(move |m| tx.send(m).expect("link send"))
        }
        "mailbox" => {
            let mut mb = MailboxBuilder::new()
                .wait(ctx.wait())
                .open(&ctx.name(), Access::Send)
                .expect("open mailbox");
            Box::new(move |m| mb.send(m).expect("mailbox send"))
        }
        "member" => {
            let mut me = Domain::builder(&ctx.name())
                .wait(ctx.wait())
                .join(&ctx.var("MEMBER"))
                .expect("join");
            let to = ctx.var("TO");
            Box::new(move |m| me.send(&to, m).expect("member send"))
        }
        _ => return false,
    };
    ctx.report("ready");
    ctx.command("go", PEER_WAIT);
    let mut state = id as u64 | 1;
    for seq in 0..count {
        send(&encode(id, seq));
        if !pace.is_zero() {
            // xorshift: a pause of 0..pace.
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let us = state % (pace.as_micros() as u64 + 1);
            if us > 0 {
                std::thread::sleep(Duration::from_micros(us));
            }
        }
    }
    ctx.report("sent");
    if role != "link" || ctx.var_or("HOLD", "1") == "1" {
        // Stay (attached, a member) until the parent has everything.
        let _ = ctx.next_command(PEER_WAIT);
    }
    drop(send);
    true
}

fn spawn(role: &str, name: &str, id: u32, count: u64, extra: &[(&str, String)]) -> Peer {
    let mut env = vec![
        ("NAME", name.to_string()),
        ("ID", id.to_string()),
        ("COUNT", count.to_string()),
    ];
    env.extend(extra.iter().cloned());
    let mut p = Peer::spawn(role, &env);
    p.expect("ready", LONG);
    p
}

/// Per-producer order and exactly-once: every id's sequence must arrive
/// as 0, 1, 2, ...
#[derive(Default)]
struct Ledger(HashMap<u32, u64>);

impl Ledger {
    fn take(&mut self, m: &[u8]) -> u32 {
        let (id, seq) = decode(m);
        let next = self.0.entry(id).or_insert(0);
        assert_eq!(seq, *next, "producer {id}: got {seq}, expected {next}");
        *next += 1;
        id
    }
}

// ---------------------------------------------------------------------------
// Select
// ---------------------------------------------------------------------------

/// Eight endpoints of mixed kinds (five links, a mailbox, a member's
/// receive from one member and another member's receive from any), each
/// fed by its own process: every message once, in order per producer,
/// and no endpoint starved while all are busy.
fn select_over_mixed(tag: &str, wait: WaitStrategy, per: u64, pin_to: Option<usize>) {
    let base = unique(tag);
    let _cleanup = Cleanup(base.clone());
    if let Some(cpu) = pin_to {
        pin(cpu);
    }
    let mut extra = vec![("WAIT", wait.to_string())];
    if let Some(cpu) = pin_to {
        extra.push(("PIN", cpu.to_string()));
    }
    let mut rxs: Vec<_> = (0..5)
        .map(|i| {
            link(&format!("{base}-l{i}"), wait)
                .create_receiver()
                .expect("link")
        })
        .collect();
    let mbx_name = format!("{base}-m");
    let mut mbx = MailboxBuilder::new()
        .name(&mbx_name)
        .wait(wait)
        .buffering(Buffering::Bounded(64))
        .create(Access::Recv)
        .expect("mailbox");
    let dom = format!("{base}-d");
    let mut hub1 = Domain::builder(&dom).wait(wait).join("hub1").expect("join");
    let mut hub2 = Domain::builder(&dom).wait(wait).join("hub2").expect("join");
    let mut peers = Vec::new();
    for i in 0..5u32 {
        peers.push(spawn("link", &format!("{base}-l{i}"), i, per, &extra));
    }
    peers.push(spawn("mailbox", &mbx_name, 5, per, &extra));
    let member = |id: u32, to: &str| {
        let mut e = extra.clone();
        e.push(("MEMBER", format!("p{id}")));
        e.push(("TO", to.to_string()));
        spawn("member", &dom, id, per, &e)
    };
    peers.push(member(6, "hub1"));
    peers.push(member(7, "hub2"));
    for p in &mut peers {
        p.say("go");
    }
    // Let every producer fill its end (capacity 64 each) and block: the
    // first rounds then find all eight ready, and must serve them in turn.
    std::thread::sleep(Duration::from_millis(300));
    let total = per * 8;
    let mut ledger = Ledger::default();
    let mut served = [0u64; 8];
    let mut first_rounds = [0u64; 8];
    let mut sel = Select::new();
    for rx in rxs.iter_mut() {
        sel.recv(rx);
    }
    sel.recv(&mut mbx);
    sel.recv_from(&mut hub1, "p6");
    sel.recv_any(&mut hub2);
    let deadline = Instant::now() + LONG;
    for n in 0..total {
        let left = deadline.saturating_duration_since(Instant::now());
        let done = sel
            .select_timeout(left)
            .unwrap_or_else(|e| panic!("after {n} of {total}: {e}"));
        let m = match done.outcome {
            Outcome::Received(m) => m,
            Outcome::ReceivedFrom(from, m) => {
                assert_eq!(from, "p7");
                m
            }
            other => panic!("endpoint {}: {other:?}", done.index),
        };
        let id = ledger.take(&m);
        assert_eq!(
            id as usize, done.index,
            "message of producer {id} reported on another end"
        );
        served[done.index] += 1;
        if n < 8 * 16 {
            first_rounds[done.index] += 1;
        }
    }
    assert_eq!(sel.try_select().unwrap_err(), SelectError::WouldBlock);
    drop(sel);
    assert!(served.iter().all(|&s| s == per), "served {served:?}");
    // No endpoint starves another: with all eight ready, sixteen rounds
    // serve each exactly sixteen times.
    assert_eq!(
        first_rounds, [16; 8],
        "not served in turn while all were ready"
    );
    for p in &mut peers {
        p.expect("sent", LONG);
        p.say("exit");
    }
    for p in &mut peers {
        p.wait_success(LONG);
    }
    drop((hub1, hub2));
    mbx.remove().expect("remove");
}

#[test]
fn select_over_eight_mixed_endpoints_fed_by_eight_processes() {
    select_over_mixed("mix-sp", WaitStrategy::SpinPark, 20_000, None);
}

#[test]
fn select_over_eight_mixed_endpoints_parked() {
    select_over_mixed("mix-pk", WaitStrategy::Park, 5_000, None);
}

#[test]
fn select_over_mixed_endpoints_on_one_shared_cpu() {
    select_over_mixed("mix-1c", WaitStrategy::SpinPark, 2_000, Some(0));
}

/// A select with tiny timeouts racing a paced sender: every message is
/// either reported or left for a later call, never lost or duplicated.
#[test]
fn select_timeouts_racing_sends_lose_nothing() {
    let base = unique("race");
    let _cleanup = Cleanup(base.clone());
    let count = 3_000u64;
    let mut rx = link(&format!("{base}-l"), WaitStrategy::SpinPark)
        .create_receiver()
        .unwrap();
    let mbx_name = format!("{base}-m");
    let mut mbx = MailboxBuilder::new()
        .name(&mbx_name)
        .buffering(Buffering::Bounded(64))
        .create(Access::Recv)
        .unwrap();
    let pace = [("PACE_US", "40".to_string()), ("HOLD", "1".to_string())];
    let mut a = spawn("link", &format!("{base}-l"), 0, count, &pace);
    let mut b = spawn("mailbox", &mbx_name, 1, count, &pace);
    a.say("go");
    b.say("go");
    let mut ledger = Ledger::default();
    let (mut got, mut timeouts) = (0u64, 0u64);
    let deadline = Instant::now() + LONG;
    let mut t = 0u64;
    while got < 2 * count {
        assert!(Instant::now() < deadline, "only {got} of {}", 2 * count);
        let mut sel = Select::new();
        sel.recv(&mut rx);
        sel.recv(&mut mbx);
        // Timeouts of 0 to 60 µs, around the senders' pace.
        t = (t * 7 + 13) % 61;
        match sel.select_timeout(Duration::from_micros(t)) {
            Ok(done) => {
                let id = ledger.take(&done.into_message().expect("a message"));
                got += 1;
                assert!(id <= 1);
            }
            Err(SelectError::Timeout) => timeouts += 1,
            Err(e) => panic!("{e}"),
        }
    }
    assert!(
        timeouts > 100,
        "the race was not exercised: {timeouts} timeouts"
    );
    for p in [&mut a, &mut b] {
        p.expect("sent", LONG);
        p.say("exit");
        p.wait_success(LONG);
    }
    mbx.remove().unwrap();
}

// ---------------------------------------------------------------------------
// The descriptor
// ---------------------------------------------------------------------------

fn epoll_wait_ms(ep: i32, ms: i32) -> bool {
    let mut ev = libc::epoll_event { events: 0, u64: 0 };
    loop {
        // SAFETY: one event buffer on our stack.
        let n = unsafe { libc::epoll_wait(ep, &mut ev, 1, ms) };
        if n >= 0 {
            return n == 1;
        }
        assert_eq!(
            std::io::Error::last_os_error().raw_os_error(),
            Some(libc::EINTR),
            "epoll_wait"
        );
    }
}

fn epoll_with(fd: i32) -> i32 {
    // SAFETY: plain integer arguments; the event is on our stack.
    unsafe {
        let ep = libc::epoll_create1(libc::EPOLL_CLOEXEC);
        assert!(ep >= 0, "epoll_create1");
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: 1,
        };
        assert_eq!(libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, fd, &mut ev), 0);
        ep
    }
}

/// The receiver's descriptor in epoll: readable for a message (and not
/// before it, nor after the message was taken), then for the sender's
/// SIGKILL.
fn descriptor_in_epoll(tag: &str, pin_to: Option<usize>) {
    let name = unique(tag);
    let _cleanup = Cleanup(name.clone());
    if let Some(cpu) = pin_to {
        pin(cpu);
    }
    let mut rx = link(&name, WaitStrategy::Park).create_receiver().unwrap();
    let mut env = vec![("PACE_US", "0".to_string()), ("WAIT", "park".to_string())];
    if let Some(cpu) = pin_to {
        env.push(("PIN", cpu.to_string()));
    }
    let mut peer = spawn("link", &name, 0, 3, &env);
    let ep = epoll_with(rx.as_fd().expect("as_fd").as_raw_fd());
    assert_eq!(rx.try_recv().unwrap_err(), RecvError::Empty);
    assert!(!epoll_wait_ms(ep, 100), "readable before any message");
    peer.say("go");
    let mut got = 0;
    while got < 3 {
        assert!(epoll_wait_ms(ep, 10_000), "no readiness for message {got}");
        loop {
            match rx.try_recv() {
                Ok(m) => {
                    assert_eq!(decode(&m), (0, got));
                    got += 1;
                }
                Err(RecvError::Empty) => break,
                Err(e) => panic!("{e}"),
            }
        }
    }
    peer.expect("sent", LONG);
    assert!(!epoll_wait_ms(ep, 200), "readable with nothing to receive");
    let t = Instant::now();
    peer.kill();
    assert!(epoll_wait_ms(ep, 10_000), "no readiness for the SIGKILL");
    let noticed = t.elapsed();
    assert_eq!(rx.try_recv().unwrap_err(), RecvError::Disconnected);
    assert!(
        noticed < Duration::from_secs(2),
        "the death took {noticed:?} to read as ready"
    );
    eprintln!("descriptor: SIGKILL read as ready after {noticed:?}");
    // SAFETY: our epoll descriptor.
    unsafe { libc::close(ep) };
}

#[test]
fn descriptor_in_epoll_for_a_message_and_a_sigkilled_peer() {
    if hwlink_drivers::qemu::skip_without_io_uring(
        "wait_many::descriptor_in_epoll_for_a_message_and_a_sigkilled_peer",
    ) {
        return;
    }
    descriptor_in_epoll("ep", None);
}

#[test]
fn descriptor_in_epoll_on_one_shared_cpu() {
    if hwlink_drivers::qemu::skip_without_io_uring(
        "wait_many::descriptor_in_epoll_on_one_shared_cpu",
    ) {
        return;
    }
    descriptor_in_epoll("ep-1c", Some(0));
}

/// A mailbox's descriptor in epoll: readable for a message from another
/// process.
#[test]
fn mailbox_descriptor_in_epoll() {
    if hwlink_drivers::qemu::skip_without_io_uring("wait_many::mailbox_descriptor_in_epoll") {
        return;
    }
    let name = unique("mep");
    let _cleanup = Cleanup(name.clone());
    let mut mbx = MailboxBuilder::new()
        .name(&name)
        .wait(WaitStrategy::Park)
        .buffering(Buffering::Bounded(16))
        .create(Access::Recv)
        .unwrap();
    let mut peer = spawn("mailbox", &name, 9, 100, &[("WAIT", "park".into())]);
    let ep = epoll_with(mbx.as_fd().unwrap().as_raw_fd());
    assert!(!epoll_wait_ms(ep, 50));
    peer.say("go");
    let mut ledger = Ledger::default();
    let mut got = 0;
    while got < 100 {
        assert!(epoll_wait_ms(ep, 10_000), "no readiness after {got}");
        while let Ok(m) = mbx.try_recv() {
            ledger.take(&m);
            got += 1;
        }
    }
    peer.expect("sent", LONG);
    peer.say("exit");
    peer.wait_success(LONG);
    // SAFETY: our epoll descriptor.
    unsafe { libc::close(ep) };
    mbx.remove().unwrap();
}

// ---------------------------------------------------------------------------
// tokio
// ---------------------------------------------------------------------------

#[cfg(feature = "tokio")]
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A million messages through `recv().await`, in order.
#[cfg(feature = "tokio")]
#[test]
fn tokio_receives_a_million_in_order() {
    if hwlink_drivers::qemu::skip_without_io_uring("wait_many::tokio_receives_a_million_in_order") {
        return;
    }
    let name = unique("tk");
    let _cleanup = Cleanup(name.clone());
    let count = 1_000_000u64;
    let rx = link(&name, WaitStrategy::SpinPark)
        .create_receiver()
        .unwrap();
    let mut peer = spawn("link", &name, 3, count, &[]);
    runtime().block_on(async {
        let mut arx = hwlink::tokio::AsyncReceiver::new(rx).expect("async receiver");
        peer.say("go");
        for seq in 0..count {
            let m = arx.recv().await.expect("recv");
            assert_eq!(decode(&m), (3, seq));
        }
    });
    peer.expect("sent", LONG);
    peer.say("exit");
    peer.wait_success(LONG);
}

/// `tokio::select!` racing `recv()` against a short timer, so that the
/// receive is dropped mid-wait thousands of times: nothing is lost or
/// duplicated. Also a mailbox through `AsyncMailbox`.
#[cfg(feature = "tokio")]
#[test]
fn tokio_select_cancelling_recv_loses_nothing() {
    if hwlink_drivers::qemu::skip_without_io_uring(
        "wait_many::tokio_select_cancelling_recv_loses_nothing",
    ) {
        return;
    }
    let base = unique("tkc");
    let _cleanup = Cleanup(base.clone());
    let count = 50_000u64;
    let rx = link(&format!("{base}-l"), WaitStrategy::Park)
        .create_receiver()
        .unwrap();
    let mbx_name = format!("{base}-m");
    let mbx = MailboxBuilder::new()
        .name(&mbx_name)
        .wait(WaitStrategy::Park)
        .buffering(Buffering::Bounded(64))
        .create(Access::Recv)
        .unwrap();
    let pace = [("PACE_US", "20".to_string()), ("WAIT", "park".to_string())];
    let mut a = spawn("link", &format!("{base}-l"), 0, count, &pace);
    let mut b = spawn("mailbox", &mbx_name, 1, count / 4, &pace);
    let (cancels, mbx) = runtime().block_on(async {
        let mut arx = hwlink::tokio::AsyncReceiver::new(rx).unwrap();
        let mut amb = hwlink::tokio::AsyncMailbox::new(mbx).unwrap();
        a.say("go");
        b.say("go");
        let mut ledger = Ledger::default();
        let (mut got, mut cancels) = (0u64, 0u64);
        let total = count + count / 4;
        let deadline = Instant::now() + LONG;
        while got < total {
            assert!(Instant::now() < deadline, "only {got} of {total}");
            tokio::select! {
                m = arx.recv() => { ledger.take(&m.unwrap()); got += 1; }
                m = amb.recv() => { ledger.take(&m.unwrap()); got += 1; }
                _ = tokio::time::sleep(Duration::from_micros(30)) => cancels += 1,
            }
        }
        (cancels, amb.into_inner())
    });
    assert!(cancels >= 1_000, "only {cancels} receives were cancelled");
    eprintln!("tokio select!: {cancels} receives cancelled, nothing lost");
    for p in [&mut a, &mut b] {
        p.expect("sent", LONG);
        p.say("exit");
        p.wait_success(LONG);
    }
    mbx.remove().unwrap();
}

/// `AsyncSender` against back-pressure (a 64-slot link to a slower
/// process, so most sends await room through the sender's descriptor) and
/// `AsyncMember::recv_any` from a member process.
#[cfg(feature = "tokio")]
#[test]
fn tokio_sender_under_back_pressure_and_member_receive() {
    if hwlink_drivers::qemu::skip_without_io_uring(
        "wait_many::tokio_sender_under_back_pressure_and_member_receive",
    ) {
        return;
    }
    let base = unique("tks");
    let _cleanup = Cleanup(base.clone());
    let count = 100_000u64;
    let link_name = format!("{base}-l");
    let tx = link(&link_name, WaitStrategy::Park)
        .create_sender()
        .unwrap();
    let mut receiver = spawn(
        "link_recv",
        &link_name,
        4,
        count,
        &[("WAIT", "park".to_string())],
    );
    let dom = format!("{base}-d");
    let hub = Domain::builder(&dom)
        .wait(WaitStrategy::Park)
        .join("hub")
        .unwrap();
    let mut member = spawn(
        "member",
        &dom,
        5,
        5_000,
        &[
            ("MEMBER", "p5".to_string()),
            ("TO", "hub".to_string()),
            ("WAIT", "park".to_string()),
        ],
    );
    member.say("go");
    runtime().block_on(async {
        let mut atx = hwlink::tokio::AsyncSender::new(tx).unwrap();
        let mut ahub = hwlink::tokio::AsyncMember::new(hub).unwrap();
        let (mut sent, mut got) = (0u64, 0u64);
        let mut ledger = Ledger::default();
        while sent < count || got < 5_000 {
            tokio::select! {
                r = atx.send(encode(4, sent)), if sent < count => { r.unwrap(); sent += 1; }
                m = ahub.recv_any(), if got < 5_000 => {
                    let (from, m) = m.unwrap();
                    assert_eq!(from, "p5");
                    ledger.take(&m);
                    got += 1;
                }
            }
        }
    });
    receiver.expect("received", LONG);
    receiver.wait_success(LONG);
    member.expect("sent", LONG);
    member.say("exit");
    member.wait_success(LONG);
}

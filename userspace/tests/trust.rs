//! Regression tests, with real processes, for the defects of the Trust
//! issue: what a crashing or hostile peer could do to mailboxes, unbounded
//! queues and domains. One test (or group) per defect:
//!
//! 1. a mailbox sender SIGKILLed in the middle of a 1 MiB copy loses no
//!    other sender's accepted message, and the hole it leaves does not keep
//!    a timed receive past its deadline;
//! 2. a flooded doorbell or a stale turn keeps no timed call past its
//!    deadline, and a parked waiter does not spin;
//! 3. positions at `u64::MAX` give `Corrupt`, never a panic;
//! 4. an unbounded mailbox removed while a receiver drains it delivers
//!    everything, then `Disconnected`;
//! 5. a region file truncated under its users gives `Corrupt`, not SIGBUS;
//! 6. a peer in another PID namespace is judged alive while it lives and
//!    dead once killed;
//! 7. zero-copy reads hand out no reference into peer-writable memory: a
//!    compile-time property, checked by the `compile_fail` doctest on
//!    `hwlink::ShmSlice` (and exercised between processes by
//!    `processes::zero_copy_*`);
//! 8. `hwlink rm --stale` keeps a zero-capacity mailbox while a live
//!    process is attached, and reclaims dead domains' unbounded links and
//!    their segments;
//! 9. a timed `recv_from` waits for its member to join; the unbounded byte
//!    limit is filled, not a quarter of it; a drained queue gives its
//!    segments back.
//!
//! The test binary re-executes itself as each peer (`peer_entry`, roles
//! `t_*` below). Nothing here asserts speed: the bounds on how late a call
//! returns are correctness bounds (the defects were seconds to forever),
//! generous for a loaded two-core machine; each test prints what it saw.
// The workspace's clippy.toml steers `hwlink` to its loom-switchable atomics
// (its `sync` module); this crate is never model-checked and uses std's.
#![allow(clippy::disallowed_types)]

mod common {
    pub mod child;
    pub mod drive;
    pub mod peer;
    pub mod raw;
    pub mod raw64;
    pub mod raw_read;
    pub mod raw_write;
}
mod hwlink_bin;

use common::child::{Ctx, PEER_WAIT};
use common::peer::Peer;
use common::raw::{region, RawRegion};
use hwlink::{
    admin, Access, Backend, Buffering, Domain, Mailbox, MailboxBuilder, RecvError, SendError,
    WaitStrategy,
};
use hwlink_hw::{hwl_domain, hwl_doorbell, hwl_mailbox, hwl_member, hwl_mpmc_ring, hwl_object};
use std::collections::BTreeMap;
use std::mem::{offset_of, size_of};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[test]
fn peer_entry() {
    common::child::peer_entry_with(run_role);
}

/// Offset of the ring object in a link region.
const RING: usize = hwlink_hw::HWL_REGION_HDR_SIZE as usize;

impl Peer {
    /// The next report line if one has arrived, without waiting.
    fn poll(&mut self) -> Option<String> {
        self.lines.try_recv().ok()
    }
}

impl RawRegion {
    /// The length of the mapping.
    fn len(&self) -> usize {
        self.map.len()
    }
}

/// How late a timed call may return here: the defects made it seconds or
/// forever; a loaded CI machine can deschedule a process for a while.
const LATE: Duration = Duration::from_millis(500);

/// A name unique to this process and test.
fn unique(tag: &str) -> String {
    format!("tr{}-{tag}", std::process::id())
}

/// Removes every region whose name contains the tag, however the test ends.
struct Sweep(String);

impl Drop for Sweep {
    fn drop(&mut self) {
        if let Ok(all) = admin::list() {
            for r in all.into_iter().filter(|r| r.name.contains(&self.0)) {
                let _ = admin::remove(&r.name);
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Messages: producer id, sequence, and a pattern of both (so a message cut
// short or mixed with another is caught)
// ---------------------------------------------------------------------------

fn message(id: u32, seq: u64, len: usize) -> Vec<u8> {
    // memset and memcmp, fast even in a debug build: a 1 MiB copy is then
    // most of what a sender does, so a kill lands in the middle of one.
    let mut m = vec![fill_byte(id, seq); len.max(16)];
    m[..4].copy_from_slice(&id.to_le_bytes());
    m[4..8].fill(0);
    m[8..16].copy_from_slice(&seq.to_le_bytes());
    m
}

/// The byte a message's body is made of: different for the messages a slot
/// holds in turn (and for the two senders of test 1).
fn fill_byte(id: u32, seq: u64) -> u8 {
    (seq.wrapping_mul(37).wrapping_add(u64::from(id) * 101) % 255) as u8 + 1
}

/// Checks a message made by [`message`]; returns (id, seq).
fn parse(m: &[u8]) -> (u32, u64) {
    assert!(m.len() >= 16, "a message of {} bytes", m.len());
    let id = u32::from_le_bytes(m[..4].try_into().unwrap());
    let seq = u64::from_le_bytes(m[8..16].try_into().unwrap());
    assert!(
        m == &message(id, seq, m.len())[..],
        "message {id}/{seq} ({} bytes) is damaged: half-delivered or mixed",
        m.len()
    );
    (id, seq)
}

fn kind<T>(r: &Result<T, RecvError>) -> String {
    match r {
        Ok(_) => "Ok".into(),
        Err(RecvError::Corrupt(_)) => "Corrupt".into(),
        Err(RecvError::Unavailable { .. }) => "Unavailable".into(),
        Err(RecvError::NoSuchMember { .. }) => "NoSuchMember".into(),
        Err(RecvError::MemberGone { .. }) => "MemberGone".into(),
        Err(e) => format!("{e:?}"),
    }
}

fn send_kind<M>(r: &Result<(), SendError<M>>) -> String {
    match r {
        Ok(()) => "Ok".into(),
        Err(SendError::Full(_)) => "Full".into(),
        Err(SendError::Timeout(_)) => "Timeout".into(),
        Err(SendError::Disconnected(_)) => "Disconnected".into(),
        Err(SendError::Corrupt(_)) => "Corrupt".into(),
        Err(SendError::MemoryLimit { .. }) => "MemoryLimit".into(),
        Err(SendError::TooLarge { .. }) => "TooLarge".into(),
        Err(SendError::NoSuchMember { .. }) => "NoSuchMember".into(),
        Err(SendError::MemberGone { .. }) => "MemberGone".into(),
        Err(_) => "Other".into(),
    }
}

/// CPU time this thread has used.
fn thread_cpu() -> Duration {
    // SAFETY: all-zero rusage is valid; getrusage fills it.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: a pointer to our local.
    assert_eq!(unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut ru) }, 0);
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

// ---------------------------------------------------------------------------
// Raw access: the objects of a region, as a hostile peer finds them
// ---------------------------------------------------------------------------

/// Offsets of the region's objects of `kind`.
fn objects(raw: &RawRegion, kind: u32) -> Vec<usize> {
    let count = raw.get32(offset_of!(hwlink_hw::hwl_region, object_count)) as usize;
    (0..count)
        .filter_map(|i| {
            let at = offset_of!(hwlink_hw::hwl_region, objects) + i * size_of::<hwl_object>();
            (raw.get32(at + offset_of!(hwl_object, kind)) == kind)
                .then(|| raw.get64(at + offset_of!(hwl_object, offset)) as usize)
        })
        .collect()
}

fn mailbox_ctl(raw: &RawRegion) -> usize {
    objects(raw, hwlink_hw::HWL_OBJ_MAILBOX)[0]
}

fn mpmc_ring(raw: &RawRegion) -> usize {
    objects(raw, hwlink_hw::HWL_OBJ_MPMC_RING)[0]
}

const COUNT: usize = offset_of!(hwl_doorbell, count);

/// Writes 0xfffffffe into the futex words at `words` of region `name` (and
/// wakes their sleepers) every 100 µs until dropped.
struct Flood {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<u64>>,
}

impl Flood {
    fn start(name: &str, words: impl Fn(&RawRegion) -> Vec<usize> + Send + 'static) -> Flood {
        let stop = Arc::new(AtomicBool::new(false));
        let name = name.to_string();
        let s = stop.clone();
        let thread = std::thread::spawn(move || {
            let raw = RawRegion::open(&name);
            let words = words(&raw);
            let mut n = 0u64;
            while !s.load(Ordering::Relaxed) {
                for &w in &words {
                    raw.set32(w, 0xffff_fffe);
                    // SAFETY: FUTEX_WAKE on an aligned u32 of our mapping.
                    unsafe {
                        libc::syscall(
                            libc::SYS_futex,
                            raw.u32_at(w).as_ptr(),
                            libc::FUTEX_WAKE,
                            i32::MAX,
                        )
                    };
                    n += 1;
                }
                std::thread::sleep(Duration::from_micros(100));
            }
            n
        });
        Flood {
            stop,
            thread: Some(thread),
        }
    }

    fn stop(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap()
    }
}

impl Drop for Flood {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

// ---------------------------------------------------------------------------
// Peer roles
// ---------------------------------------------------------------------------

fn run_role(role: &str, ctx: &Ctx) -> bool {
    match role {
        "t_send_forever" => role_send_forever(ctx),
        "t_send_count" => role_send_count(ctx),
        "t_timed" => role_timed(ctx),
        "t_try" => role_try(ctx),
        "t_drain" => role_drain(ctx),
        "t_truncated" => role_truncated(ctx),
        "t_link_send_hold" => role_link_send_hold(ctx),
        "t_member" => role_member(ctx),
        "t_mbx_hold" => role_mbx_hold(ctx),
        "t_fill" => role_fill(ctx),
        _ => return false,
    }
    true
}

fn open_mailbox(ctx: &Ctx, access: Access) -> Mailbox {
    MailboxBuilder::new()
        .wait(ctx.wait())
        .open(&ctx.name(), access)
        .unwrap_or_else(|e| panic!("open mailbox {}: {e}", ctx.name()))
}

/// Sends messages of SIZE bytes as producer ID to mailbox NAME, blocking,
/// until killed; reports STARTED after the first.
fn role_send_forever(ctx: &Ctx) {
    let (id, size) = (ctx.u64("ID") as u32, ctx.u64("SIZE") as usize);
    let mut mbx = open_mailbox(ctx, Access::Send);
    for seq in 0.. {
        mbx.send(message(id, seq, size))
            .unwrap_or_else(|e| panic!("send #{seq}: {e}"));
        if seq == 0 {
            ctx.report("STARTED");
        }
    }
}

/// Sends COUNT messages of SIZE bytes as producer ID to mailbox NAME, each
/// with `send_timeout`; reports SENT <n>.
fn role_send_count(ctx: &Ctx) {
    let (id, size, count) = (
        ctx.u64("ID") as u32,
        ctx.u64("SIZE") as usize,
        ctx.u64("COUNT"),
    );
    let mut mbx = open_mailbox(ctx, Access::Send);
    for seq in 0..count {
        let len = if size == 0 {
            16 + (seq % 185) as usize
        } else {
            size
        };
        if let Err(e) = mbx.send_timeout(message(id, seq, len), Duration::from_secs(10)) {
            panic!("survivor: message #{seq} of {count} not accepted: {e}");
        }
    }
    ctx.report(&format!("SENT {count}"));
    drop(mbx);
}

/// What `t_timed` waits in: KIND link-recv, link-send, mailbox or member.
enum Timed {
    LinkRecv(hwlink::Receiver),
    LinkSend(hwlink::Sender),
    Mailbox(Mailbox),
    Member(hwlink::Member),
}

/// Opens KIND at NAME with WAIT, reports READY, waits for `go`, then makes
/// ROUNDS timed calls of MS each; reports `TIMED <max late µs> <CPU ‰ of
/// the calls' wall time> <result kinds>`.
fn role_timed(ctx: &Ctx) {
    let wait = ctx.wait();
    let mut end = match ctx.var("KIND").as_str() {
        "link-recv" => Timed::LinkRecv(
            hwlink::LinkBuilder::new(ctx.name())
                .wait(wait)
                .open_receiver()
                .expect("open_receiver"),
        ),
        "link-send" => {
            let mut tx = hwlink::LinkBuilder::new(ctx.name())
                .wait(wait)
                .open_sender()
                .expect("open_sender");
            while tx.try_send(b"fill").is_ok() {}
            Timed::LinkSend(tx)
        }
        "mailbox" => Timed::Mailbox(open_mailbox(ctx, Access::Recv)),
        "member" => Timed::Member(
            Domain::builder(&ctx.name())
                .backend(Backend::Shm)
                .wait(wait)
                .join("victim")
                .expect("join"),
        ),
        k => panic!("kind {k}"),
    };
    ctx.report("READY");
    ctx.command("go", PEER_WAIT);
    let timeout = ctx.millis("MS");
    let mut late = Duration::ZERO;
    let mut kinds = BTreeMap::<String, u32>::new();
    let (t0, cpu0) = (Instant::now(), thread_cpu());
    for round in 0..ctx.u64("ROUNDS") {
        let t = Instant::now();
        let k = match &mut end {
            Timed::LinkRecv(rx) => kind(&rx.recv_timeout(timeout)),
            Timed::LinkSend(tx) => send_kind(&tx.send_timeout(b"more", timeout)),
            Timed::Mailbox(m) if round % 2 == 0 => kind(&m.recv_timeout(timeout)),
            Timed::Mailbox(m) => kind(&m.recv_with_timeout(timeout, |s, _| s.len())),
            Timed::Member(m) if round % 2 == 0 => kind(&m.recv_any_timeout(timeout)),
            Timed::Member(m) => kind(&m.recv_from_timeout("hostile", timeout)),
        };
        late = late.max(t.elapsed().saturating_sub(timeout));
        *kinds.entry(k).or_default() += 1;
    }
    let wall = t0.elapsed();
    let cpu = thread_cpu() - cpu0;
    let kinds: Vec<String> = kinds.iter().map(|(k, n)| format!("{k}x{n}")).collect();
    ctx.report(&format!(
        "TIMED {} {} {}",
        late.as_micros(),
        cpu.as_micros() * 1000 / wall.as_micros().max(1),
        kinds.join(",")
    ));
    ctx.command("bye", PEER_WAIT);
}

/// Opens mailbox NAME (or joins domain NAME as `victim` when KIND is
/// member), reports READY, waits for `go`, then reports `TRY <kinds>` of
/// every form of call on it.
fn role_try(ctx: &Ctx) {
    let t = Duration::from_millis(20);
    if ctx.var("KIND") == "member" {
        let mut m = Domain::builder(&ctx.name())
            .backend(Backend::Shm)
            .buffering(Buffering::Unbounded {
                byte_limit: 64 << 20,
            })
            .join("victim")
            .expect("join");
        // The hostile member's messages open the link.
        let first = m.recv_from_timeout("hostile", PEER_WAIT).expect("first");
        parse(&first);
        ctx.report("READY");
        ctx.command("go", PEER_WAIT);
        let r = [
            kind(&m.try_recv_any()),
            kind(&m.recv_any_timeout(t)),
            kind(&m.try_recv_from("hostile")),
            kind(&m.recv_from_timeout("hostile", t)),
            send_kind(&m.try_send("hostile", b"x")),
        ];
        ctx.report(&format!("TRY {}", r.join(" ")));
        ctx.command("bye", PEER_WAIT);
        return;
    }
    let mut mbx = open_mailbox(ctx, Access::SendRecv);
    ctx.report("READY");
    ctx.command("go", PEER_WAIT);
    let r = [
        kind(&mbx.try_recv()),
        kind(&mbx.recv_timeout(t)),
        send_kind(&mbx.try_send(message(9, 0, 64))),
        send_kind(&mbx.send_timeout(message(9, 1, 64), t)),
    ];
    ctx.report(&format!("TRY {}", r.join(" ")));
    ctx.command("bye", PEER_WAIT);
}

/// Receives from mailbox NAME with `recv_timeout(100 ms)` until it ends;
/// checks order; reports `DRAINED <n> <max late µs> <end>`.
fn role_drain(ctx: &Ctx) {
    let timeout = Duration::from_millis(100);
    let mut mbx = open_mailbox(ctx, Access::Recv);
    ctx.report("READY");
    let mut next = 0u64;
    let mut late = Duration::ZERO;
    let deadline = Instant::now() + PEER_WAIT;
    let end = loop {
        assert!(
            Instant::now() < deadline,
            "drain: no end after {PEER_WAIT:?}"
        );
        let t = Instant::now();
        let r = mbx.recv_timeout(timeout);
        late = late.max(t.elapsed().saturating_sub(timeout));
        match r {
            Ok(m) => {
                let (_, seq) = parse(&m);
                assert_eq!(seq, next, "drain: message {seq} where {next} was due");
                next += 1;
            }
            Err(RecvError::Timeout) => {}
            other => break kind(&other),
        }
    };
    ctx.report(&format!("DRAINED {next} {} {end}", late.as_micros()));
}

/// Opens KIND (link-recv or mailbox) at NAME with BACKEND, reports READY,
/// then receives (and, on a mailbox, sends) with short timeouts until a
/// call fails otherwise than by timing out; reports `ENDED <kind>`.
fn role_truncated(ctx: &Ctx) {
    let t = Duration::from_millis(20);
    let deadline = Instant::now() + Duration::from_secs(20);
    let end = match ctx.var("KIND").as_str() {
        "link-recv" => {
            let mut rx = hwlink::LinkBuilder::new(ctx.name())
                .open_receiver()
                .expect("open_receiver");
            ctx.report("READY");
            loop {
                match rx.recv_timeout(t) {
                    Ok(_) | Err(RecvError::Timeout) if Instant::now() < deadline => {}
                    other => break kind(&other),
                }
            }
        }
        "mailbox" => {
            let mut mbx = open_mailbox(ctx, Access::SendRecv);
            ctx.report("READY");
            loop {
                let s = mbx.send_timeout(message(1, 0, 32), t);
                if !matches!(s, Ok(()) | Err(SendError::Timeout(_) | SendError::Full(_))) {
                    break format!("send:{}", send_kind(&s));
                }
                match mbx.recv_timeout(t) {
                    Ok(_) | Err(RecvError::Timeout) if Instant::now() < deadline => {}
                    other => break kind(&other),
                }
            }
        }
        k => panic!("kind {k}"),
    };
    ctx.report(&format!("ENDED {end}"));
}

/// Opens the sender of link NAME, sends `hello`, reports SENT and waits to
/// be killed (or told `bye`).
fn role_link_send_hold(ctx: &Ctx) {
    let mut tx = hwlink::LinkBuilder::new(ctx.name())
        .open_sender()
        .expect("open_sender");
    tx.send(b"hello").expect("send");
    ctx.report(&format!("SENT {}", std::process::id()));
    let _ = ctx.next_command(PEER_WAIT);
}

/// Joins domain NAME as MEMBER (BUFFERING bounded, unbounded or zero) after
/// DELAY ms (CAPACITY slots per link if it creates the domain); sends COUNT messages of SIZE bytes to TO (if set), waiting
/// for TO to join; reports SENT and waits to be killed (or told `bye`).
fn role_member(ctx: &Ctx) {
    std::thread::sleep(Duration::from_millis(
        ctx.var_or("DELAY", "0").parse().unwrap(),
    ));
    let size: usize = ctx.var_or("SIZE", "64").parse().unwrap();
    let buffering = match ctx.var_or("BUFFERING", "bounded").as_str() {
        "unbounded" => Buffering::Unbounded {
            byte_limit: 64 << 20,
        },
        "zero" => Buffering::Zero,
        _ => Buffering::Bounded(64),
    };
    // capacity() first: it also sets bounded buffering; for unbounded
    // links it is the first segment's.
    let mut me = Domain::builder(&ctx.name())
        .backend(Backend::Shm)
        .capacity(ctx.var_or("CAPACITY", "64").parse().unwrap())
        .buffering(buffering)
        .slot_size(size.max(64) as u32)
        .join(&ctx.var("MEMBER"))
        .expect("join");
    ctx.report("JOINED");
    if let Ok(to) = std::env::var("HWLINK_TEST_TO") {
        let count: u64 = ctx.var_or("COUNT", "1").parse().unwrap();
        let deadline = Instant::now() + PEER_WAIT;
        for seq in 0..count {
            loop {
                match me.send_timeout(&to, message(3, seq, size), Duration::from_secs(1)) {
                    Ok(()) => break,
                    Err(SendError::NoSuchMember { .. }) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(5))
                    }
                    Err(e) => panic!("send #{seq} to {to}: {e}"),
                }
            }
        }
        ctx.report(&format!("SENT {count}"));
    }
    let _ = ctx.next_command(PEER_WAIT);
    me.leave();
}

/// Creates (CREATE=zero) or opens mailbox NAME, reports READY and waits to
/// be killed (or told `bye`).
fn role_mbx_hold(ctx: &Ctx) {
    let mbx = if ctx.var_or("CREATE", "") == "zero" {
        MailboxBuilder::new()
            .name(ctx.name())
            .buffering(Buffering::Zero)
            .backend(Backend::Shm)
            .create(Access::SendRecv)
            .expect("create")
    } else {
        open_mailbox(ctx, Access::SendRecv)
    };
    ctx.report("READY");
    let _ = ctx.next_command(PEER_WAIT);
    drop(mbx);
}

/// `try_send`s messages of SIZE bytes to mailbox NAME until one is refused;
/// reports `FILLED <accepted> <bytes_in_use> <refusal kind>`.
fn role_fill(ctx: &Ctx) {
    let size = ctx.u64("SIZE") as usize;
    let mut mbx = open_mailbox(ctx, Access::Send);
    let mut n = 0u64;
    let end = loop {
        match mbx.try_send(message(5, n, size)) {
            Ok(()) => n += 1,
            other => break send_kind(&other),
        }
    };
    ctx.report(&format!("FILLED {n} {} {end}", mbx.bytes_in_use()));
    ctx.command("bye", PEER_WAIT);
}

// ---------------------------------------------------------------------------
// 1. A sender killed mid-copy
// ---------------------------------------------------------------------------

/// One `recv_with_timeout(50 ms)` of test 1: checks the message and its
/// sender's order; Some(true) for a message, Some(false) for a timeout.
fn take(mbx: &mut Mailbox, next: &mut [u64; 3], late: &mut Duration, trial: u64) -> bool {
    let timeout = Duration::from_millis(50);
    let t = Instant::now();
    let r = mbx.recv_with_timeout(timeout, |m, _| m.to_vec());
    *late = (*late).max(t.elapsed().saturating_sub(timeout));
    match r {
        Ok(m) => {
            let (id, seq) = parse(&m);
            assert!(id == 1 || id == 2, "unknown sender {id}");
            assert_eq!(
                seq, next[id as usize],
                "trial {trial}: sender {id}: message {seq} where {} was due",
                next[id as usize]
            );
            next[id as usize] += 1;
            true
        }
        Err(RecvError::Timeout) => false,
        Err(e) => panic!("trial {trial}: receive failed: {e}"),
    }
}

/// Two processes send 1 MiB messages to a `Bounded(8)` mailbox that this
/// process drains with `recv_with_timeout(50 ms)`; one sender is SIGKILLed
/// 0-50 ms after its first send, mostly in the middle of a copy. Every
/// message of the survivor arrives, in order, none damaged; the killed
/// sender's accepted messages arrive in order and its unfinished one never
/// does; no receive returns late because of the hole. Twenty trials (the
/// defect lost messages in 3 of 5 of the trials, and in at least
/// one of these twenty in each run against the old code).
#[test]
fn d1_killed_mailbox_sender_mid_copy() {
    const SIZE: usize = 1 << 20;
    const SURVIVOR_SENDS: u64 = 300;
    for trial in 0..20u64 {
        let name = unique(&format!("d1-{trial}"));
        let _s = Sweep(name.clone());
        let mut mbx = MailboxBuilder::new()
            .name(&name)
            .buffering(Buffering::Bounded(8))
            .slot_size(SIZE as u32)
            .backend(Backend::Shm)
            .create(Access::Recv)
            .unwrap();
        let env = |id: u32| {
            vec![
                ("NAME", name.clone()),
                ("ID", id.to_string()),
                ("SIZE", SIZE.to_string()),
                ("COUNT", SURVIVOR_SENDS.to_string()),
            ]
        };
        let mut victim = Peer::spawn("t_send_forever", &env(1));
        let mut survivor = Peer::spawn("t_send_count", &env(2));
        let mut next = [0u64; 3];
        let mut late = Duration::ZERO;
        // Both send at once from here; keep receiving meanwhile.
        let deadline = Instant::now() + PEER_WAIT;
        loop {
            assert!(Instant::now() < deadline, "the victim never started");
            take(&mut mbx, &mut next, &mut late, trial);
            match victim.poll() {
                Some(l) if l == "STARTED" => break,
                Some(l) => panic!("victim: {l}"),
                None => {}
            }
        }
        let kill_at = Instant::now() + Duration::from_millis(trial * 7 % 50);
        while Instant::now() < kill_at {
            take(&mut mbx, &mut next, &mut late, trial);
        }
        victim.kill();
        let deadline = Instant::now() + Duration::from_secs(60);
        while next[2] < SURVIVOR_SENDS {
            assert!(
                Instant::now() < deadline,
                "trial {trial}: the survivor's messages stopped at {} of {SURVIVOR_SENDS}",
                next[2]
            );
            take(&mut mbx, &mut next, &mut late, trial);
        }
        survivor.expect("SENT", PEER_WAIT);
        // Whatever the victim had accepted is still queued: take it.
        while take(&mut mbx, &mut next, &mut late, trial) {}
        println!(
            "trial {trial}: survivor {} of {SURVIVOR_SENDS} delivered in order; victim {} \
             accepted and delivered before its death; latest receive {late:?} past its \
             50 ms deadline",
            next[2], next[1]
        );
        assert!(
            late < LATE,
            "trial {trial}: a receive returned {late:?} late"
        );
        survivor.wait_success(PEER_WAIT);
        drop(mbx);
    }
}

// ---------------------------------------------------------------------------
// 2. Floods and stale turns
// ---------------------------------------------------------------------------

/// Runs `t_timed` as KIND against NAME while `hostile` does its worst;
/// checks every call ended within [`LATE`] of its deadline and that a
/// parked waiter used at most half a core.
fn timed_victim(kind: &str, name: &str, ms: u64, hostile: impl FnOnce() -> Option<Flood>) {
    let mut p = Peer::spawn(
        "t_timed",
        &[
            ("KIND", kind.into()),
            ("NAME", name.into()),
            ("WAIT", "park".into()),
            ("MS", ms.to_string()),
            ("ROUNDS", "6".into()),
        ],
    );
    p.expect("READY", PEER_WAIT);
    let flood = hostile();
    p.say("go");
    let out = p.expect("TIMED", PEER_WAIT);
    let writes = flood.map(Flood::stop);
    p.say("bye");
    p.wait_success(PEER_WAIT);
    let f: Vec<&str> = out.split_whitespace().collect();
    let late = Duration::from_micros(f[0].parse().unwrap());
    let cpu_permille: u64 = f[1].parse().unwrap();
    println!(
        "{kind}: {ms} ms timed calls ended at most {late:?} late, {}% CPU, results {} \
         (hostile writes: {writes:?})",
        cpu_permille / 10,
        f[2]
    );
    assert!(late < LATE, "{kind}: a timed call returned {late:?} late");
    assert!(
        cpu_permille < 500,
        "{kind}: a parked waiter used {}% of a core",
        cpu_permille / 10
    );
    assert!(
        !f[2].contains("Ok"),
        "{kind}: a message out of nothing: {}",
        f[2]
    );
}

/// A peer that keeps writing 0xfffffffe into the doorbell a timed call
/// waits on (with a wake each time) cannot keep it past its deadline: link
/// receive and send, mailbox receive, domain `recv_any` and `recv_from`.
/// The defect: 21.4 s for a 100 ms receive after one write, never with a
/// peer that keeps writing.
#[test]
fn d2_doorbell_flood_keeps_no_call_past_its_deadline() {
    use hwlink_hw::hwl_spsc_ring;
    let name = unique("d2l");
    let _s = Sweep(name.clone());
    let tx = hwlink::LinkBuilder::new(&name)
        .backend(Backend::Shm)
        .create_sender()
        .unwrap();
    timed_victim("link-recv", &name, 100, || {
        Some(Flood::start(&name, |_| {
            vec![RING + offset_of!(hwl_spsc_ring, not_empty) + COUNT]
        }))
    });
    drop(tx);

    let name = unique("d2s");
    let _s = Sweep(name.clone());
    let rx = hwlink::LinkBuilder::new(&name)
        .backend(Backend::Shm)
        .capacity(2)
        .create_receiver()
        .unwrap();
    timed_victim("link-send", &name, 100, || {
        Some(Flood::start(&name, |_| {
            vec![RING + offset_of!(hwl_spsc_ring, not_full) + COUNT]
        }))
    });
    drop(rx);

    let name = unique("d2m");
    let _s = Sweep(name.clone());
    let mbx = MailboxBuilder::new()
        .name(&name)
        .backend(Backend::Shm)
        .create(Access::Send)
        .unwrap();
    let region = format!("mbx.{name}");
    timed_victim("mailbox", &name, 100, || {
        Some(Flood::start(&region, |raw| {
            vec![mailbox_ctl(raw) + offset_of!(hwl_mailbox, not_empty) + COUNT]
        }))
    });
    drop(mbx);

    let name = unique("d2d");
    let _s = Sweep(name.clone());
    let me = Domain::builder(&name)
        .backend(Backend::Shm)
        .join("hostile")
        .unwrap();
    let domain = name.clone();
    timed_victim("member", &name, 100, || {
        Some(Flood::start(&domain, |raw| {
            let dir = objects(raw, hwlink_hw::HWL_OBJ_DOMAIN)[0];
            let n = raw.get32(dir + offset_of!(hwl_domain, max_members)) as usize;
            let members = dir + raw.get64(dir + offset_of!(hwl_domain, members_offset)) as usize;
            (0..n)
                .map(|i| {
                    members + i * size_of::<hwl_member>() + offset_of!(hwl_member, inbox) + COUNT
                })
                .collect()
        }))
    });
    me.leave();
}

/// A mailbox whose `enqueue_pos` says a message is queued while the slot's
/// turn says it is not (a stale turn, or a hole): timed receives end at
/// their deadline, without spinning. The defect: `recv_with_timeout(50 ms)`
/// still spinning at 100% CPU after 4 s.
#[test]
fn d2_stale_turn_keeps_no_receive_past_its_deadline() {
    let name = unique("d2t");
    let _s = Sweep(name.clone());
    let mbx = MailboxBuilder::new()
        .name(&name)
        .backend(Backend::Shm)
        .create(Access::Send)
        .unwrap();
    let region = format!("mbx.{name}");
    timed_victim("mailbox", &name, 50, || {
        let raw = RawRegion::open(&region);
        let ring = mpmc_ring(&raw);
        let deq = raw.get64(ring + offset_of!(hwl_mpmc_ring, dequeue_pos));
        raw.set64(ring + offset_of!(hwl_mpmc_ring, enqueue_pos), deq + 1);
        None
    });
    drop(mbx);
}

// ---------------------------------------------------------------------------
// 3. Positions at u64::MAX
// ---------------------------------------------------------------------------

fn try_victim(kind: &str, name: &str, hostile: impl FnOnce()) -> Vec<String> {
    let mut p = Peer::spawn("t_try", &[("KIND", kind.into()), ("NAME", name.into())]);
    p.expect("READY", PEER_WAIT);
    hostile();
    p.say("go");
    let out = p.expect("TRY", PEER_WAIT);
    p.say("bye");
    p.wait_success(PEER_WAIT);
    println!("{kind} {name}: {out}");
    out.split_whitespace().map(str::to_string).collect()
}

/// `dequeue_pos`, `enqueue_pos` or `last_segment` at `u64::MAX`: every call
/// on the mailbox that reads the word, and a member's receive on an
/// unbounded domain link, report `Corrupt` (the test binary is a debug build: an unchecked `+ 1`
/// would panic). The defect: "attempt to add with overflow".
#[test]
fn d3_positions_at_u64_max_are_corrupt_not_a_panic() {
    let ring_word = |field: usize| {
        move |raw: &RawRegion| {
            let ring = mpmc_ring(raw);
            raw.set64(ring + field, u64::MAX);
        }
    };
    for (tag, field) in [
        ("deq", offset_of!(hwl_mpmc_ring, dequeue_pos)),
        ("enq", offset_of!(hwl_mpmc_ring, enqueue_pos)),
    ] {
        let name = unique(&format!("d3{tag}"));
        let _s = Sweep(name.clone());
        let mut mbx = MailboxBuilder::new()
            .name(&name)
            .backend(Backend::Shm)
            .create(Access::SendRecv)
            .unwrap();
        mbx.send(message(1, 0, 32)).unwrap();
        let region = format!("mbx.{name}");
        let r = try_victim("mailbox", &name, || {
            ring_word(field)(&RawRegion::open(&region))
        });
        // The calls that read the word report it; the others may work.
        let (recvs, sends) = r.split_at(2);
        let hit = if tag == "deq" { recvs } else { sends };
        assert!(
            tag == "deq" || recvs[1] != "Ok",
            "{tag} at u64::MAX: a message out of nothing: {r:?}"
        );
        assert!(
            hit.iter().all(|k| k == "Corrupt"),
            "{tag} at u64::MAX: {r:?}"
        );
        drop(mbx);
    }

    // An unbounded mailbox whose first segment is full, so that a send must
    // chain a segment numbered last_segment + 1.
    let name = unique("d3last");
    let _s = Sweep(name.clone());
    let mut mbx = MailboxBuilder::new()
        .name(&name)
        .backend(Backend::Shm)
        .slot_size(64 << 10)
        .buffering(Buffering::Unbounded {
            byte_limit: 64 << 20,
        })
        .create(Access::Send)
        .unwrap();
    // No segment made ahead (hw/SPEC.md §11): the victim's send must make
    // one itself, which reads last_segment.
    mbx.make_segments_inline();
    let region = format!("mbx.{name}");
    let raw = RawRegion::open(&region);
    let ring = mpmc_ring(&raw);
    let cap = u64::from(raw.get32(ring + offset_of!(hwl_mpmc_ring, capacity)));
    for seq in 0..cap {
        mbx.try_send(message(1, seq, 64)).unwrap();
    }
    assert_eq!(mbx.bytes_in_use(), raw.len() as u64, "still one segment");
    let ctl = mailbox_ctl(&raw);
    let r = try_victim("mailbox", &name, || {
        raw.set64(ctl + offset_of!(hwl_mailbox, last_segment), u64::MAX);
        raw.set64(ring + offset_of!(hwl_mpmc_ring, dequeue_pos), u64::MAX);
    });
    assert!(r.iter().all(|k| k == "Corrupt"), "last_segment: {r:?}");
    drop((raw, mbx));

    // An unbounded domain link.
    let name = unique("d3dom");
    let _s = Sweep(name.clone());
    let mut me = Domain::builder(&name)
        .backend(Backend::Shm)
        .buffering(Buffering::Unbounded {
            byte_limit: 64 << 20,
        })
        .join("hostile")
        .unwrap();
    let mut p = Peer::spawn(
        "t_try",
        &[("KIND", "member".into()), ("NAME", name.clone())],
    );
    let deadline = Instant::now() + PEER_WAIT;
    loop {
        match me.send("victim", message(2, 0, 32)) {
            Ok(()) => break,
            Err(SendError::NoSuchMember { .. }) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5))
            }
            Err(e) => panic!("send to victim: {e}"),
        }
    }
    p.expect("READY", PEER_WAIT);
    me.send("victim", message(2, 1, 32)).unwrap();
    for r in admin::list().unwrap() {
        if r.name.starts_with(&format!("{name}.")) {
            let raw = RawRegion::open(&r.name);
            for ring in objects(&raw, hwlink_hw::HWL_OBJ_MPMC_RING) {
                raw.set64(ring + offset_of!(hwl_mpmc_ring, dequeue_pos), u64::MAX);
            }
        }
    }
    p.say("go");
    let out = p.expect("TRY", PEER_WAIT);
    p.say("bye");
    p.wait_success(PEER_WAIT);
    println!("domain link: {out}");
    let r: Vec<&str> = out.split_whitespace().collect();
    // The member reports the corrupt link once and drops it (with its
    // files), so that one broken link does not stop `recv_any` for the
    // others; later receives find nothing from that member, never a
    // message out of nothing.
    assert_eq!(r[0], "Corrupt", "receives on a link at u64::MAX: {r:?}");
    assert!(
        r[1..4].iter().all(|k| *k != "Ok"),
        "receives on a link at u64::MAX: {r:?}"
    );
    me.leave();
}

// ---------------------------------------------------------------------------
// 4. Removal while draining
// ---------------------------------------------------------------------------

/// An unbounded mailbox is removed by its creator while a receiver drains
/// it with `recv_timeout(100 ms)`: the receiver gets every message (20,000,
/// over several segments), in order, then `Disconnected`, and no call
/// returns late. The defect: 3.4-3.9 s late, a spurious `Corrupt`, about
/// 4,000 of 19,717 messages lost.
#[test]
fn d4_unbounded_mailbox_removed_while_draining() {
    const N: u64 = 20_000;
    let name = unique("d4");
    let _s = Sweep(name.clone());
    let mbx = MailboxBuilder::new()
        .name(&name)
        .backend(Backend::Shm)
        .buffering(Buffering::Unbounded {
            byte_limit: 256 << 20,
        })
        .create(Access::Send)
        .unwrap();
    let env = [
        ("NAME", name.clone()),
        ("ID", "0".into()),
        ("SIZE", "0".into()),
        ("COUNT", N.to_string()),
    ];
    let mut producer = Peer::spawn("t_send_count", &env);
    producer.expect("SENT", PEER_WAIT);
    producer.wait_success(PEER_WAIT);
    let segments = admin::list()
        .unwrap()
        .iter()
        .filter(|r| r.name.starts_with(&format!("mbx.{name}.s")))
        .count();
    let mut drainer = Peer::spawn("t_drain", &env);
    drainer.expect("READY", PEER_WAIT);
    std::thread::sleep(Duration::from_millis(5));
    mbx.remove().unwrap();
    let out = drainer.expect("DRAINED", PEER_WAIT);
    drainer.wait_success(PEER_WAIT);
    let f: Vec<&str> = out.split_whitespace().collect();
    let late = Duration::from_micros(f[1].parse().unwrap());
    println!(
        "removed with {N} queued over {} segments: drained {}, latest receive {late:?} late, \
         then {}",
        segments + 1,
        f[0],
        f[2]
    );
    assert!(segments >= 1, "the test should span several segments");
    assert_eq!(f[0], N.to_string(), "messages lost");
    assert_eq!(f[2], "Disconnected");
    assert!(late < LATE, "a receive returned {late:?} late");
    assert!(
        regions_named(&format!("mbx.{name}")).is_empty(),
        "files left after the last detach"
    );
}

fn regions_named(prefix: &str) -> Vec<String> {
    admin::list()
        .unwrap()
        .into_iter()
        .map(|r| r.name)
        .filter(|n| n.starts_with(prefix))
        .collect()
}

// ---------------------------------------------------------------------------
// 5. Truncation
// ---------------------------------------------------------------------------

fn truncate(path: &Path, len: u64) {
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(len)
        .unwrap();
}

/// A region file cut to one page under a link's receiver and a mailbox's
/// users (another process, and this one): they get `Corrupt` or
/// `Disconnected`, never SIGBUS. On tmpfs, and on hugetlbfs when hugepages
/// are reserved. The defect: SIGBUS killed every attached process.
#[test]
fn d5_truncated_region_is_corrupt_not_sigbus() {
    let mut backends = vec![Backend::Shm];
    match hwlink::LinkBuilder::new(unique("d5probe"))
        .backend(Backend::Hugepage)
        .create_sender()
    {
        Ok(_) => backends.push(Backend::Hugepage),
        Err(e) => println!("SKIPPED the hugetlbfs half: {e}"),
    }
    for backend in backends {
        let tag = if backend == Backend::Hugepage {
            "h"
        } else {
            "s"
        };
        // A link.
        let name = unique(&format!("d5l{tag}"));
        let _s = Sweep(name.clone());
        let mut tx = hwlink::LinkBuilder::new(&name)
            .backend(backend)
            .create_sender()
            .unwrap();
        let mut p = Peer::spawn(
            "t_truncated",
            &[("KIND", "link-recv".into()), ("NAME", name.clone())],
        );
        p.expect("READY", PEER_WAIT);
        let path = region(&name).unwrap().path;
        // tmpfs: the ring is cut off; hugetlbfs (whose pages are 2 MiB, so
        // the whole link is one): all of it.
        let page = if backend == Backend::Hugepage {
            0
        } else {
            4096
        };
        truncate(&path, page);
        let ended = p.expect("ENDED", PEER_WAIT);
        p.wait_success(PEER_WAIT);
        // The sender's fast path trusts its cached free slots; its full
        // checks (at least every 256 sends, and whenever the cache runs
        // out) look at the mapping.
        let mut mine = String::new();
        for _ in 0..1024 {
            mine = send_kind(&tx.try_send(b"after"));
            if mine != "Ok" && mine != "Full" {
                break;
            }
        }
        println!("{backend:?} link: receiver {ended}, sender {mine}");
        assert!(
            ended == "Corrupt" || ended == "Disconnected",
            "receiver: {ended}"
        );
        assert!(
            mine == "Corrupt" || mine == "Disconnected",
            "sender: {mine}"
        );
        drop(tx);

        // A mailbox.
        let name = unique(&format!("d5m{tag}"));
        let _s = Sweep(name.clone());
        let mut mbx = MailboxBuilder::new()
            .name(&name)
            .backend(backend)
            .create(Access::SendRecv)
            .unwrap();
        let mut p = Peer::spawn(
            "t_truncated",
            &[("KIND", "mailbox".into()), ("NAME", name.clone())],
        );
        p.expect("READY", PEER_WAIT);
        truncate(&region(&format!("mbx.{name}")).unwrap().path, page);
        let ended = p.expect("ENDED", PEER_WAIT);
        p.wait_success(PEER_WAIT);
        let mine = kind(&mbx.try_recv());
        println!("{backend:?} mailbox: other process {ended}, this one {mine}");
        assert!(ended.ends_with("Corrupt"), "other process: {ended}");
        assert_eq!(mine, "Corrupt");
        drop(mbx);
    }
}

// ---------------------------------------------------------------------------
// 6. Another PID namespace
// ---------------------------------------------------------------------------

/// Why `unshare --pid` cannot run here, if it cannot.
fn pid_namespace_unavailable() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("needs root for `unshare --pid`".into());
    }
    match std::process::Command::new("unshare")
        .args(["--pid", "--fork", "--kill-child", "true"])
        .status()
    {
        Ok(s) if s.success() => None,
        Ok(s) => Some(format!(
            "`unshare --pid --fork --kill-child true` failed: {s}"
        )),
        Err(e) => Some(format!("no `unshare` (util-linux): {e}")),
    }
}

const UNSHARE: [&str; 4] = ["unshare", "--pid", "--fork", "--kill-child"];

/// A link's sender and a domain member in another PID namespace (as in a
/// container sharing /dev/shm; there they are pid 1): while they live they
/// are alive to us (pid 1 here is init, which a pid check could not tell
/// apart), and once SIGKILLed the receiver gets `Disconnected`, the member
/// `MemberGone`, within a few milliseconds. The defect: liveness by pid.
#[test]
fn d6_peer_in_another_pid_namespace() {
    if let Some(why) = pid_namespace_unavailable() {
        println!("SKIPPED: {why}");
        return;
    }
    // A link.
    let name = unique("d6l");
    let _s = Sweep(name.clone());
    let mut rx = hwlink::LinkBuilder::new(&name)
        .backend(Backend::Shm)
        .wait(WaitStrategy::Park)
        .create_receiver()
        .unwrap();
    let mut p = Peer::spawn_wrapped(&UNSHARE, "t_link_send_hold", &[("NAME", name.clone())]);
    let pid_there = p.expect("SENT", PEER_WAIT);
    assert_eq!(pid_there, "1", "the peer runs in its own pid namespace");
    assert_eq!(rx.recv_timeout(PEER_WAIT).unwrap(), b"hello");
    assert_eq!(
        rx.recv_timeout(Duration::from_millis(300)),
        Err(RecvError::Timeout),
        "a live peer in another namespace was judged dead"
    );
    p.kill();
    let killed = Instant::now();
    let r = rx.recv_timeout(Duration::from_secs(10));
    let link_noticed = killed.elapsed();
    assert_eq!(r, Err(RecvError::Disconnected));
    drop(rx);

    // A domain member.
    let name = unique("d6d");
    let _s = Sweep(name.clone());
    let mut me = Domain::builder(&name)
        .backend(Backend::Shm)
        .wait(WaitStrategy::Park)
        .join("here")
        .unwrap();
    let mut p = Peer::spawn_wrapped(
        &UNSHARE,
        "t_member",
        &[
            ("NAME", name.clone()),
            ("MEMBER", "there".into()),
            ("TO", "here".into()),
        ],
    );
    p.expect("JOINED", PEER_WAIT);
    p.expect("SENT", PEER_WAIT);
    parse(&me.recv_from_timeout("there", PEER_WAIT).unwrap());
    assert_eq!(
        me.recv_from_timeout("there", Duration::from_millis(300)),
        Err(RecvError::Timeout),
        "a live member in another namespace was judged dead"
    );
    p.kill();
    let killed = Instant::now();
    let r = me.recv_from_timeout("there", Duration::from_secs(10));
    let member_noticed = killed.elapsed();
    assert!(
        matches!(r, Err(RecvError::MemberGone { .. })),
        "after the kill: {r:?}"
    );
    println!(
        "peer in another pid namespace killed: link receiver noticed in {link_noticed:?}, \
         domain member in {member_noticed:?}"
    );
    assert!(link_noticed < Duration::from_secs(2) && member_noticed < Duration::from_secs(2));
    me.leave();
}

// ---------------------------------------------------------------------------
// 8. rm --stale
// ---------------------------------------------------------------------------

/// A private shm directory for processes of one test (and `hwlink` runs).
struct PrivateDir(PathBuf);

impl PrivateDir {
    fn new(tag: &str) -> PrivateDir {
        let d = PathBuf::from(format!(
            "/dev/shm/hwlink-trust-{}-{tag}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        PrivateDir(d)
    }
    fn files(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(&self.0)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }
    fn hwlink(&self, args: &[&str]) -> String {
        let out = std::process::Command::new(hwlink_bin::path())
            .args(args)
            .env("HWLINK_SHM_DIR", &self.0)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "hwlink {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for PrivateDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A peer whose regions (and liveness file) live in `dir`.
fn spawn_in(dir: &PrivateDir, role: &str, env: &[(&str, String)]) -> Peer {
    Peer::spawn_wrapped(
        &["env", &format!("HWLINK_SHM_DIR={}", dir.0.display())],
        role,
        env,
    )
}

/// `hwlink rm --stale` keeps a zero-capacity mailbox whose creator is dead
/// while another process is attached (and, mailboxes being persistent,
/// after that too, until `hwlink rm`); it reclaims the unbounded links of a domain whose members all died,
/// with their segments, and the dead processes' liveness files: nothing is
/// left. The defect: the attached mailbox deleted, domain links never
/// reclaimed.
#[test]
fn d8_rm_stale_keeps_what_the_living_hold() {
    let dir = PrivateDir::new("d8");
    let name = unique("d8z");
    let mut creator = spawn_in(
        &dir,
        "t_mbx_hold",
        &[("NAME", name.clone()), ("CREATE", "zero".into())],
    );
    creator.expect("READY", PEER_WAIT);
    let mut user = spawn_in(&dir, "t_mbx_hold", &[("NAME", name.clone())]);
    user.expect("READY", PEER_WAIT);
    creator.kill();
    let out = dir.hwlink(&["rm", "--stale"]);
    let files = dir.files();
    println!("creator dead, user attached: rm --stale said {out:?}; files {files:?}");
    assert!(
        files.iter().any(|f| f.contains(&format!("mbx.{name}"))),
        "rm --stale removed a mailbox a live process is attached to: {files:?}"
    );
    user.kill();
    // A mailbox outlives the processes that use it (as a POSIX message
    // queue does) until it is removed: `rm --stale` keeps it and removes
    // the dead processes' liveness files; `hwlink rm` removes it.
    let out = dir.hwlink(&["rm", "--stale"]);
    let files = dir.files();
    println!("both dead: rm --stale said {out:?}; files {files:?}");
    assert_eq!(files, vec![format!("hwlink.mbx.{name}")]);
    dir.hwlink(&["rm", &format!("mbx.{name}")]);
    assert!(dir.files().is_empty(), "{:?}", dir.files());

    // A domain with unbounded links and several segments per link.
    let domain = unique("d8d");
    let member = |who: &str, to: &str| {
        vec![
            ("NAME", domain.clone()),
            ("MEMBER", who.to_string()),
            ("TO", to.to_string()),
            ("BUFFERING", "unbounded".into()),
            ("SIZE", (64 << 10).to_string()),
            ("CAPACITY", "8".into()),
            ("COUNT", "200".into()),
        ]
    };
    let mut a = spawn_in(&dir, "t_member", &member("a", "b"));
    let mut b = spawn_in(&dir, "t_member", &member("b", "a"));
    a.expect("JOINED", PEER_WAIT);
    b.expect("JOINED", PEER_WAIT);
    a.expect("SENT", PEER_WAIT);
    b.expect("SENT", PEER_WAIT);
    let before = dir.files();
    a.kill();
    b.kill();
    let out = dir.hwlink(&["rm", "--stale"]);
    let after = dir.files();
    println!(
        "domain of two dead members: {} files {before:?}; rm --stale said {out:?}; left {after:?}",
        before.len()
    );
    assert!(
        before.iter().filter(|f| f.contains(&domain)).count() > 3,
        "expected a domain, links and segments: {before:?}"
    );
    assert!(after.is_empty(), "rm --stale left {after:?}");
}

// ---------------------------------------------------------------------------
// 9. What users expect
// ---------------------------------------------------------------------------

/// A timed `recv_from(Q)` waits for Q to join (Q starts 300 ms later);
/// `try_recv_from` of nobody says `NoSuchMember`; a timed one for a member
/// that never joins ends at its deadline. The defect: `NoSuchMember` at
/// once, so pipelines had to start in order.
#[test]
fn d9_recv_from_waits_for_the_member_to_join() {
    let name = unique("d9j");
    let _s = Sweep(name.clone());
    let mut me = Domain::builder(&name)
        .backend(Backend::Shm)
        .join("sink")
        .unwrap();
    assert!(matches!(
        me.try_recv_from("late"),
        Err(RecvError::NoSuchMember { .. })
    ));
    let mut p = Peer::spawn(
        "t_member",
        &[
            ("NAME", name.clone()),
            ("MEMBER", "late".into()),
            ("TO", "sink".into()),
            ("DELAY", "300".into()),
        ],
    );
    let t0 = Instant::now();
    let m = me.recv_from_timeout("late", PEER_WAIT).unwrap();
    println!(
        "recv_from(late) returned its message after {:?}",
        t0.elapsed()
    );
    parse(&m);
    p.expect("JOINED", PEER_WAIT);
    p.expect("SENT", PEER_WAIT);
    let t0 = Instant::now();
    let r = me.recv_from_timeout("never", Duration::from_millis(100));
    let took = t0.elapsed();
    assert_eq!(r, Err(RecvError::Timeout), "a member that never joins");
    assert!(took >= Duration::from_millis(100) && took < Duration::from_millis(100) + LATE);
    p.say("bye");
    p.wait_success(PEER_WAIT);
    me.leave();
}

/// An unbounded mailbox with a 16 MiB limit and 64-byte messages takes
/// messages until its segments fill the limit (at least 15 of the 16 MiB;
/// the limit counts segment memory, as the README says), not 4 MiB. Once a
/// receiver drains it, the large segments are given back: what stays is
/// at most the first segment and one small one. The defect: stopped at
/// 4.0 MiB; a drained queue kept its last 64 MiB segment.
#[test]
fn d9_byte_limit_is_filled_and_drained_segments_given_back() {
    const LIMIT: u64 = 16 << 20;
    let name = unique("d9b");
    let _s = Sweep(name.clone());
    let mut mbx = MailboxBuilder::new()
        .name(&name)
        .backend(Backend::Shm)
        .slot_size(64)
        .buffering(Buffering::Unbounded { byte_limit: LIMIT })
        .create(Access::Recv)
        .unwrap();
    let first = mbx.bytes_in_use();
    let mut p = Peer::spawn("t_fill", &[("NAME", name.clone()), ("SIZE", "64".into())]);
    let out = p.expect("FILLED", PEER_WAIT);
    p.say("bye");
    p.wait_success(PEER_WAIT);
    let f: Vec<&str> = out.split_whitespace().collect();
    let (accepted, in_use): (u64, u64) = (f[0].parse().unwrap(), f[1].parse().unwrap());
    let files: u64 = admin::list()
        .unwrap()
        .iter()
        .filter(|r| r.name.starts_with(&format!("mbx.{name}")))
        .map(|r| r.size)
        .sum();
    println!(
        "limit {LIMIT}: accepted {accepted} messages ({} payload bytes), segments {in_use} \
         bytes ({files} in files), refused with {}",
        accepted * 64,
        f[2]
    );
    assert_eq!(f[2], "MemoryLimit");
    assert!(in_use <= LIMIT, "past the limit: {in_use}");
    assert!(in_use >= LIMIT / 16 * 15, "stopped at {in_use} of {LIMIT}");
    for seq in 0..accepted {
        let m = mbx.try_recv().unwrap();
        assert_eq!(parse(&m), (5, seq));
    }
    assert_eq!(mbx.try_recv(), Err(RecvError::Empty));
    let left = mbx.bytes_in_use();
    let left_files: u64 = admin::list()
        .unwrap()
        .iter()
        .filter(|r| r.name.starts_with(&format!("mbx.{name}")))
        .map(|r| r.size)
        .sum();
    println!("drained: {left} bytes of segments in use ({left_files} in files); the first segment is {first}");
    assert!(
        left <= first * 2 + (1 << 20),
        "a drained queue keeps {left} bytes"
    );
    assert_eq!(left, left_files, "bytes_in_use and the files disagree");
}

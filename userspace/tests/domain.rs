//! Domains between real processes: joining (and the duplicate-name race),
//! `hwlink ls`, send / recv_from / recv_any in every form with exactly-once
//! in-order checks, the simultaneous-first-send race (one link per pair),
//! leaving and SIGKILL (clear errors, reaping, reclaimed files, name reuse),
//! independence of domains, bounded back-pressure, and no stale files.
//! The two races are also stressed between threads, for many more rounds.
//!
//! The test binary re-executes itself as the peer process (`peer_entry`,
//! with the roles below). `.config/nextest.toml` runs this binary in the
//! serial group; with `cargo test`, pass `--test-threads=1`.

mod common {
    pub mod child;
    pub mod drive;
    pub mod kill;
    pub mod msg;
    pub mod peer;
    pub mod peer_pid;
    pub mod raw;
    pub mod raw64;
    pub mod raw_read;
    pub mod raw_write;
    pub mod shm_dir;
    pub mod watchdog;
}
mod hwlink_bin;

use common::child::{Ctx, PEER_WAIT};
use common::kill::kill_later;
use common::msg::{check, fill, MAX_MSG};
use common::peer::Peer;
use common::raw::RawRegion;
use common::shm_dir::shm_dir;
use common::watchdog::Watchdog;
use hwlink::{Backend, Domain, DomainBuilder, Member, RecvError, SendError, WaitStrategy};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// The bound on any single wait (a peer's too).
const T: Duration = PEER_WAIT;

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// A domain name unique to this process and test (at most 24 characters).
fn unique(tag: &str) -> String {
    let name = format!("d{}-{tag}", std::process::id());
    assert!(
        name.len() <= hwlink::MAX_DOMAIN_NAME_LEN,
        "{name} is too long"
    );
    name
}

fn builder(domain: &str, wait: WaitStrategy, capacity: u32) -> DomainBuilder {
    Domain::builder(domain)
        .backend(Backend::Shm)
        .capacity(capacity)
        .slot_size(256)
        .wait(wait)
}

/// The regions of `domain`: the domain itself and its links (`domain.*`).
fn regions_of(domain: &str) -> Vec<String> {
    hwlink::admin::list()
        .expect("admin::list")
        .into_iter()
        .map(|r| r.name)
        .filter(|n| n == domain || n.starts_with(&format!("{domain}.")))
        .collect()
}

fn links_of(domain: &str) -> Vec<String> {
    regions_of(domain)
        .into_iter()
        .filter(|n| n != domain)
        .collect()
}

/// Also checks the directories themselves, in case listing missed a file.
fn assert_no_files(domain: &str) {
    let left = regions_of(domain);
    assert!(left.is_empty(), "regions left behind: {left:?}");
    let mut dirs = vec![shm_dir()];
    if let Some(d) = std::env::var_os("HWLINK_HUGETLBFS_DIR") {
        dirs.push(d.into());
    }
    dirs.push("/dev/hugepages".into());
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            assert!(
                !name.starts_with(&format!("hwlink.{domain}")),
                "stale file {} in {}",
                name,
                dir.display()
            );
        }
    }
}

/// Removes whatever a failed test left of `domain`.
struct Cleanup(String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for r in regions_of(&self.0) {
            let _ = hwlink::admin::remove(&r);
        }
    }
}

fn spawn(role: &str, domain: &str, name: &str, extra: &[(&str, String)]) -> Peer {
    let mut env = vec![("DOMAIN", domain.to_string()), ("NAME", name.to_string())];
    env.extend(extra.iter().map(|(k, v)| (*k, v.clone())));
    Peer::spawn(role, &env)
}

/// Nanoseconds since the epoch (CLOCK_REALTIME, the same in every process).
fn now_ns() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// A barrier for processes: `go <instant>`, a moment a little ahead.
fn go_command() -> String {
    format!("go {}", now_ns() + 20_000_000)
}

/// Waits for a `go <instant>` command, then spins until that instant so
/// that every process released by it starts within microseconds.
fn barrier(ctx: &Ctx) {
    let c = next(ctx);
    let at: u128 = c
        .strip_prefix("go ")
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("peer: expected `go <ns>`, got `{c}`"));
    while now_ns() < at {
        std::hint::spin_loop();
    }
}

fn member_names(m: &Member) -> Vec<String> {
    let mut v: Vec<_> = m.members().into_iter().map(|i| i.name).collect();
    v.sort();
    v
}

// ---------------------------------------------------------------------------
// Peer side
// ---------------------------------------------------------------------------

#[test]
fn peer_entry() {
    common::child::peer_entry_with(|role, ctx| {
        match role {
            "join_wait" => role_join_wait(ctx),
            "join_race" => role_join_race(ctx),
            "stream_send" => role_stream_send(ctx),
            "first_send_race" => role_first_send_race(ctx),
            "receive_count" => role_receive_count(ctx),
            "idle_any" => role_idle_any(ctx),
            "send_and_leave" => role_send_and_leave(ctx),
            _ => return false,
        }
        true
    });
}

/// The next command from the parent.
fn next(ctx: &Ctx) -> String {
    ctx.next_command(T)
        .unwrap_or_else(|| panic!("peer: no command within {T:?}"))
}

/// The builder of the peer's domain: DOMAIN, WAIT, CAP.
fn peer_builder(ctx: &Ctx) -> DomainBuilder {
    builder(
        &ctx.var("DOMAIN"),
        ctx.wait(),
        ctx.var_or("CAP", "256").parse().expect("capacity"),
    )
}

/// Joins the peer's domain as NAME (AUTO=1: with the default backend).
fn join(ctx: &Ctx) -> Member {
    if ctx.var_or("AUTO", "0") == "1" {
        return Domain::join(&ctx.var("DOMAIN"), &ctx.name()).expect("join");
    }
    peer_builder(ctx).join(&ctx.name()).expect("join")
}

/// Joins, reports JOINED, then follows commands: `leave` (leave, report
/// LEFT, wait for `exit`), `exit`.
fn role_join_wait(ctx: &Ctx) {
    let m = join(ctx);
    ctx.report(&format!("JOINED {}", std::process::id()));
    let mut m = Some(m);
    loop {
        match next(ctx).as_str() {
            "leave" => {
                m.take().expect("joined").leave();
                ctx.report("LEFT");
            }
            "recv" => {
                let from = ctx.var("FROM");
                let got = m.as_mut().expect("joined").recv_from_timeout(&from, T);
                let got = got.unwrap_or_else(|e| panic!("peer: recv_from: {e}"));
                ctx.report(&format!("GOT {}", String::from_utf8_lossy(&got)));
            }
            "exit" => return,
            other => panic!("peer: unknown command {other}"),
        }
    }
}

/// Waits for `go`, joins under NAME, reports RESULT WON or TAKEN; the winner
/// waits for `leave`.
fn role_join_race(ctx: &Ctx) {
    let b = peer_builder(ctx);
    ctx.report("READY");
    barrier(ctx);
    match b.join(&ctx.name()) {
        Ok(m) => {
            ctx.report("RESULT WON");
            ctx.command("leave", T);
            m.leave();
            ctx.report("LEFT");
        }
        Err(hwlink::OpenError::NameTaken { .. }) => ctx.report("RESULT TAKEN"),
        Err(e) => panic!("peer: join failed unexpectedly: {e}"),
    }
}

/// Sends messages 0..COUNT to TO with MODE (block, try, timeout), then
/// waits for an `ack` message back from TO, reports DONE and leaves.
fn role_stream_send(ctx: &Ctx) {
    let mut m = join(ctx);
    let to = ctx.var("TO");
    let count = ctx.u64("COUNT");
    let mode = ctx.var("MODE");
    ctx.report("JOINED");
    let mut buf = [0u8; MAX_MSG];
    for seq in 0..count {
        let len = fill(seq, &mut buf);
        let msg = &buf[..len];
        let r = match mode.as_str() {
            "block" => m.send(&to, msg),
            "timeout" => m.send_timeout(&to, msg, T),
            "try" => {
                let deadline = Instant::now() + T;
                loop {
                    match m.try_send(&to, msg) {
                        Err(SendError::Full(_)) if Instant::now() < deadline => {
                            std::hint::spin_loop()
                        }
                        other => break other,
                    }
                }
            }
            other => panic!("mode {other}"),
        };
        if let Err(e) = r {
            panic!("peer: sending #{seq} to {to}: {e}");
        }
    }
    let ack = m.recv_from_timeout(&to, T).expect("ack");
    assert_eq!(ack, b"ack");
    ctx.report("DONE");
    m.leave();
}

/// For ROUNDS rounds: joins, reports JOINED, waits for `go`, sends one
/// message to OTHER and receives one from it, reports its link names,
/// waits for `leave`, leaves and reports LEFT.
fn role_first_send_race(ctx: &Ctx) {
    let peer = ctx.var("OTHER");
    let me = ctx.name();
    for round in 0..ctx.u64("ROUNDS") {
        let mut m = join(ctx);
        ctx.report("JOINED");
        barrier(ctx);
        let msg = format!("{me} {round}");
        m.send_timeout(&peer, msg.as_bytes(), T)
            .unwrap_or_else(|e| panic!("peer: round {round}: send: {e}"));
        let got = m
            .recv_from_timeout(&peer, T)
            .unwrap_or_else(|e| panic!("peer: round {round}: recv: {e}"));
        assert_eq!(got, format!("{peer} {round}").as_bytes());
        ctx.report(&format!("LINKS {}", m.link_names().join(",")));
        ctx.command("leave", T);
        m.leave();
        ctx.report("LEFT");
    }
}

/// Joins, reports JOINED, waits for `drain`, then receives COUNT messages
/// from FROM (in order, checked), reports GOT and waits for `exit`.
fn role_receive_count(ctx: &Ctx) {
    let mut m = join(ctx);
    let from = ctx.var("FROM");
    ctx.report("JOINED");
    ctx.command("drain", T);
    let mut scratch = [0u8; MAX_MSG];
    for seq in 0..ctx.u64("COUNT") {
        let msg = m
            .recv_from_timeout(&from, T)
            .unwrap_or_else(|e| panic!("peer: #{seq}: {e}"));
        check(seq, &msg, &mut scratch).unwrap_or_else(|e| panic!("peer: {e}"));
    }
    ctx.report("GOT");
    ctx.command("exit", T);
}

/// Joins, sends messages 0..COUNT to TO (which does not receive yet),
/// leaves, and reports LEFT.
fn role_send_and_leave(ctx: &Ctx) {
    let mut m = join(ctx);
    let to = ctx.var("TO");
    let mut buf = [0u8; MAX_MSG];
    for seq in 0..ctx.u64("COUNT") {
        let len = fill(seq, &mut buf);
        m.send_timeout(&to, &buf[..len], T).expect("send");
    }
    m.leave();
    ctx.report("LEFT");
}

/// Joins, reports JOINED, then waits in recv_any_timeout(MILLIS) and
/// reports what came: TIMEOUT or MSG <sender>.
fn role_idle_any(ctx: &Ctx) {
    let mut m = join(ctx);
    ctx.report(&format!("JOINED {}", member_names(&m).join(",")));
    ctx.command("go", T);
    match m.recv_any_timeout(ctx.millis("MILLIS")) {
        Err(RecvError::Timeout) => ctx.report("TIMEOUT"),
        Ok((from, _)) => ctx.report(&format!("MSG {from}")),
        Err(e) => panic!("peer: recv_any: {e}"),
    }
    ctx.command("exit", T);
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[test]
fn join_shows_members_in_ls_and_leave_removes_everything() {
    let d = unique("ls");
    let _c = Cleanup(d.clone());
    let _dog = Watchdog::new(Duration::from_secs(120), "ls");
    let me = builder(&d, WaitStrategy::SpinPark, 64)
        .join("boss")
        .unwrap();
    let mut child = spawn("join_wait", &d, "worker-1", &[]);
    let pid: u32 = child.expect("JOINED", T).parse().unwrap();
    assert_eq!(member_names(&me), ["boss", "worker-1"]);
    let info = me
        .members()
        .into_iter()
        .find(|m| m.name == "worker-1")
        .unwrap();
    assert_eq!(info.pid, pid);
    assert!(info.alive);

    let out = std::process::Command::new(hwlink_bin::path())
        .arg("ls")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("member `worker-1`: pid {pid}, alive yes")),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "member `boss`: pid {}, alive yes",
            std::process::id()
        )),
        "{text}"
    );

    // The same name cannot join twice.
    match builder(&d, WaitStrategy::SpinPark, 64).join("worker-1") {
        Err(hwlink::OpenError::NameTaken { pid: p, .. }) => assert_eq!(p, pid),
        other => panic!("expected NameTaken, got {other:?}"),
    }

    child.say("leave");
    child.expect("LEFT", T);
    assert_eq!(member_names(&me), ["boss"]);
    child.say("exit");
    child.wait_success(T);
    me.leave();
    assert_no_files(&d);
}

#[test]
fn duplicate_name_race_has_exactly_one_winner() {
    let d = unique("dup");
    let _c = Cleanup(d.clone());
    let _dog = Watchdog::new(Duration::from_secs(240), "dup race");
    for round in 0..20 {
        // Odd rounds: the domain exists already; even: the racers also race
        // to create it.
        let keeper = (round % 2 == 1).then(|| {
            builder(&d, WaitStrategy::SpinPark, 64)
                .join("keeper")
                .unwrap()
        });
        let mut racers: Vec<Peer> = (0..4).map(|_| spawn("join_race", &d, "dup", &[])).collect();
        for r in &mut racers {
            r.expect("READY", T);
        }
        let go = go_command();
        for r in &mut racers {
            r.say(&go);
        }
        let mut winners = Vec::new();
        for (i, r) in racers.iter_mut().enumerate() {
            let line = r.expect("RESULT", T);
            match line.as_str() {
                "WON" => winners.push(i),
                "TAKEN" => {}
                other => panic!("round {round}: racer said {other}"),
            }
        }
        assert_eq!(winners.len(), 1, "round {round}: winners {winners:?}");
        let w = winners[0];
        racers[w].say("leave");
        racers[w].expect("LEFT", T);
        for r in &mut racers {
            r.wait_success(T);
        }
        drop(keeper);
        assert_no_files(&d);
    }
}

/// The parent joins as "rx"; children stream messages to it; the parent
/// receives with `recv` and checks every message per sender.
fn stream(
    tag: &str,
    wait: WaitStrategy,
    senders: &[&str],
    send_mode: &str,
    count: u64,
    recv: &str,
) {
    let d = unique(tag);
    let _c = Cleanup(d.clone());
    let _dog = Watchdog::new(Duration::from_secs(240), tag.to_string());
    let mut me = builder(&d, wait, 256).join("rx").unwrap();
    let mut peers: Vec<Peer> = senders
        .iter()
        .map(|s| {
            spawn(
                "stream_send",
                &d,
                s,
                &[
                    ("TO", "rx".into()),
                    ("COUNT", count.to_string()),
                    ("MODE", send_mode.into()),
                    ("WAIT", wait.to_string()),
                ],
            )
        })
        .collect();
    for p in &mut peers {
        p.expect("JOINED", T);
    }
    let mut next: BTreeMap<String, u64> = senders.iter().map(|s| (s.to_string(), 0)).collect();
    let mut scratch = [0u8; MAX_MSG];
    let total = count * senders.len() as u64;
    let deadline = Instant::now() + Duration::from_secs(200);
    let mut got = 0;
    while got < total {
        assert!(
            Instant::now() < deadline,
            "{tag}: stuck after {got} messages"
        );
        let (from, msg) = match recv {
            "any" => me.recv_any().unwrap(),
            "any_timeout" => me.recv_any_timeout(T).unwrap(),
            "try_any" => match me.try_recv_any() {
                Err(RecvError::Empty) => continue,
                other => other.unwrap(),
            },
            "from" | "from_timeout" | "try_from" => {
                let from = senders[(got % senders.len() as u64) as usize];
                let r = match recv {
                    "from" => me.recv_from(from),
                    "from_timeout" => me.recv_from_timeout(from, T),
                    _ => loop {
                        match me.try_recv_from(from) {
                            Err(RecvError::Empty) => std::hint::spin_loop(),
                            other => break other,
                        }
                    },
                };
                (
                    from.to_string(),
                    r.unwrap_or_else(|e| panic!("{tag}: from {from}: {e}")),
                )
            }
            other => panic!("recv {other}"),
        };
        let seq = next
            .get_mut(&from)
            .unwrap_or_else(|| panic!("unknown sender {from}"));
        check(*seq, &msg, &mut scratch).unwrap_or_else(|e| panic!("{tag}: from {from}: {e}"));
        *seq += 1;
        got += 1;
    }
    // One link per sender, both directions: the ack goes back over it.
    assert_eq!(links_of(&d).len(), senders.len(), "{:?}", links_of(&d));
    for s in senders {
        me.send(s, b"ack").unwrap();
    }
    for p in &mut peers {
        p.expect("DONE", T);
        p.wait_success(T);
    }
    // Every sender has left: nothing more, then a clear error.
    for s in senders {
        let e = me.try_recv_from(s).unwrap_err();
        assert!(
            matches!(&e, RecvError::MemberGone { name } | RecvError::NoSuchMember { name } if name == s),
            "{e:?}"
        );
    }
    assert!(matches!(me.try_recv_any(), Err(RecvError::Empty)));
    me.leave();
    assert_no_files(&d);
}

/// One `#[test]` per streaming case: `name(tag): (wait, senders, how they
/// send, messages per sender, how the parent receives)`.
macro_rules! stream_tests {
    ($($name:ident($tag:literal): ($wait:ident, $senders:expr, $mode:literal, $count:expr, $recv:literal),)*) => {$(
        #[test]
        fn $name() {
            stream($tag, WaitStrategy::$wait, &$senders, $mode, $count, $recv);
        }
    )*};
}

stream_tests! {
    blocking_send_and_recv_from_100k_in_order("blk"): (SpinPark, ["tx"], "block", 100_000, "from"),
    polling_send_and_recv_from_100k_in_order("poll"): (BusyPoll, ["tx"], "block", 100_000, "from"),
    try_send_and_try_recv_from_100k_in_order("try"): (SpinPark, ["tx"], "try", 100_000, "try_from"),
    timeout_send_and_recv_from_100k_in_order("tmo"): (Park, ["tx"], "timeout", 100_000, "from_timeout"),
    recv_from_two_senders_picks_the_named_one("from2"): (SpinPark, ["a", "b"], "block", 50_000, "from"),
    recv_any_blocking_from_two_senders("any"): (SpinPark, ["a", "b"], "block", 50_000, "any"),
    recv_any_parked_from_three_senders("anypark"): (Park, ["a", "b", "c"], "timeout", 20_000, "any"),
    recv_any_polling_from_two_senders("anypoll"): (BusyPoll, ["a", "b"], "block", 50_000, "any"),
    try_recv_any_from_two_senders("tryany"): (SpinPark, ["a", "b"], "try", 50_000, "try_any"),
    recv_any_timeout_from_two_senders("anytmo"): (SpinPark, ["a", "b"], "timeout", 50_000, "any_timeout"),
}

#[test]
fn simultaneous_first_sends_make_exactly_one_link() {
    let d = unique("race");
    let _c = Cleanup(d.clone());
    let _dog = Watchdog::new(Duration::from_secs(280), "first-send race");
    let rounds = 60;
    let keeper = builder(&d, WaitStrategy::SpinPark, 64)
        .join("keeper")
        .unwrap();
    let extra = |peer: &str| [("OTHER", peer.to_string()), ("ROUNDS", rounds.to_string())];
    let mut a = spawn("first_send_race", &d, "a", &extra("b"));
    let mut b = spawn("first_send_race", &d, "b", &extra("a"));
    let mut created_by = BTreeMap::new();
    for round in 0..rounds {
        a.expect("JOINED", T);
        b.expect("JOINED", T);
        assert!(links_of(&d).is_empty(), "round {round}: {:?}", links_of(&d));
        let go = go_command();
        a.say(&go);
        b.say(&go);
        let la = a.expect("LINKS", T);
        let lb = b.expect("LINKS", T);
        assert_eq!(la, lb, "round {round}: the two see different links");
        assert!(!la.contains(','), "round {round}: more than one link: {la}");
        assert_eq!(links_of(&d), vec![la.clone()], "round {round}");
        // Which of the two created it (the other opened it).
        let link = hwlink::admin::list()
            .unwrap()
            .into_iter()
            .find(|r| r.name == la)
            .expect("the link region");
        *created_by.entry(link.creator_pid).or_insert(0u32) += 1;
        a.say("leave");
        b.say("leave");
        a.expect("LEFT", T);
        b.expect("LEFT", T);
        assert!(links_of(&d).is_empty(), "round {round}: {:?}", links_of(&d));
    }
    eprintln!(
        "links created by a (pid {}): {:?}, by b (pid {}): {:?} of {rounds} rounds",
        a.pid(),
        created_by.get(&a.pid()),
        b.pid(),
        created_by.get(&b.pid())
    );
    assert_eq!(created_by.values().sum::<u32>(), rounds as u32);
    a.wait_success(T);
    b.wait_success(T);
    keeper.leave();
    assert_no_files(&d);
}

#[test]
fn leaving_member_gives_a_clear_error_and_its_name_can_be_reused() {
    let d = unique("leave");
    let _c = Cleanup(d.clone());
    let _dog = Watchdog::new(Duration::from_secs(120), "leave");
    let mut me = builder(&d, WaitStrategy::SpinPark, 64).join("p").unwrap();
    let mut c = spawn("join_wait", &d, "c", &[("FROM", "p".into())]);
    c.expect("JOINED", T);
    me.send("c", b"one").unwrap();
    c.say("recv");
    assert_eq!(c.expect("GOT", T), "one");
    assert_eq!(links_of(&d).len(), 1);
    c.say("leave");
    c.expect("LEFT", T);
    // The child process still runs, but is no member: its link is gone.
    assert!(links_of(&d).is_empty(), "{:?}", links_of(&d));
    match me.send("c", b"two") {
        Err(e @ SendError::MemberGone { .. }) => {
            assert!(e.to_string().contains("member `c` has left"), "{e}");
            assert_eq!(e.into_inner().unwrap(), b"two");
        }
        other => panic!("expected MemberGone, got {other:?}"),
    }
    match me.send("c", b"three") {
        Err(e @ SendError::NoSuchMember { .. }) => {
            assert!(e.to_string().contains("no member named `c`"), "{e}")
        }
        other => panic!("expected NoSuchMember, got {other:?}"),
    }
    assert!(links_of(&d).is_empty());
    c.say("exit");
    c.wait_success(T);

    // Another process takes the name.
    let mut c2 = spawn("join_wait", &d, "c", &[("FROM", "p".into())]);
    c2.expect("JOINED", T);
    me.send("c", b"four").unwrap();
    c2.say("recv");
    assert_eq!(c2.expect("GOT", T), "four");
    c2.say("exit");
    c2.wait_success(T);
    assert_eq!(member_names(&me), ["p"]);
    me.leave();
    assert_no_files(&d);
}

#[test]
fn killed_member_is_reaped_and_its_files_reclaimed() {
    let d = unique("kill");
    let _c = Cleanup(d.clone());
    let _dog = Watchdog::new(Duration::from_secs(120), "kill");
    let mut me = builder(&d, WaitStrategy::SpinPark, 64).join("p").unwrap();
    let mut k = spawn("join_wait", &d, "k", &[("FROM", "p".into())]);
    k.expect("JOINED", T);
    me.send("k", b"hello").unwrap();
    k.say("recv");
    k.expect("GOT", T);
    assert_eq!(links_of(&d).len(), 1);
    kill_later(k.pid(), Duration::ZERO).join().unwrap();
    k.wait(T);
    // Sends fail with MemberGone once the death is noticed.
    let deadline = Instant::now() + Duration::from_secs(10);
    let err = loop {
        match me.send_timeout("k", b"x", Duration::from_millis(200)) {
            Ok(()) => assert!(
                Instant::now() < deadline,
                "send to a dead member kept working"
            ),
            Err(e) => break e,
        }
    };
    assert!(
        matches!(err, SendError::MemberGone { ref name, .. } if name == "k"),
        "{err:?}"
    );
    assert_eq!(member_names(&me), ["p"], "the dead member was not reaped");
    assert!(links_of(&d).is_empty(), "{:?}", links_of(&d));
    // The name is free again.
    let mut k2 = spawn("join_wait", &d, "k", &[("FROM", "p".into())]);
    k2.expect("JOINED", T);
    me.send("k", b"again").unwrap();
    k2.say("recv");
    assert_eq!(k2.expect("GOT", T), "again");
    k2.say("exit");
    k2.wait_success(T);
    me.leave();
    assert_no_files(&d);
}

#[test]
fn killed_member_without_links_is_reaped_by_the_next_joiner() {
    let d = unique("kill2");
    let _c = Cleanup(d.clone());
    let _dog = Watchdog::new(Duration::from_secs(120), "kill2");
    let mut k = spawn("join_wait", &d, "k", &[]);
    k.expect("JOINED", T);
    k.kill();
    // The domain outlives its only (dead) member; the next joiner reaps it
    // and may take the name.
    let me = builder(&d, WaitStrategy::SpinPark, 64).join("k").unwrap();
    assert_eq!(member_names(&me), ["k"]);
    me.leave();
    assert_no_files(&d);
}

#[test]
fn domains_are_independent() {
    let d1 = unique("ind1");
    let d2 = unique("ind2");
    let _c1 = Cleanup(d1.clone());
    let _c2 = Cleanup(d2.clone());
    let _dog = Watchdog::new(Duration::from_secs(120), "independence");
    let mut x = builder(&d1, WaitStrategy::SpinPark, 64).join("x").unwrap();
    let extra = [("MILLIS", "1000".to_string())];
    // "y" exists in both domains, in two processes.
    let mut y1 = spawn("idle_any", &d1, "y", &extra);
    let mut y2 = spawn("idle_any", &d2, "y", &extra);
    assert_eq!(y1.expect("JOINED", T), "x,y");
    assert_eq!(
        y2.expect("JOINED", T),
        "y",
        "another domain's members are visible"
    );
    y1.say("go");
    y2.say("go");
    x.send("y", b"for d1's y").unwrap();
    assert_eq!(y1.expect("MSG", T), "x");
    assert_eq!(y2.expect("TIMEOUT", T), "");
    // A process that has not joined d2 cannot reach its members.
    assert!(matches!(
        x.send("z", b"?"),
        Err(SendError::NoSuchMember { .. })
    ));
    assert!(links_of(&d2).is_empty());
    y1.say("exit");
    y2.say("exit");
    y1.wait_success(T);
    y2.wait_success(T);
    x.leave();
    assert_no_files(&d1);
    assert_no_files(&d2);
}

#[test]
fn bounded_back_pressure_then_drain_in_order() {
    let d = unique("bp");
    let _c = Cleanup(d.clone());
    let _dog = Watchdog::new(Duration::from_secs(120), "back-pressure");
    const CAP: u32 = 8;
    let more = 1000;
    let mut me = builder(&d, WaitStrategy::SpinPark, CAP).join("p").unwrap();
    assert_eq!(me.capacity(), CAP as usize);
    let mut slow = spawn(
        "receive_count",
        &d,
        "slow",
        &[
            ("FROM", "p".into()),
            ("COUNT", (u64::from(CAP) + more).to_string()),
            ("CAP", "1024".into()), // ignored: the creator's capacity rules
        ],
    );
    slow.expect("JOINED", T);
    let mut buf = [0u8; MAX_MSG];
    for seq in 0..u64::from(CAP) {
        let len = fill(seq, &mut buf);
        me.try_send("slow", &buf[..len]).unwrap();
    }
    let len = fill(u64::from(CAP), &mut buf);
    match me.try_send("slow", &buf[..len]) {
        Err(SendError::Full(m)) => assert_eq!(m, &buf[..len]),
        other => panic!("expected Full, got {other:?}"),
    }
    let t0 = Instant::now();
    match me.send_timeout("slow", &buf[..len], Duration::from_millis(300)) {
        Err(SendError::Timeout(_)) => assert!(t0.elapsed() >= Duration::from_millis(300)),
        other => panic!("expected Timeout, got {other:?}"),
    }
    slow.say("drain");
    for seq in u64::from(CAP)..u64::from(CAP) + more {
        let len = fill(seq, &mut buf);
        me.send("slow", &buf[..len]).unwrap();
    }
    slow.expect("GOT", T);
    slow.say("exit");
    slow.wait_success(T);
    me.leave();
    assert_no_files(&d);
}

#[test]
fn messages_from_a_member_that_left_are_still_delivered() {
    let d = unique("left");
    let _c = Cleanup(d.clone());
    let _dog = Watchdog::new(Duration::from_secs(120), "left");
    let count = 100u64;
    let mut me = builder(&d, WaitStrategy::Park, 128).join("p").unwrap();
    let extra = [("TO", "p".to_string()), ("COUNT", count.to_string())];
    let mut s1 = spawn("send_and_leave", &d, "s1", &extra);
    let mut s2 = spawn("send_and_leave", &d, "s2", &extra);
    s1.expect("LEFT", T);
    s2.expect("LEFT", T);
    s1.wait_success(T);
    s2.wait_success(T);
    assert_eq!(member_names(&me), ["p"]);
    // We never attached: the senders kept their link files for us.
    assert_eq!(links_of(&d).len(), 2, "{:?}", links_of(&d));
    let mut scratch = [0u8; MAX_MSG];
    // s2 through recv_from, s1 through recv_any.
    for seq in 0..count {
        let m = me.recv_from_timeout("s2", T).unwrap();
        check(seq, &m, &mut scratch).unwrap();
    }
    match me.recv_from_timeout("s2", T) {
        Err(RecvError::MemberGone { name }) => assert_eq!(name, "s2"),
        other => panic!("expected MemberGone, got {other:?}"),
    }
    for seq in 0..count {
        let (from, m) = me.recv_any_timeout(T).unwrap();
        assert_eq!(from, "s1");
        check(seq, &m, &mut scratch).unwrap();
    }
    assert!(matches!(me.try_recv_any(), Err(RecvError::Empty)));
    assert!(links_of(&d).is_empty(), "{:?}", links_of(&d));
    me.leave();
    assert_no_files(&d);
}

#[test]
fn default_backend_round_trip_leaves_no_files() {
    let d = unique("auto");
    let _c = Cleanup(d.clone());
    let _dog = Watchdog::new(Duration::from_secs(120), "auto backend");
    // Backend::Auto: hugepages when free, else /dev/shm (with a warning).
    let mut me = Domain::join(&d, "rx").unwrap();
    let mut tx = Peer::spawn(
        "stream_send",
        &[
            ("DOMAIN", d.clone()),
            ("NAME", "tx".into()),
            ("TO", "rx".into()),
            ("COUNT", "1000".into()),
            ("MODE", "block".into()),
            ("AUTO", "1".into()),
        ],
    );
    tx.expect("JOINED", T);
    let mut scratch = [0u8; MAX_MSG];
    for seq in 0..1000 {
        let (from, m) = me.recv_any().unwrap();
        assert_eq!(from, "tx");
        check(seq, &m, &mut scratch).unwrap();
    }
    me.send("tx", b"ack").unwrap();
    tx.expect("DONE", T);
    tx.wait_success(T);
    me.leave();
    assert_no_files(&d);
}

#[test]
fn corrupt_directory_is_refused_with_a_clear_error() {
    let d = unique("bad");
    let _c = Cleanup(d.clone());
    let me = builder(&d, WaitStrategy::SpinPark, 64).join("p").unwrap();
    // The domain object is the region's first object, at offset 4096;
    // max_members is its first word.
    let raw = RawRegion::open(&d);
    let good = raw.get32(4096);
    raw.set32(4096, 1000);
    match builder(&d, WaitStrategy::SpinPark, 64).join("q") {
        Err(e @ hwlink::OpenError::Corrupt { .. }) => {
            assert!(e.to_string().contains("domain max_members is 1000"), "{e}")
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    // members_offset pointing past the object.
    raw.set32(4096, good);
    let off = raw.get64(4096 + 24);
    raw.set64(4096 + 24, 1 << 40);
    assert!(matches!(
        builder(&d, WaitStrategy::SpinPark, 64).join("q"),
        Err(hwlink::OpenError::Corrupt { .. })
    ));
    raw.set64(4096 + 24, off);
    drop(raw);
    me.leave();
    assert_no_files(&d);
}

/// The name race again, many more rounds, between threads of this process
/// (the protocol does not care whether racers are processes or threads).
#[test]
fn name_race_between_threads_stress() {
    let d = unique("tdup");
    let _c = Cleanup(d.clone());
    let _dog = Watchdog::new(Duration::from_secs(200), "thread name race");
    let threads = 4;
    let rounds = 200;
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(threads));
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let barrier = barrier.clone();
            let d = d.clone();
            std::thread::spawn(move || {
                let mut won = Vec::new();
                for _ in 0..rounds {
                    barrier.wait();
                    let r = builder(&d, WaitStrategy::SpinPark, 64).join("same");
                    let ok = match r {
                        Ok(m) => Some(m),
                        Err(hwlink::OpenError::NameTaken { .. }) => None,
                        Err(e) => panic!("join: {e}"),
                    };
                    won.push(ok.is_some());
                    // Everyone has tried before the winner leaves.
                    barrier.wait();
                    drop(ok);
                    barrier.wait();
                }
                won
            })
        })
        .collect();
    let results: Vec<Vec<bool>> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    for round in 0..rounds {
        let winners = results.iter().filter(|w| w[round]).count();
        assert_eq!(winners, 1, "round {round}: {winners} winners");
    }
    assert_no_files(&d);
}

/// The first-send race again, many more rounds, between threads.
#[test]
fn first_send_race_between_threads_stress() {
    let d = unique("tlink");
    let _c = Cleanup(d.clone());
    let _dog = Watchdog::new(Duration::from_secs(200), "thread link race");
    let rounds = 300;
    let keeper = builder(&d, WaitStrategy::SpinPark, 64)
        .join("keeper")
        .unwrap();
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(2));
    let run = |me: &'static str, other: &'static str| {
        let barrier = barrier.clone();
        let d = d.clone();
        std::thread::spawn(move || {
            for round in 0..rounds {
                let mut m = builder(&d, WaitStrategy::SpinPark, 64).join(me).unwrap();
                barrier.wait();
                m.send(other, format!("{round}")).unwrap();
                let got = m.recv_from_timeout(other, T).unwrap();
                assert_eq!(got, format!("{round}").as_bytes());
                let links = m.link_names();
                assert_eq!(links.len(), 1, "round {round}: {links:?}");
                barrier.wait();
                assert_eq!(links_of(&d), links, "round {round}");
                barrier.wait();
                m.leave();
                barrier.wait();
            }
        })
    };
    let a = run("a", "b");
    let b = run("b", "a");
    a.join().unwrap();
    b.join().unwrap();
    keeper.leave();
    assert_no_files(&d);
}

// ---------------------------------------------------------------------------
// Unbounded buffering
// ---------------------------------------------------------------------------

fn unbounded(domain: &str, byte_limit: u64) -> DomainBuilder {
    Domain::builder(domain)
        .backend(Backend::Shm)
        .slot_size(256)
        .buffering(hwlink::Buffering::Unbounded { byte_limit })
}

/// With unbounded links a sender never waits: a peer process sends 50,000
/// messages to a member that does not read and leaves; the link grew
/// segments; then everything arrives in order and every file goes.
#[test]
fn unbounded_links_never_block_then_drain_in_order() {
    let d = unique("unb");
    let _c = Cleanup(d.clone());
    let _dog = Watchdog::new(Duration::from_secs(120), "unbounded");
    let count = 50_000u64;
    let mut me = unbounded(&d, 256 << 20).join("rx").unwrap();
    let mut tx = spawn(
        "send_and_leave",
        &d,
        "tx",
        &[
            ("TO", "rx".into()),
            ("COUNT", count.to_string()),
            ("AUTO", "1".into()),
        ],
    );
    tx.expect("LEFT", T);
    tx.wait_success(T);
    let regions = regions_of(&d);
    assert!(
        regions.len() > 2,
        "no segments were chained for {count} messages: {regions:?}"
    );
    let mut scratch = [0u8; MAX_MSG];
    for seq in 0..count {
        let m = me.recv_from_timeout("tx", T).unwrap();
        check(seq, &m, &mut scratch).unwrap();
    }
    match me.recv_from_timeout("tx", Duration::from_millis(200)) {
        Err(RecvError::MemberGone { name }) => assert_eq!(name, "tx"),
        other => panic!("expected MemberGone, got {other:?}"),
    }
    me.leave();
    assert_no_files(&d);
}

/// Past the domain's byte limit per direction, `send` fails at once with a
/// clear error naming the limit; once the receiver drains, sending works
/// again.
#[test]
fn unbounded_link_memory_limit_is_a_clear_error() {
    let d = unique("unl");
    let _c = Cleanup(d.clone());
    let limit = 4 << 20;
    let mut a = unbounded(&d, limit).join("a").unwrap();
    let mut b = unbounded(&d, limit).join("b").unwrap();
    let msg = [7u8; 256];
    let mut sent = 0u64;
    let err = loop {
        let t0 = Instant::now();
        match a.send("b", msg) {
            Ok(()) => sent += 1,
            Err(e) => {
                assert!(t0.elapsed() < Duration::from_secs(5), "send blocked");
                break e;
            }
        }
        assert!(sent < 1_000_000, "the limit never hit");
    };
    assert!(
        matches!(&err, SendError::MemoryLimit { limit: l, .. } if *l == limit),
        "{err:?}"
    );
    assert!(err.to_string().contains("drain"), "{err}");
    for _ in 0..sent {
        assert_eq!(b.recv_from_timeout("a", T).unwrap(), msg);
    }
    a.send("b", b"again").unwrap();
    assert_eq!(b.recv_from_timeout("a", T).unwrap(), b"again");
    b.send("a", b"back").unwrap();
    assert_eq!(
        a.recv_any_timeout(T).unwrap(),
        ("b".to_string(), b"back".to_vec())
    );
    a.leave();
    b.leave();
    assert_no_files(&d);
}

// ---------------------------------------------------------------------------
// Zero capacity (rendezvous)
// ---------------------------------------------------------------------------

/// Zero-capacity links: a peer process's every `send` waits until this
/// member has received the message (rendezvous); recv_from and recv_any
/// both find the offers; order and contents hold.
#[test]
fn zero_capacity_links_rendezvous_in_order() {
    let d = unique("zero");
    let _c = Cleanup(d.clone());
    let _dog = Watchdog::new(Duration::from_secs(120), "zero");
    let count = 2_000u64;
    let mut me = Domain::builder(&d)
        .backend(Backend::Shm)
        .slot_size(256)
        .buffering(hwlink::Buffering::Zero)
        .join("rx")
        .unwrap();
    let mut tx = spawn(
        "stream_send",
        &d,
        "tx",
        &[
            ("TO", "rx".into()),
            ("COUNT", count.to_string()),
            ("MODE", "block".into()),
            ("AUTO", "1".into()),
        ],
    );
    tx.expect("JOINED", T);
    let mut scratch = [0u8; MAX_MSG];
    for seq in 0..count {
        let m = if seq % 2 == 0 {
            me.recv_from_timeout("tx", T).unwrap()
        } else {
            let (from, m) = me.recv_any_timeout(T).unwrap();
            assert_eq!(from, "tx");
            m
        };
        check(seq, &m, &mut scratch).unwrap();
    }
    // The ack goes back over the same (zero-capacity) link: the peer is
    // waiting in recv_from, so even try_send meets it.
    let deadline = Instant::now() + T;
    loop {
        match me.try_send("tx", b"ack") {
            Ok(()) => break,
            Err(SendError::Full(_)) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(1))
            }
            Err(e) => panic!("ack: {e}"),
        }
    }
    tx.expect("DONE", T);
    tx.wait_success(T);
    me.leave();
    assert_no_files(&d);
}

/// With nobody receiving, a zero-capacity try_send is Full and
/// send_timeout times out, handing the message back: nothing is queued.
#[test]
fn zero_capacity_link_without_receiver_queues_nothing() {
    let d = unique("zn");
    let _c = Cleanup(d.clone());
    let zero = |n| {
        Domain::builder(&d)
            .backend(Backend::Shm)
            .buffering(hwlink::Buffering::Zero)
            .join(n)
            .unwrap()
    };
    let mut a = zero("a");
    let mut b = zero("b");
    assert!(matches!(a.try_send("b", b"x"), Err(SendError::Full(_))));
    match a.send_timeout("b", b"y", Duration::from_millis(30)) {
        Err(SendError::Timeout(m)) => assert_eq!(m, b"y"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(b.try_recv_from("a"), Err(RecvError::Empty)));
    let t = std::thread::spawn(move || {
        let m = b.recv_from_timeout("a", T).unwrap();
        (b, m)
    });
    a.send_timeout("b", b"z", T).unwrap();
    let (b, m) = t.join().unwrap();
    assert_eq!(m, b"z");
    a.leave();
    b.leave();
    assert_no_files(&d);
}

/// How the receiver takes the one message in the send-then-leave races.
#[derive(Debug, Clone, Copy)]
enum Take {
    RecvFrom,
    TryRecvFrom,
    RecvAny,
    TryRecvAny,
}

/// Takes the message `tx` sent (polling for the `try_` forms while the
/// call says Empty), then checks that nothing more comes: `MemberGone` for
/// the `_from` forms, nothing for the `_any` forms.
fn take_then_gone(rx: &mut Member, how: Take) -> Result<Vec<u8>, RecvError> {
    let deadline = Instant::now() + T;
    let polling = |empty: bool| empty && Instant::now() < deadline;
    let got = match how {
        Take::RecvFrom => rx.recv_from_timeout("tx", T),
        Take::TryRecvFrom => loop {
            let r = rx.try_recv_from("tx");
            if !polling(matches!(r, Err(RecvError::Empty))) {
                break r;
            }
            std::hint::spin_loop();
        },
        Take::RecvAny => rx.recv_any_timeout(T).map(|(from, m)| {
            assert_eq!(from, "tx");
            m
        }),
        Take::TryRecvAny => loop {
            let r = rx.try_recv_any();
            if !polling(matches!(r, Err(RecvError::Empty))) {
                break r.map(|(from, m)| {
                    assert_eq!(from, "tx");
                    m
                });
            }
            std::hint::spin_loop();
        },
    }?;
    match how {
        Take::RecvFrom | Take::TryRecvFrom => {
            match rx.recv_from_timeout("tx", Duration::from_millis(300)) {
                Err(RecvError::MemberGone { name }) => assert_eq!(name, "tx"),
                other => panic!("{how:?}: expected MemberGone after the message, got {other:?}"),
            }
        }
        Take::RecvAny | Take::TryRecvAny => match rx.try_recv_any() {
            Err(RecvError::Empty) => {}
            other => panic!("{how:?}: expected Empty after the message, got {other:?}"),
        },
    }
    Ok(got)
}

/// `rounds` rounds of: member `tx` (a thread) joins, sends one message to
/// `rx` and leaves at once, while `rx` is already waiting for it (even
/// rounds) or arrives after it left (odd rounds).
fn send_then_leave_rounds(
    tag: &str,
    rounds: u32,
    how: Take,
    join: impl Fn(&str, &str) -> Member + Sync,
) {
    let join = &join;
    for round in 0..rounds {
        let d = unique(&format!("{tag}{}", round % 10));
        let _c = Cleanup(d.clone());
        let mut rx = join(&d, "rx");
        let got = std::thread::scope(|s| {
            let sender = s.spawn(|| {
                let mut tx = join(&d, "tx");
                tx.send_timeout("rx", format!("m{round}").as_bytes(), T)
                    .unwrap();
                tx.leave();
            });
            if round % 2 == 0 {
                // Wait for the sender to be a member, then receive.
                while rx.members().len() < 2 && !sender.is_finished() {
                    std::hint::spin_loop();
                }
            } else {
                // Receive after it left.
                while !sender.is_finished() {
                    std::thread::yield_now();
                }
            }
            let got = take_then_gone(&mut rx, how);
            sender.join().unwrap();
            got
        });
        match got {
            Ok(m) => assert_eq!(m, format!("m{round}").as_bytes(), "{how:?} round {round}"),
            Err(e) => panic!("{how:?} round {round}: the message was lost: {e:?}"),
        }
        rx.leave();
        assert_no_files(&d);
    }
}

/// A member sends one message and leaves at once, while the receiver is
/// already waiting in `recv_from` (or arrives just after): the message is
/// delivered every time, then MemberGone.
#[test]
fn send_then_leave_races_a_waiting_receiver() {
    send_then_leave_rounds("sl", 200, Take::RecvFrom, |d, name| {
        builder(d, WaitStrategy::SpinPark, 16).join(name).unwrap()
    });
}

/// The same race for every form of receive, with bounded and unbounded
/// links and each wait strategy.
#[test]
fn send_then_leave_races_every_receive_form() {
    let _dog = Watchdog::new(Duration::from_secs(240), "send then leave");
    for how in [
        Take::RecvFrom,
        Take::TryRecvFrom,
        Take::RecvAny,
        Take::TryRecvAny,
    ] {
        for wait in [
            WaitStrategy::SpinPark,
            WaitStrategy::Park,
            WaitStrategy::BusyPoll,
        ] {
            send_then_leave_rounds("slb", 60, how, |d, name| {
                builder(d, wait, 16).join(name).unwrap()
            });
        }
        send_then_leave_rounds("slu", 60, how, |d, name| {
            unbounded(d, 1 << 20).join(name).unwrap()
        });
    }
}

/// The same race with the sender in another process (`send_and_leave`),
/// which exits right after it left.
#[test]
fn send_then_leave_from_a_process_races_a_waiting_receiver() {
    let _dog = Watchdog::new(Duration::from_secs(240), "send then leave (process)");
    let mut scratch = [0u8; MAX_MSG];
    let forms = [
        Take::RecvFrom,
        Take::TryRecvFrom,
        Take::RecvAny,
        Take::TryRecvAny,
    ];
    for round in 0..48u32 {
        let how = forms[(round / 2) as usize % forms.len()];
        let d = unique(&format!("slp{}", round % 10));
        let _c = Cleanup(d.clone());
        let mut rx = builder(&d, WaitStrategy::SpinPark, 16).join("rx").unwrap();
        let extra = [
            ("TO", "rx".to_string()),
            ("COUNT", "1".to_string()),
            ("CAP", "16".to_string()),
        ];
        let mut tx = spawn("send_and_leave", &d, "tx", &extra);
        if round % 2 == 0 {
            while rx.members().len() < 2 && tx.try_wait().is_none() {
                std::hint::spin_loop();
            }
        } else {
            tx.expect("LEFT", T);
        }
        match take_then_gone(&mut rx, how) {
            Ok(m) => check(0, &m, &mut scratch).unwrap(),
            Err(e) => panic!("{how:?} round {round}: the message was lost: {e:?}"),
        }
        if round % 2 == 0 {
            tx.expect("LEFT", T);
        }
        tx.wait_success(T);
        rx.leave();
        assert_no_files(&d);
    }
}

/// Unbounded and zero-capacity links in every form: blocking, try,
/// polling (BusyPoll on both sides) and timeout, each with a peer process
/// streaming to this member, checked in order. With zero capacity a try
/// on both sides can never meet, so the receiver blocks when the sender
/// tries.
fn buffering_form(kind: &str, b: hwlink::Buffering, form: &str) {
    let _dog = Watchdog::new(Duration::from_secs(240), format!("buffering {kind}/{form}"));
    let d = unique(&format!("f{kind}{form}"));
    let _c = Cleanup(d.clone());
    let wait = if form == "poll" {
        WaitStrategy::BusyPoll
    } else {
        WaitStrategy::SpinPark
    };
    let mut me = Domain::builder(&d)
        .backend(Backend::Shm)
        .slot_size(256)
        .buffering(b)
        .wait(wait)
        .join("rx")
        .unwrap();
    let count = 3_000u64;
    let mode = match form {
        "poll" => "block",
        other => other,
    };
    let mut tx = spawn(
        "stream_send",
        &d,
        "tx",
        &[
            ("TO", "rx".into()),
            ("COUNT", count.to_string()),
            ("MODE", mode.into()),
            ("WAIT", wait.to_string()),
        ],
    );
    tx.expect("JOINED", T);
    let mut scratch = [0u8; MAX_MSG];
    for seq in 0..count {
        let m = match (form, kind) {
            ("timeout", _) => me.recv_from_timeout("tx", T),
            ("try", "u") => {
                let deadline = Instant::now() + T;
                loop {
                    match me.try_recv_from("tx") {
                        Err(RecvError::Empty) if Instant::now() < deadline => {
                            std::hint::spin_loop()
                        }
                        other => break other,
                    }
                }
            }
            _ => me.recv_from("tx"),
        }
        .unwrap_or_else(|e| panic!("{kind}/{form}: #{seq}: {e}"));
        check(seq, &m, &mut scratch).unwrap_or_else(|e| panic!("{kind}/{form}: {e}"));
    }
    me.send_timeout("tx", b"ack", T).unwrap();
    tx.expect("DONE", T);
    tx.wait_success(T);
    me.leave();
    assert_no_files(&d);
}

#[test]
fn unbounded_links_block() {
    buffering_form(
        "u",
        hwlink::Buffering::Unbounded {
            byte_limit: 64 << 20,
        },
        "block",
    );
}

#[test]
fn unbounded_links_try() {
    buffering_form(
        "u",
        hwlink::Buffering::Unbounded {
            byte_limit: 64 << 20,
        },
        "try",
    );
}

#[test]
fn unbounded_links_poll() {
    buffering_form(
        "u",
        hwlink::Buffering::Unbounded {
            byte_limit: 64 << 20,
        },
        "poll",
    );
}

#[test]
fn unbounded_links_timeout() {
    buffering_form(
        "u",
        hwlink::Buffering::Unbounded {
            byte_limit: 64 << 20,
        },
        "timeout",
    );
}

#[test]
fn zero_links_block() {
    buffering_form("z", hwlink::Buffering::Zero, "block");
}

#[test]
fn zero_links_try() {
    buffering_form("z", hwlink::Buffering::Zero, "try");
}

#[test]
fn zero_links_poll() {
    buffering_form("z", hwlink::Buffering::Zero, "poll");
}

#[test]
fn zero_links_timeout() {
    buffering_form("z", hwlink::Buffering::Zero, "timeout");
}

/// A member killed after its messages were drained, over each buffering:
/// a receiver polling `recv_from_timeout` with short deadlines learns it is
/// gone (MemberGone) within a few polls, not never.
fn killed_sender_is_noticed(tag: &str, buffering: hwlink::Buffering) {
    let d = unique(tag);
    let _c = Cleanup(d.clone());
    let _dog = Watchdog::new(Duration::from_secs(60), "killed sender");
    let mut me = Domain::builder(&d)
        .backend(Backend::Shm)
        .slot_size(256)
        .buffering(buffering)
        .join("rx")
        .unwrap();
    let count = 100u64;
    let mut tx = spawn(
        "stream_send",
        &d,
        "tx",
        &[
            ("TO", "rx".into()),
            ("COUNT", count.to_string()),
            ("MODE", "block".into()),
        ],
    );
    tx.expect("JOINED", T);
    let mut scratch = [0u8; MAX_MSG];
    for seq in 0..count {
        let m = me.recv_from_timeout("tx", T).unwrap();
        check(seq, &m, &mut scratch).unwrap();
    }
    kill_later(tx.pid(), Duration::ZERO).join().unwrap();
    let killed = Instant::now();
    let err = loop {
        match me.recv_from_timeout("tx", Duration::from_millis(20)) {
            Err(RecvError::Timeout) => assert!(
                killed.elapsed() < Duration::from_secs(2),
                "{tag}: still Timeout {:?} after the kill",
                killed.elapsed()
            ),
            other => break other,
        }
    };
    assert!(
        matches!(err, Err(RecvError::MemberGone { ref name }) if name == "tx"),
        "{tag}: {err:?}"
    );
    me.leave();
    tx.wait(T);
    assert_no_files(&d);
}

#[test]
fn killed_sender_is_noticed_by_short_timed_receives_bounded() {
    killed_sender_is_noticed("kb", hwlink::Buffering::Bounded(64));
}

#[test]
fn killed_sender_is_noticed_by_short_timed_receives_unbounded() {
    killed_sender_is_noticed(
        "ku",
        hwlink::Buffering::Unbounded {
            byte_limit: 64 << 20,
        },
    );
}

#[test]
fn killed_sender_is_noticed_by_short_timed_receives_zero() {
    killed_sender_is_noticed("kz", hwlink::Buffering::Zero);
}

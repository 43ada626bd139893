//! Shared machinery of the multi-process tests: the test binary re-executes
//! itself as the peer process (`peer_entry`), plus message generation,
//! checksums, watchdogs, region cleanup and raw access to a region file (to
//! play a hostile peer).
//!
//! Every test binary that includes this module has
//!
//! ```ignore
//! #[test]
//! fn peer_entry() {
//!     common::peer_entry();
//! }
//! ```
//!
//! which returns at once unless `HWLINK_TEST_PEER` is set. A parent spawns
//! a peer with [`Peer::spawn`]; the peer runs the role named by
//! `HWLINK_TEST_PEER` (see [`run_role`]) and exits 0 on success or panics.
//! Peers talk to the parent through lines on stdout that start with `@`
//! (everything else is the test harness talking) and read commands from
//! stdin. Every wait in a peer has a timeout, a peer dies with its parent
//! (`PR_SET_PDEATHSIG`), and a peer exits on its own after
//! `HWLINK_TEST_PEER_TIMEOUT` seconds whatever happens.
#![allow(dead_code)]
// Test code: std atomics (the clippy.toml rule is for the library).
#![allow(clippy::disallowed_types)]

use hwlink::{admin, LinkBuilder, RecvError, SendError, WaitStrategy};
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------
// Names and cleanup
// ---------------------------------------------------------------------------

/// A link name unique to this process and test: `t-{pid}-{tag}`. Sub-links
/// of a test are named `t-{pid}-{tag}-{sub}`.
pub fn unique(tag: &str) -> String {
    let name = format!("t-{}-{tag}", std::process::id());
    assert!(name.len() <= 48, "link name {name} is too long");
    name
}

/// Whether region `name` belongs to the test whose base name is `base`.
fn belongs(name: &str, base: &str) -> bool {
    name == base || name.strip_prefix(base).is_some_and(|r| r.starts_with('-'))
}

/// The regions on this machine named after `base` (see [`unique`]).
pub fn regions_of(base: &str) -> Vec<admin::RegionStatus> {
    admin::list()
        .expect("admin::list failed")
        .into_iter()
        .filter(|r| belongs(&r.name, base))
        .collect()
}

/// The status of region `name`, if it exists.
pub fn region(name: &str) -> Option<admin::RegionStatus> {
    admin::list()
        .expect("admin::list failed")
        .into_iter()
        .find(|r| r.name == name)
}

/// Asserts that no region named after `base` is left, in hugetlbfs or shm.
pub fn assert_no_regions(base: &str) {
    let left = regions_of(base);
    assert!(
        left.is_empty(),
        "regions left behind: {:?}",
        left.iter().map(|r| &r.path).collect::<Vec<_>>()
    );
}

/// Removes, on drop, every region named after `base` that a failed test
/// left behind. A passing test asserts [`assert_no_regions`] first.
pub struct Cleanup(pub String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Ok(all) = admin::list() {
            for r in all.into_iter().filter(|r| belongs(&r.name, &self.0)) {
                if !std::thread::panicking() {
                    eprintln!("cleanup: removing leftover region {}", r.name);
                }
                let _ = admin::remove(&r.name);
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Messages and checksums
// ---------------------------------------------------------------------------

/// Largest generated message.
pub const MAX_MSG: usize = 200;

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Length of message `seq`: 8..=200 bytes.
pub fn msg_len(seq: u64) -> usize {
    8 + (splitmix(seq) % (MAX_MSG as u64 - 7)) as usize
}

/// Writes message `seq` into `buf` (at least [`MAX_MSG`] bytes): its
/// sequence number (LE) then bytes that depend on `seq` and their
/// position. Returns its length.
#[inline]
pub fn fill(seq: u64, buf: &mut [u8]) -> usize {
    let len = msg_len(seq);
    buf[..8].copy_from_slice(&seq.to_le_bytes());
    let base = seq.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x5bd1_e995;
    for (k, chunk) in (1u64..).zip(buf[8..len].chunks_mut(8)) {
        let w = (base ^ k.wrapping_mul(0xd1b5_4a32_d192_ed03)).rotate_left(k as u32);
        chunk.copy_from_slice(&w.to_le_bytes()[..chunk.len()]);
    }
    len
}

/// Message `seq` as a vector.
pub fn message(seq: u64) -> Vec<u8> {
    let mut buf = [0u8; MAX_MSG];
    let len = fill(seq, &mut buf);
    buf[..len].to_vec()
}

/// Checks that `msg` is message `expected`: sequence, length and contents.
#[inline]
pub fn check(expected: u64, msg: &[u8], scratch: &mut [u8; MAX_MSG]) -> Result<(), String> {
    if msg.len() < 8 {
        return Err(format!(
            "message #{expected}: {} bytes, shorter than a sequence number",
            msg.len()
        ));
    }
    let seq = u64::from_le_bytes(msg[..8].try_into().unwrap());
    if seq != expected {
        return Err(format!(
            "message #{expected} carries sequence {seq} (lost, duplicated or reordered)"
        ));
    }
    let len = fill(expected, scratch);
    if msg.len() != len {
        return Err(format!(
            "message #{expected}: {} bytes, expected {len}",
            msg.len()
        ));
    }
    if msg != &scratch[..len] {
        return Err(format!("message #{expected}: contents differ"));
    }
    Ok(())
}

/// Initial value of the running checksum.
pub const CHECKSUM_INIT: u64 = 0xcbf2_9ce4_8422_2325;

/// Folds one message into a running checksum (FNV-1a over 8-byte words,
/// the length first).
#[inline]
pub fn checksum(mut h: u64, msg: &[u8]) -> u64 {
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    h = (h ^ msg.len() as u64).wrapping_mul(PRIME);
    let mut chunks = msg.chunks_exact(8);
    for c in &mut chunks {
        h = (h ^ u64::from_le_bytes(c.try_into().unwrap())).wrapping_mul(PRIME);
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut w = [0u8; 8];
        w[..rest.len()].copy_from_slice(rest);
        h = (h ^ u64::from_le_bytes(w)).wrapping_mul(PRIME);
    }
    h
}

/// The checksum of messages `0..count`, computed locally.
pub fn expected_checksum(count: u64) -> u64 {
    let mut buf = [0u8; MAX_MSG];
    (0..count).fold(CHECKSUM_INIT, |h, seq| {
        let len = fill(seq, &mut buf);
        checksum(h, &buf[..len])
    })
}

/// Every wait strategy.
pub const STRATEGIES: [WaitStrategy; 3] = [
    WaitStrategy::BusyPoll,
    WaitStrategy::SpinPark,
    WaitStrategy::Park,
];

// ---------------------------------------------------------------------------
// Watchdog
// ---------------------------------------------------------------------------

/// Aborts the whole test process, with a message, if it is not dropped
/// within its limit: a blocking call that never returns fails loudly
/// instead of hanging CI (peers die with us through PR_SET_PDEATHSIG, and
/// regions left behind are named after the test).
pub struct Watchdog {
    done: Option<mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Watchdog {
    pub fn new(limit: Duration, what: impl Into<String>) -> Watchdog {
        let what = what.into();
        let (tx, rx) = mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            if let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(limit) {
                eprintln!(
                    "WATCHDOG: `{what}` did not finish within {limit:?}: aborting the test process"
                );
                std::process::abort();
            }
        });
        Watchdog {
            done: Some(tx),
            thread: Some(thread),
        }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        drop(self.done.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Sends SIGKILL to `pid` after `delay`, from another thread; returns when
/// it was sent.
pub fn kill_later(pid: u32, delay: Duration) -> std::thread::JoinHandle<Instant> {
    std::thread::spawn(move || {
        std::thread::sleep(delay);
        let at = Instant::now();
        // SAFETY: kill has no memory-safety preconditions; `pid` is our
        // unreaped child, so it cannot name another process.
        let rc = unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
        assert_eq!(rc, 0, "kill({pid}) failed");
        at
    })
}

// ---------------------------------------------------------------------------
// Parent side: spawning and driving a peer
// ---------------------------------------------------------------------------

/// A peer process running one role; killed and reaped on drop.
pub struct Peer {
    role: String,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    status: Option<ExitStatus>,
}

impl Peer {
    /// Spawns this test binary as a peer running `role` with `env`.
    pub fn spawn(role: &str, env: &[(&str, String)]) -> Peer {
        Peer::spawn_wrapped(&[], role, env)
    }

    /// [`Peer::spawn`] under a wrapper command (`wrapper` then this test
    /// binary and its arguments), e.g. `unshare --pid --fork`. The peer's
    /// parent is then the wrapper, so it does not check who its parent is.
    pub fn spawn_wrapped(wrapper: &[&str], role: &str, env: &[(&str, String)]) -> Peer {
        let exe = std::env::current_exe().expect("current_exe");
        let mut cmd = match wrapper.split_first() {
            None => Command::new(&exe),
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(&exe);
                c
            }
        };
        if wrapper.is_empty() {
            cmd.env("HWLINK_TEST_PARENT", std::process::id().to_string());
        }
        cmd.args(["--exact", "peer_entry", "--nocapture", "--test-threads=1"])
            .env("HWLINK_TEST_PEER", role)
            .env("RUST_BACKTRACE", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (k, v) in env {
            cmd.env(format!("HWLINK_TEST_{k}"), v);
        }
        let mut child = cmd.spawn().expect("cannot spawn the peer process");
        let stdout = child.stdout.take().expect("piped stdout");
        let stdin = child.stdin.take();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(msg) = line.strip_prefix('@') {
                    if tx.send(msg.to_string()).is_err() {
                        break;
                    }
                }
            }
        });
        Peer {
            role: role.to_string(),
            child,
            stdin,
            lines,
            status: None,
        }
    }

    /// The peer's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for the next report line and checks that it starts with
    /// `word`; returns the rest of the line (after a space).
    pub fn expect(&mut self, word: &str, timeout: Duration) -> String {
        match self.lines.recv_timeout(timeout) {
            Ok(line) => {
                let (head, rest) = line.split_once(' ').unwrap_or((&line, ""));
                assert_eq!(
                    head, word,
                    "peer `{}` reported `{line}`, expected `{word} ...`",
                    self.role
                );
                rest.to_string()
            }
            Err(e) => {
                let status = self.try_wait();
                panic!(
                    "peer `{}` sent no `{word}` within {timeout:?} ({e}); its exit status: {status:?} \
                     (its stderr is above)",
                    self.role
                )
            }
        }
    }

    /// The next report line if one has arrived, without waiting.
    pub fn poll(&mut self) -> Option<String> {
        self.lines.try_recv().ok()
    }

    /// Sends one command line to the peer's stdin.
    pub fn say(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin closed");
        writeln!(stdin, "{line}")
            .and_then(|()| stdin.flush())
            .unwrap_or_else(|e| panic!("cannot write to peer `{}`: {e}", self.role));
    }

    /// The exit status if the peer has exited (reaping it).
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().expect("try_wait");
        }
        self.status
    }

    /// Waits up to `timeout` for the peer to exit; panics if it does not.
    pub fn wait(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.try_wait() {
                return s;
            }
            if Instant::now() >= deadline {
                panic!("peer `{}` did not exit within {timeout:?}", self.role);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Waits up to `timeout` for the peer to exit and asserts it succeeded.
    pub fn wait_success(&mut self, timeout: Duration) {
        let status = self.wait(timeout);
        assert!(
            status.success(),
            "peer `{}` failed: {status} (its panic message is on stderr above)",
            self.role
        );
    }

    /// SIGKILLs the peer and reaps it.
    pub fn kill(&mut self) {
        if self.try_wait().is_none() {
            let _ = self.child.kill();
            self.status = Some(self.child.wait().expect("wait"));
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        drop(self.stdin.take());
        self.kill();
    }
}

// ---------------------------------------------------------------------------
// Peer side
// ---------------------------------------------------------------------------

/// What a role gets: its parameters and the line channels.
pub struct Ctx {
    commands: mpsc::Receiver<String>,
}

impl Ctx {
    /// Parameter `HWLINK_TEST_{key}`.
    pub fn var(&self, key: &str) -> String {
        std::env::var(format!("HWLINK_TEST_{key}"))
            .unwrap_or_else(|_| panic!("peer: HWLINK_TEST_{key} is not set"))
    }
    pub fn var_or(&self, key: &str, default: &str) -> String {
        std::env::var(format!("HWLINK_TEST_{key}")).unwrap_or_else(|_| default.to_string())
    }
    pub fn u64(&self, key: &str) -> u64 {
        self.var(key).parse().expect("a number")
    }
    pub fn name(&self) -> String {
        self.var("NAME")
    }
    pub fn wait(&self) -> WaitStrategy {
        self.var_or("WAIT", "spin-park")
            .parse()
            .expect("a wait strategy")
    }
    pub fn millis(&self, key: &str) -> Duration {
        Duration::from_millis(self.u64(key))
    }
    /// Reports one line to the parent. It starts with a newline: the test
    /// harness has printed `test peer_entry ... ` without one.
    pub fn report(&self, line: &str) {
        let mut out = std::io::stdout().lock();
        writeln!(out, "\n@{line}")
            .and_then(|()| out.flush())
            .expect("stdout");
    }
    /// Waits for the command `word` from the parent; panics on another
    /// command, on EOF or after `timeout`.
    pub fn command(&self, word: &str, timeout: Duration) {
        match self.commands.recv_timeout(timeout) {
            Ok(line) if line == word => {}
            Ok(line) => panic!("peer: got command `{line}`, expected `{word}`"),
            Err(e) => panic!("peer: no command `{word}` within {timeout:?}: {e}"),
        }
    }
    /// The next command, if one comes within `timeout`.
    pub fn next_command(&self, timeout: Duration) -> Option<String> {
        self.commands.recv_timeout(timeout).ok()
    }
}

/// Generous bound on any single wait in a peer.
pub const PEER_WAIT: Duration = Duration::from_secs(60);

/// The body of every test binary's `peer_entry` test.
pub fn peer_entry() {
    peer_entry_with(|_, _| false);
}

/// [`peer_entry`] for a test binary with roles of its own: `extra` runs
/// the roles [`run_role`] does not know and returns whether it knew it.
pub fn peer_entry_with(extra: fn(&str, &Ctx) -> bool) {
    let Ok(role) = std::env::var("HWLINK_TEST_PEER") else {
        return; // an ordinary run of the test binary
    };
    // Die with the parent, whatever happens to it.
    // SAFETY: prctl(PR_SET_PDEATHSIG) takes plain integers.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
    if let Ok(parent) = std::env::var("HWLINK_TEST_PARENT") {
        // SAFETY: getppid has no preconditions.
        if unsafe { libc::getppid() }.to_string() != parent {
            eprintln!("peer: the parent process has gone");
            std::process::exit(3);
        }
    }
    let limit = std::env::var("HWLINK_TEST_PEER_TIMEOUT")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(180u64);
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(limit));
        eprintln!("peer: still running after {limit} s: giving up");
        std::process::exit(4);
    });
    let (tx, commands) = mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let ctx = Ctx { commands };
    run_role(&role, &ctx, extra);
    std::process::exit(0);
}

/// Runs peer role `role`. Every role drops its links before it returns, so
/// that a creator's region file is removed before `exit`.
fn run_role(role: &str, ctx: &Ctx, extra: fn(&str, &Ctx) -> bool) {
    match role {
        "produce" => role_produce(ctx),
        "consume" => role_consume(ctx),
        "produce_forever" => role_produce_forever(ctx),
        "idle_receiver" => role_idle_receiver(ctx),
        "idle_sender" => role_idle_sender(ctx),
        "send_then_close" => role_send_then_close(ctx),
        "recv_then_close" => role_recv_then_close(ctx),
        "create_and_wait" => role_create_and_wait(ctx),
        "zc_write" => role_zc_write(ctx),
        "zc_read" => role_zc_read(ctx),
        "corrupt_victim" => role_corrupt_victim(ctx),
        "open_and_report" => role_open_and_report(ctx),
        "echo" => role_echo(ctx),
        "produce_batches" => role_produce_batches(ctx),
        other => assert!(extra(other, ctx), "unknown peer role {other}"),
    }
}

/// Sends messages `0..COUNT` to link NAME (opened), then reports the
/// checksum and closes.
fn role_produce(ctx: &Ctx) {
    let count = ctx.u64("COUNT");
    let mut tx = LinkBuilder::new(ctx.name())
        .wait(ctx.wait())
        .open_sender()
        .expect("open_sender");
    let mut buf = [0u8; MAX_MSG];
    let mut h = CHECKSUM_INIT;
    for seq in 0..count {
        let len = fill(seq, &mut buf);
        h = checksum(h, &buf[..len]);
        if let Err(e) = tx.send_timeout(&buf[..len], PEER_WAIT) {
            panic!("producer: sending message #{seq} failed: {e:?} ({e})");
        }
    }
    ctx.report(&format!("CHECKSUM {h:016x} {count}"));
    drop(tx);
}

/// Receives messages `0..COUNT` from link NAME (opened), checking each,
/// then expects Disconnected and reports the checksum.
fn role_consume(ctx: &Ctx) {
    let count = ctx.u64("COUNT");
    let mut rx = LinkBuilder::new(ctx.name())
        .wait(ctx.wait())
        .open_receiver()
        .expect("open_receiver");
    let mut scratch = [0u8; MAX_MSG];
    let mut buf = [0u8; 256];
    let mut h = CHECKSUM_INIT;
    for seq in 0..count {
        // Alternate the receive calls; each has a timeout.
        let got = if seq % 2 == 0 {
            rx.recv_timeout(PEER_WAIT).map(|v| {
                let n = v.len();
                buf[..n].copy_from_slice(&v);
                n
            })
        } else {
            match rx.try_recv_with(|m| m.copy_to(&mut buf[..])) {
                Err(RecvError::Empty) => rx.recv_timeout(PEER_WAIT).map(|v| {
                    let n = v.len();
                    buf[..n].copy_from_slice(&v);
                    n
                }),
                other => other,
            }
        };
        let n = got.unwrap_or_else(|e| panic!("consumer: message #{seq}: {e:?} ({e})"));
        if let Err(e) = check(seq, &buf[..n], &mut scratch) {
            panic!("consumer: {e}");
        }
        h = checksum(h, &buf[..n]);
    }
    match rx.recv_timeout(PEER_WAIT) {
        Err(RecvError::Disconnected) => {}
        other => panic!("consumer: after {count} messages expected Disconnected, got {other:?}"),
    }
    ctx.report(&format!("CHECKSUM {h:016x} {count}"));
    drop(rx);
}

/// Opens the sender of NAME and sends messages 0, 1, 2, ... until killed.
/// MODE=fast: as fast as possible. MODE=idle: sends COUNT messages, reports
/// `IDLE`, then sends nothing more and waits to be killed.
fn role_produce_forever(ctx: &Ctx) {
    let mut tx = LinkBuilder::new(ctx.name())
        .wait(ctx.wait())
        .open_sender()
        .expect("open_sender");
    let mut buf = [0u8; MAX_MSG];
    let idle = ctx.var("MODE") == "idle";
    let limit = if idle { ctx.u64("COUNT") } else { u64::MAX };
    ctx.report("READY");
    for seq in 0..limit {
        let len = fill(seq, &mut buf);
        if let Err(e) = tx.send_timeout(&buf[..len], PEER_WAIT) {
            panic!("producer: sending message #{seq} failed: {e:?}");
        }
    }
    ctx.report("IDLE");
    std::thread::sleep(PEER_WAIT);
    panic!("producer: was not killed");
}

/// Opens the receiver of NAME, reports READY, and reads nothing until the
/// command `drain` (then receives COUNT messages, checks them, reports
/// `DRAINED <checksum>`), or `exit`; or, with DROP_AFTER_MS set, drops the
/// receiver after that long, reports `DROPPED` and waits for `exit`.
fn role_idle_receiver(ctx: &Ctx) {
    let mut rx = LinkBuilder::new(ctx.name())
        .wait(ctx.wait())
        .open_receiver()
        .expect("open_receiver");
    ctx.report("READY");
    if let Ok(ms) = std::env::var("HWLINK_TEST_DROP_AFTER_MS") {
        std::thread::sleep(Duration::from_millis(ms.parse().unwrap()));
        drop(rx);
        ctx.report("DROPPED");
        ctx.command("exit", PEER_WAIT);
        return;
    }
    match ctx.next_command(PEER_WAIT).as_deref() {
        Some("drain") => {
            let count = ctx.u64("COUNT");
            let mut scratch = [0u8; MAX_MSG];
            let mut h = CHECKSUM_INIT;
            for seq in 0..count {
                let m = rx
                    .recv_timeout(PEER_WAIT)
                    .unwrap_or_else(|e| panic!("receiver: message #{seq}: {e:?}"));
                check(seq, &m, &mut scratch).unwrap_or_else(|e| panic!("receiver: {e}"));
                h = checksum(h, &m);
            }
            ctx.report(&format!("DRAINED {h:016x}"));
            ctx.command("exit", PEER_WAIT);
        }
        Some("exit") => {}
        other => panic!("idle receiver: unexpected command {other:?}"),
    }
    drop(rx);
}

/// Opens the sender of NAME, reports READY, then on each command `send N`
/// sends messages up to N (exclusive) and reports `SENT`; `exit` ends.
fn role_idle_sender(ctx: &Ctx) {
    let mut tx = LinkBuilder::new(ctx.name())
        .wait(ctx.wait())
        .open_sender()
        .expect("open_sender");
    ctx.report("READY");
    let mut next = 0u64;
    loop {
        let cmd = ctx
            .next_command(PEER_WAIT)
            .expect("idle sender: no command");
        if cmd == "exit" {
            break;
        }
        let upto: u64 = cmd
            .strip_prefix("send ")
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("idle sender: bad command {cmd}"));
        while next < upto {
            tx.send_timeout(message(next), PEER_WAIT)
                .unwrap_or_else(|e| panic!("idle sender: #{next}: {e:?}"));
            next += 1;
        }
        ctx.report("SENT");
    }
    drop(tx);
}

/// Opens the sender of NAME, sends COUNT messages, waits PAUSE_MS (so the
/// receiver goes to sleep), closes the sender, reports `CLOSED` and stays
/// alive until `exit`: the receiver must see the close itself, not a death.
fn role_send_then_close(ctx: &Ctx) {
    let mut tx = LinkBuilder::new(ctx.name())
        .wait(ctx.wait())
        .open_sender()
        .expect("open_sender");
    for seq in 0..ctx.u64("COUNT") {
        tx.send_timeout(message(seq), PEER_WAIT)
            .unwrap_or_else(|e| panic!("sender: #{seq}: {e:?}"));
    }
    std::thread::sleep(ctx.millis("PAUSE_MS"));
    drop(tx);
    ctx.report("CLOSED");
    ctx.command("exit", PEER_WAIT);
}

/// Opens the receiver of NAME, receives COUNT messages, closes the
/// receiver, reports `DROPPED` and stays alive until `exit`.
fn role_recv_then_close(ctx: &Ctx) {
    let mut rx = LinkBuilder::new(ctx.name())
        .wait(ctx.wait())
        .open_receiver()
        .expect("open_receiver");
    let mut scratch = [0u8; MAX_MSG];
    for seq in 0..ctx.u64("COUNT") {
        let m = rx
            .recv_timeout(PEER_WAIT)
            .unwrap_or_else(|e| panic!("receiver: #{seq}: {e:?}"));
        check(seq, &m, &mut scratch).unwrap_or_else(|e| panic!("receiver: {e}"));
    }
    drop(rx);
    ctx.report("DROPPED");
    ctx.command("exit", PEER_WAIT);
}

/// Creates link NAME (END=sender or receiver, capacity CAP, slot 256); a
/// sender sends COUNT messages. Reports `READY <path>`, then waits for
/// `exit` and drops the link (removing the region) before exiting.
fn role_create_and_wait(ctx: &Ctx) {
    let b = LinkBuilder::new(ctx.name())
        .capacity(ctx.var_or("CAP", "256").parse().unwrap())
        .slot_size(256)
        .wait(ctx.wait());
    let end: Box<dyn std::any::Any> = if ctx.var("END") == "sender" {
        let mut tx = b.create_sender().expect("create_sender");
        for seq in 0..ctx.u64("COUNT") {
            tx.try_send(message(seq))
                .unwrap_or_else(|e| panic!("creator: #{seq}: {e:?}"));
        }
        Box::new(tx)
    } else {
        Box::new(b.create_receiver().expect("create_receiver"))
    };
    let path = region(&ctx.name())
        .expect("the created region is not listed")
        .path;
    ctx.report(&format!("READY {}", path.display()));
    ctx.command("exit", PEER_WAIT);
    drop(end);
}

// ---------------------------------------------------------------------------
// Zero-copy script, shared by the writer and the reader
// ---------------------------------------------------------------------------

/// Rounds of the zero-copy script.
pub const ZC_ROUNDS: u64 = 20;
/// Capacity of the zero-copy link: small, so batches wrap around.
pub const ZC_CAPACITY: u32 = 8;

/// The messages the zero-copy writer sends, in order, per round `r`:
/// `[reserve+commit, reserve+commit_len(10), batch x5 (3 push + 2 slot)]`;
/// the dropped reservation sends nothing.
pub fn zc_expected(round: u64) -> Vec<Vec<u8>> {
    let base = round * 100;
    let mut out = vec![message(base)];
    out.push(zc_long(round)[..10].to_vec());
    for k in 0..5 {
        out.push(message(base + 10 + k));
    }
    out
}

/// The 40-byte message of round `r` that is committed with `commit_len(10)`.
fn zc_long(round: u64) -> Vec<u8> {
    (0..40u64).map(|i| (round * 7 + i * 13) as u8).collect()
}

/// Writes the zero-copy script with `tx`.
pub fn zc_write(tx: &mut hwlink::Sender) {
    for round in 0..ZC_ROUNDS {
        let base = round * 100;
        // reserve + write + commit
        let m = message(base);
        let mut slot = tx.reserve(m.len()).expect("reserve");
        assert_eq!(slot.len(), m.len());
        assert_eq!(slot.copy_from(&m), m.len());
        slot.commit();
        // reserve a whole slot, write 10 bytes, commit_len(10)
        let m = zc_long(round);
        let mut slot = tx.reserve(tx.max_message()).expect("reserve");
        assert!(slot.write_at(0, &m));
        slot.commit_len(10);
        // a reservation dropped without commit sends nothing
        {
            let mut slot = tx.reserve(32).expect("reserve");
            slot.copy_from(&[0xee; 32]);
        }
        // a batch: 3 pushes and 2 in-place slots, one commit
        let mut written = 0;
        while written < 5 {
            let mut batch = tx.write_batch(5 - written).expect("write_batch");
            assert!(batch.remaining() >= 1 && batch.remaining() <= 5 - written);
            let mut n = 0;
            while batch.remaining() > 0 {
                let k = (written + n) as u64;
                let m = message(base + 10 + k);
                if k < 3 {
                    batch.push(&m[..]).expect("push");
                } else {
                    let mut s = batch.slot(m.len()).expect("slot");
                    s.copy_from(&m);
                }
                n += 1;
            }
            // A full batch hands the message back.
            match batch.push(&b"extra"[..]) {
                Err(SendError::Full(m)) => assert_eq!(m, b"extra"),
                other => panic!("push on a full batch: {other:?}"),
            }
            assert!(batch.slot(1).is_none(), "slot on a full batch");
            assert_eq!(batch.commit(), n);
            written += n;
        }
    }
}

/// Reads the zero-copy script with `rx`: peek (and peek again without
/// release), recv, and read_batch.
pub fn zc_read(rx: &mut hwlink::Receiver) {
    for round in 0..ZC_ROUNDS {
        let want = zc_expected(round);
        // peek without release: the message is seen again
        {
            let p = rx.peek().expect("peek");
            assert_eq!(p.to_vec(), want[0], "round {round}: first peek");
        }
        let p = rx.peek().expect("peek again");
        assert_eq!(p.to_vec(), want[0], "round {round}: second peek");
        p.release();
        // commit_len(10)
        let m = rx.recv_timeout(PEER_WAIT).expect("recv");
        assert_eq!(m, want[1], "round {round}: commit_len message");
        // then the 5 batch messages, through read_batch
        let mut got: Vec<Vec<u8>> = Vec::new();
        while got.len() < 5 {
            let batch = rx.read_batch(5 - got.len()).expect("read_batch");
            assert!(!batch.is_empty() && batch.len() <= 5 - got.len());
            // A batch not released is seen again.
            let first = batch.get(0).expect("get").to_vec();
            let _ = batch; // not released
            let batch = rx.read_batch(5 - got.len()).expect("read_batch");
            assert_eq!(batch.get(0).unwrap().to_vec(), first, "unreleased batch");
            for m in batch.iter() {
                got.push(m.expect("batch message").to_vec());
            }
            batch.release();
        }
        assert_eq!(&got[..], &want[2..], "round {round}: batch messages");
    }
}

fn role_zc_write(ctx: &Ctx) {
    let mut tx = LinkBuilder::new(ctx.name())
        .wait(ctx.wait())
        .open_sender()
        .expect("open_sender");
    zc_write(&mut tx);
    ctx.report("WRITTEN");
    ctx.command("exit", PEER_WAIT);
    drop(tx);
}

fn role_zc_read(ctx: &Ctx) {
    let mut rx = LinkBuilder::new(ctx.name())
        .wait(ctx.wait())
        .open_receiver()
        .expect("open_receiver");
    assert!(matches!(rx.try_peek(), Err(RecvError::Empty)));
    ctx.report("READY");
    zc_read(&mut rx);
    // Nothing else was sent: the dropped reservations left no message.
    match rx.recv_timeout(PEER_WAIT) {
        Err(RecvError::Disconnected) => {}
        other => panic!("after the script: {other:?}"),
    }
    ctx.report("READ");
    drop(rx);
}

// ---------------------------------------------------------------------------
// Hostile peer
// ---------------------------------------------------------------------------

/// A short name for a receive result, for reports.
pub fn recv_kind(r: &Result<Vec<u8>, RecvError>) -> String {
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

// ---------------------------------------------------------------------------
// Raw access to a region file
// ---------------------------------------------------------------------------

/// A region file mapped by the test itself, to read or corrupt its words
/// the way a broken or hostile peer process would.
pub struct RawRegion {
    pub path: PathBuf,
    map: memmap2::MmapMut,
}

/// Offset of the ring object in a link region.
pub const RING: usize = hwlink_hw::HWL_REGION_HDR_SIZE as usize;
/// Offset of the first slot from the ring object.
pub const SLOTS: usize = hwlink_hw::RING_CONTROL_BYTES as usize;

/// Offsets of `struct hwl_region` fields.
pub mod hdr {
    use core::mem::offset_of;
    use hwlink_hw::hwl_region;
    pub const MAGIC: usize = offset_of!(hwl_region, magic);
    pub const ABI_VERSION: usize = offset_of!(hwl_region, abi_version);
    pub const FEATURES: usize = offset_of!(hwl_region, features);
    pub const TOTAL_SIZE: usize = offset_of!(hwl_region, total_size);
    pub const OBJECT_COUNT: usize = offset_of!(hwl_region, object_count);
    pub const OBJECTS: usize = offset_of!(hwl_region, objects);
}

/// Offsets of `struct hwl_spsc_ring` fields, from the ring object.
pub mod ring {
    use core::mem::offset_of;
    use hwlink_hw::{hwl_endpoint, hwl_spsc_ring};
    pub const TAIL: usize = offset_of!(hwl_spsc_ring, tail);
    pub const HEAD: usize = offset_of!(hwl_spsc_ring, head);
    pub const CAPACITY: usize = offset_of!(hwl_spsc_ring, capacity);
    pub const SLOT_SIZE: usize = offset_of!(hwl_spsc_ring, slot_size);
    pub const SLOT_STRIDE: usize = offset_of!(hwl_spsc_ring, slot_stride);
    pub const FLAGS: usize = offset_of!(hwl_spsc_ring, flags);
    pub const PRODUCER_STATE: usize =
        offset_of!(hwl_spsc_ring, producer) + offset_of!(hwl_endpoint, state);
    pub const CONSUMER_STATE: usize =
        offset_of!(hwl_spsc_ring, consumer) + offset_of!(hwl_endpoint, state);
}

/// Offsets of `struct hwl_slot` fields.
pub mod slot {
    use core::mem::offset_of;
    use hwlink_hw::hwl_slot;
    pub const LEN: usize = offset_of!(hwl_slot, len);
    pub const SEQ: usize = offset_of!(hwl_slot, seq);
}

impl RawRegion {
    /// Maps the file of region `name` (found with `admin::list`) read-write.
    pub fn open(name: &str) -> RawRegion {
        let status = region(name).unwrap_or_else(|| panic!("region {name} is not listed"));
        assert_ne!(
            status.kind,
            hwlink::BackingKind::MemfdHugetlb,
            "a memfd region has no file to map"
        );
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&status.path)
            .unwrap_or_else(|e| panic!("open {}: {e}", status.path.display()));
        // SAFETY: the mapping is shared with processes that write it
        // concurrently; it is only ever accessed through the atomics below,
        // never through references to plain memory.
        let map = unsafe { memmap2::MmapMut::map_mut(&file) }
            .unwrap_or_else(|e| panic!("mmap {}: {e}", status.path.display()));
        RawRegion {
            path: status.path,
            map,
        }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    fn at<T>(&self, offset: usize) -> *mut T {
        assert!(offset + core::mem::size_of::<T>() <= self.map.len());
        assert_eq!(offset % core::mem::align_of::<T>(), 0);
        // SAFETY: in bounds of the mapping (checked above).
        unsafe { self.map.as_ptr().cast_mut().add(offset).cast::<T>() }
    }

    /// The u32 at `offset` from the region start.
    pub fn u32_at(&self, offset: usize) -> &AtomicU32 {
        // SAFETY: in bounds and aligned (checked by `at`); shared memory is
        // only accessed atomically.
        unsafe { &*self.at::<AtomicU32>(offset) }
    }
    /// The u64 at `offset` from the region start.
    pub fn u64_at(&self, offset: usize) -> &AtomicU64 {
        // SAFETY: as in `u32_at`.
        unsafe { &*self.at::<AtomicU64>(offset) }
    }

    pub fn get32(&self, offset: usize) -> u32 {
        self.u32_at(offset).load(Ordering::SeqCst)
    }
    pub fn set32(&self, offset: usize, v: u32) {
        self.u32_at(offset).store(v, Ordering::SeqCst)
    }
    pub fn get64(&self, offset: usize) -> u64 {
        self.u64_at(offset).load(Ordering::SeqCst)
    }
    pub fn set64(&self, offset: usize, v: u64) {
        self.u64_at(offset).store(v, Ordering::SeqCst)
    }

    /// A ring field (offset from the ring object).
    pub fn ring32(&self, field: usize) -> u32 {
        self.get32(RING + field)
    }
    pub fn set_ring32(&self, field: usize, v: u32) {
        self.set32(RING + field, v)
    }

    /// Offset from the region start of the slot that position `pos` uses.
    pub fn slot_offset(&self, pos: u32) -> usize {
        let cap = self.ring32(ring::CAPACITY);
        let stride = self.ring32(ring::SLOT_STRIDE);
        RING + SLOTS + (pos & (cap - 1)) as usize * stride as usize
    }
    pub fn slot_seq(&self, pos: u32) -> u32 {
        self.get32(self.slot_offset(pos) + slot::SEQ)
    }
}

/// Parses `CHECKSUM <hex> <count>` as reported by a peer.
pub fn parse_checksum(rest: &str) -> (u64, u64) {
    let mut it = rest.split_whitespace();
    let h = u64::from_str_radix(it.next().expect("checksum"), 16).expect("hex checksum");
    let n = it.next().expect("count").parse().expect("count");
    (h, n)
}

/// Opens the receiver of `NAME-a` and the sender of `NAME-b` and sends back
/// every message it receives, until `NAME-a`'s sender closes; then reports
/// `DONE <count>`.
fn role_echo(ctx: &Ctx) {
    let name = ctx.name();
    let wait = ctx.wait();
    let mut rx = LinkBuilder::new(format!("{name}-a"))
        .wait(wait)
        .open_receiver()
        .expect("open_receiver");
    let mut tx = LinkBuilder::new(format!("{name}-b"))
        .wait(wait)
        .open_sender()
        .expect("open_sender");
    let mut buf = vec![0u8; rx.max_message()];
    let mut n = 0u64;
    loop {
        match rx.recv_timeout(PEER_WAIT) {
            Ok(m) => {
                buf[..m.len()].copy_from_slice(&m);
                tx.send_timeout(&buf[..m.len()], PEER_WAIT)
                    .unwrap_or_else(|e| panic!("echo: sending back #{n}: {e:?}"));
                n += 1;
            }
            Err(RecvError::Disconnected) => break,
            Err(e) => panic!("echo: after {n} messages: {e:?}"),
        }
    }
    ctx.report(&format!("DONE {n}"));
    drop((rx, tx));
}

/// The shm directory (`HWLINK_SHM_DIR`, else `/dev/shm`).
pub fn shm_dir() -> PathBuf {
    std::env::var_os("HWLINK_SHM_DIR")
        .filter(|v| !v.is_empty())
        .map_or_else(|| PathBuf::from("/dev/shm"), PathBuf::from)
}

/// Writes, by hand, a valid link region `name` in the shm directory whose
/// free-running indices both start at `start` (a creator always starts at
/// 0: this is how a test reaches the u32 wrap-around in reasonable time).
/// Slot headers hold "previous lap" values, as after a full lap. The
/// caller removes the file.
pub fn forge_link_region(name: &str, capacity: u32, slot_size: u32, start: u32) -> PathBuf {
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

/// Sends messages `0..COUNT` to link NAME (opened) in batches of up to
/// BATCH with `write_batch` (alternating `push` and in-place `slot`), then
/// reports the checksum and closes.
fn role_produce_batches(ctx: &Ctx) {
    let count = ctx.u64("COUNT");
    let max = ctx.u64("BATCH") as usize;
    let mut tx = LinkBuilder::new(ctx.name())
        .wait(ctx.wait())
        .open_sender()
        .expect("open_sender");
    let mut buf = [0u8; MAX_MSG];
    let mut h = CHECKSUM_INIT;
    let mut seq = 0u64;
    let deadline = Instant::now() + PEER_WAIT;
    while seq < count {
        assert!(Instant::now() < deadline, "producer: too slow");
        let want = max.min((count - seq) as usize);
        let mut batch = match tx.write_batch(want) {
            Ok(b) => b,
            Err(e) => panic!("producer: write_batch at #{seq}: {e:?}"),
        };
        while batch.remaining() > 0 {
            let len = fill(seq, &mut buf);
            h = checksum(h, &buf[..len]);
            if seq % 2 == 0 {
                batch.push(&buf[..len]).expect("push");
            } else {
                batch.slot(len).expect("slot").copy_from(&buf[..len]);
            }
            seq += 1;
        }
        batch.commit();
    }
    ctx.report(&format!("CHECKSUM {h:016x} {count}"));
    drop(tx);
}

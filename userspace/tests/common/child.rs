//! The peer side: a test binary run again as a peer process. Every test
//! binary that spawns peers has
//!
//! ```ignore
//! #[test]
//! fn peer_entry() {
//!     common::child::peer_entry_with(roles);
//! }
//! ```
//!
//! which returns at once unless `HWLINK_TEST_PEER` is set. A parent spawns
//! a peer with `Peer::spawn` (`peer.rs`); the peer runs the role named by
//! `HWLINK_TEST_PEER` and exits 0 on success or panics. Peers talk to the
//! parent through lines on stdout that start with `@` (everything else is
//! the test harness talking) and read commands from stdin. Every wait in a
//! peer has a timeout, a peer dies with its parent (`PR_SET_PDEATHSIG`),
//! and a peer exits on its own after `HWLINK_TEST_PEER_TIMEOUT` seconds
//! whatever happens.

use hwlink::WaitStrategy;
use std::io::{BufRead, Write};
use std::sync::mpsc;
use std::time::Duration;

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
        match self.next_command(timeout) {
            Some(line) if line == word => {}
            Some(line) => panic!("peer: got command `{line}`, expected `{word}`"),
            None => panic!("peer: no command `{word}` within {timeout:?} (or stdin closed)"),
        }
    }
    /// The next command, if one comes within `timeout`.
    pub fn next_command(&self, timeout: Duration) -> Option<String> {
        self.commands.recv_timeout(timeout).ok()
    }
}

/// Generous bound on any single wait in a peer.
pub const PEER_WAIT: Duration = Duration::from_secs(60);

/// The body of every test binary's `peer_entry` test: returns at once in
/// an ordinary run; in a peer process, runs the role named by
/// `HWLINK_TEST_PEER` with `roles` (which returns whether it knew the role)
/// and exits 0.
pub fn peer_entry_with(roles: fn(&str, &Ctx) -> bool) {
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
    assert!(roles(&role, &ctx), "unknown peer role {role}");
    std::process::exit(0);
}

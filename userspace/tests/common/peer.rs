//! The parent side: spawning this test binary again as a peer process
//! running one role (see `child.rs`), reading its `@` report lines and
//! killing it. Commands and waiting for its exit are in `drive.rs`.

use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// A peer process running one role; killed and reaped on drop.
pub struct Peer {
    pub(crate) role: String,
    pub(crate) child: Child,
    pub(crate) stdin: Option<ChildStdin>,
    pub(crate) lines: mpsc::Receiver<String>,
    pub(crate) status: Option<ExitStatus>,
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
        Peer::spawn_exe(&exe, wrapper, role, env)
    }

    /// [`Peer::spawn_wrapped`] running `exe`, a copy of this test binary
    /// (e.g. one that other users may execute).
    pub fn spawn_exe(
        exe: &std::path::Path,
        wrapper: &[&str],
        role: &str,
        env: &[(&str, String)],
    ) -> Peer {
        let mut cmd = match wrapper.split_first() {
            None => Command::new(exe),
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(exe);
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

    /// The exit status if the peer has exited (reaping it).
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().expect("try_wait");
        }
        self.status
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

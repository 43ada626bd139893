//! Driving a peer process: commands on its stdin, waiting for its exit.

use super::peer::Peer;
use std::io::Write;
use std::process::ExitStatus;
use std::time::{Duration, Instant};

impl Peer {
    /// Sends one command line to the peer's stdin.
    pub fn say(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin closed");
        writeln!(stdin, "{line}")
            .and_then(|()| stdin.flush())
            .unwrap_or_else(|e| panic!("cannot write to peer `{}`: {e}", self.role));
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
}

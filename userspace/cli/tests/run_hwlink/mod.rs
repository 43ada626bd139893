//! Runs the `hwlink` binary under test with a time limit (shared by the
//! CLI test binaries).

use std::process::{Command, Output, Stdio};
use std::time::Duration;

/// Runs `hwlink args...`, killing it if it takes longer than `limit`.
pub fn hwlink(args: &[&str], limit: Duration) -> (Output, u32) {
    let child = Command::new(env!("CARGO_BIN_EXE_hwlink"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot run hwlink");
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(out) => (out.expect("hwlink output"), pid),
        Err(_) => {
            // SAFETY: kill has no memory-safety preconditions; the child is
            // not reaped yet (its waiter thread is still blocked on it).
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            panic!(
                "`hwlink {}` did not finish within {limit:?}",
                args.join(" ")
            );
        }
    }
}

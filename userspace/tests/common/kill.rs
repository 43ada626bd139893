//! SIGKILL of a peer at a chosen moment.

use std::time::{Duration, Instant};

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

//! Is a process still alive? A pidfd where the kernel has one, and the
//! process start time from /proc against pid reuse.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// This process's id and start time, as recorded in shared memory.
pub(crate) fn me() -> (u32, u64) {
    let pid = std::process::id();
    (pid, start_time(pid).unwrap_or(0))
}

/// The start time of `pid` in clock ticks since boot (field 22 of
/// /proc/PID/stat), or None if it does not exist or is a zombie.
pub(crate) fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses: skip past the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?;
    if state == "Z" || state == "X" {
        return None;
    }
    // `rest` starts at field 3 (state); start time is field 22.
    fields.nth(22 - 4)?.parse().ok()
}

/// One-shot check: does `pid` still run, and is it the same process that
/// recorded `start_time` (0 = unknown, accept any)?
pub fn is_alive(pid: u32, start: u64) -> bool {
    if pid == 0 {
        return false;
    }
    match start_time(pid) {
        None => false,
        Some(t) => start == 0 || t == start,
    }
}

/// Watches one peer process for exit.
#[derive(Debug)]
pub(crate) struct PeerWatch {
    pid: u32,
    start: u64,
    pidfd: Option<OwnedFd>,
}

impl PeerWatch {
    /// Starts watching `pid`, which recorded `start` as its start time.
    pub(crate) fn new(pid: u32, start: u64) -> PeerWatch {
        // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
        let pidfd = (fd >= 0).then(|| {
            // SAFETY: the kernel just returned this fd to us; nobody else owns it.
            unsafe { OwnedFd::from_raw_fd(fd as i32) }
        });
        let watch = PeerWatch { pid, start, pidfd };
        // The pid may have been reused between the peer's death and our
        // pidfd_open: then the pidfd watches a stranger. Check once.
        if watch.pidfd.is_some() && !is_alive(pid, start) {
            return PeerWatch {
                pid,
                start,
                pidfd: None,
            };
        }
        watch
    }

    /// One system call: false once the process has exited (zombies count as
    /// exited).
    pub(crate) fn is_alive(&self) -> bool {
        match &self.pidfd {
            Some(fd) => {
                let mut p = libc::pollfd {
                    fd: fd.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                };
                // SAFETY: one valid pollfd on our stack, zero timeout.
                let n = unsafe { libc::poll(&mut p, 1, 0) };
                n == 0
            }
            None => is_alive(self.pid, self.start),
        }
    }
}

/// The CPUs (0..63) this thread may run on, as a bit mask.
pub(crate) fn cpu_mask() -> u64 {
    // SAFETY: cpu_set_t is plain data; zeroed is a valid empty set.
    let mut set: libc::cpu_set_t = unsafe { core::mem::zeroed() };
    // SAFETY: the pointer and size describe `set`, which the call fills.
    let rc =
        unsafe { libc::sched_getaffinity(0, core::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if rc != 0 {
        return u64::MAX;
    }
    let mut mask = 0u64;
    for cpu in 0..64 {
        // SAFETY: CPU_ISSET reads the set we own; cpu < CPU_SETSIZE.
        if unsafe { libc::CPU_ISSET(cpu, &set) } {
            mask |= 1 << cpu;
        }
    }
    mask
}

/// Pins the calling thread to one CPU.
pub fn pin_to_cpu(cpu: usize) -> std::io::Result<()> {
    // SAFETY: cpu_set_t is plain data; zeroed is a valid empty set.
    let mut set: libc::cpu_set_t = unsafe { core::mem::zeroed() };
    // SAFETY: CPU_SET writes into the set we own; bounds are checked by libc.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: the pointer and size describe `set`.
    let rc = unsafe { libc::sched_setaffinity(0, core::mem::size_of::<libc::cpu_set_t>(), &set) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// CPUs online in the machine (not the affinity mask of this thread, which
/// `available_parallelism` would report).
pub(crate) fn online_cpus() -> usize {
    // SAFETY: sysconf has no memory-safety preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    usize::try_from(n).unwrap_or(1).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive() {
        let (pid, start) = me();
        assert!(start > 0);
        assert!(is_alive(pid, start));
        assert!(
            !is_alive(pid, start + 1),
            "a different start time means pid reuse"
        );
        assert!(PeerWatch::new(pid, start).is_alive());
    }

    #[test]
    fn an_exited_child_is_dead() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        let start = start_time(pid).unwrap_or(0);
        let watch = PeerWatch::new(pid, start);
        child.wait().unwrap();
        assert!(!watch.is_alive());
        assert!(!is_alive(pid, start));
    }

    #[test]
    fn cpu_mask_is_not_empty() {
        assert_ne!(cpu_mask(), 0);
    }
}

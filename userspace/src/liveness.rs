//! Is a process still alive? Every process that uses hwlink has a token
//! (its liveness file, `hwlink_drivers::process`), and regions record
//! tokens wherever they say who holds what. A token's process is known dead
//! from one load of its robust-futex word (no system call, for hot paths),
//! or from its file lock (one system call, for waits): both hold across pid
//! namespaces (hw/SPEC.md §8.8).

use crate::error::OpenError;
use hwlink_drivers::process::Watch;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

/// This process's pid and token, setting the token up on first use.
pub(crate) fn me() -> Result<(u32, u32), OpenError> {
    Ok((std::process::id(), token()?))
}

#[cfg(not(miri))]
fn token() -> Result<u32, OpenError> {
    Ok(hwlink_drivers::process::my_token()?)
}

/// Miri runs the ring logic over heap memory, without files or the
/// robust-list system call: every party is one live process.
#[cfg(miri)]
fn token() -> Result<u32, OpenError> {
    Ok(1)
}

/// This process's token once it has one (every attached handle made
/// sure of that), else 0.
pub(crate) fn my_token() -> u32 {
    token().unwrap_or(0)
}

/// One-shot check (opens the liveness file: not for hot paths): does the
/// process with `token` still run? 0 is nobody.
#[cfg(not(miri))]
pub fn is_alive(token: u32) -> bool {
    match watch(token) {
        Some(w) => w.alive(),
        None => false,
    }
}

/// See [`token`] under Miri.
#[cfg(miri)]
pub fn is_alive(token: u32) -> bool {
    token != 0
}

/// [`is_alive`] for a reaper about to take over what the process held: a
/// process the kernel has marked dead is still "alive" while its threads
/// exit (until its lock drops, a few microseconds, more on a loaded
/// machine); wait for that (up to `EXITING_PATIENCE`, short enough for a
/// caller's 10 ms deadline margin even when a hostile process marks a live
/// one dead) instead of leaving it to the next look. A truncated liveness
/// file is no mark: the lock alone decides.
///
/// The patience is spent once per token and second: a process marked dead
/// that still holds its lock after it (a mark a hostile process wrote, or
/// a very slow exit) is judged by its lock alone for the next second, so a
/// reaper looking at many cells or members that name it waits once, not
/// once per cell.
pub fn is_alive_settled(token: u32) -> bool {
    use std::time::{Duration, Instant};
    const EXITING_PATIENCE: Duration = Duration::from_millis(5);
    const PATIENCE_SPENT_FOR: Duration = Duration::from_secs(1);
    /// Tokens whose patience was spent, and when.
    static SPENT: Mutex<Vec<(u32, Instant)>> = Mutex::new(Vec::new());
    let Some(w) = watch(token) else {
        return false;
    };
    if !w.alive() {
        return false;
    }
    if !w.died() || w.file_truncated() {
        return true;
    }
    // try_lock: a child after fork may find it held by a thread that is
    // gone; then it just waits again.
    let recently_spent = SPENT.try_lock().is_ok_and(|mut spent| {
        spent.retain(|(_, at)| at.elapsed() < PATIENCE_SPENT_FOR);
        spent.iter().any(|&(t, _)| t == token)
    });
    if recently_spent {
        return true;
    }
    let t0 = Instant::now();
    while t0.elapsed() < EXITING_PATIENCE {
        std::thread::sleep(Duration::from_millis(1));
        if !w.alive() {
            return false;
        }
    }
    if let Ok(mut spent) = SPENT.try_lock() {
        if spent.len() < 1024 {
            spent.push((token, Instant::now()));
        }
    }
    true
}

/// The process's pid as it recorded it (in its own pid namespace), or 0.
pub fn pid_of(token: u32) -> u32 {
    watch(token).map_or(0, |w| w.pid())
}

/// A peer's liveness file (`Watch`), whose robust lock word reads as one of
/// this crate's atomics.
#[derive(Debug)]
pub(crate) struct Watched(Watch);

impl std::ops::Deref for Watched {
    type Target = Watch;
    fn deref(&self) -> &Watch {
        &self.0
    }
}

impl Watched {
    /// `Watch::lock_word`, as a `crate::sync` atomic.
    #[cfg(not(loom))]
    pub(crate) fn lock_word(&self) -> Option<&crate::sync::AtomicU32> {
        self.0.lock_word().map(crate::sync::AtomicU32::from_core)
    }
}

/// Watches shared by every handle of this process, one per token.
fn watch(token: u32) -> Option<Arc<Watched>> {
    static CACHE: Mutex<Option<HashMap<u32, Weak<Watched>>>> = Mutex::new(None);
    if token == 0 {
        return None;
    }
    // In a child after fork, a thread of the parent that no longer exists
    // may hold the lock: then do without the cache.
    let mut cache = None;
    for _ in 0..1000 {
        match CACHE.try_lock() {
            Ok(guard) => {
                cache = Some(guard);
                break;
            }
            Err(std::sync::TryLockError::Poisoned(e)) => {
                cache = Some(e.into_inner());
                break;
            }
            Err(std::sync::TryLockError::WouldBlock) => std::thread::yield_now(),
        }
    }
    let Some(mut cache) = cache else {
        return Watch::open(token).map(|w| Arc::new(Watched(w)));
    };
    let map = cache.get_or_insert_with(HashMap::new);
    if let Some(w) = map.get(&token).and_then(Weak::upgrade) {
        return Some(w);
    }
    let w = Arc::new(Watched(Watch::open(token)?));
    if map.len() > 1024 {
        map.retain(|_, w| w.strong_count() > 0);
    }
    map.insert(token, Arc::downgrade(&w));
    Some(w)
}

/// Watches one peer process for its death.
#[derive(Debug, Clone)]
pub(crate) struct PeerWatch {
    /// None: no liveness file (the process is gone, or never was).
    watch: Option<Arc<Watched>>,
}

impl PeerWatch {
    /// Starts watching the process with `token`.
    pub(crate) fn new(token: u32) -> PeerWatch {
        PeerWatch {
            watch: watch(token),
        }
    }

    /// The watched process's liveness file, to sleep on its robust word
    /// (`Watch::lock_word`) beside a doorbell.
    pub(crate) fn shared(&self) -> Option<Arc<Watched>> {
        self.watch.clone()
    }

    /// The watched process's robust word, to sleep on beside a doorbell
    /// (`Watch::lock_word`), borrowed: no reference count touched.
    #[cfg(not(loom))]
    pub(crate) fn lock_word(&self) -> Option<&crate::sync::AtomicU32> {
        self.watch.as_ref().and_then(|w| w.lock_word())
    }

    /// One load, no system call: the kernel marked the process dead.
    #[inline]
    pub(crate) fn died(&self) -> bool {
        self.watch.as_ref().map_or(true, |w| w.died())
    }

    /// One system call: the process still holds its liveness lock. Once it
    /// does not, no thread of it can write shared memory any more.
    pub(crate) fn is_alive(&self) -> bool {
        self.watch.as_ref().is_some_and(|w| w.alive())
    }

    /// One system call: every thread of the process is gone (its lock was
    /// dropped, or it has no liveness file), so whatever it held in shared
    /// memory may be taken from it.
    pub(crate) fn gone_for_good(&self) -> bool {
        !self.is_alive()
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

/// If the calling thread is pinned to one CPU (it inherited the affinity of
/// a sending thread pinned to its own core) while the process's main thread
/// may run on more, gives it the main thread's CPUs: for a background
/// thread that must not compete with the thread that started it, without
/// leaving the CPUs the process was confined to (`taskset`, cpusets).
/// Whether it changed anything.
#[cfg_attr(loom, allow(dead_code))]
pub(crate) fn unpin_if_pinned() -> std::io::Result<bool> {
    let size = core::mem::size_of::<libc::cpu_set_t>();
    let affinity = |tid: libc::pid_t| {
        // SAFETY: cpu_set_t is plain data; zeroed is a valid empty set.
        let mut set: libc::cpu_set_t = unsafe { core::mem::zeroed() };
        // SAFETY: the pointer and size describe `set`, which the call fills.
        if unsafe { libc::sched_getaffinity(tid, size, &mut set) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: CPU_COUNT reads the set we own.
        let n = unsafe { libc::CPU_COUNT(&set) };
        Ok((set, n))
    };
    let (_, mine) = affinity(0)?;
    let (process, all) = affinity(std::process::id() as libc::pid_t)?;
    if mine != 1 || all <= 1 {
        return Ok(false);
    }
    // SAFETY: the pointer and size describe `process`.
    if unsafe { libc::sched_setaffinity(0, size, &process) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(true)
}

/// CPUs online in the machine (not the affinity mask of this thread, which
/// `available_parallelism` would report).
pub fn online_cpus() -> usize {
    // Asked once per process: glibc reads a sysfs file for it, and ends
    // and selects are made on hot paths.
    static ONLINE: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *ONLINE.get_or_init(|| {
        // SAFETY: sysconf has no memory-safety preconditions.
        let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
        usize::try_from(n).unwrap_or(1).max(1)
    })
}

/// Child processes for tests of real processes sharing memory.
#[cfg(all(test, not(miri), not(loom)))]
pub(crate) mod test_process {
    /// Forks a child that runs `f` and exits with its result as status.
    pub(crate) fn fork_child(f: impl FnOnce() -> bool) -> libc::pid_t {
        // SAFETY: fork has no memory preconditions; the child only runs `f`
        // and `_exit`s, never returning into the test harness.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            let ok = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or(false);
            // SAFETY: ends the child without running the parent's atexit
            // handlers or destructors.
            unsafe { libc::_exit(if ok { 0 } else { 1 }) };
        }
        pid
    }

    /// Waits for our child `pid` to end; its wait status.
    pub(crate) fn reap(pid: libc::pid_t) -> libc::c_int {
        let mut status = 0;
        // SAFETY: `status` is a live c_int; `pid` is our child.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        status
    }

    /// Sends SIGKILL to our child `pid`.
    pub(crate) fn kill(pid: libc::pid_t) {
        // SAFETY: plain syscall on our own child.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive() {
        let (pid, token) = me().unwrap();
        assert_eq!(pid, std::process::id());
        assert!(is_alive(token));
        assert!(!is_alive(0));
        let w = PeerWatch::new(token);
        assert!(!w.died());
        assert!(w.is_alive());
        assert_eq!(pid_of(token), pid);
    }

    #[test]
    fn an_unknown_token_is_dead() {
        // Tokens are random: one with no file is nobody's.
        let w = PeerWatch::new(0x0bad_cafe);
        if hwlink_drivers::process::Watch::open(0x0bad_cafe).is_none() {
            assert!(w.died());
            assert!(!w.is_alive());
        }
    }

    #[test]
    fn cpu_mask_is_not_empty() {
        assert_ne!(cpu_mask(), 0);
    }
}

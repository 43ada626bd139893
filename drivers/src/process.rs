//! Process identity and liveness that hold across PID namespaces
//! (hw/SPEC.md §8.8). Every process that uses hwlink has a *token*, a
//! random non-zero u32 naming its liveness file
//! `<shm dir>/hwlink-proc.<token as 8 hex digits>` (`struct hwl_process`).
//! Regions record tokens, not pids, wherever they say who holds what.
//!
//! Two kernel facts tell a peer that the process died, even by SIGKILL and
//! whatever pid namespace either side is in:
//! - the file's `lock` word is a robust futex: a thread of ours that never
//!   exits lists it on its robust list, so the kernel sets
//!   `HWL_PROCESS_OWNER_DIED` in it when the process dies. Peers map the
//!   file read-only and learn of the death from one load: no system call
//!   on a polling hot path ([`Watch::died`]);
//! - the process holds an open-file-description write lock (`F_OFD_SETLK`)
//!   on the file for its whole life; the kernel drops it once the last
//!   thread is gone. Peers test it with `F_OFD_GETLK` ([`Watch::lock_held`])
//!   when they wait anyway: it cannot be faked by writing memory, and when
//!   it is gone no thread of the process can still be writing to shared
//!   memory. (Not a classic POSIX lock: closing any other descriptor of the
//!   file, as watching ourselves does, would drop that one. A child after
//!   fork closes its copy of the descriptor, so the lock stays its parent's
//!   alone.)
//!
//! The file is created under a temporary name, locked, and only then linked
//! into place, so a visible liveness file whose lock is free belongs to a
//! dead process. A clean exit removes the file (`atexit`); files of dead
//! processes are removed by the next process that sets itself up, and by
//! `hwlink rm --stale`.

#![allow(unsafe_code)]

use std::fs::{self, File, OpenOptions, Permissions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::ptr::addr_of_mut;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicPtr, AtomicU32, AtomicU64, Ordering};
use std::sync::Once;

use hwlink_hw::{
    hwl_process, HWL_ABI_VERSION, HWL_PROCESS_FILE_SIZE, HWL_PROCESS_MAGIC, HWL_PROCESS_OWNER_DIED,
    HWL_PROCESS_TID_MASK, HWL_PROCESS_WAITERS,
};

use crate::dirs::Dirs;
use crate::error::MapError;
use crate::mapping::Mapping;

/// Prefix of every liveness file name.
pub const PROCESS_FILE_PREFIX: &str = "hwlink-proc.";
const FILE_SIZE: usize = HWL_PROCESS_FILE_SIZE as usize;

/// `hwlink-proc.<token>`.
pub fn process_file_name(token: u32) -> String {
    format!("{PROCESS_FILE_PREFIX}{token:08x}")
}

/// The token a liveness file name stands for.
pub fn parse_process_file_name(name: &str) -> Option<u32> {
    let hex = name.strip_prefix(PROCESS_FILE_PREFIX)?;
    if hex.len() != 8 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u32::from_str_radix(hex, 16).ok().filter(|&t| t != 0)
}

/// This process's token once set up (0: not yet, or reset in a child
/// after fork).
static TOKEN: AtomicU32 = AtomicU32::new(0);
/// This process's identity: its liveness file (kept open: the lock lives
/// as long as it) and mapping. Set up once per process and never freed
/// (a child after fork forgets, and leaks, its parent's).
static ME: AtomicPtr<Me> = AtomicPtr::new(core::ptr::null_mut());
/// Held while the identity is being set up. Not a `Mutex`: a child after
/// fork must be able to reset it, whoever held it in the parent.
static SETTING_UP: AtomicBool = AtomicBool::new(false);
/// The descriptor holding our lock, for a child after fork to close.
static LOCK_FD: AtomicI32 = AtomicI32::new(-1);

struct Me {
    pid: u32,
    token: u32,
    path: PathBuf,
    _file: File,
    _map: Mapping,
}

/// This process's token, setting up its liveness file (and the thread
/// that keeps it on its robust list) on first use. A child after `fork`
/// gets a token of its own on its first call.
pub fn my_token() -> Result<u32, MapError> {
    loop {
        let t = TOKEN.load(Ordering::Acquire);
        if t != 0 {
            return Ok(t);
        }
        if SETTING_UP
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
        {
            break;
        }
        std::thread::yield_now();
    }
    let result = (|| {
        if TOKEN.load(Ordering::Acquire) != 0 {
            return Ok(());
        }
        let pid = std::process::id();
        let dir = Dirs::from_env().shm;
        remove_dead_in(&dir);
        let made = create(&dir, pid)?;
        let token = made.token;
        LOCK_FD.store(made._file.as_raw_fd(), Ordering::Release);
        ME.store(Box::into_raw(Box::new(made)), Ordering::Release);
        register_exit_hooks();
        TOKEN.store(token, Ordering::Release);
        Ok(())
    })();
    SETTING_UP.store(false, Ordering::Release);
    result.map(|()| TOKEN.load(Ordering::Acquire))
}

/// This process's identity, if set up (and not a parent's).
fn me() -> Option<&'static Me> {
    let p = ME.load(Ordering::Acquire);
    // SAFETY: ME is null or a leaked Box that is never freed.
    let m = unsafe { p.as_ref() }?;
    (m.pid == std::process::id()).then_some(m)
}

fn register_exit_hooks() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // SAFETY: both hooks are `extern "C" fn()` with no preconditions;
        // registering them has no other effect.
        unsafe {
            libc::atexit(remove_own_file);
            libc::pthread_atfork(None, None, Some(forget_token_in_child));
        }
    });
}

/// In a child after fork: the identity is the parent's (its lock is not
/// ours, its file not ours to remove); a set-up the parent had under way
/// will never finish here.
extern "C" fn forget_token_in_child() {
    let fd = LOCK_FD.swap(-1, Ordering::AcqRel);
    if fd >= 0 {
        // SAFETY: our copy of the parent's lock descriptor, owned by its
        // leaked identity, which is never dropped: nothing uses it again.
        unsafe { libc::close(fd) };
    }
    TOKEN.store(0, Ordering::Release);
    ME.store(core::ptr::null_mut(), Ordering::Release);
    SETTING_UP.store(false, Ordering::Release);
}

/// At a clean exit: remove this process's liveness file (not a parent's).
extern "C" fn remove_own_file() {
    if let Some(m) = me() {
        let _ = fs::remove_file(&m.path);
    }
}

fn random_u32() -> u32 {
    let mut b = [0u8; 4];
    // SAFETY: writes at most 4 bytes into `b`.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), 4, 0) };
    if n != 4 {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        b = (t ^ std::process::id().rotate_left(16)).to_le_bytes();
    }
    u32::from_le_bytes(b)
}

/// Creates, locks and publishes a liveness file in `dir`.
fn create(dir: &Path, pid: u32) -> Result<Me, MapError> {
    let tmp = dir.join(format!(
        ".{PROCESS_FILE_PREFIX}tmp.{pid}.{:08x}",
        random_u32()
    ));
    let fail = |path: &Path, source: io::Error| MapError::Liveness {
        path: path.to_owned(),
        source,
    };
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o644)
        .custom_flags(libc::O_CLOEXEC)
        .open(&tmp)
        .map_err(|e| fail(&tmp, e))?;
    let built = (|| {
        // Readable by everyone (peers of other users map it read-only),
        // writable by us alone, whatever the umask.
        file.set_permissions(Permissions::from_mode(0o644))?;
        file.set_len(FILE_SIZE as u64)?;
        set_lock(&file)?;
        let map = Mapping::shared_populated(&file, FILE_SIZE)?;
        Ok::<_, io::Error>(map)
    })();
    let map = match built {
        Ok(map) => map,
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            return Err(fail(&tmp, e));
        }
    };
    let p = map.as_ptr().cast::<hwl_process>();
    // SAFETY: a fresh, zero-filled page of our own file, mapped read-write;
    // nobody else can know its name yet. The lock word is only ever
    // accessed atomically from here on (by us and by the kernel).
    let lock = unsafe { &*addr_of_mut!((*p).lock).cast::<AtomicU32>() };
    if let Err(e) = hold_until_death(lock) {
        let _ = fs::remove_file(&tmp);
        return Err(fail(&tmp, e));
    }
    let mut comm = [0u8; 16];
    if let Ok(c) = fs::read("/proc/self/comm") {
        let c = c.strip_suffix(b"\n").unwrap_or(&c);
        let n = c.len().min(15);
        comm[..n].copy_from_slice(&c[..n]);
    }
    let start_time = own_start_time().unwrap_or(0);
    for _ in 0..64 {
        let token = random_u32();
        if token == 0 {
            continue;
        }
        // SAFETY: as above; plain fields written before the Release store
        // of the magic publishes them.
        unsafe {
            addr_of_mut!((*p).abi_version).write_volatile(HWL_ABI_VERSION);
            addr_of_mut!((*p).token).write_volatile(token);
            addr_of_mut!((*p).pid).write_volatile(pid);
            addr_of_mut!((*p).start_time).write_volatile(start_time);
            addr_of_mut!((*p).comm).write_volatile(comm);
            (*addr_of_mut!((*p).magic).cast::<std::sync::atomic::AtomicU64>())
                .store(HWL_PROCESS_MAGIC, Ordering::Release);
        }
        let path = dir.join(process_file_name(token));
        // Published already locked: a visible file with a free lock is a
        // dead process's.
        match fs::hard_link(&tmp, &path) {
            Ok(()) => {
                let _ = fs::remove_file(&tmp);
                return Ok(Me {
                    pid,
                    token,
                    path,
                    _file: file,
                    _map: map,
                });
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                return Err(fail(&path, e));
            }
        }
    }
    let _ = fs::remove_file(&tmp);
    Err(fail(dir, io::Error::other("no free token after 64 tries")))
}

/// Start time of this process in clock ticks since boot (informational).
fn own_start_time() -> Option<u64> {
    let stat = fs::read_to_string("/proc/self/stat").ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Takes an open-file-description write lock on all of `file` (released by
/// the kernel when this process is gone).
fn set_lock(file: &File) -> io::Result<()> {
    // SAFETY: all-zero is a valid flock (l_pid must be 0 for OFD locks);
    // F_OFD_SETLK reads it.
    let mut fl: libc::flock = unsafe { core::mem::zeroed() };
    fl.l_type = libc::F_WRLCK as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    // SAFETY: the descriptor is valid while `file` is borrowed; F_OFD_SETLK
    // only reads `fl`.
    let rc = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_SETLK, &fl) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Whether an open file description other than this `file`'s holds a
/// lock that conflicts with a read lock: the owner's write lock.
fn lock_held(file: &File) -> bool {
    // SAFETY: all-zero is a valid flock (l_pid 0, as OFD locks require).
    let mut fl: libc::flock = unsafe { core::mem::zeroed() };
    fl.l_type = libc::F_RDLCK as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    // SAFETY: the descriptor is valid while `file` is borrowed;
    // F_OFD_GETLK writes only into `fl`.
    let rc = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_GETLK, &mut fl) };
    // An error (which F_OFD_GETLK on a regular file does not have) counts
    // as held: never declare a process dead without proof.
    rc != 0 || fl.l_type != libc::F_UNLCK as libc::c_short
}

/// The kernel's `struct robust_list`.
#[repr(C)]
struct RobustList {
    next: *mut RobustList,
}

/// The kernel's `struct robust_list_head`.
#[repr(C)]
struct RobustListHead {
    list: RobustList,
    futex_offset: libc::c_long,
    list_op_pending: *mut RobustList,
}

/// Starts the liveness thread: it writes its tid into `lock` and registers
/// a robust list holding that one word, then sleeps for the life of the
/// process. When the process dies, the kernel finds the word on the
/// thread's list and sets `HWL_PROCESS_OWNER_DIED` in it.
///
/// A thread of our own, because a thread has one robust list and glibc
/// owns those of the threads it starts for the program; this one runs no
/// code that locks a glibc robust mutex, so replacing its list costs
/// nothing. Its list and entry live in our private memory, never in
/// shared memory: the single entry points at the word by an offset.
fn hold_until_death(lock: &'static AtomicU32) -> io::Result<()> {
    let addr = lock as *const AtomicU32 as usize;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("hwlink-liveness".into())
        .stack_size(64 * 1024)
        .spawn(move || {
            // SAFETY: gettid has no preconditions.
            let tid = unsafe { libc::syscall(libc::SYS_gettid) } as u32;
            // SAFETY: `addr` is the lock word of our liveness mapping, which
            // is never unmapped (the identity lives for the process).
            let word = unsafe { &*(addr as *const AtomicU32) };
            // FUTEX_WAITERS for good: the kernel wakes a peer asleep on the
            // word when it marks our death. (Cleared again below if the
            // kernel will not mark it.)
            word.store(
                (tid & HWL_PROCESS_TID_MASK) | HWL_PROCESS_WAITERS,
                Ordering::SeqCst,
            );
            let head = Box::leak(Box::new(RobustListHead {
                list: RobustList {
                    next: core::ptr::null_mut(),
                },
                futex_offset: 0,
                list_op_pending: core::ptr::null_mut(),
            }));
            let entry = Box::leak(Box::new(RobustList {
                next: core::ptr::null_mut(),
            }));
            entry.next = &mut head.list;
            head.futex_offset =
                (addr as isize).wrapping_sub(entry as *mut RobustList as isize) as libc::c_long;
            head.list.next = entry;
            // SAFETY: `head` and `entry` are leaked: they stay valid and are
            // never touched again by us, for the kernel to walk at exit; the
            // length is the kernel's sizeof(struct robust_list_head).
            let rc = if robust_list_disabled() {
                Err(io::Error::from_raw_os_error(libc::ENOSYS))
            } else {
                // SAFETY: as above.
                match unsafe {
                    libc::syscall(
                        libc::SYS_set_robust_list,
                        head as *mut RobustListHead,
                        core::mem::size_of::<RobustListHead>(),
                    )
                } {
                    0 => Ok(()),
                    _ => Err(io::Error::last_os_error()),
                }
            };
            let rc = match rc {
                // No robust futexes here (qemu-user does not emulate them:
                // the list lives in guest memory the host kernel cannot
                // walk). The kernel will never mark the word, so say so in
                // it: without HWL_PROCESS_WAITERS, peers judge this process
                // by its file lock alone (`Watch::died`, §8.8).
                Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => {
                    word.store(tid & HWL_PROCESS_TID_MASK, Ordering::SeqCst);
                    warn_no_robust_list(&e);
                    Ok(())
                }
                other => other,
            };
            let _ = tx.send(rc);
            loop {
                std::thread::park();
            }
        })?;
    rx.recv()
        .unwrap_or_else(|_| Err(io::Error::other("the liveness thread died")))
}

/// `HWLINK_NO_ROBUST_LIST=1`: behave as if `set_robust_list` were missing
/// (as under qemu-user), to test the lock-only liveness natively.
fn robust_list_disabled() -> bool {
    std::env::var_os("HWLINK_NO_ROBUST_LIST").is_some_and(|v| v == "1")
}

/// Once per process: this kernel (or emulator) has no robust futexes.
fn warn_no_robust_list(e: &io::Error) {
    static WARNED: AtomicBool = AtomicBool::new(false);
    if !WARNED.swap(true, Ordering::Relaxed) {
        eprintln!(
            "hwlink: warning: no robust futexes here (set_robust_list: {e}; qemu-user does not \
             emulate them): peers notice this process's death by its liveness file lock alone, \
             within about a millisecond of a look (parked peers: within their 20 ms sleep \
             slice), not at once"
        );
    }
}

/// How often [`Watch::died`] asks the kernel about a process whose lock
/// word the kernel will not mark (no robust list): a system call at most
/// this often per watch, on the paths that would otherwise make one load.
const LOCK_LOOK_EVERY_NS: u64 = 1_000_000;

/// CLOCK_MONOTONIC_COARSE in nanoseconds (cheap; a few ms of resolution
/// is plenty for rate-limiting a look).
fn coarse_now_ns() -> u64 {
    // SAFETY: timespec is plain data, written by clock_gettime.
    let mut ts: libc::timespec = unsafe { core::mem::zeroed() };
    // SAFETY: a valid clock id and a pointer to our own timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    (ts.tv_sec as u64)
        .wrapping_mul(1_000_000_000)
        .wrapping_add(ts.tv_nsec as u64)
}

/// A peer process, watched through its liveness file.
#[derive(Debug)]
pub struct Watch {
    token: u32,
    file: File,
    /// Read-only view of its `struct hwl_process`; None if the file is too
    /// small or not a liveness file (then only the lock tells).
    map: Option<Mapping>,
    /// Our own process: alive, and our own lock never conflicts.
    is_self: bool,
    pid: u32,
    /// For a process without a robust list (its word lacks
    /// `HWL_PROCESS_WAITERS`): when [`Watch::died`] may next ask for its
    /// lock ([`coarse_now_ns`]), and whether it found it free.
    next_lock_look: AtomicU64,
    dead_by_lock: AtomicBool,
}

impl Watch {
    /// Starts watching the process with `token`; None if it has no
    /// liveness file (it is gone, or never was).
    pub fn open(token: u32) -> Option<Watch> {
        Self::open_in(&Dirs::from_env().shm, token)
    }

    fn open_in(dir: &Path, token: u32) -> Option<Watch> {
        if token == 0 {
            return None;
        }
        let path = dir.join(process_file_name(token));
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(path)
            .ok()?;
        let map = match file.metadata() {
            Ok(m) if m.len() >= FILE_SIZE as u64 => Mapping::shared_readonly(&file, FILE_SIZE).ok(),
            _ => None,
        };
        let mut watch = Watch {
            token,
            file,
            map: None,
            is_self: TOKEN.load(Ordering::Acquire) == token,
            pid: 0,
            next_lock_look: AtomicU64::new(0),
            dead_by_lock: AtomicBool::new(false),
        };
        if let Some(map) = map {
            // SAFETY: FILE_SIZE readable bytes; one volatile copy, checked.
            let copy: hwl_process = unsafe { map.as_ptr().cast::<hwl_process>().read_volatile() };
            if copy.magic == HWL_PROCESS_MAGIC && copy.token == token {
                watch.pid = copy.pid;
                watch.map = Some(map);
            }
        }
        Some(watch)
    }

    /// The watched token.
    pub fn token(&self) -> u32 {
        self.token
    }

    /// The pid it recorded, in its own pid namespace (0 if unreadable).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The robust futex word itself (read-only), to sleep on beside a
    /// doorbell: the kernel wakes a sleeper when it marks the death.
    pub fn lock_word(&self) -> Option<&AtomicU32> {
        if self.is_self {
            return None;
        }
        self.map.as_ref().map(|map| {
            let p = map.as_ptr().cast::<hwl_process>();
            // SAFETY: an aligned u32 inside the live read-only mapping,
            // accessed only atomically, for as long as `self` lives.
            unsafe { &*addr_of_mut!((*p).lock).cast::<AtomicU32>() }
        })
    }

    /// One load: the kernel marked the process dead (robust futex
    /// `OWNER_DIED`), or its file was cut short. No system call.
    #[inline]
    pub fn died(&self) -> bool {
        if self.is_self {
            return false;
        }
        match &self.map {
            Some(map) => {
                let p = map.as_ptr().cast::<hwl_process>();
                // SAFETY: an aligned u32 inside the live read-only mapping,
                // written only atomically (by its owner and the kernel).
                let word = unsafe { &*addr_of_mut!((*p).lock).cast::<AtomicU32>() };
                let w = word.load(Ordering::Acquire);
                if w & HWL_PROCESS_OWNER_DIED != 0 || map.truncated() {
                    return true;
                }
                // Without FUTEX_WAITERS the process has no robust list (or
                // wrote over its own word): the kernel will never mark it,
                // so ask for its lock, at most once a millisecond.
                w & HWL_PROCESS_WAITERS == 0 && self.died_by_lock()
            }
            None => false,
        }
    }

    /// [`died`](Watch::died) for a process the kernel does not mark: its
    /// lock is free (then it stays dead). Rate-limited to one system call
    /// per [`LOCK_LOOK_EVERY_NS`]; false in between.
    #[cold]
    fn died_by_lock(&self) -> bool {
        if self.dead_by_lock.load(Ordering::Relaxed) {
            return true;
        }
        let now = coarse_now_ns();
        if now < self.next_lock_look.load(Ordering::Relaxed) {
            return false;
        }
        self.next_lock_look
            .store(now.saturating_add(LOCK_LOOK_EVERY_NS), Ordering::Relaxed);
        if lock_held(&self.file) {
            return false;
        }
        self.dead_by_lock.store(true, Ordering::Relaxed);
        true
    }

    /// Whether the liveness file was shrunk under its mapping (by a hostile
    /// process; [`died`](Watch::died) then says true, but only the lock
    /// tells).
    pub fn file_truncated(&self) -> bool {
        self.map.as_ref().is_some_and(|m| m.truncated())
    }

    /// One system call (`F_OFD_GETLK`): whether the process still holds its
    /// lock. False only once every thread of it is gone.
    pub fn lock_held(&self) -> bool {
        self.is_self || lock_held(&self.file)
    }

    /// Alive until every thread of it is gone: it still holds its lock
    /// (one system call). A process the kernel has marked dead ([`died`])
    /// may still be alive for a few microseconds while its threads exit:
    /// whatever it holds in shared memory may be taken only once it is not.
    ///
    /// [`died`]: Watch::died
    pub fn alive(&self) -> bool {
        self.is_self || self.lock_held()
    }
}

/// One-shot: whether the process with `token` is alive, see
/// [`Watch::alive`] (opens its file: not for hot paths). 0 is nobody.
pub fn is_alive(token: u32) -> bool {
    token != 0 && Watch::open(token).is_some_and(|w| w.alive())
}

/// One liveness file, as `hwlink ls` shows it.
#[derive(Debug, Clone)]
pub struct ProcessFile {
    /// The token.
    pub token: u32,
    /// The file.
    pub path: PathBuf,
    /// The pid it recorded (in its own pid namespace).
    pub pid: u32,
    /// Whether the process lives.
    pub alive: bool,
}

/// Every liveness file in the shm directory.
pub fn list_processes() -> io::Result<Vec<ProcessFile>> {
    let dir = Dirs::from_env().shm;
    let mut out = Vec::new();
    for entry in fs::read_dir(&dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(token) = name.to_str().and_then(parse_process_file_name) else {
            continue;
        };
        let watch = Watch::open_in(&dir, token);
        out.push(ProcessFile {
            token,
            path: entry.path(),
            pid: watch.as_ref().map_or(0, Watch::pid),
            alive: watch.is_some_and(|w| w.alive()),
        });
    }
    Ok(out)
}

/// Removes the liveness files (and unpublished temporary ones) of dead
/// processes; returns their paths.
pub fn remove_dead_processes() -> Vec<PathBuf> {
    remove_dead_in(&Dirs::from_env().shm)
}

fn remove_dead_in(dir: &Path) -> Vec<PathBuf> {
    let mut removed = Vec::new();
    let Ok(entries) = fs::read_dir(dir) else {
        return removed;
    };
    let tmp_prefix = format!(".{PROCESS_FILE_PREFIX}tmp.");
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let path = entry.path();
        let ours = parse_process_file_name(name).is_some()
            // A temporary file is locked a moment after it is made: only an
            // old one whose lock is free is a dead process's.
            || (name.starts_with(&tmp_prefix)
                && fs::metadata(&path)
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.elapsed().ok())
                    .is_some_and(|age| age.as_secs() >= 60));
        if !ours {
            continue;
        }
        let Ok(file) = File::open(&path) else {
            continue;
        };
        // Its lock is taken before the file is linked into place, so a free
        // lock means a dead owner.
        if !lock_held(&file) && fs::remove_file(&path).is_ok() {
            removed.push(path);
        }
    }
    removed
}

/// The path of this process's liveness file, once set up.
pub fn my_process_file() -> Option<PathBuf> {
    me().map(|m| m.path.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        assert_eq!(process_file_name(0xabc), "hwlink-proc.00000abc");
        assert_eq!(parse_process_file_name("hwlink-proc.00000abc"), Some(0xabc));
        assert_eq!(parse_process_file_name("hwlink-proc.00000000"), None);
        assert_eq!(parse_process_file_name("hwlink-proc.abc"), None);
        assert_eq!(parse_process_file_name("hwlink.x"), None);
    }

    #[test]
    fn this_process_is_alive_and_watchable() {
        let t = my_token().unwrap();
        assert_ne!(t, 0);
        assert_eq!(my_token().unwrap(), t);
        assert!(is_alive(t));
        let w = Watch::open(t).unwrap();
        assert!(!w.died());
        assert!(w.alive());
        assert_eq!(w.pid(), std::process::id());
        assert!(!is_alive(0));
        // Opening and closing our own file (as watching ourselves does)
        // must not drop our lock, which a classic POSIX lock would.
        drop(w);
        let path = my_process_file().unwrap();
        drop(File::open(&path).unwrap());
        assert!(lock_held(&File::open(&path).unwrap()), "the lock survived");
    }

    /// A child that sets up its identity and is then killed with SIGKILL:
    /// the kernel marks its lock word and drops its lock.
    #[test]
    fn a_killed_child_is_seen_dead() {
        use std::io::BufRead;
        let exe = std::env::current_exe().unwrap();
        let mut child = std::process::Command::new(exe)
            .args([
                "--exact",
                "process::tests::child_sets_up_and_waits",
                "--nocapture",
            ])
            .env("HWLINK_TEST_PROCESS_CHILD", "1")
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let mut token = 0;
        for line in std::io::BufReader::new(out).lines() {
            let line = line.unwrap();
            if let Some(t) = line.strip_prefix("@token ") {
                token = t.parse().unwrap();
                break;
            }
        }
        assert_ne!(token, 0);
        let w = Watch::open(token).expect("the child's liveness file");
        assert!(w.alive(), "alive while it runs");
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(w.died(), "the kernel marked the robust word");
        assert!(!w.lock_held(), "the kernel dropped the lock");
        assert!(!is_alive(token));
        let removed = remove_dead_processes();
        assert!(
            removed
                .iter()
                .any(|p| p.ends_with(process_file_name(token))),
            "{removed:?}"
        );
        assert!(Watch::open(token).is_none());
    }

    #[test]
    fn child_sets_up_and_waits() {
        if std::env::var_os("HWLINK_TEST_PROCESS_CHILD").is_none() {
            return;
        }
        println!("@token {}", my_token().unwrap());
        std::thread::sleep(std::time::Duration::from_secs(30));
    }
}

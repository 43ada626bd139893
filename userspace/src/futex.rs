//! Process-shared futex wait and wake on a 32-bit word in shared memory.
//!
//! No `FUTEX_PRIVATE_FLAG`: the kernel keys the wait queue on the physical
//! page, so processes that map the same region at different addresses meet.
//! Under `--cfg loom` the kernel's futex is modelled by a mutex and a condvar,
//! which keeps the one property that matters: a waiter that has checked the
//! word cannot miss a wake that follows a change of the word.

use crate::sync::AtomicU32;
use std::time::Duration;

/// Sleeps while `*word == expected`, for at most `timeout` (forever if None).
/// Returns false if the timeout elapsed. Spurious returns are possible; the
/// caller always re-checks its condition.
#[cfg(not(loom))]
pub(crate) fn wait(word: &AtomicU32, expected: u32, timeout: Option<Duration>) -> bool {
    let ts = timeout.map(|t| libc::timespec {
        tv_sec: t.as_secs().min(i64::MAX as u64) as libc::time_t,
        tv_nsec: t.subsec_nanos() as libc::c_long,
    });
    let ts_ptr = ts
        .as_ref()
        .map_or(core::ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: `word` is a valid, aligned u32 for the duration of the call (it
    // is borrowed); FUTEX_WAIT only reads it. `ts_ptr` is null or points to a
    // live timespec on this stack frame. The remaining arguments are unused by
    // FUTEX_WAIT.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT,
            expected,
            ts_ptr,
            core::ptr::null::<u32>(),
            0u32,
        )
    };
    !(rc == -1 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ETIMEDOUT))
}

/// Most words one `futex_waitv` takes (the kernel's `FUTEX_WAITV_MAX`).
pub(crate) const WAIT_ANY_MAX: usize = 128;

/// Sleeps while every `(word, expected)` pair still holds, until one word
/// changes, a wake on any of them, or `timeout` (false if it elapsed). One
/// `futex_waitv` (Linux 5.16): a waiter sleeps on several doorbells and
/// peers' liveness words at once (a select, or one end and its peer's
/// death). Past [`WAIT_ANY_MAX`] words, or without `futex_waitv`, a wait
/// on the first word of at most a millisecond: the caller looks at the
/// others when it returns.
#[cfg(not(loom))]
pub(crate) fn wait_any(words: &[(&AtomicU32, u32)], timeout: Option<Duration>) -> bool {
    #[repr(C)]
    struct FutexWaitv {
        val: u64,
        uaddr: u64,
        flags: u32,
        reserved: u32,
    }
    /// FUTEX2_SIZE_U32; no FUTEX2_PRIVATE: the words are process-shared.
    const FUTEX2_SIZE_U32: u32 = 0x02;
    use crate::sync::unmodelled::{AtomicBool, Ordering};
    static UNSUPPORTED: AtomicBool = AtomicBool::new(false);
    let Some(&(first, first_expected)) = words.first() else {
        std::thread::sleep(timeout.unwrap_or(Duration::from_millis(1)));
        return false;
    };
    let capped = |t: Option<Duration>| {
        Some(t.map_or(Duration::from_millis(1), |t| {
            t.min(Duration::from_millis(1))
        }))
    };
    if words.len() == 1 {
        return wait(first, first_expected, timeout);
    }
    if words.len() > WAIT_ANY_MAX || UNSUPPORTED.load(Ordering::Relaxed) {
        return wait(first, first_expected, capped(timeout));
    }
    let mut waiters = [const {
        FutexWaitv {
            val: 0,
            uaddr: 0,
            flags: 0,
            reserved: 0,
        }
    }; WAIT_ANY_MAX];
    for (w, &(word, expected)) in waiters.iter_mut().zip(words) {
        *w = FutexWaitv {
            val: u64::from(expected),
            uaddr: word.as_ptr() as u64,
            flags: FUTEX2_SIZE_U32,
            reserved: 0,
        };
    }
    // futex_waitv takes an absolute CLOCK_MONOTONIC time.
    let deadline = timeout.map(|t| {
        let mut now = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: a valid timespec on our stack.
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
        let nanos = (now.tv_nsec as u64).saturating_add(u64::from(t.subsec_nanos()));
        libc::timespec {
            tv_sec: now
                .tv_sec
                .saturating_add(t.as_secs().min(i64::MAX as u64 / 2) as libc::time_t)
                .saturating_add((nanos / 1_000_000_000) as libc::time_t),
            tv_nsec: (nanos % 1_000_000_000) as libc::c_long,
        }
    });
    let ts_ptr = deadline
        .as_ref()
        .map_or(core::ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: the first `words.len()` (<= WAIT_ANY_MAX) entries of
    // `waiters`, on our stack, are valid futex_waitv entries naming
    // 4-aligned u32 words that stay valid for the call (borrowed); `ts_ptr`
    // is null or a live timespec on our stack.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_futex_waitv,
            waiters.as_ptr(),
            words.len() as u32,
            0u32,
            ts_ptr,
            libc::CLOCK_MONOTONIC,
        )
    };
    if rc == -1 {
        match std::io::Error::last_os_error().raw_os_error() {
            Some(libc::ETIMEDOUT) => return false,
            Some(libc::ENOSYS) => {
                UNSUPPORTED.store(true, Ordering::Relaxed);
                return wait(first, first_expected, capped(timeout));
            }
            _ => {}
        }
    }
    true
}

/// Wakes up to `n` processes sleeping on `word`.
#[cfg(not(loom))]
pub(crate) fn wake(word: &AtomicU32, n: u32) -> u32 {
    // SAFETY: `word` is a valid, aligned u32 (borrowed). FUTEX_WAKE does not
    // dereference the unused timeout/uaddr2 arguments.
    let woken = unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE,
            n.min(i32::MAX as u32),
            core::ptr::null::<libc::timespec>(),
            core::ptr::null::<u32>(),
            0u32,
        )
    };
    // The number of sleepers woken (an error counts as none).
    u32::try_from(woken).unwrap_or(0)
}

#[cfg(loom)]
mod model {
    use loom::sync::{Condvar, Mutex};
    loom::lazy_static! {
        /// The "kernel": one hash bucket for every futex word in the model.
        pub(super) static ref BUCKET: (Mutex<()>, Condvar) = (Mutex::new(()), Condvar::new());
    }
}

#[cfg(loom)]
pub(crate) fn wait(word: &AtomicU32, expected: u32, timeout: Option<Duration>) -> bool {
    use crate::sync::Ordering;
    assert!(timeout.is_none(), "loom models must sleep without timeouts");
    let (lock, cv) = &*model::BUCKET;
    let guard = lock.lock().unwrap();
    if word.load(Ordering::SeqCst) != expected {
        return true;
    }
    drop(cv.wait(guard).unwrap());
    true
}

/// See the kernel version: sleeps until any word differs from its
/// expected value and a wake follows.
#[cfg(loom)]
pub(crate) fn wait_any(words: &[(&AtomicU32, u32)], timeout: Option<Duration>) -> bool {
    use crate::sync::Ordering;
    assert!(timeout.is_none(), "loom models must sleep without timeouts");
    let (lock, cv) = &*model::BUCKET;
    let guard = lock.lock().unwrap();
    if words.iter().any(|(w, e)| w.load(Ordering::SeqCst) != *e) {
        return true;
    }
    drop(cv.wait(guard).unwrap());
    true
}

#[cfg(loom)]
pub(crate) fn wake(_word: &AtomicU32, _n: u32) -> u32 {
    let (lock, cv) = &*model::BUCKET;
    let _guard = lock.lock().unwrap();
    cv.notify_all();
    0
}

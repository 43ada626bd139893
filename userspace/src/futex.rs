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

/// Wakes up to `n` processes sleeping on `word`.
#[cfg(not(loom))]
pub(crate) fn wake(word: &AtomicU32, n: u32) {
    // SAFETY: `word` is a valid, aligned u32 (borrowed). FUTEX_WAKE does not
    // dereference the unused timeout/uaddr2 arguments.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE,
            n.min(i32::MAX as u32),
            core::ptr::null::<libc::timespec>(),
            core::ptr::null::<u32>(),
            0u32,
        );
    }
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

#[cfg(loom)]
pub(crate) fn wake(_word: &AtomicU32, _n: u32) {
    let (lock, cv) = &*model::BUCKET;
    let _guard = lock.lock().unwrap();
    cv.notify_all();
}

//! hwlink's C API: `libhwlink.so` and `libhwlink.a`, declared by
//! `include/hwlink.h` (generated from this crate by cbindgen).
//!
//! The rules every function follows, stated once here (the header repeats
//! them in its comments):
//!
//! - **Opaque handles.** A link end, a mailbox attachment or a domain
//!   member is a pointer to an opaque struct, made by a `_create`, `_open`
//!   or `_join` function and freed by its `_close` (or `_leave`, `_remove`)
//!   function. A handle is used by one thread at a time; it may move
//!   between threads. A NULL handle is refused with
//!   `HWLINK_INVALID_ARGUMENT`; a dangling one cannot be detected.
//! - **Status codes.** Every function that can fail returns a
//!   [`hwlink_status`]: `HWLINK_OK` (0) or why not. After a failure,
//!   [`hwlink_last_error`] gives the Rust error's message, with its advice
//!   (what to do next), for this thread.
//! - **No panic crosses the boundary.** Every body runs under
//!   `catch_unwind`; a panic (a bug in hwlink) returns `HWLINK_PANIC`.
//! - **Buffers.** A receive copies into the caller's buffer and reports the
//!   message's length through `len`; a message longer than the buffer is
//!   `HWLINK_TRUNCATED` with the length it needs (see each receive for
//!   whether the message stays queued). The zero-copy forms
//!   (`hwlink_reserve`, `hwlink_peek`) hand out the address of the slot in
//!   shared memory: the peer process may write those bytes at any time,
//!   so copy out what you check before you check it.
//! - **Options.** The option structs are all-zero by default: a zero field
//!   means the Rust builder's default.
#![deny(missing_docs)]
// C names: hwlink_sender, hwlink_status, HWLINK_OK.
#![allow(non_camel_case_types)]

use std::cell::RefCell;
use std::ffi::{c_char, c_int, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Duration;

use hwlink::{OpenError, ReadinessError, RecvError, SendError};

// In this order in the header: links, mailboxes, domains.
mod domain;
mod link;
mod mailbox;

pub use domain::*;
pub use link::*;
pub use mailbox::*;

/// What a call did: `HWLINK_OK`, or why it failed (then
/// `hwlink_last_error()` says more).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum hwlink_status {
    /// Success.
    HWLINK_OK = 0,
    /// A `try_` receive found nothing queued.
    HWLINK_EMPTY = 1,
    /// A `try_` send found no room (with zero capacity: no receiver waiting).
    HWLINK_FULL = 2,
    /// A `_timeout` call's time ran out.
    HWLINK_TIMEOUT = 3,
    /// The peer closed or its process died (a receive: and every message
    /// it sent was received); a mailbox: removed, or this attachment may
    /// not do that.
    HWLINK_DISCONNECTED = 4,
    /// The message is longer than a slot (`hwlink_*_max_message`).
    HWLINK_TOO_LARGE = 5,
    /// The caller's buffer is smaller than the message; `len` says how
    /// long it is.
    HWLINK_TRUNCATED = 6,
    /// A NULL or invalid argument, or an invalid configuration.
    HWLINK_INVALID_ARGUMENT = 7,
    /// Creating, opening or joining failed (the message says why and what
    /// to do).
    HWLINK_OPEN_FAILED = 8,
    /// The shared memory is corrupt: the peer is broken or hostile; the
    /// handle refuses every later operation: close it.
    HWLINK_CORRUPT = 9,
    /// Domains: no member of that name.
    HWLINK_NO_SUCH_MEMBER = 10,
    /// Domains: the member left or died (a receive: and every message it
    /// sent was received).
    HWLINK_MEMBER_GONE = 11,
    /// An unbounded mailbox is at its byte limit.
    HWLINK_MEMORY_LIMIT = 12,
    /// No pollable descriptor here (kernel, busy-polling end, device
    /// doorbell).
    HWLINK_UNSUPPORTED = 13,
    /// A reservation (`hwlink_reserve`) or a peeked message (`hwlink_peek`)
    /// is pending on the handle: commit or release it first.
    HWLINK_BUSY = 14,
    /// Any other failure (setting up a domain link, mapping a segment, a
    /// system call).
    HWLINK_ERROR = 15,
    /// hwlink panicked (a bug): the call was abandoned; close the handle.
    HWLINK_PANIC = 16,
}

use hwlink_status::*;

/// The status of a failed call whose message is recorded already.
pub(crate) type Fallible<T = ()> = Result<T, hwlink_status>;

/// The last error's message on this thread.
enum LastError {
    None,
    /// The message of an error that happens on hot paths (`EMPTY`,
    /// `FULL`, ...): recorded without allocating.
    Static(&'static CStr),
    Owned(CString),
}

thread_local! {
    static LAST_ERROR: RefCell<LastError> = const { RefCell::new(LastError::None) };
}

/// Records `msg` as this thread's last error and returns `status`.
pub(crate) fn fail(status: hwlink_status, msg: impl Into<String>) -> hwlink_status {
    let mut bytes = msg.into().into_bytes();
    bytes.retain(|&b| b != 0);
    let c = CString::new(bytes).unwrap_or_default();
    LAST_ERROR.with(|l| *l.borrow_mut() = LastError::Owned(c));
    status
}

/// Records a static message (no allocation) and returns `status`.
pub(crate) fn fail_static(status: hwlink_status, msg: &'static CStr) -> hwlink_status {
    LAST_ERROR.with(|l| *l.borrow_mut() = LastError::Static(msg));
    status
}

// The messages of the errors `try_` and `_timeout` calls return in loops,
// recorded without allocating; a test checks each is the Rust error's.
pub(crate) const RECV_EMPTY: &CStr = c"the link is empty; retry, or use `recv` to wait";
pub(crate) const RECV_TIMEOUT: &CStr =
    c"timed out waiting for a message: the sender is not sending";
pub(crate) const SEND_FULL: &CStr =
    c"the link is full: the receiver is behind; retry, or use `send` to wait";
pub(crate) const SEND_TIMEOUT: &CStr = c"timed out waiting for space: the receiver is not reading";

/// Runs `body` and turns its result into a status; a panic becomes
/// `HWLINK_PANIC` with its message.
pub(crate) fn guard(body: impl FnOnce() -> Fallible) -> hwlink_status {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => HWLINK_OK,
        Ok(Err(status)) => status,
        Err(payload) => {
            let what = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "(no message)".into());
            fail(
                HWLINK_PANIC,
                format!(
                    "hwlink panicked: {what}; this is a bug in hwlink, please report it; the \
                     call was abandoned: close the handle"
                ),
            )
        }
    }
}

/// The status of a send error, with its message recorded.
pub(crate) fn send_error<M>(e: SendError<M>) -> hwlink_status {
    let status = match &e {
        SendError::Full(_) => return fail_static(HWLINK_FULL, SEND_FULL),
        SendError::Timeout(_) => return fail_static(HWLINK_TIMEOUT, SEND_TIMEOUT),
        SendError::Disconnected(_) => HWLINK_DISCONNECTED,
        SendError::TooLarge { .. } => HWLINK_TOO_LARGE,
        SendError::MemoryLimit { .. } => HWLINK_MEMORY_LIMIT,
        SendError::Corrupt(_) => HWLINK_CORRUPT,
        SendError::NoSuchMember { .. } => HWLINK_NO_SUCH_MEMBER,
        SendError::MemberGone { .. } => HWLINK_MEMBER_GONE,
        SendError::LinkFailed { .. } | SendError::Serialize(_) => HWLINK_ERROR,
    };
    fail(status, e.to_string())
}

/// The status of a receive error, with its message recorded.
pub(crate) fn recv_error(e: RecvError) -> hwlink_status {
    let status = match &e {
        RecvError::Empty => return fail_static(HWLINK_EMPTY, RECV_EMPTY),
        RecvError::Timeout => return fail_static(HWLINK_TIMEOUT, RECV_TIMEOUT),
        RecvError::Disconnected => HWLINK_DISCONNECTED,
        RecvError::BufferTooSmall { .. } => HWLINK_TRUNCATED,
        RecvError::Corrupt(_) => HWLINK_CORRUPT,
        RecvError::NoSuchMember { .. } => HWLINK_NO_SUCH_MEMBER,
        RecvError::MemberGone { .. } => HWLINK_MEMBER_GONE,
        RecvError::Lagged(_)
        | RecvError::Unavailable { .. }
        | RecvError::LinkFailed { .. }
        | RecvError::WrongSize { .. }
        | RecvError::Deserialize(_) => HWLINK_ERROR,
    };
    fail(status, e.to_string())
}

/// The status of an open error, with its message recorded.
pub(crate) fn open_error(e: OpenError) -> hwlink_status {
    let status = match &e {
        OpenError::InvalidConfig(_) => HWLINK_INVALID_ARGUMENT,
        OpenError::Corrupt { .. } => HWLINK_CORRUPT,
        _ => HWLINK_OPEN_FAILED,
    };
    fail(status, e.to_string())
}

/// The status of a readiness error, with its message recorded.
pub(crate) fn readiness_error(e: ReadinessError) -> hwlink_status {
    let status = match &e {
        ReadinessError::Io(_) => HWLINK_ERROR,
        _ => HWLINK_UNSUPPORTED,
    };
    fail(status, e.to_string())
}

/// An invalid argument: records `what` and returns the status.
pub(crate) fn invalid(what: impl Into<String>) -> hwlink_status {
    fail(HWLINK_INVALID_ARGUMENT, what)
}

/// The handle behind `p`, refusing NULL.
///
/// # Safety
/// `p` is NULL or points to a live handle of type `T` that no other thread
/// uses meanwhile, for `'a`.
pub(crate) unsafe fn handle<'a, T>(p: *mut T, what: &str) -> Fallible<&'a mut T> {
    // SAFETY: the caller's contract: NULL, or a live, unshared handle.
    unsafe { p.as_mut() }.ok_or_else(|| invalid(format!("{what} is NULL")))
}

/// The `len` bytes at `data` (NULL allowed when `len` is 0).
///
/// # Safety
/// `data` is NULL or points to `len` readable bytes for `'a`.
pub(crate) unsafe fn bytes<'a>(data: *const std::ffi::c_void, len: usize) -> Fallible<&'a [u8]> {
    if len == 0 {
        return Ok(&[]);
    }
    if data.is_null() {
        return Err(invalid(format!("data is NULL but len is {len}")));
    }
    // SAFETY: the caller's contract: `len` readable bytes at `data`.
    Ok(unsafe { std::slice::from_raw_parts(data.cast::<u8>(), len) })
}

/// The `cap` writable bytes at `buf` (NULL allowed when `cap` is 0).
///
/// # Safety
/// `buf` is NULL or points to `cap` writable bytes for `'a`, not otherwise
/// referenced meanwhile.
pub(crate) unsafe fn buffer<'a>(buf: *mut std::ffi::c_void, cap: usize) -> Fallible<&'a mut [u8]> {
    if cap == 0 {
        return Ok(&mut []);
    }
    if buf.is_null() {
        return Err(invalid(format!("buf is NULL but cap is {cap}")));
    }
    // SAFETY: the caller's contract: `cap` writable bytes at `buf`.
    Ok(unsafe { std::slice::from_raw_parts_mut(buf.cast::<u8>(), cap) })
}

/// The NUL-terminated UTF-8 string at `s`.
///
/// # Safety
/// `s` is NULL or points to a NUL-terminated string for `'a`.
pub(crate) unsafe fn string<'a>(s: *const c_char, what: &str) -> Fallible<&'a str> {
    if s.is_null() {
        return Err(invalid(format!("{what} is NULL")));
    }
    // SAFETY: the caller's contract: a NUL-terminated string.
    let c = unsafe { CStr::from_ptr(s) };
    c.to_str()
        .map_err(|_| invalid(format!("{what} is not valid UTF-8")))
}

/// The group an options struct names: NULL for none, else a group name
/// or a decimal gid.
///
/// # Safety
/// `s` is NULL or a NUL-terminated string.
pub(crate) unsafe fn group(s: *const c_char) -> Fallible<Option<hwlink::Group>> {
    if s.is_null() {
        return Ok(None);
    }
    // SAFETY: the caller's contract.
    let name = unsafe { string(s, "group") }?;
    Ok(Some(match name.parse::<u32>() {
        Ok(gid) => hwlink::Group::Id(gid),
        Err(_) => hwlink::Group::Name(name.to_owned()),
    }))
}

/// Writes `v` to `out` if it is not NULL.
///
/// # Safety
/// `out` is NULL or points to a writable `T`.
pub(crate) unsafe fn put<T>(out: *mut T, v: T) {
    if !out.is_null() {
        // SAFETY: the caller's contract: a writable T.
        unsafe { out.write(v) };
    }
}

/// Writes `v` to `out`, which must not be NULL.
///
/// # Safety
/// `out` is NULL or points to a writable `T`.
pub(crate) unsafe fn put_required<T>(out: *mut T, v: T, what: &str) -> Fallible {
    if out.is_null() {
        return Err(invalid(format!("{what} is NULL")));
    }
    // SAFETY: the caller's contract: a writable T.
    unsafe { out.write(v) };
    Ok(())
}

/// A timeout in nanoseconds.
pub(crate) fn nanos(timeout_ns: u64) -> Duration {
    Duration::from_nanos(timeout_ns)
}

/// Wait strategy: spin a short while, then sleep (the default, 0).
pub const HWLINK_WAIT_SPIN_PARK: u32 = 0;
/// Wait strategy: busy-poll, never sleep (no pollable descriptor).
pub const HWLINK_WAIT_BUSY_POLL: u32 = 1;
/// Wait strategy: sleep at once.
pub const HWLINK_WAIT_PARK: u32 = 2;

/// Memory: hugepages when free, else /dev/shm (the default, 0).
pub const HWLINK_BACKEND_AUTO: u32 = 0;
/// Memory: 2 MiB hugepages or an error.
pub const HWLINK_BACKEND_HUGEPAGE: u32 = 1;
/// Memory: 4 KiB pages in /dev/shm.
pub const HWLINK_BACKEND_SHM: u32 = 2;

pub(crate) fn wait_strategy(w: u32) -> Fallible<hwlink::WaitStrategy> {
    Ok(match w {
        HWLINK_WAIT_SPIN_PARK => hwlink::WaitStrategy::SpinPark,
        HWLINK_WAIT_BUSY_POLL => hwlink::WaitStrategy::BusyPoll,
        HWLINK_WAIT_PARK => hwlink::WaitStrategy::Park,
        other => {
            return Err(invalid(format!(
                "unknown wait strategy {other}: use HWLINK_WAIT_SPIN_PARK, \
                 HWLINK_WAIT_BUSY_POLL or HWLINK_WAIT_PARK"
            )))
        }
    })
}

pub(crate) fn backend(b: u32) -> Fallible<hwlink::Backend> {
    Ok(match b {
        HWLINK_BACKEND_AUTO => hwlink::Backend::Auto,
        HWLINK_BACKEND_HUGEPAGE => hwlink::Backend::Hugepage,
        HWLINK_BACKEND_SHM => hwlink::Backend::Shm,
        other => {
            return Err(invalid(format!(
                "unknown backend {other}: use HWLINK_BACKEND_AUTO, HWLINK_BACKEND_HUGEPAGE \
                 or HWLINK_BACKEND_SHM"
            )))
        }
    })
}

/// The message of the last failed call on this thread: the Rust error's
/// message, which says what to do next. An empty string if no call has
/// failed on this thread. Valid until the next failed call on this thread.
#[no_mangle]
pub extern "C" fn hwlink_last_error() -> *const c_char {
    catch_unwind(|| {
        LAST_ERROR.with(|l| match &*l.borrow() {
            LastError::None => c"".as_ptr(),
            LastError::Static(s) => s.as_ptr(),
            LastError::Owned(s) => s.as_ptr(),
        })
    })
    .unwrap_or(c"".as_ptr())
}

/// The name of a status, e.g. "HWLINK_FULL" ("HWLINK_UNKNOWN" for a number
/// that is none); a static string.
#[no_mangle]
pub extern "C" fn hwlink_status_name(status: c_int) -> *const c_char {
    let name: &'static CStr = match status {
        0 => c"HWLINK_OK",
        1 => c"HWLINK_EMPTY",
        2 => c"HWLINK_FULL",
        3 => c"HWLINK_TIMEOUT",
        4 => c"HWLINK_DISCONNECTED",
        5 => c"HWLINK_TOO_LARGE",
        6 => c"HWLINK_TRUNCATED",
        7 => c"HWLINK_INVALID_ARGUMENT",
        8 => c"HWLINK_OPEN_FAILED",
        9 => c"HWLINK_CORRUPT",
        10 => c"HWLINK_NO_SUCH_MEMBER",
        11 => c"HWLINK_MEMBER_GONE",
        12 => c"HWLINK_MEMORY_LIMIT",
        13 => c"HWLINK_UNSUPPORTED",
        14 => c"HWLINK_BUSY",
        15 => c"HWLINK_ERROR",
        16 => c"HWLINK_PANIC",
        _ => c"HWLINK_UNKNOWN",
    };
    name.as_ptr()
}

/// The library's version, e.g. "0.1.0"; a static string.
#[no_mangle]
pub extern "C" fn hwlink_version() -> *const c_char {
    const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), "\0");
    VERSION.as_ptr().cast()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The messages recorded without allocating are the Rust errors'.
    #[test]
    fn static_messages_are_the_rust_errors() {
        let cases: [(&CStr, String); 4] = [
            (RECV_EMPTY, RecvError::Empty.to_string()),
            (RECV_TIMEOUT, RecvError::Timeout.to_string()),
            (SEND_FULL, SendError::Full(()).to_string()),
            (SEND_TIMEOUT, SendError::Timeout(()).to_string()),
        ];
        for (c, rust) in cases {
            assert_eq!(c.to_str().unwrap(), rust);
        }
    }

    #[test]
    fn status_names_match_the_enum() {
        for s in [HWLINK_OK, HWLINK_FULL, HWLINK_PANIC, HWLINK_BUSY] {
            // SAFETY: hwlink_status_name returns a static C string.
            let name = unsafe { CStr::from_ptr(hwlink_status_name(s as c_int)) };
            assert_eq!(name.to_str().unwrap(), format!("{s:?}"));
        }
    }

    #[test]
    fn a_panic_becomes_a_status_with_its_message() {
        let s = guard(|| panic!("boom"));
        assert_eq!(s, HWLINK_PANIC);
        // SAFETY: hwlink_last_error returns a C string valid until the next
        // failed call on this thread.
        let msg = unsafe { CStr::from_ptr(hwlink_last_error()) };
        assert!(msg.to_str().unwrap().contains("boom"));
    }
}

#[cfg(test)]
mod api_tests;

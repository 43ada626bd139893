//! Mailboxes: named MPMC queues (`hwlink_mailbox`), their sends, receives
//! and pollable descriptors.

use std::ffi::{c_char, c_int, c_void};
use std::os::fd::AsRawFd;

use hwlink::{Access, Buffering, Mailbox, MailboxBuilder};

use crate::hwlink_status::*;
use crate::link::Patience;
use crate::*;

/// Buffering: up to `capacity` messages queued (the default, 0).
pub const HWLINK_BUFFERING_BOUNDED: u32 = 0;
/// Buffering: senders never wait; the queue grows up to `byte_limit`.
pub const HWLINK_BUFFERING_UNBOUNDED: u32 = 1;
/// Buffering: none; a send returns once a receiver took the message.
pub const HWLINK_BUFFERING_ZERO: u32 = 2;

/// Access: send only.
pub const HWLINK_ACCESS_SEND: u32 = 1;
/// Access: receive only.
pub const HWLINK_ACCESS_RECV: u32 = 2;
/// Access: send and receive.
pub const HWLINK_ACCESS_SEND_RECV: u32 = 3;

/// The byte limit of an unbounded mailbox whose options give 0: 64 MiB.
pub const HWLINK_DEFAULT_BYTE_LIMIT: u64 = 67_108_864;

/// Options for creating or opening a mailbox. All-zero is the defaults; a
/// zero field means its default.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct hwlink_mailbox_options {
    /// HWLINK_BUFFERING_* (creation only; 0: bounded).
    pub buffering: u32,
    /// Bounded: messages queued, a power of two (creation only; 0: 1024).
    pub capacity: u32,
    /// Unbounded: most bytes of memory the queue may take (creation only;
    /// 0: HWLINK_DEFAULT_BYTE_LIMIT).
    pub byte_limit: u64,
    /// Largest message in bytes (creation only; 0: 240).
    pub slot_size: u32,
    /// How this handle waits: HWLINK_WAIT_* (0: spin, then park).
    pub wait: u32,
    /// Which memory: HWLINK_BACKEND_* (0: hugepages, else /dev/shm).
    pub backend: u32,
    /// File mode of the mailbox's files (creation only; 0: 0600).
    pub file_mode: u32,
    /// What openers may attach for: HWLINK_ACCESS_* (creation only; 0:
    /// send and receive).
    pub allow: u32,
    /// How long an open waits for a creator still initialising, in
    /// milliseconds (0: 2000).
    pub ready_timeout_ms: u32,
    /// The group of its files: a group name or a decimal gid (creation
    /// only; NULL: this process's group, or the shared directory's that
    /// `hwlink setup --group` made). With file_mode 0660, its members
    /// share it.
    pub group: *const c_char,
}

impl Default for hwlink_mailbox_options {
    fn default() -> Self {
        hwlink_mailbox_options {
            buffering: 0,
            capacity: 0,
            byte_limit: 0,
            slot_size: 0,
            wait: 0,
            backend: 0,
            file_mode: 0,
            allow: 0,
            ready_timeout_ms: 0,
            group: std::ptr::null(),
        }
    }
}

/// One process's attachment to a mailbox (opaque). One thread at a time;
/// open another handle for another thread.
pub struct hwlink_mailbox {
    mbx: Mailbox,
}

fn access(a: u32) -> Fallible<Access> {
    Ok(match a {
        HWLINK_ACCESS_SEND => Access::Send,
        HWLINK_ACCESS_RECV => Access::Recv,
        HWLINK_ACCESS_SEND_RECV => Access::SendRecv,
        other => {
            return Err(invalid(format!(
                "unknown access {other}: use HWLINK_ACCESS_SEND, HWLINK_ACCESS_RECV or \
                 HWLINK_ACCESS_SEND_RECV"
            )))
        }
    })
}

/// The builder for `opts` (NULL: defaults).
///
/// # Safety
/// `opts` is NULL or points to options.
unsafe fn builder(opts: *const hwlink_mailbox_options) -> Fallible<MailboxBuilder> {
    // SAFETY: the caller's contract: NULL or readable options.
    let o = unsafe { opts.as_ref() }.copied().unwrap_or_default();
    let buffering = match o.buffering {
        HWLINK_BUFFERING_BOUNDED => Buffering::Bounded(if o.capacity == 0 {
            hwlink::DEFAULT_MAILBOX_CAPACITY
        } else {
            o.capacity
        }),
        HWLINK_BUFFERING_UNBOUNDED => Buffering::Unbounded {
            byte_limit: if o.byte_limit == 0 {
                HWLINK_DEFAULT_BYTE_LIMIT
            } else {
                o.byte_limit
            },
        },
        HWLINK_BUFFERING_ZERO => Buffering::Zero,
        other => {
            return Err(invalid(format!(
                "unknown buffering {other}: use HWLINK_BUFFERING_BOUNDED, \
                 HWLINK_BUFFERING_UNBOUNDED or HWLINK_BUFFERING_ZERO"
            )))
        }
    };
    let mut b = MailboxBuilder::new()
        .buffering(buffering)
        .wait(wait_strategy(o.wait)?)
        .backend(backend(o.backend)?)
        .allow(access(if o.allow == 0 {
            HWLINK_ACCESS_SEND_RECV
        } else {
            o.allow
        })?);
    if o.slot_size != 0 {
        b = b.slot_size(o.slot_size);
    }
    if o.file_mode != 0 {
        b = b.file_mode(o.file_mode);
    }
    // SAFETY: the caller's contract: the options' group is NULL or a string.
    if let Some(g) = unsafe { group(o.group) }? {
        b = b.group(g);
    }
    if o.ready_timeout_ms != 0 {
        b = b.ready_timeout(Duration::from_millis(u64::from(o.ready_timeout_ms)));
    }
    Ok(b)
}

/// # Safety
/// `out` is NULL or writable.
unsafe fn hand_out(out: *mut *mut hwlink_mailbox, mbx: Mailbox) -> Fallible {
    if out.is_null() {
        return Err(invalid("out is NULL"));
    }
    // SAFETY: the caller's contract: `out` is writable.
    unsafe { out.write(Box::into_raw(Box::new(hwlink_mailbox { mbx }))) };
    Ok(())
}

/// Creates the mailbox `name` (1 to 32 of `[A-Za-z0-9_.-]`; NULL: unnamed,
/// found by `hwlink_mailbox_id`) and attaches to it with `access`
/// (HWLINK_ACCESS_*) into `*out`. `opts` may be NULL (defaults).
///
/// # Safety
/// `name` is NULL or a C string; `opts` is NULL or points to options; `out`
/// is writable.
#[no_mangle]
pub unsafe extern "C" fn hwlink_mailbox_create(
    name: *const c_char,
    opts: *const hwlink_mailbox_options,
    access_mode: u32,
    out: *mut *mut hwlink_mailbox,
) -> hwlink_status {
    guard(|| {
        if out.is_null() {
            return Err(invalid("out is NULL"));
        }
        // SAFETY: the caller's contract.
        let mut b = unsafe { builder(opts) }?;
        if !name.is_null() {
            // SAFETY: the caller's contract.
            b = b.name(unsafe { string(name, "name") }?);
        }
        let mbx = b.create(access(access_mode)?).map_err(open_error)?;
        // SAFETY: the caller's contract.
        unsafe { hand_out(out, mbx) }
    })
}

/// Opens the mailbox `name` and attaches with `access` (HWLINK_ACCESS_*)
/// into `*out`.
///
/// # Safety
/// `name` is a C string; `opts` is NULL or points to options; `out` is
/// writable.
#[no_mangle]
pub unsafe extern "C" fn hwlink_mailbox_open(
    name: *const c_char,
    opts: *const hwlink_mailbox_options,
    access_mode: u32,
    out: *mut *mut hwlink_mailbox,
) -> hwlink_status {
    guard(|| {
        if out.is_null() {
            return Err(invalid("out is NULL"));
        }
        // SAFETY: the caller's contract.
        let b = unsafe { builder(opts) }?;
        // SAFETY: the caller's contract.
        let name = unsafe { string(name, "name") }?;
        let mbx = b.open(name, access(access_mode)?).map_err(open_error)?;
        // SAFETY: the caller's contract.
        unsafe { hand_out(out, mbx) }
    })
}

/// Detaches from the mailbox (NULL: nothing). The mailbox lives on.
///
/// # Safety
/// `mbx` is NULL or a live handle, not used again.
#[no_mangle]
pub unsafe extern "C" fn hwlink_mailbox_close(mbx: *mut hwlink_mailbox) {
    if !mbx.is_null() {
        // SAFETY: the caller's contract: a handle from Box::into_raw,
        // closed once.
        let h = unsafe { Box::from_raw(mbx) };
        let _ = catch_unwind(AssertUnwindSafe(move || drop(h)));
    }
}

/// Removes the mailbox and closes the handle (only its creator may):
/// senders see HWLINK_DISCONNECTED at once, receivers once they drained
/// it. The handle is closed whatever the result.
///
/// # Safety
/// `mbx` is NULL or a live handle, not used again.
#[no_mangle]
pub unsafe extern "C" fn hwlink_mailbox_remove(mbx: *mut hwlink_mailbox) -> hwlink_status {
    guard(|| {
        if mbx.is_null() {
            return Err(invalid("mbx is NULL"));
        }
        // SAFETY: the caller's contract: a handle from Box::into_raw,
        // closed once.
        let h = unsafe { Box::from_raw(mbx) };
        h.mbx.remove().map_err(open_error)
    })
}

/// # Safety
/// `mbx` is NULL or a live handle; `data` is NULL or `len` readable bytes.
unsafe fn send(
    mbx: *mut hwlink_mailbox,
    data: *const c_void,
    len: usize,
    p: Patience,
) -> hwlink_status {
    guard(|| {
        // SAFETY: the caller's contract.
        let m = &mut unsafe { handle(mbx, "mbx") }?.mbx;
        // SAFETY: the caller's contract.
        let msg = unsafe { bytes(data, len) }?;
        match p {
            Patience::Block => m.send(msg),
            Patience::Try => m.try_send(msg),
            Patience::Timeout(d) => m.send_timeout(msg, d),
        }
        .map_err(send_error)
    })
}

/// Sends `len` bytes at `data`, waiting for room. HWLINK_DISCONNECTED: the
/// mailbox was removed, or this handle may not send.
///
/// # Safety
/// `mbx` is a live handle; `data` points to `len` readable bytes.
#[no_mangle]
pub unsafe extern "C" fn hwlink_mailbox_send(
    mbx: *mut hwlink_mailbox,
    data: *const c_void,
    len: usize,
) -> hwlink_status {
    // SAFETY: the caller's contract.
    unsafe { send(mbx, data, len, Patience::Block) }
}

/// Sends if there is room now; HWLINK_FULL if not.
///
/// # Safety
/// As for `hwlink_mailbox_send`.
#[no_mangle]
pub unsafe extern "C" fn hwlink_mailbox_try_send(
    mbx: *mut hwlink_mailbox,
    data: *const c_void,
    len: usize,
) -> hwlink_status {
    // SAFETY: the caller's contract.
    unsafe { send(mbx, data, len, Patience::Try) }
}

/// Sends, waiting at most `timeout_ns` nanoseconds; HWLINK_TIMEOUT if no
/// room came.
///
/// # Safety
/// As for `hwlink_mailbox_send`.
#[no_mangle]
pub unsafe extern "C" fn hwlink_mailbox_send_timeout(
    mbx: *mut hwlink_mailbox,
    data: *const c_void,
    len: usize,
    timeout_ns: u64,
) -> hwlink_status {
    // SAFETY: the caller's contract.
    unsafe { send(mbx, data, len, Patience::Timeout(nanos(timeout_ns))) }
}

/// Copies a received message into `buf`; its length to `len`. A message
/// longer than the buffer was consumed all the same: what fits is copied,
/// and the call reports HWLINK_TRUNCATED.
///
/// # Safety
/// `len` is NULL or writable.
pub(crate) unsafe fn deliver(n: usize, cap: usize, len: *mut usize, consumed_by: &str) -> Fallible {
    // SAFETY: the caller's contract.
    unsafe { put(len, n) };
    if n > cap {
        return Err(fail(
            HWLINK_TRUNCATED,
            format!(
                "the message has {n} bytes but the buffer holds {cap}: its first {cap} bytes \
                 were copied and the rest is lost ({consumed_by} consumes the message): pass \
                 a buffer of the max_message size"
            ),
        ));
    }
    Ok(())
}

/// # Safety
/// `mbx` is NULL or a live handle; `buf` is NULL or `cap` writable bytes;
/// `len` is NULL or writable.
unsafe fn recv(
    mbx: *mut hwlink_mailbox,
    buf: *mut c_void,
    cap: usize,
    len: *mut usize,
    p: Patience,
) -> hwlink_status {
    guard(|| {
        // SAFETY: the caller's contract.
        let m = &mut unsafe { handle(mbx, "mbx") }?.mbx;
        // SAFETY: the caller's contract.
        let buf = unsafe { buffer(buf, cap) }?;
        let copy = |msg: hwlink::ShmSlice<'_>, _from: u32| {
            msg.copy_to(buf);
            msg.len()
        };
        let n = match p {
            Patience::Block => m.recv_with(copy),
            Patience::Try => m.try_recv_with(copy),
            Patience::Timeout(d) => m.recv_with_timeout(d, copy),
        }
        .map_err(recv_error)?;
        // SAFETY: the caller's contract.
        unsafe { deliver(n, cap, len, "a mailbox receive") }
    })
}

/// Receives the next message into `buf` (`cap` bytes), waiting for one;
/// its length goes to `*len` (`len` may be NULL). HWLINK_TRUNCATED: the
/// message was longer than `cap` (`*len` says how long): its first `cap`
/// bytes were copied and the rest is lost, since a mailbox receive
/// consumes the message; `hwlink_mailbox_max_message` bytes always
/// suffice. HWLINK_DISCONNECTED: the mailbox was removed and is drained,
/// or this handle may not receive.
///
/// # Safety
/// `mbx` is a live handle; `buf` points to `cap` writable bytes; `len` is
/// NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn hwlink_mailbox_recv(
    mbx: *mut hwlink_mailbox,
    buf: *mut c_void,
    cap: usize,
    len: *mut usize,
) -> hwlink_status {
    // SAFETY: the caller's contract.
    unsafe { recv(mbx, buf, cap, len, Patience::Block) }
}

/// Receives a message if one is queued now; HWLINK_EMPTY if not.
///
/// # Safety
/// As for `hwlink_mailbox_recv`.
#[no_mangle]
pub unsafe extern "C" fn hwlink_mailbox_try_recv(
    mbx: *mut hwlink_mailbox,
    buf: *mut c_void,
    cap: usize,
    len: *mut usize,
) -> hwlink_status {
    // SAFETY: the caller's contract.
    unsafe { recv(mbx, buf, cap, len, Patience::Try) }
}

/// Receives, waiting at most `timeout_ns` nanoseconds; HWLINK_TIMEOUT if
/// nothing came.
///
/// # Safety
/// As for `hwlink_mailbox_recv`.
#[no_mangle]
pub unsafe extern "C" fn hwlink_mailbox_recv_timeout(
    mbx: *mut hwlink_mailbox,
    buf: *mut c_void,
    cap: usize,
    len: *mut usize,
    timeout_ns: u64,
) -> hwlink_status {
    // SAFETY: the caller's contract.
    unsafe { recv(mbx, buf, cap, len, Patience::Timeout(nanos(timeout_ns))) }
}

/// The largest message of the mailbox, in bytes (0 if `mbx` is NULL).
///
/// # Safety
/// `mbx` is NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn hwlink_mailbox_max_message(mbx: *mut hwlink_mailbox) -> usize {
    // SAFETY: the caller's contract.
    let h = unsafe { mbx.as_ref() };
    catch_unwind(AssertUnwindSafe(|| h.map_or(0, |h| h.mbx.max_message()))).unwrap_or(0)
}

/// The mailbox's unique id (0 if `mbx` is NULL).
///
/// # Safety
/// `mbx` is NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn hwlink_mailbox_id(mbx: *mut hwlink_mailbox) -> u64 {
    // SAFETY: the caller's contract.
    let h = unsafe { mbx.as_ref() };
    catch_unwind(AssertUnwindSafe(|| h.map_or(0, |h| h.mbx.id().0))).unwrap_or(0)
}

/// A descriptor for poll/epoll, readable when a receive may find a message
/// (or the mailbox is removed); armed whenever a `try_` receive finds
/// nothing. Belongs to the handle (do not close it). HWLINK_UNSUPPORTED:
/// not here (busy-polling handle; kernel before 6.7 or io_uring disabled).
///
/// # Safety
/// `mbx` is a live handle; `fd` is writable.
#[no_mangle]
pub unsafe extern "C" fn hwlink_mailbox_fd(
    mbx: *mut hwlink_mailbox,
    fd: *mut c_int,
) -> hwlink_status {
    guard(|| {
        // SAFETY: the caller's contract.
        let m = &mut unsafe { handle(mbx, "mbx") }?.mbx;
        let raw = m.as_fd().map_err(readiness_error)?.as_raw_fd();
        // SAFETY: the caller's contract.
        unsafe { put_required(fd, raw, "fd") }
    })
}

/// A descriptor readable when a send may find room; armed by a `try_` send
/// that finds the mailbox full.
///
/// # Safety
/// `mbx` is a live handle; `fd` is writable.
#[no_mangle]
pub unsafe extern "C" fn hwlink_mailbox_send_fd(
    mbx: *mut hwlink_mailbox,
    fd: *mut c_int,
) -> hwlink_status {
    guard(|| {
        // SAFETY: the caller's contract.
        let m = &mut unsafe { handle(mbx, "mbx") }?.mbx;
        let raw = m.as_send_fd().map_err(readiness_error)?.as_raw_fd();
        // SAFETY: the caller's contract.
        unsafe { put_required(fd, raw, "fd") }
    })
}

//! Domains: joining one as a named member (`hwlink_member`), sending to a
//! member by name, receiving from one or from any, and the member's
//! pollable descriptor.

use std::ffi::{c_char, c_int, c_void};
use std::os::fd::AsRawFd;

use hwlink::{Buffering, DomainBuilder, Member};

use crate::link::Patience;
use crate::mailbox::{
    deliver, HWLINK_BUFFERING_BOUNDED, HWLINK_BUFFERING_UNBOUNDED, HWLINK_BUFFERING_ZERO,
};
use crate::*;

/// Longest member name in bytes; a buffer for a sender's name
/// (`hwlink_member_recv_any`) holds this plus its NUL.
pub const HWLINK_MAX_MEMBER_NAME_LEN: usize = 32;
/// Longest domain name in bytes.
pub const HWLINK_MAX_DOMAIN_NAME_LEN: usize = 24;

// Literals above, so that cbindgen writes them into the header; the same
// as the library's.
const _: () = assert!(HWLINK_MAX_MEMBER_NAME_LEN == hwlink::MAX_MEMBER_NAME_LEN);
const _: () = assert!(HWLINK_MAX_DOMAIN_NAME_LEN == hwlink::MAX_DOMAIN_NAME_LEN);

/// Options for joining a domain. The shape (buffering, capacity, slot
/// size, directory size) is fixed by the member that creates the domain;
/// all-zero is the defaults, and a zero field means its default.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct hwlink_domain_options {
    /// HWLINK_BUFFERING_* of each direction of every link (0: bounded).
    pub buffering: u32,
    /// Bounded: messages queued per direction, a power of two (0: 256).
    pub capacity: u32,
    /// Unbounded: most bytes per direction (0: HWLINK_DEFAULT_BYTE_LIMIT).
    pub byte_limit: u64,
    /// Largest message in bytes (0: 1016).
    pub slot_size: u32,
    /// Directory entries, 1 to 64 (0: 64).
    pub max_members: u32,
    /// How this member waits: HWLINK_WAIT_* (0: spin, then park).
    pub wait: u32,
    /// Which memory: HWLINK_BACKEND_* (0: hugepages, else /dev/shm).
    pub backend: u32,
    /// How long to wait for a region another process is still
    /// initialising, in milliseconds (0: 2000).
    pub ready_timeout_ms: u32,
    /// How long a join keeps trying while the domain closes or a process
    /// of the same name finishes joining, in milliseconds (0: 10000).
    pub join_timeout_ms: u32,
    /// File mode of the domain's files, its links' included (creation
    /// only; 0: 0600; 0660 shares them with their group).
    pub file_mode: u32,
    /// The group of its files: a group name or a decimal gid (creation
    /// only; NULL: this process's group, or the shared directory's that
    /// `hwlink setup --group` made). With file_mode 0660, its members
    /// share it.
    pub group: *const c_char,
}

impl Default for hwlink_domain_options {
    fn default() -> Self {
        hwlink_domain_options {
            buffering: 0,
            capacity: 0,
            byte_limit: 0,
            slot_size: 0,
            max_members: 0,
            wait: 0,
            backend: 0,
            ready_timeout_ms: 0,
            join_timeout_ms: 0,
            file_mode: 0,
            group: std::ptr::null(),
        }
    }
}

/// A member of a domain (opaque). One thread at a time.
pub struct hwlink_member {
    member: Member,
}

/// # Safety
/// `domain` is NULL or a C string; `opts` is NULL or points to options.
unsafe fn builder(
    domain: *const c_char,
    opts: *const hwlink_domain_options,
) -> Fallible<DomainBuilder> {
    // SAFETY: the caller's contract.
    let domain = unsafe { string(domain, "domain") }?;
    // SAFETY: the caller's contract: NULL or readable options.
    let o = unsafe { opts.as_ref() }.copied().unwrap_or_default();
    let mut b = DomainBuilder::new(domain)
        .wait(wait_strategy(o.wait)?)
        .backend(backend(o.backend)?);
    match o.buffering {
        HWLINK_BUFFERING_BOUNDED => {
            if o.capacity != 0 {
                b = b.capacity(o.capacity);
            }
        }
        HWLINK_BUFFERING_UNBOUNDED => {
            let byte_limit = if o.byte_limit == 0 {
                crate::mailbox::HWLINK_DEFAULT_BYTE_LIMIT
            } else {
                o.byte_limit
            };
            b = b.buffering(Buffering::Unbounded { byte_limit });
        }
        HWLINK_BUFFERING_ZERO => b = b.buffering(Buffering::Zero),
        other => {
            return Err(invalid(format!(
                "unknown buffering {other}: use HWLINK_BUFFERING_BOUNDED, \
                 HWLINK_BUFFERING_UNBOUNDED or HWLINK_BUFFERING_ZERO"
            )))
        }
    }
    if o.slot_size != 0 {
        b = b.slot_size(o.slot_size);
    }
    if o.max_members != 0 {
        b = b.max_members(o.max_members);
    }
    if o.ready_timeout_ms != 0 {
        b = b.ready_timeout(Duration::from_millis(u64::from(o.ready_timeout_ms)));
    }
    if o.join_timeout_ms != 0 {
        b = b.join_timeout(Duration::from_millis(u64::from(o.join_timeout_ms)));
    }
    if o.file_mode != 0 {
        b = b.file_mode(o.file_mode);
    }
    // SAFETY: the caller's contract: the options' group is NULL or a string.
    if let Some(g) = unsafe { crate::group(o.group) }? {
        b = b.group(g);
    }
    Ok(b)
}

/// Joins the domain `domain` (1 to 24 of `[A-Za-z0-9_-]`; created if it
/// does not exist) as `member` into `*out`. `opts` may be NULL (defaults).
///
/// # Safety
/// `domain` and `member` are C strings; `opts` is NULL or points to
/// options; `out` is writable.
#[no_mangle]
pub unsafe extern "C" fn hwlink_domain_join(
    domain: *const c_char,
    member: *const c_char,
    opts: *const hwlink_domain_options,
    out: *mut *mut hwlink_member,
) -> hwlink_status {
    guard(|| {
        // SAFETY: the caller's contract.
        let b = unsafe { builder(domain, opts) }?;
        // SAFETY: the caller's contract.
        let name = unsafe { string(member, "member") }?;
        if out.is_null() {
            return Err(invalid("out is NULL"));
        }
        let member = b.join(name).map_err(open_error)?;
        let h = Box::into_raw(Box::new(hwlink_member { member }));
        // SAFETY: checked non-NULL; writable by the caller's contract.
        unsafe { out.write(h) };
        Ok(())
    })
}

/// Leaves the domain and frees the handle (NULL: nothing). Messages sent
/// to this member that it had not received are lost.
///
/// # Safety
/// `m` is NULL or a live handle, not used again.
#[no_mangle]
pub unsafe extern "C" fn hwlink_member_leave(m: *mut hwlink_member) {
    if !m.is_null() {
        // SAFETY: the caller's contract: a handle from Box::into_raw,
        // freed once.
        let h = unsafe { Box::from_raw(m) };
        let _ = catch_unwind(AssertUnwindSafe(move || h.member.leave()));
    }
}

/// # Safety
/// `m` is NULL or a live handle; `to` is NULL or a C string; `data` is
/// NULL or `len` readable bytes.
unsafe fn send(
    m: *mut hwlink_member,
    to: *const c_char,
    data: *const c_void,
    len: usize,
    p: Patience,
) -> hwlink_status {
    guard(|| {
        // SAFETY: the caller's contract.
        let member = &mut unsafe { handle(m, "member") }?.member;
        // SAFETY: the caller's contract.
        let to = unsafe { string(to, "to") }?;
        // SAFETY: the caller's contract.
        let msg = unsafe { bytes(data, len) }?;
        match p {
            Patience::Block => member.send(to, msg),
            Patience::Try => member.try_send(to, msg),
            Patience::Timeout(d) => member.send_timeout(to, msg, d),
        }
        .map_err(send_error)
    })
}

/// Sends `len` bytes at `data` to the member named `to`, waiting while its
/// link is full (set up on first use). HWLINK_NO_SUCH_MEMBER: no member of
/// that name; HWLINK_MEMBER_GONE: it left or died.
///
/// # Safety
/// `m` is a live handle; `to` is a C string; `data` points to `len`
/// readable bytes.
#[no_mangle]
pub unsafe extern "C" fn hwlink_member_send(
    m: *mut hwlink_member,
    to: *const c_char,
    data: *const c_void,
    len: usize,
) -> hwlink_status {
    // SAFETY: the caller's contract.
    unsafe { send(m, to, data, len, Patience::Block) }
}

/// Sends to `to` if its link has room now; HWLINK_FULL if not.
///
/// # Safety
/// As for `hwlink_member_send`.
#[no_mangle]
pub unsafe extern "C" fn hwlink_member_try_send(
    m: *mut hwlink_member,
    to: *const c_char,
    data: *const c_void,
    len: usize,
) -> hwlink_status {
    // SAFETY: the caller's contract.
    unsafe { send(m, to, data, len, Patience::Try) }
}

/// Sends to `to`, waiting at most `timeout_ns` nanoseconds for room.
///
/// # Safety
/// As for `hwlink_member_send`.
#[no_mangle]
pub unsafe extern "C" fn hwlink_member_send_timeout(
    m: *mut hwlink_member,
    to: *const c_char,
    data: *const c_void,
    len: usize,
    timeout_ns: u64,
) -> hwlink_status {
    // SAFETY: the caller's contract.
    unsafe { send(m, to, data, len, Patience::Timeout(nanos(timeout_ns))) }
}

/// # Safety
/// `m` is NULL or a live handle; `from` is NULL or a C string; `buf` is
/// NULL or `cap` writable bytes; `len` is NULL or writable.
unsafe fn recv_from(
    m: *mut hwlink_member,
    from: *const c_char,
    buf: *mut c_void,
    cap: usize,
    len: *mut usize,
    p: Patience,
) -> hwlink_status {
    guard(|| {
        // SAFETY: the caller's contract.
        let member = &mut unsafe { handle(m, "member") }?.member;
        // SAFETY: the caller's contract.
        let from = unsafe { string(from, "from") }?;
        // SAFETY: the caller's contract.
        let buf = unsafe { buffer(buf, cap) }?;
        let msg = match p {
            Patience::Block => member.recv_from(from),
            Patience::Try => member.try_recv_from(from),
            Patience::Timeout(d) => member.recv_from_timeout(from, d),
        }
        .map_err(recv_error)?;
        let n = msg.len().min(cap);
        buf[..n].copy_from_slice(&msg[..n]);
        // SAFETY: the caller's contract.
        unsafe { deliver(msg.len(), cap, len, "a domain receive") }
    })
}

/// Receives the next message from the member `from` only into `buf`,
/// waiting for one (also for `from` to join). HWLINK_TRUNCATED: longer
/// than `cap` (`*len` says how long): what fits was copied, the rest is
/// lost. HWLINK_MEMBER_GONE: it left or died and everything it sent was
/// received.
///
/// # Safety
/// `m` is a live handle; `from` is a C string; `buf` points to `cap`
/// writable bytes; `len` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn hwlink_member_recv_from(
    m: *mut hwlink_member,
    from: *const c_char,
    buf: *mut c_void,
    cap: usize,
    len: *mut usize,
) -> hwlink_status {
    // SAFETY: the caller's contract.
    unsafe { recv_from(m, from, buf, cap, len, Patience::Block) }
}

/// Receives from `from` if a message is queued now; HWLINK_EMPTY if not.
///
/// # Safety
/// As for `hwlink_member_recv_from`.
#[no_mangle]
pub unsafe extern "C" fn hwlink_member_try_recv_from(
    m: *mut hwlink_member,
    from: *const c_char,
    buf: *mut c_void,
    cap: usize,
    len: *mut usize,
) -> hwlink_status {
    // SAFETY: the caller's contract.
    unsafe { recv_from(m, from, buf, cap, len, Patience::Try) }
}

/// Receives from `from`, waiting at most `timeout_ns` nanoseconds.
///
/// # Safety
/// As for `hwlink_member_recv_from`.
#[no_mangle]
pub unsafe extern "C" fn hwlink_member_recv_from_timeout(
    m: *mut hwlink_member,
    from: *const c_char,
    buf: *mut c_void,
    cap: usize,
    len: *mut usize,
    timeout_ns: u64,
) -> hwlink_status {
    // SAFETY: the caller's contract.
    unsafe { recv_from(m, from, buf, cap, len, Patience::Timeout(nanos(timeout_ns))) }
}

/// # Safety
/// `m` is NULL or a live handle; `from` is NULL or `from_cap` writable
/// bytes; `buf` is NULL or `cap` writable bytes; `len` is NULL or writable.
unsafe fn recv_any(
    m: *mut hwlink_member,
    from: *mut c_char,
    from_cap: usize,
    buf: *mut c_void,
    cap: usize,
    len: *mut usize,
    p: Patience,
) -> hwlink_status {
    guard(|| {
        // SAFETY: the caller's contract.
        let member = &mut unsafe { handle(m, "member") }?.member;
        if !from.is_null() && from_cap <= HWLINK_MAX_MEMBER_NAME_LEN {
            return Err(invalid(format!(
                "from holds {from_cap} bytes: pass HWLINK_MAX_MEMBER_NAME_LEN + 1 = {} (or \
                 NULL)",
                HWLINK_MAX_MEMBER_NAME_LEN + 1
            )));
        }
        // SAFETY: the caller's contract.
        let buf = unsafe { buffer(buf, cap) }?;
        let (sender, msg) = match p {
            Patience::Block => member.recv_any(),
            Patience::Try => member.try_recv_any(),
            Patience::Timeout(d) => member.recv_any_timeout(d),
        }
        .map_err(recv_error)?;
        if !from.is_null() {
            let name = sender.as_bytes();
            let k = name.len().min(HWLINK_MAX_MEMBER_NAME_LEN);
            // SAFETY: `from` holds more than HWLINK_MAX_MEMBER_NAME_LEN
            // bytes (checked above): the name and its NUL fit.
            unsafe {
                std::ptr::copy_nonoverlapping(name.as_ptr(), from.cast::<u8>(), k);
                from.add(k).write(0);
            }
        }
        let n = msg.len().min(cap);
        buf[..n].copy_from_slice(&msg[..n]);
        // SAFETY: the caller's contract.
        unsafe { deliver(msg.len(), cap, len, "a domain receive") }
    })
}

/// Receives the next message from any member into `buf`, waiting for one;
/// the sender's name goes to `from` (NUL-terminated; `from_cap` at least
/// HWLINK_MAX_MEMBER_NAME_LEN + 1; `from` may be NULL). HWLINK_TRUNCATED
/// as for `hwlink_member_recv_from`.
///
/// # Safety
/// `m` is a live handle; `from` is NULL or `from_cap` writable bytes;
/// `buf` points to `cap` writable bytes; `len` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn hwlink_member_recv_any(
    m: *mut hwlink_member,
    from: *mut c_char,
    from_cap: usize,
    buf: *mut c_void,
    cap: usize,
    len: *mut usize,
) -> hwlink_status {
    // SAFETY: the caller's contract.
    unsafe { recv_any(m, from, from_cap, buf, cap, len, Patience::Block) }
}

/// Receives from any member if a message is queued now; HWLINK_EMPTY if
/// not.
///
/// # Safety
/// As for `hwlink_member_recv_any`.
#[no_mangle]
pub unsafe extern "C" fn hwlink_member_try_recv_any(
    m: *mut hwlink_member,
    from: *mut c_char,
    from_cap: usize,
    buf: *mut c_void,
    cap: usize,
    len: *mut usize,
) -> hwlink_status {
    // SAFETY: the caller's contract.
    unsafe { recv_any(m, from, from_cap, buf, cap, len, Patience::Try) }
}

/// Receives from any member, waiting at most `timeout_ns` nanoseconds.
///
/// # Safety
/// As for `hwlink_member_recv_any`.
#[no_mangle]
pub unsafe extern "C" fn hwlink_member_recv_any_timeout(
    m: *mut hwlink_member,
    from: *mut c_char,
    from_cap: usize,
    buf: *mut c_void,
    cap: usize,
    len: *mut usize,
    timeout_ns: u64,
) -> hwlink_status {
    // SAFETY: the caller's contract.
    unsafe {
        recv_any(
            m,
            from,
            from_cap,
            buf,
            cap,
            len,
            Patience::Timeout(nanos(timeout_ns)),
        )
    }
}

/// The largest message of the domain's links, in bytes (0 if `m` is NULL).
///
/// # Safety
/// `m` is NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn hwlink_member_max_message(m: *mut hwlink_member) -> usize {
    // SAFETY: the caller's contract.
    let h = unsafe { m.as_ref() };
    catch_unwind(AssertUnwindSafe(|| h.map_or(0, |h| h.member.max_message()))).unwrap_or(0)
}

/// A descriptor for poll/epoll, readable when a receive (from any member)
/// may find a message or a new link; armed whenever a `try_` receive finds
/// nothing. Belongs to the handle (do not close it).
///
/// # Safety
/// `m` is a live handle; `fd` is writable.
#[no_mangle]
pub unsafe extern "C" fn hwlink_member_fd(m: *mut hwlink_member, fd: *mut c_int) -> hwlink_status {
    guard(|| {
        // SAFETY: the caller's contract.
        let member = &mut unsafe { handle(m, "member") }?.member;
        let raw = member.as_fd().map_err(readiness_error)?.as_raw_fd();
        // SAFETY: the caller's contract.
        unsafe { put_required(fd, raw, "fd") }
    })
}

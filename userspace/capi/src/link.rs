//! Links: the sending and receiving ends (`hwlink_sender`,
//! `hwlink_receiver`), every form of send and receive, zero-copy
//! reservations and peeks, and their pollable descriptors.

use std::ffi::{c_char, c_int, c_void};
use std::os::fd::AsRawFd;
use std::ptr::NonNull;

use hwlink::{LinkBuilder, ReadSlot, Receiver, RecvError, Sender, WriteSlot};

use crate::hwlink_status::*;
use crate::*;

/// Options for creating or opening a link end. All-zero is the defaults;
/// a zero field means its default.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct hwlink_link_options {
    /// Slots in the ring, a power of two (creation only; 0: 1024).
    pub capacity: u32,
    /// Largest message in bytes (creation only; 0: 1016).
    pub slot_size: u32,
    /// How this end waits: HWLINK_WAIT_* (0: spin, then park).
    pub wait: u32,
    /// Which memory: HWLINK_BACKEND_* (0: hugepages, else /dev/shm).
    pub backend: u32,
    /// How long an open waits for a creator still initialising, in
    /// milliseconds (0: 1000).
    pub ready_timeout_ms: u32,
    /// File mode of the link's file (creation only; 0: 0600; 0660 shares
    /// it with its group).
    pub file_mode: u32,
    /// The group of its files: a group name or a decimal gid (creation
    /// only; NULL: this process's group, or the shared directory's that
    /// `hwlink setup --group` made). With file_mode 0660, its members
    /// share it.
    pub group: *const c_char,
}

impl Default for hwlink_link_options {
    fn default() -> Self {
        hwlink_link_options {
            capacity: 0,
            slot_size: 0,
            wait: 0,
            backend: 0,
            ready_timeout_ms: 0,
            file_mode: 0,
            group: std::ptr::null(),
        }
    }
}

/// The sending end of a link (opaque). One thread at a time.
pub struct hwlink_sender {
    /// A reservation handed to C (`hwlink_reserve`), until its commit or
    /// cancel. It borrows the sender at `tx`; it is dropped before it.
    slot: Option<WriteSlot<'static>>,
    /// The sender, on the heap (from `Box::into_raw`) so that its address
    /// is fixed while `slot` borrows it; freed by `Drop`.
    tx: NonNull<Sender>,
    /// Its largest message, readable while `slot` borrows it.
    max: usize,
}

/// The receiving end of a link (opaque). One thread at a time.
pub struct hwlink_receiver {
    /// A message handed to C in place (`hwlink_peek`), until its release.
    /// It borrows the receiver at `rx`; it is dropped before it.
    slot: Option<ReadSlot<'static>>,
    /// The receiver, on the heap (from `Box::into_raw`); freed by `Drop`.
    rx: NonNull<Receiver>,
    /// Its largest message, readable while `slot` borrows it.
    max: usize,
}

impl hwlink_sender {
    fn new(tx: Sender) -> Box<Self> {
        Box::new(hwlink_sender {
            slot: None,
            max: tx.max_message(),
            tx: NonNull::from(Box::leak(Box::new(tx))),
        })
    }

    /// The sender, while no reservation borrows it.
    fn sender(&mut self) -> Fallible<&mut Sender> {
        if self.slot.is_some() {
            return Err(fail(
                HWLINK_BUSY,
                "a reservation is pending on this sender: commit it (hwlink_commit) or cancel \
                 it (hwlink_reserve_cancel) first",
            ));
        }
        // SAFETY: `tx` came from Box::leak and is freed only by Drop; no
        // reservation borrows it (checked above), and `&mut self` makes
        // this the only reference.
        Ok(unsafe { self.tx.as_mut() })
    }

    /// The sender for a reservation that outlives this call.
    fn sender_for_slot(&mut self) -> Fallible<&'static mut Sender> {
        self.sender()?;
        // SAFETY: as in `sender`; the 'static borrow goes into `self.slot`
        // only, which Drop clears before it frees the sender, and while
        // `slot` is set `sender` makes no other reference.
        Ok(unsafe { &mut *self.tx.as_ptr() })
    }
}

impl Drop for hwlink_sender {
    fn drop(&mut self) {
        // The reservation borrows the sender: it goes first (uncommitted).
        self.slot = None;
        // SAFETY: `tx` came from Box::leak, nothing borrows it any more, and
        // it is freed only here.
        drop(unsafe { Box::from_raw(self.tx.as_ptr()) });
    }
}

impl hwlink_receiver {
    fn new(rx: Receiver) -> Box<Self> {
        Box::new(hwlink_receiver {
            slot: None,
            max: rx.max_message(),
            rx: NonNull::from(Box::leak(Box::new(rx))),
        })
    }

    /// The receiver, while no peeked message borrows it.
    fn receiver(&mut self) -> Fallible<&mut Receiver> {
        if self.slot.is_some() {
            return Err(fail(
                HWLINK_BUSY,
                "a peeked message is pending on this receiver: release it (hwlink_release) \
                 first",
            ));
        }
        // SAFETY: `rx` came from Box::leak and is freed only by Drop; no
        // peeked slot borrows it (checked above); `&mut self` is unique.
        Ok(unsafe { self.rx.as_mut() })
    }

    /// The receiver for a peeked slot that outlives this call.
    fn receiver_for_slot(&mut self) -> Fallible<&'static mut Receiver> {
        self.receiver()?;
        // SAFETY: as in `receiver`; the 'static borrow goes into
        // `self.slot` only, cleared before the receiver is freed.
        Ok(unsafe { &mut *self.rx.as_ptr() })
    }
}

impl Drop for hwlink_receiver {
    fn drop(&mut self) {
        // The peeked slot borrows the receiver: it goes first (unreleased).
        self.slot = None;
        // SAFETY: `rx` came from Box::leak, nothing borrows it any more, and
        // it is freed only here.
        drop(unsafe { Box::from_raw(self.rx.as_ptr()) });
    }
}

/// The builder for `name` with `opts` (NULL: defaults).
///
/// # Safety
/// `name` is NULL or a C string; `opts` is NULL or points to options.
unsafe fn builder(name: *const c_char, opts: *const hwlink_link_options) -> Fallible<LinkBuilder> {
    // SAFETY: the caller's contract.
    let name = unsafe { string(name, "name") }?;
    // SAFETY: the caller's contract: NULL or readable options.
    let o = unsafe { opts.as_ref() }.copied().unwrap_or_default();
    let mut b = LinkBuilder::new(name)
        .wait(wait_strategy(o.wait)?)
        .backend(backend(o.backend)?);
    if o.capacity != 0 {
        b = b.capacity(o.capacity);
    }
    if o.slot_size != 0 {
        b = b.slot_size(o.slot_size);
    }
    if o.ready_timeout_ms != 0 {
        b = b.ready_timeout(Duration::from_millis(u64::from(o.ready_timeout_ms)));
    }
    if o.file_mode != 0 {
        b = b.file_mode(o.file_mode);
    }
    // SAFETY: the caller's contract: the options' group is NULL or a string.
    if let Some(g) = unsafe { group(o.group) }? {
        b = b.group(g);
    }
    Ok(b)
}

/// Hands `h` to C through `out`.
///
/// # Safety
/// `out` is NULL or writable.
unsafe fn hand_out<T>(out: *mut *mut T, h: Box<T>) -> Fallible {
    if out.is_null() {
        return Err(invalid("out is NULL"));
    }
    // SAFETY: the caller's contract: `out` is writable.
    unsafe { out.write(Box::into_raw(h)) };
    Ok(())
}

/// Creates the link `name` (letters, digits, `_`, `-`, `.`; up to 48) and
/// returns its sending end in `*out`. `opts` may be NULL (defaults). The
/// link's file is removed when this end is closed.
///
/// # Safety
/// `name` is a C string; `opts` is NULL or points to options; `out` is
/// writable.
#[no_mangle]
pub unsafe extern "C" fn hwlink_sender_create(
    name: *const c_char,
    opts: *const hwlink_link_options,
    out: *mut *mut hwlink_sender,
) -> hwlink_status {
    guard(|| {
        if out.is_null() {
            return Err(invalid("out is NULL"));
        }
        // SAFETY: the caller's contract.
        let b = unsafe { builder(name, opts) }?;
        let tx = b.create_sender().map_err(open_error)?;
        // SAFETY: the caller's contract.
        unsafe { hand_out(out, hwlink_sender::new(tx)) }
    })
}

/// Opens the sending end of the existing link `name` into `*out`.
///
/// # Safety
/// As for `hwlink_sender_create`.
#[no_mangle]
pub unsafe extern "C" fn hwlink_sender_open(
    name: *const c_char,
    opts: *const hwlink_link_options,
    out: *mut *mut hwlink_sender,
) -> hwlink_status {
    guard(|| {
        if out.is_null() {
            return Err(invalid("out is NULL"));
        }
        // SAFETY: the caller's contract.
        let b = unsafe { builder(name, opts) }?;
        let tx = b.open_sender().map_err(open_error)?;
        // SAFETY: the caller's contract.
        unsafe { hand_out(out, hwlink_sender::new(tx)) }
    })
}

/// Creates the link `name` and returns its receiving end in `*out`.
///
/// # Safety
/// As for `hwlink_sender_create`.
#[no_mangle]
pub unsafe extern "C" fn hwlink_receiver_create(
    name: *const c_char,
    opts: *const hwlink_link_options,
    out: *mut *mut hwlink_receiver,
) -> hwlink_status {
    guard(|| {
        if out.is_null() {
            return Err(invalid("out is NULL"));
        }
        // SAFETY: the caller's contract.
        let b = unsafe { builder(name, opts) }?;
        let rx = b.create_receiver().map_err(open_error)?;
        // SAFETY: the caller's contract.
        unsafe { hand_out(out, hwlink_receiver::new(rx)) }
    })
}

/// Opens the receiving end of the existing link `name` into `*out`.
///
/// # Safety
/// As for `hwlink_sender_create`.
#[no_mangle]
pub unsafe extern "C" fn hwlink_receiver_open(
    name: *const c_char,
    opts: *const hwlink_link_options,
    out: *mut *mut hwlink_receiver,
) -> hwlink_status {
    guard(|| {
        if out.is_null() {
            return Err(invalid("out is NULL"));
        }
        // SAFETY: the caller's contract.
        let b = unsafe { builder(name, opts) }?;
        let rx = b.open_receiver().map_err(open_error)?;
        // SAFETY: the caller's contract.
        unsafe { hand_out(out, hwlink_receiver::new(rx)) }
    })
}

/// Closes a sending end (NULL: nothing). The receiver then sees
/// HWLINK_DISCONNECTED once it has received every message sent. A pending
/// reservation is dropped uncommitted.
///
/// # Safety
/// `tx` is NULL or a live handle, not used again.
#[no_mangle]
pub unsafe extern "C" fn hwlink_sender_close(tx: *mut hwlink_sender) {
    if !tx.is_null() {
        // SAFETY: the caller's contract: a handle from Box::into_raw,
        // closed once.
        let h = unsafe { Box::from_raw(tx) };
        let _ = catch_unwind(AssertUnwindSafe(move || drop(h)));
    }
}

/// Closes a receiving end (NULL: nothing). A peeked message is dropped
/// unreleased.
///
/// # Safety
/// `rx` is NULL or a live handle, not used again.
#[no_mangle]
pub unsafe extern "C" fn hwlink_receiver_close(rx: *mut hwlink_receiver) {
    if !rx.is_null() {
        // SAFETY: the caller's contract: a handle from Box::into_raw,
        // closed once.
        let h = unsafe { Box::from_raw(rx) };
        let _ = catch_unwind(AssertUnwindSafe(move || drop(h)));
    }
}

/// How long a call may wait.
#[derive(Clone, Copy)]
pub(crate) enum Patience {
    /// Waits per the wait strategy until it can proceed.
    Block,
    /// Does not wait.
    Try,
    /// Waits at most this long.
    Timeout(Duration),
}

/// # Safety
/// `tx` is NULL or a live handle; `data` is NULL or `len` readable bytes.
unsafe fn send(
    tx: *mut hwlink_sender,
    data: *const c_void,
    len: usize,
    p: Patience,
) -> hwlink_status {
    guard(|| {
        // SAFETY: the caller's contract.
        let tx = unsafe { handle(tx, "tx") }?.sender()?;
        // SAFETY: the caller's contract.
        let msg = unsafe { bytes(data, len) }?;
        match p {
            Patience::Block => tx.send(msg),
            Patience::Try => tx.try_send(msg),
            Patience::Timeout(d) => tx.send_timeout(msg, d),
        }
        .map_err(send_error)
    })
}

/// Sends `len` bytes at `data`, waiting (per the wait strategy) for room.
/// HWLINK_DISCONNECTED: the receiver has gone; HWLINK_TOO_LARGE: longer
/// than a slot.
///
/// # Safety
/// `tx` is a live handle; `data` points to `len` readable bytes.
#[no_mangle]
pub unsafe extern "C" fn hwlink_send(
    tx: *mut hwlink_sender,
    data: *const c_void,
    len: usize,
) -> hwlink_status {
    // SAFETY: the caller's contract.
    unsafe { send(tx, data, len, Patience::Block) }
}

/// Sends if there is room now; HWLINK_FULL if not.
///
/// # Safety
/// As for `hwlink_send`.
#[no_mangle]
pub unsafe extern "C" fn hwlink_try_send(
    tx: *mut hwlink_sender,
    data: *const c_void,
    len: usize,
) -> hwlink_status {
    // SAFETY: the caller's contract.
    unsafe { send(tx, data, len, Patience::Try) }
}

/// Sends, waiting at most `timeout_ns` nanoseconds for room; HWLINK_TIMEOUT
/// if there was none.
///
/// # Safety
/// As for `hwlink_send`.
#[no_mangle]
pub unsafe extern "C" fn hwlink_send_timeout(
    tx: *mut hwlink_sender,
    data: *const c_void,
    len: usize,
    timeout_ns: u64,
) -> hwlink_status {
    // SAFETY: the caller's contract.
    unsafe { send(tx, data, len, Patience::Timeout(nanos(timeout_ns))) }
}

/// # Safety
/// `rx` is NULL or a live handle; `buf` is NULL or `cap` writable bytes;
/// `len` is NULL or writable.
unsafe fn recv(
    rx: *mut hwlink_receiver,
    buf: *mut c_void,
    cap: usize,
    len: *mut usize,
    p: Patience,
) -> hwlink_status {
    guard(|| {
        // SAFETY: the caller's contract.
        let rx = unsafe { handle(rx, "rx") }?.receiver()?;
        // SAFETY: the caller's contract.
        let buf = unsafe { buffer(buf, cap) }?;
        let got = match p {
            Patience::Block => rx.recv_into(buf),
            Patience::Try | Patience::Timeout(_) => {
                let slot = match p {
                    Patience::Timeout(d) => rx.peek_timeout(d),
                    _ => rx.try_peek(),
                };
                slot.and_then(|slot| {
                    let n = slot.len();
                    if n > buf.len() {
                        // Not released: the message stays queued.
                        return Err(RecvError::BufferTooSmall { len: n, cap });
                    }
                    slot.bytes().copy_to(buf);
                    slot.release();
                    Ok(n)
                })
            }
        };
        match got {
            Ok(n) => {
                // SAFETY: the caller's contract.
                unsafe { put(len, n) };
                Ok(())
            }
            Err(e) => {
                if let RecvError::BufferTooSmall { len: need, .. } = e {
                    // SAFETY: the caller's contract.
                    unsafe { put(len, need) };
                }
                Err(recv_error(e))
            }
        }
    })
}

/// Receives the next message into `buf` (`cap` bytes), waiting for one;
/// its length goes to `*len` (`len` may be NULL). HWLINK_TRUNCATED: the
/// message is longer than `cap` (`*len` says how long); it stays queued,
/// so receive again with a larger buffer (`hwlink_receiver_max_message`
/// bytes always suffice). HWLINK_DISCONNECTED: the sender has gone and
/// every message it sent was received.
///
/// # Safety
/// `rx` is a live handle; `buf` points to `cap` writable bytes; `len` is
/// NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn hwlink_recv(
    rx: *mut hwlink_receiver,
    buf: *mut c_void,
    cap: usize,
    len: *mut usize,
) -> hwlink_status {
    // SAFETY: the caller's contract.
    unsafe { recv(rx, buf, cap, len, Patience::Block) }
}

/// Receives a message if one is queued now; HWLINK_EMPTY if not.
///
/// # Safety
/// As for `hwlink_recv`.
#[no_mangle]
pub unsafe extern "C" fn hwlink_try_recv(
    rx: *mut hwlink_receiver,
    buf: *mut c_void,
    cap: usize,
    len: *mut usize,
) -> hwlink_status {
    // SAFETY: the caller's contract.
    unsafe { recv(rx, buf, cap, len, Patience::Try) }
}

/// Receives, waiting at most `timeout_ns` nanoseconds; HWLINK_TIMEOUT if
/// nothing came.
///
/// # Safety
/// As for `hwlink_recv`.
#[no_mangle]
pub unsafe extern "C" fn hwlink_recv_timeout(
    rx: *mut hwlink_receiver,
    buf: *mut c_void,
    cap: usize,
    len: *mut usize,
    timeout_ns: u64,
) -> hwlink_status {
    // SAFETY: the caller's contract.
    unsafe { recv(rx, buf, cap, len, Patience::Timeout(nanos(timeout_ns))) }
}

/// # Safety
/// `tx` is NULL or a live handle; `ptr` is NULL or writable.
unsafe fn reserve(
    tx: *mut hwlink_sender,
    len: usize,
    ptr: *mut *mut c_void,
    p: Patience,
) -> hwlink_status {
    guard(|| {
        // SAFETY: the caller's contract.
        let h = unsafe { handle(tx, "tx") }?;
        if ptr.is_null() {
            return Err(invalid("ptr is NULL"));
        }
        let tx = h.sender_for_slot()?;
        let mut slot = match p {
            Patience::Block => tx.reserve(len),
            Patience::Try => tx.try_reserve(len),
            Patience::Timeout(d) => tx.reserve_timeout(len, d),
        }
        .map_err(send_error)?;
        let at = slot.bytes_mut().as_mut_ptr();
        h.slot = Some(slot);
        // SAFETY: checked non-NULL; writable by the caller's contract.
        unsafe { ptr.write(at.cast()) };
        Ok(())
    })
}

/// Reserves a slot for an in-place write of up to `len` bytes, waiting for
/// room; its address goes to `*ptr`. Write the message there, then
/// `hwlink_commit` sends it (nothing is sent before). Until then the sender
/// refuses other calls with HWLINK_BUSY. The bytes are shared memory: write
/// them, do not keep pointers into them after the commit.
///
/// # Safety
/// `tx` is a live handle; `ptr` is writable.
#[no_mangle]
pub unsafe extern "C" fn hwlink_reserve(
    tx: *mut hwlink_sender,
    len: usize,
    ptr: *mut *mut c_void,
) -> hwlink_status {
    // SAFETY: the caller's contract.
    unsafe { reserve(tx, len, ptr, Patience::Block) }
}

/// Reserves if there is room now; HWLINK_FULL if not.
///
/// # Safety
/// As for `hwlink_reserve`.
#[no_mangle]
pub unsafe extern "C" fn hwlink_try_reserve(
    tx: *mut hwlink_sender,
    len: usize,
    ptr: *mut *mut c_void,
) -> hwlink_status {
    // SAFETY: the caller's contract.
    unsafe { reserve(tx, len, ptr, Patience::Try) }
}

/// Reserves, waiting at most `timeout_ns` nanoseconds; HWLINK_TIMEOUT if
/// no room came.
///
/// # Safety
/// As for `hwlink_reserve`.
#[no_mangle]
pub unsafe extern "C" fn hwlink_reserve_timeout(
    tx: *mut hwlink_sender,
    len: usize,
    ptr: *mut *mut c_void,
    timeout_ns: u64,
) -> hwlink_status {
    // SAFETY: the caller's contract.
    unsafe { reserve(tx, len, ptr, Patience::Timeout(nanos(timeout_ns))) }
}

/// Sends the reserved slot's first `len` bytes (at most the reserved
/// length). HWLINK_INVALID_ARGUMENT if nothing is reserved.
///
/// # Safety
/// `tx` is a live handle.
#[no_mangle]
pub unsafe extern "C" fn hwlink_commit(tx: *mut hwlink_sender, len: usize) -> hwlink_status {
    guard(|| {
        // SAFETY: the caller's contract.
        let h = unsafe { handle(tx, "tx") }?;
        let slot = h
            .slot
            .take()
            .ok_or_else(|| invalid("nothing is reserved: call hwlink_reserve first"))?;
        if len > slot.len() {
            let reserved = slot.len();
            h.slot = Some(slot);
            return Err(invalid(format!(
                "commit of {len} bytes, but {reserved} were reserved: commit at most that"
            )));
        }
        slot.commit_len(len);
        Ok(())
    })
}

/// Drops a reservation without sending anything (no reservation: nothing).
///
/// # Safety
/// `tx` is a live handle.
#[no_mangle]
pub unsafe extern "C" fn hwlink_reserve_cancel(tx: *mut hwlink_sender) -> hwlink_status {
    guard(|| {
        // SAFETY: the caller's contract.
        unsafe { handle(tx, "tx") }?.slot = None;
        Ok(())
    })
}

/// # Safety
/// `rx` is NULL or a live handle; `ptr` and `len` are NULL or writable.
unsafe fn peek(
    rx: *mut hwlink_receiver,
    ptr: *mut *const c_void,
    len: *mut usize,
    p: Patience,
) -> hwlink_status {
    guard(|| {
        // SAFETY: the caller's contract.
        let h = unsafe { handle(rx, "rx") }?;
        if ptr.is_null() || len.is_null() {
            return Err(invalid("ptr or len is NULL"));
        }
        let rx = h.receiver_for_slot()?;
        let slot = match p {
            Patience::Block => rx.peek(),
            Patience::Try => rx.try_peek(),
            Patience::Timeout(d) => rx.peek_timeout(d),
        }
        .map_err(recv_error)?;
        let (at, n) = (slot.bytes().as_ptr(), slot.len());
        h.slot = Some(slot);
        // SAFETY: checked non-NULL; writable by the caller's contract.
        unsafe {
            ptr.write(at.cast());
            len.write(n);
        }
        Ok(())
    })
}

/// Borrows the next message in place, waiting for one: its address and
/// length go to `*ptr` and `*len`. It stays queued until
/// `hwlink_release`; until then the receiver refuses other calls with
/// HWLINK_BUSY. The bytes are shared memory the sender could still write
/// (if it is broken or hostile): copy out what you validate.
///
/// # Safety
/// `rx` is a live handle; `ptr` and `len` are writable.
#[no_mangle]
pub unsafe extern "C" fn hwlink_peek(
    rx: *mut hwlink_receiver,
    ptr: *mut *const c_void,
    len: *mut usize,
) -> hwlink_status {
    // SAFETY: the caller's contract.
    unsafe { peek(rx, ptr, len, Patience::Block) }
}

/// Peeks if a message is queued now; HWLINK_EMPTY if not.
///
/// # Safety
/// As for `hwlink_peek`.
#[no_mangle]
pub unsafe extern "C" fn hwlink_try_peek(
    rx: *mut hwlink_receiver,
    ptr: *mut *const c_void,
    len: *mut usize,
) -> hwlink_status {
    // SAFETY: the caller's contract.
    unsafe { peek(rx, ptr, len, Patience::Try) }
}

/// Peeks, waiting at most `timeout_ns` nanoseconds; HWLINK_TIMEOUT if
/// nothing came.
///
/// # Safety
/// As for `hwlink_peek`.
#[no_mangle]
pub unsafe extern "C" fn hwlink_peek_timeout(
    rx: *mut hwlink_receiver,
    ptr: *mut *const c_void,
    len: *mut usize,
    timeout_ns: u64,
) -> hwlink_status {
    // SAFETY: the caller's contract.
    unsafe { peek(rx, ptr, len, Patience::Timeout(nanos(timeout_ns))) }
}

/// Consumes the peeked message, handing its slot back to the sender.
/// HWLINK_INVALID_ARGUMENT if nothing is peeked.
///
/// # Safety
/// `rx` is a live handle.
#[no_mangle]
pub unsafe extern "C" fn hwlink_release(rx: *mut hwlink_receiver) -> hwlink_status {
    guard(|| {
        // SAFETY: the caller's contract.
        let h = unsafe { handle(rx, "rx") }?;
        let slot = h
            .slot
            .take()
            .ok_or_else(|| invalid("nothing is peeked: call hwlink_peek first"))?;
        slot.release();
        Ok(())
    })
}

/// The largest message the link carries, in bytes (0 if `tx` is NULL).
///
/// # Safety
/// `tx` is NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn hwlink_sender_max_message(tx: *mut hwlink_sender) -> usize {
    // SAFETY: the caller's contract.
    unsafe { tx.as_ref() }.map_or(0, |h| h.max)
}

/// The largest message the link carries, in bytes (0 if `rx` is NULL).
///
/// # Safety
/// `rx` is NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn hwlink_receiver_max_message(rx: *mut hwlink_receiver) -> usize {
    // SAFETY: the caller's contract.
    unsafe { rx.as_ref() }.map_or(0, |h| h.max)
}

/// Whether the receiver has closed or died (asks the kernel): 1 if so, 0
/// if not, -1 if `tx` is NULL or busy.
///
/// # Safety
/// `tx` is NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn hwlink_sender_is_disconnected(tx: *mut hwlink_sender) -> c_int {
    let mut gone = -1;
    let _ = guard(|| {
        // SAFETY: the caller's contract.
        let tx = unsafe { handle(tx, "tx") }?.sender()?;
        gone = c_int::from(tx.is_disconnected());
        Ok(())
    });
    gone
}

/// A descriptor for poll/epoll, readable when a receive may find a message
/// (or the sender is gone): see `Receiver::as_fd`. It is armed whenever a
/// `try_` receive finds nothing, and stays readable until then: after it
/// reads ready, receive until HWLINK_EMPTY. The descriptor belongs to the
/// handle (do not close it). HWLINK_UNSUPPORTED: not here (busy-polling
/// end; kernel before 6.7 or io_uring disabled).
///
/// # Safety
/// `rx` is a live handle; `fd` is writable.
#[no_mangle]
pub unsafe extern "C" fn hwlink_receiver_fd(
    rx: *mut hwlink_receiver,
    fd: *mut c_int,
) -> hwlink_status {
    guard(|| {
        // SAFETY: the caller's contract.
        let rx = unsafe { handle(rx, "rx") }?.receiver()?;
        let raw = rx.as_fd().map_err(readiness_error)?.as_raw_fd();
        // SAFETY: the caller's contract.
        unsafe { put_required(fd, raw, "fd") }
    })
}

/// A descriptor readable when a send may find room (or the receiver is
/// gone); armed by a `try_` send that finds the link full.
///
/// # Safety
/// `tx` is a live handle; `fd` is writable.
#[no_mangle]
pub unsafe extern "C" fn hwlink_sender_fd(tx: *mut hwlink_sender, fd: *mut c_int) -> hwlink_status {
    guard(|| {
        // SAFETY: the caller's contract.
        let tx = unsafe { handle(tx, "tx") }?.sender()?;
        let raw = tx.as_fd().map_err(readiness_error)?.as_raw_fd();
        // SAFETY: the caller's contract.
        unsafe { put_required(fd, raw, "fd") }
    })
}

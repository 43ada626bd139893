//! The C API called from Rust, in one process: statuses, the messages of
//! `hwlink_last_error`, busy handles, truncation, NULL arguments.

use super::*;
use std::ffi::CString;
use std::ptr::{null, null_mut};

fn unique(what: &str) -> CString {
    thread_local!(static N: std::cell::Cell<u32> = const { std::cell::Cell::new(0) });
    let n = N.with(|n| n.replace(n.get() + 1));
    let t = format!("{:?}", std::thread::current().id());
    let t: String = t.chars().filter(char::is_ascii_digit).collect();
    CString::new(format!("capi-{what}-{}-{t}-{n}", std::process::id())).unwrap()
}

fn last_error() -> String {
    // SAFETY: a C string, valid until the next failed call on this thread.
    unsafe { CStr::from_ptr(hwlink_last_error()) }
        .to_str()
        .unwrap()
        .to_owned()
}

/// A link's two ends, closed on drop.
struct Pair(*mut hwlink_sender, *mut hwlink_receiver);

impl Pair {
    fn new() -> Pair {
        let name = unique("link");
        let opts = hwlink_link_options {
            capacity: 4,
            slot_size: 64,
            ..Default::default()
        };
        let (mut tx, mut rx) = (null_mut(), null_mut());
        // SAFETY: a C string, options and out pointers of ours.
        unsafe {
            assert_eq!(
                hwlink_sender_create(name.as_ptr(), &opts, &mut tx),
                HWLINK_OK
            );
            assert_eq!(
                hwlink_receiver_open(name.as_ptr(), null(), &mut rx),
                HWLINK_OK
            );
        }
        Pair(tx, rx)
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        // SAFETY: live handles, closed once.
        unsafe {
            hwlink_sender_close(self.0);
            hwlink_receiver_close(self.1);
        }
    }
}

#[test]
fn send_and_every_receive_form() {
    let p = Pair::new();
    let mut buf = [0u8; 64];
    let mut len = 0usize;
    // SAFETY: live handles; buffers of ours with their true lengths.
    unsafe {
        assert_eq!(
            hwlink_try_recv(p.1, buf.as_mut_ptr().cast(), 64, &mut len),
            HWLINK_EMPTY
        );
        assert_eq!(last_error(), RecvError::Empty.to_string());
        assert_eq!(hwlink_send(p.0, b"one".as_ptr().cast(), 3), HWLINK_OK);
        assert_eq!(hwlink_try_send(p.0, b"two".as_ptr().cast(), 3), HWLINK_OK);
        assert_eq!(
            hwlink_send_timeout(p.0, b"three".as_ptr().cast(), 5, 1_000_000),
            HWLINK_OK
        );
        assert_eq!(
            hwlink_recv(p.1, buf.as_mut_ptr().cast(), 64, &mut len),
            HWLINK_OK
        );
        assert_eq!(&buf[..len], b"one");
        assert_eq!(
            hwlink_try_recv(p.1, buf.as_mut_ptr().cast(), 64, &mut len),
            HWLINK_OK
        );
        assert_eq!(&buf[..len], b"two");
        let s = hwlink_recv_timeout(p.1, buf.as_mut_ptr().cast(), 64, &mut len, 1_000_000);
        assert_eq!(s, HWLINK_OK);
        assert_eq!(&buf[..len], b"three");
        let s = hwlink_recv_timeout(p.1, buf.as_mut_ptr().cast(), 64, &mut len, 1_000_000);
        assert_eq!(s, HWLINK_TIMEOUT);
        assert_eq!(last_error(), RecvError::Timeout.to_string());
    }
}

#[test]
fn a_full_link_and_a_too_large_message() {
    let p = Pair::new();
    // SAFETY: live handles; buffers of ours with their true lengths.
    unsafe {
        for _ in 0..4 {
            assert_eq!(hwlink_try_send(p.0, b"x".as_ptr().cast(), 1), HWLINK_OK);
        }
        assert_eq!(hwlink_try_send(p.0, b"x".as_ptr().cast(), 1), HWLINK_FULL);
        assert_eq!(last_error(), SendError::Full(()).to_string());
        assert_eq!(
            hwlink_send_timeout(p.0, b"x".as_ptr().cast(), 1, 1_000_000),
            HWLINK_TIMEOUT
        );
        let big = [0u8; 65];
        assert_eq!(hwlink_send(p.0, big.as_ptr().cast(), 65), HWLINK_TOO_LARGE);
        assert!(
            last_error().contains("slot size of 64 bytes"),
            "{}",
            last_error()
        );
    }
}

#[test]
fn a_short_buffer_leaves_the_message_queued_on_a_link() {
    let p = Pair::new();
    let mut buf = [0u8; 64];
    let mut len = 0usize;
    // SAFETY: live handles; buffers of ours with their true lengths.
    unsafe {
        assert_eq!(hwlink_send(p.0, b"hello".as_ptr().cast(), 5), HWLINK_OK);
        for s in [
            hwlink_recv(p.1, buf.as_mut_ptr().cast(), 2, &mut len),
            hwlink_try_recv(p.1, buf.as_mut_ptr().cast(), 2, &mut len),
            hwlink_recv_timeout(p.1, buf.as_mut_ptr().cast(), 2, &mut len, 1_000_000),
            hwlink_try_recv(p.1, null_mut(), 0, &mut len),
        ] {
            assert_eq!(s, HWLINK_TRUNCATED);
            assert_eq!(len, 5);
        }
        assert!(last_error().contains("pass a larger buffer"));
        assert_eq!(
            hwlink_recv(p.1, buf.as_mut_ptr().cast(), 64, &mut len),
            HWLINK_OK
        );
        assert_eq!(&buf[..len], b"hello");
    }
}

#[test]
fn reserve_commit_peek_release_and_busy_handles() {
    let p = Pair::new();
    let mut slot: *mut std::ffi::c_void = null_mut();
    let (mut at, mut len): (*const std::ffi::c_void, usize) = (null(), 0);
    // SAFETY: live handles; pointers into slots used within their
    // reservation or peek, for the lengths given.
    unsafe {
        assert_eq!(hwlink_commit(p.0, 0), HWLINK_INVALID_ARGUMENT);
        assert_eq!(hwlink_reserve(p.0, 8, &mut slot), HWLINK_OK);
        assert_eq!(hwlink_send(p.0, b"x".as_ptr().cast(), 1), HWLINK_BUSY);
        assert_eq!(hwlink_try_reserve(p.0, 8, &mut slot), HWLINK_BUSY);
        std::ptr::copy_nonoverlapping(b"zerocopy".as_ptr(), slot.cast::<u8>(), 8);
        assert_eq!(hwlink_commit(p.0, 9), HWLINK_INVALID_ARGUMENT);
        assert_eq!(hwlink_commit(p.0, 4), HWLINK_OK);
        assert_eq!(
            hwlink_reserve_timeout(p.0, 8, &mut slot, 1_000_000),
            HWLINK_OK
        );
        assert_eq!(hwlink_reserve_cancel(p.0), HWLINK_OK);
        assert_eq!(hwlink_try_send(p.0, b"next".as_ptr().cast(), 4), HWLINK_OK);

        assert_eq!(hwlink_release(p.1), HWLINK_INVALID_ARGUMENT);
        assert_eq!(hwlink_peek(p.1, &mut at, &mut len), HWLINK_OK);
        assert_eq!(std::slice::from_raw_parts(at.cast::<u8>(), len), b"zero");
        let mut buf = [0u8; 8];
        assert_eq!(
            hwlink_try_recv(p.1, buf.as_mut_ptr().cast(), 8, null_mut()),
            HWLINK_BUSY
        );
        assert!(last_error().contains("hwlink_release"));
        // Read-only calls still answer while a peek is pending.
        assert_eq!(hwlink_receiver_max_message(p.1), 64);
        assert_eq!(hwlink_sender_max_message(p.0), 64);
        assert_eq!(hwlink_release(p.1), HWLINK_OK);
        assert_eq!(hwlink_try_peek(p.1, &mut at, &mut len), HWLINK_OK);
        assert_eq!(std::slice::from_raw_parts(at.cast::<u8>(), len), b"next");
        assert_eq!(hwlink_release(p.1), HWLINK_OK);
        assert_eq!(
            hwlink_peek_timeout(p.1, &mut at, &mut len, 1_000_000),
            HWLINK_TIMEOUT
        );
    }
}

#[test]
fn a_closed_sender_is_disconnected_after_the_last_message() {
    let p = Pair::new();
    let (tx, rx) = (p.0, p.1);
    std::mem::forget(p);
    let mut buf = [0u8; 8];
    let mut len = 0;
    // SAFETY: live handles, each closed once.
    unsafe {
        assert_eq!(hwlink_send(tx, b"last".as_ptr().cast(), 4), HWLINK_OK);
        hwlink_sender_close(tx);
        assert_eq!(
            hwlink_recv(rx, buf.as_mut_ptr().cast(), 8, &mut len),
            HWLINK_OK
        );
        assert_eq!(&buf[..len], b"last");
        assert_eq!(
            hwlink_recv(rx, buf.as_mut_ptr().cast(), 8, &mut len),
            HWLINK_DISCONNECTED
        );
        assert!(last_error().contains("sender has gone"));
        hwlink_receiver_close(rx);
    }
}

#[test]
fn null_and_invalid_arguments_are_errors() {
    let name = unique("null");
    let mut tx = null_mut();
    // SAFETY: NULL or valid pointers, as each call's contract allows.
    unsafe {
        assert_eq!(hwlink_send(null_mut(), null(), 0), HWLINK_INVALID_ARGUMENT);
        assert!(last_error().contains("tx is NULL"));
        assert_eq!(
            hwlink_sender_create(null(), null(), &mut tx),
            HWLINK_INVALID_ARGUMENT
        );
        assert_eq!(
            hwlink_sender_create(name.as_ptr(), null(), null_mut()),
            HWLINK_INVALID_ARGUMENT
        );
        let bad = hwlink_link_options {
            wait: 7,
            ..Default::default()
        };
        assert_eq!(
            hwlink_sender_create(name.as_ptr(), &bad, &mut tx),
            HWLINK_INVALID_ARGUMENT
        );
        assert!(last_error().contains("unknown wait strategy 7"));
        let bad = hwlink_link_options {
            capacity: 3,
            ..Default::default()
        };
        assert_eq!(
            hwlink_sender_create(name.as_ptr(), &bad, &mut tx),
            HWLINK_INVALID_ARGUMENT
        );
        assert_eq!(
            hwlink_receiver_open(name.as_ptr(), null(), null_mut()),
            HWLINK_INVALID_ARGUMENT
        );
        let mut rx = null_mut();
        assert_eq!(
            hwlink_receiver_open(name.as_ptr(), null(), &mut rx),
            HWLINK_OPEN_FAILED
        );
        assert!(!last_error().is_empty());
        hwlink_sender_close(null_mut());
        hwlink_receiver_close(null_mut());
        hwlink_mailbox_close(null_mut());
        hwlink_member_leave(null_mut());
    }
}

#[test]
fn a_mailbox_truncates_what_does_not_fit_and_consumes_it() {
    let name = unique("mbx");
    let mut m = null_mut();
    let mut buf = [0u8; 4];
    let mut len = 0;
    // SAFETY: a live handle; buffers of ours with their true lengths.
    unsafe {
        assert_eq!(
            hwlink_mailbox_create(name.as_ptr(), null(), HWLINK_ACCESS_SEND_RECV, &mut m),
            HWLINK_OK
        );
        assert_eq!(hwlink_mailbox_max_message(m), 240);
        assert_eq!(
            hwlink_mailbox_try_recv(m, buf.as_mut_ptr().cast(), 4, &mut len),
            HWLINK_EMPTY
        );
        assert_eq!(
            hwlink_mailbox_send(m, b"abcdef".as_ptr().cast(), 6),
            HWLINK_OK
        );
        assert_eq!(
            hwlink_mailbox_try_send(m, b"gh".as_ptr().cast(), 2),
            HWLINK_OK
        );
        assert_eq!(
            hwlink_mailbox_recv(m, buf.as_mut_ptr().cast(), 4, &mut len),
            HWLINK_TRUNCATED
        );
        assert_eq!((len, &buf), (6, b"abcd"));
        assert!(last_error().contains("the rest is lost"));
        let s = hwlink_mailbox_recv_timeout(m, buf.as_mut_ptr().cast(), 4, &mut len, 1_000_000);
        assert_eq!((s, len, &buf[..2]), (HWLINK_OK, 2, &b"gh"[..]));
        assert_eq!(hwlink_mailbox_remove(m), HWLINK_OK);
    }
}

#[test]
fn domain_members_send_by_name() {
    let domain = CString::new(format!("capi{}", std::process::id())).unwrap();
    let (a, b) = (CString::new("alice").unwrap(), CString::new("bob").unwrap());
    let (mut ma, mut mb) = (null_mut(), null_mut());
    let mut from = [0 as c_char; HWLINK_MAX_MEMBER_NAME_LEN + 1];
    let mut buf = [0u8; 16];
    let mut len = 0;
    // SAFETY: live handles; C strings and buffers of ours with their true
    // lengths.
    unsafe {
        assert_eq!(
            hwlink_domain_join(domain.as_ptr(), a.as_ptr(), null(), &mut ma),
            HWLINK_OK
        );
        assert_eq!(
            hwlink_domain_join(domain.as_ptr(), b.as_ptr(), null(), &mut mb),
            HWLINK_OK
        );
        let carol = CString::new("carol").unwrap();
        assert_eq!(
            hwlink_member_try_send(ma, carol.as_ptr(), b"?".as_ptr().cast(), 1),
            HWLINK_NO_SUCH_MEMBER
        );
        assert_eq!(
            hwlink_member_send(ma, b.as_ptr(), b"hi bob".as_ptr().cast(), 6),
            HWLINK_OK
        );
        let s = hwlink_member_recv_any(
            mb,
            from.as_mut_ptr(),
            from.len(),
            buf.as_mut_ptr().cast(),
            16,
            &mut len,
        );
        assert_eq!(s, HWLINK_OK);
        assert_eq!(CStr::from_ptr(from.as_ptr()).to_str().unwrap(), "alice");
        assert_eq!(&buf[..len], b"hi bob");
        let s = hwlink_member_send_timeout(
            mb,
            a.as_ptr(),
            b"hi alice".as_ptr().cast(),
            8,
            1_000_000_000,
        );
        assert_eq!(s, HWLINK_OK);
        let s = hwlink_member_recv_from_timeout(
            ma,
            b.as_ptr(),
            buf.as_mut_ptr().cast(),
            16,
            &mut len,
            1_000_000_000,
        );
        assert_eq!((s, &buf[..len]), (HWLINK_OK, &b"hi alice"[..]));
        assert_eq!(
            hwlink_member_try_recv_from(ma, b.as_ptr(), buf.as_mut_ptr().cast(), 16, &mut len),
            HWLINK_EMPTY
        );
        let s = hwlink_member_try_recv_any(
            mb,
            from.as_mut_ptr(),
            4,
            buf.as_mut_ptr().cast(),
            16,
            &mut len,
        );
        assert_eq!(s, HWLINK_INVALID_ARGUMENT);
        hwlink_member_leave(ma);
        hwlink_member_leave(mb);
    }
}

#[test]
fn a_receiver_descriptor_reads_ready_after_a_send() {
    let p = Pair::new();
    let mut fd: c_int = -1;
    // SAFETY: live handles; `fd` is ours.
    unsafe {
        match hwlink_receiver_fd(p.1, &mut fd) {
            HWLINK_OK => {}
            HWLINK_UNSUPPORTED => return, // an old kernel, or io_uring off
            other => panic!("hwlink_receiver_fd: {other:?}: {}", last_error()),
        }
        let mut buf = [0u8; 8];
        assert_eq!(
            hwlink_try_recv(p.1, buf.as_mut_ptr().cast(), 8, null_mut()),
            HWLINK_EMPTY
        );
        assert_eq!(hwlink_send(p.0, b"ring".as_ptr().cast(), 4), HWLINK_OK);
        let mut pfd = libc_pollfd {
            fd,
            events: 1,
            revents: 0,
        };
        assert_eq!(
            poll(&mut pfd, 1, 5000),
            1,
            "the descriptor did not read ready"
        );
        assert_eq!(
            hwlink_try_recv(p.1, buf.as_mut_ptr().cast(), 8, null_mut()),
            HWLINK_OK
        );
    }
}

#[repr(C)]
struct libc_pollfd {
    fd: c_int,
    events: i16,
    revents: i16,
}

extern "C" {
    fn poll(fds: *mut libc_pollfd, n: u64, timeout: c_int) -> c_int;
}

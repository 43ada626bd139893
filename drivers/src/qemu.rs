//! Tests under qemu-user (the aarch64 CI step, `ci/aarch64.sh`, runs the
//! test suite in `qemu-aarch64` and sets `HWLINK_UNDER_QEMU=1`). A few tests
//! need what qemu-user does not emulate (io_uring, robust futexes, some
//! socket calls); they skip themselves there, and only there, saying which
//! and why. Not part of the library's API.

// One system call, to probe for io_uring.
#![allow(unsafe_code)]

use std::io::Write;

/// Whether the tests run under qemu-user: `HWLINK_UNDER_QEMU=1`.
pub fn under_qemu() -> bool {
    std::env::var_os("HWLINK_UNDER_QEMU").is_some_and(|v| v == "1")
}

/// Under qemu-user, reports `test` as skipped for `reason` and returns true
/// (the caller returns at once); elsewhere returns false and the test runs.
/// The line `SKIPPED under qemu-user: <test>: <reason>` goes to stderr and
/// is appended to the file `HWLINK_QEMU_SKIP_LOG` names, if set, so that
/// the CI step can list every skip (the test harness hides the output of
/// tests that pass).
pub fn skip_under_qemu(test: &str, reason: &str) -> bool {
    if !under_qemu() {
        return false;
    }
    let line = format!("SKIPPED under qemu-user: {test}: {reason}");
    eprintln!("{line}");
    if let Some(path) = std::env::var_os("HWLINK_QEMU_SKIP_LOG") {
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            let _ = writeln!(f, "{line}");
        }
    }
    true
}

/// Under qemu-user without io_uring (`io_uring_setup` fails with ENOSYS:
/// qemu-user 7.2 does not emulate it): reports `test` as skipped and
/// returns true. Tests of `as_fd()` and the tokio front end, which wait on
/// an io_uring, call it first. Elsewhere, or where io_uring works, false.
pub fn skip_without_io_uring(test: &str) -> bool {
    under_qemu()
        && !io_uring_works()
        && skip_under_qemu(
            test,
            "no io_uring under qemu-user (io_uring_setup: ENOSYS); as_fd() and the tokio \
             front end wait on one",
        )
}

/// Whether `io_uring_setup` succeeds (the ring is closed at once).
fn io_uring_works() -> bool {
    // struct io_uring_params: 120 bytes, zeroed asks for nothing special.
    let mut params = [0u64; 15];
    // SAFETY: io_uring_setup writes only into `params`, a buffer of the
    // kernel's struct size; the descriptor it returns is closed below.
    let fd = unsafe { libc::syscall(libc::SYS_io_uring_setup, 1u32, params.as_mut_ptr()) };
    if fd < 0 {
        return false;
    }
    // SAFETY: our own new descriptor.
    unsafe { libc::close(fd as libc::c_int) };
    true
}

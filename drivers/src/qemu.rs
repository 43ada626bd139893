//! Tests under qemu-user (the aarch64 CI step, `ci/aarch64.sh`, runs the
//! test suite in `qemu-aarch64` and sets `HWLINK_UNDER_QEMU=1`). A few tests
//! need what qemu-user does not emulate (io_uring, robust futexes, some
//! socket calls); they skip themselves there, and only there, saying which
//! and why. Not part of the library's API.

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

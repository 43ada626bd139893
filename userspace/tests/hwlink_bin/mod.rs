//! Where the `hwlink` command-line binary is, for the library's process
//! tests that also run it (`hwlink ls`, `hwlink rm --stale`). It is built by
//! the `hwlink-cli` package into the same target directory as these tests:
//! `cargo nextest run --workspace` (what ci/test.sh runs) builds it in the
//! same invocation, so it is never older than the library under test there.

use std::path::PathBuf;

/// The path of `target/<profile>/hwlink` next to this test's `deps/`.
pub fn path() -> PathBuf {
    let exe = std::env::current_exe().expect("cannot find this test's executable");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("a test executable lives in target/<profile>/deps");
    let bin = profile_dir.join("hwlink");
    assert!(
        bin.is_file(),
        "{} does not exist: build the command-line tool with the same profile first \
         (`cargo build -p hwlink-cli`, or run the whole workspace: `cargo nextest run --workspace`)",
        bin.display()
    );
    bin
}

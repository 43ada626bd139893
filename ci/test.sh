#!/usr/bin/env bash
# The whole test suite, as README.md's test command and .ci/run run it:
# hugepage setup, the ABI bindings drift check, every crate's tests with real
# processes (nextest, or cargo test where nextest is missing), the C API (its
# header drift check, C and C++ programs against Rust peers), doctests, the
# loom models and Miri on the ring logic, a bounded run of the hostile-peer
# fuzzer and of the kill -9 sweep, the guest tests: a real Linux kernel
# under QEMU sharing ivshmem memory with host processes, and the aarch64
# cross-build with its tests under qemu-user.
set -euo pipefail
cd "$(dirname "$0")/.."

# Step times are printed at the end (also when a step fails), so a slow or
# failing CI run shows where its time went.
last_step="" last_start=$SECONDS
timings=()
step() {
  [ -n "$last_step" ] && timings+=("$(printf '%5d s  %s' $((SECONDS - last_start)) "$last_step")")
  last_step="$*" last_start=$SECONDS
  printf '\n==> %s\n' "$*"
}
report_timings() {
  [ -n "$last_step" ] && timings+=("$(printf '%5d s  %s' $((SECONDS - last_start)) "$last_step")")
  printf '\nstep times:\n'
  printf '%s\n' "${timings[@]}"
  echo "total: $SECONDS s"
}
trap report_timings EXIT

step "hugepages"
ci/setup-hugepages.sh

step "ABI bindings are generated from hw/include/hwlink_abi.h"
ci/check-bindings.sh

step "tests (real processes, real hugepages where reserved)"
if cargo nextest --version >/dev/null 2>&1; then
  # nextest fails when no test runs at all, so an empty suite is caught.
  # The async front end (feature `tokio`) and serialized messages (feature
  # `serde`), both off by default, are tested too.
  cargo nextest run --workspace --features hwlink/tokio,hwlink/serde --no-fail-fast
else
  echo "cargo-nextest not found: using cargo test"
  cargo test --workspace --features hwlink/tokio,hwlink/serde --no-fail-fast -- --test-threads=1
fi

step "examples run (small counts; each checks every message)"
# Built with the tests step's features and profile, so that nothing built
# there is built again; then run from the target directory.
cargo build -q --profile test --workspace --examples --features hwlink/tokio,hwlink/serde
examples_dir="${CARGO_TARGET_DIR:-target}/debug/examples"
[ -d "$examples_dir" ] || examples_dir="${CARGO_TARGET_DIR:-target}/test/examples"
"$examples_dir/pipeline" --count 20000 --paced 2000
"$examples_dir/workers" --jobs 20000
"$examples_dir/rpc" --calls 20000
"$examples_dir/fanout" --frames 5000
"$examples_dir/async_gateway" --self-test 2000

step "C API: header drift, libhwlink, C/C++ examples, C test vs Rust peer, valgrind"
# ci/capi.sh says what each part checks; the C test moves 1,000,000 checked
# messages each way over a link and a mailbox, then SIGKILLs its peer.
ci/capi.sh test

step "doctests"
cargo test --workspace --features hwlink/tokio,hwlink/serde --doc

step "loom models and Miri on the ring logic, side by side"
# Both are pure computation with nothing timed, so they share the two
# cores: the longest loom model (topic_overwrite_race, about two minutes)
# holds one core alone while Miri, single-threaded, takes the other. Run
# one after the other they took 173 s + 133 s of a 1338 s CI run. Loom's
# output is printed whole after Miri's.
loom_log=$(mktemp)
ci/loom.sh >"$loom_log" 2>&1 &
loom_pid=$!
miri_rc=0
ci/miri.sh || miri_rc=$?
loom_rc=0
wait "$loom_pid" || loom_rc=$?
printf '\n--- loom models (ci/loom.sh), exit %d:\n' "$loom_rc"
cat "$loom_log"
rm -f "$loom_log"
if [ "$miri_rc" -ne 0 ] || [ "$loom_rc" -ne 0 ]; then
  echo "FAILED: miri exit $miri_rc, loom exit $loom_rc"
  exit 1
fi

step "hostile-peer fuzzer, bounded (ci/fuzz.sh --minutes N runs longer)"
ci/fuzz.sh --seconds 30

step "kill -9 sweep, bounded (ci/sweep.sh --trials N runs more)"
ci/sweep.sh --trials 40

step "guest tests: a real kernel in QEMU, host <-> guest over ivshmem (ci/guest)"
# Prints SKIPPED with the reason when it cannot run here (not root, no
# Debian packages); a failing guest test fails the suite.
ci/guest/run-tests.sh

step "aarch64: cross-built, unit and process tests and examples under qemu-user (ci/aarch64.sh)"
# Installs what it needs when root, else prints SKIPPED with the reason;
# its last line is the summary (passed, skipped under qemu and why, left
# out, failed).
ci/aarch64.sh

step "all test steps passed"

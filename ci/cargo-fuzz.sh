#!/usr/bin/env bash
# libFuzzer (cargo-fuzz) over the open/validate path of every shared-memory
# object kind, from arbitrary bytes (fuzz/): `link` (an SPSC link region),
# `mailbox` (bounded, unbounded with two segments, zero capacity),
# `domain` (a domain directory, joined), `ls` (every kind a region header
# can name, as `hwlink ls` and `rm --stale` read it, plus a process
# liveness file). The seed corpus is made by the library itself
# (fuzz/src/make_seeds.rs). A crash, a hang (-timeout) or a leak fails.
#
#   ci/cargo-fuzz.sh [--seconds N] [target ...]   N seconds each (default 60)
#
# Needs the nightly toolchain and `cargo install cargo-fuzz`; says SKIPPED
# otherwise. Not part of ci/test.sh (its hostile-peer fuzzer covers the
# same objects between live processes); run it before changing a layout.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=60
if [ "${1:-}" = "--seconds" ]; then
  seconds=$2
  shift 2
fi
targets=("$@")
[ "${#targets[@]}" -gt 0 ] || targets=(link mailbox domain ls)
if ! cargo +nightly --version >/dev/null 2>&1; then
  echo "SKIPPED: cargo-fuzz needs the nightly toolchain (rustup toolchain install nightly)"
  exit 0
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  echo "SKIPPED: cargo-fuzz is not installed (cargo install cargo-fuzz)"
  exit 0
fi
cargo +nightly run -q --release --manifest-path fuzz/Cargo.toml --bin make-seeds -- fuzz/corpus
# The liveness thread's robust-list head is the kernel's for the process's
# life: not a leak.
export LSAN_OPTIONS="suppressions=$PWD/fuzz/lsan.supp"
for t in "${targets[@]}"; do
  echo "==> cargo fuzz run $t for ${seconds}s"
  cargo +nightly fuzz run --fuzz-dir fuzz "$t" fuzz/corpus/"$t" -- \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=4096 -max_len=1048576 -print_final_stats=1
done

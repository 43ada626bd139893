#!/usr/bin/env bash
# Model-checks the concurrent algorithms with loom: the SPSC ring with its
# doorbells, the semaphore, the notify/sleep protocol, the MPMC ring's
# claims and seal, the unbounded chain's segment linking (hw/SPEC.md §8-11),
# the rendezvous hand-off and the topic ring (publish, the overwrite race, the
# join handshake).
set -euo pipefail
cd "$(dirname "$0")/.."
export RUSTFLAGS="--cfg loom"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}/loom"
export LOOM_MAX_PREEMPTIONS="${LOOM_MAX_PREEMPTIONS:-3}"
# Optimised like a release build, but without LTO and with parallel
# codegen (profile `loom`): the models run as fast, and build in half the
# time. nextest runs two models at a time (the longest take one to two
# minutes each); cargo test runs them one after another.
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run -p hwlink --lib --cargo-profile loom loom
else
  cargo test -p hwlink --lib --profile loom loom
fi

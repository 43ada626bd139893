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
cargo test -p hwlink --lib --release loom

#!/usr/bin/env bash
# Builds hwlink-chaos (userspace/chaos) with the `chaos` profile (optimised,
# overflow checks and debug assertions on, so an unchecked arithmetic on a
# shared value panics) and runs one of its commands: what ci/fuzz.sh and
# ci/sweep.sh share.
#
#   ci/chaos.sh fuzz|sweep DEFAULT-ARGS -- [ARGS...]   ARGS, or the defaults
set -euo pipefail
cd "$(dirname "$0")/.."
cmd="$1"
shift
defaults=()
while [ "$#" -gt 0 ] && [ "$1" != "--" ]; do
  defaults+=("$1")
  shift
done
[ "$#" -gt 0 ] && shift
if [ "$#" -eq 0 ]; then
  set -- "${defaults[@]}"
fi
cargo build -q --profile chaos -p hwlink-chaos
exec "${CARGO_TARGET_DIR:-target}/chaos/hwlink-chaos" "$cmd" "$@"

#!/usr/bin/env bash
# The hostile-peer fuzzer (userspace/chaos; what it checks: hw/SPEC.md §8.7): victim
# processes use the public API in a private region directory while an
# attacker process writes adversarial values into every shared word of their
# regions and truncates and extends their files. Fails on a signal, a panic,
# a call past its own deadline by more than 2 s, a hang, memory over the
# limit, or wrong data no detected corruption explains; each failure prints
# the command that replays it.
#
#   ci/fuzz.sh --minutes N            run for N minutes (default 1)
#   ci/fuzz.sh --seconds N --seed S   any `hwlink-chaos fuzz` options
#
# Built with the `chaos` profile (ci/chaos.sh).
exec "$(dirname "$0")/chaos.sh" fuzz --minutes 1 -- "$@"

#!/usr/bin/env bash
# The kill -9 sweep (userspace/chaos): a sender, a receiver or a domain
# member SIGKILLed at a random point (in the middle of 1 MiB copies and
# zero-copy loans too) across links, mailboxes (bounded, unbounded, zero),
# domain links and rendezvous, and topics (a publisher or one of two
# subscribers; Block and Overwrite). Fails if a message whose send returned
# Ok is lost or delivered twice, out of order per sender (a topic's
# subscriber: unless counted in a Lagged), or if the survivor does not learn
# of the death; prints the detection latency per wait strategy.
#
#   ci/sweep.sh --trials N            N trials (default 100)
#   ci/sweep.sh --trials N --seed S   any `hwlink-chaos sweep` options
exec "$(dirname "$0")/chaos.sh" sweep --trials 100 -- "$@"

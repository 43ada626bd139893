//! hwlink-benches: the cross-process comparison of hwlink against kernel IPC
//! (`hwlink bench`, `hwlink pingpong`, `hwlink remote-pingpong`, the
//! `exchange` check) and the criterion micro-benchmarks (`benches/`). It
//! lives outside the `hwlink` library so that users' builds do not pull the
//! harness's dependencies (io-uring, plotters, crossbeam-queue).
//!
//! Criterion bench targets:
//!
//! - `roundtrip`: round trips of an 8-byte message between two real
//!   processes (this bench binary and a re-executed copy of it), through
//!   [`pingpong::Session`]. Group `rtt_two_cores` (CPUs 0 and 1):
//!   `floor` (two busy-polled cache lines, the physical floor),
//!   `hwlink_poll` (busy-poll), `hwlink_park` (park on the doorbell at once)
//!   and `pipe`. Group `rtt_one_core` (both on CPU 0): `hwlink_default`
//!   (spin-then-park, which yields instead of spinning on a shared core) and
//!   `pipe`. Each benchmark keeps one peer process for all its samples. A
//!   summary of the ratios measured in the same run follows:
//!   `hwlink_poll / floor`, `pipe / hwlink_poll`, `hwlink_park / pipe` and,
//!   on one core, `hwlink_default / pipe`. Needs two CPUs.
//! - `ring`: in-process costs of one link with both ends on one thread:
//!   `push_pop_8B` (`try_send` + `try_recv_with`), `push_pop_batch_32x8B`
//!   (`write_batch` of 32 + `read_batch` + `release`) and
//!   `reserve_commit_64B` (`reserve`, write, `commit`, then `peek` +
//!   `release`), all with the default wait strategy; `push_pop_8B_busy_poll`
//!   with both ends busy-polling (no doorbell fence on publish or release);
//!   and, for comparison, push + pop of 8 bytes through `crossbeam-queue`'s
//!   `ArrayQueue` and through `rtrb`.
//!
//! Run them with
//!
//! ```text
//! cargo bench -p hwlink-benches --bench roundtrip
//! cargo bench -p hwlink-benches --bench ring
//! # shorter, while developing
//! cargo bench -p hwlink-benches --bench roundtrip -- --warm-up-time 1 --measurement-time 3
//! # each benchmark once, as a test
//! cargo test -p hwlink-benches --benches
//! ```
//!
//! Links use the `auto` backend (2 MiB hugepages when free, else `/dev/shm`).

// The harness measures std atomics on its own (the floor's flags, thread
// counters); the loom-switchable shim is the library's business.
#![allow(clippy::disallowed_types)]

pub mod affinity;
pub mod bench;
pub mod exchange;
pub mod pingpong;
pub mod remote_pingpong;

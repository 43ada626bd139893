//! Wait strategies: how an end waits when its ring is empty (receiver) or
//! full (sender), and the adaptive spin policy behind spin-then-park.

use crate::doorbell::{Doorbell, Slept};
use std::fmt;
use std::str::FromStr;
use std::time::{Duration, Instant};

/// How an end waits for its peer, chosen per end.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum WaitStrategy {
    /// Busy-poll the ring and never sleep: the lowest latency, one core
    /// burnt per waiting end. The peer skips the wake-up check entirely.
    /// When both ends are pinned to the same single CPU it yields the CPU
    /// between polls (still without sleeping), so the peer can run.
    BusyPoll,
    /// Spin for a short, adaptive while, then sleep on the doorbell. When
    /// both ends share one CPU it does not spin (that would only burn the
    /// peer's time slice): it yields to the peer, then sleeps.
    #[default]
    SpinPark,
    /// Sleep on the doorbell at once.
    Park,
}

impl fmt::Display for WaitStrategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            WaitStrategy::BusyPoll => "poll",
            WaitStrategy::SpinPark => "spin-park",
            WaitStrategy::Park => "park",
        })
    }
}

impl FromStr for WaitStrategy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "poll" | "busy-poll" => Ok(WaitStrategy::BusyPoll),
            "spin-park" | "spin" => Ok(WaitStrategy::SpinPark),
            "park" => Ok(WaitStrategy::Park),
            other => Err(format!(
                "unknown wait strategy `{other}`: use poll, spin-park or park"
            )),
        }
    }
}

/// Longest spin before parking: a little more than one cross-core wake-up
/// on the machines we measured (40 µs). Spinning that long is the classic
/// two-competitive bound, and it matters for ping-pong traffic: an end that
/// has just woken its sleeping peer must keep spinning through the peer's
/// wake-up, or both ends fall into sleeping on every message.
const MAX_SPIN: Duration = Duration::from_micros(60);
/// Shortest spin the adaptation may shrink to: still one wake-up's worth, so
/// a run of slow replies never drives both ends into sleeping for good.
const MIN_SPIN: Duration = Duration::from_micros(45);
/// Yields before parking when both ends share one CPU.
const SHARED_CORE_YIELDS: u32 = 2;

/// Per-end state of the spin-then-park policy.
#[derive(Debug, Clone)]
pub(crate) struct SpinPolicy {
    /// How long to spin before parking now.
    budget: Duration,
    /// Both ends may only run on the same single CPU.
    shared_core: bool,
}

/// What to do before parking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Prelude {
    /// Spin for this long.
    Spin(Duration),
    /// Yield the CPU this many times (shared core).
    Yield(u32),
    /// Park at once.
    None,
}

impl SpinPolicy {
    pub(crate) fn new() -> Self {
        SpinPolicy {
            budget: MAX_SPIN,
            shared_core: crate::liveness::online_cpus() == 1,
        }
    }

    /// Re-decides whether the two ends share one CPU, from their CPU masks.
    pub(crate) fn set_masks(&mut self, mine: u64, peer: u64) {
        self.shared_core =
            crate::liveness::online_cpus() == 1 || (mine.count_ones() == 1 && mine == peer);
    }

    pub(crate) fn shared_core(&self) -> bool {
        self.shared_core
    }

    /// What spin-then-park does before parking.
    pub(crate) fn prelude(&self, strategy: WaitStrategy) -> Prelude {
        match strategy {
            WaitStrategy::Park => Prelude::None,
            WaitStrategy::BusyPoll => Prelude::Spin(Duration::MAX),
            WaitStrategy::SpinPark if self.shared_core => Prelude::Yield(SHARED_CORE_YIELDS),
            WaitStrategy::SpinPark => Prelude::Spin(self.budget),
        }
    }

    /// Feedback: the spin succeeded (grow the budget back) or had to park
    /// (shrink it, so a peer that is usually slow costs less CPU).
    pub(crate) fn record(&mut self, spin_succeeded: bool) {
        self.budget = if spin_succeeded {
            (self.budget * 2).min(MAX_SPIN)
        } else {
            (self.budget / 2).max(MIN_SPIN)
        };
    }
}

/// The deadline `timeout` from now; None (no deadline) for a timeout too
/// long to add to the clock (such as `Duration::MAX`).
pub(crate) fn deadline_after(timeout: Duration) -> Option<Instant> {
    Instant::now().checked_add(timeout)
}

/// `now + d`, or `now` if that does not fit the clock.
pub(crate) fn later(now: Instant, d: Duration) -> Instant {
    now.checked_add(d).unwrap_or(now)
}

/// How long a queue's spin-then-park end spins before it sleeps.
const QUEUE_SPIN: Duration = Duration::from_micros(50);
/// Longest sleep of a queue's waiting end before it looks again on its own
/// (a lost or stale wake-up costs at most this).
const QUEUE_SLEEP_SLICE: Duration = Duration::from_millis(50);
/// Rounds in a row a waiter was told "ready" and then found nothing, after
/// which an end that may sleep naps between looks.
const FRUITLESS_BEFORE_NAPS: u32 = 8;
/// The nap.
const NAP: Duration = Duration::from_millis(1);

/// Waits per `strategy` until `ready()` or `deadline` (then false; `ready`
/// is looked at on every path first). Busy-poll spins (yielding between
/// polls when `pinned`, since the peer may share the CPU); spin-then-park
/// spins a while, then sleeps on `bell`; park sleeps at once. Sleeps come
/// in slices and re-check `ready` after every wake-up, so a post may be a
/// hint. `fruitless` counts the caller's rounds in a row that waited and
/// then made no progress (another process was quicker, or a hostile one
/// keeps changing the words `ready` reads): past a few, an end that may
/// sleep naps between looks instead of spinning. `peer`: a peer's liveness
/// word; a sleep also ends when the kernel marks that peer's death.
pub(crate) fn wait_until(
    bell: &Doorbell,
    strategy: WaitStrategy,
    pinned: bool,
    deadline: Option<Instant>,
    fruitless: u32,
    peer: Option<&crate::sync::AtomicU32>,
    mut ready: impl FnMut() -> bool,
) -> bool {
    let start = Instant::now();
    // Callers try before they wait: past the deadline, a `ready` that
    // keeps saying yes (a count or turn a peer wrote, while the slot says
    // no) must not keep the caller trying.
    if deadline.is_some_and(|d| start >= d) {
        return false;
    }
    if fruitless >= FRUITLESS_BEFORE_NAPS && strategy != WaitStrategy::BusyPoll {
        let nap = deadline.map_or(NAP, |d| d.saturating_duration_since(start).min(NAP));
        std::thread::sleep(nap);
        return ready() || deadline.map_or(true, |d| Instant::now() < d);
    }
    let spin_until = match strategy {
        WaitStrategy::BusyPoll => deadline,
        WaitStrategy::SpinPark => Some(start + QUEUE_SPIN),
        WaitStrategy::Park => Some(start),
    };
    let backoff = crossbeam_utils::Backoff::new();
    let mut polls = 0u32;
    loop {
        if ready() {
            return true;
        }
        if strategy == WaitStrategy::Park {
            break;
        }
        polls = polls.wrapping_add(1);
        if polls % 64 == 0 {
            let now = Instant::now();
            if deadline.is_some_and(|d| now >= d) {
                return false;
            }
            if strategy != WaitStrategy::BusyPoll && spin_until.is_some_and(|s| now >= s) {
                break;
            }
        }
        if pinned {
            // A peer pinned to our CPU cannot run while we spin.
            std::thread::yield_now();
        } else {
            // Spin, then yield between polls: with more processes than
            // CPUs, the one that must move next may be waiting for ours.
            backoff.snooze();
        }
    }
    let slept: Result<_, ()> = bell.sleep_until_or_death(
        |_| Ok(ready().then_some(())),
        deadline,
        Some(QUEUE_SLEEP_SLICE),
        peer,
    );
    matches!(slept, Ok(Slept::Ready(())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_print_round_trip() {
        for s in [
            WaitStrategy::BusyPoll,
            WaitStrategy::SpinPark,
            WaitStrategy::Park,
        ] {
            assert_eq!(s.to_string().parse::<WaitStrategy>().unwrap(), s);
        }
        assert!("fast".parse::<WaitStrategy>().is_err());
    }

    #[test]
    fn shared_core_yields_instead_of_spinning() {
        let mut p = SpinPolicy::new();
        p.set_masks(0b1, 0b1);
        assert!(p.shared_core());
        assert_eq!(
            p.prelude(WaitStrategy::SpinPark),
            Prelude::Yield(SHARED_CORE_YIELDS)
        );
        p.set_masks(0b1, 0b10);
        if crate::liveness::online_cpus() > 1 {
            assert!(!p.shared_core());
            assert_eq!(p.prelude(WaitStrategy::SpinPark), Prelude::Spin(MAX_SPIN));
        }
    }

    #[test]
    fn budget_adapts_within_bounds() {
        let mut p = SpinPolicy::new();
        for _ in 0..20 {
            p.record(false);
        }
        assert_eq!(p.budget, MIN_SPIN);
        for _ in 0..20 {
            p.record(true);
        }
        assert_eq!(p.budget, MAX_SPIN);
    }
}

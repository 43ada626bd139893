//! Waiting: the wait strategies, the adaptive spin policy behind
//! spin-then-park, and the one wait engine ([`Wait`]) through which every
//! end of every flavour waits (hw/SPEC.md §8.9).

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
/// Yields before parking when both ends share one CPU. One: each yield
/// may hand the CPU to an unrelated process for a whole time slice, so a
/// stage whose input is not there after one yield parks and is woken by
/// its sender (four stages on one CPU, `hwlink bench --workloads pipeline
/// --cpus 0,0`, beside a niced build: end to end p50 5.7 µs with one
/// yield, 10.5 µs with two; on an idle machine 5.5-5.9 µs either way).
const SHARED_CORE_YIELDS: u32 = 1;

/// Per-end state of the spin-then-park policy.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SpinPolicy {
    /// How long to spin before parking now.
    budget: Duration,
    /// Both ends may only run on the same single CPU.
    shared_core: bool,
    /// This thread may run on one CPU only, and the peers it waits for are
    /// unknown (a mailbox's): one of them may share that CPU, so the wait
    /// polls only briefly before it yields between polls.
    pinned_alone: bool,
    /// The peer may never run on a CPU this thread may run on (disjoint
    /// affinity masks): it cannot be waiting for this CPU, so a busy-poll
    /// never yields it (no system call while polling).
    apart: bool,
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
            pinned_alone: false,
            apart: false,
        }
    }

    /// For an end whose peers' CPUs are unknown (a mailbox, a rendezvous):
    /// if this thread is pinned to one CPU, a peer may share it.
    pub(crate) fn for_unknown_peers() -> Self {
        SpinPolicy {
            pinned_alone: crate::liveness::cpu_mask().count_ones() == 1,
            ..SpinPolicy::new()
        }
    }

    /// For a wait whose peers' CPUs are known (a select over link ends):
    /// `shared` says whether any of them shares this end's only CPU.
    pub(crate) fn for_known_peers(shared: bool) -> Self {
        let mut p = SpinPolicy::new();
        p.shared_core |= shared;
        p
    }

    /// Re-decides whether the two ends share one CPU, from their CPU masks.
    pub(crate) fn set_masks(&mut self, mine: u64, peer: u64) {
        self.shared_core =
            crate::liveness::online_cpus() == 1 || (mine.count_ones() == 1 && mine == peer);
        // A mask of 0 is unknown (CPUs past 63, or a peer that did not say).
        self.apart = mine != 0 && peer != 0 && mine & peer == 0;
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

/// How long a call may wait, kept unresolved until it does wait: a
/// timeout becomes a deadline ([`deadline_after`]) only then, so that a
/// call that completes at once never reads the clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Until {
    /// No deadline.
    Forever,
    /// Until this instant.
    At(Instant),
    /// For this long from when the wait begins.
    After(Duration),
}

impl Until {
    /// The deadline, resolved now.
    pub(crate) fn deadline(self) -> Option<Instant> {
        match self {
            Until::Forever => None,
            Until::At(d) => Some(d),
            Until::After(t) => deadline_after(t),
        }
    }
}

/// `now + d`, or `now` if that does not fit the clock.
pub(crate) fn later(now: Instant, d: Duration) -> Instant {
    now.checked_add(d).unwrap_or(now)
}

/// Longest sleep between two slow checks (a peer's process, a directory):
/// a lost or stale wake-up costs at most this.
pub(crate) const SLEEP_SLICE: Duration = Duration::from_millis(20);
/// Shortest sleep slice when a deadline is near (or past, for a caller
/// still committed to finishing a hand-off).
const MIN_SLICE: Duration = Duration::from_micros(200);
/// How long spin-then-park spins before it also yields between polls: a
/// reply not there by then waits on another process, which may need this
/// CPU (more processes than CPUs, as in a pipeline). When nothing else is
/// runnable a yield returns at once.
const YIELD_AFTER: Duration = Duration::from_micros(1);
/// Polls before a wait first looks at the clock or the peer.
const FAST_SPINS: u32 = 256;
/// The same for an end pinned to one CPU with peers it does not know.
const PINNED_FAST_SPINS: u32 = 16;
/// Busy-poll polls between two clock looks; a busy-polling end also yields
/// once after each such run (tens of microseconds without a message).
const POLL_CHECK_EVERY: u32 = 1 << 10;
/// The same for spin-then-park, which looks at the clock more often.
const SPIN_CHECK_EVERY: u32 = 1 << 6;
/// The same between yields: a yield is a system call.
const YIELD_CHECK_EVERY: u32 = 4;
/// Rounds in a row a waiter was told "ready" and then found nothing, after
/// which an end that may sleep naps between looks.
const FRUITLESS_BEFORE_NAPS: u32 = 8;
/// The nap.
const NAP: Duration = Duration::from_millis(1);

/// A caller's own check that the party it waits for is still there (a
/// domain's directory entry for a peer that never attached), made on slow
/// looks only: false ends the wait as if that party had closed.
pub(crate) type Alive<'a> = &'a mut dyn FnMut() -> bool;

/// The [`Alive`] check of a caller with nothing to add.
pub(crate) fn always() -> bool {
    true
}

/// How long one operation may wait, in the one shape every flavour's
/// send and receive take: not at all (`block` false: the `try_` forms),
/// or until `deadline` (none: for ever), while `alive` says the other
/// side is there.
pub(crate) struct Patience<'a> {
    pub(crate) deadline: Option<Instant>,
    pub(crate) block: bool,
    /// None: nothing to check beyond the end's own peer.
    pub(crate) alive: Option<Alive<'a>>,
}

impl<'a> Patience<'a> {
    /// With no check of the caller's own.
    pub(crate) fn new(deadline: Option<Instant>, block: bool) -> Self {
        Patience {
            deadline,
            block,
            alive: None,
        }
    }

    /// With the caller's own `alive` check on slow looks.
    pub(crate) fn with(deadline: Option<Instant>, block: bool, alive: Alive<'a>) -> Self {
        Patience {
            deadline,
            block,
            alive: Some(alive),
        }
    }
}

/// How much one look at the awaited condition checks, cheapest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Tick {
    /// A hot poll while spinning: the condition only (loads, no clock).
    Poll,
    /// Every few dozen polls and after every wake-up: also the deadline
    /// and cheap state words.
    Clock,
    /// Once per slice, and once before parking: also the slow checks (a
    /// peer's process, a directory; possibly a system call).
    Slice,
}

/// Whether `deadline` has passed.
pub(crate) fn past(deadline: Option<Instant>) -> bool {
    deadline.is_some_and(|d| Instant::now() >= d)
}

/// One wait: where to sleep and until when, besides the condition.
#[derive(Debug)]
pub(crate) struct Wait<'a> {
    /// The doorbell (`one`) or doorbells the other side posts.
    one: Option<&'a Doorbell>,
    bells: &'a [&'a Doorbell],
    strategy: WaitStrategy,
    deadline: Option<Instant>,
    slice: Duration,
    death: Option<&'a crate::sync::AtomicU32>,
    deaths: &'a [&'a crate::sync::AtomicU32],
    fruitless: u32,
}

impl<'a> Wait<'a> {
    /// Waits per `strategy` on `bell` (the doorbell the other side posts
    /// after it publishes), sleeping past `deadline` only while the
    /// condition's step says it is not done (a committed hand-off).
    pub(crate) fn new(
        bell: &'a Doorbell,
        strategy: WaitStrategy,
        deadline: Option<Instant>,
    ) -> Self {
        Wait {
            one: Some(bell),
            ..Wait::any(&[], strategy, deadline)
        }
    }
    /// Waits on every doorbell of `bells` at once (a select): parked, a
    /// post on any of them wakes the waiter.
    pub(crate) fn any(
        bells: &'a [&'a Doorbell],
        strategy: WaitStrategy,
        deadline: Option<Instant>,
    ) -> Self {
        Wait {
            one: None,
            bells,
            strategy,
            deadline,
            slice: SLEEP_SLICE,
            death: None,
            deaths: &[],
            fruitless: 0,
        }
    }
    /// The time between slow checks ([`Tick::Slice`]) and the longest
    /// sleep (default [`SLEEP_SLICE`]).
    pub(crate) fn slice(mut self, slice: Duration) -> Self {
        self.slice = slice;
        self
    }
    /// A peer's liveness word: a sleep also ends when the kernel marks
    /// that peer's death in it.
    pub(crate) fn death(mut self, word: Option<&'a crate::sync::AtomicU32>) -> Self {
        self.death = word;
        self
    }
    /// Several peers' liveness words (a select): a sleep also ends when the
    /// kernel marks any of them dead.
    pub(crate) fn deaths(mut self, words: &'a [&'a crate::sync::AtomicU32]) -> Self {
        self.deaths = words;
        self
    }
    /// Rounds in a row the caller waited, was told ready and then claimed
    /// nothing (another process was quicker, or a hostile one keeps
    /// changing the words the condition reads): past a few, an end that
    /// may sleep naps once before it looks again, instead of spinning.
    pub(crate) fn fruitless(mut self, rounds: u32) -> Self {
        self.fruitless = rounds;
        self
    }

    /// The wait engine: every waiting end of every flavour comes here.
    ///
    /// Looks at `step` until it yields a value: first once ([`Tick::Clock`]);
    /// then, per the strategy and `policy`, spins (busy-poll never stops;
    /// spin-then-park spins for the adaptive budget and yields between
    /// polls after [`YIELD_AFTER`]; on a shared core it yields instead),
    /// then registers as a sleeper on the doorbell, re-checks and parks, in
    /// slices, waking also on the peer's death. `step` decides everything
    /// else, the deadline included (see [`Wait::until`] for the common
    /// case): the engine only keeps its sleeps within the deadline.
    #[inline]
    pub(crate) fn run<T, X>(
        self,
        policy: &mut SpinPolicy,
        mut step: impl FnMut(Tick, &mut SpinPolicy) -> Result<Option<T>, X>,
    ) -> Result<T, X> {
        let prelude = policy.prelude(self.strategy);
        if matches!(prelude, Prelude::Spin(_)) && !policy.shared_core() {
            // Fast path: a few polls with nothing else on the way (no
            // clock, no peer check): a polling peer's reply usually lands
            // here. Pinned alone, only a few: a peer on this CPU cannot
            // answer until this thread yields.
            let fast = if policy.pinned_alone {
                PINNED_FAST_SPINS
            } else {
                FAST_SPINS
            };
            for _ in 0..fast {
                if let Some(v) = step(Tick::Poll, policy)? {
                    return Ok(v);
                }
                crate::sync::spin_loop();
            }
        }
        if let Some(v) = step(Tick::Clock, policy)? {
            return Ok(v);
        }
        let Wait {
            one,
            bells,
            strategy,
            deadline,
            slice,
            death,
            deaths,
            fruitless,
        } = self;
        let one_bell: [&Doorbell; 1];
        let bells = match one {
            Some(b) => {
                one_bell = [b];
                &one_bell[..]
            }
            None => bells,
        };
        let one_death: [&crate::sync::AtomicU32; 1];
        let deaths = match death {
            Some(d) => {
                one_death = [d];
                &one_death[..]
            }
            None => deaths,
        };
        if fruitless >= FRUITLESS_BEFORE_NAPS && strategy != WaitStrategy::BusyPoll {
            let nap = deadline.map_or(NAP, |d| {
                d.saturating_duration_since(Instant::now()).min(NAP)
            });
            std::thread::sleep(nap);
            if let Some(v) = step(Tick::Clock, policy)? {
                return Ok(v);
            }
        }
        let start = Instant::now();
        let mut last_slow = start;
        match prelude {
            Prelude::Spin(limit) => loop {
                // Busy-poll on a shared core still never sleeps, but it
                // yields between polls: spinning would hold the CPU the
                // peer needs until preempted.
                let yield_between = policy.shared_core()
                    || policy.pinned_alone
                    || (strategy == WaitStrategy::SpinPark && start.elapsed() >= YIELD_AFTER);
                let polls = if yield_between {
                    YIELD_CHECK_EVERY
                } else if strategy == WaitStrategy::SpinPark {
                    SPIN_CHECK_EVERY
                } else {
                    POLL_CHECK_EVERY
                };
                for _ in 0..polls {
                    if let Some(v) = step(Tick::Poll, policy)? {
                        if strategy == WaitStrategy::SpinPark {
                            policy.record(true);
                        }
                        return Ok(v);
                    }
                    if yield_between {
                        std::thread::yield_now();
                    } else {
                        crate::sync::spin_loop();
                    }
                }
                if !yield_between && strategy == WaitStrategy::BusyPoll && !policy.apart {
                    // Lets a process waiting for this CPU run now and then:
                    // with more busy-polling processes than CPUs (a
                    // pipeline), the one this end waits for may be among
                    // them. Not when the peer can never run here (pinned
                    // apart): then polling makes no system call at all.
                    std::thread::yield_now();
                }
                let now = Instant::now();
                let tick = if now.duration_since(last_slow) >= slice {
                    last_slow = now;
                    Tick::Slice
                } else {
                    Tick::Clock
                };
                if let Some(v) = step(tick, policy)? {
                    return Ok(v);
                }
                if now.duration_since(start) >= limit {
                    policy.record(false);
                    break;
                }
            },
            Prelude::Yield(n) => {
                for _ in 0..n {
                    std::thread::yield_now();
                    if let Some(v) = step(Tick::Poll, policy)? {
                        return Ok(v);
                    }
                }
            }
            Prelude::None => {}
        }
        // One full look before parking: a dead party is found now, not a
        // slice later.
        last_slow = Instant::now();
        if let Some(v) = step(Tick::Slice, policy)? {
            return Ok(v);
        }
        loop {
            let now = Instant::now();
            let left = deadline.map(|d| d.saturating_duration_since(now));
            let this_slice = left.map_or(slice, |l| l.clamp(MIN_SLICE, slice.max(MIN_SLICE)));
            // The sleep ends at the deadline, not at the end of a slice
            // begun before it (`step` then sees the deadline passed); past
            // it (`step` still committed), in short slices.
            let until = deadline.filter(|&d| d > now);
            // Loom's futex model has no timeouts: sleep until woken.
            let (this_slice, until) = if cfg!(loom) {
                (None, None)
            } else {
                (Some(this_slice), until)
            };
            let slept = crate::doorbell::sleep_all(
                bells,
                |elapsed| {
                    let tick = if elapsed && last_slow.elapsed() >= slice {
                        last_slow = Instant::now();
                        Tick::Slice
                    } else {
                        Tick::Clock
                    };
                    step(tick, policy)
                },
                true,
                until,
                this_slice,
                deaths,
            )?;
            if let Slept::Ready(v) = slept {
                return Ok(v);
            }
            // The deadline passed: the next look (a clock tick) sees it.
        }
    }

    /// [`run`](Self::run) for a condition with no hand-off to finish:
    /// None once the deadline has passed (looked at on every tick but
    /// polls, before the condition's slow checks would run again).
    #[inline]
    pub(crate) fn until<T, X>(
        self,
        policy: &mut SpinPolicy,
        mut ready: impl FnMut(Tick, &mut SpinPolicy) -> Result<Option<T>, X>,
    ) -> Result<Option<T>, X> {
        let deadline = self.deadline;
        // Callers try before they wait: past the deadline, a condition that
        // keeps saying yes (a count a peer wrote, while the slot says no)
        // must not keep the caller trying.
        if past(deadline) {
            return Ok(None);
        }
        self.run(policy, |tick, policy| {
            if let Some(v) = ready(tick, policy)? {
                return Ok(Some(Some(v)));
            }
            Ok((tick != Tick::Poll && past(deadline)).then_some(None))
        })
    }
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

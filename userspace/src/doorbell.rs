//! Semaphore doorbell: a counting semaphore on a process-shared futex word,
//! with a waiter count so that `post` makes no system call when nobody sleeps.
//!
//! Layout: `struct hwl_doorbell` (hw/include/hwlink_abi.h). Protocol and
//! ordering edges (F0..F3): hw/SPEC.md, "Wake-up".
#![warn(clippy::arithmetic_side_effects)]

use crate::futex;
#[cfg(not(loom))]
use crate::shm::ShmView;
use crate::shm::ShmWord;
use crate::sync::{fence, AtomicU32, Ordering};
use hwlink_hw::HWL_PROCESS_OWNER_DIED;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How a doorbell puts a waiter to sleep and wakes it: by default the futex
/// on the count word; across kernels (host and VM) a hardware doorbell.
/// Either way the semaphore words and the protocol stay the same.
pub(crate) trait Wake: Send + Sync + std::fmt::Debug {
    /// Sleeps while `count` is 0, until woken or `timeout` passes (None:
    /// no limit). False when the timeout passed. May return early.
    fn sleep(&self, count: &AtomicU32, timeout: Option<Duration>) -> bool;
    /// Wakes the side that sleeps on this doorbell.
    fn wake(&self, count: &AtomicU32);
}

/// Tokens a sleeper takes in a row, with its condition still false, before
/// it treats the count as flooded.
const FLOOD_HINTS: u32 = 64;
/// How long a sleeper naps between looks while the count is flooded.
const FLOOD_NAP: Duration = Duration::from_millis(1);

/// A doorbell living in shared (or, for tests, heap) memory.
#[derive(Debug, Clone)]
pub(crate) struct Doorbell {
    count: ShmWord,
    waiters: ShmWord,
    /// None: the futex on `count`.
    wake: Option<Arc<dyn Wake>>,
}

/// How a sleep ended.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Slept<T> {
    /// The condition became true.
    Ready(T),
    /// The deadline passed first.
    TimedOut,
}

impl Doorbell {
    /// Builds a doorbell over two words (each keeps its memory alive).
    pub(crate) fn new(count: ShmWord, waiters: ShmWord) -> Self {
        Doorbell {
            count,
            waiters,
            wake: None,
        }
    }

    /// The doorbell whose count and waiters words are at these offsets of
    /// `view` (panics if either is outside it or misaligned).
    #[cfg(not(loom))]
    pub(crate) fn at(view: &ShmView, count: usize, waiters: usize) -> Self {
        Doorbell::new(ShmWord::at(view, count), ShmWord::at(view, waiters))
    }

    /// Sleeps and wakes through `wake` instead of the futex.
    pub(crate) fn set_wake(&mut self, wake: Arc<dyn Wake>) {
        self.wake = Some(wake);
    }

    pub(crate) fn count(&self) -> &AtomicU32 {
        self.count.get()
    }

    pub(crate) fn waiters(&self) -> &AtomicU32 {
        self.waiters.get()
    }

    /// The first half of a sleep whose second half is not this thread's
    /// futex wait (a pollable descriptor's request): registers as a
    /// waiter, takes pending tokens (up to `max_tokens`), reads the count
    /// and executes the sleeper's fence (F1/F3, called F4 there). A look
    /// at the awaited condition after this sees every post published
    /// before; a later post changes the count from the value returned.
    /// Undone by [`unregister`](Self::unregister).
    pub(crate) fn register_and_read(&self, max_tokens: u32) -> u32 {
        self.waiters().fetch_add(1, Ordering::Relaxed);
        let mut tokens = 0u32;
        while tokens < max_tokens && self.try_wait() {
            tokens = tokens.saturating_add(1);
        }
        let count = self.count().load(Ordering::Relaxed);
        fence(Ordering::SeqCst);
        count
    }

    /// Leaves the waiters registered by [`register_and_read`](Self::register_and_read).
    pub(crate) fn unregister(&self) {
        self.waiters().fetch_sub(1, Ordering::Relaxed);
    }

    /// Whether sleepers sleep on the futex of the count word (not on a
    /// device's doorbell register).
    pub(crate) fn is_futex(&self) -> bool {
        self.wake.is_none()
    }

    /// V: adds one token and wakes one sleeper, with no system call when
    /// nobody is registered as a waiter. Whether the kernel woke a sleeper
    /// of the futex (never known for a device's doorbell).
    pub(crate) fn post(&self) -> bool {
        self.count().fetch_add(1, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        if self.waiters().load(Ordering::Relaxed) > 0 {
            match &self.wake {
                None => return futex::wake(self.count(), 1) > 0,
                Some(w) => w.wake(self.count()),
            }
        }
        false
    }

    /// Posts only if a waiter is registered and fewer tokens are pending than
    /// waiters. The caller must have published its change and executed
    /// `fence(SeqCst)` (F0/F2) before calling this.
    /// Whether it woke a sleeper.
    #[inline]
    pub(crate) fn notify(&self) -> bool {
        let waiters = self.waiters().load(Ordering::Relaxed);
        waiters > 0 && self.count().load(Ordering::Relaxed) < waiters && self.post()
    }

    /// [`notify`](Self::notify) for a caller that published its change
    /// with a SeqCst read-modify-write instead of a store and a fence
    /// (an MPMC ring's publish or release): `waiters` is read SeqCst, which
    /// is as good as F0/F2 against a sleeper's F1/F3 (C++20 [atomics.order]:
    /// a change the sleeper's load after its fence misses is after the
    /// fence in S, so our read after the change sees its registration).
    /// On x86 the change is a locked instruction and this a plain load: no
    /// `mfence` per message. Under loom, which treats SeqCst accesses as
    /// acquire-release, the caller's fence stands in ([`announce_fence`]).
    #[inline]
    pub(crate) fn notify_after_sc(&self) -> bool {
        let waiters = self.waiters().load(Ordering::SeqCst);
        waiters > 0 && self.count().load(Ordering::Relaxed) < waiters && self.post()
    }

    /// Takes one token if there is one.
    pub(crate) fn try_wait(&self) -> bool {
        let count = self.count();
        let mut c = count.load(Ordering::Relaxed);
        while c > 0 {
            match count.compare_exchange_weak(
                c,
                c.saturating_sub(1),
                Ordering::Acquire,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(now) => c = now,
            }
        }
        false
    }

    /// P: takes one token, sleeping until one is posted or `deadline` passes.
    /// Returns false on timeout.
    pub(crate) fn wait(&self, deadline: Option<Instant>) -> bool {
        if self.try_wait() {
            return true;
        }
        let slept: Result<_, ()> = self.sleep(
            |_| Ok(self.try_wait().then_some(())),
            false,
            deadline,
            None,
            None,
        );
        matches!(slept, Ok(Slept::Ready(())))
    }

    /// Sleeps until `ready` yields a value, re-checking it after every
    /// wake-up. Used by rings, whose posts are hints: any pending token is
    /// taken and the ring is looked at again.
    ///
    /// `slice` bounds each futex sleep; `ready(true)` is called after a
    /// slice elapsed, so it can do expensive checks (peer liveness) then
    /// only. An error from `ready` ends the sleep. (The library waits
    /// through the wait engine, `wait::Wait`; tests use this directly.)
    #[cfg(test)]
    pub(crate) fn sleep_until<T, E>(
        &self,
        ready: impl FnMut(bool) -> Result<Option<T>, E>,
        deadline: Option<Instant>,
        slice: Option<Duration>,
    ) -> Result<Slept<T>, E> {
        self.sleep(ready, true, deadline, slice, None)
    }

    fn sleep<T, E>(
        &self,
        ready: impl FnMut(bool) -> Result<Option<T>, E>,
        tokens_are_hints: bool,
        deadline: Option<Instant>,
        slice: Option<Duration>,
        peer: Option<&AtomicU32>,
    ) -> Result<Slept<T>, E> {
        sleep_all(
            &[self],
            ready,
            tokens_are_hints,
            deadline,
            slice,
            peer.as_slice(),
        )
    }
    /// Tokens currently pending (diagnostics only).
    #[cfg(test)]
    pub(crate) fn pending(&self) -> u32 {
        self.count().load(Ordering::Relaxed)
    }

    /// Registered waiters (diagnostics only).
    #[cfg(test)]
    pub(crate) fn waiting(&self) -> u32 {
        self.waiters().load(Ordering::Relaxed)
    }
}

/// Sleeps on every doorbell of `bells` at once until `ready` yields a
/// value, re-checking it after every wake-up: registered as a waiter on
/// each, so a post on any of them wakes the sleeper (one `futex_waitv`
/// over their count words and the liveness words in `deaths`, which the
/// kernel changes and wakes when that peer dies; `ready` then sees the
/// death at once, not a slice later). One doorbell is the usual case; a
/// select passes one per end.
///
/// `tokens_are_hints`: tokens are taken and the condition looked at again
/// (rings, whose posts are hints); without it (a semaphore's `wait`), the
/// caller's `ready` takes them. `slice` bounds each futex sleep;
/// `ready(true)` is called after a slice elapsed, so it can do expensive
/// checks (peer liveness) then only. An error from `ready` ends the sleep.
/// A hardware doorbell (`Wake`) is slept on through its own path when it is
/// the only one; among several, the sleeper naps in short slices.
pub(crate) fn sleep_all<T, E>(
    bells: &[&Doorbell],
    mut ready: impl FnMut(bool) -> Result<Option<T>, E>,
    tokens_are_hints: bool,
    deadline: Option<Instant>,
    slice: Option<Duration>,
    deaths: &[&AtomicU32],
) -> Result<Slept<T>, E> {
    for b in bells {
        b.waiters().fetch_add(1, Ordering::Relaxed);
    }
    // Tokens taken in a row without the condition becoming true: more
    // than a few means a count is being flooded (a hostile peer keeps
    // writing it), and a futex wait on a non-zero count would return at
    // once: then the sleeper naps instead, so that it neither spins nor
    // overstays its deadline.
    let mut hints = 0u32;
    let mut slice_start = Instant::now();
    // Liveness words not yet seen marked dead.
    let mut deaths: Vec<&AtomicU32> = deaths.to_vec();
    let mut words: Vec<(&AtomicU32, u32)> =
        Vec::with_capacity(bells.len().saturating_add(deaths.len()));
    let mut force_tick = false;
    let outcome = loop {
        let slice_elapsed = force_tick || slice.is_some_and(|s| slice_start.elapsed() >= s);
        if slice_elapsed {
            slice_start = Instant::now();
            force_tick = false;
        }
        // F1/F3: pairs with the fence a poster executes between
        // publishing and reading `waiters`: either it sees us registered,
        // or we see what it published.
        fence(Ordering::SeqCst);
        match ready(slice_elapsed) {
            Ok(Some(value)) => break Ok(Slept::Ready(value)),
            Ok(None) => {}
            Err(e) => break Err(e),
        }
        // Every path looks at the deadline: no count, flooded or not,
        // keeps a sleeper past it.
        let left = match deadline {
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break Ok(Slept::TimedOut);
                }
                Some(left)
            }
            None => None,
        };
        let timeout = match (left, slice) {
            (None, None) => None,
            (Some(l), s) => Some(s.map_or(l, |s| s.min(l))),
            (None, Some(s)) => Some(s),
        };
        if tokens_are_hints && hints < FLOOD_HINTS && bells.iter().any(|b| b.try_wait()) {
            hints = hints.saturating_add(1);
            continue;
        }
        if hints >= FLOOD_HINTS && bells.iter().any(|b| b.count().load(Ordering::Relaxed) != 0) {
            // Flooded: nap, then look again (a real post is seen by
            // that look), for the rest of this sleep.
            std::thread::sleep(timeout.map_or(FLOOD_NAP, |t| t.min(FLOOD_NAP)));
            continue;
        }
        if let [only] = bells {
            if let Some(w) = &only.wake {
                w.sleep(only.count(), timeout);
                continue;
            }
        } else if bells.iter().any(|b| b.wake.is_some()) {
            // No one system call sleeps on a device's doorbell and a futex.
            std::thread::sleep(timeout.map_or(FLOOD_NAP, |t| t.min(FLOOD_NAP)));
            continue;
        }
        words.clear();
        words.extend(bells.iter().map(|b| (b.count(), 0)));
        let mut died = None;
        for (i, word) in deaths.iter().enumerate() {
            let seen = word.load(Ordering::Acquire);
            if seen & HWL_PROCESS_OWNER_DIED != 0 {
                died = Some(i);
                break;
            }
            words.push((word, seen));
        }
        if let Some(i) = died {
            // A peer died: wake whoever else sleeps on its word (the kernel
            // woke one), and look now, with the full checks of a slice's
            // end.
            futex::wake(deaths.swap_remove(i), i32::MAX as u32);
            force_tick = true;
            continue;
        }
        futex::wait_any(&words, timeout);
    };
    for b in bells {
        b.waiters().fetch_sub(1, Ordering::Relaxed);
    }
    // The kernel wakes one sleeper of a dead process's word: if this one's
    // `ready` saw the death first (it ended before the look above), pass
    // the wake on, or the others sleep out their slice.
    for word in deaths {
        if word.load(Ordering::Acquire) & HWL_PROCESS_OWNER_DIED != 0 {
            futex::wake(word, i32::MAX as u32);
        }
    }
    outcome
}

/// A doorbell in its own heap allocation, for tests, models and the
/// micro-benchmarks.
#[derive(Debug)]
pub(crate) struct HeapDoorbell {
    words: std::sync::Arc<[AtomicU32; 2]>,
    pub(crate) bell: Doorbell,
}

impl HeapDoorbell {
    pub(crate) fn new() -> Self {
        let words = std::sync::Arc::new([AtomicU32::new(0), AtomicU32::new(0)]);
        let bell = Self::bell(&words);
        HeapDoorbell { words, bell }
    }

    pub(crate) fn share(&self) -> Self {
        let words = self.words.clone();
        let bell = Self::bell(&words);
        HeapDoorbell { words, bell }
    }

    fn bell(words: &Arc<[AtomicU32; 2]>) -> Doorbell {
        Doorbell::new(
            ShmWord::owned(words.clone(), |w| &w[0]),
            ShmWord::owned(words.clone(), |w| &w[1]),
        )
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn post_then_wait_takes_the_token() {
        let d = HeapDoorbell::new();
        d.bell.post();
        assert_eq!(d.bell.pending(), 1);
        assert!(d.bell.wait(Some(Instant::now())));
        assert_eq!(d.bell.pending(), 0);
        assert!(!d.bell.try_wait());
    }

    #[test]
    fn wait_times_out_without_a_post() {
        let d = HeapDoorbell::new();
        let t0 = Instant::now();
        assert!(!d.bell.wait(Some(t0 + Duration::from_millis(30))));
        assert!(t0.elapsed() >= Duration::from_millis(30));
        assert_eq!(d.bell.waiting(), 0, "a timed-out waiter deregisters");
    }

    #[test]
    fn post_wakes_a_sleeping_thread() {
        let d = HeapDoorbell::new();
        let other = d.share();
        let t = std::thread::spawn(move || other.bell.wait(None));
        while d.bell.waiting() == 0 {
            std::thread::yield_now();
        }
        d.bell.post();
        assert!(t.join().unwrap());
        assert_eq!(d.bell.pending(), 0);
    }

    #[test]
    fn notify_without_waiters_posts_nothing() {
        let d = HeapDoorbell::new();
        d.bell.notify();
        assert_eq!(d.bell.pending(), 0);
    }

    /// A count a hostile peer sets to nearly 2^32 (and keeps there) must
    /// neither keep a timed sleep past its deadline nor make it spin.
    #[test]
    fn a_flooded_count_keeps_the_deadline() {
        let d = HeapDoorbell::new();
        d.words[0].store(0xffff_fffe, Ordering::SeqCst);
        let t0 = Instant::now();
        let mut looks = 0u32;
        let slept: Result<_, ()> = d.bell.sleep_until(
            |_| {
                looks += 1;
                Ok(None::<()>)
            },
            Some(t0 + Duration::from_millis(100)),
            Some(Duration::from_millis(50)),
        );
        let took = t0.elapsed();
        assert_eq!(slept, Ok(Slept::TimedOut));
        assert!(took < Duration::from_millis(110), "overstayed: {took:?}");
        // Naps of 1 ms after the first 64 tokens: about one look a
        // millisecond, not a spinning loop.
        assert!(looks < 64 + 150, "{looks} looks in {took:?}");
        assert_eq!(d.bell.waiting(), 0);
    }

    #[test]
    fn counting_semantics() {
        let d = HeapDoorbell::new();
        for _ in 0..3 {
            d.bell.post();
        }
        assert!(d.bell.try_wait() && d.bell.try_wait() && d.bell.try_wait());
        assert!(!d.bell.try_wait());
    }
}

#[cfg(all(test, loom))]
mod loom_models {
    use super::*;

    /// Two posts and two waits between two threads: no token is lost and
    /// nobody sleeps forever.
    #[test]
    fn semaphore_post_wait() {
        loom::model(|| {
            let d = HeapDoorbell::new();
            let other = d.share();
            let t = loom::thread::spawn(move || {
                other.bell.post();
                other.bell.post();
            });
            assert!(d.bell.wait(None));
            assert!(d.bell.wait(None));
            t.join().unwrap();
            assert_eq!(d.bell.pending(), 0);
        });
    }

    /// The ring-style hint protocol: publish, F0, notify versus register,
    /// F1, re-check, sleep. The sleeper must always see the flag.
    #[test]
    fn notify_never_loses_a_wakeup() {
        loom::model(|| {
            let d = HeapDoorbell::new();
            let other = d.share();
            let flag = std::sync::Arc::new(AtomicU32::new(0));
            let flag2 = flag.clone();
            let t = loom::thread::spawn(move || {
                flag2.store(1, Ordering::Release);
                fence(Ordering::SeqCst);
                other.bell.notify();
            });
            let got: Result<_, ()> = d.bell.sleep_until(
                |_| Ok((flag.load(Ordering::Acquire) == 1).then_some(())),
                None,
                None,
            );
            assert_eq!(got, Ok(Slept::Ready(())));
            t.join().unwrap();
        });
    }

    /// A select's park (`sleep_all`) over two doorbells, each notified by
    /// its own publisher: the sleeper registers with both, re-checks and
    /// sleeps on both count words, and must always wake and see a flag.
    #[test]
    fn sleeping_on_two_doorbells_never_misses_either() {
        loom::model(|| {
            let a = HeapDoorbell::new();
            let b = HeapDoorbell::new();
            let (a2, b2) = (a.share(), b.share());
            let flags = std::sync::Arc::new([AtomicU32::new(0), AtomicU32::new(0)]);
            let f = flags.clone();
            // One publisher on `b` (the second end): whichever end gets
            // the message, the sleeper must not miss it.
            let t = loom::thread::spawn(move || {
                f[1].store(1, Ordering::Release);
                fence(Ordering::SeqCst);
                b2.bell.notify();
                drop(a2);
            });
            let got: Result<_, ()> = sleep_all(
                &[&a.bell, &b.bell],
                |_| Ok(flags.iter().position(|f| f.load(Ordering::Acquire) == 1)),
                true,
                None,
                None,
                &[],
            );
            assert_eq!(got, Ok(Slept::Ready(1)));
            t.join().unwrap();
            assert_eq!(a.bell.waiting(), 0);
            assert_eq!(b.bell.waiting(), 0);
        });
    }

    /// A pollable descriptor's arming (F4): register and read the count,
    /// then look; a post racing it is either seen by the look or changes
    /// the count the descriptor's futex request waits on.
    #[test]
    fn arming_sees_the_post_or_the_changed_count() {
        loom::model(|| {
            let d = HeapDoorbell::new();
            let other = d.share();
            let flag = std::sync::Arc::new(AtomicU32::new(0));
            let flag2 = flag.clone();
            let t = loom::thread::spawn(move || {
                flag2.store(1, Ordering::Release);
                fence(Ordering::SeqCst);
                other.bell.notify();
            });
            let seen = d.bell.register_and_read(64);
            let published = flag.load(Ordering::Acquire) == 1;
            t.join().unwrap();
            let woken = d.bell.count().load(Ordering::SeqCst) != seen;
            assert!(
                published || woken,
                "the descriptor would sleep through the post"
            );
            d.bell.unregister();
        });
    }
}

/// Before [`Doorbell::notify_after_sc`]: nothing in a build that runs (the
/// publish was a SeqCst read-modify-write), the F0/F2 fence under loom,
/// which models SeqCst fences exactly but SeqCst accesses only as
/// acquire-release.
#[inline(always)]
pub(crate) fn announce_fence() {
    #[cfg(loom)]
    crate::sync::fence(Ordering::SeqCst);
}

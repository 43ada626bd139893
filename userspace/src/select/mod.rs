//! Select: one wait over many ends (link receivers and senders, mailboxes,
//! a domain member's receives and sends), completing exactly one operation
//! and reporting which (hw/SPEC.md §8.10).
//!
//! The wait is the one wait engine ([`Wait::any`]) over every end's doorbell
//! at once: busy-poll spins over the set; spin-then-park spins, then
//! registers as a waiter with every end's doorbell and sleeps once (one
//! `futex_waitv` over the doorbells and the peers' liveness words), so a
//! post on any end wakes it. An operation is only ever completed by
//! trying it (`try_recv`, `try_send`): a message is taken or a message is
//! accepted exactly once, on the end reported, and an operation not
//! reported did nothing. Fairness: each round of attempts starts after
//! the end served last, so no ready end waits more than one round.

use crate::doorbell::Doorbell;
use crate::error::{RecvError, SendError};
use crate::liveness::Watched;
use crate::sync::{fence, AtomicU32, Ordering};
use crate::wait::{deadline_after, past, SpinPolicy, Tick, Wait, WaitStrategy, SLEEP_SLICE};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod ends;

use self::ends::{End, Kind};
pub use self::ends::{SelectRecv, SelectSend};

/// What a selected operation did.
#[derive(Debug)]
pub enum Outcome {
    /// A receive took this message.
    Received(Vec<u8>),
    /// A member's receive from any member took this message from the
    /// member named first.
    ReceivedFrom(String, Vec<u8>),
    /// A send's message was accepted.
    Sent,
    /// The receive failed at once (its peer is gone, the end is corrupt):
    /// the same error `try_recv` gives.
    RecvFailed(RecvError),
    /// The send failed at once (its receiver is gone, the message is too
    /// large, the end is corrupt): the same error `try_send` gives.
    SendFailed(SendError<()>),
}

/// The one operation a select completed.
#[derive(Debug)]
pub struct Selected {
    /// The operation's index, as returned when it was added.
    pub index: usize,
    /// What it did.
    pub outcome: Outcome,
}

impl Selected {
    /// The message of a receive (from a link, a mailbox or a member), or
    /// the receive's error; a send reports `RecvError::Empty` here.
    pub fn into_message(self) -> Result<Vec<u8>, RecvError> {
        match self.outcome {
            Outcome::Received(m) | Outcome::ReceivedFrom(_, m) => Ok(m),
            Outcome::RecvFailed(e) => Err(e),
            Outcome::Sent | Outcome::SendFailed(_) => Err(RecvError::Empty),
        }
    }
}

/// Why a select completed nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SelectError {
    /// `try_select` / `try_ready`: no operation could make progress now.
    #[error("no operation is ready now; retry, or use `select` to wait")]
    WouldBlock,
    /// `select_timeout` / `ready_timeout`: none became ready in time.
    #[error("timed out: no operation became ready; retry, or wait longer")]
    Timeout,
}

/// A set of operations on different ends, of which a select completes
/// exactly one. Each end is borrowed for the life of the `Select`; build
/// one per wait (it is a small vector) or keep it and select repeatedly.
///
/// ```no_run
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use hwlink::{LinkBuilder, Mailbox, Access, Outcome, Select};
/// let mut data = LinkBuilder::new("stage-in").open_receiver()?;
/// let mut control = Mailbox::open("stage-control", Access::Recv)?;
/// loop {
///     let mut sel = Select::new();
///     let d = sel.recv(&mut data);
///     let c = sel.recv(&mut control);
///     let done = sel.select();
///     match done.outcome {
///         Outcome::Received(m) if done.index == d => println!("data: {} bytes", m.len()),
///         Outcome::Received(m) if done.index == c => println!("control: {m:?}"),
///         other => return Err(format!("{other:?}").into()),
///     }
/// }
/// # }
/// ```
pub struct Select<'a> {
    ops: Vec<Op<'a>>,
    /// Where the next round of attempts starts: after the end served last.
    next: usize,
    strategy: Option<WaitStrategy>,
    /// Made at the first wait (a select that never waits makes no
    /// system call for it).
    policy: Option<SpinPolicy>,
}

impl std::fmt::Debug for Select<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Select")
            .field("operations", &self.ops.len())
            .field("strategy", &self.strategy())
            .finish()
    }
}

struct Op<'a> {
    end: &'a mut dyn End,
    kind: Kind<'a>,
}

impl Default for Select<'_> {
    fn default() -> Self {
        Select::new()
    }
}

impl<'a> Select<'a> {
    /// An empty set.
    pub fn new() -> Self {
        Select {
            ops: Vec::new(),
            next: 0,
            strategy: None,
            policy: None,
        }
    }

    fn push(&mut self, end: &'a mut dyn End, kind: Kind<'a>) -> usize {
        self.ops.push(Op { end, kind });
        self.ops.len().saturating_sub(1)
    }

    /// Adds a receive on `end` (a link's [`Receiver`](crate::Receiver) or
    /// a [`Mailbox`](crate::Mailbox)); returns its index.
    pub fn recv<E: SelectRecv>(&mut self, end: &'a mut E) -> usize {
        self.push(end.select_end().0, Kind::Recv)
    }

    /// Adds a send of `msg` on `end` (a link's [`Sender`](crate::Sender)
    /// or a [`Mailbox`](crate::Mailbox)); returns its index. The message is
    /// sent only if this operation is the one selected.
    pub fn send<E: SelectSend>(&mut self, end: &'a mut E, msg: &'a [u8]) -> usize {
        self.push(end.select_end().0, Kind::Send(msg))
    }

    /// Adds a member's receive from the member named `from` (waiting for
    /// it to join, as `recv_from` does); returns its index.
    pub fn recv_from(&mut self, member: &'a mut crate::Member, from: &'a str) -> usize {
        self.push(member, Kind::RecvFrom(from))
    }

    /// Adds a member's receive from any member (reported as
    /// [`Outcome::ReceivedFrom`]); returns its index.
    pub fn recv_any(&mut self, member: &'a mut crate::Member) -> usize {
        self.push(member, Kind::RecvAny)
    }

    /// Adds a member's send of `msg` to the member named `to`; returns its
    /// index.
    pub fn send_to(&mut self, member: &'a mut crate::Member, to: &'a str, msg: &'a [u8]) -> usize {
        self.push(member, Kind::SendTo(to, msg))
    }

    /// Waits with `strategy` instead of the ends' own (see
    /// [`strategy`](Self::strategy)).
    pub fn with_strategy(mut self, strategy: WaitStrategy) -> Self {
        self.strategy = Some(strategy);
        self
    }

    /// How this select waits: as set by [`with_strategy`](Self::with_strategy),
    /// else from the ends: busy-poll if any end busy-polls (its peer never
    /// rings its doorbell), else spin-then-park if any end spins, else park.
    pub fn strategy(&self) -> WaitStrategy {
        if let Some(s) = self.strategy {
            return s;
        }
        let mut s = WaitStrategy::Park;
        for op in &self.ops {
            match op.end.strategy() {
                WaitStrategy::BusyPoll => return WaitStrategy::BusyPoll,
                WaitStrategy::SpinPark => s = WaitStrategy::SpinPark,
                WaitStrategy::Park => {}
            }
        }
        s
    }

    /// Waits until one operation completes, and reports it. With no
    /// operation, waits for ever.
    pub fn select(&mut self) -> Selected {
        match self.run(None, true, true) {
            Ok((index, Some(outcome))) => Selected { index, outcome },
            // Without a deadline, run only returns a completion.
            _ => unreachable!("a select without a deadline completes an operation"),
        }
    }

    /// Waits at most `timeout` for one operation to complete. On
    /// `Timeout`, no operation did anything.
    pub fn select_timeout(&mut self, timeout: Duration) -> Result<Selected, SelectError> {
        self.select_deadline(deadline_after(timeout))
    }

    /// [`select_timeout`](Self::select_timeout) until `deadline`.
    pub fn select_deadline(&mut self, deadline: Option<Instant>) -> Result<Selected, SelectError> {
        let (index, outcome) = self.run(deadline, true, true)?;
        Ok(Selected {
            index,
            outcome: outcome.ok_or(SelectError::Timeout)?,
        })
    }

    /// Completes an operation that can complete now, if any.
    pub fn try_select(&mut self) -> Result<Selected, SelectError> {
        let (index, outcome) = self.run(None, false, true)?;
        Ok(Selected {
            index,
            outcome: outcome.ok_or(SelectError::WouldBlock)?,
        })
    }

    /// Waits until an operation looks ready and returns its index, without
    /// completing it. With ends that other processes also receive from (a
    /// mailbox), it may be gone by the time the caller tries it.
    pub fn ready(&mut self) -> usize {
        match self.run(None, true, false) {
            Ok((index, _)) => index,
            Err(_) => unreachable!("a wait without a deadline ends ready"),
        }
    }

    /// [`ready`](Self::ready), waiting at most `timeout`.
    pub fn ready_timeout(&mut self, timeout: Duration) -> Result<usize, SelectError> {
        Ok(self.run(deadline_after(timeout), true, false)?.0)
    }

    /// The index of an operation that looks ready now, if any.
    pub fn try_ready(&mut self) -> Result<usize, SelectError> {
        self.run(None, false, false)
            .map(|(i, _)| i)
            .map_err(|_| SelectError::WouldBlock)
    }

    /// One round over the operations, starting after the one served last:
    /// those that look ready (all of them with `all`) are tried
    /// (`complete`) or reported.
    fn round(&mut self, complete: bool, all: bool) -> Option<(usize, Option<Outcome>)> {
        let n = self.ops.len();
        for i in 0..n {
            let k = self.next.wrapping_add(i).checked_rem(n).unwrap_or(0);
            let Op { end, kind } = &mut self.ops[k];
            if !all && !end.ready_now(kind) {
                continue;
            }
            if !complete {
                if all && !end.ready_now(kind) {
                    continue;
                }
                self.next = k.wrapping_add(1);
                return Some((k, None));
            }
            if let Some(outcome) = end.attempt(kind) {
                self.next = k.wrapping_add(1);
                self.pass_on(k);
                return Some((k, Some(outcome)));
            }
        }
        None
    }

    /// After completing operation `done`: the wake-up this select took may
    /// have been meant for another process sharing one of the other ends
    /// (a mailbox's receivers): ring those that still look ready, so that
    /// a sleeping peer of theirs looks too.
    fn pass_on(&self, done: usize) {
        let mut shared = self
            .ops
            .iter()
            .enumerate()
            .filter(|(k, op)| *k != done && op.end.shared_with_others(&op.kind))
            .peekable();
        if shared.peek().is_none() {
            // Links only: each has this select as its one receiver.
            return;
        }
        // F0: our claim is published before we read `waiters`.
        fence(Ordering::SeqCst);
        for (_, op) in shared {
            if op.end.ready_now(&op.kind) {
                if let Some(bell) = op.end.bell(&op.kind) {
                    bell.notify();
                }
            }
        }
    }

    /// The select: rounds of attempts, and between them one wait on every
    /// end's doorbell. `Err` only when nothing completed (`block` false:
    /// WouldBlock); `Ok((i, None))` with `complete` false or on timeout
    /// (then `i` is meaningless).
    fn run(
        &mut self,
        deadline: Option<Instant>,
        block: bool,
        complete: bool,
    ) -> Result<(usize, Option<Outcome>), SelectError> {
        let strategy = self.strategy();
        let mut all = true;
        // Rounds in a row that a wait said "ready" and the round then
        // completed nothing (another process was quicker, or a hostile
        // one keeps changing words): the wait naps after a few.
        let mut fruitless = 0u32;
        loop {
            if let Some(done) = self.round(complete, all) {
                return Ok(done);
            }
            if !all {
                fruitless = fruitless.saturating_add(1);
            }
            if !block {
                return Err(SelectError::WouldBlock);
            }
            if past(deadline) {
                return Err(SelectError::Timeout);
            }
            let slow = self.wait(strategy, deadline, fruitless);
            match slow {
                None => return Err(SelectError::Timeout),
                Some(true) => {
                    for op in &mut self.ops {
                        op.end.look_slowly(&op.kind);
                    }
                    all = true;
                }
                Some(false) => all = false,
            }
        }
    }

    /// One wait until an operation looks ready (`Some(false)`), a slice
    /// passed (`Some(true)`: time for slow looks and a full round), or the
    /// deadline (None).
    fn wait(
        &mut self,
        strategy: WaitStrategy,
        deadline: Option<Instant>,
        fruitless: u32,
    ) -> Option<bool> {
        if self.policy.is_none() {
            // Link ends know whether their peer shares this CPU; with any
            // other end, a peer may (and the wait yields sooner).
            let known: Option<Vec<bool>> = self.ops.iter().map(|op| op.end.shares_core()).collect();
            self.policy = Some(match known {
                Some(shared) => SpinPolicy::for_known_peers(shared.contains(&true)),
                None => SpinPolicy::for_unknown_peers(),
            });
        }
        let mut policy = self.policy.unwrap_or_else(SpinPolicy::new);
        // A busy-polling select never sleeps: nothing to collect (and no
        // allocation per select) for it.
        let sleeps = strategy != WaitStrategy::BusyPoll;
        let watches: Vec<Arc<Watched>> = self
            .ops
            .iter_mut()
            .filter(|_| sleeps)
            .filter_map(|op| op.end.death_watch(&op.kind))
            .collect();
        let deaths: Vec<&AtomicU32> = watches.iter().filter_map(|w| w.lock_word()).collect();
        let ops = &self.ops;
        let bells: Vec<&Doorbell> = ops
            .iter()
            .filter(|_| sleeps)
            .filter_map(|op| op.end.bell(&op.kind))
            .collect();
        let mut last_slow = Instant::now();
        let waited = Wait::any(&bells, strategy, deadline)
            .deaths(&deaths)
            .fruitless(fruitless)
            .until(&mut policy, |tick, _| {
                if tick == Tick::Poll {
                    let hot = ops.iter().any(|op| op.end.ready_hot(&op.kind));
                    return Ok(hot.then_some(false));
                }
                if ops.iter().any(|op| op.end.ready_now(&op.kind)) {
                    return Ok::<_, std::convert::Infallible>(Some(false));
                }
                if tick == Tick::Slice && last_slow.elapsed() >= SLEEP_SLICE {
                    last_slow = Instant::now();
                    return Ok(Some(true));
                }
                Ok(None)
            });
        self.policy = Some(policy);
        match waited {
            Ok(w) => w,
            Err(never) => match never {},
        }
    }
}

#[cfg(test)]
mod tests;

//! The subscribing end of a topic: claims an entry, joins with up to
//! `history` past messages, reads each message in place (or by copy),
//! reports overwritten messages as `Lagged(n)`, and parks on its own
//! doorbell with its sleeping bit set.
#![warn(clippy::arithmetic_side_effects)]

use super::publisher::{reap, REAPING};
use super::*;

/// A subscriber of a topic. `Send` but not `Sync`: one thread receives.
/// Every subscriber receives every message published after it joined
/// (and the history it asked for), in order.
#[derive(Debug)]
pub struct Subscriber {
    u: Use,
    raw: RawTopic,
    g: TopicGeometry,
    entry: u32,
    token: u32,
    /// The next position this subscriber reads.
    cursor: u64,
    bell: Doorbell,
    not_full: Doorbell,
    strategy: WaitStrategy,
    policy: SpinPolicy,
    /// The publisher last seen (token, watch), and whether one was seen.
    publisher: Option<(u32, PeerWatch)>,
    seen_publisher: bool,
    /// Messages missed in all.
    lagged: u64,
    /// The sleeping bit stays set (in a select, or behind a descriptor).
    sticky: bool,
    readiness: Option<Box<crate::readiness::Readiness>>,
}

impl Subscriber {
    pub(super) fn attach(
        u: Use,
        strategy: WaitStrategy,
        replay: u32,
    ) -> Result<Subscriber, OpenError> {
        let (pid, token) = crate::liveness::me()?;
        let raw = u.raw().clone();
        let g = u.parts.config().geometry;
        let entry = claim_entry(&u.parts, token).ok_or_else(|| OpenError::TooManySubscribers {
            name: u.name.clone(),
            max: g.max_subs,
        })?;
        raw.entry_pid(entry).store(pid, Ordering::Relaxed);
        raw.entry_lagged(entry).store(0, Ordering::Relaxed);
        let (w, m) = bit(entry);
        raw.sleeping(w).fetch_and(!m, Ordering::AcqRel);
        raw.attached(w).fetch_or(m, Ordering::SeqCst);
        let cursor = topic_ring::join(&raw, &g, entry, replay);
        if strategy != WaitStrategy::BusyPoll {
            raw.sleepy().fetch_add(1, Ordering::AcqRel);
        }
        let mut s = Subscriber {
            bell: raw.bell(entry),
            not_full: raw.not_full(),
            u,
            raw,
            g,
            entry,
            token,
            cursor,
            strategy,
            policy: SpinPolicy::for_unknown_peers(),
            publisher: None,
            seen_publisher: false,
            lagged: 0,
            sticky: false,
            readiness: None,
        };
        s.publisher_gone();
        Ok(s)
    }

    /// The topic's name.
    pub fn name(&self) -> &str {
        &self.u.name
    }
    /// Largest message the topic carries.
    pub fn max_message(&self) -> usize {
        self.g.slot_size as usize
    }
    /// What the topic does with slow subscribers.
    pub fn backpressure(&self) -> Backpressure {
        backpressure_of(&self.g)
    }
    /// The position of the next message this subscriber reads (messages
    /// are numbered from 0 in the order published).
    pub fn position(&self) -> u64 {
        self.cursor
    }
    /// Messages published and not yet read by this subscriber (a snapshot).
    pub fn lag(&self) -> u64 {
        self.raw
            .tail()
            .load(Ordering::Acquire)
            .saturating_sub(self.cursor)
    }
    /// Messages this subscriber missed in all (`Overwrite`).
    pub fn lagged(&self) -> u64 {
        self.lagged
    }
    /// This handle's wait strategy.
    pub fn wait_strategy(&self) -> WaitStrategy {
        self.strategy
    }
    /// A snapshot of the topic and its subscribers.
    pub fn info(&self) -> TopicInfo {
        info_of(&self.u.parts)
    }

    /// Whether the publisher this subscriber saw has gone (closed, died, or
    /// the topic was removed); notes a new publisher. One or two loads; a
    /// system call only when the publisher changed.
    fn publisher_gone(&mut self) -> bool {
        if self.raw.removed().load(Ordering::Acquire) != 0 {
            return true;
        }
        let tok = self.raw.publisher().load(Ordering::Acquire);
        if tok == 0 {
            return self.seen_publisher;
        }
        let watch = match &self.publisher {
            Some((t, w)) if *t == tok => w,
            _ => {
                self.seen_publisher = true;
                &self.publisher.insert((tok, PeerWatch::new(tok))).1
            }
        };
        watch.died()
    }

    /// Moves the cursor past messages the publisher overwrote.
    fn skip_to(&mut self, to: u64) -> RecvError {
        let n = to.saturating_sub(self.cursor);
        self.cursor = to;
        self.seen_publisher = true;
        self.lagged = self.lagged.saturating_add(n);
        self.raw
            .entry_lagged(self.entry)
            .store(self.lagged, Ordering::Relaxed);
        self.publish_cursor();
        RecvError::Lagged(n)
    }

    /// The message at the cursor: its length, None if there is none yet.
    #[inline(always)]
    fn look_now(&mut self) -> Result<Option<u32>, RecvError> {
        match topic_ring::look(&self.raw, &self.g, self.cursor)? {
            Look::Ready(len) => Ok(Some(len)),
            Look::Empty => Ok(None),
            Look::Lagged(to) => Err(self.skip_to(to)),
        }
    }

    /// Whether a receive could make progress now, from memory alone (a
    /// message, a lag to report, the publisher gone).
    pub(crate) fn ready_now(&self) -> bool {
        self.has_message_now()
            || self.raw.removed().load(Ordering::Relaxed) != 0
            || (self.seen_publisher && self.raw.publisher().load(Ordering::Relaxed) == 0)
            || self.publisher.as_ref().is_some_and(|(_, w)| w.died())
    }

    /// The hot poll: whether the slot at the cursor changed.
    #[inline(always)]
    pub(crate) fn has_message_now(&self) -> bool {
        !matches!(
            topic_ring::look(&self.raw, &self.g, self.cursor),
            Ok(Look::Empty)
        )
    }

    /// The doorbell the publisher rings for this subscriber.
    pub(crate) fn doorbell(&self) -> &Doorbell {
        &self.bell
    }

    /// Keeps the sleeping bit set for good (a select or a descriptor waits
    /// on the doorbell outside this handle's own waits); returns the
    /// publisher's process, to sleep on its death.
    pub(crate) fn death_watch(&mut self) -> Option<Arc<Watched>> {
        if !self.sticky && self.strategy != WaitStrategy::BusyPoll {
            self.sticky = true;
            let (w, m) = bit(self.entry);
            self.raw.sleeping(w).fetch_or(m, Ordering::SeqCst);
        }
        self.publisher_gone();
        self.publisher.as_ref().and_then(|(_, w)| w.shared())
    }

    /// Waits per `patience` for a message: its length.
    fn ready(&mut self, patience: Patience<'_>) -> Result<u32, RecvError> {
        if let Some(len) = self.look_now()? {
            return Ok(len);
        }
        if self.publisher_gone() {
            return self.look_now()?.ok_or(RecvError::Disconnected);
        }
        if !patience.block {
            self.arm_readiness();
            return Err(RecvError::Empty);
        }
        let sleeps = self.strategy != WaitStrategy::BusyPoll && !self.sticky;
        let (w, m) = bit(self.entry);
        if sleeps {
            // T5: set before the doorbell's own registration and re-check.
            self.raw.sleeping(w).fetch_or(m, Ordering::SeqCst);
        }
        let watch = self.publisher.as_ref().and_then(|(_, w)| w.shared());
        let bell = self.bell.clone();
        let mut policy = self.policy;
        let waited = Wait::new(&bell, self.strategy, patience.deadline)
            .death(lock_word(&watch))
            .until(&mut policy, |tick, _| {
                if let Some(len) = self.look_now()? {
                    return Ok(Some(len));
                }
                if tick != Tick::Poll && self.publisher_gone() {
                    return self.look_now()?.ok_or(RecvError::Disconnected).map(Some);
                }
                Ok(None)
            });
        self.policy = policy;
        if sleeps {
            self.raw.sleeping(w).fetch_and(!m, Ordering::Relaxed);
        }
        match waited {
            Ok(Some(len)) => Ok(len),
            Ok(None) => Err(RecvError::Timeout),
            Err(e) => Err(e),
        }
    }

    /// Publishes the cursor (T3) and, under Block, rings a publisher that
    /// may be waiting for room.
    #[inline(always)]
    fn publish_cursor(&self) {
        self.raw
            .cursor(self.entry)
            .store(self.cursor, Ordering::Release);
        if !self.g.overwrite
            && self.raw.publisher_wait().load(Ordering::Relaxed) != hwlink_hw::HWL_WAIT_POLL
        {
            fence(Ordering::SeqCst);
            self.not_full.notify();
        }
    }

    /// The message at the cursor was read whole: move past it.
    #[inline(always)]
    fn advance(&mut self) {
        // No overflow: the cursor stays below the tail < 2^62.
        self.cursor = self.cursor.wrapping_add(1);
        // A message came from a publisher: once the publisher word is
        // empty, that publisher has gone (even if this subscriber never
        // looked at the word while it was there: a leaving handle may have
        // freed a dead publisher's word meanwhile).
        self.seen_publisher = true;
        self.publish_cursor();
    }

    /// The message at the cursor was overwritten while being read.
    fn torn(&mut self) -> RecvError {
        match topic_ring::look(&self.raw, &self.g, self.cursor) {
            Ok(Look::Lagged(to)) => self.skip_to(to),
            Ok(_) => RecvError::Corrupt(crate::error::Corruption::new(
                "topic slot sequence (changed under a read, then back)",
                self.cursor,
                topic_ring::MAX_POS,
            )),
            Err(c) => RecvError::Corrupt(c),
        }
    }

    fn recv_deadline<R>(
        &mut self,
        patience: Patience<'_>,
        f: impl FnOnce(ShmSlice<'_>) -> Result<R, RecvError>,
    ) -> Result<R, RecvError> {
        let len = self.ready(patience)?;
        let index = self.g.index(self.cursor);
        let r = f(self.raw.payload(index, len as usize))?;
        if topic_ring::still(&self.raw, &self.g, self.cursor) {
            self.advance();
            Ok(r)
        } else {
            Err(self.torn())
        }
    }

    /// The typed receives' one raw form.
    fn recv_deadline_with<R>(
        &mut self,
        f: impl FnOnce(ShmSlice<'_>) -> R,
        p: Patience<'_>,
    ) -> Result<R, RecvError> {
        self.recv_deadline(p, |s| Ok(f(s)))
    }

    typed_recv_forms! {
        recv_deadline_with() -> T;
        recv_value = recv, try_recv_value = try_recv, recv_value_timeout = recv_timeout;
        recv_deserialized, try_recv_deserialized, recv_deserialized_timeout;
    }

    /// Receives the next message, waiting per the wait strategy.
    /// [`RecvError::Lagged`] reports messages overwritten before this
    /// subscriber read them (`Overwrite`); receive again to continue.
    pub fn recv(&mut self) -> Result<Vec<u8>, RecvError> {
        self.recv_deadline(Patience::new(None, true), |s| Ok(s.to_vec()))
    }
    /// [`recv`](Self::recv), waiting at most `timeout`.
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<Vec<u8>, RecvError> {
        let deadline = crate::wait::deadline_after(timeout);
        self.recv_deadline(Patience::new(deadline, true), |s| Ok(s.to_vec()))
    }
    /// [`recv`](Self::recv) if a message is there now.
    pub fn try_recv(&mut self) -> Result<Vec<u8>, RecvError> {
        self.recv_deadline(Patience::new(None, false), |s| Ok(s.to_vec()))
    }
    /// Receives the next message into `buf`: its length. A message longer
    /// than `buf` stays unread ([`RecvError::BufferTooSmall`]).
    pub fn recv_into(&mut self, buf: &mut [u8]) -> Result<usize, RecvError> {
        self.recv_into_deadline(buf, Patience::new(None, true))
    }
    /// [`recv_into`](Self::recv_into), waiting at most `timeout`.
    pub fn recv_into_timeout(
        &mut self,
        buf: &mut [u8],
        timeout: Duration,
    ) -> Result<usize, RecvError> {
        let deadline = crate::wait::deadline_after(timeout);
        self.recv_into_deadline(buf, Patience::new(deadline, true))
    }
    /// [`recv_into`](Self::recv_into) if a message is there now.
    pub fn try_recv_into(&mut self, buf: &mut [u8]) -> Result<usize, RecvError> {
        self.recv_into_deadline(buf, Patience::new(None, false))
    }
    fn recv_into_deadline(
        &mut self,
        buf: &mut [u8],
        patience: Patience<'_>,
    ) -> Result<usize, RecvError> {
        self.recv_deadline(patience, |s| {
            if s.len() > buf.len() {
                return Err(RecvError::BufferTooSmall {
                    len: s.len(),
                    cap: buf.len(),
                });
            }
            Ok(s.copy_to(buf))
        })
    }
    /// Receives the next message by handing its bytes, in place, to `f`.
    /// Under `Overwrite`, if the message was overwritten while `f` read it,
    /// `f`'s result is dropped and [`RecvError::Lagged`] returned.
    pub fn recv_with<R>(&mut self, f: impl FnOnce(ShmSlice<'_>) -> R) -> Result<R, RecvError> {
        self.recv_deadline(Patience::new(None, true), |s| Ok(f(s)))
    }
    /// [`recv_with`](Self::recv_with) if a message is there now.
    pub fn try_recv_with<R>(&mut self, f: impl FnOnce(ShmSlice<'_>) -> R) -> Result<R, RecvError> {
        self.recv_deadline(Patience::new(None, false), |s| Ok(f(s)))
    }

    /// Reads the next message in place, waiting per the wait strategy: the
    /// guard holds it (under `Block`, the publisher cannot reuse its slot)
    /// until dropped, which moves to the next message.
    pub fn read(&mut self) -> Result<Sample<'_>, RecvError> {
        self.read_deadline(Patience::new(None, true))
    }
    /// [`read`](Self::read), waiting at most `timeout`.
    pub fn read_timeout(&mut self, timeout: Duration) -> Result<Sample<'_>, RecvError> {
        let deadline = crate::wait::deadline_after(timeout);
        self.read_deadline(Patience::new(deadline, true))
    }
    /// [`read`](Self::read) if a message is there now.
    pub fn try_read(&mut self) -> Result<Sample<'_>, RecvError> {
        self.read_deadline(Patience::new(None, false))
    }
    fn read_deadline(&mut self, patience: Patience<'_>) -> Result<Sample<'_>, RecvError> {
        let len = self.ready(patience)?;
        let index = self.g.index(self.cursor);
        Ok(Sample {
            sub: self,
            index,
            len: len as usize,
            verdict: std::cell::Cell::new(None),
        })
    }

    /// A pollable descriptor (epoll, poll, mio, io_uring) that is readable
    /// when a receive may make progress: a message, a lag to report, or
    /// the publisher gone. Armed whenever a `try_` receive finds nothing.
    /// Not for busy-polling handles.
    pub fn as_fd(&mut self) -> Result<std::os::fd::BorrowedFd<'_>, crate::ReadinessError> {
        let strategy = self.strategy;
        if crate::readiness::ensure(&mut self.readiness, strategy, &self.bell, true)? {
            self.death_watch();
            self.arm_readiness();
        }
        crate::readiness::fd_of(&self.readiness)
    }

    fn arm_readiness(&mut self) {
        if self.readiness.as_ref().is_some_and(|r| r.auto) {
            self.arm_for_wait();
        }
    }

    /// Arms the descriptor now (registered on the doorbell, then a look:
    /// F4); true if a receive may make progress already.
    pub(crate) fn arm_for_wait(&mut self) -> bool {
        let Some(mut r) = self.readiness.take() else {
            return false;
        };
        let death = self.publisher.as_ref().and_then(|(_, w)| w.shared());
        let ready = r.arm_now(death, || self.ready_now());
        self.readiness = Some(r);
        ready
    }

    /// Hands the descriptor to an owner that arms it itself
    /// ([`arm_for_wait`](Self::arm_for_wait)) before it waits.
    #[cfg_attr(not(feature = "tokio"), allow(dead_code))]
    pub(crate) fn arm_explicitly(&mut self) {
        if let Some(r) = &mut self.readiness {
            r.auto = false;
        }
    }
}

/// Claims a free subscriber entry, or the entry of a process that died.
fn claim_entry(parts: &TopicParts, token: u32) -> Option<u32> {
    let raw = parts.raw();
    let n = parts.config().geometry.max_subs;
    for e in 0..n {
        if raw
            .token(e)
            .compare_exchange(0, token, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
        {
            return Some(e);
        }
    }
    for e in 0..n {
        let t = raw.token(e).load(Ordering::Acquire);
        if t != 0 && t != REAPING && t != token && PeerWatch::new(t).gone_for_good() {
            reap(parts, e, t);
            if raw
                .token(e)
                .compare_exchange(0, token, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
            {
                return Some(e);
            }
        }
    }
    None
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        let (w, m) = bit(self.entry);
        self.raw.sleeping(w).fetch_and(!m, Ordering::AcqRel);
        self.raw.attached(w).fetch_and(!m, Ordering::AcqRel);
        if self.strategy != WaitStrategy::BusyPoll {
            let s = self.raw.sleepy();
            let _ = s.fetch_update(Ordering::AcqRel, Ordering::Relaxed, |v| v.checked_sub(1));
        }
        let _ = self.raw.token(self.entry).compare_exchange(
            self.token,
            0,
            Ordering::AcqRel,
            Ordering::Relaxed,
        );
        // A publisher waiting for this subscriber looks again.
        if !self.g.overwrite {
            fence(Ordering::SeqCst);
            self.not_full.notify();
        }
    }
}

/// A message read in place by [`Subscriber::read`]. Dropping it moves the
/// subscriber to the next message.
///
/// Under `Backpressure::Block` the slot cannot be reused while the guard
/// lives. Under `Overwrite` the publisher never waits, so a slow reader
/// may see the slot overwritten: check [`intact`](Self::intact) after
/// reading. A message found overwritten is not counted as received: the
/// next receive reports it in [`RecvError::Lagged`].
#[derive(Debug)]
pub struct Sample<'a> {
    sub: &'a mut Subscriber,
    index: u32,
    len: usize,
    /// The answer of the last [`intact`](Sample::intact), if asked.
    verdict: std::cell::Cell<Option<bool>>,
}

impl Sample<'_> {
    /// The message's bytes, in shared memory (read by copy).
    pub fn bytes(&self) -> ShmSlice<'_> {
        self.sub.raw.payload(self.index, self.len)
    }
    /// The message's length.
    pub fn len(&self) -> usize {
        self.len
    }
    /// Whether the message is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// The message's position (numbered from 0 in the order published).
    pub fn position(&self) -> u64 {
        self.sub.cursor
    }
    /// Whether the message is still whole: true until the publisher
    /// overwrites it (never under `Block`). Bytes read before a true
    /// answer are the message as published, and the message then counts
    /// as received; after a false one it counts as missed (reported by the
    /// next receive's [`RecvError::Lagged`]).
    pub fn intact(&self) -> bool {
        let ok = topic_ring::still(&self.sub.raw, &self.sub.g, self.sub.cursor);
        self.verdict.set(Some(ok));
        ok
    }
    /// A copy of the bytes.
    pub fn to_vec(&self) -> Vec<u8> {
        self.bytes().to_vec()
    }
    /// The message as a plain-data `T` (a copy; `WrongSize` if its length
    /// is not `size_of::<T>()`). Under `Overwrite`, confirm with
    /// [`intact`](Self::intact) after reading.
    pub fn read_value<T: zerocopy::FromBytes + zerocopy::IntoBytes>(&self) -> Result<T, RecvError> {
        crate::typed::decode(self.bytes())
    }
    /// A copy of the `F` at `offset` of the message (one field of a large
    /// struct, without copying the rest); `None` if it is not all inside.
    pub fn read_field_at<F: zerocopy::FromBytes + zerocopy::IntoBytes>(
        &self,
        offset: usize,
    ) -> Option<F> {
        let field = self.bytes().sub(offset, core::mem::size_of::<F>())?;
        crate::typed::decode(field).ok()
    }
}

impl Drop for Sample<'_> {
    /// Moves past the message if it counts as received: the last
    /// [`intact`](Sample::intact) said so, or (never asked) it is whole
    /// now. A message found overwritten is left for the next receive to
    /// report in [`RecvError::Lagged`], so it is counted exactly once.
    fn drop(&mut self) {
        let received = match self.verdict.get() {
            Some(v) => v,
            None => topic_ring::still(&self.sub.raw, &self.sub.g, self.sub.cursor),
        };
        if received {
            self.sub.advance();
        }
    }
}

//! The publishing end of a topic: claims the topic's one publisher word,
//! writes messages (copied, or loaned and written in place), waits for the
//! slowest live subscriber under `Block`, reaps dead subscribers, and rings
//! the doorbells of subscribers that may be parked.
#![warn(clippy::arithmetic_side_effects)]

use super::*;
use crate::error::Corruption;
use core::marker::PhantomData;
use std::cell::RefCell;
use zerocopy::{Immutable, IntoBytes};

/// A subscriber entry's token while its reaper clears its bits (no joiner
/// claims it, no scan counts it).
pub(super) const REAPING: u32 = u32::MAX;

/// The publisher of a topic. `Send` but not `Sync`: one thread publishes.
#[derive(Debug)]
pub struct Publisher {
    u: Use,
    raw: RawTopic,
    w: Writer<RawTopic>,
    token: u32,
    strategy: WaitStrategy,
    policy: SpinPolicy,
    not_full: Doorbell,
    /// Every entry's doorbell, posted when its sleeping bit is set.
    bells: Vec<Doorbell>,
    /// The process watched for each entry's token (a liveness file opened
    /// once per token).
    watches: RefCell<Vec<Option<(u32, PeerWatch)>>>,
    max: usize,
}

/// Why there is no room for the next message.
enum NoRoom {
    Full,
    Timeout,
    Removed,
    Corrupt(Corruption),
}

impl NoRoom {
    fn with<M>(self, msg: M) -> SendError<M> {
        match self {
            NoRoom::Full => SendError::Full(msg),
            NoRoom::Timeout => SendError::Timeout(msg),
            NoRoom::Removed => SendError::Disconnected(msg),
            NoRoom::Corrupt(c) => SendError::Corrupt(c),
        }
    }
}

/// Whether subscriber entry `e`, claimed by `token`, holds the publisher
/// back: its process is alive. A dead one's entry is reaped here (once, by
/// CAS) and its use of the topic dropped.
fn holds(
    parts: &TopicParts,
    watches: &RefCell<Vec<Option<(u32, PeerWatch)>>>,
    me: u32,
    e: u32,
    token: u32,
) -> bool {
    if token == me {
        return true;
    }
    if token == REAPING {
        return false;
    }
    let dead = {
        let mut watches = watches.borrow_mut();
        let Some(slot) = watches.get_mut(e as usize) else {
            return false;
        };
        match slot {
            Some((t, w)) if *t == token => w.died(),
            _ => slot.insert((token, PeerWatch::new(token))).1.died(),
        }
    };
    if !dead {
        return true;
    }
    reap(parts, e, token);
    false
}

/// Frees entry `e` of the dead process `token`: its bits first, then the
/// token (so a joiner that claims it next keeps its own bits).
pub(super) fn reap(parts: &TopicParts, e: u32, token: u32) {
    let raw = parts.raw();
    if raw
        .token(e)
        .compare_exchange(token, REAPING, Ordering::AcqRel, Ordering::Acquire)
        .is_err()
    {
        return;
    }
    let (w, m) = bit(e);
    raw.attached(w).fetch_and(!m, Ordering::AcqRel);
    raw.sleeping(w).fetch_and(!m, Ordering::AcqRel);
    raw.token(e).store(0, Ordering::Release);
    drop_user(parts);
}

impl Publisher {
    pub(super) fn attach(u: Use, strategy: WaitStrategy) -> Result<Publisher, OpenError> {
        let (pid, token) = crate::liveness::me()?;
        let raw = u.raw().clone();
        let g = u.parts.config().geometry;
        let word = raw.publisher();
        let mut held = word.load(Ordering::Acquire);
        loop {
            if held != 0 && !PeerWatch::new(held).gone_for_good() {
                return Err(OpenError::PublisherTaken {
                    name: u.name.clone(),
                    pid: raw.publisher_pid().load(Ordering::Relaxed),
                });
            }
            match word.compare_exchange(held, token, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => {
                    if held != 0 {
                        // A dead publisher's use of the topic goes with it.
                        drop_user(&u.parts);
                    }
                    break;
                }
                Err(now) => held = now,
            }
        }
        raw.publisher_pid().store(pid, Ordering::Relaxed);
        raw.publisher_wait()
            .store(wait_mode(strategy), Ordering::Relaxed);
        raw.publisher_cpus()
            .store(crate::liveness::cpu_mask(), Ordering::Relaxed);
        let w = match Writer::new(raw.clone(), g) {
            Ok(w) => w,
            Err(source) => {
                word.store(0, Ordering::Release);
                return Err(OpenError::Corrupt {
                    name: u.parts.map().name().to_string(),
                    source,
                });
            }
        };
        let bells = (0..g.max_subs).map(|e| raw.bell(e)).collect();
        let not_full = raw.not_full();
        Ok(Publisher {
            u,
            raw,
            w,
            token,
            strategy,
            policy: SpinPolicy::for_unknown_peers(),
            not_full,
            bells,
            watches: RefCell::new((0..g.max_subs).map(|_| None).collect()),
            max: g.slot_size as usize,
        })
    }

    /// The topic's name.
    pub fn name(&self) -> &str {
        &self.u.name
    }
    /// Largest message the topic carries.
    pub fn max_message(&self) -> usize {
        self.max
    }
    /// Slots in the ring.
    pub fn capacity(&self) -> usize {
        self.w.geometry().capacity as usize
    }
    /// What the topic does with slow subscribers.
    pub fn backpressure(&self) -> Backpressure {
        backpressure_of(self.w.geometry())
    }
    /// Messages published on the topic so far (by every publisher it has
    /// had).
    pub fn published(&self) -> u64 {
        self.w.tail()
    }
    /// This handle's wait strategy.
    pub fn wait_strategy(&self) -> WaitStrategy {
        self.strategy
    }
    /// What backs the memory.
    pub fn backing(&self) -> BackingKind {
        self.u.parts.map().kind()
    }
    /// Live subscribers now (a snapshot).
    pub fn subscribers(&self) -> usize {
        let g = self.w.geometry();
        (0..g.max_subs)
            .filter(|&e| {
                let t = self.raw.token(e).load(Ordering::Acquire);
                t != 0 && holds(&self.u.parts, &self.watches, self.token, e, t)
            })
            .count()
    }
    /// A snapshot of the topic and its subscribers.
    pub fn info(&self) -> TopicInfo {
        info_of(&self.u.parts)
    }

    send_forms!();
    typed_send_forms!(send_deadline());

    fn removed(&self) -> bool {
        self.raw.removed().load(Ordering::Acquire) != 0
    }

    /// Block: looks at the subscribers' cursors again; true if the next
    /// position may be written.
    fn refresh(&mut self) -> bool {
        let Publisher {
            u,
            w,
            watches,
            token,
            ..
        } = self;
        let me = *token;
        w.refresh(&mut |e, t| holds(&u.parts, watches, me, e, t))
    }

    /// Whether a message could be written now, from memory alone.
    pub(crate) fn has_room_now(&self) -> bool {
        if self.w.has_room_cached() {
            return true;
        }
        let me = self.token;
        self.w
            .room_now(&mut |e, t| holds(&self.u.parts, &self.watches, me, e, t))
    }

    /// The doorbell subscribers post when their cursors move.
    pub(crate) fn doorbell(&self) -> &Doorbell {
        &self.not_full
    }

    /// The process of the subscriber that held the publisher back at the
    /// last look, to sleep on its death.
    pub(crate) fn death_watch(&self) -> Option<Arc<Watched>> {
        let e = self.w.slowest()? as usize;
        let watches = self.watches.borrow();
        watches.get(e)?.as_ref()?.1.shared()
    }

    /// Waits per `patience` until the next position may be written.
    fn room(&mut self, patience: Patience<'_>) -> Result<(), NoRoom> {
        if self.w.exhausted() {
            return Err(NoRoom::Corrupt(Corruption::new(
                "topic position",
                self.w.tail(),
                topic_ring::MAX_POS,
            )));
        }
        if self.w.has_room_cached() {
            return Ok(());
        }
        if self.removed() {
            return Err(NoRoom::Removed);
        }
        if self.refresh() {
            return Ok(());
        }
        if !patience.block {
            return Err(NoRoom::Full);
        }
        let watch = self.death_watch();
        let bell = self.not_full.clone();
        let mut policy = self.policy;
        let waited = Wait::new(&bell, self.strategy, patience.deadline)
            .death(lock_word(&watch))
            .until(&mut policy, |tick, _| {
                if tick != Tick::Poll && self.removed() {
                    return Err(NoRoom::Removed);
                }
                Ok(self.refresh().then_some(()))
            });
        self.policy = policy;
        match waited {
            Ok(Some(())) => Ok(()),
            Ok(None) => Err(NoRoom::Timeout),
            Err(e) => Err(e),
        }
    }

    fn send_deadline<M: AsRef<[u8]>>(
        &mut self,
        msg: M,
        patience: Patience<'_>,
    ) -> Result<(), SendError<M>> {
        let len = msg.as_ref().len();
        if len > self.max {
            return Err(SendError::TooLarge {
                msg,
                len,
                max: self.max,
            });
        }
        if let Err(e) = self.room(patience) {
            return Err(e.with(msg));
        }
        self.w.write(msg.as_ref());
        self.wake();
        Ok(())
    }

    /// Rings the doorbell of every subscriber that may be parked (T5: after
    /// the message is published, a full fence, then the sleeping bits).
    #[inline]
    fn wake(&self) {
        if self.raw.sleepy().load(Ordering::Relaxed) == 0 {
            return;
        }
        fence(Ordering::SeqCst);
        self.ring_sleepers();
    }

    fn ring_sleepers(&self) {
        let n = self.w.geometry().max_subs;
        for w in 0..n.div_ceil(64).min(BITMAP_WORDS) {
            let mut bits = self.raw.sleeping(w).load(Ordering::Relaxed);
            while bits != 0 {
                // No overflow: w < 4, the bit index < 64.
                let e = w.wrapping_mul(64).wrapping_add(bits.trailing_zeros());
                bits &= bits.wrapping_sub(1);
                if let Some(b) = self.bells.get(e as usize) {
                    b.notify();
                }
            }
        }
    }

    /// Loans the next slot for a message of up to `len` bytes, waiting per
    /// the wait strategy for room; write it in place, then
    /// [`publish`](Loan::publish) it. Every subscriber reads the same bytes:
    /// nothing is copied per subscriber.
    pub fn loan(&mut self, len: usize) -> Result<Loan<'_>, SendError<()>> {
        self.loan_deadline(len, Patience::new(None, true))
    }
    /// [`loan`](Self::loan), waiting at most `timeout` for room.
    pub fn loan_timeout(
        &mut self,
        len: usize,
        timeout: Duration,
    ) -> Result<Loan<'_>, SendError<()>> {
        let deadline = crate::wait::deadline_after(timeout);
        self.loan_deadline(len, Patience::new(deadline, true))
    }
    /// [`loan`](Self::loan) if there is room now.
    pub fn try_loan(&mut self, len: usize) -> Result<Loan<'_>, SendError<()>> {
        self.loan_deadline(len, Patience::new(None, false))
    }

    fn loan_deadline(
        &mut self,
        len: usize,
        patience: Patience<'_>,
    ) -> Result<Loan<'_>, SendError<()>> {
        if len > self.max {
            return Err(SendError::TooLarge {
                msg: (),
                len,
                max: self.max,
            });
        }
        self.room(patience).map_err(|e| e.with(()))?;
        let index = self.w.begin();
        Ok(Loan {
            p: self,
            index,
            len,
        })
    }
}

impl Publisher {
    /// Loans the next slot for one plain-data `T` (see
    /// [`send_value`](Self::send_value)), waiting per the wait strategy
    /// for room: write it whole ([`LoanValue::write`]) or field by field,
    /// in place, then [`publish`](LoanValue::publish). Every subscriber
    /// reads the same bytes (`Sample::read_value`, `recv_value`).
    pub fn loan_value<T: IntoBytes + Immutable>(
        &mut self,
    ) -> Result<LoanValue<'_, T>, SendError<()>> {
        let loan = self.loan(core::mem::size_of::<T>())?;
        Ok(LoanValue {
            loan,
            _value: PhantomData,
        })
    }
    /// [`loan_value`](Self::loan_value) if there is room now.
    pub fn try_loan_value<T: IntoBytes + Immutable>(
        &mut self,
    ) -> Result<LoanValue<'_, T>, SendError<()>> {
        let loan = self.try_loan(core::mem::size_of::<T>())?;
        Ok(LoanValue {
            loan,
            _value: PhantomData,
        })
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        self.raw.publisher_pid().store(0, Ordering::Relaxed);
        let _ = self.raw.publisher().compare_exchange(
            self.token,
            0,
            Ordering::AcqRel,
            Ordering::Relaxed,
        );
        // Parked subscribers wake to see the publisher gone.
        fence(Ordering::SeqCst);
        self.ring_sleepers();
    }
}

/// A slot loaned by [`Publisher::loan`]: written in place, then published
/// to every subscriber at once. Dropped unpublished, nothing is sent.
#[derive(Debug)]
pub struct Loan<'a> {
    p: &'a mut Publisher,
    index: u32,
    len: usize,
}

impl Loan<'_> {
    /// Bytes of the loan.
    pub fn len(&self) -> usize {
        self.len
    }
    /// Whether the loan has no bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// The loaned bytes, written by copy (the slot is shared memory).
    pub fn bytes_mut(&mut self) -> ShmSliceMut<'_> {
        self.p.raw.payload_mut(self.index, self.len)
    }
    /// Copies `src` in at `offset`; false (nothing written) if it does not
    /// fit in the loan.
    pub fn write_at(&mut self, offset: usize, src: &[u8]) -> bool {
        self.bytes_mut().write_at(offset, src)
    }
    /// Copies `src` in from the start; returns the bytes copied.
    pub fn copy_from(&mut self, src: &[u8]) -> usize {
        self.bytes_mut().copy_from(src)
    }
    /// Publishes the whole loan.
    pub fn publish(self) {
        let len = self.len;
        self.publish_len(len);
    }
    /// Publishes the first `len` bytes (at most the loan's length).
    pub fn publish_len(self, len: usize) {
        let len = len.min(self.len);
        // len <= slot_size <= 2^30.
        self.p.w.commit(self.index, len as u32);
        self.p.wake();
    }
}

/// A slot loaned for one plain-data `T` by [`Publisher::loan_value`]:
/// written in place (by copy: the slot is shared memory), then published.
/// Dropped unpublished, nothing is sent.
#[derive(Debug)]
pub struct LoanValue<'a, T> {
    loan: Loan<'a>,
    _value: PhantomData<fn(&T)>,
}

impl<T: IntoBytes + Immutable> LoanValue<'_, T> {
    /// Copies the whole of `value` into the slot (one copy).
    pub fn write(&mut self, value: &T) {
        self.loan.copy_from(value.as_bytes());
    }
    /// Copies `field`'s bytes to `offset` of the value (e.g.
    /// `core::mem::offset_of!(T, field)`); false (nothing written) if they
    /// do not fit inside `T`.
    pub fn write_field_at<F: ?Sized + IntoBytes + Immutable>(
        &mut self,
        offset: usize,
        field: &F,
    ) -> bool {
        self.loan.write_at(offset, field.as_bytes())
    }
    /// Sets every byte of the value to zero.
    pub fn zero(&mut self) {
        self.loan.bytes_mut().fill(0);
    }
    /// The value's bytes, to write in place.
    pub fn bytes_mut(&mut self) -> ShmSliceMut<'_> {
        self.loan.bytes_mut()
    }
    /// Publishes the value to every subscriber.
    pub fn publish(self) {
        self.loan.publish()
    }
}

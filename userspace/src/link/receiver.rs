//! The receiving end of a link: receives, in-place reads and batches.
#![warn(clippy::arithmetic_side_effects)]

use super::*;

/// The receiving end of a link. `Send` but not `Sync`: one thread receives.
#[derive(Debug)]
pub struct Receiver {
    pub(super) ring: Consumer<RawSlots>,
    pub(super) end: EndState,
    /// The pollable descriptor, once asked for (`as_fd`).
    pub(super) readiness: Option<Box<crate::readiness::Readiness>>,
}

impl Receiver {
    /// Opens the receiving end of the link `name` with default options.
    pub fn open(name: &str) -> Result<Receiver, OpenError> {
        LinkBuilder::new(name).open_receiver()
    }

    pub(crate) fn attach(
        parts: RingParts,
        strategy: WaitStrategy,
        bell: Option<&Arc<dyn IvshmemDoorbell>>,
    ) -> Result<Receiver, OpenError> {
        let mut ring = Consumer::new(parts.words(), parts.slots(), parts.geometry())
            .map_err(|c| parts.corrupt(c))?;
        let end = EndState::new(parts, Side::Receiver, strategy, bell)?;
        wake_through(bell, Side::Receiver, &end.parts, &mut ring.words);
        Ok(Receiver {
            ring,
            end,
            readiness: None,
        })
    }

    /// The link's name.
    pub fn name(&self) -> &str {
        self.end.parts.map().name()
    }
    /// Largest message this link carries.
    pub fn max_message(&self) -> usize {
        self.ring.geometry().slot_size as usize
    }
    /// This end's wait strategy.
    pub fn wait_strategy(&self) -> WaitStrategy {
        self.end.strategy
    }
    /// Whether this end decided it shares one CPU with its peer.
    pub fn shares_core_with_peer(&self) -> bool {
        self.end.policy.shared_core()
    }
    /// Messages ready to be received now.
    pub fn len(&mut self) -> usize {
        self.ring.refresh_available().unwrap_or(0) as usize
    }
    /// Whether no message is ready now.
    pub fn is_empty(&mut self) -> bool {
        self.len() == 0
    }

    /// Whether a message can be received now, judged from memory alone (no
    /// system call, no cache update): for waiting on several links at once.
    /// A poisoned end counts as ready so that the next receive reports it.
    pub(crate) fn has_message_now(&self) -> bool {
        self.end.poisoned.is_some() || self.ring.cached_available() > 0 || self.ring.has_data_now()
    }

    /// The fast path's test: a message is ready (cached count, or the slot
    /// at head is published) and this end is healthy.
    #[inline(always)]
    pub(super) fn fast_ready(&mut self) -> bool {
        self.end.poisoned.is_none() && self.ring.available() > 0
    }

    /// Messages ready now, or why there are none.
    pub(super) fn ready_messages(&mut self) -> Result<u32, RecvError> {
        if let Some(c) = &self.end.poisoned {
            return Err(RecvError::Corrupt(c.clone()));
        }
        if let Err(c) = self.end.truncation() {
            return Err(RecvError::Corrupt(self.end.poison(c)));
        }
        let n = self.ring.available();
        if n > 0 {
            return Ok(n);
        }
        // A miss: look at `tail` too, so that a corrupt one is reported on
        // this call. (The fast path never reads `tail`.)
        match self.ring.refresh_available() {
            Ok(0) => {}
            Ok(n) => return Ok(n),
            Err(c) => return Err(RecvError::Corrupt(self.end.poison(c))),
        }
        if self.end.peer.status(&mut self.end.policy, false) == Peer::Gone {
            // The sender publishes before it closes: look once more.
            return match self.ring.refresh_available() {
                Ok(0) => Err(RecvError::Disconnected),
                Ok(n) => Ok(n),
                Err(c) => Err(RecvError::Corrupt(self.end.poison(c))),
            };
        }
        if self.readiness.is_some() {
            self.arm_readiness();
        }
        Err(RecvError::Empty)
    }

    #[inline(never)]
    pub(super) fn wait_message(
        &mut self,
        deadline: Option<Instant>,
        alive: Alive<'_>,
    ) -> Result<u32, RecvError> {
        // Waiting anyway: a good moment to learn whether the sender polls.
        self.ring.refresh_peer_mode();
        // Straight to the wait engine, whose first polls (no clock, no
        // peer check) usually find a polling sender's message; the full
        // checks of ready_messages come after it (or first, once poisoned).
        let mut checked = self.end.poisoned.is_some();
        loop {
            if checked {
                match self.ready_messages() {
                    Err(RecvError::Empty) => {}
                    other => return other,
                }
            }
            checked = true;
            self.ring.hand_over = self.end.policy.shared_core();
            let ring = &self.ring;
            let ready = |audit: bool| {
                if ring.has_data_now() {
                    return Ok(true);
                }
                if audit {
                    ring.check_tail()?;
                }
                Ok(false)
            };
            match wait_ready(&mut self.end, &ring.words.not_empty, deadline, alive, ready) {
                Ok(WaitEnd::Ready) if self.end.poisoned.is_none() => {
                    // The hot path of a waiting receiver: the slot at head
                    // is published; take it as the fast path does, without
                    // the full checks (they run every FULL_CHECK_EVERY).
                    let n = self.ring.available();
                    if n > 0 {
                        return Ok(n);
                    }
                }
                Ok(WaitEnd::Ready) => {}
                Ok(WaitEnd::TimedOut) => return Err(RecvError::Timeout),
                Ok(WaitEnd::PeerGone) => return Err(RecvError::Disconnected),
                Err(c) => return Err(RecvError::Corrupt(self.end.poison(c))),
            }
        }
    }

    pub(super) fn take_with<R>(
        &mut self,
        f: impl FnOnce(ShmSlice<'_>) -> R,
    ) -> Result<R, RecvError> {
        // `read` checked len <= slot_size; the slot is published and not
        // reused before our release below.
        let r = self.ring.read(0, f);
        match r {
            Ok(r) => {
                self.ring.release(1);
                Ok(r)
            }
            Err(c) => Err(RecvError::Corrupt(self.end.poison(c))),
        }
    }

    /// Receives one message, waiting per the wait strategy, and passes its
    /// bytes to `f` in place, without copying them first (they stay in
    /// shared memory: [`ShmSlice`] copies out what `f` needs).
    pub fn recv_with<R>(&mut self, f: impl FnOnce(ShmSlice<'_>) -> R) -> Result<R, RecvError> {
        if !self.fast_ready() {
            self.wait_message(None, &mut always)?;
        }
        self.take_with(f)
    }
    /// The one receive that passes the message in place to `f`: without
    /// `block`, fails with `Empty` at once; with it, waits until
    /// `deadline` (none: for ever), and while `alive` (the caller's own
    /// check on slow looks) says the sender is there.
    #[inline]
    pub(crate) fn recv_deadline_with<R>(
        &mut self,
        f: impl FnOnce(ShmSlice<'_>) -> R,
        p: Patience<'_>,
    ) -> Result<R, RecvError> {
        let (deadline, block) = (p.deadline, p.block);
        let mut always = crate::wait::always;
        let alive: Alive<'_> = p.alive.unwrap_or(&mut always);
        if !block {
            self.ready_messages()?;
        } else if !self.fast_ready() {
            self.wait_message(deadline, alive)?;
        }
        self.take_with(f)
    }
    /// Receives one message into a new vector.
    pub fn recv(&mut self) -> Result<Vec<u8>, RecvError> {
        self.recv_with(|b| b.to_vec())
    }
    /// Receives one message, waiting at most `timeout`.
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<Vec<u8>, RecvError> {
        self.wait_message(crate::wait::deadline_after(timeout), &mut always)?;
        self.take_with(|b| b.to_vec())
    }
    /// Receives one message if one is ready now.
    pub fn try_recv(&mut self) -> Result<Vec<u8>, RecvError> {
        self.ready_messages()?;
        self.take_with(|b| b.to_vec())
    }
    /// Like [`try_recv`](Self::try_recv), passing the bytes to `f`.
    pub fn try_recv_with<R>(&mut self, f: impl FnOnce(ShmSlice<'_>) -> R) -> Result<R, RecvError> {
        self.ready_messages()?;
        self.take_with(f)
    }
    /// Receives one message into `buf`, waiting per the wait strategy;
    /// returns its length. No allocation.
    #[inline]
    pub fn recv_into(&mut self, buf: &mut [u8]) -> Result<usize, RecvError> {
        if !self.fast_ready() {
            self.wait_message(None, &mut always)?;
        }
        let cap = buf.len();
        let copied = self.ring.read(0, |m| {
            let len = m.len();
            if len > cap {
                return Err(len);
            }
            // `read` checked len <= slot_size; the slot is published and
            // stays ours until the release below; `buf` holds len bytes.
            m.copy_to(buf);
            Ok(len)
        });
        match copied {
            Ok(Ok(len)) => {
                self.ring.release(1);
                Ok(len)
            }
            Ok(Err(len)) => Err(RecvError::BufferTooSmall { len, cap }),
            Err(c) => Err(self.corrupt(c)),
        }
    }

    typed_recv_forms! {
        recv_deadline_with() -> T;
        recv_value = recv, try_recv_value = try_recv, recv_value_timeout = recv_timeout;
        recv_deserialized, try_recv_deserialized, recv_deserialized_timeout;
    }

    /// Poisons this end and returns the error to report.
    #[cold]
    #[inline(never)]
    pub(super) fn corrupt(&mut self, c: Corruption) -> RecvError {
        RecvError::Corrupt(self.end.poison(c))
    }

    /// Borrows the next message in place, waiting for one. It stays queued
    /// until [`ReadSlot::release`].
    pub fn peek(&mut self) -> Result<ReadSlot<'_>, RecvError> {
        self.wait_message(None, &mut always)?;
        self.peek_ready()
    }
    /// Like [`peek`](Self::peek), waiting at most `timeout`.
    pub fn peek_timeout(&mut self, timeout: Duration) -> Result<ReadSlot<'_>, RecvError> {
        self.wait_message(crate::wait::deadline_after(timeout), &mut always)?;
        self.peek_ready()
    }
    /// Like [`peek`](Self::peek), without waiting.
    pub fn try_peek(&mut self) -> Result<ReadSlot<'_>, RecvError> {
        self.ready_messages()?;
        self.peek_ready()
    }

    /// Counts every ready message through `tail` (at least the one already
    /// found).
    pub(super) fn count_ready(&mut self) -> Result<u32, RecvError> {
        self.ring
            .refresh_available()
            .map_err(|c| RecvError::Corrupt(self.end.poison(c)))
    }

    pub(super) fn peek_ready(&mut self) -> Result<ReadSlot<'_>, RecvError> {
        let len = self
            .ring
            .read(0, |m| m.len())
            .map_err(|c| RecvError::Corrupt(self.end.poison(c)))?;
        Ok(ReadSlot {
            receiver: self,
            len,
        })
    }

    /// Borrows up to `max` ready messages in place, waiting for at least one;
    /// they are released together by [`ReadBatch::release`].
    pub fn read_batch(&mut self, max: usize) -> Result<ReadBatch<'_>, RecvError> {
        self.wait_message(None, &mut always)?;
        let n = self.count_ready()?;
        Ok(ReadBatch {
            count: n.min(max.min(u32::MAX as usize) as u32),
            receiver: self,
        })
    }
    /// Like [`read_batch`](Self::read_batch), without waiting.
    pub fn try_read_batch(&mut self, max: usize) -> Result<ReadBatch<'_>, RecvError> {
        self.ready_messages()?;
        let n = self.count_ready()?;
        Ok(ReadBatch {
            count: n.min(max.min(u32::MAX as usize) as u32),
            receiver: self,
        })
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.end.me.close();
        // Wake a sender asleep on a full ring so it sees the close.
        self.ring.words.not_full.post();
    }
}

/// A received message borrowed in place, until [`release`](Self::release).
/// Its bytes stay in shared memory: [`bytes`](Self::bytes) copies out what
/// is needed, never a Rust reference into memory the sender can write.
#[derive(Debug)]
pub struct ReadSlot<'a> {
    receiver: &'a mut Receiver,
    len: usize,
}

impl ReadSlot<'_> {
    /// The message's bytes, in place.
    pub fn bytes(&self) -> ShmSlice<'_> {
        // `read` checked len <= slot_size; the slot stays published and
        // unreleased while this borrow of the receiver lives.
        self.receiver.ring.payload(0, self.len)
    }
    /// The message's length.
    pub fn len(&self) -> usize {
        self.len
    }
    /// Whether the message is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// A copy of the message.
    pub fn to_vec(&self) -> Vec<u8> {
        self.bytes().to_vec()
    }
    /// A copy of the message as a plain-data `T` (see
    /// [`Receiver::recv_value`]), validated: [`RecvError::WrongSize`] if
    /// its length is not `size_of::<T>()`. The message stays queued until
    /// [`release`](Self::release) either way.
    pub fn read_value<T: FromBytes + IntoBytes>(&self) -> Result<T, RecvError> {
        crate::typed::decode(self.bytes())
    }
    /// A copy of the `F` at `offset` of the message (e.g.
    /// `core::mem::offset_of!(T, field)`: one field of a large struct,
    /// without copying the rest); `None` if it is not all inside.
    pub fn read_field_at<F: FromBytes + IntoBytes>(&self, offset: usize) -> Option<F> {
        let field = self.bytes().sub(offset, core::mem::size_of::<F>())?;
        crate::typed::decode(field).ok()
    }
    /// Consumes the message, handing its slot back to the sender.
    pub fn release(self) {
        self.receiver.ring.release(1);
    }
}

/// Ready messages borrowed in place and released together.
#[derive(Debug)]
pub struct ReadBatch<'a> {
    receiver: &'a mut Receiver,
    count: u32,
}

impl ReadBatch<'_> {
    /// Messages in the batch.
    pub fn len(&self) -> usize {
        self.count as usize
    }
    /// Whether the batch is empty.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }
    /// The `i`-th message's bytes, in place; an error if the peer corrupted
    /// its length.
    pub fn get(&self, i: usize) -> Result<ShmSlice<'_>, Corruption> {
        assert!(
            i < self.len(),
            "batch index {i} out of range {}",
            self.len()
        );
        // Checked length, published slot, not released while the batch
        // borrows the receiver.
        self.receiver.ring.read_slice(i as u32)
    }
    /// Iterates over the batch's messages.
    pub fn iter(&self) -> impl Iterator<Item = Result<ShmSlice<'_>, Corruption>> + '_ {
        (0..self.len()).map(|i| self.get(i))
    }
    /// Releases every message of the batch with one store.
    pub fn release(self) {
        self.receiver.ring.release(self.count);
    }
}

//! The sending end of a link: sends, zero-copy reservations and batches.
#![warn(clippy::arithmetic_side_effects)]

use super::*;

/// The sending end of a link. `Send` but not `Sync`: one thread sends.
#[derive(Debug)]
pub struct Sender {
    pub(super) ring: Producer<RawSlots>,
    pub(super) end: EndState,
    /// Largest message (the slot size), kept here for the fast path.
    max: usize,
    /// Sends left before the fast path defers to a full check (peer
    /// process liveness, corruption); 0 forces the slow path.
    fast_budget: u32,
    /// The pollable descriptor, once asked for (`as_fd`).
    pub(super) readiness: Option<Box<crate::readiness::Readiness>>,
}

impl Sender {
    /// Opens the sending end of the link `name` with default options.
    pub fn open(name: &str) -> Result<Sender, OpenError> {
        LinkBuilder::new(name).open_sender()
    }

    pub(crate) fn attach(
        parts: RingParts,
        strategy: WaitStrategy,
        bell: Option<&Arc<dyn IvshmemDoorbell>>,
    ) -> Result<Sender, OpenError> {
        let mut ring = Producer::new(parts.words(), parts.slots(), parts.geometry())
            .map_err(|c| parts.corrupt(c))?;
        let end = EndState::new(parts, Side::Sender, strategy, bell)?;
        wake_through(bell, Side::Sender, &end.parts, &mut ring.words);
        let max = ring.geometry().slot_size as usize;
        Ok(Sender {
            ring,
            end,
            max,
            fast_budget: 0,
            readiness: None,
        })
    }

    /// The link's name.
    pub fn name(&self) -> &str {
        self.end.parts.map().name()
    }
    /// Largest message this link carries.
    pub fn max_message(&self) -> usize {
        self.max
    }
    /// Messages of the largest size the ring always holds (packed rings
    /// hold more smaller ones).
    pub fn capacity(&self) -> usize {
        self.ring.geometry().messages() as usize
    }
    /// Whether messages are packed records (else fixed slots).
    pub fn is_packed(&self) -> bool {
        self.ring.geometry().packed
    }
    /// This end's wait strategy.
    pub fn wait_strategy(&self) -> WaitStrategy {
        self.end.strategy
    }
    /// Whether this end decided it shares one CPU with its peer.
    pub fn shares_core_with_peer(&self) -> bool {
        self.end.policy.shared_core()
    }
    /// The backing memory kind.
    pub fn backing(&self) -> hwlink_drivers::BackingKind {
        self.end.parts.map().kind()
    }
    /// Whether messages are queued for a receiver that has not attached
    /// yet (so the region must outlive this end for them to be delivered).
    pub(crate) fn awaits_receiver(&self) -> bool {
        self.end.peer.ep.state_now() == HWL_EP_FREE
            && self
                .end
                .parts
                .words()
                .occupancy(self.ring.geometry())
                .is_ok_and(|n| n > 0)
    }

    /// Whether the receiver has closed or died (checks the process).
    pub fn is_disconnected(&mut self) -> bool {
        self.end.peer.status_now(&mut self.end.policy) == Peer::Gone
    }

    /// The fast path's test: a message of `len` bytes can go into a free
    /// slot right now, the receiver has not closed, and no full check is
    /// due. One load of shared memory (the receiver's state word), which
    /// only changes on attach and close.
    #[inline(always)]
    pub(super) fn fast_slot(&self, len: usize) -> bool {
        len <= self.max
            && self.fast_budget > 0
            && self.ring.cached_room(len)
            && self.end.peer.ep.state_now() <= HWL_EP_ATTACHED
    }

    /// Free slots now for messages of `len` bytes, or the reason there can
    /// be none: the slow path, which also checks the receiver's process
    /// every FULL_CHECK_EVERY sends (the fast path defers to it that often).
    pub(super) fn ready_slots(&mut self, len: usize) -> Result<u32, SendError<()>> {
        if let Some(c) = &self.end.poisoned {
            return Err(SendError::Corrupt(c.clone()));
        }
        if let Err(c) = self.end.truncation() {
            return Err(SendError::Corrupt(self.end.poison(c)));
        }
        let check = self.fast_budget == 0;
        if check {
            self.ring.refresh_peer_mode();
        }
        if self.end.peer.status(&mut self.end.policy, false) == Peer::Gone {
            return Err(SendError::Disconnected(()));
        }
        match self.ring.free_for(len) {
            Ok(0) => {
                // Full: the receiver may have died with the ring full.
                if self.end.peer.status(&mut self.end.policy, false) == Peer::Gone {
                    return Err(SendError::Disconnected(()));
                }
                if self.readiness.is_some() {
                    self.arm_readiness();
                }
                Err(SendError::Full(()))
            }
            Ok(n) => {
                if check {
                    self.fast_budget = FULL_CHECK_EVERY;
                }
                Ok(n)
            }
            Err(c) => Err(SendError::Corrupt(self.end.poison(c))),
        }
    }

    /// Blocks (per the wait strategy) until a slot for `len` bytes is free.
    pub(super) fn wait_slot(
        &mut self,
        len: usize,
        deadline: Option<Instant>,
        alive: Alive<'_>,
    ) -> Result<u32, SendError<()>> {
        if self.ring.cached_room(len) {
            return self.ready_slots(len);
        }
        loop {
            match self.ready_slots(len) {
                Err(SendError::Full(())) => {}
                other => return other,
            }
            self.ring.hand_over = self.end.policy.shared_core();
            let ring = &self.ring;
            // has_room_now reads `head` itself: a corrupt one ends the wait
            // and is reported by the next free().
            let ready = |_audit: bool| Ok(ring.has_room_for_now(len));
            match wait_ready(&mut self.end, &ring.words.not_full, deadline, alive, ready) {
                Ok(WaitEnd::Ready) => {}
                Ok(WaitEnd::TimedOut) => return Err(SendError::Timeout(())),
                Ok(WaitEnd::PeerGone) => return Err(SendError::Disconnected(())),
                Err(c) => return Err(SendError::Corrupt(self.end.poison(c))),
            }
        }
    }

    /// The link's one send (every public form comes here): the fast path
    /// (a cached free slot), else [`send_slow`](Self::send_slow), which
    /// fails with `Full` at once without `p.block`, and otherwise waits for
    /// a slot per `p`.
    #[inline(always)]
    pub(crate) fn send_deadline<M: AsRef<[u8]>>(
        &mut self,
        msg: M,
        p: Patience<'_>,
    ) -> Result<(), SendError<M>> {
        let len = msg.as_ref().len();
        if self.fast_slot(len) {
            self.fast_budget = self.fast_budget.saturating_sub(1);
            self.ring.write(0, msg.as_ref());
            self.ring.publish(1);
            return Ok(());
        }
        self.send_slow(msg, p)
    }

    /// Everything but the fast path: full checks, waiting, errors.
    #[cold]
    #[inline(never)]
    pub(super) fn send_slow<M: AsRef<[u8]>>(
        &mut self,
        msg: M,
        p: Patience<'_>,
    ) -> Result<(), SendError<M>> {
        let (deadline, block) = (p.deadline, p.block);
        let mut always = crate::wait::always;
        let alive: Alive<'_> = p.alive.unwrap_or(&mut always);
        let len = msg.as_ref().len();
        if len > self.max_message() {
            return Err(SendError::TooLarge {
                msg,
                len,
                max: self.max_message(),
            });
        }
        let got = if block {
            self.wait_slot(len, deadline, alive)
        } else {
            self.ready_slots(len)
        };
        match got {
            Ok(_) => {
                self.ring.write(0, msg.as_ref());
                self.ring.publish(1);
                Ok(())
            }
            Err(e) => Err(rebind(e, msg)),
        }
    }

    send_forms!();
    typed_send_forms!(send_deadline());

    /// Reserves a slot for an in-place write of up to `len` bytes, waiting
    /// for space. Nothing is sent until [`WriteSlot::commit`].
    pub fn reserve(&mut self, len: usize) -> Result<WriteSlot<'_>, SendError<()>> {
        self.reserve_deadline(len, None, true)
    }
    /// Like [`reserve`](Self::reserve), waiting at most `timeout`.
    pub fn reserve_timeout(
        &mut self,
        len: usize,
        timeout: Duration,
    ) -> Result<WriteSlot<'_>, SendError<()>> {
        self.reserve_deadline(len, crate::wait::deadline_after(timeout), true)
    }
    /// Like [`reserve`](Self::reserve), without waiting.
    pub fn try_reserve(&mut self, len: usize) -> Result<WriteSlot<'_>, SendError<()>> {
        self.reserve_deadline(len, None, false)
    }

    /// Reserves a slot for one `T`, to write in place
    /// ([`ValueSlot::write`], [`ValueSlot::write_field_at`]) and send with
    /// [`ValueSlot::commit`]; waits for space. The receiver takes it with
    /// [`Receiver::recv_value`] or [`ReadSlot::read_value`].
    pub fn reserve_value<T: IntoBytes + Immutable>(
        &mut self,
    ) -> Result<ValueSlot<'_, T>, SendError<()>> {
        self.reserve(core::mem::size_of::<T>()).map(ValueSlot::new)
    }
    /// Like [`reserve_value`](Self::reserve_value), without waiting.
    pub fn try_reserve_value<T: IntoBytes + Immutable>(
        &mut self,
    ) -> Result<ValueSlot<'_, T>, SendError<()>> {
        self.try_reserve(core::mem::size_of::<T>())
            .map(ValueSlot::new)
    }

    pub(super) fn reserve_deadline(
        &mut self,
        len: usize,
        deadline: Option<Instant>,
        block: bool,
    ) -> Result<WriteSlot<'_>, SendError<()>> {
        // The same fast path as a send: a cached free slot and an attached
        // receiver, with the full checks every FULL_CHECK_EVERY calls.
        if self.fast_slot(len) {
            self.fast_budget = self.fast_budget.saturating_sub(1);
            self.ring.place(0, len);
            return Ok(WriteSlot { sender: self, len });
        }
        if len > self.max_message() {
            return Err(SendError::TooLarge {
                msg: (),
                len,
                max: self.max_message(),
            });
        }
        if block {
            self.wait_slot(len, deadline, &mut always)?
        } else {
            self.ready_slots(len)?
        };
        self.ring.place(0, len);
        Ok(WriteSlot { sender: self, len })
    }

    /// Starts a batch of up to `max` messages written in place and published
    /// with one store; waits until at least one slot is free.
    pub fn write_batch(&mut self, max: usize) -> Result<WriteBatch<'_>, SendError<()>> {
        let free = self.wait_slot(self.max, None, &mut always)?;
        Ok(WriteBatch {
            limit: free.min(max.min(u32::MAX as usize) as u32),
            written: 0,
            sender: self,
        })
    }
    /// Like [`write_batch`](Self::write_batch), without waiting.
    pub fn try_write_batch(&mut self, max: usize) -> Result<WriteBatch<'_>, SendError<()>> {
        let free = self.ready_slots(self.max)?;
        Ok(WriteBatch {
            limit: free.min(max.min(u32::MAX as usize) as u32),
            written: 0,
            sender: self,
        })
    }
}

pub(super) fn rebind<M>(e: SendError<()>, msg: M) -> SendError<M> {
    e.with_msg(msg)
}

impl Drop for Sender {
    fn drop(&mut self) {
        self.end.me.close();
        // Wake a receiver asleep on an empty ring so it sees the close.
        self.ring.words.not_empty.post();
    }
}

/// A slot reserved for an in-place write; dereferences to its bytes.
#[derive(Debug)]
pub struct WriteSlot<'a> {
    sender: &'a mut Sender,
    len: usize,
}

impl WriteSlot<'_> {
    /// Publishes the slot with its full reserved length.
    pub fn commit(self) {
        let len = self.len;
        self.commit_len(len)
    }
    /// Publishes the first `len` bytes (at most the reserved length).
    pub fn commit_len(self, len: usize) {
        let len = len.min(self.len) as u32;
        self.sender.ring.set_len(0, len);
        self.sender.ring.publish(1);
    }
}

impl WriteSlot<'_> {
    /// The reserved length.
    pub fn len(&self) -> usize {
        self.len
    }
    /// Whether zero bytes were reserved.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// The reserved bytes, to write in place. They live in shared memory,
    /// so they are written by copy (see [`ShmSliceMut`]), never through a
    /// Rust reference.
    pub fn bytes_mut(&mut self) -> ShmSliceMut<'_> {
        // The slot is free and owned by this producer until publish; it
        // holds at least `len` <= slot_size payload bytes; the `&mut self`
        // borrow keeps the view exclusive in this process.
        self.sender.ring.payload_mut(0, self.len)
    }
    /// Copies `src` to `offset` of the reserved bytes; false (nothing
    /// written) if it does not fit.
    pub fn write_at(&mut self, offset: usize, src: &[u8]) -> bool {
        self.bytes_mut().write_at(offset, src)
    }
    /// Copies `src` to the start of the reserved bytes; returns how many
    /// (the smaller of the two lengths).
    pub fn copy_from(&mut self, src: &[u8]) -> usize {
        self.bytes_mut().copy_from(src)
    }
}

/// Messages written in place and published together by one store.
#[derive(Debug)]
pub struct WriteBatch<'a> {
    sender: &'a mut Sender,
    limit: u32,
    written: u32,
}

impl WriteBatch<'_> {
    /// Slots left in this batch.
    pub fn remaining(&self) -> usize {
        self.limit.saturating_sub(self.written) as usize
    }
    /// Copies one message into the batch; hands it back if the batch is full
    /// or it is too large.
    pub fn push<M: AsRef<[u8]>>(&mut self, msg: M) -> Result<(), SendError<M>> {
        let len = msg.as_ref().len();
        if len > self.sender.max_message() {
            return Err(SendError::TooLarge {
                msg,
                len,
                max: self.sender.max_message(),
            });
        }
        if self.written == self.limit {
            return Err(SendError::Full(msg));
        }
        self.sender.ring.write(self.written, msg.as_ref());
        self.written = self.written.saturating_add(1);
        Ok(())
    }
    /// Reserves the next slot for `len` bytes and returns them for writing
    /// (in place, by copy: see [`ShmSliceMut`]).
    pub fn slot(&mut self, len: usize) -> Option<ShmSliceMut<'_>> {
        if self.written == self.limit || len > self.sender.max_message() {
            return None;
        }
        let k = self.written;
        self.sender.ring.place(k, len);
        self.sender.ring.set_len(k, len as u32);
        self.written = self.written.saturating_add(1);
        // Slot k is free and ours until publish, and holds `len` payload
        // bytes; the borrow of self keeps it exclusive.
        Some(self.sender.ring.payload_mut(k, len))
    }
    /// Publishes every message of the batch with one release store; returns
    /// how many.
    pub fn commit(self) -> usize {
        if self.written > 0 {
            self.sender.ring.publish(self.written);
        }
        self.written as usize
    }
}

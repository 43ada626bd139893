//! Sending through a rendezvous: hand-off to a waiting receiver, posting and
//! waiting for one, try_send.

use super::*;

impl<M: RdvMem> Rdv<M> {
    // ----- sending -------------------------------------------------------

    /// Hands `msg` to a receiver that is already waiting, and returns once
    /// it has received it. Fails at once with `NoReceiver` if none waits;
    /// once a receiver is committed it waits for its acknowledgement (or its
    /// death, which hands the message back and tries the next receiver).
    pub(crate) fn try_send(
        &self,
        msg: &[u8],
    ) -> Result<(), RdvSendError<core::convert::Infallible>> {
        self.check_len(msg)?;
        // A receiver that is really waiting takes the message within
        // microseconds; one that does not take it by then (descheduled for
        // long, or a cell a hostile process forged as waiting) gets it
        // withdrawn, and the try reports nobody waiting: never delivered.
        let deadline = crate::wait::deadline_after(TRY_HANDOFF);
        loop {
            match self.hand_to_waiting(msg, deadline, WaitStrategy::SpinPark, &mut || Ok(())) {
                Ok(Handed::Delivered) => return Ok(()),
                Ok(Handed::NoneWaiting) | Err(RdvSendError::Timeout) => {
                    return Err(RdvSendError::NoReceiver)
                }
                Ok(Handed::ReceiverDied) => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Sends `msg` and returns only after a receiver has received it, or
    /// with an error (the message not delivered) when `deadline` passes or
    /// `peer_ok` fails. `peer_ok` is called about once per sleep slice
    /// (50 ms) while the message can still be withdrawn, so a link can
    /// report its dead peer.
    pub(crate) fn send<E>(
        &self,
        msg: &[u8],
        deadline: Option<Instant>,
        wait: WaitStrategy,
        peer_ok: &mut dyn FnMut() -> Result<(), E>,
    ) -> Result<(), RdvSendError<E>> {
        self.check_len(msg)?;
        loop {
            match self.hand_to_waiting(msg, deadline, wait, peer_ok)? {
                Handed::Delivered => return Ok(()),
                Handed::ReceiverDied => continue,
                Handed::NoneWaiting => {}
            }
            if let Some(cell) = self.claim_free()? {
                return self.post_and_wait(cell, msg, deadline, wait, peer_ok);
            }
            self.wait_for_cells(RECV_WAITING, deadline, wait, peer_ok)?;
        }
    }

    pub(super) fn check_len<E>(&self, msg: &[u8]) -> Result<(), RdvSendError<E>> {
        if msg.len() > self.slot_size as usize {
            return Err(RdvSendError::TooLarge {
                len: msg.len(),
                max: self.slot_size as usize,
            });
        }
        Ok(())
    }

    /// Fills the oldest RECV_WAITING cell and waits for its ack.
    pub(super) fn hand_to_waiting<E>(
        &self,
        msg: &[u8],
        deadline: Option<Instant>,
        wait: WaitStrategy,
        peer_ok: &mut dyn FnMut() -> Result<(), E>,
    ) -> Result<Handed, RdvSendError<E>> {
        for _ in 0..self.retries() {
            let Some((cell, rw)) = self.oldest(RECV_WAITING)? else {
                return Ok(Handed::NoneWaiting);
            };
            let filling = self.mine(FILLING);
            // [A-reg]: pairs with the receiver's R-reg; the cell header is
            // visible, and nobody else writes the payload until we free it.
            if self
                .state(cell)
                .compare_exchange(rw, filling, Ordering::Acquire, Ordering::Relaxed)
                .is_err()
            {
                continue;
            }
            let owner = self.mem.field(cell, Field::Owner).load(Ordering::Relaxed);
            // The cell is FILLING by us; msg.len() <= slot_size (checked
            // by every caller).
            self.mem.write_payload(cell, msg);
            self.mem
                .field(cell, Field::Len)
                .store(msg.len() as u32, Ordering::Relaxed);
            // [R-fill]: pairs with the receiver's A-fill; publishes payload
            // and len. Only we move FILLING|us onward while we live.
            if let Err(found) = self.state(cell).compare_exchange(
                filling,
                self.mine(FILLED),
                Ordering::Release,
                Ordering::Relaxed,
            ) {
                return Err(out_of_turn(found).into());
            }
            // [F-fill]: pairs with the fence in the owner's doorbell sleep.
            fence(Ordering::SeqCst);
            self.mem.owner_bell(cell).notify();
            return self.wait_ack(cell, rw, owner, deadline, wait, peer_ok);
        }
        Ok(Handed::NoneWaiting)
    }

    /// Waits until the receiver of `cell` acknowledges our message. Before
    /// it starts reading, the message can be withdrawn (deadline, hook) by
    /// giving the cell back to the receiver (FILLED → its RECV_WAITING
    /// word `rw`); a dead receiver's cell is freed and the message is ours
    /// again.
    pub(super) fn wait_ack<E>(
        &self,
        cell: u32,
        rw: u64,
        owner: u32,
        deadline: Option<Instant>,
        wait: WaitStrategy,
        peer_ok: &mut dyn FnMut() -> Result<(), E>,
    ) -> Result<Handed, RdvSendError<E>> {
        let (filled, reading, acked) = (self.mine(FILLED), self.mine(READING), self.mine(ACKED));
        let state = self.state(cell);
        let alive = self.alive;
        let mut reading_since: Option<Instant> = None;
        let outcome = self.wait_for(
            self.mem.peer_bell(cell),
            wait,
            deadline,
            SLICE,
            |tick| -> Result<Option<Result<Handed, Stop<E>>>, Stop<E>> {
                // [A-ack]: pairs with the receiver's R-ack.
                let w = checked(state.load(Ordering::Acquire))?;
                if w == acked {
                    return Ok(Some(Ok(Handed::Delivered)));
                }
                if w == filled {
                    let mut stop = None;
                    if tick >= Tick::Clock && past(deadline) {
                        stop = Some(Stop::Timeout);
                    } else if tick == Tick::Slice {
                        if let Err(e) = peer_ok() {
                            stop = Some(Stop::Peer(e));
                        } else if !alive(owner) {
                            // The receiver died before reading: reclaim.
                            if state
                                .compare_exchange(filled, 0, Ordering::Release, Ordering::Relaxed)
                                .is_ok()
                            {
                                return Ok(Some(Ok(Handed::ReceiverDied)));
                            }
                            return Ok(None);
                        }
                    }
                    if let Some(stop) = stop {
                        // Withdraw: the receiver keeps waiting for another.
                        if state
                            .compare_exchange(filled, rw, Ordering::Relaxed, Ordering::Relaxed)
                            .is_ok()
                        {
                            return Ok(Some(Err(stop)));
                        }
                        // Lost: the receiver is reading; wait for its ack.
                    }
                    return Ok(None);
                }
                if w == reading {
                    if tick == Tick::Slice
                        && !alive(owner)
                        && state
                            .compare_exchange(reading, 0, Ordering::Release, Ordering::Relaxed)
                            .is_ok()
                    {
                        return Ok(Some(Ok(Handed::ReceiverDied)));
                    }
                    // Reading for too long, past our deadline or with the
                    // peer gone: take the message back (a real reader that
                    // finishes after all fails its ack: never delivered).
                    let since = *reading_since.get_or_insert_with(Instant::now);
                    let stop = overdue(tick, since, deadline, &mut *peer_ok);
                    return match stop {
                        Some(stop)
                            if state
                                .compare_exchange(reading, 0, Ordering::AcqRel, Ordering::Relaxed)
                                .is_ok() =>
                        {
                            Ok(Some(Err(stop)))
                        }
                        _ => Ok(None),
                    };
                }
                Err(out_of_turn(w).into())
            },
        );
        match outcome {
            Ok(Ok(Handed::Delivered)) => {
                // [R-free]: the receiver's reads happened before its ack,
                // which we acquired; the next claimant acquires this.
                state.store(0, Ordering::Release);
                self.announce_free();
                Ok(Handed::Delivered)
            }
            Ok(Ok(other)) => {
                self.announce_free();
                Ok(other)
            }
            Ok(Err(stop)) => {
                // The cell went back to RECV_WAITING: wake its owner, whose
                // own deadline may have passed meanwhile.
                fence(Ordering::SeqCst);
                self.mem.owner_bell(cell).notify();
                Err(stop.into())
            }
            Err(stop) => Err(stop.into()),
        }
    }

    /// Posts `msg` in our CLAIMED `cell` and waits until a receiver has taken
    /// it, or withdraws it at the deadline.
    pub(super) fn post_and_wait<E>(
        &self,
        cell: u32,
        msg: &[u8],
        deadline: Option<Instant>,
        wait: WaitStrategy,
        peer_ok: &mut dyn FnMut() -> Result<(), E>,
    ) -> Result<(), RdvSendError<E>> {
        // The cell is CLAIMED by us; msg.len() <= slot_size.
        self.mem.write_payload(cell, msg);
        self.mem
            .field(cell, Field::Len)
            .store(msg.len() as u32, Ordering::Relaxed);
        let posted = self.mine(SEND_WAITING);
        // [R-post]: pairs with a receiver's A-post; publishes the message.
        self.state(cell).store(posted, Ordering::Release);
        self.announce_post();
        let state = self.state(cell);
        let alive = self.alive;
        // The TAKING word we see and since when: a taker copies one message
        // and is done in far less than TAKE_GRACE, unless it is no taker
        // at all (a word a hostile or broken process wrote).
        let mut taking: Option<(u64, Instant)> = None;
        let outcome = self.wait_for(
            self.mem.owner_bell(cell),
            wait,
            deadline,
            SLICE,
            |tick| -> Result<Option<Result<(), Stop<E>>>, Stop<E>> {
                // [A-take]: pairs with the receiver's R-take.
                let w = checked(state.load(Ordering::Acquire))?;
                if w == posted {
                    let mut stop = None;
                    if tick >= Tick::Clock && past(deadline) {
                        stop = Some(Stop::Timeout);
                    } else if tick == Tick::Slice {
                        stop = peer_ok().err().map(Stop::Peer);
                    }
                    if let Some(stop) = stop {
                        if state
                            .compare_exchange(posted, 0, Ordering::Release, Ordering::Relaxed)
                            .is_ok()
                        {
                            return Ok(Some(Err(stop)));
                        }
                        // Lost: a receiver is taking it; wait for it.
                    }
                    return Ok(None);
                }
                match kind(w) {
                    TAKEN => Ok(Some(Ok(()))),
                    TAKING => {
                        if tick == Tick::Slice
                            && !alive(token_of(w))
                            && state
                                .compare_exchange(w, posted, Ordering::Relaxed, Ordering::Relaxed)
                                .is_ok()
                        {
                            // The taker died before its ack: offer again.
                            self.announce_post();
                            taking = None;
                            return Ok(None);
                        }
                        let since = match taking {
                            Some((seen, t)) if seen == w => t,
                            _ => {
                                taking = Some((w, Instant::now()));
                                return Ok(None);
                            }
                        };
                        // Taking for too long, past our deadline or with
                        // the peer gone: take the message back. A real
                        // taker that finishes after all fails its ack and
                        // reports the cell out of turn: never delivered,
                        // as we report.
                        let stop = overdue(tick, since, deadline, &mut *peer_ok);
                        match stop {
                            Some(stop)
                                if state
                                    .compare_exchange(w, 0, Ordering::AcqRel, Ordering::Relaxed)
                                    .is_ok() =>
                            {
                                Ok(Some(Err(stop)))
                            }
                            _ => Ok(None),
                        }
                    }
                    _ => Err(out_of_turn(w).into()),
                }
            },
        );
        match outcome {
            Ok(Ok(())) => {
                // [R-free]
                state.store(0, Ordering::Release);
                self.announce_free();
                Ok(())
            }
            Ok(Err(stop)) => {
                self.announce_free();
                Err(stop.into())
            }
            Err(stop) => Err(stop.into()),
        }
    }
}

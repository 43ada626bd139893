//! Receiving through a rendezvous: taking a posted message, or registering and
//! waiting for a sender.

use super::*;

impl<M: RdvMem> Rdv<M> {
    // ----- receiving -----------------------------------------------------

    /// Receives a message from a sender that is already waiting, passing it
    /// to `f`; fails at once with `NoSender` otherwise.
    pub(crate) fn try_recv_with<R>(
        &self,
        f: impl FnOnce(ShmSlice<'_>) -> R,
    ) -> Result<R, RdvRecvError<core::convert::Infallible>> {
        let mut f = Some(f);
        match self.take_posted(&mut f)? {
            Some(r) => Ok(r),
            None => Err(RdvRecvError::NoSender),
        }
    }

    /// Receives one message, passing it to `f` (which runs before the sender
    /// is released), or fails when `deadline` passes or `peer_ok` fails
    /// (called about once per sleep slice while waiting).
    pub(crate) fn recv_with<R, E>(
        &self,
        f: impl FnOnce(ShmSlice<'_>) -> R,
        deadline: Option<Instant>,
        wait: WaitStrategy,
        peer_ok: &mut dyn FnMut() -> Result<(), E>,
    ) -> Result<R, RdvRecvError<E>> {
        let mut f = Some(f);
        loop {
            if let Some(r) = self.take_posted(&mut f)? {
                return Ok(r);
            }
            if let Some(cell) = self.claim_free()? {
                return self.register_and_wait(cell, &mut f, deadline, wait, peer_ok);
            }
            self.wait_for_cells(SEND_WAITING, deadline, wait, peer_ok)?;
        }
    }

    /// Takes the oldest posted message, if any.
    pub(super) fn take_posted<R>(
        &self,
        f: &mut Option<impl FnOnce(ShmSlice<'_>) -> R>,
    ) -> Result<Option<R>, Corruption> {
        for _ in 0..self.retries() {
            let Some((cell, posted)) = self.oldest(SEND_WAITING)? else {
                return Ok(None);
            };
            let taking = self.mine(TAKING);
            // [A-post]: pairs with the sender's R-post: payload and len.
            if self
                .state(cell)
                .compare_exchange(posted, taking, Ordering::Acquire, Ordering::Relaxed)
                .is_err()
            {
                continue;
            }
            let r = match self.read_out(cell, f) {
                Ok(r) => r,
                Err(c) => {
                    // Give the cell up; its sender sees FREE and reports it.
                    self.state(cell).store(0, Ordering::Release);
                    self.announce_free();
                    return Err(c);
                }
            };
            // [R-take]: pairs with the sender's A-take; our reads and `f`
            // happen before the sender returns and reuses the cell.
            let done = self.state(cell).compare_exchange(
                taking,
                self.mine(TAKEN),
                Ordering::Release,
                Ordering::Relaxed,
            );
            // [F-take]: pairs with the fence in the sender's doorbell sleep.
            fence(Ordering::SeqCst);
            self.mem.owner_bell(cell).notify();
            return match done {
                Ok(_) => Ok(Some(r)),
                Err(found) => Err(out_of_turn(found)),
            };
        }
        Ok(None)
    }

    /// Reads the message out of a cell we hold for reading: `len` once,
    /// checked, then `f` on the payload.
    pub(super) fn read_out<R>(
        &self,
        cell: u32,
        f: &mut Option<impl FnOnce(ShmSlice<'_>) -> R>,
    ) -> Result<R, Corruption> {
        let len = self.mem.field(cell, Field::Len).load(Ordering::Relaxed);
        if len > self.slot_size {
            return Err(Corruption::new(
                "rendezvous message length",
                len.into(),
                self.slot_size.into(),
            ));
        }
        let f = f.take().expect("a receive runs its closure once");
        // We hold the cell for reading (TAKING or READING, reached with
        // Acquire after the writer's Release) and len <= slot_size.
        Ok(self.mem.read_payload(cell, len as usize, f))
    }

    /// Registers our CLAIMED `cell` as RECV_WAITING and waits for a sender
    /// to fill it; meanwhile takes a posted message instead if one appears.
    pub(super) fn register_and_wait<R, E>(
        &self,
        cell: u32,
        f: &mut Option<impl FnOnce(ShmSlice<'_>) -> R>,
        deadline: Option<Instant>,
        wait: WaitStrategy,
        peer_ok: &mut dyn FnMut() -> Result<(), E>,
    ) -> Result<R, RdvRecvError<E>> {
        enum Event<E> {
            Filled(u32),
            Posted,
            Cancelled(Stop<E>),
            /// Given up while a filler held the cell, which stays ours.
            Abandoned(Stop<E>),
        }
        let registered = self.mine(RECV_WAITING);
        let claimed = self.mine(CLAIMED);
        let state = self.state(cell);
        let alive = self.alive;
        let mut register = true;
        let mut filling: Option<(u64, Instant)> = None;
        loop {
            if register {
                // [R-reg]: pairs with a sender's A-reg; publishes the header.
                state.store(registered, Ordering::Release);
                // [F-reg]: Dekker with a sender's F-post: either it sees our
                // RECV_WAITING (and wakes us), or our scan sees its post.
                fence(Ordering::SeqCst);
                self.mem.cells_bell().notify();
            }
            let event = self.wait_for(
                self.mem.owner_bell(cell),
                wait,
                deadline,
                SLICE,
                |tick| -> Result<Option<Event<E>>, Stop<E>> {
                    let w = checked(state.load(Ordering::Acquire))?;
                    if w == registered {
                        let mut stop = None;
                        if tick >= Tick::Clock && past(deadline) {
                            stop = Some(Stop::Timeout);
                        } else if tick == Tick::Slice {
                            stop = peer_ok().err().map(Stop::Peer);
                        }
                        if let Some(stop) = stop {
                            if state
                                .compare_exchange(
                                    registered,
                                    0,
                                    Ordering::Release,
                                    Ordering::Relaxed,
                                )
                                .is_ok()
                            {
                                return Ok(Some(Event::Cancelled(stop)));
                            }
                            // Lost: a sender is filling it; take its message.
                            return Ok(None);
                        }
                        if self.oldest(SEND_WAITING)?.is_some() {
                            return Ok(Some(Event::Posted));
                        }
                        return Ok(None);
                    }
                    match kind(w) {
                        FILLING => {
                            if tick == Tick::Slice && !alive(token_of(w)) {
                                // The filler died mid-copy: wait again.
                                let _ = state.compare_exchange(
                                    w,
                                    registered,
                                    Ordering::Relaxed,
                                    Ordering::Relaxed,
                                );
                                filling = None;
                                return Ok(None);
                            }
                            let since = match filling {
                                Some((seen, t)) if seen == w => t,
                                _ => {
                                    filling = Some((w, Instant::now()));
                                    return Ok(None);
                                }
                            };
                            // Filling for too long, past our deadline or
                            // with the peer gone: give up on it. The cell
                            // stays ours (CLAIMED) while we live, so that a
                            // real filler still copying writes into no one
                            // else's message; its publish then fails.
                            let stop = overdue(tick, since, deadline, &mut *peer_ok);
                            match stop {
                                Some(stop)
                                    if state
                                        .compare_exchange(
                                            w,
                                            claimed,
                                            Ordering::AcqRel,
                                            Ordering::Relaxed,
                                        )
                                        .is_ok() =>
                                {
                                    Ok(Some(Event::Abandoned(stop)))
                                }
                                _ => Ok(None),
                            }
                        }
                        FILLED => {
                            // [A-fill]: pairs with the sender's R-fill.
                            let reading = word(READING, token_of(w));
                            match state.compare_exchange(
                                w,
                                reading,
                                Ordering::Acquire,
                                Ordering::Relaxed,
                            ) {
                                Ok(_) => Ok(Some(Event::Filled(token_of(w)))),
                                Err(_) => Ok(None), // withdrawn; look again
                            }
                        }
                        _ => Err(out_of_turn(w).into()),
                    }
                },
            )?;
            match event {
                Event::Filled(sender) => {
                    let r = match self.read_out(cell, f) {
                        Ok(r) => r,
                        Err(c) => {
                            // The sender sees FREE and reports corruption.
                            state.store(0, Ordering::Release);
                            self.announce_free();
                            return Err(c.into());
                        }
                    };
                    // [R-ack]: pairs with the sender's A-ack; after this we
                    // never touch the cell again (the sender frees it). A
                    // CAS: a sender that took its message back (we were too
                    // slow) has the cell, and the message was not delivered.
                    let acked = state.compare_exchange(
                        word(READING, sender),
                        word(ACKED, sender),
                        Ordering::Release,
                        Ordering::Relaxed,
                    );
                    // [F-ack]: pairs with the fence in the sender's sleep.
                    fence(Ordering::SeqCst);
                    self.mem.peer_bell(cell).notify();
                    return match acked {
                        Ok(_) => Ok(r),
                        Err(found) => Err(out_of_turn(found).into()),
                    };
                }
                Event::Cancelled(stop) => {
                    self.announce_free();
                    return Err(stop.into());
                }
                Event::Abandoned(stop) => return Err(stop.into()),
                Event::Posted => {
                    // Withdraw first, so no sender can fill our cell while
                    // we take another's message.
                    if state
                        .compare_exchange(registered, claimed, Ordering::Relaxed, Ordering::Relaxed)
                        .is_err()
                    {
                        // A sender claimed our cell first: wait for its
                        // message (the wait handles FILLING and FILLED, and
                        // RECV_WAITING again if the sender withdraws).
                        register = false;
                        continue;
                    }
                    match self.take_posted(f) {
                        Ok(Some(r)) => {
                            state.store(0, Ordering::Release);
                            self.announce_free();
                            return Ok(r);
                        }
                        Ok(None) => register = true, // taken by another: register again
                        Err(c) => {
                            state.store(0, Ordering::Release);
                            self.announce_free();
                            return Err(c.into());
                        }
                    }
                }
            }
        }
    }
}

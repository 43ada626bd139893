//! The producing side of an MPMC ring: claiming a position, holding its slot
//! while the message is copied, publishing it.

use super::*;

impl<M: MpmcMem> MpmcRing<M> {
    /// Appends `msg`, as the producer attached at entry `me` (also the
    /// sender tag the consumer sees). A slot of the previous lap that a
    /// dead consumer held is released on the way.
    pub(crate) fn try_push(
        &self,
        msg: &[u8],
        me: u32,
        owners: &impl Owners,
    ) -> Result<(), PushError> {
        if msg.len() > self.geometry.slot_size as usize {
            return Err(PushError::TooLarge);
        }
        if self.geometry.solo {
            return self.push_solo(msg, me);
        }
        let cap = self.cap();
        // Positions are read with acquire and moved with acquire-release
        // (free on x86), so a sequence word read after them is at most one
        // lap stale, which bounds the corruption checks below.
        let mut pos = self.mem.enqueue().load(Ordering::Acquire);
        for _ in 0..MAX_ROUNDS {
            open_at(pos)?;
            let index = self.index(pos);
            let seq = self.turn(index);
            // M1 (acquire): pairs with a consumer's M3 release of this turn,
            // so its reads of the old message happen before our writes.
            // The slot is claimed straight away if it is free for pos (CAS
            // `pos -> WRITING(me, pos)`), the common case: one exclusive
            // fetch of its cache line, not a shared one and then another to
            // claim it. Failing, the CAS returns the turn as a load would.
            let mine = held(WRITING, me, pos);
            let s = match seq.compare_exchange(pos, mine, Ordering::Acquire, Ordering::Acquire) {
                Ok(_) => match self.advance_enqueue(pos) {
                    Ok(()) => return self.write(index, pos, mine, msg, me),
                    Err(e) => {
                        // Sealed before our position counted: give the
                        // slot back unwritten.
                        let _ =
                            seq.compare_exchange(mine, pos, Ordering::Release, Ordering::Relaxed);
                        return Err(e);
                    }
                },
                Err(s) => s,
            };
            let previous = pos.checked_sub(cap);
            match decode(s) {
                // Claimed by another producer that has not moved the
                // position yet: move it for them.
                Turn::Writing { pos: p, .. } if p == pos => {
                    pos = move_past(self.mem.enqueue(), pos);
                    continue;
                }
                // The previous lap is being read by a consumer: full, unless
                // that consumer died holding it.
                Turn::Reading { owner, pos: p } if Some(p) == previous => {
                    if !owners.dead(owner) {
                        return Err(PushError::Full);
                    }
                    self.take_back(index, s).map_err(PushError::Corrupt)?;
                    continue;
                }
                // The previous lap's message is still there (published, being
                // written, or a hole consumers have not stepped over).
                Turn::Plain(t) if Some(t) == previous.map(|p| p.wrapping_add(1)) => {
                    return Err(PushError::Full)
                }
                Turn::Writing { pos: p, .. } | Turn::Void(p) if Some(p) == previous => {
                    return Err(PushError::Full)
                }
                // Ahead of us (by any number of laps: we may have been
                // preempted since we read the position): another producer
                // took pos, so a fresh read must be further on.
                Turn::Plain(t) if t > pos && t < HWL_MPMC_POS_LIMIT => {
                    pos = self.fresh_enqueue(pos, s)?;
                    continue;
                }
                // Taken, published, read or voided at pos or later: our
                // position is stale.
                Turn::Writing { pos: p, .. } if p > pos && p < MAX_POS => {
                    pos = self.fresh_enqueue(pos, s)?;
                    continue;
                }
                Turn::Reading { pos: p, .. } | Turn::Void(p) if p >= pos && p < MAX_POS => {
                    pos = self.fresh_enqueue(pos, s)?;
                    continue;
                }
                _ => {
                    return Err(PushError::Corrupt(Corruption::new(
                        "mpmc slot turn for the enqueue position",
                        s,
                        pos,
                    )))
                }
            }
        }
        Err(PushError::Corrupt(Corruption::new(
            "mpmc push rounds (turns keep changing)",
            MAX_ROUNDS.into(),
            MAX_ROUNDS.into(),
        )))
    }

    /// [`try_push`](Self::try_push) on a solo ring (SPEC §9, "Solo rings"), by its one
    /// producer: no slot is held and nothing is read from the slot. Room
    /// comes from the consumer's `dequeue_pos` (read only when the last
    /// reading is used up); the position is counted first (a CAS on our
    /// own word, which fails only on a seal), then the slot is written and
    /// published with plain stores: no locked instruction waits for the
    /// slot's cache line to arrive from the consumer.
    fn push_solo(&self, msg: &[u8], me: u32) -> Result<(), PushError> {
        let cap = self.cap();
        let pos = self.mem.enqueue().load(Ordering::Acquire);
        open_at(pos)?;
        if pos >= self.free_until.load(Ordering::Relaxed) {
            // M1s (acquire): pairs with the consumer's M3s, so its reads of
            // the slots it has passed happen before our writes to them.
            let deq = self.mem.dequeue().load(Ordering::Acquire);
            if deq > pos {
                return Err(PushError::Corrupt(Corruption::new(
                    "mpmc dequeue position past the enqueue position",
                    deq,
                    pos,
                )));
            }
            // deq <= pos < MAX_POS: no overflow.
            let until = deq.wrapping_add(cap);
            self.free_until.store(until, Ordering::Relaxed);
            if pos >= until {
                return Err(PushError::Full);
            }
        }
        match self.mem.enqueue().compare_exchange(
            pos,
            pos.wrapping_add(1),
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            Ok(_) => {}
            Err(now) if now == pos | SEALED => return Err(PushError::Sealed),
            Err(now) => {
                return Err(PushError::Corrupt(Corruption::new(
                    "mpmc enqueue position of a solo ring moved by another",
                    now,
                    pos,
                )))
            }
        }
        let index = self.index(pos);
        // The slot is free for pos (the consumer has passed pos - capacity)
        // and only we write it.
        self.copy_in(index, msg, me);
        // M0s (release): publishes the payload and meta.
        self.turn(index)
            .store(pos.wrapping_add(1), Ordering::Release);
        Ok(())
    }

    /// Copies `msg` (at most `slot_size` bytes: checked by the caller) and
    /// its `len | sender << 32` word into slot `index`, which the caller
    /// alone may write now; published afterwards by the caller.
    #[inline(always)]
    fn copy_in(&self, index: u32, msg: &[u8], me: u32) {
        let written = self
            .mem
            .with_payload_mut(index, |mut dst| dst.write_at(0, msg));
        assert!(written, "message longer than an mpmc slot");
        let meta = msg.len() as u64 | u64::from(me) << 32;
        self.mem.meta(index).store(meta, Ordering::Relaxed);
    }

    /// Tests and models: what a producer does before it dies in the middle
    /// of a copy. Claims the slot of the enqueue position as `me` and moves
    /// the position, then leaves the slot held. Returns the position.
    #[cfg(test)]
    pub(crate) fn claim_and_abandon(&self, me: u32) -> Result<u64, PushError> {
        loop {
            let pos = self.mem.enqueue().load(Ordering::Acquire);
            if pos & SEALED != 0 {
                return Err(PushError::Sealed);
            }
            let seq = self.turn(self.index(pos));
            let s = seq.load(Ordering::Acquire);
            match decode(s) {
                Turn::Plain(t) if t == pos => {
                    if hold_for_writing(seq, pos, me).is_some() {
                        self.advance_enqueue(pos)?;
                        return Ok(pos);
                    }
                }
                Turn::Writing { pos: p, .. } if p == pos => {
                    move_past(self.mem.enqueue(), pos);
                }
                Turn::Plain(t) if t < pos => return Err(PushError::Full),
                _ => crate::sync::spin_loop(),
            }
        }
    }

    /// `enqueue_pos` again, after a turn ahead of `pos` (`s`): it must have
    /// moved.
    pub(super) fn fresh_enqueue(&self, pos: u64, s: u64) -> Result<u64, PushError> {
        let now = self.mem.enqueue().load(Ordering::Acquire);
        if now == pos {
            return Err(PushError::Corrupt(Corruption::new(
                "mpmc slot turn ahead of the enqueue position",
                s,
                pos,
            )));
        }
        Ok(now)
    }

    /// Moves `enqueue_pos` past `pos`, whose slot we hold (or finds it moved
    /// by a helper). Sealed at `pos`: our position is not part of the ring.
    pub(super) fn advance_enqueue(&self, pos: u64) -> Result<(), PushError> {
        let enqueue = self.mem.enqueue();
        let mut e = enqueue.load(Ordering::Acquire);
        for _ in 0..MAX_ROUNDS {
            if e == pos {
                match enqueue.compare_exchange(
                    pos,
                    pos.wrapping_add(1),
                    Ordering::AcqRel,
                    Ordering::Acquire,
                ) {
                    Ok(_) => return Ok(()),
                    Err(now) => e = now,
                }
                continue;
            }
            let end = e & !SEALED;
            return if end > pos {
                Ok(())
            } else if e & SEALED != 0 && end == pos {
                Err(PushError::Sealed)
            } else {
                Err(PushError::Corrupt(Corruption::new(
                    "mpmc enqueue position behind a held slot",
                    e,
                    pos,
                )))
            };
        }
        Err(PushError::Corrupt(beyond_limit("mpmc enqueue position", e)))
    }

    /// Copies `msg` into our held slot and publishes it (M0). If our hold
    /// was taken from us (we were judged dead: only a hostile write can do
    /// that to a live process), the message was not delivered.
    pub(super) fn write(
        &self,
        index: u32,
        pos: u64,
        mine: u64,
        msg: &[u8],
        me: u32,
    ) -> Result<(), PushError> {
        // The slot is ours until we publish it (we hold its turn).
        self.copy_in(index, msg, me);
        // M0 (release, and SeqCst: a mailbox then reads its waiter counts
        // SeqCst instead of fencing, `Doorbell::notify_after_sc`; the same
        // locked instruction on x86): publishes the payload and meta.
        match self.turn(index).compare_exchange(
            mine,
            pos.wrapping_add(1),
            Ordering::SeqCst,
            Ordering::Relaxed,
        ) {
            Ok(_) => Ok(()),
            Err(found) => Err(PushError::Corrupt(Corruption::new(
                "mpmc slot taken from its live producer",
                found,
                mine,
            ))),
        }
    }
}

/// Whether a push may go on at `enqueue_pos` word `pos`: a sealed word
/// still holds a position, which must be in range.
#[inline(always)]
fn open_at(pos: u64) -> Result<(), PushError> {
    if pos & !SEALED >= MAX_POS {
        return Err(PushError::Corrupt(beyond_limit(
            "mpmc enqueue position",
            pos & !SEALED,
        )));
    }
    if pos & SEALED != 0 {
        return Err(PushError::Sealed);
    }
    Ok(())
}

/// Holds the slot whose turn says free for `pos` for producer `me` (M1:
/// acquire, after the consumer's release of the old message): the turn
/// becomes `WRITING(me, pos)`, returned; None if another was quicker.
#[cfg(test)]
fn hold_for_writing(seq: TurnWord<'_>, pos: u64, me: u32) -> Option<u64> {
    let mine = held(WRITING, me, pos);
    seq.compare_exchange(pos, mine, Ordering::Acquire, Ordering::Relaxed)
        .is_ok()
        .then_some(mine)
}

//! The consuming side of an MPMC ring: claiming the oldest message, reading it
//! in place, releasing its slot; stepping over voided positions.

use super::*;

impl<M: MpmcMem> MpmcRing<M> {
    /// Takes the oldest message and runs `f(payload, sender)` on it in
    /// place, as the consumer attached at `me`; the slot is released after
    /// `f` returns (or unwinds).
    #[cfg(test)]
    pub(crate) fn try_pop_with<R>(
        &self,
        me: u32,
        owners: &impl Owners,
        f: impl FnOnce(ShmSlice<'_>, u32) -> R,
    ) -> Result<R, PopError> {
        let claim = self.try_claim(me, owners)?;
        self.read(claim, f)
    }

    /// First half of a pop: claims the oldest published message for the
    /// consumer attached at `me`, stepping over holes of dead producers and
    /// taking back slots dead consumers held. The caller must pass the claim
    /// to [`read`](Self::read), which releases the slot.
    pub(crate) fn try_claim(&self, me: u32, owners: &impl Owners) -> Result<Claim, PopError> {
        self.try_claim_in(me, owners, true)
    }

    /// [`try_claim`](Self::try_claim); `seal`: whether the ring may be
    /// sealed where nothing is published yet. Without it, that case is
    /// Empty without a look at `enqueue_pos`, the producers' word (a look
    /// would take its cache line from them before every message), for a
    /// caller that knows no seal can be there: a mailbox not removed, a
    /// segment with no successor that its consumer does not seal.
    pub(crate) fn try_claim_in(
        &self,
        me: u32,
        owners: &impl Owners,
        seal: bool,
    ) -> Result<Claim, PopError> {
        if self.geometry.solo {
            return self.claim_solo(me, seal);
        }
        let cap = self.cap();
        let mut pos = self.mem.dequeue().load(Ordering::Acquire);
        for _ in 0..MAX_ROUNDS {
            if pos >= MAX_POS {
                return Err(PopError::Corrupt(beyond_limit(
                    "mpmc dequeue position",
                    pos,
                )));
            }
            let index = self.index(pos);
            let seq = self.turn(index);
            // M2 (acquire): pairs with the producer's M0 (or a voider's).
            // A published message is claimed straight away (CAS
            // `p + 1 -> READING(me, p)`), then the position moved: one
            // exclusive fetch of the slot's cache line, not a shared one
            // and then another to claim it. Failing, the CAS returns the
            // turn as a load would.
            let mine = held(READING, me, pos);
            let s = match seq.compare_exchange(
                pos.wrapping_add(1),
                mine,
                Ordering::Acquire,
                Ordering::Acquire,
            ) {
                Ok(_) => {
                    self.advance_dequeue(pos)?;
                    return Ok(Claim {
                        index,
                        pos,
                        owner: me,
                    });
                }
                Err(s) => s,
            };
            let previous = pos.checked_sub(cap);
            match decode(s) {
                // A hole: claim it, then move the position.
                Turn::Void(p) if p == pos => {
                    let mine = held(READING, me, pos);
                    if seq
                        .compare_exchange(s, mine, Ordering::Acquire, Ordering::Relaxed)
                        .is_ok()
                    {
                        self.advance_dequeue(pos)?;
                        // Nothing to read: hand the slot to the next lap.
                        self.release(index, pos, mine)?;
                        pos = pos.wrapping_add(1);
                        continue;
                    }
                }
                // Claimed by another consumer that has not moved the
                // position yet: move it for them.
                Turn::Reading { pos: p, .. } if p == pos => {
                    pos = move_past(self.mem.dequeue(), pos);
                    continue;
                }
                // Being written. If its producer died, void the position:
                // its message is dropped, never half-delivered.
                Turn::Writing { owner, pos: p } if p == pos => {
                    if !owners.dead(owner) {
                        return Err(self.nothing_at(pos, seal)?);
                    }
                    self.take_back(index, s).map_err(PopError::Corrupt)?;
                    continue;
                }
                // Not claimed by any producer yet.
                Turn::Plain(t) if t == pos => return Err(self.nothing_at(pos, seal)?),
                // The previous lap's message is still being read: if its
                // consumer died, give the slot to this lap.
                Turn::Reading { owner, pos: p } if Some(p) == previous => {
                    if !owners.dead(owner) {
                        return Err(self.nothing_at(pos, seal)?);
                    }
                    self.take_back(index, s).map_err(PopError::Corrupt)?;
                    continue;
                }
                // Ahead of us (by any number of laps): another consumer
                // took pos.
                Turn::Plain(t) if t > pos.wrapping_add(1) && t < HWL_MPMC_POS_LIMIT => {
                    pos = self.fresh_dequeue(pos, s)?;
                    continue;
                }
                Turn::Writing { pos: p, .. } | Turn::Reading { pos: p, .. } | Turn::Void(p)
                    if p > pos && p < MAX_POS =>
                {
                    pos = self.fresh_dequeue(pos, s)?;
                    continue;
                }
                _ => {
                    return Err(PopError::Corrupt(Corruption::new(
                        "mpmc slot turn for the dequeue position",
                        s,
                        pos,
                    )))
                }
            }
            // Our claim lost a race for the slot: look again.
            pos = self.mem.dequeue().load(Ordering::Acquire);
        }
        Err(PopError::Corrupt(Corruption::new(
            "mpmc pop rounds (turns keep changing)",
            MAX_ROUNDS.into(),
            MAX_ROUNDS.into(),
        )))
    }

    /// [`try_claim_in`](Self::try_claim_in) on a solo ring (SPEC §9, "Solo rings"), by
    /// its one consumer: the message at `dequeue_pos`, if published there.
    /// Nothing is written: the position moves when the message has been
    /// read ([`read`](Self::read)), which is what tells the producer the
    /// slot is free.
    fn claim_solo(&self, me: u32, seal: bool) -> Result<Claim, PopError> {
        let pos = self.mem.dequeue().load(Ordering::Acquire);
        if pos >= MAX_POS {
            return Err(PopError::Corrupt(beyond_limit(
                "mpmc dequeue position",
                pos,
            )));
        }
        let index = self.index(pos);
        // M2 (acquire): pairs with the producer's M0s.
        let s = self.turn(index).load(Ordering::Acquire);
        if s == pos.wrapping_add(1) {
            return Ok(Claim {
                index,
                pos,
                owner: me,
            });
        }
        if self.solo_unpublished(pos, s) {
            return Err(self.nothing_at(pos, seal)?);
        }
        Err(PopError::Corrupt(Corruption::new(
            "mpmc slot turn for the dequeue position (solo ring)",
            s,
            pos,
        )))
    }

    /// Solo rings: M3s (release), the consumer is done with `pos`: our
    /// reads of its slot happen before the producer's next writes there.
    fn pass_solo(&self, pos: u64) {
        self.mem
            .dequeue()
            .store(pos.wrapping_add(1), Ordering::Release);
    }

    /// Hands the claimed slot on: released for the next lap, or (solo) the
    /// position moved past it.
    fn finish(&self, claim: &Claim) -> Result<(), PopError> {
        if self.geometry.solo {
            self.pass_solo(claim.pos);
            return Ok(());
        }
        self.release(
            claim.index,
            claim.pos,
            held(READING, claim.owner, claim.pos),
        )
    }

    pub(super) fn fresh_dequeue(&self, pos: u64, s: u64) -> Result<u64, PopError> {
        let now = self.mem.dequeue().load(Ordering::Acquire);
        if now == pos {
            return Err(PopError::Corrupt(Corruption::new(
                "mpmc slot turn ahead of the dequeue position",
                s,
                pos,
            )));
        }
        Ok(now)
    }

    /// Moves `dequeue_pos` past `pos`, whose slot we hold (or finds it
    /// moved by a helper).
    pub(super) fn advance_dequeue(&self, pos: u64) -> Result<(), PopError> {
        match self.mem.dequeue().compare_exchange(
            pos,
            pos.wrapping_add(1),
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            Ok(_) => Ok(()),
            Err(now) if now > pos => Ok(()),
            Err(now) => Err(PopError::Corrupt(Corruption::new(
                "mpmc dequeue position behind a held slot",
                now,
                pos,
            ))),
        }
    }

    /// M3 (release): hands a slot we hold back for the next lap; our reads
    /// of it happen before the next producer's writes.
    pub(super) fn release(&self, index: u32, pos: u64, mine: u64) -> Result<(), PopError> {
        let next = pos.wrapping_add(self.cap());
        // SeqCst (and so release): a mailbox reads its `not_full` waiters
        // SeqCst after it instead of fencing (`Doorbell::notify_after_sc`).
        match self
            .turn(index)
            .compare_exchange(mine, next, Ordering::SeqCst, Ordering::Relaxed)
        {
            Ok(_) => Ok(()),
            Err(found) => Err(PopError::Corrupt(Corruption::new(
                "mpmc slot taken from its live consumer",
                found,
                mine,
            ))),
        }
    }

    /// Second half of a pop: runs `f(payload, sender)` on the claimed
    /// message in place, then releases the slot, also when its length is
    /// corrupt (so one bad message cannot wedge the ring) or `f` unwinds.
    pub(crate) fn read<R>(
        &self,
        claim: Claim,
        f: impl FnOnce(ShmSlice<'_>, u32) -> R,
    ) -> Result<R, PopError> {
        struct Release<'a, M: MpmcMem> {
            ring: &'a MpmcRing<M>,
            claim: &'a Claim,
            done: bool,
        }
        impl<M: MpmcMem> Drop for Release<'_, M> {
            fn drop(&mut self) {
                if !self.done {
                    let _ = self.ring.finish(self.claim);
                }
            }
        }
        let mut guard = Release {
            ring: self,
            claim: &claim,
            done: false,
        };
        let index = claim.index;
        let meta = self.mem.meta(index).load(Ordering::Relaxed);
        let len = meta as u32;
        let sender = (meta >> 32) as u32;
        let out = if len > self.geometry.slot_size {
            Err(PopError::Corrupt(Corruption::new(
                "mpmc message length",
                len.into(),
                self.geometry.slot_size.into(),
            )))
        } else {
            // The slot is ours until we release it below; `len` was checked
            // against the payload size.
            Ok(self.mem.with_payload(index, |src| {
                let msg = src.sub(0, len as usize);
                f(
                    msg.expect("message length checked against the slot"),
                    sender,
                )
            }))
        };
        guard.done = true;
        let released = self.finish(&claim);
        let out = out?;
        released?;
        Ok(out)
    }

    /// Nothing to take at `pos`: Empty, or (with `seal`) Drained if the
    /// ring is sealed right there.
    fn nothing_at(&self, pos: u64, seal: bool) -> Result<PopError, PopError> {
        if seal {
            self.empty_or_drained(pos)
        } else {
            Ok(PopError::Empty)
        }
    }

    /// Empty, or drained if the ring is sealed at `pos`.
    pub(super) fn empty_or_drained(&self, pos: u64) -> Result<PopError, PopError> {
        let enq = self.mem.enqueue().load(Ordering::Acquire);
        let last = enq & !SEALED;
        if last >= MAX_POS {
            return Err(PopError::Corrupt(beyond_limit(
                "mpmc enqueue position",
                last,
            )));
        }
        if enq & SEALED == 0 {
            return Ok(PopError::Empty);
        }
        if last == pos {
            Ok(PopError::Drained)
        } else if last < pos {
            Err(PopError::Corrupt(Corruption::new(
                "mpmc dequeue position past the sealed end",
                pos,
                last,
            )))
        } else {
            Ok(PopError::Empty)
        }
    }
}

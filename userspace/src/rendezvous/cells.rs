//! Rendezvous cells: claiming one, waking waiters, reaping cells of dead
//! processes.

use super::*;

impl<M: RdvMem> Rdv<M> {
    // ----- cells ---------------------------------------------------------

    /// Claims a FREE cell (FREE → CLAIMED, Acquire: pairs with R-free) and
    /// writes its header.
    pub(super) fn claim_free(&self) -> Result<Option<u32>, Corruption> {
        for cell in 0..self.cells {
            let w = checked(self.state(cell).load(Ordering::Relaxed))?;
            if w == 0
                && self
                    .state(cell)
                    .compare_exchange(0, self.mine(CLAIMED), Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
            {
                self.mem
                    .field(cell, Field::Owner)
                    .store(self.token, Ordering::Relaxed);
                let ticket = self.mem.next_ticket().fetch_add(1, Ordering::Relaxed);
                self.mem
                    .field(cell, Field::Ticket)
                    .store(ticket, Ordering::Relaxed);
                return Ok(Some(cell));
            }
        }
        Ok(None)
    }

    /// The cell in state `want` with the oldest ticket, and its state word.
    pub(super) fn oldest(&self, want: u32) -> Result<Option<(u32, u64)>, Corruption> {
        let now = self.mem.next_ticket().load(Ordering::Relaxed);
        let mut best: Option<(u32, u64, i32)> = None;
        for cell in 0..self.cells {
            let w = checked(self.state(cell).load(Ordering::Acquire))?;
            if kind(w) == want {
                // A hint only: the ticket may belong to a later occupant.
                let ticket = self.mem.field(cell, Field::Ticket).load(Ordering::Relaxed);
                let age = now.wrapping_sub(ticket) as i32;
                if best.map_or(true, |(_, _, a)| age > a) {
                    best = Some((cell, w, age));
                }
            }
        }
        Ok(best.map(|(cell, w, _)| (cell, w)))
    }

    /// After freeing a cell: wake one party waiting for a cell.
    pub(super) fn announce_free(&self) {
        fence(Ordering::SeqCst);
        self.mem.cells_bell().notify();
    }

    /// After posting (R-post): [F-post], then wake every registered
    /// receiver, so that one of them takes the message, and one party
    /// waiting for a cell.
    pub(super) fn announce_post(&self) {
        // [F-post]: Dekker with a receiver's F-reg.
        fence(Ordering::SeqCst);
        self.mem.cells_bell().notify();
        for cell in 0..self.cells {
            if kind(self.state(cell).load(Ordering::Relaxed)) == RECV_WAITING {
                self.mem.owner_bell(cell).notify();
            }
        }
    }

    /// Every cell is busy: waits until one is FREE or in state `useful`,
    /// reaping cells of dead processes once per slice.
    pub(super) fn wait_for_cells<E>(
        &self,
        useful: u32,
        deadline: Option<Instant>,
        wait: WaitStrategy,
        peer_ok: &mut dyn FnMut() -> Result<(), E>,
    ) -> Result<(), Stop<E>> {
        // Checked once at the first slice tick, then every SLICE.
        let mut last_slow: Option<Instant> = None;
        self.wait_for(
            self.mem.cells_bell(),
            wait,
            deadline,
            FULL_SLICE,
            |tick| -> Result<Option<()>, Stop<E>> {
                for cell in 0..self.cells {
                    let w = checked(self.state(cell).load(Ordering::Relaxed))?;
                    if w == 0 || kind(w) == useful {
                        return Ok(Some(()));
                    }
                }
                if tick >= Tick::Clock && past(deadline) {
                    return Err(Stop::Timeout);
                }
                // Slice ticks come every FULL_SLICE here; the slow checks
                // keep to their usual pace.
                if tick == Tick::Slice && last_slow.map_or(true, |t| t.elapsed() >= SLICE) {
                    last_slow = Some(Instant::now());
                    peer_ok().map_err(Stop::Peer)?;
                    if self.reap_dead()? {
                        return Ok(Some(()));
                    }
                }
                Ok(None)
            },
        )
    }

    /// Frees cells that nobody alive will ever free: their responsible
    /// process died. Slow (reads /proc): only while every cell is busy.
    pub(super) fn reap_dead(&self) -> Result<bool, Corruption> {
        let mut freed = false;
        for cell in 0..self.cells {
            let w = checked(self.state(cell).load(Ordering::Acquire))?;
            let owner = || self.mem.field(cell, Field::Owner).load(Ordering::Relaxed);
            let dead = |token: u32| !(self.alive)(token);
            let reap = match kind(w) {
                // The pid in the word is the one who must move it on.
                CLAIMED | RECV_WAITING | ACKED => dead(token_of(w)),
                // The owner frees TAKEN.
                TAKEN => dead(owner()),
                // Both parties are involved: reap only if both died.
                FILLING | FILLED | READING | TAKING => dead(token_of(w)) && dead(owner()),
                // A dead sender's message may still be taken.
                _ => false,
            };
            if reap
                && self
                    .state(cell)
                    .compare_exchange(w, 0, Ordering::Release, Ordering::Relaxed)
                    .is_ok()
            {
                freed = true;
            }
        }
        Ok(freed)
    }
}

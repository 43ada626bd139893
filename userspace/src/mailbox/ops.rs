//! Sending and receiving on a mailbox, every flavour (bounded MPMC ring,
//! unbounded chain, zero-capacity rendezvous) through the one wait engine.
#![warn(clippy::arithmetic_side_effects)]

use super::*;

impl Mailbox {
    /// One attempt; errors carry no message.
    pub(super) fn try_send_raw(&mut self, msg: &[u8]) -> Result<(), SendError<()>> {
        if !self.can(HWL_ACCESS_SEND) || self.removed() || self.peer_gone() {
            return Err(SendError::Disconnected(()));
        }
        if let Some(c) = self.truncation() {
            return Err(SendError::Corrupt(c));
        }
        let sent = match &mut self.queue {
            Queue::Bounded(p) => p
                .ring()
                .try_push(msg, self.entry, &self.attached)
                .map_err(|e| match e {
                    PushError::Full => SendError::Full(()),
                    PushError::Sealed => SendError::Disconnected(()),
                    PushError::TooLarge => SendError::TooLarge {
                        msg: (),
                        len: msg.len(),
                        max: p.ring().geometry().slot_size as usize,
                    },
                    PushError::Corrupt(c) => SendError::Corrupt(c),
                }),
            Queue::Unbounded(c) => c.try_push(msg, self.entry, &self.attached),
            Queue::Zero(r) => r.rdv().try_send(msg).map_err(rdv_send_error),
        };
        // Shrunk under the attempt: what it read or wrote was zero pages.
        if let Some(c) = self.truncation() {
            return Err(SendError::Corrupt(c));
        }
        if matches!(sent, Err(SendError::Full(()))) && self.readiness[0].is_some() {
            self.arm_readiness(false);
        }
        if matches!(self.queue, Queue::Zero(_)) {
            return sent;
        }
        if sent.is_ok() {
            // The waiter counts of the queue's receivers, and of a link's
            // receiving member (its inbox, §12.4 [L4]), are read after the
            // publish: a bounded ring published with a SeqCst CAS (M0), so
            // they are read SeqCst with no fence (`notify_after_sc`); a
            // chain's segment may have published with a store, so F0.
            let sc = matches!(self.queue, Queue::Bounded(_));
            if sc {
                crate::doorbell::announce_fence();
            } else {
                fence(Ordering::SeqCst);
            }
            for bell in std::iter::once(&self.not_empty).chain(self.link_inbox.as_ref()) {
                if sc {
                    bell.notify_after_sc();
                } else {
                    bell.notify();
                }
            }
        }
        sent
    }

    /// The one send: without `block`, fails with `Full` at once; with it,
    /// waits until `deadline` (none: for ever), and while `alive` (the
    /// caller's own check, on slow looks) says the receiving side is there.
    pub(crate) fn send_deadline<M: AsRef<[u8]>>(
        &mut self,
        msg: M,
        p: Patience<'_>,
    ) -> Result<(), SendError<M>> {
        let (deadline, block) = (p.deadline, p.block);
        let mut always = crate::wait::always;
        let alive: Alive<'_> = p.alive.unwrap_or(&mut always);
        if let (Queue::Zero(r), true) = (&self.queue, block) {
            if !self.can(HWL_ACCESS_SEND) || self.removed() {
                return Err(SendError::Disconnected(msg));
            }
            let mut still_there = still_there(&self.ctl, &self.peer, alive);
            return r
                .rdv()
                .send(msg.as_ref(), deadline, self.wait, &mut still_there)
                .map_err(|e| rdv_send_error(e).with_msg(msg));
        }
        let mut fruitless = 0u32;
        loop {
            match self.try_send_raw(msg.as_ref()) {
                Ok(()) => return Ok(()),
                Err(SendError::Full(())) if block => {}
                Err(e) => return Err(e.with_msg(msg)),
            }
            match self.wait_for(false, deadline, fruitless, alive) {
                Waited::Ready => {}
                Waited::TimedOut => return Err(SendError::Timeout(msg)),
                Waited::Abandoned => return Err(SendError::Disconnected(msg)),
            }
            fruitless = fruitless.saturating_add(1);
        }
    }

    send_forms!();
    typed_send_forms!(send_deadline());

    /// One attempt. `f` is consumed only when a message is received.
    /// `thorough`: where nothing is published, look at the producers'
    /// enqueue position even where no seal can be (a corrupt one is then
    /// reported): every attempt but a blocking receive's first, which
    /// leaves that word to the producers (`MpmcRing::try_claim_in`).
    pub(super) fn try_recv_raw<R>(
        &mut self,
        f: &mut Option<impl FnOnce(ShmSlice<'_>, u32) -> R>,
        thorough: bool,
    ) -> Result<R, RecvError> {
        if !self.can(HWL_ACCESS_RECV) {
            return Err(RecvError::Disconnected);
        }
        if let Some(c) = self.truncation() {
            return Err(RecvError::Corrupt(c));
        }
        let removed = self.removed();
        let take = |f: &mut Option<_>| f.take().expect("the receive closure runs once");
        let got = match &mut self.queue {
            Queue::Bounded(p) => {
                let ring = p.ring();
                // Sealed only once removed (`removed` is marked first).
                let mut claim = ring.try_claim_in(self.entry, &self.attached, removed || thorough);
                if removed && matches!(claim, Err(PopError::Empty)) {
                    // Removed: seal, so that Empty and Drained tell exactly
                    // whether anything accepted is left.
                    ring.seal();
                    claim = ring.try_claim(self.entry, &self.attached);
                }
                match claim {
                    Ok(c) => ring.read(c, take(f)),
                    Err(e) => Err(e),
                }
                .map_err(|e| match e {
                    PopError::Empty => RecvError::Empty,
                    PopError::Drained => RecvError::Disconnected,
                    PopError::Corrupt(c) => RecvError::Corrupt(c),
                })
            }
            Queue::Unbounded(c) => c.try_pop(self.entry, &self.attached, removed, thorough, f),
            Queue::Zero(r) => {
                let f = take(f);
                match r.rdv().try_recv_with(|m| f(m, 0)).map_err(rdv_recv_error) {
                    Err(RecvError::Empty) if removed => Err(RecvError::Disconnected),
                    other => other,
                }
            }
        };
        if got.is_err() {
            // Shrunk under the attempt: what it read was zero pages.
            if let Some(c) = self.truncation() {
                return Err(RecvError::Corrupt(c));
            }
        }
        if got.is_ok() && matches!(self.queue, Queue::Bounded(_)) {
            // F2: the slot was released with a SeqCst CAS (M3); the waiter
            // count is read SeqCst (`notify_after_sc`).
            crate::doorbell::announce_fence();
            self.not_full.notify_after_sc();
        }
        if matches!(got, Err(RecvError::Empty)) && self.readiness[1].is_some() {
            self.arm_readiness(true);
        }
        if matches!(got, Err(RecvError::Empty)) && self.peer_gone() {
            // The sender is dead: what it published is all there is (its
            // holes are stepped over); once drained, it is gone.
            return if self.has_message_now() && f.is_some() {
                Err(RecvError::Empty)
            } else {
                Err(RecvError::Disconnected)
            };
        }
        got
    }

    /// The one receive: without `block`, fails with `Empty` at once; with
    /// it, waits until `deadline` (none: for ever), and while `alive` (the
    /// caller's own check, on slow looks) says the sending side is there:
    /// once it says no, what is queued is still delivered, then
    /// `Disconnected`.
    pub(crate) fn recv_until<R>(
        &mut self,
        f: impl FnOnce(ShmSlice<'_>, u32) -> R,
        p: Patience<'_>,
    ) -> Result<R, RecvError> {
        let (deadline, block) = (p.deadline, p.block);
        let mut always = crate::wait::always;
        let alive: Alive<'_> = p.alive.unwrap_or(&mut always);
        if let (Queue::Zero(r), true) = (&self.queue, block) {
            if !self.can(HWL_ACCESS_RECV) {
                return Err(RecvError::Disconnected);
            }
            let mut still_there = still_there(&self.ctl, &self.peer, alive);
            return r
                .rdv()
                .recv_with(|m| f(m, 0), deadline, self.wait, &mut still_there)
                .map_err(rdv_recv_error);
        }
        // The closure is consumed only when a message was claimed.
        let mut f = Some(f);
        let mut fruitless = 0u32;
        let mut abandoned = false;
        // A blocking receive's first attempt leaves the producers' word
        // alone; after a wait (which said a receive can make progress, a
        // corrupt word included) every attempt looks at everything.
        let mut thorough = !block;
        loop {
            match self.try_recv_raw(&mut f, thorough) {
                Ok(v) => return Ok(v),
                Err(RecvError::Empty) if abandoned => return Err(RecvError::Disconnected),
                Err(RecvError::Empty) if block && f.is_some() => {}
                Err(e) => return Err(e),
            }
            thorough = true;
            match self.wait_for(true, deadline, fruitless, alive) {
                Waited::Ready => {}
                Waited::TimedOut => return Err(RecvError::Timeout),
                Waited::Abandoned => abandoned = true,
            }
            fruitless = fruitless.saturating_add(1);
        }
    }

    /// Waits (per the wait strategy, through the one wait engine) until a
    /// receive (`receiving`) or a send could make progress, judged exactly
    /// as the attempt judges it, the deadline passes, or `alive` says no.
    /// `fruitless`: rounds in a row this call waited for and then found
    /// nothing (another process was quicker, or a hostile one keeps
    /// changing the words): after a few, a parked end naps between looks
    /// rather than spin.
    pub(super) fn wait_for(
        &self,
        receiving: bool,
        deadline: Option<Instant>,
        fruitless: u32,
        alive: Alive<'_>,
    ) -> Waited {
        // Hot polls leave the producers' enqueue position alone; every
        // clock tick looks at everything (`has_message`).
        let check = |m: &Mailbox, tick: Tick| {
            if receiving {
                m.has_message(tick != Tick::Poll)
            } else {
                m.has_room_now()
            }
        };
        let bell = if receiving {
            &self.not_empty
        } else {
            &self.not_full
        };
        // Borrowed, not shared: a wait touches no reference count.
        let death = self.peer.as_ref().and_then(PeerWatch::lock_word);
        let mut policy = self.policy.get();
        let waited = Wait::new(bell, self.wait, deadline)
            .death(death)
            .fruitless(fruitless)
            .until(&mut policy, |tick, _| {
                Ok::<_, Infallible>(if check(self, tick) || self.peer_gone() {
                    Some(Waited::Ready)
                } else if tick == Tick::Slice && !alive() {
                    Some(Waited::Abandoned)
                } else {
                    None
                })
            });
        self.policy.set(policy);
        match waited {
            Ok(Some(w)) => w,
            Ok(None) => Waited::TimedOut,
            Err(never) => match never {},
        }
    }

    /// For a select or a readiness descriptor: whether a receive
    /// (`receiving`) or a send could make progress now, or fail at once,
    /// from memory alone.
    pub(crate) fn ready_now(&self, receiving: bool) -> bool {
        if receiving {
            return self.has_message_now() || self.peer_gone() || !self.can(HWL_ACCESS_RECV);
        }
        let room = match &self.queue {
            Queue::Zero(r) => r.rdv().receiver_waiting(),
            _ => self.has_room_now(),
        };
        room || self.peer_gone() || self.removed() || !self.can(HWL_ACCESS_SEND)
    }

    /// The doorbell rung when a receive (`receiving`) or a send may make
    /// progress.
    pub(crate) fn doorbell(&self, receiving: bool) -> &Doorbell {
        match (&self.queue, receiving) {
            (Queue::Zero(r), _) => r.rdv().offers_bell(),
            (_, true) => &self.not_empty,
            (_, false) => &self.not_full,
        }
    }

    /// The peer's liveness watch (one direction of a domain link).
    pub(crate) fn death_watch(&self) -> Option<std::sync::Arc<crate::liveness::Watched>> {
        self.peer.as_ref().and_then(PeerWatch::shared)
    }

    /// This handle's wait strategy.
    pub fn wait_strategy(&self) -> WaitStrategy {
        self.wait
    }

    /// A descriptor for `epoll`, `poll`, mio, tokio's `AsyncFd` or
    /// io_uring's `POLL_ADD`: readable when a receive may find a message,
    /// or the mailbox is removed or the peer (a domain link's) is gone.
    /// For a handle that may only send, the same as
    /// [`as_send_fd`](Self::as_send_fd). It is armed now and again whenever
    /// an attempt finds nothing to do (`Empty`), and stays readable until
    /// then. Costs nothing while unused: senders ring only an armed
    /// receiver. Not for busy-polling handles.
    pub fn as_fd(&mut self) -> Result<std::os::fd::BorrowedFd<'_>, crate::ReadinessError> {
        self.readiness_fd(self.can(HWL_ACCESS_RECV))
    }

    /// A descriptor readable when a send may find room (or fail at once):
    /// as [`as_fd`](Self::as_fd), for sends (armed by a `Full` attempt).
    pub fn as_send_fd(&mut self) -> Result<std::os::fd::BorrowedFd<'_>, crate::ReadinessError> {
        self.readiness_fd(false)
    }

    fn readiness_fd(
        &mut self,
        receiving: bool,
    ) -> Result<std::os::fd::BorrowedFd<'_>, crate::ReadinessError> {
        let k = usize::from(receiving);
        let bell = self.doorbell(receiving).clone();
        if crate::readiness::ensure(&mut self.readiness[k], self.wait, &bell, false)? {
            self.arm_readiness(receiving);
        }
        crate::readiness::fd_of(&self.readiness[k])
    }

    /// An attempt (`receiving` or a send) found nothing to do: arm that
    /// direction's descriptor, if it arms itself.
    #[cold]
    fn arm_readiness(&mut self, receiving: bool) {
        if self.readiness[usize::from(receiving)]
            .as_ref()
            .is_some_and(|r| r.auto)
        {
            self.arm_for_wait(receiving);
        }
    }

    /// Arms that direction's descriptor now (an async end about to await
    /// it); true if the end was found ready instead.
    pub(crate) fn arm_for_wait(&mut self, receiving: bool) -> bool {
        let k = usize::from(receiving);
        let Some(mut r) = self.readiness[k].take() else {
            return true;
        };
        let death = self.death_watch();
        let now = r.arm_now(death, || self.ready_now(receiving));
        self.readiness[k] = Some(r);
        now
    }

    /// Hands both descriptors to an owner that arms them itself.
    #[cfg_attr(not(feature = "tokio"), allow(dead_code))]
    pub(crate) fn arm_explicitly(&mut self) {
        for r in self.readiness.iter_mut().flatten() {
            r.auto = false;
        }
    }

    /// Receives the next message, waiting for one.
    pub fn recv(&mut self) -> Result<Vec<u8>, RecvError> {
        self.recv_until(|b, _| b.to_vec(), Patience::new(None, true))
    }
    /// Receives the next message, waiting at most `timeout`.
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<Vec<u8>, RecvError> {
        self.recv_until(
            |b, _| b.to_vec(),
            Patience::new(crate::wait::deadline_after(timeout), true),
        )
    }
    /// Receives a message if one is queued now.
    pub fn try_recv(&mut self) -> Result<Vec<u8>, RecvError> {
        self.recv_until(|b, _| b.to_vec(), Patience::new(None, false))
    }
    /// Receives the next message and runs `f` on it in place (no copy, no
    /// allocation), with the sender's attachment number.
    pub fn recv_with<R>(&mut self, f: impl FnOnce(ShmSlice<'_>, u32) -> R) -> Result<R, RecvError> {
        self.recv_until(f, Patience::new(None, true))
    }
    /// [`recv_with`](Self::recv_with) with a timeout.
    pub fn recv_with_timeout<R>(
        &mut self,
        timeout: Duration,
        f: impl FnOnce(ShmSlice<'_>, u32) -> R,
    ) -> Result<R, RecvError> {
        self.recv_until(f, Patience::new(crate::wait::deadline_after(timeout), true))
    }
    /// [`recv_with`](Self::recv_with) if a message is queued now.
    pub fn try_recv_with<R>(
        &mut self,
        f: impl FnOnce(ShmSlice<'_>, u32) -> R,
    ) -> Result<R, RecvError> {
        self.recv_until(f, Patience::new(None, false))
    }

    /// [`recv_until`](Self::recv_until) without the sender's attachment
    /// number: the byte-level receive of the typed forms.
    #[inline]
    fn recv_slice_until<R>(
        &mut self,
        f: impl FnOnce(ShmSlice<'_>) -> R,
        p: Patience<'_>,
    ) -> Result<R, RecvError> {
        self.recv_until(|m, _| f(m), p)
    }

    typed_recv_forms! {
        recv_slice_until() -> T;
        recv_value = recv, try_recv_value = try_recv, recv_value_timeout = recv_timeout;
        recv_deserialized, try_recv_deserialized, recv_deserialized_timeout;
    }

    /// Removes the mailbox: attached processes see it gone (senders get
    /// `Disconnected` at once; receivers drain what is queued, then get
    /// `Disconnected`) and new opens fail. Its files are unlinked once no
    /// other process is attached (the last one to detach unlinks them), so
    /// that receivers can still reach every segment. Only its creator may.
    pub fn remove(self) -> Result<(), OpenError> {
        if !self.created {
            return Err(OpenError::InvalidConfig(format!(
                "only the creator of mailbox `{}` removes it; or run `hwlink rm {MAILBOX_PREFIX}{}`",
                self.name, self.name
            )));
        }
        mark_removed(&self.ctl);
        if let Queue::Bounded(p) = &self.queue {
            p.ring().seal();
        }
        // Detaching (Drop) unlinks the files if nobody else is attached.
        drop(self);
        Ok(())
    }
}

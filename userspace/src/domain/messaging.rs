//! Sending to a member by name and receiving from one or from any, each as one
//! wait through the wait engine.

use super::*;
use crate::shm::ShmSlice;

impl Member {
    /// The one send of the typed forms: without `p.block`, fails with
    /// `Full` at once; with it, waits until `p.deadline` (none: for
    /// ever). See [`send_until`](Self::send_until).
    #[inline]
    pub(super) fn send_deadline<M: AsRef<[u8]>>(
        &mut self,
        to: &str,
        msg: M,
        p: Patience<'_>,
    ) -> Result<(), SendError<M>> {
        // The domain's own membership check (send_waiting) is the only
        // one: no caller passes an `alive` of its own.
        debug_assert!(p.alive.is_none());
        let until = p.deadline.map_or(Until::Forever, Until::At);
        self.send_until(to, msg, p.block, until)
    }

    /// The one send: without `block`, fails with `Full` at once; with it,
    /// waits `until`.
    ///
    /// The fast path costs what the link costs: the link found through
    /// the last-used cache (one name comparison, one load of the peer's
    /// directory word), then one attempt that never waits (a bounded
    /// link's free slot, an unbounded link's push), with no deadline (the
    /// clock is not read) and no membership check; the receiver's inbox
    /// is checked after the channel's own fence (`ChannelSender::send`).
    #[inline]
    pub(super) fn send_until<M: AsRef<[u8]>>(
        &mut self,
        to: &str,
        msg: M,
        block: bool,
        until: Until,
    ) -> Result<(), SendError<M>> {
        let k = match self.send_link(to) {
            Ok(k) => k,
            Err(e) => return Err(e.send_error(msg, to)),
        };
        let Link { tx, inbox, .. } = &mut self.links[k];
        if !tx.tries_first() {
            return self.send_waiting(k, msg, block, until);
        }
        match tx.send(msg, Patience::new(None, false), inbox) {
            Ok(()) => Ok(()),
            Err(SendError::Full(msg)) if block => self.send_waiting(k, msg, block, until),
            Err(e) => self.send_failed(k, e),
        }
    }

    /// The link to send to `to` on: the one used last for `to` while it is
    /// the only link of that name and its peer is still the member it was
    /// made for, else as [`link_to`](Self::link_to) finds or makes it.
    #[inline]
    pub(super) fn send_link(&mut self, to: &str) -> Result<usize, Unreachable> {
        if let Some(k) = self.last_tx {
            if self.links.get(k).is_some_and(|l| l.peer == to) && self.peer_listed(k) {
                return Ok(k);
            }
        }
        let k = self.link_to(to)?;
        self.last_tx = self.only_link_of(k);
        Ok(k)
    }

    /// `Some(k)` if link `k` is the only one to its peer's name: then a
    /// lookup by that name can only find it (while `links` is unchanged).
    pub(super) fn only_link_of(&self, k: usize) -> Option<usize> {
        let peer = &self.links.get(k)?.peer;
        (self.links.iter().filter(|l| &l.peer == peer).count() == 1).then_some(k)
    }

    /// Every send past the fast path (and every zero-capacity send): one
    /// wait, to the caller's deadline. The link's own wait engine also
    /// looks (on its slow looks) at whether the peer is still a member,
    /// since it may never attach to the link; a zero-capacity send also
    /// wakes the peer's inbox then, so that its recv_any finds the offer.
    #[inline(never)]
    pub(super) fn send_waiting<M: AsRef<[u8]>>(
        &mut self,
        k: usize,
        msg: M,
        block: bool,
        until: Until,
    ) -> Result<(), SendError<M>> {
        let deadline = until.deadline();
        let Member {
            links, dom, domain, ..
        } = self;
        let Link {
            tx,
            inbox,
            slot,
            gen,
            ..
        } = &mut links[k];
        let offers = matches!(tx, ChannelSender::Queue(_));
        let (slot, gen) = (*slot, *gen);
        let inbox = &*inbox;
        let mut alive = || {
            if offers {
                fence(SC);
                inbox.notify();
            }
            member_alive(dom, domain, slot, gen)
        };
        match tx.send(msg, Patience::with(deadline, block, &mut alive), inbox) {
            Ok(()) => Ok(()),
            Err(e) => self.send_failed(k, e),
        }
    }

    pub(super) fn send_failed<M>(&mut self, k: usize, e: SendError<M>) -> Result<(), SendError<M>> {
        let name = self.links[k].peer.clone();
        match e {
            SendError::Disconnected(msg) => {
                // Its process may have died: reap it, which unlinks its files.
                reap_if_dead(&self.dom, &self.domain, self.links[k].slot);
                self.links[k].gone_reported = true;
                if !self.links[k].rx.has_message_now() {
                    self.drop_link(k);
                }
                Err(SendError::MemberGone { msg, name })
            }
            SendError::Corrupt(c) => {
                self.drop_link(k);
                Err(SendError::Corrupt(c))
            }
            other => Err(other),
        }
    }

    /// Sends `msg` to the member named `to`, waiting (per the wait strategy)
    /// while its link is full. The link is set up on first use.
    pub fn send<M: AsRef<[u8]>>(&mut self, to: &str, msg: M) -> Result<(), SendError<M>> {
        self.send_deadline(to, msg, Patience::new(None, true))
    }
    /// Sends `msg` to `to` if its link has room now; hands it back in
    /// `Full` if not.
    pub fn try_send<M: AsRef<[u8]>>(&mut self, to: &str, msg: M) -> Result<(), SendError<M>> {
        self.send_deadline(to, msg, Patience::new(None, false))
    }
    /// Sends `msg` to `to`, waiting at most `timeout` for room. The clock
    /// is read only when there is no room at once.
    pub fn send_timeout<M: AsRef<[u8]>>(
        &mut self,
        to: &str,
        msg: M,
        timeout: Duration,
    ) -> Result<(), SendError<M>> {
        self.send_until(to, msg, true, Until::After(timeout))
    }
    typed_send_forms!(send_deadline(to: &str));

    /// A link from `from` with a message ready now (even from a departed
    /// incarnation).
    pub(super) fn ready_link(&self, from: &str) -> Option<usize> {
        self.links
            .iter()
            .position(|l| l.peer == from && l.rx.has_message_now())
    }

    /// Among the links from `from`: the current member's, or one that still
    /// holds messages. Links of departed incarnations found drained are
    /// dropped (returns whether there were any).
    pub(super) fn scan_links_from(&mut self, from: &str) -> Result<usize, bool> {
        let mut gone = false;
        let mut k = 0;
        while k < self.links.len() {
            if self.links[k].peer == from {
                if self.peer_listed(k) {
                    return Ok(k);
                }
                // Not listed any more. It published before it announced
                // LEAVING, and that Acquire load saw LEAVING (or later):
                // every message it sent is visible now. Drain first.
                if self.links[k].rx.has_message_now() {
                    return Ok(k);
                }
                gone = true;
                self.drop_link(k);
                continue;
            }
            k = k.saturating_add(1);
        }
        Err(gone)
    }

    /// The link to receive from `from` on: one with a message ready (even
    /// from a departed incarnation), else the current member's.
    ///
    /// `from` may link to us, send and leave at any moment, also while we
    /// look it up or set up the link ourselves. Before concluding that it
    /// is gone (or was never here), look at our pending bits once more: it
    /// sets its bit before it sends, and we only conclude after seeing its
    /// entry no longer ACTIVE, which it stores after that (SeqCst), so its
    /// bit (and the link file it keeps for us) is visible by then.
    pub(super) fn recv_link(&mut self, from: &str) -> Result<usize, Unreachable> {
        if !self.links.iter().any(|l| l.peer == from) {
            self.accept_pending();
        }
        if let Some(k) = self.ready_link(from) {
            return Ok(k);
        }
        let mut gone = match self.scan_links_from(from) {
            Ok(k) => return Ok(k),
            Err(gone) => gone,
        };
        match self.link_to(from) {
            Ok(k) => return Ok(k),
            Err(Unreachable::Gone) => gone = true,
            Err(Unreachable::NoSuchMember) => {}
            Err(e @ Unreachable::Failed(_)) => return Err(e),
        }
        self.accept_pending();
        if let Some(k) = self.ready_link(from) {
            return Ok(k);
        }
        match self.scan_links_from(from) {
            Ok(k) => Ok(k),
            Err(g) if gone || g => Err(Unreachable::Gone),
            Err(_) => Err(Unreachable::NoSuchMember),
        }
    }

    /// The link to receive from `from` on, waiting (with `block`, until
    /// `deadline`) for a member of that name to join if there is none yet.
    pub(super) fn recv_link_waiting(
        &mut self,
        from: &str,
        deadline: Option<Instant>,
        block: bool,
    ) -> Result<usize, RecvError> {
        loop {
            match self.recv_link(from) {
                Ok(k) => return Ok(k),
                // It was here, and is not any more.
                Err(Unreachable::NoSuchMember) if self.known.borrow().contains(from) => {
                    return Err(Unreachable::Gone.recv_error(from))
                }
                Err(Unreachable::NoSuchMember) if block => {}
                Err(e) => return Err(e.recv_error(from)),
            }
            if past(deadline) {
                return Err(RecvError::Timeout);
            }
            // A joiner that links to us posts our inbox; one that does not
            // (yet) is seen in the directory within a slice.
            let until = crate::wait::later(Instant::now(), JOIN_POLL);
            let until = deadline.map_or(until, |d| d.min(until));
            let pending = self.dom.member(self.me).pending_links();
            let _ = Wait::new(&self.inbox, WaitStrategy::Park, Some(until))
                .slice(JOIN_POLL)
                .until(&mut SpinPolicy::new(), |_, _| {
                    Ok::<_, Infallible>((pending.load(Ordering::Acquire) != 0).then_some(()))
                });
        }
    }

    /// The one receive from `from` of the typed forms: passes the message
    /// in place to `f`. Without `p.block`, fails with `Empty` at once;
    /// with it, waits until `p.deadline` (none: for ever). See
    /// [`recv_from_until`](Self::recv_from_until).
    #[inline]
    pub(super) fn recv_from_with<R>(
        &mut self,
        from: &str,
        f: impl FnMut(ShmSlice<'_>) -> R,
        p: Patience<'_>,
    ) -> Result<R, RecvError> {
        // The domain's own membership check is the only one: no caller
        // passes an `alive` of its own.
        debug_assert!(p.alive.is_none());
        let until = p.deadline.map_or(Until::Forever, Until::At);
        self.recv_from_until(from, f, p.block, until)
    }

    /// The link to receive from `from` on: the one used last for `from`
    /// while it is the only link of that name and its peer is still the
    /// member it was made for (what [`recv_link`](Self::recv_link) would
    /// find then), else as `recv_link_waiting` finds it, with `until`
    /// resolved to a deadline for that wait.
    #[inline]
    pub(super) fn recv_from_link(
        &mut self,
        from: &str,
        until: &mut Until,
        block: bool,
    ) -> Result<usize, RecvError> {
        if let Some(k) = self.last_rx {
            if self.links.get(k).is_some_and(|l| l.peer == from) && self.peer_listed(k) {
                return Ok(k);
            }
        }
        let deadline = until.deadline();
        *until = deadline.map_or(Until::Forever, Until::At);
        let k = self.recv_link_waiting(from, deadline, block)?;
        self.last_rx = self.only_link_of(k);
        Ok(k)
    }

    /// The one receive from `from`: passes the message in place to `f`.
    /// Without `block`, fails with `Empty` at once; with it, waits
    /// `until`. The fast path costs what the link's receive costs: the
    /// link found through the last-used cache, then the link's own
    /// receive; a timeout becomes a deadline (a clock read) only when no
    /// message is there at once.
    pub(super) fn recv_from_until<R>(
        &mut self,
        from: &str,
        mut f: impl FnMut(ShmSlice<'_>) -> R,
        block: bool,
        mut until: Until,
    ) -> Result<R, RecvError> {
        let k = self.recv_from_link(from, &mut until, block)?;
        if !block {
            return match self.links[k]
                .rx
                .recv_with(&mut f, Patience::new(None, false))
            {
                Ok(m) => Ok(m),
                Err(RecvError::Empty) if self.peer_listed(k) => {
                    self.arm_readiness();
                    Err(RecvError::Empty)
                }
                Err(RecvError::Empty) if self.links[k].rx.has_message_now() => {
                    // It published, then left: take what it sent first.
                    let r = self.links[k].rx.recv_with(f, Patience::new(None, false));
                    r.or_else(|e| self.recv_failed(k, e))
                }
                Err(RecvError::Empty) => {
                    self.drop_link(k);
                    Err(RecvError::MemberGone {
                        name: from.to_string(),
                    })
                }
                Err(e) => self.recv_failed(k, e),
            };
        }
        if let Until::After(_) = until {
            if self.links[k].rx.has_message_now() {
                match self.links[k]
                    .rx
                    .recv_with(&mut f, Patience::new(None, false))
                {
                    Ok(m) => return Ok(m),
                    // A hole stepped over, say: wait for the next.
                    Err(RecvError::Empty) => {}
                    Err(e) => return self.recv_failed(k, e),
                }
            }
        }
        let deadline = until.deadline();
        // One wait, to the caller's deadline; on its slow looks the link's
        // wait engine also asks whether the peer is still a member (it may
        // never attach to the link). Once it is gone, what it sent is still
        // received, then MemberGone (recv_failed).
        let Member {
            links, dom, domain, ..
        } = self;
        let Link { rx, slot, gen, .. } = &mut links[k];
        let (slot, gen) = (*slot, *gen);
        let mut alive = || member_alive(dom, domain, slot, gen);
        match rx.recv_with(f, Patience::with(deadline, true, &mut alive)) {
            Ok(m) => Ok(m),
            Err(e) => self.recv_failed(k, e),
        }
    }

    pub(super) fn recv_failed<T>(&mut self, k: usize, e: RecvError) -> Result<T, RecvError> {
        let name = self.links[k].peer.clone();
        match e {
            // The ring end reports Disconnected only after it saw the sender
            // closed and then found the ring empty (link.rs): drained.
            RecvError::Disconnected => {
                reap_if_dead(&self.dom, &self.domain, self.links[k].slot);
                self.drop_link(k);
                Err(RecvError::MemberGone { name })
            }
            RecvError::Corrupt(c) => {
                self.drop_link(k);
                Err(RecvError::Corrupt(c))
            }
            other => Err(other),
        }
    }

    /// Receives the next message from the member named `from` only, waiting
    /// per the wait strategy (also for a member of that name to join, if
    /// none has yet). Messages it sent before it left are still received;
    /// then [`RecvError::MemberGone`].
    pub fn recv_from(&mut self, from: &str) -> Result<Vec<u8>, RecvError> {
        self.recv_from_with(from, |m| m.to_vec(), Patience::new(None, true))
    }
    /// Receives a message from `from` if one is queued now.
    pub fn try_recv_from(&mut self, from: &str) -> Result<Vec<u8>, RecvError> {
        self.recv_from_with(from, |m| m.to_vec(), Patience::new(None, false))
    }
    /// Receives a message from `from`, waiting at most `timeout` (the
    /// clock is read only when none is there at once).
    pub fn recv_from_timeout(
        &mut self,
        from: &str,
        timeout: Duration,
    ) -> Result<Vec<u8>, RecvError> {
        self.recv_from_until(from, |m| m.to_vec(), true, Until::After(timeout))
    }
    typed_recv_forms! {
        recv_from_with(from: &str) -> T;
        recv_value_from = recv_from,
        try_recv_value_from = try_recv_from,
        recv_value_from_timeout = recv_from_timeout;
        recv_deserialized_from, try_recv_deserialized_from, recv_deserialized_from_timeout;
    }

    /// One message from any link with one ready, round robin, passed in
    /// place to `f`; `None` if none has. Drops links whose peer has gone
    /// and that are drained (`check_process`: also asks the kernel about
    /// each peer's process).
    pub(super) fn poll_links<R>(
        &mut self,
        check_process: bool,
        f: &mut impl FnMut(ShmSlice<'_>) -> R,
    ) -> Option<Result<(String, R), RecvError>> {
        let n = self.links.len();
        for i in 0..n {
            let k = self.next.wrapping_add(i).checked_rem(n).unwrap_or(0);
            if self.links[k].rx.has_message_now() {
                self.next = k.wrapping_add(1);
                let peer = self.links[k].peer.clone();
                return Some(
                    match self.links[k]
                        .rx
                        .recv_with(&mut *f, Patience::new(None, false))
                    {
                        Ok(m) => Ok((peer, m)),
                        Err(RecvError::Empty) => continue,
                        Err(e) => match self.recv_failed::<()>(k, e) {
                            Err(RecvError::MemberGone { .. }) => continue,
                            Err(e) => Err(e),
                            Ok(()) => continue,
                        },
                    },
                );
            }
        }
        let mut k = 0;
        while k < self.links.len() {
            let listed = if check_process {
                self.peer_alive(k)
            } else {
                self.peer_listed(k)
            };
            if !listed && !self.links[k].rx.has_message_now() {
                self.drop_link(k);
                continue;
            }
            k = k.saturating_add(1);
        }
        None
    }

    /// The one receive from any member: passes the message in place to
    /// `f`, and returns the sender's name with what `f` returned. Without
    /// `p.block`, fails with `Empty` at once; with it, waits until
    /// `p.deadline` (none: for ever).
    pub(super) fn recv_any_with<R>(
        &mut self,
        mut f: impl FnMut(ShmSlice<'_>) -> R,
        p: Patience<'_>,
    ) -> Result<(String, R), RecvError> {
        let (deadline, block) = (p.deadline, p.block);
        let mut check_process = false;
        let mut last_check = Instant::now();
        loop {
            self.accept_pending();
            if let Some(r) = self.poll_links(check_process, &mut f) {
                return r;
            }
            check_process = false;
            if !block {
                self.arm_readiness();
                return Err(RecvError::Empty);
            }
            if past(deadline) {
                return Err(RecvError::Timeout);
            }
            // Wait on our inbox: every sender posts it after publishing
            // (when we wait), and every new link sets a pending bit first.
            // On slow looks, at most once per SLEEP_SLICE, also ask the
            // kernel about each peer's process (poll_links).
            let pending = self.dom.member(self.me).pending_links();
            let links = &self.links;
            let waited =
                Wait::new(&self.inbox, self.wait, deadline).until(&mut self.policy, |tick, _| {
                    if pending.load(Ordering::Acquire) != 0
                        || links.iter().any(|l| l.rx.has_message_now())
                    {
                        return Ok::<_, Infallible>(Some(false));
                    }
                    if tick == Tick::Slice && last_check.elapsed() >= SLEEP_SLICE {
                        last_check = Instant::now();
                        return Ok(Some(true));
                    }
                    Ok(None)
                });
            if let Ok(Some(slow)) = waited {
                check_process = slow;
            }
        }
    }

    /// Receives the next message from any member, waiting per the wait
    /// strategy; returns the sender's name with it.
    pub fn recv_any(&mut self) -> Result<(String, Vec<u8>), RecvError> {
        self.recv_any_with(|m| m.to_vec(), Patience::new(None, true))
    }
    /// Receives a message from any member if one is queued now.
    pub fn try_recv_any(&mut self) -> Result<(String, Vec<u8>), RecvError> {
        self.recv_any_with(|m| m.to_vec(), Patience::new(None, false))
    }
    /// Receives a message from any member, waiting at most `timeout`.
    pub fn recv_any_timeout(&mut self, timeout: Duration) -> Result<(String, Vec<u8>), RecvError> {
        let deadline = crate::wait::deadline_after(timeout);
        self.recv_any_with(|m| m.to_vec(), Patience::new(deadline, true))
    }
    typed_recv_forms! {
        recv_any_with() -> (String, T);
        recv_any_value = recv_any,
        try_recv_any_value = try_recv_any,
        recv_any_value_timeout = recv_any_timeout;
        recv_any_deserialized, try_recv_any_deserialized, recv_any_deserialized_timeout;
    }
}

/// What a select (`crate::select`) needs of a member: whether a receive or
/// a send could make progress now (memory only), and the doorbells to
/// sleep on.
impl Member {
    /// A receive from `from` (None: from anyone) could make progress now:
    /// a message queued, or a new link to accept.
    pub(crate) fn recv_ready_now(&self, from: Option<&str>) -> bool {
        if self
            .dom
            .member(self.me)
            .pending_links()
            .load(Ordering::Acquire)
            != 0
        {
            return true;
        }
        match from {
            Some(from) => self.ready_link(from).is_some(),
            None => self.links.iter().any(|l| l.rx.has_message_now()),
        }
    }

    /// A descriptor for `epoll`, `poll`, mio, tokio's `AsyncFd` or
    /// io_uring's `POLL_ADD`: readable when a receive (from any member, or
    /// from one) may find a message or a new link. It is armed now and
    /// again whenever a receive finds nothing (`Empty`), and stays
    /// readable until then. Not for busy-polling members.
    pub fn as_fd(&mut self) -> Result<std::os::fd::BorrowedFd<'_>, crate::ReadinessError> {
        if crate::readiness::ensure(&mut self.readiness, self.wait, &self.inbox, false)? {
            self.arm_readiness();
        }
        crate::readiness::fd_of(&self.readiness)
    }

    /// A receive found nothing: arm the descriptor, if it arms itself.
    fn arm_readiness(&mut self) {
        if self.readiness.as_ref().is_some_and(|r| r.auto) {
            self.arm_for_wait();
        }
    }

    /// Arms the descriptor now (an async member about to await it); true
    /// if a receive may find something instead.
    pub(crate) fn arm_for_wait(&mut self) -> bool {
        let Some(mut r) = self.readiness.take() else {
            return true;
        };
        let now = r.arm_now(None, || self.recv_ready_now(None));
        self.readiness = Some(r);
        now
    }

    /// Hands the descriptor to an owner that arms it itself.
    #[cfg_attr(not(feature = "tokio"), allow(dead_code))]
    pub(crate) fn arm_explicitly(&mut self) {
        if let Some(r) = &mut self.readiness {
            r.auto = false;
        }
    }

    /// Every sender to this member rings it after it publishes.
    pub(crate) fn inbox_bell(&self) -> &crate::doorbell::Doorbell {
        &self.inbox
    }

    /// A send to `to` could make progress now (or fail at once); true
    /// while there is no link yet (the attempt sets it up).
    pub(crate) fn send_ready_now(&self, to: &str) -> bool {
        self.links
            .iter()
            .find(|l| l.peer == to)
            .map_or(true, |l| l.tx.ready_now())
    }

    /// The doorbell rung when a send to `to` may make progress.
    pub(crate) fn send_bell(&self, to: &str) -> Option<&crate::doorbell::Doorbell> {
        self.links
            .iter()
            .find(|l| l.peer == to)
            .map(|l| l.tx.doorbell())
    }
}

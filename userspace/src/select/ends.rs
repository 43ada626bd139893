//! The ends a select works on: what each kind of end offers a select
//! (a look from memory, its doorbell, its peer's death, a slow look, one
//! attempt), behind one trait.

use super::Outcome;
use crate::doorbell::Doorbell;
use crate::error::{RecvError, SendError};
use crate::liveness::Watched;
use crate::wait::WaitStrategy;
use crate::{Mailbox, Member, Publisher, Receiver, Sender, Subscriber};
use std::sync::Arc;

/// One operation on an end.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Kind<'a> {
    /// Receive (a link's receiver, a mailbox).
    Recv,
    /// Send this message (a link's sender, a mailbox).
    Send(&'a [u8]),
    /// A member's receive from the member named.
    RecvFrom(&'a str),
    /// A member's receive from any member.
    RecvAny,
    /// A member's send to the member named.
    SendTo(&'a str, &'a [u8]),
}

/// What a select needs of an end.
pub(crate) trait End {
    /// How the end waits on its own.
    fn strategy(&self) -> WaitStrategy;
    /// Whether the operation could make progress now, or fail at once,
    /// from memory alone (no system call).
    fn ready_now(&self, kind: &Kind<'_>) -> bool;
    /// The hot poll of a spinning select: only whether a message (room)
    /// is there, the fewest loads; the rest of [`ready_now`] is looked at
    /// on the engine's clock ticks.
    fn ready_hot(&self, kind: &Kind<'_>) -> bool {
        self.ready_now(kind)
    }
    /// The doorbell rung when the operation may make progress (None:
    /// none is known yet; slow looks find progress then).
    fn bell(&self, kind: &Kind<'_>) -> Option<&Doorbell>;
    /// The peer's liveness watch, if one process is the peer.
    fn death_watch(&mut self, kind: &Kind<'_>) -> Option<Arc<Watched>>;
    /// The slow look of a waiter (may make a system call).
    fn look_slowly(&mut self, _kind: &Kind<'_>) {}
    /// Whether the end's peer shares this thread's only CPU; None when
    /// its peers' CPUs are unknown (a mailbox, a member).
    fn shares_core(&self) -> Option<bool> {
        None
    }
    /// Other processes may take from or put into this end (a mailbox):
    /// a wake-up taken but not used is passed on.
    fn shared_with_others(&self, _kind: &Kind<'_>) -> bool {
        false
    }
    /// One attempt: the outcome, or None if it could not complete now
    /// (and did nothing).
    fn attempt(&mut self, kind: &Kind<'_>) -> Option<Outcome>;
}

/// An end, as a select holds it (built only here: [`SelectRecv`] and
/// [`SelectSend`] cannot be implemented outside this crate).
pub struct EndRef<'a>(pub(super) &'a mut dyn End);

impl std::fmt::Debug for EndRef<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EndRef")
    }
}

/// An end a select can receive on: [`Receiver`], [`Mailbox`], [`Subscriber`].
pub trait SelectRecv {
    #[doc(hidden)]
    fn select_end(&mut self) -> EndRef<'_>;
}
/// An end a select can send on: [`Sender`], [`Mailbox`], [`Publisher`].
pub trait SelectSend {
    #[doc(hidden)]
    fn select_end(&mut self) -> EndRef<'_>;
}

macro_rules! select_end {
    ($trait:ident for $($ty:ty),*) => {
        $(impl $trait for $ty {
            fn select_end(&mut self) -> EndRef<'_> {
                EndRef(self)
            }
        })*
    };
}
select_end!(SelectRecv for Receiver, Mailbox, Subscriber);
select_end!(SelectSend for Sender, Mailbox, Publisher);

fn received(r: Result<Vec<u8>, RecvError>) -> Option<Outcome> {
    match r {
        Ok(m) => Some(Outcome::Received(m)),
        Err(RecvError::Empty | RecvError::Timeout | RecvError::NoSuchMember { .. }) => None,
        Err(e) => Some(Outcome::RecvFailed(e)),
    }
}

fn sent<M>(r: Result<(), SendError<M>>) -> Option<Outcome> {
    match r {
        Ok(()) => Some(Outcome::Sent),
        Err(SendError::Full(_) | SendError::Timeout(_)) => None,
        Err(e) => Some(Outcome::SendFailed(e.without_msg())),
    }
}

impl End for Receiver {
    fn strategy(&self) -> WaitStrategy {
        self.wait_strategy()
    }
    fn shares_core(&self) -> Option<bool> {
        Some(self.shares_core_with_peer())
    }
    fn ready_now(&self, _: &Kind<'_>) -> bool {
        Receiver::ready_now(self)
    }
    fn ready_hot(&self, _: &Kind<'_>) -> bool {
        self.has_message_now()
    }
    fn bell(&self, _: &Kind<'_>) -> Option<&Doorbell> {
        Some(self.doorbell())
    }
    fn death_watch(&mut self, _: &Kind<'_>) -> Option<Arc<Watched>> {
        Receiver::death_watch(self)
    }
    fn look_slowly(&mut self, _: &Kind<'_>) {
        Receiver::look_slowly(self)
    }
    fn attempt(&mut self, _: &Kind<'_>) -> Option<Outcome> {
        received(self.try_recv())
    }
}

impl End for Sender {
    fn strategy(&self) -> WaitStrategy {
        self.wait_strategy()
    }
    fn shares_core(&self) -> Option<bool> {
        Some(self.shares_core_with_peer())
    }
    fn ready_now(&self, _: &Kind<'_>) -> bool {
        Sender::ready_now(self)
    }
    fn bell(&self, _: &Kind<'_>) -> Option<&Doorbell> {
        Some(self.doorbell())
    }
    fn death_watch(&mut self, _: &Kind<'_>) -> Option<Arc<Watched>> {
        Sender::death_watch(self)
    }
    fn look_slowly(&mut self, _: &Kind<'_>) {
        Sender::look_slowly(self)
    }
    fn attempt(&mut self, kind: &Kind<'_>) -> Option<Outcome> {
        match kind {
            Kind::Send(msg) => sent(self.try_send(*msg)),
            _ => None,
        }
    }
}

impl End for Mailbox {
    fn strategy(&self) -> WaitStrategy {
        self.wait_strategy()
    }
    fn ready_now(&self, kind: &Kind<'_>) -> bool {
        Mailbox::ready_now(self, matches!(kind, Kind::Recv))
    }
    fn bell(&self, kind: &Kind<'_>) -> Option<&Doorbell> {
        Some(self.doorbell(matches!(kind, Kind::Recv)))
    }
    fn death_watch(&mut self, _: &Kind<'_>) -> Option<Arc<Watched>> {
        Mailbox::death_watch(self)
    }
    fn shared_with_others(&self, _: &Kind<'_>) -> bool {
        true
    }
    fn attempt(&mut self, kind: &Kind<'_>) -> Option<Outcome> {
        match kind {
            Kind::Send(msg) => sent(self.try_send(*msg)),
            _ => received(self.try_recv()),
        }
    }
}

impl End for Member {
    fn strategy(&self) -> WaitStrategy {
        self.wait_strategy()
    }
    fn ready_now(&self, kind: &Kind<'_>) -> bool {
        match kind {
            Kind::RecvFrom(from) => self.recv_ready_now(Some(from)),
            Kind::SendTo(to, _) => self.send_ready_now(to),
            _ => self.recv_ready_now(None),
        }
    }
    fn bell(&self, kind: &Kind<'_>) -> Option<&Doorbell> {
        match kind {
            Kind::SendTo(to, _) => self.send_bell(to),
            _ => Some(self.inbox_bell()),
        }
    }
    fn death_watch(&mut self, _: &Kind<'_>) -> Option<Arc<Watched>> {
        // A member's peers are found gone by its attempts, which a slow
        // look's full round makes.
        None
    }
    fn attempt(&mut self, kind: &Kind<'_>) -> Option<Outcome> {
        match kind {
            Kind::RecvFrom(from) => received(self.try_recv_from(from)),
            Kind::SendTo(to, msg) => sent(self.try_send(to, *msg)),
            _ => match self.try_recv_any() {
                Ok((from, m)) => Some(Outcome::ReceivedFrom(from, m)),
                Err(e) => received(Err(e)),
            },
        }
    }
}

impl End for Subscriber {
    fn strategy(&self) -> WaitStrategy {
        self.wait_strategy()
    }
    fn ready_now(&self, _: &Kind<'_>) -> bool {
        Subscriber::ready_now(self)
    }
    fn ready_hot(&self, _: &Kind<'_>) -> bool {
        self.has_message_now()
    }
    fn bell(&self, _: &Kind<'_>) -> Option<&Doorbell> {
        Some(self.doorbell())
    }
    fn death_watch(&mut self, _: &Kind<'_>) -> Option<Arc<Watched>> {
        Subscriber::death_watch(self)
    }
    fn attempt(&mut self, _: &Kind<'_>) -> Option<Outcome> {
        received(self.try_recv())
    }
}

impl End for Publisher {
    fn strategy(&self) -> WaitStrategy {
        self.wait_strategy()
    }
    fn ready_now(&self, _: &Kind<'_>) -> bool {
        self.has_room_now()
    }
    fn bell(&self, _: &Kind<'_>) -> Option<&Doorbell> {
        Some(self.doorbell())
    }
    fn death_watch(&mut self, _: &Kind<'_>) -> Option<Arc<Watched>> {
        Publisher::death_watch(self)
    }
    fn attempt(&mut self, kind: &Kind<'_>) -> Option<Outcome> {
        match kind {
            Kind::Send(msg) => sent(self.try_send(*msg)),
            _ => None,
        }
    }
}

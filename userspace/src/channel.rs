//! Channels: one direction of a domain link, whatever its buffering.
//!
//! A domain link is two channels, one per direction, in one region. Each
//! buffering kind is one flavour, matched in every method (the way
//! crossbeam's `SenderFlavor` is): bounded(n) is a link's
//! `Sender`/`Receiver` pair over one SPSC ring; unbounded (chained
//! segments) and zero capacity (a rendezvous) are queues of the mailbox
//! machinery, attached one way. The domain code only talks to these enums.
#![warn(clippy::arithmetic_side_effects)]

use crate::doorbell::Doorbell;
use crate::error::{RecvError, SendError};
use crate::link::{Receiver, Sender};
use crate::mailbox::Mailbox;
use crate::shm::ShmSlice;
use crate::wait::Patience;

/// The sending half of one direction of a link.
// The bounded variant is the hot path: kept inline, not behind a box.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub(crate) enum ChannelSender {
    /// `HWL_DOMAIN_BUF_BOUNDED`: an SPSC ring of `capacity` slots.
    Bounded(Sender),
    /// `HWL_DOMAIN_BUF_UNBOUNDED` (a chain of ring segments up to the
    /// domain's byte limit: never waits) or `HWL_DOMAIN_BUF_ZERO` (a
    /// rendezvous: returns once the receiver has the message): a queue
    /// attached to send only.
    Queue(Box<Mailbox>),
}

/// The receiving half of one direction of a link.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub(crate) enum ChannelReceiver {
    /// `HWL_DOMAIN_BUF_BOUNDED`: an SPSC ring of `capacity` slots.
    Bounded(Receiver),
    /// `HWL_DOMAIN_BUF_UNBOUNDED` or `HWL_DOMAIN_BUF_ZERO`: the queue,
    /// attached to receive only.
    Queue(Box<Mailbox>),
}

impl ChannelSender {
    /// Sends `msg` through this direction's flavour (see
    /// `Sender::send_deadline`, `Mailbox::send_deadline`), then wakes the
    /// receiving member's `inbox` if it may be asleep there (hw/SPEC.md
    /// §12.4, [L4]). No fence of its own: a bounded send's publish ends
    /// with the ring's [F0] whenever the receiver may sleep
    /// (`Sender::receiver_may_sleep`), and a queue notifies the inbox
    /// itself, after its own [F0] (`Mailbox::notify_also`); a zero-capacity
    /// send returns once the receiver has the message, so there is nothing
    /// to announce.
    #[inline(always)]
    pub(crate) fn send<M: AsRef<[u8]>>(
        &mut self,
        msg: M,
        p: Patience<'_>,
        inbox: &Doorbell,
    ) -> Result<(), SendError<M>> {
        match self {
            ChannelSender::Bounded(tx) => {
                tx.send_deadline(msg, p)?;
                if tx.receiver_may_sleep() {
                    inbox.notify();
                }
                Ok(())
            }
            // Unbounded never reports Full (the chain grows, or the byte
            // limit says no at once); zero waits for a receiver.
            ChannelSender::Queue(q) => q.send_deadline(msg, p),
        }
    }

    /// Whether a send is tried once without waiting (no deadline, no
    /// check of the peer's membership) before it waits: every flavour but
    /// zero capacity, whose every send is a wait for the receiver.
    #[inline(always)]
    pub(crate) fn tries_first(&self) -> bool {
        match self {
            ChannelSender::Bounded(_) => true,
            ChannelSender::Queue(q) => !q.is_rendezvous(),
        }
    }

    /// Whether messages are queued for a receiver that has not attached yet.
    pub(crate) fn awaits_receiver(&self) -> bool {
        match self {
            ChannelSender::Bounded(tx) => tx.awaits_receiver(),
            ChannelSender::Queue(q) => !q.is_empty(),
        }
    }
}

impl ChannelSender {
    /// Whether a send could make progress now, or fail at once (memory
    /// only): for a select.
    pub(crate) fn ready_now(&self) -> bool {
        match self {
            ChannelSender::Bounded(tx) => tx.ready_now(),
            ChannelSender::Queue(q) => q.ready_now(false),
        }
    }

    /// The doorbell rung when a send may make progress.
    pub(crate) fn doorbell(&self) -> &Doorbell {
        match self {
            ChannelSender::Bounded(tx) => tx.doorbell(),
            ChannelSender::Queue(q) => q.doorbell(false),
        }
    }
}

impl ChannelReceiver {
    /// Receives one message through this direction's flavour and passes
    /// it in place to `f` (see `Receiver::recv_deadline_with`,
    /// `Mailbox::recv_until`).
    #[inline]
    pub(crate) fn recv_with<R>(
        &mut self,
        f: impl FnOnce(ShmSlice<'_>) -> R,
        p: Patience<'_>,
    ) -> Result<R, RecvError> {
        match self {
            ChannelReceiver::Bounded(rx) => rx.recv_deadline_with(f, p),
            ChannelReceiver::Queue(q) => q.recv_until(|b, _| f(b), p),
        }
    }

    /// Whether a receive would find a message now, from memory alone (no
    /// system call): what `recv_any` polls on every link.
    pub(crate) fn has_message_now(&self) -> bool {
        match self {
            ChannelReceiver::Bounded(rx) => rx.has_message_now(),
            ChannelReceiver::Queue(q) => q.has_message_now(),
        }
    }
}

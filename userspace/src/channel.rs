//! Channels: one direction of a domain link, whatever its buffering.
//!
//! A domain link is two channels, one per direction, in one region. Each
//! buffering kind is one flavour, matched in every method (the way
//! crossbeam's `SenderFlavor` is): bounded(n) is a link.rs
//! `Sender`/`Receiver` pair over one SPSC ring; unbounded is a queue of
//! chained segments (the mailbox machinery, attached one way). The domain
//! code only talks to these enums.

use crate::error::{RecvError, SendError};
use crate::link::{Receiver, Sender};
use crate::mailbox::Mailbox;
use std::time::Instant;

/// The sending half of one direction of a link.
// The bounded variant is the hot path: kept inline, not behind a box.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub(crate) enum ChannelSender {
    /// `HWL_DOMAIN_BUF_BOUNDED`: an SPSC ring of `capacity` slots.
    Bounded(Sender),
    /// `HWL_DOMAIN_BUF_UNBOUNDED`: a chain of ring segments up to the
    /// domain's byte limit (a queue attached to send only).
    Unbounded(Box<Mailbox>),
}

/// The receiving half of one direction of a link.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub(crate) enum ChannelReceiver {
    /// `HWL_DOMAIN_BUF_BOUNDED`: an SPSC ring of `capacity` slots.
    Bounded(Receiver),
    /// `HWL_DOMAIN_BUF_UNBOUNDED`: the receiving side of the chain.
    Unbounded(Box<Mailbox>),
}

impl ChannelSender {
    /// Sends `msg`: with `block`, waiting for space until `deadline` (none:
    /// for ever); without, failing with `Full` at once.
    pub(crate) fn send<M: AsRef<[u8]>>(
        &mut self,
        msg: M,
        deadline: Option<Instant>,
        block: bool,
    ) -> Result<(), SendError<M>> {
        match self {
            ChannelSender::Bounded(tx) => match (block, deadline) {
                (false, _) => tx.try_send(msg),
                (true, None) => tx.send(msg),
                (true, Some(d)) => {
                    tx.send_timeout(msg, d.saturating_duration_since(Instant::now()))
                }
            },
            // Never waits: the chain grows, or the byte limit says no.
            ChannelSender::Unbounded(q) => q.try_send(msg),
        }
    }

    /// Whether messages are queued for a receiver that has not attached yet.
    pub(crate) fn awaits_receiver(&self) -> bool {
        match self {
            ChannelSender::Bounded(tx) => tx.awaits_receiver(),
            ChannelSender::Unbounded(q) => !q.is_empty(),
        }
    }
}

impl ChannelReceiver {
    /// Receives one message: with `block`, waiting until `deadline` (none:
    /// for ever); without, failing with `Empty` at once.
    pub(crate) fn recv(
        &mut self,
        deadline: Option<Instant>,
        block: bool,
    ) -> Result<Vec<u8>, RecvError> {
        match self {
            ChannelReceiver::Bounded(rx) => match (block, deadline) {
                (false, _) => rx.try_recv(),
                (true, None) => rx.recv(),
                (true, Some(d)) => rx.recv_timeout(d.saturating_duration_since(Instant::now())),
            },
            ChannelReceiver::Unbounded(q) => match (block, deadline) {
                (false, _) => q.try_recv(),
                (true, None) => q.recv(),
                (true, Some(d)) => q.recv_timeout(d.saturating_duration_since(Instant::now())),
            },
        }
    }

    /// Whether a receive would find a message now, from memory alone (no
    /// system call): what `recv_any` polls on every link.
    pub(crate) fn has_message_now(&self) -> bool {
        match self {
            ChannelReceiver::Bounded(rx) => rx.has_message_now(),
            ChannelReceiver::Unbounded(q) => q.has_message_now(),
        }
    }
}

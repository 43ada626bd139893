//! Error types. Every message says what to do next.

use hwlink_drivers::MapError;
use std::fmt;

/// A value read from shared memory was out of range: the peer is broken or
/// hostile. The end that saw it refuses every later operation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "shared memory is corrupt: {what} is {value}, but at most {limit} is allowed; \
     the peer process is broken or hostile, so this end is closed: drop it, remove the \
     region (`hwlink ls` names it, `hwlink rm` removes it) and create a new link"
)]
pub struct Corruption {
    /// Which value was wrong.
    pub what: &'static str,
    /// What was read.
    pub value: u64,
    /// The largest acceptable value.
    pub limit: u64,
}

impl Corruption {
    pub(crate) fn new(what: &'static str, value: u64, limit: u64) -> Self {
        Corruption { what, value, limit }
    }
}

/// Which end of a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The end that sends.
    Sender,
    /// The end that receives.
    Receiver,
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Side::Sender => "sender",
            Side::Receiver => "receiver",
        })
    }
}

/// Creating or opening a region or a link failed.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// Mapping the memory failed (see the driver's message).
    #[error(transparent)]
    Map(#[from] MapError),
    /// Finding, enabling or mapping a device failed (see the driver's message).
    #[error(transparent)]
    Device(#[from] hwlink_drivers::DeviceError),
    /// No room left on the device memory for another link.
    #[error(
        "no room for the link on {device}: it needs {need} bytes, {free} are free; links on \
         device memory are never freed, so give the VM a fresh (zeroed) memory file, or more \
         memory, or use fewer or smaller links"
    )]
    DeviceFull {
        /// The device memory.
        device: String,
        /// Bytes the link needs.
        need: u64,
        /// Bytes left.
        free: u64,
    },
    /// A link of that name already lives on the device memory.
    #[error(
        "a link named {name:?} already lives on {device}: open it instead, pick another \
         name, or start the VM with a fresh (zeroed) memory file"
    )]
    DeviceNameTaken {
        /// Link name.
        name: String,
        /// The device memory.
        device: String,
    },
    /// The link did not appear on the device memory in time.
    #[error(
        "no link named {name:?} appeared on {device} within {waited:?}: start the side that \
         creates it (host or guest), check both map the same ivshmem memory, or wait longer"
    )]
    NotOnDevice {
        /// Link name.
        name: String,
        /// The device memory.
        device: String,
        /// How long the opener waited.
        waited: std::time::Duration,
    },
    /// The device memory's caching does not allow an operation.
    #[error(
        "{device} is mapped {kind}, which does not allow {needs}: map it uncached (pci:BDF or \
         vfio:BDF) instead"
    )]
    DeviceMemoryKind {
        /// The device memory.
        device: String,
        /// How it is mapped.
        kind: hwlink_drivers::MemoryKind,
        /// What was refused.
        needs: &'static str,
    },
    /// The region does not start with the hwlink magic.
    #[error(
        "region `{name}` is not an hwlink region (magic {found:#018x}, expected {expected:#018x}); \
         it was overwritten or belongs to another program: remove it with `hwlink rm {name}`"
    )]
    BadMagic {
        /// Region name.
        name: String,
        /// Magic found.
        found: u64,
        /// Magic expected.
        expected: u64,
    },
    /// The creator has not finished initialising the region.
    #[error(
        "region `{name}` is still being initialised by its creator (pid {creator_pid}); \
         retry, or if that process died run `hwlink rm --stale`"
    )]
    NotReady {
        /// Region name.
        name: String,
        /// Who is creating it (0 if unknown).
        creator_pid: u32,
    },
    /// The region uses another ABI version.
    #[error(
        "region `{name}` uses hwlink ABI version {found}, but this program speaks version {expected}: \
         build both processes from the same hwlink version"
    )]
    VersionMismatch {
        /// Region name.
        name: String,
        /// Version found.
        found: u32,
        /// Version expected.
        expected: u32,
    },
    /// The region uses features this program does not know.
    #[error(
        "region `{name}` uses features {unknown:#x} unknown to this hwlink: upgrade this program"
    )]
    UnsupportedFeatures {
        /// Region name.
        name: String,
        /// The unknown feature bits.
        unknown: u32,
    },
    /// The header's size disagrees with the file.
    #[error(
        "region `{name}` claims {header} bytes but its file has {file}: it is truncated or corrupt; \
         remove it with `hwlink rm {name}`"
    )]
    SizeMismatch {
        /// Region name.
        name: String,
        /// Size in the header.
        header: u64,
        /// Size of the mapping.
        file: u64,
    },
    /// A layout value in the region is out of range.
    #[error("region `{name}`: {source}")]
    Corrupt {
        /// Region name.
        name: String,
        /// What was wrong.
        #[source]
        source: Corruption,
    },
    /// The region holds no ring.
    #[error("region `{name}` holds no link ring: it was created by something else; `hwlink ls` shows what it holds")]
    NoRing {
        /// Region name.
        name: String,
    },
    /// The region holds no mailbox.
    #[error("region `{name}` is not a mailbox: `hwlink ls` shows what it holds")]
    NotAMailbox {
        /// Region name.
        name: String,
    },
    /// The mailbox's creator does not allow this kind of attachment.
    #[error(
        "mailbox `{name}` does not allow attaching to {asked}: its creator allows {allowed}; \
         attach with an allowed mode, or ask the creator to allow it"
    )]
    AccessDenied {
        /// Mailbox name.
        name: String,
        /// The mode asked for.
        asked: String,
        /// The modes allowed.
        allowed: String,
    },
    /// Every attachment entry of a mailbox is held by a live process.
    #[error(
        "mailbox `{name}` already has {max} live attachments: detach one (drop a handle), \
         or create another mailbox"
    )]
    TooManyAttachments {
        /// Mailbox name.
        name: String,
        /// The limit.
        max: u32,
    },
    /// The asked-for shape is not possible.
    #[error("invalid link configuration: {0}")]
    InvalidConfig(String),
    /// Another live process holds this end.
    #[error(
        "the {side} end of `{name}` is already attached by pid {pid}; each end has one process: \
         open the other end, or create another link"
    )]
    EndpointBusy {
        /// Region name.
        name: String,
        /// Which end.
        side: Side,
        /// Holder.
        pid: u32,
    },
    /// This end was used and closed, or its process died.
    #[error(
        "the {side} end of `{name}` was already used by pid {pid}, which has gone; a link's ends \
         cannot be re-attached: create a new link (`hwlink rm {name}` removes this one)"
    )]
    EndpointUsed {
        /// Region name.
        name: String,
        /// Which end.
        side: Side,
        /// Former holder.
        pid: u32,
    },
    /// Domains: another live process has joined under this name.
    #[error(
        "member name `{name}` is taken in domain `{domain}` (by pid {pid}): pick another name, \
         or wait for that member to leave"
    )]
    NameTaken {
        /// Domain name.
        domain: String,
        /// Member name.
        name: String,
        /// The process holding the name.
        pid: u32,
    },
    /// Domains: every directory entry is held by a live member.
    #[error(
        "domain `{domain}` is full ({max} members): wait for a member to leave, or use another \
         domain"
    )]
    DomainFull {
        /// Domain name.
        domain: String,
        /// Its directory size.
        max: u32,
    },
    /// Domains: the region of that name is not a domain.
    #[error(
        "region `{name}` exists but is not a domain: pick another domain name (`hwlink ls` \
         shows what it holds)"
    )]
    NotADomain {
        /// Region name.
        name: String,
    },
    /// Topics: the region holds no topic.
    #[error(
        "region `{name}` exists but is not a topic: pick another topic name (`hwlink ls` \
         shows what it holds)"
    )]
    NotATopic {
        /// Region name.
        name: String,
    },
    /// Topics: another live process publishes on this topic.
    #[error(
        "topic `{name}` already has a publisher (pid {pid}): a topic has one publisher; \
         publish under another topic name, or stop that process first"
    )]
    PublisherTaken {
        /// Topic name.
        name: String,
        /// The publisher's pid (in its own pid namespace).
        pid: u32,
    },
    /// Topics: every subscriber entry is held by a live process.
    #[error(
        "topic `{name}` already has {max} live subscribers: drop one, or create the topic \
         with a larger `max_subscribers`"
    )]
    TooManySubscribers {
        /// Topic name.
        name: String,
        /// The limit set at creation.
        max: u32,
    },
    /// Topics: the topic exists with another shape than the one asked for.
    #[error(
        "topic `{name}` exists with {existing}, but {asked} was asked for: open it with \
         matching settings, or remove it (`hwlink rm topic.{name}`) and create it again"
    )]
    TopicMismatch {
        /// Topic name.
        name: String,
        /// The existing setting.
        existing: String,
        /// The setting asked for.
        asked: String,
    },
    /// Domains: the domain kept closing or refusing joins until the deadline.
    #[error(
        "could not join domain `{domain}`: {reason}; retry, and if it persists remove the \
         domain with `hwlink rm {domain}` once no member runs"
    )]
    JoinFailed {
        /// Domain name.
        domain: String,
        /// Why.
        reason: String,
    },
}

/// Sending failed; the message is handed back.
#[derive(thiserror::Error)]
pub enum SendError<M> {
    /// `try_send`: the ring is full right now.
    #[error("the link is full: the receiver is behind; retry, or use `send` to wait")]
    Full(M),
    /// `send_timeout`: still full at the deadline.
    #[error("timed out waiting for space: the receiver is not reading")]
    Timeout(M),
    /// The receiver closed its end or its process died; nothing more will be
    /// delivered.
    #[error("the receiver has gone (closed or its process died): the message was not sent")]
    Disconnected(M),
    /// The message is longer than a slot.
    #[error("message of {len} bytes exceeds the link's slot size of {max} bytes: create the link with a larger slot size")]
    TooLarge {
        /// The message.
        msg: M,
        /// Its length.
        len: usize,
        /// The slot size.
        max: usize,
    },
    /// An unbounded queue cannot take more: its byte limit is reached (or
    /// the memory for a new segment could not be had). Nothing blocks.
    #[error(
        "the unbounded queue is at its memory limit of {limit} bytes ({reason}); the message was \
         not sent: receivers are behind, so drain it, or create it with a larger byte limit"
    )]
    MemoryLimit {
        /// The message.
        msg: M,
        /// The byte limit set at creation.
        limit: u64,
        /// What stopped the growth.
        reason: String,
    },
    /// The peer corrupted the ring.
    #[error(transparent)]
    Corrupt(Corruption),
    /// Domains: no member of that name has joined the domain.
    #[error(
        "no member named `{name}` in this domain (a member cannot send to itself): check the \
         name (`hwlink ls` lists the members), or wait for it to join and retry"
    )]
    NoSuchMember {
        /// The message.
        msg: M,
        /// The name asked for.
        name: String,
    },
    /// Domains: the member left the domain or its process died; the link to
    /// it is closed and its memory reclaimed. A member that joins later under
    /// the same name is another process: the next send goes to it.
    #[error(
        "member `{name}` has left the domain or died: the message was not sent, and messages \
         it had not received are lost; if it rejoins, send again"
    )]
    MemberGone {
        /// The message.
        msg: M,
        /// The member's name.
        name: String,
    },
    /// Domains: the link to the member could not be set up.
    #[error(
        "cannot set up the link to member `{peer}`: {reason}; the message was not sent \
         (`hwlink ls` shows the domain's regions)"
    )]
    LinkFailed {
        /// The message.
        msg: M,
        /// The member's name.
        peer: String,
        /// Why.
        reason: String,
    },
    /// `send_serialized` (feature `serde`): postcard could not encode the
    /// value (the postcard message). Nothing was sent; the value is still
    /// the caller's.
    #[error(
        "cannot encode the value with postcard: {0}; nothing was sent: postcard needs the \
         length of every sequence and map up front and supports no `serialize_any`, so check \
         the type's Serialize implementation (or send it as bytes)"
    )]
    Serialize(String),
}

impl<M> fmt::Debug for SendError<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::Full(_) => f.write_str("Full(..)"),
            SendError::Timeout(_) => f.write_str("Timeout(..)"),
            SendError::Disconnected(_) => f.write_str("Disconnected(..)"),
            SendError::TooLarge { len, max, .. } => {
                write!(f, "TooLarge {{ len: {len}, max: {max} }}")
            }
            SendError::MemoryLimit { limit, reason, .. } => {
                write!(f, "MemoryLimit {{ limit: {limit}, reason: {reason:?} }}")
            }
            SendError::Corrupt(c) => write!(f, "Corrupt({c:?})"),
            SendError::NoSuchMember { name, .. } => write!(f, "NoSuchMember({name:?})"),
            SendError::MemberGone { name, .. } => write!(f, "MemberGone({name:?})"),
            SendError::LinkFailed { peer, reason, .. } => {
                write!(f, "LinkFailed {{ peer: {peer:?}, reason: {reason:?} }}")
            }
            SendError::Serialize(e) => write!(f, "Serialize({e:?})"),
        }
    }
}

impl SendError<()> {
    /// The same error carrying `msg` (errors raised before a message is
    /// at hand are built with `()` and given it on the way out).
    pub(crate) fn with_msg<M>(self, msg: M) -> SendError<M> {
        match self {
            SendError::Full(()) => SendError::Full(msg),
            SendError::Timeout(()) => SendError::Timeout(msg),
            SendError::Disconnected(()) => SendError::Disconnected(msg),
            SendError::TooLarge { len, max, .. } => SendError::TooLarge { msg, len, max },
            SendError::MemoryLimit { limit, reason, .. } => {
                SendError::MemoryLimit { msg, limit, reason }
            }
            SendError::Corrupt(c) => SendError::Corrupt(c),
            SendError::NoSuchMember { name, .. } => SendError::NoSuchMember { msg, name },
            SendError::MemberGone { name, .. } => SendError::MemberGone { msg, name },
            SendError::LinkFailed { peer, reason, .. } => {
                SendError::LinkFailed { msg, peer, reason }
            }
            SendError::Serialize(e) => SendError::Serialize(e),
        }
    }
}

impl<M> SendError<M> {
    /// The same error without its message (handed back to nobody).
    pub fn without_msg(self) -> SendError<()> {
        match self {
            SendError::Full(_) => SendError::Full(()),
            SendError::Timeout(_) => SendError::Timeout(()),
            SendError::Disconnected(_) => SendError::Disconnected(()),
            SendError::TooLarge { len, max, .. } => SendError::TooLarge { msg: (), len, max },
            SendError::MemoryLimit { limit, reason, .. } => SendError::MemoryLimit {
                msg: (),
                limit,
                reason,
            },
            SendError::Corrupt(c) => SendError::Corrupt(c),
            SendError::NoSuchMember { name, .. } => SendError::NoSuchMember { msg: (), name },
            SendError::MemberGone { name, .. } => SendError::MemberGone { msg: (), name },
            SendError::LinkFailed { peer, reason, .. } => SendError::LinkFailed {
                msg: (),
                peer,
                reason,
            },
            SendError::Serialize(e) => SendError::Serialize(e),
        }
    }

    /// The message, if the error carries it back.
    pub fn into_inner(self) -> Option<M> {
        match self {
            SendError::Full(m) | SendError::Timeout(m) | SendError::Disconnected(m) => Some(m),
            SendError::TooLarge { msg, .. }
            | SendError::MemoryLimit { msg, .. }
            | SendError::NoSuchMember { msg, .. }
            | SendError::MemberGone { msg, .. }
            | SendError::LinkFailed { msg, .. } => Some(msg),
            SendError::Corrupt(_) | SendError::Serialize(_) => None,
        }
    }
}

/// Receiving failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecvError {
    /// `try_recv`: nothing is queued right now.
    #[error("the link is empty; retry, or use `recv` to wait")]
    Empty,
    /// `recv_timeout`: nothing arrived before the deadline.
    #[error("timed out waiting for a message: the sender is not sending")]
    Timeout,
    /// The sender closed its end or died, and every message it sent has been
    /// received.
    #[error(
        "the sender has gone (closed or its process died) and every message it sent was received"
    )]
    Disconnected,
    /// Topics under `Backpressure::Overwrite`: the publisher overwrote
    /// this many messages before this subscriber read them. The next
    /// receive continues with the oldest message still held.
    #[error(
        "this subscriber fell behind and missed {0} messages (overwritten); receiving \
         continues with the oldest message still held: read faster, or create the topic \
         with a larger capacity or `Backpressure::Block`"
    )]
    Lagged(u64),
    /// The buffer passed to `recv_into` is too small; the message stays queued.
    #[error("the message has {len} bytes but the buffer holds {cap}: pass a larger buffer")]
    BufferTooSmall {
        /// Message length.
        len: usize,
        /// Buffer length.
        cap: usize,
    },
    /// The next segment of an unbounded queue cannot be mapped.
    #[error("the queue's next segment cannot be mapped: {reason}")]
    Unavailable {
        /// Why (the driver's message, which says what to do).
        reason: String,
    },
    /// The peer corrupted the ring.
    #[error(transparent)]
    Corrupt(#[from] Corruption),
    /// Domains: no member of that name has joined the domain (and no
    /// message from one is still queued).
    #[error(
        "no member named `{name}` in this domain: check the name (`hwlink ls` lists the \
         members), or wait for it to join and retry"
    )]
    NoSuchMember {
        /// The name asked for.
        name: String,
    },
    /// Domains: the member left or died, and every message it sent was
    /// received.
    #[error(
        "member `{name}` has left the domain or died, and every message it sent was received; \
         if it rejoins, receive again"
    )]
    MemberGone {
        /// The member's name.
        name: String,
    },
    /// Domains: the link to the member could not be set up.
    #[error("cannot set up the link to member `{peer}`: {reason}")]
    LinkFailed {
        /// The member's name.
        peer: String,
        /// Why.
        reason: String,
    },
    /// `recv_value` (and `ReadSlot::read_value`): the message's length is
    /// not the size of the type asked for. The message was consumed (except
    /// by `read_value`, which leaves the slot to its caller); the next
    /// receive takes the next one.
    #[error(
        "the message has {len} bytes, but the type received takes {expected}: the sender sent \
         a different type or version of it; check both sides use the same struct (this message \
         was consumed, the next receive takes the next one)"
    )]
    WrongSize {
        /// The message's length.
        len: usize,
        /// `size_of` the type asked for.
        expected: usize,
    },
    /// `recv_deserialized` (feature `serde`): the message is not one value
    /// of the type asked for in postcard's format (the postcard message).
    /// The message was consumed; the next receive takes the next one.
    #[error(
        "cannot decode the message with postcard: {0}; the sender sent a different type or \
         version of it: check both sides use the same type, with the same serde attributes \
         (this message was consumed, the next receive takes the next one)"
    )]
    Deserialize(String),
}

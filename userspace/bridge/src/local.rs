//! The local hwlink objects a bridge carries: a source it takes messages
//! from (exports) and a sink it delivers them into (imports), over
//! mailboxes, links and topics, opened or created as the command line says.

use crate::wire;
use hwlink::{
    Access, Buffering, LinkBuilder, Mailbox, MailboxBuilder, OpenError, Publisher, Receiver,
    RecvError, SendError, Sender, Subscriber, TopicBuilder, WaitStrategy,
};
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// Which kind of hwlink object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A mailbox (many senders, many receivers).
    Mailbox,
    /// A link (one sender, one receiver).
    Link,
    /// A topic (one publisher, many subscribers).
    Topic,
}

impl Kind {
    /// The name on the command line and in keys.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Mailbox => "mailbox",
            Kind::Link => "link",
            Kind::Topic => "topic",
        }
    }

    /// The region name `hwlink ls` lists the object under.
    pub fn region_name(self, name: &str) -> String {
        match self {
            Kind::Mailbox => format!("{}{name}", hwlink::MAILBOX_PREFIX),
            Kind::Link => name.to_string(),
            Kind::Topic => format!("{}{name}", hwlink::TOPIC_PREFIX),
        }
    }
}

impl FromStr for Kind {
    type Err = String;
    fn from_str(s: &str) -> Result<Kind, String> {
        match s {
            "mailbox" => Ok(Kind::Mailbox),
            "link" => Ok(Kind::Link),
            "topic" => Ok(Kind::Topic),
            _ => Err(format!(
                "unknown object kind `{s}`: use mailbox:NAME, link:NAME or topic:NAME"
            )),
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How objects the bridge creates are sized, and how it waits on them.
#[derive(Debug, Clone, Copy)]
pub struct LocalOptions {
    /// Slots (messages) in a created object.
    pub capacity: u32,
    /// Largest message of a created object.
    pub slot_size: u32,
    /// How the bridge waits on its local objects.
    pub wait: WaitStrategy,
}

/// Where an exporter takes messages from.
#[derive(Debug)]
pub enum Source {
    /// A mailbox, with receive access.
    Mailbox(Mailbox),
    /// A link's receiving end.
    Link(Receiver),
    /// A topic subscription.
    Topic(Subscriber),
}

/// What a take found.
#[derive(Debug, PartialEq, Eq)]
pub enum Took {
    /// One message appended to the frame.
    One,
    /// Nothing now.
    Nothing,
    /// The sending side is gone and everything it sent was taken.
    Closed,
    /// A topic subscription fell behind and missed this many messages.
    Lagged(u64),
}

/// A local object failed in a way the bridge cannot carry on from.
#[derive(Debug, thiserror::Error)]
#[error("local {kind} `{name}`: {detail}")]
pub struct LocalError {
    /// Which kind.
    pub kind: Kind,
    /// Which object.
    pub name: String,
    /// What happened and what to do.
    pub detail: String,
}

fn not_found(e: &OpenError) -> bool {
    matches!(e, OpenError::Map(hwlink_drivers::MapError::NotFound { .. }))
}

/// Opens mailbox `name` with `access`, creating it (bounded, as `o` says)
/// if there is none; a creation that another process won is an open.
fn mailbox(name: &str, o: &LocalOptions, access: Access) -> Result<Mailbox, OpenError> {
    let b = MailboxBuilder::new()
        .wait(o.wait)
        .slot_size(o.slot_size)
        .buffering(Buffering::Bounded(o.capacity));
    match b.open(name, access) {
        Err(e) if not_found(&e) => match b.clone().name(name).create(access) {
            Err(OpenError::NameTaken { .. }) => b.open(name, access),
            r => r,
        },
        r => r,
    }
}

fn link_builder(name: &str, o: &LocalOptions) -> LinkBuilder {
    LinkBuilder::new(name)
        .wait(o.wait)
        .capacity(o.capacity)
        .slot_size(o.slot_size)
}

fn topic_builder(name: &str, o: &LocalOptions) -> TopicBuilder {
    TopicBuilder::new(name)
        .wait(o.wait)
        .capacity(o.capacity)
        .slot_size(o.slot_size)
}

/// Runs `f` again while it fails because another process created the
/// object at the same moment (or is still setting it up), for up to 5 s.
fn retry_race<T>(mut f: impl FnMut() -> Result<T, OpenError>) -> Result<T, OpenError> {
    let until = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        match f() {
            Err(
                OpenError::NameTaken { .. }
                | OpenError::NotReady { .. }
                | OpenError::Map(hwlink_drivers::MapError::AlreadyExists { .. }),
            ) if std::time::Instant::now() < until => std::thread::sleep(Duration::from_millis(10)),
            r => return r,
        }
    }
}

fn recv_result(r: Result<(), RecvError>) -> Result<Took, RecvError> {
    match r {
        Ok(()) => Ok(Took::One),
        Err(RecvError::Empty | RecvError::Timeout) => Ok(Took::Nothing),
        Err(RecvError::Disconnected) => Ok(Took::Closed),
        Err(RecvError::Lagged(n)) => Ok(Took::Lagged(n)),
        Err(e) => Err(e),
    }
}

impl Source {
    /// Opens (or creates) the object to export; a creation that races
    /// another process's is retried as an open.
    pub fn open(kind: Kind, name: &str, o: &LocalOptions) -> Result<Source, OpenError> {
        retry_race(|| Source::open_once(kind, name, o))
    }

    fn open_once(kind: Kind, name: &str, o: &LocalOptions) -> Result<Source, OpenError> {
        Ok(match kind {
            Kind::Mailbox => Source::Mailbox(mailbox(name, o, Access::Recv)?),
            Kind::Link => {
                let b = link_builder(name, o);
                Source::Link(match b.open_receiver() {
                    Err(e) if not_found(&e) => b.create_receiver()?,
                    r => r?,
                })
            }
            Kind::Topic => Source::Topic(topic_builder(name, o).subscribe()?),
        })
    }

    /// Appends the next message to the frame in `buf`: waits up to `wait`
    /// for one, or not at all.
    pub fn take(&mut self, buf: &mut Vec<u8>, wait: Option<Duration>) -> Result<Took, RecvError> {
        let mut append =
            |s: hwlink::ShmSlice<'_>| wire::push_record(buf, s.len(), |d| s.append_to(d));
        match self {
            Source::Mailbox(m) => recv_result(match wait {
                Some(t) => m.recv_with_timeout(t, |s, _| append(s)),
                None => m.try_recv_with(|s, _| append(s)),
            }),
            Source::Link(r) => recv_result(match wait {
                Some(t) => r.peek_timeout(t).map(|slot| {
                    append(slot.bytes());
                    slot.release();
                }),
                None => r.try_recv_with(append),
            }),
            Source::Topic(s) => recv_result(match wait {
                Some(t) => s.recv_timeout(t).map(|m| {
                    wire::push_record(buf, m.len(), |d| d.extend_from_slice(&m));
                }),
                None => s.try_recv_with(append),
            }),
        }
    }
}

/// Where an importer delivers messages.
#[derive(Debug)]
pub enum Sink {
    /// A mailbox, with send access.
    Mailbox(Mailbox),
    /// A link's sending end.
    Link(Sender),
    /// A topic's publisher.
    Topic(Publisher),
}

/// What a delivery found.
#[derive(Debug, PartialEq, Eq)]
pub enum Put {
    /// Delivered.
    Done,
    /// No room now (or within the time given): try again later.
    Full,
    /// The receiving side is gone: the message stays with the bridge.
    Gone,
}

impl Sink {
    /// Opens (or creates) the object to import into; a creation that
    /// races another process's is retried as an open.
    pub fn open(kind: Kind, name: &str, o: &LocalOptions) -> Result<Sink, OpenError> {
        retry_race(|| Sink::open_once(kind, name, o))
    }

    fn open_once(kind: Kind, name: &str, o: &LocalOptions) -> Result<Sink, OpenError> {
        Ok(match kind {
            Kind::Mailbox => Sink::Mailbox(mailbox(name, o, Access::Send)?),
            Kind::Link => {
                let b = link_builder(name, o);
                Sink::Link(match b.open_sender() {
                    Err(e) if not_found(&e) => b.create_sender()?,
                    r => r?,
                })
            }
            Kind::Topic => Sink::Topic(topic_builder(name, o).publish()?),
        })
    }

    /// Delivers `msg`, waiting up to `wait` for room (or not at all).
    pub fn put(&mut self, msg: &[u8], wait: Option<Duration>) -> Result<Put, SendError<()>> {
        let r = match (self, wait) {
            (Sink::Mailbox(m), Some(t)) => m.send_timeout(msg, t),
            (Sink::Mailbox(m), None) => m.try_send(msg),
            (Sink::Link(s), Some(t)) => s.send_timeout(msg, t),
            (Sink::Link(s), None) => s.try_send(msg),
            (Sink::Topic(p), Some(t)) => p.send_timeout(msg, t),
            (Sink::Topic(p), None) => p.try_send(msg),
        };
        match r {
            Ok(()) => Ok(Put::Done),
            Err(SendError::Full(_) | SendError::Timeout(_)) => Ok(Put::Full),
            Err(SendError::Disconnected(_)) => Ok(Put::Gone),
            Err(e) => Err(e.without_msg()),
        }
    }
}

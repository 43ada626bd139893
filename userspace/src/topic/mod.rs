//! Topics: one publisher, many subscribers, each message written once into
//! shared memory and read in place by every subscriber (publish-subscribe,
//! fan-out). A slow subscriber either holds the publisher back
//! ([`Backpressure::Block`], nothing is lost) or is overtaken and told
//! exactly how many messages it missed ([`Backpressure::Overwrite`],
//! [`RecvError::Lagged`]). A subscriber that joins late may ask for up to
//! the last `history` messages first.
//!
//! The ring algorithm is `crate::topic_ring`; the layout and protocol are
//! hw/SPEC.md §16. This module holds the handles: finding or creating the
//! topic, the publisher's and subscribers' entries, waiting (the one wait
//! engine), wake-ups and liveness.
#![warn(clippy::arithmetic_side_effects)]

use crate::doorbell::Doorbell;
use crate::error::{OpenError, RecvError, SendError};
use crate::liveness::{PeerWatch, Watched};
use crate::objects::{self, RawTopic, TopicConfig, TopicParts};
use crate::region::{self, ObjectInit, ObjectSpec};
use crate::shm::{ShmSlice, ShmSliceMut};
use crate::sync::{fence, AtomicU32, Ordering};
use crate::topic_ring::{self, Look, TopicGeometry, TopicMem, Writer, BITMAP_WORDS};
use crate::wait::{Patience, SpinPolicy, Tick, Wait, WaitStrategy};
use hwlink_drivers::{Backend, BackingKind, FileAccess, MapError};
use hwlink_hw::{
    HWL_FEAT_FUTEX_DOORBELL, HWL_FEAT_TOPIC, HWL_OBJ_TOPIC, HWL_WAIT_MAY_SLEEP, HWL_WAIT_POLL,
};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod publisher;
mod subscriber;
pub use publisher::{Loan, LoanValue, Publisher};
pub use subscriber::{Sample, Subscriber};

/// Prefix of every topic's region name.
pub const TOPIC_PREFIX: &str = "topic.";
/// Longest topic name.
pub const MAX_TOPIC_NAME: usize = 32;
/// Default slots of a topic's ring.
pub const DEFAULT_TOPIC_CAPACITY: u32 = 1024;
/// Default most bytes of one message.
pub const DEFAULT_TOPIC_SLOT_SIZE: u32 = 240;
/// Default subscriber entries.
pub const DEFAULT_MAX_SUBSCRIBERS: u32 = 64;

/// What a topic does with a subscriber that falls behind, chosen at
/// creation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backpressure {
    /// The publisher waits for the slowest live subscriber (with the
    /// blocking, timed, `try_` and polling forms of every wait): nothing is
    /// lost. A subscriber that dies stops holding it back.
    Block,
    /// The publisher never waits. A subscriber a whole ring behind gets
    /// [`RecvError::Lagged`] with the exact count it missed, then the
    /// oldest message still held.
    Overwrite,
}

/// Creates or opens topics: the shape (used when this call creates the
/// topic, and checked against an existing one when set explicitly) and
/// this handle's options.
#[derive(Clone, Debug)]
pub struct TopicBuilder {
    name: String,
    capacity: Option<u32>,
    slot_size: Option<u32>,
    max_subscribers: Option<u32>,
    history: Option<u32>,
    backpressure: Option<Backpressure>,
    replay: u32,
    backend: Backend,
    wait: WaitStrategy,
    access: FileAccess,
    ready_timeout: Duration,
}

/// Short names for opening a topic with the defaults.
#[derive(Debug)]
pub struct Topic;

impl Topic {
    /// Publishes on topic `name`, creating it with the defaults if needed.
    pub fn publish(name: &str) -> Result<Publisher, OpenError> {
        TopicBuilder::new(name).publish()
    }
    /// Subscribes to topic `name`, creating it with the defaults if needed.
    pub fn subscribe(name: &str) -> Result<Subscriber, OpenError> {
        TopicBuilder::new(name).subscribe()
    }
    /// A builder for topic `name`.
    pub fn builder(name: &str) -> TopicBuilder {
        TopicBuilder::new(name)
    }
}

impl TopicBuilder {
    /// A builder for topic `name` (1 to 32 of `[A-Za-z0-9_.-]`) with the
    /// defaults: 1024 slots of 240 bytes, 64 subscribers, no history,
    /// `Block`, hugepages if reserved, mode 0600, spin-then-park.
    pub fn new(name: impl Into<String>) -> Self {
        TopicBuilder {
            name: name.into(),
            capacity: None,
            slot_size: None,
            max_subscribers: None,
            history: None,
            backpressure: None,
            replay: 0,
            backend: Backend::Auto,
            wait: WaitStrategy::default(),
            access: FileAccess::private(),
            ready_timeout: Duration::from_secs(2),
        }
    }
    /// Slots in the ring (a power of two, 2 to 2^24).
    pub fn capacity(mut self, n: u32) -> Self {
        self.capacity = Some(n);
        self
    }
    /// Most bytes of one message.
    pub fn slot_size(mut self, n: u32) -> Self {
        self.slot_size = Some(n);
        self
    }
    /// Subscriber entries (1 to 256): live subscribers at one time.
    pub fn max_subscribers(mut self, n: u32) -> Self {
        self.max_subscribers = Some(n);
        self
    }
    /// Past messages kept for subscribers that join late (at most half the
    /// capacity); each asks for up to this many with [`replay`](Self::replay).
    pub fn history(mut self, n: u32) -> Self {
        self.history = Some(n);
        self
    }
    /// What happens to slow subscribers.
    pub fn backpressure(mut self, b: Backpressure) -> Self {
        self.backpressure = Some(b);
        self
    }
    setters! {
        /// A subscriber: receive up to this many past messages (capped by
        /// the topic's history) before live ones.
        replay: u32;
        /// Where the memory comes from.
        backend: Backend;
        /// How this handle waits.
        wait: WaitStrategy;
        /// How long opening waits for a topic another process is still
        /// creating.
        ready_timeout: Duration;
    }
    /// File mode of the topic's file (e.g. `0o660` to share it with a group; the
    /// default, 0600, keeps it to this user): the kernel's own check on
    /// who may map it. Used on creation; publisher and subscribers need read and write.
    pub fn file_mode(mut self, mode: u32) -> Self {
        self.access = self.access.with_mode(mode);
        self
    }

    /// The group the topic's file belongs to (a name or a gid; default: this
    /// process's group, or that of the shared hugetlbfs mount that
    /// `hwlink setup --group` made). This process must be a member. With
    /// `file_mode(0o660)`, every member of the group may use it. Used on
    /// creation.
    pub fn group(mut self, group: impl Into<hwlink_drivers::Group>) -> Self {
        self.access = self.access.with_group(group);
        self
    }

    /// Publishes on the topic (created if it does not exist). A second
    /// publisher is refused with [`OpenError::PublisherTaken`].
    pub fn publish(&self) -> Result<Publisher, OpenError> {
        Publisher::attach(self.open_or_create()?, self.wait)
    }

    /// Subscribes to the topic (created if it does not exist), starting
    /// with up to [`replay`](Self::replay) past messages.
    pub fn subscribe(&self) -> Result<Subscriber, OpenError> {
        Subscriber::attach(self.open_or_create()?, self.wait, self.replay)
    }

    fn region_name(&self) -> Result<String, OpenError> {
        let n = &self.name;
        if n.is_empty() || n.len() > MAX_TOPIC_NAME {
            return Err(OpenError::InvalidConfig(format!(
                "topic name `{n}` must be 1 to {MAX_TOPIC_NAME} characters"
            )));
        }
        Ok(format!("{TOPIC_PREFIX}{n}"))
    }

    fn geometry(&self) -> Result<TopicGeometry, OpenError> {
        let capacity = self.capacity.unwrap_or(DEFAULT_TOPIC_CAPACITY);
        TopicGeometry::validate(
            capacity,
            self.slot_size.unwrap_or(DEFAULT_TOPIC_SLOT_SIZE),
            self.max_subscribers.unwrap_or(DEFAULT_MAX_SUBSCRIBERS),
            self.history.unwrap_or(0),
            self.backpressure == Some(Backpressure::Overwrite),
        )
        .map_err(|c| {
            OpenError::InvalidConfig(format!(
                "{} {} is not allowed (limit {})",
                c.what, c.value, c.limit
            ))
        })
    }

    /// The existing topic's shape against what this builder set.
    fn check(&self, g: &TopicGeometry) -> Result<(), OpenError> {
        let mismatch = |what: &str, existing: u64, asked: u64| OpenError::TopicMismatch {
            name: self.name.clone(),
            existing: format!("{what} {existing}"),
            asked: format!("{what} {asked}"),
        };
        let pairs = [
            ("capacity", g.capacity, self.capacity),
            ("slot size", g.slot_size, self.slot_size),
            ("max subscribers", g.max_subs, self.max_subscribers),
            ("history", g.history, self.history),
        ];
        for (what, existing, asked) in pairs {
            if let Some(a) = asked {
                if a != existing {
                    return Err(mismatch(what, existing.into(), a.into()));
                }
            }
        }
        if let Some(b) = self.backpressure {
            if (b == Backpressure::Overwrite) != g.overwrite {
                return Err(OpenError::TopicMismatch {
                    name: self.name.clone(),
                    existing: format!("backpressure {:?}", backpressure_of(g)),
                    asked: format!("backpressure {b:?}"),
                });
            }
        }
        Ok(())
    }

    /// Opens the topic, or creates it; either way counted as one more
    /// user. A topic whose last user is leaving (users at 0) is being
    /// removed: wait for its file to go, then create a new one.
    fn open_or_create(&self) -> Result<Use, OpenError> {
        let name = self.region_name()?;
        let g = self.geometry()?;
        let deadline = crate::wait::later(Instant::now(), self.ready_timeout);
        loop {
            match region::open_region(&name, self.backend, self.ready_timeout) {
                Ok((map, info)) => {
                    let obj = info
                        .objects
                        .iter()
                        .find(|o| o.kind == HWL_OBJ_TOPIC)
                        .ok_or_else(|| OpenError::NotATopic { name: name.clone() })?;
                    let parts = TopicParts::locate_object(map, obj)?;
                    self.check(&parts.config().geometry)?;
                    if let Some(u) = Use::join(parts, &self.name) {
                        return Ok(u);
                    }
                }
                Err(OpenError::Map(MapError::NotFound { .. })) => match self.create(&name, g) {
                    Ok(u) => return Ok(u),
                    Err(OpenError::Map(MapError::AlreadyExists { .. })) => {}
                    Err(e) => return Err(e),
                },
                Err(e) => return Err(e),
            }
            if Instant::now() >= deadline {
                return Err(OpenError::InvalidConfig(format!(
                    "topic `{}` kept being removed while opening it: retry, or check that \
                     no process runs `hwlink rm` on it in a loop",
                    self.name
                )));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    fn create(&self, name: &str, g: TopicGeometry) -> Result<Use, OpenError> {
        let bytes = objects::topic::topic_bytes(&g)
            .ok_or_else(|| OpenError::InvalidConfig("capacity * slot size overflows".into()))?;
        let config = TopicConfig {
            id: random_id(),
            geometry: g,
        };
        let init = move |obj: ObjectInit| objects::init_topic(obj, config);
        let map = region::create_region(
            name,
            self.backend,
            &self.access,
            HWL_FEAT_TOPIC | HWL_FEAT_FUTEX_DOORBELL,
            &[ObjectSpec {
                kind: HWL_OBJ_TOPIC,
                name: "topic",
                size: bytes,
                init: &init,
            }],
            true,
        )?;
        let info = region::validate(&map)?;
        let obj = info
            .objects
            .iter()
            .find(|o| o.kind == HWL_OBJ_TOPIC)
            .ok_or_else(|| OpenError::NotATopic {
                name: name.to_string(),
            })?;
        // The creator is the first user (users = 1 at creation).
        Ok(Use {
            parts: TopicParts::locate_object(map, obj)?,
            name: self.name.clone(),
        })
    }
}

fn backpressure_of(g: &TopicGeometry) -> Backpressure {
    if g.overwrite {
        Backpressure::Overwrite
    } else {
        Backpressure::Block
    }
}

fn random_id() -> u64 {
    let mut b = [0u8; 8];
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b))
        .is_err()
    {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        b = (t ^ (u64::from(std::process::id()) << 40)).to_le_bytes();
    }
    u64::from_le_bytes(b).max(1)
}

/// One handle's use of a topic: counted in `users`; the last user to leave
/// removes the topic's file (hw/SPEC.md §16.5).
#[derive(Debug)]
struct Use {
    parts: TopicParts,
    name: String,
}

impl Use {
    /// Counts one more user of an existing topic; None if it is being
    /// removed (users already 0: never raised from 0).
    fn join(parts: TopicParts, name: &str) -> Option<Use> {
        let users = parts.raw().users();
        let mut u = users.load(Ordering::Acquire);
        loop {
            if u == 0 || u == u32::MAX {
                return None;
            }
            // No overflow: u < u32::MAX.
            match users.compare_exchange_weak(
                u,
                u.wrapping_add(1),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => {
                    return Some(Use {
                        parts,
                        name: name.to_string(),
                    })
                }
                Err(now) => u = now,
            }
        }
    }

    fn raw(&self) -> &RawTopic {
        self.parts.raw()
    }
}

/// Takes one user off the count on behalf of a handle that left or a
/// process that died; the one that takes it to 0 removes the file.
fn drop_user(parts: &TopicParts) {
    let users = parts.raw().users();
    let mut u = users.load(Ordering::Acquire);
    while u != 0 {
        // No underflow: u > 0.
        match users.compare_exchange_weak(u, u.wrapping_sub(1), Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(1) => {
                if parts.map().name().starts_with(TOPIC_PREFIX) {
                    let _ = hwlink_drivers::remove_region(parts.map().name());
                }
                return;
            }
            Ok(_) => return,
            Err(now) => u = now,
        }
    }
}

impl Drop for Use {
    /// Before leaving, takes the uses of processes that died holding an
    /// entry or the publisher word off the count (nobody else may be left
    /// to), so that the last live handle to go removes the file.
    fn drop(&mut self) {
        reap_dead(&self.parts);
        drop_user(&self.parts);
    }
}

/// Frees every subscriber entry and the publisher word of processes that
/// are gone for good, each taking its use off the count (once: by CAS).
fn reap_dead(parts: &TopicParts) {
    let raw = parts.raw();
    let me = crate::liveness::my_token();
    for e in 0..parts.config().geometry.max_subs {
        let t = raw.token(e).load(Ordering::Acquire);
        if t != 0 && t != me && t != publisher::REAPING && PeerWatch::new(t).gone_for_good() {
            publisher::reap(parts, e, t);
        }
    }
    let p = raw.publisher().load(Ordering::Acquire);
    if p != 0
        && p != me
        && PeerWatch::new(p).gone_for_good()
        && raw
            .publisher()
            .compare_exchange(p, 0, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
    {
        drop_user(parts);
    }
}

/// The wait-mode word of a handle waiting per `strategy`.
fn wait_mode(strategy: WaitStrategy) -> u32 {
    if strategy == WaitStrategy::BusyPoll {
        HWL_WAIT_POLL
    } else {
        HWL_WAIT_MAY_SLEEP
    }
}

/// The lock word of a watched process, to sleep on beside a doorbell.
fn lock_word(w: &Option<Arc<Watched>>) -> Option<&AtomicU32> {
    w.as_deref().and_then(Watched::lock_word)
}

/// A snapshot of one subscriber, for `hwlink ls`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriberInfo {
    /// Its entry in the table.
    pub entry: u32,
    /// Its pid (in its own pid namespace).
    pub pid: u32,
    /// Whether its process is alive.
    pub alive: bool,
    /// The next position it reads.
    pub cursor: u64,
    /// Messages published that it has not read yet.
    pub lag: u64,
    /// Messages it missed in all (Overwrite).
    pub lagged: u64,
}

/// A snapshot of a topic, for `hwlink ls`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicInfo {
    /// Slots.
    pub capacity: u32,
    /// Most bytes of one message.
    pub slot_size: u32,
    /// Subscriber entries.
    pub max_subscribers: u32,
    /// History kept for joiners.
    pub history: u32,
    /// Block or Overwrite.
    pub backpressure: Backpressure,
    /// Messages published so far (the tail).
    pub published: u64,
    /// The publisher's pid and whether it is alive, if one is attached.
    pub publisher: Option<(u32, bool)>,
    /// Every claimed subscriber entry.
    pub subscribers: Vec<SubscriberInfo>,
    /// Handles counted as users.
    pub users: u32,
}

/// Reads a topic's state (every value a snapshot, untrusted, for display).
pub(crate) fn info_of(parts: &TopicParts) -> TopicInfo {
    let raw = parts.raw();
    let g = parts.config().geometry;
    let tail = raw.tail().load(Ordering::Acquire);
    let ptoken = raw.publisher().load(Ordering::Acquire);
    let publisher = (ptoken != 0).then(|| {
        (
            raw.publisher_pid().load(Ordering::Relaxed),
            crate::liveness::is_alive(ptoken),
        )
    });
    let mut subscribers = Vec::new();
    for e in 0..g.max_subs {
        let token = raw.token(e).load(Ordering::Acquire);
        if token == 0 {
            continue;
        }
        let cursor = raw.cursor(e).load(Ordering::Relaxed);
        subscribers.push(SubscriberInfo {
            entry: e,
            pid: raw.entry_pid(e).load(Ordering::Relaxed),
            alive: crate::liveness::is_alive(token),
            cursor,
            lag: tail.saturating_sub(cursor),
            lagged: raw.entry_lagged(e).load(Ordering::Relaxed),
        });
    }
    TopicInfo {
        capacity: g.capacity,
        slot_size: g.slot_size,
        max_subscribers: g.max_subs,
        history: g.history,
        backpressure: backpressure_of(&g),
        published: tail,
        publisher,
        subscribers,
        users: raw.users().load(Ordering::Relaxed),
    }
}

fn topic_parts(
    map: &Arc<crate::region::RegionMap>,
    info: &crate::region::RegionInfo,
) -> Option<TopicParts> {
    let obj = info.objects.iter().find(|o| o.kind == HWL_OBJ_TOPIC)?;
    TopicParts::locate_object(map.clone(), obj).ok()
}

/// The topic in a validated region, for `hwlink ls`.
pub(crate) fn describe(
    map: &Arc<crate::region::RegionMap>,
    info: &crate::region::RegionInfo,
) -> Option<TopicInfo> {
    topic_parts(map, info).map(|p| info_of(&p))
}

/// `hwlink rm`: tells the topic's handles it is gone (subscribers get
/// Disconnected once drained, the publisher's sends Disconnected), and
/// wakes the parked ones.
pub(crate) fn mark_removed(map: &Arc<crate::region::RegionMap>, info: &crate::region::RegionInfo) {
    let Some(parts) = topic_parts(map, info) else {
        return;
    };
    let raw = parts.raw();
    raw.removed().store(1, Ordering::Release);
    fence(Ordering::SeqCst);
    for e in 0..parts.config().geometry.max_subs {
        raw.bell(e).notify();
    }
    raw.not_full().notify();
}

/// Bit `e` of a 256-bit map of words: (word, mask).
fn bit(e: u32) -> (u32, u64) {
    (e / 64, 1u64 << (e % 64))
}

#[cfg(test)]
mod tests;

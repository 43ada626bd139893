//! Mailboxes: indirect links with a unique id that any number of processes
//! attach to, each to send, to receive, or both; every message reaches
//! exactly one receiver. A mailbox outlives its members: it is removed by
//! its creator ([`Mailbox::remove`]) or by `hwlink rm`.
//!
//! Buffering is chosen at creation: bounded (one MPMC ring: a full mailbox
//! makes senders wait), unbounded (a chain of ring segments that grows up to
//! a byte limit: senders never wait), or zero capacity (a rendezvous: `send`
//! returns once a receiver has the message).
#![warn(clippy::arithmetic_side_effects)]

use crate::ahead::{Runner, Spares};
use crate::chain::{Chain, SegmentStats};
use crate::doorbell::Doorbell;
use crate::error::{OpenError, RecvError, SendError};
use crate::liveness::PeerWatch;
use crate::mpmc::{self, Head, MpmcGeometry, Owners, PopError, PushError, MAX_OWNERS};
use crate::objects::{self, MailboxConfig, MailboxParts, MpmcParts, RendezvousParts};
use crate::region::{self, ObjectInit, ObjectSpec, RegionMap};
use crate::rendezvous::{RdvRecvError, RdvSendError};
use crate::segments::RegionStore;
use crate::shm::ShmSlice;
use crate::sync::{fence, Ordering};
use crate::wait::{Alive, Patience, SpinPolicy, Tick, Wait, WaitStrategy};
use hwlink_drivers::{Backend, BackingKind};
use hwlink_hw::{
    HWL_ACCESS_RECV, HWL_ACCESS_SEND, HWL_BUF_BOUNDED, HWL_BUF_UNBOUNDED, HWL_BUF_ZERO,
    HWL_FEAT_FUTEX_DOORBELL, HWL_FEAT_MAILBOX, HWL_FEAT_MPMC_RING, HWL_MAX_ATTACHMENTS,
    HWL_OBJ_MAILBOX, HWL_OBJ_MPMC_RING,
};
use std::cell::{Cell, RefCell};
use std::convert::Infallible;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

mod builder;
pub use self::builder::*;

mod info;
mod ops;
pub use self::info::*;

/// Prefix of every mailbox's region name.
pub const MAILBOX_PREFIX: &str = "mbx.";
/// Longest mailbox name (its segments' region names add a suffix).
pub const MAX_MAILBOX_NAME: usize = 32;
/// Default slots of a mailbox's (first) ring.
pub const DEFAULT_MAILBOX_CAPACITY: u32 = 1024;
/// Default most bytes of one message.
pub const DEFAULT_MAILBOX_SLOT_SIZE: u32 = 240;

/// How a link or mailbox buffers messages, fixed at creation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Buffering {
    /// No queue: `send` returns once a receiver has taken the message
    /// (rendezvous).
    Zero,
    /// Up to `n` messages queued; then senders wait (or `try_send` reports
    /// Full).
    Bounded(u32),
    /// Senders never wait; the queue grows in segments until it holds
    /// `byte_limit` bytes, past which `send` fails at once with
    /// [`SendError::MemoryLimit`].
    Unbounded {
        /// Most bytes of memory all segments may take together.
        byte_limit: u64,
    },
}

impl fmt::Display for Buffering {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Buffering::Zero => f.write_str("zero (rendezvous)"),
            Buffering::Bounded(n) => write!(f, "bounded({n})"),
            Buffering::Unbounded { byte_limit } => {
                write!(f, "unbounded (limit {byte_limit} bytes)")
            }
        }
    }
}

/// What an attachment may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Send only.
    Send,
    /// Receive only.
    Recv,
    /// Send and receive.
    SendRecv,
}

impl Access {
    fn bits(self) -> u32 {
        match self {
            Access::Send => HWL_ACCESS_SEND,
            Access::Recv => HWL_ACCESS_RECV,
            Access::SendRecv => HWL_ACCESS_SEND | HWL_ACCESS_RECV,
        }
    }
    fn describe(bits: u32) -> String {
        match bits & (HWL_ACCESS_SEND | HWL_ACCESS_RECV) {
            0 => "nothing".into(),
            HWL_ACCESS_SEND => "send".into(),
            HWL_ACCESS_RECV => "receive".into(),
            _ => "send and receive".into(),
        }
    }
}

/// A mailbox's unique id, chosen at random by its creator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MailboxId(pub u64);

impl fmt::Display for MailboxId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// What a zero-capacity hand-off checks on its slow looks: the caller's own
/// `alive`, the mailbox not removed, the watched peer's process alive.
fn still_there<'a>(
    ctl: &'a MailboxParts,
    peer: &'a Option<PeerWatch>,
    alive: Alive<'a>,
) -> impl FnMut() -> Result<(), ()> + 'a {
    move || {
        if !alive()
            || ctl.removed().load(Ordering::Acquire) != 0
            || peer.as_ref().is_some_and(PeerWatch::died)
        {
            Err(())
        } else {
            Ok(())
        }
    }
}

/// How a mailbox wait ended.
enum Waited {
    /// The attempt may succeed now.
    Ready,
    /// The deadline passed.
    TimedOut,
    /// The caller's own check says the other side is gone.
    Abandoned,
}

fn rdv_send_error<E>(e: RdvSendError<E>) -> SendError<()> {
    match e {
        RdvSendError::NoReceiver => SendError::Full(()),
        RdvSendError::Timeout => SendError::Timeout(()),
        RdvSendError::Peer(_) => SendError::Disconnected(()),
        RdvSendError::TooLarge { len, max } => SendError::TooLarge { msg: (), len, max },
        RdvSendError::Corrupt(c) => SendError::Corrupt(c),
    }
}

fn rdv_recv_error<E>(e: RdvRecvError<E>) -> RecvError {
    match e {
        RdvRecvError::NoSender => RecvError::Empty,
        RdvRecvError::Timeout => RecvError::Timeout,
        RdvRecvError::Peer(_) => RecvError::Disconnected,
        RdvRecvError::Corrupt(c) => RecvError::Corrupt(c),
    }
}

fn mpmc_geometry(capacity: u32, slot_size: u32) -> Result<MpmcGeometry, OpenError> {
    let stride = mpmc::slot_stride(slot_size)
        .ok_or_else(|| OpenError::InvalidConfig(format!("slot size {slot_size} is too large")))?;
    let size = mpmc::ring_bytes(capacity, slot_size).unwrap_or(u64::MAX);
    MpmcGeometry::validate(capacity, slot_size, stride, mpmc::CONTROL_BYTES, size).map_err(|c| {
        OpenError::InvalidConfig(format!(
            "{} {} is not allowed (limit {}): capacity must be a power of two from 2 to 2^24, slot size up to 1 GiB",
            c.what, c.value, c.limit
        ))
    })
}

fn random_id() -> u64 {
    let mut b = [0u8; 8];
    // getrandom(2) never fails for 8 bytes once the pool is initialised; a
    // time-and-pid fallback keeps ids distinct if it does.
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

/// Where a queue lives: its control block and first ring (objects of a
/// validated region), and the tag of its segments' names.
pub(crate) struct QueuePlace {
    pub map: Arc<RegionMap>,
    pub ctl: region::ObjectInfo,
    pub ring: region::ObjectInfo,
    pub tag: char,
    /// Whether its rings must be solo (one producer, one consumer: a
    /// direction of a domain link, SPEC §9, "Solo rings"); a mailbox's never are.
    pub solo: bool,
}

/// What carries the messages.
#[derive(Debug)]
enum Queue {
    Bounded(MpmcParts),
    Unbounded(Box<Chain<RegionStore>>),
    Zero(RendezvousParts),
}

/// The processes attached to a queue, by attachment entry, as the ring
/// asks about them ([`Owners`]): an entry's holder is gone once nobody
/// holds the entry, or once the kernel has dropped the liveness lock of the
/// process that does. Looked at only when a slot is found held; the lock
/// (a system call) at most every [`LOCK_CHECK_EVERY`] per holder, unless
/// the holder's robust word already says it died.
#[derive(Debug)]
struct Attached {
    ctl: MailboxParts,
    token: u32,
    cache: RefCell<Vec<Option<Holder>>>,
}

#[derive(Debug)]
struct Holder {
    token: u32,
    watch: PeerWatch,
    checked: Option<Instant>,
}

/// Shortest time between two checks of one holder's liveness lock.
const LOCK_CHECK_EVERY: Duration = Duration::from_millis(20);

impl Attached {
    fn new(ctl: MailboxParts, token: u32) -> Attached {
        Attached {
            ctl,
            token,
            cache: RefCell::new((0..MAX_OWNERS).map(|_| None).collect()),
        }
    }
}

impl Owners for Attached {
    fn dead(&self, owner: u32) -> bool {
        if owner >= MAX_OWNERS {
            return true;
        }
        let token = self
            .ctl
            .attachment(owner as usize)
            .token
            .load(Ordering::Acquire);
        if token == 0 {
            // Nobody holds the entry: its holder detached (never while it
            // held a slot) or died and was reaped.
            return true;
        }
        if token == self.token {
            return false;
        }
        let mut cache = self.cache.borrow_mut();
        let slot = &mut cache[owner as usize];
        let holder = match slot {
            Some(h) if h.token == token => h,
            _ => slot.insert(Holder {
                token,
                watch: PeerWatch::new(token),
                checked: None,
            }),
        };
        let due = holder.watch.died()
            || holder
                .checked
                .map_or(true, |t| t.elapsed() >= LOCK_CHECK_EVERY);
        if !due {
            return false;
        }
        holder.checked = Some(Instant::now());
        holder.watch.gone_for_good()
    }
}

/// One process's attachment to a mailbox. Use one handle per thread
/// (methods take `&mut self`); open another for another thread.
#[derive(Debug)]
pub struct Mailbox {
    name: String,
    ctl: MailboxParts,
    queue: Queue,
    not_empty: Doorbell,
    not_full: Doorbell,
    wait: WaitStrategy,
    access: Access,
    /// Our entry in the attachment table (also the sender tag of our
    /// messages, and the owner tag of the slots we hold).
    entry: u32,
    created: bool,
    /// This handle's spin-then-park policy (the adaptive spin budget and
    /// whether the machine has one CPU), shared with the wait engine.
    policy: Cell<SpinPolicy>,
    attached: Attached,
    /// One direction of a domain link: the process at the other end. Once
    /// it is dead, a receive that finds nothing more says Disconnected,
    /// and a send says so at once.
    peer: Option<PeerWatch>,
    /// One direction of a domain link: the receiving member's inbox, which
    /// its `recv_any` sleeps on. Notified after every message this handle
    /// publishes, after the same [F0] fence as `not_empty` (hw/SPEC.md
    /// §12.4, [L4]), so the domain adds no fence of its own.
    link_inbox: Option<Doorbell>,
    /// The pollable descriptors, once asked for: of sends ([0],
    /// `as_send_fd`) and of receives ([1], `as_fd`).
    readiness: [Option<Box<crate::readiness::Readiness>>; 2],
}

impl Mailbox {
    /// Creates a mailbox named `name` with `buffering` and the other
    /// defaults of [`MailboxBuilder`], attached to send and receive.
    pub fn create(name: &str, buffering: Buffering) -> Result<Mailbox, OpenError> {
        MailboxBuilder::new()
            .name(name)
            .buffering(buffering)
            .create(Access::SendRecv)
    }

    /// Opens the mailbox `name` with `access`.
    pub fn open(name: &str, access: Access) -> Result<Mailbox, OpenError> {
        MailboxBuilder::new().open(name, access)
    }

    fn attach(
        map: Arc<RegionMap>,
        builder: &MailboxBuilder,
        access: Access,
        creating: bool,
    ) -> Result<Mailbox, OpenError> {
        let info = region::validate(&map)?;
        let name = map.name().to_string();
        let ctl_obj = info
            .objects
            .iter()
            .find(|o| o.kind == HWL_OBJ_MAILBOX)
            .ok_or_else(|| OpenError::NotAMailbox { name: name.clone() })?;
        let ring_obj = info
            .objects
            .iter()
            .find(|o| o.kind == HWL_OBJ_MPMC_RING || o.kind == hwlink_hw::HWL_OBJ_RENDEZVOUS)
            .ok_or_else(|| OpenError::NotAMailbox { name: name.clone() })?;
        let place = QueuePlace {
            map,
            ctl: ctl_obj.clone(),
            ring: ring_obj.clone(),
            tag: 's',
            solo: false,
        };
        Mailbox::attach_queue(place, builder.backend, builder.wait, access, creating)
    }

    /// Attaches to the queue (control block and first ring) at `place`: a
    /// mailbox, or one direction of a domain link.
    pub(crate) fn attach_queue(
        place: QueuePlace,
        backend: Backend,
        wait: WaitStrategy,
        access: Access,
        creating: bool,
    ) -> Result<Mailbox, OpenError> {
        let QueuePlace {
            map,
            ctl: ctl_obj,
            ring: ring_obj,
            tag,
            solo,
        } = place;
        let name = map.name().to_string();
        let me = crate::liveness::me()?;
        let ctl = MailboxParts::locate_object(map.clone(), &ctl_obj)?;
        let config = *ctl.config();
        if access.bits() & !config.access != 0 {
            return Err(OpenError::AccessDenied {
                name,
                asked: Access::describe(access.bits()),
                allowed: Access::describe(config.access),
            });
        }
        let queue = if config.buffering == HWL_BUF_ZERO {
            let rdv = RendezvousParts::locate_object(map.clone(), &ring_obj)?;
            if rdv.rdv().slot_size() != config.slot_size as usize {
                return Err(OpenError::Corrupt {
                    name,
                    source: crate::error::Corruption::new(
                        "mailbox rendezvous slot size",
                        rdv.rdv().slot_size() as u64,
                        config.slot_size.into(),
                    ),
                });
            }
            Queue::Zero(rdv)
        } else {
            let ring = MpmcParts::locate_object(map.clone(), &ring_obj)?;
            if ring.ring().geometry().solo != solo {
                return Err(OpenError::Corrupt {
                    name,
                    source: crate::error::Corruption::new(
                        "mailbox ring solo flag (a domain link's rings are solo, a mailbox's not)",
                        ring.ring().geometry().solo.into(),
                        solo.into(),
                    ),
                });
            }
            if ring.ring().geometry().slot_size != config.slot_size {
                return Err(OpenError::Corrupt {
                    name,
                    source: crate::error::Corruption::new(
                        "mailbox ring slot size",
                        ring.ring().geometry().slot_size.into(),
                        config.slot_size.into(),
                    ),
                });
            }
            match config.buffering {
                HWL_BUF_BOUNDED => Queue::Bounded(ring),
                HWL_BUF_UNBOUNDED => {
                    let base = *ring.ring().geometry();
                    // Segments live where the queue does, whatever this
                    // opener asked for: a queue in 4 KiB pages grows in
                    // 4 KiB pages; one in hugepages grows in hugepages
                    // while enough are free, then in 4 KiB pages.
                    let backend = match map.kind() {
                        BackingKind::Shm => Backend::Shm,
                        BackingKind::Hugetlbfs | BackingKind::MemfdHugetlb => Backend::Auto,
                        BackingKind::Device => backend,
                    };
                    let store = RegionStore::new(ctl.clone(), ring, tag, backend);
                    let mut chain = Chain::new(store, base).map_err(|e| match e {
                        crate::chain::StoreError::Corrupt(source) => OpenError::Corrupt {
                            name: name.clone(),
                            source,
                        },
                        crate::chain::StoreError::Unavailable(reason) => {
                            OpenError::InvalidConfig(format!("mailbox `{name}`: {reason}"))
                        }
                    })?;
                    // Its next segments are made on this process's
                    // background thread, ahead of need (hw/SPEC.md §11).
                    chain.prepare_ahead(Some(Spares::new(Runner::Background)));
                    if access.bits() & HWL_ACCESS_SEND != 0 {
                        crate::ahead::start_worker();
                    }
                    Queue::Unbounded(Box::new(chain))
                }
                _ => {
                    return Err(OpenError::UnsupportedFeatures {
                        name,
                        unknown: HWL_FEAT_MAILBOX,
                    })
                }
            }
        };
        let (entry, reaped) =
            claim_entry(&ctl, access.bits(), me).ok_or(OpenError::TooManyAttachments {
                name: name.clone(),
                max: HWL_MAX_ATTACHMENTS,
            })?;
        let attached = Attached::new(ctl.clone(), me.1);
        let (not_empty, not_full) = ctl.doorbells();
        let mbx = Mailbox {
            name: name
                .strip_prefix(MAILBOX_PREFIX)
                .unwrap_or(&name)
                .to_string(),
            ctl,
            queue,
            not_empty,
            not_full,
            wait,
            access,
            entry,
            created: false,
            policy: Cell::new(SpinPolicy::for_unknown_peers()),
            attached,
            peer: None,
            link_inbox: None,
            readiness: [None, None],
        };
        if let Some(dead) = reaped {
            // The entry was a dead process's: take back the slots it held
            // before anyone can mistake us for it.
            mbx.recover_owner(dead);
        }
        // Checked after claiming an entry: a remover that missed our entry
        // has set the flag before it looked (see `release_if_last`).
        fence(Ordering::SeqCst);
        if !creating && mbx.removed() {
            return Err(OpenError::Map(hwlink_drivers::MapError::NotFound { name }));
        }
        Ok(mbx)
    }

    /// Takes back the slots a dead attachment held (its entry is ours now).
    fn recover_owner(&self, entry: u32) {
        match &self.queue {
            Queue::Bounded(p) => p.ring().recover_owner(entry),
            Queue::Unbounded(c) => c.recover_owner(entry),
            // Rendezvous cells name their holders by token, not entry.
            Queue::Zero(_) => {}
        }
    }

    /// The mailbox's name (without the region prefix), or its id in hex.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// The unique id.
    pub fn id(&self) -> MailboxId {
        MailboxId(self.ctl.config().id)
    }
    /// What this attachment may do.
    pub fn access(&self) -> Access {
        self.access
    }
    /// How the mailbox buffers.
    pub fn buffering(&self) -> Buffering {
        let c = self.ctl.config();
        match c.buffering {
            HWL_BUF_UNBOUNDED => Buffering::Unbounded {
                byte_limit: c.byte_limit,
            },
            HWL_BUF_ZERO => Buffering::Zero,
            _ => Buffering::Bounded(c.capacity),
        }
    }
    /// Most bytes of one message.
    pub fn max_message(&self) -> usize {
        self.ctl.config().slot_size as usize
    }
    /// What backs the memory.
    pub fn backing(&self) -> BackingKind {
        self.ctl.map().kind()
    }
    /// Messages queued now (a snapshot).
    pub fn len(&self) -> u64 {
        match &self.queue {
            Queue::Bounded(p) => p.ring().len().unwrap_or(0),
            Queue::Unbounded(c) => c.len(),
            // Nothing is ever queued; a waiting sender holds its message.
            Queue::Zero(_) => 0,
        }
    }
    /// Whether nothing is queued now.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Makes this queue one direction of a link to the process with
    /// `token` (domain links): its death ends sends at once and receives
    /// once drained, and wakes a parked end.
    pub(crate) fn watch_peer(&mut self, token: u32) {
        self.peer = Some(PeerWatch::new(token));
    }

    /// Makes this queue's sends also notify `inbox` (one direction of a
    /// domain link: the receiving member's inbox), after their [F0].
    pub(crate) fn notify_also(&mut self, inbox: Doorbell) {
        self.link_inbox = Some(inbox);
    }

    /// Whether sends wait for a receiver to take each message (zero
    /// capacity): they publish nothing for a queue's doorbells to announce.
    pub(crate) fn is_rendezvous(&self) -> bool {
        matches!(self.queue, Queue::Zero(_))
    }

    /// Whether the linked peer is gone (one load).
    fn peer_gone(&self) -> bool {
        self.peer.as_ref().is_some_and(PeerWatch::died)
    }

    /// Whether a receive could make progress now, from memory alone (a
    /// message, a hole to step over, the end of a removed queue): what
    /// waiters and `recv_any` poll.
    pub(crate) fn has_message_now(&self) -> bool {
        self.has_message(true)
    }

    /// [`has_message_now`](Self::has_message_now); without `thorough` (a
    /// waiter's hot polls), a queue sealed at its head is seen through the
    /// removal flag or a linked successor, without reading the producers'
    /// enqueue position (`MpmcRing::head_in`).
    pub(crate) fn has_message(&self, thorough: bool) -> bool {
        if self.ctl.map().truncated() {
            return true;
        }
        match &self.queue {
            Queue::Bounded(p) => {
                p.ring().head_in(&self.attached, thorough) != Head::Empty || self.removed()
            }
            Queue::Unbounded(c) => c.head_in(&self.attached, self.removed(), thorough),
            Queue::Zero(r) => r.rdv().sender_waiting() || self.removed(),
        }
    }

    /// Whether a send could make progress now, from memory alone.
    fn has_room_now(&self) -> bool {
        match &self.queue {
            Queue::Bounded(p) => p.ring().has_room(&self.attached) || self.removed(),
            Queue::Unbounded(_) | Queue::Zero(_) => true,
        }
    }

    /// Bytes of memory the mailbox's segments take now.
    pub fn bytes_in_use(&self) -> u64 {
        self.ctl.bytes_in_use().load(Ordering::Relaxed)
    }

    /// Unbounded: how this handle grew the queue (segments linked that
    /// were made ahead of need or inline, and what its preparations made).
    /// None for other bufferings.
    pub fn segment_stats(&self) -> Option<SegmentStats> {
        match &self.queue {
            Queue::Unbounded(c) => Some(c.stats()),
            _ => None,
        }
    }

    /// Unbounded: this handle makes every new segment inside the send that
    /// needs it, as before segments were made ahead (benchmarks compare
    /// the two; not part of the API).
    #[doc(hidden)]
    pub fn make_segments_inline(&mut self) {
        if let Queue::Unbounded(c) = &mut self.queue {
            c.prepare_ahead(None);
        }
    }

    fn removed(&self) -> bool {
        self.ctl.removed().load(Ordering::Acquire) != 0
    }

    fn can(&self, bits: u32) -> bool {
        self.access.bits() & bits != 0
    }

    /// The error for a region another process shrank under us.
    fn truncation(&self) -> Option<crate::error::Corruption> {
        self.ctl.map().truncated().then(|| {
            crate::error::Corruption::new(
                "mailbox region size (the file was truncated by another process)",
                0,
                self.ctl.map().len() as u64,
            )
        })
    }
}

impl Drop for Mailbox {
    fn drop(&mut self) {
        // First, so that no segment is made for this handle once the files
        // may be removed below, and none it offered is left behind.
        if let Queue::Unbounded(c) = &mut self.queue {
            c.stop_ahead();
        }
        let a = self.ctl.attachment(self.entry as usize);
        a.mode.store(0, Ordering::Relaxed);
        a.pid.store(0, Ordering::Relaxed);
        a.token.store(0, Ordering::Release);
        // The last process to detach from a removed mailbox unlinks its
        // files (a domain link's are its domain's business).
        fence(Ordering::SeqCst);
        if self.removed()
            && self.ctl.map().name().starts_with(MAILBOX_PREFIX)
            && !others_attached(&self.ctl, 0)
        {
            let _ = crate::segments::remove_with_segments(self.ctl.map().name());
        }
    }
}

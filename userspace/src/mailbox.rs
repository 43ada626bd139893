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

use crate::chain::Chain;
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
use crate::wait::{always, Alive, SpinPolicy, Tick, Wait, WaitStrategy};
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

/// Creates or opens mailboxes.
#[derive(Clone, Debug)]
pub struct MailboxBuilder {
    name: Option<String>,
    buffering: Buffering,
    slot_size: u32,
    backend: Backend,
    wait: WaitStrategy,
    file_mode: u32,
    allow: Access,
    ready_timeout: Duration,
}

impl Default for MailboxBuilder {
    fn default() -> Self {
        MailboxBuilder {
            name: None,
            buffering: Buffering::Bounded(DEFAULT_MAILBOX_CAPACITY),
            slot_size: DEFAULT_MAILBOX_SLOT_SIZE,
            backend: Backend::Auto,
            wait: WaitStrategy::default(),
            file_mode: 0o600,
            allow: Access::SendRecv,
            ready_timeout: Duration::from_secs(2),
        }
    }
}

impl MailboxBuilder {
    /// A builder with the defaults: unnamed, bounded(1024), 240-byte
    /// messages, hugepages if reserved, mode 0600, send and receive allowed.
    pub fn new() -> Self {
        Self::default()
    }
    /// An optional name (1 to 32 of `[A-Za-z0-9_.-]`); unnamed mailboxes are
    /// found by id.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }
    setters! {
        /// How messages are buffered.
        buffering: Buffering;
        /// Most bytes of one message.
        slot_size: u32;
        /// Where the memory comes from.
        backend: Backend;
        /// How this process's handle waits.
        wait: WaitStrategy;
    }

    /// File mode of the mailbox's files (e.g. `0o660` to let the group
    /// attach): the kernel's own check on who may map it.
    pub fn file_mode(mut self, mode: u32) -> Self {
        self.file_mode = mode & 0o777;
        self
    }
    setters! {
        /// How long `open` waits for a mailbox another process is still
        /// creating.
        ready_timeout: Duration;
        /// What openers may attach for; checked on every open.
        allow: Access;
    }

    fn region_name(&self, id: MailboxId) -> Result<String, OpenError> {
        match &self.name {
            Some(n) if n.is_empty() || n.len() > MAX_MAILBOX_NAME => Err(OpenError::InvalidConfig(
                format!("mailbox name `{n}` must be 1 to {MAX_MAILBOX_NAME} characters"),
            )),
            Some(n) => Ok(format!("{MAILBOX_PREFIX}{n}")),
            None => Ok(format!("{MAILBOX_PREFIX}{id}")),
        }
    }

    /// Creates the mailbox and attaches to it with `access`.
    pub fn create(&self, access: Access) -> Result<Mailbox, OpenError> {
        let layout = QueueLayout::new(
            self.buffering,
            first_segment_capacity(self.slot_size),
            self.slot_size,
            self.allow,
        )?;
        let id = MailboxId(layout.config.id);
        let name = self.region_name(id)?;
        let config = layout.config;
        let init_ctl = move |obj: ObjectInit| {
            let len = obj.region_len();
            objects::init_mailbox(obj, config, len)
        };
        let init_queue = layout.init_queue();
        let map = region::create_region(
            &name,
            self.backend,
            HWL_FEAT_MAILBOX | layout.feature() | HWL_FEAT_FUTEX_DOORBELL,
            &[
                ObjectSpec {
                    kind: HWL_OBJ_MAILBOX,
                    name: "mailbox",
                    size: QUEUE_CTL_BYTES,
                    init: &init_ctl,
                },
                ObjectSpec {
                    kind: layout.kind(),
                    name: "queue",
                    size: layout.queue_bytes,
                    init: &*init_queue,
                },
            ],
            true,
        )?;
        let mode: std::fs::Permissions =
            std::os::unix::fs::PermissionsExt::from_mode(self.file_mode);
        if let Some(file) = map.file() {
            let _ = std::fs::set_permissions(file.path(), mode);
        }
        let region_len = map.len() as u64;
        let byte_limit = layout.config.byte_limit;
        if layout.config.buffering == HWL_BUF_UNBOUNDED && byte_limit < region_len {
            let _ = hwlink_drivers::remove_region(&name);
            return Err(OpenError::InvalidConfig(format!(
                "a byte limit of {byte_limit} is below the mailbox's first segment ({region_len} bytes): \
                 raise the limit"
            )));
        }
        let mut mbx = Mailbox::attach(map, self, access, true)?;
        mbx.created = true;
        Ok(mbx)
    }

    /// Opens the mailbox named `name` and attaches with `access`.
    pub fn open(&self, name: &str, access: Access) -> Result<Mailbox, OpenError> {
        let (map, _) = region::open_region(
            &format!("{MAILBOX_PREFIX}{name}"),
            self.backend,
            self.ready_timeout,
        )?;
        Mailbox::attach(map, self, access, false)
    }

    /// Opens the mailbox with unique id `id` (named or not).
    pub fn open_id(&self, id: MailboxId, access: Access) -> Result<Mailbox, OpenError> {
        let direct = format!("{MAILBOX_PREFIX}{id}");
        let mut names = vec![direct.clone()];
        for r in hwlink_drivers::list_regions()? {
            if r.name.starts_with(MAILBOX_PREFIX) && r.name != direct {
                names.push(r.name);
            }
        }
        for name in names {
            let Ok((map, info)) = region::open_region(&name, self.backend, self.ready_timeout)
            else {
                continue;
            };
            match MailboxParts::locate(map.clone(), &info) {
                Ok(p) if p.config().id == id.0 => return Mailbox::attach(map, self, access, false),
                _ => {}
            }
        }
        Err(OpenError::Map(hwlink_drivers::MapError::NotFound {
            name: format!("{MAILBOX_PREFIX}<id {id}>"),
        }))
    }
}

/// Slots of an unbounded mailbox's first segment: about 1 MiB of them (a
/// power of two, 2 to 256), so that a mailbox of large messages does not
/// start with hundreds of MiB; later segments grow as the queue does.
fn first_segment_capacity(slot_size: u32) -> u32 {
    let stride = mpmc::slot_stride(slot_size).unwrap_or(u32::MAX).max(64);
    let fit = (1u32 << 20).checked_div(stride).unwrap_or(0);
    match fit.checked_ilog2() {
        Some(bits) => (1u32 << bits).clamp(2, 256),
        None => 2,
    }
}

/// The shape of a queue's objects: its control block's configuration and
/// its queue object (first MPMC ring, or rendezvous cells).
pub(crate) struct QueueLayout {
    pub config: MailboxConfig,
    /// The first ring (bounded and unbounded).
    pub geometry: Option<MpmcGeometry>,
    /// Bytes the queue object needs.
    pub queue_bytes: u64,
}

/// Bytes of a queue control block object.
pub(crate) const QUEUE_CTL_BYTES: u64 = hwlink_hw::MAILBOX_CONTROL_BYTES;

/// Rendezvous cells of a zero-capacity mailbox: senders posting plus
/// receivers waiting at one moment.
const MAILBOX_RDV_CELLS: u32 = hwlink_hw::HWL_RDV_MAX_CELLS;

impl QueueLayout {
    /// A queue of `buffering` for messages of up to `slot_size` bytes that
    /// openers may attach to with `allow`. An unbounded queue's first ring
    /// has `first_capacity` slots; a zero-capacity one has `first_capacity`
    /// rendezvous cells (2 to 64).
    pub(crate) fn new(
        buffering: Buffering,
        first_capacity: u32,
        slot_size: u32,
        allow: Access,
    ) -> Result<QueueLayout, OpenError> {
        let (kind, capacity, byte_limit) = match buffering {
            Buffering::Zero => (HWL_BUF_ZERO, first_capacity.clamp(2, MAILBOX_RDV_CELLS), 0),
            Buffering::Bounded(n) => (HWL_BUF_BOUNDED, n, 0),
            Buffering::Unbounded { byte_limit } => (HWL_BUF_UNBOUNDED, first_capacity, byte_limit),
        };
        let (geometry, queue_bytes) = if kind == HWL_BUF_ZERO {
            let bytes =
                crate::rendezvous::rendezvous_bytes(capacity, slot_size).ok_or_else(|| {
                    OpenError::InvalidConfig(format!("slot size {slot_size} is too large"))
                })?;
            (None, bytes)
        } else {
            let g = mpmc_geometry(capacity, slot_size)?;
            let bytes = mpmc::ring_bytes(g.capacity, g.slot_size)
                .ok_or_else(|| OpenError::InvalidConfig("capacity * slot size overflows".into()))?;
            (Some(g), bytes)
        };
        Ok(QueueLayout {
            config: MailboxConfig {
                id: random_id(),
                buffering: kind,
                access: allow.bits(),
                capacity,
                slot_size,
                byte_limit,
            },
            geometry,
            queue_bytes,
        })
    }

    /// The queue object's kind.
    pub(crate) fn kind(&self) -> u32 {
        match self.geometry {
            Some(_) => HWL_OBJ_MPMC_RING,
            None => hwlink_hw::HWL_OBJ_RENDEZVOUS,
        }
    }

    /// The feature bit of the queue object.
    pub(crate) fn feature(&self) -> u32 {
        match self.geometry {
            Some(_) => HWL_FEAT_MPMC_RING,
            None => hwlink_hw::HWL_FEAT_RENDEZVOUS,
        }
    }

    /// Bytes the queue's two objects (control block and queue object) take
    /// in a region, each rounded up to whole objects (`HWL_OBJ_ALIGN`): the
    /// mailbox's share of a region it shares with other objects.
    pub(crate) fn objects_bytes(&self) -> u64 {
        let whole = |b: u64| hwlink_hw::object_bytes(b).unwrap_or(u64::MAX);
        whole(QUEUE_CTL_BYTES).saturating_add(whole(self.queue_bytes))
    }

    /// The queue's two objects, both named `name`: its control block
    /// (initialised by `init_ctl`) and its queue object (`init_queue`).
    pub(crate) fn object_specs<'a>(
        &self,
        name: &'a str,
        init_ctl: &'a dyn Fn(ObjectInit),
        init_queue: &'a dyn Fn(ObjectInit),
    ) -> [ObjectSpec<'a>; 2] {
        [
            ObjectSpec {
                kind: HWL_OBJ_MAILBOX,
                name,
                size: QUEUE_CTL_BYTES,
                init: init_ctl,
            },
            ObjectSpec {
                kind: self.kind(),
                name,
                size: self.queue_bytes,
                init: init_queue,
            },
        ]
    }

    /// Initialises the queue object.
    pub(crate) fn init_queue(&self) -> Box<dyn Fn(ObjectInit)> {
        match self.geometry {
            Some(g) => Box::new(move |o| objects::init_mpmc_ring(o, g, 0)),
            None => {
                let (cells, slot) = (self.config.capacity, self.config.slot_size);
                Box::new(move |o| objects::init_rendezvous(o, cells, slot))
            }
        }
    }
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
                    let chain = Chain::new(store, base).map_err(|e| match e {
                        crate::chain::StoreError::Corrupt(source) => OpenError::Corrupt {
                            name: name.clone(),
                            source,
                        },
                        crate::chain::StoreError::Unavailable(reason) => {
                            OpenError::InvalidConfig(format!("mailbox `{name}`: {reason}"))
                        }
                    })?;
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
            policy: Cell::new(SpinPolicy::new()),
            attached,
            peer: None,
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

    /// Whether the linked peer is gone (one load).
    fn peer_gone(&self) -> bool {
        self.peer.as_ref().is_some_and(PeerWatch::died)
    }

    /// Whether a receive could make progress now, from memory alone (a
    /// message, a hole to step over, the end of a removed queue): what
    /// waiters and `recv_any` poll.
    pub(crate) fn has_message_now(&self) -> bool {
        if self.ctl.map().truncated() {
            return true;
        }
        match &self.queue {
            Queue::Bounded(p) => p.ring().head(&self.attached) != Head::Empty || self.removed(),
            Queue::Unbounded(c) => c.head(&self.attached, self.removed()),
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

    /// One attempt; errors carry no message.
    fn try_send_raw(&mut self, msg: &[u8]) -> Result<(), SendError<()>> {
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
        if matches!(self.queue, Queue::Zero(_)) {
            return sent;
        }
        if sent.is_ok() {
            // F0: publish (the slot's turn) before reading the waiter count.
            fence(Ordering::SeqCst);
            self.not_empty.notify();
        }
        sent
    }

    /// The one send: without `block`, fails with `Full` at once; with it,
    /// waits until `deadline` (none: for ever), and while `alive` (the
    /// caller's own check, on slow looks) says the receiving side is there.
    pub(crate) fn send_deadline<M: AsRef<[u8]>>(
        &mut self,
        msg: M,
        deadline: Option<Instant>,
        block: bool,
        alive: Alive<'_>,
    ) -> Result<(), SendError<M>> {
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

    /// One attempt. `f` is consumed only when a message is received.
    fn try_recv_raw<R>(
        &mut self,
        f: &mut Option<impl FnOnce(ShmSlice<'_>, u32) -> R>,
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
                let mut claim = ring.try_claim(self.entry, &self.attached);
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
            Queue::Unbounded(c) => c.try_pop(self.entry, &self.attached, removed, f),
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
            // F2: release the slot before reading the waiter count.
            fence(Ordering::SeqCst);
            self.not_full.notify();
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
        deadline: Option<Instant>,
        block: bool,
        alive: Alive<'_>,
    ) -> Result<R, RecvError> {
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
        loop {
            match self.try_recv_raw(&mut f) {
                Ok(v) => return Ok(v),
                Err(RecvError::Empty) if abandoned => return Err(RecvError::Disconnected),
                Err(RecvError::Empty) if block && f.is_some() => {}
                Err(e) => return Err(e),
            }
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
    fn wait_for(
        &self,
        receiving: bool,
        deadline: Option<Instant>,
        fruitless: u32,
        alive: Alive<'_>,
    ) -> Waited {
        let check = |m: &Mailbox| {
            if receiving {
                m.has_message_now()
            } else {
                m.has_room_now()
            }
        };
        let bell = if receiving {
            &self.not_empty
        } else {
            &self.not_full
        };
        let watched = self.peer.as_ref().and_then(PeerWatch::shared);
        let mut policy = self.policy.get();
        let waited = Wait::new(bell, self.wait, deadline)
            .death(watched.as_deref().and_then(|w| w.lock_word()))
            .fruitless(fruitless)
            .until(&mut policy, |tick, _| {
                Ok::<_, Infallible>(if check(self) || self.peer_gone() {
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

    /// Receives the next message, waiting for one.
    pub fn recv(&mut self) -> Result<Vec<u8>, RecvError> {
        self.recv_until(|b, _| b.to_vec(), None, true, &mut always)
    }
    /// Receives the next message, waiting at most `timeout`.
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<Vec<u8>, RecvError> {
        self.recv_until(
            |b, _| b.to_vec(),
            crate::wait::deadline_after(timeout),
            true,
            &mut always,
        )
    }
    /// Receives a message if one is queued now.
    pub fn try_recv(&mut self) -> Result<Vec<u8>, RecvError> {
        self.recv_until(|b, _| b.to_vec(), None, false, &mut always)
    }
    /// Receives the next message and runs `f` on it in place (no copy, no
    /// allocation), with the sender's attachment number.
    pub fn recv_with<R>(&mut self, f: impl FnOnce(ShmSlice<'_>, u32) -> R) -> Result<R, RecvError> {
        self.recv_until(f, None, true, &mut always)
    }
    /// [`recv_with`](Self::recv_with) with a timeout.
    pub fn recv_with_timeout<R>(
        &mut self,
        timeout: Duration,
        f: impl FnOnce(ShmSlice<'_>, u32) -> R,
    ) -> Result<R, RecvError> {
        self.recv_until(f, crate::wait::deadline_after(timeout), true, &mut always)
    }
    /// [`recv_with`](Self::recv_with) if a message is queued now.
    pub fn try_recv_with<R>(
        &mut self,
        f: impl FnOnce(ShmSlice<'_>, u32) -> R,
    ) -> Result<R, RecvError> {
        self.recv_until(f, None, false, &mut always)
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

/// Marks a mailbox (or one direction of a domain link) removed and wakes
/// everyone waiting on it. Sends fail from now on; receivers drain what is
/// queued, sealing the ring (or the newest segment) themselves when they
/// find it empty, so that nothing accepted is left behind.
pub(crate) fn mark_removed(ctl: &MailboxParts) {
    ctl.removed().store(1, Ordering::Release);
    fence(Ordering::SeqCst);
    let (not_empty, not_full) = ctl.doorbells();
    for _ in 0..HWL_MAX_ATTACHMENTS {
        not_empty.post();
        not_full.post();
    }
}

/// Seals the first ring of a removed bounded queue found in `map` (for
/// removers that have not attached: `hwlink rm`).
pub(crate) fn seal_bounded(map: &Arc<RegionMap>, ctl: &MailboxParts, ring: &region::ObjectInfo) {
    if ctl.config().buffering == HWL_BUF_BOUNDED {
        if let Ok(p) = MpmcParts::locate_object(map.clone(), ring) {
            p.ring().seal();
        }
    }
}

/// Whether a live process other than the one with token `except` is
/// attached to the queue of `ctl`.
pub(crate) fn others_attached(ctl: &MailboxParts, except: u32) -> bool {
    (0..HWL_MAX_ATTACHMENTS as usize).any(|i| {
        let t = ctl.attachment(i).token.load(Ordering::Acquire);
        t != 0 && t != except && crate::liveness::is_alive(t)
    })
}

/// Claims a free attachment entry by the token of this process (`pid`,
/// `token`), reaping one of a dead process if none is free. Returns the
/// entry and, if it was reaped, the entry whose slots must be taken back.
fn claim_entry(
    ctl: &MailboxParts,
    mode: u32,
    (pid, token): (u32, u32),
) -> Option<(u32, Option<u32>)> {
    for round in 0..2 {
        for i in 0..HWL_MAX_ATTACHMENTS {
            let a = ctl.attachment(i as usize);
            let holder = a.token.load(Ordering::Acquire);
            let mut reaped = None;
            if holder != 0 {
                if round == 0 || crate::liveness::is_alive(holder) {
                    continue;
                }
                reaped = Some(i);
            }
            if a.token
                .compare_exchange(holder, token, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                a.pid.store(pid, Ordering::Release);
                a.mode.store(mode, Ordering::Release);
                return Some((i, reaped));
            }
        }
    }
    None
}

/// One attachment as `hwlink ls` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachmentInfo {
    /// The process (in its own pid namespace).
    pub pid: u32,
    /// Its liveness token.
    pub token: u32,
    /// What it attached for.
    pub access: Access,
    /// Whether it is still alive.
    pub alive: bool,
}

/// A mailbox as `hwlink ls` shows it.
#[derive(Debug, Clone)]
pub struct MailboxInfo {
    /// Unique id.
    pub id: MailboxId,
    /// Buffering.
    pub buffering: Buffering,
    /// Messages queued (in the first live segment for unbounded ones).
    pub queued: u64,
    /// Bytes of memory in use.
    pub bytes_in_use: u64,
    /// Whether it was removed (files linger while mapped).
    pub removed: bool,
    /// Attached processes.
    pub attachments: Vec<AttachmentInfo>,
}

/// The attachments of a queue control block.
fn attachments_of(ctl: &MailboxParts) -> Vec<AttachmentInfo> {
    let mut attachments = Vec::new();
    for i in 0..HWL_MAX_ATTACHMENTS as usize {
        let a = ctl.attachment(i);
        let token = a.token.load(Ordering::Acquire);
        if token == 0 {
            continue;
        }
        let pid = a.pid.load(Ordering::Acquire);
        let mode = a.mode.load(Ordering::Acquire);
        attachments.push(AttachmentInfo {
            pid,
            token,
            access: match mode & (HWL_ACCESS_SEND | HWL_ACCESS_RECV) {
                HWL_ACCESS_SEND => Access::Send,
                HWL_ACCESS_RECV => Access::Recv,
                _ => Access::SendRecv,
            },
            alive: crate::liveness::is_alive(token),
        });
    }
    attachments
}

/// Reads what `hwlink ls` shows about the mailbox in a validated region;
/// None if it holds no mailbox. For a domain link's queues (two control
/// blocks), the attachments of both.
pub(crate) fn describe(map: &Arc<RegionMap>, info: &region::RegionInfo) -> Option<MailboxInfo> {
    let ctls: Vec<MailboxParts> = info
        .objects
        .iter()
        .filter(|o| o.kind == HWL_OBJ_MAILBOX)
        .filter_map(|o| MailboxParts::locate_object(map.clone(), o).ok())
        .collect();
    let ctl = ctls.first()?;
    let c = *ctl.config();
    let queued = info
        .objects
        .iter()
        .filter(|o| o.kind == HWL_OBJ_MPMC_RING)
        .filter_map(|o| MpmcParts::locate_object(map.clone(), o).ok())
        .map(|p| p.ring().len().unwrap_or(0))
        .sum();
    Some(MailboxInfo {
        id: MailboxId(c.id),
        buffering: match c.buffering {
            HWL_BUF_UNBOUNDED => Buffering::Unbounded {
                byte_limit: c.byte_limit,
            },
            HWL_BUF_ZERO => Buffering::Zero,
            _ => Buffering::Bounded(c.capacity),
        },
        queued,
        bytes_in_use: ctls
            .iter()
            .map(|c| c.bytes_in_use().load(Ordering::Relaxed))
            .sum(),
        removed: ctls
            .iter()
            .any(|c| c.removed().load(Ordering::Acquire) != 0),
        attachments: ctls.iter().flat_map(attachments_of).collect(),
    })
}

impl Drop for Mailbox {
    fn drop(&mut self) {
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

//! Creating mailboxes: the builder and the layout of a queue (control block,
//! first ring or segment, rendezvous cells).
#![warn(clippy::arithmetic_side_effects)]

use super::*;
use hwlink_drivers::FileAccess;

/// Creates or opens mailboxes.
#[derive(Clone, Debug)]
pub struct MailboxBuilder {
    name: Option<String>,
    buffering: Buffering,
    slot_size: u32,
    pub(super) backend: Backend,
    pub(super) wait: WaitStrategy,
    access: FileAccess,
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
            access: FileAccess::private(),
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

    /// File mode of the mailbox's files (e.g. `0o660` to share it with a group; the
    /// default, 0600, keeps it to this user): the kernel's own check on
    /// who may map it. Used on creation; its unbounded segments take the same mode and group.
    pub fn file_mode(mut self, mode: u32) -> Self {
        self.access = self.access.with_mode(mode);
        self
    }

    /// The group the mailbox's files belongs to (a name or a gid; default: this
    /// process's group, or that of the shared hugetlbfs mount that
    /// `hwlink setup --group` made). This process must be a member. With
    /// `file_mode(0o660)`, every member of the group may use it. Used on
    /// creation.
    pub fn group(mut self, group: impl Into<hwlink_drivers::Group>) -> Self {
        self.access = self.access.with_group(group);
        self
    }
    setters! {
        /// How long `open` waits for a mailbox another process is still
        /// creating.
        ready_timeout: Duration;
        /// What openers may attach for; checked on every open.
        allow: Access;
    }

    pub(super) fn region_name(&self, id: MailboxId) -> Result<String, OpenError> {
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
            &self.access,
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
pub(super) fn first_segment_capacity(slot_size: u32) -> u32 {
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
pub(super) const MAILBOX_RDV_CELLS: u32 = hwlink_hw::HWL_RDV_MAX_CELLS;

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

    /// The same queue with solo rings (one producer, one consumer: a
    /// direction of a domain link, SPEC §9, "Solo rings").
    pub(crate) fn solo(mut self) -> Self {
        if let Some(g) = &mut self.geometry {
            g.solo = true;
        }
        self
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

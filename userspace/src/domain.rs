//! Domains: direct communication between named member processes.
//!
//! A domain is a region holding a directory of members (`struct hwl_domain`
//! and `struct hwl_member`, hw/include/hwlink_abi.h). A process joins under
//! a name that is unique in the domain, then sends to and receives from
//! other members by name. The link between two members is created on first
//! use, as a region of its own whose name is derived from the pair (directory
//! slots and join generations), created with O_EXCL: when both members reach
//! for it at once, one creates it and the other opens it, so each pair has
//! exactly one link. A link holds one channel per direction (channel.rs).
//! Members that leave or die are removed from the directory and their links'
//! files unlinked. Protocol and ordering: hw/SPEC.md, "Domains".
#![warn(clippy::arithmetic_side_effects)]

use crate::channel::{ChannelReceiver, ChannelSender};
use crate::error::{Corruption, OpenError, RecvError, SendError};
use crate::link::{Receiver, Sender};
use crate::liveness::{self, my_token};
use crate::mailbox::{Access, Buffering, Mailbox, QueueLayout, QueuePlace};
use crate::objects::domain::Inbox;
use crate::objects::{self, DomainConfig, DomainParts, RingParts};
use crate::region::{self, ObjectInit, ObjectSpec, RegionInfo, RegionMap};
use crate::spsc::Geometry;
use crate::sync::{fence, Ordering};
use crate::wait::{always, past, SpinPolicy, Tick, Wait, WaitStrategy, SLEEP_SLICE};
use hwlink_drivers::{Backend, BackingKind, MapError};
use hwlink_hw::{
    HWL_DOMAIN_BUF_BOUNDED, HWL_DOMAIN_BUF_UNBOUNDED, HWL_DOMAIN_BUF_ZERO, HWL_DOMAIN_CLOSED,
    HWL_DOMAIN_CLOSING, HWL_DOMAIN_MAX_MEMBERS, HWL_DOMAIN_OPEN, HWL_FEAT_DOMAIN,
    HWL_FEAT_FUTEX_DOORBELL, HWL_FEAT_MAILBOX, HWL_FEAT_SPSC_RING, HWL_MEMBER_ACTIVE,
    HWL_MEMBER_FREE, HWL_MEMBER_JOINING, HWL_MEMBER_LEAVING, HWL_MEMBER_NAME_LEN, HWL_OBJ_DOMAIN,
    HWL_OBJ_MAILBOX, HWL_OBJ_SPSC_RING,
};
use std::cell::RefCell;
use std::collections::HashSet;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Longest domain name: link names (`DOMAIN.a.ga.b.gb`, hex) must fit in
/// the 48 bytes of a region name.
pub const MAX_DOMAIN_NAME_LEN: usize = 24;
/// Longest member name.
pub const MAX_MEMBER_NAME_LEN: usize = HWL_MEMBER_NAME_LEN as usize;
/// Default number of directory entries.
pub const DEFAULT_MAX_MEMBERS: u32 = HWL_DOMAIN_MAX_MEMBERS;

/// Slots per direction of a link, by default.
const DEFAULT_LINK_CAPACITY: u32 = 256;
/// Largest message on a link, by default.
const DEFAULT_LINK_SLOT_SIZE: u32 = 1016;
/// How often a `recv_from` waiting for its member to join looks at the
/// directory.
const JOIN_POLL: Duration = Duration::from_millis(10);
const SC: Ordering = Ordering::SeqCst;

const NAME_WORDS: usize = HWL_MEMBER_NAME_LEN as usize / 8;
type NameBytes = [u8; HWL_MEMBER_NAME_LEN as usize];

fn pack(state: u32, generation: u32) -> u64 {
    u64::from(state) | u64::from(generation) << 32
}

fn unpack(word: u64) -> (u32, u32) {
    (word as u32, (word >> 32) as u32)
}

fn name_ok(name: &str, max: usize, dots: bool) -> bool {
    !name.is_empty()
        && name.len() <= max
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || (dots && b == b'.'))
}

fn check_domain_name(name: &str) -> Result<(), OpenError> {
    if name_ok(name, MAX_DOMAIN_NAME_LEN, false) {
        Ok(())
    } else {
        Err(OpenError::InvalidConfig(format!(
            "domain name `{name}`: use 1 to {MAX_DOMAIN_NAME_LEN} characters of A-Z a-z 0-9 _ -"
        )))
    }
}

fn member_name_bytes(name: &str) -> Result<NameBytes, OpenError> {
    if !name_ok(name, MAX_MEMBER_NAME_LEN, true) {
        return Err(OpenError::InvalidConfig(format!(
            "member name `{name}`: use 1 to {MAX_MEMBER_NAME_LEN} characters of A-Z a-z 0-9 _ - ."
        )));
    }
    let mut out = [0u8; HWL_MEMBER_NAME_LEN as usize];
    out[..name.len()].copy_from_slice(name.as_bytes());
    Ok(out)
}

fn name_string(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

/// The name of the link region between directory entries `a` and `b`, each
/// (slot, generation): the lower slot first, numbers in hex.
pub(crate) fn link_name(domain: &str, a: (usize, u32), b: (usize, u32)) -> String {
    let (lo, hi) = if a.0 < b.0 { (a, b) } else { (b, a) };
    format!("{domain}.{:x}.{:x}.{:x}.{:x}", lo.0, lo.1, hi.0, hi.1)
}

/// The pair a link region name of `domain` designates.
fn parse_link_name(domain: &str, name: &str) -> Option<[(usize, u32); 2]> {
    let rest = name.strip_prefix(domain)?.strip_prefix('.')?;
    let mut it = rest.split('.');
    let mut num = || u32::from_str_radix(it.next()?, 16).ok();
    let pair = [(num()? as usize, num()?), (num()? as usize, num()?)];
    it.next().is_none().then_some(pair)
}

/// Every link region of `domain` on this machine, with its pair.
fn link_files(domain: &str) -> Vec<(String, [(usize, u32); 2])> {
    hwlink_drivers::list_regions()
        .unwrap_or_default()
        .into_iter()
        .filter_map(|f| parse_link_name(domain, &f.name).map(|p| (f.name, p)))
        .collect()
}

/// Unlinks every link region of `domain` involving entry (slot, gen),
/// except those in `keep`. A link whose queues another live process is
/// still attached to (an unbounded or zero-capacity link the peer drains)
/// is marked removed instead: the peer receives what is queued, reaching
/// every segment, then unlinks it when it drops the link.
fn remove_links_of(domain: &str, slot: usize, gen: u32, keep: &[String]) {
    for (file, pair) in link_files(domain) {
        if pair.contains(&(slot, gen)) && !keep.contains(&file) && !mark_queues_removed(&file) {
            let _ = crate::segments::remove_with_segments(&file);
        }
    }
}

/// Marks the queues of link region `file` removed; true if a live process
/// is still attached to one of them (a leaver has detached from its links
/// by now; a reaper may be the peer itself, draining).
fn mark_queues_removed(file: &str) -> bool {
    let Ok((map, info)) = region::open_region(file, Backend::Auto, Duration::ZERO) else {
        return false;
    };
    let mut attached = false;
    for obj in info.objects.iter().filter(|o| o.kind == HWL_OBJ_MAILBOX) {
        if let Ok(ctl) = objects::MailboxParts::locate_object(map.clone(), obj) {
            crate::mailbox::mark_removed(&ctl);
            attached |= crate::mailbox::others_attached(&ctl, 0);
        }
    }
    attached
}

/// Opens region `name`, which another process may be creating right now:
/// its file can exist before it is sized (O_EXCL create, then ftruncate), so
/// a file of the wrong size is retried, like an unpublished header, until
/// `ready_timeout`, or until `creator_alive` says the process creating it
/// is gone (it died half way: nobody will finish the file).
fn open_fresh(
    name: &str,
    backend: Backend,
    ready_timeout: Duration,
    creator_alive: &dyn Fn() -> bool,
) -> Result<(Arc<RegionMap>, RegionInfo), OpenError> {
    let deadline = crate::wait::later(Instant::now(), ready_timeout);
    loop {
        let slice = deadline
            .saturating_duration_since(Instant::now())
            .min(Duration::from_millis(10));
        match region::open_region(name, backend, slice) {
            Err(OpenError::Map(MapError::BadSize { .. }) | OpenError::NotReady { .. })
                if Instant::now() < deadline && creator_alive() =>
            {
                std::thread::sleep(Duration::from_millis(1))
            }
            other => return other,
        }
    }
}

/// A consistent snapshot of one directory entry.
#[derive(Debug, Clone)]
struct Entry {
    state: u32,
    gen: u32,
    pid: u32,
    token: u32,
    name: NameBytes,
    /// The entry kept changing while it was read: it reads as FREE.
    unstable: bool,
}

impl Entry {
    fn is_member(&self) -> bool {
        self.state == HWL_MEMBER_JOINING || self.state == HWL_MEMBER_ACTIVE
    }
}

/// Reads entry `i` once, seqlock style: the name is written only while the
/// entry is FREE, so a state|generation word that reads the same before and
/// after the name vouches for it. An entry that keeps changing reads as free.
fn read_entry(dom: &DomainParts, i: usize) -> Entry {
    let m = dom.member(i);
    for _ in 0..16 {
        let w = m.word().load(Ordering::Acquire);
        let pid = m.pid().load(Ordering::Relaxed);
        let token = m.token().load(Ordering::Relaxed);
        let mut name = [0u8; HWL_MEMBER_NAME_LEN as usize];
        for k in 0..NAME_WORDS {
            let v = m.name_word(k).load(Ordering::Relaxed);
            if let Some(w) = name.chunks_exact_mut(8).nth(k) {
                w.copy_from_slice(&v.to_le_bytes());
            }
        }
        fence(Ordering::Acquire);
        if m.word().load(Ordering::Relaxed) == w {
            let (state, gen) = unpack(w);
            return Entry {
                state,
                gen,
                pid,
                token,
                name,
                unstable: false,
            };
        }
    }
    Entry {
        state: HWL_MEMBER_FREE,
        gen: 0,
        pid: 0,
        token: 0,
        name: [0; HWL_MEMBER_NAME_LEN as usize],
        unstable: true,
    }
}

/// Finishes the removal of entry `slot` (state LEAVING, generation `gen`,
/// owned by the process with token `owner`): unlinks its links' files,
/// except `keep`, and frees the entry. Every write is a compare-exchange,
/// so a stale reaper can never overwrite a newer member.
fn teardown(dom: &DomainParts, domain: &str, slot: usize, gen: u32, owner: u32, keep: &[String]) {
    remove_links_of(domain, slot, gen, keep);
    let m = dom.member(slot);
    if m.word()
        .compare_exchange(
            pack(HWL_MEMBER_LEAVING, gen),
            pack(HWL_MEMBER_FREE, gen),
            SC,
            SC,
        )
        .is_ok()
    {
        let me = my_token();
        let _ = m.reaper().compare_exchange(me, 0, SC, SC);
        let _ = m.token().compare_exchange(owner, 0, SC, SC);
    }
}

/// Removes entry `i` from the directory if the process holding it has died
/// (or a teardown of it was abandoned by a dead process). Returns whether
/// it did.
fn reap_if_dead(dom: &DomainParts, domain: &str, i: usize) -> bool {
    let m = dom.member(i);
    let w = m.word().load(SC);
    let owner = m.token().load(SC);
    if owner == 0 {
        return false;
    }
    let me = my_token();
    let (state, gen) = unpack(w);
    match state {
        // Claimed, never joined (or freed but not yet released).
        HWL_MEMBER_FREE => {
            !liveness::is_alive_settled(owner)
                && m.token().compare_exchange(owner, 0, SC, SC).is_ok()
        }
        HWL_MEMBER_JOINING | HWL_MEMBER_ACTIVE => {
            if liveness::is_alive_settled(owner)
                || m.word()
                    .compare_exchange(w, pack(HWL_MEMBER_LEAVING, gen), SC, SC)
                    .is_err()
                || m.reaper().compare_exchange(0, me, SC, SC).is_err()
            {
                return false;
            }
            teardown(dom, domain, i, gen, owner, &[]);
            true
        }
        HWL_MEMBER_LEAVING => {
            // Stuck if whoever tears it down has died: the owner (reaper 0)
            // or a reaper.
            let r = m.reaper().load(SC);
            let stuck = if r == 0 {
                !liveness::is_alive_settled(owner)
            } else {
                !liveness::is_alive_settled(r)
            };
            if !stuck || m.reaper().compare_exchange(r, me, SC, SC).is_err() {
                return false;
            }
            if m.word().load(SC) != w {
                let _ = m.reaper().compare_exchange(me, 0, SC, SC);
                return false;
            }
            teardown(dom, domain, i, gen, owner, &[]);
            true
        }
        _ => false,
    }
}

/// Closes and removes the domain if no entry is held any more. The closer
/// announces CLOSING before it looks at the entries, and a joiner claims an
/// entry before it looks at the state (both SeqCst): one of them sees the
/// other.
fn close_if_empty(dom: &DomainParts, domain: &str) {
    if dom
        .state()
        .compare_exchange(HWL_DOMAIN_OPEN, HWL_DOMAIN_CLOSING, SC, SC)
        .is_err()
    {
        return;
    }
    fence(SC);
    let max = dom.config().max_members as usize;
    if (0..max).any(|i| dom.member(i).token().load(SC) != 0) {
        dom.state().store(HWL_DOMAIN_OPEN, SC);
        return;
    }
    dom.state().store(HWL_DOMAIN_CLOSED, SC);
    for (file, _) in link_files(domain) {
        let _ = crate::segments::remove_with_segments(&file);
    }
    let _ = hwlink_drivers::remove_region(domain);
}

/// One member as seen in the directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberInfo {
    /// Its name.
    pub name: String,
    /// Its process.
    pub pid: u32,
    /// Whether that process still runs.
    pub alive: bool,
    /// Its directory entry.
    pub slot: usize,
    /// Its join generation (unique in the domain).
    pub generation: u32,
}

fn directory(dom: &DomainParts) -> Vec<MemberInfo> {
    (0..dom.config().max_members as usize)
        .map(|i| (i, read_entry(dom, i)))
        .filter(|(_, e)| e.state == HWL_MEMBER_ACTIVE)
        .map(|(i, e)| MemberInfo {
            name: name_string(&e.name),
            pid: e.pid,
            alive: liveness::is_alive(e.token),
            slot: i,
            generation: e.gen,
        })
        .collect()
}

/// The members of the domain in `map`, if it holds one (for `hwlink ls`).
pub(crate) fn members_of(
    map: Arc<RegionMap>,
    info: &RegionInfo,
) -> Option<Result<Vec<MemberInfo>, OpenError>> {
    DomainParts::locate(map, info).map(|r| r.map(|dom| directory(&dom)))
}

/// Joins domains: `Domain::join("group", "alice")`.
#[derive(Debug, Clone, Copy)]
pub struct Domain;

impl Domain {
    /// Joins domain `domain` (creating it with default settings if it does
    /// not exist) as member `member`.
    pub fn join(domain: &str, member: &str) -> Result<Member, OpenError> {
        DomainBuilder::new(domain).join(member)
    }
    /// A builder for settings other than the defaults.
    pub fn builder(domain: &str) -> DomainBuilder {
        DomainBuilder::new(domain)
    }
}

/// Buffering kinds of links this build implements.
const SUPPORTED_BUFFERING: [u32; 3] = [
    HWL_DOMAIN_BUF_BOUNDED,
    HWL_DOMAIN_BUF_UNBOUNDED,
    HWL_DOMAIN_BUF_ZERO,
];
/// Rendezvous cells per direction of a zero-capacity link.
const LINK_RDV_CELLS: u32 = 4;

/// Settings for joining a domain. Capacity, slot size, buffering and
/// directory size are fixed by the member that creates the domain and read
/// from its header by every other; the backend and wait strategy are each
/// member's own.
#[derive(Debug, Clone)]
pub struct DomainBuilder {
    domain: String,
    backend: Backend,
    capacity: u32,
    slot_size: u32,
    max_members: u32,
    buffering: Buffering,
    wait: WaitStrategy,
    ready_timeout: Duration,
    join_timeout: Duration,
}

impl DomainBuilder {
    /// Settings for domain `domain`: 1 to 24 characters of A-Z a-z 0-9 _ -.
    pub fn new(domain: impl Into<String>) -> Self {
        DomainBuilder {
            domain: domain.into(),
            backend: Backend::Auto,
            capacity: DEFAULT_LINK_CAPACITY,
            slot_size: DEFAULT_LINK_SLOT_SIZE,
            max_members: DEFAULT_MAX_MEMBERS,
            buffering: Buffering::Bounded(DEFAULT_LINK_CAPACITY),
            wait: WaitStrategy::default(),
            ready_timeout: Duration::from_secs(2),
            join_timeout: Duration::from_secs(10),
        }
    }
    setters! {
        /// Memory for the domain and its links (used by the creator; links
        /// follow the domain: hugepages if the domain is on hugepages, else shm).
        /// A domain on a hugepage memfd (no writable hugetlbfs mount) can only
        /// be opened while its creator runs, like any memfd region.
        backend: Backend;
    }

    /// Bounded buffering: messages queued per direction of a link before a
    /// sender waits (a power of two). Used on creation. Same as
    /// `buffering(Buffering::Bounded(slots))`.
    pub fn capacity(mut self, slots: u32) -> Self {
        self.capacity = slots;
        self.buffering = Buffering::Bounded(slots);
        self
    }
    /// How each direction of every link buffers: bounded(n) (a sender waits
    /// when n messages are queued), unbounded up to a byte limit per
    /// direction (a sender never waits), or zero (rendezvous). Used on
    /// creation; every member follows the creator's choice.
    pub fn buffering(mut self, buffering: Buffering) -> Self {
        if let Buffering::Bounded(n) = buffering {
            self.capacity = n;
        }
        self.buffering = buffering;
        self
    }
    setters! {
        /// Largest message in bytes. Used on creation.
        slot_size: u32;
        /// Directory entries, 1 to 64. Used on creation.
        max_members: u32;
        /// How this member waits in blocking calls (BusyPoll: the polling form).
        wait: WaitStrategy;
        /// How long to wait for a region (domain or link) that another process
        /// is still initialising.
        ready_timeout: Duration;

        /// How long `join` keeps trying while the domain is being closed by its
        /// last member, or a process joining under the same name has not
        /// finished.
        join_timeout: Duration;
    }
    fn config(&self) -> Result<DomainConfig, OpenError> {
        if self.max_members == 0 || self.max_members > HWL_DOMAIN_MAX_MEMBERS {
            return Err(OpenError::InvalidConfig(format!(
                "max_members {} is not allowed: use 1 to {HWL_DOMAIN_MAX_MEMBERS}",
                self.max_members
            )));
        }
        let (buffering, byte_limit) = match self.buffering {
            Buffering::Bounded(_) => (HWL_DOMAIN_BUF_BOUNDED, 0),
            Buffering::Unbounded { byte_limit } => (HWL_DOMAIN_BUF_UNBOUNDED, byte_limit),
            Buffering::Zero => (HWL_DOMAIN_BUF_ZERO, 0),
        };
        let cfg = DomainConfig {
            max_members: self.max_members,
            buffering,
            capacity: self.capacity,
            slot_size: self.slot_size,
            byte_limit,
        };
        geometry_of(&cfg).map_err(|c| {
            OpenError::InvalidConfig(format!(
                "{} {} is not allowed (limit {}): capacity must be a power of two up to 2^24 \
                 slots, slot size up to 1 GiB",
                c.what, c.value, c.limit
            ))
        })?;
        Ok(cfg)
    }

    /// Joins the domain as `member`, creating the domain if it does not
    /// exist. Fails with [`OpenError::NameTaken`] if a live member has that
    /// name; of several processes joining under one name at the same moment,
    /// exactly one succeeds.
    pub fn join(&self, member: &str) -> Result<Member, OpenError> {
        check_domain_name(&self.domain)?;
        let name = member_name_bytes(member)?;
        let cfg = self.config()?;
        let deadline = crate::wait::later(Instant::now(), self.join_timeout);
        loop {
            let dom = self.open_or_create(cfg, deadline)?;
            if !SUPPORTED_BUFFERING.contains(&dom.config().buffering) {
                return Err(OpenError::JoinFailed {
                    domain: self.domain.clone(),
                    reason: format!(
                        "its links use buffering kind {} (this hwlink builds {SUPPORTED_BUFFERING:?}): \
                         upgrade this program",
                        dom.config().buffering
                    ),
                });
            }
            let geometry = geometry_of(&dom.config()).map_err(|source| OpenError::Corrupt {
                name: self.domain.clone(),
                source,
            })?;
            match try_join(&dom, &self.domain, &name, deadline)? {
                Some((slot, gen)) => {
                    let link_backend = match dom.map().kind() {
                        BackingKind::Shm => Backend::Shm,
                        _ => Backend::Hugepage,
                    };
                    return Ok(Member {
                        domain: self.domain.clone(),
                        name: member.to_string(),
                        inbox: dom.inbox(slot),
                        dom,
                        me: slot,
                        gen,
                        geometry,
                        link_backend,
                        wait: self.wait,
                        policy: SpinPolicy::new(),
                        ready_timeout: self.ready_timeout,
                        links: Vec::new(),
                        next: 0,
                        left: false,
                        known: RefCell::new(HashSet::new()),
                    });
                }
                None if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(1)),
                None => {
                    return Err(OpenError::JoinFailed {
                        domain: self.domain.clone(),
                        reason: "it kept closing (its last member was leaving)".into(),
                    })
                }
            }
        }
    }

    fn open_or_create(
        &self,
        cfg: DomainConfig,
        deadline: Instant,
    ) -> Result<DomainParts, OpenError> {
        loop {
            let opened = match open_fresh(&self.domain, Backend::Auto, self.ready_timeout, &|| true)
            {
                Ok((map, info)) => Ok((map, info)),
                Err(OpenError::Map(MapError::NotFound { .. })) => match self.create(cfg) {
                    Err(OpenError::Map(MapError::AlreadyExists { .. }))
                        if Instant::now() < deadline =>
                    {
                        continue
                    }
                    other => other,
                },
                Err(e) => Err(e),
            };
            let (map, info) = opened?;
            return DomainParts::locate(map, &info).unwrap_or_else(|| {
                Err(OpenError::NotADomain {
                    name: self.domain.clone(),
                })
            });
        }
    }

    fn create(&self, cfg: DomainConfig) -> Result<(Arc<RegionMap>, RegionInfo), OpenError> {
        let domain = self.domain.clone();
        let first_generation = {
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos() ^ d.as_secs() as u32);
            (t ^ std::process::id().rotate_left(16)).max(1)
        };
        let init = move |obj: ObjectInit| {
            // Nobody can have joined yet (the magic is still zero), so every
            // link region of this name is a leftover of an earlier domain.
            for (file, _) in link_files(&domain) {
                let _ = crate::segments::remove_with_segments(&file);
            }
            objects::init_domain(obj, cfg, first_generation);
        };
        let map = region::create_region(
            &self.domain,
            self.backend,
            HWL_FEAT_DOMAIN | HWL_FEAT_FUTEX_DOORBELL,
            &[ObjectSpec {
                kind: HWL_OBJ_DOMAIN,
                name: "directory",
                size: objects::domain_object_bytes(cfg.max_members),
                init: &init,
            }],
            true,
        )?;
        let info = region::validate(&map)?;
        Ok((map, info))
    }
}

/// The ring shape of every link of a domain.
fn geometry_of(cfg: &DomainConfig) -> Result<Geometry, Corruption> {
    let stride = hwlink_hw::slot_stride(cfg.slot_size).ok_or(Corruption::new(
        "domain slot size",
        cfg.slot_size.into(),
        hwlink_hw::HWL_RING_MAX_SLOT_SIZE.into(),
    ))?;
    let object = hwlink_hw::ring_bytes(cfg.capacity, stride).unwrap_or(u64::MAX);
    let slots_offset =
        object.saturating_sub(u64::from(cfg.capacity).saturating_mul(u64::from(stride)));
    Geometry::validate(cfg.capacity, cfg.slot_size, stride, slots_offset, object)
}

/// Claims a directory entry and makes it an ACTIVE member named `name`.
/// `Ok(None)`: the domain is closing; retry from a fresh open.
fn try_join(
    dom: &DomainParts,
    domain: &str,
    name: &NameBytes,
    deadline: Instant,
) -> Result<Option<(usize, u32)>, OpenError> {
    let max = dom.config().max_members as usize;
    for i in 0..max {
        reap_if_dead(dom, domain, i);
    }
    let (pid, token) = liveness::me()?;
    // Claimed by token: unique whatever pid namespace each member is in.
    let Some(slot) = (0..max).find(|&i| {
        dom.member(i)
            .token()
            .compare_exchange(0, token, SC, SC)
            .is_ok()
    }) else {
        return Err(OpenError::DomainFull {
            domain: domain.to_string(),
            max: max as u32,
        });
    };
    let m = dom.member(slot);
    let release = || {
        let _ = m.token().compare_exchange(token, 0, SC, SC);
    };
    fence(SC);
    if dom.state().load(SC) != HWL_DOMAIN_OPEN {
        release();
        return Ok(None);
    }
    m.reaper().store(0, SC);
    m.pid().store(pid, SC);
    m.pending_links().store(0, SC);
    for k in 0..NAME_WORDS {
        let v = name
            .chunks_exact(8)
            .nth(k)
            .map_or(0, |w| u64::from_le_bytes(w.try_into().expect("8 bytes")));
        m.name_word(k).store(v, Ordering::Relaxed);
    }
    let mut gen = dom.next_generation().fetch_add(1, SC);
    if gen == 0 {
        gen = dom.next_generation().fetch_add(1, SC);
    }
    // Publish the claim (name first), then look for the same name: a
    // SeqCst store followed by SeqCst loads on both sides, so of two
    // processes joining under one name at least one sees the other.
    m.word().store(pack(HWL_MEMBER_JOINING, gen), SC);
    fence(SC);
    let lose = |e: OpenError| {
        m.word().store(pack(HWL_MEMBER_FREE, gen), SC);
        release();
        Err(e)
    };
    for j in (0..max).filter(|&j| j != slot) {
        loop {
            let e = read_entry(dom, j);
            if e.unstable && Instant::now() < deadline {
                // Changing under us: it may be a joiner of our name.
                std::thread::sleep(Duration::from_micros(50));
                continue;
            }
            if !e.is_member() || &e.name != name {
                break;
            }
            if !liveness::is_alive(e.token) {
                reap_if_dead(dom, domain, j);
                continue;
            }
            // An ACTIVE holder wins; of two JOINING, the older generation.
            let older = (e.gen.wrapping_sub(gen) as i32) < 0;
            if e.state == HWL_MEMBER_ACTIVE || older {
                return lose(OpenError::NameTaken {
                    domain: domain.to_string(),
                    name: name_string(name),
                    pid: e.pid,
                });
            }
            // A younger joiner of the same name: it either sees us and
            // gives up, or went on without seeing us and becomes ACTIVE.
            if Instant::now() >= deadline {
                return lose(OpenError::JoinFailed {
                    domain: domain.to_string(),
                    reason: format!(
                        "pid {} is joining under the same name and did not finish",
                        e.pid
                    ),
                });
            }
            std::thread::sleep(Duration::from_micros(50));
        }
    }
    m.word().store(pack(HWL_MEMBER_ACTIVE, gen), SC);
    Ok(Some((slot, gen)))
}

/// The link to one peer incarnation.
#[derive(Debug)]
struct Link {
    peer: String,
    slot: usize,
    gen: u32,
    file: String,
    tx: ChannelSender,
    rx: ChannelReceiver,
    inbox: Inbox,
    /// MemberGone was reported on a send; the link stays for its queued
    /// messages only.
    gone_reported: bool,
}

/// Whether directory entry `slot` still holds the member of generation
/// `gen`, alive (a system call: its liveness lock); a dead one is reaped.
fn member_alive(dom: &DomainParts, domain: &str, slot: usize, gen: u32) -> bool {
    let e = read_entry(dom, slot);
    if e.state != HWL_MEMBER_ACTIVE || e.gen != gen {
        return false;
    }
    if liveness::is_alive(e.token) {
        return true;
    }
    reap_if_dead(dom, domain, slot);
    false
}

/// A process's membership in a domain: send to and receive from other
/// members by name. Leaves the domain when dropped. `Send` but not `Sync`.
#[derive(Debug)]
pub struct Member {
    domain: String,
    name: String,
    dom: DomainParts,
    me: usize,
    gen: u32,
    inbox: Inbox,
    geometry: Geometry,
    link_backend: Backend,
    wait: WaitStrategy,
    /// Spin-then-park policy of `recv_any` (the one wait engine's).
    policy: SpinPolicy,
    ready_timeout: Duration,
    links: Vec<Link>,
    next: usize,
    left: bool,
    /// Names of members this one has seen in the directory or linked to:
    /// a `recv_from` waits for a name to join only if it was never here.
    known: RefCell<HashSet<String>>,
}

/// Why a peer could not be reached.
enum Unreachable {
    NoSuchMember,
    Gone,
    Failed(String),
}

impl Unreachable {
    fn send_error<M>(self, msg: M, name: &str) -> SendError<M> {
        let name = name.to_string();
        match self {
            Unreachable::NoSuchMember => SendError::NoSuchMember { msg, name },
            Unreachable::Gone => SendError::MemberGone { msg, name },
            Unreachable::Failed(reason) => SendError::LinkFailed {
                msg,
                peer: name,
                reason,
            },
        }
    }
    fn recv_error(self, name: &str) -> RecvError {
        let name = name.to_string();
        match self {
            Unreachable::NoSuchMember => RecvError::NoSuchMember { name },
            Unreachable::Gone => RecvError::MemberGone { name },
            Unreachable::Failed(reason) => RecvError::LinkFailed { peer: name, reason },
        }
    }
}

impl Member {
    /// This member's name.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// The domain's name.
    pub fn domain(&self) -> &str {
        &self.domain
    }
    /// Largest message a link of this domain carries.
    pub fn max_message(&self) -> usize {
        self.geometry.slot_size as usize
    }
    /// Messages queued per direction of a link before a sender waits.
    pub fn capacity(&self) -> usize {
        self.geometry.capacity as usize
    }
    /// The members of the domain now (this one included). A name seen
    /// here counts as known: a later `recv_from` it is not a member any
    /// more reports it gone rather than waiting for it to join.
    pub fn members(&self) -> Vec<MemberInfo> {
        let list = directory(&self.dom);
        let mut known = self.known.borrow_mut();
        for m in &list {
            known.insert(m.name.clone());
        }
        list
    }
    /// The regions of the links this member has open now (diagnostics).
    pub fn link_names(&self) -> Vec<String> {
        self.links.iter().map(|l| l.file.clone()).collect()
    }

    /// Whether link `k`'s peer is still the member it was created for (one
    /// load of its directory word).
    fn peer_listed(&self, k: usize) -> bool {
        let l = &self.links[k];
        self.dom.member(l.slot).word().load(Ordering::Acquire) == pack(HWL_MEMBER_ACTIVE, l.gen)
    }

    /// Like `peer_listed`, also asking the kernel whether its process runs;
    /// reaps it if it died.
    fn peer_alive(&self, k: usize) -> bool {
        let l = &self.links[k];
        member_alive(&self.dom, &self.domain, l.slot, l.gen)
    }

    /// Closes link `k` and unlinks its region.
    fn drop_link(&mut self, k: usize) {
        let l = self.links.swap_remove(k);
        let file = l.file.clone();
        drop(l);
        let _ = crate::segments::remove_with_segments(&file);
    }

    /// The ACTIVE entry named `name` (not this member).
    fn lookup(&self, name: &str) -> Option<(usize, Entry)> {
        let want = member_name_bytes(name).ok()?;
        (0..self.dom.config().max_members as usize)
            .filter(|&i| i != self.me)
            .map(|i| (i, read_entry(&self.dom, i)))
            .find(|(_, e)| e.state == HWL_MEMBER_ACTIVE && e.name == want)
    }

    /// Creates or opens the link region `file` to entry (slot, gen) and
    /// attaches to both directions.
    fn attach_link(
        &self,
        slot: usize,
        gen: u32,
        peer_name: Option<&str>,
        create: bool,
    ) -> Result<Link, OpenError> {
        let file = link_name(&self.domain, (self.me, self.gen), (slot, gen));
        if self.dom.config().buffering != HWL_DOMAIN_BUF_BOUNDED {
            return self.attach_queue_link(file, slot, gen, peer_name, create);
        }
        let made = if create {
            let g = self.geometry;
            let init = move |o: ObjectInit| objects::init_spsc_ring(o, g);
            let bytes = objects::spsc_ring_bytes(&g)?;
            let peer = peer_name.unwrap_or("");
            let (lo, hi) = if self.me < slot {
                (self.name.as_str(), peer)
            } else {
                (peer, self.name.as_str())
            };
            let ring = |name| ObjectSpec {
                kind: HWL_OBJ_SPSC_RING,
                name,
                size: bytes,
                init: &init,
            };
            self.create_link_region(
                &file,
                HWL_FEAT_SPSC_RING | HWL_FEAT_FUTEX_DOORBELL,
                &[ring(lo), ring(hi)],
            )?
        } else {
            None
        };
        let created = made.is_some();
        let result = (|| {
            let (map, info) = self.open_link_region(&file, made, (slot, gen))?;
            let rings: Vec<_> = info
                .objects
                .iter()
                .filter(|o| o.kind == HWL_OBJ_SPSC_RING)
                .collect();
            if rings.len() != 2 {
                return Err(OpenError::Corrupt {
                    name: file.clone(),
                    source: Corruption::new("link ring count", rings.len() as u64, 2),
                });
            }
            let (out, inc) = if self.me < slot { (0, 1) } else { (1, 0) };
            let parts_out = RingParts::locate_object(map.clone(), rings[out])?;
            let parts_in = RingParts::locate_object(map.clone(), rings[inc])?;
            for p in [&parts_out, &parts_in] {
                if p.geometry() != self.geometry {
                    return Err(OpenError::Corrupt {
                        name: file.clone(),
                        source: Corruption::new(
                            "link ring capacity",
                            p.geometry().capacity.into(),
                            self.geometry.capacity.into(),
                        ),
                    });
                }
            }
            // The incoming ring is named after its sender: the peer.
            let peer = peer_name
                .map(str::to_string)
                .unwrap_or_else(|| rings[inc].name.clone());
            let tx = ChannelSender::Bounded(Sender::attach(parts_out, self.wait, None)?);
            let rx = ChannelReceiver::Bounded(Receiver::attach(parts_in, self.wait, None)?);
            Ok(self.new_link(peer, slot, gen, &file, tx, rx))
        })();
        self.remove_if_failed(&file, created, result)
    }

    /// Creates link region `file` holding `objects`. None if another
    /// process created it first (the canonical name is taken with O_EXCL).
    fn create_link_region(
        &self,
        file: &str,
        features: u32,
        objects: &[ObjectSpec<'_>],
    ) -> Result<Option<Arc<RegionMap>>, OpenError> {
        match region::create_region(file, self.link_backend, features, objects, true) {
            Ok(map) => Ok(Some(map)),
            Err(OpenError::Map(MapError::AlreadyExists { .. })) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The link region we `made`, validated, or else the one the member at
    /// (`slot`, `gen`) created (waiting for it to be published, unless that
    /// member dies meanwhile).
    fn open_link_region(
        &self,
        file: &str,
        made: Option<Arc<RegionMap>>,
        (slot, gen): (usize, u32),
    ) -> Result<(Arc<RegionMap>, RegionInfo), OpenError> {
        match made {
            Some(map) => {
                let info = region::validate(&map)?;
                Ok((map, info))
            }
            None => {
                let alive = || {
                    let e = read_entry(&self.dom, slot);
                    e.is_member() && e.gen == gen && liveness::is_alive(e.token)
                };
                open_fresh(file, self.link_backend, self.ready_timeout, &alive)
            }
        }
    }

    fn new_link(
        &self,
        peer: String,
        slot: usize,
        gen: u32,
        file: &str,
        tx: ChannelSender,
        rx: ChannelReceiver,
    ) -> Link {
        Link {
            peer,
            slot,
            gen,
            file: file.to_string(),
            tx,
            rx,
            inbox: self.dom.inbox(slot),
            gone_reported: false,
        }
    }

    /// A link region this process created is removed again if attaching
    /// to it failed: nobody else can have a use for it.
    fn remove_if_failed(
        &self,
        file: &str,
        created: bool,
        result: Result<Link, OpenError>,
    ) -> Result<Link, OpenError> {
        if result.is_err() && created {
            let _ = crate::segments::remove_with_segments(file);
        }
        result
    }

    /// [`attach_link`](Self::attach_link) for unbounded and zero-capacity
    /// buffering: each direction is a queue (control block + first ring, or
    /// rendezvous cells). An unbounded queue's further segments are regions
    /// of their own (`<link>.s<k>` for the lower entry's direction,
    /// `<link>.t<k>` for the other).
    fn attach_queue_link(
        &self,
        file: String,
        slot: usize,
        gen: u32,
        peer_name: Option<&str>,
        create: bool,
    ) -> Result<Link, OpenError> {
        let cfg = self.dom.config();
        let zero = cfg.buffering == HWL_DOMAIN_BUF_ZERO;
        let (buffering, first) = if zero {
            // A direction has one sender and one receiver: a few cells.
            (Buffering::Zero, LINK_RDV_CELLS)
        } else {
            let byte_limit = cfg.byte_limit;
            (Buffering::Unbounded { byte_limit }, cfg.capacity)
        };
        let layout = QueueLayout::new(buffering, first, cfg.slot_size, Access::SendRecv)?;
        let queue_kind = layout.kind();
        let made = if create {
            let qcfg = layout.config;
            let own = layout.objects_bytes();
            let init_ctl = move |o: ObjectInit| objects::init_mailbox(o, qcfg, own);
            let init_ring = layout.init_queue();
            let peer = peer_name.unwrap_or("");
            let (lo, hi) = if self.me < slot {
                (self.name.as_str(), peer)
            } else {
                (peer, self.name.as_str())
            };
            let objects = [lo, hi].map(|who| layout.object_specs(who, &init_ctl, &*init_ring));
            let [a, b] = objects;
            self.create_link_region(
                &file,
                HWL_FEAT_MAILBOX | layout.feature() | HWL_FEAT_FUTEX_DOORBELL,
                &[a[0], a[1], b[0], b[1]],
            )?
        } else {
            None
        };
        let created = made.is_some();
        let result = (|| {
            let (map, info) = self.open_link_region(&file, made, (slot, gen))?;
            let of = |kind| -> Vec<_> { info.objects.iter().filter(|o| o.kind == kind).collect() };
            let (ctls, rings) = (of(HWL_OBJ_MAILBOX), of(queue_kind));
            if ctls.len() != 2 || rings.len() != 2 {
                return Err(OpenError::Corrupt {
                    name: file.clone(),
                    source: Corruption::new("link queue count", ctls.len() as u64, 2),
                });
            }
            let (out, inc) = if self.me < slot { (0, 1) } else { (1, 0) };
            let place = |k: usize| QueuePlace {
                map: map.clone(),
                ctl: ctls[k].clone(),
                ring: rings[k].clone(),
                tag: if k == 0 { 's' } else { 't' },
            };
            let open = |k: usize, access| {
                Mailbox::attach_queue(place(k), self.link_backend, self.wait, access, created)
            };
            // The peer as the directory names it now (bound here: what
            // anyone writes there later does not change whom we watch).
            let peer_token = read_entry(&self.dom, slot).token;
            let mut tx = Box::new(open(out, Access::Send)?);
            tx.watch_peer(peer_token);
            let tx = ChannelSender::Queue(tx);
            let mut rx = Box::new(open(inc, Access::Recv)?);
            rx.watch_peer(peer_token);
            let rx = ChannelReceiver::Queue(rx);
            let peer = peer_name
                .map(str::to_string)
                .unwrap_or_else(|| ctls[inc].name.clone());
            Ok(self.new_link(peer, slot, gen, &file, tx, rx))
        })();
        self.remove_if_failed(&file, created, result)
    }

    /// The link to the current member named `name`, set up on first use.
    fn link_to(&mut self, name: &str) -> Result<usize, Unreachable> {
        let mut gone = false;
        let mut k = 0;
        while k < self.links.len() {
            if self.links[k].peer == name {
                if self.peer_listed(k) {
                    return Ok(k);
                }
                // A departed incarnation: report it once, keep it while it
                // holds messages for us.
                if !self.links[k].gone_reported {
                    gone = true;
                    self.links[k].gone_reported = true;
                }
                if !self.links[k].rx.has_message_now() {
                    self.drop_link(k);
                    continue;
                }
            }
            k = k.saturating_add(1);
        }
        if gone {
            return Err(Unreachable::Gone);
        }
        let (slot, e) = self.lookup(name).ok_or(Unreachable::NoSuchMember)?;
        self.known.borrow_mut().insert(name.to_string());
        let link = match self.attach_link(slot, e.gen, Some(name), true) {
            Ok(link) => link,
            Err(err) => {
                // It may have left (and removed the file) while we opened it.
                let now = self.dom.member(slot).word().load(SC);
                return Err(if now == pack(HWL_MEMBER_ACTIVE, e.gen) {
                    Unreachable::Failed(err.to_string())
                } else {
                    Unreachable::Gone
                });
            }
        };
        self.links.push(link);
        let k = self.links.len().saturating_sub(1);
        // The peer may have left while we set up: then nobody would remove
        // the file (it scans for its links after announcing LEAVING).
        fence(SC);
        if !self.peer_listed(k) {
            // It may have linked first, sent and left: what it published
            // before LEAVING is visible now. Keep the link for those
            // messages (dropped once drained, which unlinks the file).
            if self.links[k].rx.has_message_now() {
                self.links[k].gone_reported = true;
            } else {
                self.drop_link(k);
            }
            return Err(Unreachable::Gone);
        }
        // Tell the peer (recv_any) about the link.
        let peer = self.dom.member(slot);
        peer.pending_links().fetch_or(1u64 << self.me, SC);
        fence(SC);
        self.links[k].inbox.notify();
        Ok(k)
    }

    /// Opens the links other members created to us (their bits in our
    /// `pending_links`), including those of members that have left since
    /// but still hold messages for us.
    fn accept_pending(&mut self) {
        // Load first: senders read this cache line on every message, so it
        // is written only when there is news.
        let pending = self.dom.member(self.me).pending_links();
        if pending.load(Ordering::Relaxed) == 0 {
            return;
        }
        let bits = pending.swap(0, Ordering::AcqRel);
        let max = self.dom.config().max_members as usize;
        for j in (0..max).filter(|&j| j != self.me && bits & (1u64 << j) != 0) {
            let e = read_entry(&self.dom, j);
            let mut gens = Vec::new();
            if e.state == HWL_MEMBER_ACTIVE {
                gens.push(e.gen);
            } else {
                // It left: find its links to us by name.
                for (_, pair) in link_files(&self.domain) {
                    if pair.contains(&(self.me, self.gen)) {
                        gens.extend(pair.iter().filter(|p| p.0 == j).map(|p| p.1));
                    }
                }
            }
            for gen in gens {
                if self.links.iter().any(|l| l.slot == j && l.gen == gen) {
                    continue;
                }
                let name =
                    (e.state == HWL_MEMBER_ACTIVE && e.gen == gen).then(|| name_string(&e.name));
                if let Ok(link) = self.attach_link(j, gen, name.as_deref(), false) {
                    self.known.borrow_mut().insert(link.peer.clone());
                    self.links.push(link);
                }
            }
        }
    }

    fn send_impl<M: AsRef<[u8]>>(
        &mut self,
        to: &str,
        msg: M,
        deadline: Option<Instant>,
        block: bool,
    ) -> Result<(), SendError<M>> {
        let k = match self.link_to(to) {
            Ok(k) => k,
            Err(e) => return Err(e.send_error(msg, to)),
        };
        // One wait, to the caller's deadline: the link's own wait engine
        // also looks (on its slow looks) at whether the peer is still a
        // member, since it may never attach to the link; a zero-capacity
        // send also wakes the peer's inbox then, so that its recv_any finds
        // the offer.
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
        match tx.send(msg, deadline, block, &mut alive) {
            Ok(()) => self.sent(k),
            Err(e) => self.send_failed(k, e),
        }
    }

    fn sent<M>(&mut self, k: usize) -> Result<(), SendError<M>> {
        fence(SC);
        self.links[k].inbox.notify();
        Ok(())
    }

    fn send_failed<M>(&mut self, k: usize, e: SendError<M>) -> Result<(), SendError<M>> {
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
        self.send_impl(to, msg, None, true)
    }
    /// Sends `msg` to `to` if its link has room now; hands it back in
    /// `Full` if not.
    pub fn try_send<M: AsRef<[u8]>>(&mut self, to: &str, msg: M) -> Result<(), SendError<M>> {
        self.send_impl(to, msg, None, false)
    }
    /// Sends `msg` to `to`, waiting at most `timeout` for room.
    pub fn send_timeout<M: AsRef<[u8]>>(
        &mut self,
        to: &str,
        msg: M,
        timeout: Duration,
    ) -> Result<(), SendError<M>> {
        self.send_impl(to, msg, crate::wait::deadline_after(timeout), true)
    }

    /// A link from `from` with a message ready now (even from a departed
    /// incarnation).
    fn ready_link(&self, from: &str) -> Option<usize> {
        self.links
            .iter()
            .position(|l| l.peer == from && l.rx.has_message_now())
    }

    /// Among the links from `from`: the current member's, or one that still
    /// holds messages. Links of departed incarnations found drained are
    /// dropped (returns whether there were any).
    fn scan_links_from(&mut self, from: &str) -> Result<usize, bool> {
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
    fn recv_link(&mut self, from: &str) -> Result<usize, Unreachable> {
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
    fn recv_link_waiting(
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

    fn recv_from_impl(
        &mut self,
        from: &str,
        deadline: Option<Instant>,
        block: bool,
    ) -> Result<Vec<u8>, RecvError> {
        let k = self.recv_link_waiting(from, deadline, block)?;
        if !block {
            return match self.links[k].rx.recv(None, false, &mut always) {
                Ok(m) => Ok(m),
                Err(RecvError::Empty) if self.peer_listed(k) => Err(RecvError::Empty),
                Err(RecvError::Empty) if self.links[k].rx.has_message_now() => {
                    // It published, then left: take what it sent first.
                    let r = self.links[k].rx.recv(None, false, &mut always);
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
        match rx.recv(deadline, true, &mut alive) {
            Ok(m) => Ok(m),
            Err(e) => self.recv_failed(k, e),
        }
    }

    fn recv_failed<T>(&mut self, k: usize, e: RecvError) -> Result<T, RecvError> {
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
        self.recv_from_impl(from, None, true)
    }
    /// Receives a message from `from` if one is queued now.
    pub fn try_recv_from(&mut self, from: &str) -> Result<Vec<u8>, RecvError> {
        self.recv_from_impl(from, None, false)
    }
    /// Receives a message from `from`, waiting at most `timeout`.
    pub fn recv_from_timeout(
        &mut self,
        from: &str,
        timeout: Duration,
    ) -> Result<Vec<u8>, RecvError> {
        self.recv_from_impl(from, crate::wait::deadline_after(timeout), true)
    }

    /// One message from any link with one ready, round robin; `None` if
    /// none has. Drops links whose peer has gone and that are drained
    /// (`check_process`: also asks the kernel about each peer's process).
    fn poll_links(&mut self, check_process: bool) -> Option<Result<(String, Vec<u8>), RecvError>> {
        let n = self.links.len();
        for i in 0..n {
            let k = self.next.wrapping_add(i).checked_rem(n).unwrap_or(0);
            if self.links[k].rx.has_message_now() {
                self.next = k.wrapping_add(1);
                let peer = self.links[k].peer.clone();
                return Some(match self.links[k].rx.recv(None, false, &mut always) {
                    Ok(m) => Ok((peer, m)),
                    Err(RecvError::Empty) => continue,
                    Err(e) => match self.recv_failed::<()>(k, e) {
                        Err(RecvError::MemberGone { .. }) => continue,
                        Err(e) => Err(e),
                        Ok(()) => continue,
                    },
                });
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

    fn recv_any_impl(
        &mut self,
        deadline: Option<Instant>,
        block: bool,
    ) -> Result<(String, Vec<u8>), RecvError> {
        let mut check_process = false;
        let mut last_check = Instant::now();
        loop {
            self.accept_pending();
            if let Some(r) = self.poll_links(check_process) {
                return r;
            }
            check_process = false;
            if !block {
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
        self.recv_any_impl(None, true)
    }
    /// Receives a message from any member if one is queued now.
    pub fn try_recv_any(&mut self) -> Result<(String, Vec<u8>), RecvError> {
        self.recv_any_impl(None, false)
    }
    /// Receives a message from any member, waiting at most `timeout`.
    pub fn recv_any_timeout(&mut self, timeout: Duration) -> Result<(String, Vec<u8>), RecvError> {
        self.recv_any_impl(crate::wait::deadline_after(timeout), true)
    }

    /// Leaves the domain (also done on drop): closes every link, removes
    /// this member from the directory and unlinks its links' files. Messages
    /// it sent that a peer has not yet received stay readable by that peer.
    /// The last member to leave removes the domain.
    pub fn leave(mut self) {
        self.leave_inner();
    }

    fn leave_inner(&mut self) {
        if self.left {
            return;
        }
        self.left = true;
        let m = self.dom.member(self.me);
        m.word().store(pack(HWL_MEMBER_LEAVING, self.gen), SC);
        fence(SC);
        // Keep the files of links whose peer has not attached yet but has
        // messages from us waiting: it opens them through its pending bit,
        // drains them and removes them.
        let mut keep = Vec::new();
        for k in 0..self.links.len() {
            if self.links[k].tx.awaits_receiver() && self.peer_listed(k) {
                keep.push(self.links[k].file.clone());
            }
        }
        self.links.clear();
        teardown(
            &self.dom,
            &self.domain,
            self.me,
            self.gen,
            my_token(),
            &keep,
        );
        let max = self.dom.config().max_members as usize;
        for i in 0..max {
            reap_if_dead(&self.dom, &self.domain, i);
        }
        close_if_empty(&self.dom, &self.domain);
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.leave_inner();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_names_are_canonical_and_parse_back() {
        let a = (3, 0xdead_beef);
        let b = (1, 7);
        let n = link_name("grp", a, b);
        assert_eq!(n, link_name("grp", b, a));
        assert_eq!(n, "grp.1.7.3.deadbeef");
        assert_eq!(parse_link_name("grp", &n), Some([b, a]));
        assert_eq!(parse_link_name("gr", &n), None);
        assert_eq!(parse_link_name("grp", "grp.1.2.3"), None);
        let worst = link_name(
            &"d".repeat(MAX_DOMAIN_NAME_LEN),
            (62, u32::MAX),
            (63, u32::MAX),
        );
        assert!(worst.len() <= hwlink_drivers::MAX_NAME_LEN, "{worst}");
    }

    #[test]
    fn names_are_checked() {
        assert!(check_domain_name("grp-1_x").is_ok());
        assert!(check_domain_name("a.b").is_err(), "dots are for link names");
        assert!(check_domain_name(&"d".repeat(25)).is_err());
        assert!(member_name_bytes("alice.1").is_ok());
        assert!(member_name_bytes("").is_err());
        assert!(member_name_bytes(&"m".repeat(33)).is_err());
        assert!(member_name_bytes("a b").is_err());
    }

    #[test]
    fn a_member_can_move_to_another_thread() {
        fn assert_send<T: Send>() {}
        assert_send::<Member>();
    }

    #[test]
    fn packed_word_round_trips() {
        assert_eq!(
            unpack(pack(HWL_MEMBER_ACTIVE, 0x8000_0001)),
            (HWL_MEMBER_ACTIVE, 0x8000_0001)
        );
    }
}

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
use crate::wait::{past, Patience, SpinPolicy, Tick, Until, Wait, WaitStrategy, SLEEP_SLICE};
use hwlink_drivers::{Backend, BackingKind, FileAccess, MapError};
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

mod directory;
mod links;
mod messaging;
pub use self::directory::*;

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
    access: FileAccess,
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
            access: FileAccess::private(),
        }
    }
    setters! {
        /// Memory for the domain and its links (used by the creator; links
        /// follow the domain: hugepages if the domain is on hugepages, else shm).
        /// A domain on a hugepage memfd (no writable hugetlbfs mount) can only
        /// be opened while its creator runs, like any memfd region.
        backend: Backend;
    }

    /// File mode of the domain's files (e.g. `0o660` to share it with a group; the
    /// default, 0600, keeps it to this user): the kernel's own check on
    /// who may map it. Used on creation; its links and their segments take the same mode and group.
    pub fn file_mode(mut self, mode: u32) -> Self {
        self.access = self.access.with_mode(mode);
        self
    }

    /// The group the domain's files belongs to (a name or a gid; default: this
    /// process's group, or that of the shared hugetlbfs mount that
    /// `hwlink setup --group` made). This process must be a member. With
    /// `file_mode(0o660)`, every member of the group may use it. Used on
    /// creation.
    pub fn group(mut self, group: impl Into<hwlink_drivers::Group>) -> Self {
        self.access = self.access.with_group(group);
        self
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
                        last_tx: None,
                        last_rx: None,
                        next: 0,
                        left: false,
                        known: RefCell::new(HashSet::new()),
                        readiness: None,
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
            &self.access,
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
    Geometry::for_ring(cfg.capacity, cfg.slot_size, crate::spsc::RingLayout::Auto)
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
    /// The link of the last send (`send_link`) and of the last
    /// `recv_from` (`recv_from_link`), kept only while it is the only
    /// link to its peer's name and forgotten whenever `links` changes:
    /// then a lookup by that name can only find it.
    last_tx: Option<usize>,
    last_rx: Option<usize>,
    next: usize,
    left: bool,
    /// Names of members this one has seen in the directory or linked to:
    /// a `recv_from` waits for a name to join only if it was never here.
    known: RefCell<HashSet<String>>,
    /// The pollable descriptor of receives, once asked for (`as_fd`).
    readiness: Option<Box<crate::readiness::Readiness>>,
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
    /// This member's wait strategy.
    pub fn wait_strategy(&self) -> WaitStrategy {
        self.wait
    }
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
        self.forget_last_links();
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

#[cfg(test)]
mod tests_members;

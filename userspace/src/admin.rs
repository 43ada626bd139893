//! Administration: list the regions on this machine with their owners and
//! rings, and remove them, including those left behind by dead processes.
#![warn(clippy::arithmetic_side_effects)]

use crate::error::{OpenError, Side};
use crate::liveness::is_alive;
use crate::objects::{self, RingParts};
use crate::region::{self, RegionMap};
use hwlink_drivers::{Backend, BackingKind, MapError, Region};
use hwlink_hw::{HWL_EP_ATTACHED, HWL_EP_CLOSED, HWL_EP_FREE};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// One end of a ring, as seen from outside.
#[derive(Debug, Clone)]
pub struct EndpointStatus {
    /// "free", "attached", "closed" or "invalid".
    pub state: &'static str,
    /// The attached (or last) process.
    pub pid: u32,
    /// Whether that process still runs.
    pub alive: bool,
}

/// One ring, as seen from outside.
#[derive(Debug, Clone)]
pub struct RingStatus {
    /// The ring object's name in the region's object table.
    pub name: String,
    /// Slots.
    pub capacity: u32,
    /// Largest message.
    pub slot_size: u32,
    /// Messages queued now, or why it cannot be told.
    pub occupancy: Result<u32, String>,
    /// The sending end.
    pub sender: EndpointStatus,
    /// The receiving end.
    pub receiver: EndpointStatus,
}

/// One region, as seen from outside.
#[derive(Debug, Clone)]
pub struct RegionStatus {
    /// Region name.
    pub name: String,
    /// Its file.
    pub path: PathBuf,
    /// Backing memory.
    pub kind: BackingKind,
    /// Bytes.
    pub size: u64,
    /// Bytes per backing page, as the creator recorded it (0 if unreadable).
    pub page_size: u32,
    /// The creator recorded hugepage backing.
    pub hugepage: bool,
    /// The creating process (0 if unknown).
    pub creator_pid: u32,
    /// Whether the creator still runs.
    pub creator_alive: bool,
    /// Its rings.
    pub rings: Vec<RingStatus>,
    /// For a domain: the members in its directory.
    pub members: Vec<crate::MemberInfo>,
    /// Why the region could not be read, if it could not.
    pub error: Option<String>,
    /// Time since its file was last modified, if known.
    pub age: Option<Duration>,
    /// The mailbox it holds, if it is a mailbox.
    pub mailbox: Option<crate::mailbox::MailboxInfo>,
    /// For a segment of an unbounded mailbox: the mailbox's region name.
    pub segment_of: Option<String>,
    /// For a segment: its queue's region no longer exists, or is stale.
    pub orphaned: bool,
    /// For a zero-capacity mailbox or link: what waits in its cells.
    pub rendezvous: Option<RendezvousStatus>,
    /// Topics: the topic, its publisher and each subscriber's lag.
    pub topic: Option<crate::TopicInfo>,
}

/// What waits in the cells of a rendezvous (zero-capacity) object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RendezvousStatus {
    /// Cells.
    pub cells: u32,
    /// Senders offering a message.
    pub senders_waiting: u32,
    /// Receivers waiting for a message.
    pub receivers_waiting: u32,
    /// Cells in the middle of a hand-off.
    pub busy: u32,
}

/// One process's liveness file, as `hwlink ls` shows it.
pub use hwlink_drivers::process::ProcessFile;

/// How old a region whose creator cannot be told must be before it counts
/// as stale: younger ones may still be in the middle of being created.
pub const UNKNOWN_CREATOR_GRACE: Duration = Duration::from_secs(10);

impl RegionStatus {
    /// Left behind: its creator is dead and no live process is attached to
    /// any of its rings. A region whose creator cannot be told (its header
    /// was never written) is stale once it is older than
    /// [`UNKNOWN_CREATOR_GRACE`].
    ///
    /// A mailbox outlives its creator: it is stale only once removed with
    /// no live process attached. The queues of a domain link (unbounded or
    /// zero capacity) are stale once their creator is dead and no live
    /// process is attached. A segment is stale once its queue's region is
    /// gone or stale.
    pub fn is_stale(&self) -> bool {
        if self.segment_of.is_some() {
            return self.orphaned;
        }
        if let Some(t) = &self.topic {
            return !t.publisher.is_some_and(|(_, alive)| alive)
                && t.subscribers.iter().all(|s| !s.alive);
        }
        if let Some(m) = &self.mailbox {
            let nobody = m.attachments.iter().all(|a| !a.alive);
            if self.name.starts_with(crate::mailbox::MAILBOX_PREFIX) {
                return m.removed && nobody;
            }
            return nobody && (m.removed || !self.creator_alive);
        }
        if self.creator_pid == 0 {
            return self.age.is_some_and(|a| a > UNKNOWN_CREATOR_GRACE);
        }
        !self.creator_alive
            && self
                .rings
                .iter()
                .all(|r| !(r.sender.alive && r.sender.state == "attached"))
            && self
                .rings
                .iter()
                .all(|r| !(r.receiver.alive && r.receiver.state == "attached"))
            && self.members.iter().all(|m| !m.alive)
    }
}

fn backend_of(kind: BackingKind) -> Backend {
    match kind {
        BackingKind::Shm => Backend::Shm,
        _ => Backend::Hugepage,
    }
}

fn endpoint_status(parts: &RingParts, side: Side) -> EndpointStatus {
    let snap = parts.endpoint(side).snapshot();
    let state = match snap.state {
        HWL_EP_FREE => "free",
        HWL_EP_ATTACHED => "attached",
        HWL_EP_CLOSED => "closed",
        _ => "invalid",
    };
    EndpointStatus {
        state,
        pid: snap.pid,
        alive: snap.token != 0 && is_alive(snap.token),
    }
}

/// The queue region a segment region belongs to: its name says so and its
/// content agrees (one MPMC ring carrying that segment number).
fn segment_of(name: &str, map: &Arc<RegionMap>, info: &region::RegionInfo) -> Option<String> {
    let (root, k) = crate::segments::segment_root(name)?;
    let obj = info.objects.first()?;
    let parts = objects::MpmcParts::locate_object(map.clone(), obj).ok()?;
    (info.objects.len() == 1 && parts.segment() == k).then_some(root)
}

/// Every hwlink region on this machine.
pub fn list() -> Result<Vec<RegionStatus>, MapError> {
    let mut out = Vec::new();
    for file in hwlink_drivers::list_regions()? {
        let mut status = RegionStatus {
            name: file.name.clone(),
            path: file.path.clone(),
            kind: file.kind,
            size: file.size,
            page_size: 0,
            hugepage: false,
            creator_pid: 0,
            creator_alive: false,
            rings: Vec::new(),
            members: Vec::new(),
            error: None,
            age: std::fs::metadata(&file.path)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok()),
            mailbox: None,
            segment_of: None,
            orphaned: false,
            rendezvous: None,
            topic: None,
        };
        match Region::open(&file.name, backend_of(file.kind)) {
            Err(e) => status.error = Some(e.to_string()),
            Ok(r) => {
                let map = Arc::new(RegionMap::from_region(r));
                match region::validate(&map) {
                    Err(e) => {
                        // Unreadable (another version, corrupt, half
                        // created): the creator's pid, if it got written,
                        // still tells whether someone owns it.
                        if let Some((pid, token)) = region::raw_creator(&map) {
                            status.creator_pid = pid;
                            status.creator_alive = is_alive(token);
                        }
                        status.error = Some(e.to_string());
                    }
                    Ok(info) => {
                        status.page_size = info.page_size;
                        status.hugepage = info.flags & hwlink_hw::HWL_REGION_F_HUGEPAGE != 0;
                        status.creator_pid = info.creator_pid;
                        status.creator_alive = is_alive(info.creator_token);
                        // Every ring (a domain link has one per direction).
                        let rings = info
                            .objects
                            .iter()
                            .filter(|o| o.kind == hwlink_hw::HWL_OBJ_SPSC_RING);
                        for obj in rings {
                            match RingParts::locate_object(map.clone(), obj) {
                                Ok(parts) => {
                                    let g = parts.geometry();
                                    status.rings.push(RingStatus {
                                        name: parts.object_name().to_string(),
                                        capacity: g.messages(),
                                        slot_size: g.slot_size,
                                        occupancy: parts
                                            .words()
                                            .occupancy(&g)
                                            .map_err(|c| c.to_string()),
                                        sender: endpoint_status(&parts, Side::Sender),
                                        receiver: endpoint_status(&parts, Side::Receiver),
                                    });
                                }
                                Err(OpenError::NoRing { .. }) => {}
                                Err(e) => status.error = Some(e.to_string()),
                            }
                        }
                        status.mailbox = crate::mailbox::describe(&map, &info);
                        status.rendezvous = rendezvous_status(&map, &info);
                        status.topic = crate::topic::describe(&map, &info);
                        status.segment_of = segment_of(&file.name, &map, &info);
                        match crate::domain::members_of(map.clone(), &info) {
                            Some(Ok(members)) => status.members = members,
                            Some(Err(e)) => status.error = Some(e.to_string()),
                            None => {}
                        }
                    }
                }
            }
        }
        out.push(status);
    }
    // A segment is orphaned when its root is gone, or stale (then both go).
    let roots: std::collections::HashMap<String, bool> =
        out.iter().map(|r| (r.name.clone(), r.is_stale())).collect();
    for r in &mut out {
        if let Some(root) = &r.segment_of {
            r.orphaned = roots.get(root).map_or(true, |stale| *stale);
        } else if r.error.is_some() {
            // Unreadable, named as a segment of a queue that exists and is
            // stale: one its maker died making (a queue is stale only once
            // nobody alive uses it, so nobody is making segments for it).
            // Its content cannot confirm it; with its root gone, it waits
            // for the grace of unknown creators instead.
            if let Some((root, _)) = crate::segments::segment_root(&r.name) {
                if roots.get(&root) == Some(&true) {
                    r.segment_of = Some(root);
                    r.orphaned = true;
                }
            }
        }
    }
    Ok(out)
}

/// The rendezvous cells of a zero-capacity queue in a validated region.
fn rendezvous_status(map: &Arc<RegionMap>, info: &region::RegionInfo) -> Option<RendezvousStatus> {
    let mut total: Option<RendezvousStatus> = None;
    for obj in info
        .objects
        .iter()
        .filter(|o| o.kind == hwlink_hw::HWL_OBJ_RENDEZVOUS)
    {
        let Ok(parts) = objects::RendezvousParts::locate_object(map.clone(), obj) else {
            continue;
        };
        let (cells, senders, receivers, busy) = parts.rdv().census();
        let t = total.get_or_insert(RendezvousStatus {
            cells: 0,
            senders_waiting: 0,
            receivers_waiting: 0,
            busy: 0,
        });
        t.cells = t.cells.saturating_add(cells);
        t.senders_waiting = t.senders_waiting.saturating_add(senders);
        t.receivers_waiting = t.receivers_waiting.saturating_add(receivers);
        t.busy = t.busy.saturating_add(busy);
    }
    total
}

/// The liveness files of the processes that use hwlink on this machine
/// (`hwlink ls` shows them; dead ones are removed by `hwlink rm --stale`).
pub fn processes() -> Vec<ProcessFile> {
    hwlink_drivers::process::list_processes().unwrap_or_default()
}

/// Removes the region `name` (processes that have it mapped keep it), and
/// the segments of its queues. A mailbox is marked removed first, so that
/// attached processes see it gone: senders fail at once, receivers drain
/// what is queued. Its files are unlinked now only if no live process is
/// attached; otherwise the last one to detach unlinks them (`hwlink ls`
/// shows it removed meanwhile), since its receivers may still need to map
/// segments.
pub fn remove(name: &str) -> Result<(), MapError> {
    if let Ok(r) = Region::open(name, Backend::Auto) {
        let map = Arc::new(RegionMap::from_region(r));
        if let Ok(info) = region::validate(&map) {
            let objects = |kind| info.objects.iter().filter(move |o| o.kind == kind);
            let rings: Vec<_> = objects(hwlink_hw::HWL_OBJ_MPMC_RING).collect();
            let mut attached = false;
            for (k, obj) in objects(hwlink_hw::HWL_OBJ_MAILBOX).enumerate() {
                if let Ok(ctl) = objects::MailboxParts::locate_object(map.clone(), obj) {
                    crate::mailbox::mark_removed(&ctl);
                    if let Some(ring) = rings.get(k) {
                        crate::mailbox::seal_bounded(&map, &ctl, ring);
                    }
                    attached |= crate::mailbox::others_attached(&ctl, 0);
                }
            }
            crate::topic::mark_removed(&map, &info);
            if attached && name.starts_with(crate::mailbox::MAILBOX_PREFIX) {
                return Ok(());
            }
        }
    }
    crate::segments::remove_with_segments(name)
}

/// Removes every stale region (and the liveness files of dead
/// processes); returns their names (and the files' paths). Nothing a live process holds is
/// removed: a region is stale only if no live process is attached to it.
pub fn remove_stale() -> Result<Vec<String>, MapError> {
    let mut removed = Vec::new();
    for status in list()? {
        if status.is_stale() {
            match hwlink_drivers::remove_region(&status.name) {
                Ok(()) | Err(MapError::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
            removed.push(status.name);
        }
    }
    for path in hwlink_drivers::process::remove_dead_processes() {
        removed.push(path.display().to_string());
    }
    for path in hwlink_drivers::bridges::remove_dead_bridges() {
        removed.push(path.display().to_string());
    }
    Ok(removed)
}

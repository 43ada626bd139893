//! Administration: list the regions on this machine with their owners and
//! rings, and remove them, including those left behind by dead processes.
#![warn(clippy::arithmetic_side_effects)]

use crate::error::{OpenError, Side};
use crate::liveness::is_alive;
use crate::region::{self, RegionMap, RingParts};
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
    /// For a segment: its mailbox's region no longer exists.
    pub orphaned: bool,
}

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
    /// no live process attached. A segment of one is stale once its mailbox
    /// is gone.
    pub fn is_stale(&self) -> bool {
        if self.segment_of.is_some() {
            return self.orphaned;
        }
        if let Some(m) = &self.mailbox {
            return m.removed && m.attachments.iter().all(|a| !a.alive);
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
    let parts = region::MpmcParts::locate_object(map.clone(), obj).ok()?;
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
                                        capacity: g.capacity,
                                        slot_size: g.slot_size,
                                        occupancy: parts
                                            .words()
                                            .occupancy(g.capacity)
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
    let names: std::collections::HashSet<String> = out.iter().map(|r| r.name.clone()).collect();
    for r in &mut out {
        if let Some(root) = &r.segment_of {
            r.orphaned = !names.contains(root);
        }
    }
    Ok(out)
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
                if let Ok(ctl) = region::MailboxParts::locate_object(map.clone(), obj) {
                    crate::mailbox::mark_removed(&ctl);
                    if let Some(ring) = rings.get(k) {
                        crate::mailbox::seal_bounded(&map, &ctl, ring);
                    }
                    attached |= crate::mailbox::others_attached(&ctl, 0);
                }
            }
            if attached && name.starts_with(crate::mailbox::MAILBOX_PREFIX) {
                return Ok(());
            }
        }
    }
    crate::segments::remove_with_segments(name)
}

/// Removes every stale region; returns their names.
pub fn remove_stale() -> Result<Vec<String>, MapError> {
    let mut removed = Vec::new();
    for status in list()? {
        if status.is_stale() {
            hwlink_drivers::remove_region(&status.name)?;
            removed.push(status.name);
        }
    }
    Ok(removed)
}

//! Removal, attachment bookkeeping and what `hwlink ls` shows of a mailbox.
#![warn(clippy::arithmetic_side_effects)]

use super::*;

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
pub(super) fn claim_entry(
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
pub(super) fn attachments_of(ctl: &MailboxParts) -> Vec<AttachmentInfo> {
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

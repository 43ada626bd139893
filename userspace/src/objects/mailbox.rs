//! The mailbox control block object (`struct hwl_mailbox`): a queue's
//! configuration, its segment words, doorbells and attachment table.
#![warn(clippy::arithmetic_side_effects)]

use crate::doorbell::Doorbell;
use crate::error::{Corruption, OpenError};
use crate::region::{ObjectInfo, ObjectInit, RegionInfo, RegionMap};
use crate::shm::ShmView;
use crate::sync::{AtomicU32, AtomicU64};
use core::mem::offset_of;
use hwlink_hw::{
    hwl_attachment, hwl_doorbell, hwl_mailbox, HWL_ACCESS_RECV, HWL_ACCESS_SEND, HWL_BUF_UNBOUNDED,
    HWL_MAX_ATTACHMENTS, HWL_OBJ_MAILBOX,
};
use std::sync::Arc;

/// The configuration of a mailbox, copied out of shared memory once and
/// validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct MailboxConfig {
    pub id: u64,
    pub buffering: u32,
    pub access: u32,
    pub capacity: u32,
    pub slot_size: u32,
    pub byte_limit: u64,
}

const MAILBOX_BYTES: u64 = hwlink_hw::MAILBOX_CONTROL_BYTES;

/// Writes a mailbox's configuration into a zero-filled object being
/// created. `bytes_in_use` starts at `first_bytes` (the region itself).
pub(crate) fn init_mailbox(obj: ObjectInit, config: MailboxConfig, first_bytes: u64) {
    assert!(obj.size >= MAILBOX_BYTES, "mailbox object too small");
    let m = &obj.view;
    // Exclusively owned, zero-filled, page aligned, large enough.
    let ok = m.write(offset_of!(hwl_mailbox, id), config.id)
        && m.write(offset_of!(hwl_mailbox, buffering), config.buffering)
        && m.write(offset_of!(hwl_mailbox, access), config.access)
        && m.write(offset_of!(hwl_mailbox, capacity), config.capacity)
        && m.write(offset_of!(hwl_mailbox, slot_size), config.slot_size)
        && m.write(offset_of!(hwl_mailbox, byte_limit), config.byte_limit)
        && m.write(offset_of!(hwl_mailbox, bytes_in_use), first_bytes);
    assert!(ok, "mailbox object too small");
}

/// A validated mailbox control block in a mapped region.
#[derive(Debug, Clone)]
pub(crate) struct MailboxParts {
    map: Arc<RegionMap>,
    /// The control block.
    ctl: ShmView,
    config: MailboxConfig,
}

/// One attachment entry's words.
#[derive(Debug)]
pub(crate) struct AttachmentWords<'a> {
    pub pid: &'a AtomicU32,
    pub mode: &'a AtomicU32,
    pub token: &'a AtomicU32,
}

impl MailboxParts {
    /// Finds the mailbox object of a validated region and checks its
    /// configuration (read once).
    pub(crate) fn locate(
        map: Arc<RegionMap>,
        info: &RegionInfo,
    ) -> Result<MailboxParts, OpenError> {
        let obj = info
            .objects
            .iter()
            .find(|o| o.kind == HWL_OBJ_MAILBOX)
            .ok_or_else(|| OpenError::NotAMailbox {
                name: map.name().to_string(),
            })?;
        MailboxParts::locate_object(map, obj)
    }

    /// Checks the mailbox control block in object `obj` (an entry of the
    /// validated table of `map`), copying its configuration out once.
    pub(crate) fn locate_object(
        map: Arc<RegionMap>,
        obj: &ObjectInfo,
    ) -> Result<MailboxParts, OpenError> {
        let name = map.name().to_string();
        let corrupt = |source| OpenError::Corrupt {
            name: name.clone(),
            source,
        };
        if obj.kind != HWL_OBJ_MAILBOX {
            return Err(OpenError::NotAMailbox { name });
        }
        if obj.size < MAILBOX_BYTES {
            return Err(corrupt(Corruption::new(
                "mailbox object size",
                obj.size,
                MAILBOX_BYTES,
            )));
        }
        let view = map.object_view(obj);
        // MAILBOX_BYTES in-bounds bytes of the validated object; one
        // volatile copy.
        let copy: hwl_mailbox = view.read(0).expect("control block in its object");
        if copy.buffering > HWL_BUF_UNBOUNDED {
            return Err(corrupt(Corruption::new(
                "mailbox buffering",
                copy.buffering.into(),
                HWL_BUF_UNBOUNDED.into(),
            )));
        }
        let all = HWL_ACCESS_SEND | HWL_ACCESS_RECV;
        if copy.access & !all != 0 {
            return Err(corrupt(Corruption::new(
                "mailbox access bits",
                copy.access.into(),
                all.into(),
            )));
        }
        if copy.slot_size > hwlink_hw::HWL_RING_MAX_SLOT_SIZE {
            return Err(corrupt(Corruption::new(
                "mailbox slot size",
                copy.slot_size.into(),
                hwlink_hw::HWL_RING_MAX_SLOT_SIZE.into(),
            )));
        }
        let ctl = view
            .sub(0, MAILBOX_BYTES as usize)
            .expect("control block in its object");
        Ok(MailboxParts {
            map,
            ctl,
            config: MailboxConfig {
                id: copy.id,
                buffering: copy.buffering,
                access: copy.access,
                capacity: copy.capacity,
                slot_size: copy.slot_size,
                byte_limit: copy.byte_limit,
            },
        })
    }

    pub(crate) fn config(&self) -> &MailboxConfig {
        &self.config
    }

    pub(crate) fn map(&self) -> &Arc<RegionMap> {
        &self.map
    }

    pub(crate) fn bytes_in_use(&self) -> &AtomicU64 {
        self.ctl.u64_at(offset_of!(hwl_mailbox, bytes_in_use))
    }
    pub(crate) fn last_segment(&self) -> &AtomicU64 {
        self.ctl.u64_at(offset_of!(hwl_mailbox, last_segment))
    }
    pub(crate) fn head_segment(&self) -> &AtomicU64 {
        self.ctl.u64_at(offset_of!(hwl_mailbox, head_segment))
    }
    pub(crate) fn tail_segment(&self) -> &AtomicU64 {
        self.ctl.u64_at(offset_of!(hwl_mailbox, tail_segment))
    }
    pub(crate) fn spare_segment(&self) -> &AtomicU64 {
        self.ctl.u64_at(offset_of!(hwl_mailbox, spare_segment))
    }
    pub(crate) fn removed(&self) -> &AtomicU32 {
        self.ctl.u32_at(offset_of!(hwl_mailbox, removed))
    }

    /// The two doorbells: (not_empty, not_full); each keeps the mapping
    /// alive.
    pub(crate) fn doorbells(&self) -> (Doorbell, Doorbell) {
        let bell = |at: usize| {
            Doorbell::at(
                &self.ctl,
                at.wrapping_add(offset_of!(hwl_doorbell, count)),
                at.wrapping_add(offset_of!(hwl_doorbell, waiters)),
            )
        };
        (
            bell(offset_of!(hwl_mailbox, not_empty)),
            bell(offset_of!(hwl_mailbox, not_full)),
        )
    }

    /// Entry `i` (< HWL_MAX_ATTACHMENTS) of the attachment table.
    pub(crate) fn attachment(&self, i: usize) -> AttachmentWords<'_> {
        assert!(i < HWL_MAX_ATTACHMENTS as usize);
        // No overflow: i < HWL_MAX_ATTACHMENTS.
        let a = offset_of!(hwl_mailbox, attachments)
            .wrapping_add(i.wrapping_mul(core::mem::size_of::<hwl_attachment>()));
        let word = |field: usize| self.ctl.u32_at(a.wrapping_add(field));
        AttachmentWords {
            pid: word(offset_of!(hwl_attachment, pid)),
            mode: word(offset_of!(hwl_attachment, mode)),
            token: word(offset_of!(hwl_attachment, token)),
        }
    }
}

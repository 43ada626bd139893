//! The domain directory object (`struct hwl_domain` and its
//! `struct hwl_member` entries): configuration, shared words and the
//! members' inbox doorbells.
#![warn(clippy::arithmetic_side_effects)]

use crate::doorbell::Doorbell;
use crate::error::{Corruption, OpenError};
use crate::region::{ObjectInit, RegionInfo, RegionMap};
use crate::shm::ShmView;
use crate::sync::{AtomicU32, AtomicU64};
use core::mem::offset_of;
use hwlink_hw::{
    hwl_domain, hwl_doorbell, hwl_member, HWL_DOMAIN_MAX_MEMBERS, HWL_MEMBER_NAME_LEN,
    HWL_OBJ_DOMAIN,
};
use std::sync::Arc;

const DOMAIN_HDR: u64 = hwlink_hw::DOMAIN_HDR_BYTES;
const MEMBER_BYTES: u64 = hwlink_hw::MEMBER_BYTES;

/// A domain's configuration, copied out of shared memory once and
/// validated (or asked for by a creator).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DomainConfig {
    pub max_members: u32,
    pub buffering: u32,
    pub capacity: u32,
    pub slot_size: u32,
    pub byte_limit: u64,
}

/// Bytes a domain object with `max_members` entries needs.
pub(crate) fn domain_object_bytes(max_members: u32) -> u64 {
    hwlink_hw::domain_bytes(max_members)
}

/// Writes a domain's configuration into a zero-filled object being
/// created; generations start at `first_generation`.
pub(crate) fn init_domain(obj: ObjectInit, cfg: DomainConfig, first_generation: u32) {
    assert!(obj.size >= domain_object_bytes(cfg.max_members));
    let d = &obj.view;
    // `obj` is exclusively owned, zero-filled, page aligned and large
    // enough for the header and every entry (checked above).
    let ok = d.write(offset_of!(hwl_domain, max_members), cfg.max_members)
        && d.write(offset_of!(hwl_domain, buffering), cfg.buffering)
        && d.write(offset_of!(hwl_domain, capacity), cfg.capacity)
        && d.write(offset_of!(hwl_domain, slot_size), cfg.slot_size)
        && d.write(offset_of!(hwl_domain, byte_limit), cfg.byte_limit)
        && d.write(offset_of!(hwl_domain, members_offset), DOMAIN_HDR)
        && d.write(offset_of!(hwl_domain, next_generation), first_generation);
    assert!(ok, "domain object too small");
}

/// The validated location of a domain directory in a mapped region.
#[derive(Debug, Clone)]
pub(crate) struct DomainParts {
    map: Arc<RegionMap>,
    /// The directory header.
    head: ShmView,
    /// The `max_members` entries.
    members: ShmView,
    config: DomainConfig,
}

impl DomainParts {
    /// Finds the domain object in `info` and validates its configuration,
    /// copying it out of shared memory once. `None` if the region holds no
    /// domain.
    pub(crate) fn locate(
        map: Arc<RegionMap>,
        info: &RegionInfo,
    ) -> Option<Result<DomainParts, OpenError>> {
        let obj = info.objects.iter().find(|o| o.kind == HWL_OBJ_DOMAIN)?;
        let name = map.name().to_string();
        let corrupt = |source| OpenError::Corrupt {
            name: name.clone(),
            source,
        };
        if obj.size < DOMAIN_HDR {
            return Some(Err(corrupt(Corruption::new(
                "domain object size",
                obj.size,
                DOMAIN_HDR,
            ))));
        }
        let view = map.object_view(obj);
        // DOMAIN_HDR in-bounds, page-aligned bytes (checked above); one
        // volatile copy is taken and only the copy is used.
        let copy: hwl_domain = view.read(0).expect("domain header in its object");
        let max = copy.max_members;
        if max == 0 || max > HWL_DOMAIN_MAX_MEMBERS {
            return Some(Err(corrupt(Corruption::new(
                "domain max_members",
                max.into(),
                HWL_DOMAIN_MAX_MEMBERS.into(),
            ))));
        }
        if copy.members_offset < DOMAIN_HDR || copy.members_offset % 64 != 0 {
            return Some(Err(corrupt(Corruption::new(
                "domain members_offset",
                copy.members_offset,
                DOMAIN_HDR,
            ))));
        }
        let end = copy
            .members_offset
            .saturating_add(u64::from(max).saturating_mul(MEMBER_BYTES));
        if end > obj.size {
            return Some(Err(corrupt(Corruption::new(
                "domain directory end",
                end,
                obj.size,
            ))));
        }
        if copy.flags != 0 || copy.resv0 != 0 || copy.resv1 != [0; 3] {
            return Some(Err(OpenError::UnsupportedFeatures {
                name,
                unknown: copy.flags,
            }));
        }
        // In bounds: end <= obj.size, checked above.
        let members_len = end.saturating_sub(copy.members_offset) as usize;
        let members = view
            .sub(copy.members_offset as usize, members_len)
            .expect("directory checked against its object");
        let head = view
            .sub(0, DOMAIN_HDR as usize)
            .expect("header checked against its object");
        Some(Ok(DomainParts {
            map,
            head,
            members,
            config: DomainConfig {
                max_members: max,
                buffering: copy.buffering,
                capacity: copy.capacity,
                slot_size: copy.slot_size,
                byte_limit: copy.byte_limit,
            },
        }))
    }

    pub(crate) fn config(&self) -> DomainConfig {
        self.config
    }

    pub(crate) fn map(&self) -> &Arc<RegionMap> {
        &self.map
    }

    /// `hwl_domain.state`.
    pub(crate) fn state(&self) -> &AtomicU32 {
        self.head.u32_at(offset_of!(hwl_domain, state))
    }

    /// `hwl_domain.next_generation`.
    pub(crate) fn next_generation(&self) -> &AtomicU32 {
        self.head.u32_at(offset_of!(hwl_domain, next_generation))
    }

    /// Offset of entry `i` in the directory.
    fn entry(&self, i: usize) -> usize {
        assert!(i < self.config.max_members as usize, "member index {i}");
        // No overflow: i < max_members <= HWL_DOMAIN_MAX_MEMBERS.
        i.wrapping_mul(MEMBER_BYTES as usize)
    }

    /// Directory entry `i` (`< max_members`, else panics: callers mask
    /// indices read from shared memory first).
    pub(crate) fn member(&self, i: usize) -> MemberWords<'_> {
        MemberWords {
            parts: self,
            at: self.entry(i),
        }
    }

    /// The inbox doorbell of entry `i`, usable on its own.
    pub(crate) fn inbox(&self, i: usize) -> Inbox {
        let inbox = self.entry(i).wrapping_add(offset_of!(hwl_member, inbox));
        let bell = Doorbell::at(
            &self.members,
            inbox.wrapping_add(offset_of!(hwl_doorbell, count)),
            inbox.wrapping_add(offset_of!(hwl_doorbell, waiters)),
        );
        Inbox {
            bell,
            _parts: self.clone(),
        }
    }
}

/// A member's inbox doorbell, keeping its mapping alive.
#[derive(Debug)]
pub(crate) struct Inbox {
    bell: Doorbell,
    _parts: DomainParts,
}

impl std::ops::Deref for Inbox {
    type Target = Doorbell;
    fn deref(&self) -> &Doorbell {
        &self.bell
    }
}

/// The shared words of one directory entry (`struct hwl_member`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct MemberWords<'a> {
    parts: &'a DomainParts,
    /// Offset of the entry in the directory.
    at: usize,
}

impl<'a> MemberWords<'a> {
    fn u32_at(&self, field: usize) -> &'a AtomicU32 {
        self.parts.members.u32_at(self.at.wrapping_add(field))
    }
    fn u64_at(&self, field: usize) -> &'a AtomicU64 {
        self.parts.members.u64_at(self.at.wrapping_add(field))
    }
    /// `state | generation << 32`, one 64-bit word.
    pub(crate) fn word(&self) -> &'a AtomicU64 {
        // state (offset 0) and generation (offset 4) form one 8-aligned u64
        // at the start of the entry (hw layout tests).
        self.u64_at(offset_of!(hwl_member, state))
    }
    pub(crate) fn pid(&self) -> &'a AtomicU32 {
        self.u32_at(offset_of!(hwl_member, pid))
    }
    pub(crate) fn reaper(&self) -> &'a AtomicU32 {
        self.u32_at(offset_of!(hwl_member, reaper))
    }
    pub(crate) fn token(&self) -> &'a AtomicU32 {
        self.u32_at(offset_of!(hwl_member, token))
    }
    pub(crate) fn pending_links(&self) -> &'a AtomicU64 {
        self.u64_at(offset_of!(hwl_member, pending_links))
    }
    /// The name as `HWL_MEMBER_NAME_LEN / 8` little-endian u64 words.
    pub(crate) fn name_word(&self, k: usize) -> &'a AtomicU64 {
        assert!(k < HWL_MEMBER_NAME_LEN as usize / 8);
        // name is 32 bytes at offset 32 of the entry (8-aligned), so word
        // k < 4 is in bounds and aligned.
        self.u64_at(offset_of!(hwl_member, name).wrapping_add(k.wrapping_mul(8)))
    }
}

//! Unbounded queues: a chain of MPMC ring segments, each a region of its
//! own, that producers extend when the newest one is full and consumers
//! remove once drained, within a byte limit set at creation.
//!
//! Segment 0 is the ring inside the mailbox's own region; segment k > 0 is
//! the region `<mailbox region>.s<k>`. A producer that finds its segment full
//! creates the next one, links it with a CAS on `next_segment` (one winner;
//! a loser removes its own and follows the winner's), then seals the full
//! one so no message can land behind the link. A consumer that finds a
//! sealed segment drained moves to the next; the first to do so advances
//! `head_segment` and unlinks the drained file (its memory goes when the
//! last process unmaps it). Protocol: hw/SPEC.md, "Unbounded chain".

use crate::error::{Corruption, OpenError, RecvError, SendError};
use crate::mpmc::{self, MpmcGeometry, PopError, PushError};
use crate::region::{self, MailboxParts, MpmcParts, ObjectInit, ObjectSpec};
use crate::sync::Ordering;
use hwlink_drivers::{Backend, MapError};
use hwlink_hw::{HWL_FEAT_MPMC_RING, HWL_OBJ_MPMC_RING, HWL_REGION_HDR_SIZE};
use std::sync::Arc;
use std::time::Duration;

/// Largest segment a chain grows to (bytes of ring).
const MAX_SEGMENT_BYTES: u64 = 64 << 20;
/// Times a producer or consumer follows the chain in one call before it
/// reports the chain as corrupt (each step needs another process to have
/// sealed a segment, so a long walk means a hostile peer).
const MAX_STEPS: u32 = 1 << 16;

/// Bytes of a segment region holding a ring of `geometry` (header, ring,
/// rounded to pages of `page`).
fn region_bytes(geometry: &MpmcGeometry, page: u64) -> u64 {
    let ring = mpmc::ring_bytes(geometry.capacity, geometry.slot_size).unwrap_or(u64::MAX);
    (u64::from(HWL_REGION_HDR_SIZE) + ring.div_ceil(4096) * 4096).div_ceil(page) * page
}

/// The ring geometry of segment `id`: the first segment's capacity,
/// doubling with each segment up to [`MAX_SEGMENT_BYTES`].
pub(crate) fn segment_geometry(base: MpmcGeometry, id: u64) -> MpmcGeometry {
    let mut capacity = base.capacity;
    for _ in 0..id.min(16) {
        let doubled = capacity.saturating_mul(2);
        if doubled > hwlink_hw::HWL_RING_MAX_CAPACITY
            || u64::from(doubled) * u64::from(base.stride) > MAX_SEGMENT_BYTES
        {
            break;
        }
        capacity = doubled;
    }
    MpmcGeometry { capacity, ..base }
}

/// One process's view of an unbounded queue: where it pushes, where it
/// pops, and the shared chain state in the mailbox.
#[derive(Debug)]
pub(crate) struct Chain {
    ctl: MailboxParts,
    root_name: String,
    backend: Backend,
    base: MpmcGeometry,
    first: Arc<MpmcParts>,
    push_seg: Arc<MpmcParts>,
    pop_seg: Arc<MpmcParts>,
    ready_timeout: Duration,
}

impl Chain {
    /// A chain over the mailbox `ctl`, whose segment 0 is `first`.
    pub(crate) fn new(
        ctl: MailboxParts,
        first: MpmcParts,
        backend: Backend,
        ready_timeout: Duration,
    ) -> Result<Chain, OpenError> {
        let first = Arc::new(first);
        let root_name = ctl.map().name().to_string();
        let mut chain = Chain {
            base: *first.ring().geometry(),
            push_seg: first.clone(),
            pop_seg: first.clone(),
            first,
            ctl,
            root_name,
            backend,
            ready_timeout,
        };
        chain.push_seg = chain.latest(|c| c.tail_segment())?;
        chain.pop_seg = chain.latest(|c| c.head_segment())?;
        Ok(chain)
    }

    fn segment_name(&self, id: u64) -> String {
        format!("{}.s{id}", self.root_name)
    }

    /// Opens segment `id`; None if its file is gone (drained and removed).
    fn open_segment(&self, id: u64) -> Result<Option<Arc<MpmcParts>>, OpenError> {
        if id == 0 {
            return Ok(Some(self.first.clone()));
        }
        let name = self.segment_name(id);
        let (map, info) = match region::open_region(&name, self.backend, self.ready_timeout) {
            Ok(found) => found,
            Err(OpenError::Map(MapError::NotFound { .. })) => return Ok(None),
            Err(e) => return Err(e),
        };
        let obj = info
            .objects
            .first()
            .ok_or_else(|| OpenError::NotAMailbox { name: name.clone() })?
            .clone();
        let parts = MpmcParts::locate_object(map, &obj)?;
        let want = segment_geometry(self.base, id);
        let corrupt = |what, value, limit| OpenError::Corrupt {
            name: name.clone(),
            source: Corruption::new(what, value, limit),
        };
        if parts.segment() != id {
            return Err(corrupt("segment number", parts.segment(), id));
        }
        if *parts.ring().geometry() != want {
            return Err(corrupt(
                "segment capacity",
                parts.ring().geometry().capacity.into(),
                want.capacity.into(),
            ));
        }
        Ok(Some(Arc::new(parts)))
    }

    /// Opens the segment a chain-state word names, retrying while it is
    /// removed under us (the word has moved on by then).
    fn latest(
        &self,
        word: impl Fn(&MailboxParts) -> &crate::sync::AtomicU64,
    ) -> Result<Arc<MpmcParts>, OpenError> {
        for _ in 0..MAX_STEPS {
            let id = word(&self.ctl).load(Ordering::Acquire);
            self.check_id(id).map_err(|source| OpenError::Corrupt {
                name: self.root_name.clone(),
                source,
            })?;
            if let Some(seg) = self.open_segment(id)? {
                return Ok(seg);
            }
        }
        Err(OpenError::Corrupt {
            name: self.root_name.clone(),
            source: Corruption::new("segment chain walk", MAX_STEPS.into(), MAX_STEPS.into()),
        })
    }

    /// A segment number read from shared memory must have been handed out.
    fn check_id(&self, id: u64) -> Result<(), Corruption> {
        let last = self.ctl.last_segment().load(Ordering::Acquire);
        if id > last {
            return Err(Corruption::new("segment number", id, last));
        }
        Ok(())
    }

    /// The segment after `seg`, which is sealed: it names its successor.
    fn successor(
        &self,
        seg: &MpmcParts,
        latest: fn(&MailboxParts) -> &crate::sync::AtomicU64,
    ) -> Result<Arc<MpmcParts>, OpenError> {
        let corrupt = |source| OpenError::Corrupt {
            name: self.root_name.clone(),
            source,
        };
        // Acquire: the sealer linked `next_segment` before sealing, and we
        // saw the seal with acquire.
        let next = seg.next_segment().load(Ordering::Acquire);
        if next <= seg.segment() {
            return Err(corrupt(Corruption::new(
                "next segment",
                next,
                seg.segment() + 1,
            )));
        }
        self.check_id(next).map_err(corrupt)?;
        match self.open_segment(next)? {
            Some(s) => Ok(s),
            // Drained and removed already: start from the newest the
            // mailbox names.
            None => self.latest(latest),
        }
    }

    /// Appends `msg`; never waits. Errors carry no message (the caller
    /// rebinds it).
    pub(crate) fn try_push(&mut self, msg: &[u8], sender: u32) -> Result<(), SendError<()>> {
        for _ in 0..MAX_STEPS {
            let seg = self.push_seg.clone();
            match seg.ring().try_push(msg, sender) {
                Ok(()) => return Ok(()),
                Err(PushError::TooLarge) => {
                    return Err(SendError::TooLarge {
                        msg: (),
                        len: msg.len(),
                        max: self.base.slot_size as usize,
                    })
                }
                Err(PushError::Corrupt(c)) => return Err(SendError::Corrupt(c)),
                Err(PushError::Sealed) => {
                    // is_sealed: the acquire that orders the link before it.
                    debug_assert!(seg.ring().is_sealed());
                    self.push_seg = self
                        .successor(&seg, |c| c.tail_segment())
                        .map_err(open_to_send)?;
                }
                Err(PushError::Full) => {
                    if seg.next_segment().load(Ordering::Acquire) == 0 {
                        self.grow(&seg)?;
                    }
                    seg.ring().seal();
                    self.push_seg = self
                        .successor(&seg, |c| c.tail_segment())
                        .map_err(open_to_send)?;
                }
            }
        }
        Err(SendError::Corrupt(Corruption::new(
            "segment chain walk",
            MAX_STEPS.into(),
            MAX_STEPS.into(),
        )))
    }

    /// Creates the segment after the full `seg` and links it, unless
    /// another producer links one first.
    fn grow(&self, seg: &MpmcParts) -> Result<(), SendError<()>> {
        let limit = self.ctl.config().byte_limit;
        let last = self.ctl.last_segment().load(Ordering::Acquire);
        let geometry = segment_geometry(self.base, last + 1);
        let page = self.first.map().region().page_size() as u64;
        let estimate = region_bytes(&geometry, page.max(4096));
        let before = self
            .ctl
            .bytes_in_use()
            .fetch_add(estimate, Ordering::AcqRel);
        let give_back = || {
            self.ctl
                .bytes_in_use()
                .fetch_sub(estimate, Ordering::AcqRel);
        };
        if before.saturating_add(estimate) > limit {
            give_back();
            return Err(SendError::MemoryLimit {
                msg: (),
                limit,
                reason: format!("{before} bytes in use, the next segment needs {estimate}"),
            });
        }
        let id = self.ctl.last_segment().fetch_add(1, Ordering::AcqRel) + 1;
        let geometry = segment_geometry(self.base, id);
        let name = self.segment_name(id);
        let init = move |obj: ObjectInit| region::init_mpmc_ring(obj, geometry, id);
        let size = mpmc::ring_bytes(geometry.capacity, geometry.slot_size).unwrap_or(u64::MAX);
        let created = region::create_region(
            &name,
            self.backend,
            HWL_FEAT_MPMC_RING,
            &[ObjectSpec {
                kind: HWL_OBJ_MPMC_RING,
                name: "segment",
                size,
                init: &init,
            }],
            true,
        );
        let map = match created {
            Ok(map) => map,
            Err(e) => {
                give_back();
                return Err(SendError::MemoryLimit {
                    msg: (),
                    limit,
                    reason: format!("segment {id} could not be created: {e}"),
                });
            }
        };
        // Account for the real size (page rounding may differ).
        let real = map.region().len() as u64;
        if real != estimate {
            self.ctl.bytes_in_use().fetch_add(real, Ordering::AcqRel);
            give_back();
        }
        if let Ok(mode) = self.root_mode() {
            let _ = std::fs::set_permissions(map.region().path(), mode);
        }
        // L0 (release): link the new segment; only one producer wins.
        match seg
            .next_segment()
            .compare_exchange(0, id, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => {
                self.ctl.tail_segment().fetch_max(id, Ordering::AcqRel);
            }
            Err(_) => {
                // Another producer linked first: ours was never reachable.
                let _ = hwlink_drivers::remove_region(&name);
                self.ctl.bytes_in_use().fetch_sub(real, Ordering::AcqRel);
            }
        }
        Ok(())
    }

    /// The root region's file permissions, which segments copy.
    fn root_mode(&self) -> std::io::Result<std::fs::Permissions> {
        Ok(std::fs::metadata(self.first.map().region().path())?.permissions())
    }

    /// Claims the oldest message and runs `f` on it; never waits.
    pub(crate) fn try_pop_with<R>(
        &mut self,
        f: impl FnOnce(&[u8], u32) -> R,
    ) -> Result<R, RecvError> {
        for _ in 0..MAX_STEPS {
            let seg = self.pop_seg.clone();
            match seg.ring().try_claim() {
                Ok(claim) => {
                    return seg.ring().read(claim, f).map_err(|e| match e {
                        PopError::Corrupt(c) => RecvError::Corrupt(c),
                        PopError::Empty | PopError::Drained => RecvError::Empty,
                    })
                }
                Err(PopError::Empty) => return Err(RecvError::Empty),
                Err(PopError::Corrupt(c)) => return Err(RecvError::Corrupt(c)),
                Err(PopError::Drained) => {
                    let next = self
                        .successor(&seg, |c| c.head_segment())
                        .map_err(open_to_recv)?;
                    self.retire(&seg, next.segment());
                    self.pop_seg = next;
                }
            }
        }
        Err(RecvError::Corrupt(Corruption::new(
            "segment chain walk",
            MAX_STEPS.into(),
            MAX_STEPS.into(),
        )))
    }

    /// `seg` is sealed and drained: the first consumer to move the head
    /// past it removes its file and gives its bytes back.
    fn retire(&self, seg: &MpmcParts, next: u64) {
        let id = seg.segment();
        if self
            .ctl
            .head_segment()
            .compare_exchange(id, next, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
            && id != 0
        {
            let _ = hwlink_drivers::remove_region(&self.segment_name(id));
            let bytes = seg.map().region().len() as u64;
            self.ctl.bytes_in_use().fetch_sub(bytes, Ordering::AcqRel);
        }
    }

    /// Whether a message may be ready (for sleep re-checks): cheap, no
    /// claim.
    pub(crate) fn maybe_ready(&self) -> bool {
        match self.pop_seg.ring().len() {
            Ok(n) => n > 0 || self.pop_seg.ring().is_sealed(),
            Err(_) => true,
        }
    }

    /// Messages queued in all live segments (diagnostics).
    pub(crate) fn len(&self) -> u64 {
        let mut n = 0;
        let mut seg = Some(self.pop_seg.clone());
        let mut steps = 0;
        while let Some(s) = seg.take() {
            n += s.ring().len().unwrap_or(0);
            steps += 1;
            let next = s.next_segment().load(Ordering::Acquire);
            if next > s.segment() && steps < 64 {
                seg = self.open_segment(next).ok().flatten();
            }
        }
        n
    }

    /// Names of every segment region that may exist (for removal).
    pub(crate) fn segment_names(&self) -> Vec<String> {
        let last = self.ctl.last_segment().load(Ordering::Acquire);
        let head = self.ctl.head_segment().load(Ordering::Acquire).min(last);
        (head.max(1)..=last)
            .map(|id| self.segment_name(id))
            .collect()
    }
}

fn open_to_send(e: OpenError) -> SendError<()> {
    match e {
        OpenError::Corrupt { source, .. } => SendError::Corrupt(source),
        other => SendError::MemoryLimit {
            msg: (),
            limit: 0,
            reason: format!("the next segment cannot be mapped: {other}"),
        },
    }
}

fn open_to_recv(e: OpenError) -> RecvError {
    match e {
        OpenError::Corrupt { source, .. } => RecvError::Corrupt(source),
        other => RecvError::Unavailable {
            reason: other.to_string(),
        },
    }
}

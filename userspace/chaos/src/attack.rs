//! The attacker: maps the victims' region files (and their liveness files)
//! and writes adversarial values into their shared words, or shrinks and
//! grows the files. It knows the layout (hw/include/hwlink_abi.h) and aims
//! at every word a peer could write: header and object table, ring
//! indices, slot turns and lengths, doorbells, endpoints, attachments,
//! segment links, directory entries, rendezvous states, topic tails,
//! cursors, bitmaps and slot sequences, liveness words.

use crate::proto::Rng;
use core::mem::offset_of;
use hwlink_hw::*;
use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// What a word carries: writes to data words (payload bytes, lengths) and
/// to publication words may legitimately spoil messages without anyone
/// noticing; the rest must not.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// Structure: indices, states, links, counts, identities.
    Control,
    /// Message contents and lengths.
    Data,
    /// A slot's turn: it says whether the slot's bytes are a message, so a
    /// forged "published" turn delivers whatever the slot holds (a previous
    /// lap's message, zeros, or a message half copied), exactly as a
    /// forged payload would. Other forged turns must still be caught.
    Turn,
    /// An attachment's token: forged to name a dead process, it makes a
    /// live holder look dead, and its slot is taken back and handed on
    /// while it still copies. The holder then reports the corruption (its
    /// closing CAS fails), but what the next writer puts in that slot may
    /// reach a receiver spoiled: as a forged payload would.
    Identity,
}

impl Class {
    /// Whether a write of this class may spoil a message undetected.
    pub fn may_spoil(self) -> bool {
        self != Class::Control
    }
}

/// One word to attack.
#[derive(Clone, Copy, Debug)]
pub struct Target {
    pub offset: usize,
    pub width: usize,
    pub class: Class,
}

/// A victim's file, mapped read-write.
pub struct Mapped {
    pub path: PathBuf,
    file: File,
    ptr: *mut u8,
    len: usize,
    pub targets: Vec<Target>,
}

impl Drop for Mapped {
    fn drop(&mut self) {
        // SAFETY: our own mapping of `len` bytes.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

fn word(targets: &mut Vec<Target>, offset: usize, width: usize, class: Class) {
    targets.push(Target {
        offset,
        width,
        class,
    });
}

impl Mapped {
    /// Maps `path` and lists its words (none if it is not readable as an
    /// hwlink file: then random offsets are attacked).
    pub fn open(path: &Path) -> Option<Mapped> {
        let file = OpenOptions::new().read(true).write(true).open(path).ok()?;
        let len = file.metadata().ok()?.len() as usize;
        if len < 4096 {
            return None;
        }
        // SAFETY: a fresh shared mapping of the whole file; the harness
        // only touches it with volatile accesses within `len` that it
        // checks against the file size first (it shrinks files itself).
        let ptr = unsafe {
            libc::mmap(
                core::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return None;
        }
        let mut m = Mapped {
            path: path.to_owned(),
            file,
            ptr: ptr.cast(),
            len,
            targets: Vec::new(),
        };
        let len = m.len;
        m.targets = m
            .layout()
            .into_iter()
            .filter(|t| {
                t.offset % t.width == 0 && t.offset.checked_add(t.width).is_some_and(|e| e <= len)
            })
            .collect();
        Some(m)
    }

    fn read<T: Copy>(&self, offset: usize) -> Option<T> {
        if offset.checked_add(core::mem::size_of::<T>())? > self.len
            || offset % core::mem::align_of::<T>() != 0
        {
            return None;
        }
        // SAFETY: in bounds and aligned (checked), plain data, volatile.
        Some(unsafe { self.ptr.add(offset).cast::<T>().read_volatile() })
    }

    /// Every word of the file worth attacking, found by reading its layout.
    fn layout(&self) -> Vec<Target> {
        let mut t = Vec::new();
        let name = self.path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.starts_with("hwlink-proc.") {
            word(&mut t, offset_of!(hwl_process, lock), 4, Class::Control);
            word(&mut t, offset_of!(hwl_process, magic), 8, Class::Control);
            return t;
        }
        let Some(hdr) = self.read::<hwl_region>(0) else {
            return t;
        };
        for (f, w) in [
            (offset_of!(hwl_region, magic), 8),
            (offset_of!(hwl_region, abi_version), 4),
            (offset_of!(hwl_region, features), 4),
            (offset_of!(hwl_region, total_size), 8),
            (offset_of!(hwl_region, object_count), 4),
            (offset_of!(hwl_region, creator_token), 4),
        ] {
            word(&mut t, f, w, Class::Control);
        }
        let count = (hdr.object_count as usize).min(HWL_MAX_OBJECTS as usize);
        for (i, o) in hdr.objects[..count].iter().enumerate() {
            let entry = offset_of!(hwl_region, objects) + i * core::mem::size_of::<hwl_object>();
            word(
                &mut t,
                entry + offset_of!(hwl_object, kind),
                4,
                Class::Control,
            );
            word(
                &mut t,
                entry + offset_of!(hwl_object, offset),
                8,
                Class::Control,
            );
            word(
                &mut t,
                entry + offset_of!(hwl_object, size),
                8,
                Class::Control,
            );
            let (base, size) = (o.offset as usize, o.size as usize);
            if base.checked_add(size).map_or(true, |e| e > self.len) {
                continue;
            }
            match o.kind {
                HWL_OBJ_SPSC_RING => self.spsc(&mut t, base),
                HWL_OBJ_MPMC_RING => self.mpmc(&mut t, base),
                HWL_OBJ_MAILBOX => self.mailbox(&mut t, base),
                HWL_OBJ_DOMAIN => self.domain(&mut t, base),
                HWL_OBJ_RENDEZVOUS => self.rendezvous(&mut t, base),
                HWL_OBJ_TOPIC => self.topic(&mut t, base),
                _ => {}
            }
        }
        t
    }

    fn doorbell(t: &mut Vec<Target>, at: usize) {
        word(
            t,
            at.wrapping_add(offset_of!(hwl_doorbell, count)),
            4,
            Class::Control,
        );
        word(
            t,
            at.wrapping_add(offset_of!(hwl_doorbell, waiters)),
            4,
            Class::Control,
        );
    }

    fn endpoint(t: &mut Vec<Target>, at: usize) {
        for (f, w) in [
            (offset_of!(hwl_endpoint, pid), 4),
            (offset_of!(hwl_endpoint, state), 4),
            (offset_of!(hwl_endpoint, token), 4),
            (offset_of!(hwl_endpoint, cpu_mask), 8),
            (offset_of!(hwl_endpoint, wait_mode), 4),
            (offset_of!(hwl_endpoint, doorbell), 4),
        ] {
            word(t, at.wrapping_add(f), w, Class::Control);
        }
    }

    fn spsc(&self, t: &mut Vec<Target>, base: usize) {
        let Some(r) = self.read::<hwl_spsc_ring>(base) else {
            return;
        };
        word(t, base + offset_of!(hwl_spsc_ring, tail), 4, Class::Control);
        word(t, base + offset_of!(hwl_spsc_ring, head), 4, Class::Control);
        Self::endpoint(t, base + offset_of!(hwl_spsc_ring, producer));
        Self::endpoint(t, base + offset_of!(hwl_spsc_ring, consumer));
        Self::doorbell(t, base + offset_of!(hwl_spsc_ring, not_empty));
        Self::doorbell(t, base + offset_of!(hwl_spsc_ring, not_full));
        let slots = base.wrapping_add(r.slots_offset as usize);
        for i in 0..(r.capacity as usize).min(64) {
            let s = slots.wrapping_add(i.wrapping_mul(r.slot_stride as usize));
            word(t, s, 4, Class::Data); // len
            word(t, s.wrapping_add(4), 4, Class::Turn); // seq
            word(t, s.wrapping_add(8), 8, Class::Data); // payload
        }
    }

    fn mpmc(&self, t: &mut Vec<Target>, base: usize) {
        let Some(r) = self.read::<hwl_mpmc_ring>(base) else {
            return;
        };
        word(
            t,
            base + offset_of!(hwl_mpmc_ring, enqueue_pos),
            8,
            Class::Control,
        );
        word(
            t,
            base + offset_of!(hwl_mpmc_ring, dequeue_pos),
            8,
            Class::Control,
        );
        word(
            t,
            base + offset_of!(hwl_mpmc_ring, next_segment),
            8,
            Class::Control,
        );
        let slots = base.wrapping_add(r.slots_offset as usize);
        for i in 0..(r.capacity as usize).min(64) {
            let s = slots.wrapping_add(i.wrapping_mul(r.slot_stride as usize));
            word(t, s, 8, Class::Turn); // seq
            word(t, s.wrapping_add(8), 4, Class::Data); // len
            word(t, s.wrapping_add(12), 4, Class::Control); // sender
            word(t, s.wrapping_add(16), 8, Class::Data); // payload
        }
    }

    fn mailbox(&self, t: &mut Vec<Target>, base: usize) {
        for (f, w) in [
            (offset_of!(hwl_mailbox, bytes_in_use), 8),
            (offset_of!(hwl_mailbox, last_segment), 8),
            (offset_of!(hwl_mailbox, head_segment), 8),
            (offset_of!(hwl_mailbox, tail_segment), 8),
            (offset_of!(hwl_mailbox, spare_segment), 8),
            (offset_of!(hwl_mailbox, removed), 4),
        ] {
            word(t, base + f, w, Class::Control);
        }
        Self::doorbell(t, base + offset_of!(hwl_mailbox, not_empty));
        Self::doorbell(t, base + offset_of!(hwl_mailbox, not_full));
        for i in 0..8 {
            let a = base + offset_of!(hwl_mailbox, attachments) + i * 16;
            word(t, a, 4, Class::Control); // pid
            word(t, a + 8, 4, Class::Identity); // token
        }
    }

    fn domain(&self, t: &mut Vec<Target>, base: usize) {
        let Some(d) = self.read::<hwl_domain>(base) else {
            return;
        };
        word(t, base + offset_of!(hwl_domain, state), 4, Class::Control);
        word(
            t,
            base + offset_of!(hwl_domain, next_generation),
            4,
            Class::Control,
        );
        let members = base.wrapping_add(d.members_offset as usize);
        for i in 0..(d.max_members as usize).min(8) {
            let m = members.wrapping_add(i * core::mem::size_of::<hwl_member>());
            for (f, w) in [
                (offset_of!(hwl_member, state), 8),
                (offset_of!(hwl_member, pid), 4),
                (offset_of!(hwl_member, reaper), 4),
                (offset_of!(hwl_member, token), 4),
                (offset_of!(hwl_member, pending_links), 8),
                (offset_of!(hwl_member, name), 8),
            ] {
                word(t, m.wrapping_add(f), w, Class::Control);
            }
            Self::doorbell(t, m.wrapping_add(offset_of!(hwl_member, inbox)));
        }
    }

    fn rendezvous(&self, t: &mut Vec<Target>, base: usize) {
        let Some(r) = self.read::<hwl_rendezvous>(base) else {
            return;
        };
        word(
            t,
            base + offset_of!(hwl_rendezvous, next_ticket),
            4,
            Class::Control,
        );
        Self::doorbell(t, base + offset_of!(hwl_rendezvous, cells_bell));
        let cells = (r.cells as usize).min(HWL_RDV_MAX_CELLS as usize);
        for i in 0..cells {
            word(
                t,
                base + offset_of!(hwl_rendezvous, state) + 8 * i,
                8,
                Class::Control,
            );
            let c = base
                .wrapping_add(r.cells_offset as usize)
                .wrapping_add(i.wrapping_mul(r.cell_stride as usize));
            word(
                t,
                c.wrapping_add(offset_of!(hwl_rdv_cell, owner)),
                4,
                Class::Control,
            );
            word(
                t,
                c.wrapping_add(offset_of!(hwl_rdv_cell, len)),
                4,
                Class::Data,
            );
            word(
                t,
                c.wrapping_add(offset_of!(hwl_rdv_cell, ticket)),
                4,
                Class::Control,
            );
            word(
                t,
                c.wrapping_add(offset_of!(hwl_rdv_cell, owner_count)),
                4,
                Class::Control,
            );
            word(
                t,
                c.wrapping_add(offset_of!(hwl_rdv_cell, peer_count)),
                4,
                Class::Control,
            );
            word(t, c.wrapping_add(64), 8, Class::Data);
        }
    }

    /// A topic (hw/SPEC.md §16): its control block (the configuration its
    /// handles read once, the tail and reclaim, the publisher's words, the
    /// users count, the bitmaps and the not_full doorbell), every
    /// subscriber entry (cursor, token, pid, lagged, bell) and the slot
    /// headers: a slot's `seq` is its turn (forged to the position a
    /// reader waits for, it delivers whatever the slot holds), `len` and
    /// the payload are data.
    fn topic(&self, t: &mut Vec<Target>, base: usize) {
        let Some(tp) = self.read::<hwl_topic>(base) else {
            return;
        };
        for (f, w) in [
            (offset_of!(hwl_topic, id), 8),
            (offset_of!(hwl_topic, capacity), 4),
            (offset_of!(hwl_topic, slot_size), 4),
            (offset_of!(hwl_topic, slot_stride), 4),
            (offset_of!(hwl_topic, max_subscribers), 4),
            (offset_of!(hwl_topic, history), 4),
            (offset_of!(hwl_topic, backpressure), 4),
            (offset_of!(hwl_topic, subs_offset), 8),
            (offset_of!(hwl_topic, slots_offset), 8),
            (offset_of!(hwl_topic, tail), 8),
            (offset_of!(hwl_topic, reclaim), 8),
            (offset_of!(hwl_topic, publisher), 4),
            (offset_of!(hwl_topic, publisher_pid), 4),
            (offset_of!(hwl_topic, publisher_wait), 4),
            (offset_of!(hwl_topic, publisher_cpus), 8),
            (offset_of!(hwl_topic, users), 4),
            (offset_of!(hwl_topic, sleepy), 4),
            (offset_of!(hwl_topic, removed), 4),
        ] {
            word(t, base + f, w, Class::Control);
        }
        for i in 0..HWL_TOPIC_MAX_SUBSCRIBERS as usize / 64 {
            word(
                t,
                base + offset_of!(hwl_topic, sleeping) + 8 * i,
                8,
                Class::Control,
            );
            word(
                t,
                base + offset_of!(hwl_topic, attached) + 8 * i,
                8,
                Class::Control,
            );
        }
        Self::doorbell(t, base + offset_of!(hwl_topic, not_full));
        let subs = base.wrapping_add(tp.subs_offset as usize);
        for i in 0..(tp.max_subscribers as usize).min(8) {
            let e = subs.wrapping_add(i * core::mem::size_of::<hwl_topic_sub>());
            for (f, w) in [
                (offset_of!(hwl_topic_sub, cursor), 8),
                (offset_of!(hwl_topic_sub, token), 4),
                (offset_of!(hwl_topic_sub, pid), 4),
                (offset_of!(hwl_topic_sub, lagged), 8),
            ] {
                word(t, e.wrapping_add(f), w, Class::Control);
            }
            Self::doorbell(t, e.wrapping_add(offset_of!(hwl_topic_sub, bell)));
        }
        let slots = base.wrapping_add(tp.slots_offset as usize);
        let hdr = core::mem::size_of::<hwl_topic_slot>();
        for i in 0..(tp.capacity as usize).min(64) {
            let s = slots.wrapping_add(i.wrapping_mul(tp.slot_stride as usize));
            word(
                t,
                s.wrapping_add(offset_of!(hwl_topic_slot, seq)),
                8,
                Class::Turn,
            );
            word(
                t,
                s.wrapping_add(offset_of!(hwl_topic_slot, len)),
                4,
                Class::Data,
            );
            word(t, s.wrapping_add(hdr), 8, Class::Data); // payload
        }
    }

    /// Writes an adversarial value into one word (or a random one);
    /// returns its class. Volatile, after checking the file still holds it.
    pub fn strike(&self, rng: &mut Rng) -> Class {
        let target = if self.targets.is_empty() || rng.chance(5) {
            Target {
                offset: (rng.below((self.len / 8) as u64) * 8) as usize,
                width: 8,
                class: Class::Data,
            }
        } else {
            self.targets[rng.below(self.targets.len() as u64) as usize]
        };
        let now_len = self.file.metadata().map_or(0, |m| m.len() as usize);
        let inside = target
            .offset
            .checked_add(target.width)
            .is_some_and(|end| end <= now_len.min(self.len));
        if !inside {
            return target.class;
        }
        // SAFETY: within the file's current size and our mapping.
        let p = unsafe { self.ptr.add(target.offset) };
        if target.width == 4 {
            // SAFETY: as above, 4-aligned (layout words are).
            let old = unsafe { p.cast::<u32>().read_volatile() };
            let v = value32(rng, old);
            // SAFETY: as above.
            unsafe { p.cast::<u32>().write_volatile(v) };
            self.log(&target, u64::from(old), u64::from(v));
        } else {
            // SAFETY: as above, 8-aligned.
            let old = unsafe { p.cast::<u64>().read_volatile() };
            let v = value64(rng, old);
            // SAFETY: as above.
            unsafe { p.cast::<u64>().write_volatile(v) };
            self.log(&target, old, v);
        }
        target.class
    }

    /// With HWLINK_CHAOS_WRITES set, prints each write (to replay a
    /// failing trial and see what it did).
    fn log(&self, target: &Target, old: u64, new: u64) {
        if std::env::var_os("HWLINK_CHAOS_WRITES").is_some() {
            eprintln!(
                "write {}+{:#x} ({:?}, {} bytes): {old:#x} -> {new:#x}",
                self.path.display(),
                target.offset,
                target.class,
                target.width
            );
        }
    }

    /// Shrinks or grows the file (the mapping stays as it is: our own
    /// accesses check the size first).
    pub fn resize(&self, rng: &mut Rng) {
        let len = self.len as u64;
        let new = match rng.below(6) {
            0 => 0,
            1 => 4096,
            2 => len / 2 / 4096 * 4096,
            3 => len.saturating_sub(4096),
            // A sparse gigabyte: whoever opens the file next must not
            // allocate it (the victims' memory limit would catch that).
            4 => len + (1 << 30),
            _ => len + 4096,
        };
        let _ = self.file.set_len(new);
    }
}

fn value32(rng: &mut Rng, old: u32) -> u32 {
    match rng.below(12) {
        0 => 0,
        1 => 1,
        2 => u32::MAX,
        3 => 0xffff_fffe,
        4 => 0x8000_0000,
        5 => old.wrapping_add(1),
        6 => old.wrapping_sub(1),
        7 => old ^ (1 << rng.below(32)),
        8 => old.wrapping_add(16),
        9 => 0x4000_0000 | old, // OWNER_DIED on a liveness word
        10 => rng.below(64) as u32,
        _ => rng.next() as u32,
    }
}

fn value64(rng: &mut Rng, old: u64) -> u64 {
    match rng.below(14) {
        0 => 0,
        1 => 1,
        2 => u64::MAX,
        3 => u64::MAX - 1,
        4 => 1 << 63,
        5 => old.wrapping_add(1),
        6 => old.wrapping_sub(1),
        7 => old ^ (1 << rng.below(64)),
        8 => old.wrapping_add(1 << 32),
        9 => (rng.below(4) << 62) | (rng.below(64) << 56) | (old & ((1 << 56) - 1)),
        10 => old.wrapping_add(16),
        11 => (1 << 56) - 1,
        12 => rng.below(1 << 20),
        _ => rng.next(),
    }
}

/// Every file of the victims' directory, mapped.
pub fn map_all(dir: &Path) -> Vec<Mapped> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        if (name.starts_with("hwlink.") || name.starts_with("hwlink-proc."))
            && !name.ends_with(".memfd")
        {
            if let Some(m) = Mapped::open(&e.path()) {
                out.push(m);
            }
        }
    }
    out
}

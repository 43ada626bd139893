//! The topic ring: one writer, many readers, every message read in place by
//! every reader, each reader with its own cursor. Slots carry a sequence
//! word checked before and after each read (a seqlock), so a reader never
//! takes a torn message for a whole one: under `Overwrite` it learns
//! exactly how many messages it missed; under `Block` the writer never
//! overwrites a position a live reader has not passed (the `reclaim`
//! handshake, hw/SPEC.md §16).
//!
//! Layout: `struct hwl_topic`, `struct hwl_topic_sub`, `struct
//! hwl_topic_slot` (hw/include/hwlink_abi.h); ordering edges T0..T4: SPEC
//! §16. Waiting, liveness and wake-ups are the handles' business
//! (`crate::topic`); this module is the pure algorithm over a [`TopicMem`],
//! model-checked by loom and run under Miri on the heap. Every word read
//! from shared memory is untrusted: checked, never followed blindly.
#![warn(clippy::arithmetic_side_effects)]

use crate::error::Corruption;
use crate::sync::{fence, AtomicU32, AtomicU64, Ordering};
use hwlink_hw::{
    HWL_RING_MAX_CAPACITY, HWL_RING_MAX_SLOT_SIZE, HWL_TOPIC_MAX_SUBSCRIBERS, HWL_TOPIC_POS_LIMIT,
    HWL_TOPIC_SEQ_WRITING,
};

/// `seq` while the writer writes a position's message.
pub(crate) const WRITING: u64 = HWL_TOPIC_SEQ_WRITING as u64;
/// Positions stay below this (2^62: 146 years at a billion a second).
pub(crate) const MAX_POS: u64 = HWL_TOPIC_POS_LIMIT;
/// Words of the `attached` and `sleeping` bitmaps.
pub(crate) const BITMAP_WORDS: u32 = HWL_TOPIC_MAX_SUBSCRIBERS / 64;

/// The shape of a topic, validated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TopicGeometry {
    /// Slots, a power of two.
    pub capacity: u32,
    /// Most payload bytes of one message.
    pub slot_size: u32,
    /// Subscriber entries.
    pub max_subs: u32,
    /// Most past messages a joiner may ask for (at most capacity / 2).
    pub history: u32,
    /// The writer never waits (`Backpressure::Overwrite`).
    pub overwrite: bool,
}

impl TopicGeometry {
    /// Checks a shape asked for by a caller or read from shared memory.
    pub(crate) fn validate(
        capacity: u32,
        slot_size: u32,
        max_subs: u32,
        history: u32,
        overwrite: bool,
    ) -> Result<TopicGeometry, Corruption> {
        if !capacity.is_power_of_two() || !(2..=HWL_RING_MAX_CAPACITY).contains(&capacity) {
            return Err(Corruption::new(
                "topic capacity (a power of two, at least 2)",
                capacity.into(),
                HWL_RING_MAX_CAPACITY.into(),
            ));
        }
        if slot_size > HWL_RING_MAX_SLOT_SIZE {
            return Err(Corruption::new(
                "topic slot size",
                slot_size.into(),
                HWL_RING_MAX_SLOT_SIZE.into(),
            ));
        }
        if !(1..=HWL_TOPIC_MAX_SUBSCRIBERS).contains(&max_subs) {
            return Err(Corruption::new(
                "topic subscriber entries (1 or more)",
                max_subs.into(),
                HWL_TOPIC_MAX_SUBSCRIBERS.into(),
            ));
        }
        if history > capacity / 2 {
            return Err(Corruption::new(
                "topic history (at most half the capacity)",
                history.into(),
                (capacity / 2).into(),
            ));
        }
        Ok(TopicGeometry {
            capacity,
            slot_size,
            max_subs,
            history,
            overwrite,
        })
    }

    /// Slot of position `pos`.
    #[inline(always)]
    pub(crate) fn index(&self, pos: u64) -> u32 {
        // Truncation is the point: capacity <= 2^24.
        (pos & u64::from(self.capacity.wrapping_sub(1))) as u32
    }
}

/// Where a topic's words and slots live: a mapped region's object, or (for
/// loom) model-checked atomics.
pub(crate) trait TopicMem {
    /// `tail`: the next position the writer writes.
    fn tail(&self) -> &AtomicU64;
    /// `reclaim`: under Block, positions below it may be overwritten.
    fn reclaim(&self) -> &AtomicU64;
    /// Word `w` (< [`BITMAP_WORDS`]) of the `attached` bitmap.
    fn attached(&self, w: u32) -> &AtomicU64;
    /// Entry `e`'s cursor (`e` < max_subs).
    fn cursor(&self, e: u32) -> &AtomicU64;
    /// Entry `e`'s token.
    fn token(&self, e: u32) -> &AtomicU32;
    /// The `seq` word of slot `index` (< capacity).
    fn seq(&self, index: u32) -> &AtomicU64;
    /// The `len` word of slot `index`.
    fn len(&self, index: u32) -> &AtomicU32;
    /// Copies `src` into slot `index`'s payload at `offset` (in bounds:
    /// the caller checked against slot_size).
    fn write_payload(&self, index: u32, offset: usize, src: &[u8]);
    /// Copies the first `dst.len()` payload bytes of slot `index` out
    /// (the tests' reads; handles read slots in place).
    #[cfg(test)]
    fn read_payload(&self, index: u32, dst: &mut [u8]);
}

/// The writer's side: its own copy of the tail, and (Block) how far it may
/// write before it must look at the readers' cursors again.
#[derive(Debug)]
pub(crate) struct Writer<M> {
    pub(crate) mem: M,
    geometry: TopicGeometry,
    tail: u64,
    /// Positions below this may be written (Block); `MAX_POS` (Overwrite).
    limit: u64,
    /// The entry whose cursor set the last limit, if one did.
    slowest: Option<u32>,
}

/// What a reader found at its cursor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Look {
    /// The message of the cursor's position, `len` bytes: read it, then
    /// confirm with [`still`].
    Ready(u32),
    /// Not written yet.
    Empty,
    /// Overwritten: the oldest position still held is this one.
    Lagged(u64),
}

impl<M: TopicMem> Writer<M> {
    /// The writer of the topic in `mem`, resuming at its shared tail.
    pub(crate) fn new(mem: M, geometry: TopicGeometry) -> Result<Writer<M>, Corruption> {
        let tail = mem.tail().load(Ordering::Acquire);
        if tail >= MAX_POS {
            return Err(Corruption::new("topic tail", tail, MAX_POS));
        }
        Ok(Writer {
            mem,
            geometry,
            tail,
            // Block: look at the cursors before the first write.
            limit: if geometry.overwrite { MAX_POS } else { tail },
            slowest: None,
        })
    }

    /// The next position written.
    pub(crate) fn tail(&self) -> u64 {
        self.tail
    }

    pub(crate) fn geometry(&self) -> &TopicGeometry {
        &self.geometry
    }

    /// The entry that held the writer back at the last look, if any.
    pub(crate) fn slowest(&self) -> Option<u32> {
        self.slowest
    }

    /// Whether the next position may be written now without looking again.
    #[inline(always)]
    pub(crate) fn has_room_cached(&self) -> bool {
        self.tail < self.limit
    }

    /// The lowest position a live reader still needs (and the entry that
    /// needs it), the history kept for joiners included. `holds(e, token)`
    /// says whether entry `e`, claimed by `token`, is a live reader (the
    /// handle reaps dead ones there). A cursor outside the window a correct
    /// reader can be in is clamped into it: ahead of the tail counts as
    /// caught up, further behind than a lap holds the writer back (a
    /// stalled reader, or a hostile one: the writer then waits, or its
    /// `try_` forms say Full).
    fn scan(&self, holds: &mut dyn FnMut(u32, u32) -> bool) -> (u64, Option<u32>) {
        let t = self.tail;
        let floor = t.saturating_sub(u64::from(self.geometry.capacity));
        let mut min = t.saturating_sub(u64::from(self.geometry.history));
        let mut who = None;
        let entries = self.geometry.max_subs;
        for w in 0..entries.div_ceil(64) {
            let mut bits = self.mem.attached(w).load(Ordering::Acquire);
            // No overflow: w < 4.
            let base = w.wrapping_mul(64);
            let valid = entries.saturating_sub(base).min(64);
            if valid < 64 {
                bits &= (1u64 << valid).wrapping_sub(1);
            }
            while bits != 0 {
                let e = base.wrapping_add(bits.trailing_zeros());
                bits &= bits.wrapping_sub(1);
                let token = self.mem.token(e).load(Ordering::Acquire);
                if token == 0 || !holds(e, token) {
                    continue;
                }
                // T3: read after the entry's token (acquire).
                let c = self.mem.cursor(e).load(Ordering::Acquire).clamp(floor, t);
                if c < min {
                    min = c;
                    who = Some(e);
                }
            }
        }
        (min, who)
    }

    /// Block: looks at the readers' cursors and moves the limit. Publishes
    /// the candidate in `reclaim` before a second look (T4), so a reader
    /// joining meanwhile either is seen or sees the candidate and starts
    /// at or after it. True if the next position may now be written.
    pub(crate) fn refresh(&mut self, holds: &mut dyn FnMut(u32, u32) -> bool) -> bool {
        if self.geometry.overwrite {
            return true;
        }
        let (cand, _) = self.scan(holds);
        self.mem.reclaim().store(cand, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        let (again, who) = self.scan(holds);
        let fin = cand.min(again);
        if fin < cand {
            self.mem.reclaim().store(fin, Ordering::Release);
        }
        self.slowest = who;
        // No overflow: fin <= tail < MAX_POS = 2^62 and capacity <= 2^24.
        self.limit = fin.wrapping_add(u64::from(self.geometry.capacity));
        self.has_room_cached()
    }

    /// Whether the next position could be written after a fresh look at
    /// the cursors (nothing is changed: a select's poll).
    pub(crate) fn room_now(&self, holds: &mut dyn FnMut(u32, u32) -> bool) -> bool {
        if self.has_room_cached() {
            return true;
        }
        let (min, _) = self.scan(holds);
        // No overflow: min <= tail < 2^62.
        self.tail < min.wrapping_add(u64::from(self.geometry.capacity))
    }

    /// Starts writing the next position (room checked by the caller):
    /// marks its slot (T0) and returns the slot's index.
    #[inline(always)]
    pub(crate) fn begin(&mut self) -> u32 {
        let index = self.geometry.index(self.tail);
        // Release: a reader that sees the mark also sees the tail stored
        // after the message before it.
        self.mem
            .seq(index)
            .store(WRITING | self.tail, Ordering::Release);
        // T0: the mark is visible before any byte of the new message.
        fence(Ordering::Release);
        index
    }

    /// Publishes the message being written, `len` bytes (T1).
    #[inline(always)]
    pub(crate) fn commit(&mut self, index: u32, len: u32) {
        let pos = self.tail;
        // No overflow: tail < MAX_POS.
        let next = pos.wrapping_add(1);
        self.mem.len(index).store(len, Ordering::Relaxed);
        self.mem.seq(index).store(next, Ordering::Release);
        self.mem.tail().store(next, Ordering::Release);
        self.tail = next;
    }

    /// Whether another position is left before the position limit.
    pub(crate) fn exhausted(&self) -> bool {
        self.tail >= MAX_POS.wrapping_sub(1)
    }

    /// Writes one whole message (room checked by the caller).
    pub(crate) fn write(&mut self, msg: &[u8]) {
        let index = self.begin();
        self.mem.write_payload(index, 0, msg);
        // msg.len() <= slot_size <= 2^30, checked by the caller.
        self.commit(index, msg.len() as u32);
    }
}

/// Looks at position `c` (a reader's cursor).
#[inline(always)]
pub(crate) fn look<M: TopicMem>(mem: &M, g: &TopicGeometry, c: u64) -> Result<Look, Corruption> {
    let index = g.index(c);
    // T2: pairs with the writer's release of seq (T1).
    let s = mem.seq(index).load(Ordering::Acquire);
    // No overflow: c < MAX_POS (the reader's own value).
    let want = c.wrapping_add(1);
    if s == want {
        let len = mem.len(index).load(Ordering::Relaxed);
        if len > g.slot_size {
            return Err(Corruption::new(
                "topic message length",
                len.into(),
                g.slot_size.into(),
            ));
        }
        return Ok(Look::Ready(len));
    }
    // The position the slot holds (or is being written with).
    let seen = if s & WRITING != 0 {
        s & !WRITING
    } else {
        s.wrapping_sub(1)
    };
    if s == 0 || seen <= c {
        return Ok(Look::Empty);
    }
    // A complete message there means the writer has moved past it.
    let least_tail = seen.saturating_add(u64::from(s & WRITING == 0));
    recover(mem, g, c, seen, least_tail).map(Look::Lagged)
}

/// The oldest position still held, for a reader whose position `c` was
/// overwritten by position `seen` (read from c's slot; the writer's tail is
/// at least `least_tail`).
fn recover<M: TopicMem>(
    mem: &M,
    g: &TopicGeometry,
    c: u64,
    seen: u64,
    least_tail: u64,
) -> Result<u64, Corruption> {
    let cap = u64::from(g.capacity);
    // A correct writer overwrites c's slot with c + k * capacity.
    if seen >= MAX_POS || seen.wrapping_sub(c).checked_rem(cap) != Some(0) {
        return Err(Corruption::new(
            "topic slot sequence (not a later lap of the reader's position)",
            seen,
            MAX_POS,
        ));
    }
    // The tail may lag what the slot shows (a stale or hostile value): the
    // writer has at least begun `seen`, and passed it if it is complete.
    let t = mem.tail().load(Ordering::Acquire);
    if t >= MAX_POS {
        return Err(Corruption::new("topic tail", t, MAX_POS));
    }
    let t = t.max(least_tail);
    // The writer may be writing t now (destroying t - capacity): t + 1 -
    // capacity and later are whole at this instant.
    let oldest = t.saturating_add(1).saturating_sub(cap);
    Ok(oldest.max(c.saturating_add(1)))
}

/// After reading the message of `c` (found [`Look::Ready`]): whether it was
/// still there when the copy ended (T2'). False: it was overwritten while
/// being read; what was read is to be thrown away.
#[inline(always)]
pub(crate) fn still<M: TopicMem>(mem: &M, g: &TopicGeometry, c: u64) -> bool {
    fence(Ordering::Acquire);
    mem.seq(g.index(c)).load(Ordering::Relaxed) == c.wrapping_add(1)
}

#[cfg(test)]
/// Reads one message at `c` into `dst` (resized to the message): the
/// message and the next cursor, or what else was found.
pub(crate) fn read_into<M: TopicMem>(
    mem: &M,
    g: &TopicGeometry,
    c: u64,
    dst: &mut Vec<u8>,
) -> Result<Look, Corruption> {
    match look(mem, g, c)? {
        Look::Ready(len) => {
            dst.resize(len as usize, 0);
            mem.read_payload(g.index(c), dst);
            if still(mem, g, c) {
                Ok(Look::Ready(len))
            } else {
                // Overwritten while read: the slot now says by what.
                match look(mem, g, c)? {
                    Look::Lagged(to) => Ok(Look::Lagged(to)),
                    _ => Err(Corruption::new(
                        "topic slot sequence (changed under a read, then back)",
                        c,
                        MAX_POS,
                    )),
                }
            }
        }
        other => Ok(other),
    }
}

/// A reader joining entry `e` (its token already claimed, its attached
/// bit set): the cursor it starts at, with up to `want` past messages,
/// published in the entry (T4).
pub(crate) fn join<M: TopicMem>(mem: &M, g: &TopicGeometry, e: u32, want: u32) -> u64 {
    let t = mem
        .tail()
        .load(Ordering::Acquire)
        .min(MAX_POS.wrapping_sub(1));
    let k = u64::from(want.min(g.history)).min(t);
    // No overflow: k <= t.
    let mut c = t.wrapping_sub(k);
    mem.cursor(e).store(c, Ordering::SeqCst);
    fence(Ordering::SeqCst);
    if !g.overwrite {
        let r = mem.reclaim().load(Ordering::SeqCst);
        // The writer stores a reclaim no higher than its tail, so a tail
        // read after it is at least as high; a higher one is not a correct
        // writer's: ignore it (the seq checks still protect every read).
        let t2 = mem.tail().load(Ordering::Acquire);
        if r > c && r <= t2.max(t) {
            c = r;
            mem.cursor(e).store(c, Ordering::Release);
        }
    }
    c
}

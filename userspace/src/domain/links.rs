//! Links between members: setting one up on first use (created or opened, every
//! buffering), finding it, accepting new ones, dropping one.

use super::*;

impl Member {
    /// Whether link `k`'s peer is still the member it was created for (one
    /// load of its directory word).
    pub(super) fn peer_listed(&self, k: usize) -> bool {
        let l = &self.links[k];
        self.dom.member(l.slot).word().load(Ordering::Acquire) == pack(HWL_MEMBER_ACTIVE, l.gen)
    }

    /// Like `peer_listed`, also asking the kernel whether its process runs;
    /// reaps it if it died.
    pub(super) fn peer_alive(&self, k: usize) -> bool {
        let l = &self.links[k];
        member_alive(&self.dom, &self.domain, l.slot, l.gen)
    }

    /// The links changed: the last-used ones are looked up again.
    #[inline]
    pub(super) fn forget_last_links(&mut self) {
        self.last_tx = None;
        self.last_rx = None;
    }

    /// Adds a link; returns its index.
    pub(super) fn add_link(&mut self, link: Link) -> usize {
        self.forget_last_links();
        self.links.push(link);
        self.links.len().saturating_sub(1)
    }

    /// Closes link `k` and unlinks its region.
    pub(super) fn drop_link(&mut self, k: usize) {
        self.forget_last_links();
        let l = self.links.swap_remove(k);
        let file = l.file.clone();
        drop(l);
        let _ = crate::segments::remove_with_segments(&file);
    }

    /// The ACTIVE entry named `name` (not this member).
    pub(super) fn lookup(&self, name: &str) -> Option<(usize, Entry)> {
        let want = member_name_bytes(name).ok()?;
        (0..self.dom.config().max_members as usize)
            .filter(|&i| i != self.me)
            .map(|i| (i, read_entry(&self.dom, i)))
            .find(|(_, e)| e.state == HWL_MEMBER_ACTIVE && e.name == want)
    }

    /// Creates or opens the link region `file` to entry (slot, gen) and
    /// attaches to both directions.
    pub(super) fn attach_link(
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
    pub(super) fn create_link_region(
        &self,
        file: &str,
        features: u32,
        objects: &[ObjectSpec<'_>],
    ) -> Result<Option<Arc<RegionMap>>, OpenError> {
        // Links take the domain's file mode and group: every member that
        // may map the directory may map the links.
        let access = self.dom.map().access();
        match region::create_region(file, self.link_backend, &access, features, objects, true) {
            Ok(map) => Ok(Some(map)),
            Err(OpenError::Map(MapError::AlreadyExists { .. })) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The link region we `made`, validated, or else the one the member at
    /// (`slot`, `gen`) created (waiting for it to be published, unless that
    /// member dies meanwhile).
    pub(super) fn open_link_region(
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

    pub(super) fn new_link(
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
    pub(super) fn remove_if_failed(
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
    pub(super) fn attach_queue_link(
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
        // An unbounded direction has one sender and one receiver: its
        // rings are solo (SPEC §9, "Solo rings"), as fast as a bounded link's.
        let layout = QueueLayout::new(buffering, first, cfg.slot_size, Access::SendRecv)?;
        let layout = if zero { layout } else { layout.solo() };
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
                solo: !zero,
            };
            let open = |k: usize, access| {
                Mailbox::attach_queue(place(k), self.link_backend, self.wait, access, created)
            };
            // The peer as the directory names it now (bound here: what
            // anyone writes there later does not change whom we watch).
            let peer_token = read_entry(&self.dom, slot).token;
            let mut tx = Box::new(open(out, Access::Send)?);
            tx.watch_peer(peer_token);
            // The peer's recv_any sleeps on its inbox: every push rings it
            // after the queue's own fence (§12.4 [L4]).
            tx.notify_also(crate::doorbell::Doorbell::clone(&self.dom.inbox(slot)));
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
    pub(super) fn link_to(&mut self, name: &str) -> Result<usize, Unreachable> {
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
        let k = self.add_link(link);
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
    pub(super) fn accept_pending(&mut self) {
        // Load first: senders read this cache line on every message, so it
        // is written only when there is news.
        let pending = self.dom.member(self.me).pending_links();
        if pending.load(Ordering::Relaxed) == 0 {
            return;
        }
        let bits = pending.swap(0, Ordering::AcqRel);
        let (max, me) = (self.dom.config().max_members as usize, self.me);
        for j in (0..max).filter(|&j| j != me && bits & (1u64 << j) != 0) {
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
                    self.add_link(link);
                }
            }
        }
    }
}

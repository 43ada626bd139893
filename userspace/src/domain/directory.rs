//! The domain directory: member entries, names, link file names, reaping dead
//! members and tearing down what they left.

use super::*;

pub(super) fn pack(state: u32, generation: u32) -> u64 {
    u64::from(state) | u64::from(generation) << 32
}

pub(super) fn unpack(word: u64) -> (u32, u32) {
    (word as u32, (word >> 32) as u32)
}

pub(super) fn name_ok(name: &str, max: usize, dots: bool) -> bool {
    !name.is_empty()
        && name.len() <= max
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || (dots && b == b'.'))
}

pub(super) fn check_domain_name(name: &str) -> Result<(), OpenError> {
    if name_ok(name, MAX_DOMAIN_NAME_LEN, false) {
        Ok(())
    } else {
        Err(OpenError::InvalidConfig(format!(
            "domain name `{name}`: use 1 to {MAX_DOMAIN_NAME_LEN} characters of A-Z a-z 0-9 _ -"
        )))
    }
}

pub(super) fn member_name_bytes(name: &str) -> Result<NameBytes, OpenError> {
    if !name_ok(name, MAX_MEMBER_NAME_LEN, true) {
        return Err(OpenError::InvalidConfig(format!(
            "member name `{name}`: use 1 to {MAX_MEMBER_NAME_LEN} characters of A-Z a-z 0-9 _ - ."
        )));
    }
    let mut out = [0u8; HWL_MEMBER_NAME_LEN as usize];
    out[..name.len()].copy_from_slice(name.as_bytes());
    Ok(out)
}

pub(super) fn name_string(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

/// The name of the link region between directory entries `a` and `b`, each
/// (slot, generation): the lower slot first, numbers in hex.
pub(crate) fn link_name(domain: &str, a: (usize, u32), b: (usize, u32)) -> String {
    let (lo, hi) = if a.0 < b.0 { (a, b) } else { (b, a) };
    format!("{domain}.{:x}.{:x}.{:x}.{:x}", lo.0, lo.1, hi.0, hi.1)
}

/// The pair a link region name of `domain` designates.
pub(super) fn parse_link_name(domain: &str, name: &str) -> Option<[(usize, u32); 2]> {
    let rest = name.strip_prefix(domain)?.strip_prefix('.')?;
    let mut it = rest.split('.');
    let mut num = || u32::from_str_radix(it.next()?, 16).ok();
    let pair = [(num()? as usize, num()?), (num()? as usize, num()?)];
    it.next().is_none().then_some(pair)
}

/// Every link region of `domain` on this machine, with its pair.
pub(super) fn link_files(domain: &str) -> Vec<(String, [(usize, u32); 2])> {
    hwlink_drivers::list_regions()
        .unwrap_or_default()
        .into_iter()
        .filter_map(|f| parse_link_name(domain, &f.name).map(|p| (f.name, p)))
        .collect()
}

/// Unlinks every link region of `domain` involving entry (slot, gen),
/// except those in `keep`. A link whose queues another live process is
/// still attached to (an unbounded or zero-capacity link the peer drains)
/// is marked removed instead: the peer receives what is queued, reaching
/// every segment, then unlinks it when it drops the link.
pub(super) fn remove_links_of(domain: &str, slot: usize, gen: u32, keep: &[String]) {
    for (file, pair) in link_files(domain) {
        if pair.contains(&(slot, gen)) && !keep.contains(&file) && !mark_queues_removed(&file) {
            let _ = crate::segments::remove_with_segments(&file);
        }
    }
}

/// Marks the queues of link region `file` removed; true if a live process
/// is still attached to one of them (a leaver has detached from its links
/// by now; a reaper may be the peer itself, draining).
pub(super) fn mark_queues_removed(file: &str) -> bool {
    let Ok((map, info)) = region::open_region(file, Backend::Auto, Duration::ZERO) else {
        return false;
    };
    let mut attached = false;
    for obj in info.objects.iter().filter(|o| o.kind == HWL_OBJ_MAILBOX) {
        if let Ok(ctl) = objects::MailboxParts::locate_object(map.clone(), obj) {
            crate::mailbox::mark_removed(&ctl);
            attached |= crate::mailbox::others_attached(&ctl, 0);
        }
    }
    attached
}

/// Opens region `name`, which another process may be creating right now:
/// its file can exist before it is sized (O_EXCL create, then ftruncate), so
/// a file of the wrong size is retried, like an unpublished header, until
/// `ready_timeout`, or until `creator_alive` says the process creating it
/// is gone (it died half way: nobody will finish the file).
pub(super) fn open_fresh(
    name: &str,
    backend: Backend,
    ready_timeout: Duration,
    creator_alive: &dyn Fn() -> bool,
) -> Result<(Arc<RegionMap>, RegionInfo), OpenError> {
    let deadline = crate::wait::later(Instant::now(), ready_timeout);
    loop {
        let slice = deadline
            .saturating_duration_since(Instant::now())
            .min(Duration::from_millis(10));
        match region::open_region(name, backend, slice) {
            Err(OpenError::Map(MapError::BadSize { .. }) | OpenError::NotReady { .. })
                if Instant::now() < deadline && creator_alive() =>
            {
                std::thread::sleep(Duration::from_millis(1))
            }
            other => return other,
        }
    }
}

/// A consistent snapshot of one directory entry.
#[derive(Debug, Clone)]
pub(super) struct Entry {
    pub(super) state: u32,
    pub(super) gen: u32,
    pub(super) pid: u32,
    pub(super) token: u32,
    pub(super) name: NameBytes,
    /// The entry kept changing while it was read: it reads as FREE.
    pub(super) unstable: bool,
}

impl Entry {
    pub(super) fn is_member(&self) -> bool {
        self.state == HWL_MEMBER_JOINING || self.state == HWL_MEMBER_ACTIVE
    }
}

/// Reads entry `i` once, seqlock style: the name is written only while the
/// entry is FREE, so a state|generation word that reads the same before and
/// after the name vouches for it. An entry that keeps changing reads as free.
pub(super) fn read_entry(dom: &DomainParts, i: usize) -> Entry {
    let m = dom.member(i);
    for _ in 0..16 {
        let w = m.word().load(Ordering::Acquire);
        let pid = m.pid().load(Ordering::Relaxed);
        let token = m.token().load(Ordering::Relaxed);
        let mut name = [0u8; HWL_MEMBER_NAME_LEN as usize];
        for k in 0..NAME_WORDS {
            let v = m.name_word(k).load(Ordering::Relaxed);
            if let Some(w) = name.chunks_exact_mut(8).nth(k) {
                w.copy_from_slice(&v.to_le_bytes());
            }
        }
        fence(Ordering::Acquire);
        if m.word().load(Ordering::Relaxed) == w {
            let (state, gen) = unpack(w);
            return Entry {
                state,
                gen,
                pid,
                token,
                name,
                unstable: false,
            };
        }
    }
    Entry {
        state: HWL_MEMBER_FREE,
        gen: 0,
        pid: 0,
        token: 0,
        name: [0; HWL_MEMBER_NAME_LEN as usize],
        unstable: true,
    }
}

/// Finishes the removal of entry `slot` (state LEAVING, generation `gen`,
/// owned by the process with token `owner`): unlinks its links' files,
/// except `keep`, and frees the entry. Every write is a compare-exchange,
/// so a stale reaper can never overwrite a newer member.
pub(super) fn teardown(
    dom: &DomainParts,
    domain: &str,
    slot: usize,
    gen: u32,
    owner: u32,
    keep: &[String],
) {
    remove_links_of(domain, slot, gen, keep);
    let m = dom.member(slot);
    if m.word()
        .compare_exchange(
            pack(HWL_MEMBER_LEAVING, gen),
            pack(HWL_MEMBER_FREE, gen),
            SC,
            SC,
        )
        .is_ok()
    {
        let me = my_token();
        let _ = m.reaper().compare_exchange(me, 0, SC, SC);
        let _ = m.token().compare_exchange(owner, 0, SC, SC);
    }
}

/// Removes entry `i` from the directory if the process holding it has died
/// (or a teardown of it was abandoned by a dead process). Returns whether
/// it did.
pub(super) fn reap_if_dead(dom: &DomainParts, domain: &str, i: usize) -> bool {
    let m = dom.member(i);
    let w = m.word().load(SC);
    let owner = m.token().load(SC);
    if owner == 0 {
        return false;
    }
    let me = my_token();
    let (state, gen) = unpack(w);
    match state {
        // Claimed, never joined (or freed but not yet released).
        HWL_MEMBER_FREE => {
            !liveness::is_alive_settled(owner)
                && m.token().compare_exchange(owner, 0, SC, SC).is_ok()
        }
        HWL_MEMBER_JOINING | HWL_MEMBER_ACTIVE => {
            if liveness::is_alive_settled(owner)
                || m.word()
                    .compare_exchange(w, pack(HWL_MEMBER_LEAVING, gen), SC, SC)
                    .is_err()
                || m.reaper().compare_exchange(0, me, SC, SC).is_err()
            {
                return false;
            }
            teardown(dom, domain, i, gen, owner, &[]);
            true
        }
        HWL_MEMBER_LEAVING => {
            // Stuck if whoever tears it down has died: the owner (reaper 0)
            // or a reaper.
            let r = m.reaper().load(SC);
            let stuck = if r == 0 {
                !liveness::is_alive_settled(owner)
            } else {
                !liveness::is_alive_settled(r)
            };
            if !stuck || m.reaper().compare_exchange(r, me, SC, SC).is_err() {
                return false;
            }
            if m.word().load(SC) != w {
                let _ = m.reaper().compare_exchange(me, 0, SC, SC);
                return false;
            }
            teardown(dom, domain, i, gen, owner, &[]);
            true
        }
        _ => false,
    }
}

/// Closes and removes the domain if no entry is held any more. The closer
/// announces CLOSING before it looks at the entries, and a joiner claims an
/// entry before it looks at the state (both SeqCst): one of them sees the
/// other.
pub(super) fn close_if_empty(dom: &DomainParts, domain: &str) {
    if dom
        .state()
        .compare_exchange(HWL_DOMAIN_OPEN, HWL_DOMAIN_CLOSING, SC, SC)
        .is_err()
    {
        return;
    }
    fence(SC);
    let max = dom.config().max_members as usize;
    if (0..max).any(|i| dom.member(i).token().load(SC) != 0) {
        dom.state().store(HWL_DOMAIN_OPEN, SC);
        return;
    }
    dom.state().store(HWL_DOMAIN_CLOSED, SC);
    for (file, _) in link_files(domain) {
        let _ = crate::segments::remove_with_segments(&file);
    }
    let _ = hwlink_drivers::remove_region(domain);
}

/// One member as seen in the directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberInfo {
    /// Its name.
    pub name: String,
    /// Its process.
    pub pid: u32,
    /// Whether that process still runs.
    pub alive: bool,
    /// Its directory entry.
    pub slot: usize,
    /// Its join generation (unique in the domain).
    pub generation: u32,
}

pub(super) fn directory(dom: &DomainParts) -> Vec<MemberInfo> {
    (0..dom.config().max_members as usize)
        .map(|i| (i, read_entry(dom, i)))
        .filter(|(_, e)| e.state == HWL_MEMBER_ACTIVE)
        .map(|(i, e)| MemberInfo {
            name: name_string(&e.name),
            pid: e.pid,
            alive: liveness::is_alive(e.token),
            slot: i,
            generation: e.gen,
        })
        .collect()
}

/// The members of the domain in `map`, if it holds one (for `hwlink ls`).
pub(crate) fn members_of(
    map: Arc<RegionMap>,
    info: &RegionInfo,
) -> Option<Result<Vec<MemberInfo>, OpenError>> {
    DomainParts::locate(map, info).map(|r| r.map(|dom| directory(&dom)))
}

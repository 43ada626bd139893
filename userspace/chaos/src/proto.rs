//! What the harness and its victim processes share: the kinds of object
//! (links, mailboxes, domains, topics) and wait strategies tried, the seeded random source, the message format
//! every receiver checks, the clock, and the lines victims report on.

use hwlink::WaitStrategy;
use std::fmt;
use std::str::FromStr;

/// The object kinds a trial can use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// A link: one SPSC ring.
    Link,
    /// A bounded mailbox (MPMC ring).
    MailboxBounded,
    /// An unbounded mailbox (a chain of segments).
    MailboxUnbounded,
    /// A zero-capacity mailbox (rendezvous cells).
    MailboxZero,
    /// Direct links of a domain with bounded buffering.
    DomainBounded,
    /// ... with unbounded buffering.
    DomainUnbounded,
    /// ... with zero capacity.
    DomainZero,
    /// A topic (one publisher, every subscriber gets every message) whose
    /// publisher waits for the slowest live subscriber.
    TopicBlock,
    /// ... whose publisher never waits: laggards get `Lagged(n)`.
    TopicOverwrite,
}

pub const KINDS: [Kind; 9] = [
    Kind::Link,
    Kind::MailboxBounded,
    Kind::MailboxUnbounded,
    Kind::MailboxZero,
    Kind::DomainBounded,
    Kind::DomainUnbounded,
    Kind::DomainZero,
    Kind::TopicBlock,
    Kind::TopicOverwrite,
];

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Link => "link",
            Kind::MailboxBounded => "mailbox-bounded",
            Kind::MailboxUnbounded => "mailbox-unbounded",
            Kind::MailboxZero => "mailbox-zero",
            Kind::DomainBounded => "domain-bounded",
            Kind::DomainUnbounded => "domain-unbounded",
            Kind::DomainZero => "domain-zero",
            Kind::TopicBlock => "topic-block",
            Kind::TopicOverwrite => "topic-overwrite",
        }
    }
    pub fn is_mailbox(self) -> bool {
        matches!(
            self,
            Kind::MailboxBounded | Kind::MailboxUnbounded | Kind::MailboxZero
        )
    }
    pub fn is_domain(self) -> bool {
        matches!(
            self,
            Kind::DomainBounded | Kind::DomainUnbounded | Kind::DomainZero
        )
    }
    pub fn is_topic(self) -> bool {
        matches!(self, Kind::TopicBlock | Kind::TopicOverwrite)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Kind {
    type Err = String;
    fn from_str(s: &str) -> Result<Kind, String> {
        KINDS.into_iter().find(|k| k.name() == s).ok_or_else(|| {
            format!(
                "unknown kind `{s}`: one of {}",
                KINDS.map(Kind::name).join(", ")
            )
        })
    }
}

pub const WAITS: [WaitStrategy; 3] = [
    WaitStrategy::BusyPoll,
    WaitStrategy::SpinPark,
    WaitStrategy::Park,
];

/// splitmix64: a small, seedable, replayable source.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n` (0 if n is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }
}

/// The seed of trial `trial` of a campaign seeded `seed`.
pub fn trial_seed(seed: u64, trial: u64) -> u64 {
    Rng::new(seed ^ trial.wrapping_mul(0xA24B_AED4_963E_E407)).next()
}

/// Header of every message: sender id, sequence number, total length.
pub const HEADER: usize = 16;
/// The sequence number that ends a sender's stream.
pub const END: u64 = u64::MAX >> 8;

/// Message `seq` of `sender`, `len` bytes (at least HEADER): a header, then
/// bytes that depend on both, so that a torn, stale or misplaced message
/// shows.
pub fn message(sender: u32, seq: u64, len: usize) -> Vec<u8> {
    let len = len.max(HEADER);
    let mut m = vec![0u8; len];
    m[..4].copy_from_slice(&sender.to_le_bytes());
    m[4..12].copy_from_slice(&seq.to_le_bytes());
    m[12..16].copy_from_slice(&(len as u32).to_le_bytes());
    for (i, b) in m[HEADER..].iter_mut().enumerate() {
        *b = pattern(sender, seq, i);
    }
    m
}

fn pattern(sender: u32, seq: u64, i: usize) -> u8 {
    (seq.wrapping_mul(31) ^ (i as u64).wrapping_mul(7) ^ u64::from(sender).wrapping_mul(131)) as u8
}

/// What a received message says, if it is well formed: (sender, seq).
pub fn check(m: &[u8]) -> Option<(u32, u64)> {
    if m.len() < HEADER {
        return None;
    }
    let sender = u32::from_le_bytes(m[..4].try_into().ok()?);
    let seq = u64::from_le_bytes(m[4..12].try_into().ok()?);
    let len = u32::from_le_bytes(m[12..16].try_into().ok()?) as usize;
    if len != m.len() {
        return None;
    }
    let ok = m[HEADER..]
        .iter()
        .enumerate()
        .all(|(i, &b)| b == pattern(sender, seq, i));
    ok.then_some((sender, seq))
}

/// CLOCK_MONOTONIC in nanoseconds: the same clock in every process.
pub fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid timespec on our stack.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64)
        .wrapping_mul(1_000_000_000)
        .wrapping_add(ts.tv_nsec as u64)
}

/// The environment a victim reads its trial from.
pub mod env {
    pub const ROLE: &str = "HWLINK_CHAOS_ROLE";
    pub const KIND: &str = "HWLINK_CHAOS_KIND";
    pub const WAIT: &str = "HWLINK_CHAOS_WAIT";
    pub const NAME: &str = "HWLINK_CHAOS_NAME";
    pub const ID: &str = "HWLINK_CHAOS_ID";
    pub const SEED: &str = "HWLINK_CHAOS_SEED";
    pub const SIZE: &str = "HWLINK_CHAOS_SIZE";
    pub const COUNT: &str = "HWLINK_CHAOS_COUNT";
    pub const RUN_MS: &str = "HWLINK_CHAOS_RUN_MS";
    pub const PEERS: &str = "HWLINK_CHAOS_PEERS";
    pub const LOAN: &str = "HWLINK_CHAOS_LOAN";
}

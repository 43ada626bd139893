//! Send latency into an unbounded mailbox that nobody receives from
//! (`hwlink bench-unbounded`): the queue only grows, so every few hundred
//! thousand sends one of them links a new segment. Every `send` is timed
//! (`Instant` around the call); the report gives the percentiles, the
//! slowest sends and, from the handle's segment counters, how each segment
//! came to be: made ahead of need (off the sending path) or inside the
//! send. The mailbox is removed at the end, also after an error.

use super::BenchError;
use hwlink::{Access, Backend, Buffering, Mailbox, MailboxBuilder, SegmentStats};
use std::time::{Duration, Instant};

/// What to measure.
#[derive(Clone, Debug)]
pub struct UnboundedConfig {
    /// Sends, all timed.
    pub messages: u64,
    /// Bytes per message (at least 1).
    pub size: usize,
    /// Most bytes the mailbox's segments may take; None: enough for every
    /// message (see [`default_byte_limit`]).
    pub byte_limit: Option<u64>,
    /// Where the mailbox's memory comes from.
    pub backend: Backend,
    /// Make every segment inside the send that needs it (the behaviour
    /// before segments were made ahead), for comparison.
    pub inline: bool,
    /// The CPU the sending thread is pinned to, once the mailbox is open
    /// (so that the background thread preparing segments is not pinned
    /// with it); None: not pinned.
    pub cpu: Option<usize>,
}

/// One send that linked a new segment.
#[derive(Clone, Copy, Debug)]
pub struct SegmentLink {
    /// Which send (0-based).
    pub send: u64,
    /// The segment was made ahead of need (else inside this send).
    pub ahead: bool,
    /// This send waited for the preparation in progress.
    pub waited: bool,
    /// How long this send took, in nanoseconds.
    pub ns: u64,
}

/// What one run measured.
#[derive(Clone, Debug)]
pub struct UnboundedReport {
    /// Every send's time in nanoseconds (saturating at about 4.3 s), sorted.
    pub samples: Vec<u32>,
    /// The sends that linked a segment, in order.
    pub links: Vec<SegmentLink>,
    /// The slowest sends: (which send, nanoseconds), slowest first.
    pub slowest: Vec<(u64, u64)>,
    /// The handle's segment counters at the end.
    pub stats: SegmentStats,
    /// The byte limit the mailbox was created with.
    pub byte_limit: u64,
    /// Bytes the segments took at the end.
    pub bytes_in_use: u64,
    /// Wall time of the sending loop.
    pub elapsed: Duration,
    /// The mailbox's name (removed by now).
    pub name: String,
}

impl UnboundedReport {
    /// The `p`-quantile (0..=1) in nanoseconds.
    pub fn pct(&self, p: f64) -> u64 {
        let n = self.samples.len();
        let i = ((n as f64 * p) as usize).min(n.saturating_sub(1));
        self.samples.get(i).map_or(0, |&v| u64::from(v))
    }

    /// Sends that took longer than `limit`.
    pub fn over(&self, limit: Duration) -> usize {
        let ns = u32::try_from(limit.as_nanos()).unwrap_or(u32::MAX);
        self.samples.len() - self.samples.partition_point(|&v| v <= ns)
    }
}

/// A byte limit that holds `messages` of `size` bytes with room to spare:
/// each message takes a slot of its size plus a 64-byte header, rounded up
/// to 64 bytes; the segments' own headers, the page rounding and the
/// segment offered ahead take the 512 MiB more.
pub fn default_byte_limit(messages: u64, size: usize) -> u64 {
    let slot = (size as u64)
        .saturating_add(64)
        .div_ceil(64)
        .saturating_mul(64);
    messages.saturating_mul(slot).saturating_add(512 << 20)
}

/// How many of the slowest sends the report keeps.
const SLOWEST: usize = 8;

/// Creates the mailbox, sends `cfg.messages` timed messages, removes it.
pub fn run(cfg: &UnboundedConfig) -> Result<UnboundedReport, BenchError> {
    let name = format!("bu{}", std::process::id());
    let byte_limit = cfg
        .byte_limit
        .unwrap_or_else(|| default_byte_limit(cfg.messages, cfg.size));
    let mut mbx = MailboxBuilder::new()
        .name(&name)
        .buffering(Buffering::Unbounded { byte_limit })
        .slot_size(cfg.size.max(1) as u32)
        .backend(cfg.backend)
        .create(Access::Send)
        .map_err(|e| BenchError::Link(e.to_string()))?;
    if cfg.inline {
        mbx.make_segments_inline();
    }
    if let Some(cpu) = cfg.cpu {
        hwlink::liveness::pin_to_cpu(cpu).map_err(|e| BenchError::io("pinning", e))?;
    }
    let measured = measure(&mut mbx, cfg);
    let stats = mbx.segment_stats().unwrap_or_default();
    let bytes_in_use = mbx.bytes_in_use();
    mbx.remove().map_err(|e| BenchError::Link(e.to_string()))?;
    let (mut samples, links, elapsed) = measured?;
    let mut slowest: Vec<(u64, u64)> = Vec::with_capacity(SLOWEST + 1);
    for (i, &ns) in samples.iter().enumerate() {
        let ns = u64::from(ns);
        if slowest.len() < SLOWEST || slowest.last().is_some_and(|&(_, s)| ns > s) {
            let at = slowest.partition_point(|&(_, s)| s >= ns);
            slowest.insert(at, (i as u64, ns));
            slowest.truncate(SLOWEST);
        }
    }
    samples.sort_unstable();
    Ok(UnboundedReport {
        samples,
        links,
        slowest,
        stats,
        byte_limit,
        bytes_in_use,
        elapsed,
        name,
    })
}

/// The timed sends: every send's nanoseconds in send order, the sends
/// that linked a segment, and the loop's wall time.
fn measure(
    mbx: &mut Mailbox,
    cfg: &UnboundedConfig,
) -> Result<(Vec<u32>, Vec<SegmentLink>, Duration), BenchError> {
    let n = usize::try_from(cfg.messages)
        .map_err(|_| BenchError::Link(format!("{} messages is too many", cfg.messages)))?;
    // Written once before the clock starts, so that no page of it faults
    // in between two timed sends.
    let mut samples = vec![u32::MAX; n];
    let mut links = Vec::new();
    let mut msg = vec![0u8; cfg.size.max(1)];
    let mut seen = mbx.segment_stats().unwrap_or_default();
    let start = Instant::now();
    for (i, sample) in samples.iter_mut().enumerate() {
        let seq = (i as u64).to_le_bytes();
        let k = msg.len().min(seq.len());
        msg[..k].copy_from_slice(&seq[..k]);
        let t = Instant::now();
        let sent = mbx.send(&msg);
        let ns = t.elapsed().as_nanos();
        sent.map_err(|e| BenchError::Link(format!("send {i}: {e}")))?;
        *sample = u32::try_from(ns).unwrap_or(u32::MAX);
        let now = mbx.segment_stats().unwrap_or_default();
        let linked = |s: &SegmentStats| s.linked_ahead + s.linked_inline;
        if linked(&now) != linked(&seen) {
            links.push(SegmentLink {
                send: i as u64,
                ahead: now.linked_ahead != seen.linked_ahead,
                waited: now.waited != seen.waited,
                ns: u64::try_from(ns).unwrap_or(u64::MAX),
            });
        }
        seen = now;
    }
    Ok((samples, links, start.elapsed()))
}

//! Counters of one bridge process, both directions, and their one-line
//! report (printed at an interval, on SIGUSR1 and at exit).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// What the bridge has carried. Every counter only grows.
#[derive(Debug, Default)]
pub struct Counters {
    /// Messages taken from local objects and published.
    pub out_msgs: AtomicU64,
    /// Their bytes.
    pub out_bytes: AtomicU64,
    /// Frames published (first sends).
    pub out_frames: AtomicU64,
    /// Frames published again (an importer joined, restarted or saw a gap).
    pub resent_frames: AtomicU64,
    /// Messages delivered into local objects.
    pub in_msgs: AtomicU64,
    /// Their bytes.
    pub in_bytes: AtomicU64,
    /// Frames received.
    pub in_frames: AtomicU64,
    /// Messages received again and skipped (already delivered).
    pub dups_skipped: AtomicU64,
    /// Frames dropped for a gap before them (asked again, so not lost).
    pub gaps: AtomicU64,
    /// Messages a lagging topic subscription missed (topics in Overwrite
    /// mode only): the one documented loss.
    pub lagged: AtomicU64,
    /// Frames refused as malformed (not from an hwlink bridge).
    pub refused: AtomicU64,
}

/// Adds `n` to a counter.
pub fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Relaxed);
}

impl Counters {
    /// The one-line report.
    pub fn line(&self, peers: &[String]) -> String {
        let g = |c: &AtomicU64| c.load(Relaxed);
        format!(
            "out {} msgs {} B ({} frames, {} resent); in {} msgs {} B ({} frames); \
             duplicates skipped {}, gaps re-asked {}, drops {} (topic lag), refused frames {}; \
             zenoh peers [{}]",
            g(&self.out_msgs),
            g(&self.out_bytes),
            g(&self.out_frames),
            g(&self.resent_frames),
            g(&self.in_msgs),
            g(&self.in_bytes),
            g(&self.in_frames),
            g(&self.dups_skipped),
            g(&self.gaps),
            g(&self.lagged),
            g(&self.refused),
            peers.join(", ")
        )
    }
}

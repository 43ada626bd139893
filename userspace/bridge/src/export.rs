//! Exporting one local object: a thread takes messages from it, numbers
//! them, batches them into frames and publishes them reliably (congestion
//! control `Block`) on the object's key. It takes only as many as its
//! importers' acknowledgements allow (a credit window in messages and
//! bytes), so a stalled remote consumer stops it and the local senders
//! block; it keeps every unacknowledged frame and sends it again when an
//! importer joins, restarts or reports a gap.

use crate::local::{Source, Took};
use crate::stats::{add, Counters};
use crate::wire::{self, Ack, DataHeader};
use crate::{ack_key, random_id, BridgeError};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};
use zenoh::bytes::ZBytes;
use zenoh::qos::CongestionControl;
use zenoh::{Session, Wait};

/// How an exporter batches and how far it runs ahead of its importers.
#[derive(Debug, Clone)]
pub struct ExportConfig {
    /// The zenoh key expression.
    pub key: String,
    /// Most messages taken but not yet acknowledged.
    pub window_msgs: u64,
    /// Most bytes in unacknowledged frames.
    pub window_bytes: usize,
    /// A frame is published once it holds this many bytes.
    pub batch_bytes: usize,
    /// ... or once its first message has waited this long for more.
    pub max_delay: Duration,
    /// An importer not heard from for this long no longer counts.
    pub lease: Duration,
    /// Publish frames up to 32 KiB with zenoh's express flag (sent at
    /// once); false: every frame through zenoh's batching.
    pub express: bool,
}

/// Largest frame published with zenoh's express flag.
const EXPRESS_MAX: usize = 32 * 1024;
/// How often an idle exporter says it is there (and where its stream is,
/// so that an importer notices messages lost at the end of a burst).
const HEARTBEAT: Duration = Duration::from_millis(100);
/// How long a take waits when the batch is empty, so that acknowledgements
/// are read at least this often.
const TAKE_WAIT: Duration = Duration::from_millis(5);

#[derive(Debug)]
struct Importer {
    next: u64,
    heard: Instant,
}

#[derive(Debug)]
struct Frame {
    first: u64,
    count: u64,
    bytes: ZBytes,
    len: usize,
}

/// The exporter's view of its importers and its unacknowledged frames.
#[derive(Debug)]
struct Window {
    stream: u64,
    next_seq: u64,
    importers: HashMap<u64, Importer>,
    unacked: VecDeque<Frame>,
    unacked_bytes: usize,
    /// Send again from here (and, with `true`, say RESYNC first).
    resend: Option<(u64, bool)>,
}

impl Window {
    /// Lowest `next` among live importers.
    fn floor(&self) -> Option<u64> {
        self.importers.values().map(|i| i.next).min()
    }

    /// Where a newly joined importer starts: the oldest message any live
    /// importer still needs, else the oldest one kept, else the next one.
    fn join_point(&self) -> u64 {
        self.floor()
            .or_else(|| self.unacked.front().map(|f| f.first))
            .unwrap_or(self.next_seq)
    }

    fn ask_resend(&mut self, from: u64, resync: bool) {
        self.resend = Some(match self.resend {
            Some((f, r)) => (f.min(from), r || resync),
            None => (from, resync),
        });
    }

    fn apply(&mut self, a: &Ack, now: Instant) {
        let fresh = a.flags & wire::FLAG_FRESH != 0;
        if a.stream == self.stream && !fresh {
            // A hostile or confused importer cannot acknowledge what was
            // never sent.
            let next = a.next.min(self.next_seq);
            let e = self
                .importers
                .entry(a.importer)
                .or_insert(Importer { next, heard: now });
            e.next = e.next.max(next);
            e.heard = now;
            if a.flags & wire::FLAG_NACK != 0 {
                self.ask_resend(next, false);
            }
        } else if fresh || !self.importers.contains_key(&a.importer) {
            // An importer that does not know this stream: bring it in.
            self.importers.remove(&a.importer);
            let from = self.join_point();
            self.importers.insert(
                a.importer,
                Importer {
                    next: from,
                    heard: now,
                },
            );
            self.ask_resend(from, true);
        } else if let Some(i) = self.importers.get_mut(&a.importer) {
            i.heard = now;
        }
    }

    fn expire(&mut self, now: Instant, lease: Duration) {
        self.importers
            .retain(|_, i| now.saturating_duration_since(i.heard) < lease);
    }

    /// Drops frames every live importer has.
    fn trim(&mut self) {
        let Some(floor) = self.floor() else { return };
        while let Some(f) = self.unacked.front() {
            if f.first + f.count > floor {
                break;
            }
            self.unacked_bytes -= f.len;
            self.unacked.pop_front();
        }
    }

    /// Messages that may be taken now.
    fn credit(&self, cfg: &ExportConfig) -> u64 {
        let Some(floor) = self.floor() else { return 0 };
        if self.unacked_bytes >= cfg.window_bytes {
            return 0;
        }
        cfg.window_msgs.saturating_sub(self.next_seq - floor)
    }
}

/// Acknowledgements received, waiting for the exporter thread.
#[derive(Debug, Default)]
struct Inbox {
    acks: Mutex<Vec<Ack>>,
    ready: Condvar,
}

/// Starts exporting `source` on `cfg.key`; the thread ends when `stop` is
/// set, after up to `drain` waiting for its frames to be acknowledged.
pub fn spawn(
    session: &Session,
    mut source: Source,
    cfg: ExportConfig,
    stats: Arc<Counters>,
    stop: Arc<AtomicBool>,
    drain: Duration,
) -> Result<std::thread::JoinHandle<Result<(), BridgeError>>, BridgeError> {
    // Two publishers on the key, one sent at once by zenoh (express), one
    // through zenoh's batching: frames up to EXPRESS_MAX bytes (all our
    // batches of small messages) go express, larger ones (a large
    // message, which zenoh fragments anyway) through the batching, which
    // streams them faster. Both share zenoh's one queue per priority, so
    // frames stay in order.
    let declare = |express: bool| {
        session
            .declare_publisher(cfg.key.clone())
            .congestion_control(CongestionControl::Block)
            .express(express)
            .wait()
            .map_err(|e| BridgeError::zenoh(format!("declaring a publisher on `{}`", cfg.key), e))
    };
    let express = declare(cfg.express)?;
    let batched = declare(false)?;
    let inbox = Arc::new(Inbox::default());
    let cb_inbox = inbox.clone();
    let cb_stats = stats.clone();
    let subscriber = session
        .declare_subscriber(ack_key(&cfg.key))
        .callback(
            move |sample| match wire::decode_ack(&sample.payload().to_bytes()) {
                Ok(a) => {
                    cb_inbox.acks.lock().unwrap().push(a);
                    cb_inbox.ready.notify_one();
                }
                Err(_) => add(&cb_stats.refused, 1),
            },
        )
        .wait()
        .map_err(|e| BridgeError::zenoh(format!("subscribing to `{}`", ack_key(&cfg.key)), e))?;
    let thread = std::thread::Builder::new()
        .name(format!("export {}", cfg.key))
        .spawn(move || {
            let _subscriber = subscriber;
            let mut w = Window {
                stream: random_id(),
                next_seq: 0,
                importers: HashMap::new(),
                unacked: VecDeque::new(),
                unacked_bytes: 0,
                resend: None,
            };
            let put_on = |p: &zenoh::pubsub::Publisher<'_>, bytes: ZBytes| {
                p.put(bytes)
                    .wait()
                    .map_err(|e| BridgeError::zenoh(format!("publishing on `{}`", cfg.key), e))
            };
            let put = |bytes: ZBytes| put_on(&express, bytes);
            let mut batch: Vec<u8> = Vec::new();
            let mut last_put = Instant::now();
            let mut stop_at: Option<Instant> = None;
            loop {
                let now = Instant::now();
                for a in std::mem::take(&mut *inbox.acks.lock().unwrap()) {
                    w.apply(&a, now);
                }
                w.expire(now, cfg.lease);
                if let Some((from, resync)) = w.resend.take() {
                    if resync {
                        put(wire::empty_data(&DataHeader {
                            flags: wire::FLAG_RESYNC,
                            stream: w.stream,
                            first_seq: from,
                            count: 0,
                        })
                        .into())?;
                    }
                    for f in w.unacked.iter().filter(|f| f.first + f.count > from) {
                        put(f.bytes.clone())?;
                        add(&stats.resent_frames, 1);
                    }
                    last_put = Instant::now();
                }
                w.trim();
                if stop.load(Ordering::Relaxed) && stop_at.is_none() {
                    stop_at = Some(now + drain);
                }
                let done = w.unacked.is_empty() && w.floor().is_some_and(|f| f == w.next_seq);
                if stop_at.is_some_and(|t| done || now >= t) {
                    return Ok(());
                }
                if now.saturating_duration_since(last_put) >= HEARTBEAT {
                    put(wire::empty_data(&DataHeader {
                        flags: 0,
                        stream: w.stream,
                        first_seq: w.next_seq,
                        count: 0,
                    })
                    .into())?;
                    last_put = now;
                }
                let credit = w.credit(&cfg);
                if credit == 0 || stop_at.is_some() {
                    let g = inbox.acks.lock().unwrap();
                    if g.is_empty() {
                        let _ = inbox.ready.wait_timeout(g, TAKE_WAIT).unwrap();
                    }
                    continue;
                }
                // Take a batch: wait a little for the first message, then
                // take what is there until the batch is full, the credit is
                // spent or the first message has waited `max_delay`.
                wire::begin_data(&mut batch);
                let mut count = 0u64;
                let mut first_at = None;
                let mut bytes = 0u64;
                loop {
                    let wait = if count == 0 { Some(TAKE_WAIT) } else { None };
                    let before = batch.len();
                    match source.take(&mut batch, wait) {
                        Ok(Took::One) => {
                            count += 1;
                            bytes += (batch.len() - before - wire::RECORD_HEADER) as u64;
                            let t0 = *first_at.get_or_insert_with(Instant::now);
                            if batch.len() >= cfg.batch_bytes
                                || count >= credit
                                || t0.elapsed() >= cfg.max_delay
                            {
                                break;
                            }
                        }
                        Ok(Took::Nothing) => break,
                        Ok(Took::Closed) => {
                            // No sender attached now (a mailbox's senders
                            // all left, a link's or topic's sender ended):
                            // a new one may come; look again shortly.
                            if count == 0 {
                                std::thread::sleep(TAKE_WAIT);
                            }
                            break;
                        }
                        Ok(Took::Lagged(n)) => add(&stats.lagged, n),
                        Err(e) => {
                            return Err(BridgeError::Local(format!(
                                "taking from the object exported on `{}`: {e}",
                                cfg.key
                            )))
                        }
                    }
                }
                if count == 0 {
                    continue;
                }
                let h = DataHeader {
                    flags: 0,
                    stream: w.stream,
                    first_seq: w.next_seq,
                    count: count as u32,
                };
                wire::finish_data(&mut batch, &h);
                let len = batch.len();
                let frame = std::mem::replace(&mut batch, Vec::with_capacity(len));
                let bytes_z = ZBytes::from(frame);
                w.unacked.push_back(Frame {
                    first: w.next_seq,
                    count,
                    bytes: bytes_z.clone(),
                    len,
                });
                w.unacked_bytes += len;
                w.next_seq += count;
                put_on(
                    if len <= EXPRESS_MAX {
                        &express
                    } else {
                        &batched
                    },
                    bytes_z,
                )?;
                last_put = Instant::now();
                add(&stats.out_msgs, count);
                add(&stats.out_bytes, bytes);
                add(&stats.out_frames, 1);
            }
        })
        .map_err(|e| BridgeError::Local(format!("starting the export thread: {e}")))?;
    Ok(thread)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window() -> Window {
        Window {
            stream: 9,
            next_seq: 0,
            importers: HashMap::new(),
            unacked: VecDeque::new(),
            unacked_bytes: 0,
            resend: None,
        }
    }

    fn cfg() -> ExportConfig {
        ExportConfig {
            key: "k".into(),
            window_msgs: 100,
            window_bytes: 1 << 20,
            batch_bytes: 1024,
            max_delay: Duration::from_micros(50),
            lease: Duration::from_secs(1),
            express: true,
        }
    }

    fn sent(w: &mut Window, count: u64) {
        w.unacked.push_back(Frame {
            first: w.next_seq,
            count,
            bytes: ZBytes::from(vec![0u8; 10]),
            len: 10,
        });
        w.unacked_bytes += 10;
        w.next_seq += count;
    }

    fn ack(stream: u64, importer: u64, next: u64, flags: u8) -> Ack {
        Ack {
            flags,
            stream,
            importer,
            next,
        }
    }

    #[test]
    fn no_importer_no_credit() {
        let w = window();
        assert_eq!(w.credit(&cfg()), 0);
    }

    #[test]
    fn hello_joins_and_resyncs_from_oldest_kept() {
        let mut w = window();
        sent(&mut w, 5);
        let now = Instant::now();
        w.apply(&ack(0, 1, 0, 0), now);
        assert_eq!(w.resend, Some((0, true)));
        assert_eq!(w.credit(&cfg()), 95);
        w.resend = None;
        w.apply(&ack(9, 1, 5, 0), now);
        w.trim();
        assert!(w.unacked.is_empty());
        assert_eq!(w.credit(&cfg()), 100);
        // A hostile ack beyond what was sent is clamped.
        w.apply(&ack(9, 1, 1_000, 0), now);
        assert_eq!(w.importers[&1].next, 5);
    }

    #[test]
    fn restarted_importer_gets_everything_unacknowledged() {
        let mut w = window();
        let now = Instant::now();
        w.apply(&ack(0, 1, 0, 0), now);
        w.resend = None;
        sent(&mut w, 3);
        sent(&mut w, 3);
        w.apply(&ack(9, 1, 3, 0), now);
        w.trim();
        assert_eq!(w.unacked.len(), 1);
        // Importer 1 dies; importer 2 says hello.
        w.apply(&ack(0, 2, 0, 0), now);
        assert_eq!(w.resend, Some((3, true)));
        assert_eq!(w.importers[&2].next, 3);
        // The dead one expires after the lease.
        w.importers.get_mut(&1).unwrap().heard = now - Duration::from_secs(2);
        w.expire(now, Duration::from_secs(1));
        assert_eq!(w.importers.len(), 1);
    }

    #[test]
    fn nack_goes_back() {
        let mut w = window();
        let now = Instant::now();
        w.apply(&ack(0, 1, 0, 0), now);
        w.resend = None;
        sent(&mut w, 4);
        sent(&mut w, 4);
        w.apply(&ack(9, 1, 4, wire::FLAG_NACK), now);
        assert_eq!(w.resend, Some((4, false)));
        // Credit is bounded by the slowest live importer.
        w.apply(&ack(0, 2, 0, 0), now);
        assert_eq!(w.credit(&cfg()), 100 - 8 + 4);
    }
}

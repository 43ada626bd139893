//! Importing into one local object: a zenoh subscriber on the key receives
//! frames, keeps each exporting stream's messages in order and exactly
//! once (a message below the next expected is a duplicate and skipped; a
//! frame beyond it means a gap, which is asked for again, never skipped),
//! and delivers them into the local object. When the object is full the
//! rest wait in a backlog that a delivery thread drains; the backlog is
//! bounded by the exporters' credit windows, so zenoh's receive task never
//! blocks. Acknowledgements of what was delivered go back on the ack key.

use crate::local::{Put, Sink};
use crate::stats::{add, Counters};
use crate::wire::{self, Ack};
use crate::{ack_key, random_id, BridgeError};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};
use zenoh::pubsub::Publisher;
use zenoh::qos::CongestionControl;
use zenoh::{Session, Wait};

/// How an importer acknowledges and forgets.
#[derive(Debug, Clone)]
pub struct ImportConfig {
    /// The zenoh key expression.
    pub key: String,
    /// Acknowledge at once after this many deliveries (else on the tick).
    pub ack_every: u64,
}

/// How often pending acknowledgements are sent.
const ACK_TICK: Duration = Duration::from_millis(5);
/// How often every stream is acknowledged even with nothing new (and a
/// hello is sent while no stream is known).
const HEARTBEAT: Duration = Duration::from_millis(100);
/// Least time between two requests to resend the same gap.
const NACK_AGAIN: Duration = Duration::from_millis(20);
/// A stream silent this long is forgotten.
const FORGET: Duration = Duration::from_secs(600);
/// Most streams remembered.
const MAX_STREAMS: usize = 1024;
/// Most bytes waiting in the backlog. Exporters keep within their windows
/// (16 MiB by default), so only one that does not reaches this.
const BACKLOG_MAX: usize = 256 << 20;
/// How long one delivery attempt of the backlog waits for room.
const DELIVER_WAIT: Duration = Duration::from_millis(1);

#[derive(Debug)]
struct StreamIn {
    /// Every message below was accepted (delivered or in the backlog).
    accepted: u64,
    /// Every message below was delivered.
    delivered: u64,
    /// Last `next` acknowledged.
    acked: u64,
    heard: Instant,
    nacked_at: Option<Instant>,
}

#[derive(Debug)]
struct Core {
    sink: Sink,
    streams: HashMap<u64, StreamIn>,
    backlog: VecDeque<(u64, u64, Vec<u8>)>,
    backlog_bytes: usize,
    gone_reported: bool,
}

#[derive(Debug)]
struct Shared {
    core: Mutex<Core>,
    work: Condvar,
    acks: Publisher<'static>,
    importer: u64,
    cfg: ImportConfig,
    stats: Arc<Counters>,
}

impl Shared {
    fn send_ack(&self, stream: u64, next: u64, flags: u8) {
        let a = Ack {
            flags,
            stream,
            importer: self.importer,
            next,
        };
        // Acknowledgements are cumulative and repeated on every heartbeat:
        // one dropped under congestion costs nothing.
        let _ = self.acks.put(wire::encode_ack(&a).to_vec()).wait();
    }

    fn on_frame(&self, bytes: &[u8]) {
        let h = match wire::decode_data(bytes) {
            Ok(h) => h,
            Err(_) => {
                add(&self.stats.refused, 1);
                return;
            }
        };
        if h.first_seq.checked_add(u64::from(h.count)).is_none() {
            // Numbers that would wrap: not from a bridge.
            add(&self.stats.refused, 1);
            return;
        }
        add(&self.stats.in_frames, 1);
        let now = Instant::now();
        let mut guard = self.core.lock().unwrap();
        let Core {
            sink,
            streams,
            backlog,
            backlog_bytes,
            ..
        } = &mut *guard;
        let st = match streams.get_mut(&h.stream) {
            Some(st) => st,
            None if h.flags & wire::FLAG_RESYNC != 0 => {
                streams.entry(h.stream).or_insert(StreamIn {
                    accepted: h.first_seq,
                    delivered: h.first_seq,
                    acked: h.first_seq,
                    heard: now,
                    nacked_at: None,
                })
            }
            None => {
                // A stream this importer does not know (it restarted, or
                // forgot it): ask to be brought in; nothing is delivered
                // until the exporter says where to start.
                self.send_ack(h.stream, 0, wire::FLAG_FRESH);
                return;
            }
        };
        st.heard = now;
        if h.first_seq > st.accepted {
            add(&self.stats.gaps, 1);
            if st
                .nacked_at
                .is_none_or(|t| now.saturating_duration_since(t) >= NACK_AGAIN)
            {
                st.nacked_at = Some(now);
                self.send_ack(h.stream, st.accepted, wire::FLAG_NACK);
            }
            return;
        }
        let mut woke = false;
        for (seq, rec) in (h.first_seq..).zip(wire::records(bytes)) {
            if seq < st.accepted {
                add(&self.stats.dups_skipped, 1);
            } else {
                let done = backlog.is_empty() && matches!(sink.put(rec, None), Ok(Put::Done));
                if done {
                    st.delivered = seq + 1;
                    add(&self.stats.in_msgs, 1);
                    add(&self.stats.in_bytes, rec.len() as u64);
                } else if *backlog_bytes + rec.len() > BACKLOG_MAX {
                    // Only an exporter that ignores its window gets here:
                    // the rest of the frame is not accepted, and is asked
                    // for again after the gap its next frame shows.
                    break;
                } else {
                    *backlog_bytes += rec.len();
                    backlog.push_back((h.stream, seq, rec.to_vec()));
                    woke = true;
                }
                st.accepted = seq + 1;
            }
        }
        if st.delivered - st.acked >= self.cfg.ack_every {
            st.acked = st.delivered;
            self.send_ack(h.stream, st.delivered, 0);
        }
        drop(guard);
        if woke {
            self.work.notify_one();
        }
    }

    /// Drains the backlog into the sink until `stop`.
    fn deliver_loop(&self, stop: &AtomicBool) {
        let mut guard = self.core.lock().unwrap();
        while !stop.load(Ordering::Relaxed) {
            let Some((stream, seq, msg)) = guard.backlog.pop_front() else {
                guard = self.work.wait_timeout(guard, HEARTBEAT).unwrap().0;
                continue;
            };
            guard.backlog_bytes -= msg.len();
            match guard.sink.put(&msg, Some(DELIVER_WAIT)) {
                Ok(Put::Done) => {
                    add(&self.stats.in_msgs, 1);
                    add(&self.stats.in_bytes, msg.len() as u64);
                    let every = self.cfg.ack_every;
                    if let Some(st) = guard.streams.get_mut(&stream) {
                        st.delivered = seq + 1;
                        if st.delivered - st.acked >= every {
                            st.acked = st.delivered;
                            let next = st.delivered;
                            self.send_ack(stream, next, 0);
                        }
                    }
                    continue;
                }
                Ok(Put::Full) => {}
                Ok(Put::Gone) | Err(_) => {
                    if !guard.gone_reported {
                        guard.gone_reported = true;
                        eprintln!(
                            "hwlink-bridge: the local object imported from `{}` has no receiver (or failed); \
                             messages wait in the bridge (bounded by the exporters' windows) until one attaches",
                            self.cfg.key
                        );
                    }
                }
            }
            guard.backlog_bytes += msg.len();
            guard.backlog.push_front((stream, seq, msg));
            // Let the receive callback in before trying again.
            drop(guard);
            std::thread::sleep(Duration::from_micros(50));
            guard = self.core.lock().unwrap();
        }
    }

    /// Acknowledges what was delivered, says hello while no stream is
    /// known, and forgets silent streams, until `stop`.
    fn tick_loop(&self, stop: &AtomicBool) {
        let mut last_beat = Instant::now() - HEARTBEAT;
        while !stop.load(Ordering::Relaxed) {
            std::thread::sleep(ACK_TICK);
            let now = Instant::now();
            let beat = now.saturating_duration_since(last_beat) >= HEARTBEAT;
            if beat {
                last_beat = now;
            }
            let mut guard = self.core.lock().unwrap();
            let Core {
                streams, backlog, ..
            } = &mut *guard;
            // A stream is remembered through any outage (so that nothing
            // is delivered twice when its exporter comes back), and
            // forgotten only after FORGET of silence, or when too many are
            // kept (its exporter restarted many times).
            streams.retain(|id, st| {
                now.saturating_duration_since(st.heard) < FORGET
                    || backlog.iter().any(|(s, _, _)| s == id)
            });
            while streams.len() > MAX_STREAMS {
                let oldest = streams
                    .iter()
                    .min_by_key(|(_, st)| st.heard)
                    .map(|(&id, _)| id);
                if let Some(id) = oldest {
                    streams.remove(&id);
                }
            }
            for (&id, st) in streams.iter_mut() {
                if st.delivered > st.acked || beat {
                    st.acked = st.delivered;
                    self.send_ack(id, st.delivered, 0);
                }
            }
            if beat && streams.is_empty() {
                self.send_ack(0, 0, 0);
            }
        }
    }
}

/// A running import: dropping it stops its threads and undeclares its
/// subscriber.
#[derive(Debug)]
pub struct Import {
    threads: Vec<std::thread::JoinHandle<()>>,
    _subscriber: zenoh::pubsub::Subscriber<()>,
}

impl Import {
    /// Waits for its threads (after the stop flag is set).
    pub fn join(self) {
        for t in self.threads {
            let _ = t.join();
        }
    }
}

/// Starts importing from `cfg.key` into `sink`.
pub fn spawn(
    session: &Session,
    sink: Sink,
    cfg: ImportConfig,
    stats: Arc<Counters>,
    stop: Arc<AtomicBool>,
) -> Result<Import, BridgeError> {
    let acks = session
        .declare_publisher(ack_key(&cfg.key))
        .congestion_control(CongestionControl::Drop)
        .express(true)
        .wait()
        .map_err(|e| {
            BridgeError::zenoh(
                format!("declaring a publisher on `{}`", ack_key(&cfg.key)),
                e,
            )
        })?;
    let shared = Arc::new(Shared {
        core: Mutex::new(Core {
            sink,
            streams: HashMap::new(),
            backlog: VecDeque::new(),
            backlog_bytes: 0,
            gone_reported: false,
        }),
        work: Condvar::new(),
        acks,
        importer: random_id(),
        cfg: cfg.clone(),
        stats,
    });
    let cb = shared.clone();
    let subscriber = session
        .declare_subscriber(cfg.key.clone())
        .callback(move |sample| {
            let payload = sample.payload().to_bytes();
            cb.on_frame(&payload);
        })
        .wait()
        .map_err(|e| BridgeError::zenoh(format!("subscribing to `{}`", cfg.key), e))?;
    let mut threads = Vec::new();
    for (name, tick) in [("deliver", false), ("ack", true)] {
        let s = shared.clone();
        let stop = stop.clone();
        threads.push(
            std::thread::Builder::new()
                .name(format!("{name} {}", cfg.key))
                .spawn(move || {
                    if tick {
                        s.tick_loop(&stop)
                    } else {
                        s.deliver_loop(&stop)
                    }
                })
                .map_err(|e| BridgeError::Local(format!("starting the import thread: {e}")))?,
        );
    }
    Ok(Import {
        threads,
        _subscriber: subscriber,
    })
}

//! Many-to-many throughput: an hwlink mailbox with P producer and C consumer
//! processes, beside crossbeam's `ArrayQueue` with P + C threads in one
//! process, moving the same messages through the same capacity, measured in
//! alternating rounds of one run (`hwlink bench-mpmc`).

use super::BenchError;
use crossbeam_queue::ArrayQueue;
use hwlink::{Access, Backend, Buffering, MailboxBuilder, RecvError, WaitStrategy};
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What to measure.
#[derive(Clone, Debug)]
pub struct MpmcConfig {
    /// Producer processes (threads for the queue).
    pub producers: u32,
    /// Consumer processes (threads for the queue).
    pub consumers: u32,
    /// Messages in all, per round.
    pub messages: u64,
    /// Bytes per message (at least 16).
    pub size: usize,
    /// Slots of the mailbox and of the queue.
    pub capacity: u32,
    /// Rounds of each, alternating.
    pub rounds: u32,
    /// Where the mailbox's memory comes from.
    pub backend: Backend,
    /// How the mailbox's producers and consumers wait.
    pub wait: WaitStrategy,
}

/// Messages per second of each round.
#[derive(Clone, Debug, Default)]
pub struct MpmcReport {
    /// The hwlink mailbox, one figure per round.
    pub mailbox: Vec<f64>,
    /// crossbeam `ArrayQueue`, one figure per round.
    pub array_queue: Vec<f64>,
}

/// The median of some figures.
pub fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

const STOP: u64 = u64::MAX;

fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Runs the comparison.
pub fn run(cfg: &MpmcConfig) -> Result<MpmcReport, BenchError> {
    if cfg.size < 16 || cfg.producers == 0 || cfg.consumers == 0 {
        return Err(BenchError::Verify(
            "bench-mpmc needs a size of at least 16 and one producer and consumer".into(),
        ));
    }
    let mut report = MpmcReport::default();
    for round in 0..cfg.rounds {
        report.mailbox.push(mailbox_round(cfg, round)?);
        report.array_queue.push(array_queue_round(cfg));
    }
    Ok(report)
}

fn mailbox_round(cfg: &MpmcConfig, round: u32) -> Result<f64, BenchError> {
    let name = format!("bench-mpmc-{}-{round}", std::process::id());
    let link = |e: hwlink::OpenError| BenchError::Link(e.to_string());
    let mut mbx = MailboxBuilder::new()
        .name(&name)
        .buffering(Buffering::Bounded(cfg.capacity))
        .slot_size(cfg.size as u32)
        .backend(cfg.backend)
        .create(Access::Send)
        .map_err(link)?;
    let exe = std::env::current_exe().map_err(|e| BenchError::io("current_exe", e))?;
    let per = cfg.messages / u64::from(cfg.producers);
    let spawn = |role: &str, id: u32| {
        Command::new(&exe)
            .args([
                "bench-mpmc-peer",
                role,
                &name,
                &id.to_string(),
                &per.to_string(),
                &cfg.size.to_string(),
                &cfg.backend.to_string(),
                &cfg.wait.to_string(),
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| BenchError::io(format!("spawning a {role}"), e))
    };
    let mut children = Vec::new();
    for c in 0..cfg.consumers {
        children.push(spawn("consume", c)?);
    }
    for p in 0..cfg.producers {
        children.push(spawn("produce", p)?);
    }
    // Wait until every peer has attached, then start them together.
    let mut lines = Vec::new();
    for child in &mut children {
        let mut out = BufReader::new(child.stdout.take().expect("piped"));
        let mut l = String::new();
        out.read_line(&mut l)
            .map_err(|e| BenchError::io("reading a peer", e))?;
        if l.trim() != "ready" {
            return Err(BenchError::Peer(format!("expected `ready`, got {l:?}")));
        }
        lines.push(out);
    }
    let go = monotonic_ns();
    for child in &mut children {
        let _ = child.stdin.take().expect("piped").write_all(b"go\n");
    }
    let mut last = 0u64;
    let mut received = 0u64;
    let consumers = cfg.consumers as usize;
    let mut peers: Vec<_> = children.into_iter().zip(lines).collect();
    let wait = |child: &mut std::process::Child| -> Result<(), BenchError> {
        let status = child
            .wait()
            .map_err(|e| BenchError::io("waiting for a peer", e))?;
        if status.success() {
            Ok(())
        } else {
            Err(BenchError::Peer(format!("a peer failed: {status}")))
        }
    };
    for (child, _) in &mut peers[consumers..] {
        wait(child)?;
    }
    // Every producer is done: one stop message per consumer (each consumer
    // stops at the first it takes, so each takes exactly one).
    for _ in 0..consumers {
        mbx.send_timeout(STOP.to_le_bytes().repeat(2), Duration::from_secs(30))
            .map_err(|e| BenchError::Peer(format!("stopping the consumers: {e}")))?;
    }
    for (child, out) in peers.drain(..consumers) {
        let mut child = child;
        wait(&mut child)?;
        for l in out.lines().map_while(Result::ok) {
            if let Some(rest) = l.strip_prefix("done ") {
                let mut w = rest.split(' ').map(|x| x.parse::<u64>().unwrap_or(0));
                received += w.next().unwrap_or(0);
                last = last.max(w.next().unwrap_or(0));
            }
        }
    }
    let _ = mbx.remove();
    let sent = per * u64::from(cfg.producers);
    if received != sent {
        return Err(BenchError::Verify(format!(
            "the consumers received {received} messages of {sent}"
        )));
    }
    Ok(sent as f64 / (last.saturating_sub(go).max(1) as f64 / 1e9))
}

/// The peer processes of [`run`]: `produce|consume NAME ID COUNT SIZE BACKEND WAIT`.
pub fn peer_main(args: &[String]) -> Result<(), BenchError> {
    // SAFETY: PR_SET_PDEATHSIG takes a signal number; the peer dies with
    // the measurer.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) };
    let [role, name, id, count, size, backend, wait] = args else {
        return Err(BenchError::Peer(format!("bad peer arguments {args:?}")));
    };
    let parse = |s: &str| {
        s.parse::<u64>()
            .map_err(|_| BenchError::Peer(format!("bad number {s}")))
    };
    let (id, count, size) = (parse(id)?, parse(count)?, parse(size)? as usize);
    let backend: Backend = backend
        .parse()
        .map_err(|e: hwlink_drivers::MapError| BenchError::Peer(e.to_string()))?;
    let access = if role == "produce" {
        Access::Send
    } else {
        Access::Recv
    };
    let mut mbx = MailboxBuilder::new()
        .backend(backend)
        .wait(wait.parse::<WaitStrategy>().map_err(BenchError::Peer)?)
        .open(name, access)
        .map_err(|e| BenchError::Link(e.to_string()))?;
    println!("ready");
    let mut go = String::new();
    let _ = std::io::stdin().read_line(&mut go);
    let mut buf = vec![0u8; size];
    if role == "produce" {
        for seq in 0..count {
            buf[..8].copy_from_slice(&id.to_le_bytes());
            buf[8..16].copy_from_slice(&seq.to_le_bytes());
            mbx.send(&buf[..])
                .map_err(|e| BenchError::Peer(format!("send: {e}")))?;
        }
        return Ok(());
    }
    let mut order = Order::default();
    let (mut n, mut last, mut since) = (0u64, 0u64, false);
    let read = |m: hwlink::ShmSlice<'_>, _| {
        let mut b = [0u8; 16];
        m.read_at(0, &mut b);
        let word = |k: usize| u64::from_le_bytes(b[k..k + 8].try_into().expect("8 bytes"));
        (word(0), word(8))
    };
    loop {
        // The clock is read only when the mailbox is found empty after a
        // message (so after the last one, before the stop message comes),
        // not once per message: the queue's threads read none.
        let got = match mbx.try_recv_with(read) {
            Err(RecvError::Empty) => {
                if since {
                    last = monotonic_ns();
                    since = false;
                }
                mbx.recv_with(read)
            }
            other => other,
        };
        let (producer, seq) = got.map_err(|e: RecvError| BenchError::Peer(format!("recv: {e}")))?;
        if producer == STOP {
            break;
        }
        order.check(producer, seq).map_err(BenchError::Verify)?;
        n += 1;
        since = true;
    }
    if since {
        last = monotonic_ns();
    }
    println!("done {n} {last}");
    Ok(())
}

/// The order check both sides' consumers make on every message: each
/// producer's numbers only grow.
#[derive(Default)]
struct Order {
    last: Vec<Option<u64>>,
}

impl Order {
    fn check(&mut self, producer: u64, seq: u64) -> Result<(), String> {
        let p = usize::try_from(producer)
            .ok()
            .filter(|&p| p < 1 << 16)
            .ok_or_else(|| format!("message from unknown producer {producer}"))?;
        if p >= self.last.len() {
            self.last.resize(p + 1, None);
        }
        match self.last[p].replace(seq) {
            Some(prev) if seq <= prev => Err(format!("producer {p}: message {seq} after {prev}")),
            _ => Ok(()),
        }
    }
}

/// The same traffic through crossbeam's `ArrayQueue` between threads:
/// 64-byte arrays by value for messages of up to 64 bytes, boxed slices
/// for larger ones. Consumers check the order as the mailbox's do.
fn array_queue_round(cfg: &MpmcConfig) -> f64 {
    fn words(m: &[u8]) -> (u64, u64) {
        let word = |k: usize| u64::from_le_bytes(m[k..k + 8].try_into().expect("8 bytes"));
        (word(0), word(8))
    }
    if cfg.size <= 64 {
        queue_round(
            cfg,
            |p, seq, _| {
                let mut m = [0u8; 64];
                m[..8].copy_from_slice(&p.to_le_bytes());
                m[8..16].copy_from_slice(&seq.to_le_bytes());
                m
            },
            |m| words(&m[..]),
        )
    } else {
        queue_round(
            cfg,
            |p, seq, size| {
                let mut m = vec![0u8; size].into_boxed_slice();
                m[..8].copy_from_slice(&p.to_le_bytes());
                m[8..16].copy_from_slice(&seq.to_le_bytes());
                m
            },
            |m| words(&m[..]),
        )
    }
}

fn queue_round<T: Send + 'static>(
    cfg: &MpmcConfig,
    make: fn(u64, u64, usize) -> T,
    words: fn(&T) -> (u64, u64),
) -> f64 {
    let q = Arc::new(ArrayQueue::<T>::new(cfg.capacity as usize));
    let per = cfg.messages / u64::from(cfg.producers);
    let total = per * u64::from(cfg.producers);
    let taken = Arc::new(AtomicU64::new(0));
    let start = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    for p in 0..cfg.producers {
        let (q, start) = (q.clone(), start.clone());
        let size = cfg.size;
        threads.push(std::thread::spawn(move || {
            while !start.load(Ordering::Acquire) {
                std::hint::spin_loop();
            }
            let backoff = crossbeam_utils::Backoff::new();
            for seq in 0..per {
                let mut item = make(u64::from(p), seq, size);
                while let Err(back) = q.push(item) {
                    item = back;
                    backoff.snooze();
                }
                backoff.reset();
            }
        }));
    }
    for _ in 0..cfg.consumers {
        let (q, start, taken) = (q.clone(), start.clone(), taken.clone());
        threads.push(std::thread::spawn(move || {
            while !start.load(Ordering::Acquire) {
                std::hint::spin_loop();
            }
            let backoff = crossbeam_utils::Backoff::new();
            let mut order = Order::default();
            while taken.load(Ordering::Relaxed) < total {
                match q.pop() {
                    Some(m) => {
                        let (p, seq) = words(&m);
                        if let Err(e) = order.check(p, seq) {
                            panic!("ArrayQueue: {e}");
                        }
                        taken.fetch_add(1, Ordering::Relaxed);
                        backoff.reset();
                    }
                    None => backoff.snooze(),
                }
            }
        }));
    }
    let t0 = Instant::now();
    start.store(true, Ordering::Release);
    for t in threads {
        let _ = t.join();
    }
    total as f64 / t0.elapsed().as_secs_f64()
}

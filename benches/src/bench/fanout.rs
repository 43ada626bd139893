//! The fan-out workload: one publisher (this process), N subscriber processes, every message to every subscriber; latency to the last subscriber and throughput.
//!
//! The publisher spawns N subscriber processes and reaches them through one
//! of the fan-out transports: an hwlink topic (each message written once
//! into shared memory, read in place by every subscriber), one hwlink link
//! per subscriber, one pipe per subscriber or one Unix datagram socketpair
//! per subscriber (the publisher sends each message on every one). Each
//! subscriber also has a back channel to the publisher for its answers: an
//! hwlink link (hwlink rows), a pipe (`pipe`) or its own socket
//! (`unix-dgram`).
//!
//! Every subscriber reads all of every message: the hwlink rows in place
//! (`recv_with`), the kernel rows with `read`/`recv` into a buffer; each
//! then sums every 8-byte word of the body, and checks the sum and the
//! sequence number (every message, once, in order).
//!
//! Latency, one message in flight: the publisher reads CLOCK_MONOTONIC
//! just before it sends (for a topic, before it loans the slot); each
//! subscriber reads the same clock once it has read the whole message and
//! sends that time back on its back channel. The latency of a message is
//! the latest subscriber's time minus the send time: end to end to the
//! last subscriber, one way, nothing subtracted. Both processes are on one
//! machine, and CLOCK_MONOTONIC is one clock for every CPU of it. The
//! publisher sends the next message only when every answer is in, and it
//! also records the time until the last answer arrived (the round trip
//! through the slowest subscriber and its back channel).
//!
//! Throughput: the publisher sends for a while with no answers asked
//! (topics under `Backpressure::Block`, so it waits for the slowest
//! subscriber; pipes and sockets block when full), then the stop message,
//! which every subscriber answers with the count it received and checked.
//! Messages per second run from the first send to the last of those
//! answers.

use super::fd::{self, FdChannel};
use super::hw::{builder, link_capacity, link_err};
use super::session::{collect_report, report_stream, session_name, Peers};
use super::{
    cpu_time_ns, fill, BenchError, Launcher, Mechanism, Options, PeerSpec, Transport, Workload,
    STOP,
};
use hwlink::{
    Backpressure, LinkBuilder, Publisher, Receiver, Sender, ShmSlice, Subscriber, TopicBuilder,
    WaitStrategy,
};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// Subscriber processes measured when none are given.
pub const DEFAULT_SUBSCRIBERS: [usize; 3] = [1, 2, 4];

/// Most subscriber processes of one fan-out.
pub const MAX_SUBSCRIBERS: usize = 64;

/// Set in a message's sequence word when every subscriber must answer it
/// with the time it had the message (the latency phase).
const ANSWER: u64 = 1 << 62;

/// How long the publisher waits for its subscribers to attach.
const ATTACH_PATIENCE: Duration = Duration::from_secs(10);

/// Bytes a subscriber reads from shared memory at a time when it sums a
/// message in place.
const SUM_CHUNK: usize = 4096;

/// What one fan-out measurement found.
#[derive(Clone, Debug, Default)]
pub struct FannedOut {
    /// Nanoseconds from each timed send to the moment the last subscriber
    /// had read the whole message (CLOCK_MONOTONIC in both processes).
    pub latency: Vec<u64>,
    /// Nanoseconds from each timed send to the last subscriber's answer
    /// reaching the publisher.
    pub answered: Vec<u64>,
    /// Messages sent while streaming.
    pub messages: u64,
    /// Publisher's time from the first streamed send until every
    /// subscriber had answered the stop message.
    pub elapsed_ns: u64,
    /// Messages each subscriber received and checked, in all (warm-up,
    /// timed and streamed): each equals `sent`.
    pub delivered: Vec<u64>,
    /// Messages the publisher sent in all, the stop message aside.
    pub sent: u64,
}

impl FannedOut {
    /// Adds another session's figures.
    pub fn add(&mut self, o: FannedOut) {
        self.latency.extend(o.latency);
        self.answered.extend(o.answered);
        self.messages += o.messages;
        self.elapsed_ns += o.elapsed_ns;
        self.delivered.extend(o.delivered);
        self.sent += o.sent;
    }
    /// Messages per second, every subscriber receiving each one.
    pub fn msgs_per_s(&self) -> f64 {
        self.messages as f64 * 1e9 / self.elapsed_ns.max(1) as f64
    }
}

/// Why `m` runs only in the fan-out workload.
pub(super) fn only(m: Mechanism) -> BenchError {
    BenchError::Unsupported(format!(
        "{m} is fan-out only (one publisher, many subscribers): run it with --workloads fanout"
    ))
}

/// How a mechanism reaches the subscribers.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// One topic, its ends waiting as given.
    Topic(WaitStrategy),
    /// One busy-polling hwlink link per subscriber.
    Links,
    /// One descriptor channel per subscriber.
    Fds(fd::Kind),
}

fn kind_of(m: Mechanism) -> Result<Kind, BenchError> {
    match m {
        Mechanism::HwlinkTopic => Ok(Kind::Topic(WaitStrategy::BusyPoll)),
        Mechanism::HwlinkTopicPark => Ok(Kind::Topic(WaitStrategy::SpinPark)),
        Mechanism::HwlinkPoll => Ok(Kind::Links),
        Mechanism::Pipe => Ok(Kind::Fds(fd::Kind::Bytes)),
        Mechanism::UnixDgram => Ok(Kind::Fds(fd::Kind::Datagrams)),
        other => Err(BenchError::Unsupported(format!(
            "the fan-out runs hwlink-topic, hwlink-topic-park, hwlink-poll (a link per subscriber), pipe and unix-dgram, not {other}"
        ))),
    }
}

/// CLOCK_MONOTONIC in nanoseconds: one clock for every process on this
/// machine.
fn mono_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: the pointer is to our timespec, which the call fills.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Adds the little-endian 8-byte words of `bytes` to `acc` (a short last
/// word padded with zeros). Reads every byte; cheap enough that the
/// transport, not the sum, shows in the figures.
fn sum_words(acc: u64, bytes: &[u8]) -> u64 {
    let words = bytes.chunks_exact(8);
    let tail = words.remainder();
    let acc = words.fold(acc, |a, w| {
        a.wrapping_add(u64::from_le_bytes(w.try_into().expect("8 bytes")))
    });
    if tail.is_empty() {
        return acc;
    }
    let mut last = [0u8; 8];
    last[..tail.len()].copy_from_slice(tail);
    acc.wrapping_add(u64::from_le_bytes(last))
}

/// A message's (sequence word, sum of its body) from a buffer.
fn read_buf(buf: &[u8]) -> (u64, u64) {
    (super::seq_of(buf), sum_words(0, &buf[8..]))
}

/// A message's (sequence word, sum of its body), read in place from shared
/// memory a chunk at a time.
fn read_shm(m: ShmSlice<'_>) -> (u64, u64) {
    let mut chunk = [0u8; SUM_CHUNK];
    let seq = super::seq_of_shm(m);
    let mut sum = 0;
    let mut at = 8;
    while at < m.len() {
        let n = (m.len() - at).min(SUM_CHUNK);
        m.read_at(at, &mut chunk[..n]);
        sum = sum_words(sum, &chunk[..n]);
        at += n;
    }
    (seq, sum)
}

/// The message every send carries: message 0's pattern, its first word
/// replaced by each send's sequence word. Written whole at every send.
fn template(size: usize) -> Vec<u8> {
    let mut m = vec![0u8; size];
    fill(&mut m, 0);
    m
}

/// The link of subscriber `k`'s answers.
fn answer_link(spec: &PeerSpec, k: usize, wait: WaitStrategy) -> LinkBuilder {
    LinkBuilder::new(format!("{}-k{k}", spec.name))
        .capacity(4)
        .slot_size(8)
        .backend(spec.backend)
        .wait(wait)
        .ready_timeout(Duration::from_secs(5))
}

/// The publisher's side: how a message reaches every subscriber, and how
/// their answers come back.
// One per run, on the measured path: kept inline, not behind a box.
#[allow(clippy::large_enum_variant)]
enum Fan {
    /// One topic; answers on a link per subscriber.
    Topic {
        publisher: Publisher,
        answers: Vec<Receiver>,
    },
    /// A link per subscriber each way.
    Links {
        out: Vec<Sender>,
        answers: Vec<Receiver>,
    },
    /// A descriptor channel per subscriber (both ways).
    Fds(Vec<FdChannel>),
}

impl Fan {
    /// Sends `msg` to every subscriber: loaned and copied in once (topic),
    /// or sent on each subscriber's channel in turn.
    fn send_all(&mut self, msg: &[u8]) -> Result<(), BenchError> {
        match self {
            Fan::Topic { publisher, .. } => {
                let mut loan = publisher.loan(msg.len()).map_err(link_err)?;
                loan.copy_from(msg);
                loan.publish();
            }
            Fan::Links { out, .. } => {
                for tx in out {
                    tx.send(msg).map_err(link_err)?;
                }
            }
            Fan::Fds(chans) => {
                for c in chans {
                    c.send(msg)?;
                }
            }
        }
        Ok(())
    }

    /// Subscriber `k`'s next answer.
    fn answer(&mut self, k: usize) -> Result<u64, BenchError> {
        let mut b = [0u8; 8];
        match self {
            Fan::Topic { answers, .. } | Fan::Links { answers, .. } => {
                let n = answers[k].recv_into(&mut b).map_err(link_err)?;
                if n != b.len() {
                    return Err(BenchError::Verify(format!(
                        "subscriber {k} answered with {n} bytes, expected 8"
                    )));
                }
            }
            Fan::Fds(chans) => chans[k].recv(&mut b)?,
        }
        Ok(u64::from_le_bytes(b))
    }
}

/// A subscriber's side.
// One per process, on the measured path: kept inline, not behind a box.
#[allow(clippy::large_enum_variant)]
enum Sink {
    Topic { sub: Subscriber, answers: Sender },
    Link { rx: Receiver, answers: Sender },
    Fd { chan: FdChannel, buf: Vec<u8> },
}

impl Sink {
    /// Waits for the next message and reads all of it: (sequence word,
    /// sum of the body).
    fn next(&mut self, size: usize) -> Result<(u64, u64), BenchError> {
        let in_place = |m: ShmSlice<'_>| {
            if m.len() != size {
                return Err(BenchError::Verify(format!(
                    "received {} bytes, expected {size}",
                    m.len()
                )));
            }
            Ok(read_shm(m))
        };
        match self {
            Sink::Topic { sub, .. } => sub.recv_with(in_place).map_err(link_err)?,
            Sink::Link { rx, .. } => rx.recv_with(in_place).map_err(link_err)?,
            Sink::Fd { chan, buf } => {
                chan.recv(buf)?;
                Ok(read_buf(buf))
            }
        }
    }

    /// Sends `v` to the publisher.
    fn answer(&mut self, v: u64) -> Result<(), BenchError> {
        let b = v.to_le_bytes();
        match self {
            Sink::Topic { answers, .. } | Sink::Link { answers, .. } => {
                answers.send(&b).map_err(link_err)
            }
            Sink::Fd { chan, .. } => chan.send(&b),
        }
    }
}

/// The CPU of subscriber `k`: the subscribers alternate between the pair's
/// second CPU and its first (the publisher's), second first.
fn cpu_of(opts: &Options, k: usize) -> Option<usize> {
    opts.cpus.map(|(a, b)| if k % 2 == 0 { b } else { a })
}

/// Measures a fan-out of `size`-byte messages to `subscribers` fresh
/// subscriber processes: a warm-up of `warmup` messages one at a time,
/// then timed messages one at a time until `budget` has passed or
/// `max_count` were timed (at least one), then a stream for `duration`.
/// The publisher runs on the first CPU of `opts.cpus`; the subscribers
/// alternate between the second and the first.
#[allow(clippy::too_many_arguments)]
pub fn fanout(
    mechanism: Mechanism,
    size: usize,
    subscribers: usize,
    opts: &Options,
    warmup: usize,
    budget: Duration,
    max_count: usize,
    duration: Duration,
    launch: Launcher<'_>,
) -> Result<FannedOut, BenchError> {
    let kind = kind_of(mechanism)?;
    if size < 8 {
        return Err(BenchError::Unsupported(
            "messages must be at least 8 bytes (the sequence number); pick a larger size".into(),
        ));
    }
    if !(1..=MAX_SUBSCRIBERS).contains(&subscribers) {
        return Err(BenchError::Unsupported(format!(
            "{subscribers} subscribers: the fan-out takes 1 to {MAX_SUBSCRIBERS}"
        )));
    }
    let base = PeerSpec {
        mechanism,
        workload: Workload::Stream,
        size,
        backend: opts.backend,
        cpu: None,
        name: session_name(),
        fds: Vec::new(),
        id: -1,
        stage: 0,
        warmup: 0,
        subscriber: None,
    };
    let mut peers = Peers::pinned_to(opts.cpus.map(|c| c.0))?;
    // Each subscriber's inherited descriptors (descriptor kinds only).
    let mut theirs: Vec<Vec<OwnedFd>> = Vec::new();
    let mut fan = match kind {
        Kind::Topic(wait) => Fan::Topic {
            publisher: TopicBuilder::new(&base.name)
                .capacity(link_capacity(size))
                .slot_size(size as u32)
                .max_subscribers(subscribers as u32)
                .backpressure(Backpressure::Block)
                .backend(opts.backend)
                .wait(wait)
                .publish()
                .map_err(link_err)?,
            answers: answer_receivers(&base, subscribers, wait)?,
        },
        Kind::Links => Fan::Links {
            out: (0..subscribers)
                .map(|k| {
                    builder(&base, &format!("d{k}"))
                        .create_sender()
                        .map_err(link_err)
                })
                .collect::<Result<_, _>>()?,
            answers: answer_receivers(&base, subscribers, WaitStrategy::BusyPoll)?,
        },
        Kind::Fds(fd_kind) => {
            let mut chans = Vec::new();
            for _ in 0..subscribers {
                let (mine, given) = descriptor_channel(fd_kind, size)?;
                chans.push(mine);
                theirs.push(given);
            }
            Fan::Fds(chans)
        }
    };
    for k in 0..subscribers {
        let mut spec = base.clone();
        spec.subscriber = Some(k);
        spec.cpu = cpu_of(opts, k);
        let give = theirs.get_mut(k).map(std::mem::take).unwrap_or_default();
        spec.fds = give.iter().map(AsRawFd::as_raw_fd).collect();
        peers.spawn(&spec, launch, "spawning a fan-out subscriber")?;
        // The subscriber has its copies: closing ours makes a dead one
        // show as end of file.
        drop(give);
    }
    if let Fan::Topic { publisher, .. } = &fan {
        // A topic delivers only to those attached: start with all of them.
        let deadline = Instant::now() + ATTACH_PATIENCE;
        while publisher.subscribers() < subscribers {
            if Instant::now() > deadline {
                return Err(BenchError::Peer(format!(
                    "{} of {subscribers} subscribers attached to the topic in {ATTACH_PATIENCE:?}",
                    publisher.subscribers()
                )));
            }
            std::thread::sleep(Duration::from_micros(200));
        }
    }

    let mut msg = template(size);
    let mut seq = 0u64;
    // One message in flight: (one way to the last subscriber, until the
    // last answer), in nanoseconds.
    let mut trip = |fan: &mut Fan, seq: u64| -> Result<(u64, u64), BenchError> {
        msg[..8].copy_from_slice(&(seq | ANSWER).to_le_bytes());
        let sent = mono_ns();
        fan.send_all(&msg)?;
        let mut last = 0;
        for k in 0..subscribers {
            last = last.max(fan.answer(k)?);
        }
        let answered = mono_ns();
        Ok((last.saturating_sub(sent), answered.saturating_sub(sent)))
    };
    // The first trip waits for the subscribers to start; the warm-up takes
    // at most a quarter of the budget after it.
    trip(&mut fan, seq)?;
    seq += 1;
    let warm_start = Instant::now();
    while seq < warmup as u64 && warm_start.elapsed() < budget / 4 {
        trip(&mut fan, seq)?;
        seq += 1;
    }
    let cap = max_count.min(1 << 20);
    let (mut latency, mut answered) = (Vec::with_capacity(cap), Vec::with_capacity(cap));
    let start = Instant::now();
    while latency.is_empty() || (latency.len() < max_count && start.elapsed() < budget) {
        let (one_way, back) = trip(&mut fan, seq)?;
        latency.push(one_way);
        answered.push(back);
        seq += 1;
    }

    // Streaming: no answers until the stop message.
    let first = seq;
    let check_every = if size >= 64 << 10 { 1 } else { 16 };
    let start = Instant::now();
    loop {
        msg[..8].copy_from_slice(&seq.to_le_bytes());
        fan.send_all(&msg)?;
        seq += 1;
        if seq % check_every == 0 && start.elapsed() >= duration {
            break;
        }
    }
    peers.ending.store(true, Ordering::SeqCst);
    msg[..8].copy_from_slice(&STOP.to_le_bytes());
    fan.send_all(&msg)?;
    let mut delivered = Vec::with_capacity(subscribers);
    for k in 0..subscribers {
        delivered.push(fan.answer(k)?);
    }
    let elapsed_ns = start.elapsed().as_nanos() as u64;
    for (k, child) in peers.children.iter_mut().enumerate() {
        let (msgs, _, _) = collect_report(child, Ok(()))?;
        if msgs != seq || delivered[k] != seq {
            return Err(BenchError::Verify(format!(
                "subscriber {k} received {msgs} messages (answered {}), the publisher sent {seq}",
                delivered[k]
            )));
        }
    }
    Ok(FannedOut {
        latency,
        answered,
        messages: seq - first,
        elapsed_ns,
        delivered,
        sent: seq,
    })
}

/// The answer links, created here and opened by the subscribers.
fn answer_receivers(
    base: &PeerSpec,
    subscribers: usize,
    wait: WaitStrategy,
) -> Result<Vec<Receiver>, BenchError> {
    (0..subscribers)
        .map(|k| {
            answer_link(base, k, wait)
                .create_receiver()
                .map_err(link_err)
        })
        .collect()
}

/// One subscriber's descriptor channel: the publisher's end, and the
/// descriptors the subscriber inherits ([message read end, answer write
/// end] for a pipe pair; its socket for datagrams).
fn descriptor_channel(
    kind: fd::Kind,
    size: usize,
) -> Result<(FdChannel, Vec<OwnedFd>), BenchError> {
    match kind {
        fd::Kind::Bytes => {
            let (down_r, down_w) = fd::pipe()?;
            let (up_r, up_w) = fd::pipe()?;
            hold_a_message(&down_w, size);
            let (rd, wr) = (up_r.as_raw_fd(), down_w.as_raw_fd());
            let chan = FdChannel::new(rd, wr, kind, vec![up_r, down_w]);
            Ok((chan, vec![down_r, up_w]))
        }
        fd::Kind::Datagrams => {
            let (a, b) = fd::socketpair(libc::SOCK_DGRAM)?;
            // Skipped with the reason when the kernel refuses a datagram
            // of this size even after asking for larger buffers.
            fd::probe_datagram(&a, &b, size, "Unix datagram")?;
            // Room for a few messages each way (forced past
            // net.core.wmem_max when root).
            fd::grow_buffers(&a, &b, 4 * (size + 1024));
            let fd = a.as_raw_fd();
            Ok((FdChannel::new(fd, fd, kind, vec![a]), vec![b]))
        }
    }
}

/// Asks for a pipe that holds a whole `size`-byte message (up to
/// fs.pipe-max-size; a refusal leaves the default 64 KiB): one write and
/// one read per message and reader, rather than a wake-up per 64 KiB,
/// which would measure the scheduler, not the copies.
fn hold_a_message(pipe: &OwnedFd, size: usize) {
    let max = std::fs::read_to_string("/proc/sys/fs/pipe-max-size")
        .ok()
        .and_then(|s| s.trim().parse::<usize>().ok())
        .unwrap_or(1 << 20);
    let want = size.min(max).min(i32::MAX as usize) as libc::c_int;
    if want > 64 << 10 {
        // SAFETY: fcntl on a pipe we own; F_SETPIPE_SZ takes a size. A
        // refusal is not an error: the pipe keeps its size.
        unsafe { libc::fcntl(pipe.as_raw_fd(), libc::F_SETPIPE_SZ, want) };
    }
}

/// A fan-out subscriber (`k`, from 0): receives and reads every message,
/// checks its sequence number and the sum of its body, answers the
/// messages that ask with the time it had read them, and the stop message
/// with its count; then prints its report line.
pub(super) fn subscriber_main(spec: &PeerSpec, k: usize) -> Result<(), BenchError> {
    let kind = kind_of(spec.mechanism)?;
    let mut sink = match kind {
        Kind::Topic(wait) => Sink::Topic {
            sub: TopicBuilder::new(&spec.name)
                .backend(spec.backend)
                .wait(wait)
                .subscribe()
                .map_err(link_err)?,
            answers: answer_link(spec, k, wait).open_sender().map_err(link_err)?,
        },
        Kind::Links => Sink::Link {
            rx: builder(spec, &format!("d{k}"))
                .open_receiver()
                .map_err(link_err)?,
            answers: answer_link(spec, k, WaitStrategy::BusyPoll)
                .open_sender()
                .map_err(link_err)?,
        },
        Kind::Fds(fd_kind) => {
            let chan = match fd_kind {
                fd::Kind::Bytes => {
                    let fds = fd::inherited(spec, 2)?;
                    let (rd, wr) = (fds[0].as_raw_fd(), fds[1].as_raw_fd());
                    FdChannel::new(rd, wr, fd_kind, fds)
                }
                fd::Kind::Datagrams => {
                    let fds = fd::inherited(spec, 1)?;
                    let fd = fds[0].as_raw_fd();
                    FdChannel::new(fd, fd, fd_kind, fds)
                }
            };
            Sink::Fd {
                chan,
                buf: vec![0u8; spec.size],
            }
        }
    };
    let body = read_buf(&template(spec.size)).1;
    let mut next = 0u64;
    let mut started: Option<(Instant, u64)> = None;
    loop {
        let (word, sum) = sink.next(spec.size)?;
        let had = mono_ns();
        if started.is_none() {
            started = Some((Instant::now(), cpu_time_ns()));
        }
        if word == STOP {
            sink.answer(next)?;
            break;
        }
        let seq = word & !ANSWER;
        if seq != next {
            return Err(BenchError::Verify(format!(
                "subscriber {k} received message {seq}, expected {next}"
            )));
        }
        if sum != body {
            return Err(BenchError::Verify(format!(
                "subscriber {k}: message {seq}'s content is not what was sent"
            )));
        }
        if word & ANSWER != 0 {
            sink.answer(had)?;
        }
        next += 1;
    }
    report_stream(next, started);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_every_byte() {
        let m = template(1000);
        let (seq, sum) = read_buf(&m);
        assert_eq!(seq, 0);
        let mut changed = m.clone();
        changed[999] ^= 1;
        assert_ne!(read_buf(&changed).1, sum, "the short last word counts");
        changed[999] ^= 1;
        changed[8] ^= 0x80;
        assert_ne!(read_buf(&changed).1, sum);
        // The sequence word is not part of the sum.
        changed[8] ^= 0x80;
        changed[..8].copy_from_slice(&(7 | ANSWER).to_le_bytes());
        assert_eq!(read_buf(&changed), (7 | ANSWER, sum));
    }

    #[test]
    fn subscribers_alternate_from_the_second_cpu() {
        let o = Options {
            backend: hwlink_drivers::Backend::Auto,
            cpus: Some((0, 1)),
        };
        let cpus: Vec<_> = (0..4).map(|k| cpu_of(&o, k)).collect();
        assert_eq!(cpus, [Some(1), Some(0), Some(1), Some(0)]);
    }

    #[test]
    fn only_the_fan_out_transports() {
        assert!(kind_of(Mechanism::Tcp).is_err());
        for m in Mechanism::ALL.into_iter().filter(|m| m.fans_out()) {
            assert!(kind_of(m).is_ok(), "{m}");
        }
    }
}

//! The pipeline workload: four processes in a chain 0 → 1 → 2 → 3 → 0, measured end to end by stage 0.
//!
//! Stage 0 (this process) is the source and the sink: it spawns stages 1 to
//! 3 as peer processes, each of which receives a message, checks that its
//! sequence number is the next one expected and forwards it unchanged.
//! Stage 0 first times messages one at a time through the four hops, then
//! streams with a window of messages in flight, verifying at the sink that
//! every message came back exactly once, in order and intact.

use super::session::{collect_report, session_name, Peers};
use super::{
    cpu_time_ns, eventfd, fd, fill, hw, mq, seq_of, uring, verify, BenchError, Launcher, Mechanism,
    Options, PeerSpec, Transport, Workload, STOP,
};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// Processes in the chain, the measuring one included.
pub const STAGES: usize = 4;

/// Most messages in flight while streaming through the chain.
const MAX_WINDOW: usize = 64;

/// What one pipeline measurement found.
#[derive(Clone, Debug, Default)]
pub struct Pipelined {
    /// Nanoseconds of each end-to-end trip (four hops), one message in flight.
    pub samples: Vec<u64>,
    /// Messages streamed with `window` in flight, each verified at the sink.
    pub messages: u64,
    /// Stage 0's time from the first streamed send to the last receive.
    pub elapsed_ns: u64,
    /// Messages in flight while streaming.
    pub window: usize,
}

impl Pipelined {
    /// Messages per second through the whole chain while streaming.
    pub fn msgs_per_s(&self) -> f64 {
        self.messages as f64 * 1e9 / self.elapsed_ns.max(1) as f64
    }
}

/// How the chain's hops are made for a mechanism.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Links,
    Fds,
    Mailboxes,
    /// Descriptor hops read and written through io_uring.
    Uring,
    /// Shared-memory lanes with eventfd doorbells.
    Eventfd,
    PosixMq,
    SysvMq,
}

fn kind_of(m: Mechanism) -> Result<Kind, BenchError> {
    match m {
        Mechanism::HwlinkPoll
        | Mechanism::HwlinkPacked
        | Mechanism::HwlinkSpinPark
        | Mechanism::HwlinkPark => Ok(Kind::Links),
        Mechanism::Pipe
        | Mechanism::UnixStream
        | Mechanism::UnixDgram
        | Mechanism::UnixSeqpacket
        | Mechanism::Tcp => Ok(Kind::Fds),
        Mechanism::HwlinkMailbox => Ok(Kind::Mailboxes),
        Mechanism::UringPipe | Mechanism::UringUnix | Mechanism::UringUnixSqpoll => Ok(Kind::Uring),
        Mechanism::Eventfd => Ok(Kind::Eventfd),
        Mechanism::PosixMq => Ok(Kind::PosixMq),
        Mechanism::SysvMq => Ok(Kind::SysvMq),
        Mechanism::RingLamport => Err(BenchError::Unsupported(
            "the reference ring is measured in round trips and streams only".into(),
        )),
        Mechanism::Floor => Err(BenchError::Unsupported(
            "the floor is round trip only: two cache-line flags carry no payload".into(),
        )),
        Mechanism::HwlinkTopic | Mechanism::HwlinkTopicPark => Err(super::fanout::only(m)),
        Mechanism::HwlinkTyped => Err(BenchError::Unsupported(
            "a 64-byte struct's round trips and streams only, beside hwlink-poll's; each stage moves bytes as hwlink-poll's pipeline does"
                .into(),
        )),
        Mechanism::HwlinkZeroCopy => Err(BenchError::Unsupported(
            "each stage copies a message from one link to the next, which is hwlink-spin-park's pipeline"
                .into(),
        )),
        Mechanism::UnixEpoll
        | Mechanism::TokioUnix
        | Mechanism::EventfdEpoll
        | Mechanism::HwlinkSelectPoll
        | Mechanism::HwlinkSelectPark
        | Mechanism::HwlinkEpoll
        | Mechanism::HwlinkAsync => Err(not_piped(m)),
    }
}

/// Why a mechanism that compares ways of waiting has no pipeline.
fn not_piped(m: Mechanism) -> BenchError {
    BenchError::Unsupported(format!(
        "{m} compares ways of waiting, not transports: the pipeline runs the transports' own rows"
    ))
}

/// The descriptor mechanism of an io_uring mechanism's hops.
fn uring_hops(m: Mechanism) -> Mechanism {
    match m {
        Mechanism::UringPipe => Mechanism::Pipe,
        _ => Mechanism::UnixStream,
    }
}

/// Whether a descriptor mechanism's hops carry bytes or datagrams.
fn fd_kind(m: Mechanism) -> fd::Kind {
    match m {
        Mechanism::UnixDgram | Mechanism::UnixSeqpacket => fd::Kind::Datagrams,
        _ => fd::Kind::Bytes,
    }
}

/// One descriptor hop for `size`-byte messages: (write end, read end).
fn fd_hop(m: Mechanism, size: usize) -> Result<(OwnedFd, OwnedFd), BenchError> {
    let datagrams = |ty, what| -> Result<(OwnedFd, OwnedFd), BenchError> {
        let (a, b) = fd::socketpair(ty)?;
        fd::probe_datagram(&a, &b, size, what)?;
        // Room for the whole window on every hop (each datagram is charged
        // its payload plus about a kilobyte of bookkeeping), or the chain
        // deadlocks with every stage blocked in send.
        fd::grow_buffers(&a, &b, (MAX_WINDOW + 4) * (size + 1024));
        Ok((a, b))
    };
    match m {
        Mechanism::Pipe => fd::pipe().map(|(r, w)| (w, r)),
        Mechanism::UnixStream => fd::socketpair(libc::SOCK_STREAM),
        Mechanism::UnixDgram => datagrams(libc::SOCK_DGRAM, "Unix datagram"),
        Mechanism::UnixSeqpacket => datagrams(libc::SOCK_SEQPACKET, "Unix seqpacket"),
        Mechanism::Tcp => fd::tcp_pair(),
        other => unreachable!("{other} has no descriptor hops"),
    }
}

/// A stage's end over descriptor hops, `fds` = [read end, write end]:
/// plain system calls, or io_uring.
fn descriptor_end(
    m: Mechanism,
    kind: Kind,
    fds: Vec<OwnedFd>,
) -> Result<Box<dyn Transport>, BenchError> {
    let (rd, wr) = (fds[0].as_raw_fd(), fds[1].as_raw_fd());
    if kind == Kind::Uring {
        return uring::chain_end(m, rd, wr, fds);
    }
    Ok(Box::new(fd::FdChannel::new(rd, wr, fd_kind(m), fds)))
}

/// Messages in flight while streaming: few enough that every hop's buffer
/// holds them all, so no stage can block the one before it for ever.
fn window_for(size: usize) -> usize {
    let by_bytes = (64 * 1024) / size.max(1);
    (by_bytes.min(hw::link_capacity(size) as usize)).clamp(1, MAX_WINDOW)
}

/// The CPU of stage `k`: the stages go round-robin over the two CPUs.
fn cpu_of(opts: &Options, k: usize) -> Option<usize> {
    opts.cpus.map(|(a, b)| if k % 2 == 0 { a } else { b })
}

/// Measures the pipeline of `size`-byte messages with fresh stages: a
/// warm-up of `warmup` trips, end-to-end trips until `budget` has passed or
/// `max_count` were timed (at least one), then a stream with a window of
/// messages in flight for `duration`.
#[allow(clippy::too_many_arguments)]
pub fn pipeline(
    mechanism: Mechanism,
    size: usize,
    opts: &Options,
    warmup: usize,
    budget: Duration,
    max_count: usize,
    duration: Duration,
    launch: Launcher<'_>,
) -> Result<Pipelined, BenchError> {
    let kind = kind_of(mechanism)?;
    if mechanism == Mechanism::UringUnixSqpoll {
        let used = match opts.cpus {
            Some((a, b)) if a == b => 1,
            _ => 2,
        };
        uring::sqpoll_fits(STAGES, used)?;
    }
    if size < 8 {
        return Err(BenchError::Unsupported(
            "messages must be at least 8 bytes (the sequence number); pick a larger size".into(),
        ));
    }
    let mut base = PeerSpec {
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
    // The peer stages, once spawned.
    let mut chain = Peers::pinned_to(cpu_of(opts, 0))?;
    // Hop k carries messages from stage k to stage k + 1 (mod 4): its
    // write end, then its read end.
    let mut wr: Vec<Option<OwnedFd>> = Vec::new();
    let mut rd: Vec<Option<OwnedFd>> = Vec::new();
    let mut link_tx = None;
    // Stage 0's end, when it must exist before the other stages start (it
    // creates their hops), and the most messages one hop holds.
    let mut early: Option<Box<dyn Transport>> = None;
    let mut hop_holds = usize::MAX;
    // The eventfd lanes' descriptors (`full`, `empty` per lane) to hand out.
    let mut lanes: Vec<OwnedFd> = Vec::new();
    // The mailbox hops, removed when stage 0 is done with them.
    let _mailboxes = if kind == Kind::Mailboxes {
        hw::mailbox_chain(&base, STAGES)?
    } else {
        Vec::new()
    };
    match kind {
        Kind::Fds | Kind::Uring => {
            let hops = if kind == Kind::Uring {
                uring_hops(mechanism)
            } else {
                mechanism
            };
            for _ in 0..STAGES {
                let (w, r) = fd_hop(hops, size)?;
                wr.push(Some(w));
                rd.push(Some(r));
            }
        }
        Kind::Links => link_tx = Some(hw::chain_sender(&base, 0)?),
        Kind::Mailboxes => {}
        Kind::Eventfd => {
            let c = eventfd::chain_parent(&base, STAGES)?;
            (early, lanes, hop_holds) = (Some(c.end), c.lanes, c.holds);
        }
        Kind::PosixMq => {
            let (t, holds) = mq::posix_stage(&base, 0, STAGES)?;
            (early, hop_holds) = (Some(t), holds);
        }
        Kind::SysvMq => {
            let (t, id, holds) = mq::sysv_stage(&base, 0, STAGES)?;
            // One queue holds every hop.
            (early, base.id, hop_holds) = (Some(t), id, holds / STAGES);
        }
    }
    for k in 1..STAGES {
        let mut spec = base.clone();
        spec.stage = k;
        spec.cpu = cpu_of(opts, k);
        // Stage k gets the read end of hop k - 1 and the write end of hop
        // k; ours are closed once it has them.
        let give: Vec<OwnedFd> = match kind {
            Kind::Fds | Kind::Uring => vec![
                rd[k - 1].take().expect("each read end goes once"),
                wr[k].take().expect("each write end goes once"),
            ],
            Kind::Eventfd => lanes[2 * (k - 1)..2 * (k + 1)]
                .iter()
                .map(OwnedFd::try_clone)
                .collect::<Result<_, _>>()
                .map_err(|e| BenchError::io("dup of an eventfd", e))?,
            _ => Vec::new(),
        };
        spec.fds = give.iter().map(AsRawFd::as_raw_fd).collect();
        chain.spawn(&spec, launch, "spawning a pipeline stage")?;
        drop(give);
    }
    let mut t: Box<dyn Transport> = match kind {
        Kind::Fds | Kind::Uring => {
            let r = rd[STAGES - 1].take().expect("hop 3's read end");
            let w = wr[0].take().expect("hop 0's write end");
            descriptor_end(mechanism, kind, vec![r, w])?
        }
        Kind::Links => hw::chain_end(&base, 0, STAGES, link_tx.take().expect("created"))?,
        Kind::Mailboxes => hw::mailbox_chain_end(&base, 0, STAGES)?,
        Kind::Eventfd | Kind::PosixMq | Kind::SysvMq => early.take().expect("created"),
    };
    drop(lanes);

    let mut out = vec![0u8; size];
    let mut back = vec![0u8; size];
    let mut seq = 0u64;
    // One message in flight: warm-up, then timed trips.
    let mut trip = |t: &mut Box<dyn Transport>, seq: u64| -> Result<u64, BenchError> {
        fill(&mut out, seq);
        let start = Instant::now();
        t.send(&out)?;
        t.recv(&mut back)?;
        let ns = start.elapsed().as_nanos() as u64;
        verify(&back, seq)?;
        Ok(ns)
    };
    // At most a quarter of the budget after the first trip (a trip may
    // take milliseconds).
    trip(&mut t, seq)?;
    seq += 1;
    let warm_start = Instant::now();
    while seq < warmup as u64 && warm_start.elapsed() < budget / 4 {
        trip(&mut t, seq)?;
        seq += 1;
    }
    let mut samples = Vec::with_capacity(max_count.min(1 << 20));
    let start = Instant::now();
    while samples.is_empty() || (samples.len() < max_count && start.elapsed() < budget) {
        samples.push(trip(&mut t, seq)?);
        seq += 1;
    }

    // Many in flight: keep `window` messages in the chain until `duration`
    // has passed, then drain; the sink checks each one in turn.
    // At most twice what one hop holds: the chain then never fills every
    // hop at once, which would deadlock it.
    let window = window_for(size).min(hop_holds.saturating_mul(2)).max(1);
    let first = seq;
    let mut next_back = seq;
    let start = Instant::now();
    let mut sending = true;
    while sending || next_back < seq {
        while sending && seq - next_back < window as u64 {
            fill(&mut out, seq);
            t.send(&out)?;
            seq += 1;
            if seq % 16 == 0 && start.elapsed() >= duration {
                sending = false;
            }
        }
        t.recv(&mut back)?;
        verify(&back, next_back)?;
        next_back += 1;
    }
    let elapsed_ns = start.elapsed().as_nanos() as u64;

    // Stop: the stop message goes round the chain and comes back.
    chain.ending.store(true, Ordering::SeqCst);
    fill(&mut out, STOP);
    t.send(&out)?;
    t.recv(&mut back)?;
    if seq_of(&back) != STOP {
        return Err(BenchError::Verify(format!(
            "expected the stop message back, got message {}",
            seq_of(&back)
        )));
    }
    for (k, child) in chain.children.iter_mut().enumerate() {
        let (msgs, _, _) = collect_report(child, Ok(()))?;
        if msgs != seq {
            return Err(BenchError::Verify(format!(
                "stage {} forwarded {msgs} messages, stage 0 sent {seq}",
                k + 1
            )));
        }
    }
    Ok(Pipelined {
        samples,
        messages: seq - first,
        elapsed_ns,
        window,
    })
}

/// A peer stage (1 to 3): forwards every message to the next stage after
/// checking its sequence number, until the stop message, which it forwards
/// too; then prints its report line.
pub(super) fn stage_main(spec: &PeerSpec) -> Result<(), BenchError> {
    let k = spec.stage;
    if k >= STAGES {
        return Err(BenchError::PeerArgs(format!("no pipeline stage {k}")));
    }
    let mut t: Box<dyn Transport> = match kind_of(spec.mechanism)? {
        Kind::Links => {
            let tx = hw::chain_sender(spec, k)?;
            hw::chain_end(spec, k, STAGES, tx)?
        }
        kind @ (Kind::Fds | Kind::Uring) => {
            descriptor_end(spec.mechanism, kind, fd::inherited(spec, 2)?)?
        }
        Kind::Mailboxes => hw::mailbox_chain_end(spec, k, STAGES)?,
        Kind::Eventfd => eventfd::chain_child(spec, k)?,
        Kind::PosixMq => mq::posix_stage(spec, k, STAGES)?.0,
        Kind::SysvMq => mq::sysv_stage(spec, k, STAGES)?.0,
    };
    let mut buf = vec![0u8; spec.size];
    let mut next = 0u64;
    let mut started: Option<(Instant, u64)> = None;
    loop {
        t.recv(&mut buf)?;
        if started.is_none() {
            started = Some((Instant::now(), cpu_time_ns()));
        }
        let seq = seq_of(&buf);
        if seq != STOP && seq != next {
            return Err(BenchError::Verify(format!(
                "pipeline stage {k} received message {seq}, expected {next}"
            )));
        }
        t.send(&buf)?;
        if seq == STOP {
            break;
        }
        next += 1;
    }
    super::session::report_stream(next, started);
    Ok(())
}

//! One measurement: set up a channel, spawn and pin the peer, run a workload, collect both sides' figures.

use super::{
    async_rt, check, cpu_time_ns, eventfd, fanout, fd, fill, hw, hw_wait, lamport, mq, pipeline,
    uring, BenchError, CpuTotals, Mechanism, Options, RoundTrips, Streamed, Transport, Workload,
    STOP,
};
use crate::affinity::Pinned;
use hwlink::liveness::pin_to_cpu;
use hwlink_drivers::Backend;
use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What the peer needs to open its side, as passed on its command line.
#[derive(Clone, Debug)]
pub(crate) struct PeerSpec {
    pub mechanism: Mechanism,
    pub workload: Workload,
    pub size: usize,
    pub backend: Backend,
    pub cpu: Option<usize>,
    /// Base name of named objects (links, regions, queues).
    pub name: String,
    /// Inherited file descriptors.
    pub fds: Vec<i32>,
    /// A System V queue id.
    pub id: i64,
    /// The pipeline stage this peer runs (1 to 3); 0 outside the pipeline.
    pub stage: usize,
    /// Streams: messages that warm the channel up before the peer starts
    /// its clock and its count.
    pub warmup: u64,
    /// The fan-out subscriber this peer is (numbered from 0); None outside
    /// the fan-out.
    pub subscriber: Option<usize>,
}

impl PeerSpec {
    pub(super) fn to_args(&self) -> Vec<String> {
        let mut a = vec![
            "--mechanism".to_string(),
            self.mechanism.name().into(),
            "--workload".into(),
            self.workload.name().into(),
            "--size".into(),
            self.size.to_string(),
            "--backend".into(),
            self.backend.to_string(),
            "--name".into(),
            self.name.clone(),
            "--id".into(),
            self.id.to_string(),
        ];
        if let Some(c) = self.cpu {
            a.extend(["--cpu".into(), c.to_string()]);
        }
        if self.stage > 0 {
            a.extend(["--stage".into(), self.stage.to_string()]);
        }
        if self.warmup > 0 {
            a.extend(["--warmup".into(), self.warmup.to_string()]);
        }
        if let Some(k) = self.subscriber {
            a.extend(["--subscriber".into(), k.to_string()]);
        }
        if !self.fds.is_empty() {
            let fds: Vec<String> = self.fds.iter().map(i32::to_string).collect();
            a.extend(["--fds".into(), fds.join(",")]);
        }
        a
    }

    fn parse(args: &[String]) -> Result<PeerSpec, BenchError> {
        let bad = |s: String| BenchError::PeerArgs(s);
        let mut spec = PeerSpec {
            mechanism: Mechanism::Pipe,
            workload: Workload::RoundTrip,
            size: 8,
            backend: Backend::Auto,
            cpu: None,
            name: String::new(),
            fds: Vec::new(),
            id: -1,
            stage: 0,
            warmup: 0,
            subscriber: None,
        };
        let mut it = args.iter();
        while let Some(flag) = it.next() {
            let v = it
                .next()
                .ok_or_else(|| bad(format!("{flag} needs a value")))?;
            let num = |v: &str| {
                v.parse::<i64>()
                    .map_err(|e| bad(format!("{flag} {v}: {e}")))
            };
            match flag.as_str() {
                "--mechanism" => spec.mechanism = v.parse()?,
                "--workload" => {
                    spec.workload = match v.as_str() {
                        "round-trip" => Workload::RoundTrip,
                        "stream" => Workload::Stream,
                        _ => return Err(bad(format!("unknown workload {v}"))),
                    }
                }
                "--size" => spec.size = num(v)? as usize,
                "--backend" => spec.backend = v.parse().map_err(|e| bad(format!("{e}")))?,
                "--name" => spec.name = v.clone(),
                "--id" => spec.id = num(v)?,
                "--cpu" => spec.cpu = Some(num(v)? as usize),
                "--stage" => spec.stage = num(v)? as usize,
                "--warmup" => spec.warmup = num(v)? as u64,
                "--subscriber" => spec.subscriber = Some(num(v)? as usize),
                "--fds" => {
                    spec.fds = v
                        .split(',')
                        .map(|f| num(f).map(|n| n as i32))
                        .collect::<Result<_, _>>()?
                }
                other => return Err(bad(format!("unknown argument {other}"))),
            }
        }
        Ok(spec)
    }
}

/// The measuring side of a channel, before the peer is spawned.
pub(crate) struct ParentSide {
    pub transport: Box<dyn Transport>,
    /// Descriptors the peer inherits; closed here once it is spawned.
    pub child_fds: Vec<OwnedFd>,
    /// A System V queue id for the peer (-1: none).
    pub id: i64,
}

impl ParentSide {
    pub(crate) fn new(transport: impl Transport + 'static) -> ParentSide {
        ParentSide {
            transport: Box::new(transport),
            child_fds: Vec::new(),
            id: -1,
        }
    }
}

static SESSIONS: AtomicU32 = AtomicU32::new(0);

/// A unique base name for one session's named objects.
pub(super) fn session_name() -> String {
    format!(
        "hb{}-{}",
        std::process::id(),
        SESSIONS.fetch_add(1, Ordering::Relaxed)
    )
}

/// The pid in a session's name (`hb<pid>-<n>…`), if `name` is one.
fn session_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix("hb")?;
    let (pid, _) = rest.split_once('-')?;
    pid.parse().ok()
}

/// Removes the mailboxes that a killed `hwlink bench` left behind (a
/// mailbox outlives its creator by design, so `hwlink rm --stale` keeps
/// them): those named after a bench session whose process, the creator, is
/// gone, with no live process attached. Returns the regions removed.
pub fn remove_leftovers() -> Vec<String> {
    let Ok(all) = hwlink::admin::list() else {
        return Vec::new();
    };
    let mut removed = Vec::new();
    for r in all {
        let Some(m) = &r.mailbox else { continue };
        let named_by = r.name.strip_prefix("mbx.").and_then(session_pid);
        let left = named_by == Some(r.creator_pid)
            && !r.creator_alive
            && m.attachments.iter().all(|a| !a.alive);
        if left && hwlink::admin::remove(&r.name).is_ok() {
            removed.push(r.name);
        }
    }
    removed
}

fn setup_parent(spec: &PeerSpec, opts: &Options) -> Result<ParentSide, BenchError> {
    if spec.size < 8 {
        return Err(BenchError::Unsupported(
            "messages must be at least 8 bytes (the sequence number); pick a larger size".into(),
        ));
    }
    match spec.mechanism {
        Mechanism::HwlinkMailbox => hw::mailbox_parent(spec),
        Mechanism::HwlinkSelectPoll | Mechanism::HwlinkSelectPark => hw_wait::select_parent(spec),
        Mechanism::HwlinkEpoll => {
            hw_wait::probe_readiness(spec)?;
            hw::link_parent(spec)
        }
        Mechanism::HwlinkAsync => async_rt::hwlink_parent(spec),
        Mechanism::HwlinkPoll
        | Mechanism::HwlinkPacked
        | Mechanism::HwlinkSpinPark
        | Mechanism::HwlinkPark
        | Mechanism::HwlinkZeroCopy => hw::link_parent(spec),
        Mechanism::HwlinkTyped => hw::typed_parent(spec),
        Mechanism::Floor => hw::floor_parent(spec, opts),
        Mechanism::RingLamport => {
            if opts.cpus.is_some_and(|(a, b)| a == b) {
                return Err(BenchError::Unsupported(
                    "a busy-polling ring on one shared core measures only the scheduler; use two CPUs"
                        .into(),
                ));
            }
            lamport::parent(spec)
        }
        Mechanism::Pipe
        | Mechanism::UnixStream
        | Mechanism::UnixEpoll
        | Mechanism::UnixDgram
        | Mechanism::UnixSeqpacket
        | Mechanism::Tcp => fd::parent(spec),
        Mechanism::TokioUnix => async_rt::unix_parent(spec),
        Mechanism::Eventfd | Mechanism::EventfdEpoll => eventfd::parent(spec),
        Mechanism::PosixMq | Mechanism::SysvMq => mq::parent(spec),
        Mechanism::UringUnixSqpoll => {
            let used = match opts.cpus {
                Some((a, b)) if a == b => 1,
                _ => 2,
            };
            uring::sqpoll_fits(2, used)?;
            uring::parent(spec)
        }
        Mechanism::UringPipe | Mechanism::UringUnix => uring::parent(spec),
        Mechanism::HwlinkTopic | Mechanism::HwlinkTopicPark => Err(fanout::only(spec.mechanism)),
    }
}

fn open_child(spec: &PeerSpec) -> Result<Box<dyn Transport>, BenchError> {
    match spec.mechanism {
        Mechanism::HwlinkMailbox => hw::mailbox_child(spec),
        Mechanism::HwlinkSelectPoll | Mechanism::HwlinkSelectPark => hw_wait::select_child(spec),
        Mechanism::HwlinkEpoll => hw_wait::epoll_child(spec),
        Mechanism::HwlinkAsync => async_rt::hwlink_child(spec),
        Mechanism::HwlinkPoll
        | Mechanism::HwlinkPacked
        | Mechanism::HwlinkSpinPark
        | Mechanism::HwlinkPark
        | Mechanism::HwlinkZeroCopy => hw::link_child(spec),
        Mechanism::HwlinkTyped => hw::typed_child(spec),
        Mechanism::Floor => hw::floor_child(spec),
        Mechanism::RingLamport => lamport::child(spec),
        Mechanism::Pipe
        | Mechanism::UnixStream
        | Mechanism::UnixEpoll
        | Mechanism::UnixDgram
        | Mechanism::UnixSeqpacket
        | Mechanism::Tcp => fd::child(spec),
        Mechanism::TokioUnix => async_rt::unix_child(spec),
        Mechanism::Eventfd | Mechanism::EventfdEpoll => eventfd::child(spec),
        Mechanism::PosixMq | Mechanism::SysvMq => mq::child(spec),
        Mechanism::UringPipe | Mechanism::UringUnix | Mechanism::UringUnixSqpoll => {
            uring::child(spec)
        }
        Mechanism::HwlinkTopic | Mechanism::HwlinkTopicPark => Err(fanout::only(spec.mechanism)),
    }
}

/// A running session: this side of the channel and the peer process.
struct Session {
    transport: Box<dyn Transport>,
    child: Child,
    /// Set once this side no longer needs the peer (see [`watch_peer`]).
    ending: Arc<AtomicBool>,
    /// This thread's CPU mask before the session, restored after it.
    _pinned: Pinned,
    buf: super::AlignedBuf,
}

/// The command that runs the peer: given the peer's arguments, returns a
/// command that calls [`peer_main`] with them.
pub type Launcher<'a> = &'a dyn Fn(&[String]) -> Command;

impl Session {
    fn start(
        mechanism: Mechanism,
        workload: Workload,
        size: usize,
        warmup: u64,
        opts: &Options,
        launch: Launcher<'_>,
    ) -> Result<Session, BenchError> {
        let mut spec = PeerSpec {
            mechanism,
            workload,
            size,
            backend: opts.backend,
            cpu: opts.cpus.map(|c| c.1),
            name: session_name(),
            fds: Vec::new(),
            id: -1,
            stage: 0,
            warmup,
            subscriber: None,
        };
        // Pin first: an hwlink end records its CPU mask when it attaches,
        // and the peer uses it to tell whether the two share a core.
        let pinned = Pinned::to(opts.cpus.map(|c| c.0))
            .map_err(|e| BenchError::io(format!("pinning to CPU {:?}", opts.cpus), e))?;
        let side = setup_parent(&spec, opts)?;
        spec.fds = side.child_fds.iter().map(AsRawFd::as_raw_fd).collect();
        spec.id = side.id;
        let child = spawn_peer(&spec, launch, "spawning the peer process")?;
        // The peer has its copies: close ours, so that a dead peer shows as
        // end-of-file.
        drop(side.child_fds);
        let transport = side.transport;
        let mut buf = super::AlignedBuf::new(size);
        fill(&mut buf, 0);
        let ending = Arc::new(AtomicBool::new(false));
        watch_peer(child.id(), mechanism, Arc::clone(&ending));
        Ok(Session {
            transport,
            child,
            ending,
            _pinned: pinned,
            buf,
        })
    }

    /// Sends the stop message, waits for the peer and returns its report:
    /// (messages, elapsed ns, cpu ns).
    fn finish(mut self) -> Result<(u64, u64, u64), BenchError> {
        self.ending.store(true, Ordering::SeqCst);
        fill(&mut self.buf, STOP);
        let sent = self.transport.send(&self.buf);
        collect_report(&mut self.child, sent)
    }
}

/// Waits for a peer that was told to stop and returns its report line's
/// figures: (messages, elapsed ns, cpu ns). `sent` is how telling it went.
pub(super) fn collect_report(
    child: &mut Child,
    sent: Result<(), BenchError>,
) -> Result<(u64, u64, u64), BenchError> {
    let mut out = String::new();
    if let Some(mut so) = child.stdout.take() {
        let _ = so.read_to_string(&mut out);
    }
    let status = child
        .wait()
        .map_err(|e| BenchError::io("waiting for the peer", e))?;
    sent?;
    if !status.success() {
        return Err(BenchError::Peer(format!("exited with {status}")));
    }
    let line = out
        .lines()
        .find_map(|l| l.find(REPORT_TAG).map(|i| &l[i + REPORT_TAG.len()..]))
        .ok_or_else(|| BenchError::Peer(format!("no report line in its output {out:?}")))?;
    let field = |k: &str| -> Result<u64, BenchError> {
        line.split_whitespace()
            .find_map(|kv| kv.strip_prefix(k)?.strip_prefix('='))
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| BenchError::Peer(format!("bad report line {line:?}")))
    };
    Ok((field("msgs")?, field("elapsed_ns")?, field("cpu_ns")?))
}

impl Drop for Session {
    fn drop(&mut self) {
        self.ending.store(true, Ordering::SeqCst);
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Peer processes of a run with more than one (the pipeline's stages, the
/// fan-out's subscribers); killed if dropped before they end.
pub(super) struct Peers {
    pub children: Vec<Child>,
    /// Set once this side no longer needs them (see [`watch_peer`]).
    pub ending: Arc<AtomicBool>,
    /// This thread's CPU mask before the run, restored after the peers
    /// are gone.
    _pinned: Pinned,
}

impl Peers {
    /// Pins this thread to `cpu` (first: an hwlink end records its CPU
    /// mask when it attaches); no peers yet.
    pub(super) fn pinned_to(cpu: Option<usize>) -> Result<Peers, BenchError> {
        Ok(Peers {
            children: Vec::new(),
            ending: Arc::new(AtomicBool::new(false)),
            _pinned: Pinned::to(cpu)
                .map_err(|e| BenchError::io(format!("pinning to CPU {cpu:?}"), e))?,
        })
    }

    /// Spawns a peer as `spec` says, watched by [`watch_peer`].
    pub(super) fn spawn(
        &mut self,
        spec: &PeerSpec,
        launch: Launcher<'_>,
        what: &str,
    ) -> Result<(), BenchError> {
        let child = spawn_peer(spec, launch, what)?;
        watch_peer(child.id(), spec.mechanism, Arc::clone(&self.ending));
        self.children.push(child);
        Ok(())
    }
}

impl Drop for Peers {
    fn drop(&mut self) {
        self.ending.store(true, Ordering::SeqCst);
        for c in &mut self.children {
            if let Ok(None) = c.try_wait() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

/// How long a side stuck on a dead peer gets to notice by itself (end of
/// file, a closed link) before the watchdog gives up on the process.
const DEAD_PEER_GRACE: Duration = Duration::from_secs(3);

/// Watches the peer: if it exits while this side still needs it, some
/// mechanisms (message queues, eventfd, a link it never attached to) would
/// leave this side blocked for ever. After a grace period the watchdog then
/// ends this process with an error, rather than let it hang.
pub(super) fn watch_peer(pid: u32, mechanism: Mechanism, ending: Arc<AtomicBool>) {
    std::thread::spawn(move || {
        // SAFETY: siginfo_t is plain data; zeroed is valid and waitid fills it.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: waits for the child's exit without reaping it (WNOWAIT),
        // so that Child::wait still collects its status.
        unsafe {
            libc::waitid(
                libc::P_PID,
                pid as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOWAIT,
            )
        };
        if ending.load(Ordering::SeqCst) {
            return;
        }
        std::thread::sleep(DEAD_PEER_GRACE);
        if !ending.load(Ordering::SeqCst) {
            eprintln!(
                "hwlink bench: the {mechanism} peer process exited in the middle of a measurement and this side is stuck waiting for it; rerun with `--mechanisms {mechanism}` to see the peer's error"
            );
            std::process::exit(1);
        }
    });
}

pub(super) const REPORT_TAG: &str = "@hwlink-bench ";

/// Measures round trips of `size`-byte messages with a fresh peer: a
/// warm-up of `warmup` round trips, then round trips until `budget` has
/// passed or `max_count` were timed (at least one).
pub fn round_trip(
    mechanism: Mechanism,
    size: usize,
    opts: &Options,
    warmup: usize,
    budget: Duration,
    max_count: usize,
    launch: Launcher<'_>,
) -> Result<RoundTrips, BenchError> {
    let mut s = Session::start(mechanism, Workload::RoundTrip, size, 0, opts, launch)?;
    let mut echo = super::AlignedBuf::new(size);
    let mut seq = 0u64;
    let mut one = |s: &mut Session, seq: u64| -> Result<(), BenchError> {
        s.buf[..8].copy_from_slice(&seq.to_le_bytes());
        let got = s.transport.round_trip(&s.buf, &mut echo)?;
        if got != seq {
            return Err(BenchError::Verify(format!(
                "peer echoed message {got}, expected {seq}"
            )));
        }
        Ok(())
    };
    // The warm-up takes at most a quarter of the budget after the first
    // round trip (which waits for the peer to start): a mechanism that takes
    // milliseconds per round trip does not spend minutes on it.
    seq += 1;
    one(&mut s, seq)?;
    let warm_start = Instant::now();
    while seq < warmup as u64 && warm_start.elapsed() < budget / 4 {
        seq += 1;
        one(&mut s, seq)?;
    }
    let warmed = seq;
    let mut samples = Vec::with_capacity(max_count.min(1 << 20));
    let cpu0 = cpu_time_ns();
    let start = Instant::now();
    while samples.is_empty() || (samples.len() < max_count && start.elapsed() < budget) {
        seq += 1;
        let t = Instant::now();
        one(&mut s, seq)?;
        samples.push(t.elapsed().as_nanos() as u64);
    }
    let measurer_ns = cpu_time_ns() - cpu0;
    let measured = samples.len() as u64;
    let (peer_msgs, _, peer_ns) = s.finish()?;
    Ok(RoundTrips {
        samples,
        warmup: warmed,
        cpu: CpuTotals {
            measurer_ns,
            measurer_msgs: measured,
            peer_ns,
            peer_msgs,
        },
    })
}

/// Streams `size`-byte messages to a fresh peer for `duration`; the peer
/// verifies every one.
pub fn stream(
    mechanism: Mechanism,
    size: usize,
    opts: &Options,
    duration: Duration,
    launch: Launcher<'_>,
) -> Result<Streamed, BenchError> {
    // Warm the channel, the caches and both processes up first: the peer
    // counts and times only what follows.
    let warmup = stream_warmup(size);
    let mut s = Session::start(mechanism, Workload::Stream, size, warmup, opts, launch)?;
    let mut seq = 0u64;
    while seq < warmup {
        s.transport.send_written(&mut s.buf, seq)?;
        seq += 1;
    }
    let cpu0 = cpu_time_ns();
    let start = Instant::now();
    loop {
        s.transport.send_written(&mut s.buf, seq)?;
        seq += 1;
        if seq % 16 == 0 && start.elapsed() >= duration {
            break;
        }
    }
    let measurer_ns = cpu_time_ns() - cpu0;
    let (msgs, elapsed_ns, peer_ns) = s.finish()?;
    let measured = seq - warmup;
    if msgs != measured {
        return Err(BenchError::Verify(format!(
            "sent {measured} messages after the warm-up, the peer received {msgs}"
        )));
    }
    Ok(Streamed {
        messages: msgs,
        bytes: msgs * size as u64,
        elapsed_ns,
        cpu: CpuTotals {
            measurer_ns,
            measurer_msgs: measured,
            peer_ns,
            peer_msgs: msgs,
        },
    })
}

/// Messages a stream sends before it is measured: 20,000, or fewer
/// for large messages (64 MiB at most).
fn stream_warmup(size: usize) -> u64 {
    (20_000usize).min((64 << 20) / size.max(1)).max(1) as u64
}

/// Lets the peer inherit `spec.fds` (clears FD_CLOEXEC) and spawns it with
/// `launch`, its stdout piped for the report.
pub(crate) fn spawn_peer(
    spec: &PeerSpec,
    launch: Launcher<'_>,
    what: &str,
) -> Result<Child, BenchError> {
    for fd in &spec.fds {
        // SAFETY: fcntl on a descriptor we own; clearing FD_CLOEXEC lets the
        // peer inherit it.
        let rc = unsafe { libc::fcntl(*fd, libc::F_SETFD, 0) };
        check(rc, "fcntl(F_SETFD)")?;
    }
    launch(&spec.to_args())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| BenchError::io(what.to_string(), e))
}

/// The peer process: opens its side as its arguments say, echoes (round
/// trip) or receives and verifies (stream) until the stop message, then
/// prints one report line on stdout.
pub fn peer_main(args: &[String]) -> Result<(), BenchError> {
    // SAFETY: PR_SET_PDEATHSIG takes a signal number and changes only this
    // process's parent-death signal: the peer dies with the measurer.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) };
    let spec = PeerSpec::parse(args)?;
    if let Some(cpu) = spec.cpu {
        pin_to_cpu(cpu).map_err(|e| BenchError::io(format!("pinning to CPU {cpu}"), e))?;
    }
    if spec.stage > 0 {
        return pipeline::stage_main(&spec);
    }
    if let Some(k) = spec.subscriber {
        return fanout::subscriber_main(&spec, k);
    }
    let mut t = open_child(&spec)?;
    let mut buf = super::AlignedBuf::new(spec.size);
    // Every message received; a stream counts and times those after its
    // warm-up.
    let mut received = 0u64;
    let warmup = match spec.workload {
        Workload::RoundTrip => 0,
        Workload::Stream => spec.warmup,
    };
    let mut started: Option<(Instant, u64)> = None;
    loop {
        let seq = match spec.workload {
            // Received and sent back (as a value, for hwlink-typed).
            Workload::RoundTrip => t.echo(&mut buf)?,
            // Checked where it lies (in place, for hwlink-zero-copy).
            Workload::Stream => t.recv_checked(&mut buf, received)?,
        };
        if started.is_none() && (received >= warmup || seq == STOP) {
            started = Some((Instant::now(), cpu_time_ns()));
        }
        if seq == STOP {
            break;
        }
        received += 1;
    }
    report_stream(received.saturating_sub(warmup), started);
    Ok(())
}

/// Prints a stream receiver's report line: messages counted, time and CPU
/// time since `started` (when the first counted message came).
pub(super) fn report_stream(msgs: u64, started: Option<(Instant, u64)>) {
    let (t0, cpu0) = started.expect("received at least the stop message");
    println!(
        "{REPORT_TAG}msgs={msgs} elapsed_ns={} cpu_ns={}",
        t0.elapsed().as_nanos(),
        cpu_time_ns() - cpu0
    );
}

#[cfg(test)]
mod tests {
    #[test]
    fn session_pid_reads_the_pid_of_a_session_name() {
        use super::session_pid;
        assert_eq!(session_pid("hb123-4-h0"), Some(123));
        assert_eq!(session_pid("hb123-4"), Some(123));
        assert_eq!(session_pid("hbx-4"), None);
        assert_eq!(session_pid("prices"), None);
        assert_eq!(session_pid("hb123"), None);
    }
}

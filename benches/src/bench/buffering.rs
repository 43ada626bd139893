//! Round trips over direct links of each buffering kind, side by side
//! (`hwlink bench-buffering`): two processes join a domain whose links are
//! bounded, unbounded or zero-capacity (rendezvous), and ping-pong 8-byte
//! messages by name (`send("echo", m)`, `recv_from("echo")`), in
//! alternating rounds of one run. A plain link pair (`Sender::send`,
//! `Receiver::recv`, the same wait strategy, capacity and slot size) is
//! measured in the same rounds: the floor a bounded direct link is held
//! to. With `timeouts`, the measuring side uses the timed forms instead
//! (`send_timeout`, `recv_timeout`, `recv_from_timeout`), on every row.

use super::BenchError;
use hwlink::{Backend, Buffering, Domain, LinkBuilder, WaitStrategy};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// What one row measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A plain link pair (one SPSC ring each way), no domain.
    PlainLink,
    /// A domain's direct link with this buffering.
    Direct(Buffering),
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Kind::PlainLink => write!(f, "plain link ({SLOTS} slots)"),
            Kind::Direct(b) => write!(f, "direct, {b}"),
        }
    }
}

/// Round-trip percentiles of one kind, in nanoseconds.
#[derive(Clone, Debug)]
pub struct RttFigures {
    /// What was measured.
    pub kind: Kind,
    /// Every round trip measured, sorted.
    pub samples: Vec<u64>,
}

impl RttFigures {
    /// The `p`-quantile (0..=1).
    pub fn pct(&self, p: f64) -> u64 {
        let i =
            ((self.samples.len() as f64 * p) as usize).min(self.samples.len().saturating_sub(1));
        self.samples.get(i).copied().unwrap_or(0)
    }

    /// The mean of the fastest 99.9% (no outlier of a preemption weighs
    /// in): finer than the clock's steps, which the percentiles show.
    pub fn trimmed_mean(&self) -> f64 {
        let n = (self.samples.len() as f64 * 0.999) as usize;
        let kept = &self.samples[..n.max(1).min(self.samples.len())];
        kept.iter().sum::<u64>() as f64 / kept.len().max(1) as f64
    }
}

/// Slots of the bounded direct link and of the plain links.
const SLOTS: u32 = 64;
/// Largest message of every link measured.
const SLOT_SIZE: u32 = 64;
/// Round trips before the measured ones, per kind and round.
const WARMUP: u64 = 100;
/// The last message: the echo peer stops.
const STOP: [u8; 8] = u64::MAX.to_le_bytes();

fn link_err(e: impl std::fmt::Display) -> BenchError {
    BenchError::Link(e.to_string())
}

/// The kinds measured, in order: the plain link first.
pub fn kinds() -> [Kind; 4] {
    [
        Kind::PlainLink,
        Kind::Direct(Buffering::Bounded(SLOTS)),
        Kind::Direct(Buffering::Unbounded {
            byte_limit: 64 << 20,
        }),
        Kind::Direct(Buffering::Zero),
    ]
}

fn kind_tag(k: Kind) -> &'static str {
    match k {
        Kind::PlainLink => "link",
        Kind::Direct(Buffering::Bounded(_)) => "bounded",
        Kind::Direct(Buffering::Unbounded { .. }) => "unbounded",
        Kind::Direct(Buffering::Zero) => "zero",
    }
}

/// One side's blocking send and receive, the same shape for both kinds:
/// the message by value, the reply into a new vector.
trait Pinger {
    fn ping(&mut self, msg: [u8; 8]) -> Result<Vec<u8>, BenchError>;
    fn stop(&mut self) -> Result<(), BenchError>;
}

/// How long a timed form waits (`timeouts`): never reached.
const T: Duration = Duration::from_secs(30);

struct DirectPinger(hwlink::Member, bool);

impl Pinger for DirectPinger {
    #[inline]
    fn ping(&mut self, msg: [u8; 8]) -> Result<Vec<u8>, BenchError> {
        if self.1 {
            self.0.send_timeout("echo", msg, T).map_err(link_err)?;
            return self.0.recv_from_timeout("echo", T).map_err(link_err);
        }
        self.0.send("echo", msg).map_err(link_err)?;
        self.0.recv_from("echo").map_err(link_err)
    }
    fn stop(&mut self) -> Result<(), BenchError> {
        self.0.send("echo", STOP).map_err(link_err)
    }
}

struct LinkPinger(hwlink::Sender, hwlink::Receiver, bool);

impl Pinger for LinkPinger {
    #[inline]
    fn ping(&mut self, msg: [u8; 8]) -> Result<Vec<u8>, BenchError> {
        if self.2 {
            self.0.send_timeout(msg, T).map_err(link_err)?;
            return self.1.recv_timeout(T).map_err(link_err);
        }
        self.0.send(msg).map_err(link_err)?;
        self.1.recv().map_err(link_err)
    }
    fn stop(&mut self) -> Result<(), BenchError> {
        self.0.send(STOP).map_err(link_err)
    }
}

fn link_builder(name: &str, wait: WaitStrategy, backend: Backend) -> LinkBuilder {
    LinkBuilder::new(name)
        .capacity(SLOTS)
        .slot_size(SLOT_SIZE)
        .backend(backend)
        .wait(wait)
}

/// Spawns the echo peer for `kind` on `name` and waits for its ready line.
fn spawn_peer(
    kind: Kind,
    name: &str,
    wait: WaitStrategy,
    backend: Backend,
    cpu: usize,
) -> Result<Child, BenchError> {
    let exe = std::env::current_exe().map_err(|e| BenchError::io("current_exe", e))?;
    let mut child = Command::new(&exe)
        .args([
            "bench-buffering-peer",
            kind_tag(kind),
            name,
            &wait.to_string(),
            &cpu.to_string(),
            &backend.to_string(),
        ])
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| BenchError::io("spawning the peer", e))?;
    let mut ready = String::new();
    BufReader::new(child.stdout.take().expect("piped"))
        .read_line(&mut ready)
        .map_err(|e| BenchError::io("reading the peer", e))?;
    if ready.trim() != "ready" {
        let _ = child.kill();
        let _ = child.wait();
        return Err(BenchError::Peer(format!(
            "the echo peer did not start ({})",
            ready.trim()
        )));
    }
    Ok(child)
}

/// `count` measured round trips (after a warm-up) into `samples`, each
/// reply checked.
fn measure(p: &mut dyn Pinger, count: usize, samples: &mut Vec<u64>) -> Result<(), BenchError> {
    for seq in 0..count as u64 + WARMUP {
        let msg = seq.to_le_bytes();
        let t0 = Instant::now();
        let back = p.ping(msg)?;
        let rtt = t0.elapsed().as_nanos() as u64;
        if back != msg {
            return Err(BenchError::Verify(format!(
                "echo of #{seq} came back wrong"
            )));
        }
        if seq >= WARMUP {
            samples.push(rtt);
        }
    }
    p.stop()
}

fn reap(mut child: Child) -> Result<(), BenchError> {
    let status = child
        .wait()
        .map_err(|e| BenchError::io("waiting for the peer", e))?;
    if !status.success() {
        return Err(BenchError::Peer(format!("the echo peer failed: {status}")));
    }
    Ok(())
}

/// Measures `count` round trips per kind per round, `rounds` rounds, with
/// `wait` on both sides (`timeouts`: the measuring side's timed forms);
/// the peer runs on `cpus.1`, this process on `cpus.0`.
pub fn run(
    count: usize,
    rounds: u32,
    timeouts: bool,
    wait: WaitStrategy,
    backend: Backend,
    cpus: (usize, usize),
) -> Result<Vec<RttFigures>, BenchError> {
    let mut out: Vec<RttFigures> = kinds()
        .into_iter()
        .map(|kind| RttFigures {
            kind,
            samples: Vec::new(),
        })
        .collect();
    hwlink::liveness::pin_to_cpu(cpus.0).map_err(|e| BenchError::io("pinning", e))?;
    for round in 0..rounds {
        for fig in &mut out {
            let name = format!("bb{}-{}-{round}", std::process::id(), kind_tag(fig.kind));
            match fig.kind {
                Kind::PlainLink => {
                    let tx = link_builder(&format!("{name}.ping"), wait, backend)
                        .create_sender()
                        .map_err(link_err)?;
                    let rx = link_builder(&format!("{name}.pong"), wait, backend)
                        .create_receiver()
                        .map_err(link_err)?;
                    let child = spawn_peer(fig.kind, &name, wait, backend, cpus.1)?;
                    let mut p = LinkPinger(tx, rx, timeouts);
                    measure(&mut p, count, &mut fig.samples)?;
                    reap(child)?;
                }
                Kind::Direct(buffering) => {
                    let me = Domain::builder(&name)
                        .backend(backend)
                        .buffering(buffering)
                        .slot_size(SLOT_SIZE)
                        .wait(wait)
                        .join("measurer")
                        .map_err(link_err)?;
                    let child = spawn_peer(fig.kind, &name, wait, backend, cpus.1)?;
                    let mut p = DirectPinger(me, timeouts);
                    measure(&mut p, count, &mut fig.samples)?;
                    reap(child)?;
                    p.0.leave();
                }
            }
        }
    }
    for fig in &mut out {
        fig.samples.sort_unstable();
    }
    Ok(out)
}

/// The echo peer: `KIND NAME WAIT CPU BACKEND`, KIND `link` (open the
/// pair of links NAME.ping and NAME.pong) or a buffering (join domain NAME
/// as `echo`).
pub fn peer_main(args: &[String]) -> Result<(), BenchError> {
    // SAFETY: PR_SET_PDEATHSIG takes a signal number: die with the measurer.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) };
    let [kind, name, wait, cpu, backend] = args else {
        return Err(BenchError::Peer(format!("bad peer arguments {args:?}")));
    };
    let wait: WaitStrategy = wait.parse().map_err(BenchError::Peer)?;
    let cpu: usize = cpu
        .parse()
        .map_err(|_| BenchError::Peer(format!("bad cpu {cpu}")))?;
    let backend: Backend = backend.parse().map_err(link_err)?;
    hwlink::liveness::pin_to_cpu(cpu).map_err(|e| BenchError::io("pinning", e))?;
    if kind == "link" {
        let mut rx = link_builder(&format!("{name}.ping"), wait, backend)
            .open_receiver()
            .map_err(link_err)?;
        let mut tx = link_builder(&format!("{name}.pong"), wait, backend)
            .open_sender()
            .map_err(link_err)?;
        println!("ready");
        loop {
            let m = rx.recv().map_err(link_err)?;
            if m == STOP {
                return Ok(());
            }
            tx.send(m).map_err(link_err)?;
        }
    }
    let mut me = Domain::builder(name)
        .backend(backend)
        .wait(wait)
        .join("echo")
        .map_err(link_err)?;
    println!("ready");
    loop {
        let m = me.recv_from("measurer").map_err(link_err)?;
        if m == STOP {
            return Ok(());
        }
        me.send("measurer", m).map_err(link_err)?;
    }
}

/// The bars of issue 15: a bounded direct link's p50 at most this many
/// times a plain link's, an unbounded one's at most this many times a
/// bounded one's.
pub const BOUNDED_BAR: f64 = 1.2;
/// See [`BOUNDED_BAR`].
pub const UNBOUNDED_BAR: f64 = 1.3;

/// p50 of `num` over p50 of `den`, or None if either kind is missing.
pub fn p50_ratio(figs: &[RttFigures], num: Kind, den: Kind) -> Option<f64> {
    let p50 = |k| {
        figs.iter()
            .find(|f| f.kind == k)
            .map(|f| f.pct(0.5).max(1) as f64)
    };
    Some(p50(num)? / p50(den)?)
}

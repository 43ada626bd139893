//! Round trips over direct links of each buffering kind, side by side
//! (`hwlink bench-buffering`): two processes join a domain whose links are
//! bounded, unbounded or zero-capacity (rendezvous), and ping-pong 8-byte
//! messages by name, in alternating rounds of one run.

use super::BenchError;
use hwlink::{Backend, Buffering, Domain, WaitStrategy};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Round-trip percentiles of one buffering kind, in nanoseconds.
#[derive(Clone, Debug)]
pub struct RttFigures {
    /// The buffering measured.
    pub buffering: Buffering,
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
}

const T: Duration = Duration::from_secs(30);

fn domain_err(e: impl std::fmt::Display) -> BenchError {
    BenchError::Link(e.to_string())
}

/// The kinds measured, in order.
pub fn kinds() -> [Buffering; 3] {
    [
        Buffering::Bounded(64),
        Buffering::Unbounded {
            byte_limit: 64 << 20,
        },
        Buffering::Zero,
    ]
}

fn kind_name(b: Buffering) -> &'static str {
    match b {
        Buffering::Bounded(_) => "bounded",
        Buffering::Unbounded { .. } => "unbounded",
        Buffering::Zero => "zero",
    }
}

/// Measures `count` round trips per kind per round, `rounds` rounds, with
/// `wait` on both sides; the peer runs on `cpus.1`, this process on
/// `cpus.0`.
pub fn run(
    count: usize,
    rounds: u32,
    wait: WaitStrategy,
    backend: Backend,
    cpus: (usize, usize),
) -> Result<Vec<RttFigures>, BenchError> {
    let mut out: Vec<RttFigures> = kinds()
        .into_iter()
        .map(|buffering| RttFigures {
            buffering,
            samples: Vec::new(),
        })
        .collect();
    hwlink::liveness::pin_to_cpu(cpus.0).map_err(|e| BenchError::io("pinning", e))?;
    let exe = std::env::current_exe().map_err(|e| BenchError::io("current_exe", e))?;
    for round in 0..rounds {
        for fig in &mut out {
            let name = format!(
                "bb{}-{}-{round}",
                std::process::id(),
                kind_name(fig.buffering)
            );
            let mut me = Domain::builder(&name)
                .backend(backend)
                .buffering(fig.buffering)
                .slot_size(64)
                .wait(wait)
                .join("measurer")
                .map_err(domain_err)?;
            let mut child = Command::new(&exe)
                .args([
                    "bench-buffering-peer",
                    &name,
                    &wait.to_string(),
                    &cpus.1.to_string(),
                    &backend.to_string(),
                ])
                .stdout(Stdio::piped())
                .spawn()
                .map_err(|e| BenchError::io("spawning the peer", e))?;
            let mut ready = String::new();
            BufReader::new(child.stdout.take().expect("piped"))
                .read_line(&mut ready)
                .map_err(|e| BenchError::io("reading the peer", e))?;
            let mut msg = [0u8; 8];
            for seq in 0..(count + 100) as u64 {
                msg.copy_from_slice(&seq.to_le_bytes());
                let t0 = Instant::now();
                me.send_timeout("echo", msg, T).map_err(domain_err)?;
                let back = me.recv_from_timeout("echo", T).map_err(domain_err)?;
                let rtt = t0.elapsed().as_nanos() as u64;
                if back != msg {
                    return Err(BenchError::Verify(format!(
                        "echo of #{seq} came back wrong"
                    )));
                }
                if seq >= 100 {
                    fig.samples.push(rtt);
                }
            }
            me.send_timeout("echo", u64::MAX.to_le_bytes(), T)
                .map_err(domain_err)?;
            let status = child
                .wait()
                .map_err(|e| BenchError::io("waiting for the peer", e))?;
            if !status.success() {
                return Err(BenchError::Peer(format!("the echo peer failed: {status}")));
            }
            me.leave();
        }
    }
    for fig in &mut out {
        fig.samples.sort_unstable();
    }
    Ok(out)
}

/// The echo peer: `DOMAIN WAIT CPU BACKEND`.
pub fn peer_main(args: &[String]) -> Result<(), BenchError> {
    // SAFETY: PR_SET_PDEATHSIG takes a signal number: die with the measurer.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) };
    let [domain, wait, cpu, backend] = args else {
        return Err(BenchError::Peer(format!("bad peer arguments {args:?}")));
    };
    let wait: WaitStrategy = wait.parse().map_err(BenchError::Peer)?;
    let cpu: usize = cpu
        .parse()
        .map_err(|_| BenchError::Peer(format!("bad cpu {cpu}")))?;
    let backend: Backend = backend.parse().map_err(domain_err)?;
    hwlink::liveness::pin_to_cpu(cpu).map_err(|e| BenchError::io("pinning", e))?;
    let mut me = Domain::builder(domain)
        .backend(backend)
        .wait(wait)
        .join("echo")
        .map_err(domain_err)?;
    println!("ready");
    loop {
        let m = me.recv_from_timeout("measurer", T).map_err(domain_err)?;
        if m == u64::MAX.to_le_bytes() {
            return Ok(());
        }
        me.send_timeout("measurer", m, T).map_err(domain_err)?;
    }
}

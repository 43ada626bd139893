//! Round trips between two real processes: over an hwlink link pair, over a
//! pipe, and over two busy-polled cache lines (the physical floor). Used by
//! `hwlink pingpong` and by the criterion benchmarks, so that every figure is
//! measured the same way, side by side, in one run.
//!
//! The measuring process spawns its peer with a caller-supplied command (the
//! `hwlink` binary re-executes itself; a benchmark re-executes its own
//! binary), passing [`PeerArgs`] on the command line.

use crate::affinity::Pinned;
use crate::bench::{Floor, Transport};
use hwlink::liveness::pin_to_cpu;
use hwlink::WaitStrategy;
use hwlink::{LinkBuilder, Receiver, Sender};
use hwlink_drivers::Backend;
use std::error::Error;
use std::io::{Read, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

type BoxError = Box<dyn Error + Send + Sync>;

/// What carries the round trip.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mechanism {
    /// Two hwlink links, one each way.
    Hwlink,
    /// A pipe each way (the child's stdin and stdout).
    Pipe,
    /// Two flags on separate cache lines, busy-polled: the floor.
    Floor,
}

impl Mechanism {
    /// Its command-line name.
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::Hwlink => "hwlink",
            Mechanism::Pipe => "pipe",
            Mechanism::Floor => "floor",
        }
    }
    fn parse(s: &str) -> Option<Mechanism> {
        [Mechanism::Hwlink, Mechanism::Pipe, Mechanism::Floor]
            .into_iter()
            .find(|m| m.name() == s)
    }
}

/// One round-trip experiment.
#[derive(Clone, Debug)]
pub struct Config {
    /// What carries the messages.
    pub mechanism: Mechanism,
    /// Message bytes (at least 8: the sequence number travels in them).
    pub size: usize,
    /// Wait strategy of both hwlink ends.
    pub wait: WaitStrategy,
    /// Memory for the hwlink links and the floor's cache lines.
    pub backend: Backend,
    /// CPUs for (this process, the peer); None leaves both unpinned.
    pub cpus: Option<(usize, usize)>,
}

/// Arguments of the peer process, as passed on its command line.
#[derive(Clone, Debug)]
pub struct PeerArgs(Vec<String>);

impl PeerArgs {
    /// The arguments themselves.
    pub fn args(&self) -> &[String] {
        &self.0
    }
}

static SESSIONS: AtomicU32 = AtomicU32::new(0);

enum Channel {
    Hwlink { tx: Box<Sender>, rx: Box<Receiver> },
    Pipe { to: ChildStdin, from: ChildStdout },
    Floor(Floor),
}

/// A running experiment: this process and its peer.
pub struct Session {
    channel: Option<Channel>,
    child: Child,
    buf: Vec<u8>,
    seq: u64,
    /// This thread's CPU mask before the session, restored after it.
    pinned: Option<Pinned>,
}

/// The floor's stop message (no round trip carries this number).
const FLOOR_STOP: u64 = u64::MAX;

impl Session {
    /// Sets up the channel, pins this thread, and spawns the peer with
    /// `launch(args)`.
    pub fn start(cfg: &Config, launch: &dyn Fn(&PeerArgs) -> Command) -> Result<Session, BoxError> {
        if cfg.size < 8 {
            return Err("message size must be at least 8 bytes (the sequence number)".into());
        }
        let pinned = Pinned::to(cfg.cpus.map(|c| c.0))
            .map_err(|e| format!("cannot pin to CPU {:?}: {e}", cfg.cpus))?;
        let base = format!(
            "pp{}-{}",
            std::process::id(),
            SESSIONS.fetch_add(1, Ordering::Relaxed)
        );
        let mut args = vec![
            "--mechanism".to_string(),
            cfg.mechanism.name().into(),
            "--name".into(),
            base.clone(),
            "--size".into(),
            cfg.size.to_string(),
            "--wait".into(),
            cfg.wait.to_string(),
            "--backend".into(),
            cfg.backend.to_string(),
        ];
        if let Some((_, peer)) = cfg.cpus {
            args.extend(["--cpu".into(), peer.to_string()]);
        }
        let peer = PeerArgs(args);
        let mut cmd = launch(&peer);
        let (channel, child) = match cfg.mechanism {
            Mechanism::Hwlink => {
                let link = |dir: &str| {
                    LinkBuilder::new(format!("{base}-{dir}"))
                        .capacity(64)
                        .slot_size(cfg.size as u32)
                        .backend(cfg.backend)
                        .wait(cfg.wait)
                };
                let tx = link("ping").create_sender()?;
                let rx = link("pong").create_receiver()?;
                let child = cmd.spawn()?;
                (
                    Channel::Hwlink {
                        tx: Box::new(tx),
                        rx: Box::new(rx),
                    },
                    child,
                )
            }
            Mechanism::Pipe => {
                let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).spawn()?;
                let to = child.stdin.take().ok_or("no stdin pipe")?;
                let from = child.stdout.take().ok_or("no stdout pipe")?;
                (Channel::Pipe { to, from }, child)
            }
            Mechanism::Floor => {
                let floor = Floor::create(&base, cfg.backend)?;
                let child = cmd.spawn()?;
                (Channel::Floor(floor), child)
            }
        };
        let mut s = Session {
            channel: Some(channel),
            child,
            buf: vec![0u8; cfg.size],
            seq: 0,
            pinned: Some(pinned),
        };
        // The first round trip also waits for the peer to attach.
        s.round_trip()?;
        Ok(s)
    }

    /// One round trip of one message; checks the echo.
    #[inline]
    pub fn round_trip(&mut self) -> Result<(), BoxError> {
        self.seq += 1;
        let seq = self.seq;
        self.buf[..8].copy_from_slice(&seq.to_le_bytes());
        match self.channel.as_mut().expect("session finished") {
            Channel::Hwlink { tx, rx } => {
                tx.send(&self.buf[..]).map_err(|e| e.to_string())?;
                rx.recv_into(&mut self.buf)?;
            }
            Channel::Pipe { to, from } => {
                to.write_all(&self.buf)?;
                from.read_exact(&mut self.buf)?;
            }
            Channel::Floor(floor) => {
                floor.send(&self.buf[..8])?;
                floor.recv(&mut self.buf[..8])?;
            }
        }
        let echoed = u64::from_le_bytes(self.buf[..8].try_into().expect("8 bytes"));
        if echoed != seq {
            return Err(format!("peer echoed message {echoed}, expected {seq}").into());
        }
        Ok(())
    }

    /// `n` round trips; the time of each in nanoseconds.
    pub fn measure(&mut self, n: usize) -> Result<Vec<u64>, BoxError> {
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            let t = Instant::now();
            self.round_trip()?;
            out.push(t.elapsed().as_nanos() as u64);
        }
        Ok(out)
    }

    /// `n` round trips; their total time.
    pub fn total(&mut self, n: u64) -> Result<Duration, BoxError> {
        let t = Instant::now();
        for _ in 0..n {
            self.round_trip()?;
        }
        Ok(t.elapsed())
    }

    /// Stops the peer, waits for it, and unpins this thread.
    pub fn finish(mut self) -> Result<(), BoxError> {
        self.stop()
    }

    fn stop(&mut self) -> Result<(), BoxError> {
        match self.channel.take() {
            Some(Channel::Floor(mut floor)) => floor.send(&FLOOR_STOP.to_le_bytes())?,
            Some(other) => drop(other),
            None => return Ok(()),
        }
        let status = self.child.wait()?;
        self.pinned = None;
        if !status.success() {
            return Err(format!("peer process failed: {status}").into());
        }
        Ok(())
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if self.channel.is_some() {
            let _ = self.child.kill();
            let _ = self.stop();
        }
    }
}

/// The peer side: echoes every message until the measuring side stops.
pub fn peer_main(args: &[String]) -> Result<(), BoxError> {
    let mut mechanism = None;
    let (mut name, mut size, mut wait, mut backend, mut cpu) = (
        String::new(),
        8usize,
        WaitStrategy::default(),
        Backend::Auto,
        None,
    );
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--mechanism" => mechanism = Mechanism::parse(value),
            "--name" => name = value.clone(),
            "--size" => size = value.parse()?,
            "--wait" => wait = value.parse()?,
            "--backend" => backend = value.parse().map_err(|e| format!("{e}"))?,
            "--cpu" => cpu = Some(value.parse::<usize>()?),
            other => return Err(format!("unknown peer argument {other}").into()),
        }
    }
    if let Some(cpu) = cpu {
        pin_to_cpu(cpu)?;
    }
    match mechanism.ok_or("missing --mechanism")? {
        Mechanism::Hwlink => {
            let mut rx = LinkBuilder::new(format!("{name}-ping"))
                .wait(wait)
                .backend(backend)
                .open_receiver()?;
            let mut tx = LinkBuilder::new(format!("{name}-pong"))
                .wait(wait)
                .backend(backend)
                .open_sender()?;
            let mut buf = vec![0u8; size];
            loop {
                match rx.recv_into(&mut buf) {
                    Ok(n) => tx.send(&buf[..n]).map_err(|e| e.to_string())?,
                    Err(hwlink::RecvError::Disconnected) => return Ok(()),
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Mechanism::Pipe => {
            let (mut input, mut output) = (std::io::stdin().lock(), std::io::stdout().lock());
            let mut buf = vec![0u8; size];
            loop {
                match input.read_exact(&mut buf) {
                    Ok(()) => {
                        output.write_all(&buf)?;
                        output.flush()?;
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Mechanism::Floor => {
            let mut floor = Floor::open(&name, backend)?;
            let mut seq = [0u8; 8];
            loop {
                floor.recv(&mut seq)?;
                if u64::from_le_bytes(seq) == FLOOR_STOP {
                    return Ok(());
                }
                floor.send(&seq)?;
            }
        }
    }
}

/// Percentiles of a set of round trips, in nanoseconds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Stats {
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Slowest.
    pub max: u64,
    /// Mean.
    pub mean: u64,
}

impl Stats {
    /// p50, p90, p99, p99.9, max and mean, in µs: the columns every
    /// latency table prints.
    pub fn micros(&self) -> [f64; 6] {
        [self.p50, self.p90, self.p99, self.p999, self.max, self.mean].map(|ns| ns as f64 / 1000.0)
    }

    /// Summarises samples (sorted in place). None if empty.
    pub fn from_samples(samples: &mut [u64]) -> Option<Stats> {
        if samples.is_empty() {
            return None;
        }
        samples.sort_unstable();
        let at = |q: f64| {
            samples[((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len()) - 1]
        };
        let sum: u128 = samples.iter().map(|&s| u128::from(s)).sum();
        Some(Stats {
            p50: at(0.50),
            p90: at(0.90),
            p99: at(0.99),
            p999: at(0.999),
            max: *samples.last().expect("non-empty"),
            mean: (sum / samples.len() as u128) as u64,
        })
    }

    /// `{"p50":…,"p90":…,"p99":…,"p999":…,"max":…,"mean":…}`
    pub fn to_json(&self) -> String {
        format!(
            r#"{{"p50":{},"p90":{},"p99":{},"p999":{},"max":{},"mean":{}}}"#,
            self.p50, self.p90, self.p99, self.p999, self.max, self.mean
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_one_to_thousand() {
        let mut v: Vec<u64> = (1..=1000).rev().collect();
        let s = Stats::from_samples(&mut v).unwrap();
        assert_eq!(
            (s.p50, s.p90, s.p99, s.p999, s.max, s.mean),
            (500, 900, 990, 999, 1000, 500)
        );
        assert!(Stats::from_samples(&mut []).is_none());
        assert_eq!(
            Stats::from_samples(&mut [7]).unwrap().to_json(),
            r#"{"p50":7,"p90":7,"p99":7,"p999":7,"max":7,"mean":7}"#
        );
    }
}

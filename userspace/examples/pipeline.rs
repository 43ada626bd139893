//! A three-process pipeline over direct links: producer -> transform -> sink.
//!
//! The producer (this process) joins a domain and starts the transform and
//! the sink (this program again, with the argument `transform` or `sink`).
//! Members name each other: the producer sends to `transform`, which sends
//! to `sink`; links are set up on first use. Two phases:
//! - throughput: the producer floods 200,000 messages;
//! - latency: 20,000 messages, one every 20 µs (the producer sleeps in
//!   between), each stamped with the send time; the sink measures the
//!   end-to-end latency of each.
//!
//! Each stage is pinned to a CPU (stage k on CPU k mod the CPU count); on a
//! two-CPU machine the producer shares its CPU with the sink.
//!
//! The sink checks every message (order, contents, the transform's work) and
//! reports to the producer, which prints the figures.
//!
//! ```text
//! cargo run --release --example pipeline [-- --count N --paced N]
//! ```

use hwlink::{Domain, Member};
use std::process::Command;
use std::time::{Duration, Instant};

mod common;
use common::arg;

const T: Duration = Duration::from_secs(30);

fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime fills one timespec we own; CLOCK_MONOTONIC is
    // the same clock in every process of this machine.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// A message: phase, last-of-phase flag, sequence number, send time, then
/// 40 payload bytes.
fn message(phase: u8, seq: u64) -> [u8; 64] {
    let mut m = [0u8; 64];
    m[0] = phase;
    m[8..16].copy_from_slice(&seq.to_le_bytes());
    m[16..24].copy_from_slice(&now_ns().to_le_bytes());
    for (i, b) in m[24..].iter_mut().enumerate() {
        *b = (seq as u8).wrapping_add(i as u8);
    }
    m
}

fn word(m: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(m[at..at + 8].try_into().unwrap())
}

/// Waits until the members named `names` have joined (`recv_from` a
/// member that has not joined yet is an error, not a wait).
fn wait_for(me: &Member, names: &[&str]) {
    let t0 = Instant::now();
    while !names
        .iter()
        .all(|n| me.members().iter().any(|m| m.name == *n))
    {
        assert!(t0.elapsed() < T, "{names:?} did not join");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// The transform: adds one to every payload byte.
fn transform(domain: &str) -> Result<(), Box<dyn std::error::Error>> {
    pin(1);
    let mut me = Domain::join(domain, "transform")?;
    wait_for(&me, &["producer", "sink"]);
    loop {
        let mut m = me.recv_from_timeout("producer", T)?;
        let stop = m[0] == 0xff;
        for b in &mut m[24..] {
            *b = b.wrapping_add(1);
        }
        me.send_timeout("sink", &m, T).map_err(|e| e.to_string())?;
        if stop {
            return Ok(());
        }
    }
}

/// The sink: checks every message and measures latencies; reports to the
/// producer after each phase.
fn sink(domain: &str) -> Result<(), Box<dyn std::error::Error>> {
    pin(2);
    let mut me = Domain::join(domain, "sink")?;
    wait_for(&me, &["producer", "transform"]);
    let mut next = [0u64; 2];
    let mut lat = Vec::new();
    let mut first_last = (0u64, 0u64);
    loop {
        let m = me.recv_from_timeout("transform", T)?;
        let arrived = now_ns();
        if m[0] == 0xff {
            break;
        }
        let phase = m[0] as usize;
        let seq = word(&m, 8);
        assert_eq!(seq, next[phase], "phase {phase}: out of order or lost");
        next[phase] += 1;
        for (i, b) in m[24..].iter().enumerate() {
            assert_eq!(
                *b,
                (seq as u8).wrapping_add(i as u8).wrapping_add(1),
                "not transformed"
            );
        }
        if phase == 0 {
            if seq == 0 {
                first_last.0 = word(&m, 16);
            }
            first_last.1 = arrived;
            if m[1] == 1 {
                // The flood's last message: let the producer start phase 1
                // on an empty pipeline.
                me.send_timeout("producer", *b"flooded", T)?;
            }
        } else {
            lat.push(arrived - word(&m, 16));
        }
    }
    lat.sort_unstable();
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    };
    let report = format!(
        "{} {} {} {} {} {} {}",
        next[0],
        first_last.1 - first_last.0,
        next[1],
        pct(0.5),
        pct(0.9),
        pct(0.99),
        lat.last().copied().unwrap_or(0)
    );
    me.send_timeout("producer", report.as_bytes(), T)
        .map_err(|e| e.to_string())?;
    Ok(())
}

/// Pins this stage to CPU `stage` (mod the CPUs there are). On a machine
/// with fewer CPUs than stages, stages that share a CPU see it in each
/// other's CPU mask, and yield to each other instead of spinning.
fn pin(stage: usize) {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let _ = hwlink::liveness::pin_to_cpu(stage % cpus);
}

fn send(me: &mut Member, m: &[u8]) -> Result<(), Box<dyn std::error::Error>> {
    Ok(me
        .send_timeout("transform", m, T)
        .map_err(|e| e.to_string())?)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("transform") => return transform(&args[2]),
        Some("sink") => return sink(&args[2]),
        _ => {}
    }
    let count = arg("--count", 200_000);
    let paced = arg("--paced", 20_000);
    let domain = format!("pipeline-{}", std::process::id());
    pin(0);
    let mut me = Domain::join(&domain, "producer")?;
    let exe = std::env::current_exe()?;
    let mut children = vec![
        Command::new(&exe).args(["transform", &domain]).spawn()?,
        Command::new(&exe).args(["sink", &domain]).spawn()?,
    ];
    wait_for(&me, &["transform", "sink"]);
    for seq in 0..count {
        let mut m = message(0, seq);
        m[1] = u8::from(seq + 1 == count);
        send(&mut me, &m)?;
    }
    assert_eq!(me.recv_from_timeout("sink", T)?, b"flooded");
    // Pace by sleeping (with a 1 ns timer slack), not spinning: the
    // producer's CPU is shared with a stage on small machines.
    // SAFETY: prctl(PR_SET_TIMERSLACK) takes plain integers.
    unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1, 0, 0, 0) };
    for seq in 0..paced {
        let at = Instant::now() + Duration::from_micros(20);
        send(&mut me, &message(1, seq))?;
        std::thread::sleep(at.saturating_duration_since(Instant::now()));
    }
    send(&mut me, &[0xff; 64])?;
    let report = String::from_utf8(me.recv_from_timeout("sink", T)?)?;
    for c in &mut children {
        assert!(c.wait()?.success(), "a stage failed");
    }
    let w: Vec<u64> = report.split(' ').map(|x| x.parse().unwrap()).collect();
    assert_eq!((w[0], w[2]), (count, paced), "the sink saw {report}");
    println!("pipeline producer -> transform -> sink, 3 processes, 64-byte messages, every message checked");
    println!(
        "throughput: {count} messages in {:.3} s end to end = {:.2} M msg/s",
        w[1] as f64 / 1e9,
        count as f64 / (w[1] as f64 / 1e9) / 1e6
    );
    println!(
        "end-to-end latency ({paced} messages, one per 20 us): p50 {:.1} us, p90 {:.1} us, p99 {:.1} us, max {:.1} us",
        w[3] as f64 / 1e3,
        w[4] as f64 / 1e3,
        w[5] as f64 / 1e3,
        w[6] as f64 / 1e3
    );
    Ok(())
}

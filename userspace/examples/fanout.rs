//! Fan-out: a camera publisher and three subscriber processes on a topic.
//!
//! The publisher (this process) creates the topic `fanout-<pid>` (Block:
//! nobody misses a frame), starts three subscribers (this program again,
//! with the argument `subscriber`), waits until all three have joined, then
//! publishes frames: a plain-data header (`FrameHeader`: sequence number,
//! send time, length, checksum, sent as it is) and a 64 KiB body, written
//! once, in place, through a loan.
//! Every subscriber reads every frame in place, checks its order and
//! checksum, and measures the latency from the send time in the header.
//! When the publisher drops its handle, the subscribers drain and see
//! `Disconnected`, print their figures and exit; the last handle to go
//! removes the topic.
//!
//! ```text
//! cargo run --release --example fanout [-- --frames N]
//! ```

use hwlink::{Backpressure, RecvError, TopicBuilder, WaitStrategy};
use std::process::Command;
use std::time::{Duration, Instant};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

mod common;
use common::arg;

/// Bytes of a frame's body.
const BODY: usize = 64 << 10;
/// A frame's header, in front of its body: plain data, written and read
/// as it is (zerocopy's derives; no serialization).
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
struct FrameHeader {
    seq: u64,
    sent_ns: u64,
    body_len: u64,
    checksum: u64,
}

/// Bytes of a frame's header.
const HEADER: usize = core::mem::size_of::<FrameHeader>();

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

/// The body of frame `seq`: a pattern that depends on it, and its checksum.
fn body(seq: u64, buf: &mut [u8]) -> u64 {
    let mut sum = 0u64;
    for (i, chunk) in buf.chunks_mut(8).enumerate() {
        let w = seq.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ (i as u64);
        chunk.copy_from_slice(&w.to_le_bytes()[..chunk.len()]);
        sum = sum.wrapping_add(w);
    }
    sum
}

fn word(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

fn subscriber(topic: &str) -> Result<(), Box<dyn std::error::Error>> {
    let mut sub = TopicBuilder::new(topic)
        .wait(WaitStrategy::SpinPark)
        .subscribe()?;
    let mut frame = vec![0u8; BODY];
    let mut next = 0u64;
    let mut lat = Vec::new();
    loop {
        match sub.read() {
            Ok(sample) => {
                let arrived = now_ns();
                let header: FrameHeader = sample.read_field_at(0).ok_or("frame too short")?;
                assert_eq!(header.body_len as usize, BODY, "frame {next}: body length");
                sample.bytes().read_at(HEADER, &mut frame);
                assert_eq!(header.seq, next, "a frame lost or out of order");
                let mut sum = 0u64;
                for chunk in frame.chunks(8) {
                    sum = sum.wrapping_add(word(chunk, 0));
                }
                assert_eq!(sum, header.checksum, "frame {next}: checksum");
                lat.push(arrived.saturating_sub(header.sent_ns));
                next += 1;
            }
            Err(RecvError::Disconnected) => break,
            Err(e) => return Err(e.into()),
        }
    }
    lat.sort_unstable();
    let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
    println!(
        "subscriber pid {}: {next} frames, all in order and intact; latency p50 {:.1} µs, p99 {:.1} µs, max {:.1} µs",
        std::process::id(),
        pct(0.5) as f64 / 1e3,
        pct(0.99) as f64 / 1e3,
        *lat.last().unwrap() as f64 / 1e3
    );
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("subscriber") {
        return subscriber(&args[2]);
    }
    let frames = arg("--frames", 20_000);
    let topic = format!("fanout-{}", std::process::id());
    let mut camera = TopicBuilder::new(&topic)
        .capacity(64)
        .slot_size((HEADER + BODY) as u32)
        .backpressure(Backpressure::Block)
        .wait(WaitStrategy::SpinPark)
        .publish()?;
    let exe = std::env::current_exe()?;
    let mut children = (0..3)
        .map(|_| Command::new(&exe).args(["subscriber", &topic]).spawn())
        .collect::<Result<Vec<_>, _>>()?;
    let t0 = Instant::now();
    while camera.subscribers() < 3 {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "subscribers did not join"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    let mut pattern = vec![0u8; BODY];
    let start = Instant::now();
    for seq in 0..frames {
        let sum = body(seq, &mut pattern);
        let mut loan = camera.loan(HEADER + BODY)?;
        loan.write_at(HEADER, &pattern);
        let header = FrameHeader {
            seq,
            sent_ns: now_ns(),
            body_len: BODY as u64,
            checksum: sum,
        };
        loan.write_at(0, header.as_bytes());
        loan.publish();
    }
    let secs = start.elapsed().as_secs_f64();
    drop(camera);
    for c in &mut children {
        let status = c.wait()?;
        assert!(status.success(), "a subscriber failed: {status}");
    }
    println!(
        "publisher: {frames} frames of {} KiB to 3 subscriber processes in {secs:.2} s: {:.0} frames/s, {:.2} GB/s written once, read by each",
        BODY >> 10,
        frames as f64 / secs,
        frames as f64 * BODY as f64 / secs / 1e9
    );
    Ok(())
}

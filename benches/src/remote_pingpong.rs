//! Round trips between two processes that the caller starts separately,
//! typically one on the host and one in a VM over ivshmem memory:
//! `hwlink pingpong --backend ivshmem` measures, `hwlink pingpong-echo`
//! answers. Both ends block (or busy-poll) with the given wait strategy; over
//! a hardware doorbell a blocked end sleeps until the peer rings it.
//!
//! The measuring side sends numbered pings on `<name>.ping`; the echo side
//! answers each on `<name>.pong` (sized to the ping link) with the same
//! bytes, and the measuring side
//! checks every answer, so the round trips also prove exactly-once
//! delivery. The echo side stops when the measuring side closes.

use crate::pingpong::Stats;
use hwlink::WaitStrategy;
use hwlink::{LinkBuilder, Receiver, Sender};
use hwlink::{OpenError, RecvError, SendError};
use hwlink_drivers::{DeviceMemory, IvshmemDoorbell};
use std::sync::Arc;
use std::time::{Duration, Instant};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Round trips not measured before the measured ones.
pub const WARMUP: usize = 100;

/// The memory and wake-up path both ends use.
#[derive(Debug, Clone)]
pub struct RemoteLinks {
    /// Link name prefix, the same on both sides.
    pub name: String,
    /// The shared memory.
    pub memory: Arc<DeviceMemory>,
    /// The hardware doorbell, for ends that sleep.
    pub doorbell: Option<Arc<dyn IvshmemDoorbell>>,
    /// How both ends wait.
    pub wait: WaitStrategy,
    /// How long to wait for the other side to appear.
    pub open_timeout: Duration,
}

impl RemoteLinks {
    fn builder(&self, name: &str, size: usize) -> LinkBuilder {
        let b = LinkBuilder::new(name)
            .on_device(self.memory.clone())
            .capacity(64)
            .slot_size(size.max(8) as u32)
            .wait(self.wait)
            .ready_timeout(self.open_timeout);
        match &self.doorbell {
            Some(bell) => b.ivshmem_doorbell(bell.clone()),
            None => b,
        }
    }

    /// The measuring side: `count` round trips of `size`-byte messages,
    /// after a warm-up; returns each one's nanoseconds.
    pub fn measure(&self, count: usize, size: usize) -> Result<Vec<u64>, BoxError> {
        let mut session = self.connect(size)?;
        session.round_trips(size, WARMUP, None)?;
        session.round_trips(size, count, None)
    }

    /// Opens the measuring side's links for messages up to `largest` bytes.
    pub fn connect(&self, largest: usize) -> Result<RemoteSession, BoxError> {
        let largest = largest.max(8);
        let tx = self
            .builder(&format!("{}.ping", self.name), largest)
            .create_sender()?;
        // The echo side sizes its answers to the pings' link.
        let rx = self
            .builder(&format!("{}.pong", self.name), largest)
            .open_receiver()?;
        Ok(RemoteSession { tx, rx, next: 0 })
    }

    /// The echo side: answers every ping until the measuring side closes;
    /// returns how many it answered.
    pub fn echo(&self) -> Result<u64, BoxError> {
        let mut rx = self
            .builder(&format!("{}.ping", self.name), 8)
            .open_receiver()?;
        let mut tx = self
            .builder(&format!("{}.pong", self.name), rx.max_message())
            .create_sender()?;
        let mut answered = 0u64;
        loop {
            match rx.recv() {
                Ok(m) => match tx.send(m) {
                    Ok(()) => answered += 1,
                    Err(SendError::Disconnected(_)) => return Ok(answered),
                    Err(e) => return Err(e.to_string().into()),
                },
                Err(RecvError::Disconnected) => return Ok(answered),
                Err(e) => return Err(e.into()),
            }
        }
    }
}

/// The measuring side's open links.
#[derive(Debug)]
pub struct RemoteSession {
    tx: Sender,
    rx: Receiver,
    next: u64,
}

impl RemoteSession {
    /// Up to `count` round trips of `size` bytes (fewer if `time` passes
    /// first); every answer is checked against its ping. Returns each
    /// round trip's nanoseconds.
    pub fn round_trips(
        &mut self,
        size: usize,
        count: usize,
        time: Option<Duration>,
    ) -> Result<Vec<u64>, BoxError> {
        let size = size.max(8);
        if size > self.tx.max_message() {
            return Err(format!(
                "{size}-byte messages do not fit the {}-byte slots: connect with the largest size",
                self.tx.max_message()
            )
            .into());
        }
        let mut msg = vec![0u8; size];
        let mut samples = Vec::with_capacity(count.min(1 << 20));
        let start = Instant::now();
        for _ in 0..count {
            let i = self.next;
            self.next += 1;
            msg[..8].copy_from_slice(&i.to_le_bytes());
            msg[8..].iter_mut().for_each(|b| *b = i as u8);
            let t0 = Instant::now();
            self.tx.send(&msg[..]).map_err(|e| e.to_string())?;
            let back = self.rx.recv()?;
            samples.push(t0.elapsed().as_nanos() as u64);
            if back != msg {
                return Err(format!(
                    "round trip {i}: the answer differs from the ping (lost, duplicated or \
                     corrupted message)"
                )
                .into());
            }
            if time.is_some_and(|t| start.elapsed() >= t) {
                break;
            }
        }
        Ok(samples)
    }
}

/// Summarises measured round trips.
pub fn summarise(mut samples: Vec<u64>) -> Result<Stats, OpenError> {
    Stats::from_samples(&mut samples).ok_or_else(|| {
        OpenError::InvalidConfig("no round trips measured: use --count 1 or more".into())
    })
}

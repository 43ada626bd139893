//! An exactly-once exchange of numbered messages in both directions between
//! two processes, which may run under different kernels (a host process and
//! a guest process over one ivshmem memory): `hwlink exchange`, used by the
//! guest tests in `ci/guest/`.
//!
//! Each side creates the link it sends on (`<name>.a2b` or `<name>.b2a`) and
//! opens the one it receives on (or side A creates both, for a side B on
//! memory without CAS), then moves `count` messages each way in
//! one thread (try_send and try_recv in turns, so a one-CPU guest needs no
//! second thread). Every message carries its number and a payload derived
//! from it; the receiver checks that number `i` arrives `i`-th, once, with
//! the right payload.

use hwlink::LinkBuilder;
use hwlink::WaitStrategy;
use hwlink::{OpenError, RecvError, SendError};
use hwlink_drivers::DeviceMemory;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Which end of the exchange this process is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Sends on `<name>.a2b`, receives on `<name>.b2a`.
    A,
    /// Sends on `<name>.b2a`, receives on `<name>.a2b`.
    B,
}

/// One exchange.
#[derive(Debug, Clone)]
pub struct Exchange {
    /// Link name prefix; both sides use the same.
    pub name: String,
    /// This side's role.
    pub role: Role,
    /// Messages each way.
    pub count: u64,
    /// Bytes per message (at least 8).
    pub size: usize,
    /// Slots per ring.
    pub capacity: u32,
    /// Longest the whole exchange may take, opening included.
    pub timeout: Duration,
    /// Side A creates both links (B only opens): for a B whose memory
    /// allows no CAS (write-combining), since creating claims by CAS.
    pub a_creates_both: bool,
}

/// What an exchange did.
#[derive(Debug, Clone, Copy)]
pub struct Outcome {
    /// Messages sent.
    pub sent: u64,
    /// Messages received, each checked.
    pub received: u64,
    /// From both links open to the last message received.
    pub elapsed: Duration,
}

/// Why an exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    /// A link could not be created or opened.
    #[error("opening the links failed: {0}")]
    Open(#[from] OpenError),
    /// A message arrived out of order, twice, or damaged.
    #[error(
        "message {index} is wrong: {problem}; the ring lost, duplicated or corrupted a message \
         (check both sides map the same memory, and the memory kind's fences)"
    )]
    Wrong {
        /// Position in the stream.
        index: u64,
        /// What was wrong.
        problem: String,
    },
    /// The peer went away early.
    #[error("the peer disconnected after {sent} sent and {received} received messages")]
    Disconnected {
        /// Messages sent.
        sent: u64,
        /// Messages received.
        received: u64,
    },
    /// The time ran out.
    #[error(
        "timed out after {0:?} with {1} sent and {2} received: is the other side running, \
         on the same memory, with the same --count?"
    )]
    Timeout(Duration, u64, u64),
    /// The shared memory was found corrupt.
    #[error("{0}")]
    Corrupt(String),
}

/// The payload byte `j` of message `i`.
fn fill(i: u64, j: usize) -> u8 {
    (i as u8).wrapping_mul(31).wrapping_add(j as u8)
}

fn message(i: u64, size: usize, buf: &mut Vec<u8>) {
    buf.clear();
    buf.extend_from_slice(&i.to_le_bytes());
    buf.extend((8..size).map(|j| fill(i, j)));
}

fn check(i: u64, size: usize, got: &[u8]) -> Result<(), ExchangeError> {
    let wrong = |problem: String| ExchangeError::Wrong { index: i, problem };
    if got.len() != size {
        return Err(wrong(format!("{} bytes instead of {size}", got.len())));
    }
    let n = u64::from_le_bytes(got[..8].try_into().expect("8 bytes"));
    if n != i {
        return Err(wrong(format!("it carries number {n}")));
    }
    if let Some(j) = (8..size).find(|&j| got[j] != fill(i, j)) {
        return Err(wrong(format!("payload byte {j} differs")));
    }
    Ok(())
}

impl Exchange {
    fn names(&self) -> (String, String) {
        let a2b = format!("{}.a2b", self.name);
        let b2a = format!("{}.b2a", self.name);
        match self.role {
            Role::A => (a2b, b2a),
            Role::B => (b2a, a2b),
        }
    }

    /// Runs the exchange over `memory` (busy-polling ends).
    pub fn run(&self, memory: Arc<DeviceMemory>) -> Result<Outcome, ExchangeError> {
        let size = self.size.max(8);
        let (send_name, recv_name) = self.names();
        let builder = |name: &str| {
            LinkBuilder::new(name)
                .on_device(memory.clone())
                .capacity(self.capacity)
                .slot_size(size as u32)
                .wait(WaitStrategy::BusyPoll)
                .ready_timeout(self.timeout)
        };
        let start = Instant::now();
        let (mut tx, mut rx) = match (self.role, self.a_creates_both) {
            (Role::B, true) => (
                builder(&send_name).open_sender()?,
                builder(&recv_name).open_receiver()?,
            ),
            (Role::A, true) => {
                let rx = builder(&recv_name).create_receiver()?;
                (builder(&send_name).create_sender()?, rx)
            }
            (_, false) => {
                let tx = builder(&send_name).create_sender()?;
                (tx, builder(&recv_name).open_receiver()?)
            }
        };
        let opened = Instant::now();
        let deadline = start + self.timeout;
        let (mut sent, mut received) = (0u64, 0u64);
        let mut buf = Vec::with_capacity(size);
        let mut idle = 0u32;
        while sent < self.count || received < self.count {
            let mut progressed = false;
            while sent < self.count {
                message(sent, size, &mut buf);
                match tx.try_send(&buf[..]) {
                    Ok(()) => {
                        sent += 1;
                        progressed = true;
                    }
                    Err(SendError::Full(_)) => break,
                    Err(SendError::Disconnected(_)) => {
                        return Err(ExchangeError::Disconnected { sent, received })
                    }
                    Err(e) => return Err(ExchangeError::Corrupt(e.to_string())),
                }
            }
            while received < self.count {
                match rx.try_recv() {
                    Ok(msg) => {
                        check(received, size, &msg)?;
                        received += 1;
                        progressed = true;
                    }
                    Err(RecvError::Empty) => break,
                    Err(RecvError::Disconnected) => {
                        return Err(ExchangeError::Disconnected { sent, received })
                    }
                    Err(e) => return Err(ExchangeError::Corrupt(e.to_string())),
                }
            }
            if progressed {
                idle = 0;
                continue;
            }
            idle = idle.wrapping_add(1);
            if idle % 1024 == 0 {
                if Instant::now() >= deadline {
                    return Err(ExchangeError::Timeout(self.timeout, sent, received));
                }
                // On a one-CPU guest the peer's other half may need the CPU.
                std::thread::yield_now();
            } else {
                std::hint::spin_loop();
            }
        }
        // Nothing more may arrive: a duplicate would show up here.
        match rx.try_recv() {
            Err(RecvError::Empty | RecvError::Disconnected) => {}
            Ok(msg) => {
                return Err(ExchangeError::Wrong {
                    index: received,
                    problem: format!("an extra {}-byte message arrived after the last", msg.len()),
                })
            }
            Err(e) => return Err(ExchangeError::Corrupt(e.to_string())),
        }
        Ok(Outcome {
            sent,
            received,
            elapsed: opened.elapsed(),
        })
    }
}

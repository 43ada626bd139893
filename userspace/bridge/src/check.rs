//! `hwlink-bridge check-send` / `check-recv`: end-to-end checks of a
//! bridged path with checked messages. The sender numbers its messages
//! and fills each body from its number; the receiver verifies every byte
//! and counts what arrived in order, what was lost (a jump forward) and
//! what came twice (a number already seen). Users run them to verify a
//! deployment; the bridge's tests run them on two network hosts.

use crate::local::{Kind, LocalOptions, Put, Sink, Source, Took};
use crate::{wire, BridgeError};
use std::io::Write;
use std::time::{Duration, Instant};

/// Bytes of a checked message's header (sender id, sequence number).
pub const CHECK_HEADER: usize = 16;

/// A checked message's length for `seq`, between 16 and `max` bytes.
pub fn check_len(seq: u64, max: usize) -> usize {
    let span = max.saturating_sub(CHECK_HEADER) as u64 + 1;
    CHECK_HEADER + (seq.wrapping_mul(0x9e37_79b9) % span) as usize
}

/// Writes checked message `seq` of sender `id` into `buf` (its length).
pub fn fill(buf: &mut [u8], id: u64, seq: u64) {
    buf[0..8].copy_from_slice(&id.to_le_bytes());
    buf[8..16].copy_from_slice(&seq.to_le_bytes());
    for (i, b) in buf[CHECK_HEADER..].iter_mut().enumerate() {
        *b = (seq as u8).wrapping_add(i as u8).wrapping_mul(31);
    }
}

/// Reads a checked message: its sender and number, if every byte is right.
pub fn verify(msg: &[u8]) -> Result<(u64, u64), String> {
    if msg.len() < CHECK_HEADER {
        return Err(format!(
            "{} bytes: shorter than a checked message",
            msg.len()
        ));
    }
    let id = u64::from_le_bytes(msg[0..8].try_into().unwrap());
    let seq = u64::from_le_bytes(msg[8..16].try_into().unwrap());
    for (i, &b) in msg[CHECK_HEADER..].iter().enumerate() {
        if b != (seq as u8).wrapping_add(i as u8).wrapping_mul(31) {
            return Err(format!("message {seq}: byte {} is wrong", i + CHECK_HEADER));
        }
    }
    Ok((id, seq))
}

/// Sends `count` checked messages of up to `max_size` bytes into the
/// object; each send waits at most `timeout`. Prints `sent N` at the end,
/// or `blocked after N` if a send timed out (the receiving side stalled:
/// back-pressure), which returns `Ok(false)`.
pub fn send(
    kind: Kind,
    name: &str,
    o: &LocalOptions,
    count: u64,
    max_size: usize,
    timeout: Duration,
) -> Result<bool, BridgeError> {
    let mut sink = Sink::open(kind, name, o).map_err(|source| BridgeError::Open {
        kind,
        name: name.to_string(),
        source,
    })?;
    let id = crate::random_id();
    let mut buf = vec![0u8; max_size.max(CHECK_HEADER)];
    let start = Instant::now();
    for seq in 0..count {
        let len = check_len(seq, buf.len());
        fill(&mut buf[..len], id, seq);
        match sink.put(&buf[..len], Some(timeout)) {
            Ok(Put::Done) => {}
            Ok(Put::Full) => {
                println!("blocked after {seq}");
                return Ok(false);
            }
            Ok(Put::Gone) => {
                return Err(BridgeError::Local(format!(
                    "{kind} `{name}`: the receiving side is gone after {seq} messages"
                )))
            }
            Err(e) => return Err(BridgeError::Local(format!("{kind} `{name}`: {e}"))),
        }
    }
    println!("sent {count} in {:.3} s", start.elapsed().as_secs_f64());
    Ok(true)
}

/// What a checking receiver counted.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Tally {
    /// Messages received.
    pub received: u64,
    /// Messages skipped over (numbers never seen).
    pub lost: u64,
    /// Messages whose number was already seen.
    pub duplicated: u64,
    /// Next number expected from the (one) sender.
    pub next: u64,
}

impl Tally {
    /// Counts message `seq`.
    pub fn count(&mut self, seq: u64) {
        self.received += 1;
        if seq < self.next {
            self.duplicated += 1;
        } else {
            self.lost += seq - self.next;
            self.next = seq + 1;
        }
    }
}

/// Receives checked messages until number `count - 1` arrived (or nothing
/// came for `idle`), verifying every byte; after `stall_after` messages it
/// stops reading for `stall` first; prints `progress N` every `progress`
/// messages. Prints the tally; `Ok(true)` if every
/// message arrived exactly once and in order.
pub fn recv(
    kind: Kind,
    name: &str,
    o: &LocalOptions,
    count: u64,
    idle: Duration,
    stall: Option<(u64, Duration)>,
    progress: Option<u64>,
) -> Result<bool, BridgeError> {
    let mut source = Source::open(kind, name, o).map_err(|source| BridgeError::Open {
        kind,
        name: name.to_string(),
        source,
    })?;
    println!("ready");
    let _ = std::io::stdout().flush();
    let mut t = Tally::default();
    let mut sender = None;
    let mut buf = Vec::new();
    let mut last = Instant::now();
    let start = Instant::now();
    while t.next < count {
        if let Some((after, pause)) = stall {
            if t.received == after {
                println!("stalling after {after}");
                let _ = std::io::stdout().flush();
                std::thread::sleep(pause);
            }
        }
        wire::begin_data(&mut buf);
        match source.take(&mut buf, Some(Duration::from_millis(50))) {
            Ok(Took::One) => {}
            Ok(Took::Nothing) => {
                if last.elapsed() >= idle {
                    break;
                }
                continue;
            }
            Ok(Took::Closed) => break,
            Ok(Took::Lagged(n)) => {
                t.lost += n;
                continue;
            }
            Err(e) => return Err(BridgeError::Local(format!("{kind} `{name}`: {e}"))),
        }
        last = Instant::now();
        let msg = wire::records(&buf).next().unwrap_or_default();
        let (id, seq) = verify(msg).map_err(BridgeError::Local)?;
        if *sender.get_or_insert(id) != id {
            // A restarted sender: a new numbering.
            return Err(BridgeError::Local(format!(
                "messages from a second sender {id:#x}: check-recv follows one"
            )));
        }
        t.count(seq);
        if progress.is_some_and(|p| p > 0 && t.received % p == 0) {
            println!("progress {}", t.received);
            let _ = std::io::stdout().flush();
        }
    }
    let ok = t.next == count && t.lost == 0 && t.duplicated == 0 && t.received == count;
    println!(
        "received {} next {} lost {} duplicated {} in {:.3} s",
        t.received,
        t.next,
        t.lost,
        t.duplicated,
        start.elapsed().as_secs_f64()
    );
    Ok(ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_verify_and_corruption_is_caught() {
        let mut b = [0u8; 64];
        for seq in [0u64, 1, 77, 1 << 40] {
            let len = check_len(seq, 64);
            assert!((16..=64).contains(&len));
            fill(&mut b[..len], 5, seq);
            assert_eq!(verify(&b[..len]), Ok((5, seq)));
            if len > 16 {
                b[len - 1] ^= 1;
                assert!(verify(&b[..len]).is_err());
            }
        }
    }

    #[test]
    fn tally_counts_loss_and_duplicates() {
        let mut t = Tally::default();
        for s in [0, 1, 2, 5, 6, 3, 7] {
            t.count(s);
        }
        assert_eq!((t.received, t.lost, t.duplicated, t.next), (7, 2, 1, 8));
    }
}

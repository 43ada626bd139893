//! Streams of generated messages and their running checksums: one
//! producing and one consuming body, run by the parent or by a child.

use super::msg::{check, fill, MAX_MSG};

/// Initial value of the running checksum.
pub const CHECKSUM_INIT: u64 = 0xcbf2_9ce4_8422_2325;

/// Folds one message into a running checksum (FNV-1a over 8-byte words,
/// the length first).
#[inline]
pub fn checksum(mut h: u64, msg: &[u8]) -> u64 {
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    h = (h ^ msg.len() as u64).wrapping_mul(PRIME);
    let mut chunks = msg.chunks_exact(8);
    for c in &mut chunks {
        h = (h ^ u64::from_le_bytes(c.try_into().unwrap())).wrapping_mul(PRIME);
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut w = [0u8; 8];
        w[..rest.len()].copy_from_slice(rest);
        h = (h ^ u64::from_le_bytes(w)).wrapping_mul(PRIME);
    }
    h
}

/// Produces messages `0..count`, handing each to `send` (which panics if
/// it cannot send); returns their checksum.
pub fn produce(count: u64, mut send: impl FnMut(u64, &[u8])) -> u64 {
    let mut buf = [0u8; MAX_MSG];
    let mut h = CHECKSUM_INIT;
    for seq in 0..count {
        let len = fill(seq, &mut buf);
        h = checksum(h, &buf[..len]);
        send(seq, &buf[..len]);
    }
    h
}

/// Consumes messages `0..count`: `recv` copies message `seq` into the
/// buffer and returns its length (or panics); each is checked (sequence,
/// length, contents). Returns their checksum.
pub fn consume(count: u64, mut recv: impl FnMut(u64, &mut [u8]) -> usize) -> u64 {
    let mut scratch = [0u8; MAX_MSG];
    let mut buf = [0u8; 256];
    let mut h = CHECKSUM_INIT;
    for seq in 0..count {
        let n = recv(seq, &mut buf);
        if let Err(e) = check(seq, &buf[..n], &mut scratch) {
            panic!("{e}");
        }
        h = checksum(h, &buf[..n]);
    }
    h
}

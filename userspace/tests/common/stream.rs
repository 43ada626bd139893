//! Running checksums of streams of messages.

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

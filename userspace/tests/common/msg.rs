//! Generated messages: each carries its sequence number and bytes that
//! depend on it, so that a receiver checks order, length and contents.

/// Largest generated message.
pub const MAX_MSG: usize = 200;

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Length of message `seq`: 8..=200 bytes.
pub fn msg_len(seq: u64) -> usize {
    8 + (splitmix(seq) % (MAX_MSG as u64 - 7)) as usize
}

/// Writes message `seq` into `buf` (at least [`MAX_MSG`] bytes): its
/// sequence number (LE) then bytes that depend on `seq` and their
/// position. Returns its length.
#[inline]
pub fn fill(seq: u64, buf: &mut [u8]) -> usize {
    let len = msg_len(seq);
    buf[..8].copy_from_slice(&seq.to_le_bytes());
    let base = seq.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x5bd1_e995;
    for (k, chunk) in (1u64..).zip(buf[8..len].chunks_mut(8)) {
        let w = (base ^ k.wrapping_mul(0xd1b5_4a32_d192_ed03)).rotate_left(k as u32);
        chunk.copy_from_slice(&w.to_le_bytes()[..chunk.len()]);
    }
    len
}

/// Checks that `msg` is message `expected`: sequence, length and contents.
#[inline]
pub fn check(expected: u64, msg: &[u8], scratch: &mut [u8; MAX_MSG]) -> Result<(), String> {
    if msg.len() < 8 {
        return Err(format!(
            "message #{expected}: {} bytes, shorter than a sequence number",
            msg.len()
        ));
    }
    let seq = u64::from_le_bytes(msg[..8].try_into().unwrap());
    if seq != expected {
        return Err(format!(
            "message #{expected} carries sequence {seq} (lost, duplicated or reordered)"
        ));
    }
    let len = fill(expected, scratch);
    if msg.len() != len {
        return Err(format!(
            "message #{expected}: {} bytes, expected {len}",
            msg.len()
        ));
    }
    if msg != &scratch[..len] {
        return Err(format!("message #{expected}: contents differ"));
    }
    Ok(())
}

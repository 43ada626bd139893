//! A generated message (see `msg.rs`) as a vector.

use super::msg::{fill, MAX_MSG};

/// Message `seq` as a vector.
pub fn message(seq: u64) -> Vec<u8> {
    let mut buf = [0u8; MAX_MSG];
    let len = fill(seq, &mut buf);
    buf[..len].to_vec()
}

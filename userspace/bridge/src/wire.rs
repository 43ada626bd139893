//! The bridge's wire format on zenoh: data frames (a batch of numbered
//! messages from one exporting stream) and acknowledgements (an importer's
//! cumulative "delivered up to here", a request to resend after a gap, or
//! a request to be brought into a stream). All integers little-endian.
//! What comes off the network is untrusted: decoding checks every length
//! against the bytes actually there and never panics.

/// First word of every frame: "HLB1".
pub const MAGIC: u32 = 0x3142_4c48;
/// A data frame.
pub const KIND_DATA: u8 = 1;
/// An acknowledgement.
pub const KIND_ACK: u8 = 2;

/// Data flag: the exporter (re)starts this importer's view of the stream
/// at `first_seq` (sent to an importer it has not served yet).
pub const FLAG_RESYNC: u8 = 1;
/// Ack flag: the importer saw a gap and asks for everything from `next`.
pub const FLAG_NACK: u8 = 1;
/// Ack flag: the importer does not know this stream (it restarted, or
/// forgot it) and asks to be brought in.
pub const FLAG_FRESH: u8 = 2;

/// Bytes of a data frame's header.
pub const DATA_HEADER: usize = 32;
/// Bytes of an acknowledgement.
pub const ACK_LEN: usize = 32;
/// Bytes before each record's body (its length).
pub const RECORD_HEADER: usize = 4;
/// Most records one frame may claim (a hostile count cannot make the
/// importer loop for long: each record needs at least its 4-byte length).
pub const MAX_RECORDS: u32 = 1 << 24;

/// A data frame's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataHeader {
    /// `FLAG_RESYNC` or 0.
    pub flags: u8,
    /// The exporting stream (random per exporter run).
    pub stream: u64,
    /// Sequence number of the first record.
    pub first_seq: u64,
    /// Records in the frame.
    pub count: u32,
}

/// An importer's acknowledgement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ack {
    /// `FLAG_NACK`, `FLAG_FRESH` or 0.
    pub flags: u8,
    /// The stream acknowledged (0: none yet, a hello).
    pub stream: u64,
    /// The importer (random per importer run).
    pub importer: u64,
    /// Every message below this was delivered (for a NACK: accepted).
    pub next: u64,
}

/// Why a frame was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// Shorter than its header.
    #[error("frame of {0} bytes is shorter than its header")]
    Short(usize),
    /// Not a bridge frame.
    #[error("bad magic {0:#x}: not an hwlink bridge frame (another program on this key?)")]
    BadMagic(u32),
    /// Not the kind expected.
    #[error("frame kind {0} is not the one expected on this key")]
    WrongKind(u8),
    /// Its records do not add up to its length.
    #[error("record {index} claims {len} bytes, {left} left in the frame")]
    BadRecord {
        /// Which record.
        index: u32,
        /// Its length field.
        len: u32,
        /// Bytes left.
        left: usize,
    },
    /// More records claimed than it can hold.
    #[error("frame claims {0} records")]
    TooMany(u32),
    /// Bytes after the last record.
    #[error("{0} bytes after the last record")]
    Trailing(usize),
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(w)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(w)
}

/// Starts a data frame in `buf` (cleared) with room for its header, which
/// [`finish_data`] fills in.
pub fn begin_data(buf: &mut Vec<u8>) {
    buf.clear();
    buf.resize(DATA_HEADER, 0);
}

/// Writes the header of the frame begun in `buf`.
pub fn finish_data(buf: &mut [u8], h: &DataHeader) {
    buf[0..4].copy_from_slice(&MAGIC.to_le_bytes());
    buf[4] = KIND_DATA;
    buf[5] = h.flags;
    buf[6..8].fill(0);
    buf[8..16].copy_from_slice(&h.stream.to_le_bytes());
    buf[16..24].copy_from_slice(&h.first_seq.to_le_bytes());
    buf[24..28].copy_from_slice(&h.count.to_le_bytes());
    buf[28..32].fill(0);
}

/// A frame with no records (a resync marker or an idle heartbeat).
pub fn empty_data(h: &DataHeader) -> Vec<u8> {
    let mut b = Vec::new();
    begin_data(&mut b);
    finish_data(&mut b, h);
    b
}

/// Reads a data frame's header and checks that its records fill it
/// exactly; the records are then walked with [`records`].
pub fn decode_data(b: &[u8]) -> Result<DataHeader, WireError> {
    if b.len() < DATA_HEADER {
        return Err(WireError::Short(b.len()));
    }
    let magic = u32_at(b, 0);
    if magic != MAGIC {
        return Err(WireError::BadMagic(magic));
    }
    if b[4] != KIND_DATA {
        return Err(WireError::WrongKind(b[4]));
    }
    let h = DataHeader {
        flags: b[5],
        stream: u64_at(b, 8),
        first_seq: u64_at(b, 16),
        count: u32_at(b, 24),
    };
    if h.count > MAX_RECORDS {
        return Err(WireError::TooMany(h.count));
    }
    let mut at = DATA_HEADER;
    for index in 0..h.count {
        let left = b.len() - at;
        if left < RECORD_HEADER {
            return Err(WireError::BadRecord {
                index,
                len: 0,
                left,
            });
        }
        let len = u32_at(b, at);
        let body = left - RECORD_HEADER;
        if len as usize > body {
            return Err(WireError::BadRecord {
                index,
                len,
                left: body,
            });
        }
        at += RECORD_HEADER + len as usize;
    }
    if at != b.len() {
        return Err(WireError::Trailing(b.len() - at));
    }
    Ok(h)
}

/// The record bodies of a frame that [`decode_data`] accepted.
pub fn records(b: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut at = DATA_HEADER;
    std::iter::from_fn(move || {
        if at + RECORD_HEADER > b.len() {
            return None;
        }
        let len = u32_at(b, at) as usize;
        let start = at + RECORD_HEADER;
        let end = start.checked_add(len).filter(|&e| e <= b.len())?;
        at = end;
        Some(&b[start..end])
    })
}

/// Encodes an acknowledgement.
pub fn encode_ack(a: &Ack) -> [u8; ACK_LEN] {
    let mut b = [0u8; ACK_LEN];
    b[0..4].copy_from_slice(&MAGIC.to_le_bytes());
    b[4] = KIND_ACK;
    b[5] = a.flags;
    b[8..16].copy_from_slice(&a.stream.to_le_bytes());
    b[16..24].copy_from_slice(&a.importer.to_le_bytes());
    b[24..32].copy_from_slice(&a.next.to_le_bytes());
    b
}

/// Decodes an acknowledgement.
pub fn decode_ack(b: &[u8]) -> Result<Ack, WireError> {
    if b.len() != ACK_LEN {
        return Err(WireError::Short(b.len()));
    }
    let magic = u32_at(b, 0);
    if magic != MAGIC {
        return Err(WireError::BadMagic(magic));
    }
    if b[4] != KIND_ACK {
        return Err(WireError::WrongKind(b[4]));
    }
    Ok(Ack {
        flags: b[5],
        stream: u64_at(b, 8),
        importer: u64_at(b, 16),
        next: u64_at(b, 24),
    })
}

/// Appends one record to the frame begun in `buf`: its length, then its
/// body, which `append` appends (exactly `len` bytes).
pub fn push_record(buf: &mut Vec<u8>, len: usize, append: impl FnOnce(&mut Vec<u8>)) {
    let at = buf.len();
    buf.extend_from_slice(&(len as u32).to_le_bytes());
    append(buf);
    debug_assert_eq!(buf.len(), at + RECORD_HEADER + len);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn frame(msgs: &[&[u8]], first_seq: u64) -> Vec<u8> {
        let mut b = Vec::new();
        begin_data(&mut b);
        for m in msgs {
            push_record(&mut b, m.len(), |d| d.extend_from_slice(m));
        }
        let h = DataHeader {
            flags: FLAG_RESYNC,
            stream: 7,
            first_seq,
            count: msgs.len() as u32,
        };
        finish_data(&mut b, &h);
        b
    }

    #[test]
    fn data_round_trips() {
        let b = frame(&[b"a", b"", b"hello"], 9);
        let h = decode_data(&b).unwrap();
        assert_eq!(
            (h.flags, h.stream, h.first_seq, h.count),
            (FLAG_RESYNC, 7, 9, 3)
        );
        let r: Vec<&[u8]> = records(&b).collect();
        assert_eq!(r, vec![&b"a"[..], b"", b"hello"]);
    }

    #[test]
    fn ack_round_trips() {
        let a = Ack {
            flags: FLAG_NACK,
            stream: 1,
            importer: 2,
            next: 3,
        };
        assert_eq!(decode_ack(&encode_ack(&a)).unwrap(), a);
        assert!(decode_ack(&[0; 5]).is_err());
        assert_eq!(
            decode_data(&encode_ack(&a)),
            Err(WireError::WrongKind(KIND_ACK))
        );
    }

    #[test]
    fn lies_are_refused() {
        let mut b = frame(&[b"abc"], 0);
        b[24] = 2; // two records claimed, one there
        assert!(matches!(
            decode_data(&b),
            Err(WireError::BadRecord { index: 1, .. })
        ));
        let mut b = frame(&[b"abc"], 0);
        b[DATA_HEADER] = 200; // record longer than the frame
        assert!(matches!(
            decode_data(&b),
            Err(WireError::BadRecord { index: 0, .. })
        ));
        let mut b = frame(&[b"abc"], 0);
        b.push(0);
        assert_eq!(decode_data(&b), Err(WireError::Trailing(1)));
        assert_eq!(decode_data(&[1, 2]), Err(WireError::Short(2)));
        let mut b = frame(&[], 0);
        b[24..28].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(decode_data(&b), Err(WireError::TooMany(u32::MAX)));
    }

    proptest! {
        // Any bytes at all: decoding never panics, and an accepted frame's
        // records are exactly the ones it claims.
        #[test]
        fn any_bytes_are_safe(mut bytes in proptest::collection::vec(any::<u8>(), 0..200), prefix in any::<bool>()) {
            if prefix && bytes.len() >= 8 {
                bytes[0..4].copy_from_slice(&MAGIC.to_le_bytes());
                bytes[4] = KIND_DATA;
            }
            if let Ok(h) = decode_data(&bytes) {
                prop_assert_eq!(records(&bytes).count(), h.count as usize);
            }
            let _ = decode_ack(&bytes);
        }

        #[test]
        fn frames_round_trip(msgs in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 0..20)) {
            let refs: Vec<&[u8]> = msgs.iter().map(|m| &m[..]).collect();
            let b = frame(&refs, 5);
            let h = decode_data(&b).unwrap();
            prop_assert_eq!(h.count as usize, msgs.len());
            let got: Vec<Vec<u8>> = records(&b).map(<[u8]>::to_vec).collect();
            prop_assert_eq!(got, msgs);
        }
    }
}

//! The on-disk record format of the outbox (see the module documentation in `mod.rs`).

/// Format version written in byte 0.
pub const VERSION: u8 = 1;
const HEADER: usize = 1 + 4 + 8;

/// One result waiting to be forwarded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Position in the outbox; also the record's stable id within this data directory.
    pub seq: u64,
    /// When the function emitted it, ms since the Unix epoch.
    pub created_ms: u64,
    /// The function that emitted it.
    pub function: String,
    /// The topic the function emitted to (without the cloud prefix).
    pub topic: String,
    /// The payload, as emitted.
    pub payload: Vec<u8>,
}

/// A stored value that is not a valid record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// Shorter than its own header or fields claim.
    #[error("record truncated")]
    Truncated,
    /// Written by an unknown format version.
    #[error("unknown record format version {0}")]
    Version(u8),
    /// The checksum does not match the content.
    #[error("record checksum mismatch")]
    Checksum,
    /// A text field is not UTF-8.
    #[error("record text field is not UTF-8")]
    Utf8,
}

/// The key of a record: its sequence number, big-endian so keys sort in FIFO order.
pub fn key(seq: u64) -> [u8; 8] {
    seq.to_be_bytes()
}

/// Decodes a key written by [`key`].
pub fn seq_of(key: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(key.try_into().ok()?))
}

/// Encodes a record's value (everything but `seq`, which is the key).
pub fn encode(created_ms: u64, function: &str, topic: &str, payload: &[u8]) -> Vec<u8> {
    let function = &function.as_bytes()[..function.len().min(u16::MAX as usize)];
    let topic = &topic.as_bytes()[..topic.len().min(u16::MAX as usize)];
    let mut v = Vec::with_capacity(HEADER + 4 + function.len() + topic.len() + payload.len());
    v.push(VERSION);
    v.extend_from_slice(&[0; 4]);
    v.extend_from_slice(&created_ms.to_be_bytes());
    v.extend_from_slice(&(function.len() as u16).to_be_bytes());
    v.extend_from_slice(function);
    v.extend_from_slice(&(topic.len() as u16).to_be_bytes());
    v.extend_from_slice(topic);
    v.extend_from_slice(payload);
    let crc = crc32fast::hash(&v[5..]);
    v[1..5].copy_from_slice(&crc.to_be_bytes());
    v
}

/// Decodes a record's value, checking version and checksum.
pub fn decode(seq: u64, v: &[u8]) -> Result<Record, RecordError> {
    if v.len() < HEADER + 4 {
        return Err(RecordError::Truncated);
    }
    if v[0] != VERSION {
        return Err(RecordError::Version(v[0]));
    }
    let crc = u32::from_be_bytes(v[1..5].try_into().expect("4 bytes"));
    if crc32fast::hash(&v[5..]) != crc {
        return Err(RecordError::Checksum);
    }
    let created_ms = u64::from_be_bytes(v[5..13].try_into().expect("8 bytes"));
    let mut at = HEADER;
    let mut field = |v: &[u8]| -> Result<String, RecordError> {
        let len = v.get(at..at + 2).ok_or(RecordError::Truncated)?;
        let len = u16::from_be_bytes([len[0], len[1]]) as usize;
        let bytes = v.get(at + 2..at + 2 + len).ok_or(RecordError::Truncated)?;
        at += 2 + len;
        String::from_utf8(bytes.to_vec()).map_err(|_| RecordError::Utf8)
    };
    let function = field(v)?;
    let topic = field(v)?;
    Ok(Record {
        seq,
        created_ms,
        function,
        topic,
        payload: v[at..].to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_flipped_bit_is_caught_by_the_checksum() {
        let mut v = encode(1, "f", "t/x", b"payload");
        assert_eq!(decode(3, &v).unwrap().payload, b"payload");
        let last = v.len() - 1;
        v[last] ^= 1;
        assert_eq!(decode(3, &v), Err(RecordError::Checksum));
    }

    proptest! {
        #[test]
        fn records_round_trip(ms in any::<u64>(), f in ".{0,20}", t in ".{0,40}", p in prop::collection::vec(any::<u8>(), 0..300)) {
            let r = decode(9, &encode(ms, &f, &t, &p)).unwrap();
            prop_assert_eq!(r, Record { seq: 9, created_ms: ms, function: f, topic: t, payload: p });
        }

        #[test]
        fn garbage_never_panics(v in prop::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode(0, &v);
        }
    }
}

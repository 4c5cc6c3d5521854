//! The on-disk record format of the outbox (see the module documentation in `mod.rs`).

/// Format version written in byte 0.
pub const VERSION: u8 = 1;
const HEADER: usize = 1 + 4 + 8;

/// The drain class of a record: high priority records are sent before normal ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Priority {
    /// Sent first (alerts).
    High = 0,
    /// Bulk telemetry.
    Normal = 1,
    /// Sent last: function log lines forwarded to the cloud.
    Low = 2,
}

impl Priority {
    /// The three classes, in drain order.
    pub const ALL: [Priority; 3] = [Priority::High, Priority::Normal, Priority::Low];

    /// The name used in metrics and the API.
    pub fn name(self) -> &'static str {
        match self {
            Priority::High => "high",
            Priority::Normal => "normal",
            Priority::Low => "low",
        }
    }
}

/// One result waiting to be forwarded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Position in the outbox; also the record's stable id within this data directory.
    pub seq: u64,
    /// Its drain class.
    pub priority: Priority,
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

/// The key of a record: its class, then its sequence number big-endian, so keys sort by
/// class and, within a class, in FIFO order.
pub fn key(priority: Priority, seq: u64) -> [u8; 9] {
    let mut k = [0; 9];
    k[0] = priority as u8;
    k[1..].copy_from_slice(&seq.to_be_bytes());
    k
}

/// Decodes a key written by [`key`].
pub fn parse_key(key: &[u8]) -> Option<(Priority, u64)> {
    let priority = match key.first()? {
        0 => Priority::High,
        1 => Priority::Normal,
        2 => Priority::Low,
        _ => return None,
    };
    Some((priority, u64::from_be_bytes(key.get(1..)?.try_into().ok()?)))
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
pub fn decode(priority: Priority, seq: u64, v: &[u8]) -> Result<Record, RecordError> {
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
        priority,
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
        assert_eq!(decode(Priority::Normal, 3, &v).unwrap().payload, b"payload");
        let last = v.len() - 1;
        v[last] ^= 1;
        assert_eq!(decode(Priority::Normal, 3, &v), Err(RecordError::Checksum));
    }

    #[test]
    fn keys_sort_by_class_then_sequence() {
        assert!(key(Priority::High, u64::MAX) < key(Priority::Normal, 0));
        assert!(key(Priority::Normal, 255) < key(Priority::Normal, 256));
        assert_eq!(
            parse_key(&key(Priority::High, 7)),
            Some((Priority::High, 7))
        );
        assert_eq!(parse_key(&[3; 9]), None);
        assert_eq!(parse_key(&[1; 8]), None);
    }

    proptest! {
        #[test]
        fn records_round_trip(ms in any::<u64>(), f in ".{0,20}", t in ".{0,40}", p in prop::collection::vec(any::<u8>(), 0..300)) {
            let r = decode(Priority::High, 9, &encode(ms, &f, &t, &p)).unwrap();
            prop_assert_eq!(r, Record { seq: 9, priority: Priority::High, created_ms: ms, function: f, topic: t, payload: p });
        }

        #[test]
        fn garbage_never_panics(v in prop::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode(Priority::Normal, 0, &v);
        }
    }
}

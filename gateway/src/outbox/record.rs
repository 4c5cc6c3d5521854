//! The on-disk record format of the outbox (see the module documentation in `mod.rs`).

/// Format version written in byte 0: 2 adds the age stamp. Records of version 1 are still read.
pub const VERSION: u8 = 2;
/// The fixed part of a version 1 record: version, checksum, creation time.
const HEADER_V1: usize = 1 + 4 + 8;
/// The fixed part of a version 2 record: version 1's, then the age stamp.
const HEADER: usize = HEADER_V1 + 8;

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
    /// When the function emitted it, ms since the Unix epoch (the time consumers see).
    pub created_ms: u64,
    /// The gateway's age clock when it was written ([`crate::age`]): what its age is
    /// measured from. `None` for a record written before the age clock (format 1), whose
    /// age is measured on the wall clock.
    pub held_ms: Option<u64>,
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

/// Bytes of a function's name kept in a key (names are at most 64 bytes; longer ones share
/// a queue with whatever has the same first 255 bytes).
const NAME_IN_KEY: usize = u8::MAX as usize;

/// Where a record sits in the outbox: its class, the queue of the function that emitted it
/// (the name's bytes, as in the key), and its sequence number.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RecordId {
    /// Its drain class.
    pub priority: Priority,
    /// The emitting function's queue: its name's bytes.
    pub queue: Vec<u8>,
    /// Its sequence number.
    pub seq: u64,
}

impl RecordId {
    /// The id of a record emitted by `function`.
    pub fn new(priority: Priority, function: &str, seq: u64) -> RecordId {
        RecordId {
            priority,
            queue: queue_name(function).to_vec(),
            seq,
        }
    }

    /// Its key.
    pub fn key(&self) -> Vec<u8> {
        key_in(self.priority, &self.queue, self.seq)
    }
}

impl Record {
    /// Where it sits in the outbox (what [`crate::outbox::Outbox::ack`] takes).
    pub fn id(&self) -> RecordId {
        RecordId::new(self.priority, &self.function, self.seq)
    }
}

/// The queue name of `function`: its name's bytes, at most 255.
pub fn queue_name(function: &str) -> &[u8] {
    &function.as_bytes()[..function.len().min(NAME_IN_KEY)]
}

/// The prefix of one function's queue in one class: `class u8 | name_len u8 | name`.
pub fn queue_prefix(priority: Priority, queue: &[u8]) -> Vec<u8> {
    let queue = &queue[..queue.len().min(NAME_IN_KEY)];
    let mut k = Vec::with_capacity(2 + queue.len() + 8);
    k.push(priority as u8);
    k.push(queue.len() as u8);
    k.extend_from_slice(queue);
    k
}

/// The key of a record: its class, its function's queue, then its sequence number
/// big-endian, so keys sort by class, then by function, and within a function's queue in
/// FIFO order.
pub fn key(priority: Priority, function: &str, seq: u64) -> Vec<u8> {
    key_in(priority, queue_name(function), seq)
}

/// The key of record `seq` in `queue`.
pub fn key_in(priority: Priority, queue: &[u8], seq: u64) -> Vec<u8> {
    let mut k = queue_prefix(priority, queue);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

fn priority_of(b: u8) -> Option<Priority> {
    match b {
        0 => Some(Priority::High),
        1 => Some(Priority::Normal),
        2 => Some(Priority::Low),
        _ => None,
    }
}

/// Decodes a key written by [`key`].
pub fn parse_key(key: &[u8]) -> Option<RecordId> {
    let priority = priority_of(*key.first()?)?;
    let len = usize::from(*key.get(1)?);
    if key.len() != 2 + len + 8 {
        return None;
    }
    Some(RecordId {
        priority,
        queue: key[2..2 + len].to_vec(),
        seq: u64::from_be_bytes(key[2 + len..].try_into().ok()?),
    })
}

/// The sequence number of a key written by [`key`] (its last 8 bytes), without parsing the
/// rest.
pub fn seq_of(key: &[u8]) -> Option<u64> {
    let at = key.len().checked_sub(8).filter(|&at| at >= 2)?;
    Some(u64::from_be_bytes(key[at..].try_into().ok()?))
}

/// Decodes a key of the first format (before per-function queues): class, then sequence
/// number, 9 bytes. [`crate::outbox::Outbox::open`] moves such records to [`key`]s.
pub fn parse_legacy_key(key: &[u8]) -> Option<(Priority, u64)> {
    if key.len() != 9 {
        return None;
    }
    Some((
        priority_of(key[0])?,
        u64::from_be_bytes(key[1..].try_into().ok()?),
    ))
}

/// Encodes a record's value (everything but `seq`, which is the key), stamped with the age
/// clock's `held_ms`.
pub fn encode(
    created_ms: u64,
    held_ms: u64,
    function: &str,
    topic: &str,
    payload: &[u8],
) -> Vec<u8> {
    let function = &function.as_bytes()[..function.len().min(u16::MAX as usize)];
    let topic = &topic.as_bytes()[..topic.len().min(u16::MAX as usize)];
    let mut v = Vec::with_capacity(HEADER + 4 + function.len() + topic.len() + payload.len());
    v.push(VERSION);
    v.extend_from_slice(&[0; 4]);
    v.extend_from_slice(&created_ms.to_be_bytes());
    v.extend_from_slice(&held_ms.to_be_bytes());
    v.extend_from_slice(&(function.len() as u16).to_be_bytes());
    v.extend_from_slice(function);
    v.extend_from_slice(&(topic.len() as u16).to_be_bytes());
    v.extend_from_slice(topic);
    v.extend_from_slice(payload);
    let crc = checksum(v[0], &v[5..]);
    v[1..5].copy_from_slice(&crc.to_be_bytes());
    v
}

/// The CRC-32 of a record: format 2 covers its version byte and everything after the
/// checksum (so a flipped version byte is caught), format 1 only what follows the checksum.
fn checksum(version: u8, rest: &[u8]) -> u32 {
    if version == 1 {
        return crc32fast::hash(rest);
    }
    let mut h = crc32fast::Hasher::new();
    h.update(&[version]);
    h.update(rest);
    h.finalize()
}

/// Decodes a record's value (format 2, or 1), checking version and checksum.
pub fn decode(priority: Priority, seq: u64, v: &[u8]) -> Result<Record, RecordError> {
    let header = match v.first() {
        Some(1) => HEADER_V1,
        Some(&VERSION) => HEADER,
        Some(&other) => return Err(RecordError::Version(other)),
        None => return Err(RecordError::Truncated),
    };
    if v.len() < header + 4 {
        return Err(RecordError::Truncated);
    }
    let crc = u32::from_be_bytes(v[1..5].try_into().expect("4 bytes"));
    if checksum(v[0], &v[5..]) != crc {
        return Err(RecordError::Checksum);
    }
    let created_ms = u64::from_be_bytes(v[5..13].try_into().expect("8 bytes"));
    let held_ms =
        (header == HEADER).then(|| u64::from_be_bytes(v[13..21].try_into().expect("8 bytes")));
    let mut at = header;
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
        held_ms,
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
        let mut v = encode(1, 2, "f", "t/x", b"payload");
        assert_eq!(decode(Priority::Normal, 3, &v).unwrap().payload, b"payload");
        let last = v.len() - 1;
        v[last] ^= 1;
        assert_eq!(decode(Priority::Normal, 3, &v), Err(RecordError::Checksum));
        // The version byte is covered: a format 2 record is never read as format 1.
        let mut v = encode(1, 2, "f", "t/x", b"payload");
        v[0] = 1;
        assert_eq!(decode(Priority::Normal, 3, &v), Err(RecordError::Checksum));
    }

    #[test]
    fn keys_sort_by_class_then_function_then_sequence() {
        assert!(key(Priority::High, "z", u64::MAX) < key(Priority::Normal, "a", 0));
        assert!(key(Priority::Normal, "f", 255) < key(Priority::Normal, "f", 256));
        assert_eq!(
            parse_key(&key(Priority::High, "conv", 7)),
            Some(RecordId::new(Priority::High, "conv", 7))
        );
        let prefix = queue_prefix(Priority::Normal, b"f");
        assert!(key(Priority::Normal, "f", 3).starts_with(&prefix));
        assert!(!key(Priority::Normal, "ff", 3).starts_with(&prefix));
        assert_eq!(parse_key(&[3; 11]), None);
        assert_eq!(parse_key(&[1, 1, b'f', 0, 0]), None);
        assert_eq!(
            parse_legacy_key(&[1, 0, 0, 0, 0, 0, 0, 0, 9]),
            Some((Priority::Normal, 9))
        );
        assert_eq!(parse_legacy_key(&key(Priority::Normal, "f", 9)), None);
    }

    #[test]
    fn a_record_of_the_first_format_is_read_without_an_age_stamp() {
        // Format 1: version 1, crc, created_ms, then the fields (no age stamp).
        let mut v = vec![1, 0, 0, 0, 0];
        v.extend_from_slice(&7u64.to_be_bytes());
        v.extend_from_slice(&[0, 1, b'f', 0, 3, b't', b'/', b'x', b'!']);
        let crc = crc32fast::hash(&v[5..]);
        v[1..5].copy_from_slice(&crc.to_be_bytes());
        let r = decode(Priority::Normal, 4, &v).unwrap();
        assert_eq!((r.created_ms, r.held_ms), (7, None));
        assert_eq!(
            (r.function.as_str(), r.topic.as_str(), &r.payload[..]),
            ("f", "t/x", &b"!"[..])
        );
        assert_eq!(
            decode(Priority::Normal, 4, &[3; 40]),
            Err(RecordError::Version(3))
        );
    }

    proptest! {
        #[test]
        fn records_round_trip(ms in any::<u64>(), held in any::<u64>(), f in ".{0,20}", t in ".{0,40}", p in prop::collection::vec(any::<u8>(), 0..300)) {
            let r = decode(Priority::High, 9, &encode(ms, held, &f, &t, &p)).unwrap();
            prop_assert_eq!(r, Record { seq: 9, priority: Priority::High, created_ms: ms, held_ms: Some(held), function: f, topic: t, payload: p });
        }

        #[test]
        fn garbage_never_panics(v in prop::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode(Priority::Normal, 0, &v);
        }
    }
}

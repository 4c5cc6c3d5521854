//! `outbox_record`: the outbox's record decoder, on raw stored values and on valid records
//! with a corrupted span.

use crate::outbox::record::{self, Priority, RecordError};

/// The first byte picks the mode. Even: the rest is a stored value as read back from sled
/// (what decodes must be exactly what [`record::encode`] writes for it). Odd: the rest makes a
/// valid record, then up to four consecutive bytes of it are XORed with a non-zero mask; a
/// CRC-32 catches every error burst of up to 32 bits, so it must not decode.
pub fn outbox_record(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode % 2 == 0 {
        raw(mode, rest);
    } else {
        corrupted(rest);
    }
}

fn raw(mode: u8, v: &[u8]) {
    let priority = Priority::ALL[usize::from(mode / 2) % Priority::ALL.len()];
    if let Some(id) = record::parse_key(v) {
        assert_eq!(id.key(), v, "a key that parses is what key() writes for it");
    }
    match record::decode(priority, 7, v) {
        Ok(r) => {
            assert_eq!((r.priority, r.seq), (priority, 7));
            // A record of the first format decodes too (no age stamp); only the current
            // format is written.
            if let Some(held) = r.held_ms {
                let again = record::encode(r.created_ms, held, &r.function, &r.topic, &r.payload);
                assert_eq!(
                    again, v,
                    "a record that decodes is what encode writes for it"
                );
            }
        }
        Err(RecordError::Version(v0)) => assert!(v0 != 1 && v0 != record::VERSION),
        Err(_) => {}
    }
}

fn corrupted(rest: &[u8]) {
    // Operands: where (2 bytes), the mask (4 bytes), created_ms (8 bytes; the age stamp is
    // derived from it), then the function, topic and payload split by lengths.
    let mut fixed = [0u8; 14];
    let n = fixed.len().min(rest.len());
    fixed[..n].copy_from_slice(&rest[..n]);
    let rest = &rest[n..];
    let at = usize::from(u16::from_le_bytes([fixed[0], fixed[1]]));
    let mask = [fixed[2], fixed[3], fixed[4], fixed[5]];
    let created_ms = u64::from_le_bytes(fixed[6..14].try_into().expect("8 bytes"));
    let (function, rest) = super::split(rest);
    let (topic, payload) = super::split(rest);
    let (function, topic) = (
        String::from_utf8_lossy(function),
        String::from_utf8_lossy(topic),
    );
    let held_ms = created_ms.rotate_left(17);
    let mut v = record::encode(created_ms, held_ms, &function, &topic, payload);
    let r = record::decode(Priority::Normal, 1, &v).expect("a record just encoded decodes");
    assert_eq!(
        (
            r.created_ms,
            r.held_ms,
            &r.function,
            &r.topic,
            &r.payload[..]
        ),
        (
            created_ms,
            Some(held_ms),
            &function.to_string(),
            &topic.to_string(),
            payload
        )
    );
    let before = v.clone();
    let at = at % v.len();
    for (i, m) in mask.iter().enumerate() {
        if let Some(b) = v.get_mut(at + i) {
            *b ^= m;
        }
    }
    if v == before {
        return;
    }
    // A version byte of 1 is read as the first format: the checksum still fails (format 2's
    // covers the version byte, format 1's does not).
    let want = if v[0] == record::VERSION || v[0] == 1 {
        RecordError::Checksum
    } else {
        RecordError::Version(v[0])
    };
    assert_eq!(
        record::decode(Priority::Normal, 1, &v),
        Err(want),
        "a corrupted span of at most 32 bits at byte {at}"
    );
}

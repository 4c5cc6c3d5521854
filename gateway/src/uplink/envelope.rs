//! What the cloud receives: each result in an envelope (a CBOR map with the record's stable
//! id), or several in one batch message (`cloud.batch_records` > 1). The format is
//! documented for consumers in `docs/data-formats.md`.

use ciborium::Value;

use crate::codec::{encode_value, text, CodecError, Map};

/// What the cloud receives for each result.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    /// Stable record id: `<store id hex>-<seq>`; equal ids mean the same record.
    pub id: String,
    /// The gateway's id.
    pub gateway: String,
    /// The record's sequence number (increasing per gateway data directory).
    pub seq: u64,
    /// The function that emitted the result.
    pub function: String,
    /// The topic the function emitted to.
    pub topic: String,
    /// Emission time, ms since the Unix epoch.
    pub ts: u64,
    /// The function's payload, unchanged.
    pub payload: Vec<u8>,
}

/// The envelope format version.
pub const ENVELOPE_VERSION: u64 = 1;

impl Envelope {
    /// Encodes as a CBOR map with text keys.
    pub fn encode(&self) -> Vec<u8> {
        encode_value(&self.to_value())
    }

    fn to_value(&self) -> Value {
        Value::Map(vec![
            (text("v"), Value::from(ENVELOPE_VERSION)),
            (text("id"), text(&self.id)),
            (text("gateway"), text(&self.gateway)),
            (text("seq"), Value::from(self.seq)),
            (text("function"), text(&self.function)),
            (text("topic"), text(&self.topic)),
            (text("ts"), Value::from(self.ts)),
            (text("payload"), Value::Bytes(self.payload.clone())),
        ])
    }

    /// Encodes several envelopes as one batch message: a CBOR map
    /// `{"v": 1, "gateway": text, "records": [envelope, ...]}`, records in outbox order.
    pub fn encode_batch(gateway: &str, records: &[Envelope]) -> Vec<u8> {
        encode_value(&Value::Map(vec![
            (text("v"), Value::from(ENVELOPE_VERSION)),
            (text("gateway"), text(gateway)),
            (
                text("records"),
                Value::Array(records.iter().map(Envelope::to_value).collect()),
            ),
        ]))
    }

    /// Decodes a batch message written by [`Envelope::encode_batch`].
    pub fn decode_batch(bytes: &[u8]) -> Result<Vec<Envelope>, CodecError> {
        let m = Map::decode(bytes, "batch is not a map")?;
        if m.uint("v") != Some(ENVELOPE_VERSION) {
            return Err(CodecError::Shape("unknown batch version"));
        }
        let records = m
            .get("records")
            .and_then(Value::as_array)
            .ok_or(CodecError::Shape("records"))?;
        records
            .iter()
            .map(|r| Envelope::decode(&encode_value(r)))
            .collect()
    }

    /// Decodes an envelope (what a cloud-side consumer does).
    pub fn decode(bytes: &[u8]) -> Result<Envelope, CodecError> {
        let m = Map::decode(bytes, "envelope is not a map")?;
        if m.uint("v") != Some(ENVELOPE_VERSION) {
            return Err(CodecError::Shape("unknown envelope version"));
        }
        let uint = |k: &'static str| m.uint(k).ok_or(CodecError::Shape(k));
        Ok(Envelope {
            id: m.text("id")?,
            gateway: m.text("gateway")?,
            seq: uint("seq")?,
            function: m.text("function")?,
            topic: m.text("topic")?,
            ts: uint("ts")?,
            payload: m.bytes("payload")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_round_trip() {
        let e = Envelope {
            id: "ab-7".into(),
            gateway: "gw".into(),
            seq: 7,
            function: "f".into(),
            topic: "t".into(),
            ts: 99,
            payload: vec![0, 1, 255],
        };
        assert_eq!(Envelope::decode(&e.encode()).unwrap(), e);
    }

    #[test]
    fn batches_round_trip_in_order() {
        let e = |seq: u64| Envelope {
            id: format!("ab-{seq}"),
            gateway: "gw".into(),
            seq,
            function: "f".into(),
            topic: format!("t/{seq}"),
            ts: 99,
            payload: vec![seq as u8],
        };
        let batch = vec![e(3), e(4), e(9)];
        assert_eq!(
            Envelope::decode_batch(&Envelope::encode_batch("gw", &batch)).unwrap(),
            batch
        );
        assert!(
            Envelope::decode_batch(&e(1).encode()).is_err(),
            "an envelope is not a batch"
        );
    }
}

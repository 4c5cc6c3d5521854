//! Every CBOR encoding and decoding the gateway does, in one place (ciborium).
//!
//! - Inputs: sensor payloads must be one well-formed CBOR data item ([`check_well_formed`]).
//! - Outputs: each forwarded result is wrapped in an [`Envelope`] (documented in the README).
//! - Readings: the documented sensor reading map ([`encode_reading`]), for tools and tests.

use ciborium::Value;

/// A payload that is not what it should be.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// Not well-formed CBOR (or nested deeper than the decoder allows).
    #[error("not well-formed CBOR: {0}")]
    Malformed(String),
    /// Bytes left over after the first data item.
    #[error("{0} bytes of trailing data after the CBOR item")]
    Trailing(usize),
    /// Well-formed, but not the expected shape.
    #[error("unexpected CBOR shape: {0}")]
    Shape(&'static str),
}

/// Checks that `bytes` is exactly one well-formed CBOR data item.
pub fn check_well_formed(bytes: &[u8]) -> Result<(), CodecError> {
    let mut rest = bytes;
    let _: Value =
        ciborium::de::from_reader(&mut rest).map_err(|e| CodecError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(CodecError::Trailing(rest.len()));
    }
    Ok(())
}

fn encode(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    ciborium::ser::into_writer(value, &mut out).expect("writing CBOR to a Vec cannot fail");
    out
}

fn text(s: &str) -> Value {
    Value::Text(s.to_string())
}

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
        encode(&self.to_value())
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
        encode(&Value::Map(vec![
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
            .map(|r| Envelope::decode(&encode(r)))
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
            payload: m
                .get("payload")
                .and_then(Value::as_bytes)
                .cloned()
                .ok_or(CodecError::Shape("payload"))?,
        })
    }
}

/// A decoded CBOR map with text keys, for reading fields by name.
struct Map(Vec<(Value, Value)>);

impl Map {
    fn decode(bytes: &[u8], not_a_map: &'static str) -> Result<Map, CodecError> {
        let mut rest = bytes;
        let value: Value = ciborium::de::from_reader(&mut rest)
            .map_err(|e| CodecError::Malformed(e.to_string()))?;
        match value {
            Value::Map(entries) => Ok(Map(entries)),
            _ => Err(CodecError::Shape(not_a_map)),
        }
    }

    fn get(&self, k: &str) -> Option<&Value> {
        self.0
            .iter()
            .find(|(key, _)| key.as_text() == Some(k))
            .map(|(_, v)| v)
    }

    fn text(&self, k: &'static str) -> Result<String, CodecError> {
        self.get(k)
            .and_then(Value::as_text)
            .map(str::to_string)
            .ok_or(CodecError::Shape(k))
    }

    fn uint(&self, k: &str) -> Option<u64> {
        self.get(k)
            .and_then(Value::as_integer)
            .and_then(|i| u64::try_from(i).ok())
    }
}

/// Encodes any serde value as CBOR (deployment manifests, history entries).
pub fn to_cbor<T: serde::Serialize>(value: &T) -> Vec<u8> {
    let mut out = Vec::new();
    ciborium::ser::into_writer(value, &mut out).expect("writing CBOR to a Vec cannot fail");
    out
}

/// Decodes a serde value from exactly one CBOR item (nothing may follow it).
pub fn from_cbor<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    let mut rest = bytes;
    let value =
        ciborium::de::from_reader(&mut rest).map_err(|e| CodecError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(CodecError::Trailing(rest.len()));
    }
    Ok(value)
}

/// A signed function package or command, as published on a deploy topic: a CBOR map
/// `{"v": 1, "manifest": bytes, "key": bytes(32), "signature": bytes(64), "module": bytes}`.
/// The signature (ed25519, by `key`) covers the manifest bytes exactly; the manifest holds the
/// module's SHA-256, so the module is covered through it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Package {
    /// The manifest, CBOR, exactly as signed.
    pub manifest: Vec<u8>,
    /// The signer's ed25519 public key.
    pub key: [u8; 32],
    /// The ed25519 signature of `manifest`.
    pub signature: [u8; 64],
    /// The WebAssembly module (empty for commands).
    pub module: Vec<u8>,
}

/// The package format version.
pub const PACKAGE_VERSION: u64 = 1;

impl Package {
    /// Encodes the package.
    pub fn encode(&self) -> Vec<u8> {
        encode(&Value::Map(vec![
            (text("v"), Value::from(PACKAGE_VERSION)),
            (text("manifest"), Value::Bytes(self.manifest.clone())),
            (text("key"), Value::Bytes(self.key.to_vec())),
            (text("signature"), Value::Bytes(self.signature.to_vec())),
            (text("module"), Value::Bytes(self.module.clone())),
        ]))
    }

    /// Decodes a package, strictly: exactly these keys, the right lengths, nothing after it.
    pub fn decode(bytes: &[u8]) -> Result<Package, CodecError> {
        let mut rest = bytes;
        let value: Value = ciborium::de::from_reader(&mut rest)
            .map_err(|e| CodecError::Malformed(e.to_string()))?;
        if !rest.is_empty() {
            return Err(CodecError::Trailing(rest.len()));
        }
        let Value::Map(entries) = value else {
            return Err(CodecError::Shape("package is not a map"));
        };
        if entries.len() != 5 {
            return Err(CodecError::Shape(
                "package must have exactly v, manifest, key, signature, module",
            ));
        }
        let m = Map(entries);
        if m.uint("v") != Some(PACKAGE_VERSION) {
            return Err(CodecError::Shape("unknown package version"));
        }
        let bytes = |k: &'static str| {
            m.get(k)
                .and_then(Value::as_bytes)
                .cloned()
                .ok_or(CodecError::Shape(k))
        };
        Ok(Package {
            manifest: bytes("manifest")?,
            key: bytes("key")?
                .try_into()
                .map_err(|_| CodecError::Shape("key"))?,
            signature: bytes("signature")?
                .try_into()
                .map_err(|_| CodecError::Shape("signature"))?,
            module: bytes("module")?,
        })
    }
}

/// A sensor reading in the documented format (see the README).
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    /// Sensor id.
    pub sensor: String,
    /// What is measured.
    pub kind: String,
    /// The value.
    pub value: f64,
    /// Its unit.
    pub unit: String,
    /// Wall-clock time, ms since the Unix epoch.
    pub ts: Option<u64>,
    /// Per-node sequence number.
    pub seq: Option<u64>,
}

/// Encodes a reading.
pub fn encode_reading(r: &Reading) -> Vec<u8> {
    let mut m = vec![
        (text("sensor"), text(&r.sensor)),
        (text("kind"), text(&r.kind)),
        (text("value"), Value::Float(r.value)),
        (text("unit"), text(&r.unit)),
    ];
    if let Some(ts) = r.ts {
        m.push((text("ts"), Value::from(ts)));
    }
    if let Some(seq) = r.seq {
        m.push((text("seq"), Value::from(seq)));
    }
    encode(&Value::Map(m))
}

/// Decodes a reading (numbers may be integers or floats).
pub fn decode_reading(bytes: &[u8]) -> Result<Reading, CodecError> {
    let m = Map::decode(bytes, "reading is not a map")?;
    let value = match m.get("value") {
        Some(Value::Float(f)) => *f,
        Some(Value::Integer(i)) => i128::from(*i) as f64,
        _ => return Err(CodecError::Shape("value")),
    };
    Ok(Reading {
        sensor: m.text("sensor")?,
        kind: m.text("kind")?,
        value,
        unit: m.text("unit")?,
        ts: m.uint("ts"),
        seq: m.uint("seq"),
    })
}

/// A dead-letter entry: why an input was not processed, and (a prefix of) it.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetterEntry {
    /// The function that failed, or `None` for an input rejected before dispatch.
    pub function: Option<String>,
    /// The failed function's version (its module's SHA-256 prefix).
    pub version: Option<String>,
    /// The input topic.
    pub topic: String,
    /// A short reason (`oversized`, `malformed`, `trap`, `out_of_fuel`, `timeout`, `error`, ...).
    pub reason: String,
    /// The full error text.
    pub error: String,
    /// When the input arrived, ms since the Unix epoch.
    pub received_ms: u64,
    /// Invocations tried.
    pub attempts: u32,
    /// When the gateway retries it by itself (ms since the Unix epoch); `None`: it will not.
    pub retry_at_ms: Option<u64>,
    /// The input's full length.
    pub payload_len: u64,
    /// The input, or its first `dead_letters.max_payload_bytes` bytes.
    pub payload: Vec<u8>,
}

impl DeadLetterEntry {
    /// Whether it can be replayed: a function failed on it and the whole payload was kept.
    pub fn replayable(&self) -> bool {
        self.function.is_some() && self.payload.len() as u64 == self.payload_len
    }

    /// Encodes as a CBOR map.
    pub fn encode(&self) -> Vec<u8> {
        encode(&Value::Map(vec![
            (
                text("function"),
                self.function.as_deref().map(text).unwrap_or(Value::Null),
            ),
            (
                text("version"),
                self.version.as_deref().map(text).unwrap_or(Value::Null),
            ),
            (text("topic"), text(&self.topic)),
            (text("reason"), text(&self.reason)),
            (text("error"), text(&self.error)),
            (text("received_ms"), Value::from(self.received_ms)),
            (text("attempts"), Value::from(self.attempts)),
            (
                text("retry_at_ms"),
                self.retry_at_ms.map(Value::from).unwrap_or(Value::Null),
            ),
            (text("payload_len"), Value::from(self.payload_len)),
            (text("payload"), Value::Bytes(self.payload.clone())),
        ]))
    }

    /// Decodes what [`DeadLetterEntry::encode`] wrote.
    pub fn decode(bytes: &[u8]) -> Result<DeadLetterEntry, CodecError> {
        let m = Map::decode(bytes, "dead letter is not a map")?;
        let uint = |k: &'static str| m.uint(k).ok_or(CodecError::Shape(k));
        Ok(DeadLetterEntry {
            function: m
                .get("function")
                .and_then(Value::as_text)
                .map(str::to_string),
            version: m
                .get("version")
                .and_then(Value::as_text)
                .map(str::to_string),
            topic: m.text("topic")?,
            reason: m.text("reason")?,
            error: m.text("error")?,
            received_ms: uint("received_ms")?,
            attempts: uint("attempts")? as u32,
            retry_at_ms: m.uint("retry_at_ms"),
            payload_len: uint("payload_len")?,
            payload: m
                .get("payload")
                .and_then(Value::as_bytes)
                .cloned()
                .ok_or(CodecError::Shape("payload"))?,
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

    #[test]
    fn garbage_and_trailing_bytes_are_not_cbor_items() {
        assert!(matches!(
            check_well_formed(b"\xff\xff"),
            Err(CodecError::Malformed(_))
        ));
        assert!(matches!(
            check_well_formed(b""),
            Err(CodecError::Malformed(_))
        ));
        assert_eq!(
            check_well_formed(&[0x01, 0x02]),
            Err(CodecError::Trailing(1))
        );
        let r = Reading {
            sensor: "s".into(),
            kind: "k".into(),
            value: 1.5,
            unit: "C".into(),
            ts: None,
            seq: Some(3),
        };
        assert!(check_well_formed(&encode_reading(&r)).is_ok());
        assert_eq!(decode_reading(&encode_reading(&r)).unwrap(), r);
    }

    #[test]
    fn dead_letters_round_trip() {
        let d = DeadLetterEntry {
            function: Some("f".into()),
            version: Some("0123456789abcdef".into()),
            topic: "t".into(),
            reason: "trap".into(),
            error: "boom".into(),
            received_ms: 5,
            attempts: 1,
            retry_at_ms: Some(9),
            payload_len: 3,
            payload: vec![1, 2, 3],
        };
        assert_eq!(DeadLetterEntry::decode(&d.encode()).unwrap(), d);
        assert!(d.replayable());
        let cut = DeadLetterEntry {
            payload_len: 9,
            ..d.clone()
        };
        assert!(!cut.replayable());
        assert!(!DeadLetterEntry {
            function: None,
            ..d
        }
        .replayable());
    }

    #[test]
    fn deep_nesting_is_refused_not_a_stack_overflow() {
        let bomb = vec![0x81u8; 100_000];
        assert!(check_well_formed(&bomb).is_err());
    }

    proptest::proptest! {
        /// What a sensor node encodes (the no_std `kiri-reading` crate, minicbor) is what the
        /// gateway decodes (ciborium), field for field.
        #[test]
        fn the_gateway_reads_what_nodes_write(
            sensor in "[a-z0-9-]{1,24}",
            kind in "[a-z]{1,12}",
            unit in "[A-Za-z%]{1,4}",
            value in proptest::num::f64::NORMAL | proptest::num::f64::ZERO,
            ts in proptest::option::of(proptest::prelude::any::<u64>()),
            uptime_ms in proptest::option::of(proptest::prelude::any::<u64>()),
            seq in proptest::option::of(proptest::prelude::any::<u64>()),
        ) {
            let r = kiri_reading::Reading { sensor: &sensor, kind: &kind, value, unit: &unit, ts, uptime_ms, seq };
            let mut buf = [0u8; 256];
            let n = r.encode(&mut buf).unwrap();
            let got = decode_reading(&buf[..n]).unwrap();
            proptest::prop_assert_eq!(got, Reading { sensor: sensor.clone(), kind: kind.clone(), value, unit: unit.clone(), ts, seq });
        }
    }
}

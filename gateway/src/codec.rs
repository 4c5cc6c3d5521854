//! CBOR helpers the gateway's wire types share (ciborium): the well-formedness check the `cbor`
//! payload format uses ([`check_well_formed`]), serde values to and from CBOR, and a reader of
//! CBOR maps with text keys. A leaf: the wire types live beside their owners (the result
//! envelope in the uplink, packages in deploy, dead-letter entries in dead_letters); the sensor
//! reading is `kiri_reading`'s, shared with the nodes and the function SDK.

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

/// Encodes a CBOR value.
pub(crate) fn encode_value(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    ciborium::ser::into_writer(value, &mut out).expect("writing CBOR to a Vec cannot fail");
    out
}

/// A CBOR text value.
pub(crate) fn text(s: &str) -> Value {
    Value::Text(s.to_string())
}

/// A decoded CBOR map with text keys, for reading fields by name.
pub(crate) struct Map(pub(crate) Vec<(Value, Value)>);

impl Map {
    /// Decodes one CBOR map (what follows it is not looked at); `not_a_map` names the shape
    /// error otherwise.
    pub(crate) fn decode(bytes: &[u8], not_a_map: &'static str) -> Result<Map, CodecError> {
        let mut rest = bytes;
        let value: Value = ciborium::de::from_reader(&mut rest)
            .map_err(|e| CodecError::Malformed(e.to_string()))?;
        match value {
            Value::Map(entries) => Ok(Map(entries)),
            _ => Err(CodecError::Shape(not_a_map)),
        }
    }

    /// The value of key `k`.
    pub(crate) fn get(&self, k: &str) -> Option<&Value> {
        self.0
            .iter()
            .find(|(key, _)| key.as_text() == Some(k))
            .map(|(_, v)| v)
    }

    /// The text value of key `k`, or a shape error naming it.
    pub(crate) fn text(&self, k: &'static str) -> Result<String, CodecError> {
        self.get(k)
            .and_then(Value::as_text)
            .map(str::to_string)
            .ok_or(CodecError::Shape(k))
    }

    /// The unsigned integer value of key `k`.
    pub(crate) fn uint(&self, k: &str) -> Option<u64> {
        self.get(k)
            .and_then(Value::as_integer)
            .and_then(|i| u64::try_from(i).ok())
    }

    /// The byte string value of key `k`, or a shape error naming it.
    pub(crate) fn bytes(&self, k: &'static str) -> Result<Vec<u8>, CodecError> {
        self.get(k)
            .and_then(Value::as_bytes)
            .cloned()
            .ok_or(CodecError::Shape(k))
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A node's reading, encoded by `kiri_reading` (minicbor, no_std).
    fn node_reading(r: &kiri_reading::Reading<'_>) -> Vec<u8> {
        let mut buf = [0u8; 256];
        let n = r.encode(&mut buf).unwrap();
        buf[..n].to_vec()
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
        let r = kiri_reading::Reading {
            sensor: "s",
            kind: "k",
            value: 1.5,
            unit: "C",
            ts: None,
            uptime_ms: None,
            seq: Some(3),
        };
        let bytes = node_reading(&r);
        assert!(check_well_formed(&bytes).is_ok());
        assert_eq!(kiri_reading::Reading::decode(&bytes).unwrap(), r);
    }

    #[test]
    fn deep_nesting_is_refused_not_a_stack_overflow() {
        let bomb = vec![0x81u8; 100_000];
        assert!(check_well_formed(&bomb).is_err());
    }

    proptest::proptest! {
        /// What a sensor node encodes (the no_std `kiri-reading` crate, minicbor) passes the
        /// gateway's input check and reads (ciborium) field for field.
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
            let bytes = node_reading(&r);
            proptest::prop_assert!(check_well_formed(&bytes).is_ok());
            let m = Map::decode(&bytes, "reading is not a map").unwrap();
            let got = (m.text("sensor").unwrap(), m.text("kind").unwrap(), m.text("unit").unwrap());
            proptest::prop_assert_eq!(got, (sensor.clone(), kind.clone(), unit.clone()));
            proptest::prop_assert_eq!(m.get("value").and_then(Value::as_float), Some(value));
            proptest::prop_assert_eq!((m.uint("ts"), m.uint("uptime_ms"), m.uint("seq")), (ts, uptime_ms, seq));
        }
    }
}

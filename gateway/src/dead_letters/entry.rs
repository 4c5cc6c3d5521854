//! A dead letter: why an input was not processed, and (a prefix of) it. The one entry type:
//! the pipeline records it, the store keeps it as a CBOR map, the retry task and the HTTP
//! API read it back.

use ciborium::Value;

use crate::codec::{encode_value, text, CodecError, Map};

/// A dead-letter entry: why an input was not processed, and (a prefix of) it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Entry {
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
    /// When the gateway retries it by itself (ms since the Unix epoch, as the wall clock read
    /// when it was scheduled: for people); `None`: it will not.
    pub retry_at_ms: Option<u64>,
    /// The same on the gateway's age clock ([`crate::age`]): what the retry waits for, so a
    /// clock step neither delays nor hurries it. `None` in entries written before it (their
    /// retry is due at once).
    #[serde(skip)]
    pub retry_at_age: Option<u64>,
    /// The input's full length.
    pub payload_len: u64,
    /// The input, or its first `dead_letters.max_payload_bytes` bytes (the API's listings
    /// show its start, as text or hex).
    #[serde(skip_serializing, default)]
    pub payload: Vec<u8>,
}

impl Entry {
    /// Whether it can be replayed: a function failed on it and the whole payload was kept.
    pub fn replayable(&self) -> bool {
        self.function.is_some() && self.payload.len() as u64 == self.payload_len
    }

    /// Encodes as a CBOR map.
    pub fn encode(&self) -> Vec<u8> {
        encode_value(&Value::Map(vec![
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
            (
                text("retry_at_age"),
                self.retry_at_age.map(Value::from).unwrap_or(Value::Null),
            ),
            (text("payload_len"), Value::from(self.payload_len)),
            (text("payload"), Value::Bytes(self.payload.clone())),
        ]))
    }

    /// Decodes what [`Entry::encode`] wrote.
    pub fn decode(bytes: &[u8]) -> Result<Entry, CodecError> {
        let m = Map::decode(bytes, "dead letter is not a map")?;
        let uint = |k: &'static str| m.uint(k).ok_or(CodecError::Shape(k));
        Ok(Entry {
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
            retry_at_age: m.uint("retry_at_age"),
            payload_len: uint("payload_len")?,
            payload: m.bytes("payload")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dead_letters_round_trip() {
        let d = Entry {
            function: Some("f".into()),
            version: Some("0123456789abcdef".into()),
            topic: "t".into(),
            reason: "trap".into(),
            error: "boom".into(),
            received_ms: 5,
            attempts: 1,
            retry_at_ms: Some(9),
            retry_at_age: Some(4),
            payload_len: 3,
            payload: vec![1, 2, 3],
        };
        assert_eq!(Entry::decode(&d.encode()).unwrap(), d);
        assert!(d.replayable());
        let cut = Entry {
            payload_len: 9,
            ..d.clone()
        };
        assert!(!cut.replayable());
        assert!(!Entry {
            function: None,
            ..d
        }
        .replayable());
    }
}

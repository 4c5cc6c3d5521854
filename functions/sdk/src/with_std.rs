//! The `std` feature: serde on top of the ABI, for functions built for `wasm32-wasip1`.

use std::fmt;
use std::string::{String, ToString};
use std::vec;
use std::vec::Vec;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::{emit, host, Error, Event, Format};

/// Why a payload could not be read as the type asked for.
#[derive(Debug)]
pub enum ParseError {
    /// Not JSON of that shape.
    Json(serde_json::Error),
    /// Not CBOR of that shape.
    Cbor(String),
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseError::Json(e) => write!(f, "JSON: {e}"),
            ParseError::Cbor(e) => write!(f, "CBOR: {e}"),
        }
    }
}

impl std::error::Error for ParseError {}

impl Event<'_> {
    /// The payload as `T`: from JSON when the function received JSON ([`crate::input_format`]:
    /// a `json` trigger, or `deliver = "json"`), from CBOR otherwise.
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, ParseError> {
        match crate::input_format() {
            Some(Format::Json) => self.json(),
            _ => self.cbor(),
        }
    }

    /// The payload read as JSON.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, ParseError> {
        serde_json::from_slice(self.payload).map_err(ParseError::Json)
    }

    /// The payload read as one CBOR item.
    pub fn cbor<T: DeserializeOwned>(&self) -> Result<T, ParseError> {
        ciborium::de::from_reader(self.payload).map_err(|e| ParseError::Cbor(e.to_string()))
    }
}

/// Sends `value` to the cloud as JSON (see [`emit`]). A value serde cannot write as JSON (a
/// map with keys that are not text) is [`Error::INVALID`].
pub fn emit_json<T: Serialize + ?Sized>(topic: &str, value: &T) -> Result<(), Error> {
    let payload = serde_json::to_vec(value).map_err(|_| Error::INVALID)?;
    emit(topic, &payload)
}

/// Sends `value` to the cloud as CBOR (see [`emit`]).
pub fn emit_cbor<T: Serialize + ?Sized>(topic: &str, value: &T) -> Result<(), Error> {
    let mut payload = Vec::new();
    ciborium::ser::into_writer(value, &mut payload).map_err(|_| Error::INVALID)?;
    emit(topic, &payload)
}

/// The configuration value `key`, whatever its length; `None` if it is not set.
pub fn config_string(key: &str) -> Option<String> {
    let mut buf = vec![0u8; 256];
    loop {
        let n = host::config(key.as_bytes(), &mut buf);
        if n < 0 {
            return None;
        }
        let n = n as usize;
        if n <= buf.len() {
            buf.truncate(n);
            return String::from_utf8(buf).ok();
        }
        buf.resize(n, 0);
    }
}

/// The configuration value `key` (an empty key: the whole `config` table) read into any serde
/// type, as the configuration file typed it: `config_typed::<Vec<String>>("kinds")`, or
/// `config_typed::<MyConfig>("")` for the table. `None` if it is not set; an error if it is
/// not of that shape.
pub fn config_typed<T: DeserializeOwned>(key: &str) -> Option<Result<T, ParseError>> {
    let mut buf = vec![0u8; 1024];
    loop {
        let n = host::config_json(key.as_bytes(), &mut buf);
        if n < 0 {
            return None;
        }
        let n = n as usize;
        if n <= buf.len() {
            return Some(serde_json::from_slice(&buf[..n]).map_err(ParseError::Json));
        }
        buf.resize(n, 0);
    }
}

/// The configuration value `key` parsed (`limit = 30.5` → `config_value::<f64>("limit")`).
pub fn config_value<T: std::str::FromStr>(key: &str) -> Option<T> {
    config_string(key).and_then(|s| s.trim().parse().ok())
}

/// A sensor reading with owned fields, for serde: the same map as [`crate::Reading`] in CBOR,
/// and the same object in JSON (`{"sensor":"s1","kind":"temperature","value":21.5,"unit":"C"}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SensorReading {
    /// The sensor's id.
    pub sensor: String,
    /// What it measures (`temperature`, `humidity`, ...).
    pub kind: String,
    /// The value (written as an integer or a float).
    #[serde(deserialize_with = "number")]
    pub value: f64,
    /// Its unit.
    pub unit: String,
    /// When it was taken, ms since the Unix epoch, if the node knows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ts: Option<u64>,
    /// The node's uptime when it was taken, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uptime_ms: Option<u64>,
    /// The node's sequence number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
}

/// A number, whether the payload wrote it as an integer or a float (as the `no_std`
/// [`crate::Reading`] reads it).
fn number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Number {
        Float(f64),
        Int(i64),
        Uint(u64),
    }
    Ok(match Number::deserialize(d)? {
        Number::Float(f) => f,
        Number::Int(i) => i as f64,
        Number::Uint(u) => u as f64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{mock, Reading};

    #[test]
    fn a_reading_reads_the_same_from_cbor_and_json() {
        let r = Reading {
            sensor: "s1",
            kind: "temperature",
            value: 21.5,
            unit: "C",
            ts: None,
            uptime_ms: Some(7),
            seq: Some(3),
        };
        let mut buf = [0u8; 128];
        let n = r.encode(&mut buf).unwrap();
        let event = |payload| Event {
            topic: "t",
            payload,
            received_at_ms: 0,
        };
        mock::set_input_format(kiri_abi::format::CBOR);
        let from_cbor: SensorReading = event(&buf[..n]).parse().unwrap();
        mock::set_input_format(kiri_abi::format::JSON);
        let json = br#"{"sensor":"s1","kind":"temperature","value":21.5,"unit":"C","uptime_ms":7,"seq":3}"#;
        let from_json: SensorReading = event(json).parse().unwrap();
        assert_eq!(from_cbor, from_json);
        assert_eq!(from_cbor.value, 21.5);
        // What emit_cbor writes, the no_std reading decodes.
        emit_cbor("out", &from_json).unwrap();
        let emits = mock::take_emits();
        assert_eq!(Reading::decode(&emits[0].1).unwrap().seq, Some(3));
        assert!(event(b"{}").parse::<SensorReading>().is_err());
        // An integer value, in CBOR as in JSON.
        #[derive(Serialize)]
        struct IntReading {
            sensor: &'static str,
            kind: &'static str,
            value: i64,
            unit: &'static str,
        }
        let mut int = Vec::new();
        let r = IntReading {
            sensor: "s1",
            kind: "temperature",
            value: 35,
            unit: "C",
        };
        ciborium::ser::into_writer(&r, &mut int).unwrap();
        mock::set_input_format(kiri_abi::format::CBOR);
        assert_eq!(event(&int).parse::<SensorReading>().unwrap().value, 35.0);
        assert_eq!(
            Reading::decode(&int).unwrap().value,
            35.0,
            "as the no_std reading"
        );
        mock::set_input_format(kiri_abi::format::JSON);
        let no_unit = br#"{"sensor":"s1","kind":"temperature","value":35}"#;
        assert!(
            event(no_unit).parse::<SensorReading>().is_err(),
            "unit is required, as in Reading"
        );
    }

    #[test]
    fn typed_config_reads_into_serde_types() {
        #[derive(Deserialize, Debug, PartialEq)]
        struct Cfg {
            limit: f64,
            kinds: Vec<String>,
        }
        mock::set_config_json("limit", "30.5");
        mock::set_config_json("kinds", r#"["a","b"]"#);
        let all: Cfg = config_typed("").unwrap().unwrap();
        assert_eq!(all.kinds, ["a", "b"]);
        assert_eq!(config_typed::<f64>("limit").unwrap().unwrap(), 30.5);
        assert!(config_typed::<f64>("kinds").unwrap().is_err());
        assert!(config_typed::<f64>("absent").is_none());
    }

    #[test]
    fn config_values_of_any_length() {
        let long = "x".repeat(1000);
        mock::set_config("long", &long);
        assert_eq!(config_string("long").as_deref(), Some(long.as_str()));
        mock::set_config("n", " 4.5 ");
        assert_eq!(config_value::<f64>("n"), Some(4.5));
        assert_eq!(config_string("absent"), None);
    }
}

//! Payload formats: what a trigger accepts (`format`), the check every message passes before a
//! function runs, and the conversion a function may ask for (`deliver`). The user's guide is
//! `docs/payload-formats.md`.

pub mod sparkplug;

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use crate::codec;
pub use sparkplug::Aliases;

/// What a trigger accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InputFormat {
    /// Exactly one well-formed CBOR data item.
    Cbor,
    /// Exactly one well-formed JSON value, in UTF-8.
    Json,
    /// UTF-8 text.
    Text,
    /// Anything (up to `broker.max_message_bytes`).
    Bytes,
    /// A Sparkplug B payload (protobuf, `spBv1.0` topics).
    SparkplugB,
}

impl InputFormat {
    /// Its name in the configuration and the API.
    pub fn name(self) -> &'static str {
        match self {
            InputFormat::Cbor => "cbor",
            InputFormat::Json => "json",
            InputFormat::Text => "text",
            InputFormat::Bytes => "bytes",
            InputFormat::SparkplugB => "sparkplug_b",
        }
    }

    /// What the `input_format` host call returns for a payload in this format.
    pub fn code(self) -> i32 {
        match self {
            InputFormat::Cbor => kiri_abi::format::CBOR,
            InputFormat::Json => kiri_abi::format::JSON,
            InputFormat::Text => kiri_abi::format::TEXT,
            InputFormat::Bytes => kiri_abi::format::BYTES,
            InputFormat::SparkplugB => kiri_abi::format::SPARKPLUG_B,
        }
    }
}

/// What the function receives.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Deliver {
    /// The payload's bytes as they came.
    #[default]
    AsReceived,
    /// JSON, and Sparkplug B in its normalised form, converted to CBOR (CBOR as it came);
    /// text and bytes as they came.
    Cbor,
    /// CBOR, and Sparkplug B in its normalised form, converted to JSON (JSON as it came);
    /// text and bytes as they came.
    Json,
}

/// Why a payload was not taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// The reason counted and kept with the dead letter: `malformed` (not what its format
    /// says) or `ambiguous` (the default format, and the payload reads as CBOR and as JSON).
    pub reason: &'static str,
    /// What is wrong, and what to set.
    pub error: String,
}

impl Rejection {
    fn malformed(error: String) -> Rejection {
        Rejection {
            reason: "malformed",
            error,
        }
    }
}

/// Checks `payload` against `format` (`None`: the default, CBOR that does not also read as
/// JSON). Returns the format it is in.
///
/// Why the default refuses what reads both ways: a sensor that publishes the text `7` sends
/// the byte 0x37, which is also the CBOR integer -24. Read as CBOR, it would reach the function
/// as a wrong number, silently. Only single ASCII digits read both ways (any longer JSON text
/// leaves bytes after the first CBOR item, or is not CBOR at all), so a CBOR sensor never
/// meets this; a trigger that names its format (`cbor` included) is never ambiguous.
pub fn check(format: Option<InputFormat>, payload: &[u8]) -> Result<InputFormat, Rejection> {
    match format {
        Some(InputFormat::Cbor) => codec::check_well_formed(payload)
            .map(|()| InputFormat::Cbor)
            .map_err(|e| Rejection::malformed(e.to_string())),
        Some(InputFormat::Json) => check_json(payload).map(|()| InputFormat::Json),
        Some(InputFormat::Text) => std::str::from_utf8(payload)
            .map(|_| InputFormat::Text)
            .map_err(|e| Rejection::malformed(format!("not UTF-8 text: {e}"))),
        Some(InputFormat::Bytes) => Ok(InputFormat::Bytes),
        Some(InputFormat::SparkplugB) => sparkplug::decode(payload)
            .map(|_| InputFormat::SparkplugB)
            .map_err(Rejection::malformed),
        None => match codec::check_well_formed(payload) {
            Ok(()) if check_json(payload).is_ok() => Err(Rejection {
                reason: "ambiguous",
                error: format!(
                    "{:?} reads as CBOR and as JSON: set the trigger's format (`json` or `text` for a number sent as text, `cbor` for CBOR)",
                    String::from_utf8_lossy(payload)
                ),
            }),
            Ok(()) => Ok(InputFormat::Cbor),
            Err(e) => Err(Rejection::malformed(format!("{e}{}", hint(payload)))),
        },
    }
}

/// What a payload that is not CBOR looks like, as advice on the trigger's format.
fn hint(payload: &[u8]) -> &'static str {
    if check_json(payload).is_ok() {
        " (it is JSON: set the trigger's format = \"json\")"
    } else if std::str::from_utf8(payload).is_ok() {
        " (it is text: set the trigger's format = \"text\")"
    } else {
        ""
    }
}

fn check_json(payload: &[u8]) -> Result<(), Rejection> {
    serde_json::from_slice::<serde::de::IgnoredAny>(payload)
        .map(|_| ())
        .map_err(|e| Rejection::malformed(format!("not well-formed JSON: {e}")))
}

/// The payload a function receives, and its format: `payload` on `topic` (checked to be
/// `format`) converted as `deliver` asks. Sparkplug B metric aliases are resolved with, and
/// BIRTH messages teach, `aliases`.
pub fn deliver<'p>(
    format: InputFormat,
    deliver: Deliver,
    topic: &str,
    payload: &'p [u8],
    aliases: &Aliases,
) -> Result<(Cow<'p, [u8]>, InputFormat), Rejection> {
    match (format, deliver) {
        (InputFormat::SparkplugB, Deliver::Cbor | Deliver::Json) => {
            let value =
                sparkplug::normalise(topic, payload, aliases).map_err(Rejection::malformed)?;
            let cbor = codec::encode_value(&value);
            if deliver == Deliver::Cbor {
                return Ok((Cow::Owned(cbor), InputFormat::Cbor));
            }
            let json = cbor_to_json(value)?;
            let out = serde_json::to_vec(&json).expect("a JSON value serialises");
            Ok((Cow::Owned(out), InputFormat::Json))
        }
        (InputFormat::Json, Deliver::Cbor) => {
            let value: serde_json::Value = serde_json::from_slice(payload)
                .map_err(|e| Rejection::malformed(format!("not well-formed JSON: {e}")))?;
            let mut out = Vec::with_capacity(payload.len());
            ciborium::ser::into_writer(&value, &mut out)
                .map_err(|e| Rejection::malformed(format!("cannot convert to CBOR: {e}")))?;
            Ok((Cow::Owned(out), InputFormat::Cbor))
        }
        (InputFormat::Cbor, Deliver::Json) => {
            let json = cbor_as_json(payload)?;
            let out = serde_json::to_vec(&json).expect("a JSON value serialises");
            Ok((Cow::Owned(out), InputFormat::Json))
        }
        (f, _) => Ok((Cow::Borrowed(payload), f)),
    }
}

/// The MIME type of a payload as it is, and whether it is UTF-8 text (MQTT 5's payload format
/// indicator): JSON first (a single ASCII digit reads both ways, and is the JSON number), then
/// CBOR, then other text; anything else is `application/octet-stream`.
pub fn content_type(payload: &[u8]) -> (&'static str, bool) {
    if check_json(payload).is_ok() {
        ("application/json", true)
    } else if codec::check_well_formed(payload).is_ok() {
        ("application/cbor", false)
    } else if std::str::from_utf8(payload).is_ok() {
        ("text/plain; charset=utf-8", true)
    } else {
        ("application/octet-stream", false)
    }
}

/// One well-formed CBOR item as JSON (see [`cbor_to_json`]).
fn cbor_as_json(payload: &[u8]) -> Result<serde_json::Value, Rejection> {
    let mut rest = payload;
    let value: ciborium::Value = ciborium::de::from_reader(&mut rest)
        .map_err(|e| Rejection::malformed(format!("not well-formed CBOR: {e}")))?;
    if !rest.is_empty() {
        let e = codec::CodecError::Trailing(rest.len());
        return Err(Rejection::malformed(e.to_string()));
    }
    cbor_to_json(value)
}

/// A payload as a reader of JSON sees it: what the cloud's CloudEvents and `kiri decode` show.
#[derive(Debug, Clone, PartialEq)]
pub enum View {
    /// A JSON payload as its value, or a CBOR one converted (JSON is tried first: a single
    /// ASCII digit reads both ways, and is the JSON number).
    Json(serde_json::Value),
    /// Other UTF-8 text.
    Text(String),
    /// Anything else.
    Binary,
}

/// How `payload` reads: JSON, CBOR (as JSON), text, or none of them.
pub fn view(payload: &[u8]) -> View {
    if let Ok(v) = serde_json::from_slice(payload) {
        return View::Json(v);
    }
    if let Ok(v) = cbor_as_json(payload) {
        return View::Json(v);
    }
    match std::str::from_utf8(payload) {
        Ok(text) => View::Text(text.to_string()),
        Err(_) => View::Binary,
    }
}

/// CBOR to JSON: byte strings become base64 text, tags are dropped (their content kept),
/// map keys that are not text become their JSON text, non-finite floats and `undefined`
/// become `null`.
fn cbor_to_json(v: ciborium::Value) -> Result<serde_json::Value, Rejection> {
    use base64ct::Encoding;
    use ciborium::Value as C;
    use serde_json::Value as J;
    Ok(match v {
        C::Integer(i) => {
            let i = i128::from(i);
            match (i64::try_from(i), u64::try_from(i)) {
                (Ok(n), _) => J::from(n),
                (_, Ok(n)) => J::from(n),
                _ => J::from(i as f64),
            }
        }
        C::Float(f) => serde_json::Number::from_f64(f).map_or(J::Null, J::Number),
        C::Bytes(b) => J::String(base64ct::Base64::encode_string(&b)),
        C::Text(s) => J::String(s),
        C::Bool(b) => J::Bool(b),
        C::Null => J::Null,
        C::Tag(_, inner) => cbor_to_json(*inner)?,
        C::Array(items) => J::Array(
            items
                .into_iter()
                .map(cbor_to_json)
                .collect::<Result<_, _>>()?,
        ),
        C::Map(entries) => {
            let mut map = serde_json::Map::with_capacity(entries.len());
            for (k, v) in entries {
                let key = match cbor_to_json(k)? {
                    J::String(s) => s,
                    other => other.to_string(),
                };
                map.insert(key, cbor_to_json(v)?);
            }
            J::Object(map)
        }
        _ => J::Null,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cbor(v: &serde_json::Value) -> Vec<u8> {
        let mut out = Vec::new();
        ciborium::ser::into_writer(v, &mut out).unwrap();
        out
    }

    #[test]
    fn each_format_takes_its_own_and_refuses_the_rest() {
        let json = br#"{"temperature":21.5,"humidity":40,"linkquality":120}"#;
        let reading = cbor(&serde_json::json!({"sensor": "s1", "value": 21.5}));
        let not_utf8 = [0xff, 0xfe, 0x00];
        use InputFormat::*;
        assert_eq!(check(Some(Json), json), Ok(Json));
        assert_eq!(check(Some(Cbor), json).unwrap_err().reason, "malformed");
        assert_eq!(check(Some(Json), &reading).unwrap_err().reason, "malformed");
        assert_eq!(check(Some(Cbor), &reading), Ok(Cbor));
        assert_eq!(check(Some(Text), b"ON"), Ok(Text));
        assert_eq!(
            check(Some(Text), &not_utf8).unwrap_err().reason,
            "malformed"
        );
        assert_eq!(check(Some(Bytes), &not_utf8), Ok(Bytes));
        assert_eq!(check(Some(Json), b"21.5"), Ok(Json));
        assert_eq!(
            check(Some(Json), b"{\"a\":").unwrap_err().reason,
            "malformed"
        );
    }

    #[test]
    fn the_default_takes_cbor_refuses_a_bare_digit_and_says_what_other_payloads_are() {
        let reading = cbor(&serde_json::json!({"sensor": "s1", "value": 21.5}));
        assert_eq!(check(None, &reading), Ok(InputFormat::Cbor));
        for digit in [b"5", b"7"] {
            let r = check(None, digit).unwrap_err();
            assert_eq!(r.reason, "ambiguous", "{r:?}");
            assert!(r.error.contains("set the trigger's format"), "{r:?}");
        }
        assert_eq!(check(Some(InputFormat::Cbor), b"7"), Ok(InputFormat::Cbor));
        let json = check(None, br#"{"temperature":21.5}"#).unwrap_err();
        assert_eq!(json.reason, "malformed");
        assert!(json.error.contains("it is JSON"), "{json:?}");
        let text = check(None, b"ON").unwrap_err();
        assert!(text.error.contains("it is text"), "{text:?}");
        assert!(check(None, b"21.5")
            .unwrap_err()
            .error
            .contains("it is JSON"));
    }

    #[test]
    fn json_becomes_cbor_and_cbor_json_on_request() {
        let json = br#"{"temperature":21.5,"humidity":40,"ok":true,"tags":["a"],"none":null}"#;
        let (as_cbor, f) = deliver(
            InputFormat::Json,
            Deliver::Cbor,
            "t",
            json,
            &Aliases::default(),
        )
        .unwrap();
        assert_eq!(f, InputFormat::Cbor);
        let back: serde_json::Value = ciborium::de::from_reader(&as_cbor[..]).unwrap();
        assert_eq!(
            back,
            serde_json::from_slice::<serde_json::Value>(json).unwrap()
        );

        let (as_json, f) = deliver(
            InputFormat::Cbor,
            Deliver::Json,
            "t",
            &as_cbor,
            &Aliases::default(),
        )
        .unwrap();
        assert_eq!(f, InputFormat::Json);
        let v: serde_json::Value = serde_json::from_slice(&as_json).unwrap();
        assert_eq!(v["temperature"], 21.5);
        assert_eq!(v["humidity"], 40);

        let (same, f) = deliver(
            InputFormat::Text,
            Deliver::Cbor,
            "t",
            b"21.5",
            &Aliases::default(),
        )
        .unwrap();
        assert_eq!((&same[..], f), (&b"21.5"[..], InputFormat::Text));
        assert!(matches!(
            deliver(
                InputFormat::Json,
                Deliver::AsReceived,
                "t",
                b"1",
                &Aliases::default()
            )
            .unwrap()
            .0,
            Cow::Borrowed(_)
        ));
    }

    #[test]
    fn cbor_that_json_cannot_say_directly_is_spelled_out() {
        use ciborium::Value as C;
        let v = C::Map(vec![
            (C::Integer(1.into()), C::Bytes(vec![1, 2, 3])),
            (
                C::Text("t".into()),
                C::Tag(1, Box::new(C::Integer(1_700_000_000.into()))),
            ),
            (C::Text("nan".into()), C::Float(f64::NAN)),
        ]);
        let mut bytes = Vec::new();
        ciborium::ser::into_writer(&v, &mut bytes).unwrap();
        let (json, _) = deliver(
            InputFormat::Cbor,
            Deliver::Json,
            "t",
            &bytes,
            &Aliases::default(),
        )
        .unwrap();
        let j: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(
            j,
            serde_json::json!({"1": "AQID", "t": 1_700_000_000, "nan": null})
        );
    }
}

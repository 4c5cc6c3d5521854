//! `threshold` with the standard library and serde, built for `wasm32-wasip1`: the same
//! behaviour as `functions/examples/threshold`, on CBOR readings and on JSON ones (a trigger
//! with `format = "json"`), answering each in its own format.
//!
//! Config: `limit` (number, required), `kind` (default `"temperature"`). The alert is the
//! reading plus a `limit` field, sent to `alerts/<sensor>/<kind>`. Readings at or below the
//! limit, and readings of other kinds, produce nothing.

use kiri_sdk::{Error, Event, Format, Level, SensorReading};
use serde::Serialize;

/// The payload is not a reading.
pub const NOT_A_READING: Error = Error::new(1);
/// The `limit` configuration value is missing or not a number.
pub const NO_LIMIT: Error = Error::new(3);

/// A reading above the limit.
#[derive(Serialize)]
struct Alert<'a> {
    sensor: &'a str,
    kind: &'a str,
    value: f64,
    unit: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    seq: Option<u64>,
    limit: f64,
}

fn on_event(event: &Event) -> Result<(), Error> {
    let Some(limit) = kiri_sdk::config_value::<f64>("limit") else {
        kiri_sdk::log(
            Level::Error,
            "config key `limit` is missing or not a number",
        );
        return Err(NO_LIMIT);
    };
    let reading: SensorReading = event.parse().map_err(|e| {
        // stderr: a warning in the gateway's log.
        eprintln!("{}: not a reading: {e}", event.topic);
        NOT_A_READING
    })?;
    let kind = kiri_sdk::config_string("kind").unwrap_or_else(|| "temperature".into());
    if reading.kind != kind || reading.value <= limit {
        return Ok(());
    }
    // stdout: an info line in the gateway's log.
    println!(
        "{} {} = {} {}, above {limit}",
        reading.sensor, reading.kind, reading.value, reading.unit
    );
    let alert = Alert {
        sensor: &reading.sensor,
        kind: &reading.kind,
        value: reading.value,
        unit: &reading.unit,
        seq: reading.seq,
        limit,
    };
    let topic = format!("alerts/{}/{}", reading.sensor, reading.kind);
    match kiri_sdk::input_format() {
        Some(Format::Json) => kiri_sdk::emit_json(&topic, &alert),
        _ => kiri_sdk::emit_cbor(&topic, &alert),
    }
}

kiri_sdk::handler!(on_event);

#[cfg(test)]
mod tests {
    use super::*;
    use kiri_sdk::{mock, Reading};

    fn cbor(kind: &'static str, value: f64) -> Vec<u8> {
        let r = Reading {
            sensor: "s1",
            kind,
            value,
            unit: "C",
            ts: None,
            uptime_ms: Some(1),
            seq: Some(4),
        };
        let mut buf = [0u8; 128];
        let n = r.encode(&mut buf).unwrap();
        buf[..n].to_vec()
    }

    fn run(payload: &[u8]) -> Result<(), Error> {
        on_event(&Event {
            topic: "sensors/s1/x",
            payload,
            received_at_ms: 0,
        })
    }

    #[test]
    fn only_readings_above_the_limit_raise_alerts_in_the_format_they_came() {
        mock::set_config("limit", "30");
        mock::set_input_format(kiri_sdk::abi::format::CBOR);
        run(&cbor("temperature", 30.0)).unwrap();
        run(&cbor("humidity", 80.0)).unwrap();
        assert!(mock::take_emits().is_empty());
        run(&cbor("temperature", 30.5)).unwrap();
        let emits = mock::take_emits();
        assert_eq!(emits[0].0, "alerts/s1/temperature");
        let alert = Reading::decode(&emits[0].1).unwrap();
        assert_eq!((alert.value, alert.seq), (30.5, Some(4)));

        mock::set_input_format(kiri_sdk::abi::format::JSON);
        run(br#"{"sensor":"s2","kind":"temperature","value":31,"unit":"C"}"#).unwrap();
        let emits = mock::take_emits();
        assert_eq!(emits[0].0, "alerts/s2/temperature");
        let json: serde_json::Value = serde_json::from_slice(&emits[0].1).unwrap();
        assert_eq!(json["limit"], 30.0);
        assert_eq!(run(b"{}"), Err(NOT_A_READING));
    }

    #[test]
    fn a_missing_limit_is_an_error() {
        mock::set_config("limit", "none");
        assert_eq!(run(&cbor("temperature", 50.0)), Err(NO_LIMIT));
    }
}

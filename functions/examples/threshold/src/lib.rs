//! `threshold`: emits an alert for every reading of one kind whose value is above a limit.
//!
//! Config: `limit` (number, required), `kind` (default `"temperature"`). The alert is the
//! reading plus a `limit` field, sent to `alerts/<sensor>/<kind>`. Readings at or below the
//! limit, and readings of other kinds, produce nothing.
#![cfg_attr(target_arch = "wasm32", no_std)]

use core::fmt::Write;
use kiri_sdk::{Error, Event, Level, LineBuf, PerInstance};

/// The payload is not a CBOR reading.
pub const NOT_A_READING: Error = Error::new(1);
/// The alert does not fit the output buffer.
pub const TOO_BIG: Error = Error::new(2);
/// The `limit` configuration value is missing or not a number.
pub const NO_LIMIT: Error = Error::new(3);

/// The configuration, read once per instance (it does not change under an instance).
static LIMIT: PerInstance<Option<f64>> = PerInstance::new(|| kiri_sdk::config_parse("limit"));
static KIND: PerInstance<LineBuf> = PerInstance::new(|| {
    let mut buf = [0u8; 64];
    let mut kind = LineBuf::new();
    let _ = kind.write_str(kiri_sdk::config("kind", &mut buf).unwrap_or("temperature"));
    kind
});

fn on_event(event: &Event) -> Result<(), Error> {
    let Some(limit) = *LIMIT.get() else {
        kiri_sdk::log(
            Level::Error,
            "config key `limit` is missing or not a number",
        );
        return Err(NO_LIMIT);
    };
    let reading = event.reading().map_err(|_| NOT_A_READING)?;
    let kind = KIND.get().as_str();
    if reading.kind != kind || reading.value <= limit {
        return Ok(());
    }
    let mut buf = [0u8; 512];
    let n = reading
        .encode_with(&mut buf, &[("limit", limit)])
        .map_err(|_| TOO_BIG)?;
    let mut topic = LineBuf::new();
    topic
        .push("alerts/")
        .push(reading.sensor)
        .push("/")
        .push(reading.kind);
    kiri_sdk::emit(topic.as_str(), &buf[..n])
}

kiri_sdk::handler!(on_event);

#[cfg(test)]
mod tests {
    use super::*;
    use kiri_sdk::{mock, Reading};

    fn run(kind: &'static str, value: f64) -> Result<(), Error> {
        let r = Reading {
            sensor: "s1",
            kind,
            value,
            unit: "C",
            ts: None,
            uptime_ms: Some(1),
            seq: None,
        };
        let mut buf = [0u8; 128];
        let n = r.encode(&mut buf).unwrap();
        on_event(&Event {
            topic: "sensors/s1/x",
            payload: &buf[..n],
            received_at_ms: 0,
        })
    }

    #[test]
    fn only_readings_above_the_limit_raise_alerts() {
        mock::set_config("limit", "30");
        run("temperature", 29.9).unwrap();
        run("temperature", 30.0).unwrap();
        assert!(mock::take_emits().is_empty());
        run("temperature", 30.5).unwrap();
        let emits = mock::take_emits();
        assert_eq!(emits.len(), 1);
        assert_eq!(emits[0].0, "alerts/s1/temperature");
        assert_eq!(Reading::decode(&emits[0].1).unwrap().value, 30.5);
    }

    #[test]
    fn other_kinds_are_ignored_unless_configured() {
        mock::set_config("limit", "50");
        run("humidity", 80.0).unwrap();
        assert!(mock::take_emits().is_empty());
        mock::set_config("kind", "humidity");
        run("humidity", 80.0).unwrap();
        assert_eq!(mock::take_emits().len(), 1);
    }

    #[test]
    fn a_missing_limit_is_a_clear_failure() {
        assert_eq!(run("temperature", 99.0), Err(NO_LIMIT));
    }
}

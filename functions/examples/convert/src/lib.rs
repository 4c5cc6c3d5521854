//! `convert`: decodes a CBOR sensor reading and emits it normalised: temperatures in one unit
//! (config `temperature_unit`: `"F"` by default, or `"C"`, `"K"`), pressures in hPa, other
//! kinds unchanged. The result goes to `readings/<sensor>/<kind>`.
//!
//! A payload that is not a reading fails the invocation with code 1 (logged by the gateway).
//! Called over HTTP (`POST /invoke/convert`, topic `$http`), it answers with the normalised
//! reading instead of emitting it.
#![cfg_attr(target_arch = "wasm32", no_std)]

use kiri_sdk::{Error, Event, LineBuf, PerInstance, Reading};

/// The payload is not a CBOR reading.
pub const NOT_A_READING: Error = Error::new(1);
/// The normalised reading does not fit the output buffer.
pub const TOO_BIG: Error = Error::new(2);

fn to_kelvin(value: f64, unit: &str) -> Option<f64> {
    match unit {
        "C" => Some(value + 273.15),
        "F" => Some((value - 32.0) * 5.0 / 9.0 + 273.15),
        "K" => Some(value),
        _ => None,
    }
}

fn from_kelvin(k: f64, unit: &str) -> f64 {
    match unit {
        "C" => k - 273.15,
        "K" => k,
        _ => (k - 273.15) * 9.0 / 5.0 + 32.0,
    }
}

/// Converts `value` in `unit` to the normalised unit for its kind.
pub fn normalise<'a>(value: f64, unit: &'a str, temperature_unit: &'a str) -> (f64, &'a str) {
    if let Some(k) = to_kelvin(value, unit) {
        return (from_kelvin(k, temperature_unit), temperature_unit);
    }
    match unit {
        "Pa" => (value / 100.0, "hPa"),
        "kPa" => (value * 10.0, "hPa"),
        _ => (value, unit),
    }
}

/// `temperature_unit`, read once per instance (it does not change under an instance).
static TEMPERATURE_UNIT: PerInstance<&'static str> = PerInstance::new(|| {
    let mut buf = [0u8; 8];
    match kiri_sdk::config("temperature_unit", &mut buf) {
        Some("C") => "C",
        Some("K") => "K",
        _ => "F",
    }
});

fn on_event(event: &Event) -> Result<(), Error> {
    let reading = event.reading().map_err(|_| NOT_A_READING)?;
    let temperature_unit = *TEMPERATURE_UNIT.get();
    let (value, unit) = normalise(reading.value, reading.unit, temperature_unit);
    let out = Reading {
        value,
        unit,
        ..reading
    };
    let mut buf = [0u8; 512];
    let n = out.encode(&mut buf).map_err(|_| TOO_BIG)?;
    if event.topic == "$http" {
        return kiri_sdk::respond(&buf[..n]);
    }
    let mut topic = LineBuf::new();
    topic
        .push("readings/")
        .push(reading.sensor)
        .push("/")
        .push(reading.kind);
    kiri_sdk::emit(topic.as_str(), &buf[..n])
}

kiri_sdk::handler!(on_event);

#[cfg(test)]
mod tests {
    use super::*;
    use kiri_sdk::mock;

    fn reading(value: f64, unit: &'static str) -> Vec<u8> {
        let r = Reading {
            sensor: "s1",
            kind: "temperature",
            value,
            unit,
            ts: Some(5),
            uptime_ms: None,
            seq: Some(9),
        };
        let mut buf = [0u8; 128];
        let n = r.encode(&mut buf).unwrap();
        buf[..n].to_vec()
    }

    fn run(payload: &[u8]) -> Result<(), Error> {
        on_event(&Event {
            topic: "sensors/s1/temperature",
            payload,
            received_at_ms: 0,
        })
    }

    #[test]
    fn celsius_becomes_fahrenheit_by_default() {
        run(&reading(100.0, "C")).unwrap();
        let emits = mock::take_emits();
        assert_eq!(emits.len(), 1);
        assert_eq!(emits[0].0, "readings/s1/temperature");
        let out = Reading::decode(&emits[0].1).unwrap();
        assert!((out.value - 212.0).abs() < 1e-9);
        assert_eq!((out.unit, out.seq, out.ts), ("F", Some(9), Some(5)));
    }

    #[test]
    fn the_target_unit_is_configurable() {
        mock::set_config("temperature_unit", "C");
        run(&reading(32.0, "F")).unwrap();
        let out = mock::take_emits();
        let r = Reading::decode(&out[0].1).unwrap();
        assert!(r.value.abs() < 1e-9 && r.unit == "C");
    }

    #[test]
    fn over_http_it_answers_instead_of_emitting() {
        on_event(&Event {
            topic: "$http",
            payload: &reading(0.0, "C"),
            received_at_ms: 0,
        })
        .unwrap();
        assert!(mock::take_emits().is_empty());
        let body = mock::take_response().unwrap();
        assert_eq!(Reading::decode(&body).unwrap().value, 32.0);
    }

    #[test]
    fn pressure_goes_to_hectopascal() {
        assert_eq!(normalise(101325.0, "Pa", "F"), (1013.25, "hPa"));
        assert_eq!(normalise(40.0, "%RH", "F"), (40.0, "%RH"));
    }

    #[test]
    fn garbage_fails_the_invocation_and_emits_nothing() {
        assert_eq!(run(b"not cbor"), Err(NOT_A_READING));
        assert!(mock::take_emits().is_empty());
        assert_eq!(mock::take_logs().len(), 1);
    }
}

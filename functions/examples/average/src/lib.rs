//! `average`: a moving average per sensor and kind, kept in the function's key-value state.
//!
//! Config: `window` (readings averaged, 1 to 64, default 10). For each reading it appends the
//! value to the last `window` values of that `sensor`/`kind` (key `<sensor>/<kind>`, values
//! as little-endian f64) and emits the reading with `value` replaced by the average and a
//! `samples` field on `averages/<sensor>/<kind>`. The state and the result are committed
//! together, so a failed invocation neither emits nor counts the reading.
#![cfg_attr(target_arch = "wasm32", no_std)]

use kiri_sdk::{kv, Error, Event, LineBuf, PerInstance, Reading};

/// The payload is not a CBOR reading.
pub const NOT_A_READING: Error = Error::new(1);
/// The result does not fit the output buffer.
pub const TOO_BIG: Error = Error::new(2);

const MAX_WINDOW: usize = 64;

/// Appends `value` to the window stored in `stored` (f64s, little-endian), keeping the last
/// `window`; returns the new window's bytes length (written to `out`) and the average.
pub fn push(
    stored: &[u8],
    value: f64,
    window: usize,
    out: &mut [u8; MAX_WINDOW * 8],
) -> (usize, f64) {
    // The bytes are moved as they are (one copy), not decoded and encoded again: the guest
    // pays fuel per instruction.
    let n = (stored.len() / 8).min(MAX_WINDOW);
    let keep = n.min(window.clamp(1, MAX_WINDOW) - 1);
    out[..keep * 8].copy_from_slice(&stored[(n - keep) * 8..n * 8]);
    out[keep * 8..keep * 8 + 8].copy_from_slice(&value.to_le_bytes());
    let len = (keep + 1) * 8;
    let mut sum = 0.0;
    for v in out[..len].as_chunks::<8>().0 {
        sum += f64::from_le_bytes(*v);
    }
    (len, sum / (keep + 1) as f64)
}

/// `window`, read once per instance (it does not change under an instance).
static WINDOW: PerInstance<usize> = PerInstance::new(|| {
    kiri_sdk::config_parse::<usize>("window")
        .unwrap_or(10)
        .clamp(1, MAX_WINDOW)
});

fn on_event(event: &Event) -> Result<(), Error> {
    let reading = event.reading().map_err(|_| NOT_A_READING)?;
    let window = *WINDOW.get();
    let mut key = LineBuf::new();
    key.push(reading.sensor).push("/").push(reading.kind);
    let mut stored = [0u8; MAX_WINDOW * 8];
    let previous = kv::get(key.as_str().as_bytes(), &mut stored).unwrap_or(&[]);
    let mut updated = [0u8; MAX_WINDOW * 8];
    let (len, average) = push(previous, reading.value, window, &mut updated);
    kv::put(key.as_str().as_bytes(), &updated[..len])?;
    let out = Reading {
        value: average,
        ..reading
    };
    let mut buf = [0u8; 512];
    let n = out
        .encode_with(&mut buf, &[("samples", (len / 8) as f64)])
        .map_err(|_| TOO_BIG)?;
    let mut topic = LineBuf::new();
    topic
        .push("averages/")
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

    fn feed(sensor: &'static str, value: f64) -> f64 {
        let r = Reading {
            sensor,
            kind: "temperature",
            value,
            unit: "C",
            ts: None,
            uptime_ms: None,
            seq: None,
        };
        let mut buf = [0u8; 128];
        let n = r.encode(&mut buf).unwrap();
        on_event(&Event {
            topic: "sensors/x/temperature",
            payload: &buf[..n],
            received_at_ms: 0,
        })
        .unwrap();
        let emits = mock::take_emits();
        Reading::decode(&emits[0].1).unwrap().value
    }

    #[test]
    fn the_average_moves_over_the_last_window_values() {
        mock::set_config("window", "3");
        assert_eq!(feed("a", 3.0), 3.0);
        assert_eq!(feed("a", 6.0), 4.5);
        assert_eq!(feed("a", 9.0), 6.0);
        assert_eq!(feed("a", 12.0), 9.0, "the first value left the window");
    }

    #[test]
    fn each_sensor_has_its_own_window() {
        assert_eq!(feed("a", 10.0), 10.0);
        assert_eq!(feed("b", 20.0), 20.0);
        assert_eq!(feed("a", 20.0), 15.0);
        assert_eq!(mock::kv_snapshot().len(), 2);
    }

    #[test]
    fn a_smaller_window_trims_old_state() {
        let mut out = [0u8; MAX_WINDOW * 8];
        let mut stored = [0u8; 40];
        for (i, v) in [1.0f64, 2.0, 3.0, 4.0, 5.0].iter().enumerate() {
            stored[i * 8..i * 8 + 8].copy_from_slice(&v.to_le_bytes());
        }
        let (len, avg) = push(&stored, 6.0, 2, &mut out);
        assert_eq!((len, avg), (16, 5.5));
    }
}

//! `window`: a tumbling-window aggregate per sensor and kind, flushed by a timer.
//!
//! Give it MQTT triggers for readings and a timer (`every = "1m"` or `cron = ...`). Each reading
//! updates count, sum, min and max of its `sensor`/`kind` in the function's key-value state.
//! Each timer event emits one aggregate per key on `aggregates/<sensor>/<kind>` (a CBOR map:
//! `sensor`, `kind`, `unit`, `count`, `mean`, `min`, `max`, `from_ms`, `to_ms`) and clears the
//! state; the emits and the clearing commit together.
#![cfg_attr(target_arch = "wasm32", no_std)]

use kiri_sdk::{kv, Error, Event, Level, LineBuf};
use minicbor::encode::write::Cursor;

/// The payload is not a CBOR reading.
pub const NOT_A_READING: Error = Error::new(1);
/// An aggregate does not fit the output buffer.
pub const TOO_BIG: Error = Error::new(2);
/// The stored state is not what this function writes.
pub const BAD_STATE: Error = Error::new(3);

/// The state per key: count, sum, min, max, first and last time, and the unit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Aggregate {
    /// Readings seen.
    pub count: u64,
    /// Their sum.
    pub sum: f64,
    /// The smallest.
    pub min: f64,
    /// The largest.
    pub max: f64,
    /// Arrival of the first, ms.
    pub from_ms: i64,
    /// Arrival of the last, ms.
    pub to_ms: i64,
}

const STATE_LEN: usize = 48;

impl Aggregate {
    fn new(value: f64, at: i64) -> Aggregate {
        Aggregate {
            count: 1,
            sum: value,
            min: value,
            max: value,
            from_ms: at,
            to_ms: at,
        }
    }

    /// Adds one reading.
    pub fn add(&mut self, value: f64, at: i64) {
        self.count += 1;
        self.sum += value;
        self.min = self.min.min(value);
        self.max = self.max.max(value);
        self.to_ms = at;
    }

    fn encode(&self) -> [u8; STATE_LEN] {
        let mut b = [0u8; STATE_LEN];
        b[0..8].copy_from_slice(&self.count.to_le_bytes());
        b[8..16].copy_from_slice(&self.sum.to_le_bytes());
        b[16..24].copy_from_slice(&self.min.to_le_bytes());
        b[24..32].copy_from_slice(&self.max.to_le_bytes());
        b[32..40].copy_from_slice(&self.from_ms.to_le_bytes());
        b[40..48].copy_from_slice(&self.to_ms.to_le_bytes());
        b
    }

    fn decode(b: &[u8]) -> Option<Aggregate> {
        let f = |i: usize| {
            b.get(i..i + 8)
                .map(|s| <[u8; 8]>::try_from(s).expect("8 bytes"))
        };
        Some(Aggregate {
            count: u64::from_le_bytes(f(0)?),
            sum: f64::from_le_bytes(f(8)?),
            min: f64::from_le_bytes(f(16)?),
            max: f64::from_le_bytes(f(24)?),
            from_ms: i64::from_le_bytes(f(32)?),
            to_ms: i64::from_le_bytes(f(40)?),
        })
    }
}

fn add_reading(event: &Event) -> Result<(), Error> {
    let r = event.reading().map_err(|_| NOT_A_READING)?;
    // Key: sensor/kind/unit (the unit travels with the state to the aggregate).
    let mut key = LineBuf::new();
    key.push(r.sensor)
        .push("/")
        .push(r.kind)
        .push("/")
        .push(r.unit);
    let mut buf = [0u8; STATE_LEN];
    let agg = match kv::get(key.as_str().as_bytes(), &mut buf) {
        Some(b) => {
            let mut a = Aggregate::decode(b).ok_or(BAD_STATE)?;
            a.add(r.value, event.received_at_ms);
            a
        }
        None => Aggregate::new(r.value, event.received_at_ms),
    };
    kv::put(key.as_str().as_bytes(), &agg.encode())
}

fn flush() -> Result<(), Error> {
    let mut keys = [0u8; 16384];
    let Some(list) = kv::list(b"", &mut keys) else {
        kiri_sdk::log(
            Level::Warn,
            "too many keys to flush in one event; flushing the rest next time",
        );
        return Ok(());
    };
    for key in list {
        let text = core::str::from_utf8(key).map_err(|_| BAD_STATE)?;
        let mut parts = text.splitn(3, '/');
        let (Some(sensor), Some(kind), Some(unit)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(BAD_STATE);
        };
        let mut state = [0u8; STATE_LEN];
        let agg = kv::get(key, &mut state)
            .and_then(Aggregate::decode)
            .ok_or(BAD_STATE)?;
        let mut out = [0u8; 512];
        let mut e = minicbor::Encoder::new(Cursor::new(&mut out[..]));
        let encoded = (|| -> Result<usize, minicbor::encode::Error<_>> {
            e.map(9)?;
            e.str("sensor")?
                .str(sensor)?
                .str("kind")?
                .str(kind)?
                .str("unit")?
                .str(unit)?;
            e.str("count")?.u64(agg.count)?;
            e.str("mean")?.f64(agg.sum / agg.count as f64)?;
            e.str("min")?.f64(agg.min)?.str("max")?.f64(agg.max)?;
            e.str("from_ms")?
                .i64(agg.from_ms)?
                .str("to_ms")?
                .i64(agg.to_ms)?;
            Ok(e.writer().position())
        })()
        .map_err(|_| TOO_BIG)?;
        let mut topic = LineBuf::new();
        topic.push("aggregates/").push(sensor).push("/").push(kind);
        kiri_sdk::emit(topic.as_str(), &out[..encoded])?;
        kv::delete(key)?;
    }
    Ok(())
}

fn on_event(event: &Event) -> Result<(), Error> {
    if event.topic == "$timer" {
        flush()
    } else {
        add_reading(event)
    }
}

kiri_sdk::handler!(on_event);

#[cfg(test)]
mod tests {
    use super::*;
    use kiri_sdk::{mock, Reading};

    fn reading(sensor: &'static str, value: f64, at: i64) {
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
            received_at_ms: at,
        })
        .unwrap();
    }

    /// The numeric fields of a flat CBOR map.
    fn numbers(bytes: &[u8]) -> Vec<(String, f64)> {
        use minicbor::data::Type;
        let mut d = minicbor::Decoder::new(bytes);
        let n = d.map().unwrap().unwrap();
        let mut out = Vec::new();
        for _ in 0..n {
            let k = d.str().unwrap().to_string();
            match d.datatype().unwrap() {
                Type::F64 => out.push((k, d.f64().unwrap())),
                Type::U8 | Type::U16 | Type::U32 | Type::U64 => {
                    out.push((k, d.u64().unwrap() as f64))
                }
                _ => d.skip().unwrap(),
            }
        }
        out
    }

    fn tick() -> Vec<(String, Vec<u8>)> {
        on_event(&Event {
            topic: "$timer",
            payload: &[],
            received_at_ms: 0,
        })
        .unwrap();
        mock::take_emits()
    }

    #[test]
    fn a_timer_flushes_one_aggregate_per_sensor_and_clears_the_window() {
        reading("a", 1.0, 10);
        reading("a", 3.0, 20);
        reading("b", 5.0, 30);
        let out = tick();
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].0, "aggregates/a/temperature");
        let fields = numbers(&out[0].1);
        let get = |k: &str| fields.iter().find(|(key, _)| key == k).map(|(_, v)| *v);
        assert_eq!(get("count"), Some(2.0));
        assert_eq!(get("mean"), Some(2.0));
        assert_eq!((get("min"), get("max")), (Some(1.0), Some(3.0)));
        assert_eq!((get("from_ms"), get("to_ms")), (Some(10.0), Some(20.0)));
        assert!(mock::kv_snapshot().is_empty());
        assert!(tick().is_empty(), "nothing left after the flush");
    }
}

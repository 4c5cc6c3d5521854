//! `zscore`: an anomaly detector. Per sensor and kind it keeps a running mean and variance
//! (Welford's method) in its key-value state; a reading whose z-score exceeds `threshold`
//! (default 3) once at least `min_samples` (default 10) readings were seen is emitted on
//! `anomalies/<sensor>/<kind>` with `mean`, `stddev` and `z` fields. Anomalies are not folded
//! into the statistics, so one spike does not hide the next.
#![cfg_attr(target_arch = "wasm32", no_std)]

use kiri_sdk::{kv, Error, Event, LineBuf, PerInstance};

/// The payload is not a CBOR reading.
pub const NOT_A_READING: Error = Error::new(1);
/// The anomaly does not fit the output buffer.
pub const TOO_BIG: Error = Error::new(2);

/// Running statistics (Welford).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Stats {
    /// Samples folded in.
    pub n: u64,
    /// Their mean.
    pub mean: f64,
    /// Sum of squared differences from the mean.
    pub m2: f64,
}

impl Stats {
    /// Folds in one value.
    pub fn add(&mut self, x: f64) {
        self.n += 1;
        let delta = x - self.mean;
        self.mean += delta / self.n as f64;
        self.m2 += delta * (x - self.mean);
    }

    /// Sample standard deviation.
    pub fn stddev(&self) -> f64 {
        if self.n < 2 {
            0.0
        } else {
            sqrt(self.m2 / (self.n - 1) as f64)
        }
    }

    fn encode(&self) -> [u8; 24] {
        let mut b = [0u8; 24];
        b[..8].copy_from_slice(&self.n.to_le_bytes());
        b[8..16].copy_from_slice(&self.mean.to_le_bytes());
        b[16..].copy_from_slice(&self.m2.to_le_bytes());
        b
    }

    fn decode(b: &[u8]) -> Option<Stats> {
        let f = |i: usize| {
            b.get(i..i + 8)
                .map(|s| <[u8; 8]>::try_from(s).expect("8 bytes"))
        };
        Some(Stats {
            n: u64::from_le_bytes(f(0)?),
            mean: f64::from_le_bytes(f(8)?),
            m2: f64::from_le_bytes(f(16)?),
        })
    }
}

/// Square root by Newton's method (`no_std` has no `f64::sqrt`).
fn sqrt(x: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    let mut r = if x > 1.0 { x / 2.0 } else { 1.0 };
    for _ in 0..64 {
        let next = 0.5 * (r + x / r);
        if (next - r).abs() <= 1e-12 * r {
            return next;
        }
        r = next;
    }
    r
}

/// The configuration, read once per instance (it does not change under an instance).
static THRESHOLD: PerInstance<f64> =
    PerInstance::new(|| kiri_sdk::config_parse::<f64>("threshold").unwrap_or(3.0));
static MIN_SAMPLES: PerInstance<u64> = PerInstance::new(|| {
    kiri_sdk::config_parse::<u64>("min_samples")
        .unwrap_or(10)
        .max(2)
});

fn on_event(event: &Event) -> Result<(), Error> {
    let r = event.reading().map_err(|_| NOT_A_READING)?;
    let threshold = *THRESHOLD.get();
    let min_samples = *MIN_SAMPLES.get();
    let mut key = LineBuf::new();
    key.push(r.sensor).push("/").push(r.kind);
    let mut buf = [0u8; 24];
    let mut stats = kv::get(key.as_str().as_bytes(), &mut buf)
        .and_then(Stats::decode)
        .unwrap_or_default();
    let sd = stats.stddev();
    let z = if sd > 0.0 {
        (r.value - stats.mean) / sd
    } else {
        0.0
    };
    if stats.n >= min_samples && z.abs() > threshold {
        let mut out = [0u8; 512];
        let n = r
            .encode_with(&mut out, &[("mean", stats.mean), ("stddev", sd), ("z", z)])
            .map_err(|_| TOO_BIG)?;
        let mut topic = LineBuf::new();
        topic
            .push("anomalies/")
            .push(r.sensor)
            .push("/")
            .push(r.kind);
        return kiri_sdk::emit(topic.as_str(), &out[..n]);
    }
    stats.add(r.value);
    kv::put(key.as_str().as_bytes(), &stats.encode())
}

kiri_sdk::handler!(on_event);

#[cfg(test)]
mod tests {
    use super::*;
    use kiri_sdk::{mock, Reading};

    fn feed(value: f64) -> Option<f64> {
        let r = Reading {
            sensor: "s",
            kind: "vibration",
            value,
            unit: "g",
            ts: None,
            uptime_ms: None,
            seq: None,
        };
        let mut buf = [0u8; 128];
        let n = r.encode(&mut buf).unwrap();
        on_event(&Event {
            topic: "sensors/s/vibration",
            payload: &buf[..n],
            received_at_ms: 0,
        })
        .unwrap();
        mock::take_emits()
            .first()
            .map(|(_, p)| Reading::decode(p).unwrap().value)
    }

    #[test]
    fn a_spike_after_enough_samples_is_an_anomaly_and_is_not_learned() {
        for i in 0..20 {
            assert_eq!(
                feed(10.0 + (i % 3) as f64 * 0.1),
                None,
                "normal readings pass quietly"
            );
        }
        assert_eq!(feed(50.0), Some(50.0));
        assert_eq!(
            feed(50.0),
            Some(50.0),
            "the first spike did not shift the baseline"
        );
        assert_eq!(feed(10.1), None);
    }

    #[test]
    fn nothing_is_flagged_before_min_samples() {
        mock::set_config("min_samples", "5");
        assert_eq!(feed(1.0), None);
        assert_eq!(feed(1000.0), None);
    }

    #[test]
    fn welford_matches_the_textbook_values() {
        let mut s = Stats::default();
        for x in [2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0] {
            s.add(x);
        }
        assert!((s.mean - 5.0).abs() < 1e-12);
        assert!((s.stddev() - 2.138089935299395).abs() < 1e-9);
    }
}

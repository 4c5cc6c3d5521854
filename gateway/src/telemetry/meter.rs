//! Metering, the serverless billing model: invocations, outcomes, fuel, wall time, memory,
//! cold and warm starts, per function. The runtime records as it invokes; the HTTP API reads
//! a snapshot.

use std::collections::{BTreeMap, VecDeque};

/// Invocations whose wall times the percentiles are taken over (the most recent).
pub const RECENT: usize = 1024;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

/// One function's counters since the gateway started.
#[derive(Debug, Default, Clone, Serialize, Deserialize, PartialEq)]
pub struct FunctionStats {
    /// The function's name.
    pub name: String,
    /// Invocations attempted.
    pub invocations: u64,
    /// Invocations that succeeded.
    pub ok: u64,
    /// Failed invocations by reason (`error`, `trap`, `out_of_fuel`, `timeout`, ...).
    pub errors: BTreeMap<String, u64>,
    /// Invocations that had to create an instance first.
    pub cold_starts: u64,
    /// Invocations that reused a live instance.
    pub warm_starts: u64,
    /// Fuel consumed, in total.
    pub fuel: u64,
    /// Wall time spent in the function, in total, microseconds.
    pub wall_us_total: u64,
    /// The longest invocation, microseconds.
    pub wall_us_max: u64,
    /// The largest linear memory an instance reached, bytes.
    pub memory_peak_bytes: u64,
    /// Automatic retries run.
    pub retries: u64,
    /// Events left in the dead letters for good (failed, no retries left).
    pub dead_lettered: u64,
    /// Median wall time of the last [`RECENT`] invocations, microseconds (filled by
    /// [`FunctionStats::snapshot`]).
    #[serde(default)]
    pub wall_us_p50: u64,
    /// 99th percentile of the same, microseconds.
    #[serde(default)]
    pub wall_us_p99: u64,
    /// The last [`RECENT`] wall times.
    #[serde(skip)]
    pub(crate) recent_us: VecDeque<u64>,
}

/// What one invocation cost.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// Whether an instance was created for it.
    pub cold: bool,
    /// Fuel used.
    pub fuel: u64,
    /// Wall time, microseconds.
    pub wall_us: u64,
    /// The instance's memory size afterwards, bytes.
    pub memory_bytes: u64,
    /// `None` on success, else the failure reason.
    pub failure: Option<&'static str>,
}

impl FunctionStats {
    /// Adds one invocation.
    pub fn record(&mut self, s: Sample) {
        self.invocations += 1;
        match s.failure {
            None => self.ok += 1,
            Some(reason) => *self.errors.entry(reason.to_string()).or_default() += 1,
        }
        if s.cold {
            self.cold_starts += 1;
        } else {
            self.warm_starts += 1;
        }
        self.fuel += s.fuel;
        self.wall_us_total += s.wall_us;
        self.wall_us_max = self.wall_us_max.max(s.wall_us);
        self.memory_peak_bytes = self.memory_peak_bytes.max(s.memory_bytes);
        if self.recent_us.len() >= RECENT {
            self.recent_us.pop_front();
        }
        self.recent_us.push_back(s.wall_us);
    }

    /// Adds one invocation refused before anything ran (no start, no fuel, no time).
    pub fn record_refusal(&mut self, reason: &'static str) {
        self.invocations += 1;
        *self.errors.entry(reason.to_string()).or_default() += 1;
    }

    /// A copy with the percentiles filled in (sorting happens here, not per invocation).
    pub fn snapshot(&self) -> FunctionStats {
        let mut out = self.clone();
        let mut sorted: Vec<u64> = self.recent_us.iter().copied().collect();
        sorted.sort_unstable();
        let at = |q: f64| -> u64 {
            if sorted.is_empty() {
                return 0;
            }
            let i = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1;
            sorted[i]
        };
        out.wall_us_p50 = at(0.50);
        out.wall_us_p99 = at(0.99);
        out.recent_us.clear();
        out
    }
}

/// Shared per-function statistics, indexed like the runtime's functions.
pub type Meters = Arc<Mutex<Vec<FunctionStats>>>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_add_up() {
        let mut st = FunctionStats::default();
        let s = Sample {
            cold: true,
            fuel: 10,
            wall_us: 5,
            memory_bytes: 65536,
            failure: None,
        };
        st.record(s);
        st.record(Sample {
            cold: false,
            wall_us: 9,
            failure: Some("trap"),
            ..s
        });
        assert_eq!(
            (st.invocations, st.ok, st.cold_starts, st.warm_starts),
            (2, 1, 1, 1)
        );
        assert_eq!((st.fuel, st.wall_us_total, st.wall_us_max), (20, 14, 9));
        assert_eq!(st.errors["trap"], 1);
        let snap = st.snapshot();
        assert_eq!((snap.wall_us_p50, snap.wall_us_p99), (5, 9));
    }

    #[test]
    fn percentiles_come_from_the_most_recent_invocations() {
        let mut st = FunctionStats::default();
        for us in 1..=2000 {
            st.record(Sample {
                cold: false,
                fuel: 1,
                wall_us: us,
                memory_bytes: 0,
                failure: None,
            });
        }
        // The last 1,024 are 977..=2000.
        let snap = st.snapshot();
        assert_eq!(snap.wall_us_p50, 977 + 511);
        assert_eq!(snap.wall_us_p99, 977 + 1013);
    }
}

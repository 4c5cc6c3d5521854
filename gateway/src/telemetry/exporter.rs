//! The Prometheus exporter behind `GET /metrics`: the recorder every `metrics::counter!`,
//! `gauge!` and `histogram!` in the gateway writes to, and its upkeep.
//!
//! Invocation time is a Prometheus histogram (buckets from 1 µs, a warm call, to 10 s, past
//! any timeout): it adds up across functions and gateways, and costs a fixed 25 numbers per
//! function (22 bounds, `+Inf`, sum and count), where the exporter's default summary kept
//! sketches that grew to about 1 MB per function under load (heaptrack, 16 functions at
//! 10,000 events a second). End-to-end latency, from a result emitted to the cloud broker's
//! acknowledgement, is a histogram too (`kiri_result_delivery_seconds`).

use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::task::JoinHandle;

/// `kiri_invocation_seconds`' bucket bounds, in seconds.
pub const INVOCATION_BUCKETS: &[f64] = &[
    1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 0.01, 0.025,
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// `kiri_result_delivery_seconds`' bucket bounds, in seconds: from a result emitted to the
/// cloud broker's PUBACK, 1 ms on a healthy link to a day held through an outage.
pub const DELIVERY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    300.0, 900.0, 3600.0, 14400.0, 86400.0,
];

/// The recorder's handle (it renders `/metrics`), and its upkeep task.
pub struct Exporter {
    /// Renders the text format.
    pub handle: PrometheusHandle,
    /// Drains histograms every 5 s; aborted when the gateway stops.
    pub upkeep: JoinHandle<()>,
}

/// Installs the recorder (a second gateway in one process, as in tests, keeps the first) and
/// starts its upkeep.
pub fn start() -> Exporter {
    let recorder = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full("kiri_invocation_seconds".into()),
            INVOCATION_BUCKETS,
        )
        .expect("the buckets are not empty")
        .set_buckets_for_metric(
            Matcher::Full("kiri_result_delivery_seconds".into()),
            DELIVERY_BUCKETS,
        )
        .expect("the buckets are not empty")
        .build_recorder();
    let handle = recorder.handle();
    let _ = metrics::set_global_recorder(recorder);
    super::catalog::register();
    let upkeep = handle.clone();
    let upkeep = tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(5)).await;
            upkeep.run_upkeep();
        }
    });
    Exporter { handle, upkeep }
}

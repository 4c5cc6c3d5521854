//! The once-a-second tick: the gateway's totals, for live readers (who derive rates from two)
//! and the charts' history.

use std::sync::Arc;
use std::time::Duration;

use crate::outbox::Outbox;

/// Once a second: the totals live readers derive rates from, kept for the charts' history.
pub async fn run(
    telemetry: super::Telemetry,
    meters: super::meter::Meters,
    outbox: Arc<Outbox>,
    uplink: super::SharedStatus,
) {
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let (invocations, errors) = {
            let m = meters.lock().expect("meters lock");
            let invocations = m.iter().map(|f| f.invocations).sum();
            let errors = m.iter().map(|f| f.errors.values().sum::<u64>()).sum();
            (invocations, errors)
        };
        let up = uplink.get();
        let (backlog, backlog_bytes) = outbox.usage();
        telemetry.tick(super::Tick {
            time_ms: crate::now_ms(),
            events: super::RECEIVED.load(std::sync::atomic::Ordering::Relaxed),
            invocations,
            errors,
            backlog,
            backlog_bytes,
            delivered: up.delivered,
            connected: up.connected,
        });
    }
}

//! The once-a-second tick: the gateway's totals, for live readers (who derive rates from two)
//! and the charts' history; and every `log.summary`, a log line of what changed.

use std::sync::Arc;
use std::time::Duration;

use crate::outbox::Outbox;

/// Once a second: the totals live readers derive rates from, kept for the charts' history.
pub async fn run(
    telemetry: super::Telemetry,
    meters: super::meter::Meters,
    outbox: Arc<Outbox>,
    uplink: super::SharedStatus,
    summary: Option<Duration>,
) {
    let mut last: Option<(std::time::Instant, super::Tick)> = None;
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
        let tick = super::Tick {
            time_ms: crate::now_ms(),
            events: super::RECEIVED.load(std::sync::atomic::Ordering::Relaxed),
            invocations,
            errors,
            backlog,
            backlog_bytes,
            delivered: up.delivered,
            connected: up.connected,
        };
        if let Some(every) = summary {
            match &last {
                Some((at, before)) if at.elapsed() + Duration::from_millis(500) >= every => {
                    log_summary(before, &tick, &up.url, at.elapsed());
                    last = Some((std::time::Instant::now(), tick));
                }
                Some(_) => {}
                None => last = Some((std::time::Instant::now(), tick)),
            }
        }
        telemetry.tick(tick);
    }
}

/// The `log.summary` line: what happened between two ticks.
fn log_summary(before: &super::Tick, now: &super::Tick, url: &str, over: Duration) {
    let uplink = match (now.connected, url.is_empty()) {
        (_, true) => "off (cloud.url is not set)".to_string(),
        (true, false) => format!("connected to {url}"),
        (false, false) => format!("down ({url} not reachable; results held)"),
    };
    tracing::info!(
        "last {}s: {} events in, {} invocations, {} errors, {} results forwarded; {} held for the cloud; uplink {uplink}",
        over.as_secs(),
        now.events - before.events,
        now.invocations - before.invocations,
        now.errors - before.errors,
        now.delivered - before.delivered,
        now.backlog,
    );
}

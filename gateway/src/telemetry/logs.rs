//! Function log lines to the cloud (`cloud.logs`), through the outbox at low priority.

use std::sync::Arc;

/// Forwards function log lines at `level` or more severe to the cloud through the outbox, at
/// low priority: gathered for up to 200 ms, appended only where there is room (a full outbox
/// drops log lines, counted, and never waits or displaces results), then flushed. Best effort:
/// lines not yet flushed when the process dies are lost.
pub async fn forward_logs(
    telemetry: super::Telemetry,
    outbox: Arc<crate::outbox::Outbox>,
    level: crate::config::LogForwarding,
) {
    use tokio::sync::broadcast::error::RecvError;
    let mut rx = telemetry.subscribe();
    let dropped = |n: u64| metrics::counter!("kiri_logs_forward_dropped_total").increment(n);
    loop {
        let mut batch = Vec::new();
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_millis(200);
        while batch.len() < 256 {
            let next = if batch.is_empty() {
                Ok(rx.recv().await)
            } else {
                tokio::time::timeout_at(deadline, rx.recv()).await
            };
            match next {
                Ok(Ok(super::Event::Log(line))) if level.passes(line.level) => batch.push(line),
                Ok(Ok(_)) => {}
                Ok(Err(RecvError::Lagged(n))) => dropped(n),
                Ok(Err(RecvError::Closed)) => return,
                Err(_) => break,
            }
        }
        // Each function's lines apart: one function at its share of the outbox loses its
        // lines, not the others'.
        let mut by_function: std::collections::BTreeMap<String, Vec<crate::outbox::NewRecord>> =
            Default::default();
        for l in &batch {
            by_function
                .entry(l.function.clone())
                .or_default()
                .push(crate::outbox::NewRecord {
                    function: l.function.clone(),
                    topic: format!("{}{}", crate::outbox::LOGS_TOPIC, l.function),
                    payload: crate::codec::to_cbor(l),
                    created_ms: l.time_ms,
                });
        }
        let outbox = outbox.clone();
        let stored =
            tokio::task::spawn_blocking(move || -> Result<u64, crate::outbox::OutboxError> {
                let (mut lost, mut stored) = (0, false);
                for records in by_function.values() {
                    if outbox.append_if_room(records)? {
                        stored = true;
                    } else {
                        lost += records.len() as u64;
                    }
                }
                if stored {
                    outbox.flush()?;
                }
                Ok(lost)
            })
            .await;
        match stored {
            Ok(Ok(lost)) => dropped(lost),
            Ok(Err(e)) => {
                tracing::error!(error = %e, "cannot store forwarded log lines");
                dropped(batch.len() as u64);
            }
            Err(_) => return,
        }
    }
}

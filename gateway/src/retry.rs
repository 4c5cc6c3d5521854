//! Automatic retries: a failed event waits in the dead letters with a due time (exponential
//! backoff per function: `retry_backoff_ms`, doubling); when it is due this task queues it
//! for the processor like a replay, on a fresh instance. Because the schedule is in the
//! store, retries survive restarts. A retried event is processed after events that arrived
//! later: retries give up per-topic order for that event.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use crate::dead_letter::DeadLetters;
use crate::directory::Directory;
use crate::processor::Work;

/// Longest sleep between checks (also the reaction time to new failures).
const TICK: Duration = Duration::from_millis(200);

/// Queues due retries until the processor's queue closes.
pub async fn run(dead_letters: Arc<DeadLetters>, functions: Directory, work: mpsc::Sender<Work>) {
    loop {
        let now = crate::now_ms();
        let (ids, _next) = dead_letters.take_due(now, 64);
        for id in ids {
            if !dead_letters.claim(id) {
                continue; // an operator's replay of it is under way
            }
            let entry = match dead_letters.get(id) {
                Ok(Some(e)) => e,
                Ok(None) => {
                    dead_letters.release(id); // dropped by an operator meanwhile
                    continue;
                }
                Err(e) => {
                    dead_letters.release(id);
                    tracing::error!(id, error = %e, "cannot read a dead letter to retry");
                    continue;
                }
            };
            let Some((function, _)) = entry.function.as_deref().and_then(|f| functions.find(f))
            else {
                dead_letters.release(id);
                continue; // its function is no longer loaded: it stays as a dead letter
            };
            let retry = Work::Replay {
                id,
                function,
                topic: entry.topic,
                payload: entry.payload,
                received_ms: entry.received_ms,
                attempts: entry.attempts,
            };
            match work.try_send(retry) {
                Ok(()) => metrics::counter!("kiri_retries_total").increment(1),
                Err(mpsc::error::TrySendError::Full(_)) => {
                    dead_letters.release(id);
                    dead_letters.retry_later(id, now + TICK.as_millis() as u64);
                }
                Err(mpsc::error::TrySendError::Closed(_)) => return,
            }
        }
        tokio::time::sleep(TICK).await;
    }
}

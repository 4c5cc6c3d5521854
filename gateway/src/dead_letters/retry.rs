//! Automatic retries: a failed event waits in the dead letters with a due time (exponential
//! backoff per function: `retry_backoff_ms`, doubling); when it is due, [`run`] claims it and
//! queues it for the pipeline as a [`Replay`], which runs it on a fresh instance. Because the
//! schedule is in the store, retries survive restarts. A retried event is processed after
//! events that arrived later: retries give up per-topic order for that event.

use std::sync::Arc;
use std::time::Duration;

use super::DeadLetters;

/// Longest sleep between checks (also the reaction time to new failures).
const TICK: Duration = Duration::from_millis(200);

/// A dead letter to run again. The pipeline removes the entry once the new attempt is
/// committed (a failure records a new entry) and releases the claim either way.
#[derive(Debug)]
pub struct Replay {
    /// The entry's id.
    pub id: u64,
    /// The function's index.
    pub function: usize,
    /// The original topic.
    pub topic: String,
    /// The original payload.
    pub payload: Vec<u8>,
    /// When it first arrived.
    pub received_ms: u64,
    /// Tries so far: the entry's for an automatic retry, 0 for a manual replay (which
    /// starts the function's retries afresh).
    pub attempts: u32,
}

/// What became of a replay handed to [`Requeue::requeue`].
#[derive(Debug)]
pub enum Requeued {
    /// It is queued.
    Queued,
    /// The queue is full: try again later.
    Full,
    /// The pipeline is gone (shutting down).
    Closed,
}

/// Where due retries go: the pipeline's queue, which this module does not know (it sits
/// below the pipeline). Never waits.
pub trait Requeue {
    /// The index of the running function called `name`.
    fn function(&self, name: &str) -> Option<usize>;
    /// Queues `replay` without waiting.
    fn requeue(&self, replay: Replay) -> Requeued;
}

/// Queues due retries until the pipeline's queue closes.
pub async fn run(dead_letters: Arc<DeadLetters>, queue: impl Requeue) {
    loop {
        let now = dead_letters.now();
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
            let Some(function) = entry.function.as_deref().and_then(|f| queue.function(f)) else {
                dead_letters.release(id);
                continue; // its function is no longer loaded: it stays as a dead letter
            };
            let retry = Replay {
                id,
                function,
                topic: entry.topic,
                payload: entry.payload,
                received_ms: entry.received_ms,
                attempts: entry.attempts,
            };
            match queue.requeue(retry) {
                Requeued::Queued => metrics::counter!("kiri_retries_total").increment(1),
                Requeued::Full => {
                    dead_letters.release(id);
                    dead_letters.retry_later(id, now + TICK.as_millis() as u64);
                }
                Requeued::Closed => return,
            }
        }
        tokio::time::sleep(TICK).await;
    }
}

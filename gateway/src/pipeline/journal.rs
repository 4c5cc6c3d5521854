//! Where a group's effects are written before its flush: results (with the function's state
//! writes, in one transaction) into the outbox, failures into the dead letters. [`Journal`] is
//! the seam the unit tests use to make a flush fail; [`Durable`] is the gateway's, over the
//! store both live in (one sled database: one flush covers both).
//!
//! [`Stager`] turns one job's result into journal writes, on the worker thread that ran it,
//! right after it ran (the next job of the same instance may read the state it wrote).

use std::sync::Arc;

use super::work::InvokeFailure;
use super::ProcessError;
use crate::dead_letters::{DeadLetters, Entry};
use crate::outbox::{NewRecord, Outbox, OutboxError, StateChange, StateWrite};
use crate::registry::Catalog;
use crate::runtime::{Destination, Invocation, InvokeError, Job, Output};
use crate::telemetry::meter::Meters;

/// The writes of a group commit. Shared by the invocation workers of a group.
pub trait Journal: Sync {
    /// Appends one invocation's results and state writes, atomically (not yet durable);
    /// what the state writes changed.
    fn append(
        &self,
        records: &[NewRecord],
        state: (&sled::Tree, &[StateWrite]),
    ) -> Result<StateChange, OutboxError>;
    /// Records a dead letter (not yet durable), once the disk has room.
    fn dead_letter(&self, entry: Entry) -> Result<(), OutboxError>;
    /// Removes a dead letter whose new attempt is staged (not yet durable).
    fn remove_dead_letter(&self, id: u64) -> Result<(), sled::Error>;
    /// Ends the claim a retry or replay holds on a dead letter.
    fn release(&self, id: u64);
    /// Makes everything written so far durable (the uplink reads results as soon as written).
    fn flush(&self) -> Result<(), OutboxError>;
}

/// The gateway's journal: the outbox and the dead letters, in one store.
pub struct Durable {
    /// Results waiting for the cloud.
    pub outbox: Arc<Outbox>,
    /// Failed inputs.
    pub dead_letters: Arc<DeadLetters>,
}

impl Journal for Durable {
    fn append(
        &self,
        records: &[NewRecord],
        state: (&sled::Tree, &[StateWrite]),
    ) -> Result<StateChange, OutboxError> {
        self.outbox
            .append_with_state(records, Some(state))
            .map(|a| a.change)
    }

    fn dead_letter(&self, entry: Entry) -> Result<(), OutboxError> {
        // Below the disk reserve a dead letter waits like a result (and so does the input's
        // acknowledgement).
        let bytes = (entry.payload.len() + entry.error.len() + entry.topic.len()) as u64;
        self.outbox.wait_for_disk(bytes)?;
        Ok(self.dead_letters.record(entry).map(drop)?)
    }

    fn remove_dead_letter(&self, id: u64) -> Result<(), sled::Error> {
        self.dead_letters.remove(id).map(drop)
    }

    fn release(&self, id: u64) {
        self.dead_letters.release(id);
    }

    fn flush(&self) -> Result<(), OutboxError> {
        self.outbox.flush().map(drop)
    }
}

/// Where a job of the group came from, for staging its result.
#[derive(Debug, Clone, Copy)]
pub(super) enum JobOrigin {
    /// A message or timer tick: a failure becomes a dead letter (with a retry schedule).
    Event,
    /// A replay or retry of dead letter `id`, tried `attempts` times before.
    Replay { id: u64, attempts: u32 },
    /// An HTTP invocation, group item `work`: a failure is answered, not dead-lettered.
    Http { work: usize },
}

/// What a staged job leaves for after the commit.
#[derive(Debug, Default)]
pub(super) struct Staged {
    pub(super) local: Vec<Output>,
    pub(super) response: Option<Result<crate::runtime::HttpAnswer, InvokeFailure>>,
}

/// What the invocation workers share to stage results.
pub(super) struct Stager<'a, J> {
    pub(super) journal: &'a J,
    pub(super) functions: Catalog,
    pub(super) meters: &'a Meters,
}

impl<J: Journal> Stager<'_, J> {
    /// Writes one job's result to the journal (not yet flushed): outputs and state on
    /// success, a dead letter on failure.
    pub(super) fn stage(
        &self,
        job: &Job<'_>,
        origin: JobOrigin,
        result: Result<Invocation, InvokeError>,
    ) -> Result<Staged, ProcessError> {
        let name = self.functions.name(job.function);
        let span = tracing::debug_span!("invoke", function = %name, topic = job.topic);
        let _guard = span.enter();
        let mut staged = Staged::default();
        let failure = match result {
            Ok(invocation) => {
                metrics::counter!("kiri_invocations_total", "function" => name.to_string(), "outcome" => "ok")
                    .increment(1);
                let now = crate::now_ms();
                let mut records = Vec::new();
                for o in invocation.outputs {
                    match o.destination {
                        Destination::Cloud => records.push(NewRecord {
                            function: name.to_string(),
                            topic: o.topic,
                            payload: o.payload,
                            created_ms: now,
                        }),
                        Destination::Local => staged.local.push(o),
                    }
                }
                let state = (&invocation.kv, invocation.kv_writes.as_slice());
                let change = match self.journal.append(&records, state) {
                    Err(OutboxError::Closed) => return Err(ProcessError::ShuttingDown),
                    other => other?,
                };
                // The usage follows what the writes changed in the store (invocations
                // side by side may each have counted the same key).
                invocation.kv_charge.settle(change.bytes, change.keys);
                staged.response = Some(Ok(invocation.response));
                None
            }
            Err(e) => {
                let reason = e.reason();
                metrics::counter!("kiri_invocations_total", "function" => name.to_string(), "outcome" => reason)
                    .increment(1);
                tracing::warn!(function = %name, topic = job.topic, reason, error = %e, "invocation failed");
                staged.response = Some(Err(InvokeFailure {
                    reason,
                    error: e.to_string(),
                }));
                Some(e)
            }
        };
        let (attempts, replaced) = match origin {
            JobOrigin::Http { .. } => return Ok(staged),
            JobOrigin::Event => (0, None),
            JobOrigin::Replay { id, attempts } => {
                if attempts > 0 {
                    self.meters.lock().expect("meters lock")[job.function].retries += 1;
                }
                (attempts, Some(id))
            }
        };
        if let Some(e) = failure {
            let attempts = attempts + 1;
            let (retries, backoff_ms) = self.functions.retry_policy(job.function);
            let retry_at_ms = (attempts <= retries).then(|| {
                let factor = 1u64 << (attempts - 1).min(20);
                crate::now_ms().saturating_add(backoff_ms.saturating_mul(factor))
            });
            if retry_at_ms.is_none() && retries > 0 {
                metrics::counter!("kiri_retries_exhausted_total", "function" => name.to_string())
                    .increment(1);
            }
            if retry_at_ms.is_none() {
                self.meters.lock().expect("meters lock")[job.function].dead_lettered += 1;
            }
            let recorded = self.journal.dead_letter(Entry {
                function: Some(name.to_string()),
                version: Some(self.functions.version(job.function).to_string()),
                topic: job.topic.to_string(),
                reason: e.reason().to_string(),
                error: e.to_string(),
                received_ms: job.received_ms,
                payload: job.payload.to_vec(),
                payload_len: job.payload.len() as u64,
                attempts,
                retry_at_ms,
                retry_at_age: None,
            });
            match recorded {
                Err(OutboxError::Closed) => return Err(ProcessError::ShuttingDown),
                other => other?,
            }
        }
        if let Some(id) = replaced {
            // Only now, after any new entry is written: the input exists nowhere else.
            self.journal.remove_dead_letter(id)?;
            self.journal.release(id);
        }
        Ok(staged)
    }
}

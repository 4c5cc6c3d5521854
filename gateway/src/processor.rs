//! The processor: takes messages from ingest in groups, runs the functions they trigger,
//! commits every output and failure durably with one flush per group (group commit), and
//! only then acknowledges the messages to the broker. Runs on its own thread because wasmi
//! is synchronous; one thread keeps per-topic order.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use rumqttc::{AsyncClient, Publish, QoS};
use tokio::sync::{mpsc, oneshot, Notify};

use crate::codec;
use crate::dead_letter::{DeadLetter, DeadLetters};
use crate::dispatch::Router;
use crate::ingest::Incoming;
use crate::outbox::{NewRecord, Outbox, OutboxError};
use crate::runtime::{Destination, InvokeError, Output, Runtime};

/// How long to wait for input before retrying acks the ingest session could not take.
const ACK_RETRY: Duration = Duration::from_millis(10);

/// Work for the processor: a message to process and acknowledge, or a timer tick.
#[derive(Debug)]
pub enum Work {
    /// A message from the local broker.
    Message(Incoming),
    /// Function `function`'s `every` or `cron` schedule fired at `at_ms`.
    Timer {
        /// The function's index.
        function: usize,
        /// When it fired, ms since the Unix epoch.
        at_ms: u64,
    },
    /// An HTTP invocation waiting for the function's response.
    Invoke(HttpInvoke),
    /// A dead letter being replayed: removed once the new attempt is committed (a failure
    /// records a new dead letter).
    Replay {
        /// The entry's id.
        id: u64,
        /// The function's index.
        function: usize,
        /// The original topic.
        topic: String,
        /// The original payload.
        payload: Vec<u8>,
        /// When it first arrived.
        received_ms: u64,
        /// Tries so far: the entry's for an automatic retry, 0 for a manual replay (which
        /// starts the function's retries afresh).
        attempts: u32,
    },
}

/// A synchronous invocation over HTTP.
#[derive(Debug)]
pub struct HttpInvoke {
    /// The function's index.
    pub function: usize,
    /// The request body, passed as the payload.
    pub body: Vec<u8>,
    /// When the request arrived, ms since the Unix epoch.
    pub received_ms: u64,
    /// Gets the response body once the invocation's effects are committed, or why it failed.
    pub reply: oneshot::Sender<Result<Vec<u8>, InvokeFailure>>,
}

/// Why an HTTP invocation produced no response.
#[derive(Debug, Clone)]
pub struct InvokeFailure {
    /// Short reason: `trap`, `out_of_fuel`, `timeout`, `error`, `alloc`, `instantiate`.
    pub reason: &'static str,
    /// The full error.
    pub error: String,
}

/// The topic HTTP invocations are delivered on.
pub const HTTP_TOPIC: &str = "$http";

/// The topic timer events are delivered on.
pub const TIMER_TOPIC: &str = "$timer";

/// The processor could not commit; the gateway must stop rather than acknowledge.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    /// The outbox failed.
    #[error(transparent)]
    Outbox(#[from] OutboxError),
    /// The dead-letter store failed.
    #[error("dead letters: {0}")]
    DeadLetters(#[from] sled::Error),
    /// The gateway is shutting down while waiting for outbox room; the group is not acked.
    #[error("shutting down")]
    ShuttingDown,
}

/// Everything the processing stage owns.
pub struct Processor {
    /// The loaded functions.
    pub runtime: Runtime,
    /// Topic → functions.
    pub router: Router,
    /// Where results go.
    pub outbox: Arc<Outbox>,
    /// Where failures go.
    pub dead_letters: Arc<DeadLetters>,
    /// Per function: automatic retries, and the first retry's delay in ms.
    pub retry_policy: Vec<(u32, u64)>,
    /// Largest accepted payload.
    pub max_message_bytes: usize,
    /// Messages per group commit, at most.
    pub batch: usize,
    /// The ingest session, for acknowledgements.
    pub acker: AsyncClient,
    /// A session to the local broker for the functions' `publish` calls.
    pub local: AsyncClient,
    /// Wakes the forwarder after a commit.
    pub wake: Arc<Notify>,
    /// To wait on async client calls from this thread.
    pub handle: tokio::runtime::Handle,
}

impl Processor {
    /// Processes until ingest closes the queue. Returns an error only if a commit failed.
    pub fn run(mut self, mut rx: mpsc::Receiver<Work>) -> Result<(), ProcessError> {
        let mut group = Vec::with_capacity(self.batch);
        // Acks the ingest session could not take yet. Acks travel through the same rumqttc
        // event loop that reads messages, so they must never wait on it while ingest waits
        // on us: they are queued here and retried. Their number is bounded by the broker's
        // in-flight window (it sends no more unacknowledged QoS 1 messages).
        let mut pending_acks: VecDeque<Publish> = VecDeque::new();
        loop {
            while let Some(p) = pending_acks.front() {
                if self.acker.try_ack(p).is_err() {
                    break;
                }
                pending_acks.pop_front();
            }
            let first = if pending_acks.is_empty() {
                rx.blocking_recv()
            } else {
                let next = self
                    .handle
                    .block_on(async { tokio::time::timeout(ACK_RETRY, rx.recv()).await });
                match next {
                    Ok(m) => m,
                    Err(_) => continue,
                }
            };
            let Some(first) = first else { break };
            group.push(first);
            while group.len() < self.batch {
                match rx.try_recv() {
                    Ok(m) => group.push(m),
                    Err(_) => break,
                }
            }
            let mut local = Vec::new();
            let mut replies = Vec::new();
            for w in &mut group {
                let result = match w {
                    Work::Message(m) => self.process(m, &mut local),
                    Work::Timer { function, at_ms } => self.invoke_or_dead_letter(
                        *function,
                        TIMER_TOPIC,
                        &[],
                        *at_ms,
                        0,
                        &mut local,
                    ),
                    Work::Replay {
                        id,
                        function,
                        topic,
                        payload,
                        received_ms,
                        attempts,
                    } => {
                        metrics::counter!("kiri_dead_letters_replayed_total").increment(1);
                        self.invoke_or_dead_letter(
                            *function,
                            topic,
                            payload,
                            *received_ms,
                            *attempts,
                            &mut local,
                        )
                        .and_then(|()| self.dead_letters.remove(*id).map(drop).map_err(Into::into))
                    }
                    Work::Invoke(call) => self
                        .invoke(
                            call.function,
                            HTTP_TOPIC,
                            &call.body,
                            call.received_ms,
                            &mut local,
                        )
                        .map(|outcome| {
                            let outcome =
                                outcome
                                    .map(Option::unwrap_or_default)
                                    .map_err(|e| InvokeFailure {
                                        reason: e.reason(),
                                        error: e.to_string(),
                                    });
                            // The sender is taken out so the reply can follow the commit.
                            let (tx, _) = oneshot::channel();
                            replies.push((std::mem::replace(&mut call.reply, tx), outcome));
                        }),
                };
                match result {
                    // Unacknowledged, the group is redelivered by the broker after a restart.
                    Err(ProcessError::ShuttingDown) => return Ok(()),
                    other => other?,
                }
            }
            // Group commit: every output and dead letter of the group is durable after this.
            self.outbox.flush()?;
            metrics::counter!("kiri_commits_total").increment(1);
            for (reply, outcome) in replies {
                // The caller may have given up waiting; the effects are committed either way.
                let _ = reply.send(outcome);
            }
            for w in group.drain(..) {
                let Work::Message(m) = w else { continue };
                if m.publish.qos == QoS::AtMostOnce {
                    continue;
                }
                // Keep only what an ack needs (packet id and QoS), not the payload.
                let mut ack = Publish::new("", m.publish.qos, Vec::new());
                ack.pkid = m.publish.pkid;
                pending_acks.push_back(ack);
            }
            for o in local {
                if let Err(e) = self.handle.block_on(self.local.publish(
                    o.topic,
                    QoS::AtLeastOnce,
                    false,
                    o.payload,
                )) {
                    tracing::warn!(error = %e, "local publish dropped: local session closed");
                    metrics::counter!("kiri_local_publish_dropped_total").increment(1);
                }
            }
            self.wake.notify_one();
        }
        Ok(())
    }

    fn reject(
        &self,
        m: &Incoming,
        reason: &'static str,
        error: String,
    ) -> Result<(), ProcessError> {
        tracing::warn!(topic = %m.publish.topic, bytes = m.publish.payload.len(), reason, "input rejected: {error}");
        metrics::counter!("kiri_ingest_rejected_total", "reason" => reason).increment(1);
        self.dead_letters.record(&DeadLetter {
            function: None,
            topic: &m.publish.topic,
            reason,
            error,
            received_ms: m.received_ms,
            payload: &m.publish.payload,
            attempts: 0,
            retry_at_ms: None,
        })?;
        Ok(())
    }

    fn process(&mut self, m: &Incoming, local: &mut Vec<Output>) -> Result<(), ProcessError> {
        let topic = m.publish.topic.as_str();
        let payload = &m.publish.payload[..];
        if payload.len() > self.max_message_bytes {
            let error = format!(
                "payload of {} bytes exceeds broker.max_message_bytes = {}",
                payload.len(),
                self.max_message_bytes
            );
            return self.reject(m, "oversized", error);
        }
        if let Err(e) = codec::check_well_formed(payload) {
            return self.reject(m, "malformed", e.to_string());
        }
        for idx in self.router.route(topic) {
            self.invoke_or_dead_letter(idx, topic, payload, m.received_ms, 0, local)?;
        }
        Ok(())
    }

    /// Runs one function on one event; a failure is recorded as a dead letter, scheduled for
    /// an automatic retry while the function's `retries` are not used up. `attempts` counts
    /// the earlier tries (0 for a new event).
    fn invoke_or_dead_letter(
        &mut self,
        idx: usize,
        topic: &str,
        payload: &[u8],
        received_ms: u64,
        attempts: u32,
        local: &mut Vec<Output>,
    ) -> Result<(), ProcessError> {
        if attempts > 0 {
            // Retries run on a fresh instance, whatever the last failure was.
            self.runtime.discard_instance(idx);
        }
        if let Err(e) = self.invoke(idx, topic, payload, received_ms, local)? {
            let name = self.runtime.name(idx).to_string();
            let attempts = attempts + 1;
            let (retries, backoff_ms) = self.retry_policy[idx];
            let retry_at_ms = (attempts <= retries).then(|| {
                let factor = 1u64 << (attempts - 1).min(20);
                crate::now_ms() + backoff_ms.saturating_mul(factor)
            });
            if retry_at_ms.is_none() && retries > 0 {
                metrics::counter!("kiri_retries_exhausted_total", "function" => name.clone())
                    .increment(1);
            }
            self.dead_letters.record(&DeadLetter {
                function: Some(&name),
                topic,
                reason: e.reason(),
                error: e.to_string(),
                received_ms,
                payload,
                attempts,
                retry_at_ms,
            })?;
        }
        Ok(())
    }

    /// Runs one function on one event and stages its outputs and state for the group commit.
    /// The inner result is the invocation's: its `respond` body, or why it failed.
    fn invoke(
        &mut self,
        idx: usize,
        topic: &str,
        payload: &[u8],
        received_ms: u64,
        local: &mut Vec<Output>,
    ) -> Result<Result<Option<Vec<u8>>, InvokeError>, ProcessError> {
        let name = self.runtime.name(idx).to_string();
        let span = tracing::debug_span!("invoke", function = %name, topic);
        let _guard = span.enter();
        let invocation = match self.runtime.invoke(idx, topic, payload, received_ms) {
            Ok(invocation) => invocation,
            Err(e) => {
                let reason = e.reason();
                metrics::counter!("kiri_invocations_total", "function" => name, "outcome" => reason)
                    .increment(1);
                tracing::warn!(error = %e, "invocation failed");
                return Ok(Err(e));
            }
        };
        metrics::counter!("kiri_invocations_total", "function" => name.clone(), "outcome" => "ok")
            .increment(1);
        let now = crate::now_ms();
        let mut records = Vec::new();
        for o in invocation.outputs {
            match o.destination {
                Destination::Cloud => records.push(NewRecord {
                    function: name.clone(),
                    topic: o.topic,
                    payload: o.payload,
                    created_ms: now,
                }),
                Destination::Local => local.push(o),
            }
        }
        let bytes = records.iter().map(Outbox::encoded_len).sum();
        if !self.outbox.wait_for_room(records.len() as u64, bytes) {
            return Err(ProcessError::ShuttingDown);
        }
        let state = (&invocation.kv, invocation.kv_writes.as_slice());
        self.outbox.append_with_state(&records, Some(state))?;
        Ok(Ok(invocation.response))
    }
}

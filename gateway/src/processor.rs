//! The processor: takes work in groups (messages from ingest, timer ticks, HTTP calls,
//! retries), runs the functions they trigger (a function's events one after the other on its
//! instance, different functions, and the instances of a function with `concurrency` > 1, in
//! parallel on scoped threads), commits each invocation's outputs and state as it finishes,
//! flushes once per group (group commit), and only then acknowledges the messages and answers
//! the HTTP calls. wasmi is synchronous: none of this runs on the async executor.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rumqttc::{AsyncClient, QoS};
use tokio::sync::{mpsc, oneshot, Notify};

use crate::codec;
use crate::dead_letter::{DeadLetter, DeadLetters};
use crate::dispatch::Router;
use crate::ingest::{Ack, Incoming};
use crate::outbox::{NewRecord, Outbox, OutboxError};
use crate::runtime::{Destination, Invocation, InvokeError, Job, Output, Runtime};

/// How long to wait for input before retrying acks the ingest task could not take.
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
    /// A deployment package or command that came over the cloud link.
    Deploy {
        /// The topic it came on.
        topic: String,
        /// The package.
        payload: Vec<u8>,
    },
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
    /// Who called, when the request carried a JWT (none with the admin token).
    pub caller: Option<Arc<crate::runtime::Caller>>,
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
    /// The ingest session's client, for subscription changes.
    pub ingest: AsyncClient,
    /// Acknowledgements of committed messages, for the ingest task to send.
    pub acks: mpsc::Sender<Ack>,
    /// A session to the local broker for the functions' `publish` calls.
    pub local: AsyncClient,
    /// Wakes the forwarder after a commit.
    pub wake: Arc<Notify>,
    /// To wait on async client calls from this thread.
    pub handle: tokio::runtime::Handle,
    /// Set at shutdown: stop after the current group (queued work stays unacknowledged).
    pub stop: Arc<AtomicBool>,
    /// Wakes the processor when `stop` is set.
    pub stopping: Arc<Notify>,
    /// Each function's configuration by index; `None` once undeployed.
    pub specs: Vec<Option<crate::config::FunctionConfig>>,
    /// Names of the functions from the configuration file (a deployment may not take them).
    pub config_names: Vec<String>,
    /// What the HTTP API and the retry task see of the functions.
    pub directory: crate::directory::Directory,
    /// The functions' timers.
    pub schedules: crate::timers::Schedules,
    /// The ingest session's subscriptions (it re-subscribes to them on every connection).
    pub subscriptions: Arc<std::sync::Mutex<Vec<String>>>,
    /// The store (to persist the subscriptions).
    pub db: sled::Db,
    /// Deployment over MQTT, when `deploy.trusted_keys` is set.
    pub deploy: Option<crate::deploy::apply::Deployer>,
    /// Subscriptions wanted but not yet requested (the ingest request queue was full).
    pub pending_subscriptions: Option<Vec<String>>,
}

/// Where a job of the batch came from, for staging its result.
#[derive(Debug, Clone, Copy)]
enum Origin {
    /// A message or timer tick: a failure becomes a dead letter (with a retry schedule).
    Event,
    /// A replay or retry of dead letter `id`, tried `attempts` times before.
    Replay { id: u64, attempts: u32 },
    /// An HTTP invocation, group item `work`: a failure is answered, not dead-lettered.
    Http { work: usize },
}

/// What a staged job leaves for after the commit.
#[derive(Debug, Default)]
struct Staged {
    local: Vec<Output>,
    response: Option<Result<Vec<u8>, InvokeFailure>>,
}

/// The parts of the processor the invocation workers share to stage results.
struct Stager<'a> {
    outbox: &'a Outbox,
    dead_letters: &'a DeadLetters,
    retry_policy: &'a [(u32, u64)],
    names: &'a [String],
    versions: &'a [String],
    meters: &'a crate::runtime::meter::Meters,
}

impl Stager<'_> {
    /// Commits one job's result to the store (not yet flushed): outputs and state on
    /// success, a dead letter on failure.
    fn stage(
        &self,
        job: &Job<'_>,
        origin: Origin,
        result: Result<Invocation, InvokeError>,
    ) -> Result<Staged, ProcessError> {
        let name = &self.names[job.function];
        let span = tracing::debug_span!("invoke", function = %name, topic = job.topic);
        let _guard = span.enter();
        let mut staged = Staged::default();
        let failure = match result {
            Ok(invocation) => {
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
                        Destination::Local => staged.local.push(o),
                    }
                }
                let state = (&invocation.kv, invocation.kv_writes.as_slice());
                match self.outbox.append_with_state(&records, Some(state)) {
                    Err(OutboxError::Closed) => return Err(ProcessError::ShuttingDown),
                    other => other?,
                };
                staged.response = Some(Ok(invocation.response.unwrap_or_default()));
                None
            }
            Err(e) => {
                let reason = e.reason();
                metrics::counter!("kiri_invocations_total", "function" => name.clone(), "outcome" => reason)
                    .increment(1);
                tracing::warn!(error = %e, "invocation failed");
                staged.response = Some(Err(InvokeFailure {
                    reason,
                    error: e.to_string(),
                }));
                Some(e)
            }
        };
        let (attempts, replaced) = match origin {
            Origin::Http { .. } => return Ok(staged),
            Origin::Event => (0, None),
            Origin::Replay { id, attempts } => {
                if attempts > 0 {
                    self.meters.lock().expect("meters lock")[job.function].retries += 1;
                }
                (attempts, Some(id))
            }
        };
        if let Some(e) = failure {
            let attempts = attempts + 1;
            let (retries, backoff_ms) = self.retry_policy[job.function];
            let retry_at_ms = (attempts <= retries).then(|| {
                let factor = 1u64 << (attempts - 1).min(20);
                crate::now_ms().saturating_add(backoff_ms.saturating_mul(factor))
            });
            if retry_at_ms.is_none() && retries > 0 {
                metrics::counter!("kiri_retries_exhausted_total", "function" => name.clone())
                    .increment(1);
            }
            if retry_at_ms.is_none() {
                self.meters.lock().expect("meters lock")[job.function].dead_lettered += 1;
            }
            self.dead_letters.record(&DeadLetter {
                function: Some(name),
                version: Some(&self.versions[job.function]),
                topic: job.topic,
                reason: e.reason(),
                error: e.to_string(),
                received_ms: job.received_ms,
                payload: job.payload,
                attempts,
                retry_at_ms,
            })?;
        }
        if let Some(id) = replaced {
            // Only now, after any new entry is written: the input exists nowhere else.
            self.dead_letters.remove(id)?;
            self.dead_letters.release(id);
        }
        Ok(staged)
    }
}

impl Processor {
    /// Processes until every producer of work is gone. Returns an error only if a commit failed.
    pub fn run(mut self, mut rx: mpsc::Receiver<Work>) -> Result<(), ProcessError> {
        let mut group = Vec::with_capacity(self.batch);
        // Acks the ingest task could not take yet. The task that sends them also feeds us,
        // so they must never wait on it while it waits on us: they are queued here and
        // retried. The task takes every ack before it reads more, so they are at most the
        // messages we took in since it last ran: `queue + batch`.
        let mut pending_acks: VecDeque<Ack> = VecDeque::new();
        for (idx, spec) in self.specs.clone().iter().enumerate() {
            if let Some(f) = spec {
                self.schedules.set(idx, f);
            }
        }
        loop {
            self.sync_subscriptions();
            while let Some(&ack) = pending_acks.front() {
                match self.acks.try_send(ack) {
                    Ok(()) => {
                        pending_acks.pop_front();
                    }
                    Err(mpsc::error::TrySendError::Full(_)) => break,
                    // The ingest task is gone (shutting down): the broker redelivers them.
                    Err(mpsc::error::TrySendError::Closed(_)) => pending_acks.clear(),
                }
            }
            if self.stop.load(Ordering::Relaxed) {
                break;
            }
            // Wait for work, the stop notice, or (with acks pending) the retry tick.
            let wait = if pending_acks.is_empty() && self.pending_subscriptions.is_none() {
                Duration::from_secs(3600)
            } else {
                ACK_RETRY
            };
            let stopping = self.stopping.clone();
            let next = self.handle.block_on(async {
                tokio::select! {
                    m = rx.recv() => Some(m),
                    _ = stopping.notified() => Some(None),
                    _ = tokio::time::sleep(wait) => None,
                }
            });
            let first = match next {
                Some(m) => m,
                None => continue,
            };
            let Some(first) = first else { break };
            group.push(first);
            while group.len() < self.batch {
                match rx.try_recv() {
                    Ok(m) => group.push(m),
                    Err(_) => break,
                }
            }
            // A deployment takes effect between groups: the work before it runs on the old
            // version, the work after it on the new one.
            let mut rest: VecDeque<Work> = group.drain(..).collect();
            while !rest.is_empty() {
                match rest.iter().position(|w| self.is_deployment(w)) {
                    Some(0) => {
                        let w = rest.pop_front().expect("not empty");
                        if let Some(ack) = self.deployment(w)? {
                            pending_acks.push_back(ack);
                        }
                    }
                    cut => {
                        let n = cut.unwrap_or(rest.len());
                        let mut segment: Vec<Work> = rest.drain(..n).collect();
                        if !self.commit_segment(&mut segment, &mut pending_acks)? {
                            // Unacknowledged, the rest is redelivered by the broker after a restart.
                            return Ok(());
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Processes a segment of work and queues its acknowledgements; false when shutting down.
    fn commit_segment(
        &mut self,
        group: &mut Vec<Work>,
        pending_acks: &mut VecDeque<Ack>,
    ) -> Result<bool, ProcessError> {
        let names: Vec<String> = (0..self.runtime.len())
            .map(|i| self.runtime.name(i).to_string())
            .collect();
        match self.process_group(group, &names)? {
            Some(local) => {
                for w in group.drain(..) {
                    let Work::Message(m) = w else { continue };
                    if let Some(ack) = ack_of(&m) {
                        pending_acks.push_back(ack);
                    }
                }
                for o in local {
                    // Never wait on the local broker: it may be down, and the processor
                    // must keep committing (and stop when asked).
                    let sent = self
                        .local
                        .try_publish(o.topic, QoS::AtLeastOnce, false, o.payload);
                    if let Err(e) = sent {
                        tracing::warn!(error = %e, "local publish dropped: local session unavailable or its queue full");
                        metrics::counter!("kiri_local_publish_dropped_total").increment(1);
                    }
                }
                self.wake.notify_one();
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Runs one group: its jobs (in parallel across functions), then one flush, then the HTTP
    /// answers. Returns the local messages to publish, or `None` when shutting down.
    fn process_group(
        &mut self,
        group: &mut [Work],
        names: &[String],
    ) -> Result<Option<Vec<Output>>, ProcessError> {
        let mut jobs = Vec::new();
        let mut origins = Vec::new();
        for (wi, w) in group.iter().enumerate() {
            match w {
                Work::Message(m) => {
                    if let Some((reason, error)) = self.check(m) {
                        self.reject(m, reason, error)?;
                        continue;
                    }
                    for function in self.router.route(&m.publish.topic) {
                        jobs.push(Job {
                            function,
                            topic: &m.publish.topic,
                            payload: &m.publish.payload,
                            received_ms: m.received_ms,
                            fresh: false,
                            caller: None,
                        });
                        origins.push(Origin::Event);
                    }
                }
                Work::Timer { function, .. }
                    if self
                        .specs
                        .get(*function)
                        .and_then(Option::as_ref)
                        .is_none_or(|f| f.every.is_none() && f.cron.is_none()) =>
                {
                    // Its function was undeployed, or replaced by a version without a timer,
                    // after this tick was queued.
                }
                Work::Replay { function, .. }
                    if self.specs.get(*function).is_none_or(Option::is_none) =>
                {
                    // Its function was undeployed after this was queued.
                    if let Work::Replay { id, .. } = w {
                        self.dead_letters.release(*id);
                    }
                }
                Work::Invoke(call) if !self.invocable(call.function) => {}
                Work::Deploy { .. } => {}
                Work::Timer { function, at_ms } => {
                    jobs.push(Job {
                        function: *function,
                        topic: TIMER_TOPIC,
                        payload: &[],
                        received_ms: *at_ms,
                        fresh: false,
                        caller: None,
                    });
                    origins.push(Origin::Event);
                }
                Work::Replay {
                    id,
                    function,
                    topic,
                    payload,
                    received_ms,
                    attempts,
                } => {
                    metrics::counter!("kiri_dead_letters_replayed_total").increment(1);
                    // Retries run on a fresh instance, whatever the last failure was.
                    jobs.push(Job {
                        function: *function,
                        topic,
                        payload,
                        received_ms: *received_ms,
                        fresh: *attempts > 0,
                        caller: None,
                    });
                    origins.push(Origin::Replay {
                        id: *id,
                        attempts: *attempts,
                    });
                }
                Work::Invoke(call) => {
                    jobs.push(Job {
                        function: call.function,
                        topic: HTTP_TOPIC,
                        payload: &call.body,
                        received_ms: call.received_ms,
                        fresh: false,
                        caller: call.caller.as_ref(),
                    });
                    origins.push(Origin::Http { work: wi });
                }
            }
        }
        let meters = self.runtime.meters();
        let versions: Vec<String> = (0..self.runtime.len())
            .map(|i| self.runtime.version(i).to_string())
            .collect();
        let stager = Stager {
            outbox: &self.outbox,
            dead_letters: &self.dead_letters,
            retry_policy: &self.retry_policy,
            names,
            versions: &versions,
            meters: &meters,
        };
        let staged: Vec<std::sync::Mutex<Staged>> =
            jobs.iter().map(|_| Default::default()).collect();
        let result = self.runtime.run_batch(&jobs, |j, result| {
            let s = stager.stage(&jobs[j], origins[j], result)?;
            *staged[j].lock().expect("staged lock") = s;
            Ok::<(), ProcessError>(())
        });
        if let Err(errors) = result {
            // A storage failure outranks a shutdown that happened meanwhile.
            return match errors
                .into_iter()
                .find(|e| !matches!(e, ProcessError::ShuttingDown))
            {
                Some(e) => Err(e),
                None => Ok(None),
            };
        }
        // Group commit: every output, state change and dead letter of the group is durable.
        self.outbox.flush()?;
        self.refuse_stale_invocations(group);
        metrics::counter!("kiri_commits_total").increment(1);
        let mut local = Vec::new();
        for (origin, s) in origins.into_iter().zip(staged) {
            let s = s.into_inner().expect("staged lock");
            local.extend(s.local);
            if let (Origin::Http { work }, Some(response)) = (origin, s.response) {
                if let Work::Invoke(call) = &mut group[work] {
                    // The caller may have given up waiting; the effects are committed either way.
                    let (unused, _) = oneshot::channel();
                    let _ = std::mem::replace(&mut call.reply, unused).send(response);
                }
            }
        }
        Ok(Some(local))
    }

    /// Whether function `idx` runs and takes HTTP calls (it may have been undeployed, or
    /// replaced by a version without `http`, since a call was queued).
    fn invocable(&self, idx: usize) -> bool {
        self.specs
            .get(idx)
            .and_then(Option::as_ref)
            .is_some_and(|f| f.http)
    }

    /// Answers HTTP calls to functions undeployed after the call was queued.
    fn refuse_stale_invocations(&self, group: &mut [Work]) {
        for w in group {
            if let Work::Invoke(call) = w {
                if !self.invocable(call.function) {
                    let (unused, _) = oneshot::channel();
                    let reply = std::mem::replace(&mut call.reply, unused);
                    let _ = reply.send(Err(InvokeFailure {
                        reason: "not_found",
                        error: "the function was undeployed".into(),
                    }));
                }
            }
        }
    }

    /// Why a message cannot be processed at all, if it cannot.
    fn check(&self, m: &Incoming) -> Option<(&'static str, String)> {
        let payload = &m.publish.payload;
        if payload.len() > self.max_message_bytes {
            let error = format!(
                "payload of {} bytes exceeds broker.max_message_bytes = {}",
                payload.len(),
                self.max_message_bytes
            );
            return Some(("oversized", error));
        }
        codec::check_well_formed(payload)
            .err()
            .map(|e| ("malformed", e.to_string()))
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
            version: None,
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
}

/// The acknowledgement `m` needs; `None` for QoS 0.
pub(crate) fn ack_of(m: &Incoming) -> Option<Ack> {
    (m.publish.qos != QoS::AtMostOnce).then_some(Ack {
        connection: m.connection,
        pkid: m.publish.pkid,
    })
}

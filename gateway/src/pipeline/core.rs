//! The pure core of the pipeline: takes a group of work, runs the functions it triggers,
//! stages their effects in the [`Journal`], flushes once per segment (group commit), and only
//! then answers the HTTP calls, publishes to the site broker and hands back the
//! acknowledgements. Deployments take effect between the segments of a group. No async
//! runtime and no sockets: its I/O with the site broker is behind the traits of `io.rs`, and
//! `run.rs` drives it. (It does touch two tokio primitives that need no runtime: the one-shot
//! channels HTTP calls are answered on, and the `Notify` that wakes the uplink; deployment
//! results for the cloud go through the deployer's channel.)

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{oneshot, Notify};

use super::admit::Input;
use super::io::{HandBack, Site};
use super::journal::{JobOrigin, Journal, Staged, Stager};
use super::work::{Ack, HttpInvoke, InvokeFailure, Work, HTTP_TOPIC, TIMER_TOPIC};
use super::ProcessError;
use crate::deploy::Deployer;
use crate::registry::Registry;
use crate::runtime::{Job, Output};

/// What bounds the core.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest accepted payload (`broker.max_message_bytes`).
    pub max_message_bytes: usize,
    /// Work items per group commit, at most (`broker.batch`).
    pub batch: usize,
    /// How long a group commit may wait for more work before its flush
    /// (`gateway.commit_window_ms`): the work's results are written (and forwarded) at once,
    /// its acknowledgements wait for the flush. Zero: a flush per group taken.
    pub window: Duration,
    /// QoS 1 messages the site broker sends a session before it waits for acknowledgements:
    /// a commit window closes at that many (else the broker would wait for the window).
    pub unacked: usize,
}

/// What a group came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Committed; its acknowledgements and answers are out (or queued to go).
    Committed,
    /// The gateway is stopping: the group was given up unacknowledged (the broker
    /// redelivers it after a restart).
    Stopped,
}

/// What one core is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Everything, in one lane: the functions' events, deployments, the subscriptions of all
    /// (one session for all; the tools and tests run it so).
    All,
    /// The gateway's control lane: deployments (they change the other lanes through
    /// [`Subscriptions::functions_changed`]) and whatever else comes its way; its session
    /// subscribes to the deployment topics only.
    Control,
    /// One function's lane: its events only (its session subscribes to its triggers), with
    /// its own group commit; deployments on its session are events like any other.
    Lane(usize),
}

/// The pipeline's state between groups.
pub struct Core<J> {
    pub(super) role: Role,
    pub(super) registry: Registry,
    pub(super) journal: J,
    pub(super) deploy: Option<Deployer>,
    pub(super) limits: Limits,
    /// Acks the ingest task could not take yet. The task that sends them also feeds the
    /// pipeline, so they never wait on it while it waits on the pipeline: they are queued
    /// here and retried. The task takes every ack before it reads more, so they are at most
    /// the messages taken in since it last ran: `queue + batch`.
    pub(super) pending_acks: VecDeque<Ack>,
    /// The ingest session's subscriptions (it re-subscribes to them on every connection).
    pub(super) subscriptions: Arc<Mutex<Vec<String>>>,
    /// Subscriptions wanted but not yet requested (the ingest request queue was full).
    pub(super) pending_subscriptions: Option<Vec<String>>,
    /// Wakes the uplink after a commit.
    wake: Arc<Notify>,
    /// Sparkplug B metric names by alias, learned from the BIRTH messages this core sees.
    pub(super) sparkplug: crate::formats::Aliases,
    /// Work written but not yet flushed (the commit window is open).
    window: Window,
}

/// What waits for the flush that closes a commit window.
#[derive(Default)]
struct Window {
    /// Acknowledgements of the work written, in order.
    acks: Vec<Ack>,
    /// The functions' `publish` outputs (they go to the site broker after the flush).
    local: Vec<Output>,
    /// Work items written.
    items: usize,
    /// When the first of them was written.
    opened: Option<Instant>,
}

impl<J: Journal> Core<J> {
    /// A core over `registry` and `journal`, taking deployments when `deploy` is set.
    /// `subscriptions` is the list the ingest session subscribes to on every connection;
    /// the core brings it in line with the registry's needs as functions come and go.
    pub fn new(
        registry: Registry,
        journal: J,
        deploy: Option<Deployer>,
        limits: Limits,
        subscriptions: Arc<Mutex<Vec<String>>>,
        wake: Arc<Notify>,
    ) -> Core<J> {
        Core {
            role: Role::All,
            registry,
            journal,
            deploy,
            limits,
            pending_acks: VecDeque::new(),
            subscriptions,
            pending_subscriptions: None,
            wake,
            sparkplug: Default::default(),
            window: Window::default(),
        }
    }

    /// The core for `role` (by default [`Role::All`]).
    pub fn with_role(mut self, role: Role) -> Core<J> {
        self.role = role;
        self
    }

    /// Work items per group, at most.
    pub fn batch(&self) -> usize {
        self.limits.batch
    }

    /// When the open commit window must be flushed ([`Core::close_window`]), if one is open.
    pub fn deadline(&self) -> Option<Instant> {
        self.window.opened.map(|t| t + self.limits.window)
    }

    /// Flushes the work written in the open commit window, if any, and lets its
    /// acknowledgements and `publish` outputs go. A failed flush lets nothing go; the gateway
    /// must stop.
    pub fn close_window(&mut self, site: &mut impl Site) -> Result<(), ProcessError> {
        if self.window.items == 0 {
            return Ok(());
        }
        self.journal.flush()?;
        metrics::counter!("kiri_commits_total").increment(1);
        self.release(site);
        Ok(())
    }

    /// After the flush that covers the window: its acknowledgements queued (in order), its
    /// outputs published, the window closed.
    fn release(&mut self, site: &mut impl Site) {
        let w = std::mem::take(&mut self.window);
        self.pending_acks.extend(w.acks);
        for o in w.local {
            if let Err(e) = site.publish(o.topic, o.payload) {
                tracing::warn!(error = %e, "local publish dropped: local session unavailable or its queue full");
                metrics::counter!("kiri_local_publish_dropped_total").increment(1);
            }
        }
        self.hand_back_acks(site);
    }

    /// Whether acknowledgements or subscription changes still wait for room: the driver then
    /// comes back soon even without new work.
    pub fn waiting(&self) -> bool {
        !self.pending_acks.is_empty() || self.pending_subscriptions.is_some()
    }

    /// Hands back the acknowledgements waiting, in order, while the ingest task takes them.
    pub fn hand_back_acks(&mut self, site: &mut impl Site) {
        while let Some(&ack) = self.pending_acks.front() {
            match site.hand_back(ack) {
                HandBack::Taken => {
                    self.pending_acks.pop_front();
                }
                HandBack::Full => break,
                // The ingest task is gone (shutting down): the broker redelivers them.
                HandBack::Gone => self.pending_acks.clear(),
            }
        }
    }

    /// Processes one group: its segments of ordinary work, each committed with one flush,
    /// and the deployments between them, each applied on its own. Its acknowledgements go
    /// back as far as the ingest task takes them now; the rest wait in the core.
    pub fn process(
        &mut self,
        group: Vec<Work>,
        site: &mut impl Site,
    ) -> Result<Step, ProcessError> {
        // A deployment takes effect between groups: the work before it runs on the old
        // version, the work after it on the new one.
        let mut rest: VecDeque<Work> = group.into();
        while !rest.is_empty() {
            match rest.iter().position(|w| self.is_deployment(w)) {
                Some(0) => {
                    // What came before it is committed first (and acknowledged in order).
                    self.close_window(site)?;
                    let w = rest.pop_front().expect("not empty");
                    self.deployment(w, site);
                }
                cut => {
                    let n = cut.unwrap_or(rest.len());
                    let mut segment: Vec<Work> = rest.drain(..n).collect();
                    if self.commit_segment(&mut segment, site)? == Step::Stopped {
                        // Unacknowledged, the rest is redelivered by the broker after a restart.
                        return Ok(Step::Stopped);
                    }
                }
            }
        }
        self.hand_back_acks(site);
        Ok(Step::Committed)
    }

    /// Processes a segment of work: written at once (and its results forwarded), flushed now
    /// or when the commit window closes; its acknowledgements queued after the flush.
    fn commit_segment(
        &mut self,
        segment: &mut [Work],
        site: &mut impl Site,
    ) -> Result<Step, ProcessError> {
        // An HTTP caller waits for its answer, which goes only after the flush: no window. Nor
        // for more than a group, or than the site broker sends before waiting for acks.
        let acks: Vec<Ack> = segment.iter().filter_map(acked).collect();
        let now = self.limits.window.is_zero()
            || segment.iter().any(|w| matches!(w, Work::Invoke(_)))
            || self.window.items + segment.len() >= self.limits.batch
            || self.window.acks.len() + acks.len() >= self.limits.unacked;
        let Some(local) = self.process_group(segment, now)? else {
            return Ok(Step::Stopped);
        };
        self.window.acks.extend(acks);
        self.window.local.extend(local);
        self.window.items += segment.len();
        self.window.opened.get_or_insert_with(Instant::now);
        // The results are readable now, flushed or not.
        self.wake.notify_one();
        if now {
            self.release(site);
        }
        Ok(Step::Committed)
    }

    /// Runs one segment: its jobs (in parallel across functions), then, with `flush`, one
    /// flush (which covers the open window too), then the HTTP answers (a segment with HTTP
    /// calls is always flushed). Returns the local messages to publish, or `None` when
    /// shutting down.
    fn process_group(
        &mut self,
        group: &mut [Work],
        flush: bool,
    ) -> Result<Option<Vec<Output>>, ProcessError> {
        // Each message checked against the format of each function it triggers, and converted
        // as the function asks; what fails is rejected here, before any function runs.
        let mut inputs: Vec<Vec<Input<'_>>> = Vec::with_capacity(group.len());
        for w in group.iter() {
            let admitted = match w {
                Work::Message(m) => self.admit(m),
                Work::Replay(r) => Ok(self.admit_replay(r).into_iter().collect()),
                _ => Ok(Vec::new()),
            };
            match admitted {
                Ok(i) => inputs.push(i),
                Err(ProcessError::ShuttingDown) => return Ok(None),
                Err(e) => return Err(e),
            }
        }
        let mut jobs = Vec::new();
        let mut origins = Vec::new();
        for (wi, w) in group.iter().enumerate() {
            match w {
                Work::Message(m) => {
                    for input in &inputs[wi] {
                        jobs.push(Job {
                            function: input.function,
                            topic: &m.publish.topic,
                            payload: &input.payload,
                            received_ms: m.received_ms,
                            fresh: false,
                            caller: None,
                            format: input.format,
                            http: None,
                        });
                        origins.push(JobOrigin::Event);
                    }
                }
                Work::Timer { function, at_ms } => {
                    // Its function may have been undeployed, or replaced by a version without
                    // a timer, after this tick was queued.
                    if self.registry.has_timer(*function) {
                        jobs.push(Job {
                            function: *function,
                            topic: TIMER_TOPIC,
                            payload: &[],
                            received_ms: *at_ms,
                            fresh: false,
                            caller: None,
                            format: kiri_abi::format::NONE,
                            http: None,
                        });
                        origins.push(JobOrigin::Event);
                    }
                }
                Work::Replay(r) => {
                    let Some(input) = inputs[wi].first() else {
                        // Its function was undeployed after this was queued, or the payload
                        // does not pass its format (any more): it stays a dead letter.
                        self.journal.release(r.id);
                        continue;
                    };
                    metrics::counter!("kiri_dead_letters_replayed_total").increment(1);
                    // Retries run on a fresh instance, whatever the last failure was.
                    jobs.push(Job {
                        function: r.function,
                        topic: &r.topic,
                        payload: &input.payload,
                        received_ms: r.received_ms,
                        fresh: r.attempts > 0,
                        caller: None,
                        format: input.format,
                        http: None,
                    });
                    origins.push(JobOrigin::Replay {
                        id: r.id,
                        attempts: r.attempts,
                    });
                }
                Work::Invoke(call) => {
                    if self.registry.takes_http(call.function) {
                        jobs.push(Job {
                            function: call.function,
                            topic: HTTP_TOPIC,
                            payload: &call.body,
                            received_ms: call.received_ms,
                            fresh: false,
                            caller: call.caller.as_ref(),
                            format: kiri_abi::format::BYTES,
                            http: Some(&call.request),
                        });
                        origins.push(JobOrigin::Http { work: wi });
                    }
                }
                Work::Deploy { .. } => {}
            }
        }
        let (runner, functions) = self.registry.for_jobs();
        let meters = self.registry.meters();
        let stager = Stager {
            journal: &self.journal,
            functions,
            meters: &meters,
        };
        let staged: Vec<Mutex<Staged>> = jobs.iter().map(|_| Default::default()).collect();
        let result = runner.run_batch(&jobs, |j, result| {
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
        if flush {
            // Group commit: every output, state change and dead letter of the group (and of the
            // window before it) is durable.
            self.journal.flush()?;
            metrics::counter!("kiri_commits_total").increment(1);
        }
        self.refuse_stale_invocations(group);
        let mut local = Vec::new();
        for (origin, s) in origins.into_iter().zip(staged) {
            let s = s.into_inner().expect("staged lock");
            local.extend(s.local);
            if let (JobOrigin::Http { work }, Some(response)) = (origin, s.response) {
                if let Work::Invoke(call) = &mut group[work] {
                    answer(call, response);
                }
            }
        }
        Ok(Some(local))
    }

    /// Answers HTTP calls to functions undeployed (or without `http` now) after the call was
    /// queued.
    fn refuse_stale_invocations(&self, group: &mut [Work]) {
        for w in group {
            if let Work::Invoke(call) = w {
                if !self.registry.takes_http(call.function) {
                    let failure = InvokeFailure {
                        reason: "not_found",
                        error: "the function was undeployed".into(),
                    };
                    answer(call, Err(failure));
                }
            }
        }
    }
}

/// The acknowledgement `w` needs once committed: a QoS 1 message's.
pub(super) fn acked(w: &Work) -> Option<Ack> {
    match w {
        Work::Message(m) => m.ack(),
        _ => None,
    }
}

/// Answers an HTTP call (the caller may have given up waiting; the effects are committed
/// either way).
fn answer(call: &mut HttpInvoke, response: Result<crate::runtime::HttpAnswer, InvokeFailure>) {
    let (unused, _) = oneshot::channel();
    let _ = std::mem::replace(&mut call.reply, unused).send(response);
}

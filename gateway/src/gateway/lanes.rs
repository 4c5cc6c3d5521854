//! The function lanes: each active function gets its input, a bounded queue, and a pipeline
//! thread with its own group commit ([`Role::Lane`]). Its input: with an external broker, a
//! session of its own (subscribed to its triggers, client id `<broker.client_id>.<function>`);
//! with the embedded broker, the front door ([`crate::site_broker::front`]), which hands it
//! the messages its triggers match in-process. A slow, failing or flooding function so delays
//! only its own events: its session's in-flight window (or the front door's wait for room in
//! its queue), its queue and its commits are its own, and its acknowledgements go out in
//! order as MQTT wants, after its own commits. A message that triggers several functions
//! reaches each through its own input and is acknowledged once each committed it.
//!
//! The control lane (deployments) calls [`Lanes::sync`] after a deployment changed the
//! functions: a new function gets a lane, a replaced one keeps its lane (its next group runs
//! on the new version, with its session's subscriptions changed to the new triggers), and
//! an undeployed one's lane stops and its session is ended at the broker. At start, the
//! sessions of functions an earlier run had and this one does not are ended too.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use rumqttc::{AsyncClient, QoS, SubscribeFilter};
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinHandle;
use tracing::Instrument;

use super::site::SiteAccess;
use crate::dead_letters::DeadLetters;
use crate::ingest::{self, Readiness};
use crate::outbox::Outbox;
use crate::pipeline::{self, Core, Dispatch, Durable, Limits, ProcessError, Role, SiteLink, Stop};
use crate::registry::Registry;

/// What every lane is made with.
pub(super) struct LaneKit {
    pub(super) access: SiteAccess,
    pub(super) registry: Registry,
    pub(super) outbox: Arc<Outbox>,
    pub(super) dead_letters: Arc<DeadLetters>,
    pub(super) wake: Arc<Notify>,
    pub(super) local: AsyncClient,
    pub(super) db: sled::Db,
    pub(super) dispatch: Dispatch,
    pub(super) readiness: Readiness,
    pub(super) limits: Limits,
    /// `broker.queue`: each lane's queue.
    pub(super) queue: usize,
    pub(super) handle: tokio::runtime::Handle,
    /// Where a lane that ended on its own (a failed commit) says so.
    pub(super) ended: mpsc::UnboundedSender<(String, Option<String>)>,
}

/// Counts every active function's lane session toward readiness from now on, before the
/// control session can report itself subscribed: else the gateway would say it is ready (and
/// the broker drop a sensor's message to a trigger not yet subscribed) until the lanes start.
pub(super) fn count_sessions(registry: &Registry, access: &SiteAccess, readiness: &Readiness) {
    for idx in registry.active() {
        if let Some(spec) = registry.spec(idx) {
            readiness.session(&access.lane_id(&spec.name));
        }
    }
}

/// One function's lane.
struct Lane {
    name: String,
    session: String,
    triggers: Vec<String>,
    /// Its session with the site broker (none behind the front door).
    client: Option<AsyncClient>,
    subscriptions: Arc<Mutex<Vec<String>>>,
    ingest: JoinHandle<()>,
    stop: Stop,
    thread: std::thread::JoinHandle<Result<(), ProcessError>>,
}

/// The running lanes, by function index.
pub(super) struct Lanes {
    kit: LaneKit,
    running: HashMap<usize, Lane>,
}

impl Lanes {
    pub(super) fn new(kit: LaneKit) -> Lanes {
        Lanes {
            kit,
            running: HashMap::new(),
        }
    }

    /// Starts a lane for every active function, and ends the sessions of functions an
    /// earlier run had that are gone.
    pub(super) fn start(&mut self) -> anyhow::Result<()> {
        self.sync()?;
        let gone: Vec<String> = crate::store::lane_sessions(&self.kit.db)?
            .into_iter()
            .filter(|name| !self.running.values().any(|l| &l.name == name))
            .collect();
        for name in gone {
            self.forget(&name);
        }
        Ok(())
    }

    /// Brings the lanes in line with the registry's active functions.
    pub(super) fn sync(&mut self) -> anyhow::Result<()> {
        let active = self.kit.registry.active();
        let retired: Vec<usize> = self
            .running
            .keys()
            .copied()
            .filter(|i| !active.contains(i))
            .collect();
        for idx in retired {
            if let Some(lane) = self.running.remove(&idx) {
                tracing::info!(function = %lane.name, "function lane stopped (undeployed)");
                // Asked to stop before its queue's senders go: a lane that finds its queue
                // closed and was not asked to stop reports a failure, and the gateway stops.
                lane.stop.stop();
                self.kit.dispatch.remove_lane(idx);
                if let Some(front) = &self.kit.access.front {
                    front.remove_route(idx);
                }
                self.kit.readiness.remove(&lane.session);
                lane.ingest.abort();
                let name = lane.name.clone();
                // Its thread ends after the group it is on; then its session is ended.
                let thread = lane.thread;
                let handle = self.kit.handle.clone();
                let access = self.kit.access.clone();
                let db = self.kit.db.clone();
                std::thread::spawn(move || {
                    let _ = thread.join();
                    handle.block_on(forget_session(access, db, name));
                });
            }
        }
        for idx in active {
            let Some(spec) = self.kit.registry.spec(idx) else {
                continue;
            };
            match self.running.get_mut(&idx) {
                None => self.start_lane(idx, &spec.name, spec.filters())?,
                Some(lane) if lane.triggers != spec.filters() => {
                    resubscribe(lane, spec.filters(), &self.kit.db)
                }
                Some(_) => {}
            }
        }
        Ok(())
    }

    fn start_lane(&mut self, idx: usize, name: &str, triggers: Vec<String>) -> anyhow::Result<()> {
        let kit = &self.kit;
        let session = kit.access.lane_id(name);
        crate::telemetry::catalog::register_function(name);
        let requests = kit.queue + kit.limits.batch + 16;
        let (acks_tx, mut acks_rx) = mpsc::channel(requests);
        let (work_tx, work_rx) = mpsc::channel(kit.queue);
        let stale = crate::store::replace_subscriptions_of(&kit.db, Some(name), &triggers)?;
        let subscriptions = Arc::new(Mutex::new(triggers.clone()));
        let (client, ingest) = match &kit.access.front {
            // The front door reads the filters as they change, and takes the acknowledgements
            // back to the clients' connections.
            Some(front) => {
                front.set_route(idx, subscriptions.clone(), work_tx.clone());
                kit.readiness.session(&session).set(true, true);
                let front = front.clone();
                let forward = kit.handle.spawn(async move {
                    while let Some(ack) = acks_rx.recv().await {
                        front.ack(ack);
                    }
                });
                (None, forward)
            }
            None => {
                let (client, mut eventloop) =
                    AsyncClient::new(kit.access.options(&session, requests), requests);
                ingest::no_delay(&mut eventloop);
                let ingest = kit.handle.spawn(
                    ingest::run(
                        eventloop,
                        client.clone(),
                        subscriptions.clone(),
                        stale,
                        kit.access.max_packet,
                        kit.readiness.session(&session),
                        ingest::Handoff {
                            work: work_tx.clone(),
                            acks: acks_rx,
                        },
                    )
                    .instrument(tracing::info_span!("lane", function = %name)),
                );
                (Some(client), ingest)
            }
        };
        kit.dispatch.set_lane(idx, work_tx);
        let journal = Durable {
            outbox: kit.outbox.clone(),
            dead_letters: kit.dead_letters.clone(),
        };
        let core = Core::new(
            kit.registry.clone(),
            journal,
            None,
            kit.limits,
            subscriptions.clone(),
            kit.wake.clone(),
        )
        .with_role(Role::Lane(idx));
        let link = SiteLink {
            acks: acks_tx,
            ingest: client.clone(),
            local: kit.local.clone(),
            local_lanes: kit.access.local_lanes(),
            db: kit.db.clone(),
            lane: Some(name.to_string()),
            on_functions_changed: None,
        };
        let stop = Stop::default();
        let thread = {
            let (stop, handle, ended) = (stop.clone(), kit.handle.clone(), kit.ended.clone());
            let name = name.to_string();
            std::thread::Builder::new()
                .name(format!("kiri-lane-{name}"))
                .spawn(move || {
                    let result = pipeline::run(core, work_rx, link, stop.clone(), handle);
                    if !stop.asked() || result.is_err() {
                        let _ = ended.send((name, result.as_ref().err().map(|e| e.to_string())));
                    }
                    result
                })?
        };
        tracing::info!(function = %name, %session, "function lane started");
        self.running.insert(
            idx,
            Lane {
                name: name.to_string(),
                session,
                triggers,
                client,
                subscriptions,
                ingest,
                stop,
                thread,
            },
        );
        Ok(())
    }

    /// Ends the session of `name`, a function that is gone (behind the front door there is
    /// none: the embedded broker starts empty; only the store's note of it goes).
    fn forget(&self, name: &str) {
        if self.kit.access.front.is_some() {
            if let Err(e) = crate::store::forget_lane_session(&self.kit.db, name) {
                tracing::warn!(error = %e, "cannot forget a removed function's session");
            }
            return;
        }
        let (access, db) = (self.kit.access.clone(), self.kit.db.clone());
        self.kit
            .handle
            .spawn(forget_session(access, db, name.to_string()));
    }

    /// Stops every lane's input (its session) and asks its thread to stop after the group it
    /// is on; the threads, to join.
    pub(super) fn stop(
        &mut self,
    ) -> Vec<(String, std::thread::JoinHandle<Result<(), ProcessError>>)> {
        self.running
            .drain()
            .map(|(_, lane)| {
                lane.stop.stop();
                lane.ingest.abort();
                (lane.name, lane.thread)
            })
            .collect()
    }
}

/// Moves `lane`'s input to `triggers` (a new version of its function): its session
/// subscribes to the new filters and unsubscribes the old ones (behind the front door, the
/// list alone is what counts), and the list is kept.
fn resubscribe(lane: &mut Lane, triggers: Vec<String>, db: &sled::Db) {
    if let Some(client) = &lane.client {
        subscribe_session(client, &lane.name, &lane.triggers, &triggers);
    }
    *lane.subscriptions.lock().unwrap_or_else(|e| e.into_inner()) = triggers.clone();
    if let Err(e) = crate::store::save_subscriptions(db, Some(&lane.name), &triggers) {
        tracing::error!(error = %e, "cannot persist the subscriptions");
    }
    lane.triggers = triggers;
}

/// Subscribes `client` to what `triggers` adds to `before`, and unsubscribes what it drops.
fn subscribe_session(client: &AsyncClient, name: &str, before: &[String], triggers: &[String]) {
    let added: Vec<SubscribeFilter> = triggers
        .iter()
        .filter(|t| !before.contains(t))
        .map(|t| SubscribeFilter::new(t.clone(), QoS::AtLeastOnce))
        .collect();
    if !added.is_empty() {
        if let Err(e) = client.try_subscribe_many(added) {
            tracing::error!(function = %name, error = %e, "cannot queue the subscription request");
        }
    }
    for old in before.iter().filter(|t| !triggers.contains(t)) {
        if let Err(e) = client.try_unsubscribe(old.clone()) {
            tracing::error!(function = %name, error = %e, "cannot queue an unsubscribe request");
        }
    }
}

/// Ends function `name`'s session at the broker and forgets it (a later start tries again
/// if the broker could not be reached).
async fn forget_session(access: SiteAccess, db: sled::Db, name: String) {
    let session = access.lane_id(&name);
    if ingest::forget_session(access.options(&session, 4)).await {
        tracing::info!(function = %name, %session, "session of a removed function ended");
        if let Err(e) = crate::store::forget_lane_session(&db, &name) {
            tracing::warn!(error = %e, "cannot forget a removed function's session");
        }
    } else {
        tracing::warn!(function = %name, %session, "cannot end the session of a removed function now (the next start tries again)");
    }
}

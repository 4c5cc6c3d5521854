//! The pipeline's driver: waits for work on its queue (or the stop notice), takes up to
//! `broker.batch` items as one group, and hands it to the [`Core`]; and the site broker side
//! of the core's I/O, over the ingest task's acknowledgement channel and two rumqttc clients.
//! wasmi is synchronous: this runs on a thread of its own, never on the async executor.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rumqttc::{AsyncClient, QoS, SubscribeFilter};
use tokio::sync::{mpsc, Notify};

use super::core::{Core, Step};
use super::io::{Acks, HandBack, Publish, Subscriptions};
use super::journal::Journal;
use super::work::{Ack, Work};
use super::ProcessError;

/// How long to wait for work before retrying acknowledgements or subscriptions that found no
/// room.
const RETRY: Duration = Duration::from_millis(10);

/// Asks the pipeline to stop after the group it is on (queued work stays unacknowledged).
#[derive(Clone, Default)]
pub struct Stop {
    flag: Arc<AtomicBool>,
    notify: Arc<Notify>,
}

impl Stop {
    /// Asks it to stop.
    pub fn stop(&self) {
        self.flag.store(true, Ordering::Relaxed);
        self.notify.notify_one();
    }

    /// Whether it was asked to stop.
    pub fn asked(&self) -> bool {
        self.flag.load(Ordering::Relaxed)
    }
}

/// Hands a local publish (topic, payload) to the function lanes; how many were full.
pub type LocalLanes = Arc<dyn Fn(&str, &[u8]) -> usize + Send + Sync>;

/// The site broker as the pipeline reaches it.
pub struct SiteLink {
    /// Acknowledgements for the ingest task to write.
    pub acks: mpsc::Sender<Ack>,
    /// The ingest session's client, for subscription changes; `None` for a lane fed by the
    /// embedded broker's front door (which reads the lane's filters as they change).
    pub ingest: Option<AsyncClient>,
    /// A session of its own for the functions' `publish` outputs and deployment results.
    pub local: AsyncClient,
    /// With the embedded broker's front door: hands a local publish to the function lanes it
    /// triggers (they take nothing from the broker itself), without waiting; returns how many
    /// lanes' queues were full.
    pub local_lanes: Option<LocalLanes>,
    /// The store, to keep the list of subscriptions.
    pub db: sled::Db,
    /// Whose subscriptions these are: the control session's (`None`) or a function lane's.
    pub lane: Option<String>,
    /// Called when a deployment changed the functions (the control lane starts, changes or
    /// stops the function lanes).
    pub on_functions_changed: Option<Box<dyn FnMut() + Send>>,
}

impl Acks for SiteLink {
    fn hand_back(&mut self, ack: Ack) -> HandBack {
        match self.acks.try_send(ack) {
            Ok(()) => HandBack::Taken,
            Err(mpsc::error::TrySendError::Full(_)) => HandBack::Full,
            Err(mpsc::error::TrySendError::Closed(_)) => HandBack::Gone,
        }
    }
}

impl Publish for SiteLink {
    fn publish(&mut self, topic: String, payload: Vec<u8>) -> Result<(), String> {
        // Never wait on the local broker or a lane: either may be full, and the pipeline must
        // keep committing (and stop when asked).
        let full = match &self.local_lanes {
            Some(lanes) => lanes(&topic, &payload),
            None => 0,
        };
        self.local
            .try_publish(topic, QoS::AtLeastOnce, false, payload)
            .map_err(|e| e.to_string())?;
        match full {
            0 => Ok(()),
            n => Err(format!(
                "the queues of {n} function lanes it triggers are full"
            )),
        }
    }
}

impl Subscriptions for SiteLink {
    fn subscribe(&mut self, filters: &[String]) -> bool {
        let Some(ingest) = &self.ingest else {
            return true;
        };
        let filters = filters
            .iter()
            .map(|f| SubscribeFilter::new(f.clone(), QoS::AtLeastOnce));
        ingest.try_subscribe_many(filters).is_ok()
    }

    fn unsubscribe(&mut self, filter: &str) -> bool {
        self.ingest
            .as_ref()
            .is_none_or(|i| i.try_unsubscribe(filter).is_ok())
    }

    fn settled(&mut self, all: &[String]) {
        if let Err(e) = crate::store::save_subscriptions(&self.db, self.lane.as_deref(), all) {
            tracing::error!(error = %e, "cannot persist the subscriptions");
        }
    }

    fn functions_changed(&mut self) {
        if let Some(changed) = &mut self.on_functions_changed {
            changed();
        }
    }
}

/// Runs the pipeline until every producer of work is gone or `stop` is asked (then after the
/// group it is on, and the flush of the open commit window). Returns an error only if a commit failed: the gateway must then stop
/// rather than acknowledge.
pub fn run<J: Journal>(
    mut core: Core<J>,
    mut rx: mpsc::Receiver<Work>,
    mut site: SiteLink,
    stop: Stop,
    handle: tokio::runtime::Handle,
) -> Result<(), ProcessError> {
    let mut group = Vec::new();
    loop {
        core.sync_subscriptions(&mut site);
        core.hand_back_acks(&mut site);
        if stop.asked() {
            break;
        }
        let now = std::time::Instant::now();
        if core.deadline().is_some_and(|d| d <= now) {
            core.close_window(&mut site)?;
            continue;
        }
        // Wait for work, the stop notice, the end of the commit window, or (with acks
        // pending) the retry tick.
        let mut wait = if core.waiting() {
            RETRY
        } else {
            Duration::from_secs(3600)
        };
        if let Some(d) = core.deadline() {
            wait = wait.min(d - now);
        }
        let next = handle.block_on(async {
            tokio::select! {
                m = rx.recv() => Some(m),
                _ = stop.notify.notified() => Some(None),
                _ = tokio::time::sleep(wait) => None,
            }
        });
        let first = match next {
            Some(m) => m,
            None => continue,
        };
        let Some(first) = first else { break };
        group.push(first);
        while group.len() < core.batch() {
            match rx.try_recv() {
                Ok(m) => group.push(m),
                Err(_) => break,
            }
        }
        if core.process(std::mem::take(&mut group), &mut site)? == Step::Stopped {
            return Ok(());
        }
    }
    // What the open commit window wrote is flushed and acknowledged before leaving.
    core.close_window(&mut site)?;
    Ok(())
}

//! What flows into the pipeline, and back out to the producers: the leaf every producer of work
//! imports (ingest, the timer trigger, the HTTP trigger, retries and replays, the uplink's
//! deployments). It imports none of them.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use rumqttc::{Publish, QoS};
use tokio::sync::{mpsc, oneshot};

use crate::dead_letters::retry::{Replay, Requeue, Requeued};
use crate::registry::Directory;
use crate::runtime::Caller;

/// The topic HTTP invocations are delivered on.
pub const HTTP_TOPIC: &str = "$http";

/// The topic timer events are delivered on.
pub const TIMER_TOPIC: &str = "$timer";

/// Work for the pipeline, through its one bounded queue.
#[derive(Debug)]
pub enum Work {
    /// A message from the site broker.
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
    /// A dead letter being retried or replayed.
    Replay(Replay),
}

/// One message from the site broker, waiting to be processed and then acknowledged.
#[derive(Debug)]
pub struct Incoming {
    /// The MQTT publish.
    pub publish: Publish,
    /// When it arrived, ms since the Unix epoch.
    pub received_ms: u64,
    /// The connection it came on (counted since start).
    pub connection: u64,
}

impl Incoming {
    /// The acknowledgement it needs once its effects are durable; `None` for QoS 0.
    pub fn ack(&self) -> Option<Ack> {
        (self.publish.qos != QoS::AtMostOnce).then_some(Ack {
            connection: self.connection,
            pkid: self.publish.pkid,
        })
    }
}

/// The acknowledgement of a QoS 1 message, for the ingest task to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ack {
    /// The connection the message came on: an acknowledgement goes out on that connection
    /// only. After a reconnect the broker sends the message again under the same packet id,
    /// and may give that id to another message once it is acknowledged, so a late
    /// acknowledgement could acknowledge a message never processed.
    pub connection: u64,
    /// The message's packet id.
    pub pkid: u16,
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
    pub caller: Option<Arc<Caller>>,
    /// The request as the function sees it (`http_request`).
    pub request: Arc<crate::runtime::HttpRequest>,
    /// Gets the answer once the invocation's effects are committed, or why it failed.
    pub reply: oneshot::Sender<Result<crate::runtime::HttpAnswer, InvokeFailure>>,
}

/// Why an HTTP invocation produced no response.
#[derive(Debug, Clone)]
pub struct InvokeFailure {
    /// Short reason: `trap`, `out_of_fuel`, `timeout`, `error`, `alloc`, `instantiate`,
    /// `backoff`, `not_found`.
    pub reason: &'static str,
    /// The full error.
    pub error: String,
}

impl Work {
    /// The function this work is for, when it names one (timer ticks, HTTP calls, replays).
    pub fn function(&self) -> Option<usize> {
        match self {
            Work::Timer { function, .. } => Some(*function),
            Work::Invoke(call) => Some(call.function),
            Work::Replay(r) => Some(r.function),
            Work::Message(_) | Work::Deploy { .. } => None,
        }
    }
}

/// Where producers put work that is not a site-broker message: work for one function goes to
/// that function's lane, the rest (and work for a function without a lane) to the control
/// lane. Each lane's queue is bounded; nothing here waits.
#[derive(Clone, Debug)]
pub struct Dispatch {
    control: mpsc::Sender<Work>,
    lanes: Arc<RwLock<HashMap<usize, mpsc::Sender<Work>>>>,
}

impl Dispatch {
    /// Everything to `control` until lanes are added.
    pub fn new(control: mpsc::Sender<Work>) -> Dispatch {
        Dispatch {
            control,
            lanes: Arc::default(),
        }
    }

    /// Work for function `function` goes to `lane` from now on.
    pub fn set_lane(&self, function: usize, lane: mpsc::Sender<Work>) {
        self.lanes
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(function, lane);
    }

    /// Function `function` has no lane any more.
    pub fn remove_lane(&self, function: usize) {
        self.lanes
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&function);
    }

    /// Queues `work` where it goes, without waiting.
    pub fn try_send(&self, work: Work) -> Result<(), mpsc::error::TrySendError<Work>> {
        let lane = work.function().and_then(|f| {
            let lanes = self.lanes.read().unwrap_or_else(|e| e.into_inner());
            lanes.get(&f).cloned()
        });
        lane.as_ref().unwrap_or(&self.control).try_send(work)
    }
}

/// The retry task's way into the pipeline's queues: due dead letters of running functions are
/// queued as [`Work::Replay`], never waiting.
pub struct Retries {
    /// Where work goes.
    pub work: Dispatch,
    /// The functions, to find a dead letter's function by name.
    pub functions: Directory,
}

impl Requeue for Retries {
    fn function(&self, name: &str) -> Option<usize> {
        self.functions.find(name).map(|(idx, _)| idx)
    }

    fn requeue(&self, replay: Replay) -> Requeued {
        match self.work.try_send(Work::Replay(replay)) {
            Ok(()) => Requeued::Queued,
            Err(mpsc::error::TrySendError::Full(_)) => Requeued::Full,
            Err(mpsc::error::TrySendError::Closed(_)) => Requeued::Closed,
        }
    }
}

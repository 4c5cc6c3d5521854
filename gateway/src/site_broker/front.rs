//! The embedded broker's front door to the function lanes: what a sensor publishes reaches
//! the lanes whose triggers match **in-process**, from the guard that reads every client
//! packet, and the guard acknowledges a QoS 1 PUBLISH (or, for QoS 2, sends its PUBREC) only
//! once every one of those lanes has durably committed it: after the group commit's flush that
//! covers its results, state changes or dead letter. rumqttd still gets every message, to
//! route it to other local subscribers (and answers it at once; the guard swallows those
//! answers). So with the embedded broker, as with an external one, a sensor's PUBACK means
//! the reading is on disk.
//!
//! - **Routing**: each lane registers its trigger filters (the list a new version of its
//!   function replaces) and its bounded queue. A message goes once to each lane with a
//!   matching filter, in the order the client sent it.
//! - **Back-pressure**: a lane whose queue is full makes the guard wait before reading more
//!   from that client (TCP holds the rest, then the client's own in-flight window); acks
//!   keep flowing meanwhile. A client has at most [`MAX_PENDING`] publishes waiting for
//!   their commits; past that the guard reads nothing more from it until the oldest is
//!   acknowledged. Nothing is dropped.
//! - **Acknowledgements** go back in the order the client sent its publishes (MQTT 3.1.1,
//!   4.6): one committed late holds back those after it.
//! - **A lane removed** (its function undeployed) with messages of a client still queued:
//!   those will never be committed, so every connection waiting on a commit is closed; its
//!   client connects again and sends again what it was not acknowledged.
//! - **Local publishes** (functions' `publish` outputs) reach the lanes the same way, without
//!   waiting: a full lane's queue drops them, counted (`kiri_local_publish_dropped_total`),
//!   as rumqttd's queue did.
//! - **Wills** of clients that end without a DISCONNECT reach the lanes from the guard (QoS
//!   0: nothing to acknowledge).
//! - **At start**, no publish is taken until the lanes of the configured functions are in
//!   place ([`FrontDoor::open_door`]): a client that connects early waits.
//! - **Only what others want goes on to rumqttd** ([`Others`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use rumqttc::{Publish, QoS};
use tokio::sync::{mpsc, watch};

use crate::net::topic;
use crate::pipeline::{Ack, Incoming, Work};
use crate::telemetry::RECEIVED;

pub use super::others::Others;

/// Publishes of one client waiting for their commits, at most.
pub const MAX_PENDING: usize = 1024;

/// One function lane, as the front door reaches it.
struct Route {
    lane: usize,
    filters: Arc<Mutex<Vec<String>>>,
    work: mpsc::Sender<Work>,
}

/// The routing table and the connections waiting for commits (see the module documentation).
#[derive(Default)]
pub struct FrontDoor {
    routes: RwLock<Vec<Route>>,
    /// Open client connections: where the commits of their publishes are announced.
    connections: Mutex<HashMap<u64, mpsc::UnboundedSender<u16>>>,
    next_connection: AtomicU64,
    /// Raised when a lane is removed: connections waiting on a commit close.
    removals: watch::Sender<u64>,
    /// Whether the lanes are in place (at start): until then no publish is taken, or it
    /// would be acknowledged as one no function wants.
    open: watch::Sender<bool>,
    /// Who besides the lanes wants messages from rumqttd.
    others: Others,
}

impl std::fmt::Debug for FrontDoor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrontDoor").finish_non_exhaustive()
    }
}

/// A client connection's place at the front door; closes it when dropped.
pub struct Door {
    front: Arc<FrontDoor>,
    /// The connection's number (what the lanes' acknowledgements name).
    pub id: u64,
    /// Announces its own completions (a publish handed to every lane, or to none).
    pub done: mpsc::UnboundedSender<u16>,
    /// Changes when a lane is removed.
    pub removals: watch::Receiver<u64>,
}

impl Door {
    /// The front door it is at.
    pub fn front(&self) -> &Arc<FrontDoor> {
        &self.front
    }
}

impl Drop for Door {
    fn drop(&mut self) {
        self.front
            .connections
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.id);
    }
}

impl FrontDoor {
    /// The lanes of the functions configured at start are in place: publishes are taken from
    /// now on.
    pub fn open_door(&self) {
        self.open.send_replace(true);
    }

    /// Who besides the lanes wants messages from rumqttd.
    pub fn others(&self) -> &Others {
        &self.others
    }

    /// Waits until the door is open.
    pub async fn opened(&self) {
        if *self.open.borrow() {
            return;
        }
        let mut open = self.open.subscribe();
        let _ = open.wait_for(|o| *o).await;
    }

    /// Lane `lane` takes messages matching `filters` (as they are when each message comes)
    /// on `work`, in place of any earlier registration.
    pub fn set_route(
        &self,
        lane: usize,
        filters: Arc<Mutex<Vec<String>>>,
        work: mpsc::Sender<Work>,
    ) {
        let mut routes = self.routes.write().unwrap_or_else(|e| e.into_inner());
        routes.retain(|r| r.lane != lane);
        routes.push(Route {
            lane,
            filters,
            work,
        });
    }

    /// Lane `lane` is gone: what it held of any client's will not be committed, so the
    /// connections waiting on commits close (their clients send it again).
    pub fn remove_route(&self, lane: usize) {
        let mut routes = self.routes.write().unwrap_or_else(|e| e.into_inner());
        let before = routes.len();
        routes.retain(|r| r.lane != lane);
        if routes.len() != before {
            self.removals.send_modify(|n| *n += 1);
        }
    }

    /// A new client connection, and where the packet ids of its publishes come as each lane
    /// commits them.
    pub fn open(self: &Arc<Self>) -> (Door, mpsc::UnboundedReceiver<u16>) {
        // From 1: the lanes' own sessions never share these numbers with the front door.
        let id = self.next_connection.fetch_add(1, Ordering::Relaxed) + 1;
        let (done, committed) = mpsc::unbounded_channel();
        self.connections
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, done.clone());
        let door = Door {
            front: self.clone(),
            id,
            done,
            removals: self.removals.subscribe(),
        };
        (door, committed)
    }

    /// A lane committed a message of connection `ack.connection`: tells it. (A connection
    /// gone meanwhile is not told: its client sends the message again.)
    pub fn ack(&self, ack: Ack) {
        let connections = self.connections.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = connections.get(&ack.connection) {
            let _ = c.send(ack.pkid);
        }
    }

    /// The queues of the lanes a message to `topic` goes to.
    pub fn targets(&self, topic_name: &str) -> Vec<mpsc::Sender<Work>> {
        let routes = self.routes.read().unwrap_or_else(|e| e.into_inner());
        routes
            .iter()
            .filter(|r| {
                let filters = r.filters.lock().unwrap_or_else(|e| e.into_inner());
                filters.iter().any(|f| topic::matches(f, topic_name))
            })
            .map(|r| r.work.clone())
            .collect()
    }

    /// Hands a function's local publish to the lanes it triggers, without waiting; how many
    /// lanes' queues were full (it is dropped for those).
    pub fn publish_local(&self, topic_name: &str, payload: &[u8]) -> usize {
        let mut full = 0;
        for lane in self.targets(topic_name) {
            let publish = Publish::new(topic_name, QoS::AtMostOnce, payload.to_vec());
            if lane.try_send(incoming(publish, 0)).is_err() {
                full += 1;
            }
        }
        full
    }
}

/// Work for a lane: `publish` from connection `connection` (0: none to acknowledge to).
pub fn incoming(publish: Publish, connection: u64) -> Work {
    metrics::counter!("kiri_ingest_messages_total").increment(1);
    RECEIVED.fetch_add(1, Ordering::Relaxed);
    Work::Message(Incoming {
        publish,
        received_ms: crate::now_ms(),
        connection,
    })
}

/// A client's publishes waiting for their commits, in the order it sent them.
#[derive(Debug, Default)]
pub struct Pending {
    /// (packet id, completions still awaited, QoS 2: answered with a PUBREC).
    queue: std::collections::VecDeque<(u16, usize, bool)>,
}

impl Pending {
    /// A publish `pkid` awaits `needed` completions.
    pub fn push(&mut self, pkid: u16, needed: usize, exactly_once: bool) {
        self.queue.push_back((pkid, needed, exactly_once));
    }

    /// One completion of `pkid` (the oldest entry with that id still awaiting one).
    pub fn complete(&mut self, pkid: u16) {
        if let Some(e) = self.queue.iter_mut().find(|e| e.0 == pkid && e.1 > 0) {
            e.1 -= 1;
        }
    }

    /// The publishes now acknowledged, in order: the complete ones at the head.
    pub fn release(&mut self) -> Vec<(u16, bool)> {
        let mut out = Vec::new();
        while let Some(&(pkid, 0, two)) = self.queue.front() {
            out.push((pkid, two));
            self.queue.pop_front();
        }
        out
    }

    /// Whether none waits.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acknowledgements_leave_in_the_order_the_publishes_came() {
        let mut p = Pending::default();
        p.push(1, 2, false);
        p.push(2, 1, false);
        p.push(3, 1, true);
        p.complete(2);
        assert!(p.release().is_empty(), "1 is not committed yet");
        p.complete(1);
        assert!(p.release().is_empty(), "1 waits for its second lane");
        p.complete(1);
        assert_eq!(p.release(), [(1, false), (2, false)]);
        p.complete(3);
        assert_eq!(p.release(), [(3, true)]);
        assert!(p.is_empty());
    }

    #[test]
    fn a_message_goes_once_to_each_lane_whose_filters_match() {
        let front = FrontDoor::default();
        let (a_tx, _a) = mpsc::channel(4);
        let (b_tx, _b) = mpsc::channel(4);
        let a_filters = Arc::new(Mutex::new(vec!["s/+/t".into(), "s/#".into()]));
        front.set_route(0, a_filters.clone(), a_tx);
        front.set_route(1, Arc::new(Mutex::new(vec!["x/#".into()])), b_tx);
        assert_eq!(front.targets("s/1/t").len(), 1);
        assert_eq!(front.targets("x/y").len(), 1);
        assert_eq!(front.targets("q").len(), 0);
        // A new version's triggers apply to the next message.
        *a_filters.lock().unwrap() = vec!["q".into()];
        assert_eq!(front.targets("s/1/t").len(), 0);
        assert_eq!(front.targets("q").len(), 1);
        let removals = front.removals.subscribe();
        front.remove_route(0);
        assert!(removals.has_changed().unwrap());
        assert_eq!(front.targets("q").len(), 0);
    }

    #[test]
    fn a_local_publish_to_a_full_lane_is_dropped_not_waited_for() {
        let front = FrontDoor::default();
        let (tx, mut rx) = mpsc::channel(1);
        front.set_route(0, Arc::new(Mutex::new(vec!["act/#".into()])), tx);
        assert_eq!(front.publish_local("act/1", b"on"), 0);
        assert_eq!(front.publish_local("act/1", b"off"), 1);
        match rx.try_recv() {
            Ok(Work::Message(m)) => {
                assert_eq!((m.publish.topic.as_str(), m.connection), ("act/1", 0));
                assert_eq!(m.publish.qos, QoS::AtMostOnce);
            }
            _ => panic!("the first local publish is queued"),
        }
    }
}

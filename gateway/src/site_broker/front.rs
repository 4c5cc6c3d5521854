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
//! - **Only what others want goes on to rumqttd.** The front door keeps the subscriptions
//!   of every client (from the SUBSCRIBE and UNSUBSCRIBE packets the guard reads, by client
//!   id, kept after the connection ends for a persistent session: rumqttd queues for it) and
//!   of Kiri's own sessions (the control session's deployment topics). A PUBLISH that none of
//!   them matches, and that is neither retained nor QoS 2 (whose PUBREL rumqttd must know), is
//!   not relayed: rumqttd would only have answered it and dropped it, at a quarter of the
//!   gateway's CPU time per reading (measured at 200 readings/s). The list is bounded: past
//!   [`MAX_SUBSCRIBERS`] clients or [`MAX_FILTERS`] filters of one, the front door stops
//!   choosing and relays everything (as before this filter existed) until the gateway
//!   restarts, with a WARN line saying so.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use rumqttc::{Publish, QoS};
use tokio::sync::{mpsc, watch};

use crate::net::topic;
use crate::pipeline::{Ack, Incoming, Work};
use crate::telemetry::RECEIVED;

/// Publishes of one client waiting for their commits, at most.
pub const MAX_PENDING: usize = 1024;
/// Clients whose subscriptions the front door keeps (connected, or away with a persistent
/// session), at most; past it, everything goes on to rumqttd.
pub const MAX_SUBSCRIBERS: usize = 4096;
/// Filters of one client the front door keeps, at most; past it, everything goes on.
pub const MAX_FILTERS: usize = 256;

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
    /// Who wants messages from rumqttd.
    others: Mutex<Others>,
}

/// The subscriptions at rumqttd besides the lanes (see the module documentation).
#[derive(Default)]
struct Others {
    /// Clients' subscriptions by client id.
    clients: HashMap<String, Subscriber>,
    /// Kiri's own sessions' lists (they subscribe at rumqttd directly).
    internal: Vec<Arc<Mutex<Vec<String>>>>,
    /// Past a bound: everything goes on to rumqttd.
    overflow: bool,
}

impl Others {
    /// Client `client_id`'s entry, made if need be; `None` once past the bounds.
    fn client(&mut self, client_id: &str) -> Option<&mut Subscriber> {
        if self.overflow {
            return None;
        }
        if !self.clients.contains_key(client_id) && self.clients.len() >= MAX_SUBSCRIBERS {
            self.overflowed("clients");
            return None;
        }
        Some(self.clients.entry(client_id.to_string()).or_default())
    }

    fn overflowed(&mut self, what: &str) {
        tracing::warn!(
            max_clients = MAX_SUBSCRIBERS,
            max_filters = MAX_FILTERS,
            "the embedded broker's front door keeps too many {what} to choose what rumqttd \
             needs: every publish goes on to it from now on (until a restart)"
        );
        self.overflow = true;
        self.clients.clear();
    }
}

#[derive(Default)]
struct Subscriber {
    /// Its session outlives its connections (`clean_session = false`).
    persistent: bool,
    /// Its connections open now (a takeover overlaps two for a moment).
    connections: usize,
    filters: Vec<String>,
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

    /// Kiri's own session subscribes at rumqttd to the filters in `filters` (as they are when
    /// each message comes).
    pub fn internal_subscriptions(&self, filters: Arc<Mutex<Vec<String>>>) {
        self.others().internal.push(filters);
    }

    fn others(&self) -> std::sync::MutexGuard<'_, Others> {
        self.others.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Client `client_id` connected, with `clean_session = clean`: a clean session starts
    /// with no subscriptions (rumqttd drops the old one).
    pub fn client_connected(&self, client_id: &str, clean: bool) {
        let mut o = self.others();
        let Some(s) = o.client(client_id) else {
            return;
        };
        if clean {
            s.filters.clear();
        }
        s.persistent = !clean;
        s.connections += 1;
    }

    /// A connection of client `client_id` ended: a clean session's subscriptions end with
    /// its last connection.
    pub fn client_gone(&self, client_id: &str) {
        let mut o = self.others();
        if let Some(s) = o.clients.get_mut(client_id) {
            s.connections = s.connections.saturating_sub(1);
            if s.connections == 0 && !s.persistent {
                o.clients.remove(client_id);
            }
        }
    }

    /// Client `client_id` subscribed to `filters`.
    pub fn subscribed(&self, client_id: &str, filters: impl IntoIterator<Item = String>) {
        let mut o = self.others();
        let Some(s) = o.client(client_id) else {
            return;
        };
        for f in filters {
            if !s.filters.contains(&f) {
                s.filters.push(f);
            }
        }
        if s.filters.len() > MAX_FILTERS {
            o.overflowed("filters");
        }
    }

    /// Client `client_id` unsubscribed from `filters`.
    pub fn unsubscribed(&self, client_id: &str, filters: &[String]) {
        if let Some(s) = self.others().clients.get_mut(client_id) {
            s.filters.retain(|f| !filters.contains(f));
        }
    }

    /// Whether rumqttd must see `publish`: retained (it keeps it for later subscribers), QoS 2
    /// (the client's PUBREL follows), or wanted by a subscriber other than the lanes.
    pub fn broker_wants(&self, publish: &Publish) -> bool {
        if publish.retain || publish.qos == QoS::ExactlyOnce {
            return true;
        }
        let o = self.others();
        if o.overflow {
            return true;
        }
        let name = publish.topic.as_str();
        o.clients
            .values()
            .any(|s| s.filters.iter().any(|f| topic::matches(f, name)))
            || o.internal.iter().any(|list| {
                let list = list.lock().unwrap_or_else(|e| e.into_inner());
                list.iter().any(|f| topic::matches(f, name))
            })
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
    fn only_what_another_subscriber_wants_goes_on_to_the_broker() {
        let front = FrontDoor::default();
        let reading = Publish::new("s/1/t", QoS::AtLeastOnce, b"21".to_vec());
        assert!(!front.broker_wants(&reading), "nobody else subscribes");
        let mut retained = reading.clone();
        retained.retain = true;
        assert!(front.broker_wants(&retained), "kept for later subscribers");
        let exactly_once = Publish::new("s/1/t", QoS::ExactlyOnce, b"21".to_vec());
        assert!(front.broker_wants(&exactly_once), "its PUBREL follows");
        // Kiri's own session's list, as it changes.
        let deploy = Arc::new(Mutex::new(vec!["kiri/gw/deploy/#".to_string()]));
        front.internal_subscriptions(deploy.clone());
        assert!(front.broker_wants(&Publish::new("kiri/gw/deploy/a", QoS::AtLeastOnce, "")));
        assert!(!front.broker_wants(&reading));
        deploy.lock().unwrap().push("s/#".into());
        assert!(front.broker_wants(&reading));
        deploy.lock().unwrap().pop();

        // A clean session: its subscriptions end with its connection.
        front.client_connected("dash", true);
        front.subscribed("dash", ["s/+/t".to_string()]);
        assert!(front.broker_wants(&reading));
        front.unsubscribed("dash", &["s/+/t".to_string()]);
        assert!(!front.broker_wants(&reading));
        front.subscribed("dash", ["s/#".to_string()]);
        front.client_gone("dash");
        assert!(!front.broker_wants(&reading));

        // A persistent one: rumqttd queues for it while it is away, until it comes back clean.
        front.client_connected("logger", false);
        front.subscribed("logger", ["s/#".to_string()]);
        front.client_gone("logger");
        assert!(
            front.broker_wants(&reading),
            "queued for the persistent session"
        );
        front.client_connected("logger", true);
        assert!(
            !front.broker_wants(&reading),
            "a clean session starts empty"
        );

        // A takeover: the old connection ending leaves the new one's subscriptions.
        front.subscribed("logger", ["s/#".to_string()]);
        front.client_connected("logger", true);
        front.subscribed("logger", ["s/#".to_string()]);
        front.client_gone("logger");
        assert!(front.broker_wants(&reading));
        front.client_gone("logger");
        assert!(!front.broker_wants(&reading));

        // Past its bounds it stops choosing: everything goes on.
        for i in 0..MAX_SUBSCRIBERS {
            front.client_connected(&format!("c{i}"), false);
        }
        assert!(
            !front.broker_wants(&reading),
            "at the bound, still choosing"
        );
        front.client_connected("one-too-many", false);
        assert!(front.broker_wants(&reading), "past it, everything goes on");
        let front = FrontDoor::default();
        front.client_connected("many", true);
        front.subscribed("many", (0..MAX_FILTERS).map(|i| format!("x/{i}")));
        assert!(!front.broker_wants(&reading));
        front.subscribed("many", ["x/more".to_string()]);
        assert!(front.broker_wants(&reading));
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

//! Who besides the function lanes wants messages from rumqttd, so that the front door
//! relays only those. It keeps the subscriptions of every client (from the SUBSCRIBE and
//! UNSUBSCRIBE packets the guard reads, by client id, kept after the connection ends for a
//! persistent session: rumqttd queues for it) and of Kiri's own sessions (the control
//! session's deployment topics). A PUBLISH that none of them matches, and that is neither
//! retained nor QoS 2 (whose PUBREL rumqttd must know), is not relayed: rumqttd would only
//! have answered it and dropped it, at a quarter of the gateway's CPU time per reading
//! (measured at 200 readings/s). The list is bounded: past [`MAX_SUBSCRIBERS`] clients or
//! [`MAX_FILTERS`] filters of one, the front door stops choosing and relays everything (as
//! before this filter existed) until the gateway restarts, with a WARN line saying so.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use rumqttc::{Publish, QoS};

use crate::net::topic;

/// Clients whose subscriptions the front door keeps (connected, or away with a persistent
/// session), at most; past it, everything goes on to rumqttd.
pub const MAX_SUBSCRIBERS: usize = 4096;
/// Filters of one client the front door keeps, at most; past it, everything goes on.
pub const MAX_FILTERS: usize = 256;

/// The subscriptions at rumqttd besides the lanes (see the module documentation).
#[derive(Default)]
pub struct Others {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Clients' subscriptions by client id.
    clients: HashMap<String, Subscriber>,
    /// Kiri's own sessions' lists (they subscribe at rumqttd directly).
    internal: Vec<Arc<Mutex<Vec<String>>>>,
    /// Past a bound: everything goes on to rumqttd.
    overflow: bool,
}

impl Inner {
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

impl Others {
    /// Kiri's own session subscribes at rumqttd to the filters in `filters` (as they are when
    /// each message comes).
    pub fn internal_subscriptions(&self, filters: Arc<Mutex<Vec<String>>>) {
        self.lock().internal.push(filters);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Client `client_id` connected, with `clean_session = clean`: a clean session starts
    /// with no subscriptions (rumqttd drops the old one).
    pub fn client_connected(&self, client_id: &str, clean: bool) {
        let mut o = self.lock();
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
        let mut o = self.lock();
        if let Some(s) = o.clients.get_mut(client_id) {
            s.connections = s.connections.saturating_sub(1);
            if s.connections == 0 && !s.persistent {
                o.clients.remove(client_id);
            }
        }
    }

    /// Client `client_id` subscribed to `filters`.
    pub fn subscribed(&self, client_id: &str, filters: impl IntoIterator<Item = String>) {
        let mut o = self.lock();
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
        if let Some(s) = self.lock().clients.get_mut(client_id) {
            s.filters.retain(|f| !filters.contains(f));
        }
    }

    /// Whether rumqttd must see `publish`: retained (it keeps it for later subscribers), QoS 2
    /// (the client's PUBREL follows), or wanted by a subscriber other than the lanes.
    pub fn want(&self, publish: &Publish) -> bool {
        if publish.retain || publish.qos == QoS::ExactlyOnce {
            return true;
        }
        let o = self.lock();
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_what_another_subscriber_wants_goes_on_to_the_broker() {
        let front = Others::default();
        let reading = Publish::new("s/1/t", QoS::AtLeastOnce, b"21".to_vec());
        assert!(!front.want(&reading), "nobody else subscribes");
        let mut retained = reading.clone();
        retained.retain = true;
        assert!(front.want(&retained), "kept for later subscribers");
        let exactly_once = Publish::new("s/1/t", QoS::ExactlyOnce, b"21".to_vec());
        assert!(front.want(&exactly_once), "its PUBREL follows");
        // Kiri's own session's list, as it changes.
        let deploy = Arc::new(Mutex::new(vec!["kiri/gw/deploy/#".to_string()]));
        front.internal_subscriptions(deploy.clone());
        assert!(front.want(&Publish::new("kiri/gw/deploy/a", QoS::AtLeastOnce, "")));
        assert!(!front.want(&reading));
        deploy.lock().unwrap().push("s/#".into());
        assert!(front.want(&reading));
        deploy.lock().unwrap().pop();

        // A clean session: its subscriptions end with its connection.
        front.client_connected("dash", true);
        front.subscribed("dash", ["s/+/t".to_string()]);
        assert!(front.want(&reading));
        front.unsubscribed("dash", &["s/+/t".to_string()]);
        assert!(!front.want(&reading));
        front.subscribed("dash", ["s/#".to_string()]);
        front.client_gone("dash");
        assert!(!front.want(&reading));

        // A persistent one: rumqttd queues for it while it is away, until it comes back clean.
        front.client_connected("logger", false);
        front.subscribed("logger", ["s/#".to_string()]);
        front.client_gone("logger");
        assert!(front.want(&reading), "queued for the persistent session");
        front.client_connected("logger", true);
        assert!(!front.want(&reading), "a clean session starts empty");

        // A takeover: the old connection ending leaves the new one's subscriptions.
        front.subscribed("logger", ["s/#".to_string()]);
        front.client_connected("logger", true);
        front.subscribed("logger", ["s/#".to_string()]);
        front.client_gone("logger");
        assert!(front.want(&reading));
        front.client_gone("logger");
        assert!(!front.want(&reading));

        // Past its bounds it stops choosing: everything goes on.
        for i in 0..MAX_SUBSCRIBERS {
            front.client_connected(&format!("c{i}"), false);
        }
        assert!(!front.want(&reading), "at the bound, still choosing");
        front.client_connected("one-too-many", false);
        assert!(front.want(&reading), "past it, everything goes on");
        let front = Others::default();
        front.client_connected("many", true);
        front.subscribed("many", (0..MAX_FILTERS).map(|i| format!("x/{i}")));
        assert!(!front.want(&reading));
        front.subscribed("many", ["x/more".to_string()]);
        assert!(front.want(&reading));
    }
}

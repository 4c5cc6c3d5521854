//! The control side of the core: deployments, which take effect between the segments of a
//! group, and the ingest session's subscriptions, which follow the functions.

use super::core::{acked, Core, Role};
use super::io::{Site, Subscriptions};
use super::journal::Journal;
use super::work::Work;
use crate::deploy;

impl<J: Journal> Core<J> {
    /// Whether `w` is a deployment (it then takes effect between segments).
    pub(super) fn is_deployment(&self, w: &Work) -> bool {
        if matches!(self.role, Role::Lane(_)) {
            return false;
        }
        match (w, &self.deploy) {
            (Work::Deploy { .. }, Some(_)) => true,
            (Work::Message(m), Some(d)) => d.addressed(&m.publish.topic).is_some(),
            _ => false,
        }
    }

    /// Applies a deployment, publishes its result, and queues the acknowledgement of one
    /// that came from the site broker, which goes out only now that its effects are durable.
    pub(super) fn deployment(&mut self, w: Work, site: &mut impl Site) {
        let ack = acked(&w);
        let (topic, payload, source) = match w {
            Work::Message(m) => (
                m.publish.topic,
                m.publish.payload.to_vec(),
                deploy::Source::Local,
            ),
            Work::Deploy { topic, payload } => (topic, payload, deploy::Source::Cloud),
            _ => return,
        };
        let applied = match &self.deploy {
            Some(d) => deploy::apply(d, &mut self.registry, &topic, &payload, source),
            None => None,
        };
        if let Some(applied) = applied {
            if applied.changed {
                // The new triggers are subscribed to before the result goes out: whoever waits
                // for it may publish to them at once.
                if self.role == Role::Control {
                    site.functions_changed();
                }
                self.want_subscriptions();
                self.sync_subscriptions(site);
            }
            let sent = match (source, &self.deploy) {
                (deploy::Source::Cloud, Some(d)) => {
                    d.reply_to_cloud(applied.topic, applied.payload)
                }
                (deploy::Source::Cloud, None) => false,
                (deploy::Source::Local, _) => site.publish(applied.topic, applied.payload).is_ok(),
            };
            if !sent {
                metrics::counter!("kiri_deploy_replies_dropped_total").increment(1);
                tracing::warn!(function = %applied.name, "deployment result not published: session queue full or down (it is in the history)");
            }
        }
        if let Some(ack) = ack {
            self.pending_acks.push_back(ack);
        }
    }

    /// The subscriptions the functions (and deployments) need now: requested by the next
    /// [`Core::sync_subscriptions`].
    pub fn want_subscriptions(&mut self) {
        let mut wanted = match self.role {
            Role::All => self.registry.subscriptions(),
            Role::Control => Vec::new(),
            Role::Lane(f) => self
                .registry
                .spec(f)
                .map(|s| s.filters())
                .unwrap_or_default(),
        };
        if let (Some(d), Role::All | Role::Control) = (&self.deploy, self.role) {
            wanted.extend(d.topics());
        }
        self.pending_subscriptions = Some(wanted);
    }

    /// Brings the ingest session's subscriptions to what [`Core::want_subscriptions`] asked
    /// for; when its request queue is full, leaves them pending for the next turn.
    pub fn sync_subscriptions(&mut self, site: &mut impl Subscriptions) {
        let Some(wanted) = self.pending_subscriptions.take() else {
            return;
        };
        let mut current = self.subscriptions.lock().expect("subscriptions lock");
        let added: Vec<String> = wanted
            .iter()
            .filter(|f| !current.contains(f))
            .cloned()
            .collect();
        let removed: Vec<String> = current
            .iter()
            .filter(|f| !wanted.contains(f))
            .cloned()
            .collect();
        if !added.is_empty() {
            if !site.subscribe(&added) {
                drop(current);
                self.pending_subscriptions = Some(wanted);
                return;
            }
            current.extend(added);
        }
        for f in &removed {
            if !site.unsubscribe(f) {
                drop(current);
                self.pending_subscriptions = Some(wanted);
                return;
            }
            current.retain(|c| c != f);
        }
        *current = wanted.clone();
        drop(current);
        site.settled(&wanted);
    }
}

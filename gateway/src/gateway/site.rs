//! Kiri's side of the site broker: the broker itself (embedded, behind its guard, or
//! external), the control session (deployments), a session for local publishing, and what
//! the function lanes need to make sessions of their own (`lanes.rs`).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::config::{BrokerMode, Config};
use crate::deploy::Deployer;
use crate::ingest;
use crate::pipeline::Ack;
use crate::site_broker::{self, front::FrontDoor, guard::InternalLogin, guard::OwnIds};
use crate::store::Store;

/// How Kiri's sessions reach the site broker.
#[derive(Clone)]
pub(super) struct SiteAccess {
    host: String,
    port: u16,
    login: Option<InternalLogin>,
    /// The control session's client id; a function lane's is `<it>.<function>`.
    pub(super) client_id: String,
    pub(super) max_packet: usize,
    /// The embedded broker's front door: function lanes take their messages from it rather
    /// than from sessions of their own.
    pub(super) front: Option<Arc<FrontDoor>>,
}

impl SiteAccess {
    /// A persistent session's options, for the session `client_id`, with room for `requests`.
    pub(super) fn options(&self, client_id: &str, requests: usize) -> MqttOptions {
        let mut o = ingest::options(client_id, &self.host, self.port, self.max_packet, requests);
        if let Some(l) = &self.login {
            o.set_credentials(&l.user, &l.password);
        }
        o
    }

    /// What hands a function's local publish to the lanes, behind the front door.
    pub(super) fn local_lanes(&self) -> Option<crate::pipeline::LocalLanes> {
        let front = self.front.clone()?;
        Some(Arc::new(move |topic: &str, payload: &[u8]| {
            front.publish_local(topic, payload)
        }))
    }

    /// Function `name`'s lane session's client id.
    pub(super) fn lane_id(&self, name: &str) -> String {
        format!("{}.{name}", self.client_id)
    }
}

/// Kiri's side of the site broker: the control session, a session for local publishing, and
/// how to reach the broker.
pub(super) struct SiteSessions {
    pub(super) access: SiteAccess,
    pub(super) control: AsyncClient,
    pub(super) eventloop: EventLoop,
    pub(super) local: AsyncClient,
    pub(super) local_task: JoinHandle<()>,
    pub(super) acks_tx: mpsc::Sender<Ack>,
    pub(super) acks_rx: mpsc::Receiver<Ack>,
    /// What the control session subscribes to (on every connection): the deployment topics.
    pub(super) subscriptions: Arc<Mutex<Vec<String>>>,
    /// What an earlier start subscribed to on it and this one no longer needs (before
    /// function lanes, it held every trigger).
    pub(super) stale: Vec<String>,
    /// The embedded broker's guard (its accounts change on a reload).
    pub(super) guard: Option<Arc<site_broker::guard::Guard>>,
}

/// Starts the site broker, and makes Kiri's control and local sessions with it.
pub(super) async fn start_site(
    config: &Config,
    fds: super::fds::Budget,
    store: &Store,
    deployer: Option<&Deployer>,
) -> anyhow::Result<SiteSessions> {
    let b = &config.broker;
    let client_id = b
        .client_id
        .clone()
        .unwrap_or_else(|| format!("kiri-{}", config.gateway.id));
    let local_id = format!("{client_id}-local");
    let own_ids = OwnIds {
        exact: HashSet::from([client_id.clone(), local_id.clone()]),
        prefix: format!("{client_id}."),
    };
    let limits = crate::net::ConnectionLimits {
        total: fds.broker,
        per_address: fds.broker_per_address,
    };
    let endpoint = site_broker::start(b, own_ids, limits).await?;
    let guard = endpoint.guard;
    let access = SiteAccess {
        host: endpoint.host,
        port: endpoint.port,
        login: endpoint.login,
        client_id,
        max_packet: b.max_packet_bytes,
        front: endpoint.front,
    };
    // At most `queue + batch` messages are unacknowledged inside Kiri (see `ingest`); the
    // client itself only (un)subscribes.
    let requests = b.queue + b.batch + 16;
    let opts = access.options(&access.client_id, requests);
    let mut local_opts = rumqttc::MqttOptions::new(local_id, &access.host, access.port);
    local_opts.set_max_packet_size(b.max_packet_bytes, b.max_packet_bytes);
    if let Some(l) = &access.login {
        local_opts.set_credentials(&l.user, &l.password);
    }
    let (control, mut eventloop) = AsyncClient::new(opts, requests);
    ingest::no_delay(&mut eventloop);
    let (acks_tx, acks_rx) = mpsc::channel(requests);
    let (local, mut local_loop) = AsyncClient::new(local_opts, 256);
    ingest::no_delay(&mut local_loop);
    // An external broker's count of the messages it dropped (see `ingest::drops`).
    let watch_drops = (b.mode == BrokerMode::External).then(|| local.clone());
    let local_task = tokio::spawn(async move {
        loop {
            match local_loop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    if let Some(client) = &watch_drops {
                        let _ = client.try_subscribe(ingest::drops::TOPIC, QoS::AtMostOnce);
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) if p.topic == ingest::drops::TOPIC => {
                    ingest::drops::observe(&p.payload);
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::debug!(error = %e, "local publish session: reconnecting");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    });
    let subscriptions = deployer.map(Deployer::topics).unwrap_or_default();
    let stale = store.replace_subscriptions(&subscriptions)?;
    let subscriptions = Arc::new(Mutex::new(subscriptions));
    if let Some(front) = &access.front {
        // The control session subscribes at rumqttd itself: what it wants must go on there.
        front.others().internal_subscriptions(subscriptions.clone());
    }
    Ok(SiteSessions {
        access,
        control,
        eventloop,
        local,
        local_task,
        acks_tx,
        acks_rx,
        subscriptions,
        stale,
        guard,
    })
}

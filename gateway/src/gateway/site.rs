//! Kiri's side of the site broker: the broker itself (embedded, behind its guard, or
//! external), the ingest session, a second session for local publishing, and the
//! subscriptions the functions need.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rumqttc::{AsyncClient, EventLoop};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::deploy::Deployer;
use crate::ingest;
use crate::pipeline::Ack;
use crate::registry::Registry;
use crate::site_broker;
use crate::store::Store;

/// Kiri's side of the site broker: the ingest session, a session for local publishing, and
/// the subscriptions.
pub(super) struct SiteSessions {
    pub(super) ingest: AsyncClient,
    pub(super) eventloop: EventLoop,
    pub(super) local: AsyncClient,
    pub(super) local_task: JoinHandle<()>,
    pub(super) acks_tx: mpsc::Sender<Ack>,
    pub(super) acks_rx: mpsc::Receiver<Ack>,
    /// What the ingest session subscribes to (on every connection).
    pub(super) subscriptions: Arc<Mutex<Vec<String>>>,
    /// What an earlier start subscribed to and this one no longer needs.
    pub(super) stale: Vec<String>,
}

/// Starts the site broker, and makes Kiri's sessions with it.
pub(super) async fn start_site(
    config: &Config,
    fds: super::fds::Budget,
    store: &Store,
    registry: &Registry,
    deployer: Option<&Deployer>,
) -> anyhow::Result<SiteSessions> {
    let b = &config.broker;
    let client_id = b
        .client_id
        .clone()
        .unwrap_or_else(|| format!("kiri-{}", config.gateway.id));
    let local_id = format!("{client_id}-local");
    let own_ids = HashSet::from([client_id.clone(), local_id.clone()]);
    let limits = crate::net::ConnectionLimits {
        total: fds.broker,
        per_address: fds.broker_per_address,
    };
    let endpoint = site_broker::start(b, own_ids, limits).await?;
    let (host, port) = (&endpoint.host, endpoint.port);
    // At most `queue + batch` messages are unacknowledged inside Kiri (see `ingest`); the
    // client itself only (un)subscribes.
    let requests = b.queue + b.batch + 16;
    let mut opts = ingest::options(&client_id, host, port, b.max_packet_bytes, requests);
    let mut local_opts = rumqttc::MqttOptions::new(local_id, host, port);
    local_opts.set_max_packet_size(b.max_packet_bytes, b.max_packet_bytes);
    if let Some(l) = &endpoint.login {
        opts.set_credentials(&l.user, &l.password);
        local_opts.set_credentials(&l.user, &l.password);
    }
    let (ingest, eventloop) = AsyncClient::new(opts, requests);
    let (acks_tx, acks_rx) = mpsc::channel(requests);
    let (local, mut local_loop) = AsyncClient::new(local_opts, 256);
    let local_task = tokio::spawn(async move {
        loop {
            if let Err(e) = local_loop.poll().await {
                tracing::debug!(error = %e, "local publish session: reconnecting");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    });
    let mut subscriptions = registry.subscriptions();
    subscriptions.extend(deployer.map(Deployer::topics).unwrap_or_default());
    let stale = store.replace_subscriptions(&subscriptions)?;
    Ok(SiteSessions {
        ingest,
        eventloop,
        local,
        local_task,
        acks_tx,
        acks_rx,
        subscriptions: Arc::new(Mutex::new(subscriptions)),
        stale,
    })
}

//! Starts every stage of the data flow and runs until a shutdown signal or a fatal error.
//!
//! [`run`] is the list of steps, in order: check the files the configuration names (so a bad
//! one stops the start before anything opens), open the store, load the functions, start the
//! site broker and Kiri's sessions with it, the HTTP API, the uplink and the background tasks,
//! then the pipeline; wait; shut down in the order that loses nothing (inputs first, then the
//! pipeline after its group, then the rest).

mod tasks;

use std::collections::HashSet;
use std::future::Future;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use metrics_exporter_prometheus::PrometheusHandle;
use rumqttc::{AsyncClient, EventLoop};
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinHandle;

use crate::config::{Config, LogForwarding};
use crate::dead_letters::DeadLetters;
use crate::deploy::{self, Deployer};
use crate::http;
use crate::ingest;
use crate::net::{self, parse_mqtt_url, Backoff};
use crate::outbox::Outbox;
use crate::pipeline::{self, Ack, Core, Durable, Limits, Retries, SiteLink, Stop, Work};
use crate::registry::{Origin, Registry};
use crate::runtime::Runtime;
use crate::site_broker;
use crate::store::Store;
use crate::telemetry::{self, SharedStatus, Telemetry};
use crate::timers::Timers;
use crate::uplink::{self, Credentials, ForwardConfig};

/// Runs the gateway described by `config` until `shutdown` resolves.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let started = Instant::now();
    let files = check_files(&config)?;
    let metrics = start_metrics();
    let http_listener = tokio::net::TcpListener::bind(config.dashboard.listen)
        .await
        .with_context(|| {
            let listen = config.dashboard.listen;
            format!("cannot listen on dashboard.listen = {listen}")
        })?;
    let stores = open_store(&config)?;
    let (work, queue) = mpsc::channel(config.broker.queue);
    let telemetry = Telemetry::new(config.dashboard.log_lines);
    let (replies_tx, replies_rx) = mpsc::channel(16);
    let (registry, deployer) = load_functions(&config, &stores, &telemetry, &work, replies_tx)?;
    let site = start_site(&config, &stores.store, &registry, deployer.as_ref()).await?;
    let ready = Arc::new(AtomicBool::new(false));
    let uplink_status = SharedStatus::new(&config.cloud.url, Some(telemetry.clone()));

    let api = http::Api {
        metrics: metrics.handle,
        work: work.clone(),
        directory: registry.directory(),
        token: dashboard_token(&config, &stores.store)?,
        ready: ready.clone(),
        max_body: config.broker.max_message_bytes,
        dead_letters: stores.dead_letters.clone(),
        meters: registry.meters(),
        deployments: deployer.as_ref().map(|d| d.store.clone()),
        telemetry: telemetry.clone(),
        auth_reads: config.dashboard.auth_reads,
        lockout: Default::default(),
        issuer: files.issuer.clone(),
        gateway_id: config.gateway.id.as_str().into(),
        started,
        uplink: uplink_status.clone(),
        outbox: stores.outbox.clone(),
    };
    let app = http::router(api);
    let dashboard_tls = files.dashboard_tls.clone();
    let http_task = tokio::spawn(async move {
        if let Err(e) = http::serve(http_listener, app, dashboard_tls).await {
            tracing::error!(error = %e, "HTTP server stopped");
        }
    });
    tracing::info!(
        "dashboard and HTTP API (/api/v1/status, /metrics, /healthz, /readyz, /invoke/<function>): {}",
        http::page::url(&config, None)
    );
    let ingest_task = tokio::spawn(ingest::run(
        site.eventloop,
        site.ingest.clone(),
        site.subscriptions.clone(),
        site.stale,
        config.broker.max_packet_bytes,
        ready.clone(),
        ingest::Handoff {
            work: work.clone(),
            acks: site.acks_rx,
        },
    ));
    let uplink = uplink::Control {
        work: work.clone(),
        replies: replies_rx,
        open: true,
    };
    let deploy_topics = deployer.as_ref().map(Deployer::topics).unwrap_or_default();
    let mut uplink_task = tokio::spawn(uplink::run(
        uplink_config(&config, &files, &stores, deploy_topics),
        stores.outbox.clone(),
        stores.wake.clone(),
        uplink_status.clone(),
        uplink,
    ));
    let tasks = Background {
        housekeeping: tokio::spawn(tasks::housekeeping(stores.outbox.clone())),
        systemd: tokio::spawn(tasks::systemd(ready)),
        logs: (config.cloud.logs != LogForwarding::Off).then(|| {
            let logs = telemetry::logs::forward_logs(
                telemetry.clone(),
                stores.outbox.clone(),
                config.cloud.logs,
            );
            tokio::spawn(logs)
        }),
        tick: tokio::spawn(telemetry::tick::run(
            telemetry,
            registry.meters(),
            stores.outbox.clone(),
            uplink_status,
        )),
        retry: tokio::spawn(crate::dead_letters::retry::run(
            stores.dead_letters.clone(),
            Retries {
                work: work.clone(),
                functions: registry.directory(),
            },
        )),
        local: site.local_task,
        upkeep: metrics.upkeep,
    };
    drop(work);

    let limits = Limits {
        max_message_bytes: config.broker.max_message_bytes,
        batch: config.broker.batch,
    };
    let journal = Durable {
        outbox: stores.outbox.clone(),
        dead_letters: stores.dead_letters.clone(),
    };
    let core = Core::new(
        registry,
        journal,
        deployer,
        limits,
        site.subscriptions,
        stores.wake.clone(),
    );
    let link = SiteLink {
        acks: site.acks_tx,
        ingest: site.ingest,
        local: site.local,
        db: stores.store.db.clone(),
    };
    let stop = Stop::default();
    let (done_tx, mut done_rx) = tokio::sync::oneshot::channel();
    let pipeline_thread = {
        let (stop, handle) = (stop.clone(), tokio::runtime::Handle::current());
        std::thread::Builder::new()
            .name("kiri-pipeline".into())
            .spawn(move || {
                let result = pipeline::run(core, queue, link, stop, handle);
                let _ = done_tx.send(());
                result
            })?
    };
    let functions = config.functions.len();
    tracing::info!(gateway = %config.gateway.id, functions, "kiri running");

    let mut fatal: Option<anyhow::Error> = None;
    tokio::select! {
        _ = shutdown => tracing::info!("shutting down"),
        _ = &mut done_rx => fatal = Some(anyhow::anyhow!("pipeline stopped")),
        r = &mut uplink_task => fatal = Some(match r {
            Ok(Err(e)) => anyhow::Error::new(e).context("uplink"),
            _ => anyhow::anyhow!("uplink task ended"),
        }),
    }
    // Stop every producer of work first; then the pipeline finishes the group it is on and
    // stops. Work still queued is not acknowledged, so the broker redelivers it after a
    // restart.
    for task in [ingest_task, http_task, tasks.retry] {
        task.abort();
        let _ = task.await;
    }
    tracing::debug!("inputs stopped");
    tasks.systemd.abort();
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    stop.stop();
    stores.outbox.close();
    let joined = tokio::task::spawn_blocking(move || pipeline_thread.join()).await;
    tracing::debug!("pipeline stopped");
    if let Ok(Ok(Err(e))) = joined {
        fatal = Some(anyhow::Error::new(e).context("pipeline"));
    }
    uplink_task.abort();
    let rest = [tasks.housekeeping, tasks.tick, tasks.local, tasks.upkeep];
    for task in rest.into_iter().chain(tasks.logs) {
        task.abort();
    }
    stores.outbox.flush()?;
    match fatal {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// What the configuration's files give, read before anything opens.
struct Files {
    cloud_tls: Option<Arc<rustls::ClientConfig>>,
    dashboard_tls: Option<Arc<rustls::ServerConfig>>,
    issuer: Option<Arc<http::jwt::Issuer>>,
}

/// Reads the TLS and JWT files: one that cannot be used stops the start.
fn check_files(config: &Config) -> anyhow::Result<Files> {
    let cloud_url = parse_mqtt_url(&config.cloud.url).map_err(anyhow::Error::msg)?;
    let cloud_tls = match cloud_url.tls {
        true => Some(net::tls::client_config(config.cloud.tls_files()).context("cloud TLS")?),
        false => None,
    };
    let dashboard_tls = match (&config.dashboard.tls_cert, &config.dashboard.tls_key) {
        (Some(cert), Some(key)) => {
            Some(net::tls::server_config(cert, key).context("dashboard TLS")?)
        }
        _ => None,
    };
    let issuer = match &config.dashboard.jwt {
        Some(jwt) => Some(Arc::new(http::jwt::Issuer::load(jwt)?)),
        None => None,
    };
    Ok(Files {
        cloud_tls,
        dashboard_tls,
        issuer,
    })
}

/// The Prometheus recorder, and its upkeep task.
struct Metrics {
    handle: PrometheusHandle,
    upkeep: JoinHandle<()>,
}

fn start_metrics() -> Metrics {
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    // A second gateway in one process (tests) keeps the first recorder; that is fine.
    let _ = metrics::set_global_recorder(recorder);
    let upkeep = handle.clone();
    let upkeep = tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(5)).await;
            upkeep.run_upkeep();
        }
    });
    Metrics { handle, upkeep }
}

/// The store and what lives in it.
struct Stores {
    store: Store,
    outbox: Arc<Outbox>,
    dead_letters: Arc<DeadLetters>,
    /// Wakes the uplink when new results are readable.
    wake: Arc<Notify>,
}

fn open_store(config: &Config) -> anyhow::Result<Stores> {
    let g = &config.gateway;
    let store = Store::open(&g.data_dir, g.cache_bytes, g.flush_every_ms)?;
    let wake = Arc::new(Notify::new());
    let mut outbox = Outbox::open(&store.db, config.outbox.clone())?
        .guard_disk(&g.data_dir)
        .notify_readable(wake.clone());
    if g.fsync {
        let log = &store.log_path;
        outbox = outbox
            .fsync_log(log)
            .with_context(|| format!("open {} to fsync it", log.display()))?;
    }
    let outbox = Arc::new(outbox);
    let dead_letters = Arc::new(DeadLetters::open(&store.db, config.dead_letters.clone())?);
    let (backlog, backlog_bytes) = outbox.usage();
    tracing::info!(data_dir = %g.data_dir.display(), backlog, backlog_bytes, "store open");
    Ok(Stores {
        store,
        outbox,
        dead_letters,
        wake,
    })
}

/// Loads the configuration's functions, then (with deployment on) the deployed ones.
fn load_functions(
    config: &Config,
    stores: &Stores,
    telemetry: &Telemetry,
    work: &mpsc::Sender<Work>,
    cloud_replies: mpsc::Sender<(String, Vec<u8>)>,
) -> anyhow::Result<(Registry, Option<Deployer>)> {
    let mut runtime = Runtime::new(config.broker.max_message_bytes, stores.store.db.clone());
    runtime.set_telemetry(telemetry.clone());
    let timers = Timers::new(tokio::runtime::Handle::current(), work.clone());
    let mut registry = Registry::new(runtime, Box::new(timers));
    for f in &config.functions {
        registry
            .load(f)
            .with_context(|| format!("function {:?} ({})", f.name, f.module.display()))?;
        tracing::info!(function = %f.name, triggers = ?f.triggers, "function loaded");
    }
    if config.deploy.trusted_keys.is_empty() {
        return Ok((registry, None));
    }
    let d = &config.deploy;
    let policy = deploy::Policy {
        trusted: d
            .trusted_keys
            .iter()
            .map(|k| crate::crypto::keys::parse_public(k).expect("validated with the config"))
            .collect(),
        gateway: config.gateway.id.clone(),
        groups: d.groups.clone(),
        max_bytes: d.max_package_bytes,
    };
    let room = deploy::Room {
        max_functions: d.max_functions,
        dir: config.gateway.data_dir.clone(),
        min_free_bytes: config.outbox.min_free_bytes,
    };
    let deployments = deploy::Deployments::open(&stores.store.db, d.keep_versions, room)?;
    let active = deployments
        .active()
        .map_err(|e| anyhow::anyhow!("deployments: {e}"))?;
    for (name, version, manifest, module) in active {
        if config.functions.iter().any(|f| f.name == name) {
            anyhow::bail!(
                "function {name:?} is both in the configuration file and deployed over MQTT \
                 (version {version}): rename one, or `kiri undeploy` the deployed one first"
            );
        }
        let Some(spec) = deploy::deployed_spec(&manifest, version) else {
            continue;
        };
        let prepared = match registry.runtime_mut().prepare(&spec, &module) {
            Ok(p) => p,
            Err(e) => {
                // Keep starting: the configuration's functions, and deployment itself
                // (to fix this one), must not depend on it.
                tracing::error!(function = %name, version, error = %e,
                    "a deployed function no longer loads; it stays inactive until a new version is deployed");
                metrics::counter!("kiri_deployments_total", "outcome" => "rejected", "reason" => "load_failed").increment(1);
                let refused = deploy::HistoryEntry::refused(
                    &name,
                    "load",
                    "start",
                    "load_failed",
                    e.to_string(),
                );
                deployments.record(&deploy::HistoryEntry {
                    version: Some(version),
                    ..refused
                });
                continue;
            }
        };
        let triggers = spec.triggers.clone();
        registry.activate(spec, prepared, Origin::Deployed { version });
        tracing::info!(function = %name, version, ?triggers, "deployed function loaded");
    }
    let deployer = Deployer {
        policy,
        store: deployments,
        cloud_replies,
    };
    tracing::info!(topics = ?deployer.topics(), keys = deployer.policy.trusted.len(), "deployment over MQTT is on");
    Ok((registry, Some(deployer)))
}

/// Kiri's side of the site broker: the ingest session, a session for local publishing, and
/// the subscriptions.
struct Site {
    ingest: AsyncClient,
    eventloop: EventLoop,
    local: AsyncClient,
    local_task: JoinHandle<()>,
    acks_tx: mpsc::Sender<Ack>,
    acks_rx: mpsc::Receiver<Ack>,
    /// What the ingest session subscribes to (on every connection).
    subscriptions: Arc<Mutex<Vec<String>>>,
    /// What an earlier start subscribed to and this one no longer needs.
    stale: Vec<String>,
}

/// Starts the site broker, and makes Kiri's sessions with it.
async fn start_site(
    config: &Config,
    store: &Store,
    registry: &Registry,
    deployer: Option<&Deployer>,
) -> anyhow::Result<Site> {
    let b = &config.broker;
    let client_id = b
        .client_id
        .clone()
        .unwrap_or_else(|| format!("kiri-{}", config.gateway.id));
    let local_id = format!("{client_id}-local");
    let own_ids = HashSet::from([client_id.clone(), local_id.clone()]);
    let endpoint = site_broker::start(b, own_ids).await?;
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
    Ok(Site {
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

/// The dashboard token: the configured one, or the one kept in the store (made now on the
/// first start).
fn dashboard_token(config: &Config, store: &Store) -> anyhow::Result<Arc<str>> {
    if let Some(t) = &config.dashboard.token {
        return Ok(t.as_str().into());
    }
    let (token, new) = store.dashboard_token()?;
    if new {
        // Never the token itself: logs are read by more people than the API is.
        tracing::warn!(
            "generated the dashboard token, kept in the data directory: `kiri dashboard --config FILE` prints the address with it (set dashboard.token to choose one)"
        );
    }
    Ok(token.into())
}

/// What the uplink needs to know.
fn uplink_config(
    config: &Config,
    files: &Files,
    stores: &Stores,
    deploy_topics: Vec<String>,
) -> ForwardConfig {
    let c = &config.cloud;
    let gw = &config.gateway.id;
    let url = parse_mqtt_url(&c.url).expect("checked at start");
    ForwardConfig {
        host: url.host,
        port: url.port,
        tls: files.cloud_tls.clone(),
        credentials: c.username.as_ref().map(|u| Credentials {
            username: u.clone(),
            password: c
                .password
                .as_ref()
                .map(|p| p.expose().to_string())
                .unwrap_or_default(),
        }),
        client_id: c
            .client_id
            .clone()
            .unwrap_or_else(|| format!("kiri-{gw}-uplink")),
        topic_prefix: config.topic_prefix(),
        gateway: gw.clone(),
        store_id: stores.store.store_id,
        inflight: c.inflight,
        batch_records: c.batch_records,
        batch_bytes: c.batch_bytes,
        max_bytes_per_sec: c.max_bytes_per_sec,
        keep_alive: Duration::from_secs(c.keep_alive_secs.max(5)),
        max_packet: config.uplink_max_packet(),
        backoff: Backoff::new(
            Duration::from_millis(c.backoff_initial_ms),
            Duration::from_millis(c.backoff_max_ms),
        ),
        deploy_topics,
    }
}

/// The tasks beside the stages, stopped at shutdown.
struct Background {
    housekeeping: JoinHandle<()>,
    systemd: JoinHandle<()>,
    logs: Option<JoinHandle<()>>,
    tick: JoinHandle<()>,
    retry: JoinHandle<()>,
    local: JoinHandle<()>,
    upkeep: JoinHandle<()>,
}

//! Starts every stage of the data flow and runs until a shutdown signal or a fatal error.

use std::collections::HashSet;
use std::future::Future;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use rumqttc::AsyncClient;
use tokio::sync::{mpsc, Notify};

use crate::config::{parse_mqtt_url, BrokerMode, Config};
use crate::dashboard;
use crate::dead_letter::DeadLetters;
use crate::deploy;
use crate::directory::Directory;
use crate::dispatch::Router;
use crate::forward::{self, Backoff, Credentials, ForwardConfig, SharedStatus};
use crate::ingest::{self, broker, guard};
use crate::outbox::Outbox;
use crate::processor::Processor;
use crate::runtime::Runtime;
use crate::store::Store;
use crate::timers;

/// Runs the gateway described by `config` until `shutdown` resolves.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    // Checked before anything is opened: a TLS file that cannot be used stops the start.
    let cloud_url = parse_mqtt_url(&config.cloud.url).map_err(anyhow::Error::msg)?;
    let cloud_tls = if cloud_url.tls {
        Some(forward::client_config(&config.cloud).context("cloud TLS")?)
    } else {
        None
    };
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let metrics_handle = recorder.handle();
    // A second gateway in one process (tests) keeps the first recorder; that is fine.
    let _ = metrics::set_global_recorder(recorder);
    let upkeep = metrics_handle.clone();
    let upkeep_task = tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(5)).await;
            upkeep.run_upkeep();
        }
    });
    let issuer = match &config.dashboard.jwt {
        Some(jwt) => Some(Arc::new(crate::identity::Issuer::load(jwt)?)),
        None => None,
    };
    let dashboard_tls = match (&config.dashboard.tls_cert, &config.dashboard.tls_key) {
        (Some(cert), Some(key)) => {
            Some(forward::server_config(cert, key).context("dashboard TLS")?)
        }
        _ => None,
    };
    let http_listener = tokio::net::TcpListener::bind(config.dashboard.listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on dashboard.listen = {}",
                config.dashboard.listen
            )
        })?;

    let g = &config.gateway;
    let store = Store::open(&g.data_dir, g.cache_bytes, g.flush_every_ms)?;
    let wake = Arc::new(Notify::new());
    let mut outbox = Outbox::open(&store.db, config.outbox.clone())?
        .guard_disk(&g.data_dir)
        .notify_readable(wake.clone());
    if g.fsync {
        outbox = outbox
            .fsync_log(&store.log_path)
            .with_context(|| format!("open {} to fsync it", store.log_path.display()))?;
    }
    let outbox = Arc::new(outbox);
    let dead_letters = Arc::new(DeadLetters::open(&store.db, config.dead_letters.clone())?);
    let (backlog, backlog_bytes) = outbox.usage();
    tracing::info!(data_dir = %config.gateway.data_dir.display(), backlog, backlog_bytes, "store open");

    let live = crate::live::Live::new(config.dashboard.log_lines);
    let mut runtime = Runtime::new(config.broker.max_message_bytes, store.db.clone());
    runtime.set_live(live.clone());
    let directory = Directory::default();
    let mut specs = Vec::new();
    for f in &config.functions {
        let idx = runtime
            .load(f)
            .with_context(|| format!("function {:?} ({})", f.name, f.module.display()))?;
        directory.set(
            idx,
            dashboard::functions::FunctionInfo {
                version: runtime.version(idx).to_string(),
                ..f.into()
            },
        );
        specs.push(Some(f.clone()));
        tracing::info!(function = %f.name, triggers = ?f.triggers, "function loaded");
    }
    let (replies_tx, replies_rx) = mpsc::channel(16);
    let deployer = if config.deploy.trusted_keys.is_empty() {
        None
    } else {
        let policy = deploy::Policy {
            trusted: config
                .deploy
                .trusted_keys
                .iter()
                .map(|k| deploy::keys::parse_public(k).expect("validated with the config"))
                .collect(),
            gateway: config.gateway.id.clone(),
            groups: config.deploy.groups.clone(),
            max_bytes: config.deploy.max_package_bytes,
        };
        let room = deploy::Room {
            max_functions: config.deploy.max_functions,
            dir: config.gateway.data_dir.clone(),
            min_free_bytes: config.outbox.min_free_bytes,
        };
        let deployments = deploy::Store::open(&store.db, config.deploy.keep_versions, room)?;
        for (name, version, manifest, module) in deployments
            .active()
            .map_err(|e| anyhow::anyhow!("deployments: {e}"))?
        {
            if config.functions.iter().any(|f| f.name == name) {
                anyhow::bail!(
                    "function {name:?} is both in the configuration file and deployed over MQTT \
                     (version {version}): rename one, or `kiri undeploy` the deployed one first"
                );
            }
            let Some(spec) = deploy::apply::deployed_spec(&manifest, version) else {
                continue;
            };
            let prepared = match runtime.prepare(&spec, &module) {
                Ok(p) => p,
                Err(e) => {
                    // Keep starting: the configuration's functions, and deployment itself
                    // (to fix this one), must not depend on it.
                    tracing::error!(function = %name, version, error = %e,
                        "a deployed function no longer loads; it stays inactive until a new version is deployed");
                    metrics::counter!("kiri_deployments_total", "outcome" => "rejected", "reason" => "load_failed").increment(1);
                    deployments.record(&deploy::HistoryEntry {
                        version: Some(version),
                        ..deploy::HistoryEntry::refused(
                            &name,
                            "load",
                            "start",
                            "load_failed",
                            e.to_string(),
                        )
                    });
                    continue;
                }
            };
            let module_version = prepared.version().to_string();
            let idx = runtime.install(None, prepared);
            directory.set(
                idx,
                deploy::apply::deployed_info(&spec, &module_version, version),
            );
            tracing::info!(function = %name, version, triggers = ?spec.triggers, "deployed function loaded");
            specs.push(Some(spec));
        }
        tracing::info!(topics = ?deploy::topics(&policy), keys = policy.trusted.len(), "deployment over MQTT is on");
        Some(deploy::apply::Deployer {
            policy,
            store: deployments,
            cloud_replies: replies_tx,
        })
    };
    let empty: &[String] = &[];
    let router = Router::new(
        specs
            .iter()
            .map(|s| s.as_ref().map(|f| f.triggers.as_slice()).unwrap_or(empty)),
    );
    let deploy_topics = deployer
        .as_ref()
        .map(|d| deploy::topics(&d.policy))
        .unwrap_or_default();

    let gw = &config.gateway.id;
    let client_id = config
        .broker
        .client_id
        .clone()
        .unwrap_or_else(|| format!("kiri-{gw}"));
    let local_id = format!("{client_id}-local");
    let (host, port, internal_login) = match config.broker.mode {
        BrokerMode::Embedded if !config.broker.users.is_empty() => {
            // rumqttd on a loopback port of its own, the guard on `broker.listen`.
            let login = guard::InternalLogin::generate()?;
            let internal = std::net::TcpListener::bind(("127.0.0.1", 0))
                .and_then(|l| l.local_addr())
                .context("no free loopback port for the embedded broker")?;
            broker::start(
                internal,
                config.broker.max_packet_bytes,
                config.broker.max_inflight,
                Some(&login),
            )?;
            let l = config.broker.listen;
            let listener = tokio::net::TcpListener::bind(l)
                .await
                .map_err(|source| broker::BrokerError::Listen { addr: l, source })?;
            let reserved = HashSet::from([client_id.clone(), local_id.clone()]);
            let users = &config.broker.users;
            let guard = guard::Guard::new(
                users,
                login.clone(),
                reserved,
                config.broker.max_packet_bytes,
            )?;
            tokio::spawn(guard::serve(listener, internal, Arc::new(guard)));
            tracing::info!(listen = %l, users = users.len(), "embedded broker: clients log in");
            (internal.ip().to_string(), internal.port(), Some(login))
        }
        BrokerMode::Embedded => {
            let l = config.broker.listen;
            broker::start(
                l,
                config.broker.max_packet_bytes,
                config.broker.max_inflight,
                None,
            )?;
            let host = if l.ip().is_unspecified() {
                "127.0.0.1".to_string()
            } else {
                l.ip().to_string()
            };
            (host, l.port(), None)
        }
        BrokerMode::External => {
            let url = parse_mqtt_url(&config.broker.url).map_err(anyhow::Error::msg)?;
            (url.host, url.port, None)
        }
    };
    // At most `queue + batch` messages are unacknowledged inside Kiri (see `ingest`); the
    // client itself only (un)subscribes.
    let requests = config.broker.queue + config.broker.batch + 16;
    let mut opts = ingest::options(
        &client_id,
        &host,
        port,
        config.broker.max_packet_bytes,
        requests,
    );
    if let Some(l) = &internal_login {
        opts.set_credentials(&l.user, &l.password);
    }
    let (ingest_client, eventloop) = AsyncClient::new(opts, requests);
    let (acks_tx, acks_rx) = mpsc::channel(requests);
    let local_opts = {
        let mut o = rumqttc::MqttOptions::new(local_id, &host, port);
        o.set_max_packet_size(
            config.broker.max_packet_bytes,
            config.broker.max_packet_bytes,
        );
        if let Some(l) = &internal_login {
            o.set_credentials(&l.user, &l.password);
        }
        o
    };
    let (local, mut local_loop) = AsyncClient::new(local_opts, 256);
    let local_task = tokio::spawn(async move {
        loop {
            if let Err(e) = local_loop.poll().await {
                tracing::debug!(error = %e, "local publish session: reconnecting");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    });

    let mut subscriptions = router.subscriptions();
    subscriptions.extend(deploy_topics.iter().cloned());
    let stale = store.replace_subscriptions(&subscriptions)?;
    let subscriptions = Arc::new(std::sync::Mutex::new(subscriptions));
    let (tx, rx) = mpsc::channel(config.broker.queue);
    let ready = Arc::new(AtomicBool::new(false));
    let token: Arc<str> = match &config.dashboard.token {
        Some(t) => t.as_str().into(),
        None => {
            let (token, new) = store.dashboard_token()?;
            if new {
                // Never the token itself: logs are read by more people than the API is.
                tracing::warn!(
                    "generated the dashboard token, kept in the data directory: `kiri dashboard --config FILE` prints the address with it (set dashboard.token to choose one)"
                );
            }
            token.into()
        }
    };
    let uplink_status = SharedStatus::new(&config.cloud.url, Some(live.clone()));
    let app = dashboard::router(dashboard::Dashboard {
        metrics: metrics_handle,
        work: tx.clone(),
        directory: directory.clone(),
        token,
        ready: ready.clone(),
        max_body: config.broker.max_message_bytes,
        dead_letters: dead_letters.clone(),
        meters: runtime.meters(),
        deployments: deployer.as_ref().map(|d| d.store.clone()),
        live: live.clone(),
        auth_reads: config.dashboard.auth_reads,
        lockout: Default::default(),
        issuer,
        gateway_id: config.gateway.id.as_str().into(),
        started,
        uplink: uplink_status.clone(),
        outbox: outbox.clone(),
    });
    let http_task = tokio::spawn(async move {
        let served = match dashboard_tls {
            None => axum::serve(http_listener, app).await,
            Some(tls) => match http_listener.into_std() {
                Ok(std_listener) => {
                    let tls = axum_server::tls_rustls::RustlsConfig::from_config(tls);
                    match axum_server::from_tcp_rustls(std_listener, tls) {
                        Ok(server) => server.serve(app.into_make_service()).await,
                        Err(e) => Err(e),
                    }
                }
                Err(e) => Err(e),
            },
        };
        if let Err(e) = served {
            tracing::error!(error = %e, "HTTP server stopped");
        }
    });
    tracing::info!(
        "dashboard and HTTP API (/api/v1/status, /metrics, /healthz, /readyz, /invoke/<function>): {}",
        dashboard::page::url(&config, None)
    );
    let ingest_task = tokio::spawn(ingest::run(
        eventloop,
        ingest_client.clone(),
        subscriptions.clone(),
        stale,
        config.broker.max_packet_bytes,
        ready.clone(),
        ingest::Handoff {
            work: tx.clone(),
            acks: acks_rx,
        },
    ));

    let forward_cfg = ForwardConfig {
        host: cloud_url.host,
        port: cloud_url.port,
        tls: cloud_tls,
        credentials: config.cloud.username.as_ref().map(|u| Credentials {
            username: u.clone(),
            password: config
                .cloud
                .password
                .as_ref()
                .map(|p| p.expose().to_string())
                .unwrap_or_default(),
        }),
        client_id: config
            .cloud
            .client_id
            .clone()
            .unwrap_or_else(|| format!("kiri-{gw}-uplink")),
        topic_prefix: config.topic_prefix(),
        gateway: gw.clone(),
        store_id: store.store_id,
        inflight: config.cloud.inflight,
        batch_records: config.cloud.batch_records,
        batch_bytes: config.cloud.batch_bytes,
        max_bytes_per_sec: config.cloud.max_bytes_per_sec,
        keep_alive: Duration::from_secs(config.cloud.keep_alive_secs.max(5)),
        max_packet: config.uplink_max_packet(),
        backoff: Backoff::new(
            Duration::from_millis(config.cloud.backoff_initial_ms),
            Duration::from_millis(config.cloud.backoff_max_ms),
        ),
        deploy_topics,
    };
    let mut forward_task = tokio::spawn(forward::run(
        forward_cfg,
        outbox.clone(),
        wake.clone(),
        uplink_status.clone(),
        forward::Control {
            work: tx.clone(),
            replies: replies_rx,
            open: true,
        },
    ));
    let housekeeping_task = tokio::spawn(housekeeping(outbox.clone()));
    let systemd_task = tokio::spawn(systemd(ready.clone()));
    let logs_task = (config.cloud.logs != crate::config::LogForwarding::Off).then(|| {
        tokio::spawn(crate::live::forward_logs(
            live.clone(),
            outbox.clone(),
            config.cloud.logs,
        ))
    });
    let tick_task = tokio::spawn(tick(
        live,
        runtime.meters(),
        outbox.clone(),
        uplink_status.clone(),
    ));

    let retry_task = tokio::spawn(crate::retry::run(
        dead_letters.clone(),
        directory.clone(),
        tx.clone(),
    ));
    let schedules = timers::Schedules::new(tokio::runtime::Handle::current(), tx.clone());
    drop(tx);
    let stop = Arc::new(AtomicBool::new(false));
    let stopping = Arc::new(Notify::new());
    let processor = Processor {
        runtime,
        router,
        outbox: outbox.clone(),
        dead_letters,
        retry_policy: specs
            .iter()
            .map(|f| {
                f.as_ref()
                    .map_or((0, 0), |f| (f.retries, f.retry_backoff_ms))
            })
            .collect(),
        max_message_bytes: config.broker.max_message_bytes,
        batch: config.broker.batch,
        ingest: ingest_client,
        acks: acks_tx,
        local,
        wake,
        handle: tokio::runtime::Handle::current(),
        stop: stop.clone(),
        stopping: stopping.clone(),
        specs,
        config_names: config.functions.iter().map(|f| f.name.clone()).collect(),
        directory,
        schedules,
        subscriptions,
        db: store.db.clone(),
        deploy: deployer,
        pending_subscriptions: None,
    };
    let (done_tx, mut done_rx) = tokio::sync::oneshot::channel();
    let processor_thread = std::thread::Builder::new()
        .name("kiri-processor".into())
        .spawn(move || {
            let result = processor.run(rx);
            let _ = done_tx.send(());
            result
        })?;
    tracing::info!(gateway = %gw, functions = config.functions.len(), "kiri running");

    let mut fatal: Option<anyhow::Error> = None;
    tokio::select! {
        _ = shutdown => tracing::info!("shutting down"),
        _ = &mut done_rx => fatal = Some(anyhow::anyhow!("processor stopped")),
        r = &mut forward_task => fatal = Some(match r {
            Ok(Err(e)) => anyhow::Error::new(e).context("uplink"),
            _ => anyhow::anyhow!("uplink task ended"),
        }),
    }
    // Stop every producer of work; once all their senders are gone the processor's queue
    // closes and it stops after its group (or gives the group up, unacknowledged).
    let producers = [ingest_task, http_task, retry_task];
    for task in producers {
        task.abort();
        let _ = task.await;
    }
    tracing::debug!("inputs stopped");
    systemd_task.abort();
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    // The processor finishes the group it is on and stops; work still queued is not
    // acknowledged, so the broker redelivers it after a restart.
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    stopping.notify_one();
    outbox.close();
    let joined = tokio::task::spawn_blocking(move || processor_thread.join()).await;
    tracing::debug!("processor stopped");
    if let Ok(Ok(Err(e))) = joined {
        fatal = Some(anyhow::Error::new(e).context("processor"));
    }
    forward_task.abort();
    housekeeping_task.abort();
    tick_task.abort();
    if let Some(t) = logs_task {
        t.abort();
    }
    local_task.abort();
    upkeep_task.abort();
    outbox.flush()?;
    match fatal {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// systemd integration (`Type=notify`, only when `NOTIFY_SOCKET` is set): `READY=1` once the
/// gateway runs (store open, HTTP bound: an absent broker must not make systemd restart a
/// gateway that is rightly waiting for it), `STATUS=` saying whether it is subscribed to its
/// broker, and, with `WatchdogSec`, a watchdog ping every half period from the async runtime
/// (a wedged runtime stops feeding it and systemd restarts the gateway; a long outage or a full
/// outbox does not, as the runtime still runs).
async fn systemd(ready: Arc<AtomicBool>) {
    use sd_notify::NotifyState;
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    if let Err(e) = sd_notify::notify(&[NotifyState::Ready]) {
        tracing::warn!("cannot notify systemd: {e}");
    }
    let period = sd_notify::watchdog_enabled().map(|p| p / 2);
    let mut subscribed = None;
    loop {
        let now = ready.load(std::sync::atomic::Ordering::Relaxed);
        if subscribed != Some(now) {
            subscribed = Some(now);
            let status = if now {
                "subscribed to the site broker"
            } else {
                "waiting for the site broker"
            };
            let _ = sd_notify::notify(&[NotifyState::Status(status)]);
        }
        if period.is_some() {
            let _ = sd_notify::notify(&[NotifyState::Watchdog]);
        }
        tokio::time::sleep(
            period
                .unwrap_or(Duration::from_secs(1))
                .min(Duration::from_secs(1)),
        )
        .await;
    }
}

/// Once a second: expires results past the TTL and publishes the backlog's age.
async fn housekeeping(outbox: Arc<Outbox>) {
    loop {
        crate::clock::check();
        tokio::time::sleep(Duration::from_secs(1)).await;
        if let Err(e) = outbox.expire() {
            tracing::error!(error = %e, "outbox expiry sweep failed");
        }
        let age = match outbox.oldest_created_ms() {
            Ok(Some(t)) => crate::now_ms().saturating_sub(t) as f64 / 1000.0,
            _ => 0.0,
        };
        metrics::gauge!("kiri_outbox_oldest_age_seconds").set(age);
    }
}

/// Once a second: the totals live readers derive rates from, kept for the charts' history.
async fn tick(
    live: crate::live::Live,
    meters: crate::runtime::meter::Meters,
    outbox: Arc<Outbox>,
    uplink: SharedStatus,
) {
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let (invocations, errors) = {
            let m = meters.lock().expect("meters lock");
            let invocations = m.iter().map(|f| f.invocations).sum();
            let errors = m.iter().map(|f| f.errors.values().sum::<u64>()).sum();
            (invocations, errors)
        };
        let up = uplink.get();
        let (backlog, backlog_bytes) = outbox.usage();
        live.tick(crate::live::Tick {
            time_ms: crate::now_ms(),
            events: crate::ingest::RECEIVED.load(std::sync::atomic::Ordering::Relaxed),
            invocations,
            errors,
            backlog,
            backlog_bytes,
            delivered: up.delivered,
            connected: up.connected,
        });
    }
}

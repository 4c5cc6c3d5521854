//! Starts every stage of the data flow and runs until a shutdown signal or a fatal error.
//!
//! [`run`] is the list of steps, in order: check the files the configuration names (so a bad
//! one stops the start before anything opens), open the store, load the functions, start the
//! site broker and Kiri's sessions with it, the HTTP API, the uplink and the background tasks,
//! then the pipeline; wait; shut down in the order that loses nothing (inputs first, then the
//! pipeline after its group, then the rest).

mod cloud;
pub mod fds;
mod functions;
mod hangup;
mod lanes;
mod reload;
mod site;
mod stop;
mod tasks;

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use tokio::sync::{mpsc, watch, Notify};
use tokio::task::JoinHandle;
use tracing::Instrument;

use crate::config::{Config, LogForwarding};
use crate::dead_letters::DeadLetters;
use crate::deploy::Deployer;
use crate::http;
use crate::ingest;
use crate::net;
use crate::outbox::Outbox;
use crate::pipeline::{self, Core, Dispatch, Durable, Limits, Retries, Role, SiteLink, Stop};
use crate::store::Store;
use crate::telemetry::{self, SharedStatus, Telemetry};
use crate::uplink;
use functions::load_functions;
use site::start_site;
use stop::shut_down;

/// Runs the gateway described by `config` until `shutdown` resolves.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let started = Instant::now();
    let files = check_files(&config)?;
    let metrics = crate::telemetry::exporter::start();
    let fds = fds::budget(&config.broker, &config.dashboard)?;
    let http_listener = tokio::net::TcpListener::bind(config.dashboard.listen)
        .await
        .with_context(|| {
            let listen = config.dashboard.listen;
            format!("cannot listen on dashboard.listen = {listen}")
        })?;
    let stores = open_store(&config)?;
    // The control lane's queue; each function lane has its own (`lanes.rs`).
    let (work, queue) = mpsc::channel(config.broker.queue);
    let dispatch = Dispatch::new(work.clone());
    let telemetry = Telemetry::new(config.dashboard.log_lines);
    let (timers_go, go) = watch::channel(false);
    let (replies_tx, replies_rx) = mpsc::channel(16);
    let (registry, deployer) =
        load_functions(&config, &stores, &telemetry, (&dispatch, go), replies_tx)?;
    let site = start_site(&config, fds, &stores.store, deployer.as_ref()).await?;
    let readiness = ingest::Readiness::default();
    let ready = readiness.flag();
    let uplink_status = SharedStatus::new(&config.cloud.url, Some(telemetry.clone()));
    let (reloads, reload_requests) = mpsc::channel(4);
    let api = http::Api {
        metrics: metrics.handle,
        work: dispatch.clone(),
        directory: registry.directory(),
        token: dashboard_token(&config, &stores.store)?,
        ready: ready.clone(),
        max_body: config.broker.max_message_bytes,
        dead_letters: stores.dead_letters.clone(),
        db: stores.store.db.clone(),
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
        hosts: config.dashboard.hosts.clone().into(),
        streams: Arc::new(tokio::sync::Semaphore::new((fds.http / 4).max(1))),
        reloads,
    };
    let http = start_http(
        &config,
        fds,
        http_listener,
        api,
        files.dashboard_tls.clone(),
    );
    lanes::count_sessions(&registry, &site.access, &readiness);
    let ingest = tokio::spawn(
        ingest::run(
            site.eventloop,
            site.control.clone(),
            site.subscriptions.clone(),
            site.stale,
            config.broker.max_packet_bytes,
            readiness.session(&site.access.client_id),
            ingest::Handoff {
                work: work.clone(),
                acks: site.acks_rx,
            },
        )
        .instrument(tracing::info_span!("control")),
    );
    let control = uplink::Control {
        work: dispatch.clone(),
        replies: replies_rx,
        open: true,
    };
    let deploy_topics = deployer.as_ref().map(Deployer::topics).unwrap_or_default();
    let store_id = stores.store.store_id;
    let target = cloud::target(&config, &files.cloud, store_id, deploy_topics.clone());
    let (targets, uplink_target) = watch::channel(target);
    let mut uplink = tokio::spawn(uplink::supervise(
        uplink_target,
        stores.outbox.clone(),
        stores.wake.clone(),
        uplink_status.clone(),
        control,
    ));
    let mut tasks = Background {
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
            config.log.summary(),
        )),
        retry: tokio::spawn(crate::dead_letters::retry::run(
            stores.dead_letters.clone(),
            Retries {
                work: dispatch.clone(),
                functions: registry.directory(),
            },
        )),
        local: site.local_task,
        upkeep: metrics.upkeep,
        watch: None,
        hangup: None,
    };
    // From here on the producers hold the only senders: once they are gone, the queue closes.
    drop(work);
    let (ended_tx, mut ended) = mpsc::unbounded_channel();
    let mut lanes = lanes::Lanes::new(lanes::LaneKit {
        access: site.access.clone(),
        registry: registry.clone(),
        outbox: stores.outbox.clone(),
        dead_letters: stores.dead_letters.clone(),
        wake: stores.wake.clone(),
        local: site.local.clone(),
        db: stores.store.db.clone(),
        dispatch: dispatch.clone(),
        readiness: readiness.clone(),
        limits: Limits {
            max_message_bytes: config.broker.max_message_bytes,
            batch: config.broker.batch,
            window: config.gateway.commit_window(config.broker.mode),
            unacked: config.broker.unacked(),
        },
        queue: config.broker.queue,
        handle: tokio::runtime::Handle::current(),
        ended: ended_tx.clone(),
    });
    lanes.start()?;
    if let Some(front) = &site.access.front {
        front.open_door();
    }
    let lanes = Arc::new(std::sync::Mutex::new(lanes));
    // SIGHUP and `POST /api/v1/reload` reload the configuration (gateway/hangup.rs);
    // `--watch` follows the functions it leaves (gateway/reload.rs).
    let seen = config.functions.iter();
    let seen = seen.map(|f| (f.clone(), reload::look(&f.module))).collect();
    let (functions, watched) = watch::channel(seen);
    let live = hangup::Live {
        registry: registry.clone(),
        sync: Box::new(lane_syncer(&lanes)),
        outbox: stores.outbox.clone(),
        guard: site.guard.clone(),
        uplink: targets,
        cloud: files.cloud.clone(),
        store_id,
        deploy_topics,
        functions,
    };
    tasks.hangup = Some(tokio::spawn(hangup::run(
        config.clone(),
        live,
        reload_requests,
    )));
    if config.watch {
        let on_new: reload::OnNew = Box::new(lane_syncer(&lanes));
        tasks.watch = Some(tokio::spawn(reload::run(registry.clone(), watched, on_new)));
    }
    let link = SiteLink {
        acks: site.acks_tx,
        ingest: Some(site.control),
        local: site.local,
        local_lanes: site.access.local_lanes(),
        db: stores.store.db.clone(),
        lane: None,
        on_functions_changed: Some(Box::new(lane_syncer(&lanes))),
    };
    let pipeline = start_pipeline(
        &config,
        &stores,
        registry,
        deployer,
        site.subscriptions,
        queue,
        link,
        ended_tx,
    )?;
    // The timers tick from now on, as the pipeline takes work.
    let _ = timers_go.send(true);
    let functions = config.functions.len();
    tracing::info!(gateway = %config.gateway.id, functions, "kiri running");

    let fatal = tokio::select! {
        _ = shutdown => {
            tracing::info!("shutting down");
            None
        }
        Some((lane, error)) = ended.recv() => Some(match error {
            Some(e) => anyhow::anyhow!("{e}").context(format!("pipeline lane {lane}")),
            None => anyhow::anyhow!("pipeline lane {lane} stopped"),
        }),
        r = &mut uplink => Some(match r {
            Ok(Err(e)) => anyhow::Error::new(e).context("uplink"),
            _ => anyhow::anyhow!("uplink task ended"),
        }),
    };
    let (before, after) = tasks.split();
    let first = [ingest, http].into_iter().chain(before).collect();
    let stop_lanes = move || {
        let mut threads = lanes.lock().unwrap_or_else(|e| e.into_inner()).stop();
        pipeline.stop.stop();
        threads.push(("control".to_string(), pipeline.thread));
        threads
    };
    shut_down(fatal, first, stop_lanes, uplink, after, &stores).await
}

/// Serves the HTTP API (and the dashboard page) on `listener`.
fn start_http(
    config: &Config,
    fds: fds::Budget,
    listener: tokio::net::TcpListener,
    api: http::Api,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> JoinHandle<()> {
    let app = http::router(api);
    tracing::info!(
        "dashboard and HTTP API (/api/v1/status, /metrics, /healthz, /readyz, /invoke/<function>): {}",
        http::page::url(config, None)
    );
    let limits = net::ConnectionLimits {
        total: fds.http,
        per_address: fds.http_per_address,
    };
    tokio::spawn(http::serve(listener, app, tls, limits))
}

/// The control lane's thread, and how to stop it.
struct Pipeline {
    thread: std::thread::JoinHandle<Result<(), pipeline::ProcessError>>,
    stop: Stop,
}

/// Starts the control lane (deployments) on a thread of its own (wasmi is synchronous); it
/// says on `ended` if it ends on its own.
#[allow(clippy::too_many_arguments)]
fn start_pipeline(
    config: &Config,
    stores: &Stores,
    registry: crate::registry::Registry,
    deployer: Option<Deployer>,
    subscriptions: Arc<std::sync::Mutex<Vec<String>>>,
    queue: mpsc::Receiver<crate::pipeline::Work>,
    link: SiteLink,
    ended: mpsc::UnboundedSender<(String, Option<String>)>,
) -> anyhow::Result<Pipeline> {
    let limits = Limits {
        max_message_bytes: config.broker.max_message_bytes,
        batch: config.broker.batch,
        window: config.gateway.commit_window(config.broker.mode),
        unacked: config.broker.unacked(),
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
        subscriptions,
        stores.wake.clone(),
    )
    .with_role(Role::Control);
    let stop = Stop::default();
    let thread = {
        let (stop, handle) = (stop.clone(), tokio::runtime::Handle::current());
        std::thread::Builder::new()
            .name("kiri-control".into())
            .spawn(move || {
                let result = pipeline::run(core, queue, link, stop.clone(), handle);
                if !stop.asked() || result.is_err() {
                    let error = result.as_ref().err().map(|e| e.to_string());
                    let _ = ended.send(("control".into(), error));
                }
                result
            })?
    };
    Ok(Pipeline { thread, stop })
}

/// Brings the lanes in line with the registry's functions (after a deployment, a reload or a
/// module change); a lane that cannot start is logged.
fn lane_syncer(lanes: &Arc<std::sync::Mutex<lanes::Lanes>>) -> impl Fn() + Send + Sync + 'static {
    let lanes = lanes.clone();
    move || {
        let synced = lanes.lock().unwrap_or_else(|e| e.into_inner()).sync();
        if let Err(e) = synced {
            tracing::error!(error = format!("{e:#}"), "cannot start a function lane");
        }
    }
}

/// What the configuration's files give, read before anything opens.
struct Files {
    cloud: cloud::Cloud,
    dashboard_tls: Option<Arc<rustls::ServerConfig>>,
    issuer: Option<Arc<http::jwt::Issuer>>,
}

/// Reads the TLS and JWT files: one that cannot be used stops the start.
fn check_files(config: &Config) -> anyhow::Result<Files> {
    let cloud = cloud::Cloud::read(config)?;
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
        cloud,
        dashboard_tls,
        issuer,
    })
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
    let dead_letters = Arc::new(DeadLetters::open(
        &store.db,
        config.dead_letters.clone(),
        outbox.age().clone(),
    )?);
    let (backlog, backlog_bytes) = outbox.usage();
    tracing::info!(data_dir = %g.data_dir.display(), backlog, backlog_bytes, "store open");
    let known = crate::ledger::Known::from([("outbox".into(), backlog)]);
    crate::ledger::check_at_start(&g.data_dir, &store.db, &known, outbox.unreadable_at_open())
        .context("cannot check the store against its ledger")?;
    Ok(Stores {
        store,
        outbox,
        dead_letters,
        wake,
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

/// The tasks beside the stages, stopped at shutdown.
struct Background {
    housekeeping: JoinHandle<()>,
    systemd: JoinHandle<()>,
    logs: Option<JoinHandle<()>>,
    tick: JoinHandle<()>,
    retry: JoinHandle<()>,
    local: JoinHandle<()>,
    upkeep: JoinHandle<()>,
    watch: Option<JoinHandle<()>>,
    hangup: Option<JoinHandle<()>>,
}

impl Background {
    /// Those stopped before the pipeline (the retries, an input; the systemd notifier, which
    /// must not speak after STOPPING=1), and those after it.
    fn split(self) -> (Vec<JoinHandle<()>>, Vec<JoinHandle<()>>) {
        let mut before = vec![self.retry, self.systemd];
        before.extend(self.watch);
        before.extend(self.hangup);
        let mut after = vec![self.housekeeping, self.tick, self.local, self.upkeep];
        after.extend(self.logs);
        (before, after)
    }
}

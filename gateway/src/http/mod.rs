//! The HTTP API on `dashboard.listen`: Prometheus metrics, health and readiness, the
//! dashboard page and the JSON API it reads, dead letters, and the HTTP trigger
//! (`POST /invoke/<function>`). The routes, who may call them and what they answer are
//! documented once, in `docs/http-api.md`; [`router`] wires them.
//!
//! - `auth.rs`: the admin token (constant-time, with a lockout) and JWTs (`jwt/`), checked
//!   against what each route needs.
//! - `invoke.rs`: the HTTP trigger, answered only once the invocation's effects are committed.
//! - `status.rs`, `functions.rs`, `live.rs`: what the page reads (status, functions with their
//!   metering, logs, live events, history, deployments); `dead_letters.rs`; `page.rs`.

mod auth;
mod dead_letters;
mod functions;
mod invoke;
pub mod jwt;
mod live;
pub mod page;
mod status;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::sync::mpsc;

pub use auth::Lockout;
pub use dead_letters::{Listed, Outcome, Selection};
pub use functions::FunctionView;

use crate::dead_letters::DeadLetters;
use crate::pipeline::Work;
use crate::registry::Directory;
use crate::telemetry::{meter::Meters, SharedStatus, Telemetry};
use auth::{authorized, Need};

/// What the handlers share.
#[derive(Clone)]
pub struct Api {
    /// Renders `/metrics`.
    pub metrics: PrometheusHandle,
    /// The pipeline's queue.
    pub work: mpsc::Sender<Work>,
    /// The functions.
    pub directory: Directory,
    /// The token write requests must carry.
    pub token: Arc<str>,
    /// Set by ingest once subscribed.
    pub ready: Arc<AtomicBool>,
    /// Largest request body.
    pub max_body: usize,
    /// The dead-letter store.
    pub dead_letters: Arc<DeadLetters>,
    /// Metering, indexed like the directory.
    pub meters: Meters,
    /// Deployment history.
    pub deployments: Option<crate::deploy::Deployments>,
    /// Function log lines and live events.
    pub telemetry: Telemetry,
    /// Whether reads (the `/api/v1` GETs and `/metrics`) need the token too.
    pub auth_reads: bool,
    /// Wrong-token attempts, rate-limited.
    pub lockout: Arc<Lockout>,
    /// The JWT issuer whose tokens are accepted besides the admin token.
    pub issuer: Option<Arc<jwt::Issuer>>,
    /// The gateway's id.
    pub gateway_id: Arc<str>,
    /// When the gateway started.
    pub started: std::time::Instant,
    /// The uplink's state.
    pub uplink: SharedStatus,
    /// The outbox.
    pub outbox: Arc<crate::outbox::Outbox>,
}

/// The routes.
pub fn router(state: Api) -> Router {
    let max_body = state.max_body;
    // Reads: open, or behind the token with `dashboard.auth_reads`.
    let reads = Router::new()
        .route("/metrics", get(status::metrics))
        .route("/api/v1/status", get(status::get))
        .route("/api/v1/functions", get(functions::list))
        .route("/api/v1/deployments", get(live::deployments))
        .route("/api/v1/functions/{name}/logs", get(live::logs))
        .route("/api/v1/events", get(live::events))
        .route("/api/v1/history", get(live::history))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            read_auth,
        ));
    Router::new()
        .merge(reads)
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(status::readyz))
        .route(
            "/invoke/{function}",
            post(invoke::invoke).layer(DefaultBodyLimit::max(max_body)),
        )
        .route("/api/v1/dead-letters", get(dead_letters::list))
        .route("/api/v1/dead-letters/replay", post(dead_letters::replay))
        .route(
            "/api/v1/dead-letters/drop",
            post(dead_letters::drop_entries),
        )
        .layer(axum::middleware::map_response(no_store))
        .merge(page::routes())
        .with_state(state)
}

/// Serves `app` on `listener`, over TLS with `tls`, until the task is dropped. Returns only
/// when the server fails.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> std::io::Result<()> {
    match tls {
        None => axum::serve(listener, app).await,
        Some(tls) => {
            let std_listener = listener.into_std()?;
            let tls = axum_server::tls_rustls::RustlsConfig::from_config(tls);
            axum_server::from_tcp_rustls(std_listener, tls)?
                .serve(app.into_make_service())
                .await
        }
    }
}

/// API answers are live state: never cached.
async fn no_store(mut r: Response) -> Response {
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        axum::http::HeaderValue::from_static("no-store"),
    );
    r
}

async fn read_auth(
    State(s): State<Api>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if s.auth_reads {
        if let Err(e) = authorized(&s, req.headers(), Need::Read) {
            return e.into_response();
        }
    }
    next.run(req).await
}

/// An error answer: a status and `{"reason", "error"}`.
pub struct ApiError {
    status: StatusCode,
    reason: &'static str,
    error: String,
}

impl ApiError {
    fn new(status: StatusCode, reason: &'static str, error: impl Into<String>) -> ApiError {
        ApiError {
            status,
            reason,
            error: error.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        error(self.status, self.reason, self.error)
    }
}

fn error(status: StatusCode, reason: &str, error: impl Into<String>) -> Response {
    let body = serde_json::json!({ "reason": reason, "error": error.into() });
    (status, Json(body)).into_response()
}

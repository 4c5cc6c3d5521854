//! The HTTP API on `dashboard.listen`: Prometheus metrics, health and readiness, the
//! dashboard page and the JSON API it reads, dead letters, and the HTTP trigger
//! (`POST /invoke/<function>`). The routes, who may call them and what they answer are
//! documented once, in `docs/http-api.md`; [`router`] wires them.
//!
//! - `auth.rs`: the admin token (constant-time, with a lockout) and JWTs (`jwt/`), checked
//!   against what each route needs.
//! - `invoke.rs`: the HTTP trigger, answered only once the invocation's effects are committed.
//! - `status.rs`, `functions.rs`, `live.rs`: what the page reads (status, functions with their
//!   metering, logs, live events, history, deployments); `dead_letters.rs`; `page.rs`;
//!   `reload.rs` (the configuration reload, done by the gateway's reload task).

mod auth;
mod dead_letters;
mod functions;
mod invoke;
pub mod jwt;
mod live;
pub mod page;
pub mod reload;
mod serve;
mod state;
mod status;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::{Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;

pub use auth::Lockout;
pub use dead_letters::{Listed, Outcome, Selection};
pub use functions::FunctionView;
pub use serve::{serve, HEADER_TIMEOUT};

use crate::dead_letters::DeadLetters;
use crate::registry::Directory;
use crate::telemetry::{meter::Meters, SharedStatus, Telemetry};
use auth::{authorized, Need};

/// What the handlers share.
#[derive(Clone)]
pub struct Api {
    /// Renders `/metrics`.
    pub metrics: PrometheusHandle,
    /// The pipeline's queue.
    pub work: crate::pipeline::Dispatch,
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
    /// The store, for the functions' key-value state.
    pub db: sled::Db,
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
    /// Host names accepted in `Host` besides IP addresses and `localhost`
    /// (`dashboard.hosts`).
    pub hosts: Arc<[String]>,
    /// Places for live event streams (`GET /api/v1/events`), each of which keeps its
    /// connection working for as long as it is open: a quarter of the connections.
    pub streams: Arc<tokio::sync::Semaphore>,
    /// Where `POST /api/v1/reload` asks for a reload.
    pub reloads: reload::Reloads,
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
            any(invoke::invoke).layer(DefaultBodyLimit::max(max_body)),
        )
        .route(
            "/invoke/{function}/{*path}",
            any(invoke::invoke_path).layer(DefaultBodyLimit::max(max_body)),
        )
        .route("/api/v1/dead-letters", get(dead_letters::list))
        .route(
            "/api/v1/functions/{function}/state",
            get(state::read).delete(state::delete),
        )
        .route("/api/v1/dead-letters/replay", post(dead_letters::replay))
        .route("/api/v1/reload", post(reload::reload))
        .route(
            "/api/v1/dead-letters/drop",
            post(dead_letters::drop_entries),
        )
        .layer(axum::middleware::map_response(no_store))
        .merge(page::routes())
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            host_check,
        ))
        .with_state(state)
}

/// Refuses a request whose `Host` names the gateway by a name it does not know: a page on
/// another site that rebinds its own name to the gateway's address (DNS rebinding) could
/// otherwise read the open routes from the victim's browser. IP addresses and `localhost`
/// always pass, and the names of `dashboard.hosts`.
async fn host_check(
    State(s): State<Api>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok());
    if host_allowed(host, &s.hosts) {
        return next.run(req).await;
    }
    metrics::counter!("kiri_http_host_refused_total").increment(1);
    error(
        StatusCode::MISDIRECTED_REQUEST,
        "host_not_allowed",
        "this gateway is not reached by that name; add it to dashboard.hosts",
    )
}

/// Whether a `Host` header value may reach the API (see [`host_check`]). No header (HTTP/1.0)
/// passes: browsers always send one.
fn host_allowed(host: Option<&str>, names: &[String]) -> bool {
    let Some(host) = host else {
        return true;
    };
    if host.starts_with('[') {
        // [IPv6]:port
        return host
            .trim_start_matches('[')
            .split(']')
            .next()
            .is_some_and(|ip| ip.parse::<std::net::Ipv6Addr>().is_ok());
    }
    let name = match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    };
    name.parse::<std::net::IpAddr>().is_ok()
        || name.eq_ignore_ascii_case("localhost")
        || names.iter().any(|n| n.eq_ignore_ascii_case(name))
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

#[cfg(test)]
mod tests {
    #[test]
    fn addresses_localhost_and_the_configured_names_may_reach_the_api_and_no_other_name() {
        let names = ["gateway.local".to_string()];
        let allowed = |h| super::host_allowed(Some(h), &names);
        for ok in [
            "127.0.0.1:8080",
            "127.0.0.1",
            "10.1.2.3:8443",
            "[::1]:8080",
            "localhost:8080",
            "LOCALHOST",
            "gateway.local:8080",
            "Gateway.Local",
        ] {
            assert!(allowed(ok), "{ok}");
        }
        for refused in [
            "attacker.example:8080",
            "attacker.example",
            "127.0.0.1.nip.io:8080",
            "gateway.local.attacker.example",
            "[not-an-address]:80",
            "",
        ] {
            assert!(!allowed(refused), "{refused}");
        }
        assert!(super::host_allowed(None, &names));
    }
}

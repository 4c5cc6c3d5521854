//! The gateway's HTTP endpoint (`dashboard.listen`): Prometheus metrics, health and
//! readiness, and synchronous function invocation.
//!
//! | route | auth | what |
//! |---|---|---|
//! | `GET /metrics` | with `auth_reads`: token or JWT `read` | Prometheus text format |
//! | `GET /healthz` | none | 200 while the process runs |
//! | `GET /readyz` | none | 200 once the ingest session is subscribed, else 503 |
//! | `POST /invoke/{function}` | token or JWT `invoke:<function>` | runs a function with `http = true` on the body |
//! | `GET /api/v1/status` | with `auth_reads`: token or JWT `read` | gateway id, uptime, uplink state, outbox backlog and policy |
//! | `GET /api/v1/functions` | with `auth_reads`: token or JWT `read` | each function's configuration and metering |
//! | `GET /api/v1/deployments` | with `auth_reads`: token or JWT `read` | the deployment history, newest first (`?limit=N`) |
//! | `GET /api/v1/functions/{name}/logs` | with `auth_reads`: token or JWT `read` | the function's newest log lines (`?limit=N`) |
//! | `GET /api/v1/events` | with `auth_reads`: token or JWT `read` | server-sent events: log lines, uplink changes, a tick a second |
//! | `GET /api/v1/history` | with `auth_reads`: token or JWT `read` | the last ten minutes of ticks, for the page's charts |
//! | `GET /`, `GET /assets/{file}` | never | the dashboard page ([`page`]) |
//! | `GET /api/v1/dead-letters` | token or JWT `dead-letters` | lists dead letters (`?function=F&limit=N`) |
//! | `POST /api/v1/dead-letters/replay` | token or JWT `dead-letters` | replays `{"ids": [...]}` or `{"function": F}` |
//! | `POST /api/v1/dead-letters/drop` | token or JWT `dead-letters` | drops `{"ids": [...]}`, `{"function": F}` or `{"all": true}` |

pub mod auth;
pub mod dead_letters;
pub mod functions;
pub mod history;
pub mod page;
pub mod status;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::sync::{mpsc, oneshot};

use crate::processor::{HttpInvoke, Work};

/// What the handlers share.
#[derive(Clone)]
pub struct Dashboard {
    /// Renders `/metrics`.
    pub metrics: PrometheusHandle,
    /// The processor's queue.
    pub work: mpsc::Sender<Work>,
    /// The functions.
    pub directory: crate::directory::Directory,
    /// The token write requests must carry.
    pub token: Arc<str>,
    /// Set by ingest once subscribed.
    pub ready: Arc<AtomicBool>,
    /// Largest request body.
    pub max_body: usize,
    /// The dead-letter store.
    pub dead_letters: Arc<crate::dead_letter::DeadLetters>,
    /// Metering, indexed like the directory.
    pub meters: crate::runtime::meter::Meters,
    /// Deployment history.
    pub deployments: Option<crate::deploy::Store>,
    /// Function log lines and live events.
    pub live: crate::live::Live,
    /// Whether reads (the `/api/v1` GETs and `/metrics`) need the token too.
    pub auth_reads: bool,
    /// Wrong-token attempts, rate-limited.
    pub lockout: Arc<auth::Lockout>,
    /// The JWT issuer whose tokens are accepted besides the admin token.
    pub issuer: Option<Arc<crate::identity::Issuer>>,
    /// The gateway's id.
    pub gateway_id: Arc<str>,
    /// When the gateway started.
    pub started: std::time::Instant,
    /// The uplink's state.
    pub uplink: crate::forward::SharedStatus,
    /// The outbox.
    pub outbox: Arc<crate::outbox::Outbox>,
}

/// The routes.
pub fn router(state: Dashboard) -> Router {
    let max_body = state.max_body;
    // Reads: open, or behind the token with `dashboard.auth_reads`.
    let reads = Router::new()
        .route("/metrics", get(metrics))
        .route("/api/v1/status", get(status::get))
        .route("/api/v1/functions", get(functions::list))
        .route("/api/v1/deployments", get(deployments))
        .route("/api/v1/functions/{name}/logs", get(logs))
        .route("/api/v1/events", get(events))
        .route("/api/v1/history", get(history::get))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            read_auth,
        ));
    Router::new()
        .merge(reads)
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route(
            "/invoke/{function}",
            post(invoke).layer(DefaultBodyLimit::max(max_body)),
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

/// API answers are live state: never cached.
async fn no_store(mut r: Response) -> Response {
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        axum::http::HeaderValue::from_static("no-store"),
    );
    r
}

async fn read_auth(
    State(s): State<Dashboard>,
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

async fn metrics(State(s): State<Dashboard>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        s.metrics.render(),
    )
        .into_response()
}

#[derive(serde::Deserialize)]
struct Limit {
    limit: Option<usize>,
}

async fn deployments(
    State(s): State<Dashboard>,
    axum::extract::Query(q): axum::extract::Query<Limit>,
) -> Response {
    let limit = q.limit.unwrap_or(50).min(crate::deploy::HISTORY_KEEP);
    let entries = s
        .deployments
        .as_ref()
        .map(|d| d.history(limit))
        .unwrap_or_default();
    Json(entries).into_response()
}

async fn logs(
    State(s): State<Dashboard>,
    Path(name): Path<String>,
    axum::extract::Query(q): axum::extract::Query<Limit>,
) -> Response {
    if s.directory.find(&name).is_none() {
        return error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no running function {name:?}"),
        );
    }
    let limit = q.limit.unwrap_or(100).min(s.live.per_function());
    Json(s.live.lines(&name, limit)).into_response()
}

async fn events(State(s): State<Dashboard>) -> Response {
    use axum::response::sse::{Event, KeepAlive, Sse};
    use tokio::sync::broadcast::error::RecvError;
    let stream = futures_util::stream::unfold(s.live.subscribe(), |mut rx| async move {
        let event = match rx.recv().await {
            Ok(e) => Event::default().json_data(&e).ok()?,
            // A reader this far behind skips what it missed, and is told how much.
            Err(RecvError::Lagged(n)) => Event::default().event("lagged").data(n.to_string()),
            Err(RecvError::Closed) => return None,
        };
        Some((Ok::<_, std::convert::Infallible>(event), rx))
    });
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}

async fn readyz(State(s): State<Dashboard>) -> Response {
    if s.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not subscribed to the local broker yet\n",
        )
            .into_response()
    }
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

/// What a route needs from its caller.
#[derive(Debug, Clone, Copy)]
pub enum Need<'a> {
    /// A read route (with `dashboard.auth_reads`): scope `read`.
    Read,
    /// The dead-letter routes: scope `dead-letters`.
    DeadLetters,
    /// `POST /invoke/<function>`: scope `invoke:<function>` or `invoke:*`.
    Invoke(&'a str),
}

impl Need<'_> {
    fn scope(&self) -> String {
        match self {
            Need::Read => "read".into(),
            Need::DeadLetters => "dead-letters".into(),
            Need::Invoke(f) => format!("invoke:{f}"),
        }
    }
}

/// Who a request comes from.
#[derive(Debug, Clone)]
pub enum Access {
    /// The admin token: everything, and no caller for functions.
    Admin,
    /// A verified JWT.
    Jwt(Arc<crate::identity::Identity>),
}

/// Checks the request's credentials against what the route needs: the admin token, or a JWT
/// of the configured issuer whose scopes grant it. 401 without valid credentials, 403 when a
/// valid token lacks the scope, 429 while too many wrong credentials came lately: then the
/// admin token is not even compared, so guessing gains nothing, while JWTs are still verified
/// (their signatures cannot be guessed, so a guesser cannot lock their holders out).
fn authorized(s: &Dashboard, headers: &HeaderMap, need: Need<'_>) -> Result<Access, ApiError> {
    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let bearer = auth.and_then(|h| h.strip_prefix("Bearer ")).map(str::trim);
    let jwt = s.issuer.as_ref().zip(bearer.filter(|b| b.contains('.')));
    if let (Some(wait), None) = (s.lockout.locked(), jwt) {
        metrics::counter!("kiri_http_locked_out_total").increment(1);
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "locked_out",
            format!(
                "too many wrong tokens lately; try again in {} s",
                wait.as_secs().max(1)
            ),
        ));
    }
    if let Some((issuer, jwt)) = jwt {
        return match issuer.verify(jwt) {
            Ok(id) if granted(&id.scopes, need) => Ok(Access::Jwt(Arc::new(id))),
            Ok(id) => {
                metrics::counter!("kiri_http_forbidden_total").increment(1);
                Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "forbidden",
                    format!(
                        "the token of {:?} lacks the scope {}",
                        id.subject,
                        need.scope()
                    ),
                ))
            }
            Err(rejected) => {
                metrics::counter!("kiri_http_unauthorized_total").increment(1);
                if rejected.is_forgery() {
                    s.lockout.failed();
                }
                Err(ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    rejected.reason(),
                    rejected.to_string(),
                ))
            }
        };
    }
    if auth::bearer_matches(auth, &s.token) {
        return Ok(Access::Admin);
    }
    metrics::counter!("kiri_http_unauthorized_total").increment(1);
    if auth.is_some() {
        s.lockout.failed();
    }
    Err(ApiError::new(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "a valid `Authorization: Bearer <token>` header is required",
    ))
}

fn granted(scopes: &crate::identity::Scopes, need: Need<'_>) -> bool {
    match need {
        Need::Read => scopes.read,
        Need::DeadLetters => scopes.dead_letters,
        Need::Invoke(f) => scopes.may_invoke(f),
    }
}

fn error(status: StatusCode, reason: &str, error: impl Into<String>) -> Response {
    let body = serde_json::json!({ "reason": reason, "error": error.into() });
    (status, Json(body)).into_response()
}

async fn invoke(
    State(s): State<Dashboard>,
    Path(function): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let access = match authorized(&s, &headers, Need::Invoke(&function)) {
        Ok(a) => a,
        Err(r) => return r.into_response(),
    };
    let Some((index, f)) = s.directory.find(&function).filter(|(_, f)| f.http) else {
        return error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no function {function:?} with http = true"),
        );
    };
    let (reply, answer) = oneshot::channel();
    let call = HttpInvoke {
        function: index,
        body: body.to_vec(),
        received_ms: crate::now_ms(),
        caller: match access {
            Access::Admin => None,
            Access::Jwt(id) => Some(Arc::new(id.caller())),
        },
        reply,
    };
    if let Err(e) = s.work.try_send(Work::Invoke(call)) {
        if matches!(e, mpsc::error::TrySendError::Closed(_)) {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "shutting_down",
                "the gateway is stopping",
            );
        }
        metrics::counter!("kiri_http_rejected_busy_total").increment(1);
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "busy",
            "the processing queue is full; retry later",
        );
    }
    // Queued work ahead of this call, plus its own limit: a generous bound on the wait.
    let wait = Duration::from_millis(f.timeout_ms) + Duration::from_secs(30);
    match tokio::time::timeout(wait, answer).await {
        Ok(Ok(Ok(body))) => {
            ([(header::CONTENT_TYPE, "application/octet-stream")], body).into_response()
        }
        Ok(Ok(Err(failure))) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            failure.reason,
            failure.error,
        ),
        Ok(Err(_)) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            "the gateway is stopping",
        ),
        Err(_) => error(
            StatusCode::GATEWAY_TIMEOUT,
            "queue_timeout",
            "no answer in time; the call may still run",
        ),
    }
}

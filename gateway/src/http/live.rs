//! What the dashboard page follows: a function's log lines, the live event stream, the last
//! ten minutes of ticks, and the deployment history.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::{error, Api};

/// The `?limit=N` of a listing.
#[derive(serde::Deserialize)]
pub(super) struct Limit {
    limit: Option<usize>,
}

/// `GET /api/v1/deployments?limit=N`: the deployment history, newest first.
pub(super) async fn deployments(State(s): State<Api>, Query(q): Query<Limit>) -> Response {
    let limit = q.limit.unwrap_or(50).min(crate::deploy::HISTORY_KEEP);
    let entries = s
        .deployments
        .as_ref()
        .map(|d| d.history(limit))
        .unwrap_or_default();
    Json(entries).into_response()
}

/// `GET /api/v1/functions/{name}/logs?limit=N`: the function's newest log lines.
pub(super) async fn logs(
    State(s): State<Api>,
    Path(name): Path<String>,
    Query(q): Query<Limit>,
) -> Response {
    if s.directory.find(&name).is_none() {
        return error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no running function {name:?}"),
        );
    }
    let limit = q.limit.unwrap_or(100).min(s.telemetry.per_function());
    Json(s.telemetry.lines(&name, limit)).into_response()
}

/// `GET /api/v1/events`: server-sent events (log lines, uplink changes, ticks).
pub(super) async fn events(State(s): State<Api>) -> Response {
    use axum::response::sse::{Event, KeepAlive, Sse};
    use tokio::sync::broadcast::error::RecvError;
    let Ok(place) = s.streams.clone().try_acquire_owned() else {
        metrics::counter!("kiri_http_rejected_busy_total").increment(1);
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "busy",
            "too many live event streams open (a quarter of dashboard.max_connections): retry later",
        );
    };
    let start = (s.telemetry.subscribe(), place);
    let stream = futures_util::stream::unfold(start, |(mut rx, place)| async move {
        let event = match rx.recv().await {
            Ok(e) => Event::default().json_data(&e).ok()?,
            // A reader this far behind skips what it missed, and is told how much.
            Err(RecvError::Lagged(n)) => Event::default().event("lagged").data(n.to_string()),
            Err(RecvError::Closed) => return None,
        };
        Some((Ok::<_, std::convert::Infallible>(event), (rx, place)))
    });
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// `GET /api/v1/history`: the last ten minutes, one tick a second (the totals the live `tick`
/// events carry), so that the page's charts start with the recent past.
/// `{"interval_ms": 1000, "ticks": [...]}`, oldest first.
pub(super) async fn history(State(s): State<Api>) -> Response {
    Json(serde_json::json!({
        "interval_ms": 1000,
        "ticks": s.telemetry.history(),
    }))
    .into_response()
}

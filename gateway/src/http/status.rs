//! The gateway at a glance (`GET /api/v1/status`: identity, uptime, the uplink, the outbox),
//! readiness and the Prometheus metrics.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::{error, Api};

/// The status document.
pub(super) async fn get(State(s): State<Api>) -> Response {
    let outbox = match s.outbox.stats() {
        Ok(stats) => stats,
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, "storage", e.to_string()),
    };
    Json(serde_json::json!({
        "gateway": s.gateway_id.as_ref(),
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_ms": s.started.elapsed().as_millis() as u64,
        "ready": s.ready.load(std::sync::atomic::Ordering::Relaxed),
        "clock": crate::clock::now_text(),
        "clock_unset": crate::clock::unset(),
        "uplink": s.uplink.get(),
        "outbox": outbox,
        "unloaded_functions": s.directory.not_loaded(),
    }))
    .into_response()
}

/// `GET /readyz`: 200 once the ingest session is subscribed, else 503. The body names the
/// configured functions whose modules do not load (they do not run; the others do).
pub(super) async fn readyz(State(s): State<Api>) -> Response {
    if s.ready.load(std::sync::atomic::Ordering::Relaxed) {
        let mut body = String::from("ready\n");
        for u in s.directory.not_loaded() {
            body += &format!(
                "function {} is inactive: its module does not load: {}\n",
                u.name, u.error
            );
        }
        (StatusCode::OK, body).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not subscribed to the local broker yet\n",
        )
            .into_response()
    }
}

/// `GET /metrics`: the Prometheus text format.
pub(super) async fn metrics(State(s): State<Api>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        s.metrics.render() + &crate::telemetry::process::render(),
    )
        .into_response()
}

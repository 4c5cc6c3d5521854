//! `GET /api/v1/status`: the gateway at a glance: identity, uptime, the uplink, the outbox.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::{error, Dashboard};

/// The status document.
pub async fn get(State(s): State<Dashboard>) -> Response {
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
    }))
    .into_response()
}

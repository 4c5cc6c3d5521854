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
        "site_broker": { "dropped": crate::ingest::drops::dropped() },
        "store": { "damage": crate::ledger::found().map(crate::ledger::Damage::to_json) },
        "unloaded_functions": s.directory.not_loaded(),
    }))
    .into_response()
}

/// `GET /readyz`: 200 when the gateway takes inputs, else 503, with a JSON body either way:
/// `ready`, the `reasons` it is not (the site broker's sessions not all subscribed, inputs
/// held back for disk space, the outbox full under `block`), and the configured functions
/// whose modules do not load (they do not run; the others do, and the gateway is ready).
pub(super) async fn readyz(State(s): State<Api>) -> Response {
    let mut reasons = Vec::new();
    if !s.ready.load(std::sync::atomic::Ordering::Relaxed) {
        reasons.push(
            "not connected and subscribed to the site broker (every session: the control \
             session's and each function's)",
        );
    }
    let held = s.outbox.held_back();
    if held.disk {
        reasons.push(
            "inputs held back: free disk space is under outbox.min_free_bytes; inputs are not \
             acknowledged until space returns",
        );
    }
    if held.full {
        reasons.push(
            "inputs held back: the outbox (or a function's share of it) is full and \
             outbox.when_full = \"block\"; inputs are not acknowledged until the uplink drains it",
        );
    }
    let inactive: Vec<serde_json::Value> = s
        .directory
        .not_loaded()
        .into_iter()
        .map(|u| serde_json::json!({ "function": u.name, "error": u.error }))
        .collect();
    let status = if reasons.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    // Damage found at start does not stop the gateway taking inputs: it is said here too.
    let warnings: Vec<String> = crate::ledger::found()
        .map(|d| vec![d.describe()])
        .unwrap_or_default();
    let body = serde_json::json!({
        "ready": reasons.is_empty(),
        "reasons": reasons,
        "inactive_functions": inactive,
        "warnings": warnings,
    });
    (status, Json(body)).into_response()
}

/// `GET /metrics`: the Prometheus text format.
pub(super) async fn metrics(State(s): State<Api>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        s.metrics.render() + &crate::telemetry::process::render(),
    )
        .into_response()
}

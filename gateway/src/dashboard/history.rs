//! `GET /api/v1/history`: the gateway's last ten minutes, one tick a second (the totals the
//! live `tick` events carry), so that the page's charts start with the recent past and the
//! live ticks then extend them.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::Dashboard;

/// `{"interval_ms": 1000, "ticks": [...]}`, oldest first.
pub async fn get(State(s): State<Dashboard>) -> Response {
    Json(serde_json::json!({
        "interval_ms": 1000,
        "ticks": s.live.history(),
    }))
    .into_response()
}

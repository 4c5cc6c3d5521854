//! `GET /api/v1/functions`: each running function's configuration and metering.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};

use super::Api;
use crate::registry::FunctionInfo;
use crate::telemetry::meter::FunctionStats;

/// One entry of the answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FunctionView {
    /// Configuration.
    #[serde(flatten)]
    pub info: FunctionInfo,
    /// Metering since the gateway started.
    pub stats: FunctionStats,
}

/// `GET /api/v1/functions`
pub(super) async fn list(State(s): State<Api>) -> Response {
    let stats: Vec<FunctionStats> = s
        .meters
        .lock()
        .expect("meters lock")
        .iter()
        .map(FunctionStats::snapshot)
        .collect();
    let views: Vec<FunctionView> = s
        .directory
        .all()
        .into_iter()
        .zip(stats)
        .filter(|(info, _)| info.active)
        .map(|(info, stats)| FunctionView { info, stats })
        .collect();
    Json(views).into_response()
}

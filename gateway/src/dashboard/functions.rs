//! `GET /api/v1/functions`: each function's configuration and metering.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};

use super::Dashboard;
use crate::config::FunctionConfig;
use crate::runtime::meter::FunctionStats;

/// What the API shows of a function's configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FunctionInfo {
    /// Name.
    pub name: String,
    /// Version: the first 16 hex digits of the module's SHA-256.
    pub version: String,
    /// MQTT triggers.
    pub triggers: Vec<String>,
    /// Interval schedule.
    pub every: Option<String>,
    /// Cron schedule.
    pub cron: Option<String>,
    /// Whether HTTP invocation is on.
    pub http: bool,
    /// Fuel per invocation.
    pub fuel: u64,
    /// Memory cap, bytes.
    pub memory_bytes: usize,
    /// Wall-clock limit, ms.
    pub timeout_ms: u64,
    /// `config` (from the configuration file) or `deployed` (over MQTT).
    pub origin: String,
    /// The deployed package's version, for a deployed function.
    pub deployed_version: Option<u64>,
    /// Whether it runs (an undeployed function stays listed, inactive, until a restart).
    pub active: bool,
}

impl From<&FunctionConfig> for FunctionInfo {
    fn from(f: &FunctionConfig) -> Self {
        FunctionInfo {
            name: f.name.clone(),
            version: String::new(),
            triggers: f.triggers.clone(),
            every: f.every.clone(),
            cron: f.cron.clone(),
            http: f.http,
            fuel: f.limits.fuel,
            memory_bytes: f.limits.memory_bytes,
            timeout_ms: f.limits.timeout_ms,
            origin: "config".into(),
            deployed_version: None,
            active: true,
        }
    }
}

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
pub async fn list(State(s): State<Dashboard>) -> Response {
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

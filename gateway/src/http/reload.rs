//! `POST /api/v1/reload` (`kiri reload`): reloads the configuration as SIGHUP does, and
//! answers with what changed, or with why the new configuration was refused (the running one
//! stays). Needs the token (or a JWT with scope `reload`).

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

use super::auth::{authorized, Need};
use super::{Api, ApiError};

/// What a reload changed.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Reloaded {
    /// The settings (dotted keys) that changed, functions apart.
    pub keys: Vec<String>,
    /// Functions added or changed.
    pub functions_changed: Vec<String>,
    /// Functions removed.
    pub functions_removed: Vec<String>,
}

/// A reload asked for, and where its outcome goes.
pub type ReloadRequest = oneshot::Sender<Result<Reloaded, String>>;

/// Where reloads are asked for (the gateway's reload task takes one at a time).
pub type Reloads = mpsc::Sender<ReloadRequest>;

/// `POST /api/v1/reload`.
pub async fn reload(State(s): State<Api>, headers: HeaderMap) -> Result<Json<Reloaded>, ApiError> {
    authorized(&s, &headers, Need::Reload)?;
    let unavailable = || {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the gateway is not taking reloads (it is stopping)",
        )
    };
    let (tx, rx) = oneshot::channel();
    s.reloads.send(tx).await.map_err(|_| unavailable())?;
    match rx.await.map_err(|_| unavailable())? {
        Ok(done) => Ok(Json(done)),
        Err(why) => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "refused",
            why,
        )),
    }
}

//! The uplink as the gateway runs it: [`run`] (or [`off`] while `cloud.url` is unset) for the
//! current cloud settings, started again whenever a reload changes them. A restart drops the
//! connection as a network failure would: what was in flight stays in the outbox (a result
//! leaves it only on the cloud's PUBACK) and goes again, in order, over the new connection,
//! so the change loses nothing and may deliver a result twice (at-least-once; its id lets a
//! consumer drop the copy).

use std::sync::Arc;

use tokio::sync::{watch, Notify};

use super::{off, run, Control, UplinkConfig};
use crate::outbox::{Outbox, OutboxError};
use crate::telemetry::SharedStatus;

/// Where the uplink goes: the cloud URL as configured (for the status) and its settings,
/// `None` while `cloud.url` is unset.
#[derive(Debug, Clone)]
pub struct Target {
    /// `cloud.url`, as written.
    pub url: String,
    /// The settings the uplink runs with.
    pub config: Option<UplinkConfig>,
}

/// Runs the uplink for the target in `targets`, restarting it on each new one, until the task
/// is dropped. Returns only on a storage error.
pub async fn supervise(
    mut targets: watch::Receiver<Target>,
    outbox: Arc<Outbox>,
    wake: Arc<Notify>,
    status: SharedStatus,
    mut control: Control,
) -> Result<(), OutboxError> {
    loop {
        let target = targets.borrow_and_update().clone();
        status.retarget(&target.url);
        let current = async {
            match target.config {
                Some(cfg) => {
                    run(
                        cfg,
                        outbox.clone(),
                        wake.clone(),
                        status.clone(),
                        &mut control,
                    )
                    .await
                }
                None => off(status.clone(), &mut control).await,
            }
        };
        tokio::select! {
            ended = current => return ended,
            changed = targets.changed() => {
                if changed.is_err() {
                    // The gateway dropped the sender: it is stopping; keep to the last target.
                    std::future::pending::<()>().await;
                }
                tracing::info!(url = %targets.borrow().url, "cloud settings reloaded: the uplink starts again with them");
            }
        }
    }
}

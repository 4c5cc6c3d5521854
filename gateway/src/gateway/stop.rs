//! Stopping the gateway in the order that loses nothing, within a time limit.

use std::time::Duration;

use anyhow::Context;
use tokio::task::JoinHandle;

use super::Stores;
use crate::pipeline;

/// A pipeline lane's thread.
pub(super) type LaneThread = std::thread::JoinHandle<Result<(), pipeline::ProcessError>>;

/// How long stopping may take before the process exits anyway (non-zero): a store that fails
/// can also hang (a flush on a full disk), and a gateway that neither works nor exits cannot be
/// restarted by its supervisor.
const SHUTDOWN_LIMIT: Duration = Duration::from_secs(10);

/// Stops in the order that loses nothing: every producer of work first (`first`, with the
/// systemd notifier), then the pipeline after the group it is on (work still queued is not
/// acknowledged, so the broker sends it again after a restart), then the uplink and the
/// `rest`; then one last flush (not after a failure: the store may be what failed). A fatal
/// error is logged as an ERROR with its cause; whatever happens, the process is gone within
/// [`SHUTDOWN_LIMIT`].
pub(super) async fn shut_down(
    mut fatal: Option<anyhow::Error>,
    first: Vec<JoinHandle<()>>,
    stop_lanes: impl FnOnce() -> Vec<(String, LaneThread)>,
    uplink: JoinHandle<Result<(), crate::outbox::OutboxError>>,
    rest: Vec<JoinHandle<()>>,
    stores: &Stores,
) -> anyhow::Result<()> {
    std::thread::Builder::new()
        .name("kiri-shutdown-limit".into())
        .spawn(|| {
            std::thread::sleep(SHUTDOWN_LIMIT);
            tracing::error!(
                seconds = SHUTDOWN_LIMIT.as_secs(),
                "stopping took too long (a stage or the store is stuck): exiting now"
            );
            std::process::exit(1);
        })?;
    if let Some(e) = &fatal {
        tracing::error!(
            error = format!("{e:#}"),
            "a stage failed: stopping the gateway"
        );
    }
    for task in first {
        task.abort();
        let _ = task.await;
    }
    tracing::debug!("inputs stopped");
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    let threads = stop_lanes();
    stores.outbox.close();
    for (lane, thread) in threads {
        let joined = tokio::task::spawn_blocking(move || thread.join()).await;
        match joined {
            Ok(Ok(Err(e))) => {
                let e = anyhow::Error::new(e).context(format!("pipeline lane {lane}"));
                tracing::error!(
                    error = format!("{e:#}"),
                    "the pipeline failed: nothing more is acknowledged"
                );
                fatal.get_or_insert(e);
            }
            Ok(Err(_)) => {
                // The panic's message is already on stderr (the default hook).
                tracing::error!(
                    lane,
                    "a pipeline lane panicked: nothing more is acknowledged"
                );
                fatal.get_or_insert(anyhow::anyhow!("pipeline lane {lane} panicked"));
            }
            _ => {}
        }
    }
    tracing::debug!("pipeline stopped");
    // Every writer stopped before the store's entries are counted for the ledger.
    uplink.abort();
    let _ = uplink.await;
    for task in rest {
        task.abort();
        let _ = task.await;
    }
    match fatal {
        Some(e) => Err(e),
        None => {
            stores.outbox.flush()?;
            let dir = stores.store.dir();
            let known = crate::ledger::Known::from([("outbox".into(), stores.outbox.usage().0)]);
            crate::ledger::write(dir, &stores.store.db, true, &known)
                .with_context(|| format!("cannot write {}", crate::ledger::path(dir).display()))?;
            Ok(())
        }
    }
}

//! `kiri run --watch`: a configured function whose module file changes is loaded again and
//! replaces the running version, as a deployment does: events queued or under way run on
//! one version or the other, each once. A module that does not load leaves the running
//! version in place. A function whose module did not load at start starts once it does. The files are polled once a second (size and modification time), and a
//! change is taken once the file has stood still for a poll, so that a module still being
//! written is not read half-way.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use crate::config::FunctionConfig;
use crate::registry::{Origin, Registry};
use crate::runtime::Runtime;

/// How often the module files are looked at.
const POLL: Duration = Duration::from_secs(1);

/// What a module file looked like.
pub(super) type Seen = Option<(u64, SystemTime)>;

pub(super) fn look(path: &PathBuf) -> Seen {
    let m = std::fs::metadata(path).ok()?;
    Some((m.len(), m.modified().ok()?))
}

/// Called after a function that did not load at start was activated: starts its lane.
pub(super) type OnNew = Box<dyn Fn() + Send + Sync>;

/// Watches the modules of the configuration file's functions until the task is dropped;
/// `functions` follows the configuration as reloads change it.
pub(super) async fn run(
    registry: Registry,
    mut functions: tokio::sync::watch::Receiver<Vec<(FunctionConfig, Seen)>>,
    on_new: OnNew,
) {
    // Per function: its entry, the module file as last taken, and a change waiting to settle.
    let mut watched: Vec<(FunctionConfig, Seen, Option<Seen>)> = Vec::new();
    let mut tick = tokio::time::interval(POLL);
    let mut first = true;
    loop {
        if first || functions.has_changed().unwrap_or(false) {
            let now = functions.borrow_and_update().clone();
            // A function kept with the same module keeps what was seen of it; a new one (or a
            // new module path) as the reload saw its file before loading it.
            watched = now
                .into_iter()
                .map(|(f, loaded)| {
                    let kept = watched
                        .iter()
                        .find(|(w, _, _)| w.name == f.name && w.module == f.module);
                    let (seen, pending) = kept.map_or((loaded, None), |(_, s, p)| (*s, *p));
                    (f, seen, pending)
                })
                .collect();
            tracing::info!(
                modules = watched.len(),
                "watching the functions' module files (kiri run --watch)"
            );
            first = false;
        }
        tick.tick().await;
        for (f, seen, pending) in watched.iter_mut() {
            let now = look(&f.module);
            if now == *seen {
                *pending = None;
                continue;
            }
            // Changed: take it once it has stood still for one poll.
            if *pending != Some(now) {
                *pending = Some(now);
                continue;
            }
            *seen = now;
            *pending = None;
            reload(&registry, f, &on_new).await;
        }
    }
}

async fn reload(registry: &Registry, f: &FunctionConfig, on_new: &OnNew) {
    let new = registry.index_of(&f.name).is_none();
    let preparer = registry.preparer(f);
    let path = f.module.clone();
    let prepared = tokio::task::spawn_blocking(move || {
        let wasm = Runtime::read_module(&path)?;
        preparer.prepare(&wasm)
    })
    .await;
    match prepared {
        Ok(Ok(prepared)) => {
            let version = prepared.version().to_string();
            registry
                .clone()
                .activate(f.clone(), prepared, Origin::Config);
            metrics::counter!("kiri_module_reloads_total", "outcome" => "loaded").increment(1);
            if new {
                // It did not load at start: its lane (session, subscriptions) starts now.
                on_new();
                tracing::info!(function = %f.name, version, "module changed: the function loads now and runs");
            } else {
                tracing::info!(function = %f.name, version, "module changed: the new version runs");
            }
        }
        Ok(Err(e)) => {
            metrics::counter!("kiri_module_reloads_total", "outcome" => "refused").increment(1);
            tracing::warn!(function = %f.name, module = %f.module.display(), error = %e,
                "module changed but does not load; the running version stays");
        }
        Err(e) => tracing::error!(function = %f.name, error = %e, "module reload task failed"),
    }
}

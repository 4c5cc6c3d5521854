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
type Seen = Option<(u64, SystemTime)>;

fn look(path: &PathBuf) -> Seen {
    let m = std::fs::metadata(path).ok()?;
    Some((m.len(), m.modified().ok()?))
}

/// Called after a function that did not load at start was activated: starts its lane.
pub(super) type OnNew = Box<dyn Fn() + Send + Sync>;

/// Watches the modules of `functions` (the configuration file's) until the task is dropped.
pub(super) async fn run(registry: Registry, functions: Vec<FunctionConfig>, on_new: OnNew) {
    let mut seen: Vec<Seen> = functions.iter().map(|f| look(&f.module)).collect();
    let mut pending: Vec<Option<Seen>> = vec![None; functions.len()];
    tracing::info!(
        modules = functions.len(),
        "watching the functions' module files (kiri run --watch)"
    );
    let mut tick = tokio::time::interval(POLL);
    loop {
        tick.tick().await;
        for (i, f) in functions.iter().enumerate() {
            let now = look(&f.module);
            if now == seen[i] {
                pending[i] = None;
                continue;
            }
            // Changed: take it once it has stood still for one poll.
            if pending[i] != Some(now) {
                pending[i] = Some(now);
                continue;
            }
            seen[i] = now;
            pending[i] = None;
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

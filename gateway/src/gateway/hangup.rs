//! Reloading the configuration on SIGHUP (`systemctl reload kiri`): the file and the
//! environment are read again and checked as at start. A configuration that does not load or
//! validate, or whose functions' modules do not load, is refused with the reason (an ERROR
//! line) and the running one stays, whole. Functions are what a reload changes: added ones
//! start, removed ones stop (those of the file; deployed ones stay), and changed ones (module,
//! triggers, timers, limits, their `config`) take their new version as a deployment does:
//! events queued or under way run on one version or the other, each once. Every other key
//! needs a restart for now: a reload that changes one is refused, naming each.

use std::collections::BTreeMap;

use crate::config::{Config, FunctionConfig};
use crate::registry::{Origin, Registry};
use crate::runtime::Runtime;

use super::reload::OnNew;

/// Reloads on each SIGHUP until the task is dropped.
pub(super) async fn run(running: Config, registry: Registry, sync: OnNew) {
    let Ok(mut hangups) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
    else {
        tracing::error!("cannot listen for SIGHUP: the configuration cannot be reloaded");
        return;
    };
    let mut running = running;
    while hangups.recv().await.is_some() {
        tracing::info!("SIGHUP: reloading the configuration");
        match reload(&running, &registry, &sync).await {
            Ok(new) => running = new,
            Err(why) => {
                tracing::error!("configuration reload refused, the running one stays: {why}")
            }
        }
    }
}

/// Reads the configuration again and applies it, or says why not (nothing applied then).
async fn reload(running: &Config, registry: &Registry, sync: &OnNew) -> Result<Config, String> {
    let mut new = Config::load(running.file.as_deref()).map_err(|e| e.to_string())?;
    new.watch = running.watch;
    let (was, now) = (running.settings(), new.settings());
    let changed: Vec<&String> = was
        .keys()
        .chain(now.keys().filter(|k| !was.contains_key(*k)))
        .filter(|k| was.get(*k) != now.get(*k))
        .collect();
    if !changed.is_empty() {
        let keys: Vec<&str> = changed.iter().map(|k| k.as_str()).collect();
        return Err(format!(
            "only functions change on a reload; these keys change only with a restart: {}",
            keys.join(", ")
        ));
    }
    let old: BTreeMap<&str, &FunctionConfig> = running
        .functions
        .iter()
        .map(|f| (f.name.as_str(), f))
        .collect();
    // Each new or changed function's module, prepared before anything changes.
    let mut prepared = Vec::new();
    for f in &new.functions {
        if old.get(f.name.as_str()).is_some_and(|o| same(o, f)) {
            continue;
        }
        let preparer = registry.preparer(f);
        let path = f.module.clone();
        let ready =
            tokio::task::spawn_blocking(move || preparer.prepare(&Runtime::read_module(&path)?))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| format!("function {:?} ({}): {e}", f.name, f.module.display()))?;
        prepared.push((f.clone(), ready));
    }
    let removed: Vec<&str> = old
        .keys()
        .copied()
        .filter(|name| !new.functions.iter().any(|f| f.name == *name))
        .collect();
    let changed_names: Vec<String> = prepared.iter().map(|(f, _)| f.name.clone()).collect();
    let mut registry = registry.clone();
    for (f, ready) in prepared {
        registry.activate(f, ready, Origin::Config);
    }
    for name in &removed {
        if registry.is_configured(name) {
            registry.retire(name);
        }
    }
    sync();
    tracing::info!(
        changed = ?changed_names,
        removed = ?removed,
        "configuration reloaded"
    );
    Ok(new)
}

/// Whether two entries of a function are the same (module path, triggers, limits, config...).
fn same(a: &FunctionConfig, b: &FunctionConfig) -> bool {
    use figment::Provider;
    let data = |f: &FunctionConfig| figment::providers::Serialized::defaults(f).data().ok();
    data(a) == data(b)
}

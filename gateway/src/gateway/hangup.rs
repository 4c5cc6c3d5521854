//! Reloading the configuration on SIGHUP (`systemctl reload kiri`) or `POST /api/v1/reload`
//! (`kiri reload`): the file and the environment are read again and checked as at start. A
//! configuration that does not load or validate, whose functions' modules do not load, or
//! whose cloud TLS files cannot be used, is refused with the reason (an ERROR line, and the
//! API's answer) and the running one stays, whole. What a reload changes:
//! - functions: added ones start, removed ones stop (those of the file; deployed ones stay),
//!   and changed ones (module, triggers, timers, limits, their `config`) take their new
//!   version as a deployment does: events queued or under way run on one version or the
//!   other, each once;
//! - `[cloud]` (but `cloud.logs`), `outbox.ttl`, or the cloud TLS files' contents: the uplink
//!   starts again with them (`uplink::supervise`: what was in flight goes again);
//! - `[outbox]` bounds and policy: the next append follows them (`Outbox::set_limits`);
//! - `broker.users` and `broker.allow_anonymous`: the embedded broker's accounts
//!   (`Guard::set_users`: a user removed or changed is disconnected).
//!
//! Every other key needs a restart: a reload that changes one is refused, naming each.

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::sync::{mpsc, watch};

use crate::config::{Config, FunctionConfig};
use crate::http::reload::{ReloadRequest, Reloaded};
use crate::outbox::Outbox;
use crate::registry::{Origin, Registry};
use crate::runtime::Runtime;
use crate::site_broker::guard::Guard;
use crate::uplink::Target;

use super::cloud::{self, Cloud};
use super::reload::OnNew;

/// What a reload acts on.
pub(super) struct Live {
    pub(super) registry: Registry,
    /// Brings the lanes in line with the registry.
    pub(super) sync: OnNew,
    pub(super) outbox: Arc<Outbox>,
    /// The embedded broker's guard (none with an external broker).
    pub(super) guard: Option<Arc<Guard>>,
    /// Where the uplink takes its settings from.
    pub(super) uplink: watch::Sender<Target>,
    /// The cloud settings' files as last read.
    pub(super) cloud: Cloud,
    pub(super) store_id: u64,
    pub(super) deploy_topics: Vec<String>,
    /// The configuration file's functions, for `kiri run --watch` (`reload.rs`).
    pub(super) functions: watch::Sender<Vec<(FunctionConfig, super::reload::Seen)>>,
}

/// Whether a reload can change the key `key` (a dotted settings key) without a restart.
fn reloadable(key: &str) -> bool {
    (key.starts_with("cloud.") && key != "cloud.logs")
        || key.starts_with("outbox.")
        || key == "broker.users"
        || key == "broker.allow_anonymous"
}

/// Reloads on each SIGHUP and each request until the task is dropped.
pub(super) async fn run(
    running: Config,
    mut live: Live,
    mut requests: mpsc::Receiver<ReloadRequest>,
) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hangups = signal(SignalKind::hangup())
        .inspect_err(|e| {
            tracing::error!(error = %e, "cannot listen for SIGHUP: reload through the API (`kiri reload`) only")
        })
        .ok();
    let mut running = running;
    loop {
        let hangup = async {
            match hangups.as_mut() {
                Some(h) => h.recv().await,
                None => std::future::pending().await,
            }
        };
        let answer = tokio::select! {
            Some(()) = hangup => {
                tracing::info!("SIGHUP: reloading the configuration");
                None
            }
            Some(request) = requests.recv() => {
                tracing::info!("reload asked through the API: reloading the configuration");
                Some(request)
            }
            else => return,
        };
        let outcome = match reload(&running, &mut live).await {
            Ok((new, done)) => {
                running = new;
                tracing::info!(
                    keys = ?done.keys,
                    functions_changed = ?done.functions_changed,
                    functions_removed = ?done.functions_removed,
                    "configuration reloaded"
                );
                Ok(done)
            }
            Err(why) => {
                tracing::error!("configuration reload refused, the running one stays: {why}");
                Err(why)
            }
        };
        if let Some(answer) = answer {
            let _ = answer.send(outcome);
        }
    }
}

/// Reads the configuration again and applies it, or says why not (nothing applied then).
async fn reload(running: &Config, live: &mut Live) -> Result<(Config, Reloaded), String> {
    let mut new = Config::load(running.file.as_deref()).map_err(|e| e.to_string())?;
    new.watch = running.watch;
    let (was, now) = (running.settings(), new.settings());
    let changed: Vec<String> = was
        .keys()
        .chain(now.keys().filter(|k| !was.contains_key(*k)))
        .filter(|k| was.get(*k) != now.get(*k))
        .cloned()
        .collect();
    let fixed: Vec<&str> = changed
        .iter()
        .map(String::as_str)
        .filter(|k| !reloadable(k))
        .collect();
    if !fixed.is_empty() {
        return Err(format!(
            "these keys change only with a restart: {} (nothing was reloaded)",
            fixed.join(", ")
        ));
    }
    // The module files as they are before they are read: `--watch` takes changes from here.
    let seen: Vec<_> = new
        .functions
        .iter()
        .map(|f| (f.clone(), super::reload::look(&f.module)))
        .collect();
    let cloud = Cloud::read(&new).map_err(|e| format!("{e:#}"))?;
    let files_changed = cloud.files_changed(&live.cloud);
    let restart_uplink = files_changed
        || changed
            .iter()
            .any(|k| k.starts_with("cloud.") || k == "outbox.ttl");
    let (functions_changed, functions_removed) = reload_functions(running, &new, live).await?;
    // Everything checked: apply.
    if changed.iter().any(|k| k.starts_with("outbox.")) {
        live.outbox.set_limits(new.outbox.clone());
    }
    if changed.iter().any(|k| k.starts_with("broker.")) {
        if let Some(guard) = &live.guard {
            guard.set_users(&new.broker.users);
        }
    }
    if restart_uplink {
        let target = cloud::target(&new, &cloud, live.store_id, live.deploy_topics.clone());
        live.uplink.send_replace(target);
    }
    live.cloud = cloud;
    live.functions.send_replace(seen);
    let mut keys = changed;
    if files_changed {
        keys.push("cloud TLS files".into());
    }
    let done = Reloaded {
        keys,
        functions_changed,
        functions_removed,
    };
    Ok((new, done))
}

/// Prepares each new or changed function's module, then (all of them loaded) activates them
/// and retires the removed ones; says which, or why not (nothing changed then).
async fn reload_functions(
    running: &Config,
    new: &Config,
    live: &Live,
) -> Result<(Vec<String>, Vec<String>), String> {
    let old: BTreeMap<&str, &FunctionConfig> = running
        .functions
        .iter()
        .map(|f| (f.name.as_str(), f))
        .collect();
    let mut prepared = Vec::new();
    for f in &new.functions {
        if old.get(f.name.as_str()).is_some_and(|o| same(o, f)) {
            continue;
        }
        let preparer = live.registry.preparer(f);
        let path = f.module.clone();
        let ready =
            tokio::task::spawn_blocking(move || preparer.prepare(&Runtime::read_module(&path)?))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| format!("function {:?} ({}): {e}", f.name, f.module.display()))?;
        prepared.push((f.clone(), ready));
    }
    let removed: Vec<String> = old
        .keys()
        .filter(|name| !new.functions.iter().any(|f| f.name == **name))
        .map(|name| name.to_string())
        .collect();
    let changed: Vec<String> = prepared.iter().map(|(f, _)| f.name.clone()).collect();
    if prepared.is_empty() && removed.is_empty() {
        return Ok((changed, removed));
    }
    let mut registry = live.registry.clone();
    for (f, ready) in prepared {
        registry.activate(f, ready, Origin::Config);
    }
    for name in &removed {
        if registry.is_configured(name) {
            registry.retire(name);
        }
    }
    (live.sync)();
    Ok((changed, removed))
}

/// Whether two entries of a function are the same (module path, triggers, limits, config...).
fn same(a: &FunctionConfig, b: &FunctionConfig) -> bool {
    use figment::Provider;
    let data = |f: &FunctionConfig| figment::providers::Serialized::defaults(f).data().ok();
    data(a) == data(b)
}

#[cfg(test)]
mod tests {
    use super::reloadable;

    #[test]
    fn what_a_reload_may_change_is_the_cloud_the_outbox_and_the_accounts() {
        for key in [
            "cloud.url",
            "cloud.password",
            "cloud.inflight",
            "outbox.when_full",
            "outbox.ttl",
            "broker.users",
            "broker.allow_anonymous",
        ] {
            assert!(reloadable(key), "{key}");
        }
        for key in [
            "cloud.logs",
            "gateway.data_dir",
            "broker.listen",
            "broker.mode",
            "dashboard.listen",
            "dashboard.token",
            "deploy.public_key",
            "log.format",
        ] {
            assert!(!reloadable(key), "{key}");
        }
    }
}

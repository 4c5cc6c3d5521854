//! Startup's functions: those of the configuration file, then (with deployment on) the
//! deployed ones, all through [`Registry::activate`].

use tokio::sync::{mpsc, watch};

use super::Stores;
use crate::config::Config;
use crate::deploy::{self, Deployer};
use crate::pipeline::Dispatch;
use crate::registry::{Origin, Registry};
use crate::runtime::Runtime;
use crate::telemetry::Telemetry;
use crate::timers::Timers;

/// Loads the configuration's functions, then (with deployment on) the deployed ones. Their
/// timers queue ticks on `work` once `timers_go` turns true (when the pipeline runs).
pub(super) fn load_functions(
    config: &Config,
    stores: &Stores,
    telemetry: &Telemetry,
    (work, timers_go): (&Dispatch, watch::Receiver<bool>),
    cloud_replies: mpsc::Sender<(String, Vec<u8>)>,
) -> anyhow::Result<(Registry, Option<Deployer>)> {
    let mut runtime = Runtime::new(config.broker.max_message_bytes, stores.store.db.clone());
    runtime.set_telemetry(telemetry.clone());
    let timers = Timers::new(tokio::runtime::Handle::current(), work.clone(), timers_go);
    let mut registry = Registry::new(runtime, Box::new(timers));
    for f in &config.functions {
        match registry.load(f) {
            Ok(_) => tracing::info!(function = %f.name, triggers = ?f.filters(), "function loaded"),
            Err(e) => {
                // The others run: one bad module must not take them down. `kiri config
                // check` fails on it, so a CI check catches it before it gets here.
                tracing::error!(function = %f.name, module = %f.module.display(), error = %e,
                    "a function's module does not load; it stays inactive while the others run (fix it and restart, or check with `kiri config check`)");
                metrics::counter!("kiri_functions_not_loaded_total").increment(1);
                registry.not_loaded(f, &e);
            }
        }
    }
    if config.deploy.trusted_keys.is_empty() {
        return Ok((registry, None));
    }
    let d = &config.deploy;
    let policy = deploy::Policy {
        trusted: d
            .trusted_keys
            .iter()
            .map(|k| crate::crypto::keys::parse_public(k).expect("validated with the config"))
            .collect(),
        gateway: config.gateway.id.clone(),
        groups: d.groups.clone(),
        max_bytes: d.max_package_bytes,
    };
    let room = deploy::Room {
        max_functions: d.max_functions,
        dir: config.gateway.data_dir.clone(),
        min_free_bytes: config.outbox.min_free_bytes,
    };
    let deployments = deploy::Deployments::open(&stores.store.db, d.keep_versions, room)?;
    let active = deployments
        .active()
        .map_err(|e| anyhow::anyhow!("deployments: {e}"))?;
    for (name, version, manifest, module) in active {
        if config.functions.iter().any(|f| f.name == name) {
            anyhow::bail!(
                "function {name:?} is both in the configuration file and deployed over MQTT \
                 (version {version}): rename one, or `kiri undeploy` the deployed one first"
            );
        }
        let Some(spec) = deploy::deployed_spec(&manifest, version) else {
            continue;
        };
        let prepared = match registry.preparer(&spec).prepare(&module) {
            Ok(p) => p,
            Err(e) => {
                // Keep starting: the configuration's functions, and deployment itself
                // (to fix this one), must not depend on it.
                tracing::error!(function = %name, version, error = %e,
                    "a deployed function no longer loads; it stays inactive until a new version is deployed");
                metrics::counter!("kiri_deployments_total", "outcome" => "rejected", "reason" => "load_failed").increment(1);
                let refused = deploy::HistoryEntry::refused(
                    &name,
                    "load",
                    "start",
                    "load_failed",
                    e.to_string(),
                );
                deployments.record(&deploy::HistoryEntry {
                    version: Some(version),
                    ..refused
                });
                continue;
            }
        };
        let triggers = spec.filters();
        registry.activate(spec, prepared, Origin::Deployed { version });
        tracing::info!(function = %name, version, ?triggers, "deployed function loaded");
    }
    let deployer = Deployer {
        policy,
        store: deployments,
        cloud_replies,
    };
    tracing::info!(topics = ?deployer.topics(), keys = deployer.policy.trusted.len(), "deployment over MQTT is on");
    Ok((registry, Some(deployer)))
}

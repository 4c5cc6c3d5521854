//! The directory: what the rest of the gateway sees of the registry's functions, shared. The
//! registry writes it (at start, and when a deployment activates or removes a function); the
//! HTTP API, the retry task and dead-letter replays read it. Indices never change: a replaced
//! function keeps its index, a removed one stays, inactive.

use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};

use super::Origin;
use crate::config::FunctionConfig;

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
    /// The request headers an HTTP call passes to it.
    #[serde(default)]
    pub http_headers: Vec<String>,
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
    /// Its key-value usage, to correct when state is deleted from outside.
    #[serde(skip)]
    pub kv_usage: Option<std::sync::Arc<crate::runtime::KvUsage>>,
}

impl FunctionInfo {
    /// The entry of `spec`, running module `module_version`, from `origin`.
    pub(super) fn new(spec: &FunctionConfig, module_version: &str, origin: Origin) -> Self {
        let (origin, deployed_version) = match origin {
            Origin::Config => ("config", None),
            Origin::Deployed { version } => ("deployed", Some(version)),
        };
        FunctionInfo {
            name: spec.name.clone(),
            version: module_version.to_string(),
            triggers: spec.filters(),
            every: spec.every.clone(),
            cron: spec.cron.clone(),
            http: spec.http,
            http_headers: spec
                .http_headers
                .iter()
                .map(|h| h.to_ascii_lowercase())
                .collect(),
            fuel: spec.limits.fuel,
            memory_bytes: spec.limits.memory_bytes,
            timeout_ms: spec.limits.timeout_ms,
            origin: origin.into(),
            deployed_version,
            active: true,
            kv_usage: None,
        }
    }
}

/// A function of the configuration file whose module does not load: not running, while the
/// others do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unloaded {
    /// Its name.
    pub name: String,
    /// Its module's path.
    pub module: String,
    /// Why it does not load.
    pub error: String,
}

/// Shared, cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Directory(Arc<RwLock<Vec<FunctionInfo>>>, Arc<RwLock<Vec<Unloaded>>>);

impl Directory {
    /// Sets the entry of function `idx` (appending when it is the next index).
    pub(super) fn set(&self, idx: usize, info: FunctionInfo) {
        let mut all = self.0.write().expect("directory lock");
        if idx == all.len() {
            all.push(info);
        } else {
            all[idx] = info;
        }
    }

    /// Marks function `idx` as no longer running.
    pub(super) fn deactivate(&self, idx: usize) {
        if let Some(f) = self.0.write().expect("directory lock").get_mut(idx) {
            f.active = false;
        }
    }

    /// The running function called `name`: its index and entry.
    pub fn find(&self, name: &str) -> Option<(usize, FunctionInfo)> {
        let all = self.0.read().expect("directory lock");
        all.iter()
            .position(|f| f.active && f.name == name)
            .map(|i| (i, all[i].clone()))
    }

    /// Records a configured function whose module does not load.
    pub(super) fn unloaded(&self, entry: Unloaded) {
        self.1.write().expect("directory lock").push(entry);
    }

    /// `name` loads now: no longer listed as not loading.
    pub(super) fn loaded(&self, name: &str) {
        self.1
            .write()
            .expect("directory lock")
            .retain(|u| u.name != name);
    }

    /// The configured functions whose modules do not load.
    pub fn not_loaded(&self) -> Vec<Unloaded> {
        self.1.read().expect("directory lock").clone()
    }

    /// Every entry, by index (inactive ones included).
    pub fn all(&self) -> Vec<FunctionInfo> {
        self.0.read().expect("directory lock").clone()
    }
}

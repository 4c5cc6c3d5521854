//! The function registry: which functions run, under which index, and all that follows from
//! their specs: the routing table ([`Router`]), the subscriptions it needs, their timers
//! (through a [`Scheduler`]), their retry policy, and what the rest of the gateway sees of
//! them (the shared [`Directory`]). It owns the [`Runtime`] that holds their modules and
//! instances. Startup and deployments activate a function the same way, with
//! [`Registry::activate`]; an undeployment retires it ([`Registry::retire`]).
//!
//! Indices never change: a new version of a function takes its predecessor's index, and a
//! retired function keeps its index, inactive, so that work queued for an index meets either
//! the function it was queued for, a newer version of it, or nothing.

mod directory;
mod routes;

use crate::config::FunctionConfig;
use crate::runtime::{LoadError, Prepared, Runtime};

pub use directory::{Directory, FunctionInfo};
pub use routes::Router;

/// Where a function came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The configuration file.
    Config,
    /// A signed deployment, at this package version.
    Deployed {
        /// The package's version.
        version: u64,
    },
}

/// Runs the functions' timers (`every`, `cron`): implemented by the timer trigger, which
/// queues `$timer` events for the pipeline.
pub trait Scheduler: Send {
    /// Starts the timers `spec` asks for as function `idx`'s, stopping those it had.
    fn set(&mut self, idx: usize, spec: &FunctionConfig);
    /// Stops function `idx`'s timers.
    fn clear(&mut self, idx: usize);
}

/// The functions, by index.
pub struct Registry {
    runtime: Runtime,
    /// Each function's spec; `None` once retired.
    specs: Vec<Option<FunctionConfig>>,
    /// Each function's module version (the first 16 hex digits of its SHA-256).
    versions: Vec<String>,
    /// Where each function came from.
    origins: Vec<Origin>,
    router: Router,
    directory: Directory,
    schedules: Box<dyn Scheduler>,
}

/// What the pipeline reads of each function while the runtime runs their jobs.
#[derive(Clone, Copy)]
pub struct Catalog<'a> {
    specs: &'a [Option<FunctionConfig>],
    versions: &'a [String],
}

impl Catalog<'_> {
    /// The name of function `idx` (an active one).
    pub fn name(&self, idx: usize) -> &str {
        self.spec(idx).map_or("", |f| f.name.as_str())
    }

    /// The module version of function `idx`.
    pub fn version(&self, idx: usize) -> &str {
        &self.versions[idx]
    }

    /// Function `idx`'s automatic retries, and the first retry's delay in ms.
    pub fn retry_policy(&self, idx: usize) -> (u32, u64) {
        self.spec(idx)
            .map_or((0, 0), |f| (f.retries, f.retry_backoff_ms))
    }

    fn spec(&self, idx: usize) -> Option<&FunctionConfig> {
        self.specs.get(idx).and_then(Option::as_ref)
    }
}

impl Registry {
    /// An empty registry whose functions live in `runtime` and run their timers on
    /// `schedules`.
    pub fn new(runtime: Runtime, schedules: Box<dyn Scheduler>) -> Registry {
        Registry {
            runtime,
            specs: Vec::new(),
            versions: Vec::new(),
            origins: Vec::new(),
            router: Router::default(),
            directory: Directory::default(),
            schedules,
        }
    }

    /// Reads, validates and activates a function of the configuration file.
    pub fn load(&mut self, spec: &FunctionConfig) -> Result<usize, LoadError> {
        let wasm = Runtime::read_module(&spec.module)?;
        let prepared = self.runtime.prepare(spec, &wasm)?;
        Ok(self.activate(spec.clone(), prepared, Origin::Config))
    }

    /// Makes `prepared` the running version of the function `spec` names: in place of the
    /// version it replaces (same index), or as a new index. Routes, subscriptions, timers,
    /// retry policy and the directory follow. Returns its index.
    pub fn activate(&mut self, spec: FunctionConfig, prepared: Prepared, origin: Origin) -> usize {
        let module_version = prepared.version().to_string();
        let idx = self.runtime.install(self.index_of(&spec.name), prepared);
        if idx == self.specs.len() {
            self.specs.push(None);
            self.versions.push(String::new());
            self.origins.push(origin);
        }
        self.directory
            .set(idx, FunctionInfo::new(&spec, &module_version, origin));
        self.schedules.set(idx, &spec);
        self.specs[idx] = Some(spec);
        self.versions[idx] = module_version;
        self.origins[idx] = origin;
        self.reroute();
        idx
    }

    /// Stops the function called `name` (undeployed): its instances go, nothing routes to it
    /// and its timers stop; its index stays, inactive. `false` if there is no such function.
    pub fn retire(&mut self, name: &str) -> bool {
        let Some(idx) = self.index_of(name) else {
            return false;
        };
        self.runtime.retire(idx);
        self.specs[idx] = None;
        self.directory.deactivate(idx);
        self.schedules.clear(idx);
        self.reroute();
        true
    }

    fn reroute(&mut self) {
        let empty: &[String] = &[];
        self.router = Router::new(
            self.specs
                .iter()
                .map(|s| s.as_ref().map_or(empty, |f| f.triggers.as_slice())),
        );
    }

    /// The index a function of this name has or had (retired functions included).
    pub fn index_of(&self, name: &str) -> Option<usize> {
        (0..self.runtime.len()).find(|&i| self.runtime.name(i) == name)
    }

    /// The active functions `topic` triggers, each once, in index order.
    pub fn route(&self, topic: &str) -> Vec<usize> {
        self.router.route(topic)
    }

    /// The filters the ingest session must subscribe to for the functions' triggers.
    pub fn subscriptions(&self) -> Vec<String> {
        self.router.subscriptions()
    }

    /// The spec of function `idx`, while it is active.
    pub fn spec(&self, idx: usize) -> Option<&FunctionConfig> {
        self.specs.get(idx).and_then(Option::as_ref)
    }

    /// Whether the active function `idx` runs on a timer.
    pub fn has_timer(&self, idx: usize) -> bool {
        self.spec(idx)
            .is_some_and(|f| f.every.is_some() || f.cron.is_some())
    }

    /// Whether the active function `idx` takes HTTP calls.
    pub fn takes_http(&self, idx: usize) -> bool {
        self.spec(idx).is_some_and(|f| f.http)
    }

    /// Whether a function of this name came from the configuration file (a deployment may not
    /// take its name).
    pub fn is_configured(&self, name: &str) -> bool {
        self.index_of(name)
            .is_some_and(|idx| self.origins[idx] == Origin::Config)
    }

    /// What the rest of the gateway sees of the functions, shared.
    pub fn directory(&self) -> Directory {
        self.directory.clone()
    }

    /// The functions' metering, shared with the HTTP API and the tick.
    pub fn meters(&self) -> crate::telemetry::meter::Meters {
        self.runtime.meters()
    }

    /// The runtime, to prepare new versions.
    pub fn runtime_mut(&mut self) -> &mut Runtime {
        &mut self.runtime
    }

    /// The runtime to run jobs on, beside what the pipeline reads of each function meanwhile.
    pub fn for_jobs(&mut self) -> (&mut Runtime, Catalog<'_>) {
        let catalog = Catalog {
            specs: &self.specs,
            versions: &self.versions,
        };
        (&mut self.runtime, catalog)
    }

    /// Functions loaded so far (retired ones included).
    pub fn len(&self) -> usize {
        self.specs.len()
    }

    /// Whether no function was ever loaded.
    pub fn is_empty(&self) -> bool {
        self.specs.is_empty()
    }
}

#[cfg(test)]
pub(crate) mod testing;
#[cfg(test)]
mod tests;

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

use std::sync::{Arc, Mutex};

use crate::config::FunctionConfig;
use crate::runtime::{
    FunctionHandle, Invocation, InvokeError, Job, LoadError, Prepared, Preparer, Runtime,
};

pub use directory::{Directory, FunctionInfo, Unloaded};
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

/// The functions, by index: a handle, cloned by every pipeline lane and shared. Each call
/// takes an internal lock briefly; none holds it while a function runs or a module compiles.
#[derive(Clone)]
pub struct Registry {
    inner: Arc<Mutex<Inner>>,
    directory: Directory,
    meters: crate::telemetry::meter::Meters,
}

struct Inner {
    runtime: Runtime,
    /// Each function's spec; `None` once retired.
    specs: Vec<Option<Arc<FunctionConfig>>>,
    /// Each function's module version (the first 16 hex digits of its SHA-256).
    versions: Vec<Arc<str>>,
    /// Where each function came from.
    origins: Vec<Origin>,
    router: Router,
    schedules: Box<dyn Scheduler>,
}

/// What the pipeline reads of each function while the runtime runs their jobs: a snapshot
/// taken with [`Registry::for_jobs`].
#[derive(Clone)]
pub struct Catalog {
    specs: Vec<Option<Arc<FunctionConfig>>>,
    versions: Vec<Arc<str>>,
}

impl Catalog {
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
        self.specs.get(idx).and_then(Option::as_deref)
    }
}

/// The functions' handles for one group of jobs, taken with [`Registry::for_jobs`].
pub struct Jobs {
    handles: Vec<FunctionHandle>,
}

impl Jobs {
    /// Runs `jobs` like [`Runtime::run_batch`], on the versions taken.
    pub fn run_batch<E: Send>(
        &self,
        jobs: &[Job<'_>],
        then: impl Fn(usize, Result<Invocation, InvokeError>) -> Result<(), E> + Sync,
    ) -> Result<(), Vec<E>> {
        crate::runtime::run_on(|f| self.handles[f].clone(), jobs, then)
    }
}

impl Registry {
    /// An empty registry whose functions live in `runtime` and run their timers on
    /// `schedules`.
    pub fn new(runtime: Runtime, schedules: Box<dyn Scheduler>) -> Registry {
        let meters = runtime.meters();
        Registry {
            inner: Arc::new(Mutex::new(Inner {
                runtime,
                specs: Vec::new(),
                versions: Vec::new(),
                origins: Vec::new(),
                router: Router::default(),
                schedules,
            })),
            directory: Directory::default(),
            meters,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reads, validates and activates a function of the configuration file.
    pub fn load(&mut self, spec: &FunctionConfig) -> Result<usize, LoadError> {
        let wasm = Runtime::read_module(&spec.module)?;
        let prepared = self.preparer(spec).prepare(&wasm)?;
        Ok(self.activate(spec.clone(), prepared, Origin::Config))
    }

    /// What preparing a module for `spec` needs (then compiled without the registry's lock).
    pub fn preparer(&self, spec: &FunctionConfig) -> Preparer {
        self.lock().runtime.preparer(spec)
    }

    /// Makes `prepared` the running version of the function `spec` names: in place of the
    /// version it replaces (same index), or as a new index. Routes, subscriptions, timers,
    /// retry policy and the directory follow. Returns its index.
    pub fn activate(&mut self, spec: FunctionConfig, prepared: Prepared, origin: Origin) -> usize {
        let module_version: Arc<str> = prepared.version().into();
        let mut inner = self.lock();
        let slot = inner.index_of(&spec.name);
        let idx = inner.runtime.install(slot, prepared);
        if idx == inner.specs.len() {
            inner.specs.push(None);
            inner.versions.push("".into());
            inner.origins.push(origin);
        }
        let info = FunctionInfo {
            kv_usage: Some(inner.runtime.kv_usage(idx)),
            ..FunctionInfo::new(&spec, &module_version, origin)
        };
        self.directory.set(idx, info);
        self.directory.loaded(&spec.name);
        inner.schedules.set(idx, &spec);
        inner.specs[idx] = Some(Arc::new(spec));
        inner.versions[idx] = module_version;
        inner.origins[idx] = origin;
        inner.reroute();
        idx
    }

    /// Stops the function called `name` (undeployed): its instances go, nothing routes to it
    /// and its timers stop; its index stays, inactive. `false` if there is no such function.
    pub fn retire(&mut self, name: &str) -> bool {
        let mut inner = self.lock();
        let Some(idx) = inner.index_of(name) else {
            return false;
        };
        inner.runtime.retire(idx);
        inner.specs[idx] = None;
        self.directory.deactivate(idx);
        inner.schedules.clear(idx);
        inner.reroute();
        true
    }

    /// The index a function of this name has or had (retired functions included).
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.lock().index_of(name)
    }

    /// The active functions `topic` triggers, each once, in index order.
    pub fn route(&self, topic: &str) -> Vec<usize> {
        self.lock().router.route(topic)
    }

    /// The filters the ingest session must subscribe to for the functions' triggers.
    pub fn subscriptions(&self) -> Vec<String> {
        self.lock().router.subscriptions()
    }

    /// The spec of function `idx`, while it is active.
    pub fn spec(&self, idx: usize) -> Option<Arc<FunctionConfig>> {
        self.lock().specs.get(idx).cloned().flatten()
    }

    /// The indices of the active functions.
    pub fn active(&self) -> Vec<usize> {
        let inner = self.lock();
        (0..inner.specs.len())
            .filter(|&i| inner.specs[i].is_some())
            .collect()
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
        let inner = self.lock();
        let running = inner
            .index_of(name)
            .is_some_and(|idx| inner.origins[idx] == Origin::Config);
        running || self.directory.not_loaded().iter().any(|u| u.name == name)
    }

    /// Records a configured function whose module does not load (it does not run; the
    /// others do).
    pub fn not_loaded(&self, spec: &FunctionConfig, error: &LoadError) {
        self.directory.unloaded(Unloaded {
            name: spec.name.clone(),
            module: spec.module.display().to_string(),
            error: error.to_string(),
        });
    }

    /// What the rest of the gateway sees of the functions, shared.
    pub fn directory(&self) -> Directory {
        self.directory.clone()
    }

    /// The functions' metering, shared with the HTTP API and the tick.
    pub fn meters(&self) -> crate::telemetry::meter::Meters {
        self.meters.clone()
    }

    /// The functions as they are now, to run a group of jobs on (a version installed
    /// meanwhile serves the next group), and what the pipeline reads of them meanwhile.
    pub fn for_jobs(&self) -> (Jobs, Catalog) {
        let inner = self.lock();
        let handles = (0..inner.runtime.len())
            .map(|i| inner.runtime.handle(i))
            .collect();
        let catalog = Catalog {
            specs: inner.specs.clone(),
            versions: inner.versions.clone(),
        };
        (Jobs { handles }, catalog)
    }

    /// Functions loaded so far (retired ones included).
    pub fn len(&self) -> usize {
        self.lock().specs.len()
    }

    /// Whether no function was ever loaded.
    pub fn is_empty(&self) -> bool {
        self.lock().specs.is_empty()
    }
}

impl Inner {
    fn index_of(&self, name: &str) -> Option<usize> {
        (0..self.runtime.len()).find(|&i| self.runtime.name(i) == name)
    }

    fn reroute(&mut self) {
        let filters: Vec<Vec<String>> = self
            .specs
            .iter()
            .map(|s| s.as_ref().map_or_else(Vec::new, |f| f.filters()))
            .collect();
        self.router = Router::new(filters.iter().map(Vec::as_slice));
    }
}

#[cfg(test)]
pub(crate) mod testing;
#[cfg(test)]
mod tests;

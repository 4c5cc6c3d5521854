//! The function runtime on wasmi: one compiled `Module` per function; instances created from
//! it on demand (up to `concurrency`), each reused while healthy and thrown away after a trap,
//! running out of fuel or a timeout; fuel, a memory cap and a wall-clock deadline on every
//! invocation; and the ABI v1 host functions. Synchronous: the pipeline's thread drives it.
//!
//! - `mod.rs`: the [`Runtime`] (load, prepare, install, retire; [`Runtime::run_batch`]).
//! - `interface.rs`: what a module must import and export; load and invocation errors.
//! - `instance.rs`: an instance of a function, and one invocation on it within its budget.
//! - `host.rs`: the host functions (`emit`, `publish`, `kv_*`, `log`, ...), bounds-checked.

mod host;
mod instance;
mod interface;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use sha2::Digest;
use wasmi::{Config as EngineConfig, Engine, Linker, Module};

pub use host::{Destination, KvCharge, Output, MAX_KEY_BYTES, MAX_TOPIC_BYTES};
use host::{HostState, KvUsage, LogBudget};
use instance::{instantiate, invoke_slot, Ctx, Function, Handles, Instance, Meta};
pub use interface::{InvokeError, LoadError};

use crate::config::{FunctionConfig, FunctionLimits};
use crate::telemetry::{meter, Telemetry};

/// Largest module file accepted.
pub const MAX_MODULE_BYTES: u64 = 32 << 20;

/// A key-value write of a successful invocation: `None` deletes the key.
pub use crate::outbox::StateWrite as KvWrite;

/// What a successful invocation produced; to be committed together, atomically.
#[derive(Debug)]
pub struct Invocation {
    /// Results and local messages, in call order.
    pub outputs: Vec<Output>,
    /// Writes to the function's key-value namespace, in key order.
    pub kv_writes: Vec<KvWrite>,
    /// The function's key-value namespace.
    pub kv: sled::Tree,
    /// What the writes change in the function's key-value usage: settle it once committed.
    pub kv_charge: KvCharge,
    /// The body it set with `respond`, if any.
    pub response: Option<Vec<u8>>,
}

/// One event for [`Runtime::run_batch`].
#[derive(Debug, Clone, Copy)]
pub struct Job<'a> {
    /// The function's index.
    pub function: usize,
    /// The event's topic.
    pub topic: &'a str,
    /// The event's payload.
    pub payload: &'a [u8],
    /// When the event arrived.
    pub received_ms: u64,
    /// Run it on a fresh instance (retries).
    pub fresh: bool,
    /// The verified HTTP caller, if the event is a call made with a JWT.
    pub caller: Option<&'a Arc<Caller>>,
}

/// A verified HTTP caller (from a JWT): the function can read its subject, and its topics
/// and key-value keys are limited to the caller's prefixes for that invocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The token's `sub`.
    pub subject: String,
    /// Topic and key prefixes the token grants (`prefix:` scopes); none means none.
    pub prefixes: Vec<String>,
}

impl Caller {
    /// Whether `name` (a topic or a key) starts with a granted prefix.
    pub fn grants(&self, name: &[u8]) -> bool {
        self.prefixes.iter().any(|p| name.starts_with(p.as_bytes()))
    }
}

/// Where a function may send outputs: MQTT topic filters.
#[derive(Debug, Clone)]
pub struct Permissions {
    /// Topics it may `publish` to on the local broker.
    pub publish: Vec<String>,
    /// Topics it may `emit` to for the cloud.
    pub emit: Vec<String>,
}

impl Default for Permissions {
    /// No local publishing; any cloud topic.
    fn default() -> Self {
        Permissions {
            publish: Vec::new(),
            emit: vec!["#".into()],
        }
    }
}

/// An engine (and its linker) per call-depth limit: wasmi sets that limit per engine.
struct EngineSet {
    engine: Engine,
    linker: Linker<HostState>,
}

/// All loaded functions; functions with the same call-depth limit share an engine.
pub struct Runtime {
    engines: HashMap<usize, EngineSet>,
    functions: Vec<Function>,
    max_payload_bytes: usize,
    db: sled::Db,
    meters: meter::Meters,
    telemetry: Telemetry,
    /// Failures in a row before a function's cold starts back off.
    free_failures: u32,
}

impl Runtime {
    /// A runtime whose functions may emit payloads up to `max_payload_bytes` and keep state
    /// in `db` (one tree per function, `kv/<name>`).
    pub fn new(max_payload_bytes: usize, db: sled::Db) -> Runtime {
        Runtime {
            engines: HashMap::new(),
            functions: Vec::new(),
            max_payload_bytes,
            db,
            meters: meter::Meters::default(),
            telemetry: Telemetry::default(),
            free_failures: instance::FREE_FAILURES,
        }
    }

    fn engine(&mut self, max_call_depth: usize) -> &EngineSet {
        self.engines.entry(max_call_depth).or_insert_with(|| {
            let mut config = EngineConfig::default();
            config.consume_fuel(true);
            config.set_max_recursion_depth(max_call_depth);
            let engine = Engine::new(&config);
            let mut linker = Linker::new(&engine);
            host::add_to_linker(&mut linker).expect("host functions have distinct names");
            EngineSet { engine, linker }
        })
    }

    /// Reads a module file, refusing one over the size limit before reading it.
    pub fn read_module(path: &std::path::Path) -> Result<Vec<u8>, LoadError> {
        let shown = path.display().to_string();
        let io = |source| LoadError::Io {
            path: shown.clone(),
            source,
        };
        let size = std::fs::metadata(path).map_err(io)?.len();
        if size > MAX_MODULE_BYTES {
            return Err(LoadError::TooLarge(size));
        }
        std::fs::read(path).map_err(io)
    }

    /// Validates and instantiates `wasm` as the function `cfg` describes, without installing
    /// it: nothing running changes, whatever the outcome.
    pub fn prepare(&mut self, cfg: &FunctionConfig, wasm: &[u8]) -> Result<Prepared, LoadError> {
        if wasm.len() as u64 > MAX_MODULE_BYTES {
            return Err(LoadError::TooLarge(wasm.len() as u64));
        }
        let config = cfg
            .config
            .iter()
            .map(|(k, v)| (k.clone(), v.to_string()))
            .collect();
        let permissions = Permissions {
            publish: cfg.publish.clone(),
            emit: cfg.emit.clone(),
        };
        let limits = FunctionLimits {
            concurrency: cfg.concurrency,
            ..cfg.limits.clone()
        };
        self.prepare_bytes(&cfg.name, wasm, limits, config, permissions)
    }

    /// Installs a prepared function: at `slot`, replacing what ran there (invocations never
    /// overlap an install: the pipeline installs between groups), or as a new function.
    /// Returns its index.
    pub fn install(&mut self, slot: Option<usize>, prepared: Prepared) -> usize {
        let f = prepared.0;
        match slot {
            Some(i) => {
                self.meters.lock().expect("meters lock")[i].name = f.meta.name.to_string();
                self.functions[i] = f;
                i
            }
            None => {
                self.meters
                    .lock()
                    .expect("meters lock")
                    .push(meter::FunctionStats {
                        name: f.meta.name.to_string(),
                        ..Default::default()
                    });
                self.functions.push(f);
                self.functions.len() - 1
            }
        }
    }

    /// Drops the instances of function `idx` (undeployed: it is no longer routed to).
    pub fn retire(&mut self, idx: usize) {
        for slot in &mut self.functions[idx].pool {
            *slot = None;
        }
    }

    /// Validates, instantiates and installs a function from bytes, outside any registry (for
    /// tools and benchmarks that run a module on its own); returns its index.
    pub fn load_bytes(
        &mut self,
        name: &str,
        wasm: &[u8],
        limits: FunctionLimits,
        config: BTreeMap<String, String>,
        permissions: Permissions,
    ) -> Result<usize, LoadError> {
        let prepared = self.prepare_bytes(name, wasm, limits, config, permissions)?;
        Ok(self.install(None, prepared))
    }

    fn prepare_bytes(
        &mut self,
        name: &str,
        wasm: &[u8],
        limits: FunctionLimits,
        config: BTreeMap<String, String>,
        permissions: Permissions,
    ) -> Result<Prepared, LoadError> {
        let engine = &self.engine(limits.max_call_depth).engine;
        let module = Module::new(engine, wasm).map_err(LoadError::Invalid)?;
        interface::check_interface(&module)?;
        let digest = sha2::Sha256::digest(wasm);
        let version: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
        let kv = self.db.open_tree(format!("kv/{name}"))?;
        // A new version shares the running one's usage; a first load measures the namespace.
        let running = self.functions.iter().find(|f| &*f.meta.name == name);
        let kv_usage = match running {
            Some(f) => f.meta.kv_usage.clone(),
            None => Arc::new(KvUsage::measure(&kv)?),
        };
        metrics::gauge!("kiri_kv_bytes", "function" => name.to_string())
            .set(kv_usage.bytes() as f64);
        metrics::gauge!("kiri_kv_keys", "function" => name.to_string()).set(kv_usage.keys() as f64);
        let log_budget = Arc::new(LogBudget::new(limits.log_bytes_per_sec));
        let meta = Meta {
            version: version.into(),
            name: name.into(),
            module,
            limits,
            config: Arc::new(config),
            permissions: Arc::new(permissions),
            kv,
            kv_usage,
            log_budget,
            telemetry: self.telemetry.clone(),
            metrics: Handles::new(name),
            starts: instance::Starts::new(self.free_failures),
        };
        let set = &self.engines[&meta.limits.max_call_depth];
        // One instance now: it validates the module's start and ABI version; the rest of
        // the pool is made on demand.
        let first = instantiate(set, &meta, self.max_payload_bytes, &mut 0)?;
        let mut pool: Vec<Option<Instance>> =
            (0..meta.limits.concurrency.max(1)).map(|_| None).collect();
        pool[0] = Some(first);
        Ok(Prepared(Function { meta, pool }))
    }
}

/// A function validated and instantiated, ready for [`Runtime::install`].
pub struct Prepared(Function);

impl Prepared {
    /// Its version (the first 16 hex digits of the module's SHA-256).
    pub fn version(&self) -> &str {
        &self.0.meta.version
    }
}

impl Runtime {
    /// Number of loaded functions.
    pub fn len(&self) -> usize {
        self.functions.len()
    }

    /// Whether no function is loaded.
    pub fn is_empty(&self) -> bool {
        self.functions.is_empty()
    }

    /// The version of function `idx`: the first 16 hex digits of its module's SHA-256.
    pub fn version(&self, idx: usize) -> &str {
        &self.functions[idx].meta.version
    }

    /// The name of function `idx`.
    pub fn name(&self, idx: usize) -> &str {
        &self.functions[idx].meta.name
    }

    /// Runs function `idx` on one event (on its first instance). On success returns its
    /// outputs and state writes, for the caller to commit together; on any failure returns
    /// none of them. An instance that trapped is discarded; the next call gets a fresh one
    /// from the cached module.
    pub fn invoke(
        &mut self,
        idx: usize,
        topic: &str,
        payload: &[u8],
        received_ms: u64,
    ) -> Result<Invocation, InvokeError> {
        let f = &mut self.functions[idx];
        let set = &self.engines[&f.meta.limits.max_call_depth];
        let job = Job {
            function: idx,
            topic,
            payload,
            received_ms,
            fresh: false,
            caller: None,
        };
        let ctx = Ctx {
            set,
            meta: &f.meta,
            max_payload_bytes: self.max_payload_bytes,
            meters: &self.meters,
        };
        invoke_slot(&ctx, &mut f.pool[0], &job)
    }

    /// Runs `jobs`, in parallel across functions and across the instances of a function with
    /// `concurrency` > 1; with `concurrency` = 1 a function's jobs run one after the other in
    /// the given order. `then(job_index, result)` is called on the worker right after each
    /// job, before the next job of that instance, so it can commit state the next one reads.
    /// An error from `then` stops every worker before its next job; all errors are returned.
    pub fn run_batch<E: Send>(
        &mut self,
        jobs: &[Job<'_>],
        then: impl Fn(usize, Result<Invocation, InvokeError>) -> Result<(), E> + Sync,
    ) -> Result<(), Vec<E>> {
        let stop = std::sync::atomic::AtomicBool::new(false);
        let stop = &stop;
        // One task per (function, instance slot), holding its jobs in order.
        let mut tasks: Vec<(usize, usize, Vec<usize>)> = Vec::new();
        let mut next_slot = vec![0usize; self.functions.len()];
        for (j, job) in jobs.iter().enumerate() {
            let slots = self.functions[job.function].pool.len();
            let slot = next_slot[job.function] % slots;
            next_slot[job.function] += 1;
            match tasks
                .iter_mut()
                .find(|(f, s, _)| *f == job.function && *s == slot)
            {
                Some(t) => t.2.push(j),
                None => tasks.push((job.function, slot, vec![j])),
            }
        }
        // Hand each task its own instance slot (disjoint mutable borrows).
        let (engines, max_payload_bytes, meters) =
            (&self.engines, self.max_payload_bytes, &self.meters);
        let mut slots: Vec<Option<(&Meta, &mut Option<Instance>)>> = Vec::new();
        let mut index = Vec::new();
        for (fi, f) in self.functions.iter_mut().enumerate() {
            let meta = &f.meta;
            for (si, slot) in f.pool.iter_mut().enumerate() {
                index.push((fi, si));
                slots.push(Some((meta, slot)));
            }
        }
        let then = &then;
        let mut work: Vec<_> = tasks
            .into_iter()
            .map(|(fi, si, js)| {
                let at = index
                    .iter()
                    .position(|x| *x == (fi, si))
                    .expect("slot exists");
                let (meta, slot) = slots[at].take().expect("one task per slot");
                move || -> Result<(), E> {
                    let ctx = Ctx {
                        set: &engines[&meta.limits.max_call_depth],
                        meta,
                        max_payload_bytes,
                        meters,
                    };
                    for j in js {
                        if stop.load(std::sync::atomic::Ordering::Relaxed) {
                            break;
                        }
                        let job = &jobs[j];
                        if job.fresh {
                            *slot = None;
                        }
                        if let Err(e) = then(j, invoke_slot(&ctx, slot, job)) {
                            stop.store(true, std::sync::atomic::Ordering::Relaxed);
                            return Err(e);
                        }
                    }
                    Ok(())
                }
            })
            .collect();
        // One task: run it here, no thread needed (the common case at low load).
        let Some(first) = work.pop() else {
            return Ok(());
        };
        let mut errors = Vec::new();
        if work.is_empty() {
            errors.extend(first().err());
        } else {
            std::thread::scope(|scope| {
                let handles: Vec<_> = work.into_iter().map(|w| scope.spawn(w)).collect();
                errors.extend(first().err());
                for h in handles {
                    // A panicking worker is a bug: take the pipeline (and the gateway) down.
                    let r = h.join().unwrap_or_else(|p| std::panic::resume_unwind(p));
                    errors.extend(r.err());
                }
            });
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }

    /// Failures in a row (traps, fuel, time, failed starts) after which a function's cold
    /// starts back off (3); set before loading functions. Tests of the layers above that need
    /// every invocation to run turn it off with `u32::MAX`.
    pub fn set_free_failures(&mut self, failures: u32) {
        self.free_failures = failures;
    }

    /// Where the functions' log lines go; set it before loading functions.
    pub fn set_telemetry(&mut self, telemetry: Telemetry) {
        self.telemetry = telemetry;
    }

    /// The metering of every function, shared with the HTTP API.
    pub fn meters(&self) -> meter::Meters {
        self.meters.clone()
    }
}

#[cfg(test)]
mod tests;

//! The function runtime on wasmi: one compiled `Module` per function, a live instance reused
//! while healthy and replaced after a trap, fuel and a memory cap on every invocation, and
//! the ABI v1 host functions (`host.rs`). Synchronous: the processor thread drives it.

mod host;
pub mod meter;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use kiri_abi::export;
use std::time::{Duration, Instant};

use sha2::Digest;

use wasmi::{
    Config as EngineConfig, Engine, ExternType, Linker, Memory, Module, Store, StoreLimitsBuilder,
    TypedFunc, TypedResumableCall, ValType, WasmParams, WasmResults,
};

use host::HostState;
pub use host::{Destination, Output, MAX_KEY_BYTES, MAX_TOPIC_BYTES};

use crate::config::{FunctionConfig, FunctionLimits};

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
    /// The body it set with `respond`, if any.
    pub response: Option<Vec<u8>>,
}

/// A module that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The module path.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file exceeds [`MAX_MODULE_BYTES`].
    #[error("module is {0} bytes; the limit is {MAX_MODULE_BYTES}")]
    TooLarge(u64),
    /// Not valid WebAssembly (or uses features wasmi does not support).
    #[error("not a valid WebAssembly module: {0}")]
    Invalid(wasmi::Error),
    /// A required export is missing or has the wrong type.
    #[error("module must export {name} as {expected}")]
    Export {
        /// The export.
        name: &'static str,
        /// Its required type.
        expected: &'static str,
    },
    /// The module imports something the host does not offer.
    #[error("module imports {module}::{name}, which the host does not offer (ABI v1 offers kiri::{{emit, publish, respond, log, now_ms, config, kv_get, kv_put, kv_delete, kv_list}})")]
    Import {
        /// Import module.
        module: String,
        /// Import name.
        name: String,
    },
    /// `kiri_abi_version` returned another version.
    #[error("module was built for ABI version {0}; this gateway speaks version {ver}", ver = kiri_abi::ABI_VERSION)]
    AbiVersion(i32),
    /// Instantiation (including the start function and `kiri_abi_version`) failed.
    #[error("instantiation failed: {0}")]
    Instantiate(wasmi::Error),
}

/// Why one invocation produced no outputs.
#[derive(Debug, thiserror::Error)]
pub enum InvokeError {
    /// The invocation used all its fuel.
    #[error("out of fuel (limit {0})")]
    OutOfFuel(u64),
    /// The invocation ran longer than `limits.timeout_ms` of wall-clock time.
    #[error("timed out after {0} ms")]
    Timeout(u64),
    /// The guest trapped (or a host call trapped on its behalf).
    #[error("trap: {0}")]
    Trap(String),
    /// `kiri_alloc` returned 0 or a region outside memory.
    #[error("kiri_alloc could not provide {0} bytes")]
    Alloc(usize),
    /// The function returned a non-zero code.
    #[error("function returned error code {0}")]
    Failed(i32),
    /// A fresh instance could not be created.
    #[error("{0}")]
    Instantiate(LoadError),
}

impl From<sled::Error> for LoadError {
    fn from(e: sled::Error) -> Self {
        LoadError::Instantiate(wasmi::Error::new(format!("kv store: {e}")))
    }
}

impl InvokeError {
    /// A short label for metrics and dead letters.
    pub fn reason(&self) -> &'static str {
        match self {
            InvokeError::OutOfFuel(_) => "out_of_fuel",
            InvokeError::Timeout(_) => "timeout",
            InvokeError::Trap(_) => "trap",
            InvokeError::Alloc(_) => "alloc",
            InvokeError::Failed(_) => "error",
            InvokeError::Instantiate(_) => "instantiate",
        }
    }
}

type OnEvent = TypedFunc<(i32, i32, i32, i32, i64), i32>;

struct Live {
    store: Store<HostState>,
    memory: Memory,
    alloc: TypedFunc<i32, i32>,
    on_event: OnEvent,
}

/// What does not change while a function is loaded.
struct Meta {
    /// The module's version: the first 16 hex digits of its SHA-256.
    version: Arc<str>,
    name: Arc<str>,
    module: Module,
    limits: FunctionLimits,
    config: Arc<BTreeMap<String, String>>,
    permissions: Arc<Permissions>,
    kv: sled::Tree,
    live: crate::live::Live,
    metrics: Handles,
}

/// A loaded function's metrics, registered once: looking them up by their label strings on
/// every invocation cost more than running a trivial function (`make bench`).
struct Handles {
    fuel: metrics::Counter,
    seconds: metrics::Histogram,
    cold_starts: metrics::Counter,
    warm_starts: metrics::Counter,
    memory_peak: metrics::Gauge,
}

impl Handles {
    fn new(name: &str) -> Handles {
        let function = || ("function", name.to_string());
        let start = |kind: &'static str| metrics::counter!("kiri_function_starts_total", "function" => name.to_string(), "kind" => kind);
        Handles {
            fuel: metrics::counter!("kiri_fuel_consumed_total", &[function()]),
            seconds: metrics::histogram!("kiri_invocation_seconds", &[function()]),
            cold_starts: start("cold"),
            warm_starts: start("warm"),
            memory_peak: metrics::gauge!("kiri_function_memory_peak_bytes", &[function()]),
        }
    }
}

struct Function {
    meta: Meta,
    /// Up to `concurrency` instances; `None` slots are created on demand.
    pool: Vec<Option<Live>>,
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
    live: crate::live::Live,
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
            live: crate::live::Live::default(),
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

    /// Reads, validates and instantiates a function; returns its index.
    pub fn load(&mut self, cfg: &FunctionConfig) -> Result<usize, LoadError> {
        let bytes = Self::read_module(&cfg.module)?;
        let prepared = self.prepare(cfg, &bytes)?;
        Ok(self.install(None, prepared))
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
    /// overlap an install: the processor installs between groups), or as a new function.
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

    /// Like [`Runtime::load`] from bytes already in memory.
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
        check_interface(&module)?;
        let digest = sha2::Sha256::digest(wasm);
        let version: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
        let meta = Meta {
            version: version.into(),
            name: name.into(),
            module,
            limits,
            config: Arc::new(config),
            permissions: Arc::new(permissions),
            kv: self.db.open_tree(format!("kv/{name}"))?,
            live: self.live.clone(),
            metrics: Handles::new(name),
        };
        let set = &self.engines[&meta.limits.max_call_depth];
        // One instance now: it validates the module's start and ABI version; the rest of
        // the pool is made on demand.
        let first = instantiate(set, &meta, self.max_payload_bytes)?;
        let mut pool: Vec<Option<Live>> =
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

fn instantiate(set: &EngineSet, f: &Meta, max_payload_bytes: usize) -> Result<Live, LoadError> {
    {
        let state = HostState {
            limits: StoreLimitsBuilder::new()
                .memory_size(f.limits.memory_bytes)
                .memories(1)
                .tables(4)
                .table_elements(100_000)
                .instances(1)
                .build(),
            function: f.name.clone(),
            config: f.config.clone(),
            permissions: f.permissions.clone(),
            outputs: Vec::new(),
            output_bytes: 0,
            log_lines: 0,
            max_outputs: f.limits.max_outputs,
            max_output_bytes: f.limits.max_output_bytes,
            max_payload_bytes,
            kv: f.kv.clone(),
            kv_writes: BTreeMap::new(),
            max_kv_value_bytes: f.limits.kv_max_value_bytes,
            max_kv_writes: f.limits.kv_max_writes,
            response: None,
            live: f.live.clone(),
            caller: None,
        };
        let mut store = Store::new(&set.engine, state);
        store.limiter(|s| &mut s.limits);
        // The start function and kiri_abi_version run on the invocation fuel budget too.
        store
            .set_fuel(f.limits.fuel)
            .map_err(LoadError::Instantiate)?;
        let instance = set
            .linker
            .instantiate_and_start(&mut store, &f.module)
            .map_err(LoadError::Instantiate)?;
        let export_err = |name, expected| LoadError::Export { name, expected };
        let memory = instance
            .get_memory(&store, export::MEMORY)
            .ok_or(export_err(export::MEMORY, "a memory"))?;
        let version = instance
            .get_typed_func::<(), i32>(&store, export::ABI_VERSION)
            .map_err(|_| export_err(export::ABI_VERSION, "func () -> i32"))?;
        let alloc = instance
            .get_typed_func::<i32, i32>(&store, export::ALLOC)
            .map_err(|_| export_err(export::ALLOC, "func (i32) -> i32"))?;
        let on_event = instance
            .get_typed_func::<(i32, i32, i32, i32, i64), i32>(&store, export::ON_EVENT)
            .map_err(|_| export_err(export::ON_EVENT, "func (i32, i32, i32, i32, i64) -> i32"))?;
        let v = version
            .call(&mut store, ())
            .map_err(LoadError::Instantiate)?;
        if v != kiri_abi::ABI_VERSION {
            return Err(LoadError::AbiVersion(v));
        }
        metrics::counter!("kiri_instances_started_total", "function" => f.name.to_string())
            .increment(1);
        Ok(Live {
            store,
            memory,
            alloc,
            on_event,
        })
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
        let mut slots: Vec<Option<(&Meta, &mut Option<Live>)>> = Vec::new();
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
                    // A panicking worker is a bug: take the processor (and the gateway) down.
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

    /// Where the functions' log lines go; set it before loading functions.
    pub fn set_live(&mut self, live: crate::live::Live) {
        self.live = live;
    }

    /// The metering of every function, shared with the HTTP API.
    pub fn meters(&self) -> meter::Meters {
        self.meters.clone()
    }
}

/// What one invocation needs besides its instance slot.
struct Ctx<'a> {
    set: &'a EngineSet,
    meta: &'a Meta,
    max_payload_bytes: usize,
    meters: &'a meter::Meters,
}

fn invoke_slot(
    ctx: &Ctx<'_>,
    slot: &mut Option<Live>,
    job: &Job<'_>,
) -> Result<Invocation, InvokeError> {
    let f = ctx.meta;
    let cold = slot.is_none();
    if cold {
        match instantiate(ctx.set, f, ctx.max_payload_bytes) {
            Ok(live) => *slot = Some(live),
            Err(e) => {
                let e = InvokeError::Instantiate(e);
                let sample = meter::Sample {
                    cold,
                    fuel: 0,
                    wall_us: 0,
                    memory_bytes: 0,
                    failure: Some(e.reason()),
                };
                record(ctx.meters, job.function, &f.metrics, sample);
                return Err(e);
            }
        }
    }
    let live = slot.as_mut().expect("instantiated above");
    let started = Instant::now();
    let mut budget = Budget {
        fuel: f.limits.fuel,
        remaining: f.limits.fuel,
        deadline: started + Duration::from_millis(f.limits.timeout_ms),
        timeout_ms: f.limits.timeout_ms,
    };
    let result = call(live, &mut budget, job).map(|outputs| Invocation {
        outputs,
        kv_writes: std::mem::take(&mut live.store.data_mut().kv_writes)
            .into_iter()
            .collect(),
        kv: f.kv.clone(),
        response: live.store.data_mut().response.take(),
    });
    let left = live.store.get_fuel().unwrap_or(0);
    let used = budget.fuel - budget.remaining - left;
    let elapsed = started.elapsed();
    let memory_bytes = live.memory.data_size(&live.store) as u64;
    f.metrics.fuel.increment(used);
    f.metrics.seconds.record(elapsed.as_secs_f64());
    if matches!(
        result,
        Err(InvokeError::Trap(_) | InvokeError::OutOfFuel(_) | InvokeError::Timeout(_))
    ) {
        // Its memory and globals may be in any state: the next call gets a fresh instance.
        *slot = None;
    }
    let sample = meter::Sample {
        cold,
        fuel: used,
        wall_us: elapsed.as_micros() as u64,
        memory_bytes,
        failure: result.as_ref().err().map(InvokeError::reason),
    };
    record(ctx.meters, job.function, &f.metrics, sample);
    result
}

fn record(meters: &meter::Meters, idx: usize, handles: &Handles, sample: meter::Sample) {
    if sample.cold {
        handles.cold_starts.increment(1);
    } else {
        handles.warm_starts.increment(1);
    }
    let mut meters = meters.lock().expect("meters lock");
    let stats = &mut meters[idx];
    stats.record(sample);
    handles.memory_peak.set(stats.memory_peak_bytes as f64);
}

/// Fuel is handed out in slices; between slices the wall clock is checked, so neither a
/// spinning guest nor one calling the host in a loop can outlive its timeout by more than
/// one slice.
const FUEL_SLICE: u64 = 1_000_000;

struct Budget {
    fuel: u64,
    remaining: u64,
    deadline: Instant,
    timeout_ms: u64,
}

impl Budget {
    /// Moves the next slice (at least `need`) into the store, or says why it cannot.
    fn refill(&mut self, store: &mut Store<HostState>, need: u64) -> Result<(), InvokeError> {
        if Instant::now() >= self.deadline {
            return Err(InvokeError::Timeout(self.timeout_ms));
        }
        let slice = FUEL_SLICE.max(need).min(self.remaining);
        if slice == 0 || slice < need {
            return Err(InvokeError::OutOfFuel(self.fuel));
        }
        self.remaining -= slice;
        let left = store.get_fuel().unwrap_or(0);
        store
            .set_fuel(left + slice)
            .map_err(|e| InvokeError::Trap(e.to_string()))
    }
}

fn trap(e: wasmi::Error) -> InvokeError {
    InvokeError::Trap(e.to_string())
}

/// Calls `func` within the budget's fuel and deadline.
fn bounded<P: WasmParams, R: WasmResults>(
    func: &TypedFunc<P, R>,
    store: &mut Store<HostState>,
    params: P,
    budget: &mut Budget,
) -> Result<R, InvokeError> {
    let mut call = func.call_resumable(&mut *store, params).map_err(trap)?;
    loop {
        match call {
            TypedResumableCall::Finished(r) => return Ok(r),
            TypedResumableCall::OutOfFuel(next) => {
                budget.refill(store, next.required_fuel())?;
                call = next.resume(&mut *store).map_err(trap)?;
            }
            TypedResumableCall::HostTrap(t) => {
                return Err(InvokeError::Trap(t.host_error().to_string()))
            }
        }
    }
}

fn call(live: &mut Live, budget: &mut Budget, job: &Job<'_>) -> Result<Vec<Output>, InvokeError> {
    let (topic, payload, received_ms) = (job.topic, job.payload, job.received_ms);
    let store = &mut live.store;
    store.data_mut().reset();
    store.data_mut().caller = job.caller.cloned();
    store.set_fuel(0).map_err(trap)?;
    budget.refill(store, 0)?;
    let total = topic.len() + payload.len();
    let len = i32::try_from(total).map_err(|_| InvokeError::Alloc(total))?;
    let ptr = bounded(&live.alloc, store, len, budget)?;
    // Wasm pointers are unsigned 32-bit values.
    let start = ptr as u32 as usize;
    if start == 0 || start + total > live.memory.data_size(&*store) {
        return Err(InvokeError::Alloc(total));
    }
    let mem = live.memory.data_mut(&mut *store);
    mem[start..start + topic.len()].copy_from_slice(topic.as_bytes());
    mem[start + topic.len()..start + total].copy_from_slice(payload);
    // start + total fits in memory (at most 4 GiB), so these wrap to the right u32 values.
    let args = (
        start as u32 as i32,
        topic.len() as i32,
        (start + topic.len()) as u32 as i32,
        payload.len() as i32,
        received_ms as i64,
    );
    let rc = bounded(&live.on_event, store, args, budget)?;
    if rc != 0 {
        return Err(InvokeError::Failed(rc));
    }
    Ok(std::mem::take(&mut store.data_mut().outputs))
}

/// Checks imports and exports before anything runs.
fn check_interface(module: &Module) -> Result<(), LoadError> {
    for import in module.imports() {
        let allowed = import.module() == kiri_abi::IMPORT_MODULE
            && host::IMPORTS.contains(&import.name())
            && matches!(import.ty(), ExternType::Func(_));
        if !allowed {
            return Err(LoadError::Import {
                module: import.module().to_string(),
                name: import.name().to_string(),
            });
        }
    }
    let func = |name: &'static str, params: &[ValType], results: &[ValType], expected| {
        let ok = module.exports().any(|e| {
            e.name() == name
                && matches!(e.ty(), ExternType::Func(f) if f.params() == params && f.results() == results)
        });
        if ok {
            Ok(())
        } else {
            Err(LoadError::Export { name, expected })
        }
    };
    use ValType::{I32, I64};
    func(export::ABI_VERSION, &[], &[I32], "func () -> i32")?;
    func(export::ALLOC, &[I32], &[I32], "func (i32) -> i32")?;
    func(
        export::ON_EVENT,
        &[I32, I32, I32, I32, I64],
        &[I32],
        "func (i32, i32, i32, i32, i64) -> i32",
    )?;
    if !module
        .exports()
        .any(|e| e.name() == export::MEMORY && matches!(e.ty(), ExternType::Memory(_)))
    {
        return Err(LoadError::Export {
            name: export::MEMORY,
            expected: "a memory",
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests;

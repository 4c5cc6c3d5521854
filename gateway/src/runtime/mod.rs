//! The function runtime on wasmi: one compiled `Module` per function; instances created from
//! it on demand (up to `concurrency`), each reused while healthy and thrown away after a trap,
//! running out of fuel or a timeout; fuel, a memory cap and a wall-clock deadline on every
//! invocation; and the ABI v1 host functions. Synchronous: the pipeline's thread drives it.
//!
//! - `mod.rs`: the [`Runtime`] (load, prepare, install, retire; [`Runtime::run_batch`]).
//! - `handle.rs`: one function, run from any thread ([`FunctionHandle`]).
//! - `prepare.rs`: a module compiled and started outside the runtime ([`Preparer`]).
//! - `interface.rs`: what a module must import and export; load and invocation errors.
//! - `instance.rs`: an instance of a function, and one invocation on it within its budget.
//! - `host.rs`: the host functions (`emit`, `publish`, `kv_*`, `log`, ...), bounds-checked.

mod check;
mod handle;
mod host;
mod instance;
mod interface;
mod locate;
mod pages;
mod prepare;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use wasmi::{Config as EngineConfig, Engine, Linker};

pub use check::{check_module, ModuleReport};
pub use handle::{run_on, FunctionHandle};
use host::HostState;
pub use host::{Destination, KvCharge, KvUsage, Output, MAX_KEY_BYTES, MAX_TOPIC_BYTES};
use instance::{invoke_slot, Ctx, Function};
pub use interface::{InvokeError, LoadError};
pub use prepare::{Prepared, Preparer};

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
    /// What it answers an HTTP call with (`respond`, `http_response`).
    pub response: HttpAnswer,
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
    /// The payload's format, a [`kiri_abi::format`] code (what `input_format` returns).
    pub format: i32,
    /// For an HTTP call: the request (what `http_request` returns).
    pub http: Option<&'a Arc<HttpRequest>>,
}

/// An HTTP call's request as the function sees it (`http_request`): its method, the path
/// after the function's name, the query and the allow-listed headers, as one JSON object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpRequest {
    json: Vec<u8>,
}

impl HttpRequest {
    /// The request `method path?query` with `headers` (names lower case).
    pub fn new(method: &str, path: &str, query: &str, headers: &[(String, String)]) -> Self {
        let headers: serde_json::Map<String, serde_json::Value> = headers
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::Value::from(v.as_str())))
            .collect();
        let json = serde_json::json!({
            "method": method,
            "path": path,
            "query": query,
            "headers": headers,
        });
        HttpRequest {
            json: json.to_string().into_bytes(),
        }
    }

    /// The JSON object.
    pub fn json(&self) -> &[u8] {
        &self.json
    }
}

/// How a function answers an HTTP call: the status and headers it set (`http_response`) and
/// the body (`respond`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HttpAnswer {
    /// The status; `None`: 200.
    pub status: Option<u16>,
    /// Headers to send, names lower case (`content-type` among them when it set one).
    pub headers: Vec<(String, String)>,
    /// The body; `None`: empty.
    pub body: Option<Vec<u8>>,
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

/// What the runtime reads of an installed function without taking its lock.
struct Installed {
    name: Arc<str>,
    version: Arc<str>,
    max_call_depth: usize,
    kv_usage: Arc<host::KvUsage>,
}

/// All loaded functions; functions with the same call-depth limit share an engine. Each
/// function sits behind a lock of its own, so that functions can run on different threads
/// at once ([`Runtime::handle`]); its name and version are kept apart, readable while it runs.
pub struct Runtime {
    engines: HashMap<usize, Arc<EngineSet>>,
    functions: Vec<Arc<std::sync::Mutex<Function>>>,
    /// What is read of each function without taking its lock (it may be running).
    names: Vec<Installed>,
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
            names: Vec::new(),
            max_payload_bytes,
            db,
            meters: meter::Meters::default(),
            telemetry: Telemetry::default(),
            free_failures: instance::FREE_FAILURES,
        }
    }

    fn engine(&mut self, max_call_depth: usize) -> Arc<EngineSet> {
        self.engines
            .entry(max_call_depth)
            .or_insert_with(|| {
                let mut config = EngineConfig::default();
                config.consume_fuel(true);
                config.set_max_recursion_depth(max_call_depth);
                let engine = Engine::new(&config);
                let mut linker = Linker::new(&engine);
                host::add_to_linker(&mut linker).expect("host functions have distinct names");
                Arc::new(EngineSet { engine, linker })
            })
            .clone()
    }

    /// Reads a module file, refusing one over the size limit before reading it.
    pub fn read_module(path: &std::path::Path) -> Result<Vec<u8>, LoadError> {
        let shown = path.display().to_string();
        let io = |error| LoadError::Io {
            path: shown.clone(),
            error,
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
        self.preparer(cfg).prepare(wasm)
    }

    /// What preparing a module for the function `cfg` describes needs of the runtime, taken
    /// now, so that the module can be compiled and started without holding the runtime.
    pub fn preparer(&mut self, cfg: &FunctionConfig) -> Preparer {
        let config = cfg.config.clone();
        let permissions = Permissions {
            publish: cfg.publish.clone(),
            emit: cfg.emit.clone(),
        };
        let limits = FunctionLimits {
            concurrency: cfg.concurrency,
            ..cfg.limits.clone()
        };
        self.preparer_for(&cfg.name, limits, config, permissions)
    }

    fn preparer_for(
        &mut self,
        name: &str,
        limits: FunctionLimits,
        config: BTreeMap<String, serde_json::Value>,
        permissions: Permissions,
    ) -> Preparer {
        // A new version shares the running one's key-value usage.
        let kv_usage = self
            .names
            .iter()
            .find(|i| &*i.name == name)
            .map(|i| i.kv_usage.clone());
        Preparer {
            set: self.engine(limits.max_call_depth),
            name: name.into(),
            limits,
            config,
            permissions,
            db: self.db.clone(),
            kv_usage,
            telemetry: self.telemetry.clone(),
            free_failures: self.free_failures,
            max_payload_bytes: self.max_payload_bytes,
        }
    }

    /// Installs a prepared function: at `slot`, replacing what ran there, or as a new
    /// function. Returns its index. An invocation already running on the old version (a
    /// [`FunctionHandle`] taken before) finishes on it.
    pub fn install(&mut self, slot: Option<usize>, prepared: Prepared) -> usize {
        let f = prepared.0;
        let names = Installed {
            name: f.meta.name.clone(),
            version: f.meta.version.clone(),
            max_call_depth: f.meta.limits.max_call_depth,
            kv_usage: f.meta.kv_usage.clone(),
        };
        let f = Arc::new(std::sync::Mutex::new(f));
        match slot {
            Some(i) => {
                self.meters.lock().expect("meters lock")[i].name = names.name.to_string();
                self.functions[i] = f;
                self.names[i] = names;
                i
            }
            None => {
                self.meters
                    .lock()
                    .expect("meters lock")
                    .push(meter::FunctionStats {
                        name: names.name.to_string(),
                        ..Default::default()
                    });
                self.functions.push(f);
                self.names.push(names);
                self.functions.len() - 1
            }
        }
    }

    /// Drops the instances of function `idx` (undeployed: it is no longer routed to), once
    /// what runs on them now has ended (without waiting for it).
    pub fn retire(&mut self, idx: usize) {
        let f = self.functions[idx].clone();
        std::thread::spawn(move || {
            for slot in &mut f.lock().unwrap_or_else(|e| e.into_inner()).pool {
                *slot = None;
            }
        });
    }

    /// Function `idx`, to run jobs on from any thread (taken without waiting for it).
    pub fn handle(&self, idx: usize) -> FunctionHandle {
        FunctionHandle {
            function: self.functions[idx].clone(),
            set: self.engines[&self.names[idx].max_call_depth].clone(),
            max_payload_bytes: self.max_payload_bytes,
            meters: self.meters.clone(),
        }
    }

    /// Validates, instantiates and installs a function from bytes, outside any registry (for
    /// tools and benchmarks that run a module on its own); returns its index.
    pub fn load_bytes(
        &mut self,
        name: &str,
        wasm: &[u8],
        limits: FunctionLimits,
        config: BTreeMap<String, serde_json::Value>,
        permissions: Permissions,
    ) -> Result<usize, LoadError> {
        let prepared = self
            .preparer_for(name, limits, config, permissions)
            .prepare(wasm)?;
        Ok(self.install(None, prepared))
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

    /// Function `idx`'s key-value usage (shared with its instances).
    pub fn kv_usage(&self, idx: usize) -> Arc<KvUsage> {
        self.names[idx].kv_usage.clone()
    }

    /// The version of function `idx`: the first 16 hex digits of its module's SHA-256.
    pub fn version(&self, idx: usize) -> &str {
        &self.names[idx].version
    }

    /// The name of function `idx`.
    pub fn name(&self, idx: usize) -> &str {
        &self.names[idx].name
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
        self.invoke_as(
            idx,
            topic,
            payload,
            received_ms,
            kiri_abi::format::CBOR,
            None,
        )
    }

    /// [`Runtime::invoke`] with the payload's format (what `input_format` returns, a
    /// [`kiri_abi::format`] code) and, for an HTTP call, its request.
    pub fn invoke_as(
        &mut self,
        idx: usize,
        topic: &str,
        payload: &[u8],
        received_ms: u64,
        format: i32,
        http: Option<&Arc<HttpRequest>>,
    ) -> Result<Invocation, InvokeError> {
        let job = Job {
            function: idx,
            topic,
            payload,
            received_ms,
            fresh: false,
            caller: None,
            format,
            http,
        };
        let handle = self.handle(idx);
        let mut f = handle.function.lock().expect("function lock");
        let f = &mut *f;
        let ctx = Ctx {
            set: &handle.set,
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
        run_on(|f| self.handle(f), jobs, then)
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
#[cfg(test)]
mod wasi_tests;

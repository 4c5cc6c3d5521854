//! One instance of a function, and one invocation on it: the event copied into guest memory
//! through `kiri_alloc`, `kiri_on_event` run within the function's fuel and wall-clock budget,
//! then the instance's outputs, state writes and response taken as the invocation's result.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kiri_abi::export;
use wasmi::{
    Memory, Module, Store, StoreLimitsBuilder, TypedFunc, TypedResumableCall, WasmParams,
    WasmResults,
};

use super::host::{DeadlineExceeded, HostState, KvUsage, LogBudget, LogSink, Output};
use super::{EngineSet, Invocation, InvokeError, Job, LoadError, Permissions};
use crate::config::FunctionLimits;
use crate::telemetry::{meter, Telemetry};

type OnEvent = TypedFunc<(i32, i32, i32, i32, i64), i32>;

pub(super) struct Instance {
    store: Store<HostState>,
    memory: Memory,
    alloc: TypedFunc<i32, i32>,
    on_event: OnEvent,
    /// The running wasm function's index, when the module is instrumented ([`super::locate`]).
    current: Option<wasmi::Global>,
}

/// What does not change while a function is loaded.
pub(super) struct Meta {
    /// The module's version: the first 16 hex digits of its SHA-256.
    pub(super) version: Arc<str>,
    pub(super) name: Arc<str>,
    pub(super) module: Module,
    /// Its function names, to say where a trap happened (when instrumented).
    pub(super) names: Option<Arc<super::locate::Names>>,
    pub(super) limits: FunctionLimits,
    pub(super) config: Arc<BTreeMap<String, serde_json::Value>>,
    pub(super) permissions: Arc<Permissions>,
    pub(super) kv: sled::Tree,
    /// Its key-value usage, shared with its instances (and with its next version's).
    pub(super) kv_usage: Arc<KvUsage>,
    /// Its log budget, shared by its instances.
    pub(super) log_budget: Arc<LogBudget>,
    pub(super) telemetry: Telemetry,
    pub(super) metrics: Handles,
    /// Cold starts, rate-limited after failures in a row.
    pub(super) starts: Starts,
}

/// A loaded function's metrics, registered once: looking them up by their label strings on
/// every invocation cost more than running a trivial function (`make bench`).
pub(super) struct Handles {
    fuel: metrics::Counter,
    seconds: metrics::Histogram,
    cold_starts: metrics::Counter,
    warm_starts: metrics::Counter,
    memory_peak: metrics::Gauge,
}

impl Handles {
    pub(super) fn new(name: &str) -> Handles {
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

/// Cold starts of a function that keeps losing its instance (a trap, running out of fuel or
/// time, a failed start), rate-limited: after `free` failures in a row ([`FREE_FAILURES`]
/// unless the runtime says otherwise), a new instance is started only once a back-off has
/// passed (100 ms, doubling, at most 30 s); one invocation that succeeds resets it. Shared by
/// the function's instance slots.
#[derive(Debug)]
pub(super) struct Starts {
    free: u32,
    failures: AtomicU32,
    not_before_ms: AtomicU64,
}

/// Failures in a row before cold starts back off.
pub(super) const FREE_FAILURES: u32 = 3;
/// The longest back-off between cold starts.
const MAX_BACKOFF_MS: u64 = 30_000;

impl Starts {
    pub(super) fn new(free: u32) -> Starts {
        Starts {
            free,
            failures: AtomicU32::new(0),
            not_before_ms: AtomicU64::new(0),
        }
    }

    /// How long until a start is allowed, with the failures so far; `None`: now.
    fn wait(&self, now_ms: u64) -> Option<(u32, u64)> {
        let failures = self.failures.load(Ordering::Relaxed);
        let not_before = self.not_before_ms.load(Ordering::Relaxed);
        (failures >= self.free && now_ms < not_before).then(|| (failures, not_before - now_ms))
    }

    /// The instance was lost (or could not start).
    fn failed(&self, now_ms: u64) {
        let failures = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        if failures >= self.free {
            let doublings = (failures - self.free).min(20);
            let wait = (100u64 << doublings).min(MAX_BACKOFF_MS);
            self.not_before_ms.store(now_ms + wait, Ordering::Relaxed);
        }
    }

    /// An invocation succeeded.
    fn succeeded(&self) {
        if self.failures.load(Ordering::Relaxed) != 0 {
            self.failures.store(0, Ordering::Relaxed);
        }
    }
}

pub(super) struct Function {
    pub(super) meta: Meta,
    /// Up to `concurrency` instances; `None` slots are created on demand.
    pub(super) pool: Vec<Option<Instance>>,
}

/// A new instance of `f`, its start function and `kiri_abi_version` run on the invocation's
/// budget: fuel (`limits.fuel`) and wall-clock time (`limits.timeout_ms`, enforced by the host
/// calls). `fuel_used` gets what they used, whatever the outcome.
pub(super) fn instantiate(
    set: &EngineSet,
    f: &Meta,
    max_payload_bytes: usize,
    fuel_used: &mut u64,
) -> Result<Instance, LoadError> {
    {
        let log = Arc::new(LogSink::new(
            f.name.clone(),
            f.telemetry.clone(),
            f.log_budget.clone(),
        ));
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
            wasi: super::host::wasi::context(&log),
            log,
            max_outputs: f.limits.max_outputs,
            max_output_bytes: f.limits.max_output_bytes,
            max_payload_bytes,
            kv: f.kv.clone(),
            kv_writes: BTreeMap::new(),
            max_kv_value_bytes: f.limits.kv_max_value_bytes,
            max_kv_writes: f.limits.kv_max_writes,
            kv_usage: f.kv_usage.clone(),
            kv_max_bytes: f.limits.kv_max_bytes,
            kv_max_keys: f.limits.kv_max_keys,
            kv_delta: (0, 0),
            response: super::HttpAnswer::default(),
            http: None,
            caller: None,
            input_format: kiri_abi::format::NONE,
            deadline: Instant::now() + Duration::from_millis(f.limits.timeout_ms),
            refusal_logged: false,
        };
        let mut store = Store::new(&set.engine, state);
        store.limiter(|s| &mut s.limits);
        // The start function and kiri_abi_version run on the invocation fuel budget too.
        store
            .set_fuel(f.limits.fuel)
            .map_err(LoadError::Instantiate)?;
        let started = set.linker.instantiate_and_start(&mut store, &f.module);
        *fuel_used = f.limits.fuel - store.get_fuel().unwrap_or(0);
        let instance = started.map_err(LoadError::Instantiate)?;
        // A WASI reactor's constructors (C's static initialisers, Rust's std set-up) run once,
        // before anything else is called.
        if let Ok(init) = instance.get_typed_func::<(), ()>(&store, "_initialize") {
            let done = init.call(&mut store, ());
            *fuel_used = f.limits.fuel - store.get_fuel().unwrap_or(0);
            done.map_err(LoadError::Instantiate)?;
        }
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
        let v = version.call(&mut store, ());
        *fuel_used = f.limits.fuel - store.get_fuel().unwrap_or(0);
        let v = v.map_err(LoadError::Instantiate)?;
        if v != kiri_abi::ABI_VERSION {
            return Err(LoadError::AbiVersion(v));
        }
        // wasmi wrote zeros over the whole memory; give back what the start left untouched.
        super::pages::release_zero_pages(memory.data_mut(&mut store));
        metrics::counter!("kiri_instances_started_total", "function" => f.name.to_string())
            .increment(1);
        let current = instance.get_global(&store, super::locate::CURRENT);
        Ok(Instance {
            store,
            memory,
            alloc,
            on_event,
            current,
        })
    }
}

/// What one invocation needs besides its instance slot.
pub(super) struct Ctx<'a> {
    pub(super) set: &'a EngineSet,
    pub(super) meta: &'a Meta,
    pub(super) max_payload_bytes: usize,
    pub(super) meters: &'a meter::Meters,
}

pub(super) fn invoke_slot(
    ctx: &Ctx<'_>,
    slot: &mut Option<Instance>,
    job: &Job<'_>,
) -> Result<Invocation, InvokeError> {
    let f = ctx.meta;
    let cold = slot.is_none();
    let started = Instant::now();
    let mut start_fuel = 0;
    if cold {
        let now_ms = crate::age::mono_ms();
        let result = match f.starts.wait(now_ms) {
            Some((failures, wait_ms)) => Err(InvokeError::Backoff { failures, wait_ms }),
            None => instantiate(ctx.set, f, ctx.max_payload_bytes, &mut start_fuel)
                .map_err(|e| start_failure(e, &f.limits)),
        };
        match result {
            Ok(instance) => *slot = Some(instance),
            Err(e @ InvokeError::Backoff { .. }) => {
                let mut meters = ctx.meters.lock().expect("meters lock");
                meters[job.function].record_refusal(e.reason());
                return Err(e);
            }
            Err(e) => {
                f.starts.failed(now_ms);
                f.metrics.fuel.increment(start_fuel);
                let sample = meter::Sample {
                    cold,
                    fuel: start_fuel,
                    wall_us: started.elapsed().as_micros() as u64,
                    memory_bytes: 0,
                    failure: Some(e.reason()),
                };
                record(ctx.meters, job.function, &f.metrics, sample);
                return Err(e);
            }
        }
    }
    let instance = slot.as_mut().expect("instantiated above");
    let mut budget = Budget {
        fuel: f.limits.fuel,
        remaining: f.limits.fuel,
        deadline: started + Duration::from_millis(f.limits.timeout_ms),
        timeout_ms: f.limits.timeout_ms,
    };
    let result = call(instance, &mut budget, job).map_err(|e| locate_trap(e, instance, f));
    let result = result.map(|outputs| Invocation {
        outputs,
        kv_writes: std::mem::take(&mut instance.store.data_mut().kv_writes)
            .into_iter()
            .collect(),
        kv: f.kv.clone(),
        kv_charge: instance.store.data_mut().take_kv_charge(),
        response: std::mem::take(&mut instance.store.data_mut().response),
    });
    let left = instance.store.get_fuel().unwrap_or(0);
    // A cold start's fuel and time count as the invocation's (metering shows what it cost).
    let used = budget.fuel - budget.remaining - left + start_fuel;
    let elapsed = started.elapsed();
    let memory_bytes = instance.memory.data_size(&instance.store) as u64;
    f.metrics.fuel.increment(used);
    f.metrics.seconds.record(elapsed.as_secs_f64());
    if matches!(
        result,
        Err(InvokeError::Trap(_)
            | InvokeError::Exit(_)
            | InvokeError::OutOfFuel(_)
            | InvokeError::Timeout(_))
    ) {
        // Its memory and globals may be in any state: the next call gets a fresh instance.
        *slot = None;
        f.starts.failed(crate::age::mono_ms());
    } else if result.is_ok() {
        f.starts.succeeded();
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

/// A trap's message with the wasm function it happened in, when the module says.
fn locate_trap(e: InvokeError, instance: &Instance, f: &Meta) -> InvokeError {
    let InvokeError::Trap(message) = e else {
        return e;
    };
    let index = instance
        .current
        .and_then(|g| g.get(&instance.store).i32())
        .filter(|i| *i >= 0);
    match (index, &f.names) {
        (Some(i), Some(names)) => {
            InvokeError::Trap(format!("{message} (in {})", names.describe(i as u32)))
        }
        _ => InvokeError::Trap(message),
    }
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

/// Why a call into the guest (`export`) failed, by the reasons `docs/writing-functions.md`
/// lists: fuel and the deadline by their own names, `proc_exit` as `exit`, and any other trap
/// with the export it happened in.
fn failure(e: &wasmi::Error, export: &str, budget: &Budget) -> InvokeError {
    if e.downcast_ref::<DeadlineExceeded>().is_some() {
        InvokeError::Timeout(budget.timeout_ms)
    } else if e.as_trap_code() == Some(wasmi::TrapCode::OutOfFuel) {
        InvokeError::OutOfFuel(budget.fuel)
    } else if let Some(status) = e.i32_exit_status() {
        InvokeError::Exit(status)
    } else {
        InvokeError::Trap(format!("in {export}: {e}"))
    }
}

/// A failed start as an invocation error: the deadline and fuel by their own names.
fn start_failure(e: LoadError, limits: &FunctionLimits) -> InvokeError {
    if let LoadError::Instantiate(w) = &e {
        if w.downcast_ref::<DeadlineExceeded>().is_some() {
            return InvokeError::Timeout(limits.timeout_ms);
        }
        if w.as_trap_code() == Some(wasmi::TrapCode::OutOfFuel) {
            return InvokeError::OutOfFuel(limits.fuel);
        }
    }
    InvokeError::Instantiate(e)
}

/// Calls `func` (the export `name`) within the budget's fuel and deadline.
fn bounded<P: WasmParams, R: WasmResults>(
    func: &TypedFunc<P, R>,
    name: &str,
    store: &mut Store<HostState>,
    params: P,
    budget: &mut Budget,
) -> Result<R, InvokeError> {
    let mut call = func
        .call_resumable(&mut *store, params)
        .map_err(|e| failure(&e, name, budget))?;
    loop {
        match call {
            TypedResumableCall::Finished(r) => return Ok(r),
            TypedResumableCall::OutOfFuel(next) => {
                budget.refill(store, next.required_fuel())?;
                call = next
                    .resume(&mut *store)
                    .map_err(|e| failure(&e, name, budget))?;
            }
            TypedResumableCall::HostTrap(t) => {
                let e = t.host_error();
                let exit = e.i32_exit_status();
                return Err(if e.downcast_ref::<DeadlineExceeded>().is_some() {
                    InvokeError::Timeout(budget.timeout_ms)
                } else if let Some(status) = exit {
                    InvokeError::Exit(status)
                } else {
                    InvokeError::Trap(format!("in {name}: {e}"))
                });
            }
        }
    }
}

fn call(
    instance: &mut Instance,
    budget: &mut Budget,
    job: &Job<'_>,
) -> Result<Vec<Output>, InvokeError> {
    let (topic, payload, received_ms) = (job.topic, job.payload, job.received_ms);
    let store = &mut instance.store;
    store.data_mut().reset(topic);
    store.data_mut().caller = job.caller.cloned();
    store.data_mut().input_format = job.format;
    store.data_mut().http = job.http.cloned();
    store.data_mut().deadline = budget.deadline;
    store.set_fuel(0).map_err(trap)?;
    budget.refill(store, 0)?;
    let total = topic.len() + payload.len();
    let len = i32::try_from(total).map_err(|_| InvokeError::Alloc(total))?;
    let ptr = bounded(&instance.alloc, export::ALLOC, store, len, budget)?;
    // Wasm pointers are unsigned 32-bit values.
    let start = ptr as u32 as usize;
    if start == 0 || start + total > instance.memory.data_size(&*store) {
        return Err(InvokeError::Alloc(total));
    }
    let mem = instance.memory.data_mut(&mut *store);
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
    let rc = bounded(&instance.on_event, export::ON_EVENT, store, args, budget)?;
    if rc != 0 {
        return Err(InvokeError::Failed(rc));
    }
    Ok(std::mem::take(&mut store.data_mut().outputs))
}

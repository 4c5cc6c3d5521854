//! Preparing a module outside the runtime's lock: compile, check the interface, make the
//! first instance (running its start function), ready to install.

use std::collections::BTreeMap;
use std::sync::Arc;

use sha2::Digest;
use wasmi::Module;

use super::host::{KvUsage, LogBudget};
use super::instance::{self, instantiate, Function, Handles, Instance, Meta};
use super::{interface, EngineSet, LoadError, Permissions, MAX_MODULE_BYTES};
use crate::config::FunctionLimits;
use crate::telemetry::Telemetry;

/// What preparing one module needs, taken from the [`Runtime`] by [`Runtime::preparer`].
pub struct Preparer {
    pub(super) set: Arc<EngineSet>,
    pub(super) name: Arc<str>,
    pub(super) limits: FunctionLimits,
    pub(super) config: BTreeMap<String, serde_json::Value>,
    pub(super) permissions: Permissions,
    pub(super) db: sled::Db,
    pub(super) kv_usage: Option<Arc<KvUsage>>,
    pub(super) telemetry: Telemetry,
    pub(super) free_failures: u32,
    pub(super) max_payload_bytes: usize,
}

impl Preparer {
    /// Validates `wasm` and makes its first instance (running its start function).
    pub fn prepare(self, wasm: &[u8]) -> Result<Prepared, LoadError> {
        if wasm.len() as u64 > MAX_MODULE_BYTES {
            return Err(LoadError::TooLarge(wasm.len() as u64));
        }
        let name = &*self.name;
        // Instrumented to say where a trap happens; as it is when that cannot be done.
        let (module, names) = match super::locate::instrument(wasm) {
            Some((located, names)) => (Module::new(&self.set.engine, &located[..]), Some(names)),
            None => (Module::new(&self.set.engine, wasm), None),
        };
        let module = module.map_err(LoadError::Invalid)?;
        interface::check_interface(&module)?;
        let digest = sha2::Sha256::digest(wasm);
        let version: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
        let kv = self.db.open_tree(format!("kv/{name}"))?;
        // A first load measures the namespace.
        let kv_usage = match self.kv_usage {
            Some(usage) => usage,
            None => Arc::new(KvUsage::measure(&kv)?),
        };
        metrics::gauge!("kiri_kv_bytes", "function" => name.to_string())
            .set(kv_usage.bytes() as f64);
        metrics::gauge!("kiri_kv_keys", "function" => name.to_string()).set(kv_usage.keys() as f64);
        let log_budget = Arc::new(LogBudget::new(self.limits.log_bytes_per_sec));
        let meta = Meta {
            version: version.into(),
            name: self.name.clone(),
            module,
            names,
            limits: self.limits,
            config: Arc::new(self.config),
            permissions: Arc::new(self.permissions),
            kv,
            kv_usage,
            log_budget,
            telemetry: self.telemetry,
            metrics: Handles::new(name),
            starts: instance::Starts::new(self.free_failures),
        };
        // One instance now: it validates the module's start and ABI version; the rest of
        // the pool is made on demand.
        let first = instantiate(&self.set, &meta, self.max_payload_bytes, &mut 0)?;
        let mut pool: Vec<Option<Instance>> =
            (0..meta.limits.concurrency.max(1)).map(|_| None).collect();
        pool[0] = Some(first);
        Ok(Prepared(Function { meta, pool }))
    }
}

/// A function validated and instantiated, ready for [`Runtime::install`].
pub struct Prepared(pub(super) Function);

impl Prepared {
    /// Its version (the first 16 hex digits of the module's SHA-256).
    pub fn version(&self) -> &str {
        &self.0.meta.version
    }
}

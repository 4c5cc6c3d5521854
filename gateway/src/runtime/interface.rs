//! What a module must be to load: its imports (only the ABI v1 host functions of `kiri`) and
//! exports (`kiri_abi_version`, `kiri_alloc`, `kiri_on_event`, `memory`), checked before
//! anything runs; and the errors of loading and invoking.

use kiri_abi::export;
use wasmi::{ExternType, Module, ValType};

use super::host;
use super::MAX_MODULE_BYTES;

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
    /// The function lost its instance too often in a row (traps, fuel, time, failed starts):
    /// no new one is started before the back-off has passed.
    #[error(
        "not started: the function failed {failures} times in a row; next start in {wait_ms} ms"
    )]
    Backoff {
        /// Failures in a row.
        failures: u32,
        /// Until the next start is allowed.
        wait_ms: u64,
    },
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
            InvokeError::Backoff { .. } => "backoff",
        }
    }
}

/// Checks imports and exports before anything runs.
pub(super) fn check_interface(module: &Module) -> Result<(), LoadError> {
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

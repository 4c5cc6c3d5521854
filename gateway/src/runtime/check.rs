//! Checking a module offline (`kiri check`, `kiri config check`, `kiri package`): everything
//! the gateway does when it loads one (compile, imports and exports with their types, the
//! start function and a WASI reactor's `_initialize` within the limits, the ABI version), on a
//! throwaway store, and a report of what the module is.

use std::collections::BTreeMap;

use wasmi::{ExternType, Module};

use super::{interface, LoadError, Permissions, Runtime};
use crate::config::{FunctionConfig, FunctionLimits};

/// What a module that passed the check is.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ModuleReport {
    /// Its size, bytes.
    pub bytes: usize,
    /// The version the gateway gives it (the first 16 hex digits of its SHA-256).
    pub version: String,
    /// The ABI version it reports.
    pub abi_version: i32,
    /// Whether it imports WASI preview 1.
    pub wasi: bool,
    /// Whether it is a WASI reactor (exports `_initialize`, run once per instance).
    pub reactor: bool,
    /// Its imports: `module.name`, with their types in the ABI's words.
    pub imports: Vec<String>,
    /// Its exports.
    pub exports: Vec<String>,
}

/// Checks `wasm` as the gateway would load it for `function` (its limits and configuration),
/// or with the default limits and no configuration.
pub fn check_module(
    wasm: &[u8],
    function: Option<&FunctionConfig>,
) -> Result<ModuleReport, LoadError> {
    let db = sled::Config::new().temporary(true).open()?;
    let mut rt = Runtime::new(usize::MAX, db);
    let prepared = match function {
        Some(cfg) => rt.prepare(cfg, wasm)?,
        None => rt
            .preparer_for(
                "check",
                FunctionLimits::default(),
                BTreeMap::new(),
                Permissions::default(),
            )
            .prepare(wasm)?,
    };
    let module = &prepared.0.meta.module;
    Ok(report(module, wasm.len(), prepared.version()))
}

fn report(module: &Module, bytes: usize, version: &str) -> ModuleReport {
    let imports: Vec<String> = module
        .imports()
        .map(|i| {
            let ty = match i.ty() {
                ExternType::Func(f) => interface::type_text(f.params(), f.results()),
                // Named as the WebAssembly text format does, not as Rust types.
                ExternType::Global(_) => "global".to_string(),
                ExternType::Table(_) => "table".to_string(),
                ExternType::Memory(_) => "memory".to_string(),
            };
            format!("{}.{} {ty}", i.module(), i.name())
        })
        .collect();
    let exports: Vec<String> = module
        .exports()
        .map(|e| e.name().to_string())
        .filter(|e| e != super::locate::CURRENT)
        .collect();
    ModuleReport {
        bytes,
        version: version.to_string(),
        abi_version: kiri_abi::ABI_VERSION,
        wasi: module
            .imports()
            .any(|i| i.module() == super::host::wasi::MODULE),
        reactor: exports.iter().any(|e| e == "_initialize"),
        imports,
        exports,
    }
}

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
    #[error("cannot read {path}: {error}")]
    Io {
        /// The module path.
        path: String,
        /// Why (in the message, not a separate cause: it would be printed twice).
        error: std::io::Error,
    },
    /// The file exceeds [`MAX_MODULE_BYTES`].
    #[error("module is {0} bytes; the limit is {MAX_MODULE_BYTES}")]
    TooLarge(u64),
    /// Not valid WebAssembly (or uses features wasmi does not support).
    #[error("not a valid WebAssembly module: {}", invalid_text(.0))]
    Invalid(wasmi::Error),
    /// A required export is missing or has the wrong type.
    #[error("the module does not export {name} as {expected} (a function exports memory, kiri_abi_version, kiri_alloc and kiri_on_event; the SDKs do it for you: docs/writing-functions.md)")]
    Export {
        /// The export.
        name: &'static str,
        /// Its required type.
        expected: &'static str,
    },
    /// The module imports something the host does not offer.
    #[error("the module imports {module}.{name}, which the gateway does not offer{hint}. The gateway offers kiri.{{emit, publish, respond, http_request, http_response, log, now_ms, config, config_json, kv_get, kv_put, kv_delete, kv_list, caller, input_format}} and WASI preview 1 (wasi_snapshot_preview1.*)")]
    Import {
        /// Import module.
        module: String,
        /// Import name.
        name: String,
        /// What to do about it, when known (starts with " (" or is empty).
        hint: String,
    },
    /// The module imports a host function with another type than the ABI's.
    #[error("the module declares {module}.{name} as {declared}; {defined_by} defines {defined}")]
    ImportType {
        /// Import module.
        module: String,
        /// Import name.
        name: String,
        /// The type the module declares.
        declared: String,
        /// The type the host defines.
        defined: String,
        /// Who defines it: "ABI v1" or "WASI preview 1".
        defined_by: &'static str,
    },
    /// The module is a WASI command, not a reactor.
    #[error("the module is a WASI command (it exports _start, and would run once as a program): build it as a reactor, which the gateway calls per event (Rust: crate-type = [\"cdylib\"]; C: clang -mexec-model=reactor; docs/writing-functions.md)")]
    Command,
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
    /// The guest called WASI's `proc_exit`.
    #[error("the function called proc_exit({0}), which ends its instance")]
    Exit(i32),
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

/// Why a module is not valid, on one line (wasmi's own text spells byte arrays out, one per
/// line).
fn invalid_text(e: &wasmi::Error) -> String {
    let text = e.to_string();
    if text.contains("magic header not detected") {
        return "it is not a WebAssembly file (it does not start with \\0asm)".into();
    }
    text.split_whitespace().collect::<Vec<_>>().join(" ")
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
            InvokeError::Exit(_) => "exit",
            InvokeError::Alloc(_) => "alloc",
            InvokeError::Failed(_) => "error",
            InvokeError::Instantiate(_) => "instantiate",
            InvokeError::Backoff { .. } => "backoff",
        }
    }
}

/// A function type in the ABI's words: `(i32, i32) -> i32`, `() -> i64`, `(i32, i32, i32)`.
pub fn type_text(params: &[ValType], results: &[ValType]) -> String {
    let names = |types: &[ValType]| {
        types
            .iter()
            .map(|t| format!("{t:?}").to_lowercase())
            .collect::<Vec<_>>()
            .join(", ")
    };
    match results {
        [] => format!("({})", names(params)),
        [one] => format!("({}) -> {}", names(params), names(&[*one])),
        more => format!("({}) -> ({})", names(params), names(more)),
    }
}

/// What to do about an import the gateway does not offer, when the fix is known.
fn import_hint(module: &str, name: &str) -> String {
    let hint = match (module, name) {
        ("env", "abort") => "AssemblyScript's runtime imports env.abort: build with the Kiri AssemblyScript SDK's asconfig, which routes it to kiri.log (docs/functions-assemblyscript.md), or pass `--use abort=<your handler>` to asc".to_string(),
        ("env", "memcpy" | "memset" | "memcmp" | "memmove" | "strlen" | "bcmp") => format!("the C compiler calls {name} for copies and comparisons and nothing defines it: include kiri.h, which defines memcpy, memset, memcmp and memmove (docs/functions-c.md), or build for wasm32-wasip1 with wasi-libc"),
        ("env", _) => format!("{name} is a symbol the linker left undefined: define it in the module or link the library that does"),
        ("wasi_unstable", _) => "the module was built for an old WASI snapshot (wasi_unstable): rebuild it for wasm32-wasip1".to_string(),
        (m, _) if m.starts_with("__wbindgen") || m.starts_with("wbg") => "the module needs wasm-bindgen's JavaScript glue: build it without wasm-bindgen (a cdylib for wasm32-unknown-unknown or wasm32-wasip1)".to_string(),
        (host::wasi::MODULE, _) => format!("{name} is not a WASI preview 1 function"),
        (kiri_abi::IMPORT_MODULE, _) => format!("{name} is not part of ABI v1 (check the spelling, or the SDK's version against this gateway's)"),
        _ => return String::new(),
    };
    format!(" ({hint})")
}

/// Checks imports and exports before anything runs.
pub(super) fn check_interface(module: &Module) -> Result<(), LoadError> {
    for import in module.imports() {
        let (m, name) = (import.module(), import.name());
        let refused = || LoadError::Import {
            module: m.to_string(),
            name: name.to_string(),
            hint: import_hint(m, name),
        };
        let ExternType::Func(ty) = import.ty() else {
            return Err(LoadError::Import {
                module: m.to_string(),
                name: name.to_string(),
                hint: " (the gateway offers functions only: the module must define its own memory, tables and globals)".into(),
            });
        };
        if m == kiri_abi::IMPORT_MODULE {
            let Some((_, params, results)) = host::SIGNATURES.iter().find(|(n, ..)| *n == name)
            else {
                return Err(refused());
            };
            if ty.params() != *params || ty.results() != *results {
                return Err(LoadError::ImportType {
                    module: m.to_string(),
                    name: name.to_string(),
                    declared: type_text(ty.params(), ty.results()),
                    defined: type_text(params, results),
                    defined_by: "ABI v1",
                });
            }
        } else if m == host::wasi::MODULE {
            if !host::wasi::FUNCTIONS.contains(&name) {
                return Err(refused());
            }
        } else {
            return Err(refused());
        }
    }
    if module.exports().any(|e| e.name() == "_start") {
        return Err(LoadError::Command);
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

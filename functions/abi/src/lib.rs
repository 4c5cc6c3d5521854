//! Kiri function ABI, version 1: the names, version number and result codes that the
//! gateway (host) and a function (guest) agree on. `docs/writing-functions.md` is the full contract;
//! this crate is its machine-readable half, shared by the host and the Rust SDK.
#![no_std]
#![deny(missing_docs, unsafe_code)]

/// The ABI version this crate describes; a module reports it from [`export::ABI_VERSION`].
pub const ABI_VERSION: i32 = 1;

/// The import module name under which the host offers its functions.
pub const IMPORT_MODULE: &str = "kiri";

/// Names a module must export.
pub mod export {
    /// The module's linear memory.
    pub const MEMORY: &str = "memory";
    /// `() -> i32`: returns the ABI version the module was built for.
    pub const ABI_VERSION: &str = "kiri_abi_version";
    /// `(len: i32) -> i32`: returns a pointer to `len` writable bytes, or 0.
    pub const ALLOC: &str = "kiri_alloc";
    /// `(topic_ptr, topic_len, payload_ptr, payload_len: i32, received_at_ms: i64) -> i32`.
    pub const ON_EVENT: &str = "kiri_on_event";
}

/// Names of the functions the host offers under [`IMPORT_MODULE`].
pub mod import {
    /// `(topic_ptr, topic_len, payload_ptr, payload_len: i32) -> i32`: a result for the cloud.
    pub const EMIT: &str = "emit";
    /// `(topic_ptr, topic_len, payload_ptr, payload_len: i32) -> i32`: publish on the local broker.
    pub const PUBLISH: &str = "publish";
    /// `(level, msg_ptr, msg_len: i32)`: a log line.
    pub const LOG: &str = "log";
    /// `() -> i64`: wall-clock time, milliseconds since the Unix epoch.
    pub const NOW_MS: &str = "now_ms";
    /// `(key_ptr, key_len, out_ptr, out_cap: i32) -> i32`: a configuration value.
    pub const CONFIG: &str = "config";
    /// `(key_ptr, key_len, out_ptr, out_cap: i32) -> i32`: a configuration value as JSON,
    /// typed (`30.5`, `true`, `"text"`, `[1, 2]`, `{"a": 1}`); an empty key gives the whole
    /// table as one object. Optional: an addition to version 1.
    pub const CONFIG_JSON: &str = "config_json";
    /// `(out_ptr, out_cap: i32) -> i32`: an HTTP call's request as one JSON object (`method`,
    /// `path`, `query`, `headers`); `NOT_FOUND` for other events. Optional: an addition to
    /// version 1.
    pub const HTTP_REQUEST: &str = "http_request";
    /// `(status, headers_ptr, headers_len: i32) -> i32`: the status (200 to 599) and headers
    /// (a JSON object of text values, or nothing) of an HTTP call's answer. Optional: an
    /// addition to version 1.
    pub const HTTP_RESPONSE: &str = "http_response";
    /// `(ptr, len: i32) -> i32`: set the response body of an HTTP invocation.
    pub const RESPOND: &str = "respond";
    /// `(key_ptr, key_len, out_ptr, out_cap: i32) -> i32`: read a value from the function's store.
    pub const KV_GET: &str = "kv_get";
    /// `(key_ptr, key_len, val_ptr, val_len: i32) -> i32`: write a value (committed with the invocation).
    pub const KV_PUT: &str = "kv_put";
    /// `(key_ptr, key_len: i32) -> i32`: delete a key (committed with the invocation).
    pub const KV_DELETE: &str = "kv_delete";
    /// `(prefix_ptr, prefix_len, out_ptr, out_cap: i32) -> i32`: the keys starting with a prefix.
    pub const KV_LIST: &str = "kv_list";
    /// `(out_ptr, out_cap: i32) -> i32`: the verified subject of the HTTP caller (a JWT's
    /// `sub`), its length; `NOT_FOUND` when the invocation has no verified caller (MQTT,
    /// timers, replays, or a call made with the admin token).
    pub const CALLER: &str = "caller";
    /// `() -> i32`: the format of the event's payload as the function receives it, one of
    /// [`crate::format`]. Optional: a module that does not import it is unaffected (an
    /// addition to version 1).
    pub const INPUT_FORMAT: &str = "input_format";
}

/// What [`import::INPUT_FORMAT`] returns: the format of the payload the function received.
pub mod format {
    /// No payload format: a timer tick (empty payload).
    pub const NONE: i32 = 0;
    /// One CBOR data item.
    pub const CBOR: i32 = 1;
    /// One JSON value, UTF-8.
    pub const JSON: i32 = 2;
    /// UTF-8 text.
    pub const TEXT: i32 = 3;
    /// Any bytes (also an HTTP invocation's body).
    pub const BYTES: i32 = 4;
    /// A Sparkplug B payload (protobuf), as it came.
    pub const SPARKPLUG_B: i32 = 5;
}

/// The longest caller subject the host passes, bytes (longer tokens are refused).
pub const MAX_CALLER_BYTES: usize = 256;

/// Result codes returned by host functions. Non-negative means success.
pub mod code {
    /// Success.
    pub const OK: i32 = 0;
    /// A topic or payload is larger than the gateway allows.
    pub const TOO_LARGE: i32 = -1;
    /// The invocation has used up its allowance of outputs (count or bytes).
    pub const LIMIT: i32 = -2;
    /// The requested item (a configuration key) does not exist.
    pub const NOT_FOUND: i32 = -3;
    /// The function's configuration does not allow this topic (`publish` / `emit` lists), or
    /// the HTTP caller's token does not grant this topic or key-value prefix.
    pub const DENIED: i32 = -5;
    /// A topic is not valid UTF-8, is empty, or contains `+`, `#` or NUL.
    pub const INVALID: i32 = -6;
}

/// Log levels for [`import::LOG`].
pub mod level {
    /// Something failed.
    pub const ERROR: i32 = 0;
    /// Something looks wrong.
    pub const WARN: i32 = 1;
    /// Normal operation.
    pub const INFO: i32 = 2;
    /// Detail for debugging.
    pub const DEBUG: i32 = 3;
}

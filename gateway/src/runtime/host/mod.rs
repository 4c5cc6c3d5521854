//! The host side of ABI v1: the functions a module may import from `kiri`.
//!
//! Every pointer and length from the guest is bounds-checked against its memory; a bad one
//! is a guest bug and traps. Recoverable failures (a topic that is not valid, an output over
//! the limits, a missing config key) return the negative ABI codes of `kiri_abi::code`.
//!
//! Time: every host call first checks the invocation's wall-clock deadline
//! (`limits.timeout_ms`, in [`HostState::deadline`]) and traps with [`DeadlineExceeded`] once
//! it has passed, so a guest that calls the host in a loop (or whose start function does) is
//! stopped within one host call of its limit, whatever the fuel left. Refusals of outputs and
//! of a caller's prefixes are counted each time and logged once per invocation.

use std::time::Instant;

mod http;
mod kv;
mod log;
mod shares;
mod state;
pub mod wasi;

use kiri_abi::{code, import, IMPORT_MODULE};
use wasmi::{Caller, Error, Extern, Linker, Memory, ValType};

use crate::net::topic;
pub use log::LogSink;
pub use shares::{KvCharge, KvUsage, LogBudget};
pub use state::HostState;

/// Longest topic a function may emit or publish to, bytes.
pub const MAX_TOPIC_BYTES: usize = 1024;
/// Log lines kept per invocation; more are dropped and counted.
pub const MAX_LOG_LINES: u32 = 100;
/// Longest log line kept, bytes.
pub const MAX_LOG_BYTES: usize = 4096;

/// Where an output goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destination {
    /// The cloud, through the outbox.
    Cloud,
    /// The local broker.
    Local,
}

/// One output of an invocation; kept until the invocation succeeds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    /// Cloud or local.
    pub destination: Destination,
    /// Topic as the function gave it.
    pub topic: String,
    /// Payload.
    pub payload: Vec<u8>,
}

/// A host call found the invocation (or the start function) past its wall-clock deadline.
#[derive(Debug)]
pub struct DeadlineExceeded;

impl std::fmt::Display for DeadlineExceeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the wall-clock limit (limits.timeout_ms) passed during a host call")
    }
}

impl wasmi::errors::HostError for DeadlineExceeded {}

/// Traps with [`DeadlineExceeded`] when the caller's deadline has passed.
fn deadline(caller: &Caller<'_, HostState>) -> Result<(), Error> {
    if Instant::now() >= caller.data().deadline {
        return Err(Error::host(DeadlineExceeded));
    }
    Ok(())
}

fn memory(caller: &Caller<'_, HostState>) -> Result<Memory, Error> {
    caller
        .get_export(kiri_abi::export::MEMORY)
        .and_then(Extern::into_memory)
        .ok_or_else(|| Error::new("module exports no memory"))
}

/// Longest config or KV key, bytes.
pub const MAX_KEY_BYTES: usize = 256;
/// Keys returned by one `kv_list` call, at most.
pub const MAX_LIST_KEYS: usize = 1024;

/// Wasm pointers and lengths are unsigned 32-bit values carried in `i32`s.
fn range(ptr: i32, len: i32, size: usize) -> Result<std::ops::Range<usize>, Error> {
    let (p, l) = (ptr as u32 as usize, len as u32 as usize);
    match p.checked_add(l) {
        Some(end) if end <= size => Ok(p..end),
        _ => Err(Error::new("pointer and length outside the module's memory")),
    }
}

fn output(
    mut caller: Caller<'_, HostState>,
    destination: Destination,
    args: [i32; 4],
) -> Result<i32, Error> {
    let [tp, tl, pp, pl] = args;
    deadline(&caller)?;
    let mem = memory(&caller)?;
    let (data, state) = mem.data_and_store_mut(&mut caller);
    let topic = range(tp, tl, data.len())?;
    let payload = range(pp, pl, data.len())?;
    // Sizes first: nothing below may cost time in proportion to a length the guest chose.
    if topic.len() > MAX_TOPIC_BYTES || payload.len() > state.max_payload_bytes {
        return Ok(code::TOO_LARGE);
    }
    let (topic, payload) = (&data[topic], &data[payload]);
    let Ok(topic) = std::str::from_utf8(topic) else {
        return Ok(code::INVALID);
    };
    if topic::validate_name(topic).is_err() {
        return Ok(code::INVALID);
    }
    if !state.caller_grants(topic.as_bytes(), "topic") {
        return Ok(code::DENIED);
    }
    let allowed = match destination {
        Destination::Cloud => &state.permissions.emit,
        Destination::Local => &state.permissions.publish,
    };
    if !allowed.iter().any(|f| topic::matches(f, topic)) {
        let kind = match destination {
            Destination::Cloud => "emit",
            Destination::Local => "publish",
        };
        metrics::counter!("kiri_output_denied_total", "function" => state.function.to_string(), "kind" => kind)
            .increment(1);
        if state.log_refusal() {
            tracing::warn!(
                function = &*state.function,
                trigger = state.log.topic(),
                topic,
                kind,
                "output to a topic the function may not use was refused (further refusals of this invocation are only counted)"
            );
        }
        return Ok(code::DENIED);
    }
    if state.outputs.len() >= state.max_outputs
        || state.output_bytes + payload.len() > state.max_output_bytes
    {
        metrics::counter!("kiri_output_limit_hits_total", "function" => state.function.to_string())
            .increment(1);
        return Ok(code::LIMIT);
    }
    state.output_bytes += payload.len();
    state.outputs.push(Output {
        destination,
        topic: topic.to_string(),
        payload: payload.to_vec(),
    });
    Ok(code::OK)
}

/// Registers the ABI v1 host functions in `linker`.
pub fn add_to_linker(linker: &mut Linker<HostState>) -> Result<(), Error> {
    linker.func_wrap(
        IMPORT_MODULE,
        import::EMIT,
        |caller: Caller<'_, HostState>, tp: i32, tl: i32, pp: i32, pl: i32| {
            output(caller, Destination::Cloud, [tp, tl, pp, pl])
        },
    )?;
    linker.func_wrap(
        IMPORT_MODULE,
        import::PUBLISH,
        |caller: Caller<'_, HostState>, tp: i32, tl: i32, pp: i32, pl: i32| {
            output(caller, Destination::Local, [tp, tl, pp, pl])
        },
    )?;
    linker.func_wrap(
        IMPORT_MODULE,
        import::LOG,
        |mut caller: Caller<'_, HostState>, lvl: i32, p: i32, l: i32| -> Result<(), Error> {
            deadline(&caller)?;
            let mem = memory(&caller)?;
            let (data, state) = mem.data_and_store_mut(&mut caller);
            let line = range(p, l, data.len())?;
            state.log.line(lvl, &data[line]);
            Ok(())
        },
    )?;
    linker.func_wrap(
        IMPORT_MODULE,
        import::NOW_MS,
        |caller: Caller<'_, HostState>| -> Result<i64, Error> {
            deadline(&caller)?;
            Ok(crate::now_ms() as i64)
        },
    )?;
    linker.func_wrap(
        IMPORT_MODULE,
        import::CONFIG,
        |mut caller: Caller<'_, HostState>, kp: i32, kl: i32, op: i32, oc: i32| {
            lookup(
                &mut caller,
                [kp, kl, op, oc],
                code::NOT_FOUND,
                |state, key| {
                    let value = std::str::from_utf8(key)
                        .ok()
                        .and_then(|k| state.config.get(k));
                    Ok(value.map(config_text).ok_or(code::NOT_FOUND))
                },
            )
        },
    )?;
    linker.func_wrap(
        IMPORT_MODULE,
        import::CONFIG_JSON,
        |mut caller: Caller<'_, HostState>, kp: i32, kl: i32, op: i32, oc: i32| {
            lookup(
                &mut caller,
                [kp, kl, op, oc],
                code::NOT_FOUND,
                |state, key| {
                    let json = if key.is_empty() {
                        // The whole table, as one object.
                        serde_json::to_vec(&*state.config).ok()
                    } else {
                        std::str::from_utf8(key)
                            .ok()
                            .and_then(|k| state.config.get(k))
                            .and_then(|v| serde_json::to_vec(v).ok())
                    };
                    Ok(json.ok_or(code::NOT_FOUND))
                },
            )
        },
    )?;
    linker.func_wrap(
        IMPORT_MODULE,
        import::RESPOND,
        |mut caller: Caller<'_, HostState>, p: i32, l: i32| -> Result<i32, Error> {
            deadline(&caller)?;
            let mem = memory(&caller)?;
            let (data, state) = mem.data_and_store_mut(&mut caller);
            let body = range(p, l, data.len())?;
            if body.len() > state.max_payload_bytes {
                return Ok(code::TOO_LARGE);
            }
            state.response.body = Some(data[body].to_vec());
            Ok(code::OK)
        },
    )?;
    linker.func_wrap(
        IMPORT_MODULE,
        import::CALLER,
        |mut caller: Caller<'_, HostState>, op: i32, oc: i32| -> Result<i32, Error> {
            deadline(&caller)?;
            let mem = memory(&caller)?;
            let (data, state) = mem.data_and_store_mut(&mut caller);
            let out = range(op, oc, data.len())?;
            Ok(match &state.caller {
                Some(c) => answer(data, out, c.subject.as_bytes()),
                None => code::NOT_FOUND,
            })
        },
    )?;
    linker.func_wrap(
        IMPORT_MODULE,
        import::INPUT_FORMAT,
        |caller: Caller<'_, HostState>| -> i32 { caller.data().input_format },
    )?;
    http::add_to_linker(linker)?;
    kv::add_to_linker(linker)?;
    wasi::add_to_linker(linker)
}

/// A configuration value as `config` returns it: text as it is, anything else as JSON
/// (`30.5`, `true`, `[1,2]`).
fn config_text(v: &serde_json::Value) -> Vec<u8> {
    match v {
        serde_json::Value::String(s) => s.as_bytes().to_vec(),
        other => other.to_string().into_bytes(),
    }
}

/// Copies `value` to `out` (as much as fits) and returns its full length, ABI style.
fn answer(data: &mut [u8], out: std::ops::Range<usize>, value: &[u8]) -> i32 {
    let n = value.len().min(out.len());
    data[out.start..out.start + n].copy_from_slice(&value[..n]);
    i32::try_from(value.len()).unwrap_or(i32::MAX)
}

/// The shape `config` and `kv_get` share: read a key (over `MAX_KEY_BYTES`: `too_long`), look
/// it up, and answer into the caller's buffer, or with the code `find` gives (`NOT_FOUND`...).
fn lookup(
    caller: &mut Caller<'_, HostState>,
    [kp, kl, op, oc]: [i32; 4],
    too_long: i32,
    find: impl FnOnce(&mut HostState, &[u8]) -> Result<Result<Vec<u8>, i32>, Error>,
) -> Result<i32, Error> {
    deadline(caller)?;
    let mem = memory(caller)?;
    let (data, state) = mem.data_and_store_mut(caller);
    let key = range(kp, kl, data.len())?;
    let out = range(op, oc, data.len())?;
    if key.len() > MAX_KEY_BYTES {
        return Ok(too_long);
    }
    match find(state, &data[key])? {
        Ok(v) => Ok(answer(data, out, &v)),
        Err(code) => Ok(code),
    }
}

/// The functions `add_to_linker` defines under `kiri`, with their types (parameters, results);
/// a module importing anything else is refused at load.
pub const SIGNATURES: [(&str, &[ValType], &[ValType]); 15] = {
    use ValType::{I32, I64};
    [
        (import::EMIT, &[I32, I32, I32, I32], &[I32]),
        (import::PUBLISH, &[I32, I32, I32, I32], &[I32]),
        (import::RESPOND, &[I32, I32], &[I32]),
        (import::HTTP_REQUEST, &[I32, I32], &[I32]),
        (import::HTTP_RESPONSE, &[I32, I32, I32], &[I32]),
        (import::LOG, &[I32, I32, I32], &[]),
        (import::NOW_MS, &[], &[I64]),
        (import::CONFIG, &[I32, I32, I32, I32], &[I32]),
        (import::CONFIG_JSON, &[I32, I32, I32, I32], &[I32]),
        (import::KV_GET, &[I32, I32, I32, I32], &[I32]),
        (import::KV_PUT, &[I32, I32, I32, I32], &[I32]),
        (import::KV_DELETE, &[I32, I32], &[I32]),
        (import::KV_LIST, &[I32, I32, I32, I32], &[I32]),
        (import::CALLER, &[I32, I32], &[I32]),
        (import::INPUT_FORMAT, &[], &[I32]),
    ]
};

//! A stand-in host for native builds, so functions can be unit-tested with `cargo test`.
//!
//! State is per thread (each test thread has its own): set configuration with [`set_config`],
//! call your handler with an [`Event`](crate::Event), then inspect [`take_emits`],
//! [`take_publishes`] and [`take_logs`].

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::string::{String, ToString};
use std::vec::Vec;

#[derive(Default)]
struct State {
    config: HashMap<String, String>,
    config_json: BTreeMap<String, String>,
    http_request: Option<String>,
    http_response: Option<(i32, String)>,
    emits: Vec<(String, Vec<u8>)>,
    publishes: Vec<(String, Vec<u8>)>,
    logs: Vec<(i32, String)>,
    now_ms: i64,
    kv: BTreeMap<Vec<u8>, Vec<u8>>,
    response: Option<Vec<u8>>,
    caller: Option<(String, Vec<String>)>,
    input_format: i32,
}

std::thread_local! {
    static STATE: RefCell<State> = RefCell::new(State::default());
}

/// Sets a configuration value as the gateway would from the function's `config` table, as
/// text (`config`) and as a JSON string (`config_json`).
pub fn set_config(key: &str, value: &str) {
    STATE.with(|s| {
        let mut s = s.borrow_mut();
        s.config.insert(key.to_string(), value.to_string());
        s.config_json
            .insert(key.to_string(), std::format!("{value:?}"));
    });
}

/// Makes the following calls look like HTTP invocations by a verified caller: `subject` is
/// what [`caller`](crate::caller) returns, and, as on the gateway, topics and key-value keys
/// must then start with one of `prefixes` (else [`Error::DENIED`](crate::Error::DENIED)). `None` clears it.
pub fn set_caller(caller: Option<(&str, &[&str])>) {
    let caller = caller.map(|(s, p)| (s.to_string(), p.iter().map(|p| p.to_string()).collect()));
    STATE.with(|s| s.borrow_mut().caller = caller);
}

/// Sets what [`input_format`](crate::input_format) returns for the following calls, one of
/// [`abi::format`](crate::abi::format) (the gateway sets it for each event).
pub fn set_input_format(code: i32) {
    STATE.with(|s| s.borrow_mut().input_format = code);
}

pub(crate) fn input_format() -> i32 {
    STATE.with(|s| s.borrow().input_format)
}

/// Whether the current caller (if any) may use `name` (a topic or a key).
fn granted(name: &[u8]) -> bool {
    STATE.with(|s| match &s.borrow().caller {
        None => true,
        Some((_, prefixes)) => prefixes.iter().any(|p| name.starts_with(p.as_bytes())),
    })
}

/// Sets what [`now_ms`](crate::now_ms) returns.
pub fn set_now_ms(ms: i64) {
    STATE.with(|s| s.borrow_mut().now_ms = ms);
}

/// The function's key-value state (the mock commits every write at once).
pub fn kv_snapshot() -> BTreeMap<Vec<u8>, Vec<u8>> {
    STATE.with(|s| s.borrow().kv.clone())
}

/// The body last set with [`respond`](crate::respond), taken.
pub fn take_response() -> Option<Vec<u8>> {
    STATE.with(|s| s.borrow_mut().response.take())
}

/// Results emitted since the last call, as `(topic, payload)`.
pub fn take_emits() -> Vec<(String, Vec<u8>)> {
    STATE.with(|s| core::mem::take(&mut s.borrow_mut().emits))
}

/// Local publishes since the last call, as `(topic, payload)`.
pub fn take_publishes() -> Vec<(String, Vec<u8>)> {
    STATE.with(|s| core::mem::take(&mut s.borrow_mut().publishes))
}

/// Log lines since the last call, as `(level, text)`.
pub fn take_logs() -> Vec<(i32, String)> {
    STATE.with(|s| core::mem::take(&mut s.borrow_mut().logs))
}

fn text(bytes: &[u8]) -> Option<String> {
    core::str::from_utf8(bytes).ok().map(ToString::to_string)
}

fn valid_topic(topic: &[u8]) -> Option<String> {
    text(topic).filter(|t| !t.is_empty() && !t.contains(['+', '#', '\0']))
}

pub(crate) fn caller(out: &mut [u8]) -> i32 {
    STATE.with(|s| match &s.borrow().caller {
        Some((subject, _)) => copy_out(subject.as_bytes(), out),
        None => crate::abi::code::NOT_FOUND,
    })
}

pub(crate) fn emit(topic: &[u8], payload: &[u8]) -> i32 {
    if !granted(topic) {
        return crate::abi::code::DENIED;
    }
    match valid_topic(topic) {
        Some(t) => STATE.with(|s| s.borrow_mut().emits.push((t, payload.to_vec()))),
        None => return crate::abi::code::INVALID,
    }
    crate::abi::code::OK
}

pub(crate) fn publish(topic: &[u8], payload: &[u8]) -> i32 {
    if !granted(topic) {
        return crate::abi::code::DENIED;
    }
    match valid_topic(topic) {
        Some(t) => STATE.with(|s| s.borrow_mut().publishes.push((t, payload.to_vec()))),
        None => return crate::abi::code::INVALID,
    }
    crate::abi::code::OK
}

pub(crate) fn respond(body: &[u8]) -> i32 {
    STATE.with(|s| s.borrow_mut().response = Some(body.to_vec()));
    crate::abi::code::OK
}

pub(crate) fn log(level: i32, msg: &[u8]) {
    let line = String::from_utf8_lossy(msg).into_owned();
    STATE.with(|s| s.borrow_mut().logs.push((level, line)));
}

pub(crate) fn now_ms() -> i64 {
    STATE.with(|s| s.borrow().now_ms)
}

/// Sets a typed configuration value as JSON (`"30"`, `"[1, 2]"`): what `config_json` returns
/// for `key`. (Set what `config` returns with [`set_config`].)
pub fn set_config_json(key: &str, json: &str) {
    STATE.with(|s| {
        s.borrow_mut()
            .config_json
            .insert(key.to_string(), json.to_string())
    });
}

/// Makes the following calls look like HTTP calls with this request (the JSON object
/// `http_request` returns: `method`, `path`, `query`, `headers`); `None` clears it.
pub fn set_http_request(json: Option<&str>) {
    STATE.with(|s| s.borrow_mut().http_request = json.map(|j| j.to_string()));
}

/// The status and headers JSON the function last set with `http_response`.
pub fn take_http_response() -> Option<(i32, String)> {
    STATE.with(|s| s.borrow_mut().http_response.take())
}

pub(crate) fn http_request(out: &mut [u8]) -> i32 {
    STATE.with(|s| match &s.borrow().http_request {
        Some(json) => copy_out(json.as_bytes(), out),
        None => crate::abi::code::NOT_FOUND,
    })
}

pub(crate) fn http_response(status: i32, headers: &[u8]) -> i32 {
    if !(200..=599).contains(&status) {
        return crate::abi::code::INVALID;
    }
    let headers = String::from_utf8_lossy(headers).into_owned();
    STATE.with(|s| s.borrow_mut().http_response = Some((status, headers)));
    crate::abi::code::OK
}

pub(crate) fn config_json(key: &[u8], out: &mut [u8]) -> i32 {
    let Some(key) = text(key) else {
        return crate::abi::code::NOT_FOUND;
    };
    STATE.with(|s| {
        let s = s.borrow();
        let json = if key.is_empty() {
            let fields: Vec<String> = s
                .config_json
                .iter()
                .map(|(k, v)| std::format!("{k:?}:{v}"))
                .collect();
            Some(std::format!("{{{}}}", fields.join(",")))
        } else {
            s.config_json.get(&key).cloned()
        };
        match json {
            Some(v) => copy_out(v.as_bytes(), out),
            None => crate::abi::code::NOT_FOUND,
        }
    })
}

pub(crate) fn config(key: &[u8], out: &mut [u8]) -> i32 {
    let Some(key) = text(key) else {
        return crate::abi::code::NOT_FOUND;
    };
    STATE.with(|s| match s.borrow().config.get(&key) {
        Some(v) => {
            let n = v.len().min(out.len());
            out[..n].copy_from_slice(&v.as_bytes()[..n]);
            v.len() as i32
        }
        None => crate::abi::code::NOT_FOUND,
    })
}

fn copy_out(value: &[u8], out: &mut [u8]) -> i32 {
    let n = value.len().min(out.len());
    out[..n].copy_from_slice(&value[..n]);
    value.len() as i32
}

pub(crate) fn kv_get(key: &[u8], out: &mut [u8]) -> i32 {
    if !granted(key) {
        return crate::abi::code::DENIED;
    }
    STATE.with(|s| match s.borrow().kv.get(key) {
        Some(v) => copy_out(v, out),
        None => crate::abi::code::NOT_FOUND,
    })
}

pub(crate) fn kv_put(key: &[u8], value: &[u8]) -> i32 {
    if !granted(key) {
        return crate::abi::code::DENIED;
    }
    STATE.with(|s| s.borrow_mut().kv.insert(key.to_vec(), value.to_vec()));
    crate::abi::code::OK
}

pub(crate) fn kv_delete(key: &[u8]) -> i32 {
    if !granted(key) {
        return crate::abi::code::DENIED;
    }
    STATE.with(|s| s.borrow_mut().kv.remove(key));
    crate::abi::code::OK
}

pub(crate) fn kv_list(prefix: &[u8], out: &mut [u8]) -> i32 {
    if !granted(prefix) {
        return crate::abi::code::DENIED;
    }
    let mut encoded = Vec::new();
    STATE.with(|s| {
        for k in s.borrow().kv.keys().filter(|k| k.starts_with(prefix)) {
            encoded.extend_from_slice(&(k.len() as u16).to_be_bytes());
            encoded.extend_from_slice(k);
        }
    });
    copy_out(&encoded, out)
}

pub(crate) fn alloc(_len: i32) -> i32 {
    // Native tests call the handler directly with an `Event`; nothing is written by a host.
    0
}

#[cfg(test)]
mod tests {
    use crate::{caller, emit, kv, Error};

    #[test]
    fn a_caller_is_limited_to_its_prefixes() {
        let mut buf = [0u8; 64];
        assert_eq!(caller(&mut buf), None);
        assert_eq!(emit("B/x", b"1"), Ok(()));
        super::set_caller(Some(("alice", &["alice/"])));
        assert_eq!(caller(&mut buf), Some("alice"));
        assert_eq!(emit("alice/x", b"1"), Ok(()));
        assert_eq!(emit("bob/x", b"1"), Err(Error::DENIED));
        assert_eq!(kv::put(b"alice/k", b"v"), Ok(()));
        assert_eq!(kv::put(b"bob/k", b"v"), Err(Error::DENIED));
        assert!(kv::list(b"bob/", &mut buf).is_none());
        super::set_caller(None);
        assert_eq!(caller(&mut buf), None);
        assert_eq!(kv::put(b"bob/k", b"v"), Ok(()));
    }
}

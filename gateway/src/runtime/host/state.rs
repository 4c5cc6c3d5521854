//! [`HostState`]: what the host functions of one instance see, and the checks they share
//! (a caller's prefixes, the key-value quota, refusals logged once per invocation).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use kiri_abi::code;
use wasmi::{Error, StoreLimits};

use super::{KvCharge, KvUsage, LogSink, Output, MAX_KEY_BYTES};

/// Per-instance state the host functions see.
pub struct HostState {
    pub(crate) limits: StoreLimits,
    pub(crate) function: Arc<str>,
    pub(crate) config: Arc<BTreeMap<String, serde_json::Value>>,
    pub(crate) permissions: Arc<crate::runtime::Permissions>,
    pub(crate) outputs: Vec<Output>,
    pub(crate) output_bytes: usize,
    /// Where its log lines go (the `log` import, and WASI's stdout and stderr).
    pub(crate) log: Arc<LogSink>,
    /// WASI preview 1: no files, sockets, environment or arguments; clocks and random;
    /// stdout and stderr into `log`.
    pub(crate) wasi: wasmi_wasi::WasiCtx,
    pub(crate) max_outputs: usize,
    pub(crate) max_output_bytes: usize,
    pub(crate) max_payload_bytes: usize,
    pub(crate) kv: sled::Tree,
    /// This invocation's KV writes (`None` = delete), applied only if it succeeds.
    pub(crate) kv_writes: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    pub(crate) max_kv_value_bytes: usize,
    pub(crate) max_kv_writes: usize,
    /// The function's committed key-value usage, and its quota.
    pub(crate) kv_usage: Arc<KvUsage>,
    pub(crate) kv_max_bytes: u64,
    pub(crate) kv_max_keys: u64,
    /// This invocation's change to the usage: bytes, keys.
    pub(crate) kv_delta: (i64, i64),
    /// What `respond` and `http_response` set (HTTP invocations answer with it).
    pub(crate) response: crate::runtime::HttpAnswer,
    /// This invocation's HTTP request, if it is an HTTP call.
    pub(crate) http: Option<Arc<crate::runtime::HttpRequest>>,
    /// The verified HTTP caller of this invocation, if any.
    pub(crate) caller: Option<Arc<crate::runtime::Caller>>,
    /// The format of this invocation's payload (`input_format`), a [`kiri_abi::format`] code.
    pub(crate) input_format: i32,
    /// When this invocation (or the start function) must end: host calls trap after it.
    pub(crate) deadline: Instant,
    /// Whether this invocation already logged a refusal (the rest are only counted).
    pub(crate) refusal_logged: bool,
}

impl HostState {
    /// Clears what one invocation collected; the next is of an event on `topic`.
    pub(crate) fn reset(&mut self, topic: &str) {
        self.outputs.clear();
        self.output_bytes = 0;
        self.log.reset(topic);
        self.kv_writes.clear();
        self.kv_delta = (0, 0);
        self.response = crate::runtime::HttpAnswer::default();
        self.http = None;
        self.caller = None;
        self.input_format = kiri_abi::format::NONE;
        self.refusal_logged = false;
    }

    /// Whether to log a refusal now: the first of this invocation only.
    pub(super) fn log_refusal(&mut self) -> bool {
        !std::mem::replace(&mut self.refusal_logged, true)
    }

    /// Whether this invocation's caller (if any) grants `name`, a topic or a key; a refusal
    /// is counted, and logged once per invocation.
    pub(super) fn caller_grants(&mut self, name: &[u8], kind: &'static str) -> bool {
        let Some(caller) = &self.caller else {
            return true;
        };
        if caller.grants(name) {
            return true;
        }
        metrics::counter!("kiri_caller_denied_total", "function" => self.function.to_string(), "kind" => kind)
            .increment(1);
        let subject = caller.subject.clone();
        if self.log_refusal() {
            tracing::warn!(
                function = &*self.function,
                topic = self.log.topic(),
                subject,
                name = ?String::from_utf8_lossy(name),
                kind,
                "the caller's token does not grant this prefix (further refusals of this invocation are only counted)"
            );
        }
        false
    }

    /// A key's value as this invocation sees it: its own writes first, then the store.
    pub(super) fn kv_read(&self, key: &[u8]) -> Result<Option<Vec<u8>>, Error> {
        if let Some(v) = self.kv_writes.get(key) {
            return Ok(v.clone());
        }
        let stored = self
            .kv
            .get(key)
            .map_err(|e| Error::new(format!("kv store: {e}")))?;
        Ok(stored.map(|v| v.to_vec()))
    }

    /// This invocation's change to the key-value usage, to settle once it is committed.
    pub(crate) fn take_kv_charge(&mut self) -> KvCharge {
        let (bytes, keys) = std::mem::take(&mut self.kv_delta);
        KvCharge {
            function: self.function.clone(),
            usage: self.kv_usage.clone(),
            bytes,
            keys,
        }
    }

    /// The size a key's entry counts for (key and value bytes), as this invocation sees it;
    /// `None` if it does not exist.
    pub(super) fn kv_entry_size(&self, key: &[u8]) -> Result<Option<i64>, Error> {
        if let Some(v) = self.kv_writes.get(key) {
            return Ok(v.as_ref().map(|v| (key.len() + v.len()) as i64));
        }
        let stored = self
            .kv
            .get(key)
            .map_err(|e| Error::new(format!("kv store: {e}")))?;
        Ok(stored.map(|v| (key.len() + v.len()) as i64))
    }

    pub(super) fn kv_write(&mut self, key: &[u8], value: Option<&[u8]>) -> Result<i32, Error> {
        if key.is_empty() || key.len() > MAX_KEY_BYTES {
            return Ok(code::INVALID);
        }
        if !self.caller_grants(key, "kv") {
            return Ok(code::DENIED);
        }
        if value.is_some_and(|v| v.len() > self.max_kv_value_bytes) {
            return Ok(code::TOO_LARGE);
        }
        if !self.kv_writes.contains_key(key) && self.kv_writes.len() >= self.max_kv_writes {
            return Ok(code::LIMIT);
        }
        // The quota: a write that grows the namespace past it is refused; shrinking always
        // may. Checked against what is committed plus this invocation's own writes.
        let before = self.kv_entry_size(key)?;
        let after = value.map(|v| (key.len() + v.len()) as i64);
        let added = (
            after.unwrap_or(0) - before.unwrap_or(0),
            after.is_some() as i64 - before.is_some() as i64,
        );
        let delta = (self.kv_delta.0 + added.0, self.kv_delta.1 + added.1);
        let over_bytes = added.0 > 0 && self.kv_usage.bytes() + delta.0 > self.kv_max_bytes as i64;
        let over_keys = added.1 > 0 && self.kv_usage.keys() + delta.1 > self.kv_max_keys as i64;
        if over_bytes || over_keys {
            let which = if over_keys { "keys" } else { "bytes" };
            metrics::counter!("kiri_kv_quota_refused_total", "function" => self.function.to_string(), "quota" => which)
                .increment(1);
            if self.log_refusal() {
                tracing::warn!(
                    function = &*self.function,
                    topic = self.log.topic(),
                    key = ?String::from_utf8_lossy(key),
                    "key-value write over the function's quota (limits.kv_max_{which}): refused with LIMIT (further refusals of this invocation are only counted)"
                );
            }
            return Ok(code::LIMIT);
        }
        self.kv_delta = delta;
        self.kv_writes
            .insert(key.to_vec(), value.map(<[u8]>::to_vec));
        Ok(code::OK)
    }
}

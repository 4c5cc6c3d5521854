//! `[[functions]]`: the functions to run, their triggers, permissions and sandbox limits.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::formats::{Deliver, InputFormat};
use crate::net::topic;

/// One trigger: a topic filter, written as a string, or as a table with the payload format
/// it accepts: `{ topic = "zigbee2mqtt/+", format = "json" }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trigger {
    /// The topic filter.
    pub topic: String,
    /// The payload format it accepts (unset: the function's `format`).
    pub format: Option<InputFormat>,
}

impl From<&str> for Trigger {
    fn from(topic: &str) -> Trigger {
        Trigger {
            topic: topic.to_string(),
            format: None,
        }
    }
}

#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum TriggerForm {
    Filter(String),
    Table(TriggerTable),
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TriggerTable {
    topic: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    format: Option<InputFormat>,
}

impl Serialize for Trigger {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.format {
            None => TriggerForm::Filter(self.topic.clone()),
            Some(format) => TriggerForm::Table(TriggerTable {
                topic: self.topic.clone(),
                format: Some(format),
            }),
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for Trigger {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Trigger, D::Error> {
        Ok(match TriggerForm::deserialize(d).map_err(|_| {
            serde::de::Error::custom(
                "a trigger is a topic filter, or a table { topic = \"...\", format = \"cbor\" | \"json\" | \"text\" | \"bytes\" | \"sparkplug_b\" }",
            )
        })? {
            TriggerForm::Filter(topic) => Trigger {
                topic,
                format: None,
            },
            TriggerForm::Table(TriggerTable { topic, format }) => Trigger { topic, format },
        })
    }
}

fn is_as_received(d: &Deliver) -> bool {
    *d == Deliver::AsReceived
}

/// The shortest `every` accepted.
pub const MIN_EVERY: std::time::Duration = std::time::Duration::from_millis(100);
/// The longest `every` accepted (100 years): the first tick must be a time the clock can hold.
pub const MAX_EVERY: std::time::Duration = std::time::Duration::from_secs(100 * 365 * 86_400);

/// `[[functions]]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FunctionConfig {
    /// Unique name: `[A-Za-z0-9_-]`, 1 to 64 characters.
    pub name: String,
    /// Path to the `.wasm` module (relative to the config file's folder).
    pub module: PathBuf,
    /// MQTT topic filters (`+` and `#` allowed) that trigger the function, each with the
    /// payload format it accepts if it names one.
    #[serde(default)]
    pub triggers: Vec<Trigger>,
    /// The payload format its triggers accept unless they name their own (unset: CBOR that
    /// does not also read as JSON; see [`crate::formats::check`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<InputFormat>,
    /// What the function receives: the payload as it came, or converted to CBOR or JSON.
    #[serde(default, skip_serializing_if = "is_as_received")]
    pub deliver: Deliver,
    /// Run on a fixed interval (`"10s"`, `"5m"`, `"1h 30m"`), with topic `$timer`.
    pub every: Option<String>,
    /// Run on a cron schedule (5 fields, or 6 with seconds first; UTC), with topic `$timer`.
    pub cron: Option<String>,
    /// Values the function reads with the `config` host call (as text) and `config_json`
    /// (typed: numbers, booleans, text, arrays and tables, as JSON).
    #[serde(default)]
    pub config: BTreeMap<String, serde_json::Value>,
    /// Automatic retries of a failed event (after the first attempt), through the dead letters.
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// Delay before the first retry, ms; it doubles for each further one.
    #[serde(default = "default_retry_backoff_ms")]
    pub retry_backoff_ms: u64,
    /// Instances that may run at once: 1 (the default) keeps the order of events; more run
    /// events in parallel, in any order.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// Whether `/invoke/<name>` may run it (off by default).
    #[serde(default)]
    pub http: bool,
    /// Request headers an HTTP call passes to the function (`http_request`), names in lower
    /// case. `authorization` never passes.
    #[serde(default = "default_http_headers")]
    pub http_headers: Vec<String>,
    /// Topic filters the function may `publish` to on the local broker (none by default).
    #[serde(default)]
    pub publish: Vec<String>,
    /// Topic filters the function may `emit` to for the cloud (all by default).
    #[serde(default = "all_topics")]
    pub emit: Vec<String>,
    /// Sandbox limits.
    #[serde(default)]
    pub limits: FunctionLimits,
}

fn default_http_headers() -> Vec<String> {
    vec!["content-type".into(), "accept".into()]
}

impl FunctionConfig {
    /// The trigger filters.
    pub fn filters(&self) -> Vec<String> {
        self.triggers.iter().map(|t| t.topic.clone()).collect()
    }

    /// The payload format a message on `topic` must be in: the first matching trigger's,
    /// else the function's (`None`: the default).
    pub fn format_for(&self, topic: &str) -> Option<InputFormat> {
        self.triggers
            .iter()
            .find(|t| t.format.is_some() && topic::matches(&t.topic, topic))
            .and_then(|t| t.format)
            .or(self.format)
    }

    /// Checks one function's settings (the module itself is checked when it is loaded).
    pub fn validate(&self) -> Result<(), String> {
        let ok_name = !self.name.is_empty()
            && self.name.len() <= 64
            && self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !ok_name {
            return Err(format!(
                "function name {:?}: use 1-64 of A-Z a-z 0-9 - _",
                self.name
            ));
        }
        if self.triggers.is_empty() && self.every.is_none() && self.cron.is_none() && !self.http {
            return Err(format!(
                "function {:?} has no triggers, every, cron or http: nothing would run it",
                self.name
            ));
        }
        for h in &self.http_headers {
            let lower = h.to_ascii_lowercase();
            if axum::http::HeaderName::from_bytes(lower.as_bytes()).is_err() {
                return Err(format!(
                    "function {:?}: http_headers: {h:?} is not a header name",
                    self.name
                ));
            }
            if lower == "authorization" || lower == "cookie" {
                return Err(format!(
                    "function {:?}: http_headers: {h:?} carries credentials and never passes to a function",
                    self.name
                ));
            }
        }
        let l = &self.limits;
        if l.kv_max_bytes > i64::MAX as u64 || l.kv_max_keys > i64::MAX as u64 {
            return Err(format!(
                "function {:?}: limits.kv_max_bytes and limits.kv_max_keys must be at most {}",
                self.name,
                i64::MAX
            ));
        }
        if let Some(every) = &self.every {
            match humantime::parse_duration(every) {
                Ok(d) if (MIN_EVERY..=MAX_EVERY).contains(&d) => {}
                Ok(_) => {
                    return Err(format!(
                        "function {:?}: every = {every:?} is shorter than 100ms or longer than 100 years",
                        self.name
                    ))
                }
                Err(e) => return Err(format!("function {:?}: every = {every:?}: {e}", self.name)),
            }
        }
        if let Some(cron) = &self.cron {
            // croner also takes a seventh field (years); the schedule Kiri documents is 5 or 6.
            if !(5..=6).contains(&cron.split_whitespace().count()) {
                return Err(format!(
                    "function {:?}: cron = {cron:?}: 5 fields (minute hour day-of-month month \
                     day-of-week), or 6 with seconds first",
                    self.name
                ));
            }
            if let Err(e) = cron.parse::<croner::Cron>() {
                return Err(format!("function {:?}: cron = {cron:?}: {e}", self.name));
            }
        }
        let filters = self.filters();
        let lists = [
            ("trigger", &filters),
            ("publish", &self.publish),
            ("emit", &self.emit),
        ];
        for (what, filters) in lists {
            for t in filters {
                if let Err(e) = topic::validate_filter(t) {
                    return Err(format!(
                        "function {:?}: {what} filter {t:?}: {e}",
                        self.name
                    ));
                }
            }
        }
        if self.retries > 100 || self.retry_backoff_ms > 86_400_000 {
            return Err(format!(
                "function {:?}: retries must be at most 100 and retry_backoff_ms at most 86400000 (a day)",
                self.name
            ));
        }
        if !(1..=64).contains(&self.concurrency) {
            return Err(format!(
                "function {:?}: concurrency must be 1 to 64",
                self.name
            ));
        }
        if self.limits.timeout_ms == 0 {
            return Err(format!(
                "function {:?}: limits.timeout_ms must be > 0",
                self.name
            ));
        }
        if !(16..=100_000).contains(&self.limits.max_call_depth) {
            return Err(format!(
                "function {:?}: limits.max_call_depth must be 16 to 100000",
                self.name
            ));
        }
        if self.limits.fuel == 0
            || self.limits.memory_bytes < 65536
            || self.limits.memory_bytes as u64 > 1 << 32
        {
            return Err(format!(
                "function {:?}: limits.fuel must be > 0 and limits.memory_bytes between 65536 and 4 GiB",
                self.name
            ));
        }
        Ok(())
    }
}

fn default_concurrency() -> usize {
    1
}

fn default_retries() -> u32 {
    2
}

fn default_retry_backoff_ms() -> u64 {
    1000
}

fn all_topics() -> Vec<String> {
    vec!["#".to_string()]
}

/// Per-invocation sandbox limits of a function.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FunctionLimits {
    /// CPU budget per invocation, in wasmi fuel units (about one per instruction).
    pub fuel: u64,
    /// Linear memory cap, bytes.
    pub memory_bytes: usize,
    /// `emit` plus `publish` calls per invocation, at most.
    pub max_outputs: usize,
    /// Total output payload bytes per invocation, at most.
    pub max_output_bytes: usize,
    /// Wall-clock time per invocation, milliseconds.
    pub timeout_ms: u64,
    /// Largest value one key-value write may store, bytes.
    pub kv_max_value_bytes: usize,
    /// Distinct keys one invocation may write or delete, at most.
    pub kv_max_writes: usize,
    /// The function's key-value namespace, bytes of keys and values at most: a write that
    /// would grow it past this is refused (`LIMIT`).
    pub kv_max_bytes: u64,
    /// The function's key-value namespace, keys at most.
    pub kv_max_keys: u64,
    /// Log bytes per second the function may write (a second's worth as burst); what is
    /// over is counted, not written.
    pub log_bytes_per_sec: u32,
    /// Nested calls (wasm function frames) at most; deeper recursion traps.
    pub max_call_depth: usize,
    /// Instances that may run at once (set from the function's `concurrency`).
    #[serde(skip)]
    pub concurrency: usize,
}

impl Default for FunctionLimits {
    fn default() -> Self {
        FunctionLimits {
            fuel: 10_000_000,
            memory_bytes: 16 << 20,
            max_outputs: 64,
            max_output_bytes: 1 << 20,
            timeout_ms: 1000,
            kv_max_value_bytes: 64 << 10,
            kv_max_writes: 256,
            kv_max_bytes: 16 << 20,
            kv_max_keys: 65_536,
            log_bytes_per_sec: 16 << 10,
            max_call_depth: 1000,
            concurrency: 1,
        }
    }
}

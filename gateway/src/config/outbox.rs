//! `[outbox]`: the bounds and policies of the durable queue of results.

use serde::{Deserialize, Serialize};

use super::value::opt_text;
use crate::net::topic;

/// What happens when the outbox is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WhenFull {
    /// Stop acknowledging inputs until the uplink drains room: back-pressure to the broker.
    Block,
    /// Delete the oldest records (forwarded log lines first, then normal priority, then high)
    /// to make room; each one counted.
    DropOldest,
    /// Keep what is held and drop the new results (the inputs are still processed and
    /// acknowledged); each one counted.
    RejectNew,
}

/// `[outbox]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutboxConfig {
    /// Records held at most.
    pub max_records: u64,
    /// Bytes held at most (record payloads plus headers).
    pub max_bytes: u64,
    /// Records one function may hold at most (its share; forwarded log lines included).
    /// Unset: three quarters of `max_records`.
    pub function_max_records: Option<u64>,
    /// Bytes one function may hold at most (its share). Unset: three quarters of `max_bytes`.
    pub function_max_bytes: Option<u64>,
    /// Policy when a bound is reached.
    pub when_full: WhenFull,
    /// Results older than this (humantime: `7d`, `12h`) are expired, counted and not sent.
    #[serde(deserialize_with = "opt_text")]
    pub ttl: Option<String>,
    /// Emitted topics matching one of these filters are high priority: they drain first.
    pub high_priority: Vec<String>,
    /// Free space to keep on the data directory's file system: below it, appends wait as if
    /// the outbox were full (whatever `when_full` says), so the store never runs out of disk.
    pub min_free_bytes: u64,
}

impl OutboxConfig {
    /// Records one function may hold: `function_max_records`, or three quarters of
    /// `max_records`.
    pub fn function_records(&self) -> u64 {
        self.function_max_records
            .unwrap_or(self.max_records - self.max_records / 4)
            .max(1)
    }

    /// Bytes one function may hold: `function_max_bytes`, or three quarters of `max_bytes`.
    pub fn function_bytes(&self) -> u64 {
        self.function_max_bytes
            .unwrap_or(self.max_bytes - self.max_bytes / 4)
            .max(1)
    }

    /// The TTL, parsed (validated with the config).
    pub fn ttl(&self) -> Option<std::time::Duration> {
        self.ttl
            .as_deref()
            .map(|t| humantime::parse_duration(t).expect("validated with the config"))
    }
}

impl Default for OutboxConfig {
    fn default() -> Self {
        OutboxConfig {
            max_records: 1_000_000,
            max_bytes: 256 << 20,
            function_max_records: None,
            function_max_bytes: None,
            when_full: WhenFull::Block,
            ttl: None,
            high_priority: Vec::new(),
            min_free_bytes: 64 << 20,
        }
    }
}

impl OutboxConfig {
    /// Checks the section on its own.
    pub(super) fn validate(&self) -> Result<(), String> {
        if let Some(ttl) = &self.ttl {
            match humantime::parse_duration(ttl) {
                Ok(d) if d >= std::time::Duration::from_secs(1) => {}
                Ok(_) => return Err(format!("outbox.ttl = {ttl:?} is shorter than 1s")),
                Err(e) => return Err(format!("outbox.ttl = {ttl:?}: {e}")),
            }
        }
        for t in &self.high_priority {
            if let Err(e) = topic::validate_filter(t) {
                return Err(format!("outbox.high_priority filter {t:?}: {e}"));
            }
        }
        for (key, v) in [
            ("outbox.max_records", self.max_records),
            ("outbox.max_bytes", self.max_bytes),
            (
                "outbox.function_max_records",
                self.function_max_records.unwrap_or(1),
            ),
            (
                "outbox.function_max_bytes",
                self.function_max_bytes.unwrap_or(1),
            ),
        ] {
            if v == 0 {
                return Err(format!("{key} must be at least 1"));
            }
        }
        Ok(())
    }
}

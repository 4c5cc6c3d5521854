//! A function's log lines, from the `log` import and (WASI) its stdout and stderr: bounded per
//! invocation ([`MAX_LOG_LINES`] lines of at most [`MAX_LOG_BYTES`]) and per second (the
//! function's `limits.log_bytes_per_sec`, shared by its instances); beyond, dropped and counted
//! in `kiri_function_log_dropped_total{function, reason}`.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use kiri_abi::level;

use super::{LogBudget, MAX_LOG_BYTES, MAX_LOG_LINES};
use crate::telemetry::Telemetry;

/// Where one instance's log lines go.
pub struct LogSink {
    function: Arc<str>,
    telemetry: Telemetry,
    budget: Arc<LogBudget>,
    /// Lines of the current invocation (or start).
    lines: AtomicU32,
    /// The topic of the current invocation's event (empty: the start function), named in
    /// each line of the gateway's log.
    topic: std::sync::Mutex<String>,
}

impl LogSink {
    pub fn new(function: Arc<str>, telemetry: Telemetry, budget: Arc<LogBudget>) -> LogSink {
        LogSink {
            function,
            telemetry,
            budget,
            lines: AtomicU32::new(0),
            topic: Default::default(),
        }
    }

    /// A new invocation, of an event on `topic`: its own allowance of lines.
    pub fn reset(&self, topic: &str) {
        self.lines.store(0, Ordering::Relaxed);
        let mut t = self.topic.lock().unwrap_or_else(|e| e.into_inner());
        t.clear();
        t.push_str(topic);
    }

    /// The topic of the current invocation's event.
    pub fn topic(&self) -> String {
        self.topic.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// One line at `lvl` (a [`kiri_abi::level`]); its first [`MAX_LOG_BYTES`] are kept.
    pub fn line(&self, lvl: i32, bytes: &[u8]) {
        let bytes = &bytes[..bytes.len().min(MAX_LOG_BYTES)];
        let lines = self.lines.fetch_add(1, Ordering::Relaxed) + 1;
        let over = if lines > MAX_LOG_LINES {
            Some("lines")
        } else if !self.budget.allow(bytes.len()) {
            Some("rate")
        } else {
            None
        };
        if let Some(reason) = over {
            metrics::counter!("kiri_function_log_dropped_total", "function" => self.function.to_string(), "reason" => reason)
                .increment(1);
            return;
        }
        let text = String::from_utf8_lossy(bytes);
        let function = &*self.function;
        let topic = self.topic.lock().unwrap_or_else(|e| e.into_inner());
        let topic = topic.as_str();
        let name = match lvl {
            level::ERROR => {
                tracing::error!(target: "kiri::function", function, topic = %topic, "{text}");
                "error"
            }
            level::WARN => {
                tracing::warn!(target: "kiri::function", function, topic = %topic, "{text}");
                "warn"
            }
            level::INFO => {
                tracing::info!(target: "kiri::function", function, topic = %topic, "{text}");
                "info"
            }
            _ => {
                tracing::debug!(target: "kiri::function", function, topic = %topic, "{text}");
                "debug"
            }
        };
        self.telemetry.log(function, name, text.into_owned());
    }
}

//! `[log]`: how the gateway writes its log (to stderr; `KIRI_LOG` sets the filter).

use serde::{Deserialize, Serialize};

/// `[log]`
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `text` (for people and journald) or `json` (one object per line, for log shippers);
    /// `kiri run --log-format` wins over it.
    pub format: LogFormat,
    /// Every so often (humantime: `5s`, `1m`), one INFO line of what happened since the last:
    /// events in, invocations, errors, results forwarded, the backlog, the uplink. Unset:
    /// no such line.
    pub summary: Option<String>,
}

impl LogConfig {
    /// `summary`, parsed (validated with the configuration).
    pub fn summary(&self) -> Option<std::time::Duration> {
        self.summary
            .as_deref()
            .and_then(|s| humantime::parse_duration(s).ok())
    }

    pub(super) fn validate(&self) -> Result<(), String> {
        if let Some(s) = &self.summary {
            match humantime::parse_duration(s) {
                Ok(d) if d >= std::time::Duration::from_secs(1) => {}
                Ok(_) => return Err(format!("log.summary = {s:?}: at least 1s")),
                Err(e) => {
                    return Err(format!(
                        "log.summary = {s:?}: {e} (a duration such as \"10s\" or \"1h\")"
                    ))
                }
            }
        }
        Ok(())
    }
}

/// The log's format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Lines of text: time, level, where, message, fields. Under systemd (journald's stream on
    /// stderr) without the time, which the journal adds, and with the level as the line's
    /// syslog priority.
    #[default]
    Text,
    /// One JSON object per line: `timestamp`, `level`, `target`, `fields` (with `message`),
    /// and the spans (`function`, ...).
    Json,
}

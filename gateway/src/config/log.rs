//! `[log]`: how the gateway writes its log (to stderr; `KIRI_LOG` sets the filter).

use serde::{Deserialize, Serialize};

/// `[log]`
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `text` (for people and journald) or `json` (one object per line, for log shippers);
    /// `kiri run --log-format` wins over it.
    pub format: LogFormat,
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

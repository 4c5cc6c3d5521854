//! `[dead_letters]`: how many failed or rejected inputs are kept.

use serde::{Deserialize, Serialize};

/// `[dead_letters]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeadLetterConfig {
    /// Records kept at most; beyond it the oldest is dropped (and counted).
    pub max_records: u64,
    /// Bytes kept at most; beyond it the oldest is dropped (and counted).
    pub max_bytes: u64,
    /// Bytes of each failed payload kept (entries cut shorter cannot be replayed).
    pub max_payload_bytes: usize,
}

impl Default for DeadLetterConfig {
    fn default() -> Self {
        DeadLetterConfig {
            max_records: 10_000,
            max_bytes: 64 << 20,
            max_payload_bytes: 256 << 10,
        }
    }
}

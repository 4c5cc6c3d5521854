//! `[gateway]`: identity and local storage.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::value::text;

/// `[gateway]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GatewayConfig {
    /// This gateway's id: part of topics and record ids.
    #[serde(deserialize_with = "text")]
    pub id: String,
    /// Where the store lives (relative paths are relative to the working directory).
    pub data_dir: PathBuf,
    /// Upper bound for the embedded store's page cache, in bytes.
    pub cache_bytes: u64,
    /// After each group commit, also `fsync` the store's log, so that what was acknowledged
    /// survives a power cut, not only a process crash (sled's own flush uses
    /// `sync_file_range`, which neither persists metadata nor flushes the drive's cache).
    pub fsync: bool,
    /// sled's background flush (with an fsync) runs every this many milliseconds; it bounds
    /// what a power cut can take from writes Kiri has not committed itself (acks' deletes).
    pub flush_every_ms: u64,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            id: "gw-01".into(),
            data_dir: "kiri-data".into(),
            cache_bytes: 16 << 20,
            fsync: true,
            flush_every_ms: 500,
        }
    }
}

impl GatewayConfig {
    /// Checks the section on its own.
    pub(super) fn validate(&self) -> Result<(), String> {
        let id = &self.id;
        if id.is_empty() || id.contains(['/', '+', '#', '\0']) {
            return Err(format!(
                "gateway.id {id:?} must be non-empty, without / + # or NUL"
            ));
        }
        Ok(())
    }
}

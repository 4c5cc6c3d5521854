//! `[deploy]`: signed function deployment over MQTT.

use serde::{Deserialize, Serialize};

/// `[deploy]`: functions pushed over MQTT as signed packages.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeployConfig {
    /// Public keys (`ed25519:<base64>`, as `kiri keygen` prints) whose packages are accepted;
    /// empty: deployment over MQTT is off.
    pub trusted_keys: Vec<String>,
    /// Groups this gateway belongs to: it also takes packages sent to `kiri/group/<group>/...`.
    pub groups: Vec<String>,
    /// Largest package accepted, bytes.
    pub max_package_bytes: usize,
    /// Versions of each deployed function kept for `kiri rollback`.
    pub keep_versions: usize,
    /// Function names that may hold deployed modules at once: with `keep_versions` and
    /// `max_package_bytes`, this bounds the disk deployments can take.
    pub max_functions: usize,
}

impl Default for DeployConfig {
    fn default() -> Self {
        DeployConfig {
            trusted_keys: Vec::new(),
            groups: Vec::new(),
            max_package_bytes: (1 << 20) - 4096,
            keep_versions: 3,
            max_functions: 32,
        }
    }
}

impl DeployConfig {
    /// Checks the section on its own.
    pub(super) fn validate(&self) -> Result<(), String> {
        for k in &self.trusted_keys {
            crate::crypto::keys::parse_public(k)
                .map_err(|e| format!("deploy.trusted_keys: {e}"))?;
        }
        for g in &self.groups {
            if g.is_empty() || g.contains(['/', '+', '#', '\0']) {
                return Err(format!(
                    "deploy.groups: {g:?} must be non-empty, without / + # or NUL"
                ));
            }
        }
        if self.max_functions == 0 {
            return Err("deploy.max_functions must be at least 1".into());
        }
        Ok(())
    }
}

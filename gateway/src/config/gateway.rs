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
    /// A group commit waits up to this many milliseconds after its first event for more
    /// before its flush (or until `broker.batch` events, or the site broker's in-flight
    /// window): results are forwarded at once, acknowledgements wait for the flush. `0`: a
    /// flush for whatever is queued each time. Unset: 20 with the embedded broker, 0 with an
    /// external one ([`GatewayConfig::commit_window`]).
    pub commit_window_ms: Option<u64>,
    /// Threads of the async runtime (MQTT sessions, the uplink, HTTP). Functions run on
    /// threads of their own (one per lane) either way. One by default: measured, a second
    /// thread cost more CPU per event (hand-offs between cores) and bought no throughput.
    pub worker_threads: usize,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            id: "gw-01".into(),
            data_dir: "kiri-data".into(),
            cache_bytes: 4 << 20,
            fsync: true,
            flush_every_ms: 500,
            commit_window_ms: None,
            worker_threads: 1,
        }
    }
}

impl GatewayConfig {
    /// The commit window: as set, else 20 ms with the embedded broker (Kiri turns Nagle's
    /// algorithm off on it) and none with an external one (a broker that leaves Nagle's
    /// algorithm on, as Mosquitto does unless `set_tcp_nodelay true`, holds each next message
    /// back until Kiri acknowledges the one before, so a window would delay every input).
    pub fn commit_window(&self, broker: super::BrokerMode) -> std::time::Duration {
        let ms = match (self.commit_window_ms, broker) {
            (Some(ms), _) => ms,
            (None, super::BrokerMode::Embedded) => 20,
            (None, super::BrokerMode::External) => 0,
        };
        std::time::Duration::from_millis(ms)
    }

    /// Checks the section on its own.
    pub(super) fn validate(&self) -> Result<(), String> {
        let id = &self.id;
        if id.is_empty() || id.contains(['/', '+', '#', '\0']) {
            return Err(format!(
                "gateway.id {id:?} must be non-empty, without / + # or NUL"
            ));
        }
        if let Some(ms) = self.commit_window_ms.filter(|ms| *ms > 1000) {
            return Err(format!(
                "gateway.commit_window_ms = {ms} is more than 1000: acknowledgements would wait that long"
            ));
        }
        if !(1..=64).contains(&self.worker_threads) {
            return Err(format!(
                "gateway.worker_threads = {} must be between 1 and 64",
                self.worker_threads
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::GatewayConfig;

    #[test]
    fn bounds_are_checked() {
        let with = |f: fn(&mut GatewayConfig)| {
            let mut g = GatewayConfig::default();
            f(&mut g);
            g.validate()
        };
        for (result, expect) in [
            (with(|g| g.worker_threads = 0), "between 1 and 64"),
            (with(|g| g.worker_threads = 65), "between 1 and 64"),
            (with(|g| g.commit_window_ms = Some(1001)), "more than 1000"),
            (with(|g| g.id = "a/b".into()), "without / + #"),
        ] {
            let e = result.unwrap_err();
            assert!(e.contains(expect), "{e}");
        }
        assert!(with(|g| g.worker_threads = 64).is_ok());
        assert_eq!(GatewayConfig::default().worker_threads, 1);
    }
}

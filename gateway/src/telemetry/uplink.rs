//! The uplink's state as operators see it (`/api/v1/status`, `kiri status`, the dashboard):
//! written by the uplink, read by the HTTP API and the tick.

use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Connected or not, since when, the last error, counts.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct UplinkStatus {
    /// The cloud broker's URL.
    pub url: String,
    /// Whether a session is up (CONNACK received, no error since).
    pub connected: bool,
    /// When the current state (connected or not) began, ms since the Unix epoch.
    pub since_ms: Option<u64>,
    /// Sessions established since start.
    pub connects: u64,
    /// Sessions established after a failure (`connects` minus the first).
    pub reconnects: u64,
    /// The last connection error, in words.
    pub last_error: Option<String>,
    /// When it happened, ms since the Unix epoch.
    pub last_error_ms: Option<u64>,
    /// When the next connection attempt is due while down, ms since the Unix epoch.
    pub next_attempt_ms: Option<u64>,
    /// Records the cloud acknowledged since start.
    pub delivered: u64,
}

/// The status, shared between the uplink (writer) and the HTTP API (reader); changes are
/// also sent to live readers.
#[derive(Clone, Default)]
pub struct SharedStatus(Arc<Mutex<UplinkStatus>>, Option<super::Telemetry>);

impl SharedStatus {
    /// A status for the uplink to `url`, not yet connected.
    pub fn new(url: &str, live: Option<super::Telemetry>) -> SharedStatus {
        let status = UplinkStatus {
            url: url.to_string(),
            since_ms: Some(crate::now_ms()),
            ..UplinkStatus::default()
        };
        SharedStatus(Arc::new(Mutex::new(status)), live)
    }

    fn tell(&self, connected: bool, error: Option<String>) {
        if let Some(live) = &self.1 {
            live.send(super::Event::Uplink {
                connected,
                error,
                time_ms: crate::now_ms(),
            });
        }
    }

    fn update(&self, f: impl FnOnce(&mut UplinkStatus)) {
        f(&mut self.0.lock().expect("uplink status lock"));
    }

    /// A copy of the current status.
    pub fn get(&self) -> UplinkStatus {
        self.0.lock().expect("uplink status lock").clone()
    }

    pub fn connected(&self) {
        self.update(|s| {
            s.connected = true;
            s.since_ms = Some(crate::now_ms());
            s.connects += 1;
            s.reconnects = s.connects - 1;
            s.next_attempt_ms = None;
        });
        self.tell(true, None);
    }

    pub fn disconnected(&self, error: &str, retry_in: Duration) {
        let now = crate::now_ms();
        self.update(|s| {
            if s.connected {
                s.since_ms = Some(now);
            }
            s.connected = false;
            s.last_error = Some(error.to_string());
            s.last_error_ms = Some(now);
            s.next_attempt_ms = Some(now + retry_in.as_millis() as u64);
        });
        self.tell(false, Some(error.to_string()));
    }

    /// The uplink now goes to `url` (a reload changed the cloud settings): not connected, no
    /// error yet; the counts go on.
    pub fn retarget(&self, url: &str) {
        let changed = self.get().url != url;
        if changed {
            self.update(|s| {
                s.url = url.to_string();
                s.connected = false;
                s.since_ms = Some(crate::now_ms());
                s.last_error = None;
                s.last_error_ms = None;
                s.next_attempt_ms = None;
            });
        }
    }

    /// No uplink at all (`cloud.url` unset): down, with why, and no next attempt.
    pub fn off(&self, why: &str) {
        self.update(|s| {
            s.connected = false;
            s.last_error = Some(why.to_string());
            s.last_error_ms = Some(crate::now_ms());
            s.next_attempt_ms = None;
        });
        self.tell(false, Some(why.to_string()));
    }

    /// The broker refused a result (MQTT 5 PUBACK reason): kept as the last error; the
    /// connection stays up.
    pub fn refused(&self, error: &str) {
        self.update(|s| {
            s.last_error = Some(error.to_string());
            s.last_error_ms = Some(crate::now_ms());
        });
    }

    pub fn delivered(&self, n: u64) {
        self.update(|s| s.delivered += n);
    }
}

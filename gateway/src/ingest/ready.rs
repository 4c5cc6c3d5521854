//! Whether every session with the site broker is up: the gateway is ready (`/readyz`,
//! systemd's READY) once all of them are connected and subscribed, and the gauges
//! `kiri_ingest_connected` and `kiri_ingest_subscribed` say so for all of them together.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// The sessions' states, and the flag that all are subscribed.
#[derive(Clone, Default)]
pub struct Readiness {
    sessions: Arc<Mutex<HashMap<String, (bool, bool)>>>,
    ready: Arc<AtomicBool>,
}

impl Readiness {
    /// The flag: every session connected and subscribed.
    pub fn flag(&self) -> Arc<AtomicBool> {
        self.ready.clone()
    }

    /// A session's part, counted (not yet connected) from now on.
    pub fn session(&self, id: &str) -> SessionState {
        let state = SessionState {
            id: id.to_string(),
            readiness: self.clone(),
        };
        state.set(false, false);
        state
    }

    /// Stops counting session `id` (its lane was removed).
    pub fn remove(&self, id: &str) {
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        sessions.remove(id);
        self.publish(&sessions);
    }

    fn publish(&self, sessions: &HashMap<String, (bool, bool)>) {
        let connected = sessions.values().all(|s| s.0);
        let subscribed = sessions.values().all(|s| s.1);
        metrics::gauge!("kiri_ingest_connected").set(f64::from(u8::from(connected)));
        metrics::gauge!("kiri_ingest_subscribed").set(f64::from(u8::from(subscribed)));
        self.ready.store(subscribed, Ordering::Relaxed);
    }
}

/// One session's part of the [`Readiness`].
#[derive(Clone)]
pub struct SessionState {
    id: String,
    readiness: Readiness,
}

impl SessionState {
    /// The session is (not) connected, and (not) subscribed.
    pub fn set(&self, connected: bool, subscribed: bool) {
        let r = &self.readiness;
        let mut sessions = r.sessions.lock().unwrap_or_else(|e| e.into_inner());
        sessions.insert(self.id.clone(), (connected, subscribed));
        r.publish(&sessions);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_once_every_session_is_subscribed() {
        let r = Readiness::default();
        let (a, b) = (r.session("a"), r.session("b"));
        a.set(true, true);
        assert!(!r.flag().load(Ordering::Relaxed));
        b.set(true, true);
        assert!(r.flag().load(Ordering::Relaxed));
        b.set(false, false);
        assert!(!r.flag().load(Ordering::Relaxed));
        r.remove("b");
        assert!(r.flag().load(Ordering::Relaxed));
    }
}

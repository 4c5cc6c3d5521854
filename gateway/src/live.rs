//! What the gateway tells its operators as it happens: function log lines (kept in a bounded
//! ring per function) and live events (log lines, uplink changes, a once-a-second tick of the
//! counters) for `GET /api/v1/events` (server-sent events).
//!
//! Policies: each function's ring keeps its newest [`Logs::per_function`] lines (older ones
//! are dropped); live events go through a broadcast channel of [`EVENTS_CAPACITY`]: a reader
//! that falls that far behind skips the events it missed (and is told how many).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use serde::Serialize;
use tokio::sync::broadcast;

/// Live events buffered for slow readers.
pub const EVENTS_CAPACITY: usize = 1024;

/// One line a function logged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LogLine {
    /// When, ms since the Unix epoch.
    pub time_ms: u64,
    /// The function.
    pub function: String,
    /// `error`, `warn`, `info` or `debug`.
    pub level: &'static str,
    /// The text.
    pub text: String,
}

/// A live event.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// A function logged a line.
    Log(LogLine),
    /// The uplink connected or went down.
    Uplink {
        /// Connected now.
        connected: bool,
        /// Why it went down.
        error: Option<String>,
        /// When, ms since the Unix epoch.
        time_ms: u64,
    },
    /// Once a second: totals since start (a reader derives rates from two ticks).
    Tick {
        /// When, ms since the Unix epoch.
        time_ms: u64,
        /// Messages received from the local broker.
        events: u64,
        /// Invocations that ran.
        invocations: u64,
        /// Invocations that failed.
        errors: u64,
        /// Results held in the outbox.
        backlog: u64,
        /// Results the cloud acknowledged.
        delivered: u64,
        /// Whether the uplink is connected.
        connected: bool,
    },
}

/// The function log rings and the live event channel. Cheap to clone.
#[derive(Clone)]
pub struct Live {
    rings: Arc<Mutex<HashMap<String, VecDeque<LogLine>>>>,
    per_function: usize,
    events: broadcast::Sender<Event>,
}

impl Default for Live {
    fn default() -> Self {
        Live::new(200)
    }
}

impl Live {
    /// Rings of `per_function` lines.
    pub fn new(per_function: usize) -> Live {
        Live {
            rings: Default::default(),
            per_function,
            events: broadcast::channel(EVENTS_CAPACITY).0,
        }
    }

    /// Lines kept per function.
    pub fn per_function(&self) -> usize {
        self.per_function
    }

    /// Records a line of `function` and tells the live readers.
    pub fn log(&self, function: &str, level: &'static str, text: String) {
        let line = LogLine {
            time_ms: crate::now_ms(),
            function: function.to_string(),
            level,
            text,
        };
        {
            let mut rings = self.rings.lock().expect("log rings lock");
            let ring = rings.entry(function.to_string()).or_default();
            if ring.len() >= self.per_function {
                ring.pop_front();
            }
            if self.per_function > 0 {
                ring.push_back(line.clone());
            }
        }
        let _ = self.events.send(Event::Log(line));
    }

    /// The newest `limit` lines of `function`, oldest first.
    pub fn lines(&self, function: &str, limit: usize) -> Vec<LogLine> {
        let rings = self.rings.lock().expect("log rings lock");
        rings
            .get(function)
            .map(|r| {
                r.iter()
                    .skip(r.len().saturating_sub(limit))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Tells the live readers (no one listening is fine).
    pub fn send(&self, event: Event) {
        let _ = self.events.send(event);
    }

    /// A new reader of live events, from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }
}

/// Forwards function log lines at `level` or more severe to the cloud through the outbox, at
/// low priority: gathered for up to 200 ms, appended only where there is room (a full outbox
/// drops log lines, counted, and never waits or displaces results), then flushed. Best effort:
/// lines not yet flushed when the process dies are lost.
pub async fn forward_logs(
    live: Live,
    outbox: Arc<crate::outbox::Outbox>,
    level: crate::config::LogForwarding,
) {
    use tokio::sync::broadcast::error::RecvError;
    let mut rx = live.subscribe();
    let dropped = |n: u64| metrics::counter!("kiri_logs_forward_dropped_total").increment(n);
    loop {
        let mut batch = Vec::new();
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_millis(200);
        while batch.len() < 256 {
            let next = if batch.is_empty() {
                Ok(rx.recv().await)
            } else {
                tokio::time::timeout_at(deadline, rx.recv()).await
            };
            match next {
                Ok(Ok(Event::Log(line))) if level.passes(line.level) => batch.push(line),
                Ok(Ok(_)) => {}
                Ok(Err(RecvError::Lagged(n))) => dropped(n),
                Ok(Err(RecvError::Closed)) => return,
                Err(_) => break,
            }
        }
        let records: Vec<crate::outbox::NewRecord> = batch
            .iter()
            .map(|l| crate::outbox::NewRecord {
                function: l.function.clone(),
                topic: format!("{}{}", crate::outbox::LOGS_TOPIC, l.function),
                payload: crate::codec::to_cbor(l),
                created_ms: l.time_ms,
            })
            .collect();
        let outbox = outbox.clone();
        let stored =
            tokio::task::spawn_blocking(move || -> Result<bool, crate::outbox::OutboxError> {
                let room = outbox.append_if_room(&records)?;
                if room {
                    outbox.flush()?;
                }
                Ok(room)
            })
            .await;
        match stored {
            Ok(Ok(true)) => {}
            Ok(Ok(false)) => dropped(batch.len() as u64),
            Ok(Err(e)) => {
                tracing::error!(error = %e, "cannot store forwarded log lines");
                dropped(batch.len() as u64);
            }
            Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rings_keep_the_newest_lines_and_readers_get_them_live() {
        let live = Live::new(3);
        let mut reader = live.subscribe();
        for i in 0..5 {
            live.log("f", "info", format!("line {i}"));
        }
        let texts: Vec<String> = live.lines("f", 10).into_iter().map(|l| l.text).collect();
        assert_eq!(texts, ["line 2", "line 3", "line 4"]);
        assert_eq!(live.lines("f", 1)[0].text, "line 4");
        assert!(live.lines("g", 10).is_empty());
        match reader.try_recv().unwrap() {
            Event::Log(l) => assert_eq!(l.text, "line 0"),
            other => panic!("{other:?}"),
        }
    }
}

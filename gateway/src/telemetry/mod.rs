//! What the gateway tells its operators as it happens: function log lines (kept in a bounded
//! ring per function) and live events (log lines, uplink changes, a once-a-second tick of the
//! counters, [`tick`]) for `GET /api/v1/events` (server-sent events), the ticks of the last ten
//! minutes for `GET /api/v1/history`, the metering of each function ([`meter`]), the uplink's
//! state ([`uplink`]), and the forwarding of log lines to the cloud ([`logs`]). The stages
//! write here; the HTTP API reads.
//!
//! Policies: each function's ring keeps its newest [`Telemetry::per_function`] lines (older ones
//! are dropped); the tick history keeps the newest [`HISTORY_TICKS`]; live events go through a broadcast channel of [`EVENTS_CAPACITY`]: a reader
//! that falls that far behind skips the events it missed (and is told how many).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use serde::Serialize;
use tokio::sync::broadcast;

pub mod catalog;
pub mod exporter;
pub mod logs;
pub mod meter;
pub mod process;
pub mod tick;
pub mod uplink;

pub use uplink::{SharedStatus, UplinkStatus};

/// Messages received from the site broker since start (for the live tick).
pub static RECEIVED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

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
    Tick(Tick),
}

/// The gateway's totals at one moment, sent once a second (a reader derives rates from two).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Tick {
    /// When, ms since the Unix epoch.
    pub time_ms: u64,
    /// Messages received from the local broker.
    pub events: u64,
    /// Invocations that ran.
    pub invocations: u64,
    /// Invocations that failed.
    pub errors: u64,
    /// Results held in the outbox.
    pub backlog: u64,
    /// Bytes the outbox holds.
    pub backlog_bytes: u64,
    /// Results the cloud acknowledged.
    pub delivered: u64,
    /// Whether the uplink is connected.
    pub connected: bool,
}

/// The last [`HISTORY_TICKS`] ticks (ten minutes), oldest first, so that a chart opened now
/// starts with the recent past. A plain bounded ring: the oldest tick leaves as a new one comes.
#[derive(Debug)]
pub struct History {
    ticks: VecDeque<Tick>,
    capacity: usize,
}

/// Ticks kept: ten minutes of one a second.
pub const HISTORY_TICKS: usize = 600;

impl History {
    /// A ring of at most `capacity` ticks.
    pub fn new(capacity: usize) -> History {
        History {
            ticks: VecDeque::with_capacity(capacity),
            capacity,
        }
    }

    /// Adds the newest tick, dropping the oldest when full.
    pub fn push(&mut self, tick: Tick) {
        if self.capacity == 0 {
            return;
        }
        if self.ticks.len() == self.capacity {
            self.ticks.pop_front();
        }
        self.ticks.push_back(tick);
    }

    /// The ticks kept, oldest first.
    pub fn ticks(&self) -> Vec<Tick> {
        self.ticks.iter().copied().collect()
    }
}

/// The function log rings, the tick history and the live event channel. Cheap to clone.
#[derive(Clone)]
pub struct Telemetry {
    rings: Arc<Mutex<HashMap<String, VecDeque<LogLine>>>>,
    per_function: usize,
    history: Arc<Mutex<History>>,
    events: broadcast::Sender<Event>,
}

impl Default for Telemetry {
    fn default() -> Self {
        Telemetry::new(200)
    }
}

impl Telemetry {
    /// Rings of `per_function` lines.
    pub fn new(per_function: usize) -> Telemetry {
        Telemetry {
            rings: Default::default(),
            per_function,
            history: Arc::new(Mutex::new(History::new(HISTORY_TICKS))),
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

    /// Keeps `tick` in the history and tells the live readers.
    pub fn tick(&self, tick: Tick) {
        self.history.lock().expect("history lock").push(tick);
        let _ = self.events.send(Event::Tick(tick));
    }

    /// The recent ticks, oldest first.
    pub fn history(&self) -> Vec<Tick> {
        self.history.lock().expect("history lock").ticks()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rings_keep_the_newest_lines_and_readers_get_them_live() {
        let live = Telemetry::new(3);
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

    fn tick(time_ms: u64) -> Tick {
        Tick {
            time_ms,
            events: time_ms * 2,
            invocations: time_ms,
            errors: 0,
            backlog: 3,
            backlog_bytes: 300,
            delivered: time_ms,
            connected: true,
        }
    }

    #[test]
    fn the_history_keeps_the_newest_ticks_up_to_its_bound() {
        let mut h = History::new(HISTORY_TICKS);
        for t in 0..HISTORY_TICKS as u64 - 1 {
            h.push(tick(t));
        }
        assert_eq!(h.ticks().len(), HISTORY_TICKS - 1, "not full yet: all kept");
        assert_eq!(h.ticks()[0], tick(0));
        for t in HISTORY_TICKS as u64 - 1..2_000 {
            h.push(tick(t));
        }
        let kept = h.ticks();
        assert_eq!(kept.len(), HISTORY_TICKS, "bounded");
        assert_eq!(
            kept[0].time_ms,
            2_000 - HISTORY_TICKS as u64,
            "oldest dropped first"
        );
        assert_eq!(kept.last().unwrap().time_ms, 1_999);
        assert!(
            kept.windows(2).all(|w| w[0].time_ms + 1 == w[1].time_ms),
            "in order"
        );

        let mut none = History::new(0);
        none.push(tick(1));
        assert!(none.ticks().is_empty());
    }

    #[test]
    fn ticks_go_to_the_history_and_to_live_readers_with_their_type() {
        let live = Telemetry::new(1);
        let mut reader = live.subscribe();
        live.tick(tick(7));
        live.tick(tick(8));
        let times: Vec<u64> = live.history().iter().map(|t| t.time_ms).collect();
        assert_eq!(times, [7, 8]);
        let json = serde_json::to_value(reader.try_recv().unwrap()).unwrap();
        assert_eq!(json["type"], "tick");
        assert_eq!(json["time_ms"], 7);
        assert_eq!(json["backlog_bytes"], 300);
    }
}

//! The soak under faults (`make soak DURATION=...`; a short one in `make test`): numbered
//! readings at a steady rate through Mosquitto as the site's broker, Kiri (three good
//! functions beside four hostile ones) and a fault proxy to Mosquitto as the cloud, while
//! faults come on a fixed schedule: cloud broker restarts, a stalled link, a half-open link,
//! dropped connections, SIGKILL of the gateway and SIGSTOP/SIGCONT of the site broker.
//!
//! At the end nothing the site broker acknowledged may be missing at the cloud, and a report
//! (printed, and in `<target>/soak/report.json`) gives what was sent and received, the
//! duplicates and where they come from, reconnects, the largest backlog, the gateway's memory
//! over each of its lives and its error counters. `TEST_SOAK_SECONDS` (a number of seconds, or
//! `10m`) and `TEST_SOAK_RATE` (readings per second) set the size, `TEST_SOAK_FAULTS` the kinds
//! of fault (all by default).

use std::collections::{BTreeMap, HashMap};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use kiri::uplink::Envelope;
use kiri_reading::Reading;
use rumqttc::{Client, Connection, Event, MqttOptions, Packet, QoS};
use serde_json::json;

use crate::util::*;

/// The good functions: each emits one result per reading (`threshold`: per reading above its
/// limit), carrying the reading's `seq`.
const GOOD: [&str; 3] = ["convert", "average", "threshold"];
/// Readings are worth `seq % 100` °C; `threshold` alerts above this, one reading in 100.
const ALERT_LIMIT: f64 = 98.5;
/// One input in this many goes to the hostile functions' topic.
const HOSTILE_EVERY: u64 = 21;
/// Gateway settings that bound the duplicates (see "Where duplicates come from").
const QUEUE: u64 = 64;
const BATCH: u64 = 32;
const INFLIGHT: u64 = 16;
/// A publish the site broker has not acknowledged within this is sent again on a new
/// connection (the broker may be frozen, or the connection dead).
const ACK_TIMEOUT: Duration = Duration::from_secs(3);
/// The shortest fault slot (one fault per slot, at least one slot per kind); longer runs get
/// at most `MAX_SLOTS` slots, so that the gateway's lives between kills grow with the run.
const SLOT: Duration = Duration::from_secs(20);
const MAX_SLOTS: u32 = 60;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum FaultKind {
    CloudRestart,
    LinkPause,
    LinkHalfOpen,
    LinkDrop,
    GatewayKill,
    SiteBrokerStop,
}

const SCHEDULE: [FaultKind; 6] = [
    FaultKind::CloudRestart,
    FaultKind::LinkPause,
    FaultKind::LinkHalfOpen,
    FaultKind::LinkDrop,
    FaultKind::GatewayKill,
    FaultKind::SiteBrokerStop,
];

impl FaultKind {
    /// The name `TEST_SOAK_FAULTS` uses.
    fn key(self) -> &'static str {
        match self {
            FaultKind::CloudRestart => "cloud-restart",
            FaultKind::LinkPause => "link-pause",
            FaultKind::LinkHalfOpen => "link-half-open",
            FaultKind::LinkDrop => "link-drop",
            FaultKind::GatewayKill => "gateway-kill",
            FaultKind::SiteBrokerStop => "site-broker-stop",
        }
    }

    fn name(self) -> &'static str {
        match self {
            FaultKind::CloudRestart => "cloud broker restart (3 s down)",
            FaultKind::LinkPause => "link stalled 4 s",
            FaultKind::LinkHalfOpen => "link half-open until noticed",
            FaultKind::LinkDrop => "link connections dropped",
            FaultKind::GatewayKill => "gateway SIGKILL and restart",
            FaultKind::SiteBrokerStop => "site broker SIGSTOP 5 s, SIGCONT",
        }
    }
}

/// `TEST_SOAK_FAULTS`: the kinds to inject, comma-separated (`FaultKind::key`); all by
/// default. Without `gateway-kill`, the gateway lives the whole run: its memory over a long
/// run in one process.
fn schedule_param() -> Vec<FaultKind> {
    let Ok(v) = std::env::var("TEST_SOAK_FAULTS") else {
        return SCHEDULE.to_vec();
    };
    let kinds: Vec<FaultKind> = v
        .split(',')
        .map(|k| {
            *SCHEDULE
                .iter()
                .find(|f| f.key() == k.trim())
                .unwrap_or_else(|| {
                    let keys: Vec<_> = SCHEDULE.iter().map(|f| f.key()).collect();
                    panic!("TEST_SOAK_FAULTS: unknown fault {k:?} (known: {keys:?})")
                })
        })
        .collect();
    assert!(!kinds.is_empty(), "TEST_SOAK_FAULTS names no fault");
    kinds
}

/// `TEST_SOAK_SECONDS`: seconds, or a duration such as `10m`.
fn duration_param() -> Duration {
    match std::env::var("TEST_SOAK_SECONDS") {
        Ok(v) => v
            .parse::<u64>()
            .map(Duration::from_secs)
            .or_else(|_| humantime::parse_duration(&v))
            .unwrap_or_else(|_| panic!("TEST_SOAK_SECONDS={v}: seconds, or a duration like 10m")),
        Err(_) => Duration::from_secs(120),
    }
}

fn rate_param() -> u64 {
    std::env::var("TEST_SOAK_RATE")
        .ok()
        .map(|v| v.parse().expect("TEST_SOAK_RATE: readings per second"))
        .unwrap_or(200)
        .max(1)
}

fn soak_reading(sensor: &str, seq: u64) -> Vec<u8> {
    crate::util::encode_reading(&Reading {
        sensor,
        kind: "temperature",
        value: (seq % 100) as f64,
        unit: "C",
        ts: Some(kiri::now_ms()),
        uptime_ms: None,
        seq: Some(seq),
    })
}

/// What the publisher got acknowledged by the site broker.
#[derive(Debug, Default)]
struct Published {
    /// Readings `0..readings` were all acknowledged (each is sent until it is).
    readings: u64,
    /// Inputs for the hostile functions acknowledged.
    hostile: u64,
    /// Publishes sent again on a new connection after no acknowledgement came: each may
    /// reach the broker twice, and so be processed twice.
    resent: u64,
}

/// One MQTT connection to the site broker with one publish in flight at a time, so that what
/// the broker acknowledged is known exactly.
struct SitePublisher {
    port: u16,
    link: Option<(Client, Connection)>,
}

impl SitePublisher {
    /// Sends until acknowledged (a new connection after each failure or `ACK_TIMEOUT`), or
    /// until `stop`; whether it was acknowledged, and how many times it was sent again.
    fn publish(&mut self, topic: &str, payload: &[u8], stop: &AtomicBool) -> (bool, u64) {
        let mut again = 0;
        loop {
            if self.try_publish(topic, payload) {
                return (true, again);
            }
            self.link = None;
            if stop.load(Ordering::Relaxed) {
                return (false, again);
            }
            again += 1;
        }
    }

    fn try_publish(&mut self, topic: &str, payload: &[u8]) -> bool {
        let (client, conn) = self.link.get_or_insert_with(|| {
            let mut opts = MqttOptions::new("soak-sensor", "127.0.0.1", self.port);
            opts.set_keep_alive(Duration::from_secs(5));
            Client::new(opts, 10)
        });
        if client
            .publish(topic, QoS::AtLeastOnce, false, payload.to_vec())
            .is_err()
        {
            return false;
        }
        let deadline = Instant::now() + ACK_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            match conn.recv_timeout(left) {
                Ok(Ok(Event::Incoming(Packet::PubAck(_)))) => return true,
                Ok(Ok(_)) => {}
                Ok(Err(_)) | Err(_) => return false,
            }
        }
    }
}

/// Publishes readings (and, one input in `HOSTILE_EVERY`, inputs for the hostile functions)
/// at `rate` readings per second until `stop`. Behind schedule (the broker was away), it
/// catches up as fast as the broker acknowledges, as a sensor holding its readings would.
fn publish_steadily(port: u16, rate: u64, stop: Arc<AtomicBool>) -> Published {
    let mut out = Published::default();
    let mut site = SitePublisher { port, link: None };
    let per_second = rate as f64 * HOSTILE_EVERY as f64 / (HOSTILE_EVERY - 1) as f64;
    let start = Instant::now();
    for k in 0u64.. {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let due = start + Duration::from_secs_f64(k as f64 / per_second);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            thread::sleep(wait);
        }
        let (topic, payload) = if k % HOSTILE_EVERY == HOSTILE_EVERY - 1 {
            ("hostile/h1/temperature", soak_reading("h1", out.hostile))
        } else {
            ("sensors/s1/temperature", soak_reading("s1", out.readings))
        };
        let (acked, again) = site.publish(topic, &payload, &stop);
        out.resent += again;
        if !acked {
            break;
        }
        if topic.starts_with("hostile/") {
            out.hostile += 1;
        } else {
            out.readings += 1;
        }
    }
    out
}

/// The results of one function as they reach the cloud.
#[derive(Debug, Default)]
struct Seen {
    /// Each sequence number's first record id (hashed).
    first: HashMap<u64, u64>,
    /// Arrivals of a sequence number already seen, with the same record id: a record sent
    /// again by the uplink.
    resent: u64,
    /// ... with another record id: the input was processed again.
    reprocessed: u64,
    /// Sequence numbers first seen after a higher one.
    out_of_order: u64,
    newest: Option<u64>,
}

impl Seen {
    fn arrive(&mut self, seq: u64, id: &str) {
        let mut h = DefaultHasher::new();
        id.hash(&mut h);
        let id = h.finish();
        match self.first.get(&seq) {
            Some(&first) if first == id => self.resent += 1,
            Some(_) => self.reprocessed += 1,
            None => {
                self.first.insert(seq, id);
                if self.newest.is_some_and(|n| seq < n) {
                    self.out_of_order += 1;
                }
                self.newest = self.newest.max(Some(seq));
            }
        }
    }

    /// The sequence numbers in `expected` that never arrived.
    fn missing(&self, expected: impl Iterator<Item = u64>) -> Vec<u64> {
        expected.filter(|s| !self.first.contains_key(s)).collect()
    }
}

/// Everything the cloud received, by function.
#[derive(Debug, Default)]
struct Arrivals {
    good: BTreeMap<String, Seen>,
    /// Results of any other function (a hostile one's output must never get out).
    stray: BTreeMap<String, u64>,
}

impl Arrivals {
    fn take(&mut self, envelope: Envelope) {
        if !GOOD.contains(&envelope.function.as_str()) {
            *self.stray.entry(envelope.function).or_default() += 1;
            return;
        }
        let seq = Reading::decode(&envelope.payload)
            .ok()
            .and_then(|r| r.seq)
            .expect("a good function's result is a reading with its seq");
        self.good
            .entry(envelope.function.clone())
            .or_default()
            .arrive(seq, &envelope.id);
    }
}

/// The readings `function` must turn into a result, of readings `0..n`.
fn expected(function: &str, n: u64) -> impl Iterator<Item = u64> + '_ {
    (0..n).filter(move |s| function != "threshold" || (s % 100) as f64 > ALERT_LIMIT)
}

/// One run of the gateway process, from a start to its SIGKILL (or the end).
#[derive(Debug)]
struct Life {
    pid: u32,
    /// Seconds since the soak started.
    started: f64,
    ended: f64,
    /// (seconds since the soak started, VmRSS in KiB).
    rss: Vec<(f64, u64)>,
    /// The last reading of every counter (`*_total` series) in this life.
    counters: BTreeMap<String, f64>,
    /// The largest outbox backlog sampled.
    backlog_max: f64,
}

/// Samples the gateway once a second: its metrics and its memory, per life.
struct Observer {
    url: String,
    agent: ureq::Agent,
    t0: Instant,
    /// The lives so far and whether the last one is still running.
    lives: Mutex<(Vec<Life>, bool)>,
}

impl Observer {
    fn new(metrics_port: u16, t0: Instant) -> Observer {
        Observer {
            url: format!("http://127.0.0.1:{metrics_port}/metrics"),
            agent: ureq::Agent::config_builder()
                .timeout_global(Some(Duration::from_secs(5)))
                .build()
                .into(),
            t0,
            lives: Mutex::new((Vec::new(), false)),
        }
    }

    fn begin_life(&self, pid: u32) {
        let now = self.t0.elapsed().as_secs_f64();
        let mut lives = self.lives.lock().unwrap();
        lives.0.push(Life {
            pid,
            started: now,
            ended: now,
            rss: Vec::new(),
            counters: BTreeMap::new(),
            backlog_max: 0.0,
        });
        lives.1 = true;
        Observer::sample_into(&self.agent, &self.url, self.t0, &mut lives.0);
    }

    /// A last sample, just before the process is killed or stopped.
    fn end_life(&self) {
        let mut lives = self.lives.lock().unwrap();
        if lives.1 {
            Observer::sample_into(&self.agent, &self.url, self.t0, &mut lives.0);
            lives.1 = false;
        }
    }

    fn sample(&self) {
        let mut lives = self.lives.lock().unwrap();
        if lives.1 {
            Observer::sample_into(&self.agent, &self.url, self.t0, &mut lives.0);
        }
    }

    fn sample_into(agent: &ureq::Agent, url: &str, t0: Instant, lives: &mut [Life]) {
        let life = lives.last_mut().expect("a life");
        let now = t0.elapsed().as_secs_f64();
        life.ended = now;
        if let Some(kib) = rss_kib(life.pid) {
            life.rss.push((now, kib));
        }
        let Ok(mut resp) = agent.get(url).call() else {
            return;
        };
        let Ok(body) = resp.body_mut().read_to_string() else {
            return;
        };
        for line in body.lines().filter(|l| !l.starts_with('#')) {
            let Some((key, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let Ok(value) = value.parse::<f64>() else {
                continue;
            };
            let name = key.split('{').next().unwrap_or(key);
            if name.ends_with("_total") {
                life.counters.insert(key.to_string(), value);
            } else if name == "kiri_outbox_records" {
                life.backlog_max = life.backlog_max.max(value);
            }
        }
    }
}

/// The resident memory of process `pid`, KiB.
fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// The RSS samples of a life thinned to one per 10 s, MiB with one decimal.
fn every_10s(rss: &[(f64, u64)]) -> Vec<f64> {
    let mut next = f64::MIN;
    let mut out = Vec::new();
    for &(t, kib) in rss {
        if t >= next {
            out.push((mib(kib) * 10.0).round() / 10.0);
            next = t + 10.0;
        }
    }
    out
}

#[test]
fn soak_under_faults() {
    let duration = duration_param();
    let schedule = schedule_param();
    let rate = rate_param();
    let dir = tempfile::tempdir().unwrap();
    let mut cloud = Mosquitto::start(&dir.path().join("cloud"));
    let local = Mosquitto::start(&dir.path().join("local"));
    let proxy = FaultProxy::start(cloud.port);
    let arrivals = Arc::new(Mutex::new(Arrivals::default()));
    subscribe_results(cloud.port, "soak-consumer", {
        let arrivals = arrivals.clone();
        move |_, envelope| arrivals.lock().unwrap().take(envelope)
    });

    let mut functions = String::new();
    for (name, config) in [
        ("convert", String::new()),
        ("average", "config = { window = 10 }\n".into()),
        (
            "threshold",
            format!("config = {{ limit = {ALERT_LIMIT} }}\n"),
        ),
    ] {
        functions += &format!(
            "[[functions]]\nname = \"{name}\"\nmodule = \"{}\"\ntriggers = [\"sensors/+/temperature\"]\n{config}",
            function_wasm(name).display()
        );
    }
    functions += &hostile_functions(dir.path(), "hostile/+/temperature");
    let broker = format!(
        "mode = \"external\"\nurl = \"{}\"\nqueue = {QUEUE}\nbatch = {BATCH}",
        local.url()
    );
    // A small dead-letter store: the hostile functions fill it early, so its bound is at
    // work for most of the run.
    let conf = super::config_with(&proxy.url(), &broker, &functions).replacen(
        "[cloud]\n",
        &format!(
            "[outbox]\nhigh_priority = [\"alerts/#\"]\n[dead_letters]\nmax_records = 1000\n\
             [cloud]\nkeep_alive_secs = 5\ninflight = {INFLIGHT}\n"
        ),
        1,
    );
    let mut kiri = Kiri::start(&dir.path().join("kiri"), &conf, &[]);

    let t0 = Instant::now();
    let observer = Arc::new(Observer::new(kiri.metrics_port, t0));
    observer.begin_life(kiri.pid().expect("running"));
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = thread::spawn({
        let (observer, sampling) = (observer.clone(), sampling.clone());
        move || {
            while sampling.load(Ordering::Relaxed) {
                observer.sample();
                thread::sleep(Duration::from_secs(1));
            }
        }
    });
    let stop = Arc::new(AtomicBool::new(false));
    let publisher = thread::spawn({
        let (port, stop) = (local.port, stop.clone());
        move || publish_steadily(port, rate, stop)
    });

    // The schedule: equal slots, one fault in each (a quarter of the way in), the kinds in
    // turn; a fault that overruns its slot delays the next one.
    let slot_len = SLOT.max(duration / MAX_SLOTS);
    let slots = (duration.as_secs() / slot_len.as_secs()).max(schedule.len() as u64);
    let slot = duration / slots as u32;
    let mut faults: Vec<serde_json::Value> = Vec::new();
    let mut problems: Vec<String> = Vec::new();
    let mut half_open_noticed: Vec<f64> = Vec::new();
    for i in 0..slots {
        let at = t0 + slot * i as u32 + slot / 4;
        if let Some(wait) = at.checked_duration_since(Instant::now()) {
            thread::sleep(wait);
        }
        let kind = schedule[i as usize % schedule.len()];
        let began = t0.elapsed().as_secs_f64();
        let mut detail = json!(null);
        match kind {
            FaultKind::CloudRestart => {
                cloud.stop();
                thread::sleep(Duration::from_secs(3));
                cloud.restart();
            }
            FaultKind::LinkPause => {
                proxy.set(Fault::Pause);
                thread::sleep(Duration::from_secs(4));
                proxy.set(Fault::Pass);
            }
            FaultKind::LinkHalfOpen => {
                let cut = Instant::now();
                proxy.set(Fault::HalfOpen);
                let noticed = poll_until(Duration::from_secs(30), || {
                    kiri.assert_running();
                    kiri.status()["uplink"]["connected"] == false
                });
                proxy.set(Fault::Pass);
                let after = cut.elapsed().as_secs_f64();
                if noticed {
                    half_open_noticed.push(after);
                    detail = json!({ "noticed_after_s": after });
                } else {
                    problems.push(format!(
                        "a half-open link at {began:.0} s was not noticed within 30 s"
                    ));
                }
            }
            FaultKind::LinkDrop => proxy.drop_connections(),
            FaultKind::GatewayKill => {
                observer.end_life();
                kiri.kill9();
                kiri.restart();
                observer.begin_life(kiri.pid().expect("running"));
            }
            FaultKind::SiteBrokerStop => {
                local.freeze();
                thread::sleep(Duration::from_secs(5));
                local.thaw();
            }
        }
        kiri.assert_running();
        faults.push(json!({
            "at_s": (began * 10.0).round() / 10.0,
            "fault": kind.name(),
            "detail": detail,
        }));
    }
    if let Some(wait) = (t0 + duration).checked_duration_since(Instant::now()) {
        thread::sleep(wait);
    }
    stop.store(true, Ordering::Relaxed);
    let published = publisher.join().unwrap();
    let publishing_s = t0.elapsed().as_secs_f64();
    assert!(
        published.readings > 0,
        "the site broker acknowledged nothing"
    );

    // Drain: every acknowledged reading's results at the cloud, within a bound.
    let drain_started = Instant::now();
    let complete = |a: &Arrivals| {
        GOOD.iter().all(|f| {
            a.good.get(*f).is_some_and(|s| {
                expected(f, published.readings).all(|seq| s.first.contains_key(&seq))
            })
        })
    };
    let drained = poll_until(Duration::from_secs(180), || {
        kiri.assert_running();
        complete(&arrivals.lock().unwrap())
    });
    let drain_s = drain_started.elapsed().as_secs_f64();
    // Late duplicates still on their way.
    thread::sleep(Duration::from_secs(2));
    sampling.store(false, Ordering::Relaxed);
    sampler.join().unwrap();
    observer.end_life();
    kiri.stop();
    let log = kiri.log_text();

    // The report.
    let lives = std::mem::take(&mut observer.lives.lock().unwrap().0);
    let mut counters: BTreeMap<String, f64> = BTreeMap::new();
    for life in &lives {
        for (k, v) in &life.counters {
            *counters.entry(k.clone()).or_default() += v;
        }
    }
    let counter = |prefix: &str| -> f64 {
        counters
            .iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .fold(0.0, |sum, (_, v)| sum + v)
    };
    let kills = faults
        .iter()
        .filter(|f| f["fault"] == FaultKind::GatewayKill.name())
        .count() as u64;
    let uplink_connects = counter("kiri_uplink_connects_total");
    // Failed connection attempts count here too, not only sessions that ended.
    let uplink_failures = counter("kiri_uplink_errors_total");
    let arrivals = arrivals.lock().unwrap();
    let mut per_function = serde_json::Map::new();
    let mut lost_total = 0;
    let mut out_of_order_total = 0;
    for f in GOOD {
        let seen = arrivals.good.get(f);
        let want = expected(f, published.readings).count() as u64;
        let missing = seen.map_or_else(
            || expected(f, published.readings).collect(),
            |s| s.missing(expected(f, published.readings)),
        );
        lost_total += missing.len();
        let (resent, reprocessed, out_of_order, distinct) = seen.map_or((0, 0, 0, 0), |s| {
            (s.resent, s.reprocessed, s.out_of_order, s.first.len())
        });
        out_of_order_total += out_of_order;
        per_function.insert(
            f.to_string(),
            json!({
                "expected": want,
                "received_distinct": distinct,
                "lost": missing.len(),
                "lost_first": &missing[..missing.len().min(20)],
                "duplicates": resent + reprocessed,
                "duplicates_same_record": resent,
                "duplicates_processed_again": reprocessed,
                "out_of_order": out_of_order,
            }),
        );
    }
    // The bounds of docs/delivery-guarantees.md ("Where duplicates come from"), per function: records in flight
    // when an uplink session (one per connect) ends (at most `inflight`), and after a kill also those
    // acknowledged since deletes were last flushed (`inflight` more); inputs processed again
    // after a kill, `queue + batch` plus the acknowledgements the broker had not read when a
    // plain SIGKILL reset the connection (not bounded here); and each publish the sensor sent
    // again, which the broker may have taken twice.
    let bound_same = (uplink_connects as u64 + kills) * INFLIGHT;
    let bound_again = kills * (QUEUE + BATCH) + published.resent;
    let rss_of = |life: &Life| {
        let first = life.rss.first().map_or(0, |r| r.1);
        let last = life.rss.last().map_or(0, |r| r.1);
        let max = life.rss.iter().map(|r| r.1).max().unwrap_or(0);
        (first, last, max)
    };
    let lives_json: Vec<_> = lives
        .iter()
        .map(|l| {
            let (first, last, max) = rss_of(l);
            json!({
                "pid": l.pid,
                "from_s": l.started.round(),
                "to_s": l.ended.round(),
                "rss_start_mib": (mib(first) * 10.0).round() / 10.0,
                "rss_end_mib": (mib(last) * 10.0).round() / 10.0,
                "rss_max_mib": (mib(max) * 10.0).round() / 10.0,
                "rss_mib_every_10s": every_10s(&l.rss),
            })
        })
        .collect();
    let rss_all: Vec<u64> = lives
        .iter()
        .flat_map(|l| l.rss.iter().map(|r| r.1))
        .collect();
    let backlog_max = lives.iter().map(|l| l.backlog_max).fold(0.0, f64::max);
    let mut fault_counts: BTreeMap<&str, u64> = BTreeMap::new();
    for f in &faults {
        *fault_counts
            .entry(f["fault"].as_str().unwrap())
            .or_default() += 1;
    }
    let errors: BTreeMap<&String, &f64> = counters
        .iter()
        .filter(|(k, v)| {
            **v > 0.0
                && [
                    "kiri_invocations_total",
                    "kiri_dead_letters_total",
                    "kiri_dead_letters_dropped_total",
                    "kiri_ingest_rejected_total",
                    "kiri_ingest_connection_errors_total",
                    "kiri_outbox_dropped_total",
                    "kiri_outbox_full_waits_total",
                    "kiri_outbox_disk_waits_total",
                    "kiri_output_denied_total",
                    "kiri_output_limit_hits_total",
                    "kiri_uplink_errors_total",
                    "kiri_retries_exhausted_total",
                    "kiri_local_publish_dropped_total",
                    "kiri_logs_forward_dropped_total",
                    "kiri_function_log_dropped_total",
                    "kiri_timer_ticks_skipped_total",
                ]
                .iter()
                .any(|p| k.starts_with(p))
                && !k.contains("outcome=\"ok\"")
        })
        .collect();
    let log_errors: Vec<&str> = log.lines().filter(|l| l.contains(" ERROR ")).collect();
    let panics = log.lines().filter(|l| l.contains("panicked at")).count();
    let report = json!({
        "command": "make soak DURATION=<seconds>  (or: TEST_SOAK_SECONDS=<s> TEST_SOAK_RATE=<r> cargo test -p kiri --test e2e -- --nocapture soak)",
        "duration_s": duration.as_secs(),
        "publishing_s": publishing_s.round(),
        "rate_per_s": rate,
        "achieved_rate_per_s": ((published.readings as f64 / publishing_s) * 10.0).round() / 10.0,
        "sent": {
            "readings_acknowledged": published.readings,
            "hostile_inputs_acknowledged": published.hostile,
            "sensor_publishes_sent_again": published.resent,
        },
        "received": per_function,
        "lost": lost_total,
        "drained": drained,
        "drain_s": (drain_s * 10.0).round() / 10.0,
        "duplicates_expected_at_most_per_function": {
            "same_record": bound_same,
            "processed_again": bound_again,
            "explanation": format!(
                "same record: {INFLIGHT} (cloud.inflight) in flight per uplink session ({uplink_connects}), \
                 plus {INFLIGHT} acknowledged but not yet deleted per kill ({kills}); processed again: \
                 broker.queue + broker.batch ({}) per kill, plus acknowledgements the broker had \
                 not read when SIGKILL reset the connection (not bounded), plus each sensor publish \
                 sent again ({})", QUEUE + BATCH, published.resent
            ),
        },
        "faults": fault_counts,
        "half_open_noticed_after_s": half_open_noticed,
        "reconnects": {
            "gateway_lives": lives.len(),
            "uplink_connects": uplink_connects,
            "uplink_reconnects": (uplink_connects - lives.len() as f64).max(0.0),
            "uplink_connection_failures": uplink_failures,
            "site_connection_errors": counter("kiri_ingest_connection_errors_total"),
        },
        "backlog_max_records": backlog_max,
        "rss": {
            "start_mib": (mib(rss_all.first().copied().unwrap_or(0)) * 10.0).round() / 10.0,
            "end_mib": (mib(rss_all.last().copied().unwrap_or(0)) * 10.0).round() / 10.0,
            "max_mib": (mib(rss_all.iter().copied().max().unwrap_or(0)) * 10.0).round() / 10.0,
            "lives": lives_json,
        },
        "counters_nonzero_failures": errors,
        "processed": {
            "inputs": counter("kiri_ingest_messages_total"),
            "commits": counter("kiri_commits_total"),
            "results_appended": counter("kiri_outbox_appended_total"),
            "results_delivered": counter("kiri_uplink_delivered_total"),
        },
        "stray_results": &arrivals.stray,
        "log": {
            "error_lines": log_errors.len(),
            "first_error_lines": &log_errors[..log_errors.len().min(5)],
            "panics": panics,
        },
        "fault_timeline": faults,
    });
    let out_dir = target_dir().join("soak");
    std::fs::create_dir_all(&out_dir).unwrap();
    std::fs::write(
        out_dir.join("report.json"),
        serde_json::to_string_pretty(&report).unwrap(),
    )
    .unwrap();
    print_report(&report);

    // The checks.
    let ok = lost_total == 0
        && out_of_order_total == 0
        && problems.is_empty()
        && arrivals.stray.is_empty()
        && panics == 0;
    if !ok {
        std::fs::write(out_dir.join("kiri.log"), &log).unwrap();
        eprintln!(
            "soak: the gateway's log is in {}",
            out_dir.join("kiri.log").display()
        );
    }
    assert_eq!(lost_total, 0, "acknowledged readings never delivered");
    assert!(drained);
    assert_eq!(out_of_order_total, 0, "results out of order");
    assert!(problems.is_empty(), "{problems:?}");
    assert!(
        arrivals.stray.is_empty(),
        "results of other functions reached the cloud: {:?}",
        arrivals.stray
    );
    assert_eq!(panics, 0, "the gateway panicked");
    for f in GOOD {
        let failed = counters
            .iter()
            .filter(|(k, v)| {
                k.starts_with("kiri_invocations_total")
                    && k.contains(&format!("function=\"{f}\""))
                    && !k.contains("outcome=\"ok\"")
                    && **v > 0.0
            })
            .count();
        assert_eq!(failed, 0, "{f} failed on good readings");
    }
    for (name, outcome) in HOSTILE {
        let ok = counter(&format!(
            "kiri_invocations_total{{function=\"{name}\",outcome=\"ok\"}}"
        ));
        let failed = counter(&format!(
            "kiri_invocations_total{{function=\"{name}\",outcome=\"{outcome}\"}}"
        ));
        assert_eq!(ok, 0.0, "{name} never succeeds");
        assert!(failed > 0.0, "{name} ran and failed as {outcome}");
    }
    for (i, life) in lives.iter().enumerate() {
        // Gross growth only: the store's cache and a backlog of a few thousand results come
        // on top of the start (which is measured once the gateway is subscribed).
        let (first, _, max) = rss_of(life);
        assert!(
            max < 3 * first + 64 * 1024,
            "life {i}: RSS grew from {:.1} MiB to {:.1} MiB",
            mib(first),
            mib(max)
        );
    }
}

fn print_report(r: &serde_json::Value) {
    let mut s = String::from("\n==== soak under faults ====\n");
    s += &format!(
        "duration {} s at {} readings/s (achieved {}/s), drained in {} s\n",
        r["duration_s"], r["rate_per_s"], r["achieved_rate_per_s"], r["drain_s"]
    );
    s += &format!(
        "sent (acknowledged by the site broker): {} readings, {} hostile inputs; {} sensor publishes sent again\n",
        r["sent"]["readings_acknowledged"],
        r["sent"]["hostile_inputs_acknowledged"],
        r["sent"]["sensor_publishes_sent_again"]
    );
    for (f, v) in r["received"].as_object().unwrap() {
        s += &format!(
            "{f:>9}: expected {}, received {} distinct, lost {}, duplicates {} ({} same record, {} processed again), out of order {}\n",
            v["expected"], v["received_distinct"], v["lost"], v["duplicates"],
            v["duplicates_same_record"], v["duplicates_processed_again"], v["out_of_order"]
        );
    }
    let d = &r["duplicates_expected_at_most_per_function"];
    s += &format!(
        "duplicates expected at most per function: {} same record, {} processed again + unread acks at kills\n",
        d["same_record"], d["processed_again"]
    );
    s += &format!("faults: {}\n", r["faults"]);
    s += &format!(
        "half-open noticed after (s): {}\n",
        r["half_open_noticed_after_s"]
    );
    s += &format!("reconnects: {}\n", r["reconnects"]);
    s += &format!("max backlog: {} results\n", r["backlog_max_records"]);
    s += &format!(
        "RSS: start {} MiB, end {} MiB, max {} MiB\n",
        r["rss"]["start_mib"], r["rss"]["end_mib"], r["rss"]["max_mib"]
    );
    for l in r["rss"]["lives"].as_array().unwrap() {
        s += &format!(
            "  life {}..{} s: RSS start {} MiB, end {} MiB, max {} MiB\n",
            l["from_s"], l["to_s"], l["rss_start_mib"], l["rss_end_mib"], l["rss_max_mib"]
        );
    }
    s += "failure counters (summed over the gateway's lives):\n";
    for (k, v) in r["counters_nonzero_failures"].as_object().unwrap() {
        s += &format!("  {k} {v}\n");
    }
    s += &format!("processed: {}\n", r["processed"]);
    s += &format!(
        "stray results: {}; log: {} error lines, {} panics\n",
        r["stray_results"], r["log"]["error_lines"], r["log"]["panics"]
    );
    s += "============================\n";
    eprintln!("{s}");
}

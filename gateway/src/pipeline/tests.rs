//! The pipeline's core without tokio, sockets or MQTT: a real registry, runtime and store (sled
//! in memory), a journal that can be told to fail its next flush, and a site broker that
//! records what the core hands it. The unit tests check one invariant each; the model check
//! runs random sequences of messages, timer ticks, HTTP calls, failing invocations, flush
//! errors and a full acknowledgement queue against a model of what may be acknowledged,
//! answered and forwarded at each step. Over 500 lines: the unit tests and the model check share
//! the guest, the faulty journal, the recording site broker and the fixture.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use proptest::prelude::*;
use rumqttc::QoS;
use tokio::sync::{oneshot, Notify};

use super::*;
use crate::config::OutboxConfig;
use crate::dead_letters::DeadLetters;
use crate::deploy::Deployer;
use crate::outbox::{Cursor, Outbox, Record};
use crate::registry::testing::{spec, RecordingTimers as Timers};
use crate::registry::{Origin, Registry};
use crate::runtime::Runtime;

/// Emits its payload to `out`, writes it under the key `last`, answers it, and then: with a
/// first byte of 1 returns error 1, with 2 traps; otherwise succeeds. Whatever it wrote before
/// failing must leave no trace.
const GUEST: &str = r#"(module
  (import "kiri" "emit" (func $emit (param i32 i32 i32 i32) (result i32)))
  (import "kiri" "kv_put" (func $put (param i32 i32 i32 i32) (result i32)))
  (import "kiri" "respond" (func $respond (param i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "out")
  (data (i32.const 32) "last")
  (func (export "kiri_abi_version") (result i32) i32.const 1)
  (func (export "kiri_alloc") (param i32) (result i32) i32.const 1024)
  (func (export "kiri_on_event") (param $t i32) (param $tl i32) (param $p i32) (param $pl i32)
      (param $ts i64) (result i32)
    (drop (call $emit (i32.const 16) (i32.const 3) (local.get $p) (local.get $pl)))
    (drop (call $put (i32.const 32) (i32.const 4) (local.get $p) (local.get $pl)))
    (drop (call $respond (local.get $p) (local.get $pl)))
    (if (i32.eqz (local.get $pl)) (then (return (i32.const 0))))
    (if (i32.eq (i32.load8_u (local.get $p)) (i32.const 1)) (then (return (i32.const 1))))
    (if (i32.eq (i32.load8_u (local.get $p)) (i32.const 2)) (then unreachable))
    i32.const 0))"#;

/// A payload the guest succeeds on (CBOR: the integer 7).
const OK: u8 = 7;
/// A payload the guest returns an error code on (CBOR: 1).
const FAILS: u8 = 1;
/// A payload the guest traps on (CBOR: 2).
const TRAPS: u8 = 2;
/// Not well-formed CBOR: rejected before any function runs.
const MALFORMED: u8 = 0xff;

/// What happened, in order, across the journal and the site broker.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seen {
    Flushed,
    FlushFailed,
    Acked(u16),
    Published(String),
    Subscribed(Vec<String>),
}

type Log = Arc<Mutex<Vec<Seen>>>;

/// The gateway's journal, whose next flush can be made to fail.
struct Faulty {
    inner: Durable,
    fail_next_flush: AtomicBool,
    log: Log,
}

impl Journal for Faulty {
    fn append(
        &self,
        records: &[crate::outbox::NewRecord],
        state: (&sled::Tree, &[crate::outbox::StateWrite]),
    ) -> Result<crate::outbox::StateChange, OutboxError> {
        self.inner.append(records, state)
    }

    fn dead_letter(&self, entry: crate::dead_letters::Entry) -> Result<(), OutboxError> {
        self.inner.dead_letter(entry)
    }

    fn remove_dead_letter(&self, id: u64) -> Result<(), sled::Error> {
        self.inner.remove_dead_letter(id)
    }

    fn release(&self, id: u64) {
        self.inner.release(id)
    }

    fn flush(&self) -> Result<(), OutboxError> {
        if self.fail_next_flush.swap(false, Ordering::Relaxed) {
            self.log.lock().unwrap().push(Seen::FlushFailed);
            let e = std::io::Error::other("the disk went away");
            return Err(OutboxError::Store(sled::Error::Io(e)));
        }
        self.inner.flush()?;
        self.log.lock().unwrap().push(Seen::Flushed);
        Ok(())
    }
}

/// The site broker side: records acknowledgements (taking at most `room` before it is full),
/// publications and subscription changes.
struct Recorder {
    log: Log,
    room: usize,
    subscribed: Vec<String>,
    unsubscribed: Vec<String>,
    settled: Option<Vec<String>>,
    requests_full: bool,
}

impl Acks for Recorder {
    fn hand_back(&mut self, ack: Ack) -> HandBack {
        if self.room == 0 {
            return HandBack::Full;
        }
        self.room -= 1;
        self.log.lock().unwrap().push(Seen::Acked(ack.pkid));
        HandBack::Taken
    }
}

impl Publish for Recorder {
    fn publish(&mut self, topic: String, _payload: Vec<u8>) -> Result<(), String> {
        self.log.lock().unwrap().push(Seen::Published(topic));
        Ok(())
    }
}

impl Subscriptions for Recorder {
    fn subscribe(&mut self, filters: &[String]) -> bool {
        if self.requests_full {
            return false;
        }
        self.subscribed.extend(filters.iter().cloned());
        self.log
            .lock()
            .unwrap()
            .push(Seen::Subscribed(filters.to_vec()));
        true
    }

    fn unsubscribe(&mut self, filter: &str) -> bool {
        if self.requests_full {
            return false;
        }
        self.unsubscribed.push(filter.to_string());
        true
    }

    fn settled(&mut self, all: &[String]) {
        self.settled = Some(all.to_vec());
    }
}

struct Fixture {
    core: Core<Faulty>,
    site: Recorder,
    log: Log,
    outbox: Arc<Outbox>,
    dead_letters: Arc<DeadLetters>,
    db: sled::Db,
    timers: Timers,
    cursor: Cursor,
    pkid: u16,
}

/// Function `f` (index 0): messages on `in/#`, a timer, HTTP. Function `g` (index 1): messages
/// on `in/#` and HTTP.
fn fixture() -> Fixture {
    fixture_with(|_| None)
}

/// The same, taking deployments with what `deployer` makes of the store.
fn fixture_with(deployer: impl FnOnce(&sled::Db) -> Option<Deployer>) -> Fixture {
    let db = sled::Config::new().temporary(true).open().unwrap();
    let outbox = Arc::new(Outbox::open(&db, OutboxConfig::default()).unwrap());
    let dead_letters =
        Arc::new(DeadLetters::open(&db, Default::default(), outbox.age().clone()).unwrap());
    let timers = Timers::default();
    let mut runtime = Runtime::new(1 << 16, db.clone());
    // Every invocation runs, however often the guest traps: the model has no clock.
    runtime.set_free_failures(u32::MAX);
    let mut registry = Registry::new(runtime, Box::new(timers.clone()));
    let wasm = wat::parse_str(GUEST).unwrap();
    for toml in [
        "name = \"f\"\nmodule = \"f.wasm\"\ntriggers = [\"in/#\"]\nevery = \"1h\"\nhttp = true\n",
        "name = \"g\"\nmodule = \"g.wasm\"\ntriggers = [\"in/#\"]\nhttp = true\n",
    ] {
        let spec = spec(toml);
        let prepared = registry.preparer(&spec).prepare(&wasm).unwrap();
        registry.activate(spec, prepared, Origin::Config);
    }
    let log: Log = Default::default();
    let journal = Faulty {
        inner: Durable {
            outbox: outbox.clone(),
            dead_letters: dead_letters.clone(),
        },
        fail_next_flush: AtomicBool::new(false),
        log: log.clone(),
    };
    let limits = Limits {
        max_message_bytes: 1024,
        batch: 128,
        window: std::time::Duration::ZERO,
        unacked: 100,
    };
    let subscriptions = Arc::new(Mutex::new(registry.subscriptions()));
    let core = Core::new(
        registry,
        journal,
        deployer(&db),
        limits,
        subscriptions,
        Arc::new(Notify::new()),
    );
    let site = Recorder {
        log: log.clone(),
        room: usize::MAX,
        subscribed: Vec::new(),
        unsubscribed: Vec::new(),
        settled: None,
        requests_full: false,
    };
    Fixture {
        core,
        site,
        log,
        outbox,
        dead_letters,
        db,
        timers,
        cursor: Cursor::default(),
        pkid: 0,
    }
}

impl Fixture {
    /// A message on `in/x` with `payload`, QoS 1 (with the next packet id) or 0.
    fn message(&mut self, payload: &[u8], qos1: bool) -> (Work, Option<u16>) {
        let qos = if qos1 {
            QoS::AtLeastOnce
        } else {
            QoS::AtMostOnce
        };
        let mut publish = rumqttc::Publish::new("in/x", qos, Bytes::copy_from_slice(payload));
        let pkid = qos1.then(|| {
            self.pkid = self.pkid % 60_000 + 1;
            self.pkid
        });
        publish.pkid = pkid.unwrap_or(0);
        let m = Incoming {
            publish,
            received_ms: 1,
            connection: 1,
        };
        (Work::Message(m), pkid)
    }

    /// An HTTP call to function `function` with `body`, and where its answer arrives.
    fn call(function: usize, body: &[u8]) -> (Work, Answer) {
        let (reply, answer) = oneshot::channel();
        let call = HttpInvoke {
            function,
            body: body.to_vec(),
            received_ms: 1,
            caller: None,
            request: Arc::new(crate::runtime::HttpRequest::new("POST", "/", "", &[])),
            reply,
        };
        (Work::Invoke(call), answer)
    }

    fn process(&mut self, group: Vec<Work>) -> Result<Step, ProcessError> {
        self.core.process(group, &mut self.site)
    }

    fn seen(&self) -> Vec<Seen> {
        self.log.lock().unwrap().clone()
    }

    /// The results the uplink can read now (flushed), (function, payload), in outbox order.
    fn forwardable(&mut self) -> Vec<(String, Vec<u8>)> {
        let records: Vec<Record> = self
            .outbox
            .read(&mut self.cursor, 10_000, usize::MAX, |_| 0)
            .unwrap();
        records
            .into_iter()
            .map(|r| (r.function, r.payload))
            .collect()
    }

    /// Function `name`'s value under `last`, if any.
    fn state(&self, name: &str) -> Option<Vec<u8>> {
        let tree = self.db.open_tree(format!("kv/{name}")).unwrap();
        tree.get("last").unwrap().map(|v| v.to_vec())
    }
}

#[test]
fn no_message_is_acknowledged_before_its_group_is_flushed() {
    let mut fx = fixture();
    let group: Vec<Work> = (0..3).map(|_| fx.message(&[OK], true).0).collect();
    assert_eq!(fx.process(group).unwrap(), Step::Committed);
    assert_eq!(
        fx.seen(),
        [
            Seen::Flushed,
            Seen::Acked(1),
            Seen::Acked(2),
            Seen::Acked(3)
        ]
    );
}

#[test]
fn a_failed_flush_acknowledges_and_answers_nothing() {
    let mut fx = fixture();
    let (m, _) = fx.message(&[OK], true);
    let (call, mut answer) = Fixture::call(1, &[OK]);
    fx.core
        .journal
        .fail_next_flush
        .store(true, Ordering::Relaxed);
    assert!(fx.process(vec![m, call]).is_err(), "the gateway must stop");
    assert_eq!(fx.seen(), [Seen::FlushFailed]);
    assert!(
        !matches!(answer.try_recv(), Ok(Ok(_))),
        "no answer of an uncommitted call"
    );
    // The results were written, so the cloud may have them already; their inputs, never
    // acknowledged, come again after the restart: at least once.
    assert_eq!(
        fx.forwardable().len(),
        3,
        "f and g's results, then g's answer"
    );
}

/// The fixture with a commit window of `ms` milliseconds.
fn fixture_with_window(ms: u64) -> Fixture {
    let mut fx = fixture();
    fx.core.limits.window = std::time::Duration::from_millis(ms);
    fx
}

#[test]
fn within_a_commit_window_results_go_at_once_and_acknowledgements_after_its_flush() {
    let mut fx = fixture_with_window(60_000);
    let (m1, p1) = fx.message(&[OK], true);
    fx.process(vec![m1]).unwrap();
    let (m2, p2) = fx.message(&[OK], true);
    fx.process(vec![m2]).unwrap();
    assert_eq!(fx.seen(), [], "no flush and no acknowledgement yet");
    assert_eq!(
        fx.forwardable().len(),
        4,
        "the results are readable at once"
    );
    assert!(fx.core.deadline().is_some());
    fx.core.close_window(&mut fx.site).unwrap();
    assert_eq!(
        fx.seen(),
        [
            Seen::Flushed,
            Seen::Acked(p1.unwrap()),
            Seen::Acked(p2.unwrap())
        ]
    );
    assert!(fx.core.deadline().is_none(), "closed");
    fx.core.close_window(&mut fx.site).unwrap();
    assert_eq!(fx.seen().len(), 3, "nothing left to flush");
}

#[test]
fn an_http_call_or_a_full_batch_closes_the_commit_window_at_once() {
    let mut fx = fixture_with_window(60_000);
    let (m, p) = fx.message(&[OK], true);
    fx.process(vec![m]).unwrap();
    let (call, mut answer) = Fixture::call(1, b"body");
    fx.process(vec![call]).unwrap();
    assert_eq!(fx.seen(), [Seen::Flushed, Seen::Acked(p.unwrap())]);
    assert!(
        answer.try_recv().unwrap().is_ok(),
        "answered after the flush"
    );
    assert!(fx.core.deadline().is_none());
    fx.core.limits.batch = 3;
    let group: Vec<Work> = (0..3).map(|_| fx.message(&[OK], true).0).collect();
    fx.process(group).unwrap();
    assert_eq!(fx.seen().len(), 2 + 1 + 3, "a full batch flushes");
    // As many unacknowledged messages as the site broker sends before it waits: it would
    // wait for the window.
    fx.core.limits.batch = 128;
    fx.core.limits.unacked = 2;
    let (m, _) = fx.message(&[OK], true);
    fx.process(vec![m]).unwrap();
    let (timer, _) = (
        Work::Timer {
            function: 0,
            at_ms: 1,
        },
        (),
    );
    fx.process(vec![timer]).unwrap();
    assert_eq!(
        fx.seen().len(),
        6,
        "a timer tick is not a message the broker waits on"
    );
    let (m, _) = fx.message(&[OK], true);
    fx.process(vec![m]).unwrap();
    assert_eq!(fx.seen().len(), 6 + 1 + 2, "flushed at the broker's window");
}

#[test]
fn a_failed_flush_at_the_end_of_a_window_acknowledges_nothing() {
    let mut fx = fixture_with_window(60_000);
    let (m, _) = fx.message(&[OK], true);
    fx.process(vec![m]).unwrap();
    fx.core
        .journal
        .fail_next_flush
        .store(true, Ordering::Relaxed);
    assert!(fx.core.close_window(&mut fx.site).is_err());
    assert_eq!(fx.seen(), [Seen::FlushFailed]);
}

#[test]
fn an_http_call_is_answered_only_after_its_effects_are_committed() {
    let mut fx = fixture();
    let (call, mut answer) = Fixture::call(1, b"body");
    let (m, _) = fx.message(&[OK], true);
    fx.process(vec![call, m]).unwrap();
    assert_eq!(answer.try_recv().unwrap().unwrap().body.unwrap(), b"body");
    assert_eq!(fx.seen()[0], Seen::Flushed, "flushed before anything left");
    assert_eq!(fx.state("g").as_deref(), Some(&[OK][..]));
    let out = fx.forwardable();
    assert!(out.contains(&("g".into(), b"body".to_vec())), "{out:?}");
}

#[test]
fn a_failed_invocation_leaves_no_state_and_no_output_and_is_dead_lettered() {
    let mut fx = fixture();
    let (ok, _) = fx.message(&[OK], true);
    fx.process(vec![ok]).unwrap();
    let before = fx.forwardable().len();
    for bad in [FAILS, TRAPS] {
        let (m, pkid) = fx.message(&[bad], true);
        fx.process(vec![m]).unwrap();
        assert_eq!(fx.state("f").as_deref(), Some(&[OK][..]), "state unchanged");
        assert!(fx.forwardable().is_empty(), "no output");
        assert_eq!(
            fx.seen().last(),
            Some(&Seen::Acked(pkid.unwrap())),
            "a failure is committed as a dead letter, then acknowledged"
        );
    }
    assert_eq!(before, 2, "f and g each forwarded the good one");
    let mut reasons: Vec<String> = fx
        .dead_letters
        .list(None, 10)
        .unwrap()
        .into_iter()
        .map(|(_, e)| format!("{}:{}", e.function.unwrap(), e.reason))
        .collect();
    // f and g run side by side: their entries may come in either order.
    reasons.sort();
    assert_eq!(reasons, ["f:error", "f:trap", "g:error", "g:trap"]);
}

#[test]
fn a_failed_http_call_is_answered_with_why_and_leaves_no_dead_letter() {
    let mut fx = fixture();
    let (call, mut answer) = Fixture::call(0, &[TRAPS]);
    fx.process(vec![call]).unwrap();
    let failure = answer.try_recv().unwrap().unwrap_err();
    assert_eq!(failure.reason, "trap");
    assert!(fx.dead_letters.is_empty());
    assert!(fx.forwardable().is_empty());
}

#[test]
fn each_function_forwards_its_results_in_the_order_of_its_events() {
    let mut fx = fixture();
    let group: Vec<Work> = (10..40u8)
        .map(|i| fx.message(&[0x18, i], i % 2 == 0).0)
        .collect();
    fx.process(group).unwrap();
    let out = fx.forwardable();
    for f in ["f", "g"] {
        let order: Vec<u8> = out
            .iter()
            .filter(|(name, _)| name == f)
            .map(|(_, p)| p[1])
            .collect();
        assert_eq!(order, (10..40).collect::<Vec<u8>>(), "function {f}");
    }
}

#[test]
fn qos0_messages_are_processed_but_never_acknowledged() {
    let mut fx = fixture();
    let (m, pkid) = fx.message(&[OK], false);
    assert_eq!(pkid, None);
    fx.process(vec![m]).unwrap();
    assert_eq!(fx.seen(), [Seen::Flushed]);
    assert_eq!(fx.forwardable().len(), 2);
}

#[test]
fn rejected_inputs_are_dead_lettered_then_acknowledged() {
    let mut fx = fixture();
    let (bad, pkid) = fx.message(&[MALFORMED], true);
    let (big, big_pkid) = fx.message(&[0u8; 2000], true);
    fx.process(vec![bad, big]).unwrap();
    assert_eq!(
        fx.seen(),
        [
            Seen::Flushed,
            Seen::Acked(pkid.unwrap()),
            Seen::Acked(big_pkid.unwrap())
        ]
    );
    let kept: Vec<(Option<String>, String)> = fx
        .dead_letters
        .list(None, 10)
        .unwrap()
        .into_iter()
        .map(|(_, e)| (e.function, e.reason))
        .collect();
    // Not in the format of either function it triggers: refused for each (each may have a
    // format of its own, and each can replay it); too large: refused once, for none.
    let names: Vec<Option<String>> = kept[..2].iter().map(|k| k.0.clone()).collect();
    assert!(names.iter().all(Option::is_some), "{kept:?}");
    assert_ne!(names[0], names[1]);
    let reasons: Vec<&str> = kept.iter().map(|k| k.1.as_str()).collect();
    assert_eq!(reasons, ["malformed", "malformed", "oversized"]);
    assert_eq!(kept[2].0, None);
    assert!(fx.forwardable().is_empty());
}

#[test]
fn acknowledgements_the_ingest_task_cannot_take_wait_and_go_in_order() {
    let mut fx = fixture();
    fx.site.room = 1;
    let group: Vec<Work> = (0..4).map(|_| fx.message(&[OK], true).0).collect();
    fx.process(group).unwrap();
    assert_eq!(fx.seen(), [Seen::Flushed, Seen::Acked(1)]);
    assert!(fx.core.waiting(), "the rest wait in the core");
    fx.site.room = usize::MAX;
    fx.core.hand_back_acks(&mut fx.site);
    assert_eq!(
        fx.seen()[1..],
        [
            Seen::Acked(1),
            Seen::Acked(2),
            Seen::Acked(3),
            Seen::Acked(4)
        ]
    );
    assert!(!fx.core.waiting());
}

#[test]
fn work_for_a_retired_function_runs_nothing_and_a_stale_call_is_refused() {
    let mut fx = fixture();
    assert!(fx.core.registry.retire("f"));
    let (call, mut answer) = Fixture::call(0, &[OK]);
    let tick = Work::Timer {
        function: 0,
        at_ms: 1,
    };
    fx.process(vec![tick, call]).unwrap();
    assert_eq!(answer.try_recv().unwrap().unwrap_err().reason, "not_found");
    assert!(fx.forwardable().is_empty());
    assert_eq!(fx.state("f"), None);
    assert_eq!(fx.timers.0.lock().unwrap().last().unwrap(), "clear 0");
}

#[test]
fn a_timer_tick_runs_its_function_with_an_empty_payload() {
    let mut fx = fixture();
    let tick = Work::Timer {
        function: 0,
        at_ms: 1,
    };
    fx.process(vec![tick]).unwrap();
    assert_eq!(fx.forwardable(), [("f".to_string(), Vec::new())]);
    assert_eq!(fx.seen(), [Seen::Flushed], "nothing to acknowledge");
}

#[test]
fn subscriptions_follow_the_functions_and_wait_while_requests_are_full() {
    let mut fx = fixture();
    assert!(fx.core.registry.retire("f"));
    assert!(fx.core.registry.retire("g"));
    fx.core.want_subscriptions();
    fx.site.requests_full = true;
    fx.core.sync_subscriptions(&mut fx.site);
    assert!(fx.core.waiting(), "kept for the next turn");
    assert_eq!(fx.site.settled, None);
    fx.site.requests_full = false;
    fx.core.sync_subscriptions(&mut fx.site);
    assert_eq!(fx.site.unsubscribed, ["in/#"]);
    assert_eq!(fx.site.settled, Some(Vec::new()));
    assert!(!fx.core.waiting());
}

#[test]
fn a_deployment_subscribes_to_its_triggers_before_it_answers_and_is_acknowledged_after() {
    use crate::crypto::keys;
    use crate::deploy::{self, Deployments, Kind, Manifest, Package, Policy, Room};
    let key = keys::generate();
    let dir = tempfile::tempdir().unwrap();
    let (replies, _) = tokio::sync::mpsc::channel(4);
    let mut fx = fixture_with(|db| {
        let room = Room {
            max_functions: 4,
            dir: dir.path().to_path_buf(),
            min_free_bytes: 0,
        };
        Some(Deployer {
            policy: Policy {
                trusted: vec![key.verifying_key()],
                gateway: "gw".into(),
                groups: Vec::new(),
                max_bytes: 1 << 20,
            },
            store: Deployments::open(db, 2, room).unwrap(),
            cloud_replies: replies,
        })
    });
    let wasm = wat::parse_str(GUEST).unwrap();
    let manifest = Manifest {
        kind: Kind::Deploy,
        name: "h".into(),
        version: 1,
        module_sha256: Some(deploy::sha256_hex(&wasm)),
        function: Some(spec(
            "name = \"h\"\nmodule = \"\"\ntriggers = [\"new/#\"]\n",
        )),
        rollback_to: None,
        expires_ms: None,
        gateways: vec!["gw".into()],
        groups: Vec::new(),
        created_ms: 1,
    };
    let package = Package::sign(&key, crate::codec::to_cbor(&manifest), wasm).encode();
    let mut publish = rumqttc::Publish::new("kiri/gw/deploy/h", QoS::AtLeastOnce, package);
    publish.pkid = 9;
    let work = Work::Message(Incoming {
        publish,
        received_ms: 1,
        connection: 1,
    });
    let (before, _) = fx.message(&[OK], true);
    fx.process(vec![before, work]).unwrap();
    let seen = fx.seen();
    let subscribed = seen
        .iter()
        .position(|s| matches!(s, Seen::Subscribed(f) if f.contains(&"new/#".to_string())))
        .expect("subscribed to the new trigger");
    let answered = seen
        .iter()
        .position(|s| s == &Seen::Published("kiri/gw/deploy/h/result".into()))
        .expect("the result is published");
    let acked = seen
        .iter()
        .position(|s| s == &Seen::Acked(9))
        .expect("the package is acknowledged");
    assert!(subscribed < answered && answered < acked, "{seen:?}");
    assert_eq!(fx.core.registry.route("new/x"), [2]);
}

/// One step of a random run.
#[derive(Debug, Clone)]
enum Action {
    /// A message with this payload byte, QoS 1 or 0.
    Message { byte: u8, qos1: bool },
    /// Function `f`'s timer fires.
    Tick,
    /// An HTTP call to `g` with this body byte.
    Call { byte: u8 },
    /// The group so far is processed.
    Cut,
    /// The next flush fails.
    FailNextFlush,
    /// The ingest task takes at most this many acknowledgements from now on.
    AckRoom(usize),
}

fn byte() -> impl Strategy<Value = u8> {
    prop_oneof![6 => Just(OK), 1 => Just(FAILS), 1 => Just(TRAPS), 1 => Just(MALFORMED)]
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        8 => (byte(), any::<bool>()).prop_map(|(byte, qos1)| Action::Message { byte, qos1 }),
        2 => Just(Action::Tick),
        2 => byte().prop_map(|byte| Action::Call { byte }),
        4 => Just(Action::Cut),
        1 => Just(Action::FailNextFlush),
        1 => (0usize..6).prop_map(Action::AckRoom),
    ]
}

/// Where an HTTP call's answer arrives.
type Answer = oneshot::Receiver<Result<crate::runtime::HttpAnswer, InvokeFailure>>;

/// What the model expects of one group once it is committed.
#[derive(Default)]
struct Expected {
    acks: Vec<u16>,
    /// (function, payload) per successful invocation, in event order.
    results: Vec<(String, Vec<u8>)>,
    /// Each HTTP call's receiver and the answer it must get.
    answers: Vec<(Answer, Result<Vec<u8>, &'static str>)>,
    /// The last successful payload written by each function.
    state: BTreeMap<&'static str, Vec<u8>>,
}

/// How the guest answers `payload`: its payload back, or why it fails.
fn guest(payload: &[u8]) -> Result<Vec<u8>, &'static str> {
    match payload.first() {
        Some(&FAILS) => Err("error"),
        Some(&TRAPS) => Err("trap"),
        _ => Ok(payload.to_vec()),
    }
}

fn run_model(actions: Vec<Action>) -> Result<(), TestCaseError> {
    let mut fx = fixture();
    let mut group = Vec::new();
    let mut expected = Expected::default();
    // Everything the model says may be acknowledged, forwarded, and the state, so far.
    let mut committed_acks: Vec<u16> = Vec::new();
    let mut committed: Vec<(String, Vec<u8>)> = Vec::new();
    let mut state: BTreeMap<&'static str, Vec<u8>> = BTreeMap::new();
    let mut actions: VecDeque<Action> = actions.into();
    actions.push_back(Action::Cut);
    while let Some(a) = actions.pop_front() {
        match a {
            Action::Message { byte, qos1 } => {
                let (m, pkid) = fx.message(&[byte], qos1);
                group.push(m);
                expected.acks.extend(pkid);
                if byte != MALFORMED {
                    for f in ["f", "g"] {
                        if let Ok(out) = guest(&[byte]) {
                            expected.results.push((f.into(), out.clone()));
                            expected.state.insert(f, out);
                        }
                    }
                }
            }
            Action::Tick => {
                group.push(Work::Timer {
                    function: 0,
                    at_ms: 1,
                });
                expected.results.push(("f".into(), Vec::new()));
                expected.state.insert("f", Vec::new());
            }
            Action::Call { byte } => {
                let (call, answer) = Fixture::call(1, &[byte]);
                group.push(call);
                let outcome = guest(&[byte]);
                if let Ok(out) = &outcome {
                    expected.results.push(("g".into(), out.clone()));
                    expected.state.insert("g", out.clone());
                }
                expected.answers.push((answer, outcome));
            }
            Action::FailNextFlush => fx
                .core
                .journal
                .fail_next_flush
                .store(true, Ordering::Relaxed),
            Action::AckRoom(n) => fx.site.room = n,
            Action::Cut => {
                // An empty group flushes nothing, so nothing can fail.
                let failing =
                    fx.core.journal.fail_next_flush.load(Ordering::Relaxed) && !group.is_empty();
                let result = fx.process(std::mem::take(&mut group));
                let e = std::mem::take(&mut expected);
                if failing {
                    // The gateway stops: nothing of this group is acknowledged or answered, and
                    // what was committed before stays as it was. Its results were written, so
                    // they may have gone to the cloud (their inputs come again after the
                    // restart: at least once).
                    prop_assert!(result.is_err());
                    for (mut answer, _) in e.answers {
                        prop_assert!(!matches!(answer.try_recv(), Ok(Ok(_))));
                    }
                    check_acks(&fx, &committed_acks)?;
                    let out = fx.forwardable();
                    for f in ["f", "g"] {
                        let got: Vec<&Vec<u8>> =
                            out.iter().filter(|(n, _)| n == f).map(|(_, p)| p).collect();
                        let want: Vec<&Vec<u8>> = e
                            .results
                            .iter()
                            .filter(|(n, _)| n == f)
                            .map(|(_, p)| p)
                            .collect();
                        prop_assert_eq!(got, want, "function {}", f);
                    }
                    return Ok(());
                }
                prop_assert_eq!(result.unwrap(), Step::Committed);
                committed_acks.extend(e.acks);
                committed.extend(e.results);
                state.extend(e.state);
                for (mut answer, outcome) in e.answers {
                    let got = answer.try_recv().expect("answered once committed");
                    let got = got
                        .map(|a| a.body.unwrap_or_default())
                        .map_err(|f| f.reason);
                    prop_assert_eq!(got, outcome);
                }
                check_acks(&fx, &committed_acks)?;
                let out = fx.forwardable();
                for f in ["f", "g"] {
                    let got: Vec<&Vec<u8>> =
                        out.iter().filter(|(n, _)| n == f).map(|(_, p)| p).collect();
                    let want: Vec<&Vec<u8>> = committed
                        .iter()
                        .filter(|(n, _)| n == f)
                        .map(|(_, p)| p)
                        .collect();
                    prop_assert_eq!(got, want, "function {}", f);
                }
                committed.clear();
                for f in ["f", "g"] {
                    prop_assert_eq!(fx.state(f), state.get(f).cloned(), "state of {}", f);
                }
            }
        }
    }
    // With room again, every acknowledgement the model allows goes, in order.
    fx.site.room = usize::MAX;
    fx.core.hand_back_acks(&mut fx.site);
    let acked: Vec<u16> = acks(&fx);
    prop_assert_eq!(acked, committed_acks);
    Ok(())
}

fn acks(fx: &Fixture) -> Vec<u16> {
    fx.seen()
        .into_iter()
        .filter_map(|s| match s {
            Seen::Acked(pkid) => Some(pkid),
            _ => None,
        })
        .collect()
}

/// The acknowledgements handed back so far are a prefix of what the model allows, in order.
fn check_acks(fx: &Fixture, allowed: &[u16]) -> Result<(), TestCaseError> {
    let acked = acks(fx);
    prop_assert!(acked.len() <= allowed.len(), "{acked:?} beyond {allowed:?}");
    prop_assert_eq!(&acked[..], &allowed[..acked.len()]);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("TEST_MODEL_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(64),
        ..ProptestConfig::default()
    })]

    /// Random runs against the model of what may be acknowledged, answered and forwarded.
    #[test]
    fn the_pipeline_acknowledges_and_answers_only_what_is_committed(
        actions in proptest::collection::vec(action(), 1..60),
    ) {
        run_model(actions)?;
    }
}

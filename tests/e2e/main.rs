//! End-to-end tests: the real `kiri` binary, its embedded broker or Mosquitto as the local
//! broker, Mosquitto as the cloud, real MQTT clients on 127.0.0.1.

mod authoring;
mod board;
mod broker_auth;
mod browser;
mod clock;
mod damage;
mod delivery;
mod deploy;
mod formats;
mod front_door;
mod identity;
mod isolation;
mod languages;
mod mqtt5;
mod observe;
mod packages;
mod page;
mod powercut;
mod quickstart;
mod reload;
mod sdimage;
mod sensors;
mod site_broker;
mod soak;
mod util;

use std::time::Duration;

use std::process::Command;

use util::*;

/// A test site: a temp dir, a Mosquitto "cloud" with a consumer on `kiri/#`, and a free
/// port for the gateway's embedded broker.
fn site(consumer: &str) -> (tempfile::TempDir, Mosquitto, CloudSubscriber, u16) {
    let dir = tempfile::tempdir().unwrap();
    let cloud = Mosquitto::start(&dir.path().join("cloud"));
    let sub = CloudSubscriber::start(cloud.port, consumer);
    (dir, cloud, sub, free_port())
}

/// A gateway configuration with the given broker section and function entries.
fn config_with(cloud_url: &str, broker: &str, functions: &str) -> String {
    format!(
        r#"
[gateway]
id = "gw-test"
[broker]
{broker}
[cloud]
url = "{cloud_url}"
backoff_initial_ms = 50
backoff_max_ms = 500
{functions}
"#
    )
}

/// ... with the `convert` example on `sensors/+/temperature`.
fn config(cloud_url: &str, broker: &str) -> String {
    let convert = format!(
        "[[functions]]\nname = \"convert\"\nmodule = \"{}\"\ntriggers = [\"sensors/+/temperature\"]\n",
        function_wasm("convert").display()
    );
    config_with(cloud_url, broker, &convert)
}

fn embedded(port: u16) -> String {
    format!("mode = \"embedded\"\nlisten = \"127.0.0.1:{port}\"")
}

#[test]
fn readings_reach_the_cloud_in_order_through_outages_and_restarts() {
    let (dir, mut cloud, sub, broker_port) = site("cloud-consumer");
    let mut kiri = Kiri::start(
        &dir.path().join("kiri"),
        &config(&cloud.url(), &embedded(broker_port)),
        &[],
    );

    // 1. The happy path: 1,000 readings, each converted, all delivered, in order.
    publish_all(
        broker_port,
        "sensor-1",
        "sensors/s1/temperature",
        (0..1000).map(|i| reading("s1", i)).collect(),
    );
    sub.wait_for(1000, Duration::from_secs(60), &mut kiri);
    assert_in_order(&sub.distinct_seqs(), 1000);
    {
        let received = sub.received.lock().unwrap();
        let (topic, first) = &received[0];
        assert_eq!(topic, "kiri/gw-test/readings/s1/temperature");
        assert_eq!(
            (first.gateway.as_str(), first.function.as_str()),
            ("gw-test", "convert")
        );
        let r = kiri_reading::Reading::decode(&first.payload).unwrap();
        assert_eq!((r.value, r.unit), (32.0, "F"), "0 °C becomes 32 °F");
        let last = kiri_reading::Reading::decode(&received.last().unwrap().1.payload).unwrap();
        assert!((last.value - (999.0 * 1.8 + 32.0)).abs() < 1e-9);
    }

    // 2. The cloud goes away: results are held, then all delivered in order when it returns.
    cloud.stop();
    publish_all(
        broker_port,
        "sensor-1",
        "sensors/s1/temperature",
        (1000..2000).map(|i| reading("s1", i)).collect(),
    );
    wait_until(
        "1,000 results buffered in the outbox",
        Duration::from_secs(60),
        || kiri.metric("kiri_outbox_records") >= 1000.0,
    );
    let back = std::time::Instant::now();
    cloud.restart();
    sub.wait_for(2000, Duration::from_secs(60), &mut kiri);
    assert_in_order(&sub.distinct_seqs(), 2000);
    eprintln!(
        "outage: 1,000 held results drained in {:.2} s after the cloud returned (debug build, includes the reconnect)",
        back.elapsed().as_secs_f64()
    );

    // 3. Kiri itself dies (SIGKILL) with results buffered: they are delivered after a restart.
    cloud.stop();
    publish_all(
        broker_port,
        "sensor-1",
        "sensors/s1/temperature",
        (2000..2500).map(|i| reading("s1", i)).collect(),
    );
    // Committed, not just written: the embedded broker keeps in memory only what Kiri has not
    // committed yet, and that dies with the process (see docs/delivery-guarantees.md).
    wait_until("500 results committed", Duration::from_secs(60), || {
        let outbox = &kiri.status()["outbox"];
        outbox["records"].as_u64() >= Some(500) && outbox["unflushed"] == 0
    });
    kiri.kill9();
    cloud.restart();
    kiri.restart();
    sub.wait_for(2500, Duration::from_secs(60), &mut kiri);
    assert_in_order(&sub.distinct_seqs(), 2500);
    let total = sub.received.lock().unwrap().len();
    eprintln!("2500 distinct results, {} duplicates", total - 2500);
    kiri.stop();
}

#[test]
fn malformed_and_oversized_inputs_are_rejected_and_counted_and_the_next_one_is_processed() {
    let (dir, cloud, sub, broker_port) = site("cloud-consumer-2");
    let env = [("KIRI_BROKER_MAX_MESSAGE_BYTES", "1024".to_string())];
    let mut kiri = Kiri::start(
        &dir.path().join("kiri"),
        &config(&cloud.url(), &embedded(broker_port)),
        &env,
    );

    let topic = "sensors/s1/temperature";
    publish_all(
        broker_port,
        "sensor-bad",
        topic,
        vec![b"this is not CBOR".to_vec()],
    );
    publish_all(broker_port, "sensor-big", topic, vec![vec![0u8; 4096]]);
    publish_all(broker_port, "sensor-ok", topic, vec![reading("s1", 0)]);
    sub.wait_for(1, Duration::from_secs(30), &mut kiri);
    assert_eq!(sub.distinct_seqs(), vec![0]);
    wait_until("rejections counted", Duration::from_secs(10), || {
        kiri.metric("kiri_ingest_rejected_total{reason=\"malformed\"}") == 1.0
            && kiri.metric("kiri_ingest_rejected_total{reason=\"oversized\"}") == 1.0
    });
    assert_eq!(kiri.metric("kiri_dead_letters_total"), 2.0);
    let log = kiri.log_text();
    assert!(
        log.contains("reason=\"malformed\"") || log.contains("reason=malformed"),
        "malformed input logged"
    );
    assert!(
        log.contains("exceeds broker.max_message_bytes"),
        "oversized input logged"
    );
    kiri.assert_running();
}

#[test]
fn triggers_follow_the_configuration_across_restarts_on_a_persistent_session() {
    let dir = tempfile::tempdir().unwrap();
    let cloud = Mosquitto::start(&dir.path().join("cloud"));
    let local = Mosquitto::start(&dir.path().join("local"));
    let sub = CloudSubscriber::start(cloud.port, "cloud-consumer-4");
    let broker = format!("mode = \"external\"\nurl = \"{}\"", local.url());
    let first = config(&cloud.url(), &broker);
    let kiri_dir = dir.path().join("kiri");
    let mut kiri = Kiri::start(&kiri_dir, &first, &[]);
    publish_all(
        local.port,
        "s-a",
        "sensors/a/temperature",
        vec![reading("a", 0)],
    );
    sub.wait_for(1, Duration::from_secs(30), &mut kiri);
    drop(kiri);

    // Same session, new trigger set: `other/+/temperature` in, `sensors/+/temperature` out.
    let second = first.replace("sensors/+/temperature", "other/+/temperature");
    let mut kiri = Kiri::start(&kiri_dir, &second, &[]);
    publish_all(
        local.port,
        "s-a",
        "sensors/a/temperature",
        vec![reading("a", 1)],
    );
    publish_all(
        local.port,
        "s-b",
        "other/b/temperature",
        vec![reading("b", 2)],
    );
    sub.wait_for(2, Duration::from_secs(30), &mut kiri);
    assert_eq!(
        sub.distinct_seqs(),
        vec![0, 2],
        "the old trigger is gone, the new one works"
    );
    assert_eq!(
        kiri.metric("kiri_ingest_messages_total"),
        1.0,
        "no message on the removed trigger"
    );
}

#[test]
fn function_state_is_durable_across_a_kill_9() {
    let (dir, cloud, sub, broker_port) = site("cloud-consumer-5");
    let average = format!(
        "[[functions]]\nname = \"average\"\nmodule = \"{}\"\ntriggers = [\"sensors/+/temperature\"]\n\
         emit = [\"averages/#\"]\nconfig = {{ window = 10 }}\n",
        function_wasm("average").display()
    );
    let config = config_with(&cloud.url(), &embedded(broker_port), &average);
    let mut kiri = Kiri::start(&dir.path().join("kiri"), &config, &[]);
    // Distinct records (a kill -9 right after delivery may resend the last ones, same id).
    let averages = |sub: &CloudSubscriber| -> Vec<f64> {
        let mut seen = std::collections::HashSet::new();
        sub.received
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, e)| seen.insert(e.id.clone()))
            .map(|(_, e)| kiri_reading::Reading::decode(&e.payload).unwrap().value)
            .collect()
    };
    publish_all(
        broker_port,
        "s",
        "sensors/s1/temperature",
        vec![reading("s1", 10), reading("s1", 20)],
    );
    sub.wait_for(2, Duration::from_secs(30), &mut kiri);
    assert_eq!(averages(&sub), vec![10.0, 15.0]);
    kiri.kill9();
    kiri.restart();
    publish_all(
        broker_port,
        "s",
        "sensors/s1/temperature",
        vec![reading("s1", 30)],
    );
    sub.wait_for(3, Duration::from_secs(30), &mut kiri);
    assert_eq!(
        averages(&sub),
        vec![10.0, 15.0, 20.0],
        "the window survived the kill"
    );
}

#[test]
fn a_timer_flushes_windowed_aggregates() {
    let (dir, cloud, sub, broker_port) = site("cloud-consumer-6");
    let window = format!(
        "[[functions]]\nname = \"window\"\nmodule = \"{}\"\ntriggers = [\"sensors/+/temperature\"]\nevery = \"300ms\"\n",
        function_wasm("window").display()
    );
    let mut kiri = Kiri::start(
        &dir.path().join("kiri"),
        &config_with(&cloud.url(), &embedded(broker_port), &window),
        &[],
    );
    publish_all(
        broker_port,
        "s",
        "sensors/s1/temperature",
        (0..3).map(|i| reading("s1", i)).collect(),
    );
    // The readings may fall into one window or two; the counts must add up to 3, once each.
    let counted = || -> u64 {
        sub.received
            .lock()
            .unwrap()
            .iter()
            .map(|(topic, e)| {
                assert_eq!(topic, "kiri/gw-test/aggregates/s1/temperature");
                let v: ciborium::Value = ciborium::de::from_reader(&e.payload[..]).unwrap();
                let count = v
                    .as_map()
                    .unwrap()
                    .iter()
                    .find(|(k, _)| k.as_text() == Some("count"))
                    .unwrap()
                    .1
                    .clone();
                u64::try_from(count.as_integer().unwrap()).unwrap()
            })
            .sum()
    };
    assert!(
        poll_until(Duration::from_secs(30), || {
            kiri.assert_running();
            counted() >= 3
        }),
        "aggregates arrived"
    );
    std::thread::sleep(Duration::from_millis(700));
    assert_eq!(counted(), 3, "each reading counted once");
    assert!(
        kiri.metric("kiri_invocations_total{function=\"window\",outcome=\"ok\"}") >= 5.0,
        "readings and ticks"
    );
}

#[test]
fn a_function_written_in_c_against_the_abi_runs() {
    let (dir, cloud, sub, broker_port) = site("cloud-consumer-7");
    let relay = format!(
        "[[functions]]\nname = \"relay\"\nmodule = \"{}\"\ntriggers = [\"sensors/+/raw\"]\nconfig = {{ prefix = \"copy\" }}\n",
        c_function_wasm("relay").display()
    );
    let mut kiri = Kiri::start(
        &dir.path().join("kiri"),
        &config_with(&cloud.url(), &embedded(broker_port), &relay),
        &[],
    );
    let sent: Vec<Vec<u8>> = (0..3).map(|i| reading("s1", i)).collect();
    publish_all(broker_port, "s", "sensors/s1/raw", sent.clone());
    sub.wait_for(3, Duration::from_secs(30), &mut kiri);
    let received = sub.received.lock().unwrap();
    assert!(received
        .iter()
        .all(|(t, e)| t == "kiri/gw-test/copy/sensors/s1/raw" && e.function == "relay"));
    let payloads: Vec<Vec<u8>> = received.iter().map(|(_, e)| e.payload.clone()).collect();
    assert_eq!(payloads, sent, "relayed unchanged, in order");
}

#[test]
fn every_example_function_loads_and_handles_a_reading() {
    use kiri::config::FunctionLimits;
    use kiri::runtime::{Permissions, Runtime};
    use std::collections::BTreeMap;

    let db = sled::Config::new().temporary(true).open().unwrap();
    let mut rt = Runtime::new(1 << 16, db);
    let hot = util::encode_reading(&kiri_reading::Reading {
        sensor: "s1",
        kind: "temperature",
        value: 45.0,
        unit: "C",
        ts: None,
        uptime_ms: None,
        seq: Some(1),
    });
    /// Name, module, config, results expected for one hot reading.
    type Example = (
        &'static str,
        std::path::PathBuf,
        &'static [(&'static str, &'static str)],
        usize,
    );
    let examples: [Example; 6] = [
        ("convert", function_wasm("convert"), &[], 1),
        (
            "threshold",
            function_wasm("threshold"),
            &[("limit", "30")],
            1,
        ),
        ("average", function_wasm("average"), &[], 1),
        ("window", function_wasm("window"), &[], 0),
        ("zscore", function_wasm("zscore"), &[], 0),
        ("relay", c_function_wasm("relay"), &[], 1),
    ];
    for (name, path, config, emits) in examples {
        let wasm = std::fs::read(&path).unwrap();
        let config: BTreeMap<String, serde_json::Value> = config
            .iter()
            .map(|(k, v)| (k.to_string(), serde_json::Value::from(*v)))
            .collect();
        let f = rt
            .load_bytes(
                name,
                &wasm,
                FunctionLimits::default(),
                config,
                Permissions::default(),
            )
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let out = rt
            .invoke(f, "sensors/s1/temperature", &hot, 0)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(out.outputs.len(), emits, "{name}");
    }
}

#[test]
fn functions_can_be_invoked_over_http_with_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let cloud = Mosquitto::start(&dir.path().join("cloud"));
    let broker_port = free_port();
    let functions = format!(
        "[[functions]]\nname = \"convert\"\nmodule = \"{m}\"\nhttp = true\n\
         [[functions]]\nname = \"private\"\nmodule = \"{m}\"\ntriggers = [\"x/y\"]\n",
        m = function_wasm("convert").display()
    );
    let token = "test-token-0123456789";
    let env = [("KIRI_DASHBOARD_TOKEN", token.to_string())];
    let kiri = Kiri::start(
        &dir.path().join("kiri"),
        &config_with(&cloud.url(), &embedded(broker_port), &functions),
        &env,
    );
    assert_eq!(kiri.get_status("/healthz"), 200);
    assert_eq!(kiri.get_status("/readyz"), 200);

    let (status, body) = kiri.invoke("convert", Some(token), &reading("s1", 100));
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let r = kiri_reading::Reading::decode(&body).unwrap();
    assert_eq!((r.value, r.unit), (212.0, "F"));

    assert_eq!(kiri.invoke("convert", None, b"").0, 401);
    assert_eq!(
        kiri.invoke("convert", Some("wrong-token-0123456789"), b"")
            .0,
        401
    );
    assert_eq!(
        kiri.invoke("private", Some(token), b"").0,
        404,
        "http is off for it"
    );
    assert_eq!(kiri.invoke("nope", Some(token), b"").0, 404);
    let (status, body) = kiri.invoke("convert", Some(token), b"not a reading");
    assert_eq!(status, 500);
    let err: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(err["reason"], "error");
    let too_big = vec![0u8; 300 * 1024];
    assert_eq!(kiri.invoke("convert", Some(token), &too_big).0, 413);

    // Metering: two invocations reached the function, one ok, one failed.
    let url = format!("http://127.0.0.1:{}/api/v1/functions", kiri.metrics_port);
    let body = ureq::get(&url)
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    let views: serde_json::Value = serde_json::from_str(&body).unwrap();
    let convert = &views[0];
    assert_eq!(convert["name"], "convert");
    assert_eq!(convert["stats"]["invocations"], 2, "{body}");
    assert_eq!(convert["stats"]["ok"], 1);
    assert_eq!(convert["stats"]["errors"]["error"], 1);
    assert!(convert["stats"]["fuel"].as_u64().unwrap() > 0);
    let table = kiri.cli(token, &["functions"]);
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("convert") && l.contains("http")),
        "{table}"
    );
}

#[test]
fn dead_letters_can_be_listed_replayed_after_a_fix_and_dropped() {
    let (dir, cloud, sub, broker_port) = site("cloud-consumer-8");
    let token = "dlq-token-0123456789";
    let env = [("KIRI_DASHBOARD_TOKEN", token.to_string())];
    let threshold = |config: &str| {
        format!(
            "[[functions]]\nname = \"threshold\"\nmodule = \"{}\"\ntriggers = [\"sensors/+/temperature\"]\n{config}\n",
            function_wasm("threshold").display()
        )
    };
    let kiri_dir = dir.path().join("kiri");
    // Misconfigured: no `limit`, so every reading fails and is dead-lettered.
    let broken = config_with(&cloud.url(), &embedded(broker_port), &threshold(""));
    let kiri = Kiri::start(&kiri_dir, &broken, &env);
    publish_all(
        broker_port,
        "s",
        "sensors/s1/temperature",
        vec![reading("s1", 45)],
    );
    publish_all(
        broker_port,
        "s",
        "sensors/s1/temperature",
        vec![b"\x01".to_vec()],
    );
    wait_until("two dead letters", Duration::from_secs(20), || {
        kiri.metric("kiri_dead_letters_total") >= 2.0
    });
    let listed = kiri.cli(token, &["dlq", "list"]);
    assert!(listed.contains("2 entries"), "{listed}");
    assert!(
        listed.contains("threshold") && listed.contains("returned error code 3"),
        "{listed}"
    );
    drop(kiri);

    // Fixed configuration, same data directory: replay brings the reading through.
    let fixed = config_with(
        &cloud.url(),
        &embedded(broker_port),
        &threshold("config = { limit = 30 }"),
    );
    let mut kiri = Kiri::start(&kiri_dir, &fixed, &env);
    let replayed = kiri.cli(token, &["dlq", "replay", "--function", "threshold"]);
    assert!(replayed.contains("replaying 2 entries"), "{replayed}");
    sub.wait_for(1, Duration::from_secs(30), &mut kiri);
    let alert = sub.received.lock().unwrap()[0].clone();
    assert_eq!(alert.0, "kiri/gw-test/alerts/s1/temperature");
    // The non-reading failed again: it is back as a new entry; the reading's entry is gone.
    wait_until("replays done", Duration::from_secs(20), || {
        kiri.metric("kiri_dead_letters_total") >= 1.0
    });
    let listed = kiri.cli(token, &["dlq", "list"]);
    assert!(listed.contains("1 entries"), "{listed}");
    let dropped = kiri.cli(token, &["dlq", "drop", "--all"]);
    assert!(dropped.contains("dropped 1 entries"), "{dropped}");
    assert!(kiri.cli(token, &["dlq", "list"]).contains("0 entries"));
    // Without the token: refused.
    let out = Command::new(env!("CARGO_BIN_EXE_kiri"))
        .args([
            "dlq",
            "list",
            "--url",
            &format!("http://127.0.0.1:{}", kiri.metrics_port),
            "--token",
            "wrong-wrong-wrong",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("401"));
}

#[test]
fn failed_events_are_retried_with_backoff_then_kept() {
    let dir = tempfile::tempdir().unwrap();
    let cloud = Mosquitto::start(&dir.path().join("cloud"));
    let broker_port = free_port();
    let token = "retry-token-0123456789";
    // No `limit`: threshold fails every time, so the event is tried 1 + 2 times.
    let functions = format!(
        "[[functions]]\nname = \"threshold\"\nmodule = \"{}\"\ntriggers = [\"sensors/+/temperature\"]\n\
         retries = 2\nretry_backoff_ms = 100\n",
        function_wasm("threshold").display()
    );
    let env = [("KIRI_DASHBOARD_TOKEN", token.to_string())];
    let mut kiri = Kiri::start(
        &dir.path().join("kiri"),
        &config_with(&cloud.url(), &embedded(broker_port), &functions),
        &env,
    );
    publish_all(
        broker_port,
        "s",
        "sensors/s1/temperature",
        vec![reading("s1", 45)],
    );
    wait_until("three attempts", Duration::from_secs(20), || {
        kiri.metric("kiri_invocations_total{function=\"threshold\",outcome=\"error\"}") >= 3.0
    });
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        kiri.metric("kiri_retries_total"),
        2.0,
        "exactly the configured retries"
    );
    let url = format!("http://127.0.0.1:{}/api/v1/dead-letters", kiri.metrics_port);
    let body = ureq::get(&url)
        .header("Authorization", &format!("Bearer {token}"))
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    let entries: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        entries.as_array().unwrap().len(),
        1,
        "one entry per event: {body}"
    );
    assert_eq!(entries[0]["attempts"], 3);
    assert_eq!(
        entries[0]["version"].as_str().map(str::len),
        Some(16),
        "the failing module's version"
    );
    assert!(entries[0]["retry_at_ms"].is_null(), "retries used up");
    let url = format!("http://127.0.0.1:{}/api/v1/functions", kiri.metrics_port);
    let body = ureq::get(&url)
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    let views: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(views[0]["stats"]["retries"], 2, "{body}");
    assert_eq!(
        views[0]["stats"]["dead_lettered"], 1,
        "one event left for good"
    );
    kiri.stop();
}

#[test]
fn hostile_functions_do_not_disturb_a_good_one() {
    let (dir, cloud, sub, broker_port) = site("cloud-consumer-9");
    let mut functions = hostile_functions(dir.path(), "sensors/+/temperature");
    functions += &format!(
        "[[functions]]\nname = \"convert\"\nmodule = \"{}\"\ntriggers = [\"sensors/+/temperature\"]\n",
        function_wasm("convert").display()
    );
    let mut kiri = Kiri::start(
        &dir.path().join("kiri"),
        &config_with(&cloud.url(), &embedded(broker_port), &functions),
        &[],
    );
    publish_all(
        broker_port,
        "s",
        "sensors/s1/temperature",
        (0..200).map(|i| reading("s1", i)).collect(),
    );
    sub.wait_for(200, Duration::from_secs(60), &mut kiri);
    assert_in_order(&sub.distinct_seqs(), 200);
    assert!(
        sub.received
            .lock()
            .unwrap()
            .iter()
            .all(|(_, e)| e.function == "convert"),
        "no hostile output escaped"
    );
    for (name, outcome) in HOSTILE {
        // Functions run side by side: the good one's results can arrive before the last
        // hostile invocations of the same group are counted. A function that keeps losing
        // its instance backs off its cold starts: after the first failures, its events fail
        // as `backoff` without running.
        let metric = |o: &str| {
            kiri.metric(&format!(
                "kiri_invocations_total{{function=\"{name}\",outcome=\"{o}\"}}"
            ))
        };
        let all_failed = poll_until(Duration::from_secs(20), || {
            metric(outcome) + metric("backoff") == 200.0
        });
        assert!(
            all_failed && metric(outcome) >= 3.0,
            "{name}: every event failed, the first ones as {outcome} ({} {outcome}, {} backoff)",
            metric(outcome),
            metric("backoff")
        );
    }
    kiri.stop();
}

#[test]
fn a_function_with_concurrency_processes_every_event() {
    let (dir, cloud, sub, broker_port) = site("cloud-consumer-10");
    let functions = format!(
        "[[functions]]\nname = \"convert\"\nmodule = \"{}\"\ntriggers = [\"sensors/+/temperature\"]\nconcurrency = 4\n",
        function_wasm("convert").display()
    );
    let mut kiri = Kiri::start(
        &dir.path().join("kiri"),
        &config_with(&cloud.url(), &embedded(broker_port), &functions),
        &[],
    );
    publish_all(
        broker_port,
        "s",
        "sensors/s1/temperature",
        (0..500).map(|i| reading("s1", i)).collect(),
    );
    sub.wait_for(500, Duration::from_secs(60), &mut kiri);
    let mut seqs = sub.distinct_seqs();
    seqs.sort_unstable();
    assert_eq!(seqs, (0..500).collect::<Vec<_>>());
    kiri.stop();
}

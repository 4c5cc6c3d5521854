//! Payload formats (issue 19): what each trigger format takes and refuses, published with a
//! real MQTT client (`mosquitto_pub`), and the conversion that lets the CBOR examples run on a
//! JSON sensor.

use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{config_with, embedded};
use crate::util::*;

/// Publishes `payload` on `topic` with `mosquitto_pub` (QoS 1), as a device would.
pub(crate) fn mosquitto_pub(port: u16, topic: &str, payload: &[u8]) {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), payload).unwrap();
    let status = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q", "1"])
        .args(["-t", topic, "-f"])
        .arg(file.path())
        .status()
        .expect("mosquitto_pub (Debian package mosquitto-clients, installed by make test)");
    assert!(status.success(), "mosquitto_pub to {topic}");
}

/// `mosquitto_sub` on the cloud at `port` with a persistent session `id` on `kiri/#`, QoS 1,
/// and `extra` options (`-E`: subscribe and exit; `-C n -W s`: take n messages).
fn mosquitto_sub(port: u16, id: &str, extra: &[&str]) -> std::process::Output {
    Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(["-q", "1", "-c", "-i", id, "-t", "kiri/#"])
        .args(extra)
        .output()
        .expect("mosquitto_sub")
}

/// Runs `command` with `input` on its stdin; its output (stdout and stderr captured).
pub(crate) fn piped(command: &mut Command, input: &[u8]) -> std::process::Output {
    use std::io::Write;
    let mut child = command
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{command:?}: {e}"));
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

/// A function that emits, for each event, the `input_format` code it was given followed by
/// the payload it received, on `echo`.
fn echo_module(dir: &std::path::Path) -> std::path::PathBuf {
    let wat = r#"(module
      (import "kiri" "emit" (func $emit (param i32 i32 i32 i32) (result i32)))
      (import "kiri" "input_format" (func $format (result i32)))
      (memory (export "memory") 1)
      (data (i32.const 0) "echo")
      (func (export "kiri_abi_version") (result i32) i32.const 1)
      (func (export "kiri_alloc") (param i32) (result i32) i32.const 1024)
      (func (export "kiri_on_event") (param i32 i32 i32 i32 i64) (result i32)
        ;; The byte before the payload (the topic's last) takes the format code.
        (i32.store8 (i32.sub (local.get 2) (i32.const 1)) (call $format))
        (drop (call $emit (i32.const 0) (i32.const 4) (i32.sub (local.get 2) (i32.const 1))
          (i32.add (local.get 3) (i32.const 1))))
        i32.const 0))"#;
    let path = dir.join("echo.wasm");
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(&path, wat::parse_str(wat).unwrap()).unwrap();
    path
}

/// What reached the cloud: (function, payload) of each result.
pub(crate) type Results = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

pub(crate) fn collect(cloud_port: u16, id: &str) -> Results {
    let got = Arc::new(Mutex::new(Vec::new()));
    let sink = got.clone();
    subscribe_results(cloud_port, id, move |_, e| {
        sink.lock()
            .unwrap()
            .push((e.function.clone(), e.payload.clone()));
    });
    got
}

/// One echo function per format (and one with the default), each on `in/<format>`: every
/// payload the issue names is taken or refused as `docs/payload-formats.md` says, refusals are
/// counted, logged with topic and function, and kept as dead letters with their payload, and
/// the message after each is processed.
#[test]
fn each_format_takes_what_it_documents_and_refuses_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let cloud = Mosquitto::start(&dir.path().join("cloud"));
    let got = collect(cloud.port, "formats-consumer");
    let port = free_port();
    let echo = echo_module(dir.path());
    let mut functions = String::new();
    for format in ["cbor", "json", "text", "bytes", "default"] {
        let trigger = match format {
            "default" => "\"in/default\"".to_string(),
            f => format!("{{ topic = \"in/{f}\", format = \"{f}\" }}"),
        };
        functions += &format!(
            "[[functions]]\nname = \"{format}\"\nmodule = \"{}\"\ntriggers = [{trigger}]\nretries = 0\n",
            echo.display()
        );
    }
    let conf = config_with(&cloud.url(), &embedded(port), &functions);
    let token = "formats-test-token-0123456789";
    let env = [("KIRI_DASHBOARD_TOKEN", token.to_string())];
    let mut kiri = Kiri::start(&dir.path().join("kiri"), &conf, &env);

    let json = br#"{"temperature":21.5,"humidity":40,"linkquality":120}"#.to_vec();
    let cbor_reading = reading("s1", 1);
    let not_utf8 = vec![0xff, 0xfe, 0x41];
    // (topic, payload, taken)
    let cases: Vec<(&str, Vec<u8>, bool)> = vec![
        ("in/cbor", json.clone(), false),
        ("in/cbor", cbor_reading.clone(), true),
        ("in/cbor", b"7".to_vec(), true),
        ("in/json", cbor_reading.clone(), false),
        ("in/json", json.clone(), true),
        ("in/json", b"7".to_vec(), true),
        ("in/text", not_utf8.clone(), false),
        ("in/text", b"ON".to_vec(), true),
        ("in/text", b"7".to_vec(), true),
        ("in/bytes", not_utf8.clone(), true),
        ("in/bytes", b"7".to_vec(), true),
        ("in/default", b"7".to_vec(), false),
        ("in/default", json.clone(), false),
        ("in/default", cbor_reading.clone(), true),
    ];
    for (topic, payload, _) in &cases {
        mosquitto_pub(port, topic, payload);
    }
    let taken: Vec<(String, Vec<u8>)> = cases
        .iter()
        .filter(|c| c.2)
        .map(|(t, p, _)| (t.trim_start_matches("in/").to_string(), p.clone()))
        .collect();
    wait_until(
        "every taken payload at the cloud",
        Duration::from_secs(30),
        || {
            kiri.assert_running();
            got.lock().unwrap().len() >= taken.len()
        },
    );
    let mut arrived: Vec<(String, Vec<u8>)> = got
        .lock()
        .unwrap()
        .iter()
        .map(|(f, p)| (f.clone(), p[1..].to_vec()))
        .collect();
    let mut want = taken.clone();
    arrived.sort();
    want.sort();
    assert_eq!(
        arrived, want,
        "each function got exactly what its format takes, unchanged"
    );
    for (f, p) in got.lock().unwrap().iter() {
        let code = match f.as_str() {
            "cbor" | "default" => 1,
            "json" => 2,
            "text" => 3,
            _ => 4,
        };
        assert_eq!(p[0], code, "{f}: input_format");
    }

    wait_until("the refusals counted", Duration::from_secs(10), || {
        kiri.metric("kiri_ingest_rejected_total{reason=\"malformed\"}") == 4.0
            && kiri.metric("kiri_ingest_rejected_total{reason=\"ambiguous\"}") == 1.0
    });
    let letters: serde_json::Value = ureq::get(&format!(
        "http://127.0.0.1:{}/api/v1/dead-letters",
        kiri.metrics_port
    ))
    .header("Authorization", &format!("Bearer {token}"))
    .call()
    .unwrap()
    .body_mut()
    .read_json()
    .unwrap();
    let mut kept: Vec<(String, String, u64)> = letters
        .as_array()
        .expect("a list of dead letters")
        .iter()
        .map(|e| {
            (
                e["function"].as_str().unwrap_or("-").to_string(),
                e["reason"].as_str().unwrap().to_string(),
                e["payload_len"].as_u64().unwrap(),
            )
        })
        .collect();
    kept.sort();
    let mut expected = vec![
        (
            "cbor".to_string(),
            "malformed".to_string(),
            json.len() as u64,
        ),
        ("default".into(), "ambiguous".into(), 1),
        ("default".into(), "malformed".into(), json.len() as u64),
        ("json".into(), "malformed".into(), cbor_reading.len() as u64),
        ("text".into(), "malformed".into(), 3),
    ];
    expected.sort();
    assert_eq!(
        kept, expected,
        "each refusal kept with its function and its whole payload"
    );
    let shown = |function: &str| {
        letters
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["function"] == function && e["reason"] == "malformed")
            .map(|e| e["payload"].clone())
            .unwrap()
    };
    assert_eq!(shown("text"), serde_json::json!({"hex": "fffe41"}));
    assert_eq!(
        shown("cbor"),
        serde_json::json!({"text": String::from_utf8(json.clone()).unwrap()}),
        "the payload is shown: text as text, bytes as hex"
    );
    let log = kiri.log_text();
    assert!(
        log.contains("it is JSON: set the trigger's format"),
        "the log says what the payload looks like"
    );
    assert!(log.contains("function=\"text\"") || log.contains("function=text"));
    kiri.stop();
}

/// The existing CBOR example `convert` runs unchanged on a sensor that publishes its reading
/// as JSON: the trigger takes JSON and the function has it delivered as CBOR.
#[test]
fn a_json_sensor_runs_the_cbor_example_unchanged_through_conversion() {
    let (dir, cloud, sub, port) = super::site("json-sensor-consumer");
    let functions = format!(
        "[[functions]]\nname = \"convert\"\nmodule = \"{}\"\n\
         triggers = [{{ topic = \"sensors/+/temperature\", format = \"json\" }}]\ndeliver = \"cbor\"\n",
        function_wasm("convert").display()
    );
    let conf = config_with(&cloud.url(), &embedded(port), &functions);
    let mut kiri = Kiri::start(&dir.path().join("kiri"), &conf, &[]);
    for seq in 0..3 {
        let json = format!(
            r#"{{"sensor":"s1","kind":"temperature","value":{}.5,"unit":"C","seq":{seq}}}"#,
            20 + seq
        );
        mosquitto_pub(port, "sensors/s1/temperature", json.as_bytes());
    }
    sub.wait_for(3, Duration::from_secs(30), &mut kiri);
    assert_eq!(sub.distinct_seqs(), vec![0, 1, 2]);
    kiri.stop();
}

/// The `cloudevents` SDK from PyPI, in a venv of its own under `dir`; returns its python.
fn cloudevents_sdk(dir: &std::path::Path) -> std::path::PathBuf {
    let venv = dir.join("venv");
    let made = Command::new("python3")
        .args(["-m", "venv"])
        .arg(&venv)
        .status()
        .expect("python3 (Debian python3-venv, installed by make test)");
    assert!(made.success(), "python3 -m venv");
    let python = venv.join("bin/python");
    let pip = Command::new(&python)
        .args(["-m", "pip", "install", "--quiet", "cloudevents==1.13.0"])
        .status()
        .expect("pip");
    assert!(pip.success(), "pip install cloudevents (PyPI)");
    python
}

/// With `cloud.encoding = "cloudevents"`, results reach the cloud as CloudEvents 1.0 in
/// structured JSON that consumers which are not Kiri read: `mosquitto_sub` receives them, `jq`
/// reads the attributes and the converted reading, and the CloudEvents SDK for Python parses
/// them.
#[test]
fn results_as_cloudevents_are_read_by_jq_and_the_cloudevents_sdk() {
    let dir = tempfile::tempdir().unwrap();
    let cloud = Mosquitto::start(&dir.path().join("cloud"));
    let port = free_port();
    let sub = |extra: &[&str]| mosquitto_sub(cloud.port, "ce-consumer", extra);
    // A persistent session, subscribed before anything is published.
    assert!(sub(&["-E"]).status.success());
    let functions = format!(
        "[[functions]]\nname = \"convert\"\nmodule = \"{}\"\ntriggers = [\"sensors/+/temperature\"]\n",
        function_wasm("convert").display()
    );
    let conf = config_with(&cloud.url(), &embedded(port), &functions)
        .replace("[cloud]\n", "[cloud]\nencoding = \"cloudevents\"\n");
    let mut kiri = Kiri::start(&dir.path().join("kiri"), &conf, &[]);
    publish_all(
        port,
        "s1",
        "sensors/s1/temperature",
        (0..3).map(|i| reading("s1", i)).collect(),
    );
    let out = sub(&["-C", "3", "-W", "30"]);
    assert!(out.status.success(), "3 messages within 30 s");
    let lines = String::from_utf8(out.stdout).unwrap();
    kiri.assert_running();

    let jq = |filter: &str| {
        let out = piped(Command::new("jq").args(["-r", filter]), lines.as_bytes());
        assert!(out.status.success(), "jq {filter}");
        String::from_utf8(out.stdout).unwrap()
    };
    assert_eq!(
        jq(r#"[.specversion, .type, .source, .datacontenttype, .kirifunction] | join(" ")"#),
        "1.0 io.kiri.result /kiri/gw-test/convert application/json convert\n".repeat(3)
    );
    assert_eq!(
        jq(".data.seq"),
        "0\n1\n2\n",
        "the reading, converted to JSON"
    );

    let python = cloudevents_sdk(dir.path());
    let script = r#"
import sys
from cloudevents.http import from_json
for line in sys.stdin:
    e = from_json(line)
    print(e["specversion"], e["type"], e["kiriseq"] >= 0, e.data["seq"], e.data["sensor"])
"#;
    let out = piped(Command::new(&python).args(["-c", script]), lines.as_bytes());
    assert!(
        out.status.success(),
        "the SDK parses them: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "1.0 io.kiri.result True 0 s1\n1.0 io.kiri.result True 1 s1\n1.0 io.kiri.result True 2 s1\n"
    );
    kiri.stop();
}

/// Tahu's `sparkplug-payload` (npm, pinned in `tests/e2e/sparkplug/package-lock.json`),
/// installed under `dir`; returns the folder to run `encode.js` in.
fn sparkplug_encoder(dir: &std::path::Path) -> std::path::PathBuf {
    let here = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/e2e/sparkplug");
    let work = dir.join("sparkplug");
    std::fs::create_dir_all(&work).unwrap();
    for f in ["package.json", "package-lock.json", "encode.js"] {
        std::fs::copy(here.join(f), work.join(f)).unwrap();
    }
    let npm = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
        .current_dir(&work)
        .status()
        .expect("npm (Debian nodejs and npm, installed by make test)");
    assert!(npm.success(), "npm ci sparkplug-payload");
    work
}

/// Sparkplug B from a maintained library (Eclipse Tahu's, not Kiri's encoder): an NBIRTH and
/// an NDATA that carries only aliases reach a function as the normalised form, with the
/// names resolved from the birth and the Int16 sign kept; a truncated payload and a bare `7`
/// are refused on the `sparkplug_b` trigger.
#[test]
fn sparkplug_b_from_tahus_library_arrives_normalised_with_aliases_resolved() {
    let dir = tempfile::tempdir().unwrap();
    let cloud = Mosquitto::start(&dir.path().join("cloud"));
    let got = collect(cloud.port, "sparkplug-consumer");
    let port = free_port();
    let encoder = sparkplug_encoder(dir.path());
    let echo = echo_module(dir.path());
    let functions = format!(
        "[[functions]]\nname = \"plant\"\nmodule = \"{}\"\n\
         triggers = [{{ topic = \"spBv1.0/plant/+/line1/#\", format = \"sparkplug_b\" }}]\n\
         deliver = \"json\"\nretries = 0\n",
        echo.display()
    );
    let conf = config_with(&cloud.url(), &embedded(port), &functions);
    let mut kiri = Kiri::start(&dir.path().join("kiri"), &conf, &[]);
    let mut sent = Vec::new();
    for kind in ["nbirth", "ndata"] {
        let file = dir.path().join(format!("{kind}.bin"));
        let ok = Command::new("node")
            .arg("encode.js")
            .arg(kind)
            .arg(&file)
            .current_dir(&encoder)
            .status()
            .unwrap();
        assert!(ok.success(), "encode {kind}");
        let bytes = std::fs::read(&file).unwrap();
        let topic = format!("spBv1.0/plant/{}/line1", kind.to_uppercase());
        mosquitto_pub(port, &topic, &bytes);
        sent.push(bytes);
    }
    // Refused: the NDATA cut short, and a bare digit.
    let ndata = &sent[1];
    mosquitto_pub(port, "spBv1.0/plant/NDATA/line1", &ndata[..ndata.len() - 3]);
    mosquitto_pub(port, "spBv1.0/plant/NDATA/line1", b"7");
    wait_until(
        "both messages at the cloud",
        Duration::from_secs(30),
        || {
            kiri.assert_running();
            got.lock().unwrap().len() >= 2
        },
    );
    let events: Vec<serde_json::Value> = got
        .lock()
        .unwrap()
        .iter()
        .map(|(_, p)| {
            assert_eq!(p[0], 2, "input_format: JSON");
            serde_json::from_slice(&p[1..]).unwrap()
        })
        .collect();
    assert_eq!(events[0]["message_type"], "NBIRTH");
    assert_eq!(events[0]["group"], "plant");
    assert_eq!(events[0]["edge_node"], "line1");
    assert_eq!(events[0]["metrics"][1]["name"], "Temperature");
    let data = &events[1];
    assert_eq!(data["message_type"], "NDATA");
    assert_eq!(data["seq"], 1);
    assert_eq!(data["timestamp"], 1_700_000_001_000u64);
    let metrics = data["metrics"].as_array().unwrap();
    assert_eq!(
        metrics[0]["name"], "Temperature",
        "alias 1, named by the birth"
    );
    assert_eq!(metrics[0]["datatype"], "Double");
    assert_eq!(metrics[0]["value"], 21.75);
    assert_eq!(metrics[1]["name"], "Offset");
    assert_eq!(
        metrics[1]["value"], -4,
        "Int16 in two's complement, sign kept"
    );
    wait_until("the refusals counted", Duration::from_secs(10), || {
        kiri.metric("kiri_ingest_rejected_total{reason=\"malformed\"}") == 2.0
    });
    assert!(kiri.log_text().contains("not a Sparkplug B payload"));
    kiri.stop();
}

/// The `devices` example on what real devices publish, each sample as its project documents
/// it, published with `mosquitto_pub`: one reading per quantity reaches the cloud.
#[test]
fn device_payloads_become_readings_through_the_devices_example() {
    let dir = tempfile::tempdir().unwrap();
    let cloud = Mosquitto::start(&dir.path().join("cloud"));
    let got = collect(cloud.port, "devices-consumer");
    let port = free_port();
    let module = function_wasm("devices");
    let entry = |name: &str, trigger: &str, format: &str, deliver: &str, source: &str| {
        format!(
            "[[functions]]\nname = \"{name}\"\nmodule = \"{}\"\n\
             triggers = [{{ topic = \"{trigger}\", format = \"{format}\" }}]\n\
             deliver = \"{deliver}\"\nconfig = {{ source = \"{source}\" }}\n",
            module.display()
        )
    };
    let functions = [
        entry("zigbee", "zigbee2mqtt/+", "json", "cbor", "zigbee2mqtt"),
        entry("tasmota", "tele/+/SENSOR", "json", "cbor", "tasmota"),
        entry("shelly", "+/events/rpc", "json", "cbor", "shelly"),
        entry(
            "states",
            "+/sensor/+/state",
            "text",
            "as_received",
            "statestream",
        ),
    ]
    .concat();
    let conf = config_with(&cloud.url(), &embedded(port), &functions);
    let mut kiri = Kiri::start(&dir.path().join("kiri"), &conf, &[]);
    // https://www.zigbee2mqtt.io/guide/usage/mqtt_topics_and_messages.html
    mosquitto_pub(
        port,
        "zigbee2mqtt/living_room",
        br#"{"temperature":21.5,"humidity":40,"linkquality":120}"#,
    );
    // https://tasmota.github.io/docs/MQTT/
    mosquitto_pub(
        port,
        "tele/tasmota_1/SENSOR",
        br#"{"Time":"2017-02-16T10:13:52","DS18B20":{"Temperature":20.6},"TempUnit":"C"}"#,
    );
    // https://shelly-api-docs.shelly.cloud/gen2/General/Notifications
    mosquitto_pub(
        port,
        "shellyplusht-08b61fcb7f3c/events/rpc",
        br#"{"src":"shellyplusht-08b61fcb7f3c","dst":"user_1","method":"NotifyStatus","params":{"ts":1631186545.04,"temperature:0":{"id":0,"tC":21.3,"tF":70.3}}}"#,
    );
    // https://esphome.io/components/mqtt
    mosquitto_pub(port, "livingroom/sensor/temperature/state", b"22.25");
    let want = [
        ("zigbee", "living_room", "temperature", 21.5, "C"),
        ("zigbee", "living_room", "humidity", 40.0, "%RH"),
        ("tasmota", "tasmota_1/DS18B20", "temperature", 20.6, "C"),
        (
            "shelly",
            "shellyplusht-08b61fcb7f3c/temperature:0",
            "temperature",
            21.3,
            "C",
        ),
        ("states", "temperature", "temperature", 22.25, "C"),
    ];
    wait_until("a reading per quantity", Duration::from_secs(30), || {
        kiri.assert_running();
        got.lock().unwrap().len() >= want.len()
    });
    std::thread::sleep(Duration::from_millis(500));
    let mut readings: Vec<(String, String, String, f64, String)> = got
        .lock()
        .unwrap()
        .iter()
        .map(|(f, p)| {
            let r = kiri_reading::Reading::decode(p).expect("a reading");
            (
                f.clone(),
                r.sensor.to_string(),
                r.kind.to_string(),
                r.value,
                r.unit.to_string(),
            )
        })
        .collect();
    readings.sort_by(|a, b| (&a.0, &a.2).cmp(&(&b.0, &b.2)));
    let mut want: Vec<_> = want
        .iter()
        .map(|(f, s, k, v, u)| {
            (
                f.to_string(),
                s.to_string(),
                k.to_string(),
                *v,
                u.to_string(),
            )
        })
        .collect();
    want.sort_by(|a, b| (&a.0, &a.2).cmp(&(&b.0, &b.2)));
    assert_eq!(readings, want);
    kiri.stop();
}

/// `kiri decode` reads what a subscriber receives: several messages back to back
/// (`mosquitto_sub -N`), batch messages among them, each result on a line of its own, and
/// `--json` for scripts.
#[test]
fn kiri_decode_reads_every_message_and_batches_from_mosquitto_sub() {
    let dir = tempfile::tempdir().unwrap();
    let cloud = Mosquitto::start(&dir.path().join("cloud"));
    let port = free_port();
    let sub = |extra: &[&str]| mosquitto_sub(cloud.port, "decode-consumer", extra);
    assert!(sub(&["-E"]).status.success());
    let conf = super::config(&cloud.url(), &embedded(port))
        .replace("[cloud]\n", "[cloud]\nbatch_records = 4\n");
    let mut kiri = Kiri::start(&dir.path().join("kiri"), &conf, &[]);
    publish_all(
        port,
        "s1",
        "sensors/s1/temperature",
        (0..6).map(|i| reading("s1", i)).collect(),
    );
    wait_until("six results delivered", Duration::from_secs(30), || {
        kiri.assert_running();
        kiri.metric("kiri_uplink_delivered_total") >= 6.0
    });
    let messages = kiri.metric("kiri_uplink_messages_total") as usize;
    let out = sub(&["-N", "-C", &messages.to_string(), "-W", "10"]);
    assert!(out.status.success(), "{messages} messages");
    let decode = |args: &[&str]| {
        let mut kiri_decode = Command::new(env!("CARGO_BIN_EXE_kiri"));
        let done = piped(kiri_decode.arg("decode").args(args), &out.stdout);
        assert!(done.status.success(), "kiri decode {args:?}");
        String::from_utf8(done.stdout).unwrap()
    };
    let lines = decode(&[]);
    assert_eq!(lines.lines().count(), 6, "one line per result: {lines}");
    assert!(lines.lines().all(|l| l.contains("function=convert")));
    let seqs: Vec<u64> = decode(&["--json"])
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            assert_eq!(v["payload"]["sensor"], "s1", "the payload as JSON");
            v["payload"]["seq"].as_u64().unwrap()
        })
        .collect();
    assert_eq!(seqs, (0..6).collect::<Vec<_>>());
    kiri.stop();
}

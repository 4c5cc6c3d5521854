//! Functions in the languages people write (issue 20): each SDK's `threshold` example, built
//! from source by the Makefile, loaded by a gateway, fed CBOR readings and JSON ones over
//! MQTT; its alerts reach a cloud Mosquitto.

use std::path::Path;
use std::time::Duration;

use super::formats::mosquitto_pub;
use super::{config_with, embedded};
use crate::util::*;

/// An alert's payload as JSON, whether the function wrote it in CBOR or in JSON.
fn as_json(payload: &[u8]) -> serde_json::Value {
    serde_json::from_slice(payload)
        .unwrap_or_else(|_| ciborium::de::from_reader(payload).expect("an alert in JSON or CBOR"))
}

/// Runs `module` as `threshold` (limit 30) on CBOR readings (`sensors/+/temperature`, one with
/// its value written as an integer) and JSON ones (`json/+/temperature`, format `json`);
/// checks that exactly the readings above the limit raise an alert, with the reading's value
/// and the limit, and returns the log.
fn threshold_runs(module: &Path) -> String {
    let dir = tempfile::tempdir().unwrap();
    let cloud = Mosquitto::start(&dir.path().join("cloud"));
    let sub = CloudSubscriber::start(cloud.port, "languages-consumer");
    let port = free_port();
    let functions = format!(
        "[[functions]]\nname = \"threshold\"\nmodule = \"{}\"\n\
         triggers = [\"sensors/+/temperature\", {{ topic = \"json/+/temperature\", format = \"json\" }}]\n\
         config = {{ limit = \"30\" }}\n",
        module.display()
    );
    let conf = config_with(&cloud.url(), &embedded(port), &functions);
    let mut kiri = Kiri::start(&dir.path().join("kiri"), &conf, &[]);
    publish_all(
        port,
        "s1",
        "sensors/s1/temperature",
        vec![reading("s1", 29), reading("s1", 31)],
    );
    // A reading whose value is written as a CBOR integer: read as the number it is.
    let mut int = Vec::new();
    ciborium::ser::into_writer(
        &serde_json::json!({"sensor": "s2", "kind": "temperature", "value": 33, "unit": "C"}),
        &mut int,
    )
    .unwrap();
    publish_all(port, "s2", "sensors/s2/temperature", vec![int]);
    for value in [20, 35] {
        let json = format!(r#"{{"sensor":"j1","kind":"temperature","value":{value},"unit":"C"}}"#);
        mosquitto_pub(port, "json/j1/temperature", json.as_bytes());
    }
    wait_until("3 alerts at the cloud", Duration::from_secs(30), || {
        kiri.assert_running();
        sub.received.lock().unwrap().len() >= 3
    });
    // Nothing more comes: the readings below the limit raised nothing.
    std::thread::sleep(Duration::from_millis(300));
    let got = sub.received.lock().unwrap().clone();
    let mut alerts: Vec<(String, serde_json::Value)> = got
        .iter()
        .map(|(topic, e)| (topic.clone(), as_json(&e.payload)))
        .collect();
    alerts.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(alerts.len(), 3, "{alerts:?}");
    assert_eq!(alerts[0].0, "kiri/gw-test/alerts/j1/temperature");
    assert_eq!(alerts[0].1["value"].as_f64(), Some(35.0));
    assert_eq!(alerts[0].1["limit"].as_f64(), Some(30.0));
    assert_eq!(alerts[1].0, "kiri/gw-test/alerts/s1/temperature");
    assert_eq!(alerts[1].1["value"].as_f64(), Some(31.0));
    assert_eq!(alerts[1].1["sensor"], "s1");
    assert_eq!(alerts[2].0, "kiri/gw-test/alerts/s2/temperature");
    assert_eq!(alerts[2].1["value"].as_f64(), Some(33.0));
    kiri.assert_running();
    kiri.stop();
    kiri.log_text()
}

/// The same module through `kiri invoke`, with no gateway: one reading above the limit gives
/// one alert, reported as JSON.
fn threshold_invokes(module: &Path) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kiri"))
        .arg("invoke")
        .arg(module)
        .args([
            "--value",
            "35",
            "--sensor",
            "s9",
            "--config",
            "limit=30",
            "--report-json",
        ])
        .output()
        .expect("run kiri invoke");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["ok"], true);
    let outputs = report["outputs"].as_array().unwrap();
    assert_eq!(outputs.len(), 1, "{report}");
    assert_eq!(outputs[0]["topic"], "alerts/s9/temperature");
    assert_eq!(outputs[0]["payload"]["value"].as_f64(), Some(35.0));
    assert!(report["fuel"].as_u64().unwrap() > 0);
}

/// Rust with the standard library and serde, built for wasm32-wasip1: a WASI reactor whose
/// `println!` reaches the gateway's log.
#[test]
fn rust_with_std_on_wasi() {
    let module = built(
        "wasm32-wasip1/release/kiri_fn_threshold_std.wasm",
        "`make functions-wasi`",
    );
    threshold_invokes(&module);
    let log = threshold_runs(&module);
    assert!(
        log.contains("INFO kiri::function: s1 temperature = 31 C, above 30"),
        "stdout in the log:\n{log}"
    );
    // The line names the function and the topic of the event it ran on.
    let line = log.lines().find(|l| l.contains("above 30")).unwrap();
    assert!(
        line.contains("function=") && line.contains("topic=sensors/s1/temperature"),
        "{line}"
    );
}

/// AssemblyScript with the Kiri SDK (`functions/sdk-assemblyscript`), built by
/// `make functions-as`: no `env` imports, its alerts byte for byte as the Rust example's.
#[test]
fn assemblyscript_with_the_sdk() {
    let module = built("wasm32-as/threshold.wasm", "`make functions-as`");
    threshold_invokes(&module);
    threshold_runs(&module);
}

/// C with the SDK's one header (`functions/sdk-c/kiri.h`), freestanding, built by
/// `make functions-c`.
#[test]
fn c_with_the_header_freestanding() {
    let module = c_function_wasm("threshold");
    threshold_invokes(&module);
    threshold_runs(&module);
}

/// The same C function built with wasi-libc (a WASI reactor, `_initialize` run once).
#[test]
fn c_with_wasi_libc() {
    let module = c_function_wasm("threshold-wasi");
    threshold_invokes(&module);
    threshold_runs(&module);
}

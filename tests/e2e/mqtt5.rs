//! MQTT 5 (issue 19): results on an MQTT 5 uplink, raw with their metadata in user
//! properties, read by a v5 subscriber (`mosquitto_sub -V mqttv5`); results the cloud broker
//! refuses (its ACL) kept and sent again; and MQTT 5 sensors on the embedded broker, which
//! speaks 3.1.1, told so.

use std::process::Command;
use std::time::Duration;

use super::formats::mosquitto_pub;
use super::{config_with, embedded};
use crate::util::*;

/// A function that emits each event's payload unchanged on `topic`, as a file in `dir`.
fn relay_module(dir: &std::path::Path, topic: &str) -> std::path::PathBuf {
    let path = dir.join(format!("relay-{}.wasm", topic.replace('/', "-")));
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(&path, emitter_wasm(topic)).unwrap();
    path
}

/// `mosquitto_sub -V mqttv5` on the cloud with a persistent session `id` on `kiri/#`, QoS 1,
/// printing `topic|content type|expiry|payload format|user properties|payload` per message.
fn v5_sub(port: u16, id: &str, extra: &[&str]) -> std::process::Output {
    Command::new("mosquitto_sub")
        .args(["-V", "mqttv5", "-h", "127.0.0.1", "-p", &port.to_string()])
        .args(["-q", "1", "-c", "-x", "600", "-i", id, "-t", "kiri/#"])
        .args(["-F", "%t|%C|%E|%F|%P|%p"])
        .args(extra)
        .output()
        .expect("mosquitto_sub")
}

/// Raw results over MQTT 5: the payload exactly as the function emitted it, id, seq,
/// function, gateway and content type as user properties, the content type and payload
/// format set, the expiry from `outbox.ttl`. A function whose topic the broker's ACL denies
/// (PUBACK "not authorised") keeps its results in the outbox, named in the log and counted,
/// while the other goes on; once the ACL allows it, they arrive.
#[test]
fn raw_results_over_mqtt_5_carry_their_metadata_and_refusals_are_kept() {
    let dir = tempfile::tempdir().unwrap();
    let acl = dir.path().join("cloud.acl");
    let deny = "topic readwrite kiri/gw-test/ok/#\ntopic read kiri/#\n";
    std::fs::write(&acl, deny).unwrap();
    // Mosquitto's default queue bound: with none (`max_queued_messages 0`, the test
    // helper's), Mosquitto 2.0.11 drops an MQTT 5 client's connection just after refusing its
    // publish, and the refusal is lost with it.
    let cloud = Mosquitto::start_with(
        &dir.path().join("cloud"),
        format!("acl_file {}\nmax_queued_messages 1000", acl.display()),
    );
    assert!(v5_sub(cloud.port, "raw-consumer", &["-E"]).status.success());
    let port = free_port();
    let mut functions = String::new();
    for name in ["ok", "held"] {
        functions += &format!(
            "[[functions]]\nname = \"{name}\"\nmodule = \"{}\"\ntriggers = [{{ topic = \"in/{name}\", format = \"json\" }}]\n",
            relay_module(dir.path(), &format!("{name}/r")).display()
        );
    }
    let conf = config_with(&cloud.url(), &embedded(port), &functions).replace(
        "[cloud]\n",
        "[cloud]\nprotocol_version = \"5\"\nencoding = \"raw\"\n",
    ) + "[outbox]\nttl = \"1h\"\n";
    let mut kiri = Kiri::start(&dir.path().join("kiri"), &conf, &[]);
    let payload = |i: u32| format!(r#"{{"temperature":21.5,"n":{i}}}"#);
    for i in 0..3 {
        mosquitto_pub(port, "in/held", payload(i).as_bytes());
        mosquitto_pub(port, "in/ok", payload(i).as_bytes());
    }
    let out = v5_sub(cloud.port, "raw-consumer", &["-C", "3", "-W", "30"]);
    assert!(
        out.status.success(),
        "3 results within 30 s: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        kiri.log_text()
    );
    let text = String::from_utf8(out.stdout).unwrap();
    for (i, line) in text.lines().enumerate() {
        let fields: Vec<&str> = line.splitn(6, '|').collect();
        assert_eq!(fields[0], "kiri/gw-test/ok/r", "{line}");
        assert_eq!(fields[1], "application/json", "{line}");
        let expiry: u32 = fields[2].parse().unwrap();
        assert!(
            (3500..=3600).contains(&expiry),
            "expiry from the ttl: {line}"
        );
        assert_eq!(fields[3], "1", "UTF-8 payload: {line}");
        let props: Vec<(&str, &str)> = fields[4]
            .split(' ')
            .filter_map(|p| p.split_once(':'))
            .collect();
        let prop = |k: &str| props.iter().find(|(key, _)| *key == k).map(|(_, v)| *v);
        assert_eq!(prop("function"), Some("ok"), "{line}");
        assert_eq!(prop("gateway"), Some("gw-test"), "{line}");
        assert_eq!(prop("content_type"), Some("application/json"), "{line}");
        let seq = prop("seq").expect("seq");
        assert!(
            prop("id").expect("id").ends_with(&format!("-{seq}")),
            "{line}"
        );
        assert_eq!(fields[5], payload(i as u32), "the payload as emitted");
    }

    // The held function's results were refused, named and counted, and kept.
    wait_until("the refusals counted", Duration::from_secs(20), || {
        kiri.metric("kiri_uplink_refused_total{reason=\"NotAuthorized\"}") >= 1.0
    });
    let log = kiri.log_text();
    assert!(
        log.contains("the cloud broker refused a result") && log.contains("function=held"),
        "the refusal logged with the function"
    );
    assert!(log.contains("NotAuthorized"), "and the broker's reason");
    wait_until(
        "only the refused results stay",
        Duration::from_secs(10),
        || kiri.status()["outbox"]["records"] == 3,
    );

    // Allowed now (Mosquitto rereads its ACL on SIGHUP): they go again and arrive (those in
    // flight when the ACL changed may overtake the one refused just before).
    std::fs::write(&acl, "topic readwrite kiri/gw-test/#\ntopic read kiri/#\n").unwrap();
    // A new session: the first one may get its last message again (QoS 1, at least once).
    assert!(v5_sub(cloud.port, "raw-consumer-2", &["-E"])
        .status
        .success());
    cloud.reload();
    let out = v5_sub(cloud.port, "raw-consumer-2", &["-C", "3", "-W", "30"]);
    assert!(out.status.success(), "the 3 held results within 30 s");
    let text = String::from_utf8(out.stdout).unwrap();
    let mut payloads: Vec<&str> = text
        .lines()
        .map(|l| l.rsplit('|').next().unwrap())
        .collect();
    payloads.sort();
    assert_eq!(payloads, [payload(0), payload(1), payload(2)]);
    assert!(
        text.lines().all(|l| l.starts_with("kiri/gw-test/held/r|")),
        "{text}"
    );
    kiri.assert_running();
    kiri.stop();
}

/// An MQTT 5 client on the embedded broker (which speaks 3.1.1) is refused with a CONNACK it
/// understands, and the log says what to use instead; 3.1.1 clients go on as before.
#[test]
fn an_mqtt_5_client_is_told_the_embedded_broker_speaks_3_1_1() {
    let (dir, cloud, sub, port) = super::site("v5-consumer");
    let mut kiri = Kiri::start(
        &dir.path().join("kiri"),
        &super::config(&cloud.url(), &embedded(port)),
        &[],
    );
    let file = dir.path().join("reading.cbor");
    std::fs::write(&file, reading("s1", 0)).unwrap();
    let v5 = Command::new("mosquitto_pub")
        .args(["-V", "mqttv5", "-h", "127.0.0.1", "-p", &port.to_string()])
        .args(["-q", "1", "-t", "sensors/s1/temperature", "-f"])
        .arg(&file)
        .output()
        .expect("mosquitto_pub");
    assert!(!v5.status.success());
    let said = String::from_utf8_lossy(&v5.stderr);
    assert!(
        said.contains("Unsupported Protocol Version"),
        "the client reads the refusal: {said}"
    );
    // The refusal is logged just after the CONNACK goes out.
    wait_until("the refusal logged", Duration::from_secs(10), || {
        kiri.log_text()
            .contains("MQTT 5 clients need an external broker")
    });
    mosquitto_pub(port, "sensors/s1/temperature", &reading("s1", 1));
    sub.wait_for(1, Duration::from_secs(30), &mut kiri);
    assert_eq!(sub.distinct_seqs(), vec![1]);
    kiri.stop();
}

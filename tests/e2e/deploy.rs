//! Functions pushed over MQTT: signed packages made with `kiri package`, sent with `kiri
//! deploy`, checked and activated by running gateways.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::{config_with, embedded};
use crate::util::*;

/// Runs the `kiri` binary: success, and stdout plus stderr.
fn kiri_cli(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_kiri"))
        .args(args)
        .output()
        .expect("run kiri");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn keygen(dir: &Path, name: &str) -> (PathBuf, String) {
    let key = dir.join(name);
    let (ok, text) = kiri_cli(&["keygen", "--out", key.to_str().unwrap()]);
    assert!(ok, "{text}");
    let public = std::fs::read_to_string(key.with_extension("pub")).unwrap();
    (key, public.trim().to_string())
}

/// `kiri package` of the `convert` example as function `conv`, version `version`, giving
/// temperatures in `unit`; more options in `extra`.
fn package(dir: &Path, key: &Path, version: u64, unit: &str, extra: &[&str]) -> PathBuf {
    package_module(dir, key, version, unit, &function_wasm("convert"), extra)
}

fn package_module(
    dir: &Path,
    key: &Path,
    version: u64,
    unit: &str,
    module: &Path,
    extra: &[&str],
) -> PathBuf {
    let out = dir.join(format!("conv-{version}-{}.kiri", fastrand::u32(..)));
    let unit = format!("temperature_unit={unit}");
    let version = version.to_string();
    let mut args = vec![
        "package",
        "--key",
        key.to_str().unwrap(),
        "--name",
        "conv",
        "--version",
        &version,
        "--trigger",
        "sensors/+/temperature",
        "--config",
        &unit,
        "--out",
        out.to_str().unwrap(),
        module.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    if !extra.contains(&"--gateway") && !extra.contains(&"--group") {
        args.extend_from_slice(&["--gateway", "gw-test"]);
    }
    let (ok, text) = kiri_cli(&args);
    assert!(ok, "kiri package: {text}");
    out
}

fn deploy_to(broker: u16, gateway: &str, package: &Path) -> (bool, String) {
    kiri_cli(&[
        "deploy",
        package.to_str().unwrap(),
        "--broker",
        &format!("mqtt://127.0.0.1:{broker}"),
        "--gateway",
        gateway,
        "--timeout",
        "20s",
    ])
}

fn deploy_config(cloud_url: &str, broker: &str, trusted: &str, extra: &str) -> String {
    config_with(cloud_url, broker, "")
        + &format!("[deploy]\ntrusted_keys = [\"{trusted}\"]\n{extra}\n")
}

/// The unit of each reading that reached the cloud, by sequence number (first arrival).
fn units(sub: &CloudSubscriber) -> Vec<(u64, String)> {
    let mut seen = std::collections::BTreeSet::new();
    let mut out = Vec::new();
    for (_, e) in sub.received.lock().unwrap().iter() {
        let r = kiri_reading::Reading::decode(&e.payload).unwrap();
        let seq = r.seq.unwrap();
        if seen.insert(seq) {
            out.push((seq, r.unit.to_string()));
        }
    }
    out
}

fn deployments(kiri: &Kiri) -> serde_json::Value {
    let url = format!("http://127.0.0.1:{}/api/v1/deployments", kiri.metrics_port);
    ureq::get(&url)
        .call()
        .unwrap()
        .body_mut()
        .read_json()
        .unwrap()
}

#[test]
fn a_function_is_deployed_over_mqtt_then_replaced_without_losing_an_event() {
    let (dir, cloud, sub, broker_port) = super::site("deploy-consumer");
    let (key, public) = keygen(dir.path(), "operator.key");
    let conf = deploy_config(
        &cloud.url(),
        &embedded(broker_port),
        &public,
        "max_package_bytes = 200000",
    );
    let mut kiri = Kiri::start(&dir.path().join("kiri"), &conf, &[]);

    // Version 1: Fahrenheit. Deployed, answered, and running.
    let v1 = package(dir.path(), &key, 1, "F", &[]);
    let (ok, text) = deploy_to(broker_port, "gw-test", &v1);
    assert!(ok && text.contains("gw-test: accepted"), "{text}");
    publish_all(broker_port, "s1", "sensors/s1/temperature", {
        (0..100).map(|i| reading("s1", i)).collect()
    });
    sub.wait_for(100, Duration::from_secs(30), &mut kiri);

    // Version 2 (Kelvin) arrives while readings stream: each reading is converted exactly by
    // one version, the switch happens once, and none is lost.
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::Arc;
    let published = Arc::new(AtomicU64::new(100));
    let deployed = Arc::new(AtomicBool::new(false));
    let publisher = std::thread::spawn({
        let (published, deployed) = (published.clone(), deployed.clone());
        move || {
            let mut next = 100;
            while next < 1100 {
                // Hold the last 200 until version 2 is in, so that it gets some.
                while next >= 900 && !deployed.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(10));
                }
                publish_all(broker_port, "s1", "sensors/s1/temperature", {
                    (next..next + 50).map(|i| reading("s1", i)).collect()
                });
                next += 50;
                published.store(next, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(30));
            }
        }
    });
    wait_until("300 readings streamed", Duration::from_secs(30), || {
        published.load(Ordering::Relaxed) >= 300
    });
    let v2 = package(dir.path(), &key, 2, "K", &[]);
    let (ok, text) = deploy_to(broker_port, "gw-test", &v2);
    assert!(ok, "{text}");
    deployed.store(true, Ordering::Relaxed);
    publisher.join().unwrap();
    sub.wait_for(1100, Duration::from_secs(60), &mut kiri);
    let got = units(&sub);
    assert_eq!(
        got.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
        (0..1100).collect::<Vec<_>>(),
        "every reading, in order"
    );
    let switch = got.iter().position(|(_, u)| u == "K").expect("v2 ran");
    assert!(
        (300..=900).contains(&switch),
        "v1 handled what came before the package, v2 what came after: switch at {switch}"
    );
    assert!(
        got[switch..].iter().all(|(_, u)| u == "K") && got[..switch].iter().all(|(_, u)| u == "F"),
        "one switch, from F to K"
    );

    // Refused, each with its reason, and nothing changes.
    let (other_key, _) = keygen(dir.path(), "stranger.key");
    let refusals = [
        (v1.clone(), "not_newer"),
        (
            package(dir.path(), &other_key, 3, "F", &[]),
            "untrusted_key",
        ),
        (
            package(dir.path(), &key, 3, "F", &["--expires-in", "1ms"]),
            "expired",
        ),
    ];
    for (p, reason) in &refusals {
        let (ok, text) = deploy_to(broker_port, "gw-test", p);
        assert!(!ok && text.contains(reason), "{reason}: {text}");
    }
    let bad_modules = [
        ("garbage.wasm", b"not wasm at all".to_vec()),
        ("no-exports.wasm", wat::parse_str("(module)").unwrap()),
        (
            "abi-2.wasm",
            wat::parse_str(
                r#"(module (memory (export "memory") 1)
                   (func (export "kiri_abi_version") (result i32) i32.const 2)
                   (func (export "kiri_alloc") (param i32) (result i32) i32.const 16)
                   (func (export "kiri_on_event") (param i32 i32 i32 i32 i64) (result i32) i32.const 0))"#,
            )
            .unwrap(),
        ),
    ];
    for (file, bytes) in bad_modules {
        let module = dir.path().join(file);
        std::fs::write(&module, bytes).unwrap();
        // `kiri package` refuses to sign these; a gateway must refuse them all the same.
        let (ok, text) = kiri_cli(&[
            "package",
            "--key",
            key.to_str().unwrap(),
            "--name",
            "conv",
            "--version",
            "3",
            "--trigger",
            "sensors/+/temperature",
            "--gateway",
            "gw-test",
            module.to_str().unwrap(),
        ]);
        assert!(!ok && text.contains("does not load"), "{file}: {text}");
        let p = package_module(dir.path(), &key, 3, "F", &module, &["--no-check"]);
        let (ok, text) = deploy_to(broker_port, "gw-test", &p);
        assert!(!ok && text.contains("invalid_module"), "{file}: {text}");
    }
    let big = dir.path().join("big.wasm");
    std::fs::write(&big, vec![0u8; 300_000]).unwrap();
    let p = package_module(dir.path(), &key, 3, "F", &big, &["--no-check"]);
    let (ok, text) = deploy_to(broker_port, "gw-test", &p);
    assert!(!ok && text.contains("too_large"), "oversize: {text}");
    // Sent raw (the CLI would not send these): truncated, bit-flipped, and signed for another
    // gateway. All refused; the signed one is in the history.
    let rejected = |kiri: &Kiri| kiri.metric("kiri_deployments_total{outcome=\"rejected\"");
    let before = rejected(&kiri);
    let bytes = std::fs::read(&v2).unwrap();
    let mut flipped = bytes.clone();
    flipped[bytes.len() / 2] ^= 0x10;
    let elsewhere = std::fs::read(package(
        dir.path(),
        &key,
        3,
        "F",
        &["--gateway", "gw-other"],
    ))
    .unwrap();
    publish_all(
        broker_port,
        "raw",
        "kiri/gw-test/deploy/conv",
        vec![bytes[..bytes.len() / 2].to_vec(), flipped, elsewhere],
    );
    wait_until("the raw packages refused", Duration::from_secs(20), || {
        rejected(&kiri) >= before + 3.0
    });
    let history = deployments(&kiri);
    assert_eq!(history[0]["reason"], "not_addressed", "{history}");
    assert_eq!(history[0]["accepted"], false);

    // A restart keeps version 2 and still refuses the replay of version 1.
    kiri.stop();
    kiri.restart();
    let (ok, text) = deploy_to(broker_port, "gw-test", &v1);
    assert!(!ok && text.contains("not_newer"), "{text}");
    let functions = kiri.cli("unused", &["functions"]);
    assert!(functions.contains("conv"), "{functions}");
    publish_all(
        broker_port,
        "s1",
        "sensors/s1/temperature",
        vec![reading("s1", 1100)],
    );
    sub.wait_for(1101, Duration::from_secs(30), &mut kiri);
    assert_eq!(units(&sub).last().unwrap().1, "K", "version 2 still runs");

    // Through the cloud link: a rollback to version 1 (signed command, version 3), answered
    // on the cloud broker.
    let (ok, text) = kiri_cli(&[
        "rollback",
        "--key",
        key.to_str().unwrap(),
        "--name",
        "conv",
        "--to",
        "1",
        "--version",
        "3",
        "--broker",
        &cloud.url(),
        "--gateway",
        "gw-test",
        "--timeout",
        "20s",
    ]);
    assert!(ok && text.contains("accepted"), "{text}");
    publish_all(
        broker_port,
        "s1",
        "sensors/s1/temperature",
        vec![reading("s1", 1101)],
    );
    sub.wait_for(1102, Duration::from_secs(30), &mut kiri);
    assert_eq!(units(&sub).last().unwrap().1, "F", "version 1 runs again");

    // Undeploy: no more results.
    let (ok, text) = kiri_cli(&[
        "undeploy",
        "--key",
        key.to_str().unwrap(),
        "--name",
        "conv",
        "--version",
        "4",
        "--broker",
        &format!("mqtt://127.0.0.1:{broker_port}"),
        "--gateway",
        "gw-test",
    ]);
    assert!(ok && text.contains("accepted"), "{text}");
    let url = format!("http://127.0.0.1:{}/api/v1/functions", kiri.metrics_port);
    let running: serde_json::Value = ureq::get(&url)
        .call()
        .unwrap()
        .body_mut()
        .read_json()
        .unwrap();
    assert_eq!(
        running.as_array().unwrap().len(),
        0,
        "conv no longer runs: {running}"
    );
    publish_all(
        broker_port,
        "s1",
        "sensors/s1/temperature",
        vec![reading("s1", 1102)],
    );
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(units(&sub).len(), 1102, "and gives no result");
    kiri.stop();
}

/// The deployed version a gateway runs.
fn running_version(kiri: &Kiri) -> Option<u64> {
    let url = format!("http://127.0.0.1:{}/api/v1/functions", kiri.metrics_port);
    let functions: serde_json::Value = ureq::get(&url).call().ok()?.body_mut().read_json().ok()?;
    functions[0]["deployed_version"].as_u64()
}

#[test]
fn a_kill_9_during_activation_leaves_the_old_or_the_new_version_intact() {
    // Mosquitto keeps the package for the gateway's persistent session until it is
    // acknowledged, which happens only once the new version is committed.
    let dir = tempfile::tempdir().unwrap();
    let cloud = Mosquitto::start(&dir.path().join("cloud"));
    let local = Mosquitto::start(&dir.path().join("local"));
    let sub = CloudSubscriber::start(cloud.port, "activation-consumer");
    let (key, public) = keygen(dir.path(), "operator.key");
    let broker = format!("mode = \"external\"\nurl = \"{}\"", local.url());
    let conf = deploy_config(&cloud.url(), &broker, &public, "");
    let mut kiri = Kiri::start(&dir.path().join("kiri"), &conf, &[]);
    let first = package(dir.path(), &key, 1, "F", &[]);
    assert!(deploy_to(local.port, "gw-test", &first).0);
    let mut active = 1u64;
    let mut seq = 0;
    let rounds = std::env::var("TEST_ACTIVATION_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(6u64);
    for round in 0..rounds {
        let version = active + 1;
        let unit = if version.is_multiple_of(2) { "K" } else { "F" };
        let p = std::fs::read(package(dir.path(), &key, version, unit, &[])).unwrap();
        publish_all(local.port, "op", "kiri/gw-test/deploy/conv", vec![p]);
        std::thread::sleep(Duration::from_millis(fastrand::u64(0..80)));
        kiri.kill9();
        kiri.restart();
        let now = running_version(&kiri).expect("conv is deployed");
        assert!(
            now == active || now == version,
            "round {round}: version {now}"
        );
        // The package was not lost: if the kill came first, the broker delivers it again.
        wait_until(
            "the new version, redelivered",
            Duration::from_secs(30),
            || running_version(&kiri) == Some(version),
        );
        active = version;
        // Intact: it runs, with the unit of its version.
        publish_all(
            local.port,
            "s1",
            "sensors/s1/temperature",
            vec![reading("s1", seq)],
        );
        seq += 1;
        sub.wait_for(seq as usize, Duration::from_secs(30), &mut kiri);
        assert_eq!(
            units(&sub).last().unwrap().1,
            unit,
            "round {round}, version {active}"
        );
    }
    kiri.stop();
}

#[test]
fn a_group_deployment_reaches_every_gateway_of_the_group() {
    let dir = tempfile::tempdir().unwrap();
    let cloud = Mosquitto::start(&dir.path().join("cloud"));
    let local = Mosquitto::start(&dir.path().join("local"));
    let (key, public) = keygen(dir.path(), "operator.key");
    let broker = format!("mode = \"external\"\nurl = \"{}\"", local.url());
    let gateway = |id: &str| {
        deploy_config(&cloud.url(), &broker, &public, "groups = [\"site-a\"]")
            .replace("id = \"gw-test\"", &format!("id = \"{id}\""))
    };
    let mut one = Kiri::start(&dir.path().join("one"), &gateway("gw-one"), &[]);
    let mut two = Kiri::start(&dir.path().join("two"), &gateway("gw-two"), &[]);
    let p = package(dir.path(), &key, 1, "F", &["--group", "site-a"]);
    let (ok, text) = kiri_cli(&[
        "deploy",
        p.to_str().unwrap(),
        "--broker",
        &local.url(),
        "--group",
        "site-a",
        "--expect",
        "2",
        "--timeout",
        "30s",
    ]);
    assert!(ok, "{text}");
    assert!(
        text.contains("gw-one: accepted") && text.contains("gw-two: accepted"),
        "{text}"
    );
    for k in [&one, &two] {
        assert!(k.cli("unused", &["functions"]).contains("conv"));
    }
    one.stop();
    two.stop();
}

//! Reloads that change more than functions, through `kiri reload` (the API) and SIGHUP: the
//! uplink moves to another cloud broker under load without losing a result, the outbox takes
//! a new policy, the embedded broker's accounts change (a user whose password changed is
//! disconnected and must log in with the new one), and a key only a restart changes is
//! refused through the API with the reason while the gateway goes on.

use std::process::Command;
use std::time::Duration;

use rumqttc::ConnectReturnCode;

use super::broker_auth::{client, connect_outcome, password_hash};
use super::{assert_in_order, embedded};
use crate::util::*;

/// The gateway's configuration: `cloud_url`, the embedded broker on `port` with one account
/// `s1` of hash `s1_hash`, the outbox policy `when_full`, and `extra` in `[gateway]`.
fn conf(cloud_url: &str, port: u16, s1_hash: &str, when_full: &str, extra: &str) -> String {
    format!(
        r#"
[gateway]
id = "gw-reload"
{extra}
[broker]
{broker}
[[broker.users]]
name = "s1"
password_hash = "{s1_hash}"
[cloud]
url = "{cloud_url}"
backoff_initial_ms = 50
backoff_max_ms = 500
[outbox]
when_full = "{when_full}"
[[functions]]
name = "convert"
module = "{module}"
triggers = ["sensors/+/temperature"]
"#,
        broker = embedded(port),
        module = function_wasm("convert").display(),
    )
}

#[test]
fn kiri_reload_moves_the_uplink_changes_accounts_and_refuses_a_restart_key() {
    let dir = tempfile::tempdir().unwrap();
    let cloud_a = Mosquitto::start(&dir.path().join("cloud-a"));
    let cloud_b = Mosquitto::start(&dir.path().join("cloud-b"));
    let sub_a = CloudSubscriber::start(cloud_a.port, "reload-a");
    let sub_b = CloudSubscriber::start(cloud_b.port, "reload-b");
    let port = free_port();
    let old_hash = password_hash("s1-old");
    let token = "reload-test-token-0123456789abcdef";
    let first = conf(&cloud_a.url(), port, &old_hash, "block", "");
    let env = [("KIRI_DASHBOARD_TOKEN", token.to_string())];
    let mut kiri = Kiri::start(&dir.path().join("kiri"), &first, &env);

    // Under load, the cloud moves from A to B through `kiri reload`.
    let n = 4_000;
    let publisher = std::thread::spawn(move || {
        let readings = (0..n).map(|i| reading("s1", i)).collect();
        let login = Some(("s1", "s1-old"));
        publish_all_as(port, "node-1", login, "sensors/s1/temperature", readings)
    });
    wait_until("the stream under way", Duration::from_secs(30), || {
        kiri.metric("kiri_invocations_total") >= 300.0
    });
    kiri.set_config(&conf(&cloud_b.url(), port, &old_hash, "block", ""));
    let said = kiri.cli(token, &["reload"]);
    assert!(said.contains("settings: cloud.url"), "{said}");
    assert!(
        kiri.metric("kiri_invocations_total") < n as f64,
        "the reload came while readings were still arriving"
    );
    publisher.join().unwrap();
    // Every reading arrived, at one broker or the other, each processed once.
    let union = || {
        let mut all: Vec<u64> = sub_a.distinct_seqs();
        all.extend(sub_b.distinct_seqs());
        all.sort_unstable();
        all.dedup();
        all
    };
    let arrived = poll_until(Duration::from_secs(60), || union().len() >= n as usize);
    assert!(arrived, "{} of {n} readings arrived", union().len());
    assert_in_order(&union(), n);
    assert!(
        !sub_b.distinct_seqs().is_empty(),
        "B received what came after the move"
    );
    assert_eq!(kiri.status()["uplink"]["url"], cloud_b.url());
    assert_eq!(kiri.status()["uplink"]["connected"], true);
    assert_eq!(
        kiri.metric("kiri_invocations_total"),
        n as f64,
        "each reading processed once"
    );

    // The outbox's policy and the accounts, on SIGHUP: s1's password changes, so its
    // session ends and only the new password logs in.
    let (_c, mut idle) = client(port, "node-2", Some(("s1", "s1-old")), None);
    assert_eq!(connect_outcome(&mut idle), Ok(()));
    let new_hash = password_hash("s1-new");
    let second = conf(&cloud_b.url(), port, &new_hash, "drop_oldest", "");
    kiri.set_config(&second);
    kiri.hangup();
    wait_until("the reload", Duration::from_secs(20), || {
        kiri.log_text().matches("configuration reloaded").count() == 2
    });
    let ended = poll_until(Duration::from_secs(20), || {
        matches!(idle.recv_timeout(Duration::from_millis(200)), Ok(Err(_)))
    });
    assert!(ended, "the session of the changed user ended");
    assert_eq!(
        kiri.status()["outbox"]["policy"]["when_full"],
        "drop_oldest"
    );
    let (_c, mut old) = client(port, "node-3", Some(("s1", "s1-old")), None);
    assert_eq!(
        connect_outcome(&mut old),
        Err(ConnectReturnCode::BadUserNamePassword)
    );
    let before = sub_b.distinct_seqs().len();
    let more = (n..n + 10).map(|i| reading("s1", i)).collect();
    publish_all_as(
        port,
        "node-4",
        Some(("s1", "s1-new")),
        "sensors/s1/temperature",
        more,
    );
    sub_b.wait_for(before + 10, Duration::from_secs(30), &mut kiri);

    // A key only a restart changes: refused through the API, naming it; nothing applied.
    kiri.set_config(&conf(
        &cloud_a.url(),
        port,
        &new_hash,
        "block",
        "cache_bytes = 2097152",
    ));
    let out = Command::new(env!("CARGO_BIN_EXE_kiri"))
        .args([
            "reload",
            "--url",
            &format!("http://127.0.0.1:{}", kiri.metrics_port),
        ])
        .env("KIRI_DASHBOARD_TOKEN", token)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a refused reload fails");
    assert!(
        stderr.contains("change only with a restart: gateway.cache_bytes"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("cloud.url"),
        "only what needs a restart is named: {stderr}"
    );
    kiri.assert_running();
    assert_eq!(
        kiri.status()["uplink"]["url"],
        cloud_b.url(),
        "the running one stays"
    );
    assert_eq!(
        kiri.status()["outbox"]["policy"]["when_full"],
        "drop_oldest"
    );
    // Without the token: 401.
    let out = Command::new(env!("CARGO_BIN_EXE_kiri"))
        .args([
            "reload",
            "--url",
            &format!("http://127.0.0.1:{}", kiri.metrics_port),
        ])
        .env("KIRI_DASHBOARD_TOKEN", "wrong-token-0123456789abcdef0123")
        .output()
        .unwrap();
    assert!(!out.status.success());
    kiri.stop();
}

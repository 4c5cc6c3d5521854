//! Sensors end to end: the Cortex-M node under QEMU writes framed readings to its UART (a
//! local socket), `kiri-sensor` publishes them to the gateway's broker, `threshold` runs on
//! them and the results reach the Mosquitto "cloud": every sequence number arrives.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::util::*;
use super::{config_with, embedded};

/// `target/<profile>/kiri-sensor`, next to the `kiri` binary under test (`make test` builds it).
pub(crate) fn kiri_sensor() -> PathBuf {
    let path = Path::new(env!("CARGO_BIN_EXE_kiri")).with_file_name("kiri-sensor");
    assert!(
        path.exists(),
        "{} is missing: `cargo build -p kiri-sensor` (`make test` does)",
        path.display()
    );
    path
}

/// The node firmware for QEMU's lm3s6965evb (`make qemu-node-build`, run by `make test`).
fn qemu_node_elf() -> PathBuf {
    built(
        "thumbv7m-none-eabi/release/kiri-qemu-node",
        "`make qemu-node-build`",
    )
}

/// One `threshold` function per kind, with a limit every reading passes: all come through.
fn alerts_for_every_kind() -> String {
    let threshold = function_wasm("threshold");
    ["temperature", "humidity", "pressure"]
        .iter()
        .map(|kind| {
            format!(
                "[[functions]]\nname = \"alert-{kind}\"\nmodule = \"{}\"\ntriggers = [\"sensors/+/{kind}\"]\n\
                 config = {{ limit = -1000000, kind = \"{kind}\" }}\n",
                threshold.display()
            )
        })
        .collect()
}

/// `kiri-sensor --count` exits successfully (every reading acknowledged by the broker), and
/// the readings 0 to `readings - 1` all reach the cloud.
fn agent_finishes_and_every_reading_arrives(
    mut agent: Child,
    log: &Path,
    sub: &CloudSubscriber,
    readings: usize,
    kiri: &mut Kiri,
) {
    let finished = poll_until(Duration::from_secs(90), || {
        matches!(agent.try_wait(), Ok(Some(_)))
    });
    let agent_log = std::fs::read_to_string(log).unwrap_or_default();
    if !finished {
        let _ = agent.kill();
        panic!("kiri-sensor did not finish: {agent_log}");
    }
    assert!(
        agent.wait().unwrap().success(),
        "kiri-sensor failed: {agent_log}"
    );
    sub.wait_for(readings, Duration::from_secs(60), kiri);
    let mut seqs = sub.distinct_seqs();
    seqs.sort_unstable();
    assert_eq!(
        seqs,
        (0..readings as u64).collect::<Vec<_>>(),
        "every reading, once"
    );
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn readings_from_a_qemu_node_reach_the_cloud_complete() {
    let (dir, cloud, sub, broker_port) = super::site("sensors-consumer");
    let functions = alerts_for_every_kind();
    let mut kiri = Kiri::start(
        &dir.path().join("kiri"),
        &config_with(&cloud.url(), &embedded(broker_port), &functions),
        &[],
    );

    let uart = free_port();
    let qemu_log = std::fs::File::create(dir.path().join("qemu.log")).unwrap();
    let qemu = Command::new("qemu-system-arm")
        .args(["-cpu", "cortex-m3", "-machine", "lm3s6965evb", "-nographic"])
        .args(["-monitor", "none", "-serial"])
        // QEMU listens and starts the board once the agent connects: nothing is lost.
        .arg(format!("tcp:127.0.0.1:{uart},server=on,wait=on"))
        .arg("-kernel")
        .arg(qemu_node_elf())
        .stdin(Stdio::null())
        .stdout(qemu_log.try_clone().unwrap())
        .stderr(qemu_log)
        .spawn()
        .expect("qemu-system-arm (Debian: qemu-system-arm; `make test` installs it as root)");
    let _qemu = Killed(qemu);

    let readings = 60;
    let agent = Command::new(kiri_sensor())
        .args(["--source", &format!("tcp:127.0.0.1:{uart}")])
        .args(["--port", &broker_port.to_string()])
        .args(["--client-id", "e2e-agent", "--count", &readings.to_string()])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("agent.log")).unwrap())
        .spawn()
        .unwrap();
    agent_finishes_and_every_reading_arrives(
        agent,
        &dir.path().join("agent.log"),
        &sub,
        readings,
        &mut kiri,
    );
    let kinds: std::collections::BTreeSet<String> = sub
        .received
        .lock()
        .unwrap()
        .iter()
        .map(|(_, e)| e.function.clone())
        .collect();
    assert_eq!(
        kinds.len(),
        3,
        "temperature, humidity and pressure: {kinds:?}"
    );
    kiri.stop();
}

#[test]
fn simulated_readings_wait_while_the_broker_is_away() {
    let (dir, cloud, sub, _) = super::site("sensors-sim-consumer");
    let functions = alerts_for_every_kind();
    // Mosquitto as the site's broker (it keeps the gateway's session across its restart).
    let mut local = Mosquitto::start(&dir.path().join("local"));
    let broker = format!("mode = \"external\"\nurl = \"{}\"", local.url());
    let mut kiri = Kiri::start(
        &dir.path().join("kiri"),
        &config_with(&cloud.url(), &broker, &functions),
        &[],
    );
    local.stop();
    // The agent starts while the broker is away: its readings wait in its buffer.
    let readings = 30;
    let mut agent = Command::new(kiri_sensor())
        .args(["--source", "simulate", "--rate", "20", "--node", "early"])
        .args(["--port", &local.port.to_string()])
        .args([
            "--client-id",
            "e2e-sim",
            "--count",
            &readings.to_string(),
            "--first-seq",
            "0",
        ])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("agent.log")).unwrap())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        agent.try_wait().unwrap().is_none(),
        "the agent waits for the broker"
    );
    local.restart();
    agent_finishes_and_every_reading_arrives(
        agent,
        &dir.path().join("agent.log"),
        &sub,
        readings,
        &mut kiri,
    );
    kiri.stop();
}

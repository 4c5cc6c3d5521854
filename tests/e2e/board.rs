//! The simulated board: the aarch64 image (`make image`) booted on QEMU's `virt` board by
//! `cross/qemu.sh`, reaching the host's site broker and cloud only through its forwards.
//! Also the device packaging: the `.deb`'s files and the flash script's refusals.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::util::*;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A booted board: its console lines, and its stdin to type on.
struct Board {
    child: Child,
    stdin: ChildStdin,
    console: Arc<Mutex<Vec<String>>>,
}

impl Board {
    fn boot(env: &[(&str, String)]) -> Board {
        let image = repo().join("target/image/initrd.img");
        assert!(
            image.exists(),
            "{} is missing: `make image` (`make test` runs it)",
            image.display()
        );
        let mut child = Command::new(repo().join("cross/qemu.sh"))
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("cross/qemu.sh");
        let stdin = child.stdin.take().unwrap();
        let console = Arc::new(Mutex::new(Vec::new()));
        let lines = console.clone();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                lines.lock().unwrap().push(line);
            }
        });
        Board {
            child,
            stdin,
            console,
        }
    }

    fn said(&self, text: &str) -> bool {
        self.console
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains(text))
    }

    fn wait_for(&mut self, text: &str, timeout: Duration) {
        let ok = poll_until(timeout, || {
            // The console first: the board may say it and power off between two polls.
            if self.said(text) {
                return true;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                // What it printed before it stopped may still be on its way to the console.
                std::thread::sleep(Duration::from_millis(200));
                if self.said(text) {
                    return true;
                }
                panic!("the board stopped ({status}): {}", self.transcript());
            }
            false
        });
        assert!(ok, "no {text:?} on the console: {}", self.transcript());
    }

    fn transcript(&self) -> String {
        self.console.lock().unwrap().join("\n")
    }

    /// Types `halt`: the board stops kiri (SIGTERM) and powers off.
    fn halt(mut self) {
        writeln!(self.stdin, "halt").unwrap();
        self.wait_for("kiri-board: kiri stopped (0)", Duration::from_secs(60));
        let exited = poll_until(Duration::from_secs(30), || {
            matches!(self.child.try_wait(), Ok(Some(_)))
        });
        assert!(exited, "QEMU did not exit: {}", self.transcript());
    }
}

impl Drop for Board {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn the_simulated_board_processes_host_readings_and_holds_them_through_an_outage() {
    let dir = tempfile::tempdir().unwrap();
    let local = Mosquitto::start(&dir.path().join("local"));
    let mut cloud = Mosquitto::start(&dir.path().join("cloud"));
    let sub = CloudSubscriber::start(cloud.port, "board-consumer");
    let dash = free_port();
    let token = "board-test-token-0123456789";
    let mut board = Board::boot(&[
        ("LOCAL_PORT", local.port.to_string()),
        ("CLOUD_PORT", cloud.port.to_string()),
        ("DASH_PORT", dash.to_string()),
        ("TOKEN", token.to_string()),
    ]);
    board.wait_for("kiri-board: ready", Duration::from_secs(120));

    let convert_seqs = |sub: &CloudSubscriber| -> Vec<u64> {
        let received = sub.received.lock().unwrap();
        let mut seen = std::collections::BTreeSet::new();
        received
            .iter()
            .filter(|(_, e)| e.function == "convert")
            .map(|(_, e)| {
                kiri_reading::Reading::decode(&e.payload)
                    .unwrap()
                    .seq
                    .unwrap()
            })
            .filter(|s| seen.insert(*s))
            .collect()
    };
    let wait_converted = |n: usize, board: &Board| {
        let ok = poll_until(Duration::from_secs(90), || convert_seqs(&sub).len() >= n);
        assert!(
            ok,
            "{} of {n} results at the cloud; board: {}",
            convert_seqs(&sub).len(),
            board.transcript()
        );
    };
    publish_all(
        local.port,
        "board-sensor",
        "sensors/b1/temperature",
        (0..100).map(|i| reading("b1", i)).collect(),
    );
    wait_converted(100, &board);

    // The uplink goes away: the board holds the results, then delivers them in order.
    cloud.stop();
    publish_all(
        local.port,
        "board-sensor",
        "sensors/b1/temperature",
        (100..200).map(|i| reading("b1", i)).collect(),
    );
    let status = || -> serde_json::Value {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        agent
            .get(format!("http://127.0.0.1:{dash}/api/v1/status"))
            .call()
            .ok()
            .and_then(|mut r| r.body_mut().read_json().ok())
            .unwrap_or_default()
    };
    let held = poll_until(Duration::from_secs(60), || {
        status()["outbox"]["records"].as_u64().unwrap_or(0) >= 100
    });
    assert!(held, "the board holds the results: {}", status());
    assert_eq!(status()["uplink"]["connected"], false);
    cloud.restart();
    wait_converted(200, &board);
    assert_eq!(
        convert_seqs(&sub),
        (0..200).collect::<Vec<_>>(),
        "all, in order"
    );
    board.halt();
}

#[test]
fn a_board_without_a_set_clock_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let local = Mosquitto::start(&dir.path().join("local"));
    let mut board = Board::boot(&[
        ("LOCAL_PORT", local.port.to_string()),
        ("DASH_PORT", free_port().to_string()),
        ("QEMU_UPLINK", "broken".to_string()),
        ("QEMU_CLOCK", "1970-01-02".to_string()),
        ("QEMU_DISK_MB", "16".to_string()),
    ]);
    board.wait_for("kiri-board: clock 1970-01-02", Duration::from_secs(60));
    board.wait_for("data disk 16 MB", Duration::from_secs(5));
    board.wait_for(
        "the system clock has not been set",
        Duration::from_secs(120),
    );
    board.wait_for("kiri-board: ready", Duration::from_secs(120));
    board.halt();
}

/// Runs the flash script on stand-ins for /sys/block and /proc/mounts, dry.
fn flash(dir: &Path, image: &Path, device: &str) -> (bool, String) {
    let out = Command::new(repo().join("cross/flash.sh"))
        .arg(image)
        .arg(device)
        .env("DRY_RUN", "1")
        .env("SYS_BLOCK", dir.join("sys"))
        .env("PROC_MOUNTS", dir.join("mounts"))
        .env("PROC_SWAPS", dir.join("swaps"))
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn flashing_refuses_fixed_mounted_and_too_small_disks() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for (name, removable, sectors) in [
        ("sdz", 1, 2048),
        ("sda", 0, 1 << 30),
        ("mmcblk0", 0, 4096),
        ("sdy", 1, 4096),
        ("sdx", 1, 4096),
    ] {
        std::fs::create_dir_all(d.join("sys").join(name)).unwrap();
        std::fs::write(
            d.join("sys").join(name).join("removable"),
            format!("{removable}\n"),
        )
        .unwrap();
        std::fs::write(
            d.join("sys").join(name).join("size"),
            format!("{sectors}\n"),
        )
        .unwrap();
    }
    std::fs::write(
        d.join("mounts"),
        "/dev/sda1 / ext4 rw 0 0\n/dev/mmcblk0p1 /boot/firmware vfat rw 0 0\n",
    )
    .unwrap();
    // sdy's first partition is held by device-mapper (an encrypted volume); sdx has swap.
    std::fs::create_dir_all(d.join("sys/sdy/sdy1/holders/dm-0")).unwrap();
    std::fs::write(
        d.join("swaps"),
        "Filename Type Size Used Priority\n/dev/sdx2 partition 1024 0 -2\n",
    )
    .unwrap();
    let image = d.join("board.img");
    std::fs::write(&image, vec![0u8; 100_000]).unwrap();

    let (ok, text) = flash(d, &image, "/dev/sdz");
    assert!(ok, "{text}");
    assert!(text.contains("dd of=/dev/sdz"), "{text}");
    for (device, why) in [
        ("/dev/sda", "not removable"),
        ("/dev/mmcblk0", "is mounted"),
        ("/dev/sdz1", "not a whole disk"),
        ("/dev/sdy", "in use by dm-0"),
        ("/dev/sdx", "swap in use"),
        ("sdz", "not a /dev path"),
    ] {
        let (ok, text) = flash(d, &image, device);
        assert!(!ok && text.contains(why), "{device}: {text}");
    }
    let big = d.join("big.img");
    std::fs::write(&big, vec![0u8; 2 << 20]).unwrap();
    let (ok, text) = flash(d, &big, "/dev/sdz");
    assert!(!ok && text.contains("larger than"), "{text}");
}

#[test]
fn the_debian_package_holds_the_service_the_config_and_the_binaries() {
    let version = env!("CARGO_PKG_VERSION");
    let deb = repo().join(format!("target/deb/kiri_{version}_arm64.deb"));
    assert!(
        deb.exists(),
        "{} is missing: `cross/deb.sh arm64` (`make test` runs it after `make image`)",
        deb.display()
    );
    let run = |args: &[&str]| {
        let out = Command::new("dpkg-deb")
            .args(args)
            .arg(&deb)
            .output()
            .unwrap();
        assert!(out.status.success());
        String::from_utf8(out.stdout).unwrap()
    };
    let info = run(&["--info"]);
    for field in [
        "Package: kiri",
        "Architecture: arm64",
        "Depends: adduser",
        "postinst",
    ] {
        assert!(info.contains(field), "{field} in:\n{info}");
    }
    let files = run(&["--contents"]);
    for path in [
        "./usr/bin/kiri",
        "./usr/bin/kiri-sensor",
        "./etc/kiri/kiri.toml",
        "./lib/systemd/system/kiri.service",
        "./lib/systemd/system/kiri-sensor.service",
        "./usr/lib/kiri/functions/convert.wasm",
    ] {
        assert!(files.contains(path), "{path} in:\n{files}");
    }
    let conffiles = Command::new("dpkg-deb")
        .args(["--info"])
        .arg(&deb)
        .arg("conffiles")
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&conffiles.stdout).trim(),
        "/etc/kiri/kiri.toml"
    );

    // The unit and the config, as packaged.
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new("dpkg-deb")
        .arg("-x")
        .arg(&deb)
        .arg(tmp.path())
        .status()
        .unwrap();
    assert!(out.success());
    let unit = std::fs::read_to_string(tmp.path().join("lib/systemd/system/kiri.service")).unwrap();
    for line in [
        "Type=notify",
        "User=kiri",
        "StateDirectory=kiri",
        "ProtectSystem=strict",
        "Restart=on-failure",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "WatchdogSec=",
        "NoNewPrivileges=yes",
        "LimitNOFILE=8192",
        "StateDirectoryMode=0700",
    ] {
        assert!(unit.contains(line), "{line} in kiri.service");
    }
    // The packaged configuration is valid for the packaged kiri (checked with this build), its
    // functions' modules where the package installs them.
    let packaged = std::fs::read_to_string(tmp.path().join("etc/kiri/kiri.toml")).unwrap();
    assert!(packaged.contains("/usr/lib/kiri/functions/"));
    let installed = tmp.path().join("usr/lib/kiri/functions/");
    let conf = tmp.path().join("kiri-check.toml");
    std::fs::write(
        &conf,
        packaged.replace("/usr/lib/kiri/functions/", installed.to_str().unwrap()),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_kiri"))
        .args(["config", "check", "--config"])
        .arg(&conf)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The static arm64 binary runs (under qemu-user when available) and knows its version.
    if let Ok(out) = Command::new("qemu-aarch64")
        .arg(tmp.path().join("usr/bin/kiri"))
        .arg("--version")
        .output()
    {
        assert!(String::from_utf8_lossy(&out.stdout).contains(version));
    }
    // Lintian finds nothing but what the package's overrides explain (its binaries are static).
    let lintian = Command::new("lintian")
        .args(["--tag-display-limit", "0", "--fail-on", "error,warning"])
        .arg(&deb)
        .output()
        .expect("lintian (scripts/setup.sh test installs it)");
    let said = String::from_utf8_lossy(&lintian.stdout);
    assert!(
        lintian.status.success()
            && !said
                .lines()
                .any(|l| l.starts_with("E:") || l.starts_with("W:")),
        "lintian:\n{said}{}",
        String::from_utf8_lossy(&lintian.stderr)
    );
    for page in ["kiri", "kiri-sensor"] {
        let path = format!("./usr/share/man/man1/{page}.1.gz");
        assert!(files.contains(&path), "{path} in:\n{files}");
    }
    // Both services are hardened alike: systemd rates each "OK" (exposure under 2.5 of 10).
    for unit in ["kiri.service", "kiri-sensor.service"] {
        let out = Command::new("systemd-analyze")
            .args(["security", "--offline=yes"])
            .arg(tmp.path().join("lib/systemd/system").join(unit))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let score: f64 = text
            .lines()
            .find_map(|l| l.split("Overall exposure level for ").nth(1))
            .and_then(|l| l.split(": ").nth(1)?.split(' ').next()?.parse().ok())
            .unwrap_or_else(|| panic!("no exposure level for {unit}:\n{text}"));
        assert!(score < 2.5, "{unit}: exposure {score}\n{text}");
    }
    assert!(
        !unit.contains("Environment=KIRI_GATEWAY_DATA_DIR"),
        "the conffile's data_dir rules"
    );
}

#[test]
fn systemd_hears_ready_status_and_the_watchdog() {
    let (dir, cloud, _sub, broker_port) = super::site("notify-consumer");
    let path = dir.path().join("notify.sock");
    let sock = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut kiri = Kiri::start(
        &dir.path().join("kiri"),
        &super::config(&cloud.url(), &super::embedded(broker_port)),
        &[
            ("NOTIFY_SOCKET", path.display().to_string()),
            ("WATCHDOG_USEC", "2000000".to_string()),
        ],
    );
    let mut heard = Vec::new();
    let mut buf = [0u8; 512];
    while !(heard.iter().any(|m: &String| m.contains("READY=1"))
        && heard.iter().any(|m| m.contains("STATUS=subscribed"))
        && heard.iter().filter(|m| m.contains("WATCHDOG=1")).count() >= 2)
    {
        let n = sock
            .recv(&mut buf)
            .unwrap_or_else(|e| panic!("no notification ({e}); heard {heard:?}"));
        heard.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    kiri.stop();
}

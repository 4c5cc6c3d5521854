//! The simulated board: the aarch64 image (`make image`) booted on QEMU's `virt` board by
//! `cross/qemu.sh`, reaching the host's site broker and cloud only through its forwards.
//! Also the flash script's refusals (the packages are in `packages.rs`).

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::util::*;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A booted board: its console lines, and its stdin to type on. Dropping it cuts its power
/// (QEMU killed).
pub(crate) struct Board {
    child: Child,
    stdin: ChildStdin,
    console: Arc<Mutex<Vec<String>>>,
}

impl Board {
    pub(crate) fn boot(env: &[(&str, String)]) -> Board {
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

    pub(crate) fn said(&self, text: &str) -> bool {
        self.console
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains(text))
    }

    pub(crate) fn wait_for(&mut self, text: &str, timeout: Duration) {
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

    pub(crate) fn transcript(&self) -> String {
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
        let mut seen = std::collections::BTreeSet::new();
        let arrivals = sub.arrivals_of("convert");
        arrivals.into_iter().filter(|s| seen.insert(*s)).collect()
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

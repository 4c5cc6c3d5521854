//! The disk that forgets (`cross/powercut/forgetful.py`, an nbdkit plugin, and `cut.py`): what
//! was flushed survives a power cut; what was not is lost (`drop`) or reaches the disk in part
//! (`reorder`: a random subset of the page writes, a write across pages torn); a FUA write is
//! durable when answered. The client is libnbd's (Debian's python3-libnbd), as QEMU would be.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::*;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

const PAGE: usize = 4096;

/// Serves `disk` through the plugin on the socket `sock`.
fn serve(disk: &Path, sock: &Path) -> Child {
    let child = Command::new("nbdkit")
        .args(["-f", "--unix"])
        .arg(sock)
        .arg("python")
        .arg(repo().join("cross/powercut/forgetful.py"))
        .arg(format!("file={}", disk.display()))
        .stderr(Stdio::inherit())
        .spawn()
        .expect("nbdkit (scripts/setup.sh test installs nbdkit and nbdkit-plugin-python)");
    wait_until("nbdkit's socket", Duration::from_secs(10), || sock.exists());
    child
}

/// Runs libnbd's Python client on `sock` with `script` (`h` is the connected handle).
fn client(sock: &Path, script: &str) {
    let program = format!(
        "import nbd\nh = nbd.NBD()\nh.connect_unix({:?})\n{script}\n",
        sock.display().to_string()
    );
    let out = Command::new("/usr/bin/python3")
        .args(["-c", &program])
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "the NBD client (scripts/setup.sh test installs python3-libnbd): {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// After a power cut: `cut.py DISK how...` decides what of the unflushed writes `disk` keeps;
/// what it says.
fn cut(disk: &Path, how: &[impl AsRef<std::ffi::OsStr>]) -> String {
    let out = Command::new("python3")
        .arg(repo().join("cross/powercut/cut.py"))
        .arg(disk)
        .args(how)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Writes, flushes and writes again, then cuts the power (nbdkit killed) and applies `how`.
fn after_cut(how: &[&str]) -> (Vec<u8>, String) {
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("disk.img");
    std::fs::write(&disk, vec![0u8; 16 * PAGE]).unwrap();
    let sock = dir.path().join("nbd.sock");
    let mut server = serve(&disk, &sock);
    client(
        &sock,
        "h.pwrite(b'A' * 4096, 0)\n\
         h.flush()\n\
         h.pwrite(b'B' * 8192, 4096)\n\
         h.pwrite(b'C' * 512, 0)\n\
         assert h.pread(1, 0) == b'C' and h.pread(1, 8192) == b'B', 'reads see unflushed writes'\n\
         h.pwrite(b'F' * 4096, 10 * 4096, nbd.CMD_FLAG_FUA)\n\
         h.pwrite(b'D' * 4096, 12 * 4096)",
    );
    // The power cut: the server dies with what it held.
    server.kill().unwrap();
    server.wait().unwrap();
    let said = cut(&disk, how);
    assert!(!dir.path().join("disk.img.pending").exists());
    (std::fs::read(&disk).unwrap(), said)
}

fn page(disk: &[u8], n: usize) -> &[u8] {
    &disk[n * PAGE..(n + 1) * PAGE]
}

#[test]
fn the_disk_keeps_what_was_flushed_and_forgets_the_rest() {
    let (disk, said) = after_cut(&["drop"]);
    assert_eq!(said.trim(), "cut: mode=drop unflushed_page_writes=1 kept=0");
    // The FUA write made everything before it durable (a flush); what came after is gone.
    assert!(page(&disk, 0)[..512].iter().all(|&b| b == b'C'));
    assert!(page(&disk, 0)[512..].iter().all(|&b| b == b'A'));
    assert!(page(&disk, 1)
        .iter()
        .chain(page(&disk, 2))
        .all(|&b| b == b'B'));
    assert!(page(&disk, 10).iter().all(|&b| b == b'F'));
    assert!(page(&disk, 12).iter().all(|&b| b == 0), "not flushed: lost");

    // Reordered: over seeds, the unflushed write is sometimes kept, sometimes lost; what was
    // durable always stays.
    let mut kept = 0;
    for seed in 0..8 {
        let (disk, said) = after_cut(&["reorder", &seed.to_string()]);
        assert!(said.contains("unflushed_page_writes=1"), "{said}");
        assert!(page(&disk, 10).iter().all(|&b| b == b'F'));
        let d = page(&disk, 12);
        assert!(d.iter().all(|&b| b == b'D') || d.iter().all(|&b| b == 0));
        kept += usize::from(d[0] == b'D');
    }
    assert!(
        kept > 0 && kept < 8,
        "{kept} of 8 cuts kept the unflushed write"
    );
}

/// Where the site broker is in a power-cut run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SiteBroker {
    /// Kiri's default: the embedded broker on the board.
    Embedded,
    /// Mosquitto with persistence, on the host (it keeps its power when the board loses its).
    Mosquitto,
}

/// What a power-cut run measured.
#[derive(Debug)]
pub(crate) struct CutReport {
    pub mode: SiteBroker,
    pub cuts: u64,
    pub acknowledged: u64,
    pub lost: u64,
    pub duplicates: u64,
    /// Boots that reached ready (each cut's recovery, and the first boot).
    pub recoveries: u64,
    /// Seconds from QEMU's start to "kiri-board: ready": mean and max.
    pub ready_s: (f64, f64),
    /// Bytes the board wrote to its data disk per acknowledged reading (boots included).
    pub written_per_reading: f64,
    pub flushes: u64,
}

impl std::fmt::Display for CutReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "| {:?} | {} | {} | {} | {} | {} | {:.1} / {:.1} | {:.0} | {} |",
            self.mode,
            self.cuts,
            self.acknowledged,
            self.lost,
            self.duplicates,
            self.recoveries,
            self.ready_s.0,
            self.ready_s.1,
            self.written_per_reading,
            self.flushes
        )
    }
}

/// The power-cut loop: the simulated board runs Kiri with its data directory on the disk
/// that forgets (ext4 on virtio-blk, over NBD), a sensor on the host publishes `events`
/// numbered readings with QoS 1 and sends again only what it was not acknowledged, and the
/// board's power is cut `cuts` times at random moments (QEMU and the disk's server killed;
/// what was not flushed dropped, or every other cut a seeded random part of it kept), then it
/// boots again. At the end every acknowledged reading must be at the cloud, in order.
pub(crate) fn power_cut_loop(mode: SiteBroker, cuts: u64, events: u64, seed: u64) -> CutReport {
    let dir = tempfile::tempdir().unwrap();
    let cloud = Mosquitto::start(&dir.path().join("cloud"));
    let sub = CloudSubscriber::start(cloud.port, "powercut-consumer");
    let site = (mode == SiteBroker::Mosquitto)
        .then(|| Mosquitto::start_with(&dir.path().join("site"), site_config()));
    let sensor_port = match &site {
        Some(m) => m.port,
        None => free_port(),
    };
    let disk = dir.path().join("data.img");
    std::fs::write(&disk, vec![0u8; 64 << 20]).unwrap();
    let made = Command::new("mkfs.ext4")
        .args(["-q", "-F", "-L", "kiri-data"])
        .arg(&disk)
        .status()
        .expect("mkfs.ext4 (e2fsprogs)");
    assert!(made.success());
    // The formatting is not the gateway's wear.
    let sock = dir.path().join("nbd.sock");
    let mut rng = fastrand::Rng::with_seed(seed);
    let rate = 100;
    // Started once the board first is ready: a broker drops what no session subscribed to yet.
    let mut sensor = None;
    let mut ready = Vec::new();
    for round in 0..=cuts {
        if sock.exists() {
            std::fs::remove_file(&sock).unwrap();
        }
        let mut server = serve(&disk, &sock);
        let mut env = vec![
            (
                "LOCAL_PORT",
                site.as_ref().map_or(1, |m| m.port).to_string(),
            ),
            ("CLOUD_PORT", cloud.port.to_string()),
            ("DASH_PORT", free_port().to_string()),
            ("QEMU_DATA", format!("nbd:unix:{}", sock.display())),
        ];
        if mode == SiteBroker::Embedded {
            env.push(("QEMU_CONFIG", "embedded".into()));
            env.push(("SENSOR_PORT", sensor_port.to_string()));
        }
        let booted = Instant::now();
        let mut board = super::board::Board::boot(&env);
        board.wait_for("kiri-board: ready", Duration::from_secs(180));
        ready.push(booted.elapsed().as_secs_f64());
        // Kiri's own errors (rumqttd logs a sensor's reconnection under the same client id,
        // before its old connection is gone, as an ERROR of its own).
        let kiri_error = board
            .transcript()
            .lines()
            .any(|l| l.contains("ERROR") && l.contains("kiri::"));
        assert!(
            !kiri_error,
            "the gateway reported an error after a cut: {}",
            board.transcript()
        );
        let sensor = sensor.get_or_insert_with(|| {
            std::thread::spawn(move || {
                super::front_door::reliable_sensor(
                    sensor_port,
                    "s5",
                    events,
                    10,
                    rate,
                    Duration::from_secs(3600),
                )
            })
        });
        if round == cuts {
            // The last boot stays up: the sensor finishes, the cloud gets everything.
            let finished = poll_until(Duration::from_secs(600), || sensor.is_finished());
            assert!(
                finished,
                "the sensor did not finish: {}",
                board.transcript()
            );
            let connections = std::mem::replace(sensor, std::thread::spawn(|| 0))
                .join()
                .unwrap();
            let all = poll_until(Duration::from_secs(300), || {
                sub.arrivals_of("convert")
                    .iter()
                    .collect::<std::collections::BTreeSet<_>>()
                    .len() as u64
                    >= events
            });
            let arrivals = sub.arrivals_of("convert");
            let got: std::collections::BTreeSet<u64> = arrivals.iter().copied().collect();
            let missing: Vec<u64> = (0..events).filter(|s| !got.contains(s)).collect();
            assert!(
                all && missing.is_empty(),
                "{mode:?}: {} acknowledged readings lost after {cuts} power cuts, first {:?} \
                 (the sensor connected {connections} times): {}",
                missing.len(),
                &missing[..missing.len().min(20)],
                board.transcript()
            );
            let mut seen = std::collections::BTreeSet::new();
            let distinct: Vec<u64> = arrivals
                .iter()
                .copied()
                .filter(|s| seen.insert(*s))
                .collect();
            super::assert_in_order(&distinct, events);
            // Duplicates are bounded as a crash's are (docs/delivery-guarantees.md, "Where
            // duplicates come from"): none arrives further behind the newest arrival than the
            // inputs taken in and not acknowledged (broker.queue + broker.batch, 256 + 128)
            // and the results sent again (2 x cloud.inflight, 2 x 64).
            let mut newest = 0u64;
            let mut furthest = 0;
            for &s in &arrivals {
                furthest = furthest.max(newest.saturating_sub(s));
                newest = newest.max(s);
            }
            assert!(
                furthest <= 256 + 128 + 2 * 64,
                "{mode:?}: a duplicate arrived {furthest} readings behind the newest"
            );
            drop(board);
            server.kill().unwrap();
            server.wait().unwrap();
            let wear = std::fs::read_to_string(disk.with_extension("img.wear")).unwrap_or_default();
            let field = |k: &str| -> u64 {
                wear.split_whitespace()
                    .find_map(|f| f.strip_prefix(&format!("{k}=")))
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0)
            };
            let max = ready.iter().copied().fold(0.0, f64::max);
            return CutReport {
                mode,
                cuts,
                acknowledged: events,
                lost: missing.len() as u64,
                duplicates: arrivals.len() as u64 - got.len() as u64,
                recoveries: ready.len() as u64,
                ready_s: (ready.iter().sum::<f64>() / ready.len() as f64, max),
                written_per_reading: field("written") as f64 / events as f64,
                flushes: field("flushes"),
            };
        }
        // Power on for a while, the sensor streaming, then the cut: at the next moment the
        // disk holds writes not yet flushed (the guest's writes reach the disk in bursts,
        // each ended by a flush: a cut at any moment mostly finds none), within 2 s.
        std::thread::sleep(Duration::from_millis(rng.u64(500..4000)));
        let pending = disk.with_extension("img.pending");
        let until = Instant::now() + Duration::from_secs(2);
        while Instant::now() < until && !std::fs::metadata(&pending).is_ok_and(|m| m.len() > 0) {
            std::thread::sleep(Duration::from_millis(1));
        }
        drop(board);
        server.kill().unwrap();
        server.wait().unwrap();
        let how = if round % 2 == 0 {
            vec!["drop".to_string()]
        } else {
            vec!["reorder".to_string(), rng.u64(..).to_string()]
        };
        let said = cut(&disk, &how);
        eprintln!("{mode:?} cut {}: {}", round + 1, said.trim());
    }
    unreachable!("the last round returns")
}

/// The shipped Mosquitto site configuration, as the power-cut loop's site broker.
fn site_config() -> String {
    std::fs::read_to_string(repo().join("docs/mosquitto-site.conf")).unwrap()
}

#[test]
fn acknowledged_readings_survive_power_cuts_in_both_site_broker_modes() {
    let cuts = std::env::var("TEST_POWER_CUTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(6u64);
    let events = std::env::var("TEST_POWER_CUT_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(400 * cuts.max(1));
    let mut rows = Vec::new();
    for mode in [SiteBroker::Embedded, SiteBroker::Mosquitto] {
        let report = power_cut_loop(mode, cuts, events, 0x5eed + cuts);
        eprintln!("power cuts: {report:?}");
        rows.push(report.to_string());
    }
    let table = format!(
        "| site broker | cuts | readings acknowledged | lost | duplicates | recoveries | time to ready, s (mean / max) | bytes written per reading | flushes |\n|---|---|---|---|---|---|---|---|---|\n{}\n",
        rows.join("\n")
    );
    eprintln!("{table}");
    if let Ok(out) = std::env::var("TEST_POWER_CUT_REPORT") {
        std::fs::write(out, table).unwrap();
    }
}

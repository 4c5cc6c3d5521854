//! The Debian packages (`cross/deb.sh`, built by `make test` for arm64 and armhf): their
//! files, units and configuration, lintian and systemd-analyze; and each architecture's
//! binary, under QEMU's user mode, running a gateway that forwards readings.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::util::*;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The command that runs a binary of `arch` here: QEMU's user mode (armhf: with the armhf
/// C library the cross compiler brings, where the binary's loader is looked for).
fn qemu_user(arch: &str) -> Vec<&'static str> {
    match arch {
        "arm64" => vec!["qemu-aarch64"],
        "armhf" => vec!["qemu-arm", "-L", "/usr/arm-linux-gnueabihf"],
        _ => panic!("unknown architecture {arch}"),
    }
}

#[test]
fn the_arm64_package_holds_the_service_the_config_and_the_binaries() {
    check_package("arm64");
}

#[test]
fn the_armhf_package_holds_the_service_the_config_and_the_binaries() {
    check_package("armhf");
}

/// The packaged binary of `arch`, under QEMU's user mode, runs a gateway with the embedded
/// broker: readings published to it reach the cloud.
fn gateway_runs_under_qemu(arch: &str) {
    let version = env!("CARGO_PKG_VERSION");
    let deb = repo().join(format!("target/deb/kiri_{version}_{arch}.deb"));
    assert!(
        deb.exists(),
        "{} is missing: `cross/deb.sh {arch}`",
        deb.display()
    );
    let (dir, cloud, sub, port) = super::site(&format!("qemu-{arch}-consumer"));
    let root = dir.path().join("pkg");
    let unpacked = Command::new("dpkg-deb")
        .arg("-x")
        .arg(&deb)
        .arg(&root)
        .status()
        .unwrap();
    assert!(unpacked.success());
    let bin = root.join("usr/bin/kiri");
    let mut program = qemu_user(arch);
    program.push(bin.to_str().unwrap());
    let conf = super::config(&cloud.url(), &super::embedded(port));
    let mut kiri = Kiri::start_program(&dir.path().join("kiri"), &conf, &[], &program);
    let readings = (0..20).map(|i| reading("s1", i)).collect();
    publish_all(port, "s1", "sensors/s1/temperature", readings);
    sub.wait_for(20, Duration::from_secs(60), &mut kiri);
    super::assert_in_order(&sub.distinct_seqs(), 20);
    kiri.stop();
}

#[test]
fn the_arm64_binary_runs_a_gateway_under_qemu() {
    gateway_runs_under_qemu("arm64");
}

#[test]
fn the_armhf_binary_runs_a_gateway_under_qemu() {
    gateway_runs_under_qemu("armhf");
}

/// The package for `arch` (`target/deb`, which `make test` builds), its files, unit and
/// configuration, its binary run under QEMU's user mode, lintian and systemd-analyze.
fn check_package(arch: &str) {
    let version = env!("CARGO_PKG_VERSION");
    let deb = repo().join(format!("target/deb/kiri_{version}_{arch}.deb"));
    assert!(
        deb.exists(),
        "{} is missing: `cross/deb.sh {arch}` (`make test` runs it)",
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
        "Package: kiri".to_string(),
        format!("Architecture: {arch}"),
        "Depends: adduser".to_string(),
        "postinst".to_string(),
    ] {
        assert!(info.contains(field.as_str()), "{field} in:\n{info}");
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
    // The binary runs under QEMU's user mode and knows its version.
    let bin = tmp.path().join("usr/bin/kiri");
    let out = Command::new(qemu_user(arch)[0])
        .args(&qemu_user(arch)[1..])
        .arg(&bin)
        .arg("--version")
        .output()
        .expect("QEMU's user mode (scripts/setup.sh test installs qemu-user)");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(version),
        "{} --version: {}{}",
        bin.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // Lintian finds nothing but what the package's overrides explain (arm64: its binaries are
    // static).
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

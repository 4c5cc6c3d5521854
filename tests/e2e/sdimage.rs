//! The SD image's own parts (`make sd-image` builds the whole from Debian packages, and `make
//! sd-image-boot` boots it; both take long and need the network, so they are not in `make
//! test`): the first-boot script on a scratch root with the packaged configuration, and the
//! card's layout as `cross/sdimage.sh assemble` makes it from a small tree.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

#[test]
fn the_first_boot_applies_kiri_setup_txt_and_makes_host_keys() {
    let dir = tempfile::tempdir().unwrap();
    let r = dir.path();
    fs::create_dir_all(r.join("boot/firmware")).unwrap();
    fs::create_dir_all(r.join("etc/kiri")).unwrap();
    fs::copy(
        repo().join("cross/debian/kiri.toml"),
        r.join("etc/kiri/kiri.toml"),
    )
    .unwrap();
    // As a user writes it, with Windows line ends and a key this version does not know.
    fs::write(
        r.join("boot/firmware/kiri-setup.txt"),
        "# my gateway\r\nhostname = \"pi-7\"\r\ngateway_id = \"pi-7\"\r\n\
         cloud_url = \"mqtts://cloud.example:8883\"\r\ndashboard_token = \"tok-0123456789abcdef\"\r\n\
         ssh_authorized_key = \"ssh-ed25519 AAAAC3Nza me@laptop\"\r\nwifi = \"x\"\r\n",
    )
    .unwrap();
    let said = run(Command::new("sh")
        .arg(repo().join("cross/sdimage/kiri-firstboot"))
        .env("KIRI_FIRSTBOOT_ROOT", r));
    assert!(said.contains("made this board's SSH host keys"), "{said}");
    assert!(said.contains("unknown setting 'wifi'"), "{said}");
    assert!(r.join("etc/ssh/ssh_host_ed25519_key").exists());
    assert!(
        !r.join("boot/firmware/kiri-setup.txt").exists(),
        "the setup file (secrets) is deleted"
    );
    assert_eq!(
        fs::read_to_string(r.join("etc/hostname")).unwrap(),
        "pi-7\n"
    );
    let env = r.join("etc/kiri/kiri.env");
    assert_eq!(
        fs::read_to_string(&env).unwrap(),
        "KIRI_DASHBOARD_TOKEN=tok-0123456789abcdef\n"
    );
    assert_eq!(
        fs::metadata(&env).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert!(fs::read_to_string(r.join("root/.ssh/authorized_keys"))
        .unwrap()
        .contains("me@laptop"));
    // The configuration stays valid and says what was set, where it belongs.
    let conf = fs::read_to_string(r.join("etc/kiri/kiri.toml")).unwrap();
    let functions = r.join("functions/");
    fs::create_dir_all(&functions).unwrap();
    for f in ["convert", "threshold"] {
        fs::copy(
            super::util::function_wasm(f),
            functions.join(format!("{f}.wasm")),
        )
        .unwrap();
    }
    let check = r.join("check.toml");
    fs::write(
        &check,
        conf.replace("/usr/lib/kiri/functions/", functions.to_str().unwrap()),
    )
    .unwrap();
    let shown = run(Command::new(env!("CARGO_BIN_EXE_kiri"))
        .args(["config", "check", "--config"])
        .arg(&check));
    assert!(shown.contains("id = \"pi-7\""), "{shown}");
    assert!(
        shown.contains("url = \"mqtts://cloud.example:8883\""),
        "{shown}"
    );

    // A second boot has nothing to do: the keys stay.
    let key = fs::read(r.join("etc/ssh/ssh_host_ed25519_key")).unwrap();
    let said = run(Command::new("sh")
        .arg(repo().join("cross/sdimage/kiri-firstboot"))
        .env("KIRI_FIRSTBOOT_ROOT", r));
    assert!(said.trim().is_empty(), "{said}");
    assert_eq!(
        fs::read(r.join("etc/ssh/ssh_host_ed25519_key")).unwrap(),
        key
    );
}

#[test]
fn the_card_has_the_pi_layout_with_labelled_partitions() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    fs::create_dir_all(root.join("boot/firmware")).unwrap();
    fs::create_dir_all(root.join("usr/bin")).unwrap();
    fs::write(root.join("boot/firmware/config.txt"), "arm_64bit=1\n").unwrap();
    fs::write(
        root.join("boot/firmware/cmdline.txt"),
        "root=LABEL=RASPIROOT\n",
    )
    .unwrap();
    fs::write(root.join("usr/bin/kiri"), "stand-in").unwrap();
    let img = dir.path().join("card.img");
    run(Command::new(repo().join("cross/sdimage.sh"))
        .args(["assemble"])
        .arg(&root)
        .arg(&img)
        .env("ROOT_MB", "64"));
    // An MBR with a bootable FAT32 (LBA) partition at 4 MiB, then a Linux one.
    let table = run(Command::new("sfdisk").arg("--dump").arg(&img));
    assert!(table.contains("label: dos"), "{table}");
    assert!(
        table.contains("start=        8192, size=      524288, type=c, bootable"),
        "{table}"
    );
    assert!(table.contains("type=83"), "{table}");
    // The FAT partition: labelled RASPIFIRM, with the firmware files.
    let at = format!("{}@@4M", img.display());
    let listing = run(Command::new("mdir").args(["-i", &at, "::/"]));
    assert!(listing.contains("RASPIFIRM"), "{listing}");
    assert!(listing.to_lowercase().contains("config"), "{listing}");
    let cmdline = run(Command::new("mtype").args(["-i", &at, "::/cmdline.txt"]));
    assert!(cmdline.contains("root=LABEL=RASPIROOT"));
    // The ext4 partition: labelled RASPIROOT, the tree without the firmware files.
    let ext4 = dir.path().join("root.ext4");
    run(Command::new("dd")
        .arg(format!("if={}", img.display()))
        .arg(format!("of={}", ext4.display()))
        .args(["bs=512", "skip=532480", "status=none"]));
    let label = run(Command::new("e2label").arg(&ext4));
    assert_eq!(label.trim(), "RASPIROOT");
    let ls = run(Command::new("debugfs")
        .args(["-R", "ls -l /usr/bin"])
        .arg(&ext4));
    assert!(ls.contains("kiri"), "{ls}");
    let fw = run(Command::new("debugfs")
        .args(["-R", "ls /boot/firmware"])
        .arg(&ext4));
    assert!(
        !fw.contains("config.txt"),
        "the firmware is on the FAT partition only: {fw}"
    );
    // The tree is left as it was.
    assert!(root.join("boot/firmware/config.txt").exists());
}

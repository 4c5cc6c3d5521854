//! The disk that forgets (`cross/powercut/forgetful.py`, an nbdkit plugin, and `cut.py`): what
//! was flushed survives a power cut; what was not is lost (`drop`) or reaches the disk in part
//! (`reorder`: a random subset of the page writes, a write across pages torn); a FUA write is
//! durable when answered. The client is libnbd's (Debian's python3-libnbd), as QEMU would be.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

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

/// Writes, flushes and writes again, then cuts the power (nbdkit killed) and applies `cut`.
fn after_cut(cut: &[&str]) -> (Vec<u8>, String) {
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
    let out = Command::new("python3")
        .arg(repo().join("cross/powercut/cut.py"))
        .arg(&disk)
        .args(cut)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!dir.path().join("disk.img.pending").exists());
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
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

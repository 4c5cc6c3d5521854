//! One function, one client, one full disk must never stop the gateway (issue 18): hostile
//! functions and clients, each tried the way the attack was measured, and the gateway's answer.

use std::time::Duration;

use super::{config_with, embedded};
use crate::util::*;

/// A function that hoards state: each event writes 16 new keys of 64 KiB (1 MiB), nothing
/// else. Its `[[functions]]` entry, on `sensors/+/temperature`, the module written into `dir`.
fn hoarder(dir: &std::path::Path) -> String {
    let wat = r#"(module
      (import "kiri" "kv_put" (func $put (param i32 i32 i32 i32) (result i32)))
      (memory (export "memory") 4)
      (global $n (mut i32) (i32.const 0))
      (func (export "kiri_abi_version") (result i32) i32.const 1)
      (func (export "kiri_alloc") (param i32) (result i32) i32.const 200000)
      (func (export "kiri_on_event") (param i32 i32 i32 i32 i64) (result i32)
        (local $i i32)
        (loop
          (global.set $n (i32.add (global.get $n) (i32.const 1)))
          (i32.store (i32.const 0) (global.get $n))
          (drop (call $put (i32.const 0) (i32.const 4) (i32.const 1024) (i32.const 65536)))
          (local.set $i (i32.add (local.get $i) (i32.const 1)))
          (br_if 0 (i32.lt_u (local.get $i) (i32.const 16))))
        i32.const 0))"#;
    let path = dir.join("hoarder.wasm");
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(&path, wat::parse_str(wat).unwrap()).unwrap();
    format!(
        "[[functions]]\nname = \"hoarder\"\nmodule = \"{}\"\ntriggers = [\"sensors/+/temperature\"]\n",
        path.display()
    )
}

/// State written by a function on a small disk stops at the reserve: inputs stay
/// unacknowledged, the disk keeps its free space, and the gateway keeps answering.
#[test]
fn state_writes_stop_at_the_disk_reserve_and_the_gateway_keeps_answering() {
    let (dir, _cloud, _sub, broker_port) = super::site("kv-reserve-consumer");
    let disk = small_disk(&dir.path().join("kiri/data"), "48m");
    let reserve = 16 << 20;
    let conf = config_with(
        "mqtt://127.0.0.1:9",
        &embedded(broker_port),
        &hoarder(dir.path()),
    )
    .replacen(
        "[cloud]",
        &format!("[outbox]\nmin_free_bytes = {reserve}\n[cloud]"),
        1,
    );
    let mut kiri = Kiri::start(&dir.path().join("kiri"), &conf, &[]);
    // 100 events would write 100 MiB: twice the disk.
    let publisher = std::thread::spawn(move || {
        publish_all(broker_port, "s1", "sensors/s1/temperature", {
            (0..100).map(|i| reading("s1", i)).collect()
        })
    });
    wait_until(
        "the disk reserve to be reached",
        Duration::from_secs(60),
        || {
            kiri.assert_running();
            kiri.status()["outbox"]["disk_waits"].as_u64() >= Some(1)
        },
    );
    let stalled = kiri.metric("kiri_invocations_total");
    std::thread::sleep(Duration::from_secs(2));
    kiri.assert_running();
    let free = disk.free();
    // One append (1 MiB of state) may start just above the reserve; sled's log adds a little.
    assert!(free >= reserve / 2, "the reserve holds: {free} bytes free");
    assert_eq!(kiri.get_status("/healthz"), 200, "health answers");
    assert!(
        kiri.metric("kiri_outbox_disk_waits_total") >= 1.0,
        "metrics answer"
    );
    let ran = kiri.metric("kiri_invocations_total");
    assert!(
        ran < 100.0,
        "not every event ran: the reserve stopped the rest"
    );
    assert!(
        ran <= stalled + 1.0,
        "processing holds (at most the invocation already running ends): {stalled} then {ran}"
    );
    kiri.stop();
    publisher.join().unwrap();
}

/// A store that fails under the gateway (a full disk with the reserve turned off) makes it
/// log an ERROR with the cause and exit non-zero within seconds: never a process that is
/// alive and does nothing.
#[test]
fn a_store_failure_makes_the_gateway_exit_non_zero_with_an_error_line() {
    let (dir, _cloud, _sub, broker_port) = super::site("store-failure-consumer");
    let _disk = small_disk(&dir.path().join("kiri/data"), "32m");
    let conf = config_with(
        "mqtt://127.0.0.1:9",
        &embedded(broker_port),
        &hoarder(dir.path()),
    )
    .replacen("[cloud]", "[outbox]\nmin_free_bytes = 0\n[cloud]", 1);
    let mut kiri = Kiri::start(&dir.path().join("kiri"), &conf, &[]);
    let _publisher = std::thread::spawn(move || {
        publish_all(broker_port, "s1", "sensors/s1/temperature", {
            (0..100).map(|i| reading("s1", i)).collect()
        })
    });
    let status = kiri
        .wait_exit(Duration::from_secs(60))
        .unwrap_or_else(|| panic!("the gateway still runs; log:\n{}", kiri.log_text()));
    let log = kiri.log_text();
    assert!(!status.success(), "exit status {status}; log:\n{log}");
    assert!(
        log.lines()
            .any(|l| l.contains("ERROR") && l.contains("failed") && l.contains("space")),
        "an ERROR line with the cause; log:\n{log}"
    );
}

//! Ages are not the wall clock: the gateway alone runs under libfaketime (Debian's
//! `libfaketime`, preloaded), its clock read from a file the test rewrites: unset (1971),
//! then set, then 2 h ahead, then a day behind, and across a restart. Held results keep the
//! age the gateway held them for: none expires on a clock step, all are delivered when the
//! cloud comes back, and `outbox.ttl` still expires results by the time they were held.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{config, embedded};
use crate::util::*;

/// Debian's multithreaded libfaketime (the gateway runs threads).
fn libfaketime() -> PathBuf {
    let found = std::fs::read_dir("/usr/lib")
        .unwrap()
        .flatten()
        .map(|d| d.path().join("faketime/libfaketimeMT.so.1"))
        .find(|p| p.exists());
    found.expect("libfaketime is not installed (scripts/setup.sh test installs it: libfaketime)")
}

/// The environment that runs the gateway with its clock offset by what `file` says
/// (`+0`, `+2h`, `-1d`, ...), read again at most once a second; the monotonic clock stays
/// real, as a clock step leaves it.
fn faked(file: &Path) -> Vec<(&'static str, String)> {
    vec![
        ("LD_PRELOAD", libfaketime().display().to_string()),
        ("FAKETIME_TIMESTAMP_FILE", file.display().to_string()),
        ("FAKETIME_CACHE_DURATION", "1".into()),
        ("DONT_FAKE_MONOTONIC", "1".into()),
    ]
}

fn set_clock(file: &Path, offset: &str) {
    std::fs::write(file, format!("{offset}\n")).unwrap();
}

/// Held records, expired records (from the status).
fn held(kiri: &Kiri) -> (u64, u64) {
    let o = &kiri.status()["outbox"];
    (
        o["records"].as_u64().unwrap(),
        o["expired"].as_u64().unwrap(),
    )
}

/// Waits long enough for the gateway to see the new clock and sweep twice, then checks that
/// nothing expired.
fn nothing_expires(kiri: &mut Kiri, what: &str, records: u64) {
    std::thread::sleep(Duration::from_millis(3_500));
    kiri.assert_running();
    assert_eq!(held(kiri), (records, 0), "{what}: nothing held expires");
}

fn readings(from: u64, to: u64) -> Vec<Vec<u8>> {
    (from..to).map(|i| reading("s1", i)).collect()
}

#[test]
fn clock_steps_neither_expire_nor_lose_held_results() {
    let (dir, mut cloud, sub, broker_port) = super::site("clock-consumer");
    let clock = dir.path().join("faketime");
    set_clock(&clock, "-55y");
    let base = config(&cloud.url(), &embedded(broker_port));
    let with_ttl =
        |ttl: &str| base.replacen("[cloud]", &format!("[outbox]\nttl = \"{ttl}\"\n[cloud]"), 1);
    cloud.stop();
    let mut kiri = Kiri::start(&dir.path().join("kiri"), &with_ttl("1h"), &faked(&clock));
    assert!(
        kiri.log_text()
            .contains("the system clock has not been set"),
        "the gateway runs in 1971 and says so"
    );
    publish_all(broker_port, "s1", "sensors/s1/temperature", readings(0, 40));
    wait_until("40 results held", Duration::from_secs(30), || {
        held(&kiri).0 == 40
    });

    // NTP sets the clock: results emitted "in 1971" are seconds old, not 55 years.
    set_clock(&clock, "+0");
    nothing_expires(&mut kiri, "the clock set for the first time", 40);
    let age = kiri.status()["outbox"]["oldest_age_ms"].as_u64().unwrap();
    assert!(age < 60_000, "the oldest result is {age} ms old");

    // A step of 2 h forward with ttl = 1h: still seconds old.
    set_clock(&clock, "+2h");
    nothing_expires(&mut kiri, "a +2 h step", 40);

    // A day back: nothing expires, and what arrives meanwhile is held beside it.
    set_clock(&clock, "-1d");
    publish_all(
        broker_port,
        "s1",
        "sensors/s1/temperature",
        readings(40, 50),
    );
    wait_until("50 results held", Duration::from_secs(30), || {
        held(&kiri).0 == 50
    });
    nothing_expires(&mut kiri, "a -1 day step", 50);

    // A restart with the clock a day behind the last save: the age resumes, nothing expires.
    kiri.stop();
    kiri.restart();
    nothing_expires(&mut kiri, "a restart a day back", 50);
    let age = kiri.status()["outbox"]["oldest_age_ms"].as_u64().unwrap();
    assert!(
        (5_000..120_000).contains(&age),
        "the oldest result kept its age across the restart: {age} ms"
    );

    // The cloud returns: everything held is delivered, in order.
    cloud.restart();
    sub.wait_for(50, Duration::from_secs(60), &mut kiri);
    assert_eq!(sub.distinct_seqs(), (0..50).collect::<Vec<_>>());

    // The TTL still expires what is held past it, on the time the gateway held it.
    cloud.stop();
    publish_all(
        broker_port,
        "s1",
        "sensors/s1/temperature",
        readings(50, 60),
    );
    wait_until("10 more held", Duration::from_secs(30), || {
        held(&kiri).0 == 10
    });
    kiri.set_config(&with_ttl("3s"));
    kiri.hangup();
    wait_until("the 10 expired", Duration::from_secs(30), || {
        held(&kiri) == (0, 10)
    });
    kiri.stop();
}

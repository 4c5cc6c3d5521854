//! Store-and-forward under attack: TLS and its failures, crash loops, link faults, a full
//! disk, and the outbox policies, each against real Mosquitto brokers.

use std::process::Command;
use std::time::{Duration, Instant};

use super::{assert_in_order, config, config_with, embedded};
use crate::util::*;

/// An environment variable as a number, or `default`.
fn param(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn readings(from: u64, to: u64) -> Vec<Vec<u8>> {
    (from..to).map(|i| reading("s1", i)).collect()
}

/// Adds lines to the `[cloud]` section of a configuration made by `config`/`config_with`.
fn with_cloud(config: &str, lines: &str) -> String {
    config.replacen("[cloud]\n", &format!("[cloud]\n{lines}\n"), 1)
}

#[test]
fn tls_uplink_checks_the_broker_and_does_mutual_tls_and_passwords() {
    let dir = tempfile::tempdir().unwrap();
    let site = Pki::new(dir.path(), "site");
    let rogue = Pki::new(dir.path(), "rogue");
    let (server_cert, server_key) = site.issue("broker", &["localhost"], false);
    let (client_cert, client_key) = site.issue("gateway", &["gw-test"], true);
    let passwords = dir.path().join("passwd");
    let made = Command::new("mosquitto_passwd")
        .args(["-c", "-b"])
        .arg(&passwords)
        .args(["gw", "right-secret-8d2f"])
        .status()
        .expect("mosquitto_passwd (installed with mosquitto)");
    assert!(made.success());
    let (tls, mtls, auth) = (free_port(), free_port(), free_port());
    let tls_files = format!(
        "cafile {}\ncertfile {}\nkeyfile {}",
        site.ca().display(),
        server_cert.display(),
        server_key.display()
    );
    let cloud = Mosquitto::start_with(
        &dir.path().join("cloud"),
        format!(
            "listener {tls} 127.0.0.1\nallow_anonymous true\n{tls_files}\n\
             listener {mtls} 127.0.0.1\nallow_anonymous true\n{tls_files}\nrequire_certificate true\n\
             listener {auth} 127.0.0.1\nallow_anonymous false\npassword_file {}\n{tls_files}\n",
            passwords.display()
        ),
    );
    let sub = CloudSubscriber::start(cloud.port, "tls-consumer");
    let broker_port = free_port();
    let conf = |url: &str, extra: &str| with_cloud(&config(url, &embedded(broker_port)), extra);
    let ca = |pki: &Pki| format!("ca_file = {:?}", pki.ca().display().to_string());
    let client = format!(
        "client_cert = {:?}\nclient_key = {:?}",
        client_cert.display().to_string(),
        client_key.display().to_string()
    );
    // `new`: results appended since the last restart.
    let refused = |kiri: &mut Kiri, new: u64, expect: &str| {
        wait_until(
            "the refusal to be reported",
            Duration::from_secs(30),
            || {
                kiri.assert_running();
                let uplink = &kiri.status()["uplink"];
                uplink["connected"] == false
                    && uplink["last_error"]
                        .as_str()
                        .is_some_and(|e| e.contains(expect))
            },
        );
        wait_until(
            "results held in the outbox",
            Duration::from_secs(30),
            || {
                // Every new result committed (before a restart: the embedded broker keeps what
                // it has not handed over in memory only). The outbox may hold more: results
                // delivered just before the last restart whose PUBACK had not come back.
                let outbox = &kiri.status()["outbox"];
                outbox["appended"].as_u64() >= Some(new) && outbox["records"].as_u64() >= Some(20)
            },
        );
    };

    // 1. A certificate for another name than the URL's host: refused, and held.
    let mut kiri = Kiri::start(
        &dir.path().join("kiri"),
        &conf(&format!("mqtts://127.0.0.1:{tls}"), &ca(&site)),
        &[],
    );
    publish_all(broker_port, "s1", "sensors/s1/temperature", readings(0, 20));
    refused(&mut kiri, 20, "not valid for name");
    // 2. The right name, but a CA that did not sign the broker's certificate: refused.
    kiri.stop();
    kiri.set_config(&conf(&format!("mqtts://localhost:{tls}"), &ca(&rogue)));
    kiri.restart();
    refused(&mut kiri, 0, "UnknownIssuer");
    assert!(kiri.log_text().contains("TLS handshake failed"));
    // 3. The right CA: everything held is delivered, in order.
    kiri.stop();
    kiri.set_config(&conf(&format!("mqtts://localhost:{tls}"), &ca(&site)));
    kiri.restart();
    sub.wait_for(20, Duration::from_secs(30), &mut kiri);
    assert_eq!(kiri.status()["uplink"]["connected"], true);

    // 4. A broker that wants a client certificate: refused without, delivered with.
    kiri.stop();
    kiri.set_config(&conf(&format!("mqtts://localhost:{mtls}"), &ca(&site)));
    kiri.restart();
    publish_all(
        broker_port,
        "s1",
        "sensors/s1/temperature",
        readings(20, 40),
    );
    refused(&mut kiri, 20, "CertificateRequired");
    kiri.stop();
    kiri.set_config(&conf(
        &format!("mqtts://localhost:{mtls}"),
        &format!("{}\n{client}", ca(&site)),
    ));
    kiri.restart();
    sub.wait_for(40, Duration::from_secs(30), &mut kiri);

    // 5. User name and password (the password from the environment): a wrong one is refused,
    // the right one works, and neither is ever logged.
    kiri.stop();
    kiri.set_config(&conf(
        &format!("mqtts://localhost:{auth}"),
        &format!("{}\nusername = \"gw\"", ca(&site)),
    ));
    kiri.set_env("KIRI_CLOUD_PASSWORD", "wrong-secret-51ac");
    kiri.restart();
    publish_all(
        broker_port,
        "s1",
        "sensors/s1/temperature",
        readings(40, 60),
    );
    refused(&mut kiri, 20, "refused");
    kiri.stop();
    kiri.set_env("KIRI_CLOUD_PASSWORD", "right-secret-8d2f");
    kiri.restart();
    sub.wait_for(60, Duration::from_secs(30), &mut kiri);
    assert_in_order(&sub.distinct_seqs(), 60);
    let log = kiri.log_text();
    assert!(!log.contains("wrong-secret") && !log.contains("right-secret"));
    kiri.stop();
}

/// The crash loop: readings stream through an external Mosquitto (persistent session) while
/// the gateway is killed with SIGKILL at random moments and restarted. `TEST_CRASH_KILLS`
/// and `TEST_CRASH_EVENTS` set the size (`make soak` runs a long one).
#[test]
fn a_crash_loop_loses_nothing_and_keeps_order() {
    let kills = param("TEST_CRASH_KILLS", 8);
    let events = param("TEST_CRASH_EVENTS", 4000);
    let dir = tempfile::tempdir().unwrap();
    let cloud = Mosquitto::start(&dir.path().join("cloud"));
    let local = Mosquitto::start(&dir.path().join("local"));
    let sub = CloudSubscriber::start(cloud.port, "crash-consumer");
    let (inflight, queue, batch) = (16u64, 64u64, 32u64);
    let broker = format!(
        "mode = \"external\"\nurl = \"{}\"\nqueue = {queue}\nbatch = {batch}",
        local.url()
    );
    let mut kiri = Kiri::start(
        &dir.path().join("kiri"),
        &with_cloud(
            &config(&cloud.url(), &broker),
            &format!("inflight = {inflight}"),
        ),
        &[],
    );
    // Spread the readings over the kills: about 1.2 s of publishing per kill.
    let per_tick = (events / (kills.max(1) * 12)).max(1);
    let publisher = std::thread::spawn({
        let port = local.port;
        move || {
            let mut next = 0;
            while next < events {
                let to = (next + per_tick).min(events);
                publish_all(port, "sensor-crash", "sensors/s9/temperature", {
                    (next..to).map(|i| reading("s9", i)).collect()
                });
                next = to;
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    });
    let started = Instant::now();
    for round in 0..kills {
        std::thread::sleep(Duration::from_millis(fastrand::u64(100..1500)));
        kiri.freeze_and_kill();
        if round % 3 == 2 {
            // Also while it starts: opening and recovering the store, connecting.
            kiri.spawn();
            std::thread::sleep(Duration::from_millis(fastrand::u64(0..300)));
            kiri.freeze_and_kill();
        }
        kiri.restart();
    }
    publisher.join().unwrap();
    sub.wait_for(events as usize, Duration::from_secs(120), &mut kiri);
    let arrivals = sub.assert_all_arrived_in_order(events);
    // A duplicate is a record sent again after a crash (same id) or an input processed again
    // (new id); neither arrives further behind the newest arrival than these windows allow.
    // - Inputs processed again are the committed ones whose acknowledgement had not reached
    //   the broker. The gateway sends each acknowledgement before it reads more input, so
    //   they are at most the `queue + batch` it took in since: the newest it committed. (The
    //   broker's window, `max_inflight_messages 100`, bounds nothing here: Mosquitto 2.0.11
    //   sends more than that unacknowledged once queued messages move into flight. And
    //   `freeze_and_kill` lets it read the acknowledgements already sent, which a reset
    //   connection would lose.) Records are appended in commit order, so none is
    //   `queue + batch` readings behind a record appended before it.
    // - Records sent again are those in flight (at most `inflight`) or acknowledged since the
    //   deletes were last flushed (at most `inflight`): among the last `2 * inflight` sent,
    //   so fewer than `2 * inflight` records, one reading each, arrived after one before the
    //   crash.
    let window = queue + batch + 2 * inflight;
    let mut newest = 0;
    let mut furthest = 0;
    for &s in &arrivals {
        if s < newest {
            furthest = furthest.max(newest - s);
        }
        newest = newest.max(s);
    }
    eprintln!(
        "crash loop: {kills} kills, {events} readings in {:.1} s, {} duplicates, furthest {furthest} behind",
        started.elapsed().as_secs_f64(),
        arrivals.len() as u64 - events
    );
    assert!(
        furthest <= window,
        "a duplicate arrived {furthest} readings behind the newest (window {window})"
    );
    kiri.stop();
}

/// Acknowledgements keep pace with commits whatever window the local broker keeps. Mosquitto
/// with `max_inflight_messages 0` sends a whole backlog without waiting for any PUBACK, so the
/// connection never falls idle; a gateway frozen and killed (`freeze_and_kill`) a third of the
/// way through it must still have sent the acknowledgements of everything but what it took in
/// since it last sent them (at most `queue + batch` inputs), so at most that many are
/// redelivered and processed again.
#[test]
fn acknowledgements_keep_pace_with_a_broker_that_sends_without_limit() {
    let backlog = 3000u64;
    let dir = tempfile::tempdir().unwrap();
    let cloud = Mosquitto::start(&dir.path().join("cloud"));
    let local = Mosquitto::start_with(&dir.path().join("local"), "max_inflight_messages 0".into());
    let sub = CloudSubscriber::start(cloud.port, "unlimited-consumer");
    let (queue, batch) = (64u64, 32u64);
    let broker = format!(
        "mode = \"external\"\nurl = \"{}\"\nqueue = {queue}\nbatch = {batch}",
        local.url()
    );
    let mut kiri = Kiri::start(
        &dir.path().join("kiri"),
        &config(&cloud.url(), &broker),
        &[],
    );
    // The persistent session exists; the backlog waits for it at the broker.
    kiri.kill9();
    publish_all(
        local.port,
        "sensor-backlog",
        "sensors/s1/temperature",
        readings(0, backlog),
    );
    // The broker sends the backlog before it answers the subscription: don't wait for that.
    kiri.spawn();
    let third = backlog as usize / 3;
    assert!(
        poll_until(Duration::from_secs(60), || {
            kiri.assert_running();
            sub.distinct_seqs().len() >= third
        }),
        "a third of the backlog did not arrive"
    );
    kiri.freeze_and_kill();
    kiri.spawn();
    sub.wait_for(backlog as usize, Duration::from_secs(120), &mut kiri);
    assert_in_order(&sub.distinct_seqs(), backlog);
    // A reading processed again carries a new record id.
    let mut first_id = std::collections::HashMap::new();
    let mut again = 0;
    for (_, e) in sub.received.lock().unwrap().iter() {
        let seq = kiri_reading::Reading::decode(&e.payload)
            .unwrap()
            .seq
            .unwrap();
        if *first_id.entry(seq).or_insert_with(|| e.id.clone()) != e.id {
            again += 1;
        }
    }
    eprintln!("unlimited broker window: {again} inputs processed again after the kill");
    assert!(
        again <= queue + batch,
        "{again} inputs processed again: acknowledgements fell behind commits (at most {})",
        queue + batch
    );
    kiri.stop();
}

#[test]
fn link_faults_pause_drop_and_half_open_lose_nothing() {
    let (dir, cloud, sub, broker_port) = super::site("fault-consumer");
    let proxy = FaultProxy::start(cloud.port);
    let mut kiri = Kiri::start(
        &dir.path().join("kiri"),
        &with_cloud(
            &config(&proxy.url(), &embedded(broker_port)),
            "keep_alive_secs = 5",
        ),
        &[],
    );
    let connects = |kiri: &Kiri| kiri.status()["uplink"]["connects"].as_u64().unwrap_or(0);
    let publish = |from, to| {
        publish_all(
            broker_port,
            "s1",
            "sensors/s1/temperature",
            readings(from, to),
        )
    };
    publish(0, 200);
    sub.wait_for(200, Duration::from_secs(30), &mut kiri);

    // Dropped: both sides closed at once, with results on their way.
    let before = connects(&kiri);
    publish(200, 400);
    proxy.drop_connections();
    wait_until("a reconnect after a drop", Duration::from_secs(30), || {
        connects(&kiri) > before
    });
    sub.wait_for(400, Duration::from_secs(30), &mut kiri);

    // Stalled for 3 s while results keep coming, then flowing again.
    proxy.set(Fault::Pause);
    publish(400, 600);
    std::thread::sleep(Duration::from_secs(3));
    proxy.set(Fault::Pass);
    sub.wait_for(600, Duration::from_secs(30), &mut kiri);

    // Half-open: the broker side is gone but the gateway's socket stays up; only the
    // keep-alive (5 s) can tell. Connection attempts are swallowed too, until the link is back.
    let before = connects(&kiri);
    let cut = Instant::now();
    proxy.set(Fault::HalfOpen);
    publish(600, 800);
    wait_until(
        "the dead link to be noticed",
        Duration::from_secs(30),
        || kiri.status()["uplink"]["connected"] == false,
    );
    let noticed = cut.elapsed();
    let back = Instant::now();
    proxy.set(Fault::Pass);
    wait_until(
        "a reconnect after half-open",
        Duration::from_secs(60),
        || connects(&kiri) > before,
    );
    let reconnected = back.elapsed();
    eprintln!(
        "half-open link noticed after {:.1} s (keep-alive 5 s), reconnected {:.1} s after the link returned",
        noticed.as_secs_f64(),
        reconnected.as_secs_f64()
    );
    assert!(
        noticed <= Duration::from_secs(12),
        "a dead link is noticed within two keep-alive periods (and a little)"
    );
    // An attempt swallowed while the link was dead times out (5 s), then the backoff (at most
    // 500 ms here) brings the next one.
    assert!(
        reconnected <= Duration::from_secs(12),
        "reconnected within the connection timeout plus backoff"
    );
    sub.wait_for(800, Duration::from_secs(60), &mut kiri);
    assert_in_order(&sub.distinct_seqs(), 800);
    kiri.stop();
}

/// The default policy, `block`, with an outbox smaller than one group: the gateway flushes
/// what it holds so the uplink can drain it, and nothing is lost; with the cloud away, input
/// stops being acknowledged (the broker holds it) until the cloud is back.
#[test]
fn a_full_outbox_blocks_input_and_resumes_without_loss() {
    let (dir, mut cloud, sub, broker_port) = super::site("block-consumer");
    let conf = config(&cloud.url(), &embedded(broker_port)).replacen(
        "[cloud]",
        "[outbox]\nmax_records = 20\nfunction_max_records = 20\nwhen_full = \"block\"\n[cloud]",
        1,
    );
    let mut kiri = Kiri::start(&dir.path().join("kiri"), &conf, &[]);
    publish_all(
        broker_port,
        "s1",
        "sensors/s1/temperature",
        readings(0, 500),
    );
    sub.wait_for(500, Duration::from_secs(60), &mut kiri);

    cloud.stop();
    let publisher = std::thread::spawn(move || {
        publish_all(
            broker_port,
            "s1",
            "sensors/s1/temperature",
            readings(500, 1000),
        )
    });
    wait_until("the outbox to fill", Duration::from_secs(30), || {
        let status = kiri.status();
        status["uplink"]["connected"] == false && status["outbox"]["records"] == 20
    });
    let held = kiri.metric("kiri_invocations_total");
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        kiri.metric("kiri_invocations_total"),
        held,
        "processing holds while full"
    );
    assert_eq!(
        kiri.status()["outbox"]["records"],
        20,
        "and the bound holds"
    );
    cloud.restart();
    publisher.join().unwrap();
    sub.wait_for(1000, Duration::from_secs(60), &mut kiri);
    assert_in_order(&sub.distinct_seqs(), 1000);
    assert_eq!(kiri.metric("kiri_outbox_dropped_total"), 0.0);
    kiri.stop();
}

/// The data directory on a small tmpfs (needs root to mount) that a filler file fills: the
/// gateway stops acknowledging before the store meets the full disk, and resumes when space
/// returns. Without root the test fails, saying why: it must not pass without checking.
#[test]
fn a_full_disk_stops_acknowledgements_until_space_returns() {
    let (dir, mut cloud, sub, broker_port) = super::site("disk-consumer");
    let data = dir.path().join("kiri/data");
    let disk = small_disk(&data, "48m");
    let mut kiri = Kiri::start(
        &dir.path().join("kiri"),
        &config(&cloud.url(), &embedded(broker_port)).replacen(
            "[cloud]",
            "[outbox]\nmin_free_bytes = 16777216\n[cloud]",
            1,
        ),
        &[],
    );
    cloud.stop();
    // Leave about 4 MiB above the 16 MiB reserve.
    let free = disk.free();
    let filler = data.join("filler");
    std::fs::write(&filler, vec![0u8; (free - (20 << 20)) as usize]).unwrap();

    let n = 30_000;
    let publisher = std::thread::spawn(move || {
        publish_all(broker_port, "s1", "sensors/s1/temperature", readings(0, n))
    });
    wait_until(
        "the disk reserve to be reached",
        Duration::from_secs(120),
        || {
            kiri.assert_running();
            kiri.status()["outbox"]["disk_waits"].as_u64() >= Some(1)
        },
    );
    let stalled = kiri.metric("kiri_invocations_total");
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        kiri.metric("kiri_invocations_total") <= stalled + 2.0 * 128.0,
        "processing holds (at most the groups already running finish)"
    );
    let held = kiri.status()["outbox"]["records"].as_u64().unwrap();
    assert!(held < n, "not everything fitted: the reserve stopped it");
    // Not ready while inputs are held back, saying why; the status says it too.
    assert_eq!(kiri.get_status("/readyz"), 503);
    let readyz = kiri.get_json("/readyz");
    assert!(
        readyz["reasons"][0]
            .as_str()
            .is_some_and(|r| r.contains("min_free_bytes")),
        "{readyz}"
    );
    assert_eq!(kiri.status()["outbox"]["held_back"]["disk"], true);
    std::fs::remove_file(&filler).unwrap();
    cloud.restart();
    publisher.join().unwrap();
    sub.wait_for(n as usize, Duration::from_secs(180), &mut kiri);
    assert_in_order(&sub.distinct_seqs(), n);
    assert_eq!(kiri.get_status("/readyz"), 200, "ready again");
    assert_eq!(
        kiri.metric("kiri_outbox_dropped_total"),
        0.0,
        "nothing dropped or corrupt"
    );
    eprintln!("disk full: {held} results held when the reserve was reached, all {n} delivered");
    kiri.stop();
}

#[test]
fn alerts_drain_first_and_batches_carry_many_results() {
    let (dir, mut cloud, sub, broker_port) = super::site("priority-consumer");
    let functions = format!(
        "[[functions]]\nname = \"convert\"\nmodule = \"{}\"\ntriggers = [\"sensors/+/temperature\"]\n\
         [[functions]]\nname = \"threshold\"\nmodule = \"{}\"\ntriggers = [\"sensors/+/temperature\"]\n\
         config = {{ limit = 150.0 }}\n",
        function_wasm("convert").display(),
        function_wasm("threshold").display()
    );
    let conf = config_with(&cloud.url(), &embedded(broker_port), &functions).replacen(
        "[cloud]\n",
        "[outbox]\nhigh_priority = [\"alerts/#\"]\n[cloud]\nbatch_records = 25\n",
        1,
    );
    let mut kiri = Kiri::start(&dir.path().join("kiri"), &conf, &[]);
    cloud.stop();
    publish_all(
        broker_port,
        "s1",
        "sensors/s1/temperature",
        readings(0, 200),
    );
    wait_until("all results held", Duration::from_secs(30), || {
        kiri.status()["outbox"]["records"].as_u64() == Some(249)
    });
    let status = kiri.status();
    assert_eq!(status["outbox"]["high_priority_records"], 49);
    assert_eq!(status["uplink"]["connected"], false);
    assert!(status["outbox"]["oldest_age_ms"].as_u64().is_some());
    let shown = kiri.cli("not-needed", &["status"]);
    assert!(
        shown.contains("DOWN") && shown.contains("249 results (49 high priority)"),
        "kiri status shows it: {shown}"
    );
    cloud.restart();
    wait_until("everything delivered", Duration::from_secs(60), || {
        sub.received.lock().unwrap().len() >= 249
    });
    let received = sub.received.lock().unwrap().clone();
    let first: Vec<&str> = received[..49]
        .iter()
        .map(|(_, e)| e.topic.as_str())
        .collect();
    assert!(
        first.iter().all(|t| t.starts_with("alerts/")),
        "the 49 alerts arrive before any bulk result: {first:?}"
    );
    assert!(received
        .iter()
        .all(|(topic, _)| topic == "kiri/gw-test/$batch"));
    assert!(
        kiri.metric("kiri_uplink_messages_total") <= 249.0 / 25.0 + 4.0,
        "results travel in batches of up to 25"
    );
    let bulk: Vec<u64> = received[49..]
        .iter()
        .map(|(_, e)| {
            kiri_reading::Reading::decode(&e.payload)
                .unwrap()
                .seq
                .unwrap()
        })
        .collect();
    assert_eq!(bulk, (0..200).collect::<Vec<_>>(), "bulk in order");
    kiri.stop();
}

#[test]
fn outbox_policies_drop_and_expire_visibly() {
    let (dir, mut cloud, sub, broker_port) = super::site("policy-consumer");
    let base = config(&cloud.url(), &embedded(broker_port));
    let policy = |lines: &str| base.replacen("[cloud]", &format!("[outbox]\n{lines}\n[cloud]"), 1);
    let mut kiri = Kiri::start(
        &dir.path().join("kiri"),
        &policy("max_records = 50\nfunction_max_records = 50\nwhen_full = \"drop_oldest\""),
        &[],
    );
    cloud.stop();
    publish_all(
        broker_port,
        "s1",
        "sensors/s1/temperature",
        readings(0, 200),
    );
    wait_until("the oldest dropped", Duration::from_secs(30), || {
        kiri.status()["outbox"]["dropped_full"].as_u64() == Some(150)
    });
    assert_eq!(kiri.status()["outbox"]["records"], 50);
    assert_eq!(
        kiri.metric("kiri_outbox_dropped_total{reason=\"full\"}"),
        150.0
    );
    cloud.restart();
    wait_until("the newest 50 delivered", Duration::from_secs(30), || {
        sub.distinct_seqs().len() >= 50
    });
    assert_eq!(sub.distinct_seqs(), (150..200).collect::<Vec<_>>());

    // A TTL of 2 s with the cloud away: the held results expire, counted, never sent.
    kiri.stop();
    kiri.set_config(&policy("ttl = \"2s\""));
    cloud.stop();
    kiri.restart();
    publish_all(
        broker_port,
        "s1",
        "sensors/s1/temperature",
        readings(200, 230),
    );
    wait_until("held results expired", Duration::from_secs(30), || {
        // 30, and any delivered just before the restart whose PUBACK had not come back.
        let outbox = &kiri.status()["outbox"];
        outbox["expired"].as_u64() >= Some(30) && outbox["records"] == 0
    });
    assert_eq!(kiri.status()["outbox"]["records"], 0);
    cloud.restart();
    publish_all(
        broker_port,
        "s1",
        "sensors/s1/temperature",
        readings(230, 240),
    );
    wait_until("fresh results delivered", Duration::from_secs(30), || {
        sub.distinct_seqs().len() >= 60
    });
    let mut want: Vec<u64> = (150..200).collect();
    want.extend(230..240);
    assert_eq!(sub.distinct_seqs(), want, "expired results were never sent");
    kiri.stop();
}

/// Without a cloud (`cloud.url = ""`, as the Debian package ships): the gateway runs, says
/// once what to set, holds the results in the outbox, and is ready; the status says why the
/// uplink is down.
#[test]
fn without_a_cloud_url_results_are_held_and_the_log_says_what_to_set() {
    let dir = tempfile::tempdir().unwrap();
    let broker_port = free_port();
    let mut kiri = Kiri::start(
        &dir.path().join("kiri"),
        &config("", &embedded(broker_port)),
        &[],
    );
    publish_all(broker_port, "s1", "sensors/s1/temperature", readings(0, 20));
    wait_until("the results held", Duration::from_secs(20), || {
        kiri.status()["outbox"]["records"].as_u64() == Some(20)
    });
    let log = kiri.log_text();
    assert_eq!(
        log.matches("cloud.url is not set").count(),
        1,
        "one line says what to set:\n{log}"
    );
    let status = kiri.status();
    assert_eq!(status["uplink"]["connected"], false);
    assert!(status["uplink"]["last_error"]
        .as_str()
        .unwrap()
        .contains("cloud.url is not set"));
    assert_eq!(kiri.get_status("/readyz"), 200);
    kiri.stop();
}

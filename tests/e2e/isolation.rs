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
        // Its key-value quota raised past the disk, so that the disk is what stops it.
        "[[functions]]\nname = \"hoarder\"\nmodule = \"{}\"\ntriggers = [\"sensors/+/temperature\"]\nlimits = {{ kv_max_bytes = 1073741824 }}\n",
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
    // 100 events would write 100 MiB: twice the disk. The sensor is not acknowledged what
    // the reserve holds back, so its publisher never finishes (it fails when the gateway
    // stops): not joined.
    let _publisher = std::thread::spawn(move || {
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
    // sled may give back some space as it cleans its log, letting an append or two through
    // before the reserve holds for good: wait until processing has stood still for 2 s.
    let mut stalled = kiri.metric("kiri_invocations_total");
    wait_until("processing to hold", Duration::from_secs(30), || {
        std::thread::sleep(Duration::from_secs(2));
        let now = kiri.metric("kiri_invocations_total");
        let held = now == stalled;
        stalled = now;
        held
    });
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

/// The status line of a raw HTTP/1.1 GET with the given `Host` header.
fn get_with_host(port: u16, path: &str, host: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    answer.lines().next().unwrap_or_default().to_string()
}

/// A page on another site that rebinds its own name to the gateway's address cannot read the
/// open routes: the API refuses a `Host` it does not know; addresses, `localhost` and the names
/// of `dashboard.hosts` pass.
#[test]
fn a_foreign_host_header_is_refused() {
    let (dir, cloud, _sub, broker_port) = super::site("host-consumer");
    let conf = super::config(&cloud.url(), &embedded(broker_port)).replacen(
        "[cloud]",
        "[dashboard]\nhosts = [\"gateway.local\"]\n[cloud]",
        1,
    );
    let mut kiri = Kiri::start(&dir.path().join("kiri"), &conf, &[]);
    let port = kiri.metrics_port;
    for path in ["/api/v1/status", "/metrics", "/"] {
        let refused = get_with_host(port, path, &format!("rebound.example:{port}"));
        assert!(refused.contains(" 421 "), "{path}: {refused}");
    }
    for host in [
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        format!("gateway.local:{port}"),
    ] {
        let ok = get_with_host(port, "/api/v1/status", &host);
        assert!(ok.contains(" 200 "), "{host}: {ok}");
    }
    assert_eq!(kiri.metric("kiri_http_host_refused_total"), 3.0);
    kiri.stop();
}

/// Another local user cannot read the data directory, which holds the generated dashboard
/// token, the functions' state and the results: it is 0700 whatever the umask.
#[test]
fn the_data_directory_is_private_to_the_gateway_user() {
    assert!(
        is_root(),
        "this test reads the data directory as another user (nobody), which needs root"
    );
    let (dir, cloud, _sub, broker_port) = super::site("private-consumer");
    let kiri_dir = dir.path().join("kiri");
    let mut kiri = Kiri::start(
        &kiri_dir,
        &super::config(&cloud.url(), &embedded(broker_port)),
        &[],
    );
    let data = kiri_dir.join("data");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&data).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700, "data directory mode {mode:o}");
    // The path down to it is open to others (the test's temp dirs), so only its own mode
    // stands between another user and the store.
    for p in [dir.path(), kiri_dir.as_path()] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let as_nobody = std::process::Command::new("runuser")
        .args(["-u", "nobody", "--", "ls"])
        .arg(data.join("store"))
        .output()
        .unwrap();
    assert!(
        !as_nobody.status.success(),
        "another user listed the store: {}",
        String::from_utf8_lossy(&as_nobody.stdout)
    );
    kiri.stop();
}

/// A sensor connected before a flood: publishes what it is sent, counts its acknowledgements
/// and its connections (a second CONNACK means it was cut off and came back).
struct ConnectedSensor {
    client: rumqttc::Client,
    events: std::sync::mpsc::Receiver<rumqttc::Packet>,
}

impl ConnectedSensor {
    fn connect(port: u16, id: &str) -> ConnectedSensor {
        use rumqttc::{Client, Event, MqttOptions};
        let mut opts = MqttOptions::new(id, "127.0.0.1", port);
        opts.set_inflight(50)
            .set_keep_alive(Duration::from_secs(300));
        let (client, mut connection) = Client::new(opts, 400);
        let (tx, events) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for event in connection.iter() {
                match event {
                    Ok(Event::Incoming(p)) => {
                        if tx.send(p).is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(_) => std::thread::sleep(Duration::from_millis(100)),
                }
            }
        });
        let sensor = ConnectedSensor { client, events };
        let first = sensor.events.recv_timeout(Duration::from_secs(20));
        assert!(
            matches!(first, Ok(rumqttc::Packet::ConnAck(_))),
            "the sensor connects: {first:?}"
        );
        sensor
    }

    /// Publishes `payloads` at QoS 1; the acknowledgements and reconnections seen until all
    /// are acknowledged (or `timeout`).
    fn publish(&self, topic: &str, payloads: Vec<Vec<u8>>, timeout: Duration) -> (usize, usize) {
        self.publish_paced(topic, payloads, Duration::ZERO, timeout)
    }

    /// [`ConnectedSensor::publish`], one message every `every`.
    fn publish_paced(
        &self,
        topic: &str,
        payloads: Vec<Vec<u8>>,
        every: Duration,
        timeout: Duration,
    ) -> (usize, usize) {
        let n = payloads.len();
        let start = std::time::Instant::now();
        for (i, p) in payloads.into_iter().enumerate() {
            if let Some(wait) =
                (start + every * i as u32).checked_duration_since(std::time::Instant::now())
            {
                std::thread::sleep(wait);
            }
            self.client
                .publish(topic, rumqttc::QoS::AtLeastOnce, false, p)
                .unwrap();
        }
        let (mut acked, mut reconnected) = (0, 0);
        let deadline = std::time::Instant::now() + timeout;
        while acked < n {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.events.recv_timeout(left) {
                Ok(rumqttc::Packet::PubAck(_)) => acked += 1,
                Ok(rumqttc::Packet::ConnAck(_)) => reconnected += 1,
                Ok(_) => {}
                Err(_) => break,
            }
        }
        (acked, reconnected)
    }
}

/// The attack as measured: 1,100 idle connections to the broker and 1,100 to the HTTP API
/// under the 1,024 open-file limit systemd gives a service by default, then an input over
/// 128 KiB (which the store keeps in a file of its own). The limits derived from the file
/// limit keep descriptors for the store; idle connections make room for new clients; the
/// connected sensor is never cut off; every reading is processed; health answers; the idle
/// connections are closed after the 10 s login and header deadlines.
#[test]
fn idle_connections_under_a_1024_file_limit_do_not_stop_processing() {
    let (dir, cloud, sub, broker_port) = super::site("fd-flood-consumer");
    let conf = super::config(&cloud.url(), &embedded(broker_port));
    let mut kiri = Kiri::start_with_open_files(&dir.path().join("kiri"), &conf, &[], Some(1024));
    assert_eq!(kiri.metric("kiri_open_files_limit"), 1024.0);
    let sensor = ConnectedSensor::connect(broker_port, "s1");

    // 17 addresses × 65 connections: over the per-address limit (64) and the total the file
    // limit leaves (234 broker clients, 64 HTTP connections).
    let sources: Vec<std::net::IpAddr> = (10..27).map(|i| [127, 0, 0, i].into()).collect();
    let mut broker_flood = idle_connections(broker_port, &sources, 65);
    let mut http_flood = idle_connections(kiri.metrics_port, &sources, 65);
    assert!(broker_flood.len() > 1_100 && http_flood.len() > 1_100);
    kiri.assert_running();

    // The connected sensor's readings, and a new client's input over 128 KiB.
    let readings = (0..300).map(|i| reading("s1", i)).collect();
    let (acked, reconnected) =
        sensor.publish("sensors/s1/temperature", readings, Duration::from_secs(60));
    assert_eq!((acked, reconnected), (300, 0), "acked, reconnections");
    publish_all(
        broker_port,
        "s2",
        "sensors/s2/temperature",
        vec![vec![0xff; 200 << 10]],
    );
    sub.wait_for(300, Duration::from_secs(60), &mut kiri);
    wait_until(
        "the large input to be kept as a dead letter",
        Duration::from_secs(20),
        || kiri.metric("kiri_dead_letters_total") >= 1.0,
    );
    assert_eq!(kiri.get_status("/healthz"), 200);
    let evicted = kiri.metric("kiri_broker_refused_total{reason=\"evicted\"}");
    let busy = kiri.metric("kiri_broker_refused_total{reason=\"busy\"}");
    assert!(
        evicted > 800.0,
        "idle broker connections made room: {evicted} evicted, {busy} refused as busy"
    );

    // Idle connections do not stay: the login and header deadlines close them.
    let (mut last_mqtt, mut last_http) = (broker_flood.pop().unwrap(), http_flood.pop().unwrap());
    assert!(
        closed_within(&mut last_mqtt, Duration::from_secs(15)),
        "a connection that never logs in is closed"
    );
    assert!(
        closed_within(&mut last_http, Duration::from_secs(15)),
        "an HTTP connection that sends nothing is closed"
    );
    kiri.assert_running();
    let log = kiri.log_text();
    assert!(
        log.contains("broker.max_connections = 1024 lowered to 234"),
        "the lowered limit is logged; log:\n{log}"
    );
    assert!(
        !log.contains("Too many open files"),
        "descriptors never ran out; log:\n{log}"
    );
    drop((broker_flood, http_flood));
    kiri.stop();
}

/// Two hostile functions that use their whole wall-clock budget (500 ms): one calls
/// `kv_list` in a loop on every event; the other's start function does, once armed (its
/// first event arms it, its second traps, so every later cold start is slow).
fn time_hogs(dir: &std::path::Path) -> String {
    let abi = r#"(import "kiri" "kv_get" (func $get (param i32 i32 i32 i32) (result i32)))
      (import "kiri" "kv_put" (func $put (param i32 i32 i32 i32) (result i32)))
      (import "kiri" "kv_list" (func $list (param i32 i32 i32 i32) (result i32)))
      (memory (export "memory") 1)
      (data (i32.const 0) "armed")
      (func (export "kiri_abi_version") (result i32) i32.const 1)
      (func (export "kiri_alloc") (param i32) (result i32) i32.const 1024)"#;
    let spin = "(loop (drop (call $list (i32.const 0) (i32.const 0) (i32.const 200) (i32.const 64))) (br 0))";
    let armed = "(i32.ge_s (call $get (i32.const 0) (i32.const 5) (i32.const 200) (i32.const 8)) (i32.const 0))";
    let lister = format!(
        "(module {abi} (func (export \"kiri_on_event\") (param i32 i32 i32 i32 i64) (result i32) {spin} i32.const 0))"
    );
    let slow_start = format!(
        "(module {abi}
           (func $start (if {armed} (then {spin})))
           (start $start)
           (func (export \"kiri_on_event\") (param i32 i32 i32 i32 i64) (result i32)
             (if {armed} (then unreachable))
             (drop (call $put (i32.const 0) (i32.const 5) (i32.const 0) (i32.const 1)))
             i32.const 0))"
    );
    let mut functions = String::new();
    for (name, wat) in [("lister", lister), ("slowstart", slow_start)] {
        let path = dir.join(format!("{name}.wasm"));
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(&path, wat::parse_str(wat).unwrap()).unwrap();
        functions += &format!(
            "[[functions]]\nname = \"{name}\"\nmodule = \"{}\"\ntriggers = [\"hostile/{name}\"]\n\
             retries = 0\nlimits = {{ timeout_ms = 500 }}\n",
            path.display()
        );
    }
    functions
}

/// Functions do not wait for each other: `convert`, offered 400 readings at 200 a second,
/// delivers them at least at 80% of the rate it had alone (measured side by side in this
/// run) while two neighbours run every event to their 500 ms timeout, in a `kv_list` loop or
/// in a slow start function; and no invocation of theirs runs past its timeout by more than
/// 300 ms.
#[test]
fn a_neighbour_keeps_its_rate_beside_functions_that_run_to_their_timeout() {
    let (dir, cloud, sub, broker_port) = super::site("neighbour-consumer");
    let convert = format!(
        "[[functions]]\nname = \"convert\"\nmodule = \"{}\"\ntriggers = [\"sensors/+/temperature\"]\n",
        function_wasm("convert").display()
    );
    let functions = convert + &time_hogs(dir.path());
    let conf = config_with(&cloud.url(), &embedded(broker_port), &functions);
    let mut kiri = Kiri::start(&dir.path().join("kiri"), &conf, &[]);
    let sensor = ConnectedSensor::connect(broker_port, "s1");
    let pace = Duration::from_millis(5);
    let timed = |kiri: &mut Kiri, from: u64| {
        let started = std::time::Instant::now();
        let readings = (from..from + 400).map(|i| reading("s1", i)).collect();
        let (acked, _) = sensor.publish_paced(
            "sensors/s1/temperature",
            readings,
            pace,
            Duration::from_secs(120),
        );
        assert_eq!(acked, 400);
        sub.wait_for(from as usize + 400, Duration::from_secs(120), kiri);
        400.0 / started.elapsed().as_secs_f64()
    };
    let alone = timed(&mut kiri, 0);

    // The hogs get an event each every 100 ms: more than they can take.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let feeder = {
        let stop = stop.clone();
        let mut opts = rumqttc::MqttOptions::new("hog-feeder", "127.0.0.1", broker_port);
        opts.set_keep_alive(Duration::from_secs(30));
        let (client, mut connection) = rumqttc::Client::new(opts, 100);
        std::thread::spawn(move || for _ in connection.iter() {});
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for topic in ["hostile/lister", "hostile/slowstart"] {
                    let _ = client.try_publish(topic, rumqttc::QoS::AtLeastOnce, false, vec![0xf6]);
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    wait_until(
        "the hogs to run to their timeout",
        Duration::from_secs(30),
        || {
            kiri.metric("kiri_invocations_total{function=\"lister\",outcome=\"timeout\"}") >= 2.0
                && kiri.metric("kiri_invocations_total{function=\"slowstart\",outcome=\"timeout\"}")
                    >= 1.0
        },
    );
    let beside = timed(&mut kiri, 400);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    feeder.join().unwrap();
    eprintln!("convert: {alone:.0} readings/s alone, {beside:.0}/s beside the hogs");
    assert!(
        beside >= 0.8 * alone,
        "convert delivered {beside:.0}/s beside the hogs, {alone:.0}/s alone"
    );

    let functions: serde_json::Value = ureq::get(&format!(
        "http://127.0.0.1:{}/api/v1/functions",
        kiri.metrics_port
    ))
    .call()
    .unwrap()
    .body_mut()
    .read_json()
    .unwrap();
    for f in functions.as_array().unwrap() {
        let (name, longest) = (&f["name"], f["stats"]["wall_us_max"].as_u64().unwrap());
        assert!(
            longest <= 800_000,
            "{name}: an invocation ran {longest} µs against a 500 ms timeout"
        );
    }
    kiri.stop();
}

/// A client that goes silent after logging in (a sensor that lost power) is let go when the
/// broker's keep-alive closes it: its place in the connection limits does not stay taken.
#[test]
fn a_silent_client_is_let_go_at_its_keep_alive() {
    use std::io::{Read, Write};
    let (dir, cloud, _sub, broker_port) = super::site("silent-consumer");
    let broker = embedded(broker_port) + "\nmax_connections_per_address = 1";
    let conf = super::config(&cloud.url(), &broker);
    let mut kiri = Kiri::start(&dir.path().join("kiri"), &conf, &[]);
    let mut connect = rumqttc::mqttbytes::v4::Connect::new("silent");
    connect.keep_alive = 1;
    let mut packet = bytes::BytesMut::new();
    connect.write(&mut packet).unwrap();
    let mut client = std::net::TcpStream::connect(("127.0.0.1", broker_port)).unwrap();
    client.write_all(&packet).unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut connack = [0u8; 4];
    client.read_exact(&mut connack).unwrap();
    assert_eq!(connack, [0x20, 2, 0, 0], "accepted");
    // Silent from now on: the broker closes it after one and a half keep-alives.
    assert!(
        closed_within(&mut client, Duration::from_secs(6)),
        "the relay ends when the broker closes the client"
    );
    // Its place is free again (the silent client still holds its socket open).
    publish_all(
        broker_port,
        "next",
        "sensors/s9/temperature",
        vec![reading("s9", 0)],
    );
    drop(client);
    kiri.assert_running();
    kiri.stop();
}

/// A function that floods results within its output limits: four results of 250,000 bytes
/// on every event (its whole `max_output_bytes`), to `flood/x`, on `hostile/flood`.
fn flooder(dir: &std::path::Path) -> String {
    let wat = r#"(module
      (import "kiri" "emit" (func $emit (param i32 i32 i32 i32) (result i32)))
      (memory (export "memory") 5)
      (data (i32.const 0) "flood/x")
      (func (export "kiri_abi_version") (result i32) i32.const 1)
      (func (export "kiri_alloc") (param i32) (result i32) i32.const 1024)
      (func (export "kiri_on_event") (param i32 i32 i32 i32 i64) (result i32)
        (drop (call $emit (i32.const 0) (i32.const 7) (i32.const 16) (i32.const 250000)))
        (drop (call $emit (i32.const 0) (i32.const 7) (i32.const 16) (i32.const 250000)))
        (drop (call $emit (i32.const 0) (i32.const 7) (i32.const 16) (i32.const 250000)))
        (drop (call $emit (i32.const 0) (i32.const 7) (i32.const 16) (i32.const 250000)))
        i32.const 0))"#;
    let path = dir.join("flood.wasm");
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(&path, wat::parse_str(wat).unwrap()).unwrap();
    format!(
        "[[functions]]\nname = \"flood\"\nmodule = \"{}\"\ntriggers = [\"hostile/flood\"]\n",
        path.display()
    )
}

/// A function's flood of large results takes its share of the outbox and of the uplink, not
/// all of them: with the uplink capped at 4 MiB/s and `flood` emitting 10 MB/s, `convert`
/// delivers 400 readings at least at 80% of the rate it had alone (measured side by side in
/// this run), while `flood` holds no more than its share of the outbox (16 MiB here) and
/// only its own lane waits for room.
#[test]
fn a_flood_of_large_results_does_not_starve_a_neighbours_delivery() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Arc;
    let dir = tempfile::tempdir().unwrap();
    let cloud = Mosquitto::start(&dir.path().join("cloud"));
    let broker_port = free_port();
    let (converted, flooded) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    {
        let (converted, flooded) = (converted.clone(), flooded.clone());
        subscribe_results(cloud.port, "flood-consumer", move |_, e| {
            match e.function.as_str() {
                "convert" => converted.fetch_add(1, Ordering::Relaxed),
                _ => flooded.fetch_add(1, Ordering::Relaxed),
            };
        });
    }
    let functions = format!(
        "[[functions]]\nname = \"convert\"\nmodule = \"{}\"\ntriggers = [\"sensors/+/temperature\"]\n{}",
        function_wasm("convert").display(),
        flooder(dir.path())
    );
    let conf = config_with(&cloud.url(), &embedded(broker_port), &functions)
        .replace("[cloud]\n", "[cloud]\nmax_bytes_per_sec = 4194304\n")
        + "[outbox]\nfunction_max_bytes = 16777216\n";
    let mut kiri = Kiri::start(&dir.path().join("kiri"), &conf, &[]);
    let sensor = ConnectedSensor::connect(broker_port, "s1");
    let timed = |kiri: &mut Kiri, from: u64| {
        let started = std::time::Instant::now();
        let before = converted.load(Ordering::Relaxed);
        let readings = (from..from + 400).map(|i| reading("s1", i)).collect();
        let (acked, _) = sensor.publish_paced(
            "sensors/s1/temperature",
            readings,
            Duration::from_millis(5),
            Duration::from_secs(120),
        );
        assert_eq!(acked, 400);
        wait_until(
            "convert's results at the cloud",
            Duration::from_secs(120),
            || {
                kiri.assert_running();
                converted.load(Ordering::Relaxed) >= before + 400
            },
        );
        400.0 / started.elapsed().as_secs_f64()
    };
    let alone = timed(&mut kiri, 0);

    // Ten events a second: 10 MB/s of results against a 4 MiB/s uplink.
    let stop = Arc::new(AtomicBool::new(false));
    let feeder = {
        let stop = stop.clone();
        let mut opts = rumqttc::MqttOptions::new("flood-feeder", "127.0.0.1", broker_port);
        opts.set_keep_alive(Duration::from_secs(30));
        let (client, mut connection) = rumqttc::Client::new(opts, 100);
        std::thread::spawn(move || for _ in connection.iter() {});
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let _ = client.try_publish(
                    "hostile/flood",
                    rumqttc::QoS::AtLeastOnce,
                    false,
                    vec![0xf6],
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    wait_until(
        "the flood to fill its share of the outbox",
        Duration::from_secs(60),
        || kiri.metric("kiri_outbox_full_waits_total") >= 1.0,
    );
    let beside = timed(&mut kiri, 400);
    let held = kiri.status()["outbox"]["functions"].clone();
    stop.store(true, Ordering::Relaxed);
    feeder.join().unwrap();
    eprintln!(
        "convert: {alone:.0} readings/s alone, {beside:.0}/s beside the flood; flood: {} results delivered; held: {held}",
        flooded.load(Ordering::Relaxed)
    );
    assert!(
        beside >= 0.8 * alone,
        "convert delivered {beside:.0}/s beside the flood, {alone:.0}/s alone"
    );
    let flood_bytes = held["flood"]["bytes"].as_u64().unwrap();
    assert!(
        flood_bytes <= (16 << 20) + (1 << 20),
        "the flood holds {flood_bytes} bytes of the outbox, over its 16 MiB share"
    );
    assert!(
        flooded.load(Ordering::Relaxed) > 0,
        "the flood's results go too"
    );
    kiri.stop();
}

//! What operators see: function log lines, live events and metrics over the HTTP API.

use std::io::{BufRead, BufReader};
use std::time::Duration;

use super::{config, embedded};
use crate::util::*;

#[test]
fn function_logs_are_kept_and_events_stream_live() {
    let (dir, cloud, _sub, broker_port) = super::site("observe-consumer");
    // The client commands' variables, and one that names no key, in the gateway's
    // environment: the gateway starts, warns about the last, and passes over the others.
    let stray = [
        ("KIRI_URL", "http://127.0.0.1:9".to_string()),
        ("KIRI_DEPLOY_BROKER", "mqtt://127.0.0.1:9".to_string()),
        ("KIRI_CLOUD_URLL", "mqtt://127.0.0.1:9".to_string()),
    ];
    let mut kiri = Kiri::start(
        &dir.path().join("kiri"),
        &config(&cloud.url(), &embedded(broker_port)),
        &stray,
    );
    let log = kiri.log_text();
    assert!(
        log.contains("KIRI_CLOUD_URLL is not taken")
            && log.contains("did you mean KIRI_CLOUD_URL?"),
        "{log}"
    );
    assert!(
        !log.contains("KIRI_URL") && !log.contains("KIRI_DEPLOY_BROKER"),
        "{log}"
    );
    let base = format!("http://127.0.0.1:{}", kiri.metrics_port);
    // A live reader, from before anything happens.
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let events_url = format!("{base}/api/v1/events");
    std::thread::spawn(move || {
        let mut resp = ureq::get(&events_url).call().expect("GET /api/v1/events");
        let reader = BufReader::new(resp.body_mut().as_reader());
        for line in reader.lines() {
            let Ok(line) = line else { return };
            if let Some(data) = line.strip_prefix("data:") {
                if tx.send(data.trim().to_string()).is_err() {
                    return;
                }
            }
        }
    });
    std::thread::sleep(Duration::from_millis(300));
    // Valid CBOR that is not a reading: convert logs a warning about it.
    publish_all(
        broker_port,
        "s1",
        "sensors/s1/temperature",
        vec![vec![0x05]],
    );
    let (mut saw_log, mut saw_tick) = (false, false);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !(saw_log && saw_tick) && std::time::Instant::now() < deadline {
        let Ok(data) = rx.recv_timeout(Duration::from_secs(5)) else {
            continue;
        };
        let event: serde_json::Value = serde_json::from_str(&data).expect("events are JSON");
        match event["type"].as_str() {
            Some("log") => {
                assert_eq!(event["function"], "convert");
                assert_eq!(event["level"], "warn");
                assert!(event["text"].as_str().unwrap().contains("not a reading"));
                saw_log = true;
            }
            Some("tick") => {
                assert!(event["events"].as_u64().is_some() && event["backlog"].as_u64().is_some());
                saw_tick = true;
            }
            _ => {}
        }
    }
    assert!(saw_log && saw_tick, "a log line and a tick arrived live");
    let lines: serde_json::Value = ureq::get(&format!("{base}/api/v1/functions/convert/logs"))
        .call()
        .unwrap()
        .body_mut()
        .read_json()
        .unwrap();
    assert_eq!(lines.as_array().unwrap().len(), 1, "{lines}");
    assert!(lines[0]["text"].as_str().unwrap().contains("not a reading"));
    assert_eq!(kiri.get_status("/api/v1/functions/nope/logs"), 404);
    // Invocation time is a Prometheus histogram, which adds up across gateways.
    let calls = kiri.metric("kiri_invocation_seconds_count{function=\"convert\"}");
    assert!(calls >= 1.0, "convert's invocations are counted: {calls}");
    assert_eq!(
        kiri.metric("kiri_invocation_seconds_bucket{function=\"convert\",le=\"+Inf\"}"),
        calls
    );
    // Cumulative buckets: an invocation under 10 s counts in the last bound's and `+Inf`'s.
    let buckets = kiri.metric("kiri_invocation_seconds_bucket{function=\"convert\"");
    assert!(
        buckets >= 2.0 * calls,
        "bucket counts {buckets} for {calls} calls"
    );
    kiri.stop();
}

/// `/metrics` passes `promtool check metrics` (every metric with its help and type), and the
/// counters known in advance are there at zero before the first event, with the process
/// metrics and the build's version.
#[test]
fn metrics_pass_promtool_and_counters_start_at_zero() {
    let (dir, cloud, sub, broker_port) = super::site("metrics-consumer");
    let mut kiri = Kiri::start(
        &dir.path().join("kiri"),
        &config(&cloud.url(), &embedded(broker_port)),
        &[],
    );
    let text = kiri.metrics_text();
    for line in [
        "kiri_ingest_messages_total 0",
        "kiri_outbox_dropped_total{reason=\"full\"} 0",
        "kiri_invocations_total{function=\"convert\",outcome=\"ok\"} 0",
        "kiri_retries_exhausted_total{function=\"convert\"} 0",
        "# TYPE kiri_invocation_seconds histogram",
        "# TYPE process_cpu_seconds_total counter",
        "process_open_fds ",
        "kiri_build_info{version=\"",
    ] {
        assert!(text.contains(line), "{line} in /metrics:\n{text}");
    }
    let mut promtool = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool (Debian's prometheus package; scripts/setup.sh test installs it)");
    use std::io::Write;
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = promtool.wait_with_output().unwrap();
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics: {}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // A reading's result is delivered: its time to the cloud's PUBACK is in the histogram.
    publish_all(
        broker_port,
        "s1",
        "sensors/s1/temperature",
        vec![reading("s1", 1)],
    );
    sub.wait_for(1, Duration::from_secs(20), &mut kiri);
    wait_until("the delivery to be timed", Duration::from_secs(10), || {
        kiri.metric("kiri_result_delivery_seconds_count") >= 1.0
    });
    assert!(kiri.metric("kiri_result_delivery_seconds_bucket{le=\"86400\"}") >= 1.0);
    kiri.stop();
}

/// `--log-format json` writes one JSON object per line (jq reads the whole log); under
/// systemd (stderr is the stream `JOURNAL_STREAM` names) text lines carry their level as a
/// syslog priority and no time of their own.
#[test]
fn logs_are_json_lines_or_journald_lines_with_priorities() {
    let (dir, cloud, _sub, broker_port) = super::site("logs-consumer");
    let conf = config(&cloud.url(), &embedded(broker_port));
    let json_dir = dir.path().join("json");
    let mut kiri = Kiri::start_with_args(&json_dir, &conf, &[], &["--log-format", "json"]);
    kiri.stop();
    let log = std::fs::read_to_string(json_dir.join("kiri.log")).unwrap();
    let jq = std::process::Command::new("jq")
        .args([
            "-e",
            "-s",
            "map(select(.fields.message == \"kiri running\")) | length == 1",
        ])
        .stdin(std::fs::File::open(json_dir.join("kiri.log")).unwrap())
        .output()
        .expect("jq (scripts/setup.sh test installs it)");
    assert!(
        jq.status.success(),
        "jq reads every line:\n{log}\n{}",
        String::from_utf8_lossy(&jq.stderr)
    );
    for line in log.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(
            v["timestamp"].is_string() && v["level"].is_string(),
            "{line}"
        );
    }

    // stderr is a file here; JOURNAL_STREAM names it as journald's stream would be named.
    use std::os::unix::fs::MetadataExt;
    let journal_dir = dir.path().join("journal");
    std::fs::create_dir_all(&journal_dir).unwrap();
    let stream = journal_dir.join("kiri.log");
    std::fs::write(&stream, "").unwrap();
    let meta = std::fs::metadata(&stream).unwrap();
    let named = format!("{}:{}", meta.dev(), meta.ino());
    let mut kiri = Kiri::start(
        &journal_dir,
        &conf,
        &[("JOURNAL_STREAM", named), ("KIRI_CLOUD_URLL", "x".into())],
    );
    kiri.stop();
    let log = std::fs::read_to_string(&stream).unwrap();
    let running = log
        .lines()
        .find(|l| l.contains("kiri running"))
        .expect(&log);
    assert!(running.starts_with("<6> INFO"), "{running}");
    let warning = log
        .lines()
        .find(|l| l.contains("KIRI_CLOUD_URLL"))
        .expect(&log);
    assert!(warning.starts_with("<4> WARN"), "{warning}");
    assert!(
        !log.lines().any(|l| l.starts_with("20")),
        "no time of its own:\n{log}"
    );
}

/// `GET`/`POST` with an optional bearer token: status, `Cache-Control`, body.
fn call(method: &str, url: &str, token: Option<&str>, body: &str) -> (u16, String, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut resp = if method == "GET" {
        let mut req = agent.get(url);
        if let Some(a) = &auth {
            req = req.header("Authorization", a);
        }
        req.call().unwrap()
    } else {
        let mut req = agent.post(url).header("Content-Type", "application/json");
        if let Some(a) = &auth {
            req = req.header("Authorization", a);
        }
        req.send(body).unwrap()
    };
    let cache = resp
        .headers()
        .get("cache-control")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let text = resp.body_mut().read_to_string().unwrap_or_default();
    (resp.status().as_u16(), cache, text)
}

#[test]
fn the_api_wants_the_token_where_configured_and_locks_out_guessing() {
    let (dir, cloud, _sub, broker_port) = super::site("auth-consumer");
    let token = "a-test-token-of-enough-length";
    let conf = config(&cloud.url(), &embedded(broker_port)).replacen(
        "[cloud]",
        "[dashboard]\nauth_reads = true\n[cloud]",
        1,
    );
    let mut kiri = Kiri::start(
        &dir.path().join("kiri"),
        &conf,
        &[("KIRI_DASHBOARD_TOKEN", token.to_string())],
    );
    let base = format!("http://127.0.0.1:{}", kiri.metrics_port);
    let reads = [
        "/metrics",
        "/api/v1/status",
        "/api/v1/functions",
        "/api/v1/deployments",
        "/api/v1/functions/convert/logs",
        "/api/v1/history",
        "/api/v1/dead-letters",
    ];
    for path in reads {
        let url = format!("{base}{path}");
        assert_eq!(call("GET", &url, None, "").0, 401, "{path} without a token");
        let (status, cache, _) = call("GET", &url, Some(token), "");
        assert_eq!(status, 200, "{path} with the token");
        assert_eq!(cache, "no-store", "{path} is not cached");
    }
    assert_eq!(call("GET", &format!("{base}/healthz"), None, "").0, 200);
    let writes = [
        "/api/v1/dead-letters/replay",
        "/api/v1/dead-letters/drop",
        "/invoke/convert",
    ];
    for path in writes {
        let url = format!("{base}{path}");
        assert_eq!(
            call("POST", &url, None, "{}").0,
            401,
            "{path} without a token"
        );
    }
    // Bad input is a client error, with a reason.
    let (status, _, _) = call(
        "POST",
        &format!("{base}/api/v1/dead-letters/drop"),
        Some(token),
        "{not json",
    );
    assert!((400..500).contains(&status), "malformed JSON: {status}");

    // /metrics is Prometheus text format, as a parser reads it.
    let (_, _, text) = call("GET", &format!("{base}/metrics"), Some(token), "");
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
        .expect("Prometheus text format");
    for name in [
        "kiri_outbox_records",
        "kiri_ingest_subscribed",
        "kiri_uplink_connected",
        // Per function, registered when it loads.
        "kiri_function_starts_total",
        "kiri_fuel_consumed_total",
        "kiri_function_memory_peak_bytes",
    ] {
        assert!(
            scrape.samples.iter().any(|s| s.metric == name),
            "{name} in /metrics"
        );
    }

    // Guessing: a burst of wrong tokens, then even the right one is refused for a while.
    let url = format!("{base}/api/v1/status");
    for _ in 0..11 {
        assert_eq!(call("GET", &url, Some("a-wrong-token-guess"), "").0, 401);
    }
    assert_eq!(call("GET", &url, Some(token), "").0, 429);
    kiri.stop();
}

#[test]
fn warnings_can_be_forwarded_to_the_cloud_at_low_priority() {
    let (dir, cloud, sub, broker_port) = super::site("logs-consumer");
    let conf = config(&cloud.url(), &embedded(broker_port)).replacen(
        "[cloud]\n",
        "[cloud]\nlogs = \"warn\"\n",
        1,
    );
    let mut kiri = Kiri::start(&dir.path().join("kiri"), &conf, &[]);
    // Valid CBOR that is not a reading: convert logs a warning about it.
    publish_all(
        broker_port,
        "s1",
        "sensors/s1/temperature",
        vec![vec![0x05]],
    );
    wait_until("the warning at the cloud", Duration::from_secs(30), || {
        sub.received
            .lock()
            .unwrap()
            .iter()
            .any(|(topic, _)| topic == "kiri/gw-test/$logs/convert")
    });
    let received = sub.received.lock().unwrap().clone();
    let (_, e) = received
        .iter()
        .find(|(t, _)| t == "kiri/gw-test/$logs/convert")
        .unwrap();
    let line: ciborium::Value = ciborium::de::from_reader(&e.payload[..]).unwrap();
    let text = format!("{line:?}");
    assert!(
        text.contains("not a reading") && text.contains("warn"),
        "{text}"
    );
    assert_eq!(e.function, "convert");
    kiri.stop();
}

/// `GET path` over HTTPS to 127.0.0.1:`port`, trusting only `ca`: the raw response.
fn https_get(port: u16, ca: &std::path::Path, path: &str) -> std::io::Result<String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName};
    use std::io::{Read, Write};
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let conn = rustls::ClientConnection::new(std::sync::Arc::new(config), name).unwrap();
    let sock = std::net::TcpStream::connect(("127.0.0.1", port))?;
    sock.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut tls = rustls::StreamOwned::new(conn, sock);
    tls.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").as_bytes(),
    )?;
    let mut out = Vec::new();
    match tls.read_to_end(&mut out) {
        Ok(_) => {}
        // Some servers close without close_notify; what arrived is the answer.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !out.is_empty() => {}
        Err(e) => return Err(e),
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

#[test]
fn the_api_can_be_served_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "dash");
    let (cert, key) = pki.issue("dashboard", &["127.0.0.1"], false);
    let port = free_port();
    let conf = format!(
        "[gateway]\nid = \"gw-tls\"\ndata_dir = {:?}\n[broker]\nlisten = \"127.0.0.1:{}\"\n\
         [dashboard]\nlisten = \"127.0.0.1:{port}\"\ntls_cert = {:?}\ntls_key = {:?}\n",
        dir.path().join("data").display().to_string(),
        free_port(),
        cert.display().to_string(),
        key.display().to_string()
    );
    let file = dir.path().join("kiri.toml");
    std::fs::write(&file, conf).unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_kiri"))
        .args(["run", "--config", file.to_str().unwrap()])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let answered = poll_until(Duration::from_secs(20), || {
        https_get(port, &pki.ca(), "/healthz").is_ok_and(|r| r.starts_with("HTTP/1.1 200"))
    });
    let other = Pki::new(dir.path(), "other");
    let untrusted = https_get(port, &other.ca(), "/healthz");
    let plain = std::net::TcpStream::connect(("127.0.0.1", port)).and_then(|mut s| {
        use std::io::{Read, Write};
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")?;
        let mut buf = [0u8; 64];
        let n = s.read(&mut buf).unwrap_or(0);
        Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
    });
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        answered,
        "the dashboard answers over TLS with its certificate"
    );
    assert!(
        untrusted.is_err(),
        "a client that does not trust the CA is refused"
    );
    assert!(
        !plain.unwrap_or_default().starts_with("HTTP/1.1 200"),
        "plain HTTP gets no answer on a TLS port"
    );
}

/// SIGHUP reloads the configuration under load: a changed trigger takes effect, every reading
/// is processed once; a file that does not parse, and a change to a key that needs a restart,
/// are refused with the reason and the running configuration goes on.
#[test]
fn a_reload_under_load_changes_functions_and_refuses_what_it_cannot() {
    let (dir, cloud, sub, broker_port) = super::site("reload-consumer");
    let conf = config(&cloud.url(), &embedded(broker_port));
    let mut kiri = Kiri::start(&dir.path().join("kiri"), &conf, &[]);
    let n = 10_000;
    let publisher = std::thread::spawn(move || {
        let readings = (0..n).map(|i| reading("s1", i)).collect();
        publish_all(broker_port, "s1", "sensors/s1/temperature", readings)
    });
    // Mid-stream: convert also takes humidity.
    wait_until("the stream under way", Duration::from_secs(20), || {
        kiri.metric("kiri_invocations_total") >= 500.0
    });
    kiri.set_config(&conf.replace(
        "triggers = [\"sensors/+/temperature\"]",
        "triggers = [\"sensors/+/temperature\", \"sensors/+/humidity\"]",
    ));
    kiri.hangup();
    wait_until("the reload", Duration::from_secs(20), || {
        kiri.log_text().contains("configuration reloaded")
    });
    assert!(
        kiri.metric("kiri_invocations_total") < n as f64,
        "the reload came while readings were still arriving"
    );
    publisher.join().unwrap();
    sub.wait_for(n as usize, Duration::from_secs(60), &mut kiri);
    super::assert_in_order(&sub.distinct_seqs(), n);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        sub.received.lock().unwrap().len(),
        n as usize,
        "each reading processed once"
    );
    let before = kiri.metric("kiri_invocations_total");
    publish_all(
        broker_port,
        "s2",
        "sensors/s2/humidity",
        vec![reading("s2", 0)],
    );
    wait_until(
        "the new trigger to run convert",
        Duration::from_secs(20),
        || kiri.metric("kiri_invocations_total") >= before + 1.0,
    );

    // Refused: a file that does not parse, and a key that needs a restart.
    kiri.set_config("[gateway\n");
    kiri.hangup();
    wait_until("the refusal", Duration::from_secs(20), || {
        kiri.log_text()
            .matches("configuration reload refused")
            .count()
            == 1
    });
    kiri.set_config(&conf.replace(
        "id = \"gw-test\"",
        "id = \"gw-test\"\ncache_bytes = 2097152",
    ));
    kiri.hangup();
    wait_until("the second refusal", Duration::from_secs(20), || {
        let log = kiri.log_text();
        log.matches("configuration reload refused").count() == 2
            && log.contains("change only with a restart: gateway.cache_bytes")
    });
    kiri.assert_running();
    let more = (n..n + 10).map(|i| reading("s1", i)).collect();
    publish_all(broker_port, "s1", "sensors/s1/temperature", more);
    sub.wait_for(n as usize + 10, Duration::from_secs(30), &mut kiri);
    kiri.stop();
}

//! What operators see: function log lines and live events over the HTTP API.

use std::io::{BufRead, BufReader};
use std::time::Duration;

use super::{config, embedded};
use crate::util::*;

#[test]
fn function_logs_are_kept_and_events_stream_live() {
    let (dir, cloud, _sub, broker_port) = super::site("observe-consumer");
    let mut kiri = Kiri::start(
        &dir.path().join("kiri"),
        &config(&cloud.url(), &embedded(broker_port)),
        &[],
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
    kiri.stop();
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

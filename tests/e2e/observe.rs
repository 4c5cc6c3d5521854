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

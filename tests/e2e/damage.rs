//! A store damaged while the gateway was stopped: the next start says what was lost (log,
//! status, `/readyz`, metric), keeps and forwards what it could read, and runs.

use std::time::Duration;

use super::{config, embedded};
use crate::util::*;

#[test]
fn a_store_cut_short_while_stopped_is_reported_and_what_is_left_delivered() {
    let (dir, mut cloud, sub, broker_port) = super::site("damage-consumer");
    cloud.stop();
    let conf = config(&cloud.url(), &embedded(broker_port));
    let mut kiri = Kiri::start(&dir.path().join("kiri"), &conf, &[]);
    let readings = (0..400).map(|i| reading("s1", i)).collect();
    publish_all(broker_port, "s1", "sensors/s1/temperature", readings);
    wait_until("400 results held", Duration::from_secs(30), || {
        kiri.status()["outbox"]["records"].as_u64() == Some(400)
    });
    kiri.stop();
    let store = dir.path().join("kiri/data/store/db");
    let len = std::fs::metadata(&store).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&store)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    kiri.restart();
    let status = kiri.status();
    let damage = &status["store"]["damage"];
    let held = status["outbox"]["records"].as_u64().unwrap();
    assert!(held < 400, "half the file is gone: {held} results left");
    let outbox = damage["trees"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["tree"] == "outbox")
        .unwrap_or_else(|| panic!("the results lost are reported: {damage}"));
    assert_eq!(
        (outbox["was"].as_u64(), outbox["now"].as_u64()),
        (Some(400), Some(held))
    );
    let log = kiri.log_text();
    assert!(
        log.lines()
            .any(|l| l.contains("ERROR") && l.contains("the store was damaged")),
        "an ERROR line says so"
    );
    assert!(kiri.metric("kiri_store_lost_entries") >= (400 - held) as f64);
    let ready = kiri.get_json("/readyz");
    assert!(
        ready["warnings"][0].as_str().unwrap().contains("damaged"),
        "{ready}"
    );
    // What was left goes to the cloud.
    cloud.restart();
    sub.wait_for(held as usize, Duration::from_secs(60), &mut kiri);
    kiri.stop();
}

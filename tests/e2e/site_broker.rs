//! An external Mosquitto as the site broker, behind a gateway that holds inputs back (its
//! outbox full under `when_full = "block"` while the cloud is away): with Mosquitto's stock
//! queue limit the broker drops what queues behind Kiri, and Kiri says so (log, metric,
//! status); with the shipped configuration (`docs/mosquitto-site.conf`) nothing is dropped and
//! every acknowledged reading reaches the cloud.

use std::time::Duration;

use super::{assert_in_order, config};
use crate::util::*;

/// The recommended site configuration as shipped, reporting drops every second.
fn recommended() -> String {
    let conf = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../docs/mosquitto-site.conf"
    ))
    .unwrap();
    assert!(conf.contains("sys_interval 10"));
    conf.replace("sys_interval 10", "sys_interval 1")
}

/// A gateway on the external `site`, its outbox blocking at 100 results (75 for one
/// function's share).
fn blocking_gateway(dir: &std::path::Path, cloud: &Mosquitto, site: &Mosquitto) -> Kiri {
    let broker = format!("mode = \"external\"\nurl = \"{}\"", site.url());
    let conf = config(&cloud.url(), &broker).replacen(
        "[cloud]",
        "[outbox]\nmax_records = 100\nwhen_full = \"block\"\n[cloud]",
        1,
    );
    Kiri::start(dir, &conf, &[])
}

fn site_dropped(kiri: &Kiri) -> Option<u64> {
    kiri.status()["site_broker"]["dropped"].as_u64()
}

#[test]
fn drops_behind_a_blocked_gateway_are_reported_and_the_shipped_config_has_none() {
    let (dir, mut cloud, sub, _) = super::site("site-consumer");
    cloud.stop();
    let readings: Vec<Vec<u8>> = (0..2_000).map(|i| reading("s1", i)).collect();

    // Mosquitto's stock limit, 1000 queued messages per session.
    let stock = Mosquitto::start_with(
        &dir.path().join("stock"),
        "max_queued_messages 1000\nsys_interval 1\n".into(),
    );
    let mut kiri = blocking_gateway(&dir.path().join("kiri-stock"), &cloud, &stock);
    publish_all(stock.port, "s1", "sensors/s1/temperature", readings.clone());
    wait_until("the drops reported", Duration::from_secs(30), || {
        kiri.assert_running();
        site_dropped(&kiri).is_some_and(|n| n > 0)
    });
    let dropped = site_dropped(&kiri).unwrap();
    assert!(
        kiri.log_text().contains("the site broker dropped messages"),
        "a WARN line says so"
    );
    assert_eq!(
        kiri.metric("kiri_site_broker_dropped_total"),
        dropped as f64
    );
    let browser = crate::browser::Browser::start();
    browser.goto(&format!("http://127.0.0.1:{}/", kiri.metrics_port));
    browser.wait_js(
        "the dashboard shows the drops",
        Duration::from_secs(30),
        "const e = document.getElementById('site-drops'); \
         return !e.hidden && e.textContent.includes('messages dropped')",
    );
    drop(browser);
    kiri.stop();

    // The shipped configuration: the same 2,000 readings, none dropped, all delivered.
    let site = Mosquitto::start_with(&dir.path().join("site"), recommended());
    let mut kiri = blocking_gateway(&dir.path().join("kiri-site"), &cloud, &site);
    publish_all(site.port, "s1", "sensors/s1/temperature", readings);
    wait_until("inputs held back", Duration::from_secs(30), || {
        kiri.status()["outbox"]["held_back"]["full"] == true
    });
    // Three of the broker's reports (one a second) after the sensor's last PUBACK.
    wait_until("the broker's count", Duration::from_secs(10), || {
        site_dropped(&kiri).is_some()
    });
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(site_dropped(&kiri), Some(0), "nothing dropped");
    cloud.restart();
    sub.wait_for(2_000, Duration::from_secs(120), &mut kiri);
    assert_in_order(&sub.distinct_seqs(), 2_000);
    assert_eq!(site_dropped(&kiri), Some(0));
    kiri.stop();
}

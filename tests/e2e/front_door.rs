//! The embedded broker's promise (the default configuration): a sensor's PUBACK means the
//! reading is on disk. A sensor that resends only what it was not acknowledged (as an MQTT
//! client does after a reconnect) streams numbered readings while the gateway is killed with
//! SIGKILL at random moments and restarted: every reading reaches the cloud, in order.

use std::time::{Duration, Instant};

use rumqttc::{Client, Event, MqttOptions, Packet, QoS};

use super::{config, embedded};
use crate::util::*;

/// A sensor publishing readings `0..events` of `sensor` with QoS 1, at most `window`
/// unacknowledged and at most `rate` a second; when its connection fails it connects again
/// (as long as it takes, up to `limit` in all) and sends again from the oldest reading not
/// acknowledged (PUBACKs come in order). Returns how many times it connected.
pub(crate) fn reliable_sensor(
    port: u16,
    sensor: &str,
    events: u64,
    window: u64,
    rate: u64,
    limit: Duration,
) -> u64 {
    let topic = format!("sensors/{sensor}/temperature");
    let mut acked = 0u64;
    let mut connections = 0;
    let started = Instant::now();
    while acked < events {
        assert!(
            started.elapsed() < limit,
            "{acked} of {events} acknowledged in {limit:?}"
        );
        let mut opts = MqttOptions::new(format!("reliable-{sensor}"), "127.0.0.1", port);
        opts.set_keep_alive(Duration::from_secs(5))
            .set_inflight(window as u16);
        let (client, mut conn) = Client::new(opts, (2 * window) as usize);
        // The event loop runs on a thread of its own: a poll cut short by a timeout would
        // abandon a connection attempt under way and start another.
        let (tx, events_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for event in conn.iter() {
                let failed = event.is_err();
                if tx.send(event).is_err() || failed {
                    break;
                }
            }
        });
        let mut sent = acked;
        loop {
            match events_rx.recv_timeout(Duration::from_millis(10)) {
                Ok(Ok(Event::Incoming(Packet::ConnAck(_)))) => connections += 1,
                Ok(Ok(Event::Incoming(Packet::PubAck(_)))) => {
                    acked += 1;
                    if acked == events {
                        let _ = client.disconnect();
                        break;
                    }
                }
                Ok(Ok(_)) => {}
                Ok(Err(_)) | Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            }
            let allowed = (started.elapsed().as_millis() as u64 * rate / 1000).max(1);
            while sent < events && sent - acked < window && sent < allowed {
                if client
                    .try_publish(&topic, QoS::AtLeastOnce, false, reading(sensor, sent))
                    .is_err()
                {
                    break;
                }
                sent += 1;
            }
        }
        if acked < events {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    connections
}

#[test]
fn a_puback_from_the_embedded_broker_survives_a_kill_9() {
    let kills = std::env::var("TEST_FRONT_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8u64);
    let events = 3_000u64;
    let (dir, cloud, sub, broker_port) = super::site("front-consumer");
    let mut kiri = Kiri::start(
        &dir.path().join("kiri"),
        &config(&cloud.url(), &embedded(broker_port)),
        &[],
    );
    let sensor = std::thread::spawn(move || {
        reliable_sensor(
            broker_port,
            "s7",
            events,
            20,
            1_000,
            Duration::from_secs(300),
        )
    });
    let started = Instant::now();
    for round in 0..kills {
        std::thread::sleep(Duration::from_millis(fastrand::u64(200..1500)));
        if sensor.is_finished() {
            break;
        }
        if round % 2 == 0 {
            kiri.freeze_and_kill();
        } else {
            kiri.kill9();
        }
        kiri.restart();
    }
    let connections = sensor.join().unwrap();
    sub.wait_for(events as usize, Duration::from_secs(120), &mut kiri);
    let arrivals = sub.assert_all_arrived_in_order(events);
    eprintln!(
        "front door: {kills} kills, {events} readings in {:.1} s, the sensor connected {connections} times, {} duplicates",
        started.elapsed().as_secs_f64(),
        arrivals.len() as u64 - events
    );
    assert!(connections > 1, "the kills cut the sensor's connection");
    kiri.stop();
}

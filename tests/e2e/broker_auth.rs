//! The embedded broker with `broker.users`: sensors log in, and each may publish, name a
//! will and subscribe only within its own topics.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use rumqttc::{
    Client, ConnectReturnCode, ConnectionError, Event, LastWill, MqttOptions, Packet, QoS,
};

use super::{config, embedded, site};
use crate::util::*;

/// `kiri password-hash` with `password` on stdin.
pub(crate) fn password_hash(password: &str) -> String {
    let mut child = Command::new(env!("CARGO_BIN_EXE_kiri"))
        .arg("password-hash")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run kiri password-hash");
    writeln!(child.stdin.take().unwrap(), "{password}").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// A client of the embedded broker, logged in as `login` if given.
pub(crate) fn client(
    port: u16,
    id: &str,
    login: Option<(&str, &str)>,
    will: Option<&str>,
) -> (Client, rumqttc::Connection) {
    let mut opts = MqttOptions::new(id, "127.0.0.1", port);
    if let Some((user, password)) = login {
        opts.set_credentials(user, password);
    }
    if let Some(topic) = will {
        opts.set_last_will(LastWill::new(topic, "gone", QoS::AtLeastOnce, false));
    }
    Client::new(opts, 100)
}

/// The broker's answer to the connection: its CONNACK, or the refusal's code.
pub(crate) fn connect_outcome(
    connection: &mut rumqttc::Connection,
) -> Result<(), ConnectReturnCode> {
    for event in connection.iter() {
        match event {
            Ok(Event::Incoming(Packet::ConnAck(_))) => return Ok(()),
            Ok(_) => {}
            Err(ConnectionError::ConnectionRefused(code)) => return Err(code),
            Err(e) => panic!("connecting failed otherwise: {e}"),
        }
    }
    panic!("the connection ended without an answer")
}

/// Runs `connection` until the packet `want` arrives (true) or the broker ends it (false).
fn until(connection: &mut rumqttc::Connection, mut want: impl FnMut(&Packet) -> bool) -> bool {
    for event in connection.iter() {
        match event {
            Ok(Event::Incoming(p)) if want(&p) => return true,
            Ok(_) => {}
            Err(_) => return false,
        }
    }
    false
}

#[test]
fn the_embedded_broker_logs_sensors_in_and_keeps_each_to_its_own_topics() {
    let (dir, cloud, sub, port) = site("auth-consumer");
    let broker = format!(
        "{}\n\
         [[broker.users]]\nname = \"s1\"\npassword_hash = \"{}\"\nsubscribe = [\"commands/s1/#\"]\n\
         [[broker.users]]\nname = \"ops\"\npassword_hash = \"{}\"\npublish = [\"commands/#\"]\n",
        embedded(port),
        password_hash("s1-secret"),
        password_hash("ops-secret"),
    );
    let mut kiri = Kiri::start(
        &dir.path().join("kiri"),
        &config(&cloud.url(), &broker),
        &[],
    );
    let s1 = Some(("s1", "s1-secret"));

    // Logged in, a sensor's readings on its own topics go through.
    let (c, mut conn) = client(port, "node-1", s1, None);
    assert_eq!(connect_outcome(&mut conn), Ok(()));
    for seq in 0..20 {
        c.publish(
            "sensors/s1/temperature",
            QoS::AtLeastOnce,
            false,
            reading("s1", seq),
        )
        .unwrap();
    }
    let mut acked = 0;
    assert!(until(&mut conn, |p| {
        acked += usize::from(matches!(p, Packet::PubAck(_)));
        acked == 20
    }));
    sub.wait_for(20, Duration::from_secs(30), &mut kiri);

    // Without a login, with a wrong password, or as nobody: refused at CONNACK.
    let refusals = [
        (None, ConnectReturnCode::NotAuthorized),
        (
            Some(("s1", "wrong")),
            ConnectReturnCode::BadUserNamePassword,
        ),
        (
            Some(("nobody", "s1-secret")),
            ConnectReturnCode::BadUserNamePassword,
        ),
    ];
    for (login, code) in refusals {
        let (_c, mut conn) = client(port, "node-x", login, None);
        assert_eq!(connect_outcome(&mut conn), Err(code), "{login:?}");
    }
    // A will outside its topics is refused too.
    let (_c, mut will_conn) = client(port, "node-w", s1, Some("sensors/s2/status"));
    assert_eq!(
        connect_outcome(&mut will_conn),
        Err(ConnectReturnCode::NotAuthorized)
    );

    // Publishing under another sensor's id ends the connection, and nothing of it arrives.
    c.publish(
        "sensors/s2/temperature",
        QoS::AtLeastOnce,
        false,
        reading("s2", 1000),
    )
    .unwrap();
    assert!(!until(&mut conn, |p| matches!(p, Packet::PubAck(_))));

    // Subscribing beyond its filters ends the connection; within them, it is served, and
    // what another user may publish there arrives through the guard.
    let (c, mut conn) = client(port, "node-1", s1, None);
    assert_eq!(connect_outcome(&mut conn), Ok(()));
    c.subscribe("#", QoS::AtLeastOnce).unwrap();
    assert!(!until(&mut conn, |p| matches!(p, Packet::SubAck(_))));
    let (c, mut conn) = client(port, "node-1", s1, None);
    assert_eq!(connect_outcome(&mut conn), Ok(()));
    c.subscribe("commands/s1/#", QoS::AtLeastOnce).unwrap();
    assert!(until(&mut conn, |p| matches!(p, Packet::SubAck(_))));
    let (ops, mut ops_conn) = client(port, "ops-1", Some(("ops", "ops-secret")), None);
    assert_eq!(connect_outcome(&mut ops_conn), Ok(()));
    ops.publish("commands/s1/reset", QoS::AtLeastOnce, false, "now")
        .unwrap();
    assert!(until(&mut ops_conn, |p| matches!(p, Packet::PubAck(_))));
    assert!(until(&mut conn, |p| matches!(
        p,
        Packet::Publish(m) if m.topic == "commands/s1/reset" && &m.payload[..] == b"now"
    )));

    // A client that names Kiri's own ingest session does not take it over: readings keep
    // flowing through the gateway after it connected.
    let (_hijack, mut hijack_conn) = client(port, "kiri-gw-test", s1, None);
    assert_eq!(connect_outcome(&mut hijack_conn), Ok(()));
    publish_all_as(
        port,
        "node-2",
        s1,
        "sensors/s1/temperature",
        (20..40).map(|s| reading("s1", s)).collect(),
    );
    sub.wait_for(40, Duration::from_secs(30), &mut kiri);
    assert!(
        sub.received
            .lock()
            .unwrap()
            .iter()
            .all(|(topic, _)| !topic.contains("/s2/")),
        "a reading published outside the sensor's topics reached the cloud"
    );

    // `kiri-sensor` logs in too: its readings are all acknowledged, so it finishes.
    let mut agent = Command::new(crate::sensors::kiri_sensor())
        .args(["--source", "simulate", "--rate", "50", "--node", "s1"])
        .args(["--port", &port.to_string(), "--count", "9"])
        .args(["--username", "s1", "--client-id", "agent"])
        .env("KIRI_SENSOR_PASSWORD", "s1-secret")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let finished = poll_until(Duration::from_secs(30), || {
        agent.try_wait().unwrap().is_some()
    });
    let _ = agent.kill();
    assert!(
        finished && agent.wait().unwrap().success(),
        "kiri-sensor did not finish"
    );
    sub.wait_for(43, Duration::from_secs(30), &mut kiri);

    // Every refusal is counted by reason, and no password is in the log.
    for (reason, at_least) in [
        ("no_login", 1.0),
        ("bad_login", 2.0),
        ("will", 1.0),
        ("publish", 1.0),
        ("subscribe", 1.0),
    ] {
        let n = kiri.metric(&format!("kiri_broker_refused_total{{reason=\"{reason}\"}}"));
        assert!(n >= at_least, "{reason}: {n}");
    }
    let log = kiri.log_text();
    assert!(
        log.contains("may not publish to \"sensors/s2/temperature\""),
        "{log}"
    );
    assert!(!log.contains("s1-secret") && !log.contains("ops-secret"));
}

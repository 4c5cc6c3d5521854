//! The front door as a sensor sees it: the guard in front of a stand-in for rumqttd that, like
//! rumqttd, acknowledges every publish at once; a function lane that is the test itself. No
//! PUBACK (or PUBREC) reaches the sensor before the lane's commit, and they come in the order
//! the publishes were sent.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use rumqttc::mqttbytes::v4::{self, Packet};
use rumqttc::mqttbytes::QoS;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use super::front::FrontDoor;
use super::guard::{self, Guard, InternalLogin, OwnIds};
use crate::net::ConnectionLimits;
use crate::pipeline::{Ack, Work};

/// Reads one packet from `s` (`None`: nothing within `wait`).
async fn read_packet(s: &mut TcpStream, buf: &mut BytesMut, wait: Duration) -> Option<Packet> {
    loop {
        if let Ok(p) = Packet::read(buf, 1 << 20) {
            return Some(p);
        }
        match tokio::time::timeout(wait, s.read_buf(buf)).await {
            Ok(Ok(n)) if n > 0 => {}
            _ => return None,
        }
    }
}

async fn write(s: &mut TcpStream, packet: impl FnOnce(&mut BytesMut)) {
    let mut out = BytesMut::new();
    packet(&mut out);
    s.write_all(&out).await.unwrap();
}

/// A stand-in for rumqttd: answers the CONNECT, and every QoS 1 publish with a PUBACK and
/// every QoS 2 one with a PUBREC at once; counts the publishes it got.
async fn eager_broker() -> (std::net::SocketAddr, Arc<Mutex<usize>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let got = Arc::new(Mutex::new(0));
    let count = got.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let count = count.clone();
            tokio::spawn(async move {
                let mut buf = BytesMut::new();
                while let Some(p) = read_packet(&mut s, &mut buf, Duration::from_secs(60)).await {
                    match p {
                        Packet::Connect(_) => {
                            write(&mut s, |o| {
                                v4::ConnAck::new(v4::ConnectReturnCode::Success, false)
                                    .write(o)
                                    .map(drop)
                                    .unwrap()
                            })
                            .await
                        }
                        Packet::Publish(p) => {
                            *count.lock().unwrap() += 1;
                            match p.qos {
                                QoS::AtLeastOnce => {
                                    write(&mut s, |o| {
                                        v4::PubAck::new(p.pkid).write(o).map(drop).unwrap()
                                    })
                                    .await
                                }
                                QoS::ExactlyOnce => {
                                    write(&mut s, |o| {
                                        v4::PubRec::new(p.pkid).write(o).map(drop).unwrap()
                                    })
                                    .await
                                }
                                QoS::AtMostOnce => {}
                            }
                        }
                        _ => {}
                    }
                }
            });
        }
    });
    (addr, got)
}

fn publish(topic: &str, qos: QoS, pkid: u16) -> impl FnOnce(&mut BytesMut) {
    let mut p = v4::Publish::new(topic, qos, vec![1u8, 2, 3]);
    p.pkid = pkid;
    move |o| p.write(o).map(drop).unwrap()
}

/// Takes the next message the lane was handed: its connection and packet id.
async fn handed(lane: &mut mpsc::Receiver<Work>) -> (u64, u16) {
    match tokio::time::timeout(Duration::from_secs(5), lane.recv()).await {
        Ok(Some(Work::Message(m))) => (m.connection, m.publish.pkid),
        _ => panic!("the lane was handed nothing"),
    }
}

/// The guard in front of the eager broker, one lane taking `s/#`: the guard's address, the
/// broker's count, the front door and the lane's queue.
async fn door_with_a_lane() -> (
    std::net::SocketAddr,
    Arc<Mutex<usize>>,
    Arc<FrontDoor>,
    mpsc::Receiver<Work>,
) {
    let (upstream, got) = eager_broker().await;
    let front = Arc::new(FrontDoor::default());
    let (lane_tx, lane) = mpsc::channel(16);
    front.set_route(0, Arc::new(Mutex::new(vec!["s/#".into()])), lane_tx);
    front.open_door();
    let login = InternalLogin::generate().unwrap();
    let guard =
        Arc::new(Guard::new(&[], login, OwnIds::default(), 1 << 20, front.clone()).unwrap());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let door = listener.local_addr().unwrap();
    let limits = ConnectionLimits {
        total: 8,
        per_address: 8,
    };
    tokio::spawn(guard::serve(listener, upstream, guard, limits));
    (door, got, front, lane)
}

/// A client connected through the guard as `id`.
async fn connected(door: std::net::SocketAddr, id: &str) -> (TcpStream, BytesMut) {
    let mut client = TcpStream::connect(door).await.unwrap();
    let mut buf = BytesMut::new();
    write(&mut client, |o| {
        v4::Connect::new(id).write(o).map(drop).unwrap()
    })
    .await;
    assert!(matches!(
        read_packet(&mut client, &mut buf, Duration::from_secs(5)).await,
        Some(Packet::ConnAck(_))
    ));
    (client, buf)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_acknowledgement_reaches_the_sensor_before_the_lanes_commit() {
    let (door, got, front, mut lane) = door_with_a_lane().await;
    // Another subscriber wants the readings too: the broker gets them, and answers at once.
    front
        .others()
        .internal_subscriptions(Arc::new(Mutex::new(vec!["s/#".into()])));
    let (mut sensor, mut buf) = connected(door, "s1").await;
    let quick = Duration::from_millis(300);

    write(&mut sensor, publish("s/1", QoS::AtLeastOnce, 1)).await;
    write(&mut sensor, publish("s/2", QoS::AtLeastOnce, 2)).await;
    let (connection, first) = handed(&mut lane).await;
    assert_eq!(first, 1);
    assert_eq!(handed(&mut lane).await, (connection, 2));
    tokio::time::sleep(quick).await;
    assert_eq!(
        *got.lock().unwrap(),
        2,
        "the broker has both, and acknowledged them"
    );
    assert!(
        read_packet(&mut sensor, &mut buf, quick).await.is_none(),
        "no PUBACK before the commit"
    );
    // The second committed first: it waits for the first (MQTT keeps PUBACKs in order).
    front.ack(Ack {
        connection,
        pkid: 2,
    });
    assert!(read_packet(&mut sensor, &mut buf, quick).await.is_none());
    front.ack(Ack {
        connection,
        pkid: 1,
    });
    for want in [1, 2] {
        match read_packet(&mut sensor, &mut buf, Duration::from_secs(5)).await {
            Some(Packet::PubAck(a)) => assert_eq!(a.pkid, want),
            other => panic!("expected PUBACK {want}, got {other:?}"),
        }
    }

    // A topic no lane takes: nothing to commit, acknowledged at once.
    write(&mut sensor, publish("other/1", QoS::AtLeastOnce, 3)).await;
    match read_packet(&mut sensor, &mut buf, Duration::from_secs(5)).await {
        Some(Packet::PubAck(a)) => assert_eq!(a.pkid, 3),
        other => panic!("expected PUBACK 3, got {other:?}"),
    }

    // QoS 2: the PUBREC waits for the commit the same way.
    write(&mut sensor, publish("s/3", QoS::ExactlyOnce, 4)).await;
    assert_eq!(handed(&mut lane).await, (connection, 4));
    assert!(read_packet(&mut sensor, &mut buf, quick).await.is_none());
    front.ack(Ack {
        connection,
        pkid: 4,
    });
    match read_packet(&mut sensor, &mut buf, Duration::from_secs(5)).await {
        Some(Packet::PubRec(r)) => assert_eq!(r.pkid, 4),
        other => panic!("expected PUBREC 4, got {other:?}"),
    }

    // A lane removed before committing: the connection closes (the sensor sends again).
    write(&mut sensor, publish("s/4", QoS::AtLeastOnce, 5)).await;
    assert_eq!(handed(&mut lane).await, (connection, 5));
    front.remove_route(0);
    let closed = tokio::time::timeout(Duration::from_secs(5), sensor.read_buf(&mut buf)).await;
    assert!(
        matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
        "closed: {closed:?}"
    );
}

/// `sensor` (connection 1) publishes `topic` as packet `pkid`; the lane takes it and commits
/// it; the sensor gets its PUBACK. Then how many publishes the broker has had.
async fn reading_committed(
    sensor: &mut TcpStream,
    buf: &mut BytesMut,
    front: &FrontDoor,
    lane: &mut mpsc::Receiver<Work>,
    got: &Mutex<usize>,
    (topic, pkid): (&str, u16),
) -> usize {
    write(sensor, publish(topic, QoS::AtLeastOnce, pkid)).await;
    assert_eq!(handed(lane).await, (1, pkid));
    front.ack(Ack {
        connection: 1,
        pkid,
    });
    assert!(matches!(
        read_packet(sensor, buf, Duration::from_secs(5)).await,
        Some(Packet::PubAck(a)) if a.pkid == pkid
    ));
    tokio::time::sleep(Duration::from_millis(300)).await;
    *got.lock().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_broker_gets_only_what_a_subscriber_besides_the_lanes_wants() {
    let (door, got, front, mut lane) = door_with_a_lane().await;
    let (mut sensor, mut buf) = connected(door, "s1").await;
    let (sensor, buf, lane) = (&mut sensor, &mut buf, &mut lane);
    let relayed = reading_committed(sensor, buf, &front, lane, &got, ("s/1", 1)).await;
    assert_eq!(relayed, 0, "nobody else wants it: not relayed");

    // A dashboard subscribes through the guard: from then on the broker gets them.
    let (mut dash, _) = connected(door, "dash").await;
    write(&mut dash, |o| {
        v4::Subscribe::new("s/+", QoS::AtMostOnce)
            .write(o)
            .map(drop)
            .unwrap()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let relayed = reading_committed(sensor, buf, &front, lane, &got, ("s/2", 2)).await;
    assert_eq!(relayed, 1, "relayed for the dashboard");

    // It leaves (a clean session): nobody again.
    drop(dash);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let relayed = reading_committed(sensor, buf, &front, lane, &got, ("s/3", 3)).await;
    assert_eq!(relayed, 1, "not relayed once the dashboard left");
}

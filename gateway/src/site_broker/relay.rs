//! One client's packets after its login, both ways, through the [`front`](super::front) door:
//! from the client, each packet checked against its user's rules (with accounts), each
//! PUBLISH handed to the lanes its topic triggers and then relayed to rumqttd; from rumqttd,
//! everything relayed except its PUBACKs and PUBRECs (every one answers a publish of this
//! client), which the guard sends itself once the lanes committed the publish.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use bytes::BytesMut;
use rumqttc::mqttbytes::{v4, PacketType};
use rumqttc::QoS;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

use super::accounts::Rules;
use super::front::{incoming, Door, FrontDoor, Pending, MAX_PENDING};
use super::packets::{check, complete_packet, refusal, Refusal};

/// Who the client is: a user and its rules, or anyone (no accounts).
pub(super) type Account<'a> = Option<(&'a str, &'a Rules)>;

/// The client's session at rumqttd: its client id (as rumqttd knows it) and whether it is
/// clean.
pub(super) struct Session<'a> {
    pub id: &'a str,
    pub clean: bool,
}

/// Relays until either side ends or the connection must close; `buf` holds what the client
/// sent after its CONNECT. A client that ends without a DISCONNECT has its `will` handed to
/// the lanes (rumqttd publishes it to the others).
#[allow(clippy::too_many_arguments)]
pub(super) async fn relay(
    client: TcpStream,
    server: TcpStream,
    mut buf: BytesMut,
    front: &Arc<FrontDoor>,
    account: Account<'_>,
    session: Session<'_>,
    will: Option<v4::LastWill>,
    max_packet: usize,
) -> Result<(), Refusal> {
    let (door, mut committed) = front.open();
    // Its subscriptions, for what rumqttd must see (an empty id: this connection's alone).
    let subscriber = match session.id {
        "" => format!("\0connection {}", door.id),
        id => id.to_string(),
    };
    front.others().client_connected(&subscriber, session.clean);
    let pending = Mutex::new(Pending::default());
    let room = Semaphore::new(MAX_PENDING);
    let graceful = AtomicBool::new(false);
    let (client_rx, client_tx) = client.into_split();
    let (server_rx, server_tx) = server.into_split();
    let mut removals = door.removals.clone();
    removals.mark_unchanged();
    let result = {
        let up = upstream(
            client_rx,
            server_tx,
            &mut buf,
            &door,
            account,
            &subscriber,
            &pending,
            &room,
            &graceful,
            max_packet,
        );
        let down = downstream(
            server_rx,
            client_tx,
            &mut committed,
            &pending,
            &room,
            max_packet,
        );
        let removed = async {
            loop {
                if removals.changed().await.is_err() {
                    return std::future::pending().await;
                }
                if !pending.lock().expect("pending lock").is_empty() {
                    return refusal(
                        "lane_removed",
                        "closed: a function it published to was removed before committing its \
                         messages; the client sends them again",
                    );
                }
            }
        };
        tokio::select! {
            r = up => r,
            r = down => r,
            refused = removed => Err(refused),
        }
    };
    if !graceful.load(Ordering::Relaxed) {
        if let Some(will) = will {
            for lane in front.targets(&will.topic) {
                let publish = rumqttc::Publish::from_bytes(
                    &will.topic,
                    QoS::AtMostOnce,
                    will.message.clone(),
                );
                let _ = lane.try_send(incoming(publish, 0));
            }
        }
    }
    front.others().client_gone(&subscriber);
    drop(door);
    match result {
        Err(Refusal { reason: "io", .. }) => Ok(()),
        r => r,
    }
}

/// Client to rumqttd: each packet checked, each PUBLISH handed to its lanes first (and then
/// relayed only if rumqttd has someone else to give it to), subscriptions noted.
#[allow(clippy::too_many_arguments)]
async fn upstream(
    mut client_rx: OwnedReadHalf,
    mut server_tx: OwnedWriteHalf,
    buf: &mut BytesMut,
    door: &Door,
    account: Account<'_>,
    subscriber: &str,
    pending: &Mutex<Pending>,
    room: &Semaphore,
    graceful: &AtomicBool,
    max_packet: usize,
) -> Result<(), Refusal> {
    let mut out = BytesMut::new();
    loop {
        // Everything whole in the buffer goes out in one write; what came before a refused
        // packet still goes.
        let mut verdict = Ok(());
        loop {
            let (header, frame) = match complete_packet(buf, max_packet) {
                Ok(Some(p)) => p,
                Ok(None) => break,
                Err(refused) => {
                    verdict = Err(refused);
                    break;
                }
            };
            let checked = match account {
                Some((user, rules)) => check(rules, user, header, &frame),
                None if header.packet_type().ok() == Some(PacketType::Connect) => {
                    Err(refusal("malformed", "a second CONNECT"))
                }
                None => Ok(()),
            };
            if let Err(refused) = checked {
                verdict = Err(refused);
                break;
            }
            match header.packet_type() {
                Ok(PacketType::Publish) => {
                    let publish = v4::Publish::read(header, frame.clone())
                        .map_err(|e| refusal("malformed", format!("malformed PUBLISH: {e}")));
                    let publish = match publish {
                        Ok(p) => p,
                        Err(refused) => {
                            verdict = Err(refused);
                            break;
                        }
                    };
                    let relayed = door.front().others().want(&publish);
                    hand_to_lanes(publish, door, pending, room).await;
                    if !relayed {
                        continue;
                    }
                }
                // Noted before rumqttd has them: what comes after reaches the subscriber.
                // (A malformed one is relayed all the same, and rumqttd ends the connection.)
                Ok(PacketType::Subscribe) => {
                    if let Ok(sub) = v4::Subscribe::read(header, frame.clone()) {
                        let filters = sub.filters.into_iter().map(|f| f.path);
                        door.front().others().subscribed(subscriber, filters);
                    }
                }
                Ok(PacketType::Unsubscribe) => {
                    if let Ok(unsub) = v4::Unsubscribe::read(header, frame.clone()) {
                        door.front()
                            .others()
                            .unsubscribed(subscriber, &unsub.topics);
                    }
                }
                Ok(PacketType::Disconnect) => graceful.store(true, Ordering::Relaxed),
                _ => {}
            }
            out.extend_from_slice(&frame);
        }
        if !out.is_empty() {
            server_tx
                .write_all(&out)
                .await
                .map_err(|e| refusal("io", format!("writing to the broker: {e}")))?;
            out.clear();
        }
        verdict?;
        match client_rx.read_buf(buf).await {
            Ok(0) => return Ok(()),
            Ok(_) => quick_ack(client_rx.as_ref()),
            Err(e) => return Err(refusal("io", format!("reading from the client: {e}"))),
        }
    }
}

/// Has the kernel acknowledge what was just read at once (Linux `TCP_QUICKACK`, which it
/// clears again by itself, so it is set after every read). The guard's PUBACK waits for the
/// lanes' commit, up to `gateway.commit_window_ms`; a delayed TCP ACK would wait for that
/// PUBACK to ride on, and a client with Nagle's algorithm on (most MQTT libraries, sensors'
/// included) then holds its next message until it comes: measured, 10 ms added to every
/// reading at 200/s and a client held to 2,400 messages/s.
fn quick_ack(stream: &TcpStream) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let on: libc::c_int = 1;
        // SAFETY: a valid socket descriptor and a c_int option of the right size.
        unsafe {
            libc::setsockopt(
                stream.as_raw_fd(),
                libc::IPPROTO_TCP,
                libc::TCP_QUICKACK,
                (&on as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = stream;
}

/// Hands `publish` to every lane it triggers, waiting for room in each (back-pressure on this
/// client alone). A QoS 1 or 2 publish waits for a place among the client's pending ones
/// first, and is recorded as awaiting one commit per lane, and one more: this hand-off.
async fn hand_to_lanes(
    publish: v4::Publish,
    door: &Door,
    pending: &Mutex<Pending>,
    room: &Semaphore,
) {
    door.front().opened().await;
    let targets = door.front().targets(&publish.topic);
    let pkid = publish.pkid;
    let acked = publish.qos != QoS::AtMostOnce;
    if acked {
        if let Ok(p) = room.acquire().await {
            p.forget();
        }
        pending.lock().expect("pending lock").push(
            pkid,
            targets.len() + 1,
            publish.qos == QoS::ExactlyOnce,
        );
    }
    for lane in targets {
        match lane.reserve().await {
            Ok(permit) => permit.send(incoming(publish.clone(), door.id)),
            // The lane is gone (its function removed): it will commit nothing.
            Err(_) if acked => {
                let _ = door.done.send(pkid);
            }
            Err(_) => {}
        }
    }
    if acked {
        let _ = door.done.send(pkid);
    }
}

/// rumqttd to the client, with this client's PUBACKs and PUBRECs sent as its publishes are
/// committed, in order.
async fn downstream(
    mut server_rx: OwnedReadHalf,
    mut client_tx: OwnedWriteHalf,
    committed: &mut tokio::sync::mpsc::UnboundedReceiver<u16>,
    pending: &Mutex<Pending>,
    room: &Semaphore,
    max_packet: usize,
) -> Result<(), Refusal> {
    let mut buf = BytesMut::with_capacity(4096);
    let mut out = BytesMut::new();
    loop {
        tokio::select! {
            read = server_rx.read_buf(&mut buf) => {
                match read {
                    Ok(0) => return Ok(()),
                    Ok(_) => {}
                    Err(e) => return Err(refusal("io", format!("reading from the broker: {e}"))),
                }
                while let Some((header, frame)) = complete_packet(&mut buf, max_packet.max(1 << 20))? {
                    match header.packet_type() {
                        // Answers to this client's publishes: the guard's own go after the commit.
                        Ok(PacketType::PubAck | PacketType::PubRec) => {}
                        _ => out.extend_from_slice(&frame),
                    }
                }
            }
            Some(pkid) = committed.recv() => {
                let mut p = pending.lock().expect("pending lock");
                p.complete(pkid);
                while let Ok(pkid) = committed.try_recv() {
                    p.complete(pkid);
                }
                let released = p.release();
                drop(p);
                room.add_permits(released.len());
                for (pkid, exactly_once) in released {
                    let written = if exactly_once {
                        v4::PubRec::new(pkid).write(&mut out)
                    } else {
                        v4::PubAck::new(pkid).write(&mut out)
                    };
                    written.map_err(|e| refusal("malformed", format!("an acknowledgement: {e}")))?;
                }
            }
        }
        if !out.is_empty() {
            client_tx
                .write_all(&out)
                .await
                .map_err(|e| refusal("io", format!("writing to the client: {e}")))?;
            out.clear();
        }
    }
}

//! What the guard reads and writes of MQTT 3.1.1 packets: whole packets from a client, the
//! CONNACK that refuses one, and whether a packet is within a user's rules.

use bytes::{Bytes, BytesMut};
use rumqttc::mqttbytes::{self, v4, FixedHeader, PacketType};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::accounts::Rules;

/// Why a connection was refused or closed.
#[derive(Debug)]
pub(super) struct Refusal {
    pub(super) reason: &'static str,
    pub(super) detail: String,
}

pub(super) fn refusal(reason: &'static str, detail: impl Into<String>) -> Refusal {
    Refusal {
        reason,
        detail: detail.into(),
    }
}

/// Reads the next whole packet from `stream` into `buf`; `None` at the end of the stream.
pub(super) async fn next_packet(
    stream: &mut (impl AsyncRead + Unpin),
    buf: &mut BytesMut,
    max_packet: usize,
) -> Result<Option<(FixedHeader, Bytes)>, Refusal> {
    loop {
        if let Some(packet) = complete_packet(buf, max_packet)? {
            return Ok(Some(packet));
        }
        match stream.read_buf(buf).await {
            Ok(0) => return Ok(None),
            Ok(_) => {}
            Err(e) => return Err(refusal("io", format!("reading from the client: {e}"))),
        }
    }
}

/// The next whole packet already in `buf`, if there is one (room is reserved for the rest).
pub(super) fn complete_packet(
    buf: &mut BytesMut,
    max_packet: usize,
) -> Result<Option<(FixedHeader, Bytes)>, Refusal> {
    match mqttbytes::check(buf.iter(), max_packet) {
        Ok(header) => Ok(Some((header, buf.split_to(header.frame_length()).freeze()))),
        Err(mqttbytes::Error::InsufficientBytes(more)) => {
            buf.reserve(more.max(4096));
            Ok(None)
        }
        Err(e) => Err(refusal("malformed", format!("malformed packet: {e}"))),
    }
}

/// Writes a CONNACK refusing the connection, then ends it.
pub(super) async fn refuse<T>(
    client: &mut TcpStream,
    code: v4::ConnectReturnCode,
    reason: &'static str,
    detail: String,
) -> Result<T, Refusal> {
    let mut out = BytesMut::new();
    if v4::ConnAck::new(code, false).write(&mut out).is_ok() {
        let _ = client.write_all(&out).await;
    }
    Err(refusal(reason, detail))
}

/// Is this packet from `user`'s client allowed?
pub(super) fn check(
    rules: &Rules,
    user: &str,
    header: FixedHeader,
    frame: &Bytes,
) -> Result<(), Refusal> {
    match header.packet_type() {
        Ok(PacketType::Publish) => {
            let publish = v4::Publish::read(header, frame.clone())
                .map_err(|e| refusal("malformed", format!("malformed PUBLISH: {e}")))?;
            if !rules.may_publish(&publish.topic) {
                let detail = format!("user {user:?} may not publish to {:?}", publish.topic);
                return Err(refusal("publish", detail));
            }
        }
        Ok(PacketType::Subscribe) => {
            let subscribe = v4::Subscribe::read(header, frame.clone())
                .map_err(|e| refusal("malformed", format!("malformed SUBSCRIBE: {e}")))?;
            if let Some(f) = subscribe
                .filters
                .iter()
                .find(|f| !rules.may_subscribe(&f.path))
            {
                let detail = format!("user {user:?} may not subscribe to {:?}", f.path);
                return Err(refusal("subscribe", detail));
            }
        }
        Ok(PacketType::Connect) => return Err(refusal("malformed", "a second CONNECT")),
        Ok(_) => {}
        Err(e) => return Err(refusal("malformed", format!("malformed packet: {e}"))),
    }
    Ok(())
}

//! One connection to the cloud broker, in MQTT 3.1.1 or MQTT 5 (`cloud.protocol_version`),
//! behind one interface: the session publishes [`Message`]s and reads [`Ev`]ents, whichever
//! client (rumqttc's v4 or v5) carries them. MQTT 3.1.1 has no message properties; they are
//! dropped there.

use std::sync::Arc;

use rumqttc::{QoS, TlsConfiguration, Transport};

use super::UplinkConfig;
use crate::config::MqttVersion;

/// What a message carries beside its payload (MQTT 5 only).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Props {
    /// The content type property (MIME type of the payload).
    pub content_type: Option<String>,
    /// Payload format indicator: the payload is UTF-8 text.
    pub utf8: bool,
    /// Message expiry interval, seconds.
    pub expiry_secs: Option<u32>,
    /// User properties, in order.
    pub user: Vec<(String, String)>,
}

/// One message for the cloud: its topic, payload and properties.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The full topic.
    pub topic: String,
    /// The payload.
    pub payload: Vec<u8>,
    /// MQTT 5 properties.
    pub props: Props,
}

/// What the connection reports, whichever the protocol.
#[derive(Debug)]
pub enum Ev {
    /// The broker accepted the session.
    ConnAck,
    /// A message on a subscribed topic.
    Publish { topic: String, payload: Vec<u8> },
    /// The client sent the oldest unsent publish with this packet id.
    Sent(u16),
    /// The broker's PUBACK for `pkid`: `Ok` when it took the message, `Err(reason)` when it
    /// refused it (MQTT 5 reason codes 0x80 and above).
    Acked { pkid: u16, refused: Option<String> },
    /// Anything else.
    Other,
}

/// The connection ended: why, in words an operator can act on.
#[derive(Debug)]
pub struct Ended(pub String);

/// The client half of a connection.
pub enum Client {
    V4(rumqttc::AsyncClient),
    V5(rumqttc::v5::AsyncClient),
}

/// The event loop half, polled in its own task (rumqttc's `poll` is not cancel-safe).
pub enum Poller {
    V4(Box<rumqttc::EventLoop>),
    V5(Box<rumqttc::v5::EventLoop>),
}

/// A client and its event loop for `cfg`, not yet connected (the first poll connects).
pub fn open(cfg: &UplinkConfig) -> (Client, Poller) {
    let capacity = cfg.inflight as usize + 8;
    let transport = cfg
        .tls
        .as_ref()
        .map(|tls| Transport::tls_with_config(TlsConfiguration::Rustls(Arc::clone(tls))));
    match cfg.protocol {
        MqttVersion::V311 => {
            let mut opts = rumqttc::MqttOptions::new(&cfg.client_id, &cfg.host, cfg.port);
            opts.set_clean_session(true)
                .set_keep_alive(cfg.keep_alive)
                .set_inflight(cfg.inflight)
                // The cloud broker decides what it accepts; MQTT's own limit is the only one here.
                .set_max_packet_size(cfg.max_packet, 268_435_455)
                .set_request_channel_capacity(capacity);
            if let Some(t) = transport {
                opts.set_transport(t);
            }
            if let Some(c) = &cfg.credentials {
                opts.set_credentials(c.username.clone(), c.password.clone());
            }
            let (client, mut eventloop) = rumqttc::AsyncClient::new(opts, capacity);
            crate::ingest::no_delay(&mut eventloop);
            (Client::V4(client), Poller::V4(Box::new(eventloop)))
        }
        MqttVersion::V5 => {
            let mut opts = rumqttc::v5::MqttOptions::new(&cfg.client_id, &cfg.host, cfg.port);
            opts.set_clean_start(true)
                .set_keep_alive(cfg.keep_alive)
                // The broker's receive maximum (CONNACK) lowers this further.
                .set_outgoing_inflight_upper_limit(cfg.inflight)
                .set_max_packet_size(Some(cfg.max_packet.min(u32::MAX as usize) as u32))
                .set_request_channel_capacity(capacity);
            if let Some(t) = transport {
                opts.set_transport(t);
            }
            if let Some(c) = &cfg.credentials {
                opts.set_credentials(c.username.clone(), c.password.clone());
            }
            let mut network = rumqttc::NetworkOptions::new();
            network.set_tcp_nodelay(true);
            opts.set_network_options(network);
            let (client, eventloop) = rumqttc::v5::AsyncClient::new(opts, capacity);
            (Client::V5(client), Poller::V5(Box::new(eventloop)))
        }
    }
}

impl Client {
    /// Queues a QoS 1 publish. False when the event loop is gone.
    pub fn publish(&self, m: Message) -> bool {
        match self {
            Client::V4(c) => c
                .try_publish(m.topic, QoS::AtLeastOnce, false, m.payload)
                .is_ok(),
            Client::V5(c) => {
                let p = m.props;
                let props = rumqttc::v5::mqttbytes::v5::PublishProperties {
                    payload_format_indicator: p.utf8.then_some(1),
                    message_expiry_interval: p.expiry_secs,
                    user_properties: p.user,
                    content_type: p.content_type,
                    ..Default::default()
                };
                c.try_publish_with_properties(
                    m.topic,
                    rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
                    false,
                    m.payload,
                    props,
                )
                .is_ok()
            }
        }
    }

    /// Subscribes to `topics` with QoS 1. False when the event loop is gone.
    pub fn subscribe(&self, topics: &[String]) -> bool {
        match self {
            Client::V4(c) => c
                .try_subscribe_many(
                    topics
                        .iter()
                        .map(|t| rumqttc::SubscribeFilter::new(t.clone(), QoS::AtLeastOnce)),
                )
                .is_ok(),
            Client::V5(c) => c
                .try_subscribe_many(topics.iter().map(|t| {
                    rumqttc::v5::mqttbytes::v5::Filter::new(
                        t.clone(),
                        rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
                    )
                }))
                .is_ok(),
        }
    }
}

impl Poller {
    /// The next event, or why the connection ended.
    pub async fn poll(&mut self) -> Result<Ev, Ended> {
        match self {
            Poller::V4(e) => {
                use rumqttc::{Event, Outgoing, Packet};
                Ok(match e.poll().await.map_err(|e| Ended(describe_v4(&e)))? {
                    Event::Incoming(Packet::ConnAck(_)) => Ev::ConnAck,
                    Event::Incoming(Packet::Publish(p)) => Ev::Publish {
                        topic: p.topic,
                        payload: p.payload.to_vec(),
                    },
                    Event::Outgoing(Outgoing::Publish(pkid)) => Ev::Sent(pkid),
                    Event::Incoming(Packet::PubAck(ack)) => Ev::Acked {
                        pkid: ack.pkid,
                        refused: None,
                    },
                    _ => Ev::Other,
                })
            }
            Poller::V5(e) => {
                use rumqttc::v5::mqttbytes::v5::{Packet, PubAckReason};
                use rumqttc::v5::Event;
                use rumqttc::Outgoing;
                Ok(match e.poll().await.map_err(|e| Ended(describe_v5(&e)))? {
                    Event::Incoming(Packet::ConnAck(_)) => Ev::ConnAck,
                    Event::Incoming(Packet::Publish(p)) => Ev::Publish {
                        topic: String::from_utf8_lossy(&p.topic).into_owned(),
                        payload: p.payload.to_vec(),
                    },
                    Event::Outgoing(Outgoing::Publish(pkid)) => Ev::Sent(pkid),
                    Event::Incoming(Packet::PubAck(ack)) => Ev::Acked {
                        pkid: ack.pkid,
                        refused: match ack.reason {
                            PubAckReason::Success | PubAckReason::NoMatchingSubscribers => None,
                            reason => {
                                let why = ack.properties.and_then(|p| p.reason_string);
                                Some(match why {
                                    Some(why) => format!("{reason:?} ({why})"),
                                    None => format!("{reason:?}"),
                                })
                            }
                        },
                    },
                    _ => Ev::Other,
                })
            }
        }
    }
}

/// A 3.1.1 connection error in words an operator can act on.
fn describe_v4(e: &rumqttc::ConnectionError) -> String {
    use rumqttc::ConnectionError as E;
    match e {
        E::Tls(e) => format!("TLS handshake failed: {e}{}", crate::clock::hint()),
        E::ConnectionRefused(code) => format!("the broker refused the connection: {code:?}"),
        E::Io(e) => format!("network: {e}"),
        E::MqttState(rumqttc::StateError::AwaitPingResp) => {
            "no answer to the keep-alive ping: connection lost".into()
        }
        other => fatal_alert(other.to_string()),
    }
}

/// An MQTT 5 connection error in words an operator can act on.
fn describe_v5(e: &rumqttc::v5::ConnectionError) -> String {
    use rumqttc::v5::ConnectionError as E;
    match e {
        E::Tls(e) => format!("TLS handshake failed: {e}{}", crate::clock::hint()),
        E::ConnectionRefused(code) => format!("the broker refused the connection: {code:?}"),
        E::Io(e) => format!("network: {e}"),
        E::MqttState(rumqttc::v5::StateError::AwaitPingResp) => {
            "no answer to the keep-alive ping: connection lost".into()
        }
        E::MqttState(rumqttc::v5::StateError::ServerDisconnect {
            reason_code,
            reason_string,
        }) => format!(
            "the broker ended the session: {reason_code:?}{}",
            reason_string
                .as_ref()
                .map(|s| format!(" ({s})"))
                .unwrap_or_default()
        ),
        other => fatal_alert(other.to_string()),
    }
}

/// TLS 1.3 finishes the handshake before the server checks the client's certificate, so its
/// refusal arrives as an alert on the first read.
fn fatal_alert(error: String) -> String {
    if error.contains("fatal alert") {
        format!(
            "TLS: the broker refused the session: {error}{}",
            crate::clock::hint()
        )
    } else {
        error
    }
}

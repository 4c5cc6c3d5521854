//! The uplink: drains the outbox to the cloud broker in order, with QoS 1, over TCP or TLS,
//! each result in an [`Envelope`]. A record leaves the outbox only when the PUBACK of the
//! message carrying it arrives (the deletes are flushed once per window of PUBACKs, or when
//! nothing is in flight any more). On any connection error the session is
//! dropped whole; after a jittered exponential backoff a new one starts again from the oldest
//! record still in the outbox (`clean_session = true`: the outbox, not the MQTT session, is
//! the state). High priority records drain first; optionally several records travel in one
//! batch message, and a bandwidth cap paces the publishes.

mod cloudevents;
mod envelope;
mod pace;
mod window;

use std::sync::Arc;
use std::time::Duration;

use rumqttc::{
    AsyncClient, Event, MqttOptions, Outgoing, Packet, QoS, TlsConfiguration, Transport,
};
use tokio::sync::Notify;

pub use envelope::{Envelope, ENVELOPE_VERSION};
pub use pace::Pacer;
pub use window::Window;

use crate::deploy::{DeployResult, HistoryEntry};
use crate::net::Backoff;
use crate::outbox::{Cursor, Outbox, OutboxError, Record};
use crate::pipeline::Work;
use crate::telemetry::SharedStatus;

/// The MQTT user name and password of the uplink.
#[derive(Clone)]
pub struct Credentials {
    /// User name.
    pub username: String,
    /// Password (may be empty).
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({:?}, ***)", self.username)
    }
}

/// What the uplink needs to know.
#[derive(Debug, Clone)]
pub struct UplinkConfig {
    /// Cloud broker host (also the TLS server name).
    pub host: String,
    /// Cloud broker port.
    pub port: u16,
    /// TLS client configuration, for `mqtts://`.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// MQTT credentials, if any.
    pub credentials: Option<Credentials>,
    /// MQTT client id.
    pub client_id: String,
    /// Topic prefix for results.
    pub topic_prefix: String,
    /// The gateway id, put in every envelope.
    pub gateway: String,
    /// The store id, part of every record id.
    pub store_id: u64,
    /// Messages in flight at most.
    pub inflight: u16,
    /// Records per message at most (1: no batching).
    pub batch_records: usize,
    /// Encoded record bytes per batch message at most.
    pub batch_bytes: usize,
    /// Payload bytes per second at most (0: no cap).
    pub max_bytes_per_sec: u64,
    /// How results travel.
    pub encoding: crate::config::Encoding,
    /// Keep-alive.
    pub keep_alive: Duration,
    /// Largest incoming packet.
    pub max_packet: usize,
    /// Reconnect backoff.
    pub backoff: Backoff,
    /// Deploy topics to take packages from over the cloud link (empty: none).
    pub deploy_topics: Vec<String>,
}

/// The uplink's side of deployments over the cloud link: packages go to the pipeline,
/// results come back to be published.
pub struct Control {
    /// The pipeline's queue.
    pub work: crate::pipeline::Dispatch,
    /// Results to publish (topic, payload).
    pub replies: tokio::sync::mpsc::Receiver<(String, Vec<u8>)>,
    /// False once every sender of `replies` is gone.
    pub open: bool,
}

/// Runs the uplink forever (until the task is dropped). Returns only on a storage error.
pub async fn run(
    cfg: UplinkConfig,
    outbox: Arc<Outbox>,
    wake: Arc<Notify>,
    status: SharedStatus,
    mut control: Control,
) -> Result<(), OutboxError> {
    let mut backoff = cfg.backoff.clone();
    let pacer = Pacer::new(cfg.max_bytes_per_sec);
    loop {
        let links = Links {
            wake: &wake,
            pacer: pacer.as_ref(),
            status: &status,
            control: &mut control,
        };
        let e = session(&cfg, &outbox, &mut backoff, links).await?;
        let wait = backoff.next_delay();
        let error = describe(&e);
        status.disconnected(&error, wait);
        metrics::gauge!("kiri_uplink_connected").set(0.0);
        metrics::counter!("kiri_uplink_errors_total").increment(1);
        let (records, _) = outbox.usage();
        tracing::warn!(host = %cfg.host, port = cfg.port, %error, backlog = records,
            retry_in_ms = wait.as_millis() as u64, "cloud uplink down; results stay in the outbox");
        tokio::time::sleep(wait).await;
    }
}

/// A connection error in words an operator can act on.
fn describe(e: &rumqttc::ConnectionError) -> String {
    use rumqttc::ConnectionError as E;
    match e {
        E::Tls(e) => format!("TLS handshake failed: {e}{}", crate::clock::hint()),
        E::ConnectionRefused(code) => format!("the broker refused the connection: {code:?}"),
        E::Io(e) => format!("network: {e}"),
        E::MqttState(rumqttc::StateError::AwaitPingResp) => {
            "no answer to the keep-alive ping: connection lost".into()
        }
        // TLS 1.3 finishes the handshake before the server checks the client's certificate,
        // so its refusal arrives as an alert on the first read.
        other if other.to_string().contains("fatal alert") => {
            format!(
                "TLS: the broker refused the session: {other}{}",
                crate::clock::hint()
            )
        }
        other => other.to_string(),
    }
}

fn envelope(cfg: &UplinkConfig, r: &Record) -> Envelope {
    Envelope {
        id: format!("{:016x}-{}", cfg.store_id, r.seq),
        gateway: cfg.gateway.clone(),
        seq: r.seq,
        function: r.function.clone(),
        topic: r.topic.clone(),
        ts: r.created_ms,
        payload: r.payload.clone(),
    }
}

/// The topic and payload of the message carrying `records`: one envelope, or a batch message
/// when `batch_records` > 1. Public for the benchmarks (`gateway/benches`).
pub fn message(cfg: &UplinkConfig, records: &[Record]) -> (String, Vec<u8>) {
    if cfg.encoding == crate::config::Encoding::Cloudevents {
        return cloudevents::message(cfg, records);
    }
    if cfg.batch_records <= 1 {
        let r = &records[0];
        let topic = format!("{}/{}", cfg.topic_prefix, r.topic);
        (topic, envelope(cfg, r).encode())
    } else {
        let envelopes: Vec<Envelope> = records.iter().map(|r| envelope(cfg, r)).collect();
        let topic = format!("{}/$batch", cfg.topic_prefix);
        (topic, Envelope::encode_batch(&cfg.gateway, &envelopes))
    }
}

/// What a session shares with the rest of the gateway.
struct Links<'a> {
    wake: &'a Notify,
    pacer: Option<&'a Pacer>,
    status: &'a SharedStatus,
    control: &'a mut Control,
}

/// One connection's life. `Ok(error)` when the connection ended, `Err` on storage failure.
async fn session(
    cfg: &UplinkConfig,
    outbox: &Outbox,
    backoff: &mut Backoff,
    links: Links<'_>,
) -> Result<rumqttc::ConnectionError, OutboxError> {
    let Links {
        wake,
        pacer,
        status,
        control,
    } = links;
    let mut opts = MqttOptions::new(&cfg.client_id, &cfg.host, cfg.port);
    opts.set_clean_session(true)
        .set_keep_alive(cfg.keep_alive)
        .set_inflight(cfg.inflight)
        // The cloud broker decides what it accepts; MQTT's own limit is the only one here.
        .set_max_packet_size(cfg.max_packet, 268_435_455)
        .set_request_channel_capacity(cfg.inflight as usize + 8);
    if let Some(tls) = &cfg.tls {
        opts.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
            tls.clone(),
        )));
    }
    if let Some(c) = &cfg.credentials {
        opts.set_credentials(c.username.clone(), c.password.clone());
    }
    let (client, mut eventloop) = AsyncClient::new(opts, cfg.inflight as usize + 8);
    // rumqttc's `poll` is not cancel-safe (a cancelled poll can drop a request it took), so it
    // runs in its own task and hands events over a channel, which `select!` may cancel freely.
    let (events_tx, mut events) = tokio::sync::mpsc::channel(cfg.inflight as usize * 2 + 16);
    let poller = tokio::spawn(async move {
        loop {
            let event = eventloop.poll().await;
            let failed = event.is_err();
            if events_tx.send(event).await.is_err() || failed {
                return;
            }
        }
    });
    let _stop_poller = AbortOnDrop(poller);
    let mut window = Window::new(cfg.inflight as usize);
    let mut connected = false;
    let mut cursor = Cursor::default();
    let mut unflushed_acks = 0usize;
    // A batch's size is what it weighs encoded; a single record is sent whatever its size.
    let weight = |r: &Record| {
        if cfg.batch_records <= 1 {
            0
        } else if cfg.encoding == crate::config::Encoding::Cloudevents {
            cloudevents::event(cfg, r).to_string().len() + 1
        } else {
            envelope(cfg, r).encode().len() + 1
        }
    };
    loop {
        while connected && window.room() > 0 {
            // Unbatched, one read takes as many records as the window has room for: a read
            // walks the store's index, once per window rather than once per record. Under a
            // bandwidth cap, one message at a time: publishing waits for the cap, and what
            // goes next is chosen again after each wait (the functions' turns stay fair
            // rather than a window of one function's large results going first).
            let max = if cfg.batch_records > 1 {
                cfg.batch_records
            } else if pacer.is_some() {
                1
            } else {
                window.room()
            };
            let records = outbox.read(&mut cursor, max, cfg.batch_bytes, weight)?;
            if records.is_empty() {
                break;
            }
            for records in records.chunks(cfg.batch_records.max(1)) {
                let (topic, payload) = message(cfg, records);
                if let Some(pacer) = pacer {
                    pacer.pace(payload.len()).await;
                }
                metrics::counter!("kiri_uplink_bytes_total").increment(payload.len() as u64);
                if client
                    .try_publish(topic, QoS::AtLeastOnce, false, payload)
                    .is_err()
                {
                    // The request channel is sized above the window, so only a closed event
                    // loop refuses a request: end the session, the records go again on the
                    // next one.
                    return Ok(rumqttc::ConnectionError::RequestsDone);
                }
                window.published(records.iter().map(Record::id).collect());
            }
        }
        if unflushed_acks > 0 && (window.is_empty() || unflushed_acks >= cfg.inflight as usize) {
            // One flush per window of PUBACKs, or when nothing is in flight any more: a crash
            // can then resend only what was acked since, never more than a window. (Not one
            // per burst: PUBACKs come one at a time under steady load, and a flush per PUBACK
            // cost more CPU than everything else the gateway does: `make bench`.)
            outbox.flush_deletes().await?;
            unflushed_acks = 0;
        }
        tokio::select! {
            event = events.recv() => match event {
                Some(Ok(Event::Incoming(Packet::ConnAck(_)))) => {
                    connected = true;
                    cursor = Cursor::default();
                    status.connected();
                    metrics::gauge!("kiri_uplink_connected").set(1.0);
                    metrics::counter!("kiri_uplink_connects_total").increment(1);
                    tracing::info!(host = %cfg.host, port = cfg.port, tls = cfg.tls.is_some(),
                        backlog = outbox.usage().0, "cloud uplink connected");
                    if !cfg.deploy_topics.is_empty() {
                        let filters = cfg
                            .deploy_topics
                            .iter()
                            .map(|t| rumqttc::SubscribeFilter::new(t.clone(), QoS::AtLeastOnce));
                        if let Err(e) = client.try_subscribe_many(filters) {
                            tracing::error!(error = %e, "cannot subscribe to the deploy topics on the cloud link");
                        }
                    }
                }
                Some(Ok(Event::Incoming(Packet::Publish(p)))) => {
                    let work = Work::Deploy {
                        topic: p.topic.clone(),
                        payload: p.payload.to_vec(),
                    };
                    if control.work.try_send(work).is_err() {
                        // Not taken (this session acknowledges on receipt): say so, so that
                        // the operator sends it again.
                        metrics::counter!("kiri_deploy_dropped_total").increment(1);
                        tracing::warn!(topic = %p.topic, "deployment from the cloud dropped: the processing queue is full; publish it again");
                        if let Some(name) = p.topic.strip_prefix(&format!("kiri/{}/deploy/", cfg.gateway)) {
                            let entry = HistoryEntry::refused(
                                name,
                                "unknown",
                                "cloud",
                                "busy",
                                "the gateway's processing queue is full; send it again".into(),
                            );
                            let reply = crate::codec::to_cbor(&DeployResult {
                                gateway: cfg.gateway.clone(),
                                entry,
                            });
                            let _ = client.try_publish(format!("{}/result", p.topic), QoS::AtLeastOnce, false, reply);
                        }
                    }
                }
                Some(Ok(Event::Outgoing(Outgoing::Publish(pkid)))) => window.assigned(pkid),
                Some(Ok(Event::Incoming(Packet::PubAck(ack)))) => {
                    if let Some(records) = window.acked(ack.pkid) {
                        // Reset only on progress: a broker that accepts the connection but
                        // drops it on a record it will not take is not retried at full speed.
                        backoff.reset();
                        for id in &records {
                            outbox.ack(id)?;
                        }
                        unflushed_acks += 1;
                        status.delivered(records.len() as u64);
                        metrics::counter!("kiri_uplink_delivered_total").increment(records.len() as u64);
                        metrics::counter!("kiri_uplink_messages_total").increment(1);
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Ok(e),
                None => return Ok(rumqttc::ConnectionError::RequestsDone),
            },
            _ = wake.notified(), if connected && window.room() > 0 => {}
            reply = control.replies.recv(), if connected && control.open => match reply {
                Some((topic, payload)) => {
                    if client.try_publish(topic, QoS::AtLeastOnce, false, payload).is_err() {
                        metrics::counter!("kiri_deploy_replies_dropped_total").increment(1);
                    }
                }
                None => control.open = false,
            },
        }
    }
}

/// Aborts a task when dropped, so a session's poller never outlives it.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

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
mod link;
mod message;
mod pace;
mod supervise;
mod window;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

pub use envelope::{Envelope, ENVELOPE_VERSION};
pub use link::{Message, Props};
pub use pace::Pacer;
pub use supervise::{supervise, Target};
pub use window::Window;

use crate::deploy::{DeployResult, HistoryEntry};
use crate::net::Backoff;
use crate::outbox::{Cursor, Outbox, OutboxError, Record};
use crate::pipeline::Work;
use crate::telemetry::SharedStatus;
use link::Ev;

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
    /// MQTT 3.1.1 or 5.
    pub protocol: crate::config::MqttVersion,
    /// `outbox.ttl`: MQTT 5 messages expire what is left of it after.
    pub ttl: Option<Duration>,
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

/// In place of the uplink while `cloud.url` is unset: says so once (the log, the status), then
/// holds, dropping deployment replies (there is no cloud to send them to).
pub async fn off(status: SharedStatus, control: &mut Control) -> Result<(), OutboxError> {
    let why = "cloud.url is not set: results are held in the outbox (within its bounds) and \
               not forwarded; set cloud.url to a broker and reload (or restart) the gateway";
    tracing::warn!("{why}");
    status.off(why);
    metrics::gauge!("kiri_uplink_connected").set(0.0);
    while control.replies.recv().await.is_some() {}
    std::future::pending().await
}

/// Runs the uplink forever (until the task is dropped). Returns only on a storage error.
pub async fn run(
    cfg: UplinkConfig,
    outbox: Arc<Outbox>,
    wake: Arc<Notify>,
    status: SharedStatus,
    control: &mut Control,
) -> Result<(), OutboxError> {
    let mut backoff = cfg.backoff.clone();
    let pacer = Pacer::new(cfg.max_bytes_per_sec);
    // Functions held back after a refusal stay so across connections (a broker may drop
    // the connection after refusing).
    let mut held = Held::default();
    loop {
        let links = Links {
            wake: &wake,
            pacer: pacer.as_ref(),
            status: &status,
            control: &mut *control,
            held: &mut held,
        };
        let link::Ended(error) = session(&cfg, &outbox, &mut backoff, links).await?;
        let wait = backoff.next_delay();
        status.disconnected(&error, wait);
        metrics::gauge!("kiri_uplink_connected").set(0.0);
        metrics::counter!("kiri_uplink_errors_total").increment(1);
        let (records, _) = outbox.usage();
        tracing::warn!(host = %cfg.host, port = cfg.port, %error, backlog = records,
            retry_in_ms = wait.as_millis() as u64, "cloud uplink down; results stay in the outbox");
        tokio::time::sleep(wait).await;
    }
}

/// The message carrying `records`: one result, or a batch message when `batch_records` > 1.
/// `held_ms`: how long the oldest of them has been held (for the MQTT 5 message expiry).
/// Public for the benchmarks (`gateway/benches`).
pub fn message(cfg: &UplinkConfig, records: &[Record], held_ms: u64) -> Message {
    message::message(cfg, records, held_ms)
}

/// What a session shares with the rest of the gateway.
struct Links<'a> {
    wake: &'a Notify,
    pacer: Option<&'a Pacer>,
    status: &'a SharedStatus,
    control: &'a mut Control,
    held: &'a mut Held,
}

/// What outlives a connection: the read position's holds, and each held function's backoff.
#[derive(Default)]
struct Held {
    cursor: Cursor,
    refusals: HashMap<Vec<u8>, Backoff>,
}

/// One connection's life. `Ok(why it ended)` when the connection ended, `Err` on storage
/// failure.
async fn session(
    cfg: &UplinkConfig,
    outbox: &Outbox,
    backoff: &mut Backoff,
    links: Links<'_>,
) -> Result<link::Ended, OutboxError> {
    let Links {
        wake,
        pacer,
        status,
        control,
        held,
    } = links;
    let Held { cursor, refusals } = held;
    let (client, mut eventloop) = link::open(cfg);
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
    let requests_done = || link::Ended("the connection's event loop stopped".into());
    let mut window = Window::new(cfg.inflight as usize);
    // Looked up once per connection, recorded per result acknowledged.
    let latency = metrics::histogram!("kiri_result_delivery_seconds");
    let mut connected = false;
    let mut unflushed_acks = 0usize;
    // Where the store's flushes stood after the last delete (see `Outbox::flushed_since`).
    let mut acks_mark = 0u64;
    // A batch's size is what it weighs encoded; a single record is sent whatever its size.
    let weight = |r: &Record| {
        if cfg.batch_records <= 1 {
            0
        } else if cfg.encoding == crate::config::Encoding::Cloudevents {
            cloudevents::event(cfg, r).to_string().len() + 1
        } else {
            message::envelope(cfg, r).encode().len() + 1
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
            let records = outbox.read(cursor, max, cfg.batch_bytes, weight)?;
            if records.is_empty() {
                break;
            }
            for records in records.chunks(cfg.batch_records.max(1)) {
                // Only an MQTT 5 message with a TTL carries it (no clock read per record else).
                let held = if cfg.ttl.is_some() && cfg.protocol == crate::config::MqttVersion::V5 {
                    outbox.oldest_held_for(records)
                } else {
                    0
                };
                let m = message(cfg, records, held);
                if let Some(pacer) = pacer {
                    pacer.pace(m.payload.len()).await;
                }
                metrics::counter!("kiri_uplink_bytes_total").increment(m.payload.len() as u64);
                if !client.publish(m) {
                    // The request channel is sized above the window, so only a closed event
                    // loop refuses a request: end the session, the records go again on the
                    // next one.
                    return Ok(requests_done());
                }
                window.published(
                    records.iter().map(Record::id).collect(),
                    records.iter().map(|r| outbox.stamp(r)).collect(),
                );
            }
        }
        if unflushed_acks > 0 && outbox.flushed_since(acks_mark) {
            // A group commit's flush, begun after the last delete, made them all durable.
            unflushed_acks = 0;
        }
        if unflushed_acks >= cfg.inflight as usize {
            // One flush per window of PUBACKs that no group commit covered: a crash can then
            // resend at most a window, plus what was acked since the last flush of any kind.
            // Fewer deletes are made durable by the next group commit's flush or the store's
            // background flush (`gateway.flush_every_ms`): a flush of their own each time the
            // window emptied cost a disk write per result at low rates, and a flush per PUBACK
            // more CPU than everything else the gateway does (`make bench`).
            outbox.flush_deletes().await?;
            unflushed_acks = 0;
        }
        // A function held back after a refusal goes on when its hold ends.
        let release = cursor.next_release().map(|at| {
            let wait = at.saturating_sub(crate::age::mono_ms());
            tokio::time::Instant::now() + Duration::from_millis(wait)
        });
        tokio::select! {
            event = events.recv() => match event {
                Some(Ok(Ev::ConnAck)) => {
                    connected = true;
                    cursor.restart();
                    status.connected();
                    metrics::gauge!("kiri_uplink_connected").set(1.0);
                    metrics::counter!("kiri_uplink_connects_total").increment(1);
                    tracing::info!(host = %cfg.host, port = cfg.port, tls = cfg.tls.is_some(),
                        protocol = ?cfg.protocol, backlog = outbox.usage().0, "cloud uplink connected");
                    if !cfg.deploy_topics.is_empty() && !client.subscribe(&cfg.deploy_topics) {
                        tracing::error!("cannot subscribe to the deploy topics on the cloud link");
                    }
                }
                Some(Ok(Ev::Publish { topic, payload })) => {
                    deployment(cfg, &client, control, topic, payload);
                }
                Some(Ok(Ev::Sent(pkid))) => window.assigned(pkid),
                Some(Ok(Ev::Acked { pkid, refused: None })) => {
                    if let Some((records, stamps)) = window.acked(pkid) {
                        // Reset only on progress: a broker that accepts the connection but
                        // drops it on a record it will not take is not retried at full speed.
                        backoff.reset();
                        for id in &records {
                            outbox.ack(id)?;
                        }
                        acks_mark = outbox.flush_mark();
                        // A function the broker refused before takes it again: its backoff
                        // starts over. (Almost always none: no lookup per result then.)
                        if !refusals.is_empty() {
                            for id in &records {
                                refusals.remove(&id.queue);
                            }
                        }
                        unflushed_acks += 1;
                        status.delivered(records.len() as u64);
                        metrics::counter!("kiri_uplink_delivered_total").increment(records.len() as u64);
                        metrics::counter!("kiri_uplink_messages_total").increment(1);
                        let now = outbox.age().now();
                        for stamp in stamps {
                            latency.record(now.saturating_sub(stamp) as f64 / 1000.0);
                        }
                    }
                }
                Some(Ok(Ev::Acked { pkid, refused: Some(reason) })) => {
                    if let Some((records, _)) = window.acked(pkid) {
                        refused(cfg, cursor, refusals, status, &records, &reason);
                    }
                }
                Some(Ok(Ev::Other)) => {}
                Some(Err(e)) => return Ok(e),
                None => return Ok(requests_done()),
            },
            _ = wake.notified(), if connected && window.room() > 0 => {}
            _ = sleep_until(release), if connected && release.is_some() => {}
            reply = control.replies.recv(), if connected && control.open => match reply {
                Some((topic, payload)) => {
                    let m = Message { topic, payload, props: Props::default() };
                    if !client.publish(m) {
                        metrics::counter!("kiri_deploy_replies_dropped_total").increment(1);
                    }
                }
                None => control.open = false,
            },
        }
    }
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The broker refused the message carrying `records` (an MQTT 5 PUBACK reason code of 0x80
/// or above: not authorised, quota exceeded, ...). Nothing is deleted: each function whose
/// records it carried is held back for its own backoff (the others go on), then sent again
/// from the refused record. Logged once per hold, counted per reason.
fn refused(
    cfg: &UplinkConfig,
    cursor: &mut Cursor,
    refusals: &mut HashMap<Vec<u8>, Backoff>,
    status: &SharedStatus,
    records: &[crate::outbox::RecordId],
    reason: &str,
) {
    let code = reason.split(' ').next().unwrap_or(reason).to_string();
    metrics::counter!("kiri_uplink_refused_total", "reason" => code)
        .increment(records.len() as u64);
    for id in records {
        if cursor.is_held(id) {
            cursor.hold(id, 0);
            continue;
        }
        let delay = refusals
            .entry(id.queue.clone())
            .or_insert_with(|| cfg.backoff.clone())
            .next_delay();
        cursor.hold(id, crate::age::mono_ms() + delay.as_millis() as u64);
        let function = String::from_utf8_lossy(&id.queue);
        let error = format!("the cloud broker refused results of function {function}: {reason}");
        tracing::warn!(%function, seq = id.seq, %reason, retry_in_ms = delay.as_millis() as u64,
            "the cloud broker refused a result; it stays in the outbox and goes again");
        status.refused(&error);
    }
}

/// A package or command for the deployment service, from the cloud link.
fn deployment(
    cfg: &UplinkConfig,
    client: &link::Client,
    control: &mut Control,
    topic: String,
    payload: Vec<u8>,
) {
    let work = Work::Deploy {
        topic: topic.clone(),
        payload,
    };
    if control.work.try_send(work).is_ok() {
        return;
    }
    // Not taken (this session acknowledges on receipt): say so, so that the operator sends it
    // again.
    metrics::counter!("kiri_deploy_dropped_total").increment(1);
    tracing::warn!(%topic, "deployment from the cloud dropped: the processing queue is full; publish it again");
    if let Some(name) = topic.strip_prefix(&format!("kiri/{}/deploy/", cfg.gateway)) {
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
        let m = Message {
            topic: format!("{topic}/result"),
            payload: reply,
            props: Props::default(),
        };
        let _ = client.publish(m);
    }
}

/// Aborts a task when dropped, so a session's poller never outlives it.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A configuration for unit tests: CBOR, MQTT 3.1.1, no batching.
    pub(crate) fn config() -> UplinkConfig {
        UplinkConfig {
            host: "h".into(),
            port: 1,
            tls: None,
            credentials: None,
            client_id: "c".into(),
            topic_prefix: "kiri/gw".into(),
            gateway: "gw".into(),
            store_id: 0xabc,
            inflight: 1,
            batch_records: 1,
            batch_bytes: 1 << 20,
            max_bytes_per_sec: 0,
            encoding: crate::config::Encoding::Cbor,
            protocol: crate::config::MqttVersion::V311,
            ttl: None,
            keep_alive: Duration::from_secs(1),
            max_packet: 1 << 20,
            backoff: Backoff::new(Duration::from_millis(1), Duration::from_millis(2)),
            deploy_topics: Vec::new(),
        }
    }
}

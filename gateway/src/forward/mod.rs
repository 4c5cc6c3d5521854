//! Forward: drains the outbox to the cloud broker in order, with QoS 1. A record leaves the
//! outbox only when its PUBACK arrives. On any connection error the session is dropped
//! whole; after a jittered exponential backoff a new one starts again from the oldest record
//! still in the outbox (`clean_session = true`: the outbox, not the MQTT session, is the
//! state).

mod backoff;
mod window;

use std::sync::Arc;
use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, Packet, QoS};
use tokio::sync::Notify;

pub use backoff::Backoff;
pub use window::Window;

use crate::codec::Envelope;
use crate::outbox::{Outbox, OutboxError};

/// What the forwarder needs to know.
#[derive(Debug, Clone)]
pub struct ForwardConfig {
    /// Cloud broker host.
    pub host: String,
    /// Cloud broker port.
    pub port: u16,
    /// MQTT client id.
    pub client_id: String,
    /// Topic prefix for results.
    pub topic_prefix: String,
    /// The gateway id, put in every envelope.
    pub gateway: String,
    /// The store id, part of every record id.
    pub store_id: u64,
    /// Records in flight at most.
    pub inflight: u16,
    /// Keep-alive.
    pub keep_alive: Duration,
    /// Largest packet.
    pub max_packet: usize,
    /// Reconnect backoff.
    pub backoff: Backoff,
}

/// Runs the uplink forever (until the task is dropped). Returns only on a storage error.
pub async fn run(
    cfg: ForwardConfig,
    outbox: Arc<Outbox>,
    wake: Arc<Notify>,
) -> Result<(), OutboxError> {
    let mut backoff = cfg.backoff.clone();
    loop {
        match session(&cfg, &outbox, &wake, &mut backoff).await {
            Ok(e) => {
                metrics::gauge!("kiri_uplink_connected").set(0.0);
                metrics::counter!("kiri_uplink_errors_total").increment(1);
                let wait = backoff.next_delay();
                let (records, _) = outbox.usage();
                tracing::warn!(error = %e, backlog = records, retry_in_ms = wait.as_millis() as u64,
                    "cloud uplink down; results stay in the outbox");
                tokio::time::sleep(wait).await;
            }
            Err(e) => return Err(e),
        }
    }
}

fn envelope(cfg: &ForwardConfig, r: &crate::outbox::Record) -> Vec<u8> {
    Envelope {
        id: format!("{:016x}-{}", cfg.store_id, r.seq),
        gateway: cfg.gateway.clone(),
        seq: r.seq,
        function: r.function.clone(),
        topic: r.topic.clone(),
        ts: r.created_ms,
        payload: r.payload.clone(),
    }
    .encode()
}

/// One connection's life. `Ok(error)` when the connection ended, `Err` on storage failure.
async fn session(
    cfg: &ForwardConfig,
    outbox: &Outbox,
    wake: &Notify,
    backoff: &mut Backoff,
) -> Result<rumqttc::ConnectionError, OutboxError> {
    let mut opts = MqttOptions::new(&cfg.client_id, &cfg.host, cfg.port);
    opts.set_clean_session(true)
        .set_keep_alive(cfg.keep_alive)
        .set_inflight(cfg.inflight)
        .set_max_packet_size(cfg.max_packet, cfg.max_packet)
        .set_request_channel_capacity(cfg.inflight as usize + 8);
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
    let mut next = 0u64;
    loop {
        if connected && window.room() > 0 {
            for r in outbox.read_from(next, window.room())? {
                let topic = format!("{}/{}", cfg.topic_prefix, r.topic);
                if client
                    .try_publish(topic, QoS::AtLeastOnce, false, envelope(cfg, &r))
                    .is_err()
                {
                    // Cannot happen with the channel sized above the window; retry next turn.
                    break;
                }
                window.published(r.seq);
                next = r.seq + 1;
            }
        }
        tokio::select! {
            event = events.recv() => match event {
                Some(Ok(Event::Incoming(Packet::ConnAck(_)))) => {
                    connected = true;
                    next = outbox.first_seq()?.unwrap_or(0);
                    metrics::gauge!("kiri_uplink_connected").set(1.0);
                    metrics::counter!("kiri_uplink_connects_total").increment(1);
                    tracing::info!(host = %cfg.host, port = cfg.port, backlog = outbox.usage().0, "cloud uplink connected");
                }
                Some(Ok(Event::Outgoing(Outgoing::Publish(pkid)))) => window.assigned(pkid),
                Some(Ok(Event::Incoming(Packet::PubAck(ack)))) => {
                    if let Some(seq) = window.acked(ack.pkid) {
                        // Reset only on progress: a broker that accepts the connection but
                        // drops it on a record it will not take is not retried at full speed.
                        backoff.reset();
                        outbox.ack(seq)?;
                        metrics::counter!("kiri_uplink_delivered_total").increment(1);
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Ok(e),
                None => return Ok(rumqttc::ConnectionError::RequestsDone),
            },
            _ = wake.notified(), if connected && window.room() > 0 => {}
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

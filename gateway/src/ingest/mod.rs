//! Ingest: the MQTT session with the local broker. QoS 1, a persistent session
//! (`clean_session = false`) and manual acknowledgements: a message is acknowledged only by
//! the processor, after its effects are durable. Messages flow to the processor through a
//! bounded queue; when it is full this task stops reading, so the broker holds the rest.

pub mod broker;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rumqttc::{
    AsyncClient, ConnectionError, Event, EventLoop, MqttOptions, Packet, Publish, QoS, StateError,
    SubscribeFilter,
};
use tokio::sync::mpsc;

use crate::processor::Work;

/// Messages received from the local broker since start (for the live tick).
pub static RECEIVED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// One message from the local broker, waiting to be processed and then acknowledged.
#[derive(Debug)]
pub struct Incoming {
    /// The MQTT publish, kept whole so the processor can acknowledge it.
    pub publish: Publish,
    /// When it arrived, ms since the Unix epoch.
    pub received_ms: u64,
}

/// Options for an MQTT session to the local broker.
pub fn options(
    client_id: &str,
    host: &str,
    port: u16,
    max_packet: usize,
    requests: usize,
) -> MqttOptions {
    let mut o = MqttOptions::new(client_id, host, port);
    o.set_clean_session(false)
        .set_manual_acks(true)
        .set_keep_alive(Duration::from_secs(60))
        .set_max_packet_size(max_packet, max_packet)
        .set_request_channel_capacity(requests);
    o
}

/// Drives the ingest session until the processor goes away. `stale` are filters an earlier
/// configuration subscribed to that the current one does not use: the persistent session
/// still holds them, so they are unsubscribed on the first connection.
pub async fn run(
    mut eventloop: EventLoop,
    client: AsyncClient,
    subscriptions: Arc<std::sync::Mutex<Vec<String>>>,
    mut stale: Vec<String>,
    max_packet: usize,
    ready: Arc<AtomicBool>,
    tx: mpsc::Sender<Work>,
) {
    let mut delay =
        crate::forward::Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::Publish(publish))) => {
                metrics::counter!("kiri_ingest_messages_total").increment(1);
                RECEIVED.fetch_add(1, Ordering::Relaxed);
                let incoming = Incoming {
                    publish,
                    received_ms: crate::now_ms(),
                };
                if tx.send(Work::Message(incoming)).await.is_err() {
                    return;
                }
            }
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                delay.reset();
                metrics::gauge!("kiri_ingest_connected").set(1.0);
                tracing::info!(
                    session_present = ack.session_present,
                    "connected to the local broker"
                );
                for filter in stale.drain(..) {
                    tracing::info!(%filter, "unsubscribing a trigger no function uses any more");
                    if let Err(e) = client.try_unsubscribe(filter) {
                        tracing::error!(error = %e, "cannot queue an unsubscribe request");
                    }
                }
                // Subscribe on every connection, even when the broker kept the session: the
                // configuration may have gained triggers since (subscribing is idempotent).
                let subscriptions = subscriptions.lock().expect("subscriptions lock").clone();
                if subscriptions.is_empty() {
                    metrics::gauge!("kiri_ingest_subscribed").set(1.0);
                    ready.store(true, Ordering::Relaxed);
                } else {
                    let filters = subscriptions
                        .iter()
                        .map(|f| SubscribeFilter::new(f.clone(), QoS::AtLeastOnce));
                    if let Err(e) = client.try_subscribe_many(filters) {
                        tracing::error!(error = %e, "cannot queue the subscription request");
                    }
                }
            }
            Ok(Event::Incoming(Packet::SubAck(ack))) => {
                use rumqttc::SubscribeReasonCode::Failure;
                let subscriptions = subscriptions.lock().expect("subscriptions lock").clone();
                if ack.return_codes.iter().any(|c| matches!(c, Failure)) {
                    tracing::error!(?subscriptions, "the local broker refused a subscription");
                } else {
                    metrics::gauge!("kiri_ingest_subscribed").set(1.0);
                    ready.store(true, Ordering::Relaxed);
                    tracing::info!(?subscriptions, "subscribed");
                }
            }
            Ok(_) => {}
            Err(e) => {
                if let ConnectionError::MqttState(StateError::Deserialization(
                    rumqttc::mqttbytes::Error::PayloadSizeLimitExceeded(size),
                )) = &e
                {
                    // Not acknowledgeable (its packet id was never read), so the broker sends it
                    // again on every reconnect: only the broker's configuration can end this.
                    metrics::counter!("kiri_ingest_rejected_total", "reason" => "over_packet_limit").increment(1);
                    tracing::error!(
                        size,
                        max_packet_bytes = max_packet,
                        "the local broker sent a message larger than broker.max_packet_bytes; it will \
                         redeliver it on every reconnect. Limit message sizes at the broker (Mosquitto: \
                         message_size_limit no larger than broker.max_message_bytes) or raise \
                         broker.max_packet_bytes"
                    );
                }
                metrics::gauge!("kiri_ingest_connected").set(0.0);
                metrics::gauge!("kiri_ingest_subscribed").set(0.0);
                ready.store(false, Ordering::Relaxed);
                metrics::counter!("kiri_ingest_connection_errors_total").increment(1);
                let wait = delay.next_delay();
                tracing::warn!(error = %e, retry_in_ms = wait.as_millis() as u64, "local broker connection failed");
                tokio::time::sleep(wait).await;
            }
        }
    }
}

//! Ingest: an MQTT session with the site broker (the embedded one or an external one): the
//! control session, or one function lane's. QoS 1, a persistent session
//! (`clean_session = false`) and manual acknowledgements: a message is acknowledged only after
//! its effects are durable. Messages flow to the lane's pipeline through its bounded queue;
//! when it is full this task stops reading, so the broker holds the rest.
//!
//! The pipeline hands the acknowledgements back and this task writes them itself, each
//! before it reads anything more (`session.rs` is the one place that reaches below
//! rumqttc's request queue to do so). Through rumqttc's request queue they would wait: its event
//! loop takes one request per turn but reads up to ten messages, hands those out before its
//! next turn, and is not polled at all while the processing queue is full. Behind a broker
//! that keeps sending (an in-flight window that is large, unlimited, or not kept: Mosquitto
//! 2.0.11 overshoots `max_inflight_messages` once queued messages move into flight), about
//! one acknowledgement would go out per ten messages read, and a crash would have the broker
//! redeliver every input committed since. Written here, the committed inputs still
//! unacknowledged are at most those the pipeline took in since this task last ran:
//! `broker.queue + broker.batch`.

pub mod drops;
mod ready;
mod session;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use rumqttc::{
    AsyncClient, ConnectionError, Event, EventLoop, MqttOptions, Packet, QoS, StateError,
    SubscribeFilter,
};
use tokio::sync::mpsc;

use crate::net::Backoff;
use crate::pipeline::{Ack, Incoming, Work};
use crate::telemetry::RECEIVED;
pub use ready::{Readiness, SessionState};
use session::Session;

/// Options for an MQTT session to the site broker.
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

/// Turns Nagle's algorithm off for what `eventloop` sends (acknowledgements, results): each
/// goes at once instead of waiting for the TCP acknowledgement of the one before.
pub fn no_delay(eventloop: &mut rumqttc::EventLoop) {
    eventloop.network_options.set_tcp_nodelay(true);
}

/// The ingest task's channels with the pipeline.
#[derive(Debug)]
pub struct Handoff {
    /// Messages to process.
    pub work: mpsc::Sender<Work>,
    /// Acknowledgements of committed messages, written before anything more is read.
    pub acks: mpsc::Receiver<Ack>,
}

/// Drives the ingest session until the pipeline goes away. `stale` are filters an earlier
/// configuration subscribed to that the current one does not use: the persistent session
/// still holds them, so they are unsubscribed on the first connection.
pub async fn run(
    eventloop: EventLoop,
    client: AsyncClient,
    subscriptions: Arc<std::sync::Mutex<Vec<String>>>,
    mut stale: Vec<String>,
    max_packet: usize,
    ready: SessionState,
    handoff: Handoff,
) {
    let Handoff { work: tx, mut acks } = handoff;
    let mut session = Session::new(eventloop);
    let mut delay = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    let mut connection = 0;
    loop {
        // An acknowledgement may interrupt `poll`. That loses nothing here: this session is
        // sent QoS 0 and 1 messages only, which `poll` does not answer, and its requests,
        // (un)subscriptions, go into the write buffer before `poll` waits on the socket (as
        // long as less than rumqttc's 8 KiB is waiting there); what `poll` has read stays
        // buffered in the event loop.
        let connected = session.connected();
        let event = tokio::select! {
            biased;
            Some(ack) = acks.recv(), if connected => {
                session.acknowledge(connection, ack, &mut acks).await;
                continue;
            }
            event = session.poll() => event,
        };
        match event {
            Ok(Event::Incoming(Packet::Publish(publish))) => {
                metrics::counter!("kiri_ingest_messages_total").increment(1);
                RECEIVED.fetch_add(1, Ordering::Relaxed);
                let incoming = Incoming {
                    publish,
                    received_ms: crate::now_ms(),
                    connection,
                };
                // Wait for room in the queue (the broker holds the rest meanwhile), still
                // acknowledging what the pipeline commits.
                let permit = loop {
                    tokio::select! {
                        biased;
                        Some(ack) = acks.recv() => {
                            session.acknowledge(connection, ack, &mut acks).await;
                        }
                        permit = tx.reserve() => break permit,
                    }
                };
                let Ok(permit) = permit else { return };
                permit.send(Work::Message(incoming));
            }
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                connection += 1;
                delay.reset();
                ready.set(true, false);
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
                    ready.set(true, true);
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
                    ready.set(true, true);
                    tracing::info!(?subscriptions, "subscribed");
                }
            }
            Ok(_) => {}
            Err(e) => {
                // Messages rumqttc read on the dead connection and still holds would come out
                // after the next ConnAck, as if sent on the new one: drop them, the broker
                // sends them again.
                session.drop_buffered();
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
                ready.set(false, false);
                metrics::counter!("kiri_ingest_connection_errors_total").increment(1);
                let wait = delay.next_delay();
                tracing::warn!(error = %e, retry_in_ms = wait.as_millis() as u64, "local broker connection failed");
                tokio::time::sleep(wait).await;
            }
        }
    }
}

/// Ends the persistent session `options` names at the site broker (a function that is gone):
/// connects with a clean session, which drops what the broker kept for it (subscriptions,
/// queued messages), then disconnects. Gives up after 10 s (the broker may be down: the next
/// start tries again).
pub async fn forget_session(mut options: MqttOptions) -> bool {
    options.set_clean_session(true);
    let (client, mut eventloop) = AsyncClient::new(options, 4);
    let forgotten = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => return true,
                Ok(_) => {}
                Err(_) => return false,
            }
        }
    })
    .await
    .unwrap_or(false);
    if forgotten {
        let _ = client.try_disconnect();
        let _ = tokio::time::timeout(Duration::from_secs(2), eventloop.poll()).await;
    }
    forgotten
}

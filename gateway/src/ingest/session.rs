//! The ingest session's event loop, and the two things it needs that rumqttc's client API
//! does not offer: writing acknowledgements at once, and dropping what was read on a dead
//! connection. rumqttc (0.25) serves its request queue one request per `poll` turn while it
//! reads up to ten messages per turn, so acknowledgements sent through it would trail the
//! messages (see the module above); and messages it read on a connection that then failed
//! stay buffered and come out after the next CONNACK, as if sent on the new connection.
//! `EventLoop` exposes its connection and state as public fields for such uses; this file is
//! the only one in the gateway that touches them.

use std::time::Duration;

use rumqttc::{ConnectionError, Event, EventLoop, Packet, PubAck};
use tokio::sync::mpsc;

use crate::pipeline::Ack;

/// How long writing acknowledgements may take before the connection is left to fail.
const ACK_WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// The event loop of the ingest session.
pub(super) struct Session {
    eventloop: EventLoop,
}

impl Session {
    pub(super) fn new(eventloop: EventLoop) -> Session {
        Session { eventloop }
    }

    /// Whether a connection is open (acknowledgements can be written).
    pub(super) fn connected(&self) -> bool {
        self.eventloop.network.is_some()
    }

    /// The next event (connecting first when there is no connection).
    pub(super) async fn poll(&mut self) -> Result<Event, ConnectionError> {
        self.eventloop.poll().await
    }

    /// Drops the messages read on the connection that just failed: the broker sends them
    /// again on the next one.
    pub(super) fn drop_buffered(&mut self) {
        self.eventloop.state.events.clear();
    }

    /// Writes `first` and every other acknowledgement waiting in `more` on the open
    /// connection, `connection`, and flushes them. Those of messages from an earlier
    /// connection are dropped (the broker redelivers the messages). A write that fails is
    /// left to `poll`, which finds the connection broken; the broker redelivers those
    /// messages too.
    pub(super) async fn acknowledge(
        &mut self,
        connection: u64,
        first: Ack,
        more: &mut mpsc::Receiver<Ack>,
    ) {
        let Some(network) = self.eventloop.network.as_mut() else {
            return;
        };
        let mut next = Some(first);
        while let Some(ack) = next {
            if ack.connection == connection {
                if let Err(e) = network.write(Packet::PubAck(PubAck::new(ack.pkid))).await {
                    tracing::debug!(error = %e, "cannot write an acknowledgement");
                    return;
                }
            } else {
                tracing::debug!(
                    pkid = ack.pkid,
                    "acknowledgement for a closed connection dropped"
                );
            }
            next = more.try_recv().ok();
        }
        match tokio::time::timeout(ACK_WRITE_TIMEOUT, network.flush()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::debug!(error = %e, "cannot send acknowledgements"),
            Err(_) => tracing::debug!("sending acknowledgements timed out"),
        }
    }
}

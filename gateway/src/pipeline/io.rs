//! The pipeline's I/O with the site broker, behind three small traits so that the core runs
//! without tokio, sockets or MQTT: handing acknowledgements back to the ingest task,
//! publishing to the site broker, and changing the ingest session's subscriptions. `run.rs`
//! implements them over a tokio channel and rumqttc clients; the unit tests over recorders.
//! None of them may wait: the pipeline must keep committing (and stop when asked) whatever
//! the site broker does.

use super::work::Ack;

/// What became of an acknowledgement handed back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandBack {
    /// The ingest task has it.
    Taken,
    /// The ingest task's queue is full: try again later.
    Full,
    /// The ingest task is gone (shutting down): the broker redelivers the message.
    Gone,
}

/// Hands acknowledgements of committed messages back to the ingest task, which writes them.
pub trait Acks {
    /// Hands `ack` back without waiting.
    fn hand_back(&mut self, ack: Ack) -> HandBack;
}

/// Publishes to the site broker: the functions' `publish` outputs and deployment results.
pub trait Publish {
    /// Queues a QoS 1 message without waiting; why not, if it could not be queued (the site
    /// session is down or its queue full).
    fn publish(&mut self, topic: String, payload: Vec<u8>) -> Result<(), String>;
}

/// Changes the ingest session's subscriptions.
pub trait Subscriptions {
    /// Requests subscriptions to `filters` (QoS 1) without waiting; `false` if the request
    /// could not be queued.
    fn subscribe(&mut self, filters: &[String]) -> bool;
    /// Requests the end of the subscription to `filter`; `false` if it could not be queued.
    fn unsubscribe(&mut self, filter: &str) -> bool;
    /// The subscriptions are now `all`: keep the list, so that a later start can unsubscribe
    /// what it no longer needs (the session is persistent).
    fn settled(&mut self, all: &[String]);
    /// A deployment added, replaced or removed a function: the lanes follow (for the
    /// control lane; nothing to do where one lane serves all functions).
    fn functions_changed(&mut self) {}
}

/// The three together, as the core takes them.
pub trait Site: Acks + Publish + Subscriptions {}

impl<T: Acks + Publish + Subscriptions> Site for T {}

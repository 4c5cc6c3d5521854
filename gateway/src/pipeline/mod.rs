//! The pipeline: from work taken in to effects made durable, and only then acknowledged.
//!
//! The gateway runs one pipeline per function (a lane: [`Role::Lane`], fed by that function's
//! own session with the site broker) and one for deployments ([`Role::Control`]); tools and
//! tests run one for everything ([`Role::All`]). Producers (ingest, the timer and HTTP
//! triggers, retries and replays, the uplink's deployments) put [`Work`] on a lane's bounded
//! queue (`broker.queue`; [`Dispatch`] picks the lane); `run.rs` takes it in groups of at most
//! `broker.batch` and hands each group to the lane's [`Core`]:
//!
//! 1. each message is checked (size, well-formed CBOR: else it is rejected into the dead
//!    letters) and routed by the registry to the functions its topic triggers; timer ticks,
//!    HTTP calls and replays name their function;
//! 2. the runtime runs the jobs, a function's jobs in order on its instance, different
//!    functions (and the instances of a function with `concurrency` > 1) in parallel;
//! 3. each job's result is staged in the [`Journal`] as it finishes: outputs and state writes
//!    in one transaction, or a dead letter;
//! 4. its results are readable by the uplink as soon as written; one flush makes the whole
//!    segment durable (group commit), or, with a commit window (`gateway.commit_window_ms`),
//!    one flush when the window closes makes every segment written in it durable;
//! 5. only then are its HTTP calls answered, its `publish` outputs sent to the site broker,
//!    and its QoS 1 messages acknowledged (handed back to the ingest task, which writes the
//!    PUBACKs).
//!
//! A group is one segment unless deployments split it: they take effect between segments, so
//! that work queued before a deployment runs on the old version. The invariants the unit
//! tests check (`tests.rs`, including a model check over random sequences): no acknowledgement
//! and no answer before the flush of their segment (or window); a failed flush acknowledges
//! and answers nothing of its segment (and stops the pipeline; its results, written, may be
//! at the cloud, and their inputs come again); a failed invocation leaves no state and no
//! output; a function's results keep the order of its events.
//!
//! - `work.rs`: what flows in (the leaf every producer imports).
//! - `core.rs`: the pure core, with its commit window (`control.rs`: its deployments and
//!   subscriptions); `journal.rs`: what it writes, and the seam for storage faults; `io.rs`:
//!   the traits behind which its I/O with the site broker lies.
//! - `run.rs`: the thread that drives it, and that I/O over tokio and rumqttc.

mod admit;
mod control;
mod core;
mod io;
mod journal;
mod run;
mod work;

pub use self::core::{Core, Limits, Role, Step};
pub use io::{Acks, HandBack, Publish, Site, Subscriptions};
pub use journal::{Durable, Journal};
pub use run::{run, LocalLanes, SiteLink, Stop};
pub use work::{
    Ack, Dispatch, HttpInvoke, Incoming, InvokeFailure, Retries, Work, HTTP_TOPIC, TIMER_TOPIC,
};

use crate::outbox::OutboxError;

/// The pipeline could not commit; the gateway must stop rather than acknowledge.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    /// The outbox failed.
    #[error(transparent)]
    Outbox(#[from] OutboxError),
    /// The dead-letter store failed.
    #[error("dead letters: {0}")]
    DeadLetters(#[from] sled::Error),
    /// The gateway is shutting down while waiting for outbox room; the group is not acked.
    #[error("shutting down")]
    ShuttingDown,
}

#[cfg(test)]
mod tests;

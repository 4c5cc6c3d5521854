//! Kiri: a WebAssembly function runtime for IoT edge gateways.
//!
//! The modules follow the data flow: [`ingest`] (MQTT in) → [`dispatch`] (topic → functions)
//! → [`runtime`] (wasmi sandbox) → [`outbox`] (durable FIFO) → [`forward`] (MQTT to the cloud),
//! tied together by the [`processor`] and started by [`gateway::run`]; [`timers`] are the
//! other trigger.

pub mod clock;
pub mod codec;
pub mod config;
pub mod dashboard;
pub mod dead_letter;
pub mod deploy;
pub mod directory;
pub mod dispatch;
pub mod forward;
/// Fuzz targets (`fuzz/`, `tests/fuzz`): not part of the gateway's API.
#[doc(hidden)]
pub mod fuzzing;
pub mod gateway;
pub mod identity;
pub mod ingest;
pub mod live;
pub mod outbox;
pub mod processor;
pub mod retry;
pub mod runtime;
pub mod store;
pub mod timers;

pub use config::Config;
pub use gateway::run;

/// Wall-clock time in milliseconds since the Unix epoch (0 if the clock is before 1970).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

//! Kiri: a WebAssembly function runtime for IoT edge gateways.
//!
//! The modules follow the data flow (`docs/architecture.md` walks one reading through them):
//!
//! - [`site_broker`] (the broker sensors publish to) → [`ingest`] (Kiri's MQTT session with
//!   it) → [`pipeline`] (groups of work, routed by the [`registry`], run by the [`runtime`],
//!   committed to the [`outbox`] and [`dead_letters`] in the [`store`], then acknowledged) →
//!   [`uplink`] (the outbox drained to the cloud broker).
//! - The other producers of work: [`timers`], the HTTP trigger in [`http`], retries in
//!   [`dead_letters`], deployments ([`deploy`]) from the site broker or the uplink.
//! - Beside them: [`telemetry`] (log lines, live events, metering), [`config`], and the leaves
//!   [`net`], [`crypto`], [`codec`] and [`clock`]. [`gateway::run`] starts it all.

pub mod age;
pub mod clock;
pub mod codec;
pub mod config;
pub mod crypto;
pub mod dead_letters;
pub mod deploy;
pub mod formats;
/// Fuzz targets (`fuzz/`, `tests/fuzz`): not part of the gateway's API.
#[doc(hidden)]
pub mod fuzzing;
pub mod gateway;
pub mod http;
pub mod ingest;
pub mod ledger;
pub mod net;
pub mod outbox;
pub mod pipeline;
pub mod registry;
pub mod runtime;
pub mod site_broker;
pub mod store;
pub mod telemetry;
pub mod timers;
pub mod uplink;

pub use config::Config;
pub use gateway::run;

/// Wall-clock time in milliseconds since the Unix epoch (0 if the clock is before 1970).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

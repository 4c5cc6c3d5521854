//! Fuzz targets: one entry per parser or boundary that takes bytes from outside, each taking
//! `&[u8]` and running the real code on it. None may panic on any input, and each asserts
//! the invariants its code promises (round trips, checksums, the reference topic matcher,
//! the sandbox's limits), so a wrong answer fails like a crash.
//!
//! Two drivers call them: `fuzz/` (cargo-fuzz and libFuzzer, nightly; `make fuzz`) and
//! `tests/fuzz` (stable, part of `make test`), which replays the committed seeds and
//! regressions under `fuzz/` and then a bounded number of seeded random mutations of them.
//!
//! | target | what it feeds |
//! |---|---|
//! | `codec` | the CBOR input check, envelopes, batches, readings, dead letters, packages, stored deploy state |
//! | `deploy` | package parsing and verification, raw or signed by a trusted key over a fuzzed manifest |
//! | `config` | the TOML configuration loader with `KIRI_*` environment overrides |
//! | `topic` | MQTT topic name and filter validation, matching, covering, minimal covers |
//! | `outbox_record` | the outbox record decoder, on raw bytes and on corrupted valid records |
//! | `host_abi` | the runtime and its host functions, under a guest that runs the input as host calls ([`HostAbi`]) |

mod codec;
mod config;
mod deploy;
mod host_abi;
mod record;
mod topic;

pub use codec::codec;
pub use config::config;
pub use deploy::{deploy, signing_key};
pub use host_abi::HostAbi;
pub use record::outbox_record;
pub use topic::topic;

/// The targets' names, as `fuzz/` and the seed folders spell them.
pub const TARGETS: [&str; 6] = [
    "codec",
    "deploy",
    "config",
    "topic",
    "outbox_record",
    "host_abi",
];

/// The entry of a target that needs no setup (all but `host_abi`), by name.
pub fn stateless(target: &str) -> Option<fn(&[u8])> {
    Some(match target {
        "codec" => codec,
        "deploy" => deploy,
        "config" => config,
        "topic" => topic,
        "outbox_record" => outbox_record,
        _ => return None,
    })
}

/// Splits `data` at a two-byte little-endian length: the first part and the rest.
fn split(data: &[u8]) -> (&[u8], &[u8]) {
    let (len, rest) = match data {
        [a, b, rest @ ..] => (usize::from(u16::from_le_bytes([*a, *b])), rest),
        _ => (0, data),
    };
    rest.split_at(len.min(rest.len()))
}

/// An outbox record's stored value, as the outbox writes it (for seeds).
pub fn encode_record(
    created_ms: u64,
    held_ms: u64,
    function: &str,
    topic: &str,
    payload: &[u8],
) -> Vec<u8> {
    crate::outbox::record::encode(created_ms, held_ms, function, topic, payload)
}

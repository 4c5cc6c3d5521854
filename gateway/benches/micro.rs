//! Micro benchmarks of the gateway's hot paths, with criterion, through the library's public
//! API. Ids are `<group>/<bench>` (results in `target/criterion/<group>/<bench>/new/`):
//!
//! - `topic/*`: routing an incoming topic to the functions it triggers;
//! - `codec/*`: the CBOR check of every input, the reading decode, the forwarded envelope;
//! - `invoke/*`, `host/*`: invocations (warm, cold), compiling, host call round trips;
//! - `kv/*`: key-value state through the host API, and its commit;
//! - `outbox/*`: append + group commit with fsync, and the uplink's drain;
//! - `deploy/*`: signature and manifest checks of a signed package;
//! - `example/*`: each example function in wasm and natively, with its fuel.
//!
//! `cargo bench -p kiri --bench micro` measures (a few minutes); `cargo test -p kiri --bench
//! micro` runs each benchmark once, as a smoke test. Both need `make functions`. No timing is
//! asserted anywhere: the numbers are for reading.

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};

#[path = "micro/codec.rs"]
mod codec;
#[path = "micro/deploy.rs"]
mod deploy;
#[path = "micro/examples.rs"]
mod examples;
#[path = "micro/fixtures.rs"]
mod fixtures;
#[path = "micro/invoke.rs"]
mod invoke;
#[path = "micro/kv.rs"]
mod kv;
#[path = "micro/outbox.rs"]
mod outbox;
#[path = "micro/topic.rs"]
mod topic;

/// Short runs (the suite takes about three minutes), and the production metrics recorder.
/// 10,000 bootstrap resamples instead of 100,000: plenty for 30 samples, and the analysis is
/// single-threaded without criterion's rayon feature.
fn config() -> Criterion {
    fixtures::install_metrics();
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(30)
        .nresamples(10_000)
}

criterion_group! {
    name = micro;
    config = config();
    targets = topic::bench, codec::bench, invoke::bench, kv::bench, outbox::bench,
        deploy::bench, examples::bench
}
criterion_main!(micro);

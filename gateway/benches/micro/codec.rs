//! `codec/*`: the CBOR work per event: the well-formedness check every input gets, the reading
//! decode (`kiri_reading`, what the SDK's functions run), and the envelope the uplink wraps
//! each result in (single and batched).

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput};
use kiri::codec;
use kiri::net::Backoff;
use kiri::outbox::{Priority, Record};
use kiri::uplink::{self, UplinkConfig};

use crate::fixtures;

/// The uplink's settings as the defaults make them, with `batch_records` per message.
fn forward_config(batch_records: usize) -> UplinkConfig {
    UplinkConfig {
        host: "cloud.example".into(),
        port: 8883,
        tls: None,
        credentials: None,
        client_id: "kiri-gw-01".into(),
        topic_prefix: "kiri/gw-01".into(),
        gateway: "gw-01".into(),
        store_id: 0x5eed_5eed_5eed_5eed,
        inflight: 64,
        batch_records,
        batch_bytes: 64 << 10,
        max_bytes_per_sec: 0,
        encoding: Default::default(),
        protocol: Default::default(),
        ttl: None,
        keep_alive: Duration::from_secs(30),
        max_packet: 1 << 20,
        backoff: Backoff::new(Duration::from_millis(200), Duration::from_secs(30)),
        deploy_topics: Vec::new(),
    }
}

/// An outbox record as a function's alert leaves it.
pub fn record(seq: u64) -> Record {
    Record {
        seq,
        priority: Priority::Normal,
        created_ms: 1_767_225_600_000 + seq,
        held_ms: Some(seq),
        function: "threshold".into(),
        topic: "alerts/node-17/temperature".into(),
        payload: fixtures::reading("node-17", "temperature", 31.4, "C", seq),
    }
}

/// Registers the group.
pub fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("codec");
    let payload = fixtures::reading("node-17", "temperature", 21.5, "C", 42);
    codec::check_well_formed(&payload).expect("a reading is CBOR");
    kiri_reading::Reading::decode(&payload).expect("functions read what nodes write");
    g.bench_function("check_well_formed_reading", |b| {
        b.iter(|| codec::check_well_formed(black_box(&payload)))
    });
    g.bench_function("decode_reading", |b| {
        b.iter(|| kiri_reading::Reading::decode(black_box(&payload)))
    });

    let single = forward_config(1);
    let one = [record(7)];
    g.bench_function("encode_envelope", |b| {
        b.iter(|| uplink::message(&single, black_box(&one), 0))
    });
    let batched = forward_config(32);
    let records: Vec<Record> = (0..32).map(record).collect();
    g.throughput(Throughput::Elements(records.len() as u64));
    g.bench_function("encode_batch32", |b| {
        b.iter(|| uplink::message(&batched, black_box(&records), 0))
    });
    g.finish();
}

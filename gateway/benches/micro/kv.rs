//! `kv/*`: a function's key-value state as it sees it: `kv_get` of a stored key and `kv_put`
//! through the host API (1000 calls per invocation, throughput per call); `store_get`, the
//! sled read behind `kv_get`; and `commit_batch128`: 128 invocations' state writes, each
//! committed as the pipeline commits it (one sled transaction, with the invocation's
//! results: none here), then the group commit (flush and fsync), on the gateway's on-disk
//! store. Throughput: per write. A transaction returns before its log write reaches the disk;
//! the flush waits for all of them, so only the group's time tells the cost.

use std::hint::black_box;

use criterion::{Criterion, SamplingMode, Throughput};

use crate::fixtures;
use crate::invoke::{call_loop, CALLS};

/// Registers the group.
pub fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temporary folder");
    let (store, outbox) = fixtures::disk_store(dir.path());
    let mut rt = fixtures::runtime(store.db.clone());
    let value = b"0123456789abcdef01234567".to_vec();
    let write = [(b"key".to_vec(), Some(value.clone()))];

    let get = call_loop(
        "(drop (call $kv_get (i32.const 16) (i32.const 3) (i32.const 64) (i32.const 64)))",
    );
    let get = fixtures::load(&mut rt, "kv_get", &get, &[]);
    // The key, stored in the function's own namespace as the pipeline commits a write.
    let tree = rt.invoke(get, "bench/kv", b"", 0).expect("invocation").kv;
    outbox
        .append_with_state(&[], Some((&tree, &write)))
        .expect("commit");
    let put = call_loop(
        "(drop (call $kv_put (i32.const 16) (i32.const 3) (i32.const 32) (i32.const 24)))",
    );
    let put = fixtures::load(&mut rt, "kv_put", &put, &[]);
    let written = rt.invoke(put, "bench/kv", b"", 0).expect("invocation");
    assert_eq!(
        written.kv_writes, write,
        "the guest writes what is committed"
    );

    let mut g = c.benchmark_group("kv");
    g.throughput(Throughput::Elements(CALLS));
    for (name, f) in [("get_hit", get), ("put", put)] {
        let job = fixtures::job(f, "bench/kv", b"");
        g.bench_function(format!("{name}_x{CALLS}"), |b| {
            b.iter(|| fixtures::run(&mut rt, black_box(job)))
        });
    }
    g.throughput(Throughput::Elements(1));
    g.bench_function("store_get", |b| b.iter(|| tree.get(black_box(b"key"))));
    g.throughput(Throughput::Elements(128));
    g.sampling_mode(SamplingMode::Flat);
    g.bench_function("commit_batch128", |b| {
        b.iter(|| {
            for _ in 0..128 {
                let state = Some((&tree, black_box(&write[..])));
                outbox.append_with_state(&[], state).expect("commit");
            }
            outbox.flush().expect("group commit")
        })
    });
    g.finish();
}

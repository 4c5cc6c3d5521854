//! `outbox/*`: the durable FIFO on a real file system (a temporary folder), opened as the
//! gateway opens it (disk guard, `fsync` after each group commit: `gateway.fsync = true`).
//!
//! - `append_commit_batch{1,128}`: a group of 1 or 128 invocations, each appending its one
//!   result, then the group commit (one flush and fsync). Throughput: per record.
//! - `drain_burst64`: what the forwarder does for a window of 64 messages with the defaults
//!   (`batch_records = 1`, `inflight = 64`): 64 reads of one record, 64 acks (deletes), one
//!   flush of the deletes. Throughput: per record.

use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use kiri::outbox::{Cursor, NewRecord, Outbox};
use kiri::store::Store;

use crate::fixtures;

/// The outbox as `gateway::run` opens it, in `dir`.
fn open(dir: &std::path::Path) -> (Store, Outbox) {
    let g = kiri::Config::default().gateway;
    assert!(g.fsync, "fsync after each group commit is the default");
    let store = Store::open(dir, g.cache_bytes, g.flush_every_ms).expect("store");
    let outbox = Outbox::open(&store.db, kiri::Config::default().outbox)
        .expect("outbox")
        .guard_disk(dir)
        .fsync_log(&store.log_path)
        .expect("sled's log file");
    (store, outbox)
}

fn record(seq: u64) -> NewRecord {
    NewRecord {
        function: "threshold".into(),
        topic: "alerts/node-17/temperature".into(),
        payload: fixtures::reading("node-17", "temperature", 31.4, "C", seq),
        created_ms: kiri::now_ms(),
    }
}

/// Registers the group.
pub fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temporary folder");
    let (_store, outbox) = open(dir.path());
    let new = record(1);
    let mut g = c.benchmark_group("outbox");
    for batch in [1u64, 128] {
        g.throughput(Throughput::Elements(batch));
        g.bench_function(format!("append_commit_batch{batch}"), |b| {
            b.iter_custom(|iters| {
                let mut took = Duration::ZERO;
                for _ in 0..iters {
                    let start = Instant::now();
                    let mut seqs = Vec::with_capacity(batch as usize);
                    for _ in 0..batch {
                        seqs.extend(outbox.append(std::slice::from_ref(&new)).expect("append"));
                    }
                    outbox.flush().expect("group commit");
                    took += start.elapsed();
                    // Untimed: the uplink acknowledges them, so the outbox stays near empty.
                    for seq in seqs {
                        outbox
                            .ack(kiri::outbox::Priority::Normal, seq)
                            .expect("ack");
                    }
                }
                took
            })
        });
    }

    const BURST: usize = 64;
    let tokio = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("tokio runtime");
    let mut cursor = Cursor::default();
    let mut stocked = 0usize;
    g.throughput(Throughput::Elements(BURST as u64));
    g.bench_function(format!("drain_burst{BURST}"), |b| {
        b.iter_custom(|iters| {
            let mut took = Duration::ZERO;
            for _ in 0..iters {
                if stocked < BURST {
                    // Untimed: 64 bursts' worth of committed records at a time.
                    let records: Vec<NewRecord> =
                        (0..BURST * 64).map(|i| record(i as u64)).collect();
                    outbox.append(&records).expect("append");
                    outbox.flush().expect("commit");
                    stocked += records.len();
                }
                let start = Instant::now();
                let mut sent = Vec::with_capacity(BURST);
                for _ in 0..BURST {
                    let r = outbox.read(&mut cursor, 1, 64 << 10, |_| 0).expect("read");
                    sent.extend(r.into_iter().map(|r| (r.priority, r.seq)));
                }
                assert_eq!(sent.len(), BURST, "the stock holds a burst");
                for (priority, seq) in sent {
                    outbox.ack(priority, seq).expect("ack");
                }
                tokio.block_on(outbox.flush_deletes()).expect("flush");
                took += start.elapsed();
                stocked -= BURST;
            }
            took
        })
    });
    g.finish();
}

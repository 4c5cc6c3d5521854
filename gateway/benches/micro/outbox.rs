//! `outbox/*`: the durable FIFO on a real file system (a temporary folder), opened as the
//! gateway opens it (disk guard, `fsync` after each group commit: `gateway.fsync = true`).
//!
//! - `append_commit_batch{1,128}`: a group of 1 or 128 invocations, each appending its one
//!   result (as the pipeline does), then the group commit (one flush and fsync). Throughput:
//!   per record. Each append is one sled batch, and sled writes its log buffer out and waits
//!   for it (`sync_file_range`) at the start of every batch: a disk write per record.
//! - `append_commit_single_batch128`: the same 128 records in one append, for comparison.
//! - `drain_burst64`: what the uplink does for a window of 64 messages with the defaults
//!   (`batch_records = 1`, `inflight = 64`): 64 reads of one record, 64 acks (deletes), one
//!   flush of the deletes. Throughput: per record.

use std::time::{Duration, Instant};

use criterion::{Criterion, SamplingMode, Throughput};
use kiri::outbox::{Cursor, NewRecord, Priority, Record, RecordId};

use crate::fixtures;

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
    let (_store, outbox) = fixtures::disk_store(dir.path());
    let new = record(1);
    let mut g = c.benchmark_group("outbox");
    // Milliseconds per iteration: the same number of iterations in every sample.
    g.sampling_mode(SamplingMode::Flat);
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
                            .ack(&RecordId::new(Priority::Normal, "threshold", seq))
                            .expect("ack");
                    }
                }
                took
            })
        });
    }

    let group = vec![new.clone(); 128];
    g.throughput(Throughput::Elements(group.len() as u64));
    g.bench_function("append_commit_single_batch128", |b| {
        b.iter_custom(|iters| {
            let mut took = Duration::ZERO;
            for _ in 0..iters {
                let start = Instant::now();
                let seqs = outbox.append(&group).expect("append");
                outbox.flush().expect("group commit");
                took += start.elapsed();
                for seq in seqs {
                    outbox
                        .ack(&RecordId::new(Priority::Normal, "threshold", seq))
                        .expect("ack");
                }
            }
            took
        })
    });

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
                    sent.extend(r.iter().map(Record::id));
                }
                assert_eq!(sent.len(), BURST, "the stock holds a burst");
                for id in &sent {
                    outbox.ack(id).expect("ack");
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

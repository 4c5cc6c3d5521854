//! # Outbox: the durable, bounded FIFO of results waiting for the cloud
//!
//! ## Record format
//! One sled tree, `outbox`. Key: the record's sequence number, 8 bytes big-endian, so key order
//! is FIFO order. Sequence numbers come from sled's `generate_id`, which is monotonic across
//! restarts and crashes (it may skip numbers, never repeat them). Value (see `record.rs`):
//! `version u8 | crc32 u32 | created_ms u64 | fn_len u16 | fn | topic_len u16 | topic | payload`,
//! all big-endian; the CRC-32 covers everything after itself.
//!
//! ## Life cycle
//! - **write**: the processor appends the outputs of one invocation as one atomic sled batch,
//!   never partially. Appends are serialised: sequence numbers are taken and applied under one
//!   lock, so records become visible in sequence order even with parallel invocation workers.
//! - **commit**: after a group of invocations the processor calls [`Outbox::flush`] (one fsync
//!   for the group); only then are the inputs acknowledged to the broker.
//! - **read**: the forwarder reads in key order from the oldest record it has not sent on the
//!   current connection; after a reconnect it starts again from the oldest record present.
//! - **ack/delete**: a record is deleted when the cloud broker's PUBACK for it arrives. Deletes
//!   are not flushed one by one: after a crash, records acknowledged in the last moments before
//!   it (sled flushes every 500 ms) can be sent again. That, and the in-flight window, are the
//!   only sources of duplicates; each carries the same id both times.
//!
//! ## Invariants
//! - A record is removed only by [`Outbox::ack`] (or, if it is damaged, by
//!   [`Outbox::read_from`], which counts it as corrupt): nothing else drops data. A record of
//!   an unknown format version is skipped and kept.
//! - Usage (records and bytes) is bounded by `[outbox] max_records` / `max_bytes`; with
//!   `when_full = "block"` an append waits for room (checked and taken under the same lock as
//!   the write) and so the processor stops acknowledging inputs. A single append larger than the whole bound is let through when the
//!   outbox is empty, so an oversized group cannot wedge the gateway.

mod record;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Duration;

pub use record::{Record, RecordError};

use crate::config::OutboxConfig;

/// A storage failure of the outbox.
#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    /// sled reported an I/O or corruption error.
    #[error("outbox storage: {0}")]
    Store(#[from] sled::Error),
    /// The outbox was closed (shutdown) while an append waited for room.
    #[error("outbox closed")]
    Closed,
}

/// A write to another tree committed with records: key, and value (`None` deletes).
pub type StateWrite = (Vec<u8>, Option<Vec<u8>>);

/// A result to append.
#[derive(Debug, Clone)]
pub struct NewRecord {
    /// The function that emitted it.
    pub function: String,
    /// The emitted topic.
    pub topic: String,
    /// The payload.
    pub payload: Vec<u8>,
    /// Emission time, ms since the Unix epoch.
    pub created_ms: u64,
}

#[derive(Debug, Default, Clone, Copy)]
struct Usage {
    records: u64,
    bytes: u64,
}

/// The durable FIFO. Shared between the processor (appends) and the forwarder (reads, acks).
pub struct Outbox {
    db: sled::Db,
    tree: sled::Tree,
    limits: OutboxConfig,
    usage: Mutex<Usage>,
    room: Condvar,
    closed: AtomicBool,
}

impl Outbox {
    /// Opens (or creates) the outbox in `db` and measures what it holds.
    pub fn open(db: &sled::Db, limits: OutboxConfig) -> Result<Outbox, OutboxError> {
        let tree = db.open_tree("outbox")?;
        let mut usage = Usage::default();
        for entry in tree.iter() {
            let (_, v) = entry?;
            usage.records += 1;
            usage.bytes += v.len() as u64;
        }
        let outbox = Outbox {
            db: db.clone(),
            tree,
            limits,
            usage: Mutex::new(usage),
            room: Condvar::new(),
            closed: AtomicBool::new(false),
        };
        outbox.publish_gauges(usage);
        Ok(outbox)
    }

    fn publish_gauges(&self, u: Usage) {
        metrics::gauge!("kiri_outbox_records").set(u.records as f64);
        metrics::gauge!("kiri_outbox_bytes").set(u.bytes as f64);
    }

    /// Records and bytes currently held.
    pub fn usage(&self) -> (u64, u64) {
        let u = *self.usage.lock().expect("outbox usage lock");
        (u.records, u.bytes)
    }

    /// Waits, holding `u` between checks, until the records fit; hands the lock back so the
    /// caller can take the room before anyone else does.
    fn room_for<'a>(
        &self,
        mut u: MutexGuard<'a, Usage>,
        records: u64,
        bytes: u64,
    ) -> Result<MutexGuard<'a, Usage>, OutboxError> {
        let mut counted = false;
        loop {
            if self.closed.load(Ordering::Relaxed) {
                return Err(OutboxError::Closed);
            }
            let fits = u.records + records <= self.limits.max_records
                && u.bytes + bytes <= self.limits.max_bytes;
            if records == 0 || fits || u.records == 0 {
                return Ok(u);
            }
            if !counted {
                counted = true;
                metrics::counter!("kiri_outbox_full_waits_total").increment(1);
                tracing::warn!(
                    records = u.records,
                    bytes = u.bytes,
                    "outbox full: holding back input acknowledgements until the uplink drains it"
                );
            }
            u = self
                .room
                .wait_timeout(u, Duration::from_millis(100))
                .expect("outbox usage lock")
                .0;
        }
    }

    /// Wakes and fails any append waiting for room (at shutdown).
    pub fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
        self.room.notify_all();
    }

    /// Encoded size of a record, as counted against `max_bytes`.
    pub fn encoded_len(r: &NewRecord) -> u64 {
        (13 + 4 + r.function.len() + r.topic.len() + r.payload.len()) as u64
    }

    /// Appends `records` atomically (all or none). Not durable until [`Outbox::flush`].
    pub fn append(&self, records: &[NewRecord]) -> Result<Vec<u64>, OutboxError> {
        self.append_with_state(records, None)
    }

    /// Appends `records` and applies `state` writes (key → value, `None` deletes) to another
    /// tree in one sled transaction: both or neither. Not durable until [`Outbox::flush`].
    pub fn append_with_state(
        &self,
        records: &[NewRecord],
        state: Option<(&sled::Tree, &[StateWrite])>,
    ) -> Result<Vec<u64>, OutboxError> {
        let state = state.filter(|(_, w)| !w.is_empty());
        if records.is_empty() && state.is_none() {
            return Ok(Vec::new());
        }
        let values: Vec<Vec<u8>> = records
            .iter()
            .map(|r| record::encode(r.created_ms, &r.function, &r.topic, &r.payload))
            .collect();
        let bytes: u64 = values.iter().map(|v| v.len() as u64).sum();
        // Under the usage lock: room is checked and taken in one step (parallel invocation
        // workers cannot all pass the check and overshoot the bounds); sequence numbers are
        // taken and applied in one order, so a reader never sees a record before an older one
        // still being written; and an ack cannot be counted before its append.
        let u = self.usage.lock().expect("outbox usage lock");
        let mut u = self.room_for(u, records.len() as u64, bytes)?;
        let mut encoded = Vec::with_capacity(records.len());
        let mut seqs = Vec::with_capacity(records.len());
        for value in values {
            let seq = self.db.generate_id()?;
            encoded.push((record::key(seq), value));
            seqs.push(seq);
        }
        match state {
            None => {
                let mut batch = sled::Batch::default();
                for (k, v) in &encoded {
                    batch.insert(&k[..], &v[..]);
                }
                self.tree.apply_batch(batch)?;
            }
            Some((kv, writes)) => {
                use sled::transaction::{ConflictableTransactionError, TransactionError};
                use sled::Transactional;
                let result = (&self.tree, kv).transaction(|(outbox, kv)| {
                    for (k, v) in &encoded {
                        outbox.insert(&k[..], &v[..])?;
                    }
                    for (k, v) in writes {
                        match v {
                            Some(v) => kv.insert(&k[..], &v[..])?,
                            None => kv.remove(&k[..])?,
                        };
                    }
                    Ok::<(), ConflictableTransactionError<()>>(())
                });
                match result {
                    Ok(()) => {}
                    Err(TransactionError::Storage(e)) => return Err(e.into()),
                    Err(TransactionError::Abort(())) => unreachable!("the closure never aborts"),
                }
            }
        }
        u.records += records.len() as u64;
        u.bytes += bytes;
        self.publish_gauges(*u);
        metrics::counter!("kiri_outbox_appended_total").increment(records.len() as u64);
        Ok(seqs)
    }

    /// Makes everything written so far durable (one fsync). Returns the bytes flushed.
    pub fn flush(&self) -> Result<usize, OutboxError> {
        Ok(self.db.flush()?)
    }

    /// The oldest record's sequence number.
    pub fn first_seq(&self) -> Result<Option<u64>, OutboxError> {
        Ok(self.tree.first()?.and_then(|(k, _)| record::seq_of(&k)))
    }

    /// Up to `max` records with `seq >= from`, in order. Corrupt records are removed and counted.
    pub fn read_from(&self, from: u64, max: usize) -> Result<Vec<Record>, OutboxError> {
        let mut out = Vec::with_capacity(max.min(1024));
        for entry in self.tree.range(record::key(from)..) {
            if out.len() >= max {
                break;
            }
            let (k, v) = entry?;
            let Some(seq) = record::seq_of(&k) else {
                continue;
            };
            match record::decode(seq, &v) {
                Ok(r) => out.push(r),
                Err(e @ RecordError::Version(_)) => {
                    // Written by another Kiri version: keep it for that version, skip it here.
                    tracing::error!(seq, error = %e, "skipping an outbox record this version cannot read");
                }
                Err(e) => {
                    tracing::error!(seq, error = %e, "dropping corrupt outbox record");
                    metrics::counter!("kiri_outbox_corrupt_total").increment(1);
                    self.remove(seq)?;
                }
            }
        }
        Ok(out)
    }

    /// Deletes a record the cloud acknowledged. Unknown sequence numbers are ignored.
    pub fn ack(&self, seq: u64) -> Result<(), OutboxError> {
        if self.remove(seq)? {
            metrics::counter!("kiri_outbox_acked_total").increment(1);
        }
        Ok(())
    }

    fn remove(&self, seq: u64) -> Result<bool, OutboxError> {
        let mut u = self.usage.lock().expect("outbox usage lock");
        let Some(old) = self.tree.remove(record::key(seq))? else {
            return Ok(false);
        };
        u.records = u.records.saturating_sub(1);
        u.bytes = u.bytes.saturating_sub(old.len() as u64);
        self.publish_gauges(*u);
        drop(u);
        self.room.notify_all();
        Ok(true)
    }
}

#[cfg(test)]
mod tests;

//! Dead letters: inputs that were not processed (rejected at ingest, or their function
//! failed), kept durably so nothing is dropped without a trace. Bounded: beyond
//! `[dead_letters] max_records` the oldest entry is removed and counted.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::codec;
use crate::config::DeadLetterConfig;

/// One input that was not processed.
#[derive(Debug, Clone)]
pub struct DeadLetter<'a> {
    /// The function that failed, or `None` for an input rejected before dispatch.
    pub function: Option<&'a str>,
    /// The input topic.
    pub topic: &'a str,
    /// A short machine-readable reason (`oversized`, `malformed`, `trap`, `error`, ...).
    pub reason: &'static str,
    /// The full error text.
    pub error: String,
    /// When the input arrived, ms since the Unix epoch.
    pub received_ms: u64,
    /// The input payload.
    pub payload: &'a [u8],
}

/// The dead-letter tree.
pub struct DeadLetters {
    db: sled::Db,
    tree: sled::Tree,
    limits: DeadLetterConfig,
    // sled's `len` scans the tree; keep our own count.
    count: AtomicU64,
}

impl DeadLetters {
    /// Opens the `dead_letters` tree.
    pub fn open(db: &sled::Db, limits: DeadLetterConfig) -> Result<DeadLetters, sled::Error> {
        let tree = db.open_tree("dead_letters")?;
        let count = AtomicU64::new(tree.len() as u64);
        Ok(DeadLetters {
            db: db.clone(),
            tree,
            limits,
            count,
        })
    }

    /// Records an entry (durable at the next flush of the store). Keeps only a prefix of a
    /// large payload.
    pub fn record(&self, d: &DeadLetter<'_>) -> Result<(), sled::Error> {
        let keep = &d.payload[..d.payload.len().min(self.limits.max_payload_bytes)];
        let value = codec::encode_dead_letter(
            d.function,
            d.topic,
            d.reason,
            &d.error,
            d.received_ms,
            keep,
            d.payload.len(),
        );
        let seq = self.db.generate_id()?;
        self.tree.insert(seq.to_be_bytes(), value)?;
        metrics::counter!("kiri_dead_letters_total", "reason" => d.reason).increment(1);
        let mut n = self.count.fetch_add(1, Ordering::Relaxed) + 1;
        while n > self.limits.max_records {
            if self.tree.pop_min()?.is_none() {
                break;
            }
            n = self.count.fetch_sub(1, Ordering::Relaxed) - 1;
            metrics::counter!("kiri_dead_letters_dropped_total").increment(1);
        }
        Ok(())
    }

    /// Entries held.
    pub fn len(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

//! Moving records of the first key format (class and sequence number, before per-function
//! queues) to their function's queue, when the outbox opens.

use super::record::{self, Priority};
use super::OutboxError;

/// Records moved per batch.
const MIGRATE_BATCH: usize = 1024;

/// Set in the store's default tree once every key is of the second format, so later opens
/// skip the scan.
const MARKER: &[u8] = b"outbox_key_format";
const FORMAT: &[u8] = &[2];

/// Moves records of the first key format (class and sequence number) to their function's
/// queue, [`MIGRATE_BATCH`] at a time, each batch atomic; then marks the store as moved.
pub(super) fn migrate(db: &sled::Db, tree: &sled::Tree) -> Result<(), OutboxError> {
    if db.get(MARKER)?.as_deref() == Some(FORMAT) {
        return Ok(());
    }
    let mut moved = 0u64;
    let mut batch = sled::Batch::default();
    let mut n = 0;
    for p in Priority::ALL {
        for entry in tree.scan_prefix([p as u8]) {
            let (k, v) = entry?;
            let Some((priority, seq)) = record::parse_legacy_key(&k) else {
                continue;
            };
            // A damaged record or one of an unknown version names no function it can be
            // trusted for: it goes to the queue with no name, where `read` deals with it.
            let function = record::decode(priority, seq, &v)
                .map(|r| r.function)
                .unwrap_or_default();
            batch.remove(&k);
            batch.insert(record::key(priority, &function, seq), v);
            n += 1;
            if n >= MIGRATE_BATCH {
                tree.apply_batch(std::mem::take(&mut batch))?;
                moved += n as u64;
                n = 0;
            }
        }
    }
    if n > 0 {
        tree.apply_batch(batch)?;
        moved += n as u64;
    }
    db.insert(MARKER, FORMAT)?;
    db.flush()?;
    if moved > 0 {
        tracing::info!(
            records = moved,
            "outbox records moved to per-function queues"
        );
    }
    Ok(())
}

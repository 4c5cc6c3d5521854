//! Reading from the outbox (the uplink's side): flushed records in drain order, the TTL, and
//! the deletes of what the cloud acknowledged.

use std::sync::atomic::Ordering;

use super::record::{self, Priority, Record, RecordError};
use super::{Cursor, Outbox, OutboxError};

impl Outbox {
    /// Flushes for the uplink's deletes (without the `fsync`, and without making new records
    /// readable: that is [`Outbox::flush`]'s job). A power cut can only turn lost deletes
    /// into duplicates.
    pub async fn flush_deletes(&self) -> Result<usize, OutboxError> {
        Ok(self.db.flush_async().await?)
    }

    fn expired(&self, r: &Record, now_ms: u64) -> bool {
        self.ttl_ms
            .is_some_and(|ttl| r.created_ms.saturating_add(ttl) <= now_ms)
    }

    /// Up to `max` flushed records (and, past the first, `max_bytes` by `weight`) after
    /// `cursor`, high priority first, each class in order; advances the cursor past them.
    /// Expired and corrupt records are deleted and counted on the way.
    pub fn read(
        &self,
        cursor: &mut Cursor,
        max: usize,
        max_bytes: usize,
        weight: impl Fn(&Record) -> usize,
    ) -> Result<Vec<Record>, OutboxError> {
        let now = crate::now_ms();
        let durable = self.durable.load(Ordering::Acquire);
        let mut out = Vec::with_capacity(max.min(1024));
        let mut size = 0usize;
        for p in Priority::ALL {
            let next = &mut cursor.next[p as usize];
            if *next >= durable {
                continue;
            }
            let range = record::key(p, *next)..record::key(p, durable);
            for entry in self.tree.range(range) {
                if out.len() >= max {
                    return Ok(out);
                }
                let (k, v) = entry?;
                let Some((_, seq)) = record::parse_key(&k) else {
                    continue;
                };
                match record::decode(p, seq, &v) {
                    Ok(r) if self.expired(&r, now) => {
                        if self.remove(p, seq)? {
                            self.count_drops("expired", 1);
                        }
                    }
                    Ok(r) => {
                        let w = weight(&r);
                        if !out.is_empty() && size + w > max_bytes {
                            return Ok(out);
                        }
                        size += w;
                        out.push(r);
                    }
                    Err(e @ RecordError::Version(_)) => {
                        // Written by another Kiri version: keep it for that version, skip it here.
                        tracing::error!(seq, error = %e, "skipping an outbox record this version cannot read");
                    }
                    Err(e) => {
                        tracing::error!(seq, error = %e, "dropping corrupt outbox record");
                        if self.remove(p, seq)? {
                            self.count_drops("corrupt", 1);
                        }
                    }
                }
                *next = seq + 1;
            }
        }
        Ok(out)
    }

    /// Deletes the expired records at the head of each class (records are in creation order
    /// within a class, near enough: the sweep stops at the first live one; [`Outbox::read`]
    /// catches any other). Returns how many it deleted.
    pub fn expire(&self) -> Result<u64, OutboxError> {
        if self.ttl_ms.is_none() {
            return Ok(0);
        }
        let now = crate::now_ms();
        let mut n = 0;
        for p in Priority::ALL {
            for entry in self.tree.scan_prefix([p as u8]) {
                let (k, v) = entry?;
                let Some((_, seq)) = record::parse_key(&k) else {
                    continue;
                };
                match record::decode(p, seq, &v) {
                    Ok(r) if self.expired(&r, now) => {
                        if self.remove(p, seq)? {
                            n += 1;
                        }
                    }
                    _ => break,
                }
            }
        }
        if n > 0 {
            self.count_drops("expired", n);
            tracing::warn!(expired = n, "results older than outbox.ttl deleted unsent");
        }
        Ok(n)
    }

    /// Deletes a record the cloud acknowledged. Unknown records are ignored.
    pub fn ack(&self, priority: Priority, seq: u64) -> Result<(), OutboxError> {
        if self.remove(priority, seq)? {
            self.counts.acked.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("kiri_outbox_acked_total").increment(1);
        }
        Ok(())
    }

    fn remove(&self, priority: Priority, seq: u64) -> Result<bool, OutboxError> {
        let mut u = self.usage.lock().expect("outbox usage lock");
        let Some(old) = self.tree.remove(record::key(priority, seq))? else {
            return Ok(false);
        };
        u.records = u.records.saturating_sub(1);
        u.bytes = u.bytes.saturating_sub(old.len() as u64);
        if priority == Priority::High {
            u.high = u.high.saturating_sub(1);
        }
        self.publish_gauges(*u);
        drop(u);
        self.room.notify_all();
        Ok(true)
    }
}

//! Reading from the outbox (the uplink's side): flushed records in drain order, the TTL, and
//! the deletes of what the cloud acknowledged.

use std::sync::atomic::Ordering;

use super::record::{self, Priority, Record, RecordError};
use super::{Cursor, Outbox, OutboxError, RecordId, QUANTUM};

impl Outbox {
    /// Flushes for the uplink's deletes (without the `fsync`). A power cut can only turn lost
    /// deletes into duplicates.
    pub async fn flush_deletes(&self) -> Result<usize, OutboxError> {
        Ok(self.db.flush_async().await?)
    }

    /// A mark of the writes made so far (the uplink's deletes), for [`Outbox::flushed_since`].
    pub fn flush_mark(&self) -> u64 {
        self.flushes_started.load(Ordering::Acquire)
    }

    /// Whether a group commit's flush that started after `mark` was taken has completed: every
    /// write made before the mark is then durable, and needs no flush of its own.
    pub fn flushed_since(&self, mark: u64) -> bool {
        self.flushes_done.load(Ordering::Acquire) > mark
    }

    fn expired(&self, r: &Record) -> bool {
        self.ttl_ms().is_some_and(|ttl| self.held_for(r) >= ttl)
    }

    /// Up to `max` records written (flushed or not: a result goes to the cloud as soon as
    /// it is written, see the module's life cycle) (and, past the first, `max_bytes` by `weight`) after
    /// `cursor`: high priority first, then normal, then low; within a class, the functions'
    /// queues by deficit round robin on stored bytes ([`QUANTUM`] a turn), each queue in
    /// order. Advances the cursor past them. Expired and corrupt records are deleted and
    /// counted on the way.
    pub fn read(
        &self,
        cursor: &mut Cursor,
        max: usize,
        max_bytes: usize,
        weight: impl Fn(&Record) -> usize,
    ) -> Result<Vec<Record>, OutboxError> {
        let now = crate::age::mono_ms();
        // Every record below `written` is in the tree: numbers are taken and applied under the
        // usage lock, and `issued` raised after the write.
        let written = self.issued.load(Ordering::Acquire);
        let mut out = Vec::with_capacity(max.min(1024));
        let mut size = 0usize;
        for p in Priority::ALL {
            let queues = self.usage.lock().expect("outbox usage lock").queues_in(p);
            if queues.is_empty() {
                continue;
            }
            let c = &mut cursor.class[p as usize];
            // Where the round robin stands: the queue whose turn is under way, or the next
            // one after it in name order.
            let mut at = match &c.turn {
                Some(t) => queues.partition_point(|q| q < t) % queues.len(),
                None => 0,
            };
            if c.turn.as_ref().is_some_and(|t| queues[at] != *t) {
                c.turn = None;
            }
            let mut drained = vec![false; queues.len()];
            while drained.iter().any(|d| !d) {
                let q = &queues[at];
                if let Some(&(from, until)) = c.held.get(q) {
                    if until > now {
                        // Held back after a refusal: not this read.
                        drained[at] = true;
                        if c.turn.as_ref() == Some(q) {
                            c.turn = None;
                        }
                    } else {
                        c.held.remove(q);
                        let next = c.next.entry(q.clone()).or_default();
                        *next = (*next).min(from);
                    }
                }
                if !drained[at] {
                    if c.turn.as_ref() != Some(q) {
                        *c.deficit.entry(q.clone()).or_default() += QUANTUM;
                        c.turn = Some(q.clone());
                    }
                    // The turn's state in locals, written back once at its end.
                    let mut deficit = c.deficit.get(q).copied().unwrap_or(0);
                    let mut next = c.next.get(q).copied().unwrap_or(0);
                    let range = record::key_in(p, q, next)..record::key_in(p, q, written);
                    let (mut ended, mut full) = (true, false);
                    for entry in self.tree.range(range) {
                        let (k, v) = entry?;
                        let Some(seq) = record::seq_of(&k) else {
                            continue;
                        };
                        if v.len() as u64 > deficit {
                            // Not this turn: the next one adds to the deficit.
                            ended = false;
                            break;
                        }
                        if out.len() >= max {
                            full = true;
                            break;
                        }
                        let id = || RecordId {
                            priority: p,
                            queue: q.clone(),
                            seq,
                        };
                        match record::decode(p, seq, &v) {
                            Ok(r) if self.expired(&r) => {
                                if self.remove(&id())? {
                                    self.count_drops("expired", 1);
                                }
                            }
                            Ok(r) => {
                                let w = weight(&r);
                                if !out.is_empty() && size + w > max_bytes {
                                    full = true;
                                    break;
                                }
                                size += w;
                                out.push(r);
                                deficit -= v.len() as u64;
                            }
                            Err(e @ RecordError::Version(_)) => {
                                // Written by another Kiri version: keep it for that version, skip it here.
                                tracing::error!(seq, error = %e, "skipping an outbox record this version cannot read");
                            }
                            Err(e) => {
                                tracing::error!(seq, error = %e, "dropping corrupt outbox record");
                                if self.remove(&id())? {
                                    self.count_drops("corrupt", 1);
                                }
                            }
                        }
                        next = seq + 1;
                    }
                    c.deficit.insert(q.clone(), deficit);
                    c.next.insert(q.clone(), next);
                    if full {
                        // The turn goes on at the next read.
                        return Ok(out);
                    }
                    if ended {
                        // Nothing more to send: an idle queue keeps no credit.
                        drained[at] = true;
                        c.deficit.remove(q);
                    }
                    c.turn = None;
                }
                at = (at + 1) % queues.len();
            }
        }
        Ok(out)
    }

    /// Deletes the expired records at the head of each queue (records are in creation order
    /// within a queue, near enough: the sweep stops at the first live one; [`Outbox::read`]
    /// catches any other). Returns how many it deleted.
    pub fn expire(&self) -> Result<u64, OutboxError> {
        if self.ttl_ms().is_none() {
            return Ok(0);
        }
        let mut n = 0;
        for p in Priority::ALL {
            let queues = self.usage.lock().expect("outbox usage lock").queues_in(p);
            for q in queues {
                for entry in self.tree.scan_prefix(record::queue_prefix(p, &q)) {
                    let (k, v) = entry?;
                    let Some(id) = record::parse_key(&k) else {
                        continue;
                    };
                    match record::decode(p, id.seq, &v) {
                        Ok(r) if self.expired(&r) => {
                            if self.remove(&id)? {
                                n += 1;
                            }
                        }
                        _ => break,
                    }
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
    pub fn ack(&self, id: &RecordId) -> Result<(), OutboxError> {
        if self.remove(id)? {
            self.counts.acked.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("kiri_outbox_acked_total").increment(1);
        }
        Ok(())
    }

    fn remove(&self, id: &RecordId) -> Result<bool, OutboxError> {
        let mut u = self.usage.lock().expect("outbox usage lock");
        let Some(old) = self.tree.remove(id.key())? else {
            return Ok(false);
        };
        u.sub(id, old.len() as u64);
        self.publish_gauges(&u);
        drop(u);
        self.room.notify_all();
        Ok(true)
    }
}

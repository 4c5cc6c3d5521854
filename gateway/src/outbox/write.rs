//! Writing to the outbox: appends (with the bounds and `when_full` applied under one lock, and
//! the function's state writes in the same transaction) and the flush that makes them durable
//! and readable.

use std::sync::atomic::Ordering;
use std::sync::MutexGuard;
use std::time::Duration;

use super::record::{self, Priority};
use super::{Keyed, NewRecord, Numbered, Outbox, OutboxError, StateWrite, Usage, Waiting};
use crate::config::WhenFull;

/// What an append did.
#[derive(Debug, Default)]
pub struct Appended {
    /// The records' sequence numbers.
    pub seqs: Vec<u64>,
    /// What its state writes changed in their tree.
    pub change: StateChange,
}

/// What state writes changed in their tree, from the values they replaced: bytes of keys and
/// values, and keys.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct StateChange {
    /// Bytes added (negative: freed).
    pub bytes: i64,
    /// Keys added (negative: removed).
    pub keys: i64,
}

impl Outbox {
    /// Encoded size of a record, as counted against `max_bytes`.
    pub fn encoded_len(r: &NewRecord) -> u64 {
        (13 + 4 + r.function.len() + r.topic.len() + r.payload.len()) as u64
    }

    /// Appends `records` atomically (all or none). Not durable until [`Outbox::flush`].
    pub fn append(&self, records: &[NewRecord]) -> Result<Vec<u64>, OutboxError> {
        self.append_with_state(records, None).map(|a| a.seqs)
    }

    /// Appends `records` and applies `state` writes (key → value, `None` deletes) to another
    /// tree in one sled transaction: both or neither. Returns the records' sequence numbers
    /// (none if `reject_new` dropped them) and what the state writes changed in the tree.
    /// Not durable until [`Outbox::flush`].
    pub fn append_with_state(
        &self,
        records: &[NewRecord],
        state: Option<(&sled::Tree, &[StateWrite])>,
    ) -> Result<Appended, OutboxError> {
        let state = state.filter(|(_, w)| !w.is_empty());
        if records.is_empty() && state.is_none() {
            return Ok(Appended::default());
        }
        let (values, bytes) = self.encode_all(records);
        let shares = Demand::of(records, &values);
        // Under the usage lock: room is checked and taken in one step (parallel invocation
        // workers cannot all pass the check and overshoot the bounds); sequence numbers are
        // taken and applied in one order, so a reader never sees a record before an older one
        // still being written; and an ack cannot be counted before its append.
        let u = self.usage.lock().expect("outbox usage lock");
        let state_bytes = state.map(|(_, writes)| {
            let len = |(k, v): &StateWrite| (k.len() + v.as_ref().map_or(0, Vec::len)) as u64;
            writes.iter().map(len).sum::<u64>().max(1)
        });
        let (mut u, fit) = self.room_for(u, &shares, bytes, state_bytes)?;
        let victims = match fit {
            Fit::DropOldest => self.victims(&u, &shares)?,
            _ => Vec::new(),
        };
        let (encoded, seqs) = if fit == Fit::Reject {
            (Vec::new(), Vec::new())
        } else {
            self.number(values)?
        };
        let mut change = StateChange::default();
        match state {
            // One record alone is all or none by itself. A sled batch or transaction pins the
            // log, which writes (and `sync_file_range`s) an IO buffer of its own for each
            // call: twice per event, more than everything else an event costs (`make bench`).
            None if victims.is_empty() && encoded.len() == 1 => {
                let (k, v) = &encoded[0];
                self.tree.insert(&k[..], &v[..])?;
            }
            None => {
                let mut batch = sled::Batch::default();
                for (id, _) in &victims {
                    batch.remove(id.key());
                }
                for (k, v) in &encoded {
                    batch.insert(&k[..], &v[..]);
                }
                self.tree.apply_batch(batch)?;
            }
            Some((kv, writes)) => {
                use sled::transaction::{ConflictableTransactionError, TransactionError};
                use sled::Transactional;
                let result = (&self.tree, kv).transaction(|(outbox, kv)| {
                    for (id, _) in &victims {
                        outbox.remove(id.key())?;
                    }
                    for (k, v) in &encoded {
                        outbox.insert(&k[..], &v[..])?;
                    }
                    // What the writes change, from the values they replace.
                    let mut change = StateChange::default();
                    for (k, v) in writes {
                        let old = match v {
                            Some(v) => kv.insert(&k[..], &v[..])?,
                            None => kv.remove(&k[..])?,
                        };
                        let size = |len: usize| (k.len() + len) as i64;
                        change.bytes += v.as_ref().map_or(0, |v| size(v.len()));
                        change.bytes -= old.as_ref().map_or(0, |o| size(o.len()));
                        change.keys += i64::from(v.is_some()) - i64::from(old.is_some());
                    }
                    Ok::<StateChange, ConflictableTransactionError<()>>(change)
                });
                match result {
                    Ok(c) => change = c,
                    Err(TransactionError::Storage(e)) => return Err(e.into()),
                    Err(TransactionError::Abort(())) => unreachable!("the closure never aborts"),
                }
            }
        }
        if !victims.is_empty() {
            for (id, len) in &victims {
                u.sub(id, *len);
            }
            self.count_drops("full", victims.len() as u64);
            tracing::warn!(
                dropped = victims.len(),
                "outbox full: dropped the oldest results (when_full = drop_oldest)"
            );
        }
        if fit == Fit::Reject {
            self.count_drops("rejected", records.len() as u64);
            tracing::warn!(
                rejected = records.len(),
                "outbox full: dropped new results (when_full = reject_new)"
            );
        } else {
            self.count_appended(&mut u, &encoded, &seqs);
        }
        self.publish_gauges(&u);
        Ok(Appended { seqs, change })
    }

    /// Gives each value its sequence number and key. Call under the usage lock.
    fn number(&self, values: Vec<Encoded>) -> Result<Numbered, OutboxError> {
        let mut encoded = Vec::with_capacity(values.len());
        let mut seqs = Vec::with_capacity(values.len());
        for (priority, function, value) in values {
            let seq = self.db.generate_id()?;
            encoded.push((record::key(priority, &function, seq), value));
            seqs.push(seq);
        }
        Ok((encoded, seqs))
    }

    /// Accounts for records just written (under the usage lock).
    fn count_appended(&self, u: &mut Usage, encoded: &[Keyed], seqs: &[u64]) {
        if let Some(last) = seqs.last() {
            self.issued.fetch_max(last + 1, Ordering::Release);
        }
        for (k, v) in encoded {
            if let Some(id) = record::parse_key(k) {
                u.add(&id, v.len() as u64);
            }
        }
        let n = encoded.len() as u64;
        self.counts.appended.fetch_add(n, Ordering::Relaxed);
        metrics::counter!("kiri_outbox_appended_total").increment(n);
    }

    /// Each record's class, function and encoded value, and their total size.
    fn encode_all(&self, records: &[NewRecord]) -> (Vec<Encoded>, u64) {
        let held = self.age.now();
        let values: Vec<Encoded> = records
            .iter()
            .map(|r| {
                let v = record::encode(r.created_ms, held, &r.function, &r.topic, &r.payload);
                (self.priority_of(&r.topic), r.function.clone(), v)
            })
            .collect();
        let bytes = values.iter().map(|(_, _, v)| v.len() as u64).sum();
        (values, bytes)
    }

    /// Whether `demand` fits the whole outbox's bounds and each function's share. A
    /// function's forwarded log lines do not count against its results here (they leave last,
    /// so they could otherwise hold its results back); they must fit the whole share
    /// themselves ([`Outbox::append_if_room`]). A share holding no results takes one append
    /// whatever its size.
    fn fits(&self, u: &Usage, demand: &Demand) -> (bool, bool) {
        let total = u.records + demand.records <= self.limits().max_records
            && u.bytes + demand.bytes <= self.limits().max_bytes;
        let shares = demand.queues.iter().all(|(q, records, bytes)| {
            let (held, held_bytes) = u.share(q).results();
            (held + records <= self.limits().function_records()
                && held_bytes + bytes <= self.limits().function_bytes())
                || held == 0
        });
        (total, shares)
    }

    /// Waits while writing `bytes` would take the data directory's file system below the
    /// reserve (`min_free_bytes`): for the writes that go to the store beside the outbox (dead
    /// letters), which must hold back the same way.
    pub fn wait_for_disk(&self, bytes: u64) -> Result<(), OutboxError> {
        let Some(disk) = &self.disk else {
            return Ok(());
        };
        let mut waiting = None;
        while disk.low(bytes) {
            if self.closed.load(Ordering::Relaxed) {
                return Err(OutboxError::Closed);
            }
            if waiting.is_none() {
                waiting = Some(Waiting::new(&self.counts.waiting_disk));
                self.count_disk_wait();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    }

    fn count_disk_wait(&self) {
        self.counts.disk_waits.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("kiri_outbox_disk_waits_total").increment(1);
        tracing::warn!(
            min_free_bytes = self.limits().min_free_bytes,
            "disk almost full: holding back writes (and input acknowledgements) until space returns"
        );
    }

    /// Appends `records` only if they fit now (never waits, never drops others, whatever
    /// `when_full` says): for what may be lost, like forwarded log lines. Returns whether it
    /// appended them.
    pub fn append_if_room(&self, records: &[NewRecord]) -> Result<bool, OutboxError> {
        let (values, bytes) = self.encode_all(records);
        let demand = Demand::of(records, &values);
        let mut u = self.usage.lock().expect("outbox usage lock");
        // Strictly within the bounds: no exception for an empty outbox or share.
        let total = u.records + demand.records <= self.limits().max_records
            && u.bytes + demand.bytes <= self.limits().max_bytes;
        let shares = demand.queues.iter().all(|(q, records, bytes)| {
            let s = u.share(q);
            s.records + records <= self.limits().function_records()
                && s.bytes + bytes <= self.limits().function_bytes()
        });
        if !total || !shares || self.disk.as_ref().is_some_and(|d| d.low(bytes)) {
            return Ok(false);
        }
        let (encoded, seqs) = self.number(values)?;
        let mut batch = sled::Batch::default();
        for (k, v) in &encoded {
            batch.insert(&k[..], &v[..]);
        }
        self.tree.apply_batch(batch)?;
        self.count_appended(&mut u, &encoded, &seqs);
        self.publish_gauges(&u);
        Ok(true)
    }

    /// One flush, now: sled's, then the `fsync`; raises the watermark of what the uplink
    /// may read. [`Outbox::flush`] shares these between callers.
    pub(super) fn flush_now(&self) -> Result<usize, OutboxError> {
        let upto = self.issued.load(Ordering::Acquire);
        let number = self.flushes_started.fetch_add(1, Ordering::AcqRel) + 1;
        let n = self.db.flush()?;
        if let Some(f) = &self.fsync {
            f.sync().map_err(sled::Error::Io)?;
        }
        self.durable.fetch_max(upto, Ordering::Release);
        self.flushes_done.fetch_max(number, Ordering::Release);
        if let Some(r) = &self.readable {
            r.notify_one();
        }
        Ok(n)
    }

    /// Waits, holding `u` between checks, until the records fit or the policy says what to do
    /// instead; hands the lock back so the caller can take the room before anyone else does.
    /// Below the disk reserve it waits whatever is written: records, or `state_bytes` of state
    /// writes alone.
    fn room_for<'a>(
        &'a self,
        mut u: MutexGuard<'a, Usage>,
        demand: &Demand,
        bytes: u64,
        state_bytes: Option<u64>,
    ) -> Result<(MutexGuard<'a, Usage>, Fit), OutboxError> {
        let records = demand.records;
        let (mut full_counted, mut disk_counted) = (false, false);
        // Counted as waiting (for `/readyz`) while it does.
        let (mut waiting_disk, mut waiting_room) = (None, None);
        loop {
            if self.closed.load(Ordering::Relaxed) {
                return Err(OutboxError::Closed);
            }
            if records == 0 && state_bytes.is_none() {
                return Ok((u, Fit::Yes));
            }
            let writing = bytes + state_bytes.unwrap_or(0);
            if self.disk.as_ref().is_some_and(|d| d.low(writing)) {
                waiting_disk.get_or_insert_with(|| Waiting::new(&self.counts.waiting_disk));
                if !disk_counted {
                    disk_counted = true;
                    self.count_disk_wait();
                }
            } else if records == 0 {
                return Ok((u, Fit::Yes));
            } else {
                let (total, shares) = self.fits(&u, demand);
                if (total || u.records == 0) && shares {
                    return Ok((u, Fit::Yes));
                }
                match self.limits().when_full {
                    WhenFull::RejectNew => return Ok((u, Fit::Reject)),
                    WhenFull::DropOldest => return Ok((u, Fit::DropOldest)),
                    WhenFull::Block => {}
                }
                waiting_disk = None;
                waiting_room.get_or_insert_with(|| Waiting::new(&self.counts.waiting_room));
                if !full_counted {
                    full_counted = true;
                    self.counts.full_waits.fetch_add(1, Ordering::Relaxed);
                    metrics::counter!("kiri_outbox_full_waits_total").increment(1);
                    let whose = if shares {
                        "the outbox"
                    } else {
                        "the function's share of the outbox"
                    };
                    tracing::warn!(
                        records = u.records,
                        bytes = u.bytes,
                        function = %demand.names(),
                        "outbox full ({whose}): holding back input acknowledgements until the uplink drains it"
                    );
                }
            }
            // What this group wrote before it had to wait can make room: the uplink reads it
            // without a flush, but is woken only after the group, so wake it now.
            if let Some(r) = &self.readable {
                r.notify_one();
            }
            u = self
                .room
                .wait_timeout(u, Duration::from_millis(100))
                .expect("outbox usage lock")
                .0;
        }
    }
}

/// A record's class, function and encoded value.
type Encoded = (Priority, String, Vec<u8>);

/// What an append asks for: records and bytes in all, and per function queue.
pub(super) struct Demand {
    pub(super) records: u64,
    pub(super) bytes: u64,
    pub(super) queues: Vec<(Vec<u8>, u64, u64)>,
}

impl Demand {
    fn of(records: &[NewRecord], values: &[Encoded]) -> Demand {
        let mut queues: Vec<(Vec<u8>, u64, u64)> = Vec::new();
        for (r, (_, _, v)) in records.iter().zip(values) {
            let q = record::queue_name(&r.function);
            match queues.iter_mut().find(|(name, _, _)| name == q) {
                Some(e) => {
                    e.1 += 1;
                    e.2 += v.len() as u64;
                }
                None => queues.push((q.to_vec(), 1, v.len() as u64)),
            }
        }
        Demand {
            records: records.len() as u64,
            bytes: values.iter().map(|(_, _, v)| v.len() as u64).sum(),
            queues,
        }
    }

    /// The functions' names, for the log.
    fn names(&self) -> String {
        let names: Vec<_> = self
            .queues
            .iter()
            .map(|(q, _, _)| String::from_utf8_lossy(q).into_owned())
            .collect();
        names.join(",")
    }
}

/// What an append may do, as [`Outbox::room_for`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Fit {
    Yes,
    DropOldest,
    Reject,
}

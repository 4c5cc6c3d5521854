//! # Outbox: the durable, bounded FIFO of results waiting for the cloud
//!
//! ## Record format
//! One sled tree, `outbox`. Key: the record's class (1 byte: 0 high priority, 1 normal, 2 low:
//! forwarded log lines), then the emitting function's queue (its name, length-prefixed:
//! `len u8 | name`), then its sequence number, 8 bytes big-endian: so each function has a FIFO
//! queue of its own in each class, in sequence order. Sequence numbers come from sled's
//! `generate_id`, which is monotonic across restarts and crashes (it may skip numbers, never
//! repeat them), and are unique across functions. Value (see `record.rs`):
//! `version u8 | crc32 u32 | created_ms u64 | held_ms u64 | fn_len u16 | fn | topic_len u16 |
//! topic | payload`, all big-endian; the CRC-32 covers everything after itself. `created_ms`
//! is the wall clock's time (what consumers see); `held_ms` the gateway's age clock
//! ([`crate::age`]), which every age is measured on. Records of format 1 (no `held_ms`) are
//! still read, their age measured on the wall clock. Keys of the first format (class
//! and sequence number only, 9 bytes) are moved to their function's queue when the outbox
//! opens, a batch at a time (each batch atomic, so a crash mid-way leaves every record in one
//! place or the other, and the next open finishes the move).
//!
//! ## Life cycle
//! - **write** (`write.rs`): the pipeline appends the outputs of one invocation atomically,
//!   never partially: one record alone as a plain insert, several as one sled batch, and with
//!   the function's state writes as one transaction over both trees. Appends are serialised:
//!   sequence numbers are taken and applied under one lock, so records become visible in
//!   sequence order even with parallel invocation workers.
//! - **commit**: after a group of invocations the pipeline calls [`Outbox::flush`] (one fsync
//!   for the group); only then are the inputs acknowledged to the broker.
//! - **read** (`read.rs`): the uplink reads with a [`Cursor`] (one position per function queue
//!   and class) from the oldest record it has not sent on the current connection; after a
//!   reconnect it starts again from the oldest record present. Every high priority record goes
//!   before any normal one, every normal one before any low one; within a class the functions'
//!   queues are served by deficit round robin on bytes ([`QUANTUM`] per turn), so a function
//!   that floods the outbox with large results takes its share of the uplink, not all of it.
//!   Each function's results go in the order it emitted them. A record is read as soon as it
//!   is written, before the group commit's flush: the result reaches the cloud without
//!   waiting for the `fsync` (or for `gateway.commit_window_ms`), while the input it came
//!   from is acknowledged only after the flush. A crash before the flush can so undo a result
//!   the cloud already has; its input, never acknowledged, is then processed again and its
//!   result sent again under a new id (sequence numbers never repeat: sled's generator
//!   resumes, after a crash, two persist intervals beyond the last number it persisted, and
//!   [`Outbox::open`] persists where it resumed before any number is handed out). At least
//!   once either way.
//! - **ack/delete**: a record is deleted when the cloud broker's PUBACK for it arrives; the
//!   deletes ride on the next group commit's flush ([`Outbox::flushed_since`] tells the
//!   uplink when one began after them), the uplink flushes them itself after a window of
//!   PUBACKs (`cloud.inflight`, [`Outbox::flush_deletes`]) that no commit covered, and the
//!   store's background flush (`gateway.flush_every_ms`) takes the rest. After a crash, records
//!   acknowledged since the last flush, and those in flight, can be sent again: the only
//!   uplink duplicates, each with the same id both times.
//!
//! ## Policy
//! - Bounds: `[outbox] max_records` and `max_bytes` for the whole outbox, and
//!   `function_max_records` and `function_max_bytes` for each function's share, checked and
//!   taken under the same lock as the write. When an append does not fit, `when_full` decides,
//!   for that function alone when only its share is over: `block` waits for room (and so the
//!   function's lane stops acknowledging inputs), `drop_oldest` deletes the oldest records
//!   (of the function over its share; when the whole outbox is full, of the function holding
//!   the most bytes), low priority first, then normal, then high, in the same batch as the
//!   append, `reject_new` drops the new records (the function's state writes are still
//!   committed). A single append larger than the bound is let through when the outbox (or the
//!   function's share) is empty, so it cannot wedge the gateway.
//! - Disk (`disk.rs`): below `min_free_bytes` free on the data directory's file system an
//!   append of records waits, whatever the policy, so that sled never meets a full disk
//!   mid-write.
//! - TTL: a record held longer than `ttl` (on the age clock: setting or stepping the wall
//!   clock does not age it) is deleted instead of sent ([`Outbox::read`] skips it,
//!   [`Outbox::expire`] sweeps the oldest ones).
//!
//! ## Invariants
//! - A record leaves only by [`Outbox::ack`], or by a counted drop: `full` (drop_oldest),
//!   `expired` (TTL), `corrupt` (checksum). A record of an unknown format version is kept.
//!   Every drop is counted in `kiri_outbox_dropped_total{reason}` and in [`Outbox::stats`].

mod commit;
mod disk;
mod migrate;
mod read;
pub(crate) mod record;
mod stats;
mod usage;
mod victims;
mod write;

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};

pub use record::{Priority, Record, RecordError, RecordId};
use stats::{Counts, Waiting};
pub use stats::{FunctionShare, HeldBack, OutboxStats};
pub use write::{Appended, StateChange};

use crate::age::AgeClock;
use crate::config::OutboxConfig;
use crate::net::topic;
use disk::{DiskGuard, Fsync};
use migrate::migrate;
use usage::Usage;

/// Where forwarded log lines go, under the cloud topic prefix: `$logs/<function>`.
pub const LOGS_TOPIC: &str = "$logs/";

/// A storage failure of the outbox.
#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    /// sled reported an I/O or corruption error.
    #[error("outbox storage: {0}")]
    Store(#[from] sled::Error),
    /// The outbox was closed (shutdown) while an append waited for room.
    #[error("outbox closed")]
    Closed,
    /// An earlier flush failed: nothing written since can be made durable.
    #[error("outbox storage: an earlier flush failed: {0}")]
    Failed(String),
}

/// A record's key and encoded value.
type Keyed = (Vec<u8>, Vec<u8>);

/// Bytes a function's queue may send per turn of the uplink's round robin (a larger record
/// waits for as many turns as it needs).
pub const QUANTUM: u64 = 64 << 10;

/// Numbered records and their sequence numbers.
type Numbered = (Vec<Keyed>, Vec<u64>);

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

/// The uplink's read position: in each class, the next sequence number to read in each
/// function's queue, and where the round robin between the queues stands.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Cursor {
    class: [ClassCursor; 3],
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct ClassCursor {
    /// Queue → the next sequence number to read in it.
    next: std::collections::HashMap<Vec<u8>, u64>,
    /// Queue → bytes it may still send in its turns (deficit round robin).
    deficit: std::collections::HashMap<Vec<u8>, u64>,
    /// The queue whose turn is under way (its quantum already granted), if any.
    turn: Option<Vec<u8>>,
    /// Queue → (the sequence number to go on from, when): queues held back after the cloud
    /// refused one of their records.
    held: std::collections::HashMap<Vec<u8>, (u64, u64)>,
}

impl Cursor {
    /// Holds back `id`'s queue until `until_ms` (on [`crate::age::mono_ms`]): reads skip it until
    /// then, and then go on from `id`, which is sent again (with whatever followed it that is
    /// still in the outbox).
    pub fn hold(&mut self, id: &RecordId, until_ms: u64) {
        let c = &mut self.class[id.priority as usize];
        let h = c.held.entry(id.queue.clone()).or_insert((id.seq, until_ms));
        *h = (h.0.min(id.seq), h.1.max(until_ms));
    }

    /// The cursor of a new connection: every queue read again from its oldest record, but
    /// queues held back stay so until their time.
    pub fn restart(&mut self) {
        for c in &mut self.class {
            c.next.clear();
            c.deficit.clear();
            c.turn = None;
        }
    }

    /// Whether `id`'s queue is held back.
    pub fn is_held(&self, id: &RecordId) -> bool {
        self.class[id.priority as usize]
            .held
            .contains_key(&id.queue)
    }

    /// When the first held queue is due to go on, if any is held.
    pub fn next_release(&self) -> Option<u64> {
        self.class
            .iter()
            .flat_map(|c| c.held.values().map(|(_, until)| *until))
            .min()
    }
}

/// `limits.ttl` in ms, `u64::MAX` for none.
fn ttl_ms(limits: &OutboxConfig) -> u64 {
    limits.ttl().map_or(u64::MAX, |d| d.as_millis() as u64)
}

/// The durable FIFO. Shared between the pipeline (appends) and the uplink (reads, acks).
pub struct Outbox {
    db: sled::Db,
    tree: sled::Tree,
    /// The bounds and policy: set at open, changed by a reload ([`Outbox::set_limits`]).
    limits: std::sync::RwLock<Arc<OutboxConfig>>,
    /// `limits.ttl` in ms, parsed once (`u64::MAX`: none).
    ttl_ms: AtomicU64,
    usage: Mutex<Usage>,
    room: Condvar,
    closed: AtomicBool,
    counts: Counts,
    disk: Option<DiskGuard>,
    /// One past the highest sequence number written (set under the usage lock, after the write).
    issued: AtomicU64,
    /// Every record with a lower sequence number has been flushed.
    durable: AtomicU64,
    /// sled's log file, `fsync`ed after each [`Outbox::flush`] when set, and its blob folder.
    fsync: Option<Fsync>,
    /// Woken after a flush (the pipeline wakes the uplink after writing, too).
    readable: Option<Arc<tokio::sync::Notify>>,
    /// The flushes lanes share.
    commits: commit::Commits,
    /// Flushes started, and the number of the last one started that has completed: what the
    /// uplink's deletes need to know whether a commit already made them durable.
    flushes_started: AtomicU64,
    flushes_done: AtomicU64,
    /// The age clock records are stamped with and aged by.
    age: Arc<AgeClock>,
    /// Records whose checksum failed when the outbox opened.
    unreadable_at_open: u64,
}

impl Outbox {
    /// Opens (or creates) the outbox in `db` and measures what it holds. Records of the first
    /// key format are moved to their function's queue first.
    pub fn open(db: &sled::Db, limits: OutboxConfig) -> Result<Outbox, OutboxError> {
        // Records are sent before they are flushed, so a sequence number must never come
        // again, even after two crashes in a row. sled resumes its generator two persist
        // intervals past the last number it persisted, but the number it resumes at is itself
        // persisted only by a later flush: take one and flush now, before any is handed out.
        db.generate_id()?;
        db.flush()?;
        let tree = db.open_tree("outbox")?;
        migrate(db, &tree)?;
        let mut usage = Usage::default();
        let mut issued = 0;
        let age = AgeClock::open(db)?;
        let mut unreadable = 0;
        for entry in tree.iter() {
            let (k, v) = entry?;
            match record::parse_key(&k) {
                Some(id) => {
                    issued = issued.max(id.seq + 1);
                    usage.add(&id, v.len() as u64);
                    // A crash may have lost the age clock's last save: never let a record
                    // held look younger than when it was written.
                    match record::decode(id.priority, id.seq, &v) {
                        Ok(r) => age.at_least(r.held_ms.unwrap_or(0)),
                        Err(RecordError::Version(_)) => {}
                        Err(_) => unreadable += 1,
                    }
                }
                None => {
                    usage.add_unread(v.len() as u64);
                    tracing::error!(key = ?k, "an outbox key this version cannot read: kept, never sent");
                }
            }
        }
        let outbox = Outbox {
            db: db.clone(),
            tree,
            ttl_ms: AtomicU64::new(ttl_ms(&limits)),
            limits: std::sync::RwLock::new(Arc::new(limits)),
            usage: Mutex::new(usage.clone()),
            room: Condvar::new(),
            closed: AtomicBool::new(false),
            counts: Counts::default(),
            disk: None,
            issued: AtomicU64::new(issued),
            durable: AtomicU64::new(issued),
            fsync: None,
            readable: None,
            commits: Default::default(),
            flushes_started: AtomicU64::new(0),
            flushes_done: AtomicU64::new(0),
            age: Arc::new(age),
            unreadable_at_open: unreadable,
        };
        outbox.publish_gauges(&usage);
        Ok(outbox)
    }

    /// Makes appends wait while the file system holding `dir` has less than
    /// `min_free_bytes` free.
    pub fn guard_disk(mut self, dir: &Path) -> Outbox {
        self.disk = Some(DiskGuard {
            dir: dir.to_path_buf(),
            min_free: AtomicU64::new(self.limits().min_free_bytes),
            last: Mutex::new(None),
        });
        self
    }

    /// Makes [`Outbox::flush`] also `fsync` the store's log file at `log`: sled's flush uses
    /// `sync_file_range`, which leaves file metadata and the drive's write cache unflushed.
    pub fn fsync_log(mut self, log: &Path) -> Result<Outbox, std::io::Error> {
        let blobs = log.with_file_name("blobs");
        self.fsync = Some(Fsync {
            log: std::fs::File::open(log)?,
            blobs,
            synced: Mutex::new(Default::default()),
        });
        Ok(self)
    }

    /// Wakes `readable` whenever a flush makes records readable (the uplink waits on it).
    pub fn notify_readable(mut self, readable: Arc<tokio::sync::Notify>) -> Outbox {
        self.readable = Some(readable);
        self
    }

    /// The bounds and policy in force.
    pub fn limits(&self) -> Arc<OutboxConfig> {
        self.limits
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Records found unreadable (checksum) when the outbox opened: damage it reports.
    pub fn unreadable_at_open(&self) -> u64 {
        self.unreadable_at_open
    }

    /// The age clock records are stamped with (shared with the dead letters).
    pub fn age(&self) -> &Arc<AgeClock> {
        &self.age
    }

    /// How long `r` has been held, in ms: on the age clock, or for a record of the first
    /// format on the wall clock.
    pub fn held_for(&self, r: &Record) -> u64 {
        match r.held_ms {
            Some(held) => self.age.now().saturating_sub(held),
            None => crate::now_ms().saturating_sub(r.created_ms),
        }
    }

    /// How long the oldest of `records` has been held, in ms.
    pub fn oldest_held_for(&self, records: &[Record]) -> u64 {
        records.iter().map(|r| self.held_for(r)).max().unwrap_or(0)
    }

    /// `r`'s age stamp: when it was written on the age clock (for a record of the first
    /// format, the age clock now less its age on the wall clock).
    pub fn stamp(&self, r: &Record) -> u64 {
        r.held_ms
            .unwrap_or_else(|| self.age.now().saturating_sub(self.held_for(r)))
    }

    /// The age past which results expire, in ms (`outbox.ttl`).
    fn ttl_ms(&self) -> Option<u64> {
        Some(self.ttl_ms.load(Ordering::Relaxed)).filter(|&t| t != u64::MAX)
    }

    /// Takes new bounds and policy (a configuration reload). They apply to the next append:
    /// appends waiting for room look again at once; what is held stays, even above a lowered
    /// bound (the uplink drains it; appends then wait, drop or reject by the new policy); a
    /// new `high_priority` list classes the results written from now on.
    pub fn set_limits(&self, limits: OutboxConfig) {
        if let Some(disk) = &self.disk {
            disk.min_free
                .store(limits.min_free_bytes, Ordering::Relaxed);
        }
        self.ttl_ms.store(ttl_ms(&limits), Ordering::Relaxed);
        *self.limits.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(limits);
        let _u = self.usage.lock().expect("outbox usage lock");
        self.room.notify_all();
    }

    fn publish_gauges(&self, u: &Usage) {
        metrics::gauge!("kiri_outbox_records").set(u.records as f64);
        metrics::gauge!("kiri_outbox_bytes").set(u.bytes as f64);
    }

    fn count_drops(&self, reason: &'static str, n: u64) {
        let counter = match reason {
            "full" => &self.counts.dropped_full,
            "rejected" => &self.counts.rejected,
            "expired" => &self.counts.expired,
            _ => &self.counts.corrupt,
        };
        counter.fetch_add(n, Ordering::Relaxed);
        metrics::counter!("kiri_outbox_dropped_total", "reason" => reason).increment(n);
    }

    /// Records and bytes currently held.
    pub fn usage(&self) -> (u64, u64) {
        let u = self.usage.lock().expect("outbox usage lock");
        (u.records, u.bytes)
    }

    /// The priority of a result emitted to `topic`: low for forwarded log lines (`$logs/...`),
    /// high for the `high_priority` filters, else normal.
    pub fn priority_of(&self, emitted_topic: &str) -> Priority {
        if emitted_topic.starts_with(LOGS_TOPIC) {
            return Priority::Low;
        }
        let high = self
            .limits()
            .high_priority
            .iter()
            .any(|f| topic::matches(f, emitted_topic));
        if high {
            Priority::High
        } else {
            Priority::Normal
        }
    }

    /// Records written but not yet flushed.
    pub fn unflushed(&self) -> Result<u64, OutboxError> {
        let durable = self.durable.load(Ordering::Acquire);
        let queues: Vec<Vec<u8>> = {
            let u = self.usage.lock().expect("outbox usage lock");
            u.queues.keys().cloned().collect()
        };
        let mut n = 0;
        for p in Priority::ALL {
            for q in &queues {
                let range = record::key_in(p, q, durable)..=record::key_in(p, q, u64::MAX);
                n += self.tree.range(range).count() as u64;
            }
        }
        Ok(n)
    }

    /// How long the oldest record has been held, in ms (the oldest of the queues' first
    /// records).
    pub fn oldest_age_ms(&self) -> Result<Option<u64>, OutboxError> {
        let queues: Vec<Vec<u8>> = {
            let u = self.usage.lock().expect("outbox usage lock");
            u.queues.keys().cloned().collect()
        };
        let mut oldest: Option<u64> = None;
        for p in Priority::ALL {
            for q in &queues {
                let first = self.tree.scan_prefix(record::queue_prefix(p, q)).next();
                if let Some((k, v)) = first.transpose()? {
                    if let Some(Ok(r)) =
                        record::parse_key(&k).map(|id| record::decode(p, id.seq, &v))
                    {
                        let age = self.held_for(&r);
                        oldest = Some(oldest.map_or(age, |o| o.max(age)));
                    }
                }
            }
        }
        Ok(oldest)
    }

    /// Wakes and fails any append waiting for room (at shutdown), and saves the age clock
    /// (the shutdown's flush makes it durable).
    pub fn close(&self) {
        if let Err(e) = self.age.save() {
            tracing::warn!(error = %e, "cannot save the age clock");
        }
        self.closed.store(true, Ordering::Relaxed);
        self.room.notify_all();
    }
}

#[cfg(test)]
mod share_tests;
#[cfg(test)]
mod tests;

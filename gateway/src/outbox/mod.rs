//! # Outbox: the durable, bounded FIFO of results waiting for the cloud
//!
//! ## Record format
//! One sled tree, `outbox`. Key: the record's class (1 byte: 0 high priority, 1 normal), then
//! its sequence number, 8 bytes big-endian, so key order is drain order: every high priority
//! record before any normal one, FIFO within a class. Sequence numbers come from sled's
//! `generate_id`, which is monotonic across restarts and crashes (it may skip numbers, never
//! repeat them). Value (see `record.rs`):
//! `version u8 | crc32 u32 | created_ms u64 | fn_len u16 | fn | topic_len u16 | topic | payload`,
//! all big-endian; the CRC-32 covers everything after itself.
//!
//! ## Life cycle
//! - **write**: the processor appends the outputs of one invocation as one atomic sled batch
//!   (with the function's state writes, in one transaction), never partially. Appends are
//!   serialised: sequence numbers are taken and applied under one lock, so records become
//!   visible in sequence order even with parallel invocation workers.
//! - **commit**: after a group of invocations the processor calls [`Outbox::flush`] (one fsync
//!   for the group); only then are the inputs acknowledged to the broker.
//! - **read**: the forwarder reads with a [`Cursor`] (one position per class) from the oldest
//!   record it has not sent on the current connection; after a reconnect it starts again from
//!   the oldest record present. Only flushed records are read (a watermark, raised by each
//!   flush): the cloud never sees a result that a crash could still undo, and a sequence
//!   number a crash could hand out again (sled restarts its id generator after a crash that
//!   lost everything since the last flush) has never left the gateway.
//! - **ack/delete**: a record is deleted when the cloud broker's PUBACK for it arrives; the
//!   forwarder flushes the deletes after each burst of PUBACKs. After a crash, records
//!   acknowledged since that last flush, and those in flight, can be sent again: the only
//!   uplink duplicates, each with the same id both times.
//!
//! ## Policy
//! - Bounds: `[outbox] max_records` and `max_bytes`, checked and taken under the same lock as
//!   the write. When an append does not fit, `when_full` decides: `block` waits for room (and
//!   so the processor stops acknowledging inputs), `drop_oldest` deletes the oldest records,
//!   normal priority first, in the same batch as the append, `reject_new` drops the new
//!   records (the function's state writes are still committed). A single append larger than
//!   the whole bound is let through when the outbox is empty, so it cannot wedge the gateway.
//! - Disk: below `min_free_bytes` free on the data directory's file system an append waits,
//!   whatever the policy, so that sled never meets a full disk mid-write.
//! - TTL: a record older than `ttl` is deleted instead of sent ([`Outbox::read`] skips it,
//!   [`Outbox::expire`] sweeps the oldest ones).
//!
//! ## Invariants
//! - A record leaves only by [`Outbox::ack`], or by a counted drop: `full` (drop_oldest),
//!   `expired` (TTL), `corrupt` (checksum). A record of an unknown format version is kept.
//!   Every drop is counted in `kiri_outbox_dropped_total{reason}` and in [`Outbox::stats`].

pub(crate) mod record;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

pub use record::{Priority, Record, RecordError};

use crate::config::{OutboxConfig, WhenFull};
use crate::net::topic;

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
}

/// A record's key and encoded value.
type Keyed = ([u8; 9], Vec<u8>);

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

#[derive(Debug, Default, Clone, Copy)]
struct Usage {
    records: u64,
    bytes: u64,
    /// Of `records`, how many are high priority.
    high: u64,
}

/// Counts since start, for the status API (the same numbers go to the metrics).
#[derive(Debug, Default)]
struct Counts {
    appended: AtomicU64,
    acked: AtomicU64,
    dropped_full: AtomicU64,
    rejected: AtomicU64,
    expired: AtomicU64,
    corrupt: AtomicU64,
    full_waits: AtomicU64,
    disk_waits: AtomicU64,
}

/// What the outbox holds and has done since start.
#[derive(Debug, Clone, serde::Serialize)]
pub struct OutboxStats {
    /// Records held.
    pub records: u64,
    /// Bytes held (encoded records).
    pub bytes: u64,
    /// High priority records held.
    pub high_priority_records: u64,
    /// Records held but not yet flushed (not yet sent: a crash may still undo them).
    pub unflushed: u64,
    /// Age of the oldest record held, ms.
    pub oldest_age_ms: Option<u64>,
    /// Records appended since start.
    pub appended: u64,
    /// Records acknowledged by the cloud since start.
    pub acked: u64,
    /// Records deleted to make room (`drop_oldest`).
    pub dropped_full: u64,
    /// New records dropped because the outbox was full (`reject_new`).
    pub rejected: u64,
    /// Records expired by the TTL.
    pub expired: u64,
    /// Records found damaged and deleted.
    pub corrupt: u64,
    /// Appends that had to wait for room (`block`).
    pub full_waits: u64,
    /// Appends that had to wait for disk space.
    pub disk_waits: u64,
    /// The configured bounds and policy.
    pub policy: OutboxConfig,
}

/// The forwarder's read position: the next sequence number to read in each class.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    next: [u64; 3],
}

/// Watches the free space of the data directory's file system (checked at most every 250 ms).
struct DiskGuard {
    dir: PathBuf,
    min_free: u64,
    last: Mutex<Option<(Instant, bool)>>,
}

impl DiskGuard {
    fn low(&self) -> bool {
        let mut last = self.last.lock().expect("disk guard lock");
        if let Some((at, low)) = *last {
            if at.elapsed() < Duration::from_millis(250) {
                return low;
            }
        }
        let low = match rustix::fs::statvfs(&self.dir) {
            Ok(st) => st.f_bavail.saturating_mul(st.f_frsize) < self.min_free,
            Err(e) => {
                tracing::warn!(dir = %self.dir.display(), error = %e, "cannot read free disk space");
                false
            }
        };
        *last = Some((Instant::now(), low));
        low
    }
}

/// The durable FIFO. Shared between the processor (appends) and the forwarder (reads, acks).
pub struct Outbox {
    db: sled::Db,
    tree: sled::Tree,
    limits: OutboxConfig,
    ttl_ms: Option<u64>,
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
    /// Woken when records become readable (after a flush).
    readable: Option<Arc<tokio::sync::Notify>>,
}

/// What an `fsync` after a flush covers: sled's log file, and the files it writes large
/// values to (`blobs/`, which sled itself never syncs), with their folder.
struct Fsync {
    log: std::fs::File,
    blobs: PathBuf,
    synced: Mutex<std::collections::HashSet<std::ffi::OsString>>,
}

impl Fsync {
    fn sync(&self) -> std::io::Result<()> {
        self.log.sync_data()?;
        let Ok(entries) = std::fs::read_dir(&self.blobs) else {
            return Ok(()); // no large values yet
        };
        let mut synced = self.synced.lock().expect("fsync lock");
        let mut present = std::collections::HashSet::new();
        let mut new = false;
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name();
            if !synced.contains(&name) {
                std::fs::File::open(entry.path())?.sync_data()?;
                new = true;
            }
            present.insert(name);
        }
        if new {
            std::fs::File::open(&self.blobs)?.sync_all()?;
        }
        *synced = present;
        Ok(())
    }
}

impl Outbox {
    /// Opens (or creates) the outbox in `db` and measures what it holds.
    pub fn open(db: &sled::Db, limits: OutboxConfig) -> Result<Outbox, OutboxError> {
        let tree = db.open_tree("outbox")?;
        let mut usage = Usage::default();
        let mut issued = 0;
        for entry in tree.iter() {
            let (k, v) = entry?;
            if let Some((_, seq)) = record::parse_key(&k) {
                issued = issued.max(seq + 1);
            }
            usage.records += 1;
            usage.bytes += v.len() as u64;
            if k.first() == Some(&(Priority::High as u8)) {
                usage.high += 1;
            }
        }
        let outbox = Outbox {
            db: db.clone(),
            tree,
            ttl_ms: limits.ttl().map(|d| d.as_millis() as u64),
            limits,
            usage: Mutex::new(usage),
            room: Condvar::new(),
            closed: AtomicBool::new(false),
            counts: Counts::default(),
            disk: None,
            issued: AtomicU64::new(issued),
            durable: AtomicU64::new(issued),
            fsync: None,
            readable: None,
        };
        outbox.publish_gauges(usage);
        Ok(outbox)
    }

    /// Makes appends wait while the file system holding `dir` has less than
    /// `min_free_bytes` free.
    pub fn guard_disk(mut self, dir: &Path) -> Outbox {
        self.disk = Some(DiskGuard {
            dir: dir.to_path_buf(),
            min_free: self.limits.min_free_bytes,
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

    fn publish_gauges(&self, u: Usage) {
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
        let u = *self.usage.lock().expect("outbox usage lock");
        (u.records, u.bytes)
    }

    /// The priority of a result emitted to `topic`: low for forwarded log lines (`$logs/...`),
    /// high for the `high_priority` filters, else normal.
    pub fn priority_of(&self, emitted_topic: &str) -> Priority {
        if emitted_topic.starts_with(LOGS_TOPIC) {
            return Priority::Low;
        }
        let high = self
            .limits
            .high_priority
            .iter()
            .any(|f| topic::matches(f, emitted_topic));
        if high {
            Priority::High
        } else {
            Priority::Normal
        }
    }

    /// What the outbox holds and has done.
    pub fn stats(&self) -> Result<OutboxStats, OutboxError> {
        let u = *self.usage.lock().expect("outbox usage lock");
        let c = &self.counts;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Ok(OutboxStats {
            records: u.records,
            bytes: u.bytes,
            high_priority_records: u.high,
            unflushed: self.unflushed()?,
            oldest_age_ms: self
                .oldest_created_ms()?
                .map(|t| crate::now_ms().saturating_sub(t)),
            appended: get(&c.appended),
            acked: get(&c.acked),
            dropped_full: get(&c.dropped_full),
            rejected: get(&c.rejected),
            expired: get(&c.expired),
            corrupt: get(&c.corrupt),
            full_waits: get(&c.full_waits),
            disk_waits: get(&c.disk_waits),
            policy: self.limits.clone(),
        })
    }

    /// Records written but not yet flushed.
    pub fn unflushed(&self) -> Result<u64, OutboxError> {
        let durable = self.durable.load(Ordering::Acquire);
        let mut n = 0;
        for p in Priority::ALL {
            let range = record::key(p, durable)..=record::key(p, u64::MAX);
            n += self.tree.range(range).count() as u64;
        }
        Ok(n)
    }

    /// When the oldest record held was created (the older of the two classes' first records).
    pub fn oldest_created_ms(&self) -> Result<Option<u64>, OutboxError> {
        let mut oldest: Option<u64> = None;
        for p in Priority::ALL {
            if let Some((k, v)) = self.tree.scan_prefix([p as u8]).next().transpose()? {
                if let Some(Ok(r)) =
                    record::parse_key(&k).map(|(p, seq)| record::decode(p, seq, &v))
                {
                    oldest = Some(oldest.map_or(r.created_ms, |o| o.min(r.created_ms)));
                }
            }
        }
        Ok(oldest)
    }

    /// Waits, holding `u` between checks, until the records fit or the policy says what to do
    /// instead; hands the lock back so the caller can take the room before anyone else does.
    fn room_for<'a>(
        &self,
        mut u: MutexGuard<'a, Usage>,
        records: u64,
        bytes: u64,
    ) -> Result<(MutexGuard<'a, Usage>, Fit), OutboxError> {
        let (mut full_counted, mut disk_counted) = (false, false);
        loop {
            if self.closed.load(Ordering::Relaxed) {
                return Err(OutboxError::Closed);
            }
            if records == 0 {
                return Ok((u, Fit::Yes));
            }
            if self.disk.as_ref().is_some_and(DiskGuard::low) {
                if !disk_counted {
                    disk_counted = true;
                    self.counts.disk_waits.fetch_add(1, Ordering::Relaxed);
                    metrics::counter!("kiri_outbox_disk_waits_total").increment(1);
                    tracing::warn!(
                        min_free_bytes = self.limits.min_free_bytes,
                        "disk almost full: holding back results (and input acknowledgements) until space returns"
                    );
                }
            } else {
                let fits = u.records + records <= self.limits.max_records
                    && u.bytes + bytes <= self.limits.max_bytes;
                if fits || u.records == 0 {
                    return Ok((u, Fit::Yes));
                }
                match self.limits.when_full {
                    WhenFull::RejectNew => return Ok((u, Fit::Reject)),
                    WhenFull::DropOldest => return Ok((u, Fit::DropOldest)),
                    WhenFull::Block => {}
                }
                if !full_counted {
                    full_counted = true;
                    self.counts.full_waits.fetch_add(1, Ordering::Relaxed);
                    metrics::counter!("kiri_outbox_full_waits_total").increment(1);
                    tracing::warn!(
                        records = u.records,
                        bytes = u.bytes,
                        "outbox full: holding back input acknowledgements until the uplink drains it"
                    );
                }
            }
            // Records that wait for a flush cannot be sent, so cannot make room: flush them
            // before waiting (a group larger than the bound would otherwise wait for ever).
            if self.durable.load(Ordering::Acquire) < self.issued.load(Ordering::Acquire) {
                self.flush()?;
            }
            u = self
                .room
                .wait_timeout(u, Duration::from_millis(100))
                .expect("outbox usage lock")
                .0;
        }
    }

    /// The oldest records to delete so that `records`/`bytes` more fit: normal priority first,
    /// then high. Keys and encoded sizes.
    fn victims(
        &self,
        u: &Usage,
        records: u64,
        bytes: u64,
    ) -> Result<Vec<(sled::IVec, u64)>, OutboxError> {
        let mut out = Vec::new();
        let (mut r, mut b) = (u.records, u.bytes);
        for p in [Priority::Low, Priority::Normal, Priority::High] {
            for entry in self.tree.scan_prefix([p as u8]) {
                if r + records <= self.limits.max_records && b + bytes <= self.limits.max_bytes {
                    return Ok(out);
                }
                let (k, v) = entry?;
                r -= 1;
                b = b.saturating_sub(v.len() as u64);
                out.push((k, v.len() as u64));
            }
        }
        Ok(out)
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
    /// tree in one sled transaction: both or neither. Returns the records' sequence numbers
    /// (none if `reject_new` dropped them). Not durable until [`Outbox::flush`].
    pub fn append_with_state(
        &self,
        records: &[NewRecord],
        state: Option<(&sled::Tree, &[StateWrite])>,
    ) -> Result<Vec<u64>, OutboxError> {
        let state = state.filter(|(_, w)| !w.is_empty());
        if records.is_empty() && state.is_none() {
            return Ok(Vec::new());
        }
        let (values, bytes) = self.encode_all(records);
        // Under the usage lock: room is checked and taken in one step (parallel invocation
        // workers cannot all pass the check and overshoot the bounds); sequence numbers are
        // taken and applied in one order, so a reader never sees a record before an older one
        // still being written; and an ack cannot be counted before its append.
        let u = self.usage.lock().expect("outbox usage lock");
        let (mut u, fit) = self.room_for(u, records.len() as u64, bytes)?;
        let victims = match fit {
            Fit::DropOldest => self.victims(&u, records.len() as u64, bytes)?,
            _ => Vec::new(),
        };
        let (encoded, seqs) = if fit == Fit::Reject {
            (Vec::new(), Vec::new())
        } else {
            self.number(values)?
        };
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
                for (k, _) in &victims {
                    batch.remove(k);
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
                    for (k, _) in &victims {
                        outbox.remove(k)?;
                    }
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
        if !victims.is_empty() {
            u.records -= victims.len() as u64;
            u.bytes -= victims.iter().map(|(_, len)| len).sum::<u64>();
            u.high -= victims
                .iter()
                .filter(|(k, _)| k.first() == Some(&(Priority::High as u8)))
                .count() as u64;
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
            self.count_appended(&mut u, &encoded, &seqs, bytes);
        }
        self.publish_gauges(*u);
        Ok(seqs)
    }

    /// Gives each value its sequence number and key. Call under the usage lock.
    fn number(&self, values: Vec<(Priority, Vec<u8>)>) -> Result<Numbered, OutboxError> {
        let mut encoded = Vec::with_capacity(values.len());
        let mut seqs = Vec::with_capacity(values.len());
        for (priority, value) in values {
            let seq = self.db.generate_id()?;
            encoded.push((record::key(priority, seq), value));
            seqs.push(seq);
        }
        Ok((encoded, seqs))
    }

    /// Accounts for records just written (under the usage lock).
    fn count_appended(&self, u: &mut Usage, encoded: &[Keyed], seqs: &[u64], bytes: u64) {
        if let Some(last) = seqs.last() {
            self.issued.fetch_max(last + 1, Ordering::Release);
        }
        let n = encoded.len() as u64;
        u.records += n;
        u.bytes += bytes;
        u.high += encoded
            .iter()
            .filter(|(k, _)| k[0] == Priority::High as u8)
            .count() as u64;
        self.counts.appended.fetch_add(n, Ordering::Relaxed);
        metrics::counter!("kiri_outbox_appended_total").increment(n);
    }

    /// Each record's class and encoded value, and their total size.
    fn encode_all(&self, records: &[NewRecord]) -> (Vec<(Priority, Vec<u8>)>, u64) {
        let values: Vec<(Priority, Vec<u8>)> = records
            .iter()
            .map(|r| {
                let v = record::encode(r.created_ms, &r.function, &r.topic, &r.payload);
                (self.priority_of(&r.topic), v)
            })
            .collect();
        let bytes = values.iter().map(|(_, v)| v.len() as u64).sum();
        (values, bytes)
    }

    /// Appends `records` only if they fit now (never waits, never drops others, whatever
    /// `when_full` says): for what may be lost, like forwarded log lines. Returns whether it
    /// appended them.
    pub fn append_if_room(&self, records: &[NewRecord]) -> Result<bool, OutboxError> {
        let (values, bytes) = self.encode_all(records);
        let mut u = self.usage.lock().expect("outbox usage lock");
        let fits = u.records + records.len() as u64 <= self.limits.max_records
            && u.bytes + bytes <= self.limits.max_bytes;
        if !fits || self.disk.as_ref().is_some_and(DiskGuard::low) {
            return Ok(false);
        }
        let (encoded, seqs) = self.number(values)?;
        let mut batch = sled::Batch::default();
        for (k, v) in &encoded {
            batch.insert(&k[..], &v[..]);
        }
        self.tree.apply_batch(batch)?;
        self.count_appended(&mut u, &encoded, &seqs, bytes);
        self.publish_gauges(*u);
        Ok(true)
    }

    /// Makes everything written so far durable (one fsync), and readable by the forwarder.
    /// Returns the bytes flushed.
    pub fn flush(&self) -> Result<usize, OutboxError> {
        let upto = self.issued.load(Ordering::Acquire);
        let n = self.db.flush()?;
        if let Some(f) = &self.fsync {
            f.sync().map_err(sled::Error::Io)?;
        }
        self.durable.fetch_max(upto, Ordering::Release);
        if let Some(r) = &self.readable {
            r.notify_one();
        }
        Ok(n)
    }

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

/// What an append may do, as [`Outbox::room_for`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fit {
    Yes,
    DropOldest,
    Reject,
}

#[cfg(test)]
mod tests;

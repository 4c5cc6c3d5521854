//! Dead letters: inputs that were not processed (refused by the pipeline's input check, or
//! their function failed), kept durably so nothing is dropped without a trace, retried by
//! themselves on a schedule ([`retry`]) and replayable on request. Bounded by `[dead_letters]
//! max_records` and `max_bytes`. Beyond either, an entry goes, chosen by kind: the oldest
//! rejected input first, then the oldest failure kept for good, and only then the oldest one
//! waiting for a retry (an input that was acknowledged, and exists nowhere else); a rejected
//! input never takes the place of one waiting for a retry (it is dropped itself instead). Each
//! is counted in `kiri_dead_letters_dropped_total{kind}` (`rejected`, `failed`, `retry`).
//!
//! One sled tree, `dead_letters`: key = entry id (8 bytes big-endian, from sled's monotonic
//! id generator, so key order is arrival order), value = [`Entry`] in CBOR.
//!
//! Life cycle: the pipeline records an entry in the same group commit as the invocations
//! beside it; a retry or replay first *claims* the entry (so it is never queued twice nor
//! dropped meanwhile), and the pipeline removes it only once the new attempt is committed
//! (a failure of that attempt is a new entry). The retry schedule is rebuilt from the
//! entries when the store opens, so retries survive restarts.

mod entry;
pub mod retry;

pub use entry::Entry;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashSet};
use std::sync::{Arc, Mutex};

use crate::age::AgeClock;
use crate::config::DeadLetterConfig;

/// What an entry is, for choosing what goes when a bound is hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// An input refused before any function ran.
    Rejected = 0,
    /// A failure kept for good (no retry left, or not replayable).
    Failed = 1,
    /// A failure waiting for its automatic retry.
    Retry = 2,
}

impl Kind {
    fn of(entry: &Entry) -> Kind {
        match (&entry.function, entry.retry_at_ms) {
            (None, _) => Kind::Rejected,
            (Some(_), Some(_)) => Kind::Retry,
            (Some(_), None) => Kind::Failed,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Kind::Rejected => "rejected",
            Kind::Failed => "failed",
            Kind::Retry => "retry",
        }
    }
}

/// What the tree holds: counts, and each entry's size by kind, oldest first (sled's `len`
/// scans the tree).
#[derive(Debug, Default)]
struct Usage {
    records: u64,
    bytes: u64,
    by_kind: [BTreeMap<u64, u64>; 3],
}

impl Usage {
    fn add(&mut self, id: u64, kind: Kind, len: u64) {
        self.records += 1;
        self.bytes += len;
        self.by_kind[kind as usize].insert(id, len);
    }

    fn remove(&mut self, id: u64) -> Option<Kind> {
        for (k, kind) in [Kind::Rejected, Kind::Failed, Kind::Retry]
            .into_iter()
            .enumerate()
        {
            if let Some(len) = self.by_kind[k].remove(&id) {
                self.records -= 1;
                self.bytes = self.bytes.saturating_sub(len);
                return Some(kind);
            }
        }
        None
    }

    /// The entry to drop to make room for one of kind `new`: the oldest rejected input, then
    /// the oldest failure kept for good, then (unless `new` is a rejected input) the oldest
    /// waiting for a retry.
    fn victim(&self, new: Kind) -> Option<u64> {
        let order: &[Kind] = match new {
            Kind::Rejected => &[Kind::Rejected, Kind::Failed],
            _ => &[Kind::Rejected, Kind::Failed, Kind::Retry],
        };
        order
            .iter()
            .find_map(|k| self.by_kind[*k as usize].keys().next().copied())
    }
}

/// The dead-letter tree; shared by the pipeline (record, remove) and the HTTP API.
pub struct DeadLetters {
    db: sled::Db,
    tree: sled::Tree,
    limits: DeadLetterConfig,
    // Our own counts and index by kind, under one lock with the writes.
    usage: Mutex<Usage>,
    /// Entries waiting for an automatic retry: (due time, id), soonest first.
    due: Mutex<BinaryHeap<Reverse<(u64, u64)>>>,
    /// Entries queued for a replay or retry and not yet finished: never queued twice, not
    /// dropped meanwhile.
    claimed: Mutex<HashSet<u64>>,
    /// The clock retry times are on.
    age: Arc<AgeClock>,
}

impl DeadLetters {
    /// Opens the `dead_letters` tree and measures it; retry times are on `age`.
    pub fn open(
        db: &sled::Db,
        limits: DeadLetterConfig,
        age: Arc<AgeClock>,
    ) -> Result<DeadLetters, sled::Error> {
        let tree = db.open_tree("dead_letters")?;
        let mut usage = Usage::default();
        let mut due = BinaryHeap::new();
        for entry in tree.iter() {
            let (k, v) = entry?;
            let Ok(key) = <[u8; 8]>::try_from(k.as_ref()) else {
                continue;
            };
            let id = u64::from_be_bytes(key);
            let decoded = Entry::decode(&v).ok();
            // An entry that does not decode is counted with the rejected: it goes first.
            let kind = decoded.as_ref().map_or(Kind::Rejected, Kind::of);
            usage.add(id, kind, v.len() as u64);
            if let Some(e) = decoded.filter(|e| e.retry_at_ms.is_some()) {
                // An entry from before the age clock is due at once.
                due.push(Reverse((e.retry_at_age.unwrap_or_else(|| age.now()), id)));
            }
        }
        Ok(DeadLetters {
            db: db.clone(),
            tree,
            limits,
            usage: Mutex::new(usage),
            due: Mutex::new(due),
            claimed: Mutex::new(HashSet::new()),
            age,
        })
    }

    /// The age clock now: what [`DeadLetters::take_due`] and [`DeadLetters::retry_later`]
    /// measure on.
    pub fn now(&self) -> u64 {
        self.age.now()
    }

    /// Records an entry (durable at the next flush of the store), its `payload_len` the
    /// payload's full length. Keeps the first `max_payload_bytes` of the payload; entries with
    /// the whole payload can be replayed, and only they keep their retry time.
    pub fn record(&self, mut entry: Entry) -> Result<u64, sled::Error> {
        entry.payload.truncate(self.limits.max_payload_bytes);
        if !entry.replayable() {
            entry.retry_at_ms = None;
        }
        if entry.retry_at_age.is_none() {
            // The wall clock's delay, read this instant, on the age clock.
            let wall = crate::now_ms();
            entry.retry_at_age = entry
                .retry_at_ms
                .map(|at| self.age.now().saturating_add(at.saturating_sub(wall)));
        }
        if entry.retry_at_ms.is_none() {
            entry.retry_at_age = None;
        }
        let value = entry.encode();
        let id = self.db.generate_id()?;
        let kind = Kind::of(&entry);
        let mut u = self.usage.lock().expect("dead letter lock");
        self.tree.insert(id.to_be_bytes(), value.as_slice())?;
        u.add(id, kind, value.len() as u64);
        metrics::counter!("kiri_dead_letters_total", "reason" => entry.reason.clone()).increment(1);
        let mut kept = true;
        while u.records > self.limits.max_records || u.bytes > self.limits.max_bytes {
            // Nothing else may go: the new entry itself does (a rejected input, among
            // entries waiting for their retry).
            let victim = u.victim(kind).unwrap_or(id);
            self.tree.remove(victim.to_be_bytes())?;
            let dropped = u.remove(victim).unwrap_or(kind);
            metrics::counter!("kiri_dead_letters_dropped_total", "kind" => dropped.name())
                .increment(1);
            if victim == id {
                kept = false;
                break;
            }
        }
        metrics::gauge!("kiri_dead_letters").set(u.records as f64);
        if let (true, Some(at)) = (kept, entry.retry_at_age) {
            self.due
                .lock()
                .expect("dead letter lock")
                .push(Reverse((at, id)));
        }
        Ok(id)
    }

    /// Ids whose automatic retry is due at `now_ms` (on the age clock), soonest first, at most `max`; and when
    /// the next one is due. Taken ids are not returned again (a failed retry is a new entry).
    pub fn take_due(&self, now_ms: u64, max: usize) -> (Vec<u64>, Option<u64>) {
        let mut due = self.due.lock().expect("dead letter lock");
        let mut ids = Vec::new();
        while ids.len() < max {
            match due.peek() {
                Some(Reverse((at, id))) if *at <= now_ms => {
                    ids.push(*id);
                    due.pop();
                }
                _ => break,
            }
        }
        (ids, due.peek().map(|Reverse((at, _))| *at))
    }

    /// Marks an entry as queued for a replay or retry; `false` if it already is.
    pub fn claim(&self, id: u64) -> bool {
        self.claimed.lock().expect("dead letter lock").insert(id)
    }

    /// Ends a claim (the replay finished, or could not be queued).
    pub fn release(&self, id: u64) {
        self.claimed.lock().expect("dead letter lock").remove(&id);
    }

    /// Whether a replay or retry of the entry is under way.
    pub fn is_claimed(&self, id: u64) -> bool {
        self.claimed.lock().expect("dead letter lock").contains(&id)
    }

    /// Puts an id back in the retry schedule at `at_ms` on the age clock (its retry could not
    /// be queued).
    pub fn retry_later(&self, id: u64, at_ms: u64) {
        self.due
            .lock()
            .expect("dead letter lock")
            .push(Reverse((at_ms, id)));
    }

    /// Entries in arrival order, optionally only one function's, at most `limit`.
    pub fn list(
        &self,
        function: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(u64, Entry)>, sled::Error> {
        let mut out = Vec::new();
        for item in self.tree.iter() {
            if out.len() >= limit {
                break;
            }
            let (k, v) = item?;
            let Ok(key) = <[u8; 8]>::try_from(k.as_ref()) else {
                continue;
            };
            let Ok(entry) = Entry::decode(&v) else {
                tracing::warn!(
                    id = u64::from_be_bytes(key),
                    "unreadable dead letter skipped"
                );
                continue;
            };
            if function.is_none_or(|f| entry.function.as_deref() == Some(f)) {
                out.push((u64::from_be_bytes(key), entry));
            }
        }
        Ok(out)
    }

    /// One entry.
    pub fn get(&self, id: u64) -> Result<Option<Entry>, sled::Error> {
        Ok(self
            .tree
            .get(id.to_be_bytes())?
            .and_then(|v| Entry::decode(&v).ok()))
    }

    /// Removes an entry; `false` if it was not there.
    pub fn remove(&self, id: u64) -> Result<bool, sled::Error> {
        let mut u = self.usage.lock().expect("dead letter lock");
        if self.tree.remove(id.to_be_bytes())?.is_none() {
            return Ok(false);
        }
        u.remove(id);
        metrics::gauge!("kiri_dead_letters").set(u.records as f64);
        Ok(true)
    }

    /// Makes removals durable (the pipeline's commits flush everything anyway).
    pub fn flush(&self) -> Result<(), sled::Error> {
        self.db.flush().map(|_| ())
    }

    /// Entries held.
    pub fn len(&self) -> u64 {
        self.usage.lock().expect("dead letter lock").records
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn detached() -> Arc<AgeClock> {
        Arc::new(AgeClock::detached(0))
    }

    fn letter(payload: &[u8]) -> Entry {
        Entry {
            function: Some("f".into()),
            version: None,
            topic: "t".into(),
            reason: "trap".into(),
            error: "boom".into(),
            received_ms: 1,
            payload: payload.to_vec(),
            payload_len: payload.len() as u64,
            attempts: 1,
            retry_at_ms: None,
            retry_at_age: None,
        }
    }

    #[test]
    fn the_oldest_entries_go_first_when_a_bound_is_hit() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let limits = DeadLetterConfig {
            max_records: 3,
            ..DeadLetterConfig::default()
        };
        let dl = DeadLetters::open(&db, limits, detached()).unwrap();
        let ids: Vec<u64> = (0..5u8).map(|i| dl.record(letter(&[i])).unwrap()).collect();
        let kept: Vec<u64> = dl
            .list(None, 10)
            .unwrap()
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        assert_eq!(kept, ids[2..]);
        assert!(dl.remove(ids[3]).unwrap());
        assert!(!dl.remove(ids[3]).unwrap());
        assert_eq!(dl.len(), 2);
    }

    #[test]
    fn junk_never_evicts_an_input_waiting_for_its_retry() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let limits = DeadLetterConfig {
            max_records: 3,
            ..DeadLetterConfig::default()
        };
        let dl = DeadLetters::open(&db, limits, detached()).unwrap();
        let junk = |b: u8| Entry {
            function: None,
            reason: "malformed".into(),
            attempts: 0,
            ..letter(&[b])
        };
        let pending = |b: u8| Entry {
            retry_at_ms: Some(1_000 + b as u64),
            retry_at_age: Some(1_000 + b as u64),
            ..letter(&[b])
        };
        let first = dl.record(pending(1)).unwrap();
        let second = dl.record(pending(2)).unwrap();
        for b in 0..100 {
            dl.record(junk(b)).unwrap();
        }
        let held: Vec<u64> = dl
            .list(None, 10)
            .unwrap()
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        assert_eq!(held.len(), 3);
        assert_eq!(
            &held[..2],
            [first, second],
            "both retries kept through 100 junk inputs"
        );
        let third = dl.record(pending(3)).unwrap();
        let held: Vec<u64> = dl
            .list(None, 10)
            .unwrap()
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        assert_eq!(
            held,
            [first, second, third],
            "a retry takes the junk's place"
        );
        dl.record(junk(200)).unwrap();
        assert_eq!(dl.len(), 3, "junk among retries only: the junk itself goes");
        let (due, _) = dl.take_due(u64::MAX, 10);
        assert_eq!(due, [first, second, third], "every retry still comes due");
    }

    #[test]
    fn large_payloads_are_cut_and_then_not_replayable() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let limits = DeadLetterConfig {
            max_payload_bytes: 4,
            ..DeadLetterConfig::default()
        };
        let dl = DeadLetters::open(&db, limits, detached()).unwrap();
        let small = dl.record(letter(b"abcd")).unwrap();
        let big = dl.record(letter(b"abcdef")).unwrap();
        assert!(dl.get(small).unwrap().unwrap().replayable());
        let cut = dl.get(big).unwrap().unwrap();
        assert_eq!((cut.payload.as_slice(), cut.payload_len), (&b"abcd"[..], 6));
        assert!(!cut.replayable());
        assert_eq!(dl.list(Some("g"), 10).unwrap().len(), 0);
    }

    #[test]
    fn an_entry_is_claimed_by_one_replay_at_a_time() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let dl = DeadLetters::open(&db, DeadLetterConfig::default(), detached()).unwrap();
        let id = dl.record(letter(b"x")).unwrap();
        assert!(dl.claim(id));
        assert!(!dl.claim(id), "a second replay is refused");
        assert!(dl.is_claimed(id));
        dl.release(id);
        assert!(dl.claim(id));
    }

    #[test]
    fn retries_come_due_in_time_order_and_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let ids = {
            let db = sled::Config::new().path(dir.path()).open().unwrap();
            let dl = DeadLetters::open(&db, DeadLetterConfig::default(), detached()).unwrap();
            let late = dl
                .record(Entry {
                    retry_at_ms: Some(300),
                    retry_at_age: Some(300),
                    ..letter(b"a")
                })
                .unwrap();
            let early = dl
                .record(Entry {
                    retry_at_ms: Some(100),
                    retry_at_age: Some(100),
                    ..letter(b"b")
                })
                .unwrap();
            dl.record(letter(b"no retry")).unwrap();
            db.flush().unwrap();
            (early, late)
        };
        let db = loop {
            // sled releases its lock shortly after the last handle goes.
            if let Ok(db) = sled::Config::new().path(dir.path()).open() {
                break db;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        let dl = DeadLetters::open(&db, DeadLetterConfig::default(), detached()).unwrap();
        assert_eq!(dl.take_due(50, 10), (vec![], Some(100)));
        assert_eq!(dl.take_due(200, 10), (vec![ids.0], Some(300)));
        assert_eq!(dl.take_due(1000, 10), (vec![ids.1], None));
    }
}

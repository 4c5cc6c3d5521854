//! The outbox's unit tests and its model check with crashes. Over 500 lines: they share their
//! fixtures (a store on a temp dir, the records, the reopen after a simulated `kill -9`).

use std::collections::VecDeque;
use std::path::Path;

use proptest::prelude::*;

use std::time::Duration;

use super::*;
use crate::config::WhenFull;

pub(super) fn open(dir: &Path, limits: OutboxConfig) -> (sled::Db, Outbox) {
    // sled's background flusher keeps the file lock for a moment after the last handle is
    // dropped, so a reopen right after a close may have to wait for it.
    let mut attempts = 0;
    let db = loop {
        match sled::Config::new().path(dir).cache_capacity(1 << 20).open() {
            Ok(db) => break db,
            Err(e) if attempts < 250 && e.to_string().contains("lock") => {
                attempts += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("open: {e}"),
        }
    };
    let outbox = Outbox::open(&db, limits).unwrap();
    (db, outbox)
}

/// The weight of a record for byte-bounded reads.
fn size(r: &Record) -> usize {
    r.payload.len()
}

/// Flushes, then reads everything.
pub(super) fn read_all(outbox: &Outbox) -> Vec<Record> {
    outbox.flush().unwrap();
    outbox
        .read(&mut Cursor::default(), usize::MAX, usize::MAX, size)
        .unwrap()
}

fn seqs_of(records: &[Record]) -> Vec<u64> {
    records.iter().map(|r| r.seq).collect()
}

fn rec(n: u32) -> NewRecord {
    NewRecord {
        function: "f".into(),
        topic: format!("t/{n}"),
        payload: n.to_be_bytes().to_vec(),
        created_ms: n as u64,
    }
}

#[test]
fn records_come_back_in_order_and_leave_only_when_acked() {
    let dir = tempfile::tempdir().unwrap();
    let (_db, outbox) = open(dir.path(), OutboxConfig::default());
    let seqs = outbox.append(&[rec(1), rec(2), rec(3)]).unwrap();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(
        outbox
            .read(&mut Cursor::default(), 10, usize::MAX, size)
            .unwrap()
            .len(),
        3,
        "written: sent, flushed or not"
    );
    outbox.flush().unwrap();
    let mut cursor = Cursor::default();
    let got = outbox.read(&mut cursor, 2, usize::MAX, size).unwrap();
    assert_eq!(
        got.iter().map(|r| r.topic.as_str()).collect::<Vec<_>>(),
        ["t/1", "t/2"]
    );
    assert_eq!(
        seqs_of(&outbox.read(&mut cursor, 10, usize::MAX, size).unwrap()),
        [seqs[2]]
    );
    assert!(outbox
        .read(&mut cursor, 10, usize::MAX, size)
        .unwrap()
        .is_empty());
    outbox
        .ack(&RecordId::new(Priority::Normal, "f", seqs[0]))
        .unwrap();
    assert_eq!(seqs_of(&read_all(&outbox)), &seqs[1..]);
    assert_eq!(outbox.usage().0, 2);
}

#[test]
fn flushed_records_survive_a_reopen_with_their_sequence_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let seqs = {
        let (_db, outbox) = open(dir.path(), OutboxConfig::default());
        let seqs = outbox.append(&[rec(1), rec(2)]).unwrap();
        outbox.flush().unwrap();
        seqs
    };
    let (_db, outbox) = open(dir.path(), OutboxConfig::default());
    assert_eq!(seqs_of(&read_all(&outbox)), seqs);
    assert_eq!(outbox.usage().0, 2);
    let more = outbox.append(&[rec(3)]).unwrap();
    assert!(
        more[0] > seqs[1],
        "sequence numbers never go back after a reopen"
    );
}

#[test]
fn a_full_outbox_blocks_the_appender_until_an_ack_makes_room() {
    let dir = tempfile::tempdir().unwrap();
    let limits = OutboxConfig {
        max_records: 2,
        ..OutboxConfig::default()
    };
    let (_db, outbox) = open(dir.path(), limits);
    let outbox = std::sync::Arc::new(outbox);
    let seqs = outbox.append(&[rec(1), rec(2)]).unwrap();
    let waiter = {
        let outbox = outbox.clone();
        std::thread::spawn(move || outbox.append(&[rec(3)]).is_ok())
    };
    std::thread::sleep(Duration::from_millis(200));
    assert!(!waiter.is_finished(), "must wait while full");
    outbox
        .ack(&RecordId::new(Priority::Normal, "f", seqs[0]))
        .unwrap();
    assert!(waiter.join().unwrap());
}

#[test]
fn an_oversized_group_still_goes_into_an_empty_outbox() {
    let dir = tempfile::tempdir().unwrap();
    let limits = OutboxConfig {
        max_bytes: 10,
        ..OutboxConfig::default()
    };
    let (_db, outbox) = open(dir.path(), limits);
    let big = NewRecord {
        payload: vec![0; 1000],
        ..rec(1)
    };
    assert!(outbox.append(&[big]).is_ok());
}

#[test]
fn a_corrupt_record_is_dropped_and_the_rest_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let (db, outbox) = open(dir.path(), OutboxConfig::default());
    let seqs = outbox.append(&[rec(1), rec(2)]).unwrap();
    let tree = db.open_tree("outbox").unwrap();
    tree.insert(
        record::key(Priority::Normal, "f", seqs[0]),
        &b"\x01garbage-garbage-garbage"[..],
    )
    .unwrap();
    assert_eq!(seqs_of(&read_all(&outbox)), [seqs[1]]);
    assert_eq!(outbox.usage().0, 1);
    assert_eq!(outbox.stats().unwrap().corrupt, 1);
}

#[test]
fn a_reader_following_parallel_appenders_never_skips_a_record() {
    let dir = tempfile::tempdir().unwrap();
    let (_db, outbox) = open(dir.path(), OutboxConfig::default());
    let outbox = std::sync::Arc::new(outbox);
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let outbox = outbox.clone();
            std::thread::spawn(move || {
                for i in 0..300 {
                    outbox.append(&[rec(w * 1000 + i)]).unwrap();
                }
            })
        })
        .collect();
    // Read like the uplink: from the cursor onwards, never back.
    let mut cursor = Cursor::default();
    let mut seen = Vec::new();
    loop {
        let done = writers.iter().all(|w| w.is_finished());
        outbox.flush().unwrap();
        let batch = outbox.read(&mut cursor, 64, usize::MAX, size).unwrap();
        if batch.is_empty() && done {
            break;
        }
        seen.extend(batch.iter().map(|r| r.seq));
    }
    for w in writers {
        w.join().unwrap();
    }
    assert_eq!(
        seen,
        seqs_of(&read_all(&outbox)),
        "every record read once, in order"
    );
}

#[test]
fn parallel_appenders_never_push_the_outbox_past_its_bound() {
    let dir = tempfile::tempdir().unwrap();
    let limits = OutboxConfig {
        max_records: 10,
        ..OutboxConfig::default()
    };
    let (_db, outbox) = open(dir.path(), limits);
    let outbox = std::sync::Arc::new(outbox);
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let outbox = outbox.clone();
            std::thread::spawn(move || {
                // Each writer a function of its own: the whole outbox's bound binds.
                let of = |i: u32| NewRecord {
                    function: format!("f{w}"),
                    ..rec(w * 10 + i)
                };
                (0..5)
                    .map(|i| outbox.append(&[of(i)]).is_ok())
                    .filter(|ok| *ok)
                    .count()
            })
        })
        .collect();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while outbox.usage().0 < 10 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(outbox.usage().0, 10, "full, and not one record more");
    outbox.close();
    let appended: usize = writers.into_iter().map(|w| w.join().unwrap()).sum();
    assert_eq!(
        appended, 10,
        "the blocked appends gave up at close, unwritten"
    );
    assert_eq!(read_all(&outbox).len(), 10);
}

fn limits(max_records: u64, when_full: WhenFull) -> OutboxConfig {
    OutboxConfig {
        max_records,
        when_full,
        high_priority: vec!["alert/#".into()],
        ..OutboxConfig::default()
    }
}

fn on(topic: &str, n: u32) -> NewRecord {
    NewRecord {
        topic: topic.into(),
        ..rec(n)
    }
}

#[test]
fn high_priority_records_drain_first_each_class_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let (_db, outbox) = open(dir.path(), limits(100, WhenFull::Block));
    outbox.append(&[on("t/1", 1), on("t/2", 2)]).unwrap();
    outbox.append(&[on("alert/a", 3)]).unwrap();
    outbox.flush().unwrap();
    let mut cursor = Cursor::default();
    let first = outbox.read(&mut cursor, 2, usize::MAX, size).unwrap();
    assert_eq!(
        first.iter().map(|r| r.topic.as_str()).collect::<Vec<_>>(),
        ["alert/a", "t/1"]
    );
    assert_eq!(first[0].priority, Priority::High);
    // An alert that arrives while bulk records are being sent goes next.
    outbox.append(&[on("alert/b", 4)]).unwrap();
    outbox.flush().unwrap();
    let next = outbox.read(&mut cursor, 10, usize::MAX, size).unwrap();
    assert_eq!(
        next.iter().map(|r| r.topic.as_str()).collect::<Vec<_>>(),
        ["alert/b", "t/2"]
    );
    assert_eq!(outbox.stats().unwrap().high_priority_records, 2);
}

#[test]
fn drop_oldest_deletes_bulk_before_alerts_and_counts_it() {
    let dir = tempfile::tempdir().unwrap();
    let (_db, outbox) = open(dir.path(), limits(3, WhenFull::DropOldest));
    outbox
        .append(&[on("alert/x", 1), on("t/2", 2), on("t/3", 3)])
        .unwrap();
    outbox.append(&[on("t/4", 4), on("t/5", 5)]).unwrap();
    let topics: Vec<String> = read_all(&outbox).into_iter().map(|r| r.topic).collect();
    assert_eq!(topics, ["alert/x", "t/4", "t/5"]);
    outbox
        .append(&[on("alert/y", 6), on("alert/z", 7)])
        .unwrap();
    let topics: Vec<String> = read_all(&outbox).into_iter().map(|r| r.topic).collect();
    assert_eq!(topics, ["alert/x", "alert/y", "alert/z"]);
    // Only alerts left to drop: the oldest alert goes.
    outbox.append(&[on("alert/w", 8)]).unwrap();
    let topics: Vec<String> = read_all(&outbox).into_iter().map(|r| r.topic).collect();
    assert_eq!(topics, ["alert/y", "alert/z", "alert/w"]);
    let stats = outbox.stats().unwrap();
    assert_eq!(
        (
            stats.records,
            stats.dropped_full,
            stats.high_priority_records
        ),
        (3, 5, 3)
    );
}

#[test]
fn reject_new_keeps_what_is_held_but_still_commits_the_state() {
    let dir = tempfile::tempdir().unwrap();
    let (db, outbox) = open(dir.path(), limits(2, WhenFull::RejectNew));
    let kv = db.open_tree("kv").unwrap();
    outbox.append(&[rec(1), rec(2)]).unwrap();
    let writes = vec![(b"k".to_vec(), Some(b"v".to_vec()))];
    let appended = outbox
        .append_with_state(&[rec(3)], Some((&kv, &writes)))
        .unwrap();
    assert!(appended.seqs.is_empty(), "nothing appended");
    assert_eq!((appended.change.bytes, appended.change.keys), (2, 1));
    assert_eq!(kv.get(b"k").unwrap().as_deref(), Some(&b"v"[..]));
    let topics: Vec<String> = read_all(&outbox).into_iter().map(|r| r.topic).collect();
    assert_eq!(topics, ["t/1", "t/2"]);
    assert_eq!(outbox.stats().unwrap().rejected, 1);
}

#[test]
fn records_past_their_ttl_are_expired_not_sent() {
    let dir = tempfile::tempdir().unwrap();
    let config = OutboxConfig {
        ttl: Some("1h".into()),
        ..OutboxConfig::default()
    };
    let (db, outbox) = open(dir.path(), config);
    // Ages are on the age clock: moved forward here as if the gateway had run that long.
    outbox.append(&[rec(1), rec(2)]).unwrap();
    outbox.age().at_least(4_000_000);
    outbox.append(&[rec(3)]).unwrap();
    outbox.age().at_least(7_200_000);
    // Emitted (by the wall clock) in 1970, as on a board whose clock is not set: not old.
    let unset = NewRecord {
        created_ms: 60_000,
        ..rec(4)
    };
    outbox.append(&[unset]).unwrap();
    assert_eq!(outbox.expire().unwrap(), 2);
    let topics: Vec<String> = read_all(&outbox).into_iter().map(|r| r.topic).collect();
    assert_eq!(topics, ["t/3", "t/4"]);
    let stats = outbox.stats().unwrap();
    assert_eq!((stats.records, stats.expired), (2, 2));
    let oldest = stats.oldest_age_ms.unwrap();
    assert!((3_200_000..3_300_000).contains(&oldest), "{oldest}");
    // The age resumes after a restart: what was held keeps its age.
    outbox.close();
    drop(outbox);
    db.flush().unwrap();
    let again = Outbox::open(&db, OutboxConfig::default()).unwrap();
    let oldest = again.stats().unwrap().oldest_age_ms.unwrap();
    assert!((3_200_000..3_300_000).contains(&oldest), "{oldest}");
}

#[test]
fn a_crash_that_lost_the_age_clocks_save_never_makes_records_younger() {
    let dir = tempfile::tempdir().unwrap();
    let (db, outbox) = open(dir.path(), OutboxConfig::default());
    outbox.age().at_least(500_000);
    outbox.append(&[rec(1)]).unwrap();
    // No save, no close: the age clock's saved value is gone; the record's stamp is not.
    drop(outbox);
    let again = Outbox::open(&db, OutboxConfig::default()).unwrap();
    assert!(again.age().now() >= 500_000);
    assert!(again.stats().unwrap().oldest_age_ms.unwrap() < 100_000);
}

#[test]
fn a_read_stops_at_the_byte_budget_but_always_returns_one() {
    let dir = tempfile::tempdir().unwrap();
    let (_db, outbox) = open(dir.path(), OutboxConfig::default());
    let big = |n| NewRecord {
        payload: vec![7; 1000],
        ..rec(n)
    };
    outbox.append(&[big(1), big(2), big(3)]).unwrap();
    outbox.flush().unwrap();
    let mut cursor = Cursor::default();
    assert_eq!(outbox.read(&mut cursor, 10, 2100, size).unwrap().len(), 2);
    assert_eq!(
        outbox.read(&mut cursor, 10, 10, size).unwrap().len(),
        1,
        "one record even if over"
    );
}

#[test]
fn appends_wait_while_the_disk_is_below_the_reserve() {
    let dir = tempfile::tempdir().unwrap();
    let config = OutboxConfig {
        min_free_bytes: u64::MAX,
        ..OutboxConfig::default()
    };
    let (_db, outbox) = open(dir.path(), config);
    let outbox = std::sync::Arc::new(outbox.guard_disk(dir.path()));
    let waiter = {
        let outbox = outbox.clone();
        std::thread::spawn(move || outbox.append(&[rec(1)]))
    };
    std::thread::sleep(Duration::from_millis(300));
    assert!(!waiter.is_finished(), "must wait while the disk is low");
    assert_eq!(outbox.stats().unwrap().disk_waits, 1);
    outbox.close();
    assert!(matches!(waiter.join().unwrap(), Err(OutboxError::Closed)));
    assert_eq!(outbox.usage().0, 0, "nothing written");
}

#[test]
fn state_writes_and_dead_letters_wait_below_the_reserve_too() {
    let dir = tempfile::tempdir().unwrap();
    let config = OutboxConfig {
        min_free_bytes: u64::MAX,
        ..OutboxConfig::default()
    };
    let (db, outbox) = open(dir.path(), config);
    let kv = db.open_tree("kv/f").unwrap();
    let outbox = std::sync::Arc::new(outbox.guard_disk(dir.path()));
    let state = {
        let outbox = outbox.clone();
        std::thread::spawn(move || {
            let writes = vec![(b"k".to_vec(), Some(vec![0u8; 65536]))];
            outbox.append_with_state(&[], Some((&kv, writes.as_slice())))
        })
    };
    let dead_letter = {
        let outbox = outbox.clone();
        std::thread::spawn(move || outbox.wait_for_disk(100))
    };
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        !state.is_finished(),
        "a state write alone waits while the disk is low"
    );
    assert!(!dead_letter.is_finished(), "so does a dead letter");
    outbox.close();
    assert!(matches!(state.join().unwrap(), Err(OutboxError::Closed)));
    assert!(matches!(
        dead_letter.join().unwrap(),
        Err(OutboxError::Closed)
    ));
    assert!(db.open_tree("kv/f").unwrap().is_empty(), "nothing written");
}

// ---------------------------------------------------------------------------------------
// The model check: the outbox against a model built on `VecDeque`s, through random appends,
// reads, acks, flushes and crashes. A crash copies the data directory as it is on disk at
// that instant (what a `kill -9` leaves: sled's background flusher is off, so nothing reaches
// the files except through `flush`) and reopens the copy.

/// A record in the model, with what a crash may do to it.
#[derive(Debug, Clone, PartialEq)]
struct Modeled {
    seq: u64,
    topic: String,
    /// Flushed since it was appended: must survive a crash.
    durable: bool,
    /// Appended in which append call (a crash keeps a prefix of unflushed appends).
    append: usize,
}

#[derive(Debug, Clone)]
enum Op {
    /// Append this many records; `true`: high priority topics.
    Append(u8, bool),
    /// Read the next records after the cursor, at most this many.
    Read(u8),
    /// Acknowledge the n-th record read and not yet acked (modulo their number).
    Ack(u8),
    Flush,
    Crash,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (1u8..4, any::<bool>()).prop_map(|(n, h)| Op::Append(n, h)),
        3 => (1u8..5).prop_map(Op::Read),
        3 => any::<u8>().prop_map(Op::Ack),
        2 => Just(Op::Flush),
        1 => Just(Op::Crash),
    ]
}

fn open_unflushed(dir: &Path) -> (sled::Db, Outbox) {
    let db = sled::Config::new()
        .path(dir)
        .cache_capacity(1 << 20)
        .flush_every_ms(None)
        .open()
        .unwrap();
    let outbox = Outbox::open(&db, limits(1 << 20, WhenFull::Block)).unwrap();
    (db, outbox)
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

proptest! {
    // `TEST_MODEL_CASES` raises the number of sequences (`make soak` runs thousands).
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("TEST_MODEL_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(64),
    ))]
    /// No flushed record lost, none reordered, acknowledged (and flushed) ones never return,
    /// no sequence number sent or flushed handed out again.
    #[test]
    fn the_outbox_matches_its_model_through_crashes(ops in prop::collection::vec(op(), 1..60)) {
        let root = tempfile::tempdir().unwrap();
        let mut generation = 0;
        let mut dir = root.path().join("0");
        let mut state = Some(open_unflushed(&dir));
        // The model: one FIFO per class; records read but not acked; acked, not yet flushed.
        let mut model: [VecDeque<Modeled>; 3] = [VecDeque::new(), VecDeque::new(), VecDeque::new()];
        let mut cursor = Cursor::default();
        let mut model_next = [0u64; 3];
        let mut unacked: Vec<(Priority, u64)> = Vec::new();
        let mut acked_unflushed: Vec<(Priority, Modeled)> = Vec::new();
        let mut max_seq: Option<u64> = None;
        let (mut n, mut appends) = (0u32, 0usize);
        for op in ops {
            let (_, outbox) = state.as_ref().unwrap();
            match op {
                Op::Append(k, high) => {
                    appends += 1;
                    let class = if high { Priority::High } else { Priority::Normal };
                    let prefix = if high { "alert" } else { "t" };
                    let recs: Vec<NewRecord> =
                        (0..k).map(|_| { n += 1; on(&format!("{prefix}/{n}"), n) }).collect();
                    let seqs = outbox.append(&recs).unwrap();
                    for (seq, r) in seqs.into_iter().zip(recs) {
                        prop_assert!(max_seq < Some(seq), "a sequence number that was flushed or sent is never handed out again: {} after {:?}", seq, max_seq);
                        model[class as usize].push_back(Modeled { seq, topic: r.topic, durable: false, append: appends });
                    }
                }
                Op::Read(max) => {
                    let got = outbox.read(&mut cursor, max as usize, usize::MAX, size).unwrap();
                    let mut want = Vec::new();
                    for p in Priority::ALL {
                        for m in &model[p as usize] {
                            // Records are sent as soon as written, flushed or not.
                            if m.seq >= model_next[p as usize] && want.len() < max as usize {
                                want.push((p, m.seq, m.topic.clone()));
                            }
                        }
                    }
                    let got: Vec<_> = got.into_iter().map(|r| (r.priority, r.seq, r.topic)).collect();
                    prop_assert_eq!(&got, &want);
                    for (p, seq, _) in got {
                        model_next[p as usize] = seq + 1;
                        max_seq = max_seq.max(Some(seq));
                        unacked.push((p, seq));
                    }
                }
                Op::Ack(i) => {
                    if !unacked.is_empty() {
                        let (p, seq) = unacked.remove(i as usize % unacked.len());
                        outbox.ack(&RecordId::new(p, "f", seq)).unwrap();
                        let q = &mut model[p as usize];
                        let at = q.iter().position(|m| m.seq == seq).expect("acked record is in the model");
                        acked_unflushed.push((p, q.remove(at).unwrap()));
                    }
                }
                Op::Flush => {
                    outbox.flush().unwrap();
                    for q in &mut model {
                        for m in q.iter_mut() {
                            m.durable = true;
                            max_seq = max_seq.max(Some(m.seq));
                        }
                    }
                    acked_unflushed.clear();
                }
                Op::Crash => {
                    generation += 1;
                    let copy = root.path().join(generation.to_string());
                    copy_dir(&dir, &copy);
                    drop(state.take());
                    dir = copy;
                    state = Some(open_unflushed(&dir));
                    let (_, outbox) = state.as_ref().unwrap();
                    let on_disk = read_all(outbox);
                    // Acked but not flushed records may come back; unflushed appends may be
                    // lost, but only as a suffix of whole appends. Rebuild the model from
                    // what may be there, then check what is there against it.
                    let present: std::collections::HashSet<u64> = on_disk.iter().map(|r| r.seq).collect();
                    for (p, m) in acked_unflushed.drain(..) {
                        if present.contains(&m.seq) {
                            let q = &mut model[p as usize];
                            let at = q.iter().position(|x| x.seq > m.seq).unwrap_or(q.len());
                            q.insert(at, m);
                        }
                    }
                    let lost_from = model.iter().flatten()
                        .filter(|m| !present.contains(&m.seq) && !m.durable)
                        .map(|m| m.append)
                        .min();
                    for q in &mut model {
                        for m in q.iter() {
                            prop_assert!(present.contains(&m.seq) || !m.durable,
                                "a flushed record was lost in a crash: {:?}", m);
                        }
                        q.retain(|m| present.contains(&m.seq));
                        for m in q.iter_mut() { m.durable = true; }
                    }
                    if let Some(first_lost) = lost_from {
                        prop_assert!(model.iter().flatten().all(|m| m.append < first_lost),
                            "a crash kept an append made after one it lost");
                    }
                    let want: Vec<u64> = Priority::ALL.iter().flat_map(|p| model[*p as usize].iter().map(|m| m.seq)).collect();
                    prop_assert_eq!(seqs_of(&on_disk), want, "nothing acked and flushed came back");
                    cursor = Cursor::default();
                    model_next = [0, 0, 0];
                    unacked.clear();
                }
            }
            let (_, outbox) = state.as_ref().unwrap();
            let live = model.iter().map(VecDeque::len).sum::<usize>() as u64;
            prop_assert_eq!(outbox.usage().0, live);
        }
    }
}

#[test]
fn a_group_larger_than_the_bound_gets_room_as_the_uplink_sends_it() {
    // The appends of one group are not flushed yet; the uplink sends them all the same, so a
    // blocked append gets room as they leave.
    let dir = tempfile::tempdir().unwrap();
    let (_db, outbox) = open(dir.path(), limits(2, WhenFull::Block));
    let outbox = std::sync::Arc::new(outbox);
    let done = std::sync::Arc::new(AtomicBool::new(false));
    let uplink = {
        let (outbox, done) = (outbox.clone(), done.clone());
        std::thread::spawn(move || {
            let mut cursor = Cursor::default();
            let mut sent = 0;
            while !done.load(Ordering::Relaxed) {
                for r in outbox.read(&mut cursor, 10, usize::MAX, size).unwrap() {
                    outbox.ack(&r.id()).unwrap();
                    sent += 1;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            sent
        })
    };
    let appender = {
        let outbox = outbox.clone();
        std::thread::spawn(move || {
            for n in 0..6 {
                outbox.append(&[rec(n)]).unwrap();
            }
            outbox.flush().unwrap();
        })
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !appender.is_finished() {
        assert!(
            std::time::Instant::now() < deadline,
            "the appender never got room"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    appender.join().unwrap();
    while outbox.usage().0 > 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    done.store(true, Ordering::Relaxed);
    assert_eq!(uplink.join().unwrap(), 6);
}

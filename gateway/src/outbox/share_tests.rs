//! Unit tests of the per-function queues: each function's share of the outbox, the uplink's
//! round robin between functions, and the move of records of the first key format.

use std::sync::Arc;
use std::time::Duration;

use super::record::{self, Priority, RecordId};
use super::tests::{open, read_all};
use super::*;
use crate::config::WhenFull;

fn from(function: &str, n: u32, payload_bytes: usize) -> NewRecord {
    NewRecord {
        function: function.into(),
        topic: format!("t/{n}"),
        payload: vec![n as u8; payload_bytes],
        created_ms: n as u64,
    }
}

fn shares(records: u64, when_full: WhenFull) -> OutboxConfig {
    OutboxConfig {
        function_max_records: Some(records),
        when_full,
        ..OutboxConfig::default()
    }
}

fn functions_of(records: &[Record]) -> Vec<&str> {
    records.iter().map(|r| r.function.as_str()).collect()
}

#[test]
fn a_flood_of_large_results_does_not_hold_back_a_neighbours_small_ones() {
    let dir = tempfile::tempdir().unwrap();
    let (_db, outbox) = open(dir.path(), OutboxConfig::default());
    // The flood comes first: 40 results of 256 KiB, then 40 small ones of a neighbour.
    for i in 0..40 {
        outbox.append(&[from("flood", i, 256 << 10)]).unwrap();
    }
    for i in 0..40 {
        outbox.append(&[from("convert", i, 100)]).unwrap();
    }
    outbox.flush().unwrap();
    // Read as the uplink does, one window slot at a time.
    let mut cursor = Cursor::default();
    let mut sent = Vec::new();
    for _ in 0..80 {
        sent.extend(outbox.read(&mut cursor, 1, usize::MAX, |_| 0).unwrap());
    }
    let first_flood = functions_of(&sent)
        .iter()
        .position(|f| *f == "flood")
        .unwrap();
    let last_convert = functions_of(&sent)
        .iter()
        .rposition(|f| *f == "convert")
        .unwrap();
    assert!(
        last_convert < first_flood,
        "by bytes, the neighbour's 4 KiB go before the flood's first 256 KiB: {:?}",
        functions_of(&sent)
    );
    for f in ["flood", "convert"] {
        let seqs: Vec<u64> = sent
            .iter()
            .filter(|r| r.function == f)
            .map(|r| r.seq)
            .collect();
        assert_eq!(seqs.len(), 40);
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{f}: in order");
    }
}

#[test]
fn functions_of_equal_weight_take_turns() {
    let dir = tempfile::tempdir().unwrap();
    let (_db, outbox) = open(dir.path(), OutboxConfig::default());
    for i in 0..20 {
        outbox.append(&[from("a", i, 32 << 10)]).unwrap();
    }
    for i in 0..20 {
        outbox.append(&[from("b", i, 32 << 10)]).unwrap();
    }
    outbox.flush().unwrap();
    let mut cursor = Cursor::default();
    let mut sent = Vec::new();
    for _ in 0..10 {
        sent.extend(outbox.read(&mut cursor, 2, usize::MAX, |_| 0).unwrap());
    }
    let a = sent.iter().filter(|r| r.function == "a").count();
    assert_eq!(sent.len(), 20);
    assert!(
        (8..=12).contains(&a),
        "about half each, not one queue first: {:?}",
        functions_of(&sent)
    );
}

#[test]
fn a_function_over_its_share_waits_alone() {
    let dir = tempfile::tempdir().unwrap();
    let (_db, outbox) = open(dir.path(), shares(3, WhenFull::Block));
    let outbox = Arc::new(outbox);
    let seqs = outbox
        .append(&[
            from("flood", 1, 10),
            from("flood", 2, 10),
            from("flood", 3, 10),
        ])
        .unwrap();
    let waiter = {
        let outbox = outbox.clone();
        std::thread::spawn(move || outbox.append(&[from("flood", 4, 10)]).is_ok())
    };
    std::thread::sleep(Duration::from_millis(200));
    assert!(!waiter.is_finished(), "over its share: it waits");
    // Its neighbour is not held back.
    outbox.append(&[from("convert", 1, 10)]).unwrap();
    assert_eq!(outbox.stats().unwrap().full_waits, 1);
    outbox
        .ack(&RecordId::new(Priority::Normal, "flood", seqs[0]))
        .unwrap();
    assert!(waiter.join().unwrap());
    let held = outbox.stats().unwrap().functions;
    assert_eq!((held["flood"].records, held["convert"].records), (3, 1));
}

#[test]
fn drop_oldest_over_a_share_drops_that_functions_own_results() {
    let dir = tempfile::tempdir().unwrap();
    let (_db, outbox) = open(dir.path(), shares(2, WhenFull::DropOldest));
    outbox.append(&[from("convert", 1, 10)]).unwrap();
    for i in 1..=5 {
        outbox.append(&[from("flood", i, 10)]).unwrap();
    }
    let all = read_all(&outbox);
    let topics: Vec<_> = all
        .iter()
        .map(|r| (r.function.as_str(), r.topic.as_str()))
        .collect();
    assert_eq!(
        topics,
        [("convert", "t/1"), ("flood", "t/4"), ("flood", "t/5")],
        "the flood lost its own oldest, the neighbour nothing"
    );
    assert_eq!(outbox.stats().unwrap().dropped_full, 3);
}

#[test]
fn a_full_outbox_takes_room_from_the_biggest_holder() {
    let dir = tempfile::tempdir().unwrap();
    let limits = OutboxConfig {
        max_records: 6,
        function_max_records: Some(6),
        when_full: WhenFull::DropOldest,
        ..OutboxConfig::default()
    };
    let (_db, outbox) = open(dir.path(), limits);
    outbox
        .append(&[from("convert", 1, 10), from("convert", 2, 10)])
        .unwrap();
    for i in 1..=4 {
        outbox.append(&[from("flood", i, 1000)]).unwrap();
    }
    outbox.append(&[from("convert", 3, 10)]).unwrap();
    let held = outbox.stats().unwrap().functions;
    assert_eq!((held["convert"].records, held["flood"].records), (3, 3));
    let flood: Vec<_> = read_all(&outbox)
        .into_iter()
        .filter(|r| r.function == "flood")
        .map(|r| r.topic)
        .collect();
    assert_eq!(flood, ["t/2", "t/3", "t/4"], "the flood's oldest went");
}

#[test]
fn reject_new_over_a_share_drops_only_that_functions_new_results() {
    let dir = tempfile::tempdir().unwrap();
    let (_db, outbox) = open(dir.path(), shares(1, WhenFull::RejectNew));
    outbox.append(&[from("flood", 1, 10)]).unwrap();
    assert!(outbox.append(&[from("flood", 2, 10)]).unwrap().is_empty());
    assert_eq!(outbox.append(&[from("convert", 1, 10)]).unwrap().len(), 1);
    assert_eq!(outbox.stats().unwrap().rejected, 1);
    assert_eq!(read_all(&outbox).len(), 2);
}

#[test]
fn forwarded_log_lines_count_in_their_functions_share() {
    let dir = tempfile::tempdir().unwrap();
    let (_db, outbox) = open(dir.path(), shares(2, WhenFull::Block));
    outbox
        .append(&[from("f", 1, 10), from("f", 2, 10)])
        .unwrap();
    let line = NewRecord {
        topic: format!("{LOGS_TOPIC}f"),
        ..from("f", 3, 10)
    };
    assert!(!outbox.append_if_room(std::slice::from_ref(&line)).unwrap());
    let other = NewRecord {
        function: "g".into(),
        topic: format!("{LOGS_TOPIC}g"),
        ..line
    };
    assert!(outbox.append_if_room(&[other]).unwrap());
}

#[test]
fn records_of_the_first_key_format_move_to_their_functions_queue() {
    let dir = tempfile::tempdir().unwrap();
    let legacy = |p: Priority, seq: u64| {
        let mut k = vec![p as u8];
        k.extend_from_slice(&seq.to_be_bytes());
        k
    };
    {
        let db = sled::Config::new().path(dir.path()).open().unwrap();
        let tree = db.open_tree("outbox").unwrap();
        for (seq, f) in [(3u64, "a"), (5, "b"), (7, "a")] {
            let v = record::encode(seq, seq, f, &format!("t/{seq}"), b"x");
            tree.insert(legacy(Priority::Normal, seq), v).unwrap();
        }
        tree.insert(
            legacy(Priority::High, 9),
            record::encode(9, 9, "b", "alert/x", b"!"),
        )
        .unwrap();
        tree.insert(
            legacy(Priority::Normal, 11),
            &b"\x01garbage-garbage-garbage"[..],
        )
        .unwrap();
        db.flush().unwrap();
        // Let sled's flusher let go of the lock.
        drop(tree);
        drop(db);
    }
    let (db, outbox) = open(dir.path(), OutboxConfig::default());
    let tree = db.open_tree("outbox").unwrap();
    assert!(
        tree.iter()
            .keys()
            .all(|k| record::parse_legacy_key(&k.unwrap()).is_none()),
        "no key of the first format left"
    );
    assert_eq!(outbox.usage().0, 5);
    let got: Vec<_> = read_all(&outbox)
        .into_iter()
        .map(|r| (r.priority, r.function, r.seq))
        .collect();
    assert_eq!(
        got,
        [
            (Priority::High, "b".to_string(), 9),
            (Priority::Normal, "a".to_string(), 3),
            (Priority::Normal, "a".to_string(), 7),
            (Priority::Normal, "b".to_string(), 5),
        ],
        "same sequence numbers, each function in order; the damaged one dropped on read"
    );
    assert_eq!(outbox.stats().unwrap().corrupt, 1);
    let next = outbox.append(&[from("a", 1, 1)]).unwrap();
    assert!(next[0] > 11, "sequence numbers go on after the moved ones");
}

fn log_line(function: &str, n: u32) -> NewRecord {
    NewRecord {
        topic: format!("{LOGS_TOPIC}{function}"),
        ..from(function, n, 10)
    }
}

#[test]
fn a_full_outbox_drops_log_lines_of_anyone_before_alerts() {
    let dir = tempfile::tempdir().unwrap();
    let limits = OutboxConfig {
        max_records: 4,
        function_max_records: Some(4),
        when_full: WhenFull::DropOldest,
        high_priority: vec!["alert/#".into()],
        ..OutboxConfig::default()
    };
    let (_db, outbox) = open(dir.path(), limits);
    let alert = |n| NewRecord {
        topic: "alert/x".into(),
        ..from("a", n, 1000)
    };
    outbox.append(&[alert(1), alert(2)]).unwrap();
    assert!(outbox
        .append_if_room(&[log_line("b", 1), log_line("b", 2)])
        .unwrap());
    outbox.append(&[from("c", 1, 10)]).unwrap();
    let left: Vec<_> = read_all(&outbox)
        .into_iter()
        .map(|r| (r.function, r.priority))
        .collect();
    assert_eq!(
        left,
        [
            ("a".to_string(), Priority::High),
            ("a".to_string(), Priority::High),
            ("c".to_string(), Priority::Normal),
            ("b".to_string(), Priority::Low),
        ],
        "a log line went, though the alerts' function holds the most bytes"
    );
}

#[test]
fn a_functions_log_lines_do_not_hold_back_its_results() {
    let dir = tempfile::tempdir().unwrap();
    let (_db, outbox) = open(dir.path(), shares(2, WhenFull::RejectNew));
    assert!(outbox
        .append_if_room(&[log_line("f", 1), log_line("f", 2)])
        .unwrap());
    assert_eq!(
        outbox
            .append(&[from("f", 3, 10), from("f", 4, 10)])
            .unwrap()
            .len(),
        2,
        "its share of results is still free"
    );
    assert!(
        !outbox.append_if_room(&[log_line("f", 5)]).unwrap(),
        "a log line must fit the whole share"
    );
    assert!(outbox.append_if_room(&[log_line("g", 1)]).unwrap());
}

#[test]
fn a_held_function_waits_and_then_goes_again_from_its_refused_record() {
    let dir = tempfile::tempdir().unwrap();
    let (_db, outbox) = open(dir.path(), OutboxConfig::default());
    for i in 0..3 {
        outbox
            .append(&[from("a", i, 10), from("b", i, 10)])
            .unwrap();
    }
    outbox.flush().unwrap();
    let mut cursor = Cursor::default();
    let sent = outbox.read(&mut cursor, 100, usize::MAX, |_| 0).unwrap();
    assert_eq!(sent.len(), 6);
    let refused = sent.iter().find(|r| r.function == "a").unwrap().id();
    // The first of a's is refused: a waits, b goes on.
    cursor.hold(&refused, crate::age::mono_ms() + 60_000);
    assert!(cursor.is_held(&refused));
    outbox
        .append(&[from("a", 9, 10), from("b", 9, 10)])
        .unwrap();
    outbox.flush().unwrap();
    let next = outbox.read(&mut cursor, 100, usize::MAX, |_| 0).unwrap();
    assert_eq!(functions_of(&next), ["b"]);
    assert!(cursor.next_release().is_some());
    // Its hold over, a goes again from the refused record (nothing of a's was acknowledged).
    let mut due = cursor.clone();
    due.class[Priority::Normal as usize]
        .held
        .insert(refused.queue.clone(), (refused.seq, 0));
    let again = outbox.read(&mut due, 100, usize::MAX, |_| 0).unwrap();
    assert_eq!(functions_of(&again), ["a", "a", "a", "a"]);
    assert_eq!(again[0].seq, refused.seq);
    assert_eq!(due.next_release(), None);
}

use std::collections::VecDeque;
use std::path::Path;

use proptest::prelude::*;

use super::*;

fn open(dir: &Path, limits: OutboxConfig) -> (sled::Db, Outbox) {
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
    let got = outbox.read_from(0, 10).unwrap();
    assert_eq!(
        got.iter().map(|r| r.topic.as_str()).collect::<Vec<_>>(),
        ["t/1", "t/2", "t/3"]
    );
    outbox.ack(seqs[0]).unwrap();
    assert_eq!(outbox.first_seq().unwrap(), Some(seqs[1]));
    assert_eq!(outbox.read_from(seqs[2], 10).unwrap().len(), 1);
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
    let got = outbox.read_from(0, 10).unwrap();
    assert_eq!(got.iter().map(|r| r.seq).collect::<Vec<_>>(), seqs);
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
    outbox.ack(seqs[0]).unwrap();
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
    tree.insert(record::key(seqs[0]), &b"\x01garbage-garbage-garbage"[..])
        .unwrap();
    let got = outbox.read_from(0, 10).unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].seq, seqs[1]);
    assert_eq!(outbox.usage().0, 1);
}

#[derive(Debug, Clone)]
enum Op {
    Append(u8),
    AckOldest,
    ReadAll,
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (1u8..4).prop_map(Op::Append),
        2 => Just(Op::AckOldest),
        1 => Just(Op::ReadAll),
        1 => Just(Op::Reopen),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]
    /// The outbox behaves like a FIFO queue across appends, acks, reads and reopens.
    #[test]
    fn the_outbox_is_a_fifo_that_survives_reopens(ops in prop::collection::vec(op(), 1..40)) {
        let dir = tempfile::tempdir().unwrap();
        let mut state = Some(open(dir.path(), OutboxConfig::default()));
        let mut model: VecDeque<(u64, String)> = VecDeque::new();
        let mut n = 0u32;
        for op in ops {
            let (_, outbox) = state.as_ref().unwrap();
            match op {
                Op::Append(k) => {
                    let recs: Vec<NewRecord> = (0..k).map(|_| { n += 1; rec(n) }).collect();
                    let seqs = outbox.append(&recs).unwrap();
                    outbox.flush().unwrap();
                    for (s, r) in seqs.into_iter().zip(recs) { model.push_back((s, r.topic)); }
                }
                Op::AckOldest => {
                    if let Some((s, _)) = model.pop_front() { outbox.ack(s).unwrap(); }
                }
                Op::ReadAll => {
                    let got: Vec<(u64, String)> = outbox.read_from(0, usize::MAX).unwrap()
                        .into_iter().map(|r| (r.seq, r.topic)).collect();
                    prop_assert_eq!(got, model.iter().cloned().collect::<Vec<_>>());
                }
                Op::Reopen => {
                    outbox.flush().unwrap();
                    drop(state.take());
                    state = Some(open(dir.path(), OutboxConfig::default()));
                }
            }
            let (_, outbox) = state.as_ref().unwrap();
            prop_assert_eq!(outbox.usage().0, model.len() as u64);
        }
    }
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
    // Read like the forwarder: from the last seen sequence number onwards, never back.
    let mut next = 0;
    let mut seen = Vec::new();
    loop {
        let done = writers.iter().all(|w| w.is_finished());
        let batch = outbox.read_from(next, 64).unwrap();
        if batch.is_empty() && done {
            break;
        }
        for r in batch {
            next = r.seq + 1;
            seen.push(r.seq);
        }
    }
    for w in writers {
        w.join().unwrap();
    }
    let all: Vec<u64> = outbox
        .read_from(0, usize::MAX)
        .unwrap()
        .iter()
        .map(|r| r.seq)
        .collect();
    assert_eq!(seen, all, "every record read once, in order");
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
                (0..5)
                    .map(|i| outbox.append(&[rec(w * 10 + i)]).is_ok())
                    .filter(|ok| *ok)
                    .count()
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(outbox.usage().0, 10, "full, and not one record more");
    outbox.close();
    let appended: usize = writers.into_iter().map(|w| w.join().unwrap()).sum();
    assert_eq!(
        appended, 10,
        "the blocked appends gave up at close, unwritten"
    );
    assert_eq!(outbox.read_from(0, usize::MAX).unwrap().len(), 10);
}

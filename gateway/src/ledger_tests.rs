//! Damage is never silent: a store holding 1,000 results and some function state, stopped
//! cleanly, then its file cut short or 4 KiB of it overwritten at random places (many seeds).
//! Every case either opens with an exact report of what was lost (or changed), or is refused
//! with a reason that names the damage; none opens with fewer results, or other ones, and
//! nothing said.

use std::io::{Seek, SeekFrom, Write};
use std::path::Path;

use crate::config::OutboxConfig;
use crate::ledger::{self, Expected};
use crate::outbox::{NewRecord, Outbox};
use crate::store::{Store, StoreError};

const RESULTS: u64 = 1_000;

/// A store stopped cleanly: 1,000 results of two functions, 50 state keys, the ledger.
fn stopped_store(dir: &Path) {
    let store = Store::open(dir, 1 << 20, 0).unwrap();
    let outbox = Outbox::open(&store.db, OutboxConfig::default()).unwrap();
    for i in 0..RESULTS {
        let r = NewRecord {
            function: if i % 3 == 0 { "alerts" } else { "convert" }.into(),
            topic: format!("t/{i}"),
            payload: vec![(i % 251) as u8; 40 + (i % 7) as usize * 30],
            created_ms: 1_700_000_000_000 + i,
        };
        outbox.append(&[r]).unwrap();
    }
    let kv = store.db.open_tree("kv/convert").unwrap();
    for i in 0u32..50 {
        kv.insert(i.to_be_bytes(), vec![7u8; 64]).unwrap();
    }
    outbox.close();
    outbox.flush().unwrap();
    let known = ledger::Known::from([("outbox".into(), outbox.usage().0)]);
    ledger::write(store.dir(), &store.db, true, &known).unwrap();
}

/// What opening the damaged store gives: `Err` with the reason, or the outbox's records and
/// the report.
fn reopen(dir: &Path) -> Result<(u64, ledger::Damage), String> {
    let opened = std::panic::catch_unwind(|| -> Result<_, String> {
        // sled's background thread of the store just closed lets go of its lock soon after.
        let mut tries = 0;
        let store = loop {
            match Store::open(dir, 1 << 20, 0) {
                Err(StoreError::Locked { .. }) if tries < 250 => {
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                other => break other.map_err(|e| e.to_string())?,
            }
        };
        let outbox = Outbox::open(&store.db, OutboxConfig::default()).map_err(|e| e.to_string())?;
        let Expected::Counts(counts) = ledger::read(dir).unwrap() else {
            panic!("the ledger is outside the store: it is intact")
        };
        let known = ledger::Known::from([("outbox".into(), outbox.usage().0)]);
        let damage = ledger::compare(&store.db, &counts, &known).map_err(|e| e.to_string())?;
        let damage = ledger::Damage {
            unreadable_results: outbox.unreadable_at_open(),
            ..damage
        };
        Ok((outbox.usage().0, damage))
    });
    opened.unwrap_or_else(|_| Err("sled panicked".into()))
}

#[test]
fn a_damaged_store_is_reported_exactly_or_refused_never_silently() {
    let seeds: u64 = std::env::var("TEST_DAMAGE_SEEDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(24);
    let (mut refused, mut reported) = (0, 0);
    for seed in 0..seeds {
        let dir = tempfile::tempdir().unwrap();
        stopped_store(dir.path());
        let file = dir.path().join("store/db");
        let len = std::fs::metadata(&file).unwrap().len();
        let mut rng = fastrand::Rng::with_seed(seed);
        let how = if seed % 2 == 0 {
            let at = rng.u64(0..len);
            std::fs::OpenOptions::new()
                .write(true)
                .open(&file)
                .unwrap()
                .set_len(at)
                .unwrap();
            format!("cut to {at} of {len} bytes")
        } else {
            let at = rng.u64(0..len.saturating_sub(4096));
            let mut f = std::fs::OpenOptions::new().write(true).open(&file).unwrap();
            f.seek(SeekFrom::Start(at)).unwrap();
            f.write_all(&(0..4096).map(|_| rng.u8(..)).collect::<Vec<u8>>())
                .unwrap();
            format!("4 KiB garbled at {at} of {len} bytes")
        };
        match reopen(dir.path()) {
            Err(reason) => {
                refused += 1;
                assert!(
                    reason.contains("damaged") || reason.contains("panicked"),
                    "seed {seed} ({how}): refused without naming the damage: {reason}"
                );
                assert!(
                    !reason.contains("another"),
                    "seed {seed}: blames a lock: {reason}"
                );
            }
            Ok((records, damage)) => {
                let outbox = damage.trees.iter().find(|(t, ..)| t == "outbox");
                if records != RESULTS || damage.unreadable_results > 0 {
                    reported += 1;
                    let (_, was, now) = outbox.unwrap_or_else(|| {
                        panic!("seed {seed} ({how}): {records} results, none reported lost")
                    });
                    assert_eq!((*was, *now), (RESULTS, records), "seed {seed} ({how})");
                    assert_eq!(
                        damage.lost(),
                        damage
                            .trees
                            .iter()
                            .map(|(_, w, n)| w.saturating_sub(*n))
                            .sum::<u64>()
                    );
                } else if outbox.is_some() {
                    reported += 1;
                }
                assert!(
                    damage.is_empty() || damage.describe().contains("damaged"),
                    "{}",
                    damage.describe()
                );
            }
        }
    }
    eprintln!("damaged stores: {seeds} cases, {refused} refused, {reported} opened with a report");
}

#[test]
fn a_lock_is_not_called_damage_and_damage_is_not_called_a_lock() {
    let dir = tempfile::tempdir().unwrap();
    let _held = Store::open(dir.path(), 1 << 20, 0).unwrap();
    match Store::open(dir.path(), 1 << 20, 0) {
        Err(e @ StoreError::Locked { .. }) => assert!(e.to_string().contains("another process")),
        Err(e) => panic!("a held store must say it is in use: {e}"),
        Ok(_) => panic!("two opens of one store"),
    }
}

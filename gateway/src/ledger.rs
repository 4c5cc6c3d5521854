//! The store's own accounting, kept beside it: damage is never silent.
//!
//! sled checks its log as it recovers, and stops at the first record it cannot read: a store
//! file cut short or overwritten opens as an older state, with whatever was written after the
//! damage gone, and sled does not say so. So at a clean stop the gateway writes
//! `store.ledger` in the data directory (outside the store: a small text file, written beside
//! and renamed over, synced): how many entries each of the store's trees held (the outbox's
//! results, the dead letters, each function's state, ...) and a fingerprint of them (the sum
//! of each entry's CRC-32; not for the outbox, whose records the gateway counts as it goes and
//! which carry a checksum each: it may hold a million, too many to read at every stop). At
//! the next open it counts them again: a tree with fewer entries
//! than the ledger says lost them, one with other entries was changed, and the gateway
//! reports exactly how many, per tree ([`Damage`]: an ERROR line, `kiri_store_lost_entries`, the
//! status, the dashboard and `/readyz`), keeps what it could read and goes on. Then the
//! ledger says `running` until the next clean stop: after a crash or a power cut the counts
//! are not known (entries were added and removed since), and the open says it did not check
//! them. The outbox's records carry a checksum of their own as well: one that fails is
//! reported at open as unreadable (and dropped, counted, when the uplink reaches it). A store
//! sled cannot open at all is refused with a message that names the damage
//! ([`crate::store::StoreError::Damaged`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// What this start found, for the status, the dashboard and `/readyz`.
static FOUND: OnceLock<Damage> = OnceLock::new();

/// The damage this start found at open, if any.
pub fn found() -> Option<&'static Damage> {
    FOUND.get().filter(|d| !d.is_empty())
}

/// Checks the store in `dir` against its ledger at a gateway's start (see the module
/// documentation), reports what it finds (an ERROR line and `kiri_store_lost_entries`; the
/// status, dashboard and `/readyz` read [`found`]), counting `unreadable_results` (outbox
/// records whose checksum failed as the outbox opened), and marks the ledger `running`.
pub fn check_at_start(
    dir: &Path,
    db: &sled::Db,
    known: &Known,
    unreadable_results: u64,
) -> anyhow::Result<()> {
    let damage = match read(dir)? {
        Expected::Counts(counts) => compare(db, &counts, known)?,
        Expected::Unclean => {
            tracing::info!(
                "the gateway did not stop cleanly last time: the store's counts are not checked \
                 (sled recovered its log; the outbox's records are checked by their checksums)"
            );
            Damage::default()
        }
        Expected::Nothing => Damage::default(),
    };
    let damage = Damage {
        unreadable_results,
        ..damage
    };
    metrics::gauge!("kiri_store_lost_entries").set(damage.lost() as f64);
    metrics::gauge!("kiri_store_unreadable_results").set(damage.unreadable_results as f64);
    if !damage.is_empty() {
        tracing::error!(lost = damage.lost(), unreadable = damage.unreadable_results,
            trees = ?damage.trees, "{}", damage.describe());
    }
    let _ = FOUND.set(damage);
    write(dir, db, false, known)?;
    Ok(())
}

/// The ledger file of the data directory `dir`.
pub fn path(dir: &Path) -> PathBuf {
    dir.join("store.ledger")
}

/// What was lost, as found at open.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Damage {
    /// Per damaged tree: its name, the entries the ledger counted at the last clean stop, and
    /// the entries there now (fewer; or as many or more, but not the same ones).
    pub trees: Vec<(String, u64, u64)>,
    /// Outbox records whose checksum fails (counted at open).
    pub unreadable_results: u64,
}

impl Damage {
    /// Entries lost in all (at least: a tree whose entries changed without getting fewer
    /// counts none).
    pub fn lost(&self) -> u64 {
        self.trees
            .iter()
            .map(|(_, was, now)| was.saturating_sub(*now))
            .sum()
    }

    /// Whether anything was lost or is unreadable.
    pub fn is_empty(&self) -> bool {
        self.trees.is_empty() && self.unreadable_results == 0
    }

    /// As the status shows it.
    pub fn to_json(&self) -> serde_json::Value {
        let trees: Vec<serde_json::Value> = self
            .trees
            .iter()
            .map(|(tree, was, now)| serde_json::json!({ "tree": tree, "was": was, "now": now }))
            .collect();
        serde_json::json!({
            "lost": self.lost(),
            "unreadable_results": self.unreadable_results,
            "trees": trees,
            "message": self.describe(),
        })
    }

    /// One sentence for people.
    pub fn describe(&self) -> String {
        let mut parts: Vec<String> = self
            .trees
            .iter()
            .map(
                |(tree, was, now)| match was.checked_sub(*now).filter(|&l| l > 0) {
                    Some(lost) => format!("{lost} of {was} {}", what(tree)),
                    None => format!("{} changed ({was} before, {now} now)", what(tree)),
                },
            )
            .collect();
        if self.unreadable_results > 0 {
            parts.push(format!(
                "{} results unreadable (checksum)",
                self.unreadable_results
            ));
        }
        format!(
            "the store was damaged since its last clean stop: {} lost; what could be read is kept",
            parts.join(", ")
        )
    }
}

/// What a tree's entries are, for people.
fn what(tree: &str) -> String {
    match tree {
        "outbox" => "results held for the cloud".into(),
        "dead_letters" => "dead letters".into(),
        "meta" => "entries of the gateway's own keys".into(),
        t if t.starts_with("kv/") || t.starts_with("state") => format!("state keys ({t})"),
        t => format!("entries of {t:?}"),
    }
}

/// A tree's entries: how many, and a fingerprint of their keys and values (the wrapping sum of
/// each entry's CRC-32, so that the order does not matter): the same count with other
/// entries is damage too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entries {
    /// How many.
    pub count: u64,
    /// Their fingerprint.
    pub fingerprint: u64,
}

/// Trees whose entries the gateway counts itself (the outbox, which can hold a million
/// records: a scan at every stop could outlast the shutdown limit on a slow card), by name:
/// their count is taken as given, without a fingerprint.
pub type Known = BTreeMap<String, u64>;

/// Each tree's name (lossy UTF-8) and its entries (`known` ones as given).
fn counts(db: &sled::Db, known: &Known) -> sled::Result<BTreeMap<String, Entries>> {
    let mut out = BTreeMap::new();
    for name in db.tree_names() {
        let key = String::from_utf8_lossy(&name).into_owned();
        if let Some(&count) = known.get(&key) {
            out.insert(
                key,
                Entries {
                    count,
                    fingerprint: 0,
                },
            );
            continue;
        }
        let tree = db.open_tree(&name)?;
        let mut e = Entries {
            count: 0,
            fingerprint: 0,
        };
        for entry in tree.iter() {
            let (k, v) = entry?;
            let mut h = crc32fast::Hasher::new();
            h.update(&(k.len() as u64).to_be_bytes());
            h.update(&k);
            h.update(&v);
            e.count += 1;
            e.fingerprint = e.fingerprint.wrapping_add(u64::from(h.finalize()));
        }
        out.insert(String::from_utf8_lossy(&name).into_owned(), e);
    }
    Ok(out)
}

/// Writes the ledger: `clean` with every tree's count (at a clean stop, after the last
/// flush), else `running`.
pub fn write(dir: &Path, db: &sled::Db, clean: bool, known: &Known) -> std::io::Result<()> {
    use std::io::Write;
    let mut text = String::from("kiri store ledger 1\n");
    if clean {
        text.push_str("clean\n");
        for (name, e) in counts(db, known).map_err(std::io::Error::other)? {
            // Names are sled trees' (no newlines in Kiri's); escaped all the same.
            let name = name.escape_default();
            text.push_str(&format!("{} {:016x} {name}\n", e.count, e.fingerprint));
        }
    } else {
        text.push_str("running\n");
    }
    let file = path(dir);
    let tmp = file.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, &file)?;
    std::fs::File::open(dir)?.sync_all()
}

/// What the ledger said.
#[derive(Debug, PartialEq, Eq)]
pub enum Expected {
    /// No ledger (a new store, or one from before the ledger).
    Nothing,
    /// The gateway did not stop cleanly: the counts are not known.
    Unclean,
    /// Each tree's entries at the last clean stop.
    Counts(BTreeMap<String, Entries>),
}

/// Reads the ledger of `dir`.
pub fn read(dir: &Path) -> std::io::Result<Expected> {
    let text = match std::fs::read_to_string(path(dir)) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Expected::Nothing),
        Err(e) => return Err(e),
    };
    let mut lines = text.lines();
    if lines.next() != Some("kiri store ledger 1") {
        return Ok(Expected::Unclean);
    }
    if lines.next() != Some("clean") {
        return Ok(Expected::Unclean);
    }
    let mut counts = BTreeMap::new();
    for line in lines {
        let mut fields = line.splitn(3, ' ');
        let (Some(n), Some(f), Some(name)) = (fields.next(), fields.next(), fields.next()) else {
            return Ok(Expected::Unclean);
        };
        let (Ok(count), Ok(fingerprint)) = (n.parse(), u64::from_str_radix(f, 16)) else {
            return Ok(Expected::Unclean);
        };
        counts.insert(unescape(name), Entries { count, fingerprint });
    }
    Ok(Expected::Counts(counts))
}

/// Undoes `escape_default` for what Kiri's tree names can hold.
fn unescape(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('r') => out.push('\r'),
            Some('u') => {
                let hex: String = chars.by_ref().skip(1).take_while(|&c| c != '}').collect();
                if let Some(c) = u32::from_str_radix(&hex, 16).ok().and_then(char::from_u32) {
                    out.push(c);
                }
            }
            Some(c) => out.push(c),
            None => {}
        }
    }
    out
}

/// Compares the store with what the ledger expected: the trees with fewer entries than at the
/// last clean stop (a tree gone counts as empty).
pub fn compare(
    db: &sled::Db,
    expected: &BTreeMap<String, Entries>,
    known: &Known,
) -> sled::Result<Damage> {
    let now = counts(db, known)?;
    let trees = expected
        .iter()
        .filter_map(|(name, was)| {
            let n = now.get(name).copied().unwrap_or(Entries {
                count: 0,
                fingerprint: 0,
            });
            (n != *was).then(|| (name.clone(), was.count, n.count))
        })
        .collect();
    Ok(Damage {
        trees,
        unreadable_results: 0,
    })
}

#[cfg(test)]
#[path = "ledger_tests.rs"]
mod damage_tests;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clean_ledger_round_trips_and_a_running_one_expects_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path().join("store")).unwrap();
        assert_eq!(read(dir.path()).unwrap(), Expected::Nothing);
        let t = db.open_tree("kv/f\u{e9} x").unwrap();
        for i in 0u32..5 {
            t.insert(i.to_be_bytes(), b"v").unwrap();
        }
        write(dir.path(), &db, true, &Known::new()).unwrap();
        let Expected::Counts(counts) = read(dir.path()).unwrap() else {
            panic!("a clean ledger")
        };
        assert_eq!(counts.get("kv/f\u{e9} x").map(|e| e.count), Some(5));
        assert!(compare(&db, &counts, &Known::new()).unwrap().is_empty());
        t.remove(0u32.to_be_bytes()).unwrap();
        let damage = compare(&db, &counts, &Known::new()).unwrap();
        assert_eq!(damage.trees, [("kv/f\u{e9} x".to_string(), 5, 4)]);
        assert_eq!(damage.lost(), 1);
        assert!(
            damage.describe().contains("1 of 5 state keys"),
            "{}",
            damage.describe()
        );
        // As many entries, but another one: damage all the same.
        t.insert(9u32.to_be_bytes(), b"v").unwrap();
        let damage = compare(&db, &counts, &Known::new()).unwrap();
        assert_eq!(damage.trees, [("kv/f\u{e9} x".to_string(), 5, 5)]);
        assert!(
            damage.describe().contains("changed"),
            "{}",
            damage.describe()
        );
        write(dir.path(), &db, false, &Known::new()).unwrap();
        assert_eq!(read(dir.path()).unwrap(), Expected::Unclean);
    }
}

//! The persisted deployment state: per name the highest version accepted, the active one and
//! the kept ones, the kept modules, and a bounded history; committed in one sled transaction
//! per change, within the disk room deployments may take.

use serde::{Deserialize, Serialize};

use super::{HistoryEntry, Manifest, Rejection};
use crate::codec;

/// History entries kept; older ones are deleted.
pub const HISTORY_KEEP: usize = 500;

/// Refusals (and load failures) kept, apart from the accepted deployments: replaying a
/// captured package over and over fills only this list.
pub const REFUSALS_KEEP: usize = 100;

/// The persisted state of one function name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NameState {
    /// The highest version ever accepted (deploys and commands).
    pub highest: u64,
    /// The version running, if any.
    pub active: Option<u64>,
    /// Versions whose module is kept, ascending.
    pub kept: Vec<u64>,
    /// SHA-256 (hex) of the last manifest accepted: a redelivery of it is answered, not refused.
    #[serde(default)]
    pub last_manifest: Option<String>,
}

/// A kept version: the signed manifest and the module.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredVersion {
    /// The manifest bytes, as signed.
    #[serde(with = "serde_bytes_vec")]
    pub manifest: Vec<u8>,
    /// The module.
    #[serde(with = "serde_bytes_vec")]
    pub module: Vec<u8>,
}

/// CBOR byte strings for `Vec<u8>` fields (serde would write arrays of integers).
mod serde_bytes_vec {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(v)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let v = ciborium::Value::deserialize(d)?;
        v.into_bytes()
            .map_err(|_| serde::de::Error::custom("expected a byte string"))
    }
}

/// An active deployed function, as stored: name, version, manifest and module.
pub type Active = (String, u64, Manifest, Vec<u8>);

/// The persisted deployment state.
#[derive(Clone)]
pub struct Deployments {
    db: sled::Db,
    state: sled::Tree,
    modules: sled::Tree,
    history: sled::Tree,
    refusals: sled::Tree,
    room: Room,
    keep: usize,
}

fn module_key(name: &str, version: u64) -> Vec<u8> {
    let mut k = name.as_bytes().to_vec();
    k.push(0);
    k.extend_from_slice(&version.to_be_bytes());
    k
}

fn storage(e: impl std::fmt::Display) -> Rejection {
    Rejection::new("storage", e.to_string())
}

/// A change to commit.
pub enum Change<'a> {
    /// Activate `version` (newly deployed with `stored`, or kept).
    Activate {
        /// The version to run.
        version: u64,
        /// A new module to keep, for a deploy.
        stored: Option<&'a StoredVersion>,
    },
    /// Deactivate (undeploy).
    Remove,
}

/// The disk deployments may take: at most `max_functions` names holding modules (each at
/// most `deploy.keep_versions` of them, each at most `deploy.max_package_bytes`), and none
/// when the data directory's file system would be left with less than `min_free_bytes`.
#[derive(Debug, Clone)]
pub struct Room {
    /// Names that may hold modules at once.
    pub max_functions: usize,
    /// The data directory.
    pub dir: std::path::PathBuf,
    /// Free space to keep (`outbox.min_free_bytes`).
    pub min_free_bytes: u64,
}

impl Deployments {
    /// Opens the trees; `keep` versions per name are kept for rollbacks, within `room`.
    pub fn open(db: &sled::Db, keep: usize, room: Room) -> Result<Deployments, sled::Error> {
        Ok(Deployments {
            db: db.clone(),
            state: db.open_tree("deploy/state")?,
            modules: db.open_tree("deploy/modules")?,
            history: db.open_tree("deploy/history")?,
            refusals: db.open_tree("deploy/refusals")?,
            keep: keep.max(1),
            room,
        })
    }

    /// Makes room to keep a new module of `bytes` for `name` (in `state`), or refuses:
    /// for a name that holds no module yet when `max_functions` names do, the kept versions
    /// of an undeployed function are dropped (the first by name), and without one the
    /// package is refused (`too_many_functions`); `disk_full` when the file system would keep
    /// less than `min_free_bytes` free.
    pub fn check_room(&self, name: &str, state: &NameState, bytes: usize) -> Result<(), Rejection> {
        // The disk first: nothing is dropped for a module that will not fit.
        let free = rustix::fs::statvfs(&self.room.dir)
            .map(|st| st.f_bavail.saturating_mul(st.f_frsize))
            .map_err(|e| Rejection::new("storage", format!("free disk space: {e}")))?;
        // The module is kept once and written to the store's log before it is compacted.
        let need = self.room.min_free_bytes.saturating_add(2 * bytes as u64);
        if free < need {
            return Err(Rejection::new(
                "disk_full",
                format!(
                    "{free} bytes free on {}, a {bytes}-byte module needs {need} (outbox.min_free_bytes is kept free)",
                    self.room.dir.display()
                ),
            ));
        }
        if state.kept.is_empty() {
            let mut holding = 0;
            let mut undeployed = None;
            for entry in self.state.iter() {
                let (k, v) = entry.map_err(storage)?;
                let other: NameState = codec::from_cbor(&v).map_err(storage)?;
                if !other.kept.is_empty() {
                    holding += 1;
                    if other.active.is_none() && undeployed.is_none() {
                        undeployed = Some((String::from_utf8_lossy(&k).into_owned(), other));
                    }
                }
            }
            if holding >= self.room.max_functions {
                let Some((victim, other)) = undeployed else {
                    return Err(Rejection::new(
                        "too_many_functions",
                        format!(
                            "{holding} functions are deployed, deploy.max_functions is {}; undeploy one first, or raise the limit (new: {name:?})",
                            self.room.max_functions
                        ),
                    ));
                };
                self.drop_kept(&victim, other)?;
                tracing::info!(function = %victim, new = %name, "kept versions of an undeployed function dropped to make room (deploy.max_functions)");
            }
        }
        Ok(())
    }

    /// The state of `name` (default when never deployed).
    pub fn state(&self, name: &str) -> Result<NameState, Rejection> {
        match self.state.get(name).map_err(storage)? {
            Some(v) => codec::from_cbor(&v).map_err(storage),
            None => Ok(NameState::default()),
        }
    }

    /// A kept version.
    pub fn version(&self, name: &str, version: u64) -> Result<Option<StoredVersion>, Rejection> {
        match self
            .modules
            .get(module_key(name, version))
            .map_err(storage)?
        {
            Some(v) => Ok(Some(codec::from_cbor(&v).map_err(storage)?)),
            None => Ok(None),
        }
    }

    /// Every active deployed function: name, version, manifest and module.
    pub fn active(&self) -> Result<Vec<Active>, Rejection> {
        let mut out = Vec::new();
        for entry in self.state.iter() {
            let (k, v) = entry.map_err(storage)?;
            let name = String::from_utf8_lossy(&k).into_owned();
            let state: NameState = codec::from_cbor(&v).map_err(storage)?;
            let Some(version) = state.active else {
                continue;
            };
            let Some(stored) = self.version(&name, version)? else {
                tracing::error!(function = %name, version, "deployed version missing from the store");
                continue;
            };
            let manifest = codec::from_cbor(&stored.manifest).map_err(storage)?;
            out.push((name, version, manifest, stored.module));
        }
        Ok(out)
    }

    /// Commits `change` for `name` with `highest` = `version_seen` and a history entry, in one
    /// transaction, then flushes. The old state or the new one, never a mix.
    pub fn commit(
        &self,
        name: &str,
        version_seen: u64,
        manifest_sha: &str,
        change: Change<'_>,
        entry: &HistoryEntry,
    ) -> Result<(), Rejection> {
        use sled::transaction::{ConflictableTransactionError, TransactionError};
        use sled::Transactional;
        let mut state = self.state(name)?;
        state.highest = state.highest.max(version_seen);
        state.last_manifest = Some(manifest_sha.to_string());
        let previous = state.active;
        let mut drop_versions = Vec::new();
        let mut insert = None;
        match change {
            Change::Activate { version, stored } => {
                state.active = Some(version);
                if let Some(stored) = stored {
                    if !state.kept.contains(&version) {
                        state.kept.push(version);
                        state.kept.sort_unstable();
                    }
                    insert = Some((module_key(name, version), codec::to_cbor(stored)));
                }
                while state.kept.len() > self.keep {
                    // The oldest kept version goes, but never the one being activated nor the
                    // one it replaces (the rollback target).
                    let Some(at) = state
                        .kept
                        .iter()
                        .position(|v| *v != version && Some(*v) != previous)
                    else {
                        break;
                    };
                    drop_versions.push(state.kept.remove(at));
                }
            }
            Change::Remove => state.active = None,
        }
        let state_bytes = codec::to_cbor(&state);
        let id = self.db.generate_id().map_err(storage)?;
        let entry_bytes = codec::to_cbor(entry);
        let result = (&self.state, &self.modules, &self.history).transaction(|(st, md, hi)| {
            st.insert(name.as_bytes(), &state_bytes[..])?;
            if let Some((k, v)) = &insert {
                md.insert(&k[..], &v[..])?;
            }
            for v in &drop_versions {
                md.remove(module_key(name, *v))?;
            }
            hi.insert(&id.to_be_bytes()[..], &entry_bytes[..])?;
            Ok::<(), ConflictableTransactionError<()>>(())
        });
        match result {
            Ok(()) => {}
            Err(TransactionError::Storage(e)) => return Err(storage(e)),
            Err(TransactionError::Abort(())) => unreachable!("the closure never aborts"),
        }
        self.db.flush().map_err(storage)?;
        self.trim_history();
        Ok(())
    }

    /// Deletes every kept module of the undeployed `name` (its version history stays, so no
    /// older version can be replayed).
    fn drop_kept(&self, name: &str, mut state: NameState) -> Result<(), Rejection> {
        use sled::transaction::ConflictableTransactionError;
        use sled::Transactional;
        let versions = std::mem::take(&mut state.kept);
        let state_bytes = codec::to_cbor(&state);
        (&self.state, &self.modules)
            .transaction(|(st, md)| {
                st.insert(name.as_bytes(), &state_bytes[..])?;
                for v in &versions {
                    md.remove(module_key(name, *v))?;
                }
                Ok::<(), ConflictableTransactionError<()>>(())
            })
            .map_err(|e| Rejection::new("storage", format!("{e:?}")))?;
        Ok(())
    }

    /// Records a refusal (or a load failure): in a list of its own, bounded by
    /// [`REFUSALS_KEEP`], so that refusals never push accepted deployments out of the history.
    pub fn record(&self, entry: &HistoryEntry) {
        let id = match self.db.generate_id() {
            Ok(id) => id,
            Err(e) => {
                tracing::error!(error = %e, "cannot record a deployment history entry");
                return;
            }
        };
        if let Err(e) = self
            .refusals
            .insert(id.to_be_bytes(), codec::to_cbor(entry))
        {
            tracing::error!(error = %e, "cannot record a deployment history entry");
        }
        trim(&self.refusals, REFUSALS_KEEP);
    }

    fn trim_history(&self) {
        trim(&self.history, HISTORY_KEEP);
    }

    /// The newest `limit` entries, accepted deployments and refusals merged, newest first.
    pub fn history(&self, limit: usize) -> Vec<HistoryEntry> {
        let mut accepted = self.history.iter().rev().flatten().peekable();
        let mut refused = self.refusals.iter().rev().flatten().peekable();
        let mut out = Vec::new();
        while out.len() < limit {
            // Ids come from one generator: the larger key is the newer entry.
            let newer = match (accepted.peek(), refused.peek()) {
                (Some((a, _)), Some((r, _))) if a >= r => accepted.next(),
                (Some(_), None) => accepted.next(),
                (_, Some(_)) => refused.next(),
                (None, None) => break,
            };
            if let Some(entry) = newer.and_then(|(_, v)| codec::from_cbor(&v).ok()) {
                out.push(entry);
            }
        }
        out
    }
}

/// Deletes the oldest entries of `tree` beyond `keep`.
fn trim(tree: &sled::Tree, keep: usize) {
    let excess = tree.len().saturating_sub(keep);
    for (k, _) in tree.iter().take(excess).flatten() {
        let _ = tree.remove(k);
    }
}

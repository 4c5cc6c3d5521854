//! Deploy: signed function packages and commands over MQTT.
//!
//! A package (see [`crate::codec::Package`]) carries a manifest signed with ed25519 and, for a
//! deployment, the module. The gateway checks, in this order, before it stores anything: size,
//! the signer is a trusted key, the signature, the manifest, the module's SHA-256, a version
//! above the highest ever accepted for the name (persisted), expiry and addressing. Then the
//! processor validates the function and its module in the runtime ([`crate::processor`]), and
//! only then commits the new state in one sled transaction: the module, the active version,
//! the highest version, a history entry. A crash leaves the old state or the new one.
//!
//! State (sled trees): `deploy/state` name → [`NameState`]; `deploy/modules`
//! `name \0 version` → [`StoredVersion`]; `deploy/history` id → [`HistoryEntry`] (bounded).

pub mod apply;
pub mod keys;

use ed25519_dalek::{Signature, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::Digest;

use crate::codec::{self, Package};
use crate::config::FunctionConfig;

/// History entries kept; older ones are deleted.
pub const HISTORY_KEEP: usize = 500;

/// What a signed manifest asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Install or replace the function with the package's module.
    Deploy,
    /// Remove the function (its versions are kept for a rollback).
    Undeploy,
    /// Make a kept version active again.
    Rollback,
}

/// The signed part of a package.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// What to do.
    pub kind: Kind,
    /// The function's name.
    pub name: String,
    /// Must be above every version accepted for this name before (commands count too).
    pub version: u64,
    /// Deploy: the module's SHA-256, hex.
    #[serde(default)]
    pub module_sha256: Option<String>,
    /// Deploy: the function's settings, as in a `[[functions]]` entry (`module` is ignored).
    #[serde(default)]
    pub function: Option<FunctionConfig>,
    /// Rollback: the version to make active.
    #[serde(default)]
    pub rollback_to: Option<u64>,
    /// Refused after this time, ms since the Unix epoch.
    #[serde(default)]
    pub expires_ms: Option<u64>,
    /// The gateways (by `gateway.id`) that may accept it...
    #[serde(default)]
    pub gateways: Vec<String>,
    /// ...and the groups whose gateways may: at least one of the two lists names the gateway.
    #[serde(default)]
    pub groups: Vec<String>,
    /// When it was made, ms since the Unix epoch.
    pub created_ms: u64,
}

/// Why a package or command was refused: a short reason and the details.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}: {detail}")]
pub struct Rejection {
    /// One of: `too_large`, `malformed`, `untrusted_key`, `bad_signature`, `bad_manifest`,
    /// `name_mismatch`, `hash_mismatch`, `not_newer`, `expired`, `not_addressed`,
    /// `invalid_function`, `name_conflict`, `invalid_module`, `unknown_version`, `not_deployed`,
    /// `storage`.
    pub reason: &'static str,
    /// What exactly.
    pub detail: String,
}

impl Rejection {
    /// A rejection for `reason`.
    pub fn new(reason: &'static str, detail: impl Into<String>) -> Rejection {
        Rejection {
            reason,
            detail: detail.into(),
        }
    }
}

/// What this gateway accepts.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Keys whose signatures are trusted.
    pub trusted: Vec<VerifyingKey>,
    /// This gateway's id.
    pub gateway: String,
    /// The groups this gateway belongs to.
    pub groups: Vec<String>,
    /// Largest package accepted.
    pub max_bytes: usize,
}

/// A package that passed every check that does not need the runtime.
#[derive(Debug, Clone)]
pub struct Verified {
    /// The manifest.
    pub manifest: Manifest,
    /// The package as received.
    pub package: Package,
}

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

/// One line of the deployment history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// When, ms since the Unix epoch.
    pub time_ms: u64,
    /// The function's name (as the topic gave it, if the package could not be read).
    pub name: String,
    /// The manifest's version, if it could be read.
    pub version: Option<u64>,
    /// `deploy`, `undeploy`, `rollback`, or `unknown`.
    pub kind: String,
    /// Whether it was accepted.
    pub accepted: bool,
    /// The rejection reason, or `activated` / `removed` / `already_active`.
    pub reason: String,
    /// Details.
    pub detail: String,
    /// `local` or `cloud`.
    pub source: String,
    /// The module's version string (SHA-256 prefix) when one was activated.
    pub module_version: Option<String>,
}

impl HistoryEntry {
    /// A refusal, now, of `kind` for `name` that came from `source`; the other fields are
    /// set with struct update syntax where they apply.
    pub fn refused(name: &str, kind: &str, source: &str, reason: &str, detail: String) -> Self {
        HistoryEntry {
            time_ms: crate::now_ms(),
            name: name.to_string(),
            version: None,
            kind: kind.to_string(),
            accepted: false,
            reason: reason.to_string(),
            detail,
            source: source.to_string(),
            module_version: None,
        }
    }

    /// An acceptance, now, of version `version` of `kind` for `name` from `source`.
    pub fn accepted(name: &str, version: u64, kind: Kind, source: &str, reason: &str) -> Self {
        HistoryEntry {
            version: Some(version),
            accepted: true,
            ..HistoryEntry::refused(name, kind.name(), source, reason, String::new())
        }
    }
}

/// The result published on `kiri/<gateway>/deploy/<name>/result` (CBOR map).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeployResult {
    /// The gateway answering.
    pub gateway: String,
    /// What happened.
    #[serde(flatten)]
    pub entry: HistoryEntry,
}

fn kind_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Deploy => "deploy",
        Kind::Undeploy => "undeploy",
        Kind::Rollback => "rollback",
    }
}

impl Kind {
    /// Its name.
    pub fn name(self) -> &'static str {
        kind_name(self)
    }
}

/// The function name in a deploy topic: `kiri/<gateway>/deploy/<name>` for this gateway,
/// `kiri/group/<group>/deploy/<name>` for one of its groups; `None` for any other topic.
pub fn topic_name<'t>(policy: &Policy, topic: &'t str) -> Option<&'t str> {
    // Asked for every message the gateway takes in: sensor topics leave at the first check,
    // without an allocation.
    let rest = topic.strip_prefix("kiri/")?;
    let mut parts = rest.split('/');
    let (a, b, c, d, e) = (
        parts.next()?,
        parts.next()?,
        parts.next(),
        parts.next(),
        parts.next(),
    );
    match (a, b, c, d, e) {
        ("group", g, Some("deploy"), Some(name), None) if policy.groups.iter().any(|x| x == g) => {
            Some(name)
        }
        (gw, "deploy", Some(name), None, None) if gw == policy.gateway => Some(name),
        _ => None,
    }
}

/// The deploy topics this gateway subscribes to.
pub fn topics(policy: &Policy) -> Vec<String> {
    std::iter::once(format!("kiri/{}/deploy/+", policy.gateway))
        .chain(
            policy
                .groups
                .iter()
                .map(|g| format!("kiri/group/{g}/deploy/+")),
        )
        .collect()
}

/// The SHA-256 of `bytes`, hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Every check that needs neither the runtime nor the store, in the documented order:
/// [`authenticate`], then [`admit`].
pub fn verify(
    policy: &Policy,
    topic_name: &str,
    bytes: &[u8],
    state: &NameState,
    now_ms: u64,
) -> Result<Verified, Rejection> {
    let verified = authenticate(policy, topic_name, bytes)?;
    admit(policy, &verified, state, now_ms)?;
    Ok(verified)
}

/// Whether a trusted key signed this, and it is what it says: size, package shape, trusted
/// key, signature, manifest, name, module hash.
pub fn authenticate(
    policy: &Policy,
    topic_name: &str,
    bytes: &[u8],
) -> Result<Verified, Rejection> {
    if bytes.len() > policy.max_bytes {
        return Err(Rejection::new(
            "too_large",
            format!(
                "{} bytes, deploy.max_package_bytes is {}",
                bytes.len(),
                policy.max_bytes
            ),
        ));
    }
    let package = Package::decode(bytes).map_err(|e| Rejection::new("malformed", e.to_string()))?;
    let key = policy
        .trusted
        .iter()
        .find(|k| k.as_bytes() == &package.key)
        .ok_or_else(|| {
            let shown = keys::public_text_of(&package.key);
            Rejection::new(
                "untrusted_key",
                format!("signed by {shown}, which is not in deploy.trusted_keys"),
            )
        })?;
    let signature = Signature::from_bytes(&package.signature);
    key.verify_strict(&package.manifest, &signature)
        .map_err(|_| {
            Rejection::new("bad_signature", "the signature does not match the manifest")
        })?;
    let manifest: Manifest = codec::from_cbor(&package.manifest)
        .map_err(|e| Rejection::new("bad_manifest", e.to_string()))?;
    if manifest.name != topic_name {
        return Err(Rejection::new(
            "name_mismatch",
            format!(
                "the manifest is for {:?}, the topic for {topic_name:?}",
                manifest.name
            ),
        ));
    }
    match manifest.kind {
        Kind::Deploy => {
            let want = manifest.module_sha256.as_deref().unwrap_or("");
            let got = sha256_hex(&package.module);
            if want != got {
                return Err(Rejection::new(
                    "hash_mismatch",
                    format!("the module's SHA-256 is {got}, the manifest says {want:?}"),
                ));
            }
        }
        Kind::Undeploy | Kind::Rollback => {
            if !package.module.is_empty() {
                return Err(Rejection::new(
                    "bad_manifest",
                    "a command carries no module",
                ));
            }
        }
    }
    Ok(Verified { manifest, package })
}

/// Whether an authenticated package may be applied here and now: version, expiry, addressing
/// (every package and command must name this gateway or one of its groups), settings.
pub fn admit(
    policy: &Policy,
    verified: &Verified,
    state: &NameState,
    now_ms: u64,
) -> Result<(), Rejection> {
    let manifest = &verified.manifest;
    if manifest.version <= state.highest {
        return Err(Rejection::new(
            "not_newer",
            format!(
                "version {} is not above {}, the highest accepted for {:?}",
                manifest.version, state.highest, manifest.name
            ),
        ));
    }
    if let Some(expires) = manifest.expires_ms {
        if expires <= now_ms {
            return Err(Rejection::new(
                "expired",
                format!("expired at {expires} ms"),
            ));
        }
    }
    let for_gateway = manifest.gateways.contains(&policy.gateway);
    let for_group = manifest.groups.iter().any(|g| policy.groups.contains(g));
    if !for_gateway && !for_group {
        return Err(Rejection::new(
            "not_addressed",
            format!(
                "addressed to gateways {:?} / groups {:?}; this is {:?} in groups {:?}",
                manifest.gateways, manifest.groups, policy.gateway, policy.groups
            ),
        ));
    }
    if manifest.kind == Kind::Deploy {
        let Some(f) = &manifest.function else {
            return Err(Rejection::new(
                "bad_manifest",
                "a deploy manifest needs `function`",
            ));
        };
        if f.name != manifest.name {
            return Err(Rejection::new(
                "bad_manifest",
                "function.name differs from name",
            ));
        }
        f.validate()
            .map_err(|e| Rejection::new("invalid_function", e))?;
    }
    Ok(())
}

/// An active deployed function, as stored: name, version, manifest and module.
pub type Active = (String, u64, Manifest, Vec<u8>);

/// The persisted deployment state.
#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    state: sled::Tree,
    modules: sled::Tree,
    history: sled::Tree,
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

impl Store {
    /// Opens the trees; `keep` versions per name are kept for rollbacks, within `room`.
    pub fn open(db: &sled::Db, keep: usize, room: Room) -> Result<Store, sled::Error> {
        Ok(Store {
            db: db.clone(),
            state: db.open_tree("deploy/state")?,
            modules: db.open_tree("deploy/modules")?,
            history: db.open_tree("deploy/history")?,
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

    /// Records a rejection (or an idempotent repeat) in the history.
    pub fn record(&self, entry: &HistoryEntry) {
        let id = match self.db.generate_id() {
            Ok(id) => id,
            Err(e) => {
                tracing::error!(error = %e, "cannot record a deployment history entry");
                return;
            }
        };
        if let Err(e) = self.history.insert(id.to_be_bytes(), codec::to_cbor(entry)) {
            tracing::error!(error = %e, "cannot record a deployment history entry");
        }
        self.trim_history();
    }

    fn trim_history(&self) {
        let excess = self.history.len().saturating_sub(HISTORY_KEEP);
        for (k, _) in self.history.iter().take(excess).flatten() {
            let _ = self.history.remove(k);
        }
    }

    /// The newest `limit` history entries, newest first.
    pub fn history(&self, limit: usize) -> Vec<HistoryEntry> {
        self.history
            .iter()
            .rev()
            .take(limit)
            .flatten()
            .filter_map(|(_, v)| codec::from_cbor(&v).ok())
            .collect()
    }
}

#[cfg(test)]
mod tests;

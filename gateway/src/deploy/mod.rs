//! Deploy: signed function packages and commands over MQTT.
//!
//! A [`Package`] carries a manifest signed with ed25519 and, for a deployment, the module. The
//! gateway checks, in this order, before it stores anything (`verify.rs`): size, the signer is
//! a trusted key, the signature, the manifest, the module's SHA-256, a version above the
//! highest ever accepted for the name (persisted), expiry and addressing. Then [`apply`]
//! validates the function and its module in the runtime, and only then commits the new state
//! in one sled transaction (`store.rs`): the module, the active version, the highest version,
//! a history entry. A crash leaves the old state or the new one. The pipeline applies
//! deployments between its groups, so that work queued before one runs on the old version.
//!
//! State (sled trees): `deploy/state` name → [`NameState`]; `deploy/modules`
//! `name \0 version` → [`StoredVersion`]; `deploy/history` id → [`HistoryEntry`] (bounded).

mod apply;
mod package;
mod store;
mod verify;

use ed25519_dalek::VerifyingKey;
use serde::{Deserialize, Serialize};
use sha2::Digest;
use tokio::sync::mpsc;

use crate::config::FunctionConfig;

pub use apply::{apply, deployed_spec, Applied};
pub use package::{Package, PACKAGE_VERSION};
pub use store::{
    Active, Change, Deployments, NameState, Room, StoredVersion, HISTORY_KEEP, REFUSALS_KEEP,
};
pub use verify::{admit, authenticate, verify, Verified};

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
    /// The rejection reason, or `activated` / `removed` / `already_applied`.
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

impl Kind {
    /// Its name.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Deploy => "deploy",
            Kind::Undeploy => "undeploy",
            Kind::Rollback => "rollback",
        }
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

/// Where a package or command came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The site broker.
    Local,
    /// The cloud link.
    Cloud,
}

impl Source {
    /// Its name in the history: `local` or `cloud`.
    pub fn name(self) -> &'static str {
        match self {
            Source::Local => "local",
            Source::Cloud => "cloud",
        }
    }
}

/// What the pipeline needs to take deployments.
pub struct Deployer {
    /// What is accepted.
    pub policy: Policy,
    /// The persisted state and history.
    pub store: Deployments,
    /// Results for deployments that came over the cloud link go back that way.
    pub cloud_replies: mpsc::Sender<(String, Vec<u8>)>,
}

impl Deployer {
    /// The function name `topic` addresses to this gateway, if it is a deploy topic of it.
    pub fn addressed<'t>(&self, topic: &'t str) -> Option<&'t str> {
        topic_name(&self.policy, topic)
    }

    /// The deploy topics this gateway subscribes to.
    pub fn topics(&self) -> Vec<String> {
        topics(&self.policy)
    }

    /// Queues a result for the uplink to publish, without waiting; `false` if it cannot.
    pub fn reply_to_cloud(&self, topic: String, payload: Vec<u8>) -> bool {
        self.cloud_replies.try_send((topic, payload)).is_ok()
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

#[cfg(test)]
mod tests;

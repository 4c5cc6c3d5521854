//! Applying a deployment to the registry: verify, validate the module in the runtime, commit
//! the new state (one transaction, flushed), then activate or retire the function. Called by
//! the pipeline between its groups; what it publishes is the caller's to send.

use std::path::PathBuf;

use super::{
    sha256_hex, Change, DeployResult, Deployer, HistoryEntry, Kind, Manifest, Package, Rejection,
    Source, StoredVersion,
};
use crate::registry::{Origin, Registry};

/// Refusals that come before the signature is known good.
const UNSIGNED: [&str; 4] = ["too_large", "malformed", "untrusted_key", "bad_signature"];

/// What a deployment came to: the result to publish, and whether the functions changed.
#[derive(Debug)]
pub struct Applied {
    /// The function the deployment was for.
    pub name: String,
    /// Where to publish the result (`kiri/<gateway>/deploy/<name>/result`).
    pub topic: String,
    /// The result, CBOR ([`DeployResult`]).
    pub payload: Vec<u8>,
    /// Whether a function was activated or retired (routes and subscriptions follow).
    pub changed: bool,
}

/// The configuration a deployed function runs with: the manifest's, with a module path that
/// says where it came from.
pub fn deployed_spec(manifest: &Manifest, version: u64) -> Option<crate::config::FunctionConfig> {
    let mut f = manifest.function.clone()?;
    f.module = PathBuf::from(format!("deployed:{}@{version}", manifest.name));
    Some(f)
}

/// Applies the package or command `payload` that came on `topic` from `source`, records it in
/// the history (refusals only once signed by a trusted key), logs and counts it. `None` when
/// `topic` is not a deploy topic of this gateway (one for another gateway or group, over the
/// cloud link).
pub fn apply(
    deployer: &Deployer,
    registry: &mut Registry,
    topic: &str,
    payload: &[u8],
    source: Source,
) -> Option<Applied> {
    let name = deployer.addressed(topic)?.to_string();
    let mut changed = false;
    let entry = match apply_checked(deployer, registry, &name, payload, source, &mut changed) {
        Ok(entry) => entry,
        Err(r) => {
            let entry = HistoryEntry {
                version: peek_version(payload),
                ..HistoryEntry::refused(
                    &name,
                    &peek_kind(payload),
                    source.name(),
                    r.reason,
                    r.detail.clone(),
                )
            };
            // Only what a trusted key signed goes into the history: anyone who can publish
            // could otherwise flush it with junk (the rest is logged and counted).
            if !UNSIGNED.contains(&r.reason) {
                deployer.store.record(&entry);
            }
            entry
        }
    };
    metrics::counter!("kiri_deployments_total",
        "outcome" => if entry.accepted { "accepted" } else { "rejected" },
        "reason" => entry.reason.clone())
    .increment(1);
    let source_name = source.name();
    if entry.accepted {
        tracing::info!(function = %name, version = ?entry.version, kind = %entry.kind, source = source_name, reason = %entry.reason, "deployment applied");
    } else {
        tracing::warn!(function = %name, version = ?entry.version, kind = %entry.kind, source = source_name, reason = %entry.reason, detail = %entry.detail, "deployment rejected");
    }
    let gateway = deployer.policy.gateway.clone();
    Some(Applied {
        topic: format!("kiri/{gateway}/deploy/{name}/result"),
        name,
        payload: crate::codec::to_cbor(&DeployResult { gateway, entry }),
        changed,
    })
}

/// Checks and applies one package or command; `changed` is set once the registry changed.
fn apply_checked(
    deployer: &Deployer,
    registry: &mut Registry,
    name: &str,
    payload: &[u8],
    source: Source,
    changed: &mut bool,
) -> Result<HistoryEntry, Rejection> {
    let store = &deployer.store;
    let state = store.state(name)?;
    let verified = super::authenticate(&deployer.policy, name, payload)?;
    // The broker redelivers what a crash kept from being acknowledged: the last manifest
    // accepted (a signed one, with its module's hash) is answered again, and changes nothing.
    let manifest_sha = sha256_hex(&verified.package.manifest);
    let source = source.name();
    if state.last_manifest.as_deref() == Some(manifest_sha.as_str()) {
        let m = &verified.manifest;
        return Ok(HistoryEntry::accepted(
            name,
            m.version,
            m.kind,
            source,
            "already_applied",
        ));
    }
    super::admit(&deployer.policy, &verified, &state, crate::now_ms())?;
    let m = verified.manifest;
    let mut entry = HistoryEntry::accepted(name, m.version, m.kind, source, "");
    match m.kind {
        Kind::Deploy => {
            if registry.is_configured(name) {
                return Err(Rejection::new(
                    "name_conflict",
                    format!("{name:?} is a function of the configuration file; deploy under another name"),
                ));
            }
            let spec = deployed_spec(&m, m.version).expect("verified: deploy has a function");
            let module = verified.package.module;
            let prepared = registry
                .preparer(&spec)
                .prepare(&module)
                .map_err(|e| Rejection::new("invalid_module", e.to_string()))?;
            store.check_room(name, &state, payload.len())?;
            entry.reason = "activated".into();
            entry.module_version = Some(prepared.version().to_string());
            let stored = StoredVersion {
                manifest: verified.package.manifest,
                module,
            };
            let change = Change::Activate {
                version: m.version,
                stored: Some(&stored),
            };
            store.commit(name, m.version, &manifest_sha, change, &entry)?;
            let origin = Origin::Deployed { version: m.version };
            registry.activate(spec, prepared, origin);
            *changed = true;
        }
        Kind::Rollback => {
            let to = m
                .rollback_to
                .ok_or_else(|| Rejection::new("bad_manifest", "a rollback needs rollback_to"))?;
            let stored = store.version(name, to)?.ok_or_else(|| {
                Rejection::new(
                    "unknown_version",
                    format!("version {to} of {name:?} is not kept"),
                )
            })?;
            let old: Manifest = crate::codec::from_cbor(&stored.manifest)
                .map_err(|e| Rejection::new("storage", e.to_string()))?;
            if sha256_hex(&stored.module) != old.module_sha256.clone().unwrap_or_default() {
                return Err(Rejection::new(
                    "storage",
                    "the kept module does not match its manifest",
                ));
            }
            let spec = deployed_spec(&old, to)
                .ok_or_else(|| Rejection::new("storage", "the kept manifest has no function"))?;
            let prepared = registry
                .preparer(&spec)
                .prepare(&stored.module)
                .map_err(|e| Rejection::new("invalid_module", e.to_string()))?;
            entry.reason = "activated".into();
            entry.detail = format!("rolled back to version {to}");
            entry.module_version = Some(prepared.version().to_string());
            let change = Change::Activate {
                version: to,
                stored: None,
            };
            store.commit(name, m.version, &manifest_sha, change, &entry)?;
            registry.activate(spec, prepared, Origin::Deployed { version: to });
            *changed = true;
        }
        Kind::Undeploy => {
            if state.active.is_none() {
                return Err(Rejection::new(
                    "not_deployed",
                    format!("{name:?} is not deployed"),
                ));
            }
            entry.reason = "removed".into();
            store.commit(name, m.version, &manifest_sha, Change::Remove, &entry)?;
            registry.retire(name);
            *changed = true;
        }
    }
    Ok(entry)
}

fn peek_manifest(payload: &[u8]) -> Option<Manifest> {
    let p = Package::decode(payload).ok()?;
    crate::codec::from_cbor(&p.manifest).ok()
}

fn peek_version(payload: &[u8]) -> Option<u64> {
    peek_manifest(payload).map(|m| m.version)
}

fn peek_kind(payload: &[u8]) -> String {
    peek_manifest(payload)
        .map(|m| m.kind.name().to_string())
        .unwrap_or_else(|| "unknown".into())
}

//! Applying deployments in the processor, between groups: verify, validate the module in the
//! runtime, commit the new state (one transaction, flushed), then swap the function in.
//! Work queued before the deployment ran on the old version; work after it runs on the new.

use std::path::PathBuf;

use rumqttc::QoS;
use tokio::sync::mpsc;

use super::{
    sha256_hex, topic_name, Change, DeployResult, HistoryEntry, Kind, Manifest, Policy, Rejection,
    Store, StoredVersion,
};
use crate::config::FunctionConfig;
use crate::dashboard::functions::FunctionInfo;
use crate::dispatch::Router;
use crate::ingest::Ack;
use crate::processor::{ack_of, ProcessError, Processor, Work};

/// Refusals that come before the signature is known good.
const UNSIGNED: [&str; 4] = ["too_large", "malformed", "untrusted_key", "bad_signature"];

/// What the processor needs to take deployments.
pub struct Deployer {
    /// What is accepted.
    pub policy: Policy,
    /// The persisted state and history.
    pub store: Store,
    /// Results for deployments that came over the cloud link go back that way.
    pub cloud_replies: mpsc::Sender<(String, Vec<u8>)>,
}

/// A function's directory entry, for a deployed version.
pub fn deployed_info(f: &FunctionConfig, module_version: &str, version: u64) -> FunctionInfo {
    FunctionInfo {
        version: module_version.to_string(),
        origin: "deployed".into(),
        deployed_version: Some(version),
        ..f.into()
    }
}

/// The configuration a deployed function runs with: the manifest's, with a module path that
/// says where it came from.
pub fn deployed_spec(manifest: &Manifest, version: u64) -> Option<FunctionConfig> {
    let mut f = manifest.function.clone()?;
    f.module = PathBuf::from(format!("deployed:{}@{version}", manifest.name));
    Some(f)
}

impl Processor {
    /// Whether `w` is a deployment (it then takes effect between groups).
    pub(crate) fn is_deployment(&self, w: &Work) -> bool {
        match (w, &self.deploy) {
            (Work::Deploy { .. }, Some(_)) => true,
            (Work::Message(m), Some(d)) => topic_name(&d.policy, &m.publish.topic).is_some(),
            _ => false,
        }
    }

    /// Applies a deployment and answers it; returns the acknowledgement to send (for one from
    /// the local broker), which goes out only now that its effects are durable.
    pub(crate) fn deployment(&mut self, w: Work) -> Result<Option<Ack>, ProcessError> {
        let (topic, payload, source, ack) = match w {
            Work::Message(m) => {
                let ack = ack_of(&m);
                (
                    m.publish.topic.clone(),
                    m.publish.payload.to_vec(),
                    "local",
                    ack,
                )
            }
            Work::Deploy { topic, payload } => (topic, payload, "cloud", None),
            _ => return Ok(None),
        };
        let Some(d) = &self.deploy else {
            return Ok(ack);
        };
        let Some(name) = topic_name(&d.policy, &topic).map(str::to_string) else {
            // Over the cloud link on a topic for another gateway or group: not ours.
            return Ok(ack);
        };
        let entry = match self.apply(&name, &payload, source) {
            Ok(entry) => entry,
            Err(r) => {
                let entry = HistoryEntry {
                    version: peek_version(&payload),
                    ..HistoryEntry::refused(
                        &name,
                        &peek_kind(&payload),
                        source,
                        r.reason,
                        r.detail.clone(),
                    )
                };
                // Only what a trusted key signed goes into the history: anyone who can publish
                // could otherwise flush it with junk (the rest is logged and counted).
                if !UNSIGNED.contains(&r.reason) {
                    if let Some(d) = &self.deploy {
                        d.store.record(&entry);
                    }
                }
                entry
            }
        };
        metrics::counter!("kiri_deployments_total",
            "outcome" => if entry.accepted { "accepted" } else { "rejected" },
            "reason" => entry.reason.clone())
        .increment(1);
        if entry.accepted {
            tracing::info!(function = %name, version = ?entry.version, kind = %entry.kind, source, reason = %entry.reason, "deployment applied");
        } else {
            tracing::warn!(function = %name, version = ?entry.version, kind = %entry.kind, source, reason = %entry.reason, detail = %entry.detail, "deployment rejected");
        }
        let d = self.deploy.as_ref().expect("checked above");
        let reply_topic = format!("kiri/{}/deploy/{name}/result", d.policy.gateway);
        let reply = crate::codec::to_cbor(&DeployResult {
            gateway: d.policy.gateway.clone(),
            entry,
        });
        let sent = match source {
            "cloud" => d.cloud_replies.try_send((reply_topic, reply)).is_ok(),
            _ => self
                .local
                .try_publish(reply_topic, QoS::AtLeastOnce, false, reply)
                .is_ok(),
        };
        if !sent {
            metrics::counter!("kiri_deploy_replies_dropped_total").increment(1);
            tracing::warn!(function = %name, "deployment result not published: session queue full or down (it is in the history)");
        }
        Ok(ack)
    }

    /// Checks and applies one package or command.
    fn apply(
        &mut self,
        name: &str,
        payload: &[u8],
        source: &str,
    ) -> Result<HistoryEntry, Rejection> {
        let d = self.deploy.as_ref().expect("deployments are on");
        let state = d.store.state(name)?;
        let verified = super::authenticate(&d.policy, name, payload)?;
        // The broker redelivers what a crash kept from being acknowledged: the last manifest
        // accepted (a signed one, with its module's hash) is answered again, and changes nothing.
        let manifest_sha = sha256_hex(&verified.package.manifest);
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
        super::admit(&d.policy, &verified, &state, crate::now_ms())?;
        let m = verified.manifest;
        let mut entry = HistoryEntry::accepted(name, m.version, m.kind, source, "");
        match m.kind {
            Kind::Deploy => {
                if self.config_names.iter().any(|n| n == name) {
                    return Err(Rejection::new(
                        "name_conflict",
                        format!("{name:?} is a function of the configuration file; deploy under another name"),
                    ));
                }
                let spec = deployed_spec(&m, m.version).expect("verified: deploy has a function");
                let module = verified.package.module;
                let prepared = self
                    .runtime
                    .prepare(&spec, &module)
                    .map_err(|e| Rejection::new("invalid_module", e.to_string()))?;
                d.store.check_room(name, &state, payload.len())?;
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
                d.store
                    .commit(name, m.version, &manifest_sha, change, &entry)?;
                self.activate(name, spec, prepared, m.version);
            }
            Kind::Rollback => {
                let to = m.rollback_to.ok_or_else(|| {
                    Rejection::new("bad_manifest", "a rollback needs rollback_to")
                })?;
                let stored = d.store.version(name, to)?.ok_or_else(|| {
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
                let spec = deployed_spec(&old, to).ok_or_else(|| {
                    Rejection::new("storage", "the kept manifest has no function")
                })?;
                let prepared = self
                    .runtime
                    .prepare(&spec, &stored.module)
                    .map_err(|e| Rejection::new("invalid_module", e.to_string()))?;
                entry.reason = "activated".into();
                entry.detail = format!("rolled back to version {to}");
                entry.module_version = Some(prepared.version().to_string());
                let change = Change::Activate {
                    version: to,
                    stored: None,
                };
                d.store
                    .commit(name, m.version, &manifest_sha, change, &entry)?;
                self.activate(name, spec, prepared, to);
            }
            Kind::Undeploy => {
                if state.active.is_none() {
                    return Err(Rejection::new(
                        "not_deployed",
                        format!("{name:?} is not deployed"),
                    ));
                }
                entry.reason = "removed".into();
                d.store
                    .commit(name, m.version, &manifest_sha, Change::Remove, &entry)?;
                if let Some(idx) = self.slot_of(name) {
                    self.runtime.retire(idx);
                    self.specs[idx] = None;
                    self.directory.deactivate(idx);
                    self.schedules.clear(idx);
                }
                self.refresh_routes();
            }
        }
        Ok(entry)
    }

    /// The index a function of this name has (or had), to reuse it.
    fn slot_of(&self, name: &str) -> Option<usize> {
        (0..self.runtime.len()).find(|&i| self.runtime.name(i) == name)
    }

    /// Swaps a prepared function in (in place of the old version, or as a new index).
    fn activate(
        &mut self,
        name: &str,
        spec: FunctionConfig,
        prepared: crate::runtime::Prepared,
        version: u64,
    ) {
        let module_version = prepared.version().to_string();
        let slot = self.slot_of(name);
        let idx = self.runtime.install(slot, prepared);
        if idx == self.specs.len() {
            self.specs.push(None);
            self.retry_policy.push((0, 0));
        }
        self.retry_policy[idx] = (spec.retries, spec.retry_backoff_ms);
        self.directory
            .set(idx, deployed_info(&spec, &module_version, version));
        self.schedules.set(idx, &spec);
        self.specs[idx] = Some(spec);
        self.refresh_routes();
    }

    /// Rebuilds the routing table and brings the ingest subscriptions in line with it.
    pub(crate) fn refresh_routes(&mut self) {
        let empty: &[String] = &[];
        self.router = Router::new(
            self.specs
                .iter()
                .map(|s| s.as_ref().map(|f| f.triggers.as_slice()).unwrap_or(empty)),
        );
        let mut wanted = self.router.subscriptions();
        if let Some(d) = &self.deploy {
            wanted.extend(super::topics(&d.policy));
        }
        self.pending_subscriptions = Some(wanted);
        self.sync_subscriptions();
    }

    /// Brings the ingest session's subscriptions to what `pending_subscriptions` asks for;
    /// when its request queue is full, leaves them pending for the next turn.
    pub(crate) fn sync_subscriptions(&mut self) {
        let Some(wanted) = self.pending_subscriptions.take() else {
            return;
        };
        let mut current = self.subscriptions.lock().expect("subscriptions lock");
        let added: Vec<String> = wanted
            .iter()
            .filter(|f| !current.contains(f))
            .cloned()
            .collect();
        let removed: Vec<String> = current
            .iter()
            .filter(|f| !wanted.contains(f))
            .cloned()
            .collect();
        if !added.is_empty() {
            let filters = added
                .iter()
                .map(|f| rumqttc::SubscribeFilter::new(f.clone(), QoS::AtLeastOnce));
            if self.ingest.try_subscribe_many(filters).is_err() {
                drop(current);
                self.pending_subscriptions = Some(wanted);
                return;
            }
            current.extend(added);
        }
        for f in &removed {
            if self.ingest.try_unsubscribe(f.clone()).is_err() {
                drop(current);
                self.pending_subscriptions = Some(wanted);
                return;
            }
            current.retain(|c| c != f);
        }
        *current = wanted.clone();
        drop(current);
        if let Err(e) = crate::store::save_subscriptions(&self.db, &wanted) {
            tracing::error!(error = %e, "cannot persist the subscriptions");
        }
    }
}

fn peek_manifest(payload: &[u8]) -> Option<Manifest> {
    let p = crate::codec::Package::decode(payload).ok()?;
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

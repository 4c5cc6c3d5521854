//! The checks that need neither the runtime nor the store, in the documented order:
//! [`authenticate`] (is it what a trusted key signed?), then [`admit`] (may it apply here and
//! now?).

use ed25519_dalek::Signature;

use super::{sha256_hex, Kind, Manifest, NameState, Package, Policy, Rejection};
use crate::codec;
use crate::crypto::keys;

/// A package that passed every check that does not need the runtime.
#[derive(Debug, Clone)]
pub struct Verified {
    /// The manifest.
    pub manifest: Manifest,
    /// The package as received.
    pub package: Package,
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

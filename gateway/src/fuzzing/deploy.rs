//! `deploy`: package parsing and verification as the gateway runs them on a deploy topic.

use std::sync::OnceLock;

use ed25519_dalek::{Signature, SigningKey, VerifyingKey};

use crate::codec;
use crate::deploy::{self, Kind, Manifest, NameState, Package, Policy};

/// The gateway's clock during the checks, ms since the Unix epoch.
pub const NOW_MS: u64 = 1_700_000_000_000;
/// The highest version the gateway has accepted for `f` before.
pub const HIGHEST: u64 = 5;

/// The reasons [`deploy::Rejection`] documents for the checks before the runtime.
const REASONS: [&str; 11] = [
    "too_large",
    "malformed",
    "untrusted_key",
    "bad_signature",
    "bad_manifest",
    "name_mismatch",
    "hash_mismatch",
    "not_newer",
    "expired",
    "not_addressed",
    "invalid_function",
];

/// The trusted key the harness signs with (fixed, so seeds stay valid).
pub fn signing_key() -> SigningKey {
    SigningKey::from_bytes(&[7; 32])
}

/// Gateway `gw-1` in group `site-a`, trusting [`signing_key`] and one other key.
pub fn policy() -> &'static Policy {
    static POLICY: OnceLock<Policy> = OnceLock::new();
    POLICY.get_or_init(|| Policy {
        trusted: vec![
            SigningKey::from_bytes(&[9; 32]).verifying_key(),
            signing_key().verifying_key(),
        ],
        gateway: "gw-1".into(),
        groups: vec!["site-a".into()],
        max_bytes: 64 << 10,
    })
}

/// The first byte picks the mode. Even: the rest is a package as it arrives. Odd: the rest is
/// a manifest and a module (split by a two-byte length) that the harness signs with the
/// trusted key, so the checks after the signature see fuzzed manifests too; with bit 1 set, a
/// deploy manifest's `module_sha256` is first set to the module's. Topic: the function `f`.
pub fn deploy(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let bytes = if mode % 2 == 0 {
        rest.to_vec()
    } else {
        let (manifest, module) = super::split(rest);
        let mut manifest = manifest.to_vec();
        if mode & 2 != 0 {
            if let Ok(mut m) = codec::from_cbor::<Manifest>(&manifest) {
                if m.kind == Kind::Deploy {
                    m.module_sha256 = Some(deploy::sha256_hex(module));
                    manifest = codec::to_cbor(&m);
                }
            }
        }
        Package::sign(&signing_key(), manifest, module.to_vec()).encode()
    };
    check(&bytes);
}

fn check(bytes: &[u8]) {
    let policy = policy();
    let state = NameState {
        highest: HIGHEST,
        ..NameState::default()
    };
    let verified = deploy::verify(policy, "f", bytes, &state, NOW_MS);
    // `verify` is `authenticate` then `admit`, nothing else.
    let halves = deploy::authenticate(policy, "f", bytes)
        .and_then(|v| deploy::admit(policy, &v, &state, NOW_MS).map(|()| v));
    assert_eq!(
        verified.as_ref().map(|_| ()).map_err(|e| e.reason),
        halves.as_ref().map(|_| ()).map_err(|e| e.reason)
    );
    let v = match verified {
        Ok(v) => v,
        Err(e) => {
            assert!(REASONS.contains(&e.reason), "undocumented reason {e}");
            return;
        }
    };
    // Accepted: everything the checks promise holds, checked again independently.
    assert!(bytes.len() <= policy.max_bytes);
    let package = Package::decode(bytes).expect("an accepted package decodes");
    assert_eq!(package, v.package);
    let key = VerifyingKey::from_bytes(&package.key).expect("a trusted key is a valid key");
    assert!(policy.trusted.contains(&key), "signed by a trusted key");
    let signature = Signature::from_bytes(&package.signature);
    assert!(key.verify_strict(&package.manifest, &signature).is_ok());
    let m = &v.manifest;
    let again: Manifest = codec::from_cbor(&package.manifest).expect("the signed manifest");
    assert_eq!(codec::to_cbor(&again), codec::to_cbor(m));
    assert_eq!(m.name, "f");
    assert!(m.version > HIGHEST, "newer than what was accepted");
    assert!(m.expires_ms.is_none_or(|t| t > NOW_MS), "not expired");
    assert!(
        m.gateways.contains(&policy.gateway) || m.groups.iter().any(|g| policy.groups.contains(g)),
        "addressed to this gateway"
    );
    match m.kind {
        Kind::Deploy => {
            let hash = deploy::sha256_hex(&package.module);
            assert_eq!(m.module_sha256.as_deref(), Some(hash.as_str()));
            let spec = deploy::deployed_spec(m, m.version).expect("a deploy has a function");
            assert_eq!(spec.name, "f");
            assert!(
                spec.validate().is_ok(),
                "the function's settings were validated"
            );
        }
        Kind::Undeploy | Kind::Rollback => assert!(package.module.is_empty()),
    }
}

use proptest::prelude::*;

use super::*;
use crate::codec;
use crate::crypto::keys;

const WASM: &[u8] = b"\0asm\x01\0\0\0 not really a module, the runtime checks that";

fn policy(key: &ed25519_dalek::SigningKey) -> Policy {
    Policy {
        trusted: vec![keys::generate().verifying_key(), key.verifying_key()],
        gateway: "gw-1".into(),
        groups: vec!["site-a".into()],
        max_bytes: 1 << 20,
    }
}

fn function(name: &str) -> FunctionConfig {
    let toml = format!("name = {name:?}\nmodule = \"\"\ntriggers = [\"sensors/#\"]\n");
    use figment::providers::Format;
    figment::Figment::from(figment::providers::Toml::string(&toml))
        .extract()
        .unwrap()
}

fn manifest(version: u64) -> Manifest {
    Manifest {
        kind: Kind::Deploy,
        name: "f".into(),
        version,
        module_sha256: Some(sha256_hex(WASM)),
        function: Some(function("f")),
        rollback_to: None,
        expires_ms: None,
        gateways: vec!["gw-1".into()],
        groups: vec![],
        created_ms: 1,
    }
}

fn package(key: &ed25519_dalek::SigningKey, m: &Manifest) -> Vec<u8> {
    Package::sign(key, codec::to_cbor(m), WASM.to_vec()).encode()
}

fn reason(r: Result<Verified, Rejection>) -> &'static str {
    match r {
        Ok(_) => "accepted",
        Err(e) => e.reason,
    }
}

#[test]
fn a_valid_package_passes_and_each_defect_is_named() {
    let key = keys::generate();
    let p = policy(&key);
    let fresh = NameState::default();
    let check = |bytes: &[u8], state: &NameState| reason(verify(&p, "f", bytes, state, 1000));
    let good = package(&key, &manifest(2));
    assert_eq!(check(&good, &fresh), "accepted");
    let v = verify(&p, "f", &good, &fresh, 1000).unwrap();
    assert_eq!((v.manifest.version, v.package.module.as_slice()), (2, WASM));

    assert_eq!(
        check(&package(&keys::generate(), &manifest(2)), &fresh),
        "untrusted_key"
    );
    assert_eq!(
        check(&good[..good.len() - 1], &fresh),
        "malformed",
        "truncated"
    );
    let mut tampered = Package::sign(&key, codec::to_cbor(&manifest(2)), WASM.to_vec());
    tampered.module.push(0);
    assert_eq!(check(&tampered.encode(), &fresh), "hash_mismatch");
    tampered = Package::sign(&key, codec::to_cbor(&manifest(2)), WASM.to_vec());
    tampered.manifest = codec::to_cbor(&manifest(3));
    assert_eq!(check(&tampered.encode(), &fresh), "bad_signature");
    let seen = NameState {
        highest: 2,
        ..NameState::default()
    };
    assert_eq!(check(&good, &seen), "not_newer", "a replay");
    let expired = Manifest {
        expires_ms: Some(999),
        ..manifest(2)
    };
    assert_eq!(check(&package(&key, &expired), &fresh), "expired");
    let elsewhere = Manifest {
        gateways: vec!["gw-2".into()],
        ..manifest(2)
    };
    assert_eq!(check(&package(&key, &elsewhere), &fresh), "not_addressed");
    let other_group = Manifest {
        gateways: vec![],
        groups: vec!["site-b".into()],
        ..manifest(2)
    };
    assert_eq!(check(&package(&key, &other_group), &fresh), "not_addressed");
    let our_group = Manifest {
        gateways: vec![],
        groups: vec!["site-a".into()],
        ..manifest(2)
    };
    let nobody = Manifest {
        gateways: vec![],
        ..manifest(2)
    };
    assert_eq!(check(&package(&key, &nobody), &fresh), "not_addressed");
    assert_eq!(check(&package(&key, &our_group), &fresh), "accepted");
    assert_eq!(
        reason(verify(&p, "g", &good, &fresh, 1000)),
        "name_mismatch",
        "a package for f on g's topic"
    );
    let small = Policy {
        max_bytes: 100,
        ..p.clone()
    };
    assert_eq!(
        reason(verify(&small, "f", &good, &fresh, 1000)),
        "too_large"
    );
    let no_trigger = Manifest {
        function: Some(FunctionConfig {
            triggers: vec![],
            ..function("f")
        }),
        ..manifest(2)
    };
    assert_eq!(
        check(&package(&key, &no_trigger), &fresh),
        "invalid_function"
    );
}

#[test]
fn a_thousand_bit_flips_are_all_refused() {
    let key = keys::generate();
    let p = policy(&key);
    let good = package(&key, &manifest(2));
    let mut rng = fastrand::Rng::with_seed(7);
    for _ in 0..1000 {
        let mut bad = good.clone();
        let bit = rng.usize(..bad.len() * 8);
        bad[bit / 8] ^= 1 << (bit % 8);
        let r = verify(&p, "f", &bad, &NameState::default(), 1000);
        assert!(r.is_err(), "bit {bit} flipped and still accepted");
    }
}

#[test]
fn topics_name_this_gateway_and_its_groups_only() {
    let key = keys::generate();
    let p = policy(&key);
    assert_eq!(topic_name(&p, "kiri/gw-1/deploy/f"), Some("f"));
    assert_eq!(topic_name(&p, "kiri/group/site-a/deploy/f"), Some("f"));
    assert_eq!(topic_name(&p, "kiri/gw-2/deploy/f"), None);
    assert_eq!(topic_name(&p, "kiri/group/site-b/deploy/f"), None);
    assert_eq!(topic_name(&p, "kiri/gw-1/deploy/f/result"), None);
    assert_eq!(
        topics(&p),
        ["kiri/gw-1/deploy/+", "kiri/group/site-a/deploy/+"]
    );
}

#[test]
fn state_commits_keep_versions_and_history() {
    let dir = tempfile::tempdir().unwrap();
    let db = sled::Config::new().path(dir.path()).open().unwrap();
    let store = Deployments::open(&db, 2, room(dir.path(), 32, 0)).unwrap();
    let entry = |v| HistoryEntry {
        time_ms: v,
        name: "f".into(),
        version: Some(v),
        kind: "deploy".into(),
        accepted: true,
        reason: "activated".into(),
        detail: String::new(),
        source: "local".into(),
        module_version: None,
    };
    for v in 1..=3 {
        let stored = StoredVersion {
            manifest: codec::to_cbor(&manifest(v)),
            module: WASM.to_vec(),
        };
        let change = Change::Activate {
            version: v,
            stored: Some(&stored),
        };
        store.commit("f", v, "m", change, &entry(v)).unwrap();
    }
    let s = store.state("f").unwrap();
    assert_eq!(
        (s.highest, s.active, s.kept.clone()),
        (3, Some(3), vec![2, 3])
    );
    assert!(store.version("f", 1).unwrap().is_none(), "only 2 kept");
    store
        .commit(
            "f",
            4,
            "m",
            Change::Activate {
                version: 2,
                stored: None,
            },
            &entry(4),
        )
        .unwrap();
    let active = store.active().unwrap();
    assert_eq!((active[0].0.as_str(), active[0].1), ("f", 2));
    // A new version after the rollback: the version it replaces (2) stays, 3 goes.
    let stored = StoredVersion {
        manifest: codec::to_cbor(&manifest(5)),
        module: WASM.to_vec(),
    };
    let change = Change::Activate {
        version: 5,
        stored: Some(&stored),
    };
    store.commit("f", 5, "m5", change, &entry(5)).unwrap();
    assert_eq!(store.state("f").unwrap().kept, vec![2, 5]);
    assert_eq!(
        store.state("f").unwrap().last_manifest.as_deref(),
        Some("m5")
    );
    store
        .commit("f", 6, "m6", Change::Remove, &entry(6))
        .unwrap();
    assert!(store.active().unwrap().is_empty());
    assert_eq!(store.state("f").unwrap().highest, 6);
    let h = store.history(10);
    assert_eq!(
        h.iter().map(|e| e.time_ms).collect::<Vec<_>>(),
        [6, 5, 4, 3, 2, 1]
    );
}

#[test]
fn replayed_refusals_never_push_deployments_out_of_the_history() {
    let dir = tempfile::tempdir().unwrap();
    let db = sled::Config::new().path(dir.path()).open().unwrap();
    let store = Deployments::open(&db, 2, room(dir.path(), 32, 0)).unwrap();
    for v in 1..=5 {
        let entry = HistoryEntry::accepted("f", v, Kind::Deploy, "local", "activated");
        store
            .commit("f", v, &format!("m{v}"), Change::Remove, &entry)
            .unwrap();
        // Each real deployment followed by a burst of a replayed, refused package.
        for _ in 0..130 {
            let refusal = HistoryEntry {
                version: Some(1),
                ..HistoryEntry::refused("f", "deploy", "local", "not_newer", "replayed".into())
            };
            store.record(&refusal);
        }
    }
    let all = store.history(10_000);
    let accepted: Vec<u64> = all
        .iter()
        .filter(|e| e.accepted)
        .filter_map(|e| e.version)
        .collect();
    assert_eq!(
        accepted,
        [5, 4, 3, 2, 1],
        "all five deployments kept, newest first"
    );
    assert_eq!(all.len(), 5 + REFUSALS_KEEP, "refusals bounded apart");
    assert!(
        all[..REFUSALS_KEEP].iter().all(|e| !e.accepted) && all[REFUSALS_KEEP].version == Some(5),
        "merged by time: the last burst of refusals came after the last deployment"
    );
}

fn room(dir: &std::path::Path, max_functions: usize, min_free_bytes: u64) -> Room {
    Room {
        max_functions,
        dir: dir.to_path_buf(),
        min_free_bytes,
    }
}

#[test]
fn deployments_stay_within_their_room_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let db = sled::Config::new().path(dir.path()).open().unwrap();
    let store = Deployments::open(&db, 2, room(dir.path(), 2, 0)).unwrap();
    let entry = HistoryEntry::accepted("f", 1, Kind::Deploy, "local", "activated");
    let deploy = |name: &str, version: u64| {
        let state = store.state(name).unwrap();
        store.check_room(name, &state, WASM.len())?;
        let stored = StoredVersion {
            manifest: codec::to_cbor(&manifest(version)),
            module: WASM.to_vec(),
        };
        let change = Change::Activate {
            version,
            stored: Some(&stored),
        };
        store.commit(name, version, "m", change, &entry)
    };
    deploy("a", 1).unwrap();
    deploy("b", 1).unwrap();
    deploy("b", 2).unwrap();
    let refused = deploy("c", 1).unwrap_err();
    assert_eq!(refused.reason, "too_many_functions", "{}", refused.detail);
    // An undeployed function's kept versions give way to a new name.
    store.commit("a", 2, "m", Change::Remove, &entry).unwrap();
    deploy("c", 1).unwrap();
    assert!(store.state("a").unwrap().kept.is_empty());
    assert!(store.version("a", 1).unwrap().is_none());
    assert_eq!(store.active().unwrap().len(), 2);

    // No module goes in that would leave less than the reserve free.
    let full = Deployments::open(&db, 2, room(dir.path(), 32, u64::MAX / 2)).unwrap();
    let state = full.state("b").unwrap();
    let refused = full.check_room("b", &state, WASM.len()).unwrap_err();
    assert_eq!(refused.reason, "disk_full", "{}", refused.detail);
    // ... and nothing is dropped for it: an undeployed function's versions stay.
    store.commit("b", 3, "m", Change::Remove, &entry).unwrap();
    let full = Deployments::open(&db, 2, room(dir.path(), 2, u64::MAX / 2)).unwrap();
    let refused = full
        .check_room("d", &NameState::default(), WASM.len())
        .unwrap_err();
    assert_eq!(refused.reason, "disk_full");
    assert_eq!(store.state("b").unwrap().kept, vec![1, 2]);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("TEST_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(2000),
    ))]
    /// The package parser and verifier never panic on any input, and never accept anything
    /// but the package that was signed. (`TEST_FUZZ_CASES` sets the number of cases.)
    #[test]
    fn garbage_and_mutations_never_panic_or_pass(
        garbage in prop::collection::vec(any::<u8>(), 0..512),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..6),
    ) {
        let key = keys::generate();
        let p = policy(&key);
        let fresh = NameState::default();
        let _ = verify(&p, "f", &garbage, &fresh, 1000);
        let good = package(&key, &manifest(2));
        let mut bad = good.clone();
        for (at, byte, op) in edits {
            let i = at.index(bad.len().max(1));
            match op {
                0 if !bad.is_empty() => bad[i] ^= byte | 1,
                1 => bad.insert(i.min(bad.len()), byte),
                _ => bad.truncate(i),
            }
        }
        // CBOR can say one thing in more than one way: what passes must be what was signed.
        if let Ok(v) = verify(&p, "f", &bad, &fresh, 1000) {
            prop_assert_eq!(v.package, Package::decode(&good).unwrap());
        }
    }
}

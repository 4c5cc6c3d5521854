//! `deploy/*`: the checks a signed function package passes before the runtime sees it
//! (`deploy::verify`: package decode, trusted key, ed25519 signature, manifest, module
//! SHA-256, version, addressing), on a package with a 32 KiB module. Throughput: bytes.

use std::hint::black_box;

use criterion::{Criterion, Throughput};
use kiri::crypto::keys;
use kiri::deploy::{self, Kind, Manifest, NameState, Package, Policy};

use crate::fixtures;

/// A valid module of about `size` bytes: the trivial function plus a data segment of
/// incompressible bytes (a real function's size, not its code).
fn module(size: usize) -> Vec<u8> {
    let mut rng = fastrand::Rng::with_seed(7);
    let data: String = (0..size).map(|_| format!("\\{:02x}", rng.u8(..))).collect();
    let wat = crate::invoke::ECHO.replace(
        r#"(data (i32.const 16) "echo")"#,
        &format!(r#"(data (i32.const 16) "echo") (data (i32.const 2048) "{data}")"#),
    );
    wat::parse_str(wat).expect("valid WAT")
}

/// Registers the group.
pub fn bench(c: &mut Criterion) {
    let key = keys::generate();
    let policy = Policy {
        trusted: vec![keys::generate().verifying_key(), key.verifying_key()],
        gateway: "gw-01".into(),
        groups: vec!["site-a".into()],
        max_bytes: kiri::Config::default().deploy.max_package_bytes,
    };
    let wasm = module(32 << 10);
    let manifest = Manifest {
        kind: Kind::Deploy,
        name: "threshold".into(),
        version: 2,
        module_sha256: Some(deploy::sha256_hex(&wasm)),
        function: Some(fixtures::function_config(
            "name = \"threshold\"\nmodule = \"threshold.wasm\"\ntriggers = [\"sensors/+/+/temperature\"]\n[config]\nlimit = 30\n",
        )),
        rollback_to: None,
        expires_ms: Some(u64::MAX),
        gateways: vec![],
        groups: vec!["site-a".into()],
        created_ms: 1_767_225_600_000,
    };
    let package = Package::sign(&key, kiri::codec::to_cbor(&manifest), wasm).encode();
    let state = NameState {
        highest: 1,
        ..NameState::default()
    };
    let now = kiri::now_ms();
    deploy::verify(&policy, "threshold", &package, &state, now).expect("a valid package");

    let mut g = c.benchmark_group("deploy");
    g.throughput(Throughput::Bytes(package.len() as u64));
    g.bench_function("verify_package_32k", |b| {
        b.iter(|| deploy::verify(&policy, "threshold", black_box(&package), &state, now))
    });
    g.finish();
}

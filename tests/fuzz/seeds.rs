//! The seed inputs committed under `fuzz/seeds/<target>/`, made here so they stay valid as
//! the formats change: `cargo test -p kiri --test fuzz -- --ignored write_seeds` rewrites them.

use kiri::codec;
use kiri::config::{Config, FunctionConfig};
use kiri::crypto::keys;
use kiri::dead_letters::Entry;
use kiri::deploy::{HistoryEntry, Kind, Manifest, NameState, Package, StoredVersion};
use kiri::fuzzing;
use kiri::uplink::Envelope;
use kiri_fuzz_guest::{op, tag, WORDS};

/// A seed: its file name and bytes.
pub type Seed = (&'static str, Vec<u8>);

/// The seeds of `target`.
pub fn of(target: &str) -> Vec<Seed> {
    match target {
        "codec" => codec(),
        "deploy" => deploy(),
        "config" => config(),
        "topic" => topic(),
        "outbox_record" => outbox_record(),
        "host_abi" => host_abi(),
        _ => panic!("no seeds for {target}"),
    }
}

/// A two-byte little-endian length, then the bytes (`kiri::fuzzing`'s split).
fn part(bytes: &[u8]) -> Vec<u8> {
    let mut v = u16::try_from(bytes.len()).unwrap().to_le_bytes().to_vec();
    v.extend_from_slice(bytes);
    v
}

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

const MODULE: &[u8] = b"\0asm\x01\0\0\0";

fn function() -> FunctionConfig {
    let toml = "[[functions]]\nname = \"f\"\nmodule = \"f.wasm\"\ntriggers = [\"sensors/#\"]\n\
                every = \"10s\"\ncron = \"0 */5 * * * *\"\n[functions.config]\nlimit = 30.5\n";
    let c = Config::from_toml_str(toml, "/etc/kiri".as_ref(), []).unwrap();
    c.functions[0].clone()
}

fn manifest(kind: Kind, version: u64) -> Manifest {
    Manifest {
        kind,
        name: "f".into(),
        version,
        module_sha256: (kind == Kind::Deploy).then(|| kiri::deploy::sha256_hex(MODULE)),
        function: (kind == Kind::Deploy).then(function),
        rollback_to: (kind == Kind::Rollback).then_some(4),
        expires_ms: None,
        gateways: vec!["gw-1".into()],
        groups: vec![],
        created_ms: 1,
    }
}

fn package(m: &Manifest) -> Vec<u8> {
    let module = if m.kind == Kind::Deploy { MODULE } else { b"" };
    Package::sign(&fuzzing::signing_key(), codec::to_cbor(m), module.to_vec()).encode()
}

fn codec() -> Vec<Seed> {
    let envelope = Envelope {
        id: "ab-7".into(),
        gateway: "gw".into(),
        seq: 7,
        function: "f".into(),
        topic: "t/x".into(),
        ts: 1_700_000_000_000,
        payload: vec![0xa1, 0x61, 0x76, 0x01],
    };
    let reading = kiri_reading::Reading {
        sensor: "n1",
        kind: "temperature",
        value: 21.5,
        unit: "C",
        ts: Some(1_700_000_000_000),
        uptime_ms: None,
        seq: Some(3),
    };
    let mut buf = [0u8; 128];
    let n = reading.encode(&mut buf).expect("room");
    let reading = buf[..n].to_vec();
    let dead = Entry {
        function: Some("f".into()),
        version: Some("0123456789abcdef".into()),
        topic: "sensors/n1/temperature".into(),
        reason: "trap".into(),
        error: "boom".into(),
        received_ms: 5,
        attempts: 1,
        retry_at_ms: Some(9),
        retry_at_age: Some(4),
        payload_len: 3,
        payload: vec![1, 2, 3],
    };
    let state = NameState {
        highest: 6,
        active: Some(6),
        kept: vec![4, 6],
        last_manifest: Some("ab".into()),
    };
    let history = HistoryEntry {
        time_ms: 1,
        name: "f".into(),
        version: Some(6),
        kind: "deploy".into(),
        accepted: true,
        reason: "activated".into(),
        detail: String::new(),
        source: "cloud".into(),
        module_version: Some("0123".into()),
    };
    let stored = StoredVersion {
        manifest: codec::to_cbor(&manifest(Kind::Undeploy, 7)),
        module: MODULE.to_vec(),
    };
    vec![
        ("envelope", envelope.encode()),
        (
            "batch",
            Envelope::encode_batch("gw", &[envelope.clone(), envelope]),
        ),
        ("reading", reading),
        ("dead-letter", dead.encode()),
        ("package", package(&manifest(Kind::Undeploy, 7))),
        ("name-state", codec::to_cbor(&state)),
        ("history", codec::to_cbor(&history)),
        ("stored-version", codec::to_cbor(&stored)),
        ("manifest", codec::to_cbor(&manifest(Kind::Deploy, 6))),
        // An indefinite array of a half float, a tagged time and a negative integer.
        (
            "indefinite-tag-half",
            vec![
                0x9f, 0xf9, 0x3c, 0x00, 0xc1, 0x1a, 0x65, 0x5b, 0x00, 0x00, 0x38, 0x63, 0xff,
            ],
        ),
    ]
}

fn deploy() -> Vec<Seed> {
    let raw = |m: &Manifest| cat(&[&[0], &package(m)]);
    let signed =
        |mode: u8, m: &Manifest, module: &[u8]| cat(&[&[mode], &part(&codec::to_cbor(m)), module]);
    let expired = Manifest {
        expires_ms: Some(1),
        ..manifest(Kind::Deploy, 7)
    };
    let group = Manifest {
        gateways: vec![],
        groups: vec!["site-a".into()],
        ..manifest(Kind::Undeploy, 8)
    };
    let unhashed = Manifest {
        module_sha256: None,
        ..manifest(Kind::Deploy, 9)
    };
    vec![
        ("raw-deploy", raw(&manifest(Kind::Deploy, 6))),
        ("raw-undeploy", raw(&manifest(Kind::Undeploy, 7))),
        ("raw-not-newer", raw(&manifest(Kind::Rollback, 5))),
        (
            "signed-rollback",
            signed(1, &manifest(Kind::Rollback, 6), b""),
        ),
        ("signed-expired", signed(1, &expired, MODULE)),
        ("signed-group", signed(1, &group, b"")),
        (
            "signed-fix-hash",
            signed(3, &unhashed, b"\0asm\x01\0\0\0\x01"),
        ),
    ]
}

fn config() -> Vec<Seed> {
    // The shipped example without its comments.
    let example: String = kiri::config::EXAMPLE
        .lines()
        .filter(|l| !l.trim_start().starts_with('#') && !l.trim().is_empty())
        .map(|l| format!("{l}\n"))
        .collect();
    let key = keys::public_text(&fuzzing::signing_key().verifying_key());
    let deploy = format!(
        "[gateway]\nid = \"gw-1\"\n[deploy]\ntrusted_keys = [\"{key}\"]\ngroups = [\"site-a\"]\n\
         [outbox]\nttl = \"7d\"\nhigh_priority = [\"alerts/#\"]\nwhen_full = \"drop_oldest\"\n"
    );
    let functions =
        "[cloud]\nurl = \"mqtts://[::1]:8883\"\nca_file = \"ca.pem\"\nbatch_records = 25\n\
        [[functions]]\nname = \"t\"\nmodule = \"t.wasm\"\nevery = \"1h 30m\"\nemit = [\"out/+\"]\n\
        [functions.limits]\nfuel = 1000\nmemory_bytes = 65536\n\
        [[functions]]\nname = \"c\"\nmodule = \"/abs/c.wasm\"\ncron = \"0 0 * * *\"\nhttp = true\n\
        publish = [\"local/#\"]\nconcurrency = 4\n[functions.config]\nk = true\nn = -3\n";
    vec![
        ("example", example.into_bytes()),
        ("deploy-outbox", deploy.into_bytes()),
        ("functions", functions.as_bytes().to_vec()),
        (
            "environment",
            b"[gateway]\nid = \"gw-7\"\n\0CLOUD_URL=mqtt://broker:1883\nGATEWAY_ID=42\n\
              DEAD_LETTERS_MAX_RECORDS=5\nBROKER_MODE=external\nBROKER_URL=mqtt://10.0.0.1\n"
                .to_vec(),
        ),
    ]
}

fn topic() -> Vec<Seed> {
    vec![
        (
            "sensors",
            b"sensors/n1/temperature\nsensors/+/temperature\nsensors/#\n#\n+/+/+".to_vec(),
        ),
        (
            "dollar",
            b"$SYS/broker/load\n$SYS/#\n+/broker/#\n#".to_vec(),
        ),
        ("empty-levels", b"/a\n+/+\na/\na/+\n/#\n//".to_vec()),
        ("invalid", b"a/#/b\na+/b\n\na\0b\nsensors/x#".to_vec()),
    ]
}

fn outbox_record() -> Vec<Seed> {
    let value = fuzzing::encode_record(
        1_700_000_000_000,
        60_000,
        "convert",
        "out/n1",
        b"\xa1\x61v\x01",
    );
    let corrupt = |at: u16, mask: [u8; 4]| {
        cat(&[
            &[1],
            &at.to_le_bytes(),
            &mask,
            &1_700_000_000_000u64.to_le_bytes(),
            &part(b"convert"),
            &part(b"out/n1"),
            b"payload",
        ])
    };
    vec![
        ("normal", cat(&[&[2], &value])),
        ("high", cat(&[&[0], &value])),
        ("version-2", cat(&[&[0], &[2], &value[1..]])),
        ("corrupt-payload", corrupt(30, [0, 0x10, 0, 0])),
        ("corrupt-crc", corrupt(2, [0xff, 0xff, 0xff, 0xff])),
        ("corrupt-version", corrupt(0, [0x03, 0, 0, 0])),
    ]
}

/// Operands of the fuzz guest.
mod arg {
    use super::{tag, WORDS};

    pub fn byte(v: u8) -> Vec<u8> {
        vec![tag::BYTE, v]
    }

    pub fn u16(v: u16) -> Vec<u8> {
        let [a, b] = v.to_le_bytes();
        vec![tag::U16, a, b]
    }

    pub fn raw(v: i32) -> Vec<u8> {
        let mut out = vec![tag::RAW];
        out.extend_from_slice(&v.to_le_bytes());
        out
    }

    pub fn payload(offset: u8) -> Vec<u8> {
        vec![tag::PAYLOAD, offset]
    }

    /// The address of `word` in the guest's [`WORDS`], and its length.
    pub fn word(word: &str) -> Vec<u8> {
        let at = WORDS
            .windows(word.len())
            .position(|w| w == word.as_bytes())
            .unwrap_or_else(|| panic!("{word:?} is not in the guest's words"));
        let mut out = vec![tag::WORD, u8::try_from(at).unwrap()];
        out.extend(byte(u8::try_from(word.len()).unwrap()));
        out
    }

    pub fn out(offset: u16) -> Vec<u8> {
        let [a, b] = offset.to_le_bytes();
        vec![tag::OUT, a, b]
    }

    pub fn edge(back: u8) -> Vec<u8> {
        vec![tag::EDGE, back]
    }

    pub fn last() -> Vec<u8> {
        vec![tag::LAST]
    }
}

/// An instruction: the opcode and its operands.
fn ins(code: u8, operands: &[Vec<u8>]) -> Vec<u8> {
    let mut v = vec![code];
    for o in operands {
        v.extend_from_slice(o);
    }
    v
}

fn program(mode: u8, instructions: &[Vec<u8>]) -> Vec<u8> {
    let mut v = vec![mode];
    for i in instructions {
        v.extend_from_slice(i);
    }
    v
}

fn host_abi() -> Vec<Seed> {
    use arg::*;
    let emit = |topic: &str| ins(op::EMIT, &[word(topic), payload(0), byte(16)]);
    vec![
        (
            "emit-publish",
            program(
                0,
                &[
                    emit("out/a"),
                    emit("alerts/x/y"),
                    emit("$sys/x"),
                    ins(op::PUBLISH, &[word("local/n"), out(0), byte(4)]),
                    ins(op::PUBLISH, &[word("out/a"), payload(3), byte(4)]),
                ],
            ),
        ),
        (
            "kv",
            program(
                2,
                &[
                    ins(op::KV_PUT, &[word("k1"), payload(0), byte(8)]),
                    ins(op::KV_GET, &[word("k1"), out(0), u16(300)]),
                    ins(op::KV_GET, &[word("k2"), out(0), byte(10)]),
                    ins(op::KV_PUT, &[word("kv/a"), out(0), last()]),
                    ins(op::KV_LIST, &[word("k"), out(100), u16(4096)]),
                    ins(op::KV_DELETE, &[word("k2")]),
                    ins(op::KV_LIST, &[payload(0), byte(0), out(0), u16(2000)]),
                ],
            ),
        ),
        (
            "config-caller-respond",
            program(
                3,
                &[
                    ins(op::CONFIG, &[word("limit"), out(0), byte(8)]),
                    ins(op::CONFIG, &[word("big"), out(0), u16(4096)]),
                    ins(op::CALLER, &[out(0), byte(64)]),
                    ins(op::RESPOND, &[out(0), last()]),
                    ins(op::LOG, &[byte(2), out(0), byte(6)]),
                    ins(op::NOW_MS, &[]),
                ],
            ),
        ),
        (
            "limits",
            program(
                4,
                &[
                    ins(op::REPEAT, &[vec![12]]),
                    emit("out/a"),
                    ins(op::REPEAT, &[vec![120]]),
                    ins(op::LOG, &[byte(1), payload(0), byte(200)]),
                    ins(op::REPEAT, &[vec![9]]),
                    ins(op::KV_PUT, &[payload(0), last(), payload(0), u16(301)]),
                    ins(op::GROW, &[vec![40]]),
                    ins(op::RETURN, &[last()]),
                ],
            ),
        ),
        (
            "bad-pointers",
            program(
                1,
                &[
                    ins(op::RESPOND, &[edge(4), byte(4)]),
                    ins(op::EMIT, &[edge(2), byte(2), raw(-1), byte(1)]),
                ],
            ),
        ),
        (
            "spin-trap",
            program(
                0,
                &[
                    ins(op::SPIN, &[vec![3]]),
                    ins(op::RETURN, &[byte(0)]),
                    ins(op::TRAP, &[vec![op::TRAP_KEY]]),
                ],
            ),
        ),
    ]
}

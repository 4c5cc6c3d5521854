//! JWT identities on the HTTP API: tokens from `kiri keygen` + `kiri token`, checked for
//! signature, expiry, audience and issuer; scopes deciding routes, functions and prefixes;
//! the verified subject handed to the function.

use std::process::Command;

use kiri::http::jwt::{mint, MintClaims};

use super::util::*;
use super::{config_with, embedded};

/// A function that shows what the host let it do: it reads its caller, writes the request
/// body as a key (value = the subject) and emits on it as a topic, and answers
/// `[kv_put code, emit code, caller length, 0]` (i32 little-endian) then the subject.
const WHOAMI: &str = r#"(module
  (import "kiri" "caller" (func $caller (param i32 i32) (result i32)))
  (import "kiri" "kv_put" (func $kv_put (param i32 i32 i32 i32) (result i32)))
  (import "kiri" "emit" (func $emit (param i32 i32 i32 i32) (result i32)))
  (import "kiri" "respond" (func $respond (param i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "kiri_abi_version") (result i32) i32.const 1)
  (func (export "kiri_alloc") (param i32) (result i32) i32.const 1024)
  (func (export "kiri_on_event") (param $tp i32) (param $tl i32) (param $pp i32) (param $pl i32) (param $at i64) (result i32)
    (local $n i32) (local $len i32)
    (local.set $n (call $caller (i32.const 16) (i32.const 256)))
    (local.set $len (select (local.get $n) (i32.const 0) (i32.ge_s (local.get $n) (i32.const 0))))
    (i32.store (i32.const 0) (call $kv_put (local.get $pp) (local.get $pl) (i32.const 16) (local.get $len)))
    (i32.store (i32.const 4) (call $emit (local.get $pp) (local.get $pl) (local.get $pp) (local.get $pl)))
    (i32.store (i32.const 8) (local.get $n))
    (drop (call $respond (i32.const 0) (i32.add (i32.const 16) (local.get $len))))
    i32.const 0))"#;

struct Answer {
    kv_put: i32,
    emit: i32,
    caller: Option<String>,
}

fn answer(body: &[u8]) -> Answer {
    let word = |i: usize| i32::from_le_bytes(body[i..i + 4].try_into().unwrap());
    let n = word(8);
    Answer {
        kv_put: word(0),
        emit: word(4),
        caller: (n >= 0).then(|| String::from_utf8(body[16..16 + n as usize].to_vec()).unwrap()),
    }
}

fn kiri_cli(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_kiri"))
        .args(args)
        .output()
        .expect("run kiri");
    assert!(
        out.status.success(),
        "kiri {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[test]
fn jwt_callers_get_what_their_scopes_grant_and_functions_see_who_they_are() {
    let (dir, cloud, _sub, broker_port) = super::site("jwt-consumer");
    let key = dir.path().join("issuer.pem");
    kiri_cli(&["keygen", "--out", key.to_str().unwrap()]);
    let module = dir.path().join("whoami.wasm");
    std::fs::write(&module, wat::parse_str(WHOAMI).unwrap()).unwrap();
    let functions = format!(
        "[[functions]]\nname = \"whoami\"\nmodule = \"{}\"\nhttp = true\nretries = 0\n\
         [[functions]]\nname = \"convert\"\nmodule = \"{}\"\nhttp = true\n",
        module.display(),
        function_wasm("convert").display()
    );
    let conf = config_with(&cloud.url(), &embedded(broker_port), &functions).replacen(
        "[cloud]",
        &format!(
            "[dashboard]\nauth_reads = true\n[dashboard.jwt]\nissuer = \"https://id.test\"\n\
             audience = \"kiri-test\"\nkeys = [\"{}\"]\nleeway_s = 0\n[cloud]",
            key.with_extension("pub.pem").display()
        ),
        1,
    );
    let admin = "an-admin-token-of-enough-length";
    let mut kiri = Kiri::start(
        &dir.path().join("kiri"),
        &conf,
        &[("KIRI_DASHBOARD_TOKEN", admin.to_string())],
    );
    let token = |subject: &str, scopes: &str| {
        kiri_cli(&[
            "token",
            "--key",
            key.to_str().unwrap(),
            "--issuer",
            "https://id.test",
            "--audience",
            "kiri-test",
            "--subject",
            subject,
            "--scope",
            scopes,
            "--ttl",
            "10m",
        ])
    };
    let alice = token("alice", "invoke:whoami prefix:alice/");

    // The subject reaches the function; its keys and topics stay under its prefix.
    let (status, body) = kiri.invoke("whoami", Some(&alice), b"alice/notes");
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let a = answer(&body);
    assert_eq!(a.caller.as_deref(), Some("alice"));
    assert_eq!((a.kv_put, a.emit), (0, 0), "under alice/");
    let (status, body) = kiri.invoke("whoami", Some(&alice), b"bob/notes");
    assert_eq!(status, 200);
    let a = answer(&body);
    assert_eq!((a.kv_put, a.emit), (-5, -5), "bob/ is denied to alice");
    assert!(kiri.metric("kiri_caller_denied_total") >= 2.0);
    // With the admin token there is no caller, and no prefix limit.
    let (status, body) = kiri.invoke("whoami", Some(admin), b"bob/notes");
    assert_eq!(status, 200);
    let a = answer(&body);
    assert_eq!((a.caller, a.kv_put, a.emit), (None, 0, 0));

    // Out of scope: another function, the reads, the dead letters.
    let (status, body) = kiri.invoke("convert", Some(&alice), b"{}");
    assert_eq!(status, 403, "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains("invoke:convert"));
    let get = |path: &str, t: &str| {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let mut r = agent
            .get(format!("http://127.0.0.1:{}{path}", kiri.metrics_port))
            .header("Authorization", &format!("Bearer {t}"))
            .call()
            .unwrap();
        let text = r.body_mut().read_to_string().unwrap_or_default();
        (r.status().as_u16(), text)
    };
    assert_eq!(get("/api/v1/status", &alice).0, 403);
    assert_eq!(get("/api/v1/dead-letters", &alice).0, 403);
    let operator = token("ops", "read dead-letters");
    assert_eq!(get("/api/v1/status", &operator).0, 200);
    assert_eq!(get("/api/v1/dead-letters", &operator).0, 200);
    assert_eq!(kiri.invoke("whoami", Some(&operator), b"x").0, 403);

    // Refused tokens, each with its reason.
    let pem = std::fs::read(&key).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = MintClaims {
        iss: "https://id.test".into(),
        aud: "kiri-test".into(),
        sub: "mallory".into(),
        scope: "invoke:* read dead-letters".into(),
        iat: now,
        nbf: now,
        exp: now + 600,
    };
    let expired = mint(
        &pem,
        &MintClaims {
            exp: now - 5,
            ..claims.clone()
        },
    )
    .unwrap();
    let wrong_audience = mint(
        &pem,
        &MintClaims {
            aud: "another-service".into(),
            ..claims.clone()
        },
    )
    .unwrap();
    let wrong_issuer = mint(
        &pem,
        &MintClaims {
            iss: "https://evil.test".into(),
            ..claims.clone()
        },
    )
    .unwrap();
    let other_key = dir.path().join("other.pem");
    kiri_cli(&["keygen", "--out", other_key.to_str().unwrap()]);
    let wrongly_signed = mint(&std::fs::read(&other_key).unwrap(), &claims).unwrap();
    for (t, reason) in [
        (&expired, "token_expired"),
        (&wrong_audience, "token_wrong_audience"),
        (&wrong_issuer, "token_wrong_issuer"),
        (&wrongly_signed, "token_bad_signature"),
    ] {
        let (status, body) = kiri.invoke("whoami", Some(t), b"x");
        assert_eq!(status, 401, "{reason}");
        assert!(
            String::from_utf8_lossy(&body).contains(reason),
            "{reason}: {}",
            String::from_utf8_lossy(&body)
        );
        let (status, text) = get("/api/v1/status", t);
        assert_eq!(status, 401, "{reason} on a read: {text}");
    }
    // The untouched token still works: nothing above locked the API.
    assert_eq!(kiri.invoke("whoami", Some(&alice), b"alice/x").0, 200);

    // A burst of guessed admin tokens locks the admin token out, not the JWT holders.
    let locked = (0..20).any(|_| kiri.invoke("whoami", Some("guess-guess-guess"), b"x").0 == 429);
    assert!(locked, "guessing locks the admin token out");
    assert_eq!(kiri.invoke("whoami", Some(admin), b"alice/x").0, 429);
    assert_eq!(kiri.invoke("whoami", Some(&alice), b"alice/x").0, 200);
    kiri.stop();
}

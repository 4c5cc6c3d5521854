//! The sandbox, case by case: limits, traps, the host functions' checks, state, batches.
//! Over 500 lines: the cases share the hand-written guests (WAT) at the top, each a few lines.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use super::*;

/// A guest that emits its payload to `echo`, written against ABI v1 by hand.
const ECHO: &str = r#"(module
  (import "kiri" "emit" (func $emit (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 2)
  (data (i32.const 16) "echo")
  (func (export "kiri_abi_version") (result i32) i32.const 1)
  (func (export "kiri_alloc") (param i32) (result i32) i32.const 1024)
  (func (export "kiri_on_event") (param i32 i32 i32 i32 i64) (result i32)
    (drop (call $emit (i32.const 16) (i32.const 4) (local.get 2) (local.get 3)))
    i32.const 0))"#;

pub(super) fn with_body(imports: &str, body: &str) -> String {
    format!(
        r#"(module {imports}
  (memory (export "memory") 1)
  (func (export "kiri_abi_version") (result i32) i32.const 1)
  (func (export "kiri_alloc") (param i32) (result i32) i32.const 1024)
  (func (export "kiri_on_event") (param i32 i32 i32 i32 i64) (result i32) {body}))"#
    )
}

pub(super) fn runtime() -> Runtime {
    let db = sled::Config::new().temporary(true).open().unwrap();
    Runtime::new(1024, db)
}

pub(super) fn load(rt: &mut Runtime, wat: &str) -> Result<usize, LoadError> {
    rt.load_bytes(
        "t",
        &wat::parse_str(wat).unwrap(),
        FunctionLimits::default(),
        BTreeMap::new(),
        Permissions::default(),
    )
}

#[test]
fn a_function_emits_its_outputs() {
    let mut rt = runtime();
    let f = load(&mut rt, ECHO).unwrap();
    let out = rt.invoke(f, "in/x", b"hello", 1).unwrap().outputs;
    assert_eq!(
        out,
        vec![Output {
            destination: Destination::Cloud,
            topic: "echo".into(),
            payload: b"hello".to_vec()
        }]
    );
}

#[test]
fn an_infinite_loop_runs_out_of_fuel_and_the_next_call_works() {
    let mut rt = runtime();
    let f = load(&mut rt, &with_body("", "(loop (br 0)) i32.const 0")).unwrap();
    assert!(matches!(
        rt.invoke(f, "t", b"", 0),
        Err(InvokeError::OutOfFuel(_))
    ));
    assert!(matches!(
        rt.invoke(f, "t", b"", 0),
        Err(InvokeError::OutOfFuel(_))
    ));
    let g = load(&mut rt, ECHO).unwrap();
    assert_eq!(rt.invoke(g, "t", b"ok", 0).unwrap().outputs.len(), 1);
}

#[test]
fn memory_cannot_grow_past_the_cap() {
    let mut rt = runtime();
    // Asks for 1 GiB; the default cap is 16 MiB, so memory.grow returns -1 and we return it.
    let f = load(&mut rt, &with_body("", "(memory.grow (i32.const 16384))")).unwrap();
    assert!(matches!(
        rt.invoke(f, "t", b"", 0),
        Err(InvokeError::Failed(-1))
    ));
}

#[test]
fn a_pointer_outside_memory_traps_and_the_instance_is_replaced() {
    let mut rt = runtime();
    let imports = r#"(import "kiri" "emit" (func $emit (param i32 i32 i32 i32) (result i32)))"#;
    let f = load(
        &mut rt,
        &with_body(
            imports,
            "(call $emit (i32.const 65530) (i32.const 100) (i32.const 0) (i32.const 0))",
        ),
    )
    .unwrap();
    let err = rt.invoke(f, "t", b"", 0).unwrap_err();
    assert!(matches!(err, InvokeError::Trap(_)), "{err}");
    assert!(rt.functions[f].lock().unwrap().pool[0].is_none());
    assert!(
        matches!(rt.invoke(f, "t", b"", 0), Err(InvokeError::Trap(_))),
        "a fresh instance runs again"
    );
}

#[test]
fn wildcard_topics_and_too_many_outputs_get_error_codes_not_traps() {
    let mut rt = runtime();
    let imports = r#"(import "kiri" "emit" (func $emit (param i32 i32 i32 i32) (result i32)))
      (data (i32.const 0) "a/#")"#;
    let f = load(
        &mut rt,
        &with_body(
            imports,
            "(call $emit (i32.const 0) (i32.const 3) (i32.const 0) (i32.const 0))",
        ),
    )
    .unwrap();
    assert!(matches!(
        rt.invoke(f, "t", b"", 0),
        Err(InvokeError::Failed(kiri_abi::code::INVALID))
    ));

    let imports = r#"(import "kiri" "emit" (func $emit (param i32 i32 i32 i32) (result i32)))
      (data (i32.const 0) "a")"#;
    let body = "(local i32) (block (loop (br_if 1 (i32.ne (call $emit (i32.const 0) (i32.const 1) (i32.const 0) (i32.const 0)) (i32.const 0))) (br 0))) (i32.const 0)";
    let g = load(&mut rt, &with_body(imports, body)).unwrap();
    let out = rt.invoke(g, "t", b"", 0).unwrap().outputs;
    assert_eq!(out.len(), FunctionLimits::default().max_outputs);
}

#[test]
fn a_failed_invocation_keeps_none_of_its_outputs() {
    let mut rt = runtime();
    let imports = r#"(import "kiri" "emit" (func $emit (param i32 i32 i32 i32) (result i32)))
      (data (i32.const 0) "a")"#;
    let f = load(&mut rt, &with_body(imports, "(drop (call $emit (i32.const 0) (i32.const 1) (i32.const 0) (i32.const 0))) unreachable")).unwrap();
    assert!(matches!(
        rt.invoke(f, "t", b"", 0),
        Err(InvokeError::Trap(_))
    ));
    let g = load(&mut rt, ECHO).unwrap();
    assert_eq!(rt.invoke(g, "t", b"x", 0).unwrap().outputs.len(), 1);
}

#[test]
fn modules_that_break_the_abi_are_refused_at_load() {
    let mut rt = runtime();
    let bad_import = with_body(
        r#"(import "env" "abort" (func (param i32 i32 i32 i32)))"#,
        "i32.const 0",
    );
    let e = load(&mut rt, &bad_import).unwrap_err();
    assert!(matches!(e, LoadError::Import { .. }));
    let text = e.to_string();
    assert!(
        text.contains("env.abort") && text.contains("AssemblyScript"),
        "{text}"
    );
    assert!(
        text.contains("caller, input_format"),
        "every import offered: {text}"
    );
    let memcmp = with_body(
        r#"(import "env" "memcmp" (func (param i32 i32 i32) (result i32)))"#,
        "i32.const 0",
    );
    let text = load(&mut rt, &memcmp).unwrap_err().to_string();
    assert!(
        text.contains("kiri.h") && text.contains("wasi-libc"),
        "{text}"
    );
    let wrong_type = with_body(
        r#"(import "kiri" "emit" (func (param i32 i32 i32 i64) (result i32)))"#,
        "i32.const 0",
    );
    assert_eq!(
        load(&mut rt, &wrong_type).unwrap_err().to_string(),
        "the module declares kiri.emit as (i32, i32, i32, i64) -> i32; ABI v1 defines (i32, i32, i32, i32) -> i32"
    );
    let command = with_body(r#"(func (export "_start"))"#, "i32.const 0");
    assert!(matches!(load(&mut rt, &command), Err(LoadError::Command)));
    let no_handler = r#"(module (memory (export "memory") 1) (func (export "kiri_abi_version") (result i32) i32.const 1) (func (export "kiri_alloc") (param i32) (result i32) i32.const 0))"#;
    assert!(matches!(
        load(&mut rt, no_handler),
        Err(LoadError::Export {
            name: "kiri_on_event",
            ..
        })
    ));
    let v2 = with_body("", "i32.const 0").replace("i32.const 1)", "i32.const 2)");
    assert!(matches!(load(&mut rt, &v2), Err(LoadError::AbiVersion(2))));
    assert!(matches!(
        rt.load_bytes(
            "t",
            b"\0asm garbage",
            FunctionLimits::default(),
            BTreeMap::new(),
            Permissions::default()
        ),
        Err(LoadError::Invalid(_))
    ));
    assert!(rt.is_empty());
}

#[test]
fn config_values_reach_the_guest() {
    let mut rt = runtime();
    let imports = r#"(import "kiri" "config" (func $config (param i32 i32 i32 i32) (result i32)))
      (import "kiri" "emit" (func $emit (param i32 i32 i32 i32) (result i32)))
      (data (i32.const 0) "limit")"#;
    // Copies config["limit"] to offset 100 and emits it on topic "limit".
    let body = "(drop (call $emit (i32.const 0) (i32.const 5) (i32.const 100) (call $config (i32.const 0) (i32.const 5) (i32.const 100) (i32.const 16)))) (i32.const 0)";
    let wasm = wat::parse_str(with_body(imports, body)).unwrap();
    let config = BTreeMap::from([("limit".to_string(), serde_json::json!("30.5"))]);
    let f = rt
        .load_bytes(
            "t",
            &wasm,
            FunctionLimits::default(),
            config,
            Permissions::default(),
        )
        .unwrap();
    assert_eq!(
        rt.invoke(f, "t", b"", 0).unwrap().outputs[0].payload,
        b"30.5"
    );
}

#[test]
fn oversized_topics_are_refused_before_the_host_reads_them() {
    let mut rt = runtime();
    let imports = r#"(import "kiri" "emit" (func $emit (param i32 i32 i32 i32) (result i32)))"#;
    // A 60 KiB "topic" of zero bytes: refused by size, not scanned.
    let f = load(
        &mut rt,
        &with_body(
            imports,
            "(call $emit (i32.const 0) (i32.const 61440) (i32.const 0) (i32.const 0))",
        ),
    )
    .unwrap();
    assert!(matches!(
        rt.invoke(f, "t", b"", 0),
        Err(InvokeError::Failed(kiri_abi::code::TOO_LARGE))
    ));
    // A payload over max_payload_bytes (1024 here) likewise.
    let g = load(
        &mut rt,
        &with_body(
            imports,
            "(call $emit (i32.const 0) (i32.const 1) (i32.const 0) (i32.const 2048))",
        ),
    )
    .unwrap();
    assert!(matches!(
        rt.invoke(g, "t", b"", 0),
        Err(InvokeError::Failed(kiri_abi::code::TOO_LARGE))
    ));
}

#[test]
fn outputs_outside_the_allow_lists_are_denied() {
    let mut rt = runtime();
    let imports = r#"(import "kiri" "publish" (func $publish (param i32 i32 i32 i32) (result i32)))
      (import "kiri" "emit" (func $emit (param i32 i32 i32 i32) (result i32)))
      (data (i32.const 0) "act/1sensors/x")"#;
    // publish("act/1") then emit("sensors/x"); returns the first non-zero code, or 0.
    let body = "(local i32) (local.set 5 (call $publish (i32.const 0) (i32.const 5) (i32.const 0) (i32.const 0))) \
                (if (i32.ne (local.get 5) (i32.const 0)) (then (return (local.get 5)))) \
                (call $emit (i32.const 5) (i32.const 9) (i32.const 0) (i32.const 0))";
    let wasm = wat::parse_str(with_body(imports, body)).unwrap();
    let load_with = |rt: &mut Runtime, publish: &[&str], emit: &[&str]| {
        let p = Permissions {
            publish: publish.iter().map(|s| s.to_string()).collect(),
            emit: emit.iter().map(|s| s.to_string()).collect(),
        };
        rt.load_bytes("t", &wasm, FunctionLimits::default(), BTreeMap::new(), p)
            .unwrap()
    };
    let none = load_with(&mut rt, &[], &["#"]);
    assert!(matches!(
        rt.invoke(none, "t", b"", 0),
        Err(InvokeError::Failed(kiri_abi::code::DENIED))
    ));
    let no_emit = load_with(&mut rt, &["act/+"], &["alerts/#"]);
    assert!(matches!(
        rt.invoke(no_emit, "t", b"", 0),
        Err(InvokeError::Failed(kiri_abi::code::DENIED))
    ));
    let both = load_with(&mut rt, &["act/+"], &["sensors/#"]);
    let out = rt.invoke(both, "t", b"", 0).unwrap().outputs;
    assert_eq!(
        out.iter()
            .map(|o| (o.destination, o.topic.as_str()))
            .collect::<Vec<_>>(),
        vec![
            (Destination::Local, "act/1"),
            (Destination::Cloud, "sensors/x")
        ]
    );
}

#[test]
fn a_spinning_guest_is_stopped_by_the_wall_clock_even_with_fuel_left() {
    let mut rt = runtime();
    let wasm = wat::parse_str(with_body("", "(loop (br 0)) i32.const 0")).unwrap();
    let limits = FunctionLimits {
        fuel: u64::MAX / 2,
        timeout_ms: 50,
        ..FunctionLimits::default()
    };
    let f = rt
        .load_bytes("t", &wasm, limits, BTreeMap::new(), Permissions::default())
        .unwrap();
    let started = std::time::Instant::now();
    assert!(matches!(
        rt.invoke(f, "t", b"", 0),
        Err(InvokeError::Timeout(50))
    ));
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "stopped, not run to fuel exhaustion"
    );
}

#[test]
fn a_guest_calling_the_host_in_a_loop_is_stopped_too() {
    let mut rt = runtime();
    let imports = r#"(import "kiri" "now_ms" (func $now (result i64)))"#;
    let wasm = wat::parse_str(with_body(
        imports,
        "(loop (drop (call $now)) (br 0)) i32.const 0",
    ))
    .unwrap();
    let limits = FunctionLimits {
        fuel: u64::MAX / 2,
        timeout_ms: 50,
        ..FunctionLimits::default()
    };
    let f = rt
        .load_bytes("t", &wasm, limits, BTreeMap::new(), Permissions::default())
        .unwrap();
    assert!(matches!(
        rt.invoke(f, "t", b"", 0),
        Err(InvokeError::Timeout(50))
    ));
}

#[test]
fn the_call_depth_limit_is_per_function() {
    // Recurses n levels (n = payload length), then returns 0.
    let wat = r#"(module
      (memory (export "memory") 1)
      (func $down (param i32) (result i32)
        (if (result i32) (i32.eqz (local.get 0)) (then (i32.const 0))
          (else (call $down (i32.sub (local.get 0) (i32.const 1))))))
      (func (export "kiri_abi_version") (result i32) i32.const 1)
      (func (export "kiri_alloc") (param i32) (result i32) i32.const 1024)
      (func (export "kiri_on_event") (param i32 i32 i32 i32 i64) (result i32) (call $down (local.get 3))))"#;
    let wasm = wat::parse_str(wat).unwrap();
    let mut rt = runtime();
    let shallow = FunctionLimits {
        max_call_depth: 50,
        ..FunctionLimits::default()
    };
    let s = rt
        .load_bytes(
            "shallow",
            &wasm,
            shallow,
            BTreeMap::new(),
            Permissions::default(),
        )
        .unwrap();
    let d = rt
        .load_bytes(
            "deep",
            &wasm,
            FunctionLimits::default(),
            BTreeMap::new(),
            Permissions::default(),
        )
        .unwrap();
    let hundred = [0u8; 100];
    assert!(matches!(
        rt.invoke(s, "t", &hundred, 0),
        Err(InvokeError::Trap(_))
    ));
    assert!(rt.invoke(s, "t", &hundred[..20], 0).is_ok());
    assert!(
        rt.invoke(d, "t", &hundred, 0).is_ok(),
        "the default depth allows 100"
    );
}

#[test]
fn unbounded_recursion_traps_cleanly() {
    let mut rt = runtime();
    let wat = r#"(module
      (memory (export "memory") 1)
      (func $deep (param i32) (result i32) (call $deep (i32.add (local.get 0) (i32.const 1))))
      (func (export "kiri_abi_version") (result i32) i32.const 1)
      (func (export "kiri_alloc") (param i32) (result i32) i32.const 1024)
      (func (export "kiri_on_event") (param i32 i32 i32 i32 i64) (result i32) (call $deep (i32.const 0))))"#;
    let f = load(&mut rt, wat).unwrap();
    let err = rt.invoke(f, "t", b"", 0).unwrap_err();
    assert!(matches!(err, InvokeError::Trap(_)), "{err}");
    let g = load(&mut rt, ECHO).unwrap();
    assert_eq!(rt.invoke(g, "t", b"x", 0).unwrap().outputs.len(), 1);
}

const KV: &str = r#"(import "kiri" "kv_get" (func $get (param i32 i32 i32 i32) (result i32)))
  (import "kiri" "kv_put" (func $put (param i32 i32 i32 i32) (result i32)))
  (import "kiri" "kv_delete" (func $del (param i32 i32) (result i32)))
  (import "kiri" "kv_list" (func $list (param i32 i32 i32 i32) (result i32)))
  (import "kiri" "emit" (func $emit (param i32 i32 i32 i32) (result i32)))
  (data (i32.const 0) "k1k2")"#;

/// A counter: reads "k1" (a u8, 0 if missing), emits it, writes it back plus one, and traps
/// if the payload is non-empty (after the write).
const COUNTER_BODY: &str = "(local i32)
  (i32.store8 (i32.const 100) (i32.const 0))
  (drop (call $get (i32.const 0) (i32.const 2) (i32.const 100) (i32.const 1)))
  (drop (call $emit (i32.const 0) (i32.const 2) (i32.const 100) (i32.const 1)))
  (i32.store8 (i32.const 100) (i32.add (i32.load8_u (i32.const 100)) (i32.const 1)))
  (drop (call $put (i32.const 0) (i32.const 2) (i32.const 100) (i32.const 1)))
  (if (i32.ne (local.get 3) (i32.const 0)) (then unreachable))
  (i32.const 0)";

fn commit(outbox: &crate::outbox::Outbox, inv: &Invocation) {
    outbox
        .append_with_state(&[], Some((&inv.kv, inv.kv_writes.as_slice())))
        .unwrap();
}

#[test]
fn state_is_committed_with_the_invocation_and_a_trap_leaves_no_trace() {
    let db = sled::Config::new().temporary(true).open().unwrap();
    let outbox = crate::outbox::Outbox::open(&db, Default::default()).unwrap();
    let mut rt = Runtime::new(1024, db);
    let f = load(&mut rt, &with_body(KV, COUNTER_BODY)).unwrap();
    let first = rt.invoke(f, "t", b"", 0).unwrap();
    assert_eq!(first.outputs[0].payload, [0]);
    commit(&outbox, &first);
    let second = rt.invoke(f, "t", b"", 0).unwrap();
    assert_eq!(second.outputs[0].payload, [1], "sees the committed write");
    // Not committed (as when the gateway dies before the commit): the store still says 1.
    assert!(
        matches!(rt.invoke(f, "t", b"x", 0), Err(InvokeError::Trap(_))),
        "a trap after the write"
    );
    let third = rt.invoke(f, "t", b"", 0).unwrap();
    assert_eq!(
        third.outputs[0].payload,
        [1],
        "the trapped invocation's write left no trace"
    );
}

#[test]
fn each_function_sees_only_its_own_keys() {
    let db = sled::Config::new().temporary(true).open().unwrap();
    let outbox = crate::outbox::Outbox::open(&db, Default::default()).unwrap();
    let mut rt = Runtime::new(1024, db);
    let wasm = wat::parse_str(with_body(KV, COUNTER_BODY)).unwrap();
    let a = rt
        .load_bytes(
            "a",
            &wasm,
            FunctionLimits::default(),
            BTreeMap::new(),
            Permissions::default(),
        )
        .unwrap();
    let b = rt
        .load_bytes(
            "b",
            &wasm,
            FunctionLimits::default(),
            BTreeMap::new(),
            Permissions::default(),
        )
        .unwrap();
    for _ in 0..3 {
        let inv = rt.invoke(a, "t", b"", 0).unwrap();
        commit(&outbox, &inv);
    }
    assert_eq!(
        rt.invoke(b, "t", b"", 0).unwrap().outputs[0].payload,
        [0],
        "b starts from nothing"
    );
    assert_eq!(rt.invoke(a, "t", b"", 0).unwrap().outputs[0].payload, [3]);
}

#[test]
fn list_and_delete_see_the_invocations_own_writes() {
    let mut rt = runtime();
    // put k1, put k2, delete k1, then list "k" into offset 200 and emit the listing.
    let body = "(drop (call $put (i32.const 0) (i32.const 2) (i32.const 0) (i32.const 1)))
      (drop (call $put (i32.const 2) (i32.const 2) (i32.const 0) (i32.const 1)))
      (drop (call $del (i32.const 0) (i32.const 2)))
      (drop (call $emit (i32.const 0) (i32.const 1) (i32.const 200)
        (call $list (i32.const 0) (i32.const 1) (i32.const 200) (i32.const 64))))
      (i32.const 0)";
    let f = load(&mut rt, &with_body(KV, body)).unwrap();
    let inv = rt.invoke(f, "t", b"", 0).unwrap();
    assert_eq!(inv.outputs[0].payload, [0, 2, b'k', b'2']);
    assert_eq!(
        inv.kv_writes,
        vec![
            (b"k1".to_vec(), None),
            (b"k2".to_vec(), Some(b"k".to_vec()))
        ]
    );
}

#[test]
fn oversized_values_and_too_many_writes_are_refused() {
    let mut rt = runtime();
    let limits = FunctionLimits {
        kv_max_value_bytes: 4,
        kv_max_writes: 1,
        ..FunctionLimits::default()
    };
    // put k1 = 5 bytes (TOO_LARGE), then k1 = 1 byte (ok), then k2 (LIMIT): emits the codes.
    let body = "(i32.store (i32.const 100) (call $put (i32.const 0) (i32.const 2) (i32.const 0) (i32.const 5)))
      (i32.store (i32.const 104) (call $put (i32.const 0) (i32.const 2) (i32.const 0) (i32.const 1)))
      (i32.store (i32.const 108) (call $put (i32.const 2) (i32.const 2) (i32.const 0) (i32.const 1)))
      (drop (call $emit (i32.const 0) (i32.const 1) (i32.const 100) (i32.const 12)))
      (i32.const 0)";
    let wasm = wat::parse_str(with_body(KV, body)).unwrap();
    let f = rt
        .load_bytes("t", &wasm, limits, BTreeMap::new(), Permissions::default())
        .unwrap();
    let out = rt.invoke(f, "t", b"", 0).unwrap();
    let codes: Vec<i32> = out.outputs[0]
        .payload
        .chunks(4)
        .map(|c| i32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(codes, [kiri_abi::code::TOO_LARGE, 0, kiri_abi::code::LIMIT]);
}

#[test]
fn a_huge_module_file_is_refused_before_it_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("huge.wasm");
    // Sparse: no 33 MiB are written.
    std::fs::File::create(&path)
        .unwrap()
        .set_len(MAX_MODULE_BYTES + 1)
        .unwrap();
    let cfg = crate::config::FunctionConfig {
        name: "huge".into(),
        module: path,
        triggers: vec!["t".into()],
        format: None,
        deliver: Default::default(),
        every: None,
        cron: None,
        config: BTreeMap::new(),
        retries: 0,
        retry_backoff_ms: 1,
        concurrency: 1,
        http: false,
        http_headers: vec![],
        publish: vec![],
        emit: vec!["#".into()],
        limits: FunctionLimits::default(),
    };
    assert!(matches!(
        Runtime::read_module(&cfg.module),
        Err(LoadError::TooLarge(_))
    ));
}

#[test]
fn a_batch_runs_each_function_in_order_and_functions_side_by_side() {
    let mut rt = runtime();
    let a = load(&mut rt, ECHO).unwrap();
    let b = load(&mut rt, ECHO).unwrap();
    let payloads: Vec<Vec<u8>> = (0u8..40).map(|i| vec![i]).collect();
    let jobs: Vec<Job<'_>> = payloads
        .iter()
        .enumerate()
        .map(|(i, p)| Job {
            function: if i % 2 == 0 { a } else { b },
            topic: "t",
            payload: p,
            received_ms: 0,
            fresh: false,
            caller: None,
            format: kiri_abi::format::CBOR,
            http: None,
        })
        .collect();
    let seen = std::sync::Mutex::new(vec![Vec::new(), Vec::new()]);
    rt.run_batch(&jobs, |j, r| -> Result<(), ()> {
        let out = r.unwrap();
        seen.lock().unwrap()[jobs[j].function].push(out.outputs[0].payload[0]);
        Ok(())
    })
    .unwrap();
    let seen = seen.into_inner().unwrap();
    assert_eq!(
        seen[a],
        (0u8..40).step_by(2).collect::<Vec<_>>(),
        "in order per function"
    );
    assert_eq!(seen[b], (1u8..40).step_by(2).collect::<Vec<_>>());
}

#[test]
fn a_function_with_concurrency_uses_several_instances() {
    let mut rt = runtime();
    let limits = FunctionLimits {
        concurrency: 3,
        ..FunctionLimits::default()
    };
    let f = rt
        .load_bytes(
            "c",
            &wat::parse_str(ECHO).unwrap(),
            limits,
            BTreeMap::new(),
            Permissions::default(),
        )
        .unwrap();
    let jobs: Vec<Job<'_>> = (0..9)
        .map(|_| Job {
            function: f,
            topic: "t",
            payload: b"x",
            received_ms: 0,
            fresh: false,
            caller: None,
            format: kiri_abi::format::CBOR,
            http: None,
        })
        .collect();
    let done = std::sync::atomic::AtomicUsize::new(0);
    rt.run_batch(&jobs, |_, r| -> Result<(), ()> {
        r.unwrap();
        done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    })
    .unwrap();
    assert_eq!(done.into_inner(), 9);
    assert!(
        rt.functions[f]
            .lock()
            .unwrap()
            .pool
            .iter()
            .all(Option::is_some),
        "three live instances"
    );
    let stats = rt.meters().lock().unwrap()[f].clone();
    assert_eq!(
        (stats.invocations, stats.cold_starts),
        (9, 2),
        "two instances made on demand"
    );
}

#[test]
fn the_first_error_of_the_callback_stops_the_batch() {
    let mut rt = runtime();
    let a = load(&mut rt, ECHO).unwrap();
    let jobs: Vec<Job<'_>> = (0..5)
        .map(|_| Job {
            function: a,
            topic: "t",
            payload: b"",
            received_ms: 0,
            fresh: false,
            caller: None,
            format: kiri_abi::format::CBOR,
            http: None,
        })
        .collect();
    let calls = std::sync::atomic::AtomicUsize::new(0);
    let r = rt.run_batch(&jobs, |j, _| {
        calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if j == 1 {
            Err("stop")
        } else {
            Ok(())
        }
    });
    assert_eq!(r, Err(vec!["stop"]));
    assert_eq!(calls.into_inner(), 2);
}

#[test]
fn table_and_memory_caps_refuse_a_module_at_load() {
    let mut rt = runtime();
    let big_table = with_body("(table 200000 funcref)", "i32.const 0");
    let err = load(&mut rt, &big_table).unwrap_err();
    assert!(matches!(err, LoadError::Instantiate(_)), "{err}");
    let big_memory = with_body("", "i32.const 0").replace(
        "(memory (export \"memory\") 1)",
        "(memory (export \"memory\") 1024)",
    );
    let err = load(&mut rt, &big_memory).unwrap_err();
    assert!(
        matches!(err, LoadError::Instantiate(_)),
        "64 MiB initial memory over the 16 MiB cap: {err}"
    );
    assert!(rt.is_empty());
}

#[test]
fn a_callers_prefixes_bound_every_host_call_and_do_not_outlive_its_invocation() {
    let mut rt = runtime();
    let imports = r#"(import "kiri" "kv_get" (func $kv_get (param i32 i32 i32 i32) (result i32)))
      (import "kiri" "kv_put" (func $kv_put (param i32 i32 i32 i32) (result i32)))
      (import "kiri" "kv_delete" (func $kv_delete (param i32 i32) (result i32)))
      (import "kiri" "kv_list" (func $kv_list (param i32 i32 i32 i32) (result i32)))
      (import "kiri" "publish" (func $publish (param i32 i32 i32 i32) (result i32)))
      (import "kiri" "emit" (func $emit (param i32 i32 i32 i32) (result i32)))
      (import "kiri" "respond" (func $respond (param i32 i32) (result i32)))"#;
    // The payload is used as a key, a key prefix and a topic; the six codes are the response.
    let body = "(i32.store (i32.const 0) (call $kv_get (local.get 2) (local.get 3) (i32.const 512) (i32.const 64))) \
        (i32.store (i32.const 4) (call $kv_put (local.get 2) (local.get 3) (local.get 2) (local.get 3))) \
        (i32.store (i32.const 8) (call $kv_delete (local.get 2) (local.get 3))) \
        (i32.store (i32.const 12) (call $kv_list (local.get 2) (local.get 3) (i32.const 512) (i32.const 64))) \
        (i32.store (i32.const 16) (call $publish (local.get 2) (local.get 3) (local.get 2) (local.get 3))) \
        (i32.store (i32.const 20) (call $emit (local.get 2) (local.get 3) (local.get 2) (local.get 3))) \
        (drop (call $respond (i32.const 0) (i32.const 24))) i32.const 0";
    let all = Permissions {
        publish: vec!["#".into()],
        emit: vec!["#".into()],
    };
    let f = rt
        .load_bytes(
            "t",
            &wat::parse_str(with_body(imports, body)).unwrap(),
            FunctionLimits::default(),
            BTreeMap::new(),
            all,
        )
        .unwrap();
    let alice = Arc::new(Caller {
        subject: "alice".into(),
        prefixes: vec!["a/".into()],
    });
    let codes = |rt: &mut Runtime, payload: &[u8], caller: Option<&Arc<Caller>>| {
        let job = Job {
            function: f,
            topic: "$http",
            payload,
            received_ms: 0,
            fresh: false,
            caller,
            format: kiri_abi::format::BYTES,
            http: None,
        };
        let got = std::sync::Mutex::new(Vec::new());
        rt.run_batch(&[job], |_, r| -> Result<(), ()> {
            let body = r.unwrap().response.body.unwrap();
            *got.lock().unwrap() = body
                .chunks(4)
                .map(|c| i32::from_le_bytes(c.try_into().unwrap()))
                .collect();
            Ok(())
        })
        .unwrap();
        got.into_inner().unwrap()
    };
    let denied = kiri_abi::code::DENIED;
    assert_eq!(codes(&mut rt, b"b/x", Some(&alice)), vec![denied; 6]);
    let granted = codes(&mut rt, b"a/x", Some(&alice));
    assert!(!granted.contains(&denied), "{granted:?}");
    // The same warm instance, next without a caller: nothing is left of alice's limits.
    let open = codes(&mut rt, b"b/x", None);
    assert!(!open.contains(&denied), "{open:?}");
}

/// Log lines written through `tracing` while `f` runs on this thread.
pub(super) fn logged(f: impl FnOnce()) -> String {
    #[derive(Clone, Default)]
    struct Buffer(Arc<std::sync::Mutex<Vec<u8>>>);
    impl std::io::Write for Buffer {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let buffer = Buffer::default();
    let writer = buffer.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    tracing::subscriber::with_default(subscriber, f);
    let text = String::from_utf8_lossy(&buffer.0.lock().unwrap()).into_owned();
    text
}

#[test]
fn a_kv_list_loop_stays_within_its_timeout_however_much_fuel_is_left() {
    let db = sled::Config::new().temporary(true).open().unwrap();
    let kv = db.open_tree("kv/t").unwrap();
    for i in 0..1024u32 {
        kv.insert(format!("key-{i:0200}"), &[0u8; 8][..]).unwrap();
    }
    let mut rt = Runtime::new(1024, db);
    // kv_list("") into a 64 KiB buffer, for ever.
    let body = "(loop (drop (call $list (i32.const 0) (i32.const 0) (i32.const 1024) (i32.const 65536))) (br 0)) i32.const 0";
    let wasm = wat::parse_str(with_body(KV, body).replace(
        "(memory (export \"memory\") 1)",
        "(memory (export \"memory\") 2)",
    ))
    .unwrap();
    let limits = FunctionLimits {
        fuel: u64::MAX / 2,
        timeout_ms: 100,
        ..FunctionLimits::default()
    };
    let f = rt
        .load_bytes("t", &wasm, limits, BTreeMap::new(), Permissions::default())
        .unwrap();
    let started = std::time::Instant::now();
    let result = rt.invoke(f, "t", b"", 0);
    let took = started.elapsed();
    assert!(
        matches!(result, Err(InvokeError::Timeout(100))),
        "{result:?}"
    );
    // Within one host call of the limit (each lists 1,024 keys); before the deadline held
    // inside host calls, one fuel slice of this loop lasted about 80 s.
    assert!(took < Duration::from_millis(100 + 1000), "{took:?}");
    let stats = rt.meters().lock().unwrap()[f].snapshot();
    assert_eq!(stats.errors.get("timeout"), Some(&1));
}

#[test]
fn a_slow_start_function_is_stopped_at_the_timeout_and_metered() {
    let db = sled::Config::new().temporary(true).open().unwrap();
    let kv = db.open_tree("kv/t").unwrap();
    let mut rt = Runtime::new(1024, db);
    // The start function spins on the host (now_ms) while the key "slow" exists; the event
    // handler traps on a non-empty payload, so that the next call starts a new instance.
    let wat = r#"(module
      (import "kiri" "kv_get" (func $get (param i32 i32 i32 i32) (result i32)))
      (import "kiri" "now_ms" (func $now (result i64)))
      (memory (export "memory") 1)
      (data (i32.const 0) "slow")
      (func $start
        (if (i32.ge_s (call $get (i32.const 0) (i32.const 4) (i32.const 16) (i32.const 8)) (i32.const 0))
          (then (loop (drop (call $now)) (br 0)))))
      (start $start)
      (func (export "kiri_abi_version") (result i32) i32.const 1)
      (func (export "kiri_alloc") (param i32) (result i32) i32.const 1024)
      (func (export "kiri_on_event") (param i32 i32 i32 i32 i64) (result i32)
        (if (i32.ne (local.get 3) (i32.const 0)) (then unreachable))
        i32.const 0))"#;
    let limits = FunctionLimits {
        fuel: u64::MAX / 2,
        timeout_ms: 100,
        ..FunctionLimits::default()
    };
    let f = rt
        .load_bytes(
            "t",
            &wat::parse_str(wat).unwrap(),
            limits,
            BTreeMap::new(),
            Permissions::default(),
        )
        .unwrap();
    assert!(matches!(
        rt.invoke(f, "t", b"x", 0),
        Err(InvokeError::Trap(_))
    ));
    kv.insert("slow", &b"1"[..]).unwrap();
    let started = std::time::Instant::now();
    let result = rt.invoke(f, "t", b"", 0);
    let took = started.elapsed();
    assert!(
        matches!(result, Err(InvokeError::Timeout(100))),
        "{result:?}"
    );
    assert!(took < Duration::from_millis(100 + 1000), "{took:?}");
    let stats = rt.meters().lock().unwrap()[f].snapshot();
    assert!(
        stats.fuel > 0 && stats.wall_us_max >= 100_000,
        "the start is metered: {stats:?}"
    );
}

#[test]
fn a_function_that_keeps_losing_its_instance_backs_off_its_cold_starts() {
    let mut rt = runtime();
    let f = load(&mut rt, &with_body("", "unreachable")).unwrap();
    for _ in 0..3 {
        assert!(matches!(
            rt.invoke(f, "t", b"", 0),
            Err(InvokeError::Trap(_))
        ));
    }
    let started_before = rt.meters().lock().unwrap()[f].cold_starts;
    let refused = rt.invoke(f, "t", b"", 0);
    assert!(
        matches!(refused, Err(InvokeError::Backoff { failures: 3, .. })),
        "{refused:?}"
    );
    let stats = rt.meters().lock().unwrap()[f].snapshot();
    assert_eq!(stats.cold_starts, started_before, "no instance was started");
    assert_eq!(stats.errors.get("backoff"), Some(&1));
    std::thread::sleep(Duration::from_millis(150));
    assert!(
        matches!(rt.invoke(f, "t", b"", 0), Err(InvokeError::Trap(_))),
        "after the back-off, a new instance runs again"
    );
}

#[test]
fn refused_outputs_are_logged_once_per_invocation_and_all_counted() {
    let mut rt = runtime();
    let imports = r#"(import "kiri" "emit" (func $emit (param i32 i32 i32 i32) (result i32)))
      (data (i32.const 0) "forbidden")"#;
    // 1,000 emits to a topic outside the allow-list, then success.
    let body = "(local i32) (loop \
          (drop (call $emit (i32.const 0) (i32.const 9) (i32.const 0) (i32.const 0))) \
          (local.set 5 (i32.add (local.get 5) (i32.const 1))) \
          (br_if 0 (i32.lt_u (local.get 5) (i32.const 1000)))) \
        i32.const 0";
    let wasm = wat::parse_str(with_body(imports, body)).unwrap();
    let permissions = Permissions {
        publish: Vec::new(),
        emit: vec!["allowed/#".into()],
    };
    let f = rt
        .load_bytes(
            "t",
            &wasm,
            FunctionLimits::default(),
            BTreeMap::new(),
            permissions,
        )
        .unwrap();
    let log = logged(|| {
        for _ in 0..3 {
            assert!(rt.invoke(f, "t", b"", 0).unwrap().outputs.is_empty());
        }
    });
    let lines = log.lines().filter(|l| l.contains("was refused")).count();
    assert_eq!(lines, 3, "one line per invocation, not per refusal:\n{log}");
}

/// A hoarder: each invocation writes a new 4-byte key (its count) with 100 bytes, and
/// emits the code `kv_put` returned; with a payload, it deletes the first key instead.
const HOARDER: &str = r#"(module
  (import "kiri" "kv_put" (func $put (param i32 i32 i32 i32) (result i32)))
  (import "kiri" "kv_delete" (func $del (param i32 i32) (result i32)))
  (import "kiri" "emit" (func $emit (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 400) "o")
  (global $n (mut i32) (i32.const 0))
  (func (export "kiri_abi_version") (result i32) i32.const 1)
  (func (export "kiri_alloc") (param i32) (result i32) i32.const 1024)
  (func (export "kiri_on_event") (param i32 i32 i32 i32 i64) (result i32)
    (if (i32.ne (local.get 3) (i32.const 0))
      (then
        (i32.store (i32.const 0) (i32.const 0))
        (i32.store (i32.const 300) (call $del (i32.const 0) (i32.const 4))))
      (else
        (i32.store (i32.const 0) (global.get $n))
        (i32.store (i32.const 300) (call $put (i32.const 0) (i32.const 4) (i32.const 100) (i32.const 100)))
        (global.set $n (i32.add (global.get $n) (i32.const 1)))))
    (drop (call $emit (i32.const 400) (i32.const 1) (i32.const 300) (i32.const 4)))
    i32.const 0))"#;

/// Runs the hoarder once (`delete`: its delete instead), commits what it wrote; the code
/// its write got.
fn hoard(rt: &mut Runtime, outbox: &crate::outbox::Outbox, f: usize, delete: bool) -> i32 {
    let inv = rt
        .invoke(f, "t", if delete { b"d" } else { b"" }, 0)
        .unwrap();
    let change = outbox
        .append_with_state(&[], Some((&inv.kv, inv.kv_writes.as_slice())))
        .unwrap()
        .change;
    assert_eq!(
        (change.bytes, change.keys),
        (inv.kv_charge.bytes, inv.kv_charge.keys)
    );
    inv.kv_charge.settle(change.bytes, change.keys);
    i32::from_le_bytes(inv.outputs[0].payload[..4].try_into().unwrap())
}

#[test]
fn a_functions_state_stops_at_its_key_and_byte_quotas_and_deletes_make_room() {
    let limit = kiri_abi::code::LIMIT;
    let db = sled::Config::new().temporary(true).open().unwrap();
    let outbox = crate::outbox::Outbox::open(&db, Default::default()).unwrap();
    let load_with = |rt: &mut Runtime, limits: FunctionLimits| {
        let wasm = wat::parse_str(HOARDER).unwrap();
        let p = Permissions {
            emit: vec!["#".into()],
            ..Permissions::default()
        };
        rt.load_bytes("hoarder", &wasm, limits, BTreeMap::new(), p)
            .unwrap()
    };
    let mut rt = Runtime::new(1024, db.clone());
    let keys = FunctionLimits {
        kv_max_keys: 3,
        ..FunctionLimits::default()
    };
    let f = load_with(&mut rt, keys.clone());
    let codes: Vec<i32> = (0..4).map(|_| hoard(&mut rt, &outbox, f, false)).collect();
    assert_eq!(
        codes,
        [0, 0, 0, limit],
        "the fourth key is over kv_max_keys"
    );
    assert_eq!(hoard(&mut rt, &outbox, f, true), 0, "a delete always may");
    assert_eq!(hoard(&mut rt, &outbox, f, false), 0, "and makes room");
    assert_eq!(hoard(&mut rt, &outbox, f, false), limit);

    // Measured again from the store at the next start: the quota holds across restarts.
    // 3 keys of 104 bytes are stored; 350 bytes leave room for none more.
    let mut again = Runtime::new(1024, db);
    let bytes = FunctionLimits {
        kv_max_bytes: 350,
        ..FunctionLimits::default()
    };
    let f = load_with(&mut again, bytes);
    assert_eq!(
        hoard(&mut again, &outbox, f, false),
        limit,
        "over kv_max_bytes"
    );
    assert_eq!(hoard(&mut again, &outbox, f, true), 0);
    assert_eq!(
        hoard(&mut again, &outbox, f, false),
        0,
        "room for one again"
    );
}

#[test]
fn log_lines_over_the_functions_byte_rate_are_counted_not_written() {
    // Fifty lines of 1,000 bytes an invocation, against 4,096 bytes a second.
    let wat = r#"(module
      (import "kiri" "log" (func $log (param i32 i32 i32)))
      (memory (export "memory") 1)
      (func (export "kiri_abi_version") (result i32) i32.const 1)
      (func (export "kiri_alloc") (param i32) (result i32) i32.const 4096)
      (func (export "kiri_on_event") (param i32 i32 i32 i32 i64) (result i32)
        (local $i i32)
        (memory.fill (i32.const 0) (i32.const 120) (i32.const 1000))
        (loop
          (call $log (i32.const 2) (i32.const 0) (i32.const 1000))
          (local.set $i (i32.add (local.get $i) (i32.const 1)))
          (br_if 0 (i32.lt_u (local.get $i) (i32.const 50))))
        i32.const 0))"#;
    let mut rt = runtime();
    let limits = FunctionLimits {
        log_bytes_per_sec: 4096,
        ..FunctionLimits::default()
    };
    let f = rt
        .load_bytes(
            "chatty",
            &wat::parse_str(wat).unwrap(),
            limits,
            BTreeMap::new(),
            Permissions::default(),
        )
        .unwrap();
    let text = logged(|| {
        rt.invoke(f, "t", b"", 0).unwrap();
    });
    let lines = text.lines().filter(|l| l.contains("xxxxxxxxxx")).count();
    assert_eq!(
        lines, 4,
        "a second's budget of 4,096 bytes: four lines of 1,000"
    );
}

#[test]
fn instances_side_by_side_writing_one_key_count_it_once() {
    let db = sled::Config::new().temporary(true).open().unwrap();
    let outbox = crate::outbox::Outbox::open(&db, Default::default()).unwrap();
    let mut rt = Runtime::new(1024, db);
    let limits = FunctionLimits {
        concurrency: 2,
        ..FunctionLimits::default()
    };
    let body = "(drop (call $put (i32.const 0) (i32.const 2) (i32.const 100) (i32.const 10)))
      (i32.const 0)";
    let wasm = wat::parse_str(with_body(KV, body)).unwrap();
    let f = rt
        .load_bytes(
            "twice",
            &wasm,
            limits,
            BTreeMap::new(),
            Permissions::default(),
        )
        .unwrap();
    let job = Job {
        function: f,
        topic: "t",
        payload: b"",
        received_ms: 0,
        fresh: false,
        caller: None,
        format: kiri_abi::format::CBOR,
        http: None,
    };
    // Both run before either commits: each counts the key as new.
    let done = std::sync::Mutex::new(Vec::new());
    rt.run_batch(&[job, job], |_, r| {
        done.lock().unwrap().push(r.unwrap());
        Ok::<(), ()>(())
    })
    .unwrap();
    let done = done.into_inner().unwrap();
    assert!(done.iter().all(|inv| inv.kv_charge.keys == 1));
    for inv in done {
        let change = outbox
            .append_with_state(&[], Some((&inv.kv, inv.kv_writes.as_slice())))
            .unwrap()
            .change;
        let usage = inv.kv_charge.usage.clone();
        inv.kv_charge.settle(change.bytes, change.keys);
        assert!(usage.keys() <= 1);
    }
    let inv = rt.invoke(f, "t", b"", 0).unwrap();
    assert_eq!(
        (inv.kv_charge.usage.keys(), inv.kv_charge.usage.bytes()),
        (1, 12),
        "the store holds one key of 2 + 10 bytes"
    );
}

#[test]
fn typed_config_reaches_the_guest_as_json_and_scalars_stay_text() {
    let mut rt = runtime();
    let imports = r#"(import "kiri" "config_json" (func $json (param i32 i32 i32 i32) (result i32)))
      (import "kiri" "config" (func $config (param i32 i32 i32 i32) (result i32)))
      (import "kiri" "emit" (func $emit (param i32 i32 i32 i32) (result i32)))
      (data (i32.const 0) "limit")"#;
    // Emits config_json("") on "a" and config("limit") on "l".
    let body = "(drop (call $emit (i32.const 0) (i32.const 1) (i32.const 100) (call $json (i32.const 0) (i32.const 0) (i32.const 100) (i32.const 400))))
      (drop (call $emit (i32.const 0) (i32.const 5) (i32.const 600) (call $config (i32.const 0) (i32.const 5) (i32.const 600) (i32.const 16))))
      (i32.const 0)";
    let toml = "[[functions]]\nname = \"t\"\nmodule = \"t.wasm\"\ntriggers = [\"t\"]\n\
                config = { limit = 30, kinds = [\"a\", \"b\"], nested = { on = true } }\n";
    let dir = tempfile::tempdir().unwrap();
    let config = crate::config::Config::from_toml_str(toml, dir.path(), Vec::new()).unwrap();
    let wasm = wat::parse_str(with_body(imports, body)).unwrap();
    let f = rt
        .load_bytes(
            "t",
            &wasm,
            FunctionLimits::default(),
            config.functions[0].config.clone(),
            Permissions::default(),
        )
        .unwrap();
    let out = rt.invoke(f, "t", b"", 0).unwrap().outputs;
    let all: serde_json::Value = serde_json::from_slice(&out[0].payload).unwrap();
    assert_eq!(
        all,
        serde_json::json!({"kinds": ["a", "b"], "limit": 30, "nested": {"on": true}})
    );
    assert_eq!(out[1].payload, b"30");
}

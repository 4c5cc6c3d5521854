//! `invoke/*`: one invocation of a trivial function, warm (the pooled instance) and cold (a
//! fresh instance from the compiled module), and what compiling and preparing it cost.
//! `host/*`: a host call's round trip, from a guest that makes 1000 of them in one invocation
//! (throughput: per call; `host/empty_loop_x1000` is the same loop without the call).

use std::hint::black_box;

use criterion::{Criterion, Throughput};
use kiri::runtime::Job;

use crate::fixtures;

/// Emits its payload unchanged to `echo` (ABI v1 by hand: a fixed buffer, one host call).
pub const ECHO: &str = r#"(module
  (import "kiri" "emit" (func $emit (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "echo")
  (func (export "kiri_abi_version") (result i32) i32.const 1)
  (func (export "kiri_alloc") (param i32) (result i32) i32.const 1024)
  (func (export "kiri_on_event") (param i32 i32 i32 i32 i64) (result i32)
    (i32.lt_s (call $emit (i32.const 16) (i32.const 4) (local.get 2) (local.get 3)) (i32.const 0))))"#;

/// Host calls per invocation in the `host/*` and `kv/*` loops.
pub const CALLS: u64 = 1000;

/// A guest that runs `call` [`CALLS`] times in one invocation. Memory: the key `key` at 16, a
/// 24-byte value at 32, an output buffer at 64.
pub fn call_loop(call: &str) -> Vec<u8> {
    wat::parse_str(format!(
        r#"(module
  (import "kiri" "now_ms" (func $now_ms (result i64)))
  (import "kiri" "config" (func $config (param i32 i32 i32 i32) (result i32)))
  (import "kiri" "kv_get" (func $kv_get (param i32 i32 i32 i32) (result i32)))
  (import "kiri" "kv_put" (func $kv_put (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "key")
  (data (i32.const 32) "0123456789abcdef01234567")
  (func (export "kiri_abi_version") (result i32) i32.const 1)
  (func (export "kiri_alloc") (param i32) (result i32) i32.const 1024)
  (func (export "kiri_on_event") (param i32 i32 i32 i32 i64) (result i32)
    (local $i i32)
    (local.set $i (i32.const {CALLS}))
    (loop $again
      {call}
      (br_if $again (local.tee $i (i32.sub (local.get $i) (i32.const 1)))))
    i32.const 0))"#
    ))
    .expect("valid WAT")
}

/// Registers the `invoke` and `host` groups.
pub fn bench(c: &mut Criterion) {
    let echo = wat::parse_str(ECHO).expect("valid WAT");
    let payload = fixtures::reading("node-17", "temperature", 21.5, "C", 42);
    let topic = "sensors/site3/node17/temperature";
    let mut rt = fixtures::runtime(fixtures::temporary_db());
    let f = fixtures::load(&mut rt, "echo", &echo, &[]);
    let warm = fixtures::job(f, topic, &payload);
    let cold = Job {
        fresh: true,
        ..warm
    };
    fixtures::run(&mut rt, warm);

    let mut g = c.benchmark_group("invoke");
    g.bench_function("warm_trivial", |b| {
        b.iter(|| fixtures::run(&mut rt, black_box(warm)))
    });
    g.bench_function("cold_trivial", |b| {
        b.iter(|| fixtures::run(&mut rt, black_box(cold)))
    });
    // The runtime's engine settings: fuel metering, wasmi's default lazy translation.
    let mut config = wasmi::Config::default();
    config.consume_fuel(true);
    let engine = wasmi::Engine::new(&config);
    g.bench_function("compile_trivial", |b| {
        b.iter(|| wasmi::Module::new(&engine, black_box(&echo)).expect("valid module"))
    });
    let cfg = fixtures::function_config(
        "name = \"echo\"\nmodule = \"echo.wasm\"\ntriggers = [\"sensors/#\"]\n",
    );
    g.bench_function("prepare_trivial", |b| {
        b.iter(|| rt.prepare(&cfg, black_box(&echo)).expect("valid function"))
    });
    g.finish();

    let mut g = c.benchmark_group("host");
    g.throughput(Throughput::Elements(CALLS));
    let calls = [
        ("empty_loop", "nop"),
        ("now_ms", "(drop (call $now_ms))"),
        (
            "config_missing",
            "(drop (call $config (i32.const 16) (i32.const 3) (i32.const 64) (i32.const 64)))",
        ),
        (
            "kv_get_missing",
            "(drop (call $kv_get (i32.const 16) (i32.const 3) (i32.const 64) (i32.const 64)))",
        ),
    ];
    for (name, call) in calls {
        let f = fixtures::load(&mut rt, name, &call_loop(call), &[]);
        let job = fixtures::job(f, "bench/host", b"");
        g.bench_function(format!("{name}_x{CALLS}"), |b| {
            b.iter(|| fixtures::run(&mut rt, black_box(job)))
        });
    }
    g.finish();
}

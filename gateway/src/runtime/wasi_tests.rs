//! WASI preview 1 in the sandbox: what a `wasm32-wasip1` module gets (stdout and stderr as log
//! lines, clocks, random numbers, `_initialize` once) and what it does not (files, the
//! environment, sleeping, ending the gateway).

use super::tests::{load, logged, runtime, with_body};
use super::*;

const WASI: &str = "wasi_snapshot_preview1";

/// A guest whose handler runs `body` with WASI's `name` imported as `$name` of type `ty`.
fn wasi_guest(imports: &[(&str, &str)], body: &str) -> String {
    let imports: String = imports
        .iter()
        .map(|(name, ty)| format!(r#"(import "{WASI}" "{name}" (func ${name} {ty}))"#))
        .collect();
    with_body(&imports, body)
}

const FD_WRITE: (&str, &str) = ("fd_write", "(param i32 i32 i32 i32) (result i32)");

#[test]
fn stdout_and_stderr_become_the_functions_log_lines() {
    let mut rt = runtime();
    // iovec at 0 -> 22 bytes at 64; the last line has no newline yet.
    let guest = wasi_guest(&[FD_WRITE], "").replace(
        "(func (export \"kiri_on_event\")",
        r#"(data (i32.const 64) "to stdout\nto stderr\npa")
  (func (export "kiri_on_event")"#,
    );
    let body = "(i32.store (i32.const 0) (i32.const 64)) (i32.store (i32.const 4) (i32.const 10))
      (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 16)))
      (i32.store (i32.const 0) (i32.const 74)) (i32.store (i32.const 4) (i32.const 12))
      (drop (call $fd_write (i32.const 2) (i32.const 0) (i32.const 1) (i32.const 16)))
      (i32.load (i32.const 16)) (i32.const 12) (i32.ne)";
    let guest = guest.replace(
        "(param i32 i32 i32 i32 i64) (result i32) ))",
        &format!("(param i32 i32 i32 i32 i64) (result i32) {body}))"),
    );
    let f = load(&mut rt, &guest).unwrap();
    let log = logged(|| {
        rt.invoke(f, "t", b"", 0).unwrap();
    });
    assert!(
        log.contains(" INFO kiri::function: to stdout function=\"t\""),
        "{log}"
    );
    assert!(
        log.contains(" WARN kiri::function: to stderr function=\"t\""),
        "{log}"
    );
    assert!(
        !log.contains("pa"),
        "a partial line waits for its end: {log}"
    );
}

#[test]
fn files_and_the_environment_are_not_there() {
    let mut rt = runtime();
    let guest = wasi_guest(
        &[
            ("environ_sizes_get", "(param i32 i32) (result i32)"),
            (
                "path_open",
                "(param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)",
            ),
            ("fd_prestat_get", "(param i32 i32) (result i32)"),
            ("clock_time_get", "(param i32 i64 i32) (result i32)"),
            ("random_get", "(param i32 i32) (result i32)"),
        ],
        // Fails (returns 1..5) at the first check that does not hold.
        "(if (call $environ_sizes_get (i32.const 0) (i32.const 4)) (then (return (i32.const 1))))
         (if (i32.load (i32.const 0)) (then (return (i32.const 2))))
         (if (i32.eqz (call $fd_prestat_get (i32.const 3) (i32.const 0))) (then (return (i32.const 3))))
         (if (i32.eqz (call $path_open (i32.const 3) (i32.const 0) (i32.const 100) (i32.const 4)
               (i32.const 0) (i64.const 0) (i64.const 0) (i32.const 0) (i32.const 8)))
           (then (return (i32.const 4))))
         (if (call $clock_time_get (i32.const 0) (i64.const 1) (i32.const 8)) (then (return (i32.const 5))))
         (if (i64.lt_u (i64.load (i32.const 8)) (i64.const 1600000000000000000)) (then (return (i32.const 6))))
         (if (call $random_get (i32.const 16) (i32.const 16)) (then (return (i32.const 7))))
         (i32.const 0)",
    );
    let f = load(&mut rt, &guest).unwrap();
    match rt.invoke(f, "t", b"", 0) {
        Ok(_) => {}
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn proc_exit_ends_the_instance_not_the_gateway() {
    let mut rt = runtime();
    let guest = wasi_guest(
        &[("proc_exit", "(param i32)")],
        "(if (i32.eq (local.get 3) (i32.const 4)) (then (call $proc_exit (i32.const 3)))) (i32.const 0)",
    );
    let f = load(&mut rt, &guest).unwrap();
    let e = rt.invoke(f, "t", b"exit", 0).unwrap_err();
    assert!(matches!(e, InvokeError::Exit(3)), "{e}");
    assert_eq!(e.reason(), "exit");
    rt.invoke(f, "t", b"ok", 0).unwrap();
}

#[test]
fn sleeping_is_refused() {
    let mut rt = runtime();
    let guest = wasi_guest(
        &[("poll_oneoff", "(param i32 i32 i32 i32) (result i32)")],
        "(drop (call $poll_oneoff (i32.const 0) (i32.const 64) (i32.const 1) (i32.const 128))) (i32.const 0)",
    );
    let f = load(&mut rt, &guest).unwrap();
    let e = rt.invoke(f, "t", b"", 0).unwrap_err();
    assert!(e.to_string().contains("must not block"), "{e}");
}

#[test]
fn a_reactor_is_initialised_once() {
    let mut rt = runtime();
    let guest = r#"(module
      (import "kiri" "emit" (func $emit (param i32 i32 i32 i32) (result i32)))
      (memory (export "memory") 1)
      (global $inits (mut i32) (i32.const 0))
      (data (i32.const 16) "t")
      (func (export "_initialize") (global.set $inits (i32.add (global.get $inits) (i32.const 1))))
      (func (export "kiri_abi_version") (result i32) i32.const 1)
      (func (export "kiri_alloc") (param i32) (result i32) i32.const 1024)
      (func (export "kiri_on_event") (param i32 i32 i32 i32 i64) (result i32)
        (i32.store8 (i32.const 32) (i32.add (i32.const 48) (global.get $inits)))
        (drop (call $emit (i32.const 16) (i32.const 1) (i32.const 32) (i32.const 1)))
        i32.const 0))"#;
    let f = load(&mut rt, guest).unwrap();
    for _ in 0..2 {
        let out = rt.invoke(f, "t", b"", 0).unwrap().outputs;
        assert_eq!(out[0].payload, b"1");
    }
}

#[test]
fn a_trap_says_where_and_running_out_of_fuel_is_not_a_trap() {
    let mut rt = runtime();
    let f = load(&mut rt, &with_body("", "unreachable")).unwrap();
    let e = rt.invoke(f, "t", b"", 0).unwrap_err();
    assert_eq!(e.reason(), "trap");
    assert!(e.to_string().starts_with("trap: in kiri_on_event:"), "{e}");
    assert!(e.to_string().ends_with("(in wasm function 2)"), "{e}");
    // With a name section, the function's name; the innermost function, and after a call
    // returns, the caller again.
    let named = r#"(module
      (memory (export "memory") 1)
      (func $helper (param i32) (result i32) (i32.div_u (i32.const 1) (local.get 0)))
      (func $fine (result i32) (i32.const 7))
      (func (export "kiri_abi_version") (result i32) i32.const 1)
      (func (export "kiri_alloc") (param i32) (result i32) i32.const 1024)
      (func $on_event (export "kiri_on_event") (param i32 i32 i32 i32 i64) (result i32)
        (drop (call $fine))
        (if (i32.eq (local.get 3) (i32.const 1)) (then unreachable))
        (call $helper (i32.const 0))))"#;
    let g = load(&mut rt, named).unwrap();
    let e = rt.invoke(g, "t", b"", 0).unwrap_err();
    assert!(
        e.to_string().ends_with("(in wasm function 0 (helper))"),
        "{e}"
    );
    let e = rt.invoke(g, "t", b"x", 0).unwrap_err();
    assert!(
        e.to_string().ends_with("(in wasm function 4 (on_event))"),
        "{e}"
    );
}

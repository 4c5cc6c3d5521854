//! The function author's side (issue 20): `kiri check`, `kiri config check` and a gateway that
//! keeps running the functions that load when one does not.

use std::process::Command;
use std::time::Duration;

use super::{config_with, embedded};
use crate::util::*;

fn kiri(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_kiri"))
        .args(args)
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("run kiri")
}

/// A module importing AssemblyScript's `env.abort`, as its default build does.
fn abort_module(dir: &std::path::Path) -> std::path::PathBuf {
    let wat = r#"(module
      (import "env" "abort" (func (param i32 i32 i32 i32)))
      (memory (export "memory") 1)
      (func (export "kiri_abi_version") (result i32) i32.const 1)
      (func (export "kiri_alloc") (param i32) (result i32) i32.const 1024)
      (func (export "kiri_on_event") (param i32 i32 i32 i32 i64) (result i32) i32.const 0))"#;
    let path = dir.join("abort.wasm");
    std::fs::write(&path, wat::parse_str(wat).unwrap()).unwrap();
    path
}

/// One configuration, three functions: `convert` loads, `missing` has no module file and
/// `abort` imports what the gateway does not offer. The gateway runs `convert` and names the
/// other two (log, `/readyz`, `/api/v1/status`, `kiri functions`); `kiri config check` fails
/// naming both.
#[test]
fn a_module_that_does_not_load_leaves_the_others_running() {
    let (dir, cloud, sub, port) = super::site("authoring-consumer");
    let abort = abort_module(dir.path());
    let functions = format!(
        "[[functions]]\nname = \"convert\"\nmodule = \"{}\"\ntriggers = [\"sensors/+/temperature\"]\n\
         [[functions]]\nname = \"missing\"\nmodule = \"{}\"\ntriggers = [\"sensors/+/temperature\"]\n\
         [[functions]]\nname = \"abort\"\nmodule = \"{}\"\ntriggers = [\"sensors/+/temperature\"]\n",
        function_wasm("convert").display(),
        dir.path().join("nowhere.wasm").display(),
        abort.display(),
    );
    let conf = config_with(&cloud.url(), &embedded(port), &functions);
    let file = dir.path().join("kiri.toml");
    std::fs::write(&file, &conf).unwrap();
    let check = kiri(&["config", "check", "--config", file.to_str().unwrap()]);
    assert!(!check.status.success(), "config check fails");
    let said = String::from_utf8_lossy(&check.stderr);
    assert!(
        said.contains("function missing (") && said.contains("cannot read"),
        "{said}"
    );
    assert!(
        said.contains("function abort (") && said.contains("env.abort"),
        "{said}"
    );
    assert!(!said.contains("function convert"), "{said}");

    let token = "authoring-test-token-0123456789";
    let env = [("KIRI_DASHBOARD_TOKEN", token.to_string())];
    let mut gw = Kiri::start(&dir.path().join("kiri"), &conf, &env);
    publish_all(
        port,
        "s1",
        "sensors/s1/temperature",
        (0..3).map(|i| reading("s1", i)).collect(),
    );
    sub.wait_for(3, Duration::from_secs(30), &mut gw);
    let log = gw.log_text();
    for name in ["missing", "abort"] {
        assert!(
            log.contains(&format!("function={name}")) && log.contains("stays inactive"),
            "{log}"
        );
    }
    let readyz = ureq::get(&format!("http://127.0.0.1:{}/readyz", gw.metrics_port))
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    assert!(readyz.starts_with("ready\n"), "{readyz}");
    assert!(readyz.contains("function missing is inactive"), "{readyz}");
    assert!(readyz.contains("function abort is inactive"), "{readyz}");
    let table = gw.cli(token, &["functions"]);
    assert!(table.contains("abort            INACTIVE"), "{table}");
    assert_eq!(
        gw.status()["unloaded_functions"].as_array().unwrap().len(),
        2
    );
    gw.stop();
}

/// `kiri check` reports a module that loads, and refuses the others with the reason and the
/// fix: a wrong import type in ABI terms, AssemblyScript's `env.abort`.
#[test]
fn kiri_check_says_what_a_module_is_and_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let module = function_wasm("threshold");
    let ok = kiri(&["check", module.to_str().unwrap()]);
    assert!(ok.status.success());
    let text = String::from_utf8_lossy(&ok.stdout);
    assert!(text.contains("loads (ABI v1"), "{text}");
    assert!(
        text.contains("kiri.emit (i32, i32, i32, i32) -> i32"),
        "{text}"
    );

    let abort = abort_module(dir.path());
    let refused = kiri(&["check", abort.to_str().unwrap()]);
    assert!(!refused.status.success());
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(
        said.contains("env.abort") && said.contains("AssemblyScript"),
        "{said}"
    );

    let wrong = dir.path().join("wrong.wasm");
    let wat = r#"(module
      (import "kiri" "emit" (func (param i32 i32 i32 i64) (result i32)))
      (memory (export "memory") 1))"#;
    std::fs::write(&wrong, wat::parse_str(wat).unwrap()).unwrap();
    let said = kiri(&["check", wrong.to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&said.stderr).contains(
        "the module declares kiri.emit as (i32, i32, i32, i64) -> i32; ABI v1 defines (i32, i32, i32, i32) -> i32"
    ));
}

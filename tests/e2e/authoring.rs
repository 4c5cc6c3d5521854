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
    let readyz: serde_json::Value =
        ureq::get(&format!("http://127.0.0.1:{}/readyz", gw.metrics_port))
            .call()
            .unwrap()
            .body_mut()
            .read_json()
            .unwrap();
    assert_eq!(readyz["ready"], true, "{readyz}");
    let inactive: Vec<&str> = readyz["inactive_functions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["function"].as_str().unwrap())
        .collect();
    assert!(
        inactive.contains(&"missing") && inactive.contains(&"abort"),
        "{readyz}"
    );
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

/// A WASI module that tries what a function may not: on `quit` it calls `proc_exit`, on `file`
/// it tries to open a file (and emits the error number it got), on `env` it emits how many
/// environment variables it sees. Beside it, `convert` runs on the same readings.
fn prying_module(dir: &std::path::Path) -> std::path::PathBuf {
    let wat = r#"(module
      (import "kiri" "emit" (func $emit (param i32 i32 i32 i32) (result i32)))
      (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
      (import "wasi_snapshot_preview1" "path_open"
        (func $open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
      (import "wasi_snapshot_preview1" "environ_sizes_get" (func $env (param i32 i32) (result i32)))
      (memory (export "memory") 1)
      (data (i32.const 16) "pry/out")
      (data (i32.const 32) "/etc/passwd")
      (func (export "kiri_abi_version") (result i32) i32.const 1)
      (func (export "kiri_alloc") (param i32) (result i32) i32.const 1024)
      (func (export "kiri_on_event") (param i32 i32 i32 i32 i64) (result i32)
        (local $first i32)
        (local.set $first (i32.load8_u (local.get 2)))
        (if (i32.eq (local.get $first) (i32.const 113)) ;; "quit"
          (then (call $exit (i32.const 7))))
        (if (i32.eq (local.get $first) (i32.const 102)) ;; "file": the errno, as text
          (then (i32.store8 (i32.const 64) (i32.add (i32.const 48)
            (call $open (i32.const 3) (i32.const 0) (i32.const 32) (i32.const 11)
              (i32.const 0) (i64.const 2) (i64.const 2) (i32.const 0) (i32.const 128))))))
        (if (i32.eq (local.get $first) (i32.const 101)) ;; "env": the count, as text
          (then (drop (call $env (i32.const 200) (i32.const 204)))
            (i32.store8 (i32.const 64) (i32.add (i32.const 48) (i32.load (i32.const 200))))))
        (drop (call $emit (i32.const 16) (i32.const 7) (i32.const 64) (i32.const 1)))
        i32.const 0))"#;
    let path = dir.join("pry.wasm");
    std::fs::write(&path, wat::parse_str(wat).unwrap()).unwrap();
    path
}

#[test]
fn a_wasi_module_gets_no_files_no_environment_and_cannot_end_the_gateway() {
    let dir = tempfile::tempdir().unwrap();
    let cloud = Mosquitto::start(&dir.path().join("cloud"));
    let got = super::formats::collect(cloud.port, "wasi-consumer");
    let port = free_port();
    let pry = prying_module(dir.path());
    let functions = format!(
        "[[functions]]\nname = \"convert\"\nmodule = \"{}\"\ntriggers = [\"sensors/+/temperature\"]\n\
         [[functions]]\nname = \"pry\"\nmodule = \"{}\"\ntriggers = [{{ topic = \"pry\", format = \"text\" }}]\nretries = 0\n",
        function_wasm("convert").display(),
        pry.display(),
    );
    let conf = config_with(&cloud.url(), &embedded(port), &functions);
    let mut gw = Kiri::start(&dir.path().join("kiri"), &conf, &[("SECRET", "x".into())]);
    for what in ["quit", "file", "env"] {
        super::formats::mosquitto_pub(port, "pry", what.as_bytes());
    }
    publish_all(
        port,
        "s1",
        "sensors/s1/temperature",
        (0..3).map(|i| reading("s1", i)).collect(),
    );
    let of = |name: &str| -> Vec<Vec<u8>> {
        got.lock()
            .unwrap()
            .iter()
            .filter(|(f, _)| f == name)
            .map(|(_, p)| p.clone())
            .collect()
    };
    let both = poll_until(Duration::from_secs(30), || {
        gw.assert_running();
        of("pry").len() >= 2 && of("convert").len() >= 3
    });
    assert!(
        both,
        "pry {:?}, convert {}; log:\n{}",
        of("pry"),
        of("convert").len(),
        gw.log_text()
    );
    // path_open on fd 3 (no preopened directory): EBADF (8); no environment variables.
    assert_eq!(of("pry"), vec![b"8".to_vec(), b"0".to_vec()]);
    let log = gw.log_text();
    assert!(
        log.contains("reason=\"exit\""),
        "proc_exit is the invocation's failure: {log}"
    );
    assert!(log.contains("proc_exit(7)"), "{log}");
    gw.assert_running();
    gw.stop();
}

/// An HTTP function sees the method, the path after its name, the query and its allow-listed
/// headers (never the token), and sets the status and headers of its answer.
#[test]
fn an_http_function_sees_the_request_and_shapes_the_answer() {
    let dir = tempfile::tempdir().unwrap();
    let cloud = Mosquitto::start(&dir.path().join("cloud"));
    let headers = r#"{"content-type":"application/json","x-kiri-test":"yes"}"#;
    let wat = format!(
        r#"(module
      (import "kiri" "http_request" (func $req (param i32 i32) (result i32)))
      (import "kiri" "http_response" (func $resp (param i32 i32 i32) (result i32)))
      (import "kiri" "respond" (func $respond (param i32 i32) (result i32)))
      (memory (export "memory") 1)
      (data (i32.const 0) "{escaped}")
      (func (export "kiri_abi_version") (result i32) i32.const 1)
      (func (export "kiri_alloc") (param i32) (result i32) i32.const 1024)
      (func (export "kiri_on_event") (param i32 i32 i32 i32 i64) (result i32)
        (local $n i32)
        (local.set $n (call $req (i32.const 8192) (i32.const 8192)))
        (if (i32.ne (call $resp (i32.const 201) (i32.const 0) (i32.const {len})) (i32.const 0))
          (then (return (i32.const 9))))
        (drop (call $respond (i32.const 8192) (local.get $n)))
        i32.const 0))"#,
        escaped = headers.replace('"', "\\\""),
        len = headers.len()
    );
    let module = dir.path().join("req.wasm");
    std::fs::write(&module, wat::parse_str(&wat).unwrap()).unwrap();
    let functions = format!(
        "[[functions]]\nname = \"req\"\nmodule = \"{}\"\nhttp = true\nhttp_headers = [\"x-device-id\"]\n",
        module.display()
    );
    let conf = config_with(&cloud.url(), &embedded(free_port()), &functions);
    let token = "http-test-token-0123456789abcdef";
    let env = [("KIRI_DASHBOARD_TOKEN", token.to_string())];
    let mut gw = Kiri::start(&dir.path().join("kiri"), &conf, &env);
    let url = format!(
        "http://127.0.0.1:{}/invoke/req/items/7?x=1&y=two",
        gw.metrics_port
    );
    let mut resp = ureq::get(&url)
        .header("Authorization", &format!("Bearer {token}"))
        .header("X-Device-Id", "d1")
        .header("X-Other", "not passed")
        .call()
        .expect("the call");
    assert_eq!(resp.status().as_u16(), 201);
    let h = resp.headers();
    assert_eq!(h.get("content-type").unwrap(), "application/json");
    assert_eq!(h.get("x-kiri-test").unwrap(), "yes");
    let seen: serde_json::Value =
        serde_json::from_str(&resp.body_mut().read_to_string().unwrap()).unwrap();
    assert_eq!(
        seen,
        serde_json::json!({
            "method": "GET",
            "path": "/items/7",
            "query": "x=1&y=two",
            "headers": {"x-device-id": "d1"}
        })
    );
    gw.stop();
    // The same call through `kiri invoke`, without a gateway.
    let out = Command::new(env!("CARGO_BIN_EXE_kiri"))
        .arg("invoke")
        .arg(&module)
        .args([
            "--http",
            "GET /items/7?x=1&y=two",
            "--header",
            "X-Device-Id: d1",
        ])
        .arg("--report-json")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["http"]["status"], 201);
    assert_eq!(report["http"]["headers"]["x-kiri-test"], "yes");
    assert_eq!(report["http"]["body"], seen);
}

/// `kiri state` lists, reads and deletes a function's key-value state on a running gateway,
/// and the function's usage (what its quota is checked against) follows the delete.
#[test]
fn a_functions_state_can_be_listed_read_and_deleted() {
    let (dir, cloud, sub, port) = super::site("state-consumer");
    let functions = format!(
        "[[functions]]\nname = \"average\"\nmodule = \"{}\"\ntriggers = [\"sensors/+/temperature\"]\n",
        function_wasm("average").display()
    );
    let conf = config_with(&cloud.url(), &embedded(port), &functions);
    let token = "state-test-token-0123456789abcdef";
    let env = [("KIRI_DASHBOARD_TOKEN", token.to_string())];
    let mut gw = Kiri::start(&dir.path().join("kiri"), &conf, &env);
    publish_all(
        port,
        "s1",
        "sensors/s1/temperature",
        (0..3).map(|i| reading("s1", i)).collect(),
    );
    sub.wait_for(3, Duration::from_secs(30), &mut gw);
    let list = gw.cli(token, &["state", "list", "--function", "average"]);
    assert!(list.contains("s1/temperature"), "{list}");
    assert!(list.contains("1 keys"), "{list}");
    let value = gw.cli(
        token,
        &["state", "get", "--function", "average", "s1/temperature"],
    );
    assert!(value.starts_with("hex:"), "{value}");
    assert_eq!(gw.metric("kiri_kv_keys{function=\"average\"}"), 1.0);
    let deleted = gw.cli(
        token,
        &["state", "delete", "--function", "average", "--all"],
    );
    assert!(deleted.starts_with("deleted 1 keys"), "{deleted}");
    let list = gw.cli(token, &["state", "list", "--function", "average"]);
    assert!(list.contains("0 keys"), "{list}");
    assert_eq!(gw.metric("kiri_kv_keys{function=\"average\"}"), 0.0);
    let unknown = Command::new(env!("CARGO_BIN_EXE_kiri"))
        .args(["state", "list", "--function", "nobody"])
        .env("KIRI_URL", format!("http://127.0.0.1:{}", gw.metrics_port))
        .env("KIRI_DASHBOARD_TOKEN", token)
        .output()
        .unwrap();
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no state for function"));
    gw.stop();
}

/// `kiri run --watch`: a changed module replaces the running version, each event processed
/// once by one of them; a changed module that does not load leaves the running one; a function
/// whose module was missing at start runs once it is written; a function added by a reload is
/// watched too.
#[test]
fn kiri_run_watch_reloads_a_changed_module() {
    let dir = tempfile::tempdir().unwrap();
    let cloud = Mosquitto::start(&dir.path().join("cloud"));
    let sub = CloudSubscriber::start(cloud.port, "watch-consumer");
    let port = free_port();
    let module = dir.path().join("f.wasm");
    std::fs::write(&module, emitter_wasm("v1")).unwrap();
    let late = dir.path().join("late.wasm");
    let functions = format!(
        "[[functions]]\nname = \"f\"\nmodule = \"{}\"\ntriggers = [{{ topic = \"in\", format = \"text\" }}]\n\
         [[functions]]\nname = \"late\"\nmodule = \"{}\"\ntriggers = [{{ topic = \"in2\", format = \"text\" }}]\n",
        module.display(),
        late.display()
    );
    let conf = config_with(&cloud.url(), &embedded(port), &functions);
    let mut gw = Kiri::start_watching(&dir.path().join("kiri"), &conf);
    let topics = || -> Vec<String> {
        sub.received
            .lock()
            .unwrap()
            .iter()
            .map(|(t, _)| t.clone())
            .collect()
    };
    let send_and_wait = |gw: &mut Kiri, n: usize| {
        super::formats::mosquitto_pub(port, "in", format!("m{n}").as_bytes());
        wait_until("the result", Duration::from_secs(20), || {
            gw.assert_running();
            topics().len() >= n
        });
    };
    send_and_wait(&mut gw, 1);
    std::fs::write(&module, emitter_wasm("v2")).unwrap();
    wait_until("the reload", Duration::from_secs(20), || {
        gw.log_text()
            .contains("module changed: the new version runs")
    });
    send_and_wait(&mut gw, 2);
    std::fs::write(&module, b"not wasm").unwrap();
    wait_until("the refusal", Duration::from_secs(20), || {
        gw.log_text()
            .contains("module changed but does not load; the running version stays")
    });
    send_and_wait(&mut gw, 3);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        topics(),
        ["kiri/gw-test/v1", "kiri/gw-test/v2", "kiri/gw-test/v2"],
        "each event once, by the version running when it came"
    );
    assert_eq!(
        gw.status()["unloaded_functions"].as_array().unwrap().len(),
        1
    );
    std::fs::write(&late, emitter_wasm("late")).unwrap();
    wait_until("the late function", Duration::from_secs(20), || {
        gw.log_text().contains("the function loads now and runs")
    });
    assert_eq!(
        gw.status()["unloaded_functions"].as_array().unwrap().len(),
        0
    );
    // Its lane subscribes just after: what is published before that has no taker.
    let ran = (0..20).any(|i| {
        super::formats::mosquitto_pub(port, "in2", format!("late{i}").as_bytes());
        poll_until(Duration::from_secs(1), || {
            topics().iter().any(|t| t == "kiri/gw-test/late")
        })
    });
    assert!(ran, "the late function runs; log:\n{}", gw.log_text());

    // A function added by a reload is watched too.
    let added = dir.path().join("added.wasm");
    std::fs::write(&added, emitter_wasm("a1")).unwrap();
    gw.set_config(&format!(
        "{conf}[[functions]]\nname = \"added\"\nmodule = \"{}\"\ntriggers = [{{ topic = \"in3\", format = \"text\" }}]\n",
        added.display()
    ));
    gw.hangup();
    wait_until("the reload", Duration::from_secs(20), || {
        gw.log_text().contains("configuration reloaded")
    });
    std::fs::write(&added, emitter_wasm("a2")).unwrap();
    wait_until(
        "the added function's module change",
        Duration::from_secs(20),
        || {
            gw.log_text()
                .matches("module changed: the new version runs")
                .count()
                == 2
        },
    );
    let ran = (0..20).any(|i| {
        super::formats::mosquitto_pub(port, "in3", format!("added{i}").as_bytes());
        poll_until(Duration::from_secs(1), || {
            topics().iter().any(|t| t == "kiri/gw-test/a2")
        })
    });
    assert!(
        ran,
        "the added function runs its new module; log:\n{}",
        gw.log_text()
    );
    gw.stop();
}

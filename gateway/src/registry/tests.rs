use super::testing::{spec, RecordingTimers as Timers};
use super::*;

const GUEST: &str = r#"(module
  (memory (export "memory") 1)
  (func (export "kiri_abi_version") (result i32) i32.const 1)
  (func (export "kiri_alloc") (param i32) (result i32) i32.const 1024)
  (func (export "kiri_on_event") (param i32 i32 i32 i32 i64) (result i32) i32.const 0))"#;

fn registry() -> (Registry, Timers) {
    let db = sled::Config::new().temporary(true).open().unwrap();
    let timers = Timers::default();
    (
        Registry::new(Runtime::new(1024, db), Box::new(timers.clone())),
        timers,
    )
}

fn activate(r: &mut Registry, toml: &str, origin: Origin) -> usize {
    let spec = spec(toml);
    let wasm = wat::parse_str(GUEST).unwrap();
    let prepared = r.preparer(&spec).prepare(&wasm).unwrap();
    r.activate(spec, prepared, origin)
}

#[test]
fn activating_routes_triggers_starts_timers_and_shows_the_function() {
    let (mut r, timers) = registry();
    let a = activate(
        &mut r,
        "name = \"a\"\nmodule = \"a.wasm\"\ntriggers = [\"sensors/+/t\"]\nevery = \"1m\"\n",
        Origin::Config,
    );
    let b = activate(
        &mut r,
        "name = \"b\"\nmodule = \"b.wasm\"\ntriggers = [\"sensors/#\"]\nhttp = true\n",
        Origin::Deployed { version: 4 },
    );
    assert_eq!((a, b), (0, 1));
    assert_eq!(r.route("sensors/s1/t"), [0, 1]);
    assert_eq!(r.route("sensors/s1/h"), [1]);
    assert_eq!(r.subscriptions(), ["sensors/#"]);
    assert_eq!(*timers.0.lock().unwrap(), ["set 0 1m", "set 1 -"]);
    assert!(r.has_timer(0) && !r.has_timer(1));
    assert!(r.takes_http(1) && !r.takes_http(0));
    assert!(r.is_configured("a") && !r.is_configured("b"));
    let shown = r.directory().all();
    assert_eq!(shown[1].origin, "deployed");
    assert_eq!(shown[1].deployed_version, Some(4));
    assert_eq!(r.directory().find("b").map(|(i, _)| i), Some(1));
}

#[test]
fn a_new_version_keeps_its_index_and_replaces_routes_and_timers() {
    let (mut r, timers) = registry();
    activate(
        &mut r,
        "name = \"a\"\nmodule = \"a.wasm\"\ntriggers = [\"x\"]\nevery = \"1m\"\n",
        Origin::Deployed { version: 1 },
    );
    let again = activate(
        &mut r,
        "name = \"a\"\nmodule = \"a.wasm\"\ntriggers = [\"y\"]\n",
        Origin::Deployed { version: 2 },
    );
    assert_eq!(again, 0);
    assert_eq!(r.len(), 1);
    assert!(r.route("x").is_empty());
    assert_eq!(r.route("y"), [0]);
    assert!(!r.has_timer(0));
    assert_eq!(timers.0.lock().unwrap().last().unwrap(), "set 0 -");
    assert_eq!(r.directory().all()[0].deployed_version, Some(2));
}

#[test]
fn a_retired_function_keeps_its_index_inactive_and_nothing_reaches_it() {
    let (mut r, timers) = registry();
    activate(
        &mut r,
        "name = \"a\"\nmodule = \"a.wasm\"\ntriggers = [\"x\"]\n",
        Origin::Config,
    );
    activate(
        &mut r,
        "name = \"b\"\nmodule = \"b.wasm\"\ntriggers = [\"x\"]\n",
        Origin::Config,
    );
    assert!(r.retire("a"));
    assert!(!r.retire("nobody"));
    assert_eq!(r.route("x"), [1]);
    assert!(r.spec(0).is_none());
    assert_eq!(r.index_of("a"), Some(0), "the index stays");
    assert!(r.directory().find("a").is_none());
    assert!(!r.directory().all()[0].active);
    assert_eq!(timers.0.lock().unwrap().last().unwrap(), "clear 0");
    let back = activate(
        &mut r,
        "name = \"a\"\nmodule = \"a.wasm\"\ntriggers = [\"z\"]\n",
        Origin::Deployed { version: 9 },
    );
    assert_eq!(back, 0, "a later version takes the old index again");
    assert_eq!(r.route("z"), [0]);
}

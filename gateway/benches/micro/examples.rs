//! `example/*`: each example function (`functions/examples`) on a representative reading,
//! `<name>_wasm` in the gateway's runtime (the wasm that `make functions` builds, a reused
//! instance, through `Runtime::run_batch`) and `<name>_native`: the same handler compiled for
//! the host and called directly, with the SDK's mock host behind its host calls.
//!
//! The fuel each wasm invocation uses is printed as `fuel <name> <n>` and written to
//! `target/bench/fuel.json`; after a real run (`cargo bench`) the wasm/native ratios of the
//! mean times are printed as `ratio <name> <wasm ns> <native ns> <ratio>`.
//!
//! The mock is not free: `config` turns the key into a `String` and looks it up in a
//! `HashMap`, `emit` copies topic and payload into a `Vec` (drained after each call), every
//! call goes through a thread-local `RefCell`. The wasm side pays comparable copies in the
//! real host; the native figures are "the logic plus a cheap host", not the bare logic (a
//! profile of `threshold_native` puts about a quarter of its time in malloc/free and SipHash).

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::SystemTime;

use criterion::Criterion;
use kiri::runtime::Job;
use kiri_sdk::{mock, Error, Event};

use crate::fixtures;

/// One example function and the reading it gets.
struct Example {
    name: &'static str,
    config: &'static [(&'static str, &'static str)],
    /// Each example has its own sensor: the mock's state is one map for all of them.
    sensor: &'static str,
    value: f64,
    /// Readings folded into its state before the measurement (its steady state).
    history: u64,
    /// Results the measured invocation emits.
    emits: usize,
    native: fn(&Event) -> Result<(), Error>,
}

const EXAMPLES: [Example; 5] = [
    Example {
        name: "threshold",
        config: &[("limit", "30")],
        sensor: "th-0017",
        value: 31.4, // above the limit: decode, compare, encode the alert, emit
        history: 0,
        emits: 1,
        native: kiri_fn_threshold::kiri_handler,
    },
    Example {
        name: "convert",
        config: &[],
        sensor: "cv-0017",
        value: 21.5, // °C to °F, emitted
        history: 0,
        emits: 1,
        native: kiri_fn_convert::kiri_handler,
    },
    Example {
        name: "average",
        config: &[],
        sensor: "av-0017",
        value: 21.5, // a full window of 10 values: read, shift, write, emit
        history: 20,
        emits: 1,
        native: kiri_fn_average::kiri_handler,
    },
    Example {
        name: "window",
        config: &[],
        sensor: "wi-0017",
        value: 21.5, // a reading folded into the aggregate: read, update, write
        history: 20,
        emits: 0,
        native: kiri_fn_window::kiri_handler,
    },
    Example {
        name: "zscore",
        config: &[],
        sensor: "zs-0017",
        value: 21.5, // a normal reading after 20: read, z-score, fold in, write
        history: 20,
        emits: 0,
        native: kiri_fn_zscore::kiri_handler,
    },
];

/// The example's module, built by `make functions`.
fn wasm(name: &str) -> Vec<u8> {
    let path = fixtures::target_dir()
        .join("wasm32-unknown-unknown/release")
        .join(format!("kiri_fn_{name}.wasm"));
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "cannot read {}: {e}; run `make functions` first (it builds the example functions to WebAssembly)",
            path.display()
        )
    })
}

/// Its reading number `seq`, the history varying around `value` (so a z-score has a spread).
fn reading(e: &Example, seq: u64) -> Vec<u8> {
    let wobble = (seq % 5) as f64 * 0.2 - 0.4;
    fixtures::reading(e.sensor, "temperature", e.value + wobble, "C", seq)
}

/// The event the runtime would hand the function.
fn event<'a>(topic: &'a str, payload: &'a [u8]) -> Event<'a> {
    Event {
        topic,
        payload,
        received_at_ms: 1_767_225_600_000,
    }
}

/// Registers the group.
pub fn bench(c: &mut Criterion) {
    let started = SystemTime::now();
    let db = fixtures::temporary_db();
    let mut rt = fixtures::runtime(db);
    let mut fuel = BTreeMap::new();
    let echo = wat::parse_str(crate::invoke::ECHO).expect("valid WAT");
    let f = fixtures::load(&mut rt, "echo", &echo, &[]);
    let payload = fixtures::reading("node-17", "temperature", 21.5, "C", 42);
    fuel.insert(
        "trivial",
        fixtures::fuel_of(&mut rt, fixtures::job(f, "t", &payload)),
    );

    let mut g = c.benchmark_group("example");
    for e in &EXAMPLES {
        let f = fixtures::load(&mut rt, e.name, &wasm(e.name), e.config);
        for (k, v) in e.config {
            mock::set_config(k, v);
        }
        let topic = format!("sensors/{}/temperature", e.sensor);
        for seq in 0..e.history {
            let payload = reading(e, seq);
            // The state the pipeline would have committed...
            let done = rt.invoke(f, &topic, &payload, 0).expect("invocation");
            for (k, v) in done.kv_writes {
                match v {
                    Some(v) => done.kv.insert(k, v),
                    None => done.kv.remove(k),
                }
                .expect("kv write");
            }
            // ...and the same in the mock, which commits at once.
            (e.native)(&event(&topic, &payload)).expect("native handler");
        }
        mock::take_emits();
        let payload = reading(e, e.history + 2); // wobble 0: exactly `value`
        let job = fixtures::job(f, &topic, &payload);
        let outputs = rt
            .invoke(f, &topic, &payload, 0)
            .expect("invocation")
            .outputs;
        assert_eq!(outputs.len(), e.emits, "{} wasm", e.name);
        (e.native)(&event(&topic, &payload)).expect("native handler");
        assert_eq!(mock::take_emits().len(), e.emits, "{} native", e.name);

        let used = fixtures::fuel_of(&mut rt, job);
        println!("fuel {} {used}", e.name);
        fuel.insert(e.name, used);

        g.bench_function(format!("{}_wasm", e.name), |b| {
            b.iter(|| fixtures::run(&mut rt, black_box(job)))
        });
        if e.name == "threshold" {
            // A fresh instance of a Rust module (1.1 MiB of memory: wasmi zeroes all of it,
            // the runtime gives the untouched pages back).
            let cold = Job { fresh: true, ..job };
            g.bench_function(format!("{}_cold", e.name), |b| {
                b.iter(|| fixtures::run(&mut rt, black_box(cold)))
            });
        }
        let native = e.native;
        let event = event(&topic, &payload);
        g.bench_function(format!("{}_native", e.name), |b| {
            b.iter(|| {
                let r = native(black_box(&event));
                mock::take_emits();
                r
            })
        });
    }
    g.finish();
    write_fuel(&fuel);
    print_ratios(started);
}

fn write_fuel(fuel: &BTreeMap<&str, u64>) {
    let dir = fixtures::target_dir().join("bench");
    std::fs::create_dir_all(&dir).expect("target/bench");
    let json = serde_json::to_string_pretty(fuel).expect("JSON");
    std::fs::write(dir.join("fuel.json"), json + "\n").expect("fuel.json");
}

/// The mean time per iteration criterion just wrote for `example/<id>`, if it ran now.
fn mean_ns(id: &str, since: SystemTime) -> Option<f64> {
    let home = std::env::var_os("CRITERION_HOME")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| fixtures::target_dir().join("criterion"));
    let path = home.join("example").join(id).join("new/estimates.json");
    let fresh = std::fs::metadata(&path).ok()?.modified().ok()? >= since;
    let estimates: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).ok()?).ok()?;
    fresh.then(|| estimates["mean"]["point_estimate"].as_f64())?
}

fn print_ratios(since: SystemTime) {
    for e in &EXAMPLES {
        let wasm = mean_ns(&format!("{}_wasm", e.name), since);
        let native = mean_ns(&format!("{}_native", e.name), since);
        if let (Some(w), Some(n)) = (wasm, native) {
            println!("ratio {} {w:.0} {n:.0} {:.1}", e.name, w / n);
        }
    }
}

//! What several benchmark groups share: the metrics recorder, readings, runtimes, paths.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use kiri::config::{FunctionConfig, FunctionLimits};
use kiri::outbox::Outbox;
use kiri::runtime::{Job, Permissions, Runtime};
use kiri::store::Store;

/// Installs the Prometheus recorder the gateway installs, with its upkeep every 5 s, so that
/// the `metrics!` calls on the hot paths cost what they cost in production (with no recorder
/// they would be nearly free).
pub fn install_metrics() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        metrics::set_global_recorder(recorder).expect("the only recorder");
        std::thread::spawn(move || loop {
            std::thread::sleep(Duration::from_secs(5));
            handle.run_upkeep();
        });
    });
}

/// The cargo target directory (where `make functions` puts the example functions).
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"))
}

/// A sensor reading as nodes send it (`kiri-reading`, the format the examples decode).
pub fn reading(sensor: &str, kind: &str, value: f64, unit: &str, seq: u64) -> Vec<u8> {
    let r = kiri_reading::Reading {
        sensor,
        kind,
        value,
        unit,
        ts: Some(1_767_225_600_000 + seq * 1000),
        uptime_ms: None,
        seq: Some(seq),
    };
    let mut buf = [0u8; 256];
    let n = r.encode(&mut buf).expect("a reading fits 256 bytes");
    buf[..n].to_vec()
}

/// The store and outbox as `gateway::run` opens them with the default settings, in `dir`
/// (on a real file system: each sled batch writes and syncs its log buffer, each flush of the
/// outbox `fsync`s).
pub fn disk_store(dir: &std::path::Path) -> (Store, Outbox) {
    let g = kiri::Config::default().gateway;
    assert!(g.fsync, "fsync after each group commit is the default");
    let store = Store::open(dir, g.cache_bytes, g.flush_every_ms).expect("store");
    let outbox = Outbox::open(&store.db, kiri::Config::default().outbox)
        .expect("outbox")
        .guard_disk(dir)
        .fsync_log(&store.log_path)
        .expect("sled's log file");
    (store, outbox)
}

/// A temporary store, deleted when dropped (sled puts it in shared memory when it can).
pub fn temporary_db() -> sled::Db {
    sled::Config::new()
        .temporary(true)
        .open()
        .expect("temporary store")
}

/// A runtime keeping function state in `db`, with the gateway's default payload limit.
pub fn runtime(db: sled::Db) -> Runtime {
    Runtime::new(kiri::Config::default().broker.max_message_bytes, db)
}

/// Loads `wasm` as function `name` with default limits and permissions.
pub fn load(rt: &mut Runtime, name: &str, wasm: &[u8], config: &[(&str, &str)]) -> usize {
    let config: BTreeMap<String, serde_json::Value> = config
        .iter()
        .map(|(k, v)| (k.to_string(), serde_json::Value::from(*v)))
        .collect();
    rt.load_bytes(
        name,
        wasm,
        FunctionLimits::default(),
        config,
        Permissions::default(),
    )
    .unwrap_or_else(|e| panic!("loading {name}: {e}"))
}

/// Runs one event through [`Runtime::run_batch`], the pipeline's path; panics if it fails.
pub fn run(rt: &mut Runtime, job: Job<'_>) {
    rt.run_batch(&[job], |_, result| {
        result.map(drop).map_err(|e| e.to_string())
    })
    .unwrap_or_else(|e| panic!("invocation failed: {e:?}"));
}

/// A job for function `function` on a reused instance.
pub fn job<'a>(function: usize, topic: &'a str, payload: &'a [u8]) -> Job<'a> {
    Job {
        function,
        topic,
        payload,
        received_ms: 1_767_225_600_000,
        fresh: false,
        caller: None,
        format: kiri_abi::format::CBOR,
        http: None,
    }
}

/// The fuel one invocation of `job` uses, as the runtime meters it.
pub fn fuel_of(rt: &mut Runtime, job: Job<'_>) -> u64 {
    let meters = rt.meters();
    let before = meters.lock().expect("meters")[job.function].fuel;
    run(rt, job);
    let after = meters.lock().expect("meters")[job.function].fuel;
    after - before
}

/// A `[[functions]]` entry, parsed as the gateway parses its configuration.
pub fn function_config(toml: &str) -> FunctionConfig {
    use figment::providers::Format;
    figment::Figment::from(figment::providers::Toml::string(toml))
        .extract()
        .expect("a valid function entry")
}

//! `host_abi`: the runtime under a guest that runs its input as host calls
//! (`functions/fuzz-guest`, built by `make functions`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::FunctionLimits;
use crate::net::topic;
use crate::runtime::{
    Caller, Destination, Invocation, InvokeError, Job, Permissions, Runtime, MAX_KEY_BYTES,
    MAX_TOPIC_BYTES,
};

/// Largest payload, response and (so) event the runtime takes here.
const MAX_PAYLOAD_BYTES: usize = 1024;
/// The guest's event buffer (`kiri_alloc` gives 0 for more).
const GUEST_BUFFER: usize = 65536;
/// How much later than its timeout an invocation may end (a host call in progress finishes).
const TIMEOUT_SLACK: Duration = Duration::from_secs(2);

/// Small limits, so that a short program reaches each of them.
fn limits() -> FunctionLimits {
    FunctionLimits {
        fuel: 300_000,
        memory_bytes: 2 << 20,
        max_outputs: 8,
        max_output_bytes: 2048,
        timeout_ms: 500,
        kv_max_value_bytes: 300,
        kv_max_writes: 6,
        kv_max_bytes: 1200,
        kv_max_keys: 6,
        log_bytes_per_sec: 4096,
        max_call_depth: 200,
        concurrency: 1,
    }
}

/// The runtime with the fuzz guest loaded as function `fuzz`: emits to `out/+` and
/// `alerts/#`, publishes to `local/#`, a few config values and stored keys.
pub struct HostAbi {
    runtime: Runtime,
    function: usize,
    permissions: Permissions,
    callers: [Arc<Caller>; 2],
}

impl HostAbi {
    /// Loads `guest` (the fuzz guest's wasm) into a runtime over a temporary store.
    pub fn new(guest: &[u8]) -> HostAbi {
        let db = sled::Config::new()
            .temporary(true)
            .open()
            .expect("a temporary sled store");
        let kv = db.open_tree("kv/fuzz").expect("the function's tree");
        for (k, v) in [
            (&b"k1"[..], &b"one"[..]),
            (b"k2", &[0xff; 300]),
            (b"kv/a", b""),
            (&[b'x'; MAX_KEY_BYTES], b"longest key"),
        ] {
            kv.insert(k, v).expect("a seeded key");
        }
        let mut runtime = Runtime::new(MAX_PAYLOAD_BYTES, db);
        let config = BTreeMap::from([
            ("limit".to_string(), serde_json::json!("30")),
            ("unit".to_string(), serde_json::json!("C")),
            ("big".to_string(), serde_json::json!("b".repeat(5000))),
            (
                "table".to_string(),
                serde_json::json!({"a": [1, 2.5, true]}),
            ),
        ]);
        let permissions = Permissions {
            publish: vec!["local/#".into()],
            emit: vec!["out/+".into(), "alerts/#".into()],
        };
        let function = runtime
            .load_bytes("fuzz", guest, limits(), config, permissions.clone())
            .expect("the fuzz guest loads (build it with `make functions`)");
        let caller = |prefixes: &[&str]| {
            Arc::new(Caller {
                subject: "user-1".into(),
                prefixes: prefixes.iter().map(|p| p.to_string()).collect(),
            })
        };
        HostAbi {
            runtime,
            function,
            permissions,
            callers: [caller(&["out/", "k"]), caller(&[])],
        }
    }

    /// The first byte picks the event: bit 0 an HTTP call (topic `$http`) or a sensor topic,
    /// bits 1-2 no caller, a caller granting `out/` and `k`, or one granting nothing. The rest
    /// is the program (the event's payload). It runs twice, on a fresh instance and then on
    /// the same one: each run must end in a result or a clean error, within every limit.
    pub fn run(&mut self, data: &[u8]) {
        let Some((&mode, program)) = data.split_first() else {
            return;
        };
        let topic = if mode & 1 == 0 {
            "sensors/n1/temperature"
        } else {
            "$http"
        };
        let caller = match (mode >> 1) % 4 {
            1 => Some(&self.callers[0]),
            2 => Some(&self.callers[1]),
            _ => None,
        };
        let job = |fresh| Job {
            function: self.function,
            topic,
            payload: program,
            received_ms: 1_700_000_000_000,
            fresh,
            caller,
            format: kiri_abi::format::BYTES,
            http: None,
        };
        let jobs = [job(true), job(false)];
        let fuel_before = self.fuel();
        let started = Instant::now();
        let mut results = Vec::new();
        let results_ref = std::sync::Mutex::new(&mut results);
        let done: Result<(), Vec<()>> = self.runtime.run_batch(&jobs, |_, r| {
            results_ref.lock().expect("results").push(r);
            Ok(())
        });
        assert!(done.is_ok());
        let elapsed = started.elapsed();
        let limits = limits();
        assert!(
            elapsed < 2 * (Duration::from_millis(limits.timeout_ms) + TIMEOUT_SLACK),
            "two invocations took {elapsed:?}"
        );
        assert_eq!(results.len(), 2, "both jobs ran");
        let memory_peak =
            self.runtime.meters().lock().expect("meters")[self.function].memory_peak_bytes;
        assert!(memory_peak <= limits.memory_bytes as u64);
        assert!(self.fuel() - fuel_before <= 2 * limits.fuel);
        for r in results {
            self.check(r, topic.len() + program.len(), caller.map(|c| &**c));
        }
    }

    fn fuel(&self) -> u64 {
        self.runtime.meters().lock().expect("meters")[self.function].fuel
    }

    fn check(&self, r: Result<Invocation, InvokeError>, event: usize, caller: Option<&Caller>) {
        let inv = match r {
            Ok(inv) => inv,
            Err(InvokeError::Alloc(n)) => {
                assert!(n > GUEST_BUFFER, "the guest had room for {n} bytes");
                return;
            }
            Err(e @ InvokeError::Instantiate(_)) => panic!("the guest instantiates: {e}"),
            Err(_) => return,
        };
        assert!(event <= GUEST_BUFFER);
        let limits = limits();
        let grants = |name: &[u8]| caller.is_none_or(|c| c.grants(name));
        assert!(inv.outputs.len() <= limits.max_outputs);
        let bytes: usize = inv.outputs.iter().map(|o| o.payload.len()).sum();
        assert!(bytes <= limits.max_output_bytes);
        for o in &inv.outputs {
            assert!(o.topic.len() <= MAX_TOPIC_BYTES && o.payload.len() <= MAX_PAYLOAD_BYTES);
            assert!(topic::validate_name(&o.topic).is_ok(), "{:?}", o.topic);
            let allowed = match o.destination {
                Destination::Cloud => &self.permissions.emit,
                Destination::Local => &self.permissions.publish,
            };
            assert!(allowed.iter().any(|f| topic::matches(f, &o.topic)));
            assert!(grants(o.topic.as_bytes()), "{:?} not granted", o.topic);
        }
        assert!(inv.kv_writes.len() <= limits.kv_max_writes);
        for (k, v) in &inv.kv_writes {
            assert!((1..=MAX_KEY_BYTES).contains(&k.len()));
            assert!(v
                .as_ref()
                .is_none_or(|v| v.len() <= limits.kv_max_value_bytes));
            assert!(grants(k), "key {k:?} not granted");
        }
        // The quota charge is what the writes change, and stays within the quota (or within
        // what was stored already, when that was over it).
        let (mut bytes, mut keys) = (0i64, 0i64);
        for (k, v) in &inv.kv_writes {
            let before = inv.kv.get(k).unwrap().map(|b| (k.len() + b.len()) as i64);
            let after = v.as_ref().map(|v| (k.len() + v.len()) as i64);
            bytes += after.unwrap_or(0) - before.unwrap_or(0);
            keys += after.is_some() as i64 - before.is_some() as i64;
        }
        let charge = &inv.kv_charge;
        assert_eq!((charge.bytes, charge.keys), (bytes, keys));
        let usage = (charge.usage.bytes(), charge.usage.keys());
        assert!(bytes <= 0 || usage.0 + bytes <= limits.kv_max_bytes as i64);
        assert!(keys <= 0 || usage.1 + keys <= limits.kv_max_keys as i64);
        assert!(inv
            .response
            .body
            .as_ref()
            .is_none_or(|r| r.len() <= MAX_PAYLOAD_BYTES));
    }
}

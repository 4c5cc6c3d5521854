//! End-to-end benchmark: a load generator publishes timestamped, numbered messages; a
//! subscriber at the cloud broker measures what arrives. Every system runs on the same machine
//! in the same run, so the ratios between them hold even when the machine's speed drifts:
//!
//! - Mosquitto alone (publisher → broker → subscriber): the physical limit;
//! - Kiri with a trivial function (emits its input unchanged), local and cloud broker on that
//!   same Mosquitto: QoS 0 in, QoS 1 in (acknowledged after the durable commit), with and
//!   without fsync, and 16 functions on 16 topics;
//! - Node-RED running the equivalent flow (mqtt in → function → mqtt out), the peer people use;
//! - store-and-forward: results buffered with the cloud down, then drained over TLS;
//! - footprint: idle RSS, binary sizes;
//! - efficiency: CPU time and bytes written per event at 200/s, 2,000/s and the maximum rate,
//!   with the embedded broker and with Mosquitto, and on one CPU; idle memory;
//! - commit: what a group commit costs through the outbox on sled and through a plain
//!   append-only file (CPU and bytes written per commit of 1, 4 and 64 results).
//!
//! `cargo bench -p kiri --bench pipeline` (what `make bench` runs) measures and writes
//! `target/bench/pipeline.json`, which `scripts/bench-report.py` turns into BENCHMARKS.md. An
//! argument after `--` keeps only the sections whose name contains it (`throughput`,
//! `latency`, `functions16`, `node-red`, `store`, `footprint`, `efficiency`, `commit`). Run without `--bench` (`cargo test
//! -p kiri --bench pipeline`, what `make bench-smoke` runs) every section runs briefly, so none
//! rots; nothing is asserted about speed.

#[allow(dead_code)]
#[path = "../../tests/e2e/util.rs"]
mod util;

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use kiri::uplink::Envelope;
use rumqttc::{Client, Event, MqttOptions, Outgoing, Packet, QoS};
use serde_json::{json, Value};
use util::{free_port, wait_until, Kiri, Mosquitto, Pki};

/// Sizes of one run: `--bench` measures, without it every section runs briefly.
struct Scale {
    full: bool,
    /// Messages per throughput run (published as fast as the publisher can).
    throughput: u64,
    /// Seconds of the fixed-rate latency runs.
    latency_secs: f64,
    /// Results buffered with the cloud down.
    store: u64,
}

/// Rate of the latency runs, events per second.
const RATE: u64 = 10_000;
/// A lower rate, for the latency a system adds while it is not saturated.
const RATE_LOW: u64 = 2_000;
/// Payload of the pipeline runs: sequence number, send time, padding.
const PAYLOAD: usize = 64;
/// Payload of the store-and-forward run.
const STORE_PAYLOAD: usize = 256;
const PREFIX: &str = "kiri/gw-bench";

/// Nanoseconds since the first call, on the monotonic clock shared by publisher and
/// subscriber (both run in this process).
fn now_ns() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

/// A `len`-byte message: one CBOR byte string (Kiri refuses input that is not well-formed
/// CBOR) holding the sequence number and the send time, padded.
fn payload(seq: u64, len: usize) -> Vec<u8> {
    let len = len.max(HEADER + 16);
    let mut p = vec![0x5a; len];
    p[0] = 0x59; // byte string, 2-byte length
    p[1..3].copy_from_slice(&((len - HEADER) as u16).to_be_bytes());
    p[HEADER..HEADER + 8].copy_from_slice(&seq.to_le_bytes());
    p[HEADER + 8..HEADER + 16].copy_from_slice(&now_ns().to_le_bytes());
    p
}

/// Bytes before the sequence number: the CBOR byte string's head.
const HEADER: usize = 3;

/// The trivial function: emits each payload unchanged on the topic it came in on.
const TRIVIAL_WAT: &str = r#"(module
  (import "kiri" "emit" (func $emit (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 2)
  (func (export "kiri_abi_version") (result i32) (i32.const 1))
  (func (export "kiri_alloc") (param $len i32) (result i32)
    (select (i32.const 1024) (i32.const 0) (i32.le_u (local.get $len) (i32.const 65536))))
  (func (export "kiri_on_event") (param $t i32) (param $tl i32) (param $p i32) (param $pl i32)
        (param $at i64) (result i32)
    (i32.lt_s (call $emit (local.get $t) (local.get $tl) (local.get $p) (local.get $pl))
              (i32.const 0))))"#;

// ---------------------------------------------------------------------------------------
// Load generator and subscriber

/// What a subscriber saw.
#[derive(Default)]
struct Arrivals {
    seen: Vec<bool>,
    distinct: u64,
    duplicates: u64,
    latency_ns: Vec<u64>,
    first_ns: Option<u64>,
    last_ns: u64,
}

impl Arrivals {
    fn record(&mut self, payload: &[u8]) {
        let now = now_ns();
        let field = |at: usize| u64::from_le_bytes(payload[at..at + 8].try_into().unwrap());
        let (seq, sent) = (field(HEADER) as usize, field(HEADER + 8));
        if seq >= self.seen.len() {
            self.seen.resize(seq + 1, false);
        }
        if std::mem::replace(&mut self.seen[seq], true) {
            self.duplicates += 1;
            return;
        }
        self.distinct += 1;
        self.latency_ns.push(now.saturating_sub(sent));
        self.first_ns.get_or_insert(now);
        self.last_ns = now;
    }
}

/// How the subscriber finds the load generator's payload in a message.
#[derive(Clone, Copy)]
enum Wrapping {
    /// As published (Mosquitto alone, Node-RED).
    Raw,
    /// Inside Kiri's envelope, or a batch of them.
    Envelope,
}

/// A subscriber at the cloud broker (QoS 1, clean session).
struct Subscriber {
    arrivals: Arc<Mutex<Arrivals>>,
    client: Client,
}

impl Subscriber {
    fn start(port: u16, filter: &str, wrapping: Wrapping) -> Subscriber {
        let arrivals = Arc::new(Mutex::new(Arrivals::default()));
        let sink = arrivals.clone();
        let mut opts = MqttOptions::new(format!("bench-sub-{}", free_port()), "127.0.0.1", port);
        opts.set_max_packet_size(4 << 20, 4 << 20)
            .set_keep_alive(Duration::from_secs(60));
        let (client, mut conn) = Client::new(opts, 64);
        let subscribed = Arc::new(AtomicBool::new(false));
        let flag = subscribed.clone();
        let filter = filter.to_string();
        let sub = client.clone();
        thread::spawn(move || {
            for event in conn.iter() {
                match event {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        sub.try_subscribe(filter.as_str(), QoS::AtLeastOnce)
                            .unwrap();
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => flag.store(true, Ordering::SeqCst),
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let mut a = sink.lock().unwrap();
                        match wrapping {
                            Wrapping::Raw => a.record(&p.payload),
                            Wrapping::Envelope if p.topic.ends_with("/$batch") => {
                                for e in Envelope::decode_batch(&p.payload).expect("a batch") {
                                    a.record(&e.payload);
                                }
                            }
                            Wrapping::Envelope => a.record(
                                &Envelope::decode(&p.payload).expect("an envelope").payload,
                            ),
                        }
                    }
                    Ok(Event::Outgoing(Outgoing::Disconnect)) => return,
                    Ok(_) => {}
                    Err(_) => thread::sleep(Duration::from_millis(100)),
                }
            }
        });
        wait_until("the subscription", Duration::from_secs(10), || {
            subscribed.load(Ordering::SeqCst)
        });
        Subscriber { arrivals, client }
    }

    /// Waits until `n` distinct messages arrived, or nothing arrived for `idle`.
    fn wait(&self, n: u64, idle: Duration) {
        let mut last = (0, Instant::now());
        loop {
            let got = self.arrivals.lock().unwrap().distinct;
            if got >= n {
                return;
            }
            if got != last.0 {
                last = (got, Instant::now());
            } else if last.1.elapsed() > idle {
                eprintln!("  (gave up waiting: {got} of {n} arrived)");
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    fn finish(self) -> Arrivals {
        let _ = self.client.disconnect();
        std::mem::take(&mut *self.arrivals.lock().unwrap())
    }
}

/// One publishing run's shape.
#[derive(Clone)]
struct Load {
    count: u64,
    /// Messages per second; `None`: as fast as the publisher can.
    rate: Option<u64>,
    qos: QoS,
    topics: Vec<String>,
    payload: usize,
}

/// Publishes `load` and returns once the broker has it (QoS 1: every PUBACK; QoS 0: the
/// connection wrote the last message and the DISCONNECT after it). Returns how long each
/// QoS 1 message waited for its PUBACK, from the write to the acknowledgement, in µs,
/// sorted.
fn publish(port: u16, load: &Load) -> Vec<u64> {
    let mut opts = MqttOptions::new(format!("bench-pub-{}", free_port()), "127.0.0.1", port);
    opts.set_max_packet_size(4 << 20, 4 << 20)
        .set_inflight(100)
        .set_keep_alive(Duration::from_secs(60));
    let (client, mut conn) = Client::new(opts, 1000);
    let acks = Arc::new(AtomicU64::new(0));
    let acked = acks.clone();
    let io = thread::spawn(move || {
        // When each packet id in flight was written.
        let mut written: std::collections::HashMap<u16, Instant> = Default::default();
        let mut waits = Vec::new();
        for event in conn.iter() {
            match event {
                Ok(Event::Outgoing(Outgoing::Publish(pkid))) if pkid != 0 => {
                    written.insert(pkid, Instant::now());
                }
                Ok(Event::Incoming(Packet::PubAck(a))) => {
                    if let Some(at) = written.remove(&a.pkid) {
                        waits.push(at.elapsed().as_micros() as u64);
                    }
                    acked.fetch_add(1, Ordering::SeqCst);
                }
                Ok(Event::Outgoing(Outgoing::Disconnect)) => break,
                Ok(_) => {}
                Err(e) => panic!("publisher connection failed: {e}"),
            }
        }
        waits
    });
    let start = Instant::now();
    for seq in 0..load.count {
        if let Some(rate) = load.rate {
            let due = start + Duration::from_nanos(seq * 1_000_000_000 / rate);
            let now = Instant::now();
            if due > now {
                thread::sleep(due - now);
            }
        }
        let topic = &load.topics[seq as usize % load.topics.len()];
        client
            .publish(topic.as_str(), load.qos, false, payload(seq, load.payload))
            .unwrap();
    }
    if load.qos != QoS::AtMostOnce {
        wait_until("every PUBACK", Duration::from_secs(1800), || {
            acks.load(Ordering::SeqCst) >= load.count
        });
    }
    client.disconnect().unwrap();
    let mut waits = io.join().unwrap();
    waits.sort_unstable();
    waits
}

// ---------------------------------------------------------------------------------------
// Processes

/// `/proc/<pid>/status` field in kB (VmRSS, VmHWM).
fn proc_kb(pid: u32, field: &str) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// User + system CPU seconds the process used so far (Linux's USER_HZ is 100).
fn cpu_secs(pid: u32) -> f64 {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

/// Bytes the process caused to be written to storage so far (`/proc/<pid>/io` `write_bytes`:
/// pages it dirtied, counted once each time they are dirtied again after a writeback).
fn write_bytes(pid: u32) -> u64 {
    let io = fs::read_to_string(format!("/proc/{pid}/io")).unwrap_or_default();
    io.lines()
        .find_map(|l| l.strip_prefix("write_bytes:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// Resets the process's peak RSS (VmHWM) to its current RSS.
fn reset_peak(pid: u32) {
    let _ = fs::write(format!("/proc/{pid}/clear_refs"), "5");
}

/// A system under test: where to publish, where results arrive, and its process.
struct Target<'a> {
    name: &'a str,
    /// The broker that takes the load and, standing in for the cloud, receives the results.
    port: u16,
    filter: &'a str,
    wrapping: Wrapping,
    pid: Option<u32>,
    /// Where the load is published, when not at `port` (the embedded broker).
    publish_port: Option<u16>,
    /// Wait a second after the last arrival before reading CPU time and bytes written.
    settle: bool,
}

impl<'a> Target<'a> {
    /// A system that takes input from and forwards results to the broker on `port`, under
    /// `kiri/`.
    fn forwarding(name: &'a str, port: u16, wrapping: Wrapping, pid: u32) -> Target<'a> {
        Target {
            name,
            port,
            filter: "kiri/#",
            wrapping,
            pid: Some(pid),
            publish_port: None,
            settle: false,
        }
    }
}

/// One measured run.
fn run(target: &Target, scenario: &str, load: &Load) -> Value {
    let sub = Subscriber::start(target.port, target.filter, target.wrapping);
    if let Some(pid) = target.pid {
        reset_peak(pid);
    }
    let cpu0 = target.pid.map(cpu_secs);
    let written0 = target.pid.map(write_bytes);
    let t0 = now_ns();
    let ack_waits = publish(target.publish_port.unwrap_or(target.port), load);
    sub.wait(load.count, Duration::from_secs(15));
    if target.settle {
        // What the run left to do (deletes of delivered results, the store's background
        // flush) is part of its cost.
        thread::sleep(Duration::from_secs(1));
    }
    let cpu = target.pid.zip(cpu0).map(|(pid, c0)| cpu_secs(pid) - c0);
    let written = target
        .pid
        .zip(written0)
        .map(|(pid, w0)| write_bytes(pid) - w0);
    let peak_kb = target.pid.map(|pid| proc_kb(pid, "VmHWM"));
    let mut a = sub.finish();
    let secs = (a.last_ns.saturating_sub(t0)) as f64 / 1e9;
    a.latency_ns.sort_unstable();
    let pct = |q: f64| -> f64 {
        if a.latency_ns.is_empty() {
            return f64::NAN;
        }
        let i = ((a.latency_ns.len() as f64 * q).ceil() as usize).clamp(1, a.latency_ns.len());
        a.latency_ns[i - 1] as f64 / 1000.0
    };
    let row = json!({
        "system": target.name,
        "scenario": scenario,
        "qos": load.qos as u8,
        "rate": load.rate,
        "sent": load.count,
        "received": a.distinct,
        "lost": load.count - a.distinct.min(load.count),
        "duplicates": a.duplicates,
        "secs": secs,
        "per_sec": a.distinct as f64 / secs.max(1e-9),
        "p50_us": pct(0.5),
        "p99_us": pct(0.99),
        "p999_us": pct(0.999),
        "max_us": pct(1.0),
        "cpu_secs_per_10k": cpu.map(|c| c * 10_000.0 / a.distinct.max(1) as f64),
        "cpu_us_per_event": cpu.map(|c| c * 1e6 / a.distinct.max(1) as f64),
        "written_per_event": written.map(|w| w as f64 / a.distinct.max(1) as f64),
        "peak_rss_kb": peak_kb,
        "ack_p50_us": percentile(&ack_waits, 0.5),
        "ack_p99_us": percentile(&ack_waits, 0.99),
    });
    eprintln!(
        "  {:<10} {:<28} {:>8}/{:<8} {:>9.0}/s  p50 {:>8.1} us  p99 {:>8.1} us  p99.9 {:>8.1} us{}",
        target.name,
        scenario,
        a.distinct,
        load.count,
        row["per_sec"].as_f64().unwrap(),
        pct(0.5),
        pct(0.99),
        pct(0.999),
        match (cpu, peak_kb) {
            (Some(c), Some(k)) => format!(
                "  cpu {:.1} us/event  written {:.0} B/event  peak {:.1} MB",
                c * 1e6 / a.distinct.max(1) as f64,
                written.unwrap_or(0) as f64 / a.distinct.max(1) as f64,
                k as f64 / 1024.0
            ),
            _ => String::new(),
        }
    );
    row
}

/// The `q` quantile of `sorted` (`None` when empty).
fn percentile(sorted: &[u64], q: f64) -> Option<u64> {
    let i = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len().max(1));
    sorted.get(i - 1).copied()
}

/// Settles and reads a process's resident memory, in kB.
fn idle_rss(pid: u32) -> u64 {
    thread::sleep(Duration::from_secs(2));
    proc_kb(pid, "VmRSS")
}

/// A Kiri configuration for the bench: external broker `local`, cloud at `cloud_url`, one
/// trivial function per trigger filter.
struct KiriSetup<'a> {
    local: u16,
    cloud_url: String,
    triggers: &'a [String],
    fsync: bool,
    /// Extra lines in `[cloud]` (TLS files, batching).
    cloud_extra: String,
    /// Extra lines in `[outbox]`.
    outbox_extra: String,
    /// The embedded broker on this port instead of the external broker `local`.
    embedded: Option<u16>,
    /// `broker.client_id`, when the persistent sessions of an earlier gateway on the same
    /// broker must not be taken over (what the broker queued for them would arrive).
    client_id: Option<String>,
}

impl KiriSetup<'_> {
    fn start(&self, dir: &Path, wasm: &Path) -> Kiri {
        self.start_with(dir, wasm, String::new())
    }

    /// [`KiriSetup::start`] with extra lines in `[gateway]`.
    fn start_with(&self, dir: &Path, wasm: &Path, gateway_extra: String) -> Kiri {
        let broker = match self.embedded {
            Some(port) => format!("mode = \"embedded\"\nlisten = \"127.0.0.1:{port}\""),
            None => format!(
                "mode = \"external\"\nurl = \"mqtt://127.0.0.1:{}\"",
                self.local
            ),
        };
        let broker = match &self.client_id {
            Some(id) => format!("{broker}\nclient_id = \"{id}\""),
            None => broker,
        };
        let mut toml = format!(
            "[gateway]\nid = \"gw-bench\"\nfsync = {}\n{gateway_extra}\
             [broker]\n{broker}\n\
             [cloud]\nurl = \"{}\"\ntopic_prefix = \"{PREFIX}\"\nbackoff_max_ms = 500\n{}\n\
             [outbox]\n{}\n",
            self.fsync, self.cloud_url, self.cloud_extra, self.outbox_extra
        );
        for (i, trigger) in self.triggers.iter().enumerate() {
            toml += &format!(
                "[[functions]]\nname = \"relay{i}\"\nmodule = \"{}\"\ntriggers = [\"{trigger}\"]\n",
                wasm.display()
            );
        }
        Kiri::start(dir, &toml, &[("KIRI_LOG", "warn".into())])
    }
}

/// Node-RED running the equivalent flow (`scripts/node-red.sh run`), stopped on drop.
struct NodeRed {
    child: Child,
}

impl NodeRed {
    fn start(dir: &Path, local: u16, cloud: u16, qos: u8, functions: usize) -> NodeRed {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/node-red.sh");
        let mut child = Command::new("bash")
            .arg(&script)
            .args(["run", "--broker-port", &local.to_string()])
            .args(["--cloud-port", &cloud.to_string(), "--topic", "bench/#"])
            .args(["--prefix", PREFIX, "--qos", &qos.to_string()])
            .args(["--functions", &functions.to_string()])
            .arg("--dir")
            .arg(dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start scripts/node-red.sh");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.trim() == "node-red: ready" {
                    let _ = tx.send(());
                }
            }
        });
        if rx.recv_timeout(Duration::from_secs(60)).is_err() {
            let _ = child.kill();
            panic!(
                "Node-RED did not become ready within 60 s (is it installed? `scripts/node-red.sh install`)"
            );
        }
        NodeRed { child }
    }
}

impl Drop for NodeRed {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Bytes the files under `dir` occupy on disk (allocated blocks, not apparent sizes).
fn disk_bytes(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
        let meta = entry.metadata().unwrap();
        total += if meta.is_dir() {
            disk_bytes(&entry.path())
        } else {
            meta.blocks() * 512
        };
    }
    total
}

fn stripped_size(binary: &Path) -> Option<u64> {
    let out = std::env::temp_dir().join(format!("kiri-bench-strip-{}", std::process::id()));
    let ok = Command::new("strip")
        .arg("-o")
        .arg(&out)
        .arg(binary)
        .status()
        .ok()?
        .success();
    let size = ok
        .then(|| fs::metadata(&out).ok().map(|m| m.len()))
        .flatten();
    let _ = fs::remove_file(&out);
    size
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"))
}

/// The run's folder: removed at the end unless `BENCH_KEEP` is set (then its path is printed).
enum Holder {
    Temp(tempfile::TempDir),
    Kept(PathBuf),
}

impl Holder {
    fn path(&self) -> &Path {
        match self {
            Holder::Temp(t) => t.path(),
            Holder::Kept(p) => p,
        }
    }
}

// ---------------------------------------------------------------------------------------

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let full = args.iter().any(|a| a == "--bench");
    let only: Vec<&String> = args.iter().filter(|a| !a.starts_with("--")).collect();
    let wanted =
        |section: &str| only.is_empty() || only.iter().any(|o| section.contains(o.as_str()));
    let scale = if full {
        Scale {
            full,
            throughput: 200_000,
            latency_secs: 10.0,
            store: 1_000_000,
        }
    } else {
        Scale {
            full,
            throughput: 2_000,
            latency_secs: 0.3,
            store: 5_000,
        }
    };
    let latency_count = (RATE as f64 * scale.latency_secs) as u64;
    let dir = tempfile::tempdir().unwrap();
    let dir = if std::env::var_os("BENCH_KEEP").is_some() {
        eprintln!("keeping {}", dir.path().display());
        Holder::Kept(dir.keep())
    } else {
        Holder::Temp(dir)
    };
    let wasm = dir.path().join("trivial.wasm");
    fs::write(&wasm, wat::parse_str(TRIVIAL_WAT).unwrap()).unwrap();
    let mut report: BTreeMap<&str, Value> = BTreeMap::new();
    report.insert("mode", json!(if scale.full { "full" } else { "smoke" }));
    let mut rows = Vec::new();

    // One Mosquitto is the sensors' broker and the cloud for every pipeline run.
    let broker = Mosquitto::start(&dir.path().join("mosquitto"));
    let port = broker.port;
    let one_topic = vec!["bench/0/s".to_string()];
    let sixteen: Vec<String> = (0..16).map(|i| format!("bench/{i}/s")).collect();
    let load = |count, rate, qos, topics: &Vec<String>| Load {
        count,
        rate,
        qos,
        topics: topics.clone(),
        payload: PAYLOAD,
    };

    if wanted("throughput") || wanted("latency") {
        eprintln!("Mosquitto alone, then Kiri with one trivial function:");
        let alone = Target {
            name: "mosquitto",
            port,
            filter: "bench/#",
            wrapping: Wrapping::Raw,
            pid: None,
            publish_port: None,
            settle: false,
        };
        let max0 = load(scale.throughput, None, QoS::AtMostOnce, &one_topic);
        let max1 = load(scale.throughput, None, QoS::AtLeastOnce, &one_topic);
        let paced = load(latency_count, Some(RATE), QoS::AtLeastOnce, &one_topic);
        let low_count = (RATE_LOW as f64 * scale.latency_secs) as u64;
        let low = load(low_count, Some(RATE_LOW), QoS::AtLeastOnce, &one_topic);
        rows.push(run(&alone, "max qos0", &max0));
        rows.push(run(&alone, "max qos1", &max1));
        rows.push(run(&alone, "10k/s qos1", &paced));
        rows.push(run(&alone, "2k/s qos1", &low));
        for fsync in [true, false] {
            let setup = KiriSetup {
                local: port,
                cloud_url: format!("mqtt://127.0.0.1:{port}"),
                triggers: &["bench/0/#".to_string()],
                fsync,
                cloud_extra: String::new(),
                outbox_extra: String::new(),
                embedded: None,
                client_id: None,
            };
            let kiri = setup.start(&dir.path().join(format!("kiri-fsync-{fsync}")), &wasm);
            let pid = kiri.pid().unwrap();
            let name = if fsync { "kiri" } else { "kiri-nofsync" };
            if fsync {
                report.insert("idle_rss_kb_1fn", json!(idle_rss(pid)));
            }
            let kiri_target = Target::forwarding(name, port, Wrapping::Envelope, pid);
            if fsync {
                rows.push(run(&kiri_target, "max qos0", &max0));
            }
            rows.push(run(&kiri_target, "max qos1", &max1));
            rows.push(run(&kiri_target, "10k/s qos1", &paced));
            rows.push(run(&kiri_target, "2k/s qos1", &low));
        }
    }

    if wanted("functions16") {
        eprintln!("16 functions on 16 topics:");
        let setup = KiriSetup {
            local: port,
            cloud_url: format!("mqtt://127.0.0.1:{port}"),
            triggers: &(0..16).map(|i| format!("bench/{i}/#")).collect::<Vec<_>>(),
            fsync: true,
            cloud_extra: String::new(),
            outbox_extra: String::new(),
            embedded: None,
            client_id: None,
        };
        let kiri = setup.start(&dir.path().join("kiri-16"), &wasm);
        let pid = kiri.pid().unwrap();
        report.insert("idle_rss_kb_16fn", json!(idle_rss(pid)));
        let t = Target::forwarding("kiri", port, Wrapping::Envelope, pid);
        // 10,000/s first: the memory a gateway holds at that rate, not what the maximum
        // rate left allocated.
        rows.push(run(
            &t,
            "16 fns 10k/s qos1",
            &load(latency_count, Some(RATE), QoS::AtLeastOnce, &sixteen),
        ));
        rows.push(run(
            &t,
            "16 fns max qos1",
            &load(scale.throughput, None, QoS::AtLeastOnce, &sixteen),
        ));
    }

    if wanted("node-red") {
        eprintln!("Node-RED, the same flow:");
        for (functions, topics) in [(1, &one_topic), (16, &sixteen)] {
            for qos in [QoS::AtMostOnce, QoS::AtLeastOnce] {
                if functions == 16 && qos == QoS::AtMostOnce {
                    continue;
                }
                let nr_dir = dir
                    .path()
                    .join(format!("node-red-{functions}-{}", qos as u8));
                let nr = NodeRed::start(&nr_dir, port, port, qos as u8, functions);
                let pid = nr.child.id();
                if functions == 1 && qos == QoS::AtLeastOnce {
                    report.insert("node_red_idle_rss_kb", json!(idle_rss(pid)));
                }
                let t = Target::forwarding("node-red", port, Wrapping::Raw, pid);
                let prefix = if functions == 16 { "16 fns " } else { "" };
                let q = qos as u8;
                rows.push(run(
                    &t,
                    &format!("{prefix}max qos{q}"),
                    &load(scale.throughput, None, qos, topics),
                ));
                if qos == QoS::AtLeastOnce {
                    rows.push(run(
                        &t,
                        &format!("{prefix}10k/s qos1"),
                        &load(latency_count, Some(RATE), qos, topics),
                    ));
                }
            }
        }
    }
    if wanted("efficiency") {
        eprintln!("Efficiency on the durable path (QoS 1 in, fsync), per event:");
        let (eff, idle) = efficiency(dir.path(), &wasm, &broker, &scale);
        report.insert("efficiency_idle", idle);
        report.insert("efficiency", Value::Array(eff));
    }
    // Speed is never asserted, delivery is: Kiri loses nothing in any of these runs.
    let lost: Vec<String> = rows
        .iter()
        .chain(
            report
                .get("efficiency")
                .and_then(Value::as_array)
                .into_iter()
                .flatten(),
        )
        .filter(|r| r["system"].as_str().is_some_and(|s| s.starts_with("kiri")))
        .filter(|r| r["lost"].as_u64() != Some(0))
        .map(|r| format!("{} {}: {} lost", r["system"], r["scenario"], r["lost"]))
        .collect();
    // (Measuring, the report shows any loss; the smoke run in `make test` fails on it.)
    assert!(
        scale.full || lost.is_empty(),
        "Kiri lost messages: {lost:?}"
    );
    report.insert("runs", Value::Array(rows));

    if wanted("store") {
        eprintln!("Store and forward, the cloud over TLS:");
        report.insert("store", store_and_forward(dir.path(), &wasm, port, &scale));
    }

    if wanted("commit") {
        eprintln!("Group commits: the outbox on sled against a plain append-only log:");
        report.insert("commit_floor", commit_floor(dir.path(), &scale));
    }

    if wanted("footprint") {
        let kiri_bin = Path::new(env!("CARGO_BIN_EXE_kiri"));
        let aarch64 = target_dir().join("aarch64-unknown-linux-musl/device/kiri");
        report.insert(
            "binary",
            json!({
                "x86_64_release_stripped": stripped_size(kiri_bin),
                "aarch64_musl_device": fs::metadata(&aarch64).ok().map(|m| m.len()),
            }),
        );
    }
    drop(broker);

    let out = target_dir().join("bench");
    fs::create_dir_all(&out).unwrap();
    let file = out.join(if scale.full {
        "pipeline.json"
    } else {
        "pipeline-smoke.json"
    });
    fs::write(&file, serde_json::to_string_pretty(&report).unwrap()).unwrap();
    eprintln!("wrote {}", file.display());
}

/// CPU time and bytes written per event on the durable path (QoS 1 in, fsync, the trivial
/// function) at 200/s, 2,000/s and the maximum rate, with the embedded broker and with
/// Mosquitto as the site broker, then the embedded broker's rows with the gateway pinned to
/// one CPU (`taskset`). Also each gateway's idle memory, anonymous and file-backed apart.
fn efficiency(dir: &Path, wasm: &Path, broker: &Mosquitto, scale: &Scale) -> (Vec<Value>, Value) {
    let cloud = broker.port;
    let (low_secs, mid_secs, max_count) = if scale.full {
        (20, 10, 100_000)
    } else {
        (1, 1, 2_000)
    };
    let loads = [
        (Some(200), 200 * low_secs),
        (Some(2_000), 2_000 * mid_secs),
        (None, max_count),
    ];
    let scenario = |rate: Option<u64>| match rate {
        Some(r) => format!("{r}/s qos1"),
        None => "max qos1".into(),
    };
    let load = |rate, count| Load {
        count,
        rate,
        qos: QoS::AtLeastOnce,
        topics: vec!["bench/0/s".into()],
        payload: PAYLOAD,
    };
    let mut rows = Vec::new();
    let mut idle = serde_json::Map::new();
    // The yardstick: Mosquitto's own CPU time per message on the same loads, publisher to
    // subscriber (QoS 1 in and out, no persistence).
    let alone = Target {
        name: "mosquitto alone",
        port: cloud,
        filter: "bench/#",
        wrapping: Wrapping::Raw,
        pid: broker.pid(),
        publish_port: None,
        settle: true,
    };
    for (rate, count) in loads {
        let mut row = run(&alone, &scenario(rate), &load(rate, count));
        row["site"] = json!("-");
        rows.push(row);
    }
    // (site broker, pinned to one CPU, commit window, async runtime threads)
    for (site, pinned, window, workers) in [
        ("embedded", false, None, None),
        ("embedded", false, Some(0), None),
        ("external", false, None, None),
        ("external", false, Some(20), None),
        ("embedded", true, None, None),
        ("embedded", false, None, Some(2)),
    ] {
        let embedded = (site == "embedded").then(free_port);
        let setup = KiriSetup {
            local: cloud,
            cloud_url: format!("mqtt://127.0.0.1:{cloud}"),
            triggers: &["bench/0/#".to_string()],
            fsync: true,
            cloud_extra: String::new(),
            outbox_extra: String::new(),
            embedded,
            client_id: Some(format!(
                "kiri-eff-{site}-{pinned}-{}-{}",
                window.unwrap_or(99),
                workers.unwrap_or(0)
            )),
        };
        let name = format!(
            "kiri {site}{}{}{}",
            if pinned { ", 1 CPU" } else { "" },
            match window {
                Some(ms) => format!(", window {ms} ms"),
                None => String::new(),
            },
            match workers {
                Some(1) => ", 1 worker".to_string(),
                Some(n) => format!(", {n} workers"),
                None => String::new(),
            }
        );
        let kiri = setup.start_with(
            &dir.join(format!("kiri-eff-{site}-{pinned}-{window:?}-{workers:?}")),
            wasm,
            window
                .map(|ms| format!("commit_window_ms = {ms}\n"))
                .unwrap_or_default()
                + &workers
                    .map(|n| format!("worker_threads = {n}\n"))
                    .unwrap_or_default(),
        );
        let pid = kiri.pid().unwrap();
        if pinned {
            // Every thread of the gateway on CPU 0; threads it starts later inherit it.
            let ok = Command::new("taskset")
                .args(["-a", "-p", "-c", "0", &pid.to_string()])
                .stdout(Stdio::null())
                .status()
                .expect("taskset (util-linux)")
                .success();
            assert!(ok, "taskset failed");
        } else {
            thread::sleep(Duration::from_secs(2));
            idle.insert(
                name.clone(),
                json!({
                    "rss_kb": proc_kb(pid, "VmRSS"),
                    "anon_kb": proc_kb(pid, "RssAnon"),
                    "file_kb": proc_kb(pid, "RssFile"),
                }),
            );
        }
        let mut t = Target::forwarding(&name, cloud, Wrapping::Envelope, pid);
        t.publish_port = embedded;
        t.settle = true;
        for (rate, count) in loads {
            let mut row = run(&t, &scenario(rate), &load(rate, count));
            row["site"] = json!(site);
            row["pinned"] = json!(pinned);
            row["window_ms"] = json!(window);
            row["worker_threads"] = json!(workers);
            rows.push(row);
        }
    }
    idle.insert("example configuration".into(), example_idle(dir, cloud));
    (rows, Value::Object(idle))
}

/// Idle memory of the gateway with `kiri.example.toml` as shipped (embedded broker, the
/// example functions), on free ports and a data directory of its own.
fn example_idle(dir: &Path, cloud: u16) -> Value {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let example = fs::read_to_string(root.join("kiri.example.toml")).expect("kiri.example.toml");
    let data = dir.join("kiri-example").join("data");
    let toml = example
        .replace(
            "module = \"target/",
            &format!("module = \"{}/", target_dir().display()),
        )
        .replace(
            "listen = \"127.0.0.1:1883\"",
            &format!("listen = \"127.0.0.1:{}\"", free_port()),
        )
        .replace(
            "url = \"mqtt://127.0.0.1:1884\"",
            &format!("url = \"mqtt://127.0.0.1:{cloud}\""),
        )
        .replace(
            "data_dir = \"kiri-data\"",
            &format!("data_dir = \"{}\"", data.display()),
        );
    let kiri = Kiri::start(
        &dir.join("kiri-example"),
        &toml,
        &[("KIRI_LOG", "warn".into())],
    );
    let pid = kiri.pid().unwrap();
    thread::sleep(Duration::from_secs(3));
    json!({
        "rss_kb": proc_kb(pid, "VmRSS"),
        "anon_kb": proc_kb(pid, "RssAnon"),
        "file_kb": proc_kb(pid, "RssFile"),
    })
}

/// Buffers `scale.store` results of 256 B with the cloud down, measures the store on disk and
/// the gateway's memory, then starts the cloud (TLS) and measures the drain.
fn store_and_forward(dir: &Path, wasm: &Path, local: u16, scale: &Scale) -> Value {
    let pki = Pki::new(dir, "cloud-ca");
    let (cert, key) = pki.issue("cloud", &["localhost"], false);
    let tls_port = free_port();
    let setup = KiriSetup {
        local,
        cloud_url: format!("mqtts://localhost:{tls_port}"),
        triggers: &["store/#".to_string()],
        fsync: true,
        cloud_extra: format!("ca_file = \"{}\"\ninflight = 64", pki.ca().display()),
        outbox_extra: "max_records = 2000000\nmax_bytes = 4294967296".into(),
        embedded: None,
        // Not the sessions of the earlier gateways: the broker queued for them what the
        // Node-RED runs published since.
        client_id: Some("kiri-store".into()),
    };
    let kiri_dir = dir.join("kiri-store");
    let kiri = setup.start(&kiri_dir, wasm);
    let pid = kiri.pid().unwrap();
    let load = Load {
        count: scale.store,
        rate: None,
        qos: QoS::AtLeastOnce,
        topics: vec!["store/0/s".into()],
        payload: STORE_PAYLOAD,
    };
    let t0 = Instant::now();
    let _ = publish(local, &load);
    wait_until(
        "every input in the outbox",
        Duration::from_secs(1800),
        || kiri.metric("kiri_outbox_records") >= scale.store as f64,
    );
    let buffer_secs = t0.elapsed().as_secs_f64();
    thread::sleep(Duration::from_secs(2));
    let disk = disk_bytes(&kiri_dir.join("data"));
    let raw = scale.store * STORE_PAYLOAD as u64;
    let rss = proc_kb(pid, "VmRSS");
    let peak = proc_kb(pid, "VmHWM");
    eprintln!(
        "  buffered {} results in {buffer_secs:.1} s ({:.0}/s): {:.1} MB on disk, {:.2}x raw; RSS {:.1} MB (peak {:.1} MB)",
        scale.store,
        scale.store as f64 / buffer_secs,
        disk as f64 / 1e6,
        disk as f64 / raw as f64,
        rss as f64 / 1024.0,
        peak as f64 / 1024.0
    );

    // Kiri frozen until the subscriber's subscription is in place: a reconnect attempt in
    // between would deliver the first results to nobody.
    let signal = |sig: &str| {
        let ok = Command::new("kill")
            .args([sig, &pid.to_string()])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill {sig} {pid}");
    };
    signal("-STOP");
    let cloud = Mosquitto::start_with(
        &dir.join("cloud"),
        format!(
            "listener {tls_port} 127.0.0.1\nallow_anonymous true\ncafile {}\ncertfile {}\nkeyfile {}\n",
            pki.ca().display(),
            cert.display(),
            key.display()
        ),
    );
    let sub = Subscriber::start(cloud.port, "kiri/#", Wrapping::Envelope);
    signal("-CONT");
    reset_peak(pid);
    let cpu0 = cpu_secs(pid);
    sub.wait(scale.store, Duration::from_secs(30));
    let cpu = cpu_secs(pid) - cpu0;
    let drain_peak = proc_kb(pid, "VmHWM");
    let a = sub.finish();
    assert!(
        scale.full || a.distinct == scale.store,
        "{} of {} buffered results delivered",
        a.distinct,
        scale.store
    );
    let secs = (a.last_ns - a.first_ns.unwrap_or(0)) as f64 / 1e9;
    let rate = a.distinct as f64 / secs.max(1e-9);
    eprintln!(
        "  drained {} of {} over TLS in {secs:.1} s: {rate:.0} msg/s, {} duplicates, cpu {:.2} s/10k, peak RSS {:.1} MB",
        a.distinct,
        scale.store,
        a.duplicates,
        cpu * 10_000.0 / a.distinct.max(1) as f64,
        drain_peak as f64 / 1024.0
    );
    json!({
        "records": scale.store,
        "payload_bytes": STORE_PAYLOAD,
        "buffer_secs": buffer_secs,
        "disk_bytes": disk,
        "raw_bytes": raw,
        "disk_ratio": disk as f64 / raw as f64,
        "rss_kb": rss,
        "peak_rss_kb": peak,
        "drained": a.distinct,
        "duplicates": a.duplicates,
        "drain_secs": secs,
        "drain_per_sec": rate,
        "drain_cpu_secs_per_10k": cpu * 10_000.0 / a.distinct.max(1) as f64,
        "drain_peak_rss_kb": drain_peak,
    })
}

/// This process's CPU time (every thread: sled's included), seconds.
fn own_cpu_secs() -> f64 {
    let mut u = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage fills the struct it is given.
    let u = unsafe {
        libc::getrusage(libc::RUSAGE_SELF, u.as_mut_ptr());
        u.assume_init()
    };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(u.ru_utime) + secs(u.ru_stime)
}

/// The floor under a group commit: `commits` groups of 1, 4 and 64 results (the envelope of a
/// 64-byte reading, 170 bytes), each group appended then made durable, through Kiri's outbox
/// as the gateway opens it (sled, its flush and the `fsync` after it) and through a plain
/// append-only file (each result framed with its length and CRC-32, one `write` and one
/// `fdatasync` per group: what an outbox of its own on a segment log would do per commit).
/// CPU time of the whole process and bytes it caused to be written (`/proc/self/io`).
fn commit_floor(dir: &Path, scale: &Scale) -> Value {
    use kiri::outbox::{NewRecord, Outbox, Priority, RecordId};
    use std::io::Write;
    let commits: u64 = if scale.full { 2_000 } else { 20 };
    let result = NewRecord {
        function: "relay0".into(),
        topic: format!("{PREFIX}/relay0/bench/0/s"),
        payload: payload(7, 170),
        created_ms: kiri::now_ms(),
    };
    let own_written = || write_bytes(std::process::id());
    let mut rows = Vec::new();
    for group in [1usize, 4, 64] {
        for store in ["sled outbox", "append-only file"] {
            let at = dir.join(format!("commit-{group}-{}", store.replace(' ', "-")));
            let records = vec![result.clone(); group];
            let (cpu0, bytes0, start);
            match store {
                "sled outbox" => {
                    let g = kiri::Config::default().gateway;
                    let st = kiri::store::Store::open(&at, g.cache_bytes, g.flush_every_ms)
                        .expect("store");
                    let outbox = Outbox::open(&st.db, kiri::Config::default().outbox)
                        .expect("outbox")
                        .guard_disk(&at)
                        .fsync_log(&st.log_path)
                        .expect("sled's log");
                    thread::sleep(Duration::from_millis(200));
                    (cpu0, bytes0, start) = (own_cpu_secs(), own_written(), Instant::now());
                    for _ in 0..commits {
                        let seqs = outbox.append(&records).expect("append");
                        outbox.flush().expect("commit");
                        // The uplink's deletes, as the gateway makes them (they ride on the
                        // next commit's flush).
                        for seq in seqs {
                            outbox
                                .ack(&RecordId::new(Priority::Normal, "relay0", seq))
                                .expect("ack");
                        }
                    }
                }
                _ => {
                    fs::create_dir_all(&at).unwrap();
                    let mut log = fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(at.join("segment"))
                        .expect("segment");
                    let mut buf = Vec::new();
                    (cpu0, bytes0, start) = (own_cpu_secs(), own_written(), Instant::now());
                    for _ in 0..commits {
                        buf.clear();
                        for r in &records {
                            let body = [r.topic.as_bytes(), &r.payload].concat();
                            buf.extend_from_slice(&(body.len() as u32).to_le_bytes());
                            buf.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
                            buf.extend_from_slice(&body);
                        }
                        log.write_all(&buf).expect("append");
                        log.sync_data().expect("fdatasync");
                    }
                }
            }
            let secs = start.elapsed().as_secs_f64();
            let cpu = own_cpu_secs() - cpu0;
            let written = own_written().saturating_sub(bytes0);
            let n = commits as f64;
            eprintln!(
                "  {store:<18} groups of {group:>2}: {:>6.1} us CPU, {:>6.0} B written, {:>6.1} us per commit",
                cpu / n * 1e6,
                written as f64 / n,
                secs / n * 1e6
            );
            rows.push(json!({
                "store": store,
                "group": group,
                "commits": commits,
                "cpu_us_per_commit": cpu / n * 1e6,
                "written_per_commit": written as f64 / n,
                "wall_us_per_commit": secs / n * 1e6,
            }));
        }
    }
    Value::Array(rows)
}

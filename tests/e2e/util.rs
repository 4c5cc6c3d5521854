//! Shared helpers for the end-to-end tests: free ports, Mosquitto as a child process, the
//! `kiri` binary as a child process, MQTT publishers and a cloud-side subscriber.

use std::collections::BTreeSet;
use std::fs;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use kiri::uplink::Envelope;
use kiri_reading::Reading;
use rumqttc::{Client, Event, MqttOptions, Packet, QoS};

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Polls `f` every 50 ms until it returns true or `timeout` passes.
pub fn wait_until(what: &str, timeout: Duration, f: impl FnMut() -> bool) {
    if !poll_until(timeout, f) {
        panic!("timed out after {timeout:?} waiting for: {what}");
    }
}

/// Polls `f` every 50 ms; true if it returned true before `timeout`.
pub fn poll_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        thread::sleep(Duration::from_millis(50));
    }
    false
}

fn wait_for_port(port: u16, timeout: Duration) {
    wait_until(
        &format!("port {port} to accept connections"),
        timeout,
        || TcpStream::connect(("127.0.0.1", port)).is_ok(),
    );
}

/// The cargo target directory: `CARGO_TARGET_DIR`, or the workspace's `target`.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"))
}

/// `relative` under the cargo target directory, which `how` builds; a clear failure if absent.
pub fn built(relative: &str, how: &str) -> PathBuf {
    let path = target_dir().join(relative);
    assert!(
        path.exists(),
        "{} is missing: build it first ({how}, or `make test`)",
        path.display()
    );
    path
}

/// The compiled example function `name` (built by `make functions`).
pub fn function_wasm(name: &str) -> PathBuf {
    built(
        &format!("wasm32-unknown-unknown/release/kiri_fn_{name}.wasm"),
        "`make functions`",
    )
}

/// A module (ABI v1, in WAT) that emits each event's payload unchanged on `topic`.
pub fn emitter_wasm(topic: &str) -> Vec<u8> {
    let wat = format!(
        r#"(module
      (import "kiri" "emit" (func $emit (param i32 i32 i32 i32) (result i32)))
      (memory (export "memory") 1)
      (data (i32.const 0) "{topic}")
      (func (export "kiri_abi_version") (result i32) i32.const 1)
      (func (export "kiri_alloc") (param i32) (result i32) i32.const 1024)
      (func (export "kiri_on_event") (param i32 i32 i32 i32 i64) (result i32)
        (drop (call $emit (i32.const 0) (i32.const {len}) (local.get 2) (local.get 3)))
        i32.const 0))"#,
        len = topic.len()
    );
    wat::parse_str(wat).expect("the emitter's WAT")
}

/// The C example function (built by `make functions-c`).
pub fn c_function_wasm(name: &str) -> PathBuf {
    built(&format!("wasm32-c/{name}.wasm"), "`make functions-c`")
}

fn mosquitto_bin() -> PathBuf {
    for p in [
        "/usr/sbin/mosquitto",
        "/usr/bin/mosquitto",
        "/usr/local/sbin/mosquitto",
    ] {
        if Path::new(p).exists() {
            return p.into();
        }
    }
    panic!("mosquitto is not installed: `make test` installs it (as root), or `apt-get install mosquitto`");
}

/// Mosquitto on 127.0.0.1:`port`, with persistence in its own folder so that queued
/// messages for persistent sessions survive a restart.
pub struct Mosquitto {
    pub port: u16,
    dir: PathBuf,
    /// More configuration (listeners with their own settings), after the plain listener.
    extra: String,
    child: Option<Child>,
}

impl Mosquitto {
    pub fn start(dir: &Path) -> Mosquitto {
        Mosquitto::start_with(dir, String::new())
    }

    /// Starts with `extra` lines added to the configuration: further `listener` blocks, each
    /// with its own settings (`per_listener_settings` is on). The plain listener on `port`
    /// stays anonymous.
    pub fn start_with(dir: &Path, extra: String) -> Mosquitto {
        let mut m = Mosquitto {
            port: free_port(),
            dir: dir.to_path_buf(),
            extra,
            child: None,
        };
        fs::create_dir_all(&m.dir).unwrap();
        m.restart();
        m
    }

    /// Starts it (again) on the same port with the same persistence folder.
    /// The process id, while it runs (the pipeline benchmark reads its CPU time).
    #[allow(dead_code)]
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "already running");
        let ports: Vec<u16> = self
            .extra
            .lines()
            .filter_map(|l| l.strip_prefix("listener ")?.split(' ').next()?.parse().ok())
            .collect();
        let conf = self.dir.join("mosquitto.conf");
        fs::write(
            &conf,
            format!(
                "per_listener_settings true\n{user}persistence true\n\
                 persistence_location {dir}/\nmax_queued_messages 0\nmax_inflight_messages 100\nset_tcp_nodelay true\n\
                 log_dest file {dir}/mosquitto.log\nlistener {port} 127.0.0.1\nallow_anonymous true\n{extra}\n",
                port = self.port,
                dir = self.dir.display(),
                extra = self.extra,
                // As root, Mosquitto switches to user `mosquitto`, which cannot write the
                // persistence file into our private temp dir.
                user = if is_root() { "user root\n" } else { "" },
            ),
        )
        .unwrap();
        let child = Command::new(mosquitto_bin())
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start mosquitto");
        self.child = Some(child);
        for port in std::iter::once(self.port).chain(ports) {
            wait_for_port(port, Duration::from_secs(10));
        }
    }

    /// Stops it cleanly (SIGTERM, so it saves its persistence file).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            signal(&c, "TERM");
            let _ = c.wait();
        }
    }

    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    /// SIGHUP: Mosquitto rereads its ACL and password files.
    pub fn reload(&self) {
        assert!(signal(self.child.as_ref().expect("running"), "HUP"));
    }

    /// SIGSTOP: the broker hangs with every connection open (the kernel still accepts new
    /// ones and buffers what clients send) until `thaw`.
    pub fn freeze(&self) {
        assert!(signal(self.child.as_ref().expect("running"), "STOP"));
    }

    /// SIGCONT after `freeze`.
    pub fn thaw(&self) {
        assert!(signal(self.child.as_ref().expect("running"), "CONT"));
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Whether the tests run as root (CI does).
pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// Sends `sig` to `child`; whether it was delivered.
fn signal(child: &Child, sig: &str) -> bool {
    Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(child.id().to_string())
        .status()
        .is_ok_and(|s| s.success())
}

/// The `kiri` binary, run with a config file and environment overrides.
pub struct Kiri {
    pub metrics_port: u16,
    config: PathBuf,
    env: Vec<(String, String)>,
    log: PathBuf,
    child: Option<Child>,
    /// The open-file limit it runs under (soft and hard), if not the test's own.
    open_files: Option<u64>,
    /// More arguments of `kiri run`.
    run_args: Vec<String>,
    /// The command that runs kiri, when not the binary under test (a device build under
    /// QEMU's user mode: `qemu-arm -L ... path/to/kiri`).
    program: Option<Vec<String>>,
}

impl Kiri {
    pub fn start(dir: &Path, config_toml: &str, env: &[(&str, String)]) -> Kiri {
        Kiri::start_with_open_files(dir, config_toml, env, None)
    }

    /// [`Kiri::start`] as `kiri run --watch`.
    pub fn start_watching(dir: &Path, config_toml: &str) -> Kiri {
        let mut k = Kiri::prepare(dir, config_toml, &[], None);
        k.run_args.push("--watch".into());
        k.restart();
        k
    }

    /// [`Kiri::start`] with more arguments to `kiri run`.
    pub fn start_with_args(
        dir: &Path,
        config_toml: &str,
        env: &[(&str, String)],
        args: &[&str],
    ) -> Kiri {
        let mut k = Kiri::prepare(dir, config_toml, env, None);
        k.run_args.extend(args.iter().map(|a| a.to_string()));
        k.restart();
        k
    }

    /// [`Kiri::start`] under `prlimit --nofile=N:N`, as systemd's default `LimitNOFILE` does.
    pub fn start_with_open_files(
        dir: &Path,
        config_toml: &str,
        env: &[(&str, String)],
        open_files: Option<u64>,
    ) -> Kiri {
        let mut k = Kiri::prepare(dir, config_toml, env, open_files);
        k.restart();
        k
    }

    fn prepare(
        dir: &Path,
        config_toml: &str,
        env: &[(&str, String)],
        open_files: Option<u64>,
    ) -> Kiri {
        fs::create_dir_all(dir).unwrap();
        let config = dir.join("kiri.toml");
        fs::write(&config, config_toml).unwrap();
        let metrics_port = free_port();
        let mut env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        env.push((
            "KIRI_DASHBOARD_LISTEN".into(),
            format!("127.0.0.1:{metrics_port}"),
        ));
        env.push((
            "KIRI_GATEWAY_DATA_DIR".into(),
            dir.join("data").display().to_string(),
        ));
        Kiri {
            metrics_port,
            config,
            env,
            log: dir.join("kiri.log"),
            child: None,
            open_files,
            run_args: Vec::new(),
            program: None,
        }
    }

    /// [`Kiri::start`] with `program` (a command and its first arguments) in place of the
    /// binary under test: a device build under QEMU's user mode.
    pub fn start_program(
        dir: &Path,
        config_toml: &str,
        env: &[(&str, String)],
        program: &[&str],
    ) -> Kiri {
        let mut k = Kiri::prepare(dir, config_toml, env, None);
        k.program = Some(program.iter().map(|a| a.to_string()).collect());
        k.restart();
        k
    }

    pub fn restart(&mut self) {
        self.spawn();
        wait_until(
            "kiri to subscribe to its triggers",
            Duration::from_secs(if self.program.is_some() { 60 } else { 20 }),
            || {
                self.assert_running();
                self.metric("kiri_ingest_subscribed") == 1.0
            },
        );
    }

    /// Starts the process and returns at once (it may still be opening its store).
    pub fn spawn(&mut self) {
        assert!(self.child.is_none(), "already running");
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let kiri = env!("CARGO_BIN_EXE_kiri");
        let mut command = match (&self.program, self.open_files) {
            (Some(p), _) => {
                let mut c = Command::new(&p[0]);
                c.args(&p[1..]);
                c
            }
            (None, None) => Command::new(kiri),
            (None, Some(n)) => {
                // util-linux's prlimit sets the limit on itself, then runs kiri in its place.
                let mut c = Command::new("prlimit");
                c.arg(format!("--nofile={n}:{n}")).arg("--").arg(kiri);
                c
            }
        };
        let child = command
            .arg("run")
            .arg("--config")
            .arg(&self.config)
            .args(&self.run_args)
            .env("KIRI_LOG", "info,kiri=debug")
            .envs(self.env.iter().cloned())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start kiri");
        self.child = Some(child);
    }

    /// The request with the dashboard token, when the test set one (reads may need it).
    fn authorized<B>(&self, req: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
        match self.env.iter().find(|(k, _)| k == "KIRI_DASHBOARD_TOKEN") {
            Some((_, t)) => req.header("Authorization", &format!("Bearer {t}")),
            None => req,
        }
    }

    /// Replaces the configuration file (takes effect at the next restart).
    pub fn set_config(&mut self, config_toml: &str) {
        fs::write(&self.config, config_toml).unwrap();
    }

    /// Sets an environment variable for the next restart.
    pub fn set_env(&mut self, key: &str, value: &str) {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.into(), value.into()));
    }

    /// `GET /api/v1/status` as JSON.
    pub fn status(&self) -> serde_json::Value {
        let url = format!("http://127.0.0.1:{}/api/v1/status", self.metrics_port);
        let mut resp = self
            .authorized(ureq::get(&url))
            .call()
            .expect("GET /api/v1/status");
        resp.body_mut().read_json().expect("status is JSON")
    }

    /// `GET path` as JSON, whatever the status code.
    pub fn get_json(&self, path: &str) -> serde_json::Value {
        let url = format!("http://127.0.0.1:{}{path}", self.metrics_port);
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let mut resp = self
            .authorized(agent.get(&url))
            .call()
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        resp.body_mut().read_json().expect("JSON")
    }

    /// Sends SIGHUP (`systemctl reload kiri`): the gateway reloads its configuration.
    pub fn hangup(&self) {
        let pid = self.pid().expect("kiri runs").to_string();
        let sent = Command::new("kill").args(["-HUP", &pid]).status().unwrap();
        assert!(sent.success(), "kill -HUP {pid}");
    }

    /// The process id, while it runs (the pipeline benchmark reads its CPU time and memory).
    #[allow(dead_code)]
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Panics with the log if the process has exited.
    pub fn assert_running(&mut self) {
        if let Some(c) = self.child.as_mut() {
            if let Ok(Some(status)) = c.try_wait() {
                panic!("kiri exited ({status}); log:\n{}", self.log_text());
            }
        }
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits up to `timeout` for the process to exit by itself; its status, or `None` if it
    /// still runs.
    #[allow(dead_code)]
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            let c = self.child.as_mut()?;
            if let Ok(Some(status)) = c.try_wait() {
                self.child = None;
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// SIGTERM, and the gateway must exit cleanly within 10 s.
    pub fn stop(&mut self) {
        let mut c = self.child.take().expect("running");
        signal(&c, "TERM");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = c.try_wait().unwrap() {
                assert!(
                    status.success(),
                    "kiri exited with {status}; log:\n{}",
                    self.log_text()
                );
                return;
            }
            assert!(
                Instant::now() < deadline,
                "kiri did not stop within 10 s of SIGTERM"
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL: no shutdown code runs.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    /// A crash whose duplicates are the gateway's doing alone: SIGSTOP freezes it where it
    /// is, the brokers get 300 ms to read what it already sent, then SIGKILL. Killed at once
    /// with input unread, it would reset its connections, and Mosquitto ignores the packets a
    /// reset connection still had waiting, its acknowledgements among them: more inputs
    /// redelivered, as many as the broker was slow to read.
    pub fn freeze_and_kill(&mut self) {
        if let Some(c) = &self.child {
            signal(c, "STOP");
            thread::sleep(Duration::from_millis(300));
        }
        self.kill9();
    }

    /// `POST /invoke/<function>` with `body`: the status and response body.
    pub fn invoke(&self, function: &str, token: Option<&str>, body: &[u8]) -> (u16, Vec<u8>) {
        let url = format!("http://127.0.0.1:{}/invoke/{function}", self.metrics_port);
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let mut req = agent.post(&url);
        if let Some(t) = token {
            req = req.header("Authorization", &format!("Bearer {t}"));
        }
        let mut resp = req.send(body).expect("HTTP request");
        let status = resp.status().as_u16();
        (status, resp.body_mut().read_to_vec().unwrap_or_default())
    }

    /// `GET` a path on the HTTP port: the status.
    pub fn get_status(&self, path: &str) -> u16 {
        let url = format!("http://127.0.0.1:{}{path}", self.metrics_port);
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        agent
            .get(&url)
            .call()
            .map(|r| r.status().as_u16())
            .unwrap_or(0)
    }

    /// Runs `kiri <args>` against this gateway's HTTP port with `token`: stdout, or a panic.
    pub fn cli(&self, token: &str, args: &[&str]) -> String {
        let out = Command::new(env!("CARGO_BIN_EXE_kiri"))
            .args(args)
            .env(
                "KIRI_URL",
                format!("http://127.0.0.1:{}", self.metrics_port),
            )
            .env("KIRI_DASHBOARD_TOKEN", token)
            .output()
            .expect("run kiri");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "kiri {args:?} failed: {}{}",
            stdout,
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    }

    /// `/metrics` as it reads now.
    pub fn metrics_text(&self) -> String {
        let url = format!("http://127.0.0.1:{}/metrics", self.metrics_port);
        let mut resp = self
            .authorized(ureq::get(&url))
            .call()
            .expect("GET /metrics");
        resp.body_mut().read_to_string().expect("/metrics is text")
    }

    /// One value from `/metrics` (the sum over all label sets of the metric whose line
    /// starts with `prefix`), or 0 if absent.
    pub fn metric(&self, prefix: &str) -> f64 {
        let url = format!("http://127.0.0.1:{}/metrics", self.metrics_port);
        let Ok(mut resp) = self.authorized(ureq::get(&url)).call() else {
            return 0.0;
        };
        let body = resp.body_mut().read_to_string().unwrap_or_default();
        body.lines()
            .filter(|l| l.starts_with(prefix))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}

impl Drop for Kiri {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!("---- kiri log ----\n{}", self.log_text());
        }
        if let Some(mut c) = self.child.take() {
            signal(&c, "TERM");
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A reading with sequence number `seq` and value `seq` °C.
pub fn reading(sensor: &str, seq: u64) -> Vec<u8> {
    encode_reading(&Reading {
        sensor,
        kind: "temperature",
        value: seq as f64,
        unit: "C",
        ts: Some(kiri::now_ms()),
        uptime_ms: None,
        seq: Some(seq),
    })
}

/// A reading in the documented format (`kiri_reading`, as the nodes write it).
pub fn encode_reading(r: &Reading<'_>) -> Vec<u8> {
    let mut buf = [0u8; 512];
    let n = r.encode(&mut buf).expect("a reading fits in 512 bytes");
    buf[..n].to_vec()
}

/// Publishes `payloads` to `topic` at QoS 1 and returns once the broker acknowledged all.
pub fn publish_all(port: u16, client_id: &str, topic: &str, payloads: Vec<Vec<u8>>) {
    publish_all_as(port, client_id, None, topic, payloads)
}

/// [`publish_all`], logged in as `login` (user name, password).
pub fn publish_all_as(
    port: u16,
    client_id: &str,
    login: Option<(&str, &str)>,
    topic: &str,
    payloads: Vec<Vec<u8>>,
) {
    let mut opts = MqttOptions::new(client_id, "127.0.0.1", port);
    if let Some((user, password)) = login {
        opts.set_credentials(user, password);
    }
    opts.set_max_packet_size(4 << 20, 4 << 20).set_inflight(50);
    let (client, mut conn) = Client::new(opts, 100);
    let n = payloads.len();
    let publisher = {
        let topic = topic.to_string();
        thread::spawn(move || {
            for p in payloads {
                client
                    .publish(topic.as_str(), QoS::AtLeastOnce, false, p)
                    .unwrap();
            }
            client
        })
    };
    let mut acked = 0;
    let deadline = Instant::now() + Duration::from_secs(120);
    for event in conn.iter() {
        assert!(
            Instant::now() < deadline,
            "publishing took too long ({acked}/{n} acked)"
        );
        match event {
            Ok(Event::Incoming(Packet::PubAck(_))) => {
                acked += 1;
                if acked == n {
                    break;
                }
            }
            Ok(_) => {}
            Err(e) => panic!("publisher connection failed: {e}"),
        }
    }
    let client = publisher.join().unwrap();
    let _ = client.disconnect();
    for e in conn.iter() {
        if e.is_err() {
            break;
        }
    }
}

/// A cloud-side consumer: a persistent session on `kiri/#` that hands each result envelope
/// (with the topic it came on) to `sink`, from its own thread, reconnecting whenever the
/// broker goes away. Returns once subscribed.
pub fn subscribe_results(
    port: u16,
    client_id: &str,
    mut sink: impl FnMut(&str, Envelope) + Send + 'static,
) {
    let mut opts = MqttOptions::new(client_id, "127.0.0.1", port);
    opts.set_clean_session(false)
        .set_max_packet_size(4 << 20, 4 << 20);
    let (client, mut conn) = Client::new(opts, 10);
    let subscribed = Arc::new(Mutex::new(false));
    let flag = subscribed.clone();
    thread::spawn(move || {
        for event in conn.iter() {
            match event {
                Ok(Event::Incoming(Packet::SubAck(_))) => *flag.lock().unwrap() = true,
                Ok(Event::Incoming(Packet::ConnAck(ack))) if !ack.session_present => {
                    let _ = client.try_subscribe("kiri/#", QoS::AtLeastOnce);
                }
                // Deployments and their answers travel under kiri/ too: not results.
                Ok(Event::Incoming(Packet::Publish(p))) if p.topic.contains("/deploy/") => {}
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let envelopes = if p.topic.ends_with("/$batch") {
                        Envelope::decode_batch(&p.payload).expect("cloud message is a batch")
                    } else {
                        vec![Envelope::decode(&p.payload).expect("cloud message is an envelope")]
                    };
                    for e in envelopes {
                        sink(&p.topic, e);
                    }
                }
                Ok(_) => {}
                // The broker restarts during the tests: keep reconnecting.
                Err(_) => thread::sleep(Duration::from_millis(100)),
            }
        }
    });
    wait_until("cloud subscription", Duration::from_secs(10), || {
        *subscribed.lock().unwrap()
    });
}

/// A cloud-side consumer: a persistent session on `kiri/#` that keeps every envelope.
/// The distinct sequence numbers must be exactly `0..n`, in order.
pub fn assert_in_order(got: &[u64], n: u64) {
    let want: Vec<u64> = (0..n).collect();
    if got != want.as_slice() {
        let first_bad = got.iter().zip(&want).position(|(a, b)| a != b);
        panic!(
            "{} results, expected {n} in order; first difference at {first_bad:?}",
            got.len()
        );
    }
}

pub struct CloudSubscriber {
    pub received: Arc<Mutex<Vec<(String, Envelope)>>>,
}

impl CloudSubscriber {
    pub fn start(port: u16, client_id: &str) -> CloudSubscriber {
        let received = Arc::new(Mutex::new(Vec::new()));
        let sink = received.clone();
        subscribe_results(port, client_id, move |topic, envelope| {
            sink.lock().unwrap().push((topic.to_string(), envelope));
        });
        CloudSubscriber { received }
    }

    /// Distinct reading sequence numbers received, in order of first arrival. (A duplicate
    /// is either the same record sent twice, same id, or an input processed twice after a
    /// crash before its ack, new id; both carry the reading's seq.)
    pub fn distinct_seqs(&self) -> Vec<u64> {
        let mut seen = BTreeSet::new();
        let mut out = Vec::new();
        for seq in self.arrivals() {
            if seen.insert(seq) {
                out.push(seq);
            }
        }
        out
    }

    /// Every reading sequence number in order of arrival, duplicates included.
    pub fn arrivals(&self) -> Vec<u64> {
        self.received
            .lock()
            .unwrap()
            .iter()
            .map(|(_, e)| {
                let r = Reading::decode(&e.payload).expect("payload is a reading");
                r.seq.expect("reading has seq")
            })
            .collect()
    }

    /// Every reading sequence number function `function` forwarded, in order of arrival,
    /// duplicates included.
    pub fn arrivals_of(&self, function: &str) -> Vec<u64> {
        self.received
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, e)| e.function == function)
            .map(|(_, e)| {
                let r = Reading::decode(&e.payload).expect("payload is a reading");
                r.seq.expect("reading has seq")
            })
            .collect()
    }

    /// Fails unless every reading `0..n` arrived and the distinct ones came in order; returns
    /// the arrivals, duplicates included.
    pub fn assert_all_arrived_in_order(&self, n: u64) -> Vec<u64> {
        let arrivals = self.arrivals();
        let got: BTreeSet<u64> = arrivals.iter().copied().collect();
        let missing: Vec<u64> = (0..n).filter(|s| !got.contains(s)).collect();
        assert!(
            missing.is_empty(),
            "{} readings never delivered, first: {:?}",
            missing.len(),
            &missing[..missing.len().min(20)]
        );
        assert_in_order(&self.distinct_seqs(), n);
        arrivals
    }

    pub fn wait_for(&self, n: usize, timeout: Duration, kiri: &mut Kiri) {
        let arrived = poll_until(timeout, || {
            kiri.assert_running();
            self.distinct_seqs().len() >= n
        });
        if !arrived {
            panic!(
                "timed out after {timeout:?} waiting for {n} distinct results at the cloud: {} distinct, \
                 {} messages; kiri: outbox {} records, {} delivered, {} invocations, uplink connected {}",
                self.distinct_seqs().len(),
                self.received.lock().unwrap().len(),
                kiri.metric("kiri_outbox_records"),
                kiri.metric("kiri_uplink_delivered_total"),
                kiri.metric("kiri_invocations_total"),
                kiri.metric("kiri_uplink_connected"),
            );
        }
    }
}

/// A test certificate authority (rcgen) and the certificates it issues, as PEM files.
pub struct Pki {
    dir: PathBuf,
    issuer: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
}

impl Pki {
    /// A new CA named `name`, with its files under `<dir>/<name>/`.
    pub fn new(dir: &Path, name: &str) -> Pki {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{name} test CA"));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let issuer =
            rcgen::CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        let pki = Pki {
            dir: dir.join(name),
            issuer,
        };
        fs::create_dir_all(&pki.dir).unwrap();
        fs::write(pki.ca(), pki.issuer.pem()).unwrap();
        pki
    }

    /// The CA certificate file.
    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// Issues a certificate for `names` (DNS names or IP addresses), for a server or a
    /// client; returns the certificate and key files.
    pub fn issue(&self, file: &str, names: &[&str], client: bool) -> (PathBuf, PathBuf) {
        use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, KeyPair};
        let key = KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names).unwrap();
        params.distinguished_name.push(DnType::CommonName, file);
        params.extended_key_usages = vec![if client {
            ExtendedKeyUsagePurpose::ClientAuth
        } else {
            ExtendedKeyUsagePurpose::ServerAuth
        }];
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let (cert_file, key_file) = (
            self.dir.join(format!("{file}.pem")),
            self.dir.join(format!("{file}.key")),
        );
        fs::write(&cert_file, cert.pem()).unwrap();
        fs::write(&key_file, key.serialize_pem()).unwrap();
        (cert_file, key_file)
    }
}

/// What the fault proxy does to the connections through it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Forwards both ways.
    Pass,
    /// Holds the bytes (both ways) without closing anything: a stalled link.
    Pause,
    /// Closes the broker side and swallows what the client sends, never answering: a
    /// half-open connection, which only the client's keep-alive can detect.
    HalfOpen,
}

/// A TCP proxy (tokio) on 127.0.0.1 in front of a broker, with faults switched on demand.
pub struct FaultProxy {
    pub port: u16,
    state: tokio::sync::watch::Sender<(Fault, u64)>,
    _runtime: tokio::runtime::Runtime,
}

impl FaultProxy {
    pub fn start(upstream: u16) -> FaultProxy {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let port = listener.local_addr().unwrap().port();
        let (state, watch) = tokio::sync::watch::channel((Fault::Pass, 0));
        runtime.spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(proxy_connection(client, upstream, watch.clone()));
            }
        });
        FaultProxy {
            port,
            state,
            _runtime: runtime,
        }
    }

    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    pub fn set(&self, fault: Fault) {
        self.state.send_modify(|s| s.0 = fault);
    }

    /// Closes every open connection (both sides) at once: a dropped link.
    pub fn drop_connections(&self) {
        self.state.send_modify(|s| s.1 += 1);
    }
}

async fn proxy_connection(
    client: tokio::net::TcpStream,
    upstream: u16,
    mut state: tokio::sync::watch::Receiver<(Fault, u64)>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let generation = state.borrow().1;
    let Ok(broker) = tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await else {
        return;
    };
    let (mut client_rx, mut client_tx) = client.into_split();
    let mut broker = Some(broker.into_split());
    let (mut up, mut down) = (vec![0u8; 16384], vec![0u8; 16384]);
    loop {
        let (fault, g) = *state.borrow_and_update();
        if g != generation {
            return;
        }
        match (fault, broker.as_mut()) {
            (Fault::Pass, Some((broker_rx, broker_tx))) => tokio::select! {
                n = client_rx.read(&mut up) => match n {
                    Ok(n) if n > 0 => if broker_tx.write_all(&up[..n]).await.is_err() { return },
                    _ => return,
                },
                n = broker_rx.read(&mut down) => match n {
                    Ok(n) if n > 0 => if client_tx.write_all(&down[..n]).await.is_err() { return },
                    _ => return,
                },
                _ = state.changed() => {}
            },
            (Fault::Pause, Some(_)) => {
                if state.changed().await.is_err() {
                    return;
                }
            }
            // Half-open (or it was, and the broker side is gone for good): swallow.
            _ => {
                broker = None;
                tokio::select! {
                    n = client_rx.read(&mut up) => if !matches!(n, Ok(n) if n > 0) { return },
                    r = state.changed() => if r.is_err() { return },
                }
            }
        }
    }
}

/// Hostile guests and the outcome every invocation of each must end in: one spins (runs out
/// of fuel), one grows its memory past the cap (traps), one emits until refused and then
/// fails, one recurses without end (traps).
pub const HOSTILE: [(&str, &str); 4] = [
    ("spinner", "out_of_fuel"),
    ("grower", "trap"),
    ("flooder", "error"),
    ("recurser", "trap"),
];

/// The `[[functions]]` entries of the `HOSTILE` guests, their modules written into `dir`,
/// triggered by `trigger`, with small limits and no retries (each failure is a dead letter).
pub fn hostile_functions(dir: &Path, trigger: &str) -> String {
    let abi = r#"(memory (export "memory") 1)
      (func (export "kiri_abi_version") (result i32) i32.const 1)
      (func (export "kiri_alloc") (param i32) (result i32) i32.const 1024)"#;
    let on_event = r#"(func (export "kiri_on_event") (param i32 i32 i32 i32 i64) (result i32)"#;
    let wat = |name: &str| match name {
        "spinner" => format!("(module {abi} {on_event} (loop (br 0)) i32.const 0))"),
        "grower" => format!(
            "(module {abi} {on_event}
               (loop (br_if 0 (i32.ne (memory.grow (i32.const 16)) (i32.const -1)))) unreachable))"
        ),
        "flooder" => format!(
            r#"(module (import "kiri" "emit" (func $emit (param i32 i32 i32 i32) (result i32))) {abi}
               (data (i32.const 0) "spam")
               {on_event}
                 (loop (br_if 0 (i32.eqz (call $emit (i32.const 0) (i32.const 4) (i32.const 0) (i32.const 4)))))
                 i32.const 7))"#
        ),
        "recurser" => format!(
            "(module {abi} (func $r (param i32) (result i32) (call $r (local.get 0)))
               {on_event} (call $r (i32.const 0))))"
        ),
        other => unreachable!("no hostile guest {other}"),
    };
    let mut functions = String::new();
    for (name, _) in HOSTILE {
        let path = dir.join(format!("{name}.wasm"));
        fs::write(&path, wat::parse_str(wat(name)).unwrap()).unwrap();
        functions += &format!(
            "[[functions]]\nname = \"{name}\"\nmodule = \"{}\"\ntriggers = [\"{trigger}\"]\nretries = 0\n\
             limits = {{ fuel = 200000, memory_bytes = 1048576 }}\n",
            path.display()
        );
    }
    functions
}

/// A small tmpfs mounted at `dir` (created), unmounted when the guard goes; needs root, and
/// fails the test saying so without it.
#[allow(dead_code)]
pub fn small_disk(dir: &Path, size: &str) -> SmallDisk {
    assert!(
        is_root(),
        "this test mounts a small tmpfs, which needs root: run `make test` as root (CI does)"
    );
    fs::create_dir_all(dir).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
        .arg(dir)
        .status()
        .unwrap();
    assert!(mounted.success(), "mount tmpfs");
    SmallDisk(dir.to_path_buf())
}

/// A mounted tmpfs; unmounted on drop.
pub struct SmallDisk(pub PathBuf);

impl SmallDisk {
    /// Bytes free on it.
    #[allow(dead_code)]
    pub fn free(&self) -> u64 {
        let out = Command::new("df")
            .args(["--output=avail", "-B1"])
            .arg(&self.0)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .last()
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Opens `each` TCP connections to 127.0.0.1:`port` from each of `sources` (loopback
/// addresses) and holds them idle; those that connected.
pub fn idle_connections(port: u16, sources: &[std::net::IpAddr], each: usize) -> Vec<TcpStream> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut open = Vec::new();
        for &source in sources {
            for _ in 0..each {
                let socket = tokio::net::TcpSocket::new_v4().unwrap();
                socket.bind((source, 0).into()).unwrap();
                if let Ok(s) = socket.connect(([127, 0, 0, 1], port).into()).await {
                    let s = s.into_std().unwrap();
                    s.set_nonblocking(false).unwrap();
                    open.push(s);
                }
            }
        }
        open
    })
}

/// Whether the peer closes `stream` (nothing sent on it) within `timeout`.
pub fn closed_within(stream: &mut TcpStream, timeout: Duration) -> bool {
    use std::io::Read;
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 64];
    while Instant::now() < deadline {
        stream
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return true,
        }
    }
    false
}

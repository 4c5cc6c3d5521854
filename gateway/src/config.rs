//! The gateway's configuration: one TOML file, every key overridable from the environment.
//!
//! Sources, later ones winning: built-in defaults, the TOML file (if given), then
//! `KIRI_<SECTION>_<KEY>` environment variables (`KIRI_CLOUD_URL` sets `cloud.url`,
//! `KIRI_GATEWAY_DATA_DIR` sets `gateway.data_dir`). Unknown keys are errors naming the key.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::providers::{Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

use crate::dispatch::topic;

/// The commented example configuration (`kiri config example`, `kiri.example.toml`).
pub const EXAMPLE: &str = include_str!("../../kiri.example.toml");

/// The shortest `every` accepted.
pub const MIN_EVERY: std::time::Duration = std::time::Duration::from_millis(100);
/// The longest `every` accepted (100 years): the first tick must be a time the clock can hold.
pub const MAX_EVERY: std::time::Duration = std::time::Duration::from_secs(100 * 365 * 86_400);

/// The tables of the configuration, for mapping environment variables to keys.
const SECTIONS: [&str; 7] = [
    "gateway",
    "broker",
    "cloud",
    "outbox",
    "dead_letters",
    "dashboard",
    "deploy",
];

/// Environment variables with this prefix override configuration keys.
pub const ENV_PREFIX: &str = "KIRI_";

/// A configuration that could not be loaded or is inconsistent.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file or the environment did not parse, or named an unknown key.
    #[error("{0}")]
    Parse(#[from] Box<figment::Error>),
    /// A value parsed but is not acceptable.
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// The whole gateway configuration.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Identity and local storage.
    pub gateway: GatewayConfig,
    /// Where sensor messages come from.
    pub broker: BrokerConfig,
    /// Where results go.
    pub cloud: CloudConfig,
    /// The durable store-and-forward queue.
    pub outbox: OutboxConfig,
    /// Failed and rejected inputs kept for inspection.
    pub dead_letters: DeadLetterConfig,
    /// The local HTTP endpoint.
    pub dashboard: DashboardConfig,
    /// Signed function deployment over MQTT.
    pub deploy: DeployConfig,
    /// The functions to run.
    pub functions: Vec<FunctionConfig>,
}

/// `[gateway]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GatewayConfig {
    /// This gateway's id: part of topics and record ids.
    #[serde(deserialize_with = "text")]
    pub id: String,
    /// Where the store lives (relative paths are relative to the working directory).
    pub data_dir: PathBuf,
    /// Upper bound for the embedded store's page cache, in bytes.
    pub cache_bytes: u64,
    /// After each group commit, also `fsync` the store's log, so that what was acknowledged
    /// survives a power cut, not only a process crash (sled's own flush uses
    /// `sync_file_range`, which neither persists metadata nor flushes the drive's cache).
    pub fsync: bool,
    /// sled's background flush (with an fsync) runs every this many milliseconds; it bounds
    /// what a power cut can take from writes Kiri has not committed itself (acks' deletes).
    pub flush_every_ms: u64,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            id: "gw-01".into(),
            data_dir: "kiri-data".into(),
            cache_bytes: 16 << 20,
            fsync: true,
            flush_every_ms: 500,
        }
    }
}

/// Which MQTT broker sensors publish to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BrokerMode {
    /// Kiri runs a rumqttd broker in-process on `broker.listen`.
    Embedded,
    /// Kiri connects to an existing broker at `broker.url`.
    External,
}

/// Text that may have been written as a number or boolean (`KIRI_GATEWAY_ID=42`).
fn text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(ConfigValue::deserialize(d)?.to_string())
}

fn opt_text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(Option::<ConfigValue>::deserialize(d)?.map(|v| v.to_string()))
}

/// `[broker]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BrokerConfig {
    /// `embedded` or `external`.
    pub mode: BrokerMode,
    /// Embedded broker: the address it listens on.
    pub listen: SocketAddr,
    /// External broker: `mqtt://host:port`.
    #[serde(deserialize_with = "text")]
    pub url: String,
    /// MQTT client id of the ingest session (default `kiri-<gateway.id>`).
    #[serde(deserialize_with = "opt_text")]
    pub client_id: Option<String>,
    /// Largest payload accepted; larger messages are rejected and counted.
    pub max_message_bytes: usize,
    /// Largest MQTT packet read at all (must exceed `max_message_bytes` plus the topic).
    pub max_packet_bytes: usize,
    /// Messages received but not yet processed, at most (back-pressure beyond).
    pub queue: usize,
    /// Events processed per group commit, at most.
    pub batch: usize,
    /// Embedded broker: unacknowledged QoS 1 messages in flight per client.
    pub max_inflight: usize,
    /// Embedded broker: the accounts sensors log in with, each with its topic rules. With
    /// none, clients connect without logging in (see `allow_anonymous`).
    pub users: Vec<BrokerUser>,
    /// Embedded broker without `users`: let clients connect without logging in when it
    /// listens on a non-loopback address (on loopback they always may).
    pub allow_anonymous: bool,
}

/// `[[broker.users]]`: one account on the embedded broker.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BrokerUser {
    /// The MQTT user name.
    #[serde(deserialize_with = "text")]
    pub name: String,
    /// The password's Argon2 hash in PHC form (`kiri password-hash` makes one).
    pub password_hash: String,
    /// Topic filters this user may publish to (and name as its will): by default
    /// `sensors/<name>/#`.
    pub publish: Option<Vec<String>>,
    /// Topic filters this user may subscribe to: each filter it subscribes with must lie
    /// within one of them (none by default).
    #[serde(default)]
    pub subscribe: Vec<String>,
}

impl BrokerUser {
    /// The filters this user may publish to.
    pub fn publish_filters(&self) -> Vec<String> {
        match &self.publish {
            Some(p) => p.clone(),
            None => vec![format!("sensors/{}/#", self.name)],
        }
    }
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            mode: BrokerMode::Embedded,
            listen: SocketAddr::from(([127, 0, 0, 1], 1883)),
            url: "mqtt://127.0.0.1:1883".into(),
            client_id: None,
            max_message_bytes: 256 << 10,
            max_packet_bytes: 1 << 20,
            queue: 256,
            batch: 128,
            max_inflight: 256,
            users: Vec::new(),
            allow_anonymous: false,
        }
    }
}

/// `[cloud]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CloudConfig {
    /// The cloud broker, `mqtt://host:port`.
    #[serde(deserialize_with = "text")]
    pub url: String,
    /// Results go to `<topic_prefix>/<topic the function emitted>` (default `kiri/<gateway.id>`).
    #[serde(deserialize_with = "opt_text")]
    pub topic_prefix: Option<String>,
    /// MQTT client id of the uplink (default `kiri-<gateway.id>-uplink`).
    #[serde(deserialize_with = "opt_text")]
    pub client_id: Option<String>,
    /// Records published and not yet acknowledged, at most.
    pub inflight: u16,
    /// MQTT keep-alive, seconds.
    pub keep_alive_secs: u64,
    /// First reconnect delay, milliseconds (doubles per failure, with jitter).
    pub backoff_initial_ms: u64,
    /// Longest reconnect delay, milliseconds.
    pub backoff_max_ms: u64,
    /// `mqtts://` only: PEM file of the CA certificate(s) the broker's certificate must chain
    /// to. Not set: the system's trusted roots.
    pub ca_file: Option<PathBuf>,
    /// `mqtts://` only: PEM file of the client certificate chain for mutual TLS.
    pub client_cert: Option<PathBuf>,
    /// `mqtts://` only: PEM file of the client certificate's private key (PKCS#8, PKCS#1 or SEC1).
    pub client_key: Option<PathBuf>,
    /// `mqtts://` only: ALPN protocol names to offer (AWS IoT Core on port 443: `x-amzn-mqtt-ca`).
    pub alpn: Vec<String>,
    /// MQTT user name, if the broker wants one.
    #[serde(deserialize_with = "opt_text")]
    pub username: Option<String>,
    /// MQTT password (set it with `KIRI_CLOUD_PASSWORD` rather than in the file). Never logged.
    pub password: Option<Secret>,
    /// Results packed into one cloud message, at most (1 = no batching).
    pub batch_records: usize,
    /// Bytes of results packed into one cloud message, at most (when `batch_records` > 1).
    pub batch_bytes: usize,
    /// Upload bandwidth cap in bytes per second (MQTT payload bytes); 0 = none.
    pub max_bytes_per_sec: u64,
    /// Function log lines at this level or more severe are forwarded to the cloud (at low
    /// priority, on `<topic_prefix>/$logs/<function>`); `off`: none.
    pub logs: LogForwarding,
}

/// Which function log lines go to the cloud.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum LogForwarding {
    /// None.
    Off,
    /// Errors.
    Error,
    /// Errors and warnings.
    Warn,
    /// And info.
    Info,
    /// Everything.
    Debug,
}

impl LogForwarding {
    /// Whether a line of `level` (`error`, `warn`, `info`, `debug`) goes.
    pub fn passes(self, level: &str) -> bool {
        let rank = match level {
            "error" => LogForwarding::Error,
            "warn" => LogForwarding::Warn,
            "info" => LogForwarding::Info,
            _ => LogForwarding::Debug,
        };
        self != LogForwarding::Off && rank <= self
    }
}

/// A secret string: deserialised like text, shown as `***` by `Debug` and when serialised.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(from = "ConfigValue")]
pub struct Secret(String);

impl Secret {
    /// The secret itself.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<ConfigValue> for Secret {
    fn from(v: ConfigValue) -> Secret {
        Secret(v.to_string())
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("***")
    }
}

impl Default for CloudConfig {
    fn default() -> Self {
        CloudConfig {
            url: "mqtt://127.0.0.1:8883".into(),
            topic_prefix: None,
            client_id: None,
            inflight: 64,
            keep_alive_secs: 30,
            backoff_initial_ms: 200,
            backoff_max_ms: 30_000,
            ca_file: None,
            client_cert: None,
            client_key: None,
            alpn: Vec::new(),
            username: None,
            password: None,
            batch_records: 1,
            batch_bytes: 64 << 10,
            max_bytes_per_sec: 0,
            logs: LogForwarding::Off,
        }
    }
}

/// What happens when the outbox is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WhenFull {
    /// Stop acknowledging inputs until the uplink drains room: back-pressure to the broker.
    Block,
    /// Delete the oldest records (normal priority first) to make room; each one counted.
    DropOldest,
    /// Keep what is held and drop the new results (the inputs are still processed and
    /// acknowledged); each one counted.
    RejectNew,
}

/// `[outbox]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutboxConfig {
    /// Records held at most.
    pub max_records: u64,
    /// Bytes held at most (record payloads plus headers).
    pub max_bytes: u64,
    /// Policy when a bound is reached.
    pub when_full: WhenFull,
    /// Results older than this (humantime: `7d`, `12h`) are expired, counted and not sent.
    #[serde(deserialize_with = "opt_text")]
    pub ttl: Option<String>,
    /// Emitted topics matching one of these filters are high priority: they drain first.
    pub high_priority: Vec<String>,
    /// Free space to keep on the data directory's file system: below it, appends wait as if
    /// the outbox were full (whatever `when_full` says), so the store never runs out of disk.
    pub min_free_bytes: u64,
}

impl OutboxConfig {
    /// The TTL, parsed (validated with the config).
    pub fn ttl(&self) -> Option<std::time::Duration> {
        self.ttl
            .as_deref()
            .map(|t| humantime::parse_duration(t).expect("validated with the config"))
    }
}

impl Default for OutboxConfig {
    fn default() -> Self {
        OutboxConfig {
            max_records: 1_000_000,
            max_bytes: 256 << 20,
            when_full: WhenFull::Block,
            ttl: None,
            high_priority: Vec::new(),
            min_free_bytes: 64 << 20,
        }
    }
}

/// `[dead_letters]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeadLetterConfig {
    /// Records kept at most; beyond it the oldest is dropped (and counted).
    pub max_records: u64,
    /// Bytes kept at most; beyond it the oldest is dropped (and counted).
    pub max_bytes: u64,
    /// Bytes of each failed payload kept (entries cut shorter cannot be replayed).
    pub max_payload_bytes: usize,
}

impl Default for DeadLetterConfig {
    fn default() -> Self {
        DeadLetterConfig {
            max_records: 10_000,
            max_bytes: 64 << 20,
            max_payload_bytes: 256 << 10,
        }
    }
}

/// `[deploy]`: functions pushed over MQTT as signed packages.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeployConfig {
    /// Public keys (`ed25519:<base64>`, as `kiri keygen` prints) whose packages are accepted;
    /// empty: deployment over MQTT is off.
    pub trusted_keys: Vec<String>,
    /// Groups this gateway belongs to: it also takes packages sent to `kiri/group/<group>/...`.
    pub groups: Vec<String>,
    /// Largest package accepted, bytes.
    pub max_package_bytes: usize,
    /// Versions of each deployed function kept for `kiri rollback`.
    pub keep_versions: usize,
    /// Function names that may hold deployed modules at once: with `keep_versions` and
    /// `max_package_bytes`, this bounds the disk deployments can take.
    pub max_functions: usize,
}

impl Default for DeployConfig {
    fn default() -> Self {
        DeployConfig {
            trusted_keys: Vec::new(),
            groups: Vec::new(),
            max_package_bytes: (1 << 20) - 4096,
            keep_versions: 3,
            max_functions: 32,
        }
    }
}

/// `[dashboard]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DashboardConfig {
    /// The HTTP address (metrics, health, HTTP invocation).
    pub listen: SocketAddr,
    /// The token for requests that change something (default: generated on first start and
    /// kept in the store). Required explicitly when `listen` is not a loopback address.
    #[serde(deserialize_with = "opt_text")]
    pub token: Option<String>,
    /// Log lines kept per function (the newest), for the API and the page.
    pub log_lines: usize,
    /// Whether reads (`/api/v1` GETs, `/metrics`) need the token too.
    pub auth_reads: bool,
    /// Serve HTTPS with this certificate chain (PEM)...
    pub tls_cert: Option<PathBuf>,
    /// ...and its private key (PEM).
    pub tls_key: Option<PathBuf>,
    /// Accept JWTs from this issuer besides the token (`[dashboard.jwt]`).
    pub jwt: Option<crate::identity::JwtConfig>,
}

impl Default for DashboardConfig {
    fn default() -> Self {
        DashboardConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            token: None,
            log_lines: 200,
            auth_reads: false,
            tls_cert: None,
            tls_key: None,
            jwt: None,
        }
    }
}

/// A scalar from a function's `config` table, handed to the function as text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ConfigValue {
    /// `true` / `false`
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A float.
    Float(f64),
    /// Text.
    Text(String),
}

impl std::fmt::Display for ConfigValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConfigValue::Bool(v) => write!(f, "{v}"),
            ConfigValue::Int(v) => write!(f, "{v}"),
            ConfigValue::Float(v) => write!(f, "{v}"),
            ConfigValue::Text(v) => f.write_str(v),
        }
    }
}

/// `[[functions]]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FunctionConfig {
    /// Unique name: `[A-Za-z0-9_-]`, 1 to 64 characters.
    pub name: String,
    /// Path to the `.wasm` module (relative to the config file's folder).
    pub module: PathBuf,
    /// MQTT topic filters (`+` and `#` allowed) that trigger the function.
    #[serde(default)]
    pub triggers: Vec<String>,
    /// Run on a fixed interval (`"10s"`, `"5m"`, `"1h 30m"`), with topic `$timer`.
    pub every: Option<String>,
    /// Run on a cron schedule (5 fields, or 6 with seconds first; UTC), with topic `$timer`.
    pub cron: Option<String>,
    /// Values the function reads with the `config` host call.
    #[serde(default)]
    pub config: BTreeMap<String, ConfigValue>,
    /// Automatic retries of a failed event (after the first attempt), through the dead letters.
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// Delay before the first retry, ms; it doubles for each further one.
    #[serde(default = "default_retry_backoff_ms")]
    pub retry_backoff_ms: u64,
    /// Instances that may run at once: 1 (the default) keeps the order of events; more run
    /// events in parallel, in any order.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// Whether `POST /invoke/<name>` may run it (off by default).
    #[serde(default)]
    pub http: bool,
    /// Topic filters the function may `publish` to on the local broker (none by default).
    #[serde(default)]
    pub publish: Vec<String>,
    /// Topic filters the function may `emit` to for the cloud (all by default).
    #[serde(default = "all_topics")]
    pub emit: Vec<String>,
    /// Sandbox limits.
    #[serde(default)]
    pub limits: FunctionLimits,
}

impl FunctionConfig {
    /// Checks one function's settings (the module itself is checked when it is loaded).
    pub fn validate(&self) -> Result<(), String> {
        let ok_name = !self.name.is_empty()
            && self.name.len() <= 64
            && self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !ok_name {
            return Err(format!(
                "function name {:?}: use 1-64 of A-Z a-z 0-9 - _",
                self.name
            ));
        }
        if self.triggers.is_empty() && self.every.is_none() && self.cron.is_none() && !self.http {
            return Err(format!(
                "function {:?} has no triggers, every, cron or http: nothing would run it",
                self.name
            ));
        }
        if let Some(every) = &self.every {
            match humantime::parse_duration(every) {
                Ok(d) if (MIN_EVERY..=MAX_EVERY).contains(&d) => {}
                Ok(_) => {
                    return Err(format!(
                        "function {:?}: every = {every:?} is shorter than 100ms or longer than 100 years",
                        self.name
                    ))
                }
                Err(e) => return Err(format!("function {:?}: every = {every:?}: {e}", self.name)),
            }
        }
        if let Some(cron) = &self.cron {
            if let Err(e) = cron.parse::<croner::Cron>() {
                return Err(format!("function {:?}: cron = {cron:?}: {e}", self.name));
            }
        }
        let lists = [
            ("trigger", &self.triggers),
            ("publish", &self.publish),
            ("emit", &self.emit),
        ];
        for (what, filters) in lists {
            for t in filters {
                if let Err(e) = topic::validate_filter(t) {
                    return Err(format!(
                        "function {:?}: {what} filter {t:?}: {e}",
                        self.name
                    ));
                }
            }
        }
        if self.retries > 100 || self.retry_backoff_ms > 86_400_000 {
            return Err(format!(
                "function {:?}: retries must be at most 100 and retry_backoff_ms at most 86400000 (a day)",
                self.name
            ));
        }
        if !(1..=64).contains(&self.concurrency) {
            return Err(format!(
                "function {:?}: concurrency must be 1 to 64",
                self.name
            ));
        }
        if self.limits.timeout_ms == 0 {
            return Err(format!(
                "function {:?}: limits.timeout_ms must be > 0",
                self.name
            ));
        }
        if !(16..=100_000).contains(&self.limits.max_call_depth) {
            return Err(format!(
                "function {:?}: limits.max_call_depth must be 16 to 100000",
                self.name
            ));
        }
        if self.limits.fuel == 0
            || self.limits.memory_bytes < 65536
            || self.limits.memory_bytes as u64 > 1 << 32
        {
            return Err(format!(
                "function {:?}: limits.fuel must be > 0 and limits.memory_bytes between 65536 and 4 GiB",
                self.name
            ));
        }
        Ok(())
    }
}

fn default_concurrency() -> usize {
    1
}

fn default_retries() -> u32 {
    2
}

fn default_retry_backoff_ms() -> u64 {
    1000
}

fn all_topics() -> Vec<String> {
    vec!["#".to_string()]
}

/// Per-invocation sandbox limits of a function.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FunctionLimits {
    /// CPU budget per invocation, in wasmi fuel units (about one per instruction).
    pub fuel: u64,
    /// Linear memory cap, bytes.
    pub memory_bytes: usize,
    /// `emit` plus `publish` calls per invocation, at most.
    pub max_outputs: usize,
    /// Total output payload bytes per invocation, at most.
    pub max_output_bytes: usize,
    /// Wall-clock time per invocation, milliseconds.
    pub timeout_ms: u64,
    /// Largest value one key-value write may store, bytes.
    pub kv_max_value_bytes: usize,
    /// Distinct keys one invocation may write or delete, at most.
    pub kv_max_writes: usize,
    /// Nested calls (wasm function frames) at most; deeper recursion traps.
    pub max_call_depth: usize,
    /// Instances that may run at once (set from the function's `concurrency`).
    #[serde(skip)]
    pub concurrency: usize,
}

impl Default for FunctionLimits {
    fn default() -> Self {
        FunctionLimits {
            fuel: 10_000_000,
            memory_bytes: 16 << 20,
            max_outputs: 64,
            max_output_bytes: 1 << 20,
            timeout_ms: 1000,
            kv_max_value_bytes: 64 << 10,
            kv_max_writes: 256,
            max_call_depth: 1000,
            concurrency: 1,
        }
    }
}

impl Config {
    /// Loads defaults, then `file` (if any), then `KIRI_*` environment variables.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        Self::load_with_env(file, std::env::vars())
    }

    /// Like [`Config::load`] with an explicit environment (for tests).
    pub fn load_with_env(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = file {
            if !path.exists() {
                return Err(ConfigError::Invalid(format!(
                    "config file {} does not exist",
                    path.display()
                )));
            }
            figment = figment.merge(Toml::file_exact(path));
        }
        Self::extract(figment, file.and_then(Path::parent), env)
    }

    /// Like [`Config::load_with_env`] with the file's text in hand, as if it were read from a
    /// file in `dir` (the fuzz targets use it: no file to write per input).
    pub fn from_toml_str(
        text: &str,
        dir: &Path,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let figment =
            Figment::from(Serialized::defaults(Config::default())).merge(Toml::string(text));
        Self::extract(figment, Some(dir), env)
    }

    /// The environment over `figment`, extracted, paths made relative to `dir`, validated.
    fn extract(
        figment: Figment,
        dir: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let figment = figment.merge(env_overrides(env));
        let mut config: Config = figment.extract().map_err(Box::new)?;
        if let Some(dir) = dir {
            let cloud = &mut config.cloud;
            let paths = config
                .functions
                .iter_mut()
                .map(|f| &mut f.module)
                .chain(cloud.ca_file.as_mut())
                .chain(cloud.client_cert.as_mut())
                .chain(cloud.client_key.as_mut())
                .chain(config.dashboard.tls_cert.as_mut())
                .chain(config.dashboard.tls_key.as_mut())
                .chain(
                    config
                        .dashboard
                        .jwt
                        .iter_mut()
                        .flat_map(|j| j.keys.iter_mut()),
                );
            for path in paths {
                if path.is_relative() {
                    *path = dir.join(&*path);
                }
            }
        }
        config.validate()?;
        Ok(config)
    }

    /// The embedded broker's accounts: names, hashes, rules; and no anonymous clients on a
    /// network address unless asked for.
    fn validate_broker_users(&self) -> Result<(), ConfigError> {
        let bad = |msg: String| Err(ConfigError::Invalid(msg));
        let b = &self.broker;
        if !b.users.is_empty() && b.mode == BrokerMode::External {
            return bad(
                "broker.users are for the embedded broker; an external broker has its own accounts"
                    .into(),
            );
        }
        if !b.users.is_empty() && b.allow_anonymous {
            return bad("broker.allow_anonymous and broker.users exclude each other: with users, every client logs in".into());
        }
        if b.mode == BrokerMode::Embedded
            && b.users.is_empty()
            && !b.allow_anonymous
            && !b.listen.ip().is_loopback()
        {
            return bad(format!(
                "broker.listen = {} is reachable from the network: add broker.users (sensor accounts; see `kiri password-hash`), or set broker.allow_anonymous = true",
                b.listen
            ));
        }
        let mut names = std::collections::HashSet::new();
        for u in &b.users {
            if u.name.is_empty() || u.name.contains(['/', '+', '#', ':', '\0']) {
                return bad(format!(
                    "broker.users: name {:?} must be non-empty, without / + # : or NUL",
                    u.name
                ));
            }
            if !names.insert(&u.name) {
                return bad(format!("broker.users: {:?} is listed twice", u.name));
            }
            crate::ingest::guard::check_hash(&u.password_hash).map_err(|e| {
                ConfigError::Invalid(format!("broker.users {:?}: password_hash: {e}", u.name))
            })?;
            for f in u.publish_filters().iter().chain(&u.subscribe) {
                if let Err(e) = topic::validate_filter(f) {
                    return bad(format!("broker.users {:?}: filter {f:?}: {e}", u.name));
                }
            }
        }
        Ok(())
    }

    /// The cloud topic prefix, defaulted from the gateway id.
    pub fn topic_prefix(&self) -> String {
        self.cloud
            .topic_prefix
            .clone()
            .unwrap_or_else(|| format!("kiri/{}", self.gateway.id))
    }

    /// The largest MQTT packet the uplink reads: room for a batch or a deploy package.
    pub fn uplink_max_packet(&self) -> usize {
        self.broker.max_packet_bytes.max(self.cloud.batch_bytes) * 2 + 4096
    }

    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        let bad = |msg: String| Err(ConfigError::Invalid(msg));
        let id = &self.gateway.id;
        if id.is_empty() || id.contains(['/', '+', '#', '\0']) {
            return bad(format!(
                "gateway.id {id:?} must be non-empty, without / + # or NUL"
            ));
        }
        let cloud = parse_mqtt_url(&self.cloud.url)
            .map_err(|e| ConfigError::Invalid(format!("cloud.url: {e}")))?;
        let c = &self.cloud;
        if !cloud.tls && (c.ca_file.is_some() || c.client_cert.is_some() || !c.alpn.is_empty()) {
            return bad(format!(
                "cloud.ca_file, client_cert and alpn need a TLS URL (mqtts://), not {}",
                c.url
            ));
        }
        if c.client_cert.is_some() != c.client_key.is_some() {
            return bad("cloud.client_cert and cloud.client_key go together".into());
        }
        if c.password.is_some() && c.username.is_none() {
            return bad("cloud.password is set without cloud.username".into());
        }
        if c.batch_records == 0 || c.batch_records > 10_000 {
            return bad("cloud.batch_records must be 1 to 10000".into());
        }
        if c.batch_records > 1 && !(1024..=16 << 20).contains(&c.batch_bytes) {
            return bad("cloud.batch_bytes must be 1 KiB to 16 MiB".into());
        }
        if let Some(ttl) = &self.outbox.ttl {
            match humantime::parse_duration(ttl) {
                Ok(d) if d >= std::time::Duration::from_secs(1) => {}
                Ok(_) => return bad(format!("outbox.ttl = {ttl:?} is shorter than 1s")),
                Err(e) => return bad(format!("outbox.ttl = {ttl:?}: {e}")),
            }
        }
        for t in &self.outbox.high_priority {
            if let Err(e) = topic::validate_filter(t) {
                return bad(format!("outbox.high_priority filter {t:?}: {e}"));
            }
        }
        for k in &self.deploy.trusted_keys {
            crate::deploy::keys::parse_public(k)
                .map_err(|e| ConfigError::Invalid(format!("deploy.trusted_keys: {e}")))?;
        }
        for g in &self.deploy.groups {
            if g.is_empty() || g.contains(['/', '+', '#', '\0']) {
                return bad(format!(
                    "deploy.groups: {g:?} must be non-empty, without / + # or NUL"
                ));
            }
        }
        if self.deploy.max_package_bytes + 1024 > self.broker.max_packet_bytes
            || self.deploy.keep_versions == 0
        {
            return bad(format!(
                "deploy.max_package_bytes must leave 1 KiB under broker.max_packet_bytes ({}): a package travels in one MQTT message; and deploy.keep_versions must be at least 1",
                self.broker.max_packet_bytes
            ));
        }
        self.validate_broker_users()?;
        if self.broker.mode == BrokerMode::External {
            let local = parse_mqtt_url(&self.broker.url)
                .map_err(|e| ConfigError::Invalid(format!("broker.url: {e}")))?;
            if local.tls {
                return bad(format!(
                    "broker.url = {}: TLS to the local broker is not supported; use mqtt://",
                    self.broker.url
                ));
            }
        }
        if let Err(e) = topic::validate_name(&self.topic_prefix()) {
            return bad(format!("cloud.topic_prefix: {e}"));
        }
        if self.broker.max_packet_bytes < self.broker.max_message_bytes + 1024 {
            return bad("broker.max_packet_bytes must exceed broker.max_message_bytes by at least 1024 (room for the topic)".into());
        }
        for (key, v) in [
            ("broker.queue", self.broker.queue as u64),
            ("broker.batch", self.broker.batch as u64),
            ("broker.max_inflight", self.broker.max_inflight as u64),
            ("deploy.max_functions", self.deploy.max_functions as u64),
            ("cloud.inflight", self.cloud.inflight as u64),
            ("outbox.max_records", self.outbox.max_records),
            ("outbox.max_bytes", self.outbox.max_bytes),
        ] {
            if v == 0 {
                return bad(format!("{key} must be at least 1"));
            }
        }
        if !self.dashboard.listen.ip().is_loopback() && self.dashboard.token.is_none() {
            return bad(format!(
                "dashboard.listen = {} is reachable from the network: set dashboard.token (or KIRI_DASHBOARD_TOKEN) explicitly",
                self.dashboard.listen
            ));
        }
        if self.dashboard.tls_cert.is_some() != self.dashboard.tls_key.is_some() {
            return bad("dashboard.tls_cert and dashboard.tls_key go together".into());
        }
        if let Some(jwt) = &self.dashboard.jwt {
            if jwt.keys.is_empty() || jwt.issuer.is_empty() || jwt.audience.is_empty() {
                return bad("dashboard.jwt needs issuer, audience and at least one key".into());
            }
        }
        if self.dashboard.token.as_ref().is_some_and(|t| t.len() < 16) {
            return bad("dashboard.token must be at least 16 characters".into());
        }
        let mut names = std::collections::HashSet::new();
        for f in &self.functions {
            if !names.insert(&f.name) {
                return bad(format!("function {:?} is defined twice", f.name));
            }
            f.validate().map_err(ConfigError::Invalid)?;
        }
        Ok(())
    }
}

/// Maps `KIRI_SECTION_KEY=value` to `section.key`. `KIRI_LOG` (the log filter) is not a key.
fn env_overrides(
    env: impl IntoIterator<Item = (String, String)>,
) -> Serialized<figment::value::Dict> {
    use figment::value::{Dict, Value};
    let mut root = Dict::new();
    for (name, value) in env {
        let Some(rest) = name.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        if rest == "LOG" {
            continue;
        }
        if rest == "CONFIG_FILE" {
            continue;
        }
        let lower = rest.to_ascii_lowercase();
        // figment's value parser (0.10.19) slices a string at a char index as if it were a
        // byte index, and panics on a backslash after a non-ASCII character (found by the
        // `config` fuzz target): such a value is taken as text, unparsed.
        let parsed: Value = if value.contains('\\') && !value.is_ascii() {
            Value::from(value.clone())
        } else {
            value.parse().unwrap_or_else(|_| Value::from(value.clone()))
        };
        // Section names may contain `_` (dead_letters): match them by name, longest first.
        let split = SECTIONS
            .iter()
            .filter_map(|s| Some((*s, lower.strip_prefix(s)?.strip_prefix('_')?)))
            .max_by_key(|(s, _)| s.len());
        match split {
            Some((section, key)) => {
                let entry = root
                    .entry(section.to_string())
                    .or_insert_with(|| Value::from(Dict::new()));
                if let Value::Dict(_, d) = entry {
                    d.insert(key.to_string(), parsed);
                }
            }
            // A bare `KIRI_X` names no key of any section; let extraction report it.
            None => {
                root.insert(lower, parsed);
            }
        }
    }
    Serialized::defaults(root)
}

/// A broker address: `mqtt://host[:port]` (default port 1883) or `mqtts://host[:port]` (TLS,
/// default port 8883).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MqttUrl {
    /// Host name or IP address (without brackets).
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Whether to connect with TLS.
    pub tls: bool,
}

/// Parses an `mqtt://` or `mqtts://` URL.
pub fn parse_mqtt_url(url: &str) -> Result<MqttUrl, String> {
    let (rest, tls) = match url.split_once("://") {
        Some(("mqtt", rest)) => (rest, false),
        Some(("mqtts", rest)) => (rest, true),
        _ => {
            return Err(format!(
                "{url}: expected mqtt://host:port or mqtts://host:port"
            ))
        }
    };
    let default_port = if tls { 8883 } else { 1883 };
    let rest = rest.trim_end_matches('/');
    let port_of = |p: &str| {
        p.parse::<u16>()
            .map_err(|_| format!("{url}: bad port {p:?}"))
    };
    let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
        let (h, after) = v6
            .split_once(']')
            .ok_or_else(|| format!("{url}: unclosed ["))?;
        match after.strip_prefix(':') {
            Some(p) => (h, port_of(p)?),
            None if after.is_empty() => (h, default_port),
            None => return Err(format!("{url}: bad host")),
        }
    } else {
        match rest.rsplit_once(':') {
            Some((h, p)) => (h, port_of(p)?),
            None => (rest, default_port),
        }
    };
    if host.is_empty()
        || host.contains(['/', '@', '[', ']'])
        || (host.contains(':') && !rest.starts_with('['))
    {
        return Err(format!("{url}: bad host"));
    }
    Ok(MqttUrl {
        host: host.to_string(),
        port,
        tls,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn file(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kiri.toml");
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

    fn err(text: &str, vars: &[(&str, &str)]) -> String {
        let (_dir, path) = file(text);
        Config::load_with_env(Some(&path), env(vars))
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn no_file_gives_the_embedded_defaults() {
        let c = Config::load_with_env(None, env(&[])).unwrap();
        assert_eq!(c.broker.mode, BrokerMode::Embedded);
        assert_eq!(c.broker.listen.to_string(), "127.0.0.1:1883");
        assert_eq!(c.gateway.data_dir, PathBuf::from("kiri-data"));
        assert_eq!(c.topic_prefix(), "kiri/gw-01");
        assert!(c.functions.is_empty());
    }

    #[test]
    fn the_shipped_example_parses_and_module_paths_follow_the_file() {
        let (dir, path) = file(EXAMPLE);
        let c = Config::load_with_env(Some(&path), env(&[])).unwrap();
        assert_eq!(c.functions.len(), 4);
        assert!(c.functions[0].module.starts_with(dir.path()));
        assert_eq!(c.functions[1].config["limit"].to_string(), "30");
        assert_eq!(c.functions[0].config["temperature_unit"].to_string(), "F");
    }

    #[test]
    fn environment_variables_override_keys() {
        let (_dir, path) = file("[cloud]\nurl = \"mqtt://a:1\"\n");
        let vars = env(&[
            ("KIRI_CLOUD_URL", "mqtt://b:2"),
            ("KIRI_GATEWAY_DATA_DIR", "/tmp/x"),
            ("KIRI_BROKER_QUEUE", "10"),
            ("KIRI_GATEWAY_ID", "site-7"),
            ("KIRI_LOG", "debug"),
            ("KIRI_CONFIG_FILE", "not-a-key"),
            ("KIRI_DEAD_LETTERS_MAX_RECORDS", "5"),
            ("OTHER", "ignored"),
        ]);
        let c = Config::load_with_env(Some(&path), vars).unwrap();
        assert_eq!(c.cloud.url, "mqtt://b:2");
        assert_eq!(c.gateway.data_dir, PathBuf::from("/tmp/x"));
        assert_eq!(c.broker.queue, 10);
        assert_eq!(c.topic_prefix(), "kiri/site-7");
        assert_eq!(c.dead_letters.max_records, 5);
        let numeric = Config::load_with_env(None, env(&[("KIRI_GATEWAY_ID", "42")])).unwrap();
        assert_eq!(numeric.gateway.id, "42");
    }

    #[test]
    fn an_escape_after_a_non_ascii_character_is_an_error_not_a_panic() {
        let vars = env(&[("KIRI_DEPLOY_GROUPS", "[\"é\\n\"]")]);
        let e = Config::load_with_env(None, vars).unwrap_err().to_string();
        assert!(e.contains("groups"), "{e}");
        let vars = env(&[("KIRI_GATEWAY_ID", "\"é\\u0041\"")]);
        let c = Config::load_with_env(None, vars).unwrap();
        assert_eq!(c.gateway.id, "\"é\\u0041\"", "kept as the text it is");
    }

    #[test]
    fn unknown_keys_are_errors_that_name_the_key() {
        let e = err("[cloud]\nulr = \"mqtt://a:1\"\n", &[]);
        assert!(e.contains("ulr"), "{e}");
        let e = err("[clod]\n", &[]);
        assert!(e.contains("clod"), "{e}");
        let e = err("", &[("KIRI_CLOUD_URLL", "x")]);
        assert!(e.contains("urll"), "{e}");
    }

    #[test]
    fn inconsistent_values_are_explained() {
        let f = |extra: &str| {
            format!(
                "[[functions]]\nname = \"a\"\nmodule = \"a.wasm\"\ntriggers = [\"x/#\"]\n{extra}"
            )
        };
        assert!(err(
            &f("[[functions]]\nname = \"a\"\nmodule = \"b.wasm\"\ntriggers = [\"y\"]\n"),
            &[]
        )
        .contains("defined twice"));
        assert!(err(&f("").replace("x/#", "x/#/y"), &[]).contains("trigger"));
        assert!(
            err(&f("").replace("triggers = [\"x/#\"]", "triggers = []"), &[])
                .contains("no triggers")
        );
        let (_d, timer_only) = file(&f("").replace(
            "triggers = [\"x/#\"]",
            "every = \"10s\"\ncron = \"*/5 * * * *\"",
        ));
        let c = Config::load_with_env(Some(&timer_only), env(&[])).unwrap();
        assert_eq!(c.functions[0].every.as_deref(), Some("10s"));
        assert!(err(&f("every = \"soon\""), &[]).contains("every"));
        assert!(err(&f("limits = { timeout_ms = 0 }"), &[]).contains("timeout_ms"));
        assert!(err(&f("limits = { max_call_depth = 1 }"), &[]).contains("max_call_depth"));
        assert!(err(&f("every = \"1ms\""), &[]).contains("100ms"));
        assert!(err(&f("every = \"300000000000y\""), &[]).contains("100 years"));
        assert!(err(&f("cron = \"61 * * * *\""), &[]).contains("cron"));
        assert!(err("[cloud]\nca_file = \"ca.pem\"\n", &[]).contains("mqtts://"));
        assert!(err(
            "",
            &[
                ("KIRI_CLOUD_URL", "mqtts://a"),
                ("KIRI_CLOUD_CLIENT_CERT", "c.pem")
            ]
        )
        .contains("go together"));
        assert!(err("", &[("KIRI_OUTBOX_TTL", "soon")]).contains("outbox.ttl"));
        assert!(err("[outbox]\nhigh_priority = [\"a/#/b\"]\n", &[]).contains("high_priority"));
        assert!(err("", &[("KIRI_DASHBOARD_LISTEN", "0.0.0.0:8080")]).contains("dashboard.token"));
        assert!(err("", &[("KIRI_DASHBOARD_TOKEN", "short")]).contains("16"));
        let open = env(&[
            ("KIRI_DASHBOARD_LISTEN", "0.0.0.0:8080"),
            ("KIRI_DASHBOARD_TOKEN", "a-long-enough-token"),
        ]);
        assert!(Config::load_with_env(None, open).is_ok());
        assert!(err("", &[("KIRI_GATEWAY_ID", "a/b")]).contains("gateway.id"));
        assert!(err("", &[("KIRI_BROKER_QUEUE", "0")]).contains("broker.queue"));
        assert!(err("[broker]\nmode = \"cloud\"\n", &[]).contains("cloud"));
        assert!(
            Config::load_with_env(Some(Path::new("/nonexistent/k.toml")), env(&[]))
                .unwrap_err()
                .to_string()
                .contains("does not exist")
        );
    }

    #[test]
    fn mqtt_urls_parse() {
        let url = |host: &str, port, tls| {
            Ok(MqttUrl {
                host: host.into(),
                port,
                tls,
            })
        };
        assert_eq!(parse_mqtt_url("mqtt://host:1884"), url("host", 1884, false));
        assert_eq!(parse_mqtt_url("mqtt://host"), url("host", 1883, false));
        assert_eq!(parse_mqtt_url("mqtts://host"), url("host", 8883, true));
        assert_eq!(
            parse_mqtt_url("mqtts://h.example:443"),
            url("h.example", 443, true)
        );
        assert_eq!(
            parse_mqtt_url("mqtt://[::1]:1885/"),
            url("::1", 1885, false)
        );
        assert!(parse_mqtt_url("http://host").is_err());
        assert!(parse_mqtt_url("mqtt://host:x").is_err());
        assert!(parse_mqtt_url("mqtt://:1").is_err());
    }

    #[test]
    fn log_forwarding_levels_include_the_more_severe() {
        assert!(LogForwarding::Warn.passes("error") && LogForwarding::Warn.passes("warn"));
        assert!(!LogForwarding::Warn.passes("info") && !LogForwarding::Off.passes("error"));
        assert!(LogForwarding::Debug.passes("debug"));
    }

    #[test]
    fn the_cloud_password_is_never_shown() {
        let c = Config::load_with_env(
            None,
            env(&[
                ("KIRI_CLOUD_USERNAME", "gw"),
                ("KIRI_CLOUD_PASSWORD", "hunter2-secret"),
            ]),
        )
        .unwrap();
        assert_eq!(
            c.cloud.password.as_ref().unwrap().expose(),
            "hunter2-secret"
        );
        assert!(!format!("{c:?}").contains("hunter2"));
    }

    #[test]
    fn broker_users_are_checked_and_a_network_listener_needs_them() {
        let hash = "$argon2id$v=19$m=7168,t=5,p=1$7UvXlwYyI9yF7YmvmFmNFg$rHoHAPYlIUIF13FC6o98+IIp6OcoAH3AoSNCAAAhb3U";
        // `broker` keys, then one user `name` with `extra` keys.
        let with = |broker: &str, name: &str, extra: &str| {
            format!("[broker]\n{broker}\n[[broker.users]]\nname = \"{name}\"\npassword_hash = \"{hash}\"\n{extra}")
        };
        let network = "listen = \"0.0.0.0:1883\"";
        let (_dir, path) = file(&with(network, "s1", "subscribe = [\"commands/s1/#\"]"));
        let c = Config::load_with_env(Some(&path), env(&[])).unwrap();
        assert_eq!(c.broker.users[0].publish_filters(), ["sensors/s1/#"]);
        assert_eq!(c.broker.users[0].subscribe, ["commands/s1/#"]);

        let open = format!("[broker]\n{network}\n");
        assert!(
            err(&open, &[]).contains("broker.users"),
            "{}",
            err(&open, &[])
        );
        let (_dir, path) = file(&format!("{open}allow_anonymous = true\n"));
        assert!(Config::load_with_env(Some(&path), env(&[])).is_ok());
        let (_dir, path) = file("[broker]\nlisten = \"127.0.0.1:1883\"\n");
        assert!(Config::load_with_env(Some(&path), env(&[])).is_ok());

        for (text, expect) in [
            (with(network, "s1", "publish = [\"a/#/b\"]"), "filter"),
            (
                with(&format!("{network}\nallow_anonymous = true"), "s1", ""),
                "exclude",
            ),
            (
                with(network, "s1", "").replace(hash, "hunter2"),
                "password-hash",
            ),
            (with(network, "s:1", ""), "name"),
            (with("mode = \"external\"", "s1", ""), "embedded"),
            (
                format!(
                    "{}[[broker.users]]\nname = \"s1\"\npassword_hash = \"{hash}\"\n",
                    with(network, "s1", "")
                ),
                "twice",
            ),
        ] {
            let e = err(&text, &[]);
            assert!(e.contains(expect), "{text}\n-> {e}");
        }
    }
}

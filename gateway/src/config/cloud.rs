//! `[cloud]`: where results go, and how (the uplink's broker, TLS, batching, pacing).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::value::{opt_text, text, Secret};
use crate::net::parse_mqtt_url;

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
    /// How results travel: Kiri's CBOR envelope, CloudEvents 1.0 in structured JSON, or (MQTT 5
    /// only) the payload as emitted with its metadata in user properties.
    pub encoding: Encoding,
    /// The MQTT version of the uplink: `"3.1.1"` or `"5"`.
    pub protocol_version: MqttVersion,
}

/// The MQTT version the uplink speaks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub enum MqttVersion {
    /// MQTT 3.1.1 (protocol level 4): every broker speaks it.
    #[default]
    #[serde(rename = "3.1.1")]
    V311,
    /// MQTT 5: message properties (content type, expiry, user properties) and reasons on
    /// acknowledgements.
    #[serde(rename = "5")]
    V5,
}

impl<'de> Deserialize<'de> for MqttVersion {
    /// `"3.1.1"` or `"5"`, as text or a number (`protocol_version = 5`).
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Text(String),
            Int(i64),
            Float(f64),
        }
        let text = match Raw::deserialize(d)? {
            Raw::Text(t) => t,
            Raw::Int(i) => i.to_string(),
            Raw::Float(f) => f.to_string(),
        };
        match text.trim() {
            "3.1.1" | "4" | "311" => Ok(MqttVersion::V311),
            "5" | "5.0" => Ok(MqttVersion::V5),
            other => Err(serde::de::Error::custom(format!(
                "unknown MQTT version {other:?}: use \"3.1.1\" or \"5\""
            ))),
        }
    }
}

/// How results travel to the cloud.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Encoding {
    /// Kiri's CBOR envelope (`docs/data-formats.md`), compact.
    #[default]
    Cbor,
    /// CloudEvents 1.0, structured JSON (`application/cloudevents+json`; batches as
    /// `application/cloudevents-batch+json`), readable by any JSON consumer.
    Cloudevents,
    /// MQTT 5 only: each result's payload exactly as the function emitted it, its id, seq,
    /// function, gateway and content type in user properties, the content type property set.
    Raw,
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

impl Default for CloudConfig {
    fn default() -> Self {
        CloudConfig {
            url: "mqtt://127.0.0.1:1884".into(),
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
            encoding: Encoding::Cbor,
            protocol_version: MqttVersion::V311,
        }
    }
}

impl CloudConfig {
    /// Whether there is a cloud to forward to: `url` is not empty.
    pub fn enabled(&self) -> bool {
        !self.url.trim().is_empty()
    }

    /// Checks the section on its own.
    pub(super) fn validate(&self) -> Result<(), String> {
        let c = self;
        // Empty: no uplink yet (results are held).
        let tls = match c.enabled() {
            true => {
                parse_mqtt_url(&c.url)
                    .map_err(|e| format!("cloud.url: {e}"))?
                    .tls
            }
            false => false,
        };
        if !tls && (c.ca_file.is_some() || c.client_cert.is_some() || !c.alpn.is_empty()) {
            return Err(format!(
                "cloud.ca_file, client_cert and alpn need a TLS URL (mqtts://), not {}",
                c.url
            ));
        }
        if c.client_cert.is_some() != c.client_key.is_some() {
            return Err("cloud.client_cert and cloud.client_key go together".into());
        }
        if c.password.is_some() && c.username.is_none() {
            return Err("cloud.password is set without cloud.username".into());
        }
        if c.batch_records == 0 || c.batch_records > 10_000 {
            return Err("cloud.batch_records must be 1 to 10000".into());
        }
        if c.batch_records > 1 && !(1024..=16 << 20).contains(&c.batch_bytes) {
            return Err("cloud.batch_bytes must be 1 KiB to 16 MiB".into());
        }
        if c.inflight == 0 {
            return Err("cloud.inflight must be at least 1".into());
        }
        if c.encoding == Encoding::Raw {
            if c.protocol_version != MqttVersion::V5 {
                return Err(
                    "cloud.encoding = \"raw\" needs cloud.protocol_version = \"5\": the result's \
                     id, function and content type travel as MQTT 5 user properties"
                        .into(),
                );
            }
            if c.batch_records > 1 {
                return Err(
                    "cloud.encoding = \"raw\" sends one result per message (its properties are \
                     the message's): set cloud.batch_records = 1, or use \"cbor\" or \
                     \"cloudevents\" to batch"
                        .into(),
                );
            }
        }
        Ok(())
    }

    /// The TLS files and protocols of `mqtts://` (`ca_file`, `client_cert`, `client_key`,
    /// `alpn`).
    pub fn tls_files(&self) -> crate::net::tls::ClientFiles<'_> {
        crate::net::tls::ClientFiles {
            ca_file: self.ca_file.as_deref(),
            client_cert: self.client_cert.as_deref(),
            client_key: self.client_key.as_deref(),
            alpn: &self.alpn,
        }
    }
}

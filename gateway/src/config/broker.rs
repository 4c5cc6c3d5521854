//! `[broker]` and `[[broker.users]]`: where sensor messages come from, and the accounts of
//! the embedded broker.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use super::value::{opt_text, text};
use crate::net::{parse_mqtt_url, topic};

/// Which MQTT broker sensors publish to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BrokerMode {
    /// Kiri runs a rumqttd broker in-process on `broker.listen`.
    Embedded,
    /// Kiri connects to an existing broker at `broker.url`.
    External,
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
    /// External broker: the QoS 1 messages it sends a session before it waits for their
    /// acknowledgements (Mosquitto's `max_inflight_messages`, 20 unless set). A commit window
    /// closes at that many unacknowledged messages, so that the broker never waits on it.
    pub inflight_messages: usize,
    /// Embedded broker: how many packets rumqttd reads from one client connection in one go,
    /// and how many QoS 0 messages it takes from its log for one subscription at a time (not
    /// a QoS 1 window: rumqttd fixes that at 100 per connection).
    pub max_inflight: usize,
    /// Embedded broker: the accounts sensors log in with, each with its topic rules. With
    /// none, clients connect without logging in (see `allow_anonymous`).
    pub users: Vec<BrokerUser>,
    /// Embedded broker without `users`: let clients connect without logging in when it
    /// listens on a non-loopback address (on loopback they always may).
    pub allow_anonymous: bool,
    /// Embedded broker: client connections at once, at most; more are closed as they arrive.
    /// Lowered at start to what the open-file limit leaves (each costs three descriptors).
    pub max_connections: usize,
    /// Embedded broker: client connections at once from one IP address (IPv6: one /64), at
    /// most.
    pub max_connections_per_address: usize,
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
            inflight_messages: 20,
            max_inflight: 256,
            users: Vec::new(),
            allow_anonymous: false,
            max_connections: 1024,
            max_connections_per_address: 64,
        }
    }
}

impl BrokerConfig {
    /// The QoS 1 messages the site broker sends one of Kiri's sessions before it waits for
    /// acknowledgements: `inflight_messages` for an external broker, and for the embedded one
    /// a little under rumqttd's fixed window of 100.
    pub fn unacked(&self) -> usize {
        match self.mode {
            BrokerMode::Embedded => 80,
            BrokerMode::External => self.inflight_messages,
        }
    }

    /// Checks the section on its own.
    pub(super) fn validate(&self) -> Result<(), String> {
        self.validate_users()?;
        if self.mode == BrokerMode::External {
            let local = parse_mqtt_url(&self.url).map_err(|e| format!("broker.url: {e}"))?;
            if local.tls {
                return Err(format!(
                    "broker.url = {}: TLS to the local broker is not supported; use mqtt://",
                    self.url
                ));
            }
        }
        if self.max_packet_bytes < self.max_message_bytes + 1024 {
            return Err("broker.max_packet_bytes must exceed broker.max_message_bytes by at least 1024 (room for the topic)".into());
        }
        for (key, v) in [
            ("broker.queue", self.queue),
            ("broker.batch", self.batch),
            ("broker.inflight_messages", self.inflight_messages),
            ("broker.max_inflight", self.max_inflight),
            ("broker.max_connections", self.max_connections),
            (
                "broker.max_connections_per_address",
                self.max_connections_per_address,
            ),
        ] {
            if v == 0 {
                return Err(format!("{key} must be at least 1"));
            }
        }
        Ok(())
    }

    /// The embedded broker's accounts: names, hashes, rules; and no anonymous clients on a
    /// network address unless asked for.
    fn validate_users(&self) -> Result<(), String> {
        if !self.users.is_empty() && self.mode == BrokerMode::External {
            return Err(
                "broker.users are for the embedded broker; an external broker has its own accounts"
                    .into(),
            );
        }
        if !self.users.is_empty() && self.allow_anonymous {
            return Err("broker.allow_anonymous and broker.users exclude each other: with users, every client logs in".into());
        }
        if self.mode == BrokerMode::Embedded
            && self.users.is_empty()
            && !self.allow_anonymous
            && !self.listen.ip().is_loopback()
        {
            return Err(format!(
                "broker.listen = {} is reachable from the network: add broker.users (sensor accounts; see `kiri password-hash`), or set broker.allow_anonymous = true",
                self.listen
            ));
        }
        let mut names = std::collections::HashSet::new();
        for u in &self.users {
            if u.name.is_empty() || u.name.contains(['/', '+', '#', ':', '\0']) {
                return Err(format!(
                    "broker.users: name {:?} must be non-empty, without / + # : or NUL",
                    u.name
                ));
            }
            if !names.insert(&u.name) {
                return Err(format!("broker.users: {:?} is listed twice", u.name));
            }
            crate::crypto::password::check_hash(&u.password_hash)
                .map_err(|e| format!("broker.users {:?}: password_hash: {e}", u.name))?;
            for f in u.publish_filters().iter().chain(&u.subscribe) {
                if let Err(e) = topic::validate_filter(f) {
                    return Err(format!("broker.users {:?}: filter {f:?}: {e}", u.name));
                }
            }
        }
        Ok(())
    }
}

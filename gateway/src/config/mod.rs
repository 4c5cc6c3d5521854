//! The gateway's configuration: one TOML file, every key overridable from the environment.
//!
//! Sources, later ones winning: built-in defaults, the TOML file (if given), then
//! `KIRI_<SECTION>_<KEY>` environment variables (`KIRI_CLOUD_URL` sets `cloud.url`,
//! `KIRI_DASHBOARD_JWT__ISSUER` sets `dashboard.jwt.issuer`; `env.rs`). Unknown keys in the
//! file are errors naming the key; a variable that names no key is reported and not taken.
//!
//! One file per TOML section, each with its defaults and its own checks (`validate`); this
//! file loads the whole, makes relative paths relative to the file, and checks what spans
//! sections. The reference for users is `docs/configuration.md`; a test keeps it, the example
//! (`kiri.example.toml`, `kiri config example`) and these structs in agreement. This module
//! imports only leaves (`net`, `crypto`): every other module may import it.

mod broker;
mod cloud;
mod dashboard;
mod dead_letters;
mod deploy;
mod env;
mod errors;
mod functions;
mod gateway;
mod log;
mod outbox;
mod show;
mod value;

use std::path::Path;

pub use env::COMMAND_VARIABLES;
use figment::providers::{Format, Serialized, Toml};
use figment::{Figment, Provider};
use serde::{Deserialize, Serialize};

pub use broker::{BrokerConfig, BrokerMode, BrokerUser};
pub use cloud::{CloudConfig, Encoding, LogForwarding, MqttVersion};
pub use dashboard::{DashboardConfig, JwtConfig};
pub use dead_letters::DeadLetterConfig;
pub use deploy::DeployConfig;
pub use functions::{FunctionConfig, FunctionLimits, Trigger, MAX_EVERY, MIN_EVERY};
pub use gateway::GatewayConfig;
pub use log::{LogConfig, LogFormat};
pub use outbox::{OutboxConfig, WhenFull};
pub use value::{ConfigValue, Secret};

use crate::net::topic;

/// The commented example configuration (`kiri config example`, `kiri.example.toml`).
pub const EXAMPLE: &str = include_str!("../../../kiri.example.toml");

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
    /// The file or the environment did not parse, or named an unknown key: each error in
    /// the user's words (the key as written, where, the closest valid key).
    #[error("{0}")]
    Parse(String),
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
    /// The gateway's own log.
    pub log: LogConfig,
    /// The functions to run.
    pub functions: Vec<FunctionConfig>,
    /// `kiri run --watch`: reload a configured function's module when its file changes (not a
    /// key of the file).
    #[serde(skip)]
    pub watch: bool,
    /// `KIRI_*` environment variables that name no key, each with a line saying so (the
    /// gateway logs them as warnings; `kiri config check` prints them).
    #[serde(skip)]
    pub ignored_env: Vec<String>,
    /// The file it was read from (a reload reads it again).
    #[serde(skip)]
    pub file: Option<std::path::PathBuf>,
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
        let text = file.and_then(|p| std::fs::read_to_string(p).ok());
        let source = file.zip(text.as_deref()).map(|(p, text)| errors::Source {
            name: p.display().to_string(),
            text,
        });
        let mut config = Self::extract(figment, source.as_ref(), file.and_then(Path::parent), env)?;
        config.file = file.map(Path::to_path_buf);
        Ok(config)
    }

    /// Every key's value but the functions', by dotted path (`cloud.url`), for telling what
    /// changed between two configurations.
    pub fn settings(&self) -> std::collections::BTreeMap<String, figment::value::Value> {
        let mut out = std::collections::BTreeMap::new();
        if let Ok(tree) = Serialized::defaults(self).data() {
            for (_, root) in tree {
                for (section, value) in root {
                    if section != "functions" {
                        flatten(&section, &value, &mut out);
                    }
                }
            }
        }
        out
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
        let source = errors::Source {
            name: "the configuration".into(),
            text,
        };
        Self::extract(figment, Some(&source), Some(dir), env)
    }

    /// The environment over `figment`, extracted, paths made relative to `dir`, validated.
    fn extract(
        figment: Figment,
        source: Option<&errors::Source<'_>>,
        dir: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let (variables, ignored_env) = env::overrides(env);
        let figment = variables.into_iter().fold(figment, Figment::merge);
        let mut config: Config = figment
            .extract()
            .map_err(|e| ConfigError::Parse(errors::describe(e, source)))?;
        config.ignored_env = ignored_env;
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

    /// The configuration as TOML, its sections in the file's order, with every secret shown as `***`: the
    /// cloud password, the dashboard token and the broker users' password hashes.
    pub fn to_toml_masked(&self) -> Result<String, ConfigError> {
        let mut shown = self.clone();
        // `cloud.password` is a `Secret`: it serialises as `***` itself.
        if shown.dashboard.token.is_some() {
            shown.dashboard.token = Some("***".into());
        }
        for user in &mut shown.broker.users {
            user.password_hash = "***".into();
        }
        let tree = Serialized::defaults(&shown)
            .data()
            .map_err(|e| ConfigError::Invalid(format!("show the configuration: {e}")))?;
        let root = tree.into_values().next().unwrap_or_default();
        Ok(show::document(&root, &SECTIONS))
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

    /// Checks each section, then what spans sections.
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        self.gateway.validate().map_err(ConfigError::Invalid)?;
        self.cloud.validate().map_err(ConfigError::Invalid)?;
        self.outbox.validate().map_err(ConfigError::Invalid)?;
        self.deploy.validate().map_err(ConfigError::Invalid)?;
        self.broker.validate().map_err(ConfigError::Invalid)?;
        self.dashboard.validate().map_err(ConfigError::Invalid)?;
        self.log.validate().map_err(ConfigError::Invalid)?;
        let bad = |msg: String| Err(ConfigError::Invalid(msg));
        if self.deploy.max_package_bytes + 1024 > self.broker.max_packet_bytes
            || self.deploy.keep_versions == 0
        {
            return bad(format!(
                "deploy.max_package_bytes must leave 1 KiB under broker.max_packet_bytes ({}): a package travels in one MQTT message; and deploy.keep_versions must be at least 1",
                self.broker.max_packet_bytes
            ));
        }
        if let Err(e) = topic::validate_name(&self.topic_prefix()) {
            return bad(format!("cloud.topic_prefix: {e}"));
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

/// `value` at `path`, and what is inside it, as text by dotted path.
fn flatten(
    path: &str,
    value: &figment::value::Value,
    out: &mut std::collections::BTreeMap<String, figment::value::Value>,
) {
    match value {
        figment::value::Value::Dict(_, d) => {
            for (k, v) in d {
                flatten(&format!("{path}.{k}"), v, out);
            }
        }
        other => {
            out.insert(path.to_string(), other.clone());
        }
    }
}

#[cfg(test)]
mod reference;

#[cfg(test)]
mod tests;

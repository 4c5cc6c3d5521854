//! The uplink's settings from the configuration: at start, and again on a reload that changes
//! the cloud settings (or `outbox.ttl`, which sets its messages' expiry, or the contents of
//! the cloud TLS files: a renewed certificate is taken by a reload).

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use crate::config::Config;
use crate::net::{self, parse_mqtt_url, Backoff};
use crate::uplink::{Credentials, Target, UplinkConfig};

/// The cloud broker's address and TLS configuration, read from the configuration's files.
#[derive(Clone)]
pub(super) struct Cloud {
    /// `None` without a cloud (`cloud.url` empty).
    url: Option<net::MqttUrl>,
    tls: Option<Arc<rustls::ClientConfig>>,
    /// The TLS files' contents, to tell a renewed certificate on a reload.
    fingerprint: Vec<u8>,
}

impl Cloud {
    /// Reads them: a URL or TLS file that cannot be used is an error.
    pub(super) fn read(config: &Config) -> anyhow::Result<Cloud> {
        let url = match config.cloud.enabled() {
            true => Some(parse_mqtt_url(&config.cloud.url).map_err(anyhow::Error::msg)?),
            false => None,
        };
        let tls = match url.as_ref().is_some_and(|u| u.tls) {
            true => Some(net::tls::client_config(config.cloud.tls_files()).context("cloud TLS")?),
            false => None,
        };
        Ok(Cloud {
            url,
            tls,
            fingerprint: fingerprint(config),
        })
    }

    /// Whether the TLS files' contents differ from those `other` was read from.
    pub(super) fn files_changed(&self, other: &Cloud) -> bool {
        self.fingerprint != other.fingerprint
    }
}

/// The cloud TLS files' contents, one after the other (a file that cannot be read counts as
/// empty: reading it for use says why).
fn fingerprint(config: &Config) -> Vec<u8> {
    let f = config.cloud.tls_files();
    let mut out = Vec::new();
    for path in [f.ca_file, f.client_cert, f.client_key]
        .into_iter()
        .flatten()
    {
        out.extend(std::fs::read(path).unwrap_or_default());
        out.push(0);
    }
    out
}

/// Where the uplink goes and with what settings.
pub(super) fn target(
    config: &Config,
    cloud: &Cloud,
    store_id: u64,
    deploy_topics: Vec<String>,
) -> Target {
    Target {
        url: config.cloud.url.clone(),
        config: uplink_config(config, cloud, store_id, deploy_topics),
    }
}

/// What the uplink needs to know; `None` without a cloud.
fn uplink_config(
    config: &Config,
    cloud: &Cloud,
    store_id: u64,
    deploy_topics: Vec<String>,
) -> Option<UplinkConfig> {
    let c = &config.cloud;
    let gw = &config.gateway.id;
    let url = cloud.url.as_ref()?;
    Some(UplinkConfig {
        host: url.host.clone(),
        port: url.port,
        tls: cloud.tls.clone(),
        credentials: c.username.as_ref().map(|u| Credentials {
            username: u.clone(),
            password: c
                .password
                .as_ref()
                .map(|p| p.expose().to_string())
                .unwrap_or_default(),
        }),
        client_id: c
            .client_id
            .clone()
            .unwrap_or_else(|| format!("kiri-{gw}-uplink")),
        topic_prefix: config.topic_prefix(),
        gateway: gw.clone(),
        store_id,
        inflight: c.inflight,
        batch_records: c.batch_records,
        batch_bytes: c.batch_bytes,
        max_bytes_per_sec: c.max_bytes_per_sec,
        encoding: c.encoding,
        protocol: c.protocol_version,
        ttl: config.outbox.ttl(),
        keep_alive: Duration::from_secs(c.keep_alive_secs.max(5)),
        max_packet: config.uplink_max_packet(),
        backoff: Backoff::new(
            Duration::from_millis(c.backoff_initial_ms),
            Duration::from_millis(c.backoff_max_ms),
        ),
        deploy_topics,
    })
}

//! `[dashboard]` and `[dashboard.jwt]`: the HTTP API and the dashboard page (address, token,
//! TLS, JWT issuer).

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::value::opt_text;

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
    pub jwt: Option<JwtConfig>,
    /// Host names requests may carry in their `Host` header, besides IP addresses and
    /// `localhost` (which always may): the names the gateway is reached by. Any other name is
    /// refused, against DNS rebinding.
    pub hosts: Vec<String>,
    /// HTTP connections at once, at most; at the limit the one idle longest is closed to
    /// make room, or else the new one. Lowered at start to what the open-file limit leaves.
    pub max_connections: usize,
    /// HTTP connections at once from one IP address (IPv6: one /64), at most, with the same
    /// policy.
    pub max_connections_per_address: usize,
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
            hosts: Vec::new(),
            max_connections: 64,
            max_connections_per_address: 16,
        }
    }
}

/// `[dashboard.jwt]`: the issuer whose tokens the HTTP API accepts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtConfig {
    /// The `iss` tokens must carry.
    pub issuer: String,
    /// The `aud` tokens must carry (one of, when it is a list).
    pub audience: String,
    /// The issuer's public keys (PEM, `PUBLIC KEY`: Ed25519 or P-256); several for rotation.
    pub keys: Vec<PathBuf>,
    /// Clock skew tolerated on `exp`, `nbf` and `iat`, seconds.
    #[serde(default = "default_leeway")]
    pub leeway_s: u64,
}

fn default_leeway() -> u64 {
    30
}

impl DashboardConfig {
    /// Checks the section on its own.
    pub(super) fn validate(&self) -> Result<(), String> {
        if !self.listen.ip().is_loopback() && self.token.is_none() {
            return Err(format!(
                "dashboard.listen = {} is reachable from the network: set dashboard.token (or KIRI_DASHBOARD_TOKEN) explicitly",
                self.listen
            ));
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return Err("dashboard.tls_cert and dashboard.tls_key go together".into());
        }
        if let Some(jwt) = &self.jwt {
            if jwt.keys.is_empty() || jwt.issuer.is_empty() || jwt.audience.is_empty() {
                return Err("dashboard.jwt needs issuer, audience and at least one key".into());
            }
        }
        if let Some(h) = self
            .hosts
            .iter()
            .find(|h| h.is_empty() || h.contains([':', '/', ' ']))
        {
            return Err(format!(
                "dashboard.hosts: {h:?} is not a host name (no port, scheme or path)"
            ));
        }
        if self.max_connections == 0 || self.max_connections_per_address == 0 {
            return Err(
                "dashboard.max_connections and dashboard.max_connections_per_address must be at least 1"
                    .into(),
            );
        }
        if self.token.as_ref().is_some_and(|t| t.len() < 16) {
            return Err("dashboard.token must be at least 16 characters".into());
        }
        Ok(())
    }
}

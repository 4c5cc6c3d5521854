//! The open-file budget: every client connection costs file descriptors, and so does the
//! store (sled's files, a value over 128 KiB in a file of its own), the function modules,
//! the uplink and Kiri's own sessions. When connections take them all, the store fails and
//! nothing is processed, so the connection limits are derived from the open-file limit with
//! [`RESERVED`] kept back.
//!
//! At start the soft open-file limit is raised to the hard one (systemd's `LimitNOFILE`, or
//! `ulimit -Hn`); [`RESERVED`] descriptors are kept for the store and Kiri's own needs; of
//! the rest, the HTTP API may use an eighth and the embedded broker the remainder, three
//! per client connection (the client's socket, the guard's to rumqttd, and rumqttd's side
//! of it). `broker.max_connections` and `dashboard.max_connections` are lowered to fit, with
//! a WARN saying so.

use crate::config::{BrokerConfig, BrokerMode, DashboardConfig};

/// Descriptors kept for the store, the function modules, the uplink, Kiri's own sessions,
/// the runtime's own (epoll, eventfds) and the standard streams.
pub const RESERVED: u64 = 256;
/// The lowest open-file limit Kiri starts with: the reserve and a few connections.
pub const MIN_OPEN_FILES: u64 = RESERVED + 64;
/// Descriptors one embedded-broker client costs.
const PER_BROKER_CONNECTION: u64 = 3;

/// Connections at once, as the open-file limit allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// The soft open-file limit, after raising it.
    pub open_files: u64,
    /// Embedded broker clients at once (0 with an external broker).
    pub broker: usize,
    /// Embedded broker clients at once from one address.
    pub broker_per_address: usize,
    /// HTTP connections at once.
    pub http: usize,
    /// HTTP connections at once from one address.
    pub http_per_address: usize,
}

/// Raises the soft open-file limit as far as allowed and plans the connections within it.
pub fn budget(broker: &BrokerConfig, dashboard: &DashboardConfig) -> anyhow::Result<Budget> {
    let open_files = raise_open_file_limit();
    let budget = plan(open_files, broker, dashboard).map_err(anyhow::Error::msg)?;
    let embedded = broker.mode == BrokerMode::Embedded;
    if embedded && budget.broker < broker.max_connections {
        tracing::warn!(
            "broker.max_connections = {} lowered to {} by the open-file limit {open_files} (raise LimitNOFILE)",
            broker.max_connections,
            budget.broker
        );
    }
    if budget.http < dashboard.max_connections {
        tracing::warn!(
            "dashboard.max_connections = {} lowered to {} by the open-file limit {open_files} (raise LimitNOFILE)",
            dashboard.max_connections,
            budget.http
        );
    }
    tracing::info!(
        open_files,
        reserved = RESERVED,
        broker = budget.broker,
        http = budget.http,
        "connection limits"
    );
    metrics::gauge!("kiri_open_files_limit").set(open_files as f64);
    Ok(budget)
}

/// The connection limits within `open_files` descriptors.
pub fn plan(
    open_files: u64,
    broker: &BrokerConfig,
    dashboard: &DashboardConfig,
) -> Result<Budget, String> {
    if open_files < MIN_OPEN_FILES {
        return Err(format!(
            "the open-file limit is {open_files}: Kiri needs at least {MIN_OPEN_FILES} ({RESERVED} for the store and its own sessions); raise it (LimitNOFILE= in the unit, ulimit -n)"
        ));
    }
    let spare = open_files - RESERVED;
    let http = (dashboard.max_connections as u64).min((spare / 8).max(1));
    let broker_max = match broker.mode {
        BrokerMode::Embedded => {
            (broker.max_connections as u64).min((spare - http) / PER_BROKER_CONNECTION)
        }
        BrokerMode::External => 0,
    };
    let (http, broker_max) = (http as usize, broker_max as usize);
    Ok(Budget {
        open_files,
        broker: broker_max,
        broker_per_address: broker.max_connections_per_address.min(broker_max),
        http,
        http_per_address: dashboard.max_connections_per_address.min(http),
    })
}

/// Raises the soft open-file limit to the hard one; the soft limit then in force.
fn raise_open_file_limit() -> u64 {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    // The kernel refuses more than fs.nr_open (1,048,576 by default), and "unlimited".
    const CEILING: u64 = 1 << 20;
    let limit = getrlimit(Resource::Nofile);
    let current = limit.current.unwrap_or(CEILING);
    let hard = limit.maximum.unwrap_or(CEILING).min(CEILING);
    if hard > current {
        let raised = Rlimit {
            current: Some(hard),
            maximum: limit.maximum,
        };
        if let Err(e) = setrlimit(Resource::Nofile, raised) {
            tracing::debug!(error = %e, "cannot raise the open-file limit");
        }
    }
    getrlimit(Resource::Nofile).current.unwrap_or(CEILING)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_store_keeps_its_reserve_under_a_small_limit() {
        let (broker, dashboard) = (BrokerConfig::default(), DashboardConfig::default());
        let b = plan(1024, &broker, &dashboard).unwrap();
        assert_eq!(b.http, 64);
        assert_eq!(b.broker, (1024 - 256 - 64) / 3);
        assert!(3 * b.broker as u64 + b.http as u64 + RESERVED <= 1024);
        assert_eq!(b.broker_per_address, 64);
        assert_eq!(b.http_per_address, 16);

        let roomy = plan(8192, &broker, &dashboard).unwrap();
        assert_eq!((roomy.broker, roomy.http), (1024, 64));

        let tight = plan(MIN_OPEN_FILES, &broker, &dashboard).unwrap();
        assert_eq!(tight.http, 8);
        assert_eq!(tight.broker, 18);
        assert_eq!(tight.broker_per_address, 18);
        assert!(plan(MIN_OPEN_FILES - 1, &broker, &dashboard)
            .unwrap_err()
            .contains("open-file limit"));

        let external = BrokerConfig {
            mode: BrokerMode::External,
            ..BrokerConfig::default()
        };
        assert_eq!(plan(1024, &external, &dashboard).unwrap().broker, 0);
    }
}

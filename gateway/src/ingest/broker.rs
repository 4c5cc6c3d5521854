//! The embedded broker: rumqttd, in-process, for sensors to publish to when no external
//! broker is configured.
//!
//! rumqttd keeps messages in memory: a message it acknowledged to a sensor but Kiri has not
//! yet committed is lost if the process dies. Use an external broker with persistence (for
//! example Mosquitto with `persistence true`) where that window matters.

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use rumqttd::{Broker, Config, ConnectionSettings, RouterConfig, ServerSettings};

use super::guard::InternalLogin;

/// The embedded broker could not start.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// The listen address is taken or not available.
    #[error("embedded broker cannot listen on {addr}: {source} (set broker.listen, or broker.mode = \"external\")")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The broker thread ended or never accepted connections.
    #[error("embedded broker on {0} did not come up")]
    NotUp(SocketAddr),
}

/// Starts rumqttd on `listen` in its own threads and waits until it accepts connections.
/// With `login`, clients must log in with that user name and password (the guard and
/// Kiri's own sessions, when `broker.users` is set).
pub fn start(
    listen: SocketAddr,
    max_packet_bytes: usize,
    max_inflight: usize,
    login: Option<&InternalLogin>,
) -> Result<(), BrokerError> {
    // rumqttd only logs a failed bind from its server thread; check first for a clear error.
    drop(
        TcpListener::bind(listen).map_err(|source| BrokerError::Listen {
            addr: listen,
            source,
        })?,
    );
    let connections = ConnectionSettings {
        connection_timeout_ms: 60_000,
        max_payload_size: max_packet_bytes,
        max_inflight_count: max_inflight,
        auth: login.map(|l| HashMap::from([(l.user.clone(), l.password.clone())])),
        external_auth: None,
        dynamic_filters: true,
    };
    let server = ServerSettings {
        name: "kiri-embedded".into(),
        listen,
        tls: None,
        next_connection_delay_ms: 1,
        connections,
    };
    let segment = (4usize << 20).max(2 * max_packet_bytes);
    let config = Config {
        id: 0,
        router: RouterConfig {
            // The guard's clients, and room beyond them for Kiri's own sessions.
            max_connections: super::guard::MAX_CONNECTIONS + 16,
            max_outgoing_packet_count: max_inflight as u64,
            max_segment_size: segment,
            max_segment_count: 8,
            custom_segment: None,
            initialized_filters: None,
            shared_subscriptions_strategy: Default::default(),
        },
        v4: Some(HashMap::from([("1".to_string(), server)])),
        ..Config::default()
    };
    let thread = std::thread::Builder::new()
        .name("kiri-broker".into())
        .spawn(move || {
            let mut broker = Broker::new(config);
            if let Err(e) = broker.start() {
                tracing::error!(error = %e, "embedded broker stopped");
            }
        })
        .map_err(|_| BrokerError::NotUp(listen))?;
    // No probe connection (rumqttd logs an aborted handshake as an error): give the server
    // thread a moment to bind, and report it if it died. Ingest retries until it is up.
    std::thread::sleep(Duration::from_millis(50));
    if thread.is_finished() {
        return Err(BrokerError::NotUp(listen));
    }
    tracing::info!(%listen, "embedded broker listening");
    Ok(())
}

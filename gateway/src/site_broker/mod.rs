//! The site broker sensors publish to: with `broker.mode = "embedded"` (the default) rumqttd
//! in-process on a loopback port of its own, behind the [`guard`] on `broker.listen` (which
//! bounds connections, and checks logins and topic rules when `broker.users` is set); with
//! `"external"`, an existing broker (Mosquitto) that Kiri only connects to. [`start`] gives the
//! address Kiri's own sessions (the control session, local publishing) connect to.
//!
//! With the embedded broker, the function lanes take sensors' messages in-process from the
//! guard, through the [`front`] door, which acknowledges a QoS 1 message to the sensor only
//! once every lane it triggers has committed it; rumqttd routes messages to every other
//! subscriber, in memory.

mod accounts;
pub mod front;
#[cfg(test)]
mod front_tests;
pub mod guard;
mod others;
mod packets;
mod relay;

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use rumqttd::{Broker, Config, ConnectionSettings, RouterConfig, ServerSettings};

use crate::config::{BrokerConfig, BrokerMode};
use crate::net::parse_mqtt_url;
use guard::InternalLogin;

/// Where Kiri's own sessions reach the site broker, and how they log in.
#[derive(Debug)]
pub struct Endpoint {
    /// Host to connect to.
    pub host: String,
    /// Port to connect to.
    pub port: u16,
    /// The internal login, when rumqttd sits behind the guard.
    pub login: Option<InternalLogin>,
    /// The guard in front of the embedded broker (a reload gives it new accounts).
    pub guard: Option<Arc<guard::Guard>>,
    /// The embedded broker's way to the function lanes.
    pub front: Option<Arc<front::FrontDoor>>,
}

/// Starts the site broker `broker` describes (nothing for an external one) and says where
/// Kiri's sessions reach it. `own_ids` are the client ids of those sessions: no sensor may
/// take them. `limits` bound the embedded broker's client connections.
pub async fn start(
    broker: &BrokerConfig,
    own_ids: guard::OwnIds,
    limits: crate::net::ConnectionLimits,
) -> anyhow::Result<Endpoint> {
    match broker.mode {
        BrokerMode::Embedded => {
            // rumqttd on a loopback port of its own, the guard on `broker.listen`.
            let login = InternalLogin::generate()?;
            let internal = std::net::TcpListener::bind(("127.0.0.1", 0))
                .and_then(|l| l.local_addr())
                .context("no free loopback port for the embedded broker")?;
            start_rumqttd(
                internal,
                broker.max_packet_bytes,
                broker.max_inflight,
                limits.total,
                &login,
            )?;
            let l = broker.listen;
            let listener = tokio::net::TcpListener::bind(l)
                .await
                .map_err(|cause| BrokerError::Listen { addr: l, cause })?;
            let users = &broker.users;
            let front = Arc::new(front::FrontDoor::default());
            let max_packet = broker.max_packet_bytes;
            let guard =
                guard::Guard::new(users, login.clone(), own_ids, max_packet, front.clone())?;
            let guard = Arc::new(guard);
            tokio::spawn(guard::serve(listener, internal, guard.clone(), limits));
            if users.is_empty() {
                tracing::info!(listen = %l, "embedded broker: clients connect without logging in");
            } else {
                tracing::info!(listen = %l, users = users.len(), "embedded broker: clients log in");
            }
            Ok(Endpoint {
                host: internal.ip().to_string(),
                port: internal.port(),
                login: Some(login),
                guard: Some(guard),
                front: Some(front),
            })
        }
        BrokerMode::External => {
            let url = parse_mqtt_url(&broker.url).map_err(anyhow::Error::msg)?;
            Ok(Endpoint {
                host: url.host,
                port: url.port,
                login: None,
                guard: None,
                front: None,
            })
        }
    }
}

/// The embedded broker could not start.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// The listen address is taken or not available.
    #[error("embedded broker cannot listen on {addr}: {cause} (set broker.listen, or broker.mode = \"external\")")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// Why.
        cause: std::io::Error,
    },
    /// The broker thread ended or never accepted connections.
    #[error("embedded broker on {0} did not come up")]
    NotUp(SocketAddr),
}

/// Starts rumqttd on `listen` in its own threads and waits until it accepts connections.
/// Clients must log in with `login` (the guard and Kiri's own sessions); at most `clients`
/// come through the guard.
fn start_rumqttd(
    listen: SocketAddr,
    max_packet_bytes: usize,
    max_inflight: usize,
    clients: usize,
    login: &InternalLogin,
) -> Result<(), BrokerError> {
    // rumqttd only logs a failed bind from its server thread; check first for a clear error.
    drop(
        TcpListener::bind(listen).map_err(|source| BrokerError::Listen {
            addr: listen,
            cause: source,
        })?,
    );
    let connections = ConnectionSettings {
        // Only the guard (which has its own CONNECT deadline) and Kiri connect here.
        connection_timeout_ms: 10_000,
        max_payload_size: max_packet_bytes,
        max_inflight_count: max_inflight,
        auth: Some(HashMap::from([(
            login.user.clone(),
            login.password.clone(),
        )])),
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
            max_connections: clients + 16,
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
    // Nagle's algorithm off for what rumqttd sends (it has no setting for it): with it on,
    // a QoS 1 message to a session waits in rumqttd's socket while that session's TCP
    // acknowledgement of the one before is delayed, until the session sends something: Kiri's
    // sessions acknowledge after their group commit (`gateway.commit_window_ms`), so every
    // message behind the first of a window would wait for the window to close.
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    while !no_delay_on_listener(listen) {
        if std::time::Instant::now() > deadline {
            tracing::warn!(%listen, "cannot turn Nagle's algorithm off for the embedded broker: messages to Kiri's sessions may wait for the end of each commit window");
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    tracing::info!(%listen, "embedded broker listening");
    Ok(())
}

/// Sets `TCP_NODELAY` on this process's socket listening on `listen` (rumqttd's); Linux copies
/// it to every connection the socket accepts. `false` if no such socket is listening yet.
fn no_delay_on_listener(listen: SocketAddr) -> bool {
    let Ok(fds) = std::fs::read_dir("/proc/self/fd") else {
        return false;
    };
    for entry in fds.flatten() {
        let Some(fd) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        if socket_addr(fd) != Some(listen) || !is_listening(fd) {
            continue;
        }
        let one: libc::c_int = 1;
        // SAFETY: `fd` is a socket of this process; the option value is a c_int that outlives
        // the call.
        let r = unsafe {
            libc::setsockopt(
                fd,
                libc::IPPROTO_TCP,
                libc::TCP_NODELAY,
                (&one as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        return r == 0;
    }
    false
}

/// The local address of socket `fd`, if it is an IPv4 or IPv6 socket.
fn socket_addr(fd: i32) -> Option<SocketAddr> {
    // SAFETY: sockaddr_storage is plain data (all zeroes is valid); getsockname writes at
    // most `len` bytes into it, and fails (ENOTSOCK, EBADF) on anything else than a socket.
    let (storage, len) = unsafe {
        let mut storage: libc::sockaddr_storage = std::mem::zeroed();
        let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        let r = libc::getsockname(
            fd,
            (&mut storage as *mut libc::sockaddr_storage).cast(),
            &mut len,
        );
        if r != 0 {
            return None;
        }
        (storage, len)
    };
    match storage.ss_family as libc::c_int {
        libc::AF_INET if len as usize >= std::mem::size_of::<libc::sockaddr_in>() => {
            // SAFETY: the family says the storage holds a sockaddr_in.
            let a: libc::sockaddr_in =
                unsafe { *(&storage as *const libc::sockaddr_storage).cast() };
            let ip = std::net::Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr));
            Some(SocketAddr::from((ip, u16::from_be(a.sin_port))))
        }
        libc::AF_INET6 if len as usize >= std::mem::size_of::<libc::sockaddr_in6>() => {
            // SAFETY: the family says the storage holds a sockaddr_in6.
            let a: libc::sockaddr_in6 =
                unsafe { *(&storage as *const libc::sockaddr_storage).cast() };
            let ip = std::net::Ipv6Addr::from(a.sin6_addr.s6_addr);
            Some(SocketAddr::from((ip, u16::from_be(a.sin6_port))))
        }
        _ => None,
    }
}

/// Whether socket `fd` is listening.
fn is_listening(fd: i32) -> bool {
    let mut v: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: the option value is a c_int of `len` bytes.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_ACCEPTCONN,
            (&mut v as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    r == 0 && v == 1
}

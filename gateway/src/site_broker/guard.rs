//! The embedded broker's front door: rumqttd listens on a loopback port of its own, which
//! only this guard and Kiri's own sessions can log in to (with a password made at random at
//! each start), and the guard listens on `broker.listen`. It bounds what clients can hold:
//! at most `broker.max_connections` at once (fewer when the open-file limit is low, see
//! `gateway::fds`) and `broker.max_connections_per_address` from one IP address. When a limit
//! is reached, the connection waiting longest for its login is closed to make room
//! (`evicted`); when all have logged in, the new one is closed (`busy`). A connection that
//! has not sent its CONNECT (and logged in) within 10 s is closed (`timeout`), holding no
//! more than a 64 KiB CONNECT meanwhile.
//!
//! With `broker.users`, a client logs in with a user name and password (checked against
//! Argon2 hashes), and may then publish, name a will, and subscribe only within its user's
//! topic rules: the guard reads the CONNECT, checks the login and the will, relays the
//! CONNECT with the internal login and the client id `<user>:<client id>` (so that one user
//! cannot take over another's session, or Kiri's), and from then on reads every packet the
//! client sends and relays it only if it is allowed: a PUBLISH to a topic outside the user's
//! `publish` filters, or a SUBSCRIBE to a filter not within its `subscribe` filters, ends the
//! connection (MQTT 3.1.1 has no way to refuse one packet), logged and counted in
//! `kiri_broker_refused_total{reason}`. Without users, clients connect without logging in
//! (a login they send is ignored), keep their client ids (except Kiri's own), and what they
//! send after the CONNECT is relayed without checking its topics. Either way every PUBLISH
//! goes through the front door ([`super::relay`], [`super::front`]): to the function lanes
//! first, then to the broker; the broker's PUBACKs and PUBRECs are replaced by the guard's
//! own, sent once the lanes committed. Everything else the broker sends back is relayed
//! unchanged.
//!
//! A reload replaces the accounts ([`Guard::set_users`]): new logins are checked against the
//! new ones at once; a client logged in as a user that was removed, or whose password hash
//! or topic rules changed, is disconnected (it logs in again, under the new rules), and so is
//! every client connected without logging in once there are accounts.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use argon2::password_hash::PasswordVerifier;
use argon2::Argon2;
use bytes::BytesMut;
use rumqttc::mqttbytes::{self, v4, PacketType, Protocol};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use super::accounts::{accounts, revoked, Accounts, Rules};
use super::front::FrontDoor;
use super::packets::{next_packet, refusal, refuse, Refusal};
use crate::config::BrokerUser;
use crate::net::{Admitted, ConnectionLimits, Connections, Full, Ticket};

/// How long a new connection may take to send its CONNECT.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Password checks running at once: each takes its hash's memory cost (7 MiB for the hashes
/// `kiri password-hash` makes), so a flood of logins queues instead of exhausting memory.
const CHECKS_AT_ONCE: usize = 2;
/// The largest CONNECT read (its will included): a connection holds no more before it has
/// logged in.
const MAX_CONNECT_BYTES: usize = 64 << 10;
/// The login Kiri's own sessions use with the internal broker.
#[derive(Clone)]
pub struct InternalLogin {
    /// User name.
    pub user: String,
    /// Password, random per start.
    pub password: String,
}

impl std::fmt::Debug for InternalLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InternalLogin")
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

impl InternalLogin {
    /// A new random login.
    pub fn generate() -> anyhow::Result<InternalLogin> {
        let mut bytes = [0u8; 24];
        getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
        let password = bytes.iter().map(|b| format!("{b:02x}")).collect();
        Ok(InternalLogin {
            user: "kiri-internal".into(),
            password,
        })
    }
}

/// The client ids of Kiri's own sessions: a few exact ones, and every id under a prefix (one
/// session per function lane, added as functions are deployed).
#[derive(Debug, Clone, Default)]
pub struct OwnIds {
    /// Exact ids.
    pub exact: HashSet<String>,
    /// Every id starting with this.
    pub prefix: String,
}

impl OwnIds {
    /// Whether `id` is one of Kiri's.
    pub fn contains(&self, id: &str) -> bool {
        self.exact.contains(id) || (!self.prefix.is_empty() && id.starts_with(&self.prefix))
    }
}

/// The guard's settings.
pub struct Guard {
    /// The accounts; none when clients connect without logging in. A reload sends new ones;
    /// each connection watches for a change that ends it.
    accounts: tokio::sync::watch::Sender<Arc<Accounts>>,
    /// Checked for unknown users, so that the time taken does not tell which names exist.
    dummy_hash: String,
    internal: InternalLogin,
    /// Client ids of Kiri's own sessions: no client may take them.
    reserved_ids: OwnIds,
    max_packet: usize,
    checks: Arc<Semaphore>,
    /// Where clients' publishes reach the function lanes ([`super::front`]).
    front: Arc<FrontDoor>,
}

impl std::fmt::Debug for Guard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guard")
            .field("users", &self.accounts.borrow().len())
            .finish_non_exhaustive()
    }
}

impl Guard {
    /// A guard for `users` (none: clients need not log in), relaying with `internal`, handing
    /// clients' publishes to the lanes through `front`.
    pub fn new(
        users: &[BrokerUser],
        internal: InternalLogin,
        reserved_ids: OwnIds,
        max_packet: usize,
        front: Arc<FrontDoor>,
    ) -> anyhow::Result<Guard> {
        let accounts = tokio::sync::watch::Sender::new(Arc::new(accounts(users)));
        let mut dummy = [0u8; 16];
        getrandom::fill(&mut dummy).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
        let dummy_hash = crate::crypto::password::hash_password(&format!("{dummy:?}"))?;
        Ok(Guard {
            accounts,
            dummy_hash,
            internal,
            reserved_ids,
            max_packet,
            checks: Arc::new(Semaphore::new(CHECKS_AT_ONCE)),
            front,
        })
    }

    /// Takes new accounts (a configuration reload): see the module's documentation.
    pub fn set_users(&self, users: &[BrokerUser]) {
        self.accounts.send_replace(Arc::new(accounts(users)));
    }

    /// Checks a login; the user's rules if it is right, with the hash it was checked against
    /// (a reload that changes it ends the session).
    async fn login(self: &Arc<Self>, user: &str, password: &str) -> Option<(Rules, String)> {
        // The place is held by the check itself: a connection closed meanwhile (evicted)
        // does not free it before the hash is done.
        let permit = self.checks.clone().acquire_owned().await.ok()?;
        let guard = self.clone();
        let (user, password) = (user.to_string(), password.to_string());
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let accounts = guard.accounts.borrow().clone();
            let account = accounts.get(&user);
            let hash = account.map_or(guard.dummy_hash.as_str(), |a| a.hash.as_str());
            let right = Argon2::default()
                .verify_password(password.as_bytes(), hash)
                .is_ok();
            account
                .filter(|_| right)
                .map(|a| (a.rules.clone(), a.hash.clone()))
        })
        .await
        .ok()
        .flatten()
    }
}

/// Accepts clients on `listener` and relays each to the broker at `upstream`, forever.
pub async fn serve(
    listener: TcpListener,
    upstream: SocketAddr,
    guard: Arc<Guard>,
    limits: ConnectionLimits,
) {
    let connections = Connections::new(limits);
    let mut accept_failing = false;
    let (mut busy, mut last_busy_line) = (0u64, None::<std::time::Instant>);
    loop {
        let (client, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // Out of descriptors or memory: wait for connections to end, quietly after
                // the first line.
                if !std::mem::replace(&mut accept_failing, true) {
                    tracing::warn!(error = %e, "embedded broker: accept failed (retrying every 100 ms)");
                }
                refused("accept");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        accept_failing = false;
        let ticket = match connections.admit(peer.ip()) {
            Ok((ticket, Admitted::Room)) => ticket,
            Ok((ticket, Admitted::Evicted(_))) => {
                // Let the evicted connection's task run and give its descriptor back before
                // the next accept: on one runtime thread a burst of accepts would otherwise
                // run ahead of the evictions and be refused as busy.
                tokio::task::yield_now().await;
                ticket
            }
            Err(full) => {
                refused("busy");
                busy += 1;
                // A flood is logged once in 10 s, with how many were closed.
                if last_busy_line.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
                    let (n, key) = match full {
                        Full::Total => (limits.total, "broker.max_connections"),
                        Full::Address => (limits.per_address, "broker.max_connections_per_address"),
                    };
                    tracing::warn!(%peer, closed = busy, "embedded broker: {n} connections logged in already ({key}), closing new ones");
                    (busy, last_busy_line) = (0, Some(std::time::Instant::now()));
                }
                continue;
            }
        };
        let guard = guard.clone();
        tokio::spawn(async move {
            if let Err(end) = relay(client, upstream, &guard, &ticket).await {
                refused(end.reason);
                // Connections closed to make room are many in a flood: counted, not logged.
                if end.reason != "evicted" {
                    tracing::warn!(%peer, reason = end.reason, "embedded broker: {}", end.detail);
                }
            }
        });
    }
}

fn refused(reason: &'static str) {
    metrics::counter!("kiri_broker_refused_total", "reason" => reason).increment(1);
}

/// One client's session: the login, then its packets, checked, until either side ends.
async fn relay(
    mut client: TcpStream,
    upstream: SocketAddr,
    guard: &Arc<Guard>,
    ticket: &Ticket,
) -> Result<(), Refusal> {
    use v4::ConnectReturnCode::{BadClientId, NotAuthorized, RefusedProtocolVersion};
    let _ = client.set_nodelay(true);
    // Watched from the start: a change of accounts while this one logs in ends it too.
    let mut reloads = guard.accounts.subscribe();
    reloads.mark_unchanged();
    let mut buf = BytesMut::with_capacity(4096);
    // The CONNECT and the password check, within one deadline: a connection that has not
    // logged in holds no more than a small CONNECT, for at most this long.
    let admission = async {
        let Some((header, frame)) = next_packet(&mut client, &mut buf, MAX_CONNECT_BYTES).await?
        else {
            return Ok(None);
        };
        if header.packet_type().ok() != Some(PacketType::Connect) {
            return Err(refusal("malformed", "the first packet is not a CONNECT"));
        }
        // The protocol level (after the fixed header and the name "MQTT"): 4 is MQTT 3.1.1.
        // Refused with a CONNACK the client can read rather than as a malformed packet: an
        // MQTT 5 CONNECT would otherwise fail to parse further on.
        let name_at = (2..=5).find(|&i| frame.get(i..i + 6) == Some(&b"\0\x04MQTT"[..]));
        let level = name_at.and_then(|at| frame.get(at + 6).copied());
        if level.is_some_and(|l| l != 4) {
            let detail = format!(
                "MQTT protocol level {}: the embedded broker speaks MQTT 3.1.1 (level 4); \
                 MQTT 5 clients need an external broker (broker.mode = \"external\")",
                level.unwrap_or_default()
            );
            return refuse(&mut client, RefusedProtocolVersion, "protocol", detail).await;
        }
        let mut connect = match v4::Connect::read(header, frame) {
            Ok(c) if c.protocol == Protocol::V4 => c,
            Ok(_) | Err(mqttbytes::Error::InvalidProtocolLevel(_)) => {
                let detail = "a CONNECT for another MQTT version than 3.1.1".to_string();
                return refuse(&mut client, RefusedProtocolVersion, "protocol", detail).await;
            }
            Err(e) => return Err(refusal("malformed", format!("malformed CONNECT: {e}"))),
        };
        let id = connect.client_id.clone();
        if guard.accounts.borrow().is_empty() {
            return Ok(Some((connect, id, None)));
        }
        let Some(login) = connect.login.take() else {
            let detail = format!("client {id:?} did not log in");
            return refuse(&mut client, NotAuthorized, "no_login", detail).await;
        };
        let user = login.username;
        let Some((rules, hash)) = guard.login(&user, &login.password).await else {
            let detail = format!("client {id:?}: wrong user name or password (user {user:?})");
            let code = v4::ConnectReturnCode::BadUserNamePassword;
            return refuse(&mut client, code, "bad_login", detail).await;
        };
        Ok(Some((connect, id, Some((user, rules, hash)))))
    };
    // Until it has logged in, the connection may be closed to make room for a new one.
    let evicted = || {
        refusal(
            "evicted",
            "closed before logging in, to make room for a new connection",
        )
    };
    let admitted = tokio::select! {
        biased;
        _ = ticket.evicted() => return Err(evicted()),
        admitted = tokio::time::timeout(CONNECT_TIMEOUT, admission) => {
            admitted.map_err(|_| refusal("timeout", "not logged in within 10 s"))?
        }
    };
    // Evicted at the very moment it logged in: it is no longer counted, so it goes.
    if !ticket.set_idle(false) {
        return Err(evicted());
    }
    let Some((mut connect, id, account)) = admitted? else {
        return Ok(());
    };
    if let Some((user, rules, _)) = &account {
        if let Some(will) = &connect.last_will {
            if !rules.may_publish(&will.topic) {
                let detail = format!("user {user:?} may not name {:?} as its will", will.topic);
                return refuse(&mut client, NotAuthorized, "will", detail).await;
            }
        }
        if !id.is_empty() {
            connect.client_id = format!("{user}:{id}");
        }
    }
    if guard.reserved_ids.contains(&connect.client_id) {
        let detail = format!("client id {:?} is Kiri's own", connect.client_id);
        return refuse(&mut client, BadClientId, "client_id", detail).await;
    }
    connect.login = Some(v4::Login::new(
        guard.internal.user.clone(),
        guard.internal.password.clone(),
    ));
    let mut out = BytesMut::new();
    connect
        .write(&mut out)
        .map_err(|e| refusal("malformed", format!("CONNECT: {e}")))?;

    let server = match TcpStream::connect(upstream).await {
        Ok(s) => s,
        Err(e) => {
            let detail = format!("the embedded broker at {upstream}: {e}");
            let code = v4::ConnectReturnCode::ServiceUnavailable;
            return refuse(&mut client, code, "io", detail).await;
        }
    };
    let _ = server.set_nodelay(true);
    let mut server = server;
    if let Err(e) = server.write_all(&out).await {
        return Err(refusal("io", format!("writing to the broker: {e}")));
    }
    let will = connect.last_will.take();
    let front = &guard.front;
    let max = guard.max_packet;
    let session = || super::relay::Session {
        id: &connect.client_id,
        clean: connect.clean_session,
    };
    match &account {
        None => tokio::select! {
            r = super::relay::relay(client, server, buf, front, None, session(), will, max) => r,
            ended = revoked(&mut reloads, None) => Err(ended),
        },
        Some((user, rules, hash)) => tokio::select! {
            r = super::relay::relay(client, server, buf, front, Some((user, rules)), session(), will, max) => r,
            ended = revoked(&mut reloads, Some((user.as_str(), hash.clone(), rules))) => Err(ended),
        },
    }
}

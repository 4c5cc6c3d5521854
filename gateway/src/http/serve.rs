//! The HTTP API's accept loop, bounded: at most `dashboard.max_connections` at once, and
//! `dashboard.max_connections_per_address` from one IP address. When a limit is reached, the
//! connection idle longest (no request in progress) is closed to make room; when none is
//! idle, the new one is closed (counted in `kiri_http_connections_refused_total`). A client
//! has [`HEADER_TIMEOUT`] to send a request's head, the first or the next one on a
//! kept-alive connection, so that idle or slow clients cannot hold connections for ever;
//! over TLS, the handshake has the same time. A request's body must arrive within
//! [`BODY_TIMEOUT`]. A connection closed to make room gets a second to finish. HTTP/1.1 only
//! (hyper).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tower::ServiceExt;

use crate::net::{Admitted, ConnectionLimits, Connections, Ticket};

/// Time a client has to send a request's head (and to finish the TLS handshake): an idle
/// connection is closed after it.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Time a client has to send a request's body, from its head: a body that is not whole by
/// then fails the request.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(30);
/// Time a connection told to close (to make room) has to finish what it is doing.
pub const EVICTED_GRACE: Duration = Duration::from_secs(1);

/// The times above, as one value (tests shorten them).
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// [`HEADER_TIMEOUT`].
    pub header: Duration,
    /// [`BODY_TIMEOUT`].
    pub body: Duration,
    /// [`EVICTED_GRACE`].
    pub evicted_grace: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            header: HEADER_TIMEOUT,
            body: BODY_TIMEOUT,
            evicted_grace: EVICTED_GRACE,
        }
    }
}

/// Serves `app` on `listener`, over TLS with `tls`, until the task is dropped.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    tls: Option<Arc<rustls::ServerConfig>>,
    limits: ConnectionLimits,
) {
    serve_with(listener, app, tls, limits, Timeouts::default()).await
}

/// [`serve`] with other [`Timeouts`].
pub async fn serve_with(
    listener: TcpListener,
    app: Router,
    tls: Option<Arc<rustls::ServerConfig>>,
    limits: ConnectionLimits,
    timeouts: Timeouts,
) {
    let connections = Connections::new(limits);
    let tls = tls.map(tokio_rustls::TlsAcceptor::from);
    let mut warned = false;
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                if !std::mem::replace(&mut warned, true) {
                    tracing::warn!(error = %e, "HTTP API: accept failed (retrying every 100 ms)");
                }
                metrics::counter!("kiri_http_accept_errors_total").increment(1);
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        warned = false;
        let ticket = match connections.admit(peer.ip()) {
            Ok((ticket, Admitted::Room)) => Arc::new(ticket),
            Ok((ticket, Admitted::Evicted(_))) => {
                // As in the embedded broker's guard: the evicted connection's task gives its
                // descriptor back before the next accept.
                tokio::task::yield_now().await;
                Arc::new(ticket)
            }
            Err(full) => {
                metrics::counter!("kiri_http_connections_refused_total").increment(1);
                tracing::debug!(%peer, ?full, "HTTP API: every connection busy, closing a new one");
                continue;
            }
        };
        let (app, tls) = (app.clone(), tls.clone());
        tokio::spawn(async move {
            match tls {
                None => connection(stream, app, ticket, timeouts).await,
                Some(tls) => {
                    let handshake = tokio::time::timeout(timeouts.header, tls.accept(stream));
                    let handshake = tokio::select! {
                        h = handshake => h,
                        _ = ticket.evicted() => return,
                    };
                    match handshake {
                        Ok(Ok(stream)) => connection(stream, app, ticket, timeouts).await,
                        _ => metrics::counter!("kiri_http_tls_failures_total").increment(1),
                    }
                }
            }
        });
    }
}

/// Serves one connection's requests: idle between them (it may then be closed to make
/// room), working from a request's head to the end of its response's body.
async fn connection<S>(stream: S, app: Router, ticket: Arc<Ticket>, timeouts: Timeouts)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let working = ticket.clone();
    let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        let busy = Busy::new(working.clone());
        let req = req.map(|body| axum::body::Body::new(Deadline::new(body, timeouts.body)));
        let response = app.clone().oneshot(req);
        async move {
            let response = response.await?;
            Ok::<_, std::convert::Infallible>(response.map(|inner| Tracked { inner, _busy: busy }))
        }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(timeouts.header)
        .serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    let served = tokio::select! {
        served = conn.as_mut() => served,
        _ = ticket.evicted() => {
            // Idle when evicted: this closes it at once. A request just begun, or a response
            // the client is slow to take, gets a second; then the connection is dropped.
            conn.as_mut().graceful_shutdown();
            tokio::time::timeout(timeouts.evicted_grace, conn).await.unwrap_or(Ok(()))
        }
    };
    if let Err(e) = served {
        tracing::debug!(error = %e, "HTTP connection ended");
    }
}

/// A request body that must arrive whole within [`BODY_TIMEOUT`] of the request's head.
struct Deadline {
    inner: hyper::body::Incoming,
    within: Duration,
    expires: Pin<Box<tokio::time::Sleep>>,
}

impl Deadline {
    fn new(inner: hyper::body::Incoming, within: Duration) -> Deadline {
        Deadline {
            inner,
            within,
            expires: Box::pin(tokio::time::sleep(within)),
        }
    }
}

impl http_body::Body for Deadline {
    type Data = bytes::Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        match self.expires.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(format!(
                "the request body did not arrive within {} s",
                self.within.as_secs()
            )
            .into()))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// A request in progress on its connection: the connection is working until this is
/// dropped (with the response's body, once it is sent).
struct Busy(Arc<Ticket>);

impl Busy {
    fn new(ticket: Arc<Ticket>) -> Busy {
        ticket.set_idle(false);
        Busy(ticket)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.set_idle(true);
    }
}

/// A response body that keeps its connection marked working until it is sent.
struct Tracked {
    inner: axum::body::Body,
    _busy: Busy,
}

impl http_body::Body for Tracked {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::time::Instant;

    use super::*;

    /// An app that answers `GET /` and reads the body of `POST /`.
    async fn server(limits: ConnectionLimits) -> std::net::SocketAddr {
        let app = Router::new().route(
            "/",
            axum::routing::get(|| async { "hi" })
                .post(|body: axum::body::Bytes| async move { format!("{} bytes", body.len()) }),
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let timeouts = Timeouts {
            header: Duration::from_secs(10),
            body: Duration::from_millis(500),
            evicted_grace: Duration::from_millis(200),
        };
        tokio::spawn(serve_with(listener, app, None, limits, timeouts));
        addr
    }

    /// Whether the server closes `s` within `within`.
    fn closed_within(s: &mut std::net::TcpStream, within: Duration) -> bool {
        s.set_read_timeout(Some(within)).unwrap();
        let mut buf = [0u8; 1024];
        loop {
            match s.read(&mut buf) {
                Ok(0) => return true,
                Ok(_) => {}
                Err(e) => return e.kind() != std::io::ErrorKind::WouldBlock,
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_connection_evicted_mid_head_is_closed_within_its_grace() {
        let limits = ConnectionLimits {
            total: 2,
            per_address: 2,
        };
        let addr = server(limits).await;
        tokio::task::spawn_blocking(move || {
            // Two that started a request head and stopped.
            let mut stalled: Vec<std::net::TcpStream> = (0..2)
                .map(|_| {
                    let mut s = std::net::TcpStream::connect(addr).unwrap();
                    s.write_all(b"GET / HTTP/1.1\r\n").unwrap();
                    s
                })
                .collect();
            std::thread::sleep(Duration::from_millis(100));
            // A third one evicts the first and is served.
            let mut third = std::net::TcpStream::connect(addr).unwrap();
            third
                .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .unwrap();
            let mut answer = String::new();
            third.read_to_string(&mut answer).unwrap();
            assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
            let started = Instant::now();
            assert!(closed_within(&mut stalled[0], Duration::from_secs(3)));
            assert!(
                started.elapsed() < Duration::from_secs(2),
                "closed after its grace"
            );
        })
        .await
        .unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_body_that_does_not_arrive_fails_the_request() {
        let limits = ConnectionLimits {
            total: 4,
            per_address: 4,
        };
        let addr = server(limits).await;
        tokio::task::spawn_blocking(move || {
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            s.write_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc")
                .unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut answer = [0u8; 256];
            let n = s.read(&mut answer).unwrap();
            let answer = String::from_utf8_lossy(&answer[..n]);
            assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
        })
        .await
        .unwrap();
    }
}

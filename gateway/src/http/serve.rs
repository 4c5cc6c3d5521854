//! The HTTP API's accept loop, bounded: at most `dashboard.max_connections` at once, and
//! `dashboard.max_connections_per_address` from one IP address. When a limit is reached, the
//! connection idle longest (no request in progress) is closed to make room; when none is
//! idle, the new one is closed (counted in `kiri_http_connections_refused_total`). A client
//! has [`HEADER_TIMEOUT`] to send a request's head, the first or the next one on a
//! kept-alive connection, so that idle or slow clients cannot hold connections for ever;
//! over TLS, the handshake has the same time. HTTP/1.1 only (hyper).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tower::ServiceExt;

use crate::net::{ConnectionLimits, Connections, Ticket};

/// Time a client has to send a request's head (and to finish the TLS handshake): an idle
/// connection is closed after it.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `app` on `listener`, over TLS with `tls`, until the task is dropped.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    tls: Option<Arc<rustls::ServerConfig>>,
    limits: ConnectionLimits,
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
            Ok((ticket, _)) => Arc::new(ticket),
            Err(full) => {
                metrics::counter!("kiri_http_connections_refused_total").increment(1);
                tracing::debug!(%peer, ?full, "HTTP API: every connection busy, closing a new one");
                continue;
            }
        };
        let (app, tls) = (app.clone(), tls.clone());
        tokio::spawn(async move {
            match tls {
                None => connection(stream, app, ticket).await,
                Some(tls) => {
                    let handshake = tokio::time::timeout(HEADER_TIMEOUT, tls.accept(stream));
                    let handshake = tokio::select! {
                        h = handshake => h,
                        _ = ticket.evicted() => return,
                    };
                    match handshake {
                        Ok(Ok(stream)) => connection(stream, app, ticket).await,
                        _ => metrics::counter!("kiri_http_tls_failures_total").increment(1),
                    }
                }
            }
        });
    }
}

/// Serves one connection's requests: idle between them (it may then be closed to make
/// room), working from a request's head to the end of its response's body.
async fn connection<S>(stream: S, app: Router, ticket: Arc<Ticket>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let working = ticket.clone();
    let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        let busy = Busy::new(working.clone());
        let response = app.clone().oneshot(req.map(axum::body::Body::new));
        async move {
            let response = response.await?;
            Ok::<_, std::convert::Infallible>(response.map(|inner| Tracked { inner, _busy: busy }))
        }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    let served = tokio::select! {
        served = conn.as_mut() => served,
        _ = ticket.evicted() => {
            // Idle when evicted: this closes it at once (a request just begun is answered).
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = served {
        tracing::debug!(error = %e, "HTTP connection ended");
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

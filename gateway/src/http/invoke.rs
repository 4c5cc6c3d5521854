//! `POST /invoke/{function}`: the HTTP trigger. The call is queued for the pipeline like any
//! event and answered only once the invocation's effects are committed.

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use tokio::sync::{mpsc, oneshot};

use super::auth::{authorized, Access, Need};
use super::{error, Api};
use crate::pipeline::{HttpInvoke, Work};

/// Runs the function on the request body and answers with its response.
pub(super) async fn invoke(
    State(s): State<Api>,
    Path(function): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let access = match authorized(&s, &headers, Need::Invoke(&function)) {
        Ok(a) => a,
        Err(r) => return r.into_response(),
    };
    // The body is read only once the caller is known.
    let body = match read_body(body, s.max_body).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let Some((index, f)) = s.directory.find(&function).filter(|(_, f)| f.http) else {
        return error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no function {function:?} with http = true"),
        );
    };
    let (reply, answer) = oneshot::channel();
    let call = HttpInvoke {
        function: index,
        body: body.to_vec(),
        received_ms: crate::now_ms(),
        caller: match access {
            Access::Admin => None,
            Access::Jwt(id) => Some(Arc::new(id.caller())),
        },
        reply,
    };
    if let Err(e) = s.work.try_send(Work::Invoke(call)) {
        if matches!(e, mpsc::error::TrySendError::Closed(_)) {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "shutting_down",
                "the gateway is stopping",
            );
        }
        metrics::counter!("kiri_http_rejected_busy_total").increment(1);
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "busy",
            "the processing queue is full; retry later",
        );
    }
    // Queued work ahead of this call, plus its own limit: a generous bound on the wait.
    let wait = Duration::from_millis(f.timeout_ms) + Duration::from_secs(30);
    match tokio::time::timeout(wait, answer).await {
        Ok(Ok(Ok(body))) => {
            ([(header::CONTENT_TYPE, "application/octet-stream")], body).into_response()
        }
        Ok(Ok(Err(failure))) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            failure.reason,
            failure.error,
        ),
        Ok(Err(_)) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            "the gateway is stopping",
        ),
        Err(_) => error(
            StatusCode::GATEWAY_TIMEOUT,
            "queue_timeout",
            "no answer in time; the call may still run",
        ),
    }
}

/// Reads a request body of at most `max` bytes: `413` beyond, `400` if it fails (the client
/// went away, or took longer than the body deadline).
pub(super) async fn read_body(body: Body, max: usize) -> Result<Bytes, Response> {
    axum::body::to_bytes(body, max).await.map_err(|e| {
        let too_large = std::error::Error::source(&e)
            .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
        if too_large {
            error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                format!("the body is over {max} bytes"),
            )
        } else {
            error(
                StatusCode::BAD_REQUEST,
                "body",
                format!("cannot read the body: {e}"),
            )
        }
    })
}

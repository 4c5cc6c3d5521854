//! `/invoke/{function}[/{path}]`: the HTTP trigger, any method. The call is queued for the
//! pipeline like any event and answered only once the invocation's effects are committed. The
//! function sees the method, the path after its name, the query and its allow-listed headers
//! (`http_request`), and sets the status and headers of the answer (`http_response`).

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use tokio::sync::{mpsc, oneshot};

use super::auth::{authorized, Access, Need};
use super::{error, Api};
use crate::pipeline::{HttpInvoke, Work};
use crate::runtime::{HttpAnswer, HttpRequest};

/// `/invoke/{function}`: the path the function sees is `/`.
pub(super) async fn invoke(
    s: State<Api>,
    Path(function): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    call(s, function, String::new(), method, uri, headers, body).await
}

/// `/invoke/{function}/{path}`: the path the function sees is `/{path}`.
pub(super) async fn invoke_path(
    s: State<Api>,
    Path((function, path)): Path<(String, String)>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    call(s, function, path, method, uri, headers, body).await
}

/// Runs the function on the request and answers with its response.
async fn call(
    State(s): State<Api>,
    function: String,
    path: String,
    method: Method,
    uri: Uri,
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
    let passed: Vec<(String, String)> = f
        .http_headers
        .iter()
        .filter_map(|name| {
            let value = headers.get(name.as_str())?.to_str().ok()?;
            Some((name.clone(), value.to_string()))
        })
        .collect();
    let request = HttpRequest::new(
        method.as_str(),
        &format!("/{path}"),
        uri.query().unwrap_or(""),
        &passed,
    );
    let (reply, answer) = oneshot::channel();
    let call = HttpInvoke {
        function: index,
        body: body.to_vec(),
        received_ms: crate::now_ms(),
        caller: match access {
            Access::Admin => None,
            Access::Jwt(id) => Some(Arc::new(id.caller())),
        },
        request: Arc::new(request),
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
        Ok(Ok(Ok(answer))) => respond(answer),
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

/// The function's answer: its status (200 unless it set one), headers and body; the content
/// type is `application/octet-stream` unless it set one.
fn respond(a: HttpAnswer) -> Response {
    let status = a
        .status
        .and_then(|s| StatusCode::from_u16(s).ok())
        .unwrap_or(StatusCode::OK);
    let mut response = (status, a.body.unwrap_or_default()).into_response();
    let out = response.headers_mut();
    out.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    for (name, value) in a.headers {
        // Checked by the host call already.
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            out.insert(n, v);
        }
    }
    response
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

//! `/api/v1/functions/{function}/state`: a function's key-value state, read and deleted from
//! outside (`kiri state`). Needs the token (or a JWT with scope `state`). The state of a
//! function that was undeployed stays in the store until it is deleted here.

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;

use super::auth::{authorized, Need};
use super::dead_letters::Shown;
use super::{Api, ApiError};

/// Query of the state routes.
#[derive(Debug, Deserialize)]
pub struct StateQuery {
    /// One key, as text.
    key: Option<String>,
    /// One key, as hex (keys that are not text).
    key_hex: Option<String>,
    /// List only the keys that start with this.
    #[serde(default)]
    prefix: String,
    /// Keys listed at most.
    #[serde(default = "default_limit")]
    limit: usize,
    /// Delete every key.
    #[serde(default)]
    all: bool,
}

fn default_limit() -> usize {
    1000
}

/// The caller may use the state routes, and the function has state: its tree.
fn opened(s: &Api, headers: &HeaderMap, function: &str) -> Result<sled::Tree, ApiError> {
    authorized(s, headers, Need::State)?;
    tree(s, function)
}

/// The function's state tree, if it has ever had state.
fn tree(s: &Api, function: &str) -> Result<sled::Tree, ApiError> {
    let name = format!("kv/{function}");
    let exists =
        s.db.tree_names()
            .iter()
            .any(|t| t.as_ref() == name.as_bytes());
    if !exists {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no state for function {function:?}"),
        ));
    }
    s.db.open_tree(name).map_err(store_error)
}

fn store_error(e: sled::Error) -> ApiError {
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "store", e.to_string())
}

/// The key a query names, if it names one.
fn key_of(q: &StateQuery) -> Result<Option<Vec<u8>>, ApiError> {
    match (&q.key, &q.key_hex) {
        (Some(k), None) => Ok(Some(k.as_bytes().to_vec())),
        (None, Some(h)) => unhex(h)
            .map(Some)
            .ok_or_else(|| ApiError::new(StatusCode::BAD_REQUEST, "key", "key_hex is not hex")),
        (None, None) => Ok(None),
        (Some(_), Some(_)) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "key",
            "give key or key_hex, not both",
        )),
    }
}

/// The bytes `text` spells in hex (as [`Shown`] writes them), if it does.
fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// `GET`: one key's value (`?key=` or `?key_hex=`), or the keys (`?prefix=&limit=`).
pub(super) async fn read(
    State(s): State<Api>,
    Path(function): Path<String>,
    Query(q): Query<StateQuery>,
    headers: HeaderMap,
) -> Response {
    let tree = match opened(&s, &headers, &function) {
        Ok(t) => t,
        Err(e) => return e.into_response(),
    };
    let key = match key_of(&q) {
        Ok(k) => k,
        Err(r) => return r.into_response(),
    };
    if let Some(key) = key {
        return match tree.get(&key) {
            Ok(Some(v)) => Json(serde_json::json!({
                "function": function,
                "key": Shown::of(&key),
                "bytes": v.len(),
                "value": Shown::of(&v),
            }))
            .into_response(),
            Ok(None) => {
                ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such key").into_response()
            }
            Err(e) => store_error(e).into_response(),
        };
    }
    let (mut keys, mut total_keys, mut total_bytes) = (Vec::new(), 0u64, 0u64);
    for entry in tree.scan_prefix(q.prefix.as_bytes()) {
        let (k, v) = match entry {
            Ok(kv) => kv,
            Err(e) => return store_error(e).into_response(),
        };
        total_keys += 1;
        total_bytes += (k.len() + v.len()) as u64;
        if keys.len() < q.limit {
            keys.push(serde_json::json!({ "key": Shown::of(&k), "bytes": v.len() }));
        }
    }
    Json(serde_json::json!({
        "function": function,
        "keys": keys,
        "total_keys": total_keys,
        "total_bytes": total_bytes,
    }))
    .into_response()
}

/// `DELETE`: one key (`?key=` or `?key_hex=`) or every key (`?all=true`). Durable when
/// answered. An invocation of the function running at that moment may write a key again.
pub(super) async fn delete(
    State(s): State<Api>,
    Path(function): Path<String>,
    Query(q): Query<StateQuery>,
    headers: HeaderMap,
) -> Response {
    let tree = match opened(&s, &headers, &function) {
        Ok(t) => t,
        Err(e) => return e.into_response(),
    };
    let keys: Vec<Vec<u8>> = match (key_of(&q), q.all) {
        (Err(r), _) => return r.into_response(),
        (Ok(Some(k)), false) => vec![k],
        (Ok(None), true) => tree
            .iter()
            .keys()
            .filter_map(Result::ok)
            .map(|k| k.to_vec())
            .collect(),
        _ => {
            return ApiError::new(
                StatusCode::BAD_REQUEST,
                "selection",
                "give key, key_hex or all=true",
            )
            .into_response()
        }
    };
    let (mut deleted, mut bytes) = (0i64, 0i64);
    for k in keys {
        match tree.remove(&k) {
            Ok(Some(v)) => {
                deleted += 1;
                bytes += (k.len() + v.len()) as i64;
            }
            Ok(None) => {}
            Err(e) => return store_error(e).into_response(),
        }
    }
    if let Err(e) = tree.flush_async().await {
        return store_error(e).into_response();
    }
    if let Some((_, info)) = s.directory.find(&function) {
        if let Some(usage) = &info.kv_usage {
            usage.forget(&function, bytes, deleted);
        }
    }
    tracing::info!(%function, deleted, bytes, "function state deleted through the API");
    Json(serde_json::json!({ "function": function, "deleted": deleted, "bytes": bytes }))
        .into_response()
}

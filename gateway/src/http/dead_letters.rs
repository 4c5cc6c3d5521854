//! `/api/v1/dead-letters`: list, replay and drop dead letters (all need the token).

use std::collections::HashSet;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};

use tokio::sync::mpsc;

use super::auth::{authorized, Need};
use super::{error, Api, ApiError};
use crate::dead_letters::retry::Replay;
use crate::dead_letters::Entry;
use crate::pipeline::Work;

/// Query of `GET /api/v1/dead-letters`.
#[derive(Debug, Deserialize)]
pub struct ListQuery {
    function: Option<String>,
    #[serde(default = "default_limit")]
    limit: usize,
}

fn default_limit() -> usize {
    100
}

/// One entry as the API lists it: its id, the entry, whether it can be replayed, and the
/// start of its payload.
#[derive(Debug, Serialize, Deserialize)]
pub struct Listed {
    /// The entry's id.
    pub id: u64,
    /// The entry.
    #[serde(flatten)]
    pub entry: Entry,
    /// Whether `replay` can run it again.
    pub replayable: bool,
    /// Its first [`PREVIEW_BYTES`] bytes: as text when they are UTF-8, else as hex.
    pub payload: Shown,
    /// Whether `payload` shows only the start of what was kept.
    pub payload_cut: bool,
}

/// Payload bytes an API listing shows of each entry.
pub const PREVIEW_BYTES: usize = 1024;

/// A payload shown to a person.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Shown {
    /// UTF-8 text, as it is.
    Text(String),
    /// Anything else, as lowercase hex.
    Hex(String),
}

impl Shown {
    /// `bytes` as text when they are UTF-8 (a character cut at the end does not count against
    /// it), else as hex.
    pub fn of(bytes: &[u8]) -> Shown {
        let text = match std::str::from_utf8(bytes) {
            Ok(t) => Some(t),
            Err(e) if e.error_len().is_none() => {
                Some(std::str::from_utf8(&bytes[..e.valid_up_to()]).expect("valid up to here"))
            }
            Err(_) => None,
        };
        // Control characters (other than line breaks and tabs) are not text a person reads:
        // an 8-byte counter is valid UTF-8 too.
        let text = text.filter(|t| {
            !t.chars()
                .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
        });
        match text {
            Some(t) => Shown::Text(t.to_string()),
            None => Shown::Hex(bytes.iter().map(|b| format!("{b:02x}")).collect()),
        }
    }
}

impl std::fmt::Display for Shown {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Shown::Text(t) => write!(f, "text {t:?}"),
            Shown::Hex(h) => write!(f, "hex {h}"),
        }
    }
}

impl Listed {
    fn new(id: u64, entry: Entry) -> Listed {
        let shown = &entry.payload[..entry.payload.len().min(PREVIEW_BYTES)];
        Listed {
            id,
            replayable: entry.replayable(),
            payload: Shown::of(shown),
            payload_cut: (shown.len() as u64) < entry.payload_len,
            entry,
        }
    }
}

/// Which entries a replay or drop acts on.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Selection {
    /// These ids.
    #[serde(default)]
    pub ids: Vec<u64>,
    /// Every entry of this function.
    pub function: Option<String>,
    /// Every entry (drop only).
    #[serde(default)]
    pub all: bool,
}

/// The answer to a replay or drop.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Outcome {
    /// Entries queued for replay, or dropped.
    pub done: Vec<u64>,
    /// Entries not acted on, and why.
    pub skipped: Vec<(u64, String)>,
}

fn selected(s: &Api, sel: &Selection, drop: bool) -> Result<Vec<(u64, Entry)>, ApiError> {
    let internal =
        |e: sled::Error| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "store", e.to_string());
    if sel.all && drop {
        return s.dead_letters.list(None, usize::MAX).map_err(internal);
    }
    if let Some(f) = &sel.function {
        return s.dead_letters.list(Some(f), usize::MAX).map_err(internal);
    }
    if sel.ids.is_empty() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "give ids, function (or all, to drop)",
        ));
    }
    let wanted: HashSet<u64> = sel.ids.iter().copied().collect();
    let mut out = Vec::new();
    for id in wanted {
        if let Some(e) = s.dead_letters.get(id).map_err(internal)? {
            out.push((id, e));
        }
    }
    out.sort_by_key(|(id, _)| *id);
    Ok(out)
}

/// `GET /api/v1/dead-letters?function=F&limit=N`
pub(super) async fn list(
    State(s): State<Api>,
    headers: HeaderMap,
    Query(q): Query<ListQuery>,
) -> Response {
    if let Err(r) = authorized(&s, &headers, Need::DeadLetters) {
        return r.into_response();
    }
    match s.dead_letters.list(q.function.as_deref(), q.limit) {
        Ok(entries) => Json(
            entries
                .into_iter()
                .map(|(id, e)| Listed::new(id, e))
                .collect::<Vec<_>>(),
        )
        .into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, "store", e.to_string()),
    }
}

/// `POST /api/v1/dead-letters/replay` with a [`Selection`].
pub(super) async fn replay(
    State(s): State<Api>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    let sel = match selection(&s, &headers, body).await {
        Ok(sel) => sel,
        Err(r) => return r,
    };
    let entries =
        match authorized(&s, &headers, Need::DeadLetters).and_then(|_| selected(&s, &sel, false)) {
            Ok(e) => e,
            Err(r) => return r.into_response(),
        };
    let mut outcome = Outcome::default();
    for (id, e) in entries {
        let function = e.function.as_deref().and_then(|f| s.directory.find(f));
        let Some((index, _)) = function.filter(|_| e.replayable()) else {
            let why = if e.replayable() {
                "its function is not loaded"
            } else {
                "not replayable (rejected input, or payload cut)"
            };
            outcome.skipped.push((id, why.into()));
            continue;
        };
        if !s.dead_letters.claim(id) {
            outcome
                .skipped
                .push((id, "a replay or retry of it is under way".into()));
            continue;
        }
        let work = Work::Replay(Replay {
            id,
            function: index,
            topic: e.topic,
            payload: e.payload,
            received_ms: e.received_ms,
            attempts: 0,
        });
        match s.work.try_send(work) {
            Ok(()) => outcome.done.push(id),
            Err(err) => {
                s.dead_letters.release(id);
                let why = match err {
                    mpsc::error::TrySendError::Full(_) => "processing queue full; retry",
                    mpsc::error::TrySendError::Closed(_) => "the gateway is stopping",
                };
                outcome.skipped.push((id, why.into()));
            }
        }
    }
    Json(outcome).into_response()
}

/// `POST /api/v1/dead-letters/drop` with a [`Selection`].
pub(super) async fn drop_entries(
    State(s): State<Api>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    let sel = match selection(&s, &headers, body).await {
        Ok(sel) => sel,
        Err(r) => return r,
    };
    let entries =
        match authorized(&s, &headers, Need::DeadLetters).and_then(|_| selected(&s, &sel, true)) {
            Ok(e) => e,
            Err(r) => return r.into_response(),
        };
    let mut outcome = Outcome::default();
    for (id, _) in entries {
        if s.dead_letters.is_claimed(id) {
            outcome
                .skipped
                .push((id, "a replay or retry of it is under way".into()));
            continue;
        }
        match s.dead_letters.remove(id) {
            Ok(true) => outcome.done.push(id),
            Ok(false) => outcome.skipped.push((id, "already gone".into())),
            Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, "store", e.to_string()),
        }
    }
    if let Err(e) = s.dead_letters.flush() {
        return error(StatusCode::INTERNAL_SERVER_ERROR, "store", e.to_string());
    }
    metrics::counter!("kiri_dead_letters_dropped_by_request_total")
        .increment(outcome.done.len() as u64);
    Json(outcome).into_response()
}

/// The [`Selection`] a replay or drop request carries, read only once the caller may ask.
async fn selection(
    s: &Api,
    headers: &HeaderMap,
    body: axum::body::Body,
) -> Result<Selection, Response> {
    authorized(s, headers, Need::DeadLetters).map_err(IntoResponse::into_response)?;
    let bytes = super::invoke::read_body(body, 64 << 10).await?;
    serde_json::from_slice(&bytes).map_err(|e| {
        error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("the body is not a selection: {e}"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::Shown;

    #[test]
    fn payloads_show_as_text_when_they_are_text_and_as_hex_otherwise() {
        assert_eq!(Shown::of(b"ON"), Shown::Text("ON".into()));
        assert_eq!(Shown::of(&[0xff, 0x00, 0x41]), Shown::Hex("ff0041".into()));
        // A preview that cuts a character in two is still text.
        let cut = &"21.5 °C".as_bytes()[..6];
        assert_eq!(Shown::of(cut), Shown::Text("21.5 ".into()));
        assert_eq!(Shown::of(b""), Shown::Text(String::new()));
    }
}

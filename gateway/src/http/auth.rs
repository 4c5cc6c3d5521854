//! Who may call what: the admin token (as `Authorization: Bearer <token>`, compared in
//! constant time, with a lockout after a burst of wrong ones) or a JWT of the configured
//! issuer (`jwt/`) whose scopes grant what the route needs.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::http::{header, HeaderMap, StatusCode};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use subtle::ConstantTimeEq;

use super::{Api, ApiError};

/// Wrong tokens allowed in a burst, then one more per [`REFILL`]; beyond, a [`LOCKOUT`].
pub const BURST: u32 = 10;
/// The refill period of the wrong-token budget.
pub const REFILL: Duration = Duration::from_secs(6);
/// How long every token request is refused once the budget is spent.
pub const LOCKOUT: Duration = Duration::from_secs(60);

/// Rate limit of wrong tokens (a GCRA limiter, governor), and the lockout it triggers.
pub struct Lockout {
    budget: DefaultDirectRateLimiter,
    until_ms: AtomicU64,
}

impl Default for Lockout {
    fn default() -> Self {
        let quota = Quota::with_period(REFILL)
            .expect("a non-zero period")
            .allow_burst(NonZeroU32::new(BURST).expect("non-zero"));
        Lockout {
            budget: RateLimiter::direct(quota),
            until_ms: AtomicU64::new(0),
        }
    }
}

impl Lockout {
    /// How long the lockout still lasts, if one is on.
    pub fn locked(&self) -> Option<Duration> {
        let until = self.until_ms.load(Ordering::Relaxed);
        let now = crate::age::mono_ms();
        (now < until).then(|| Duration::from_millis(until - now))
    }

    /// Counts a wrong token; starts a lockout when the budget is spent.
    pub fn failed(&self) {
        if self.budget.check().is_err() {
            let until = crate::age::mono_ms() + LOCKOUT.as_millis() as u64;
            self.until_ms.store(until, Ordering::Relaxed);
            tracing::warn!(
                seconds = LOCKOUT.as_secs(),
                "too many wrong dashboard tokens: token requests refused for a while"
            );
        }
    }
}

/// Whether `header` (the `Authorization` value) carries `token`.
pub fn bearer_matches(header: Option<&str>, token: &str) -> bool {
    let Some(given) = header.and_then(|h| h.strip_prefix("Bearer ")) else {
        return false;
    };
    // ct_eq on slices of different lengths is false without comparing contents.
    bool::from(given.trim().as_bytes().ct_eq(token.as_bytes()))
}

/// What a route needs from its caller.
#[derive(Debug, Clone, Copy)]
pub enum Need<'a> {
    /// A read route (with `dashboard.auth_reads`): scope `read`.
    Read,
    /// The dead-letter routes: scope `dead-letters`.
    DeadLetters,
    /// `POST /invoke/<function>`: scope `invoke:<function>` or `invoke:*`.
    Invoke(&'a str),
    /// The function state routes: scope `state`.
    State,
    /// `POST /api/v1/reload`: scope `reload`.
    Reload,
}

impl Need<'_> {
    fn scope(&self) -> String {
        match self {
            Need::Read => "read".into(),
            Need::DeadLetters => "dead-letters".into(),
            Need::State => "state".into(),
            Need::Reload => "reload".into(),
            Need::Invoke(f) => format!("invoke:{f}"),
        }
    }
}

/// Who a request comes from.
#[derive(Debug, Clone)]
pub enum Access {
    /// The admin token: everything, and no caller for functions.
    Admin,
    /// A verified JWT.
    Jwt(Arc<super::jwt::Identity>),
}

/// Checks the request's credentials against what the route needs: the admin token, or a JWT
/// of the configured issuer whose scopes grant it. 401 without valid credentials, 403 when a
/// valid token lacks the scope, 429 while too many wrong credentials came lately: then the
/// admin token is not even compared, so guessing gains nothing, while JWTs are still verified
/// (their signatures cannot be guessed, so a guesser cannot lock their holders out).
pub(super) fn authorized(s: &Api, headers: &HeaderMap, need: Need<'_>) -> Result<Access, ApiError> {
    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let bearer = auth.and_then(|h| h.strip_prefix("Bearer ")).map(str::trim);
    let jwt = s.issuer.as_ref().zip(bearer.filter(|b| b.contains('.')));
    if let (Some(wait), None) = (s.lockout.locked(), jwt) {
        metrics::counter!("kiri_http_locked_out_total").increment(1);
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "locked_out",
            format!(
                "too many wrong tokens lately; try again in {} s",
                wait.as_secs().max(1)
            ),
        ));
    }
    if let Some((issuer, jwt)) = jwt {
        return match issuer.verify(jwt) {
            Ok(id) if granted(&id.scopes, need) => Ok(Access::Jwt(Arc::new(id))),
            Ok(id) => {
                metrics::counter!("kiri_http_forbidden_total").increment(1);
                Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "forbidden",
                    format!(
                        "the token of {:?} lacks the scope {}",
                        id.subject,
                        need.scope()
                    ),
                ))
            }
            Err(rejected) => {
                metrics::counter!("kiri_http_unauthorized_total").increment(1);
                if rejected.is_forgery() {
                    s.lockout.failed();
                }
                Err(ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    rejected.reason(),
                    rejected.to_string(),
                ))
            }
        };
    }
    if bearer_matches(auth, &s.token) {
        return Ok(Access::Admin);
    }
    metrics::counter!("kiri_http_unauthorized_total").increment(1);
    if auth.is_some() {
        s.lockout.failed();
    }
    Err(ApiError::new(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "a valid `Authorization: Bearer <token>` header is required",
    ))
}

fn granted(scopes: &super::jwt::Scopes, need: Need<'_>) -> bool {
    match need {
        Need::Read => scopes.read,
        Need::DeadLetters => scopes.dead_letters,
        Need::State => scopes.state,
        Need::Reload => scopes.reload,
        Need::Invoke(f) => scopes.may_invoke(f),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::token::generate;

    #[test]
    fn only_the_exact_bearer_token_passes() {
        let t = generate().unwrap();
        assert_eq!(t.len(), 64);
        assert_ne!(t, generate().unwrap());
        assert!(bearer_matches(Some(&format!("Bearer {t}")), &t));
        assert!(!bearer_matches(Some(&format!("Bearer {}", &t[1..])), &t));
        assert!(!bearer_matches(Some(&t), &t), "scheme required");
        assert!(!bearer_matches(None, &t));
        assert!(!bearer_matches(Some("Bearer "), &t));
    }

    #[test]
    fn a_burst_of_wrong_tokens_locks_token_requests_out() {
        let l = Lockout::default();
        for _ in 0..BURST {
            l.failed();
        }
        assert!(l.locked().is_none(), "the burst is allowed");
        l.failed();
        let wait = l.locked().expect("locked out");
        assert!(wait <= LOCKOUT && wait > LOCKOUT - Duration::from_secs(5));
    }
}

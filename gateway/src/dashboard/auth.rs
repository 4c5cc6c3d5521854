//! The dashboard token: required (as `Authorization: Bearer <token>`) for every request that
//! changes something. Compared in constant time.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use subtle::ConstantTimeEq;

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
        let now = crate::now_ms();
        (now < until).then(|| Duration::from_millis(until - now))
    }

    /// Counts a wrong token; starts a lockout when the budget is spent.
    pub fn failed(&self) {
        if self.budget.check().is_err() {
            let until = crate::now_ms() + LOCKOUT.as_millis() as u64;
            self.until_ms.store(until, Ordering::Relaxed);
            tracing::warn!(
                seconds = LOCKOUT.as_secs(),
                "too many wrong dashboard tokens: token requests refused for a while"
            );
        }
    }
}

/// Makes a new random token: 32 bytes from the OS, hex-encoded.
pub fn generate() -> std::io::Result<String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(std::io::Error::other)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Whether `header` (the `Authorization` value) carries `token`.
pub fn bearer_matches(header: Option<&str>, token: &str) -> bool {
    let Some(given) = header.and_then(|h| h.strip_prefix("Bearer ")) else {
        return false;
    };
    // ct_eq on slices of different lengths is false without comparing contents.
    bool::from(given.trim().as_bytes().ct_eq(token.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

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

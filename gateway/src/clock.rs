//! The wall clock, as far as the gateway can judge it. Boards without a battery-backed clock
//! (a Raspberry Pi) start at 1970 until NTP sets the time; until then every TLS certificate
//! looks "not valid yet" and timestamps are wrong. The gateway keeps working (results are held
//! in the outbox, the uplink retries) and says why, in its log, its status and the uplink's
//! last error.

use std::sync::atomic::{AtomicBool, Ordering};

/// 2025-01-01T00:00:00Z: a clock before this has not been set.
pub const PLAUSIBLE_AFTER_MS: u64 = 1_735_689_600_000;

static WARNED: AtomicBool = AtomicBool::new(false);

/// Whether the system clock reads a time before [`PLAUSIBLE_AFTER_MS`].
pub fn unset() -> bool {
    crate::now_ms() < PLAUSIBLE_AFTER_MS
}

/// The clock as text (RFC 3339, UTC).
pub fn now_text() -> String {
    chrono::DateTime::from_timestamp_millis(crate::now_ms() as i64)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_else(|| "an unreadable time".into())
}

/// Logs a warning (once until the clock is set) when the clock is unset; call it now and then.
pub fn check() -> bool {
    let unset = unset();
    if unset && !WARNED.swap(true, Ordering::Relaxed) {
        tracing::warn!(
            clock = now_text(),
            "the system clock has not been set (no RTC, no NTP yet?): TLS certificates will look \
             not valid yet and the uplink will fail until it is; results are held meanwhile"
        );
    } else if !unset && WARNED.swap(false, Ordering::Relaxed) {
        tracing::info!(clock = now_text(), "the system clock is set now");
    }
    metrics::gauge!("kiri_clock_unset").set(if unset { 1.0 } else { 0.0 });
    unset
}

/// A sentence to append to a TLS error when the clock is the likely cause, else nothing.
pub fn hint() -> String {
    if unset() {
        format!(
            " (the system clock reads {}: certificates are not valid yet until the time is set)",
            now_text()
        )
    } else {
        String::new()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn this_machine_has_a_set_clock() {
        assert!(!super::unset());
        assert!(super::hint().is_empty());
        assert!(super::now_text().starts_with("20"));
    }
}

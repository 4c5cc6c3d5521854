//! The gateway's small background tasks: systemd notifications and the outbox's housekeeping.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use crate::outbox::Outbox;

/// systemd integration (`Type=notify`, only when `NOTIFY_SOCKET` is set): `READY=1` once the
/// gateway runs (store open, HTTP bound: an absent broker must not make systemd restart a
/// gateway that is rightly waiting for it), `STATUS=` saying whether it is subscribed to its
/// broker, and, with `WatchdogSec`, a watchdog ping every half period from the async runtime
/// (a wedged runtime stops feeding it and systemd restarts the gateway; a long outage or a full
/// outbox does not, as the runtime still runs).
pub(super) async fn systemd(ready: Arc<AtomicBool>) {
    use sd_notify::NotifyState;
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    if let Err(e) = sd_notify::notify(&[NotifyState::Ready]) {
        tracing::warn!("cannot notify systemd: {e}");
    }
    let period = sd_notify::watchdog_enabled().map(|p| p / 2);
    let mut subscribed = None;
    loop {
        let now = ready.load(std::sync::atomic::Ordering::Relaxed);
        if subscribed != Some(now) {
            subscribed = Some(now);
            let status = if now {
                "subscribed to the site broker"
            } else {
                "waiting for the site broker"
            };
            let _ = sd_notify::notify(&[NotifyState::Status(status)]);
        }
        if period.is_some() {
            let _ = sd_notify::notify(&[NotifyState::Watchdog]);
        }
        tokio::time::sleep(
            period
                .unwrap_or(Duration::from_secs(1))
                .min(Duration::from_secs(1)),
        )
        .await;
    }
}

/// Once a second: expires results past the TTL, publishes the backlog's age, and saves the
/// age clock when due (every minute: a save is a small disk write).
pub(super) async fn housekeeping(outbox: Arc<Outbox>) {
    loop {
        crate::clock::check();
        tokio::time::sleep(Duration::from_secs(1)).await;
        if let Err(e) = outbox.expire() {
            tracing::error!(error = %e, "outbox expiry sweep failed");
        }
        if let Err(e) = outbox.age().save_if_due() {
            tracing::error!(error = %e, "cannot save the age clock");
        }
        let age = match outbox.oldest_age_ms() {
            Ok(Some(ms)) => ms as f64 / 1000.0,
            _ => 0.0,
        };
        metrics::gauge!("kiri_outbox_oldest_age_seconds").set(age);
    }
}

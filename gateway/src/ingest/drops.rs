//! Drops an external site broker makes behind Kiri. Kiri acknowledges an input only once its
//! effects are durable, and stops reading while it cannot commit (the outbox full under
//! `block`, the disk at its reserve): the broker then holds what sensors send for Kiri's
//! sessions, up to its queue limits, and past them drops it (Mosquitto: `max_queued_messages`,
//! `max_queued_bytes`). Kiri cannot see those messages, but Mosquitto counts every drop in
//! `$SYS/broker/publish/messages/dropped`: the gateway's local session subscribes to it (in
//! external mode), and each rise is logged (WARN), counted (`kiri_site_broker_dropped_total`,
//! the broker's own counter) and shown (`site_broker.dropped` in the status, the dashboard).

use std::sync::atomic::{AtomicU64, Ordering};

/// Mosquitto's count of messages it dropped since it started (published every
/// `sys_interval`, 10 s by default).
pub const TOPIC: &str = "$SYS/broker/publish/messages/dropped";

/// The broker's count as last reported; `u64::MAX` until it reports.
static DROPPED: AtomicU64 = AtomicU64::new(u64::MAX);

/// The site broker's count of dropped messages as it last reported it, if it has.
pub fn dropped() -> Option<u64> {
    Some(DROPPED.load(Ordering::Relaxed)).filter(|&n| n != u64::MAX)
}

/// Takes a report of the broker's counter (its payload: the count as text). Returns the
/// drops it newly shows, if any: those since the last report, or at the first report (or
/// after the broker restarted and counted from 0 again) all it counted.
pub fn observe(payload: &[u8]) -> Option<u64> {
    let Some(count) = std::str::from_utf8(payload)
        .ok()
        .and_then(|t| t.trim().parse::<u64>().ok())
    else {
        tracing::debug!(payload = %String::from_utf8_lossy(payload), "an unreadable {TOPIC}");
        return None;
    };
    let last = DROPPED.swap(count, Ordering::Relaxed);
    metrics::counter!("kiri_site_broker_dropped_total").absolute(count);
    let new = match last {
        u64::MAX => count,
        last if count >= last => count - last,
        _ => count, // the broker restarted
    };
    if new > 0 {
        tracing::warn!(
            dropped = new,
            total = count,
            "the site broker dropped messages (its queue limits for sessions that do not read \
             fast enough, such as Kiri's while it holds inputs back): those readings never \
             reached Kiri. Raise the broker's max_queued_messages / max_queued_bytes (see \
             docs/mosquitto-site.conf) or keep the uplink draining"
        );
    }
    (new > 0).then_some(new)
}

#[cfg(test)]
mod tests {
    #[test]
    fn each_rise_of_the_brokers_counter_is_reported_once() {
        assert_eq!(super::observe(b"0"), None);
        assert_eq!(super::dropped(), Some(0));
        assert_eq!(super::observe(b"480"), Some(480));
        assert_eq!(super::observe(b"480"), None);
        assert_eq!(super::observe(b"500\n"), Some(20));
        assert_eq!(super::observe(b"7"), Some(7), "the broker restarted");
        assert_eq!(super::observe(b"not a number"), None);
        assert_eq!(super::dropped(), Some(7));
    }
}

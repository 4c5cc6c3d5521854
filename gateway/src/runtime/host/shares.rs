//! What one function's instances share across invocations, so that no function can take
//! more than its share of what all functions share: its key-value usage against its quota
//! (`limits.kv_max_bytes`, `limits.kv_max_keys`), and its log budget
//! (`limits.log_bytes_per_sec`).

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

/// A function's key-value usage: keys, and bytes of keys and values (the store's own
/// overhead not counted), as committed.
#[derive(Debug, Default)]
pub struct KvUsage {
    bytes: AtomicI64,
    keys: AtomicI64,
}

impl KvUsage {
    /// The usage of what `tree` holds now (read once, when the function loads).
    pub fn measure(tree: &sled::Tree) -> sled::Result<KvUsage> {
        let (mut bytes, mut keys) = (0i64, 0i64);
        for entry in tree.iter() {
            let (k, v) = entry?;
            bytes += (k.len() + v.len()) as i64;
            keys += 1;
        }
        Ok(KvUsage {
            bytes: AtomicI64::new(bytes),
            keys: AtomicI64::new(keys),
        })
    }

    /// Takes out what was deleted from the store outside the function (`kiri state delete`).
    pub fn forget(&self, function: &str, bytes: i64, keys: i64) {
        let bytes = self.bytes.fetch_sub(bytes, Ordering::Relaxed) - bytes;
        let keys = self.keys.fetch_sub(keys, Ordering::Relaxed) - keys;
        metrics::gauge!("kiri_kv_bytes", "function" => function.to_string()).set(bytes as f64);
        metrics::gauge!("kiri_kv_keys", "function" => function.to_string()).set(keys as f64);
    }

    /// Bytes of keys and values committed.
    pub fn bytes(&self) -> i64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Keys committed.
    pub fn keys(&self) -> i64 {
        self.keys.load(Ordering::Relaxed)
    }
}

/// One invocation's change to its function's key-value usage: applied by [`KvCharge::settle`]
/// once its writes are committed, dropped with them otherwise.
#[derive(Debug)]
pub struct KvCharge {
    pub(crate) function: Arc<str>,
    pub(crate) usage: Arc<KvUsage>,
    /// Bytes added (negative: freed).
    pub(crate) bytes: i64,
    /// Keys added (negative: deleted).
    pub(crate) keys: i64,
}

impl KvCharge {
    /// Counts the committed writes in the function's usage (and its gauges): `bytes` and
    /// `keys` as they changed the store (the charge counted while the invocation ran is what
    /// it checked against; invocations side by side may each have counted the same key).
    pub fn settle(self, bytes: i64, keys: i64) {
        let bytes = self.usage.bytes.fetch_add(bytes, Ordering::Relaxed) + bytes;
        let keys = self.usage.keys.fetch_add(keys, Ordering::Relaxed) + keys;
        let function = self.function.to_string();
        metrics::gauge!("kiri_kv_bytes", "function" => function.clone()).set(bytes as f64);
        metrics::gauge!("kiri_kv_keys", "function" => function).set(keys as f64);
    }
}

/// A function's log budget: bytes per second, with a second's worth as burst (a GCRA
/// limiter, governor). What is over is counted, not written.
#[derive(Debug)]
pub struct LogBudget(DefaultDirectRateLimiter);

impl LogBudget {
    /// `per_sec` bytes a second (at least one line of [`super::MAX_LOG_BYTES`] as burst).
    pub fn new(per_sec: u32) -> LogBudget {
        let rate = NonZeroU32::new(per_sec.max(1)).expect("at least 1");
        let burst = NonZeroU32::new(per_sec.max(super::MAX_LOG_BYTES as u32)).expect("> 0");
        LogBudget(RateLimiter::direct(
            Quota::per_second(rate).allow_burst(burst),
        ))
    }

    /// Whether a line of `bytes` may be written now (taking them from the budget).
    pub fn allow(&self, bytes: usize) -> bool {
        let n = NonZeroU32::new(bytes.max(1) as u32).expect("at least 1");
        matches!(self.0.check_n(n), Ok(Ok(())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_budget_lets_a_second_through_then_counts() {
        let b = LogBudget::new(8192);
        assert!(b.allow(4096));
        assert!(b.allow(4096));
        assert!(!b.allow(4096), "the second's budget is spent");
        let tiny = LogBudget::new(10);
        assert!(tiny.allow(4096), "one whole line always fits the burst");
    }

    #[test]
    fn usage_is_measured_and_settled() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let tree = db.open_tree("kv/f").unwrap();
        tree.insert(b"ab", &b"xyz"[..]).unwrap();
        tree.insert(b"c", &b""[..]).unwrap();
        let usage = Arc::new(KvUsage::measure(&tree).unwrap());
        assert_eq!((usage.bytes(), usage.keys()), (6, 2));
        KvCharge {
            function: "f".into(),
            usage: usage.clone(),
            bytes: 0,
            keys: 0,
        }
        .settle(-5, -1);
        assert_eq!((usage.bytes(), usage.keys()), (1, 1));
    }
}

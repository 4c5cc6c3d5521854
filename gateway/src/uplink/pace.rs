//! The uplink's bandwidth cap: a GCRA rate limiter (governor) counting payload bytes, with a
//! burst of one second's worth. A message larger than that waits for its bytes a second's
//! worth at a time, so the average holds whatever the message sizes.

use std::num::NonZeroU32;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

/// Paces publishes to a number of bytes per second.
pub struct Pacer {
    limiter: DefaultDirectRateLimiter,
    burst: NonZeroU32,
}

impl Pacer {
    /// A pacer for `bytes_per_sec`; `None` for 0 (no cap).
    pub fn new(bytes_per_sec: u64) -> Option<Pacer> {
        let burst = NonZeroU32::new(bytes_per_sec.min(u32::MAX as u64) as u32)?;
        Some(Pacer {
            limiter: RateLimiter::direct(Quota::per_second(burst)),
            burst,
        })
    }

    /// Waits until `bytes` more may be sent.
    pub async fn pace(&self, bytes: usize) {
        let mut left = bytes.max(1);
        while left > 0 {
            let take = left.min(self.burst.get() as usize);
            let n = NonZeroU32::new(take as u32).expect("take is at least 1");
            // `take` never exceeds the burst, the only case `until_n_ready` refuses.
            let _ = self.limiter.until_n_ready(n).await;
            left -= take;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    /// A lower bound only: a cap can make sending slower, never faster, so a slow machine
    /// cannot make this fail.
    #[tokio::test]
    async fn bytes_beyond_the_first_second_wait_for_the_rate() {
        let pacer = Pacer::new(10_000).unwrap();
        let start = Instant::now();
        // 10,000 bytes go at once (the burst); 15,000 more need at least 1.5 s at 10 kB/s,
        // whether they come as small messages or as one larger than the burst.
        for _ in 0..10 {
            pacer.pace(1000).await;
        }
        pacer.pace(5000).await;
        pacer.pace(10_000).await;
        assert!(start.elapsed() >= Duration::from_millis(1400));
        assert!(Pacer::new(0).is_none(), "0 means no cap");
    }
}

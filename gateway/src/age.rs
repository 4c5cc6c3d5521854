//! Age: how long something has been held, by a clock the wall clock cannot move.
//!
//! A board without a battery-backed clock starts in 1970 and jumps to the real time when NTP
//! answers; an operator or a bad time server can step the clock by hours either way. Ages
//! measured on the wall clock then lie: results held while the clock was unset look 55 years
//! old the moment it is set, a +2 h step makes everything 2 h older, a -1 day step delays a
//! retry by a day. Every age-based rule of the gateway (the outbox's `ttl`, the message expiry
//! it derives, the backlog's age, the dead letters' retry times, backoffs and lockouts) uses
//! this clock instead.
//!
//! The **age clock** counts milliseconds the gateway has run with this data directory: the
//! process's monotonic clock (which no clock setting moves) added to a base kept in the store
//! (`meta` key `age`: the age and the wall clock when it was saved, every minute and at a clean
//! stop). At open, the base is the saved age, plus the time the gateway was stopped **when the
//! wall clock was plausibly set both when it was saved and now** (a board with a real-time
//! clock, or NTP before the gateway starts) and moved forward; otherwise (the clock unset at
//! either end, or moved back) the stop counts as no time. The base is never below the age
//! stamped on any record held (see [`AgeClock::at_least`]), so a crash that lost the last
//! save never makes held results younger than when they were written. What this costs: time
//! the gateway was off without a trustworthy clock does not count towards a result's age.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Instant;

/// The `meta` key holding the saved age: `age_ms u64 | wall_ms u64`, big-endian.
const KEY: &str = "age";

/// How often [`AgeClock::save_if_due`] saves.
pub const SAVE_EVERY_MS: u64 = 60_000;

/// Milliseconds since this process first asked: the process's monotonic clock, for ages that
/// need not survive a restart (backoffs, lockouts, holds). No wall clock setting moves it.
pub fn mono_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64
}

/// The gateway's age clock (see the module documentation).
#[derive(Debug)]
pub struct AgeClock {
    meta: Option<sled::Tree>,
    /// The age at `started`.
    base_ms: AtomicU64,
    started: Instant,
    /// The age last saved.
    saved_ms: AtomicU64,
}

impl AgeClock {
    /// The age clock of the store `db`, resumed from what it saved (see the module
    /// documentation for how the time it was stopped counts).
    pub fn open(db: &sled::Db) -> sled::Result<AgeClock> {
        let meta = db.open_tree("meta")?;
        let saved = meta.get(KEY)?.and_then(|v| {
            let v: [u8; 16] = v.as_ref().try_into().ok()?;
            let age = u64::from_be_bytes(v[..8].try_into().expect("8 bytes"));
            let wall = u64::from_be_bytes(v[8..].try_into().expect("8 bytes"));
            Some((age, wall))
        });
        let base = match saved {
            Some((age, wall)) => age.saturating_add(stopped_for(wall, crate::now_ms())),
            None => 0,
        };
        let clock = AgeClock {
            meta: Some(meta),
            base_ms: AtomicU64::new(base),
            started: Instant::now(),
            saved_ms: AtomicU64::new(base),
        };
        Ok(clock)
    }

    /// A clock that starts at `age_ms` and saves nothing (tests).
    #[cfg(test)]
    pub fn detached(age_ms: u64) -> AgeClock {
        AgeClock {
            meta: None,
            base_ms: AtomicU64::new(age_ms),
            started: Instant::now(),
            saved_ms: AtomicU64::new(age_ms),
        }
    }

    /// The age now, in ms.
    pub fn now(&self) -> u64 {
        self.base_ms
            .load(Ordering::Relaxed)
            .saturating_add(self.started.elapsed().as_millis() as u64)
    }

    /// Moves the clock forward so that it reads at least `age_ms` now (at open: the newest age
    /// stamped on a record held, which a crash may have left beyond the last save).
    pub fn at_least(&self, age_ms: u64) {
        let now = self.now();
        if age_ms > now {
            self.base_ms.fetch_add(age_ms - now, Ordering::Relaxed);
        }
    }

    /// Saves the age (and the wall clock beside it) in the store; the next flush makes it
    /// durable.
    pub fn save(&self) -> sled::Result<()> {
        let age = self.now();
        if let Some(meta) = &self.meta {
            let mut v = [0u8; 16];
            v[..8].copy_from_slice(&age.to_be_bytes());
            v[8..].copy_from_slice(&crate::now_ms().to_be_bytes());
            meta.insert(KEY, &v)?;
        }
        self.saved_ms.store(age, Ordering::Relaxed);
        Ok(())
    }

    /// [`AgeClock::save`]s when the last save is [`SAVE_EVERY_MS`] old.
    pub fn save_if_due(&self) -> sled::Result<()> {
        if self
            .now()
            .saturating_sub(self.saved_ms.load(Ordering::Relaxed))
            >= SAVE_EVERY_MS
        {
            self.save()?;
        }
        Ok(())
    }
}

/// The time the gateway was stopped, as far as the wall clock can be trusted: `now - saved`
/// when the clock was set at both ends and moved forward, else 0.
fn stopped_for(saved_wall_ms: u64, now_wall_ms: u64) -> u64 {
    let set = |t: u64| t >= crate::clock::PLAUSIBLE_AFTER_MS;
    if set(saved_wall_ms) && set(now_wall_ms) {
        now_wall_ms.saturating_sub(saved_wall_ms)
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SET: u64 = crate::clock::PLAUSIBLE_AFTER_MS + 1_000_000;

    #[test]
    fn a_stop_counts_only_when_the_clock_was_set_at_both_ends_and_went_forward() {
        assert_eq!(stopped_for(SET, SET + 5_000), 5_000);
        assert_eq!(stopped_for(SET + 5_000, SET), 0, "moved back");
        assert_eq!(stopped_for(60_000, SET), 0, "unset when saved");
        assert_eq!(stopped_for(SET, 60_000), 0, "unset now");
    }

    #[test]
    fn the_age_resumes_from_what_was_saved_and_never_goes_below_a_records_stamp() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let clock = AgeClock::open(&db).unwrap();
        assert!(clock.now() < 1_000);
        clock.at_least(50_000);
        assert!(clock.now() >= 50_000);
        clock.at_least(10);
        assert!(clock.now() < 51_000, "at_least never moves it back");
        clock.save().unwrap();
        drop(clock);
        let again = AgeClock::open(&db).unwrap();
        // This machine's clock is set: the few ms between save and open count, no more.
        let age = again.now();
        assert!((50_000..51_000).contains(&age), "{age}");
    }

    #[test]
    fn saves_come_at_most_every_minute() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let clock = AgeClock::open(&db).unwrap();
        clock.save_if_due().unwrap();
        assert!(db.open_tree("meta").unwrap().get(KEY).unwrap().is_none());
        clock.at_least(SAVE_EVERY_MS);
        clock.save_if_due().unwrap();
        assert!(db.open_tree("meta").unwrap().get(KEY).unwrap().is_some());
    }

    #[test]
    fn the_monotonic_clock_only_goes_forward() {
        let a = mono_ms();
        std::thread::sleep(std::time::Duration::from_millis(5));
        assert!(mono_ms() >= a + 5);
    }
}

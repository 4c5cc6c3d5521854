//! Durability helpers of the outbox: the free-space guard of the data directory's file system,
//! and the `fsync` of the store's log (and its blob files) after a flush.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Watches the free space of the data directory's file system. A measurement (`statvfs`) is
/// trusted for 250 ms, less what was written since: each write is counted at
/// [`WRITE_AMPLIFICATION`] times its size (sled writes a value to its log, and large ones to a
/// blob file as well), and once that estimate reaches the reserve the space is measured again
/// at once. So a burst of large writes cannot run past the reserve between two measurements.
pub(super) struct DiskGuard {
    pub(super) dir: PathBuf,
    pub(super) min_free: std::sync::atomic::AtomicU64,
    pub(super) last: Mutex<Option<Measured>>,
}

/// What the disk had free when last measured, and what was written since.
#[derive(Debug, Clone, Copy)]
pub(super) struct Measured {
    at: Instant,
    free: u64,
    written: u64,
}

/// How many bytes of disk one byte written to the store is counted as, at most.
const WRITE_AMPLIFICATION: u64 = 3;

impl DiskGuard {
    /// Whether writing `upcoming` more bytes would go below the reserve (it counts them as
    /// written when it answers no).
    pub(super) fn low(&self, upcoming: u64) -> bool {
        let upcoming = upcoming.saturating_mul(WRITE_AMPLIFICATION);
        let mut last = self.last.lock().expect("disk guard lock");
        let fresh = last.filter(|m| {
            m.at.elapsed() < Duration::from_millis(250)
                && m.free.saturating_sub(m.written + upcoming)
                    >= self.min_free.load(std::sync::atomic::Ordering::Relaxed)
        });
        let mut m = match fresh {
            Some(m) => m,
            None => match rustix::fs::statvfs(&self.dir) {
                Ok(st) => Measured {
                    at: Instant::now(),
                    free: st.f_bavail.saturating_mul(st.f_frsize),
                    written: 0,
                },
                Err(e) => {
                    tracing::warn!(dir = %self.dir.display(), error = %e, "cannot read free disk space");
                    return false;
                }
            },
        };
        let low = m.free.saturating_sub(m.written + upcoming)
            < self.min_free.load(std::sync::atomic::Ordering::Relaxed);
        if !low {
            m.written += upcoming;
        }
        *last = Some(m);
        low
    }
}

/// What an `fsync` after a flush covers: sled's log file, and the files it writes large
/// values to (`blobs/`, which sled itself never syncs), with their folder.
pub(super) struct Fsync {
    pub(super) log: std::fs::File,
    pub(super) blobs: PathBuf,
    pub(super) synced: Mutex<std::collections::HashSet<std::ffi::OsString>>,
}

impl Fsync {
    pub(super) fn sync(&self) -> std::io::Result<()> {
        self.log.sync_data()?;
        let Ok(entries) = std::fs::read_dir(&self.blobs) else {
            return Ok(()); // no large values yet
        };
        let mut synced = self.synced.lock().expect("fsync lock");
        let mut present = std::collections::HashSet::new();
        let mut new = false;
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name();
            if !synced.contains(&name) {
                std::fs::File::open(entry.path())?.sync_data()?;
                new = true;
            }
            present.insert(name);
        }
        if new {
            std::fs::File::open(&self.blobs)?.sync_all()?;
        }
        *synced = present;
        Ok(())
    }
}

//! Durability helpers of the outbox: the free-space guard of the data directory's file system,
//! and the `fsync` of the store's log (and its blob files) after a flush.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Watches the free space of the data directory's file system (checked at most every 250 ms).
pub(super) struct DiskGuard {
    pub(super) dir: PathBuf,
    pub(super) min_free: u64,
    pub(super) last: Mutex<Option<(Instant, bool)>>,
}

impl DiskGuard {
    pub(super) fn low(&self) -> bool {
        let mut last = self.last.lock().expect("disk guard lock");
        if let Some((at, low)) = *last {
            if at.elapsed() < Duration::from_millis(250) {
                return low;
            }
        }
        let low = match rustix::fs::statvfs(&self.dir) {
            Ok(st) => st.f_bavail.saturating_mul(st.f_frsize) < self.min_free,
            Err(e) => {
                tracing::warn!(dir = %self.dir.display(), error = %e, "cannot read free disk space");
                false
            }
        };
        *last = Some((Instant::now(), low));
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

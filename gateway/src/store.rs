//! The store: one sled database in `gateway.data_dir` holding the outbox, the dead letters,
//! the functions' state, the deployments, and the gateway's own keys (`meta`: the store's id,
//! the dashboard token, the ingest session's subscriptions).

use std::path::Path;

/// The store could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The data directory could not be created or made private.
    #[error("cannot create data directory {path} (or make it private, 0700): {cause}")]
    Dir {
        /// The directory.
        path: String,
        /// Why.
        cause: std::io::Error,
    },
    /// Another process holds the store's lock (a second gateway on the same directory).
    #[error(
        "cannot open the store in {path}: another process (another kiri?) is using it: {cause}"
    )]
    Locked {
        /// The directory.
        path: String,
        /// Why.
        cause: sled::Error,
    },
    /// sled cannot read the store: its files are damaged (a disk fault, a file cut short or
    /// overwritten). Nothing is changed; the gateway does not start on it.
    #[error(
        "the store in {path} is damaged and cannot be opened: {cause}. Kiri changes nothing in \
         it; move {path}/store aside (keep it for analysis) to start with an empty store, or \
         restore a backup"
    )]
    Damaged {
        /// The directory.
        path: String,
        /// Why.
        cause: sled::Error,
    },
    /// The OS gave no random bytes for a token.
    #[error("cannot generate a token: {0}")]
    Random(std::io::Error),
    /// sled failed after opening.
    #[error("store: {0}")]
    Sled(#[from] sled::Error),
}

/// The open store.
pub struct Store {
    /// The sled database.
    pub db: sled::Db,
    /// A random id made when the store was created; record ids are `<id hex>-<seq>`.
    pub store_id: u64,
    /// sled's log file (what an `fsync` after a flush must cover).
    pub log_path: std::path::PathBuf,
    /// The data directory.
    dir: std::path::PathBuf,
}

/// The file in the data directory that keeps the generated dashboard token (mode 0600): read
/// by `kiri dashboard` while the gateway runs, without the store the gateway holds.
pub fn token_path(data_dir: &Path) -> std::path::PathBuf {
    data_dir.join("dashboard-token")
}

/// The generated dashboard token, if the gateway (or `kiri dashboard`) has made one.
pub fn read_dashboard_token(data_dir: &Path) -> std::io::Result<Option<String>> {
    match std::fs::read_to_string(token_path(data_dir)) {
        Ok(t) if !t.trim().is_empty() => Ok(Some(t.trim().to_string())),
        Ok(_) => Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Writes the token file: readable by the owner only, whole or not at all (written beside it,
/// synced, then renamed over it).
fn write_dashboard_token(data_dir: &Path, token: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = token_path(data_dir);
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(format!("{token}\n").as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, &path)?;
    std::fs::File::open(data_dir)?.sync_all()
}

impl Store {
    /// Opens (creating if needed) the store, with sled's page cache capped at `cache_bytes`.
    /// The data directory is made private to the gateway's user (0700), whatever the umask:
    /// it holds the dashboard token, function state and the results.
    pub fn open(dir: &Path, cache_bytes: u64, flush_every_ms: u64) -> Result<Store, StoreError> {
        let dir_error = |source| StoreError::Dir {
            path: dir.display().to_string(),
            cause: source,
        };
        std::fs::create_dir_all(dir).map_err(dir_error)?;
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                .map_err(dir_error)?;
        }
        let db = sled::Config::new()
            .path(dir.join("store"))
            .cache_capacity(cache_bytes)
            .flush_every_ms((flush_every_ms > 0).then_some(flush_every_ms))
            .open()
            .map_err(|cause| {
                let path = dir.display().to_string();
                if cause.to_string().contains("could not acquire lock") {
                    StoreError::Locked { path, cause }
                } else {
                    StoreError::Damaged { path, cause }
                }
            })?;
        let meta = db.open_tree("meta")?;
        let store_id = match meta.get("store_id")? {
            Some(v) if v.len() == 8 => u64::from_be_bytes(v.as_ref().try_into().expect("8 bytes")),
            _ => {
                let id = fastrand::u64(..);
                meta.insert("store_id", &id.to_be_bytes())?;
                db.flush()?;
                id
            }
        };
        Ok(Store {
            db,
            store_id,
            log_path: dir.join("store").join("db"),
            dir: dir.to_path_buf(),
        })
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The dashboard token kept in the data directory ([`token_path`]), made on first use;
    /// `true` with one just made (the caller says so, once). A token an earlier version kept
    /// in the store moves to the file.
    pub fn dashboard_token(&self) -> Result<(String, bool), StoreError> {
        let file_error = |e| StoreError::Dir {
            path: token_path(&self.dir).display().to_string(),
            cause: e,
        };
        if let Some(t) = read_dashboard_token(&self.dir).map_err(file_error)? {
            return Ok((t, false));
        }
        let meta = self.db.open_tree("meta")?;
        let (token, new) = match meta.get("dashboard_token")? {
            Some(t) => (String::from_utf8_lossy(&t).into_owned(), false),
            None => (
                crate::crypto::token::generate().map_err(StoreError::Random)?,
                true,
            ),
        };
        write_dashboard_token(&self.dir, &token).map_err(file_error)?;
        if !new {
            meta.remove("dashboard_token")?;
            self.db.flush()?;
        }
        Ok((token, new))
    }

    /// Records the filters the control session subscribes to now, and returns those an
    /// earlier run subscribed to that are no longer wanted.
    pub fn replace_subscriptions(&self, now: &[String]) -> Result<Vec<String>, StoreError> {
        replace_subscriptions_of(&self.db, None, now)
    }
}

/// The key a session's subscriptions are kept under: the control session's, or function
/// `lane`'s.
fn subscriptions_key(lane: Option<&str>) -> String {
    match lane {
        None => "subscriptions".into(),
        Some(f) => format!("subscriptions/{f}"),
    }
}

/// Records the filters the session of `lane` (the control session: `None`) subscribes to
/// now, and returns those an earlier run subscribed to that are no longer wanted.
pub fn replace_subscriptions_of(
    db: &sled::Db,
    lane: Option<&str>,
    now: &[String],
) -> Result<Vec<String>, StoreError> {
    let meta = db.open_tree("meta")?;
    let before: Vec<String> = match meta.get(subscriptions_key(lane))? {
        Some(v) => String::from_utf8_lossy(&v)
            .lines()
            .map(str::to_string)
            .collect(),
        None => Vec::new(),
    };
    save_subscriptions(db, lane, now)?;
    Ok(before.into_iter().filter(|f| !now.contains(f)).collect())
}

/// The functions whose lanes had sessions with the site broker in an earlier run (or this one).
pub fn lane_sessions(db: &sled::Db) -> Result<Vec<String>, StoreError> {
    let meta = db.open_tree("meta")?;
    meta.scan_prefix("subscriptions/")
        .keys()
        .map(|k| Ok(String::from_utf8_lossy(&k?["subscriptions/".len()..]).into_owned()))
        .collect()
}

/// Forgets the subscriptions of function `lane`'s session (its session was ended).
pub fn forget_lane_session(db: &sled::Db, lane: &str) -> Result<(), StoreError> {
    db.open_tree("meta")?
        .remove(subscriptions_key(Some(lane)))?;
    db.flush()?;
    Ok(())
}

/// Records the filters the session of `lane` (the control session: `None`) is subscribed to
/// (so that a later configuration can unsubscribe those it no longer uses).
pub fn save_subscriptions(
    db: &sled::Db,
    lane: Option<&str>,
    now: &[String],
) -> Result<(), StoreError> {
    let meta = db.open_tree("meta")?;
    meta.insert(subscriptions_key(lane), now.join("\n").as_bytes())?;
    db.flush()?;
    Ok(())
}

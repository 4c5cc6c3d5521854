//! What the outbox holds and has done since start (the status API, `kiri status`), and
//! whether inputs are held back now (`/readyz`).

use std::sync::atomic::{AtomicU64, Ordering};

use super::{Outbox, OutboxError};
use crate::config::OutboxConfig;

/// Counts since start, for the status API (the same numbers go to the metrics).
#[derive(Debug, Default)]
pub(super) struct Counts {
    pub(super) appended: AtomicU64,
    pub(super) acked: AtomicU64,
    pub(super) dropped_full: AtomicU64,
    pub(super) rejected: AtomicU64,
    pub(super) expired: AtomicU64,
    pub(super) corrupt: AtomicU64,
    pub(super) full_waits: AtomicU64,
    pub(super) disk_waits: AtomicU64,
    /// Appends waiting now for disk space, and for room (`block`).
    pub(super) waiting_disk: AtomicU64,
    pub(super) waiting_room: AtomicU64,
}

/// One append counted as waiting while it lives.
pub(super) struct Waiting<'a>(&'a AtomicU64);

impl<'a> Waiting<'a> {
    pub(super) fn new(count: &'a AtomicU64) -> Waiting<'a> {
        count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Waiting(count)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Why inputs are held back now, if they are.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct HeldBack {
    /// Writes wait for disk space (below `outbox.min_free_bytes`).
    pub disk: bool,
    /// Appends wait for room (the outbox, or a function's share, is full under `block`).
    pub full: bool,
}

/// What the outbox holds and has done since start.
#[derive(Debug, Clone, serde::Serialize)]
pub struct OutboxStats {
    /// Records held.
    pub records: u64,
    /// Bytes held (encoded records).
    pub bytes: u64,
    /// High priority records held.
    pub high_priority_records: u64,
    /// Records and bytes held per function, by name.
    pub functions: std::collections::BTreeMap<String, FunctionShare>,
    /// What one function may hold (`outbox.function_max_records`, `function_max_bytes`).
    pub function_share: FunctionShare,
    /// Records held but not yet flushed (not yet sent: a crash may still undo them).
    pub unflushed: u64,
    /// Age of the oldest record held, ms.
    pub oldest_age_ms: Option<u64>,
    /// Records appended since start.
    pub appended: u64,
    /// Records acknowledged by the cloud since start.
    pub acked: u64,
    /// Records deleted to make room (`drop_oldest`).
    pub dropped_full: u64,
    /// New records dropped because the outbox was full (`reject_new`).
    pub rejected: u64,
    /// Records expired by the TTL.
    pub expired: u64,
    /// Records found damaged and deleted.
    pub corrupt: u64,
    /// Appends that had to wait for room (`block`).
    pub full_waits: u64,
    /// Appends that had to wait for disk space.
    pub disk_waits: u64,
    /// Whether inputs are held back now, and why.
    pub held_back: HeldBack,
    /// The configured bounds and policy.
    pub policy: OutboxConfig,
}

/// What one function holds in the outbox.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct FunctionShare {
    /// Records held.
    pub records: u64,
    /// Bytes held.
    pub bytes: u64,
}

impl Outbox {
    /// Whether appends are waiting now for disk space or for room.
    pub fn held_back(&self) -> HeldBack {
        use std::sync::atomic::Ordering::Relaxed;
        HeldBack {
            disk: self.counts.waiting_disk.load(Relaxed) > 0,
            full: self.counts.waiting_room.load(Relaxed) > 0,
        }
    }

    /// What the outbox holds and has done.
    pub fn stats(&self) -> Result<OutboxStats, OutboxError> {
        let u = self.usage.lock().expect("outbox usage lock").clone();
        let c = &self.counts;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Ok(OutboxStats {
            records: u.records,
            bytes: u.bytes,
            high_priority_records: u.high,
            functions: u
                .queues
                .iter()
                .map(|(q, s)| {
                    let share = FunctionShare {
                        records: s.records,
                        bytes: s.bytes,
                    };
                    (String::from_utf8_lossy(q).into_owned(), share)
                })
                .collect(),
            function_share: FunctionShare {
                records: self.limits().function_records(),
                bytes: self.limits().function_bytes(),
            },
            unflushed: self.unflushed()?,
            oldest_age_ms: self.oldest_age_ms()?,
            appended: get(&c.appended),
            acked: get(&c.acked),
            dropped_full: get(&c.dropped_full),
            rejected: get(&c.rejected),
            expired: get(&c.expired),
            corrupt: get(&c.corrupt),
            full_waits: get(&c.full_waits),
            disk_waits: get(&c.disk_waits),
            held_back: self.held_back(),
            policy: (*self.limits()).clone(),
        })
    }
}

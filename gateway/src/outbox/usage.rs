//! What the outbox holds, in all and per function queue: counted under the usage lock, so
//! bounds are checked and taken in one step.

use std::collections::HashMap;

use super::record::{Priority, RecordId};

/// What one function's queue holds.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct Share {
    pub(super) records: u64,
    pub(super) bytes: u64,
    /// Records per class.
    pub(super) class: [u64; 3],
    /// Bytes per class.
    pub(super) class_bytes: [u64; 3],
    /// The highest sequence number it was given (so a wait knows whether its own records
    /// still need a flush).
    pub(super) newest: u64,
}

impl Share {
    pub(super) fn add(&mut self, id: &RecordId, bytes: u64) {
        self.records += 1;
        self.bytes += bytes;
        self.class[id.priority as usize] += 1;
        self.class_bytes[id.priority as usize] += bytes;
        self.newest = self.newest.max(id.seq);
    }

    pub(super) fn sub(&mut self, priority: Priority, bytes: u64) {
        self.records = self.records.saturating_sub(1);
        self.bytes = self.bytes.saturating_sub(bytes);
        let c = &mut self.class[priority as usize];
        *c = c.saturating_sub(1);
        let b = &mut self.class_bytes[priority as usize];
        *b = b.saturating_sub(bytes);
    }

    /// Its records and bytes, forwarded log lines (low priority) left out.
    pub(super) fn results(&self) -> (u64, u64) {
        let low = Priority::Low as usize;
        (
            self.records - self.class[low],
            self.bytes - self.class_bytes[low],
        )
    }
}

#[derive(Debug, Default, Clone)]
pub(super) struct Usage {
    pub(super) records: u64,
    pub(super) bytes: u64,
    /// Of `records`, how many are high priority.
    pub(super) high: u64,
    /// Per function queue (its name's bytes). A queue that empties is removed.
    pub(super) queues: HashMap<Vec<u8>, Share>,
}

impl Usage {
    pub(super) fn add(&mut self, id: &RecordId, bytes: u64) {
        self.records += 1;
        self.bytes += bytes;
        if id.priority == Priority::High {
            self.high += 1;
        }
        self.queues
            .entry(id.queue.clone())
            .or_default()
            .add(id, bytes);
    }

    /// A stored record whose key this version cannot read: held, in the bounds, in no queue.
    pub(super) fn add_unread(&mut self, bytes: u64) {
        self.records += 1;
        self.bytes += bytes;
    }

    pub(super) fn sub(&mut self, id: &RecordId, bytes: u64) {
        self.records = self.records.saturating_sub(1);
        self.bytes = self.bytes.saturating_sub(bytes);
        if id.priority == Priority::High {
            self.high = self.high.saturating_sub(1);
        }
        if let Some(share) = self.queues.get_mut(&id.queue) {
            share.sub(id.priority, bytes);
            if share.records == 0 {
                self.queues.remove(&id.queue);
            }
        }
    }

    pub(super) fn share(&self, queue: &[u8]) -> Share {
        self.queues.get(queue).copied().unwrap_or_default()
    }

    /// The queues holding records of `priority`, in name order.
    pub(super) fn queues_in(&self, priority: Priority) -> Vec<Vec<u8>> {
        let mut q: Vec<Vec<u8>> = self
            .queues
            .iter()
            .filter(|(_, s)| s.class[priority as usize] > 0)
            .map(|(q, _)| q.clone())
            .collect();
        q.sort();
        q
    }
}

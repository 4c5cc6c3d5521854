//! The in-flight window of the uplink: which outbox records were published on the current
//! connection and which MQTT packet id carries each, until its PUBACK. Pure bookkeeping.

use std::collections::{HashMap, VecDeque};

/// Records published and not yet acknowledged.
#[derive(Debug, Default)]
pub struct Window {
    capacity: usize,
    /// Published, packet id not yet known (rumqttc reports ids in publish order).
    unassigned: VecDeque<u64>,
    /// Packet id → record sequence number.
    by_pkid: HashMap<u16, u64>,
}

impl Window {
    /// A window of at most `capacity` records.
    pub fn new(capacity: usize) -> Window {
        Window {
            capacity: capacity.max(1),
            ..Window::default()
        }
    }

    /// Records in flight.
    pub fn len(&self) -> usize {
        self.unassigned.len() + self.by_pkid.len()
    }

    /// Whether nothing is in flight.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many more may be published now.
    pub fn room(&self) -> usize {
        self.capacity.saturating_sub(self.len())
    }

    /// Record `seq` was handed to the client for publishing.
    pub fn published(&mut self, seq: u64) {
        self.unassigned.push_back(seq);
    }

    /// The client sent the oldest unassigned publish with packet id `pkid`.
    pub fn assigned(&mut self, pkid: u16) {
        if let Some(seq) = self.unassigned.pop_front() {
            self.by_pkid.insert(pkid, seq);
        }
    }

    /// PUBACK for `pkid`: returns the record it acknowledges.
    pub fn acked(&mut self, pkid: u16) -> Option<u64> {
        self.by_pkid.remove(&pkid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acks_map_back_to_records_through_packet_ids() {
        let mut w = Window::new(3);
        w.published(10);
        w.published(11);
        assert_eq!(w.room(), 1);
        w.assigned(1);
        w.assigned(2);
        assert_eq!(w.acked(2), Some(11));
        assert_eq!(w.acked(2), None, "a repeated ack acknowledges nothing");
        assert_eq!(w.acked(1), Some(10));
        assert!(w.is_empty());
    }
}

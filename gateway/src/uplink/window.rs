//! The in-flight window of the uplink: which outbox records were published on the current
//! connection and which MQTT packet id carries them (one record, or a batch), until its
//! PUBACK. Pure bookkeeping.

use std::collections::{HashMap, VecDeque};

use crate::outbox::RecordId;

/// The records one message carries.
pub type Carried = Vec<RecordId>;

/// One message in flight: its records, and when each was emitted (ms since the epoch).
#[derive(Debug)]
struct Flight {
    records: Carried,
    stamps: Vec<u64>,
}

/// Messages published and not yet acknowledged.
#[derive(Debug, Default)]
pub struct Window {
    capacity: usize,
    /// Published, packet id not yet known (rumqttc reports ids in publish order).
    unassigned: VecDeque<Flight>,
    /// Packet id → the records its message carries.
    by_pkid: HashMap<u16, Flight>,
}

impl Window {
    /// A window of at most `capacity` messages.
    pub fn new(capacity: usize) -> Window {
        Window {
            capacity: capacity.max(1),
            ..Window::default()
        }
    }

    /// Messages in flight.
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

    /// A message carrying `records`, stamped `stamps` on the age clock, was handed to the client for
    /// publishing.
    pub fn published(&mut self, records: Carried, stamps: Vec<u64>) {
        self.unassigned.push_back(Flight { records, stamps });
    }

    /// The client sent the oldest unassigned publish with packet id `pkid`.
    pub fn assigned(&mut self, pkid: u16) {
        if let Some(records) = self.unassigned.pop_front() {
            self.by_pkid.insert(pkid, records);
        }
    }

    /// PUBACK for `pkid`: returns the records it acknowledges, and when each was emitted.
    pub fn acked(&mut self, pkid: u16) -> Option<(Carried, Vec<u64>)> {
        let flight = self.by_pkid.remove(&pkid)?;
        Some((flight.records, flight.stamps))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acks_map_back_to_records_through_packet_ids() {
        let n = |seq| RecordId::new(crate::outbox::Priority::Normal, "f", seq);
        let mut w = Window::new(3);
        w.published(vec![n(10)], vec![1]);
        w.published(vec![n(11), n(12)], vec![2, 3]);
        assert_eq!(w.room(), 1);
        w.assigned(1);
        w.assigned(2);
        assert_eq!(w.acked(2), Some((vec![n(11), n(12)], vec![2, 3])));
        assert_eq!(w.acked(2), None, "a repeated ack acknowledges nothing");
        assert_eq!(w.acked(1), Some((vec![n(10)], vec![1])));
        assert!(w.is_empty());
    }
}

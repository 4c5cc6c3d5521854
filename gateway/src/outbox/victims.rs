//! Which records `drop_oldest` deletes to make room: a function's own over its share, then,
//! for the whole outbox, class by class from the biggest holder of the class.

use super::record::{self, Priority, RecordId};
use super::usage::Usage;
use super::write::Demand;
use super::{Outbox, OutboxError};

impl Outbox {
    /// The records to delete so that `demand` fits: first the oldest of each function in the
    /// append that is over its share; then, while the whole outbox is over its bounds, class
    /// by class (forwarded log lines, then normal priority, then high), the oldest of the
    /// function holding the most of that class. Ids and encoded sizes.
    pub(super) fn victims(
        &self,
        u: &Usage,
        demand: &Demand,
    ) -> Result<Vec<(RecordId, u64)>, OutboxError> {
        let mut sim = u.clone();
        let mut out = Vec::new();
        let mut from = Resume::default();
        let classes = [Priority::Low, Priority::Normal, Priority::High];
        // Over its own share: its own oldest results (its log lines do not count there).
        for (q, records, bytes) in &demand.queues {
            let over = |s: &Usage| {
                let (held, held_bytes) = s.share(q).results();
                held > 0
                    && (held + records > self.limits().function_records()
                        || held_bytes + bytes > self.limits().function_bytes())
            };
            for p in [Priority::Normal, Priority::High] {
                self.take_oldest(q, p, &mut sim, &mut out, &mut from, over)?;
            }
        }
        // The whole outbox over its bounds: class by class, the biggest holder's oldest.
        let total_over = |s: &Usage| {
            s.records > 0
                && (s.records + demand.records > self.limits().max_records
                    || s.bytes + demand.bytes > self.limits().max_bytes)
        };
        for p in classes {
            while total_over(&sim) {
                let c = p as usize;
                let Some(biggest) = sim
                    .queues
                    .iter()
                    .filter(|(_, s)| s.class[c] > 0)
                    .max_by(|(qa, a), (qb, b)| {
                        (a.class_bytes[c], a.class[c], qb).cmp(&(b.class_bytes[c], b.class[c], qa))
                    })
                    .map(|(q, _)| q.clone())
                else {
                    break;
                };
                let before = out.len();
                // Its oldest while it is still the biggest of the class (then look again).
                let still_biggest = |s: &Usage| {
                    let mine = s.share(&biggest).class_bytes[c];
                    total_over(s) && s.queues.values().all(|o| o.class_bytes[c] <= mine)
                };
                self.take_oldest(&biggest, p, &mut sim, &mut out, &mut from, still_biggest)?;
                if out.len() == before {
                    break;
                }
            }
        }
        Ok(out)
    }

    /// Adds the oldest records of `queue` in class `p` to `out` while `more` holds for the
    /// simulated usage, going on from where the last call on that queue and class stopped.
    fn take_oldest(
        &self,
        queue: &[u8],
        p: Priority,
        sim: &mut Usage,
        out: &mut Vec<(RecordId, u64)>,
        from: &mut Resume,
        more: impl Fn(&Usage) -> bool,
    ) -> Result<(), OutboxError> {
        let prefix = record::queue_prefix(p, queue);
        let start = match from.get(&prefix) {
            Some(last) => std::ops::Bound::Excluded(last.clone()),
            None => std::ops::Bound::Included(prefix.clone()),
        };
        let end = std::ops::Bound::Included(record::key_in(p, queue, u64::MAX));
        for entry in self.tree.range::<Vec<u8>, _>((start, end)) {
            if !more(sim) {
                return Ok(());
            }
            let (k, v) = entry?;
            from.insert(prefix.clone(), k.to_vec());
            let Some(id) = record::parse_key(&k) else {
                continue;
            };
            sim.sub(&id, v.len() as u64);
            out.push((id, v.len() as u64));
        }
        Ok(())
    }
}

/// Where victim selection stopped in each queue and class: the last key it took.
type Resume = std::collections::HashMap<Vec<u8>, Vec<u8>>;

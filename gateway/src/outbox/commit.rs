//! Group commit across lanes: each function's lane commits its own groups, and lanes that ask
//! for a flush while one is running share the next one (one sled flush and one `fsync` for all
//! of them) instead of queueing an `fsync` each.

use std::sync::{Condvar, Mutex};

use super::{Outbox, OutboxError};

/// Who asked for a flush and what is done.
#[derive(Debug, Default)]
pub(super) struct Commits {
    state: Mutex<CommitState>,
    done: Condvar,
}

#[derive(Debug, Default)]
struct CommitState {
    /// Tickets handed out: one per [`Outbox::flush`] call, taken after the caller's writes.
    requested: u64,
    /// Every ticket up to this one is covered by a finished flush.
    completed: u64,
    /// A flush is under way.
    running: bool,
    /// A flush failed: the store is not to be trusted any more, every later flush fails too.
    failed: Option<String>,
}

impl Outbox {
    /// Makes everything written so far durable (one sled flush, and one `fsync` of its log
    /// when set), and readable by the uplink. Callers that come while a flush runs wait for it
    /// to end and then share one flush among them: it covers everything each of them wrote
    /// before calling. Returns the bytes this call flushed (0 when another call's flush
    /// covered it).
    pub fn flush(&self) -> Result<usize, OutboxError> {
        let c = &self.commits;
        let mut st = c.state.lock().expect("commit lock");
        st.requested += 1;
        let ticket = st.requested;
        loop {
            if let Some(e) = &st.failed {
                return Err(OutboxError::Failed(e.clone()));
            }
            if st.completed >= ticket {
                return Ok(0);
            }
            if !st.running {
                st.running = true;
                // Everyone who asked so far wrote before asking: this flush covers them.
                let covers = st.requested;
                drop(st);
                let result = self.flush_now();
                st = c.state.lock().expect("commit lock");
                st.running = false;
                match &result {
                    Ok(_) => st.completed = covers,
                    Err(e) => st.failed = Some(e.to_string()),
                }
                c.done.notify_all();
                return result;
            }
            st = c.done.wait(st).expect("commit lock");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use crate::config::OutboxConfig;
    use crate::outbox::{NewRecord, Outbox};

    #[test]
    fn a_flush_mark_is_passed_only_by_a_flush_begun_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new().path(dir.path()).open().unwrap();
        let outbox = Outbox::open(&db, OutboxConfig::default()).unwrap();
        let before = outbox.flush_mark();
        assert!(!outbox.flushed_since(before), "nothing flushed since");
        outbox.flush().unwrap();
        assert!(outbox.flushed_since(before));
        let after = outbox.flush_mark();
        assert!(
            !outbox.flushed_since(after),
            "the flush began before this mark"
        );
        outbox.flush().unwrap();
        assert!(outbox.flushed_since(after));
    }

    #[test]
    fn lanes_committing_together_share_flushes_and_each_finds_its_records_durable() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new().path(dir.path()).open().unwrap();
        let outbox = Arc::new(Outbox::open(&db, OutboxConfig::default()).unwrap());
        let lanes: Vec<_> = (0..8)
            .map(|lane| {
                let outbox = outbox.clone();
                std::thread::spawn(move || {
                    let mut flushes = 0;
                    for i in 0..50u64 {
                        let r = NewRecord {
                            function: format!("f{lane}"),
                            topic: "t".into(),
                            payload: i.to_be_bytes().to_vec(),
                            created_ms: i,
                        };
                        let seq = outbox.append(&[r]).unwrap()[0];
                        outbox.flush().unwrap();
                        flushes += 1;
                        assert!(
                            outbox.durable.load(std::sync::atomic::Ordering::Acquire) > seq,
                            "a flush returned before the caller's record was durable"
                        );
                    }
                    flushes
                })
            })
            .collect();
        let calls: u32 = lanes.into_iter().map(|l| l.join().unwrap()).sum();
        assert_eq!(calls, 400);
    }
}

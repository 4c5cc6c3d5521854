//! Running one function's jobs from any thread, on the version installed when the handle was
//! taken.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::instance::{invoke_slot, Ctx, Function, Instance};
use super::{EngineSet, Invocation, InvokeError, Job};
use crate::telemetry::meter;

/// One function of the [`Runtime`], to run jobs on from any thread: the version installed
/// when the handle was taken (a newer one installed meanwhile is used by the next handle).
#[derive(Clone)]
pub struct FunctionHandle {
    pub(super) function: Arc<std::sync::Mutex<Function>>,
    pub(super) set: Arc<EngineSet>,
    pub(super) max_payload_bytes: usize,
    pub(super) meters: meter::Meters,
}

impl FunctionHandle {
    /// Runs `jobs` (all of this function), like [`Runtime::run_batch`]: one after the other
    /// on an instance, across its instances with `concurrency` > 1.
    pub fn run_batch<E: Send>(
        &self,
        jobs: &[Job<'_>],
        then: impl Fn(usize, Result<Invocation, InvokeError>) -> Result<(), E> + Sync,
    ) -> Result<(), Vec<E>> {
        let all: Vec<usize> = (0..jobs.len()).collect();
        let errors = self.run_some(jobs, &all, &then, &AtomicBool::new(false));
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }

    /// Runs `jobs[j]` for each `j` of `which` (all of this function) on its instances, until
    /// `stop`; the errors of `then`.
    pub(super) fn run_some<E: Send>(
        &self,
        jobs: &[Job<'_>],
        which: &[usize],
        then: &(impl Fn(usize, Result<Invocation, InvokeError>) -> Result<(), E> + Sync),
        stop: &AtomicBool,
    ) -> Vec<E> {
        let mut f = self.function.lock().expect("function lock");
        let Function { meta, pool } = &mut *f;
        let ctx = Ctx {
            set: &self.set,
            meta,
            max_payload_bytes: self.max_payload_bytes,
            meters: &self.meters,
        };
        let ctx = &ctx;
        // One task per instance slot, holding its jobs in order.
        let slots = pool.len().max(1);
        let mut tasks: Vec<Vec<usize>> = vec![Vec::new(); slots];
        for (k, &j) in which.iter().enumerate() {
            tasks[k % slots].push(j);
        }
        let run = |slot: &mut Option<Instance>, js: Vec<usize>| -> Option<E> {
            for j in js {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let job = &jobs[j];
                if job.fresh {
                    *slot = None;
                }
                if let Err(e) = then(j, invoke_slot(ctx, slot, job)) {
                    stop.store(true, Ordering::Relaxed);
                    return Some(e);
                }
            }
            None
        };
        let mut work: Vec<_> = pool
            .iter_mut()
            .zip(tasks)
            .filter(|(_, js)| !js.is_empty())
            .collect();
        let Some((first_slot, first_jobs)) = work.pop() else {
            return Vec::new();
        };
        let mut errors = Vec::new();
        if work.is_empty() {
            errors.extend(run(first_slot, first_jobs));
        } else {
            std::thread::scope(|scope| {
                let run = &run;
                let handles: Vec<_> = work
                    .into_iter()
                    .map(|(slot, js)| scope.spawn(move || run(slot, js)))
                    .collect();
                errors.extend(run(first_slot, first_jobs));
                for h in handles {
                    errors.extend(h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)));
                }
            });
        }
        errors
    }
}

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

/// Runs `jobs` on the functions `handle` gives by index: in parallel across functions (and
/// across the instances of a function with `concurrency` > 1); with `concurrency` = 1 a
/// function's jobs run one after the other in the given order. `then(job_index, result)` is
/// called on the worker right after each job, before the next job of that instance, so it
/// can commit state the next one reads. An error from `then` stops every worker before its
/// next job; all errors are returned.
pub fn run_on<E: Send>(
    handle: impl Fn(usize) -> FunctionHandle,
    jobs: &[Job<'_>],
    then: impl Fn(usize, Result<Invocation, InvokeError>) -> Result<(), E> + Sync,
) -> Result<(), Vec<E>> {
    let mut by_function: Vec<(usize, Vec<usize>)> = Vec::new();
    for (j, job) in jobs.iter().enumerate() {
        match by_function.iter_mut().find(|(f, _)| *f == job.function) {
            Some((_, js)) => js.push(j),
            None => by_function.push((job.function, vec![j])),
        }
    }
    let stop = AtomicBool::new(false);
    let (stop, then) = (&stop, &then);
    let mut work: Vec<_> = by_function
        .into_iter()
        .map(|(f, js)| {
            let handle = handle(f);
            move || handle.run_some(jobs, &js, then, stop)
        })
        .collect();
    let Some(first) = work.pop() else {
        return Ok(());
    };
    let mut errors = Vec::new();
    if work.is_empty() {
        errors.extend(first());
    } else {
        std::thread::scope(|scope| {
            let handles: Vec<_> = work.into_iter().map(|w| scope.spawn(w)).collect();
            errors.extend(first());
            for h in handles {
                // A panicking worker is a bug: take the pipeline (and the gateway) down.
                errors.extend(h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)));
            }
        });
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

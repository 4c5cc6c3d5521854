//! The timer trigger: `every = "10s"` and `cron = "..."` functions get a `$timer` event on
//! schedule, one tokio task per timer, started and stopped by the registry through the
//! [`Scheduler`] it defines. A tick that finds the pipeline's queue full is skipped and
//! counted, never queued without bound; ticks that fall while the gateway is down are not
//! replayed. Timers set before the pipeline runs (at startup) wait for it: they start when
//! [`Timers::new`]'s `go` turns true.

use std::time::Duration;

use tokio::sync::{mpsc, watch};

use crate::config::FunctionConfig;
use crate::pipeline::{Dispatch, Work};
use crate::registry::Scheduler;

fn fire(function: usize, name: &str, tx: &Dispatch) -> bool {
    let work = Work::Timer {
        function,
        at_ms: crate::now_ms(),
    };
    match tx.try_send(work) {
        Ok(()) => true,
        Err(mpsc::error::TrySendError::Full(_)) => {
            metrics::counter!("kiri_timer_ticks_skipped_total", "function" => name.to_string())
                .increment(1);
            tracing::warn!(
                function = name,
                "timer tick skipped: the processing queue is full"
            );
            true
        }
        Err(mpsc::error::TrySendError::Closed(_)) => false,
    }
}

/// Waits until the pipeline runs; `false` if it never will (the gateway is stopping).
async fn started(go: &mut watch::Receiver<bool>) -> bool {
    go.wait_for(|go| *go).await.is_ok()
}

/// Fires every `period` (the first time one period after the pipeline started).
async fn every(
    function: usize,
    name: String,
    period: Duration,
    tx: Dispatch,
    mut go: watch::Receiver<bool>,
) {
    if !started(&mut go).await {
        return;
    }
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        ticker.tick().await;
        if !fire(function, &name, &tx) {
            return;
        }
    }
}

/// Fires at each occurrence of `schedule` (UTC) once the pipeline runs.
async fn cron(
    function: usize,
    name: String,
    schedule: croner::Cron,
    tx: Dispatch,
    mut go: watch::Receiver<bool>,
) {
    if !started(&mut go).await {
        return;
    }
    loop {
        let now = chrono::Utc::now();
        let Ok(next) = schedule.find_next_occurrence(&now, false) else {
            tracing::warn!(function = %name, "cron schedule has no next occurrence; timer stopped");
            return;
        };
        let wait = (next - now).to_std().unwrap_or(Duration::ZERO);
        tokio::time::sleep(wait).await;
        if !fire(function, &name, &tx) {
            return;
        }
    }
}

/// The running timers, per function index; replaced when a deployment changes a function.
pub struct Timers {
    handle: tokio::runtime::Handle,
    tx: Dispatch,
    go: watch::Receiver<bool>,
    tasks: std::collections::HashMap<usize, Vec<tokio::task::JoinHandle<()>>>,
}

impl Timers {
    /// Timers that queue their ticks on `tx`, as tasks on `handle`, from when `go` is true.
    pub fn new(handle: tokio::runtime::Handle, tx: Dispatch, go: watch::Receiver<bool>) -> Timers {
        Timers {
            handle,
            tx,
            go,
            tasks: Default::default(),
        }
    }
}

impl Scheduler for Timers {
    /// Starts the timers `f` asks for (stopping the ones function `idx` had).
    fn set(&mut self, idx: usize, f: &FunctionConfig) {
        self.clear(idx);
        let mut tasks = Vec::new();
        if let Some(spec) = &f.every {
            let period = humantime::parse_duration(spec).expect("validated with the config");
            let task = every(
                idx,
                f.name.clone(),
                period,
                self.tx.clone(),
                self.go.clone(),
            );
            tasks.push(self.handle.spawn(task));
        }
        if let Some(spec) = &f.cron {
            let schedule = spec.parse().expect("validated with the config");
            let task = cron(
                idx,
                f.name.clone(),
                schedule,
                self.tx.clone(),
                self.go.clone(),
            );
            tasks.push(self.handle.spawn(task));
        }
        self.tasks.insert(idx, tasks);
    }

    /// Stops function `idx`'s timers.
    fn clear(&mut self, idx: usize) {
        for t in self.tasks.remove(&idx).unwrap_or_default() {
            t.abort();
        }
    }
}

impl Drop for Timers {
    fn drop(&mut self) {
        for t in self.tasks.values().flatten() {
            t.abort();
        }
    }
}

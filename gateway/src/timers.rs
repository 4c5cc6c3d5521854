//! Timer triggers: `every = "10s"` and `cron = "..."` functions get a `$timer` event on
//! schedule. A tick that finds the processor's queue full is skipped and counted, never
//! queued without bound; ticks that fall while the gateway is down are not replayed.

use std::time::Duration;

use tokio::sync::mpsc;

use crate::processor::Work;

fn fire(function: usize, name: &str, tx: &mpsc::Sender<Work>) -> bool {
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

/// Fires every `period` (the first time one period after start).
pub async fn every(function: usize, name: String, period: Duration, tx: mpsc::Sender<Work>) {
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        ticker.tick().await;
        if !fire(function, &name, &tx) {
            return;
        }
    }
}

/// Fires at each occurrence of `schedule` (UTC).
pub async fn cron(function: usize, name: String, schedule: croner::Cron, tx: mpsc::Sender<Work>) {
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

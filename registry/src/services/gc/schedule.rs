//! Scheduled runs: every `gc_interval_secs`, counted from the last run that
//! deleted (not a dry run), whichever replica ran it. Every replica keeps
//! the schedule; the first to find a run due takes the lock and runs it, the
//! others find it taken or the run no longer due.

use std::time::Duration;

use super::Cause;
use crate::metadata::now;
use crate::state::AppState;

/// Checks every so often whether a run is due, and starts it; returns at once when the schedule is off.
pub async fn run_periodically(state: AppState) {
    let interval = state.config.gc.interval_secs;
    if interval == 0 {
        tracing::info!("scheduled garbage collection is off (gc_interval_secs = 0)");
        return;
    }
    let interval = interval as i64;
    let since_start = now();
    let mut tick = tokio::time::interval(Duration::from_secs((interval as u64 / 4).clamp(1, 60)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let last = match state.db.gc_runs().last_real_start().await {
            Ok(last) => last.unwrap_or(since_start),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read when garbage collection last ran; will retry");
                continue;
            }
        };
        if now() < last + interval {
            continue;
        }
        match super::start(&state, Cause::Schedule, "system", false).await {
            Ok((_, task)) => {
                let _ = task.await;
            }
            Err(crate::services::Error::Conflict(_)) => {}
            Err(e) => tracing::warn!(error = %e, "cannot start the scheduled garbage collection; will retry"),
        }
    }
}

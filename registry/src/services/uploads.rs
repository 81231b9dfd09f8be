//! Expiry of abandoned upload sessions.
//!
//! A client that starts an upload and never finishes it would otherwise
//! leave its partial file and its row forever. A session idle for longer
//! than `upload_ttl_secs` (no bytes received) is discarded; a client that
//! comes back gets `BLOB_UPLOAD_UNKNOWN` and starts again.

use std::time::{Duration, SystemTime};

use crate::metadata::now;
use crate::state::AppState;

/// Discards sessions idle longer than the TTL; returns how many.
pub async fn expire_idle(state: &AppState) -> Result<usize, sqlx::Error> {
    let ttl = Duration::from_secs(state.config.upload_ttl_secs);
    let candidates = state.db.uploads().created_before(now() - ttl.as_secs() as i64, 1000).await?;
    let mut expired = 0;
    for id in candidates {
        let idle = match state.blobs.upload_modified(&id).await {
            Some(modified) => SystemTime::now().duration_since(modified).unwrap_or_default(),
            None => Duration::MAX,
        };
        if idle < ttl {
            continue;
        }
        // Hold the session's lock so a chunk arriving right now is not cut off mid-write.
        let _guard = state.uploads.lock(&id).await;
        state.db.uploads().delete(&id).await?;
        state.blobs.remove_upload(&id).await;
        state.uploads.forget(&id);
        expired += 1;
    }
    if expired > 0 {
        tracing::info!(expired, ttl_secs = ttl.as_secs(), "discarded idle upload sessions");
    }
    Ok(expired)
}

/// Runs [`expire_idle`] periodically until the process stops.
pub async fn run_janitor(state: AppState) {
    let period = Duration::from_secs((state.config.upload_ttl_secs / 2).clamp(1, 600));
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(e) = expire_idle(&state).await {
            tracing::warn!(error = %e, "could not expire idle upload sessions; will retry");
        }
    }
}

//! Expiry of abandoned upload sessions, and of what crashed uploads left in
//! object storage.
//!
//! A client that starts an upload and never finishes it would otherwise
//! leave its bytes and its row forever. A session idle for longer than
//! `upload_ttl_secs` (no bytes received) is discarded; a client that comes
//! back gets `BLOB_UPLOAD_UNKNOWN` and starts again.
//!
//! With S3, a registry process killed mid-upload leaves a multipart upload
//! open (S3 keeps, and bills, its parts until it is aborted) and perhaps a
//! session's tail object. Every round also aborts multipart uploads and
//! deletes upload objects older than the TTL that no session owns.

use std::time::{Duration, SystemTime};

use crate::metadata::now;
use crate::state::AppState;
use crate::storage::{BlobStore, OrphanSweep};

/// Discards sessions idle longer than the TTL; returns how many.
pub async fn expire_idle(state: &AppState) -> Result<usize, sqlx::Error> {
    let ttl = Duration::from_secs(state.config.upload_ttl_secs);
    let candidates = state.db.uploads().idle_since(now() - ttl.as_secs() as i64, 1000).await?;
    let mut expired = 0;
    for (id, saved) in candidates {
        // A filesystem session's file says when bytes last arrived, even from before the database kept it.
        if let BlobStore::Filesystem(_) = state.blobs {
            let idle = match state.blobs.upload_modified(&id).await {
                Some(modified) => SystemTime::now().duration_since(modified).unwrap_or_default(),
                None => Duration::MAX,
            };
            if idle < ttl {
                continue;
            }
        }
        // Hold the session's lock so a chunk arriving right now is not cut off mid-write.
        let _guard = state.uploads.lock(&id).await;
        state.db.uploads().delete(&id).await?;
        state.blobs.remove_upload(&id, saved.as_deref()).await;
        state.uploads.forget(&id);
        expired += 1;
    }
    if expired > 0 {
        tracing::info!(expired, ttl_secs = ttl.as_secs(), "discarded idle upload sessions");
    }
    Ok(expired)
}

/// Removes what interrupted uploads left behind that no session owns and
/// that is older than the TTL: multipart uploads and upload objects in S3,
/// session files on the filesystem (a crash between creating a session's
/// storage and recording the session leaves those).
pub async fn sweep_orphans(state: &AppState) -> Result<OrphanSweep, String> {
    let ttl = Duration::from_secs(state.config.upload_ttl_secs);
    // A session the database cannot vouch for right now is kept, and looked at again next round.
    let live = |id: String| async move { state.db.uploads().exists(&id).await.unwrap_or(true) };
    let sweep = match &state.blobs {
        BlobStore::S3(s3) => s3.sweep_orphans(ttl, live).await?,
        BlobStore::Filesystem(fs) => fs.sweep_orphans(ttl, live).await?,
    };
    if sweep != OrphanSweep::default() {
        tracing::info!(
            aborted = sweep.aborted,
            deleted = sweep.deleted,
            "removed what interrupted uploads left in the blob store"
        );
    }
    Ok(sweep)
}

/// Runs [`expire_idle`] and [`sweep_orphans`] periodically until the process stops.
pub async fn run_janitor(state: AppState) {
    let period = Duration::from_secs((state.config.upload_ttl_secs / 2).clamp(1, 600));
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(e) = expire_idle(&state).await {
            tracing::warn!(error = %e, "could not expire idle upload sessions; will retry");
        }
        if let Err(e) = sweep_orphans(&state).await {
            tracing::warn!(error = %e, "could not sweep what interrupted uploads left in the blob store; will retry");
        }
    }
}

//! Steps 1 and 3 of a run: finishing deletions left pending, and sweeping
//! blobs. The decisions themselves are `metadata::Sweep`'s conditional
//! statements; this walks the candidates, decides on each, and deletes the
//! bytes of those marked in batches (`delete_batch` blobs, with at most
//! `delete_concurrency` requests to the blob store in flight).

use damselfly_core::Digest;

use super::hold::{self, Point};
use super::Tally;
use crate::metadata::{BlobVerdict, Finished};
use crate::services::Result;
use crate::state::AppState;

/// Candidates read at a time.
const BATCH: i64 = 500;

/// Step 1: blobs a run marked and did not finish deleting.
pub(super) async fn finish_pending(state: &AppState, tally: &mut Tally) -> Result<()> {
    let mut after: Option<Digest> = None;
    loop {
        let batch = state.db.sweep().pending(after.as_ref(), i64::from(state.config.gc.delete_batch)).await?;
        let Some(last) = batch.last().copied() else { return Ok(()) };
        for (digest, size) in finish(state, tally, &batch).await {
            tally.details.pending_finished += 1;
            tally.blob(digest.to_string(), size);
        }
        after = Some(last);
    }
}

/// Deletes marked blobs' bytes, then their rows, in one batch; those that
/// went, with their sizes. A failure is counted and left for the next run.
async fn finish(state: &AppState, tally: &mut Tally, batch: &[Digest]) -> Vec<(Digest, u64)> {
    let dir = state.config.gc.test_hold_dir.as_deref();
    let concurrency = state.config.gc.delete_concurrency as usize;
    let delete_bytes = |held: Vec<Digest>| async move {
        let outcomes = state.blobs.delete_blobs(&held, concurrency).await;
        outcomes.into_iter().map(|o| o.map_err(|e| e.to_string())).collect()
    };
    let pause = |held: Vec<Digest>| async move {
        for digest in &held {
            hold::at(dir, Point::BytesDeleted, digest).await;
        }
    };
    let outcomes = match state.db.sweep().finish(batch, delete_bytes, pause).await {
        Ok(outcomes) => outcomes,
        Err(e) => {
            tally.error(format!("finishing the deletion of {} blobs from {}: {e}", batch.len(), batch[0]));
            return Vec::new();
        }
    };
    let mut gone = Vec::with_capacity(outcomes.len());
    for (digest, outcome) in outcomes {
        match outcome {
            Ok(Finished::Deleted(size)) => gone.push((digest, size)),
            Ok(Finished::Revived) => {}
            Err(e) => tally.error(format!("deleting the bytes of blob {digest}: {e}")),
        }
    }
    gone
}

/// Step 3: every blob untouched since `cutoff` that some repository links
/// without referencing it, or that no manifest references. Each decision
/// commits on its own; the blobs marked go in batches.
pub(super) async fn blobs(state: &AppState, tally: &mut Tally, cutoff: i64, dry_run: bool) -> Result<()> {
    let dir = state.config.gc.test_hold_dir.as_deref();
    let batch_size = state.config.gc.delete_batch as usize;
    let mut marked: Vec<Digest> = Vec::with_capacity(batch_size);
    let mut after: Option<Digest> = None;
    loop {
        let batch = state.db.sweep().candidates(after.as_ref(), cutoff, BATCH).await?;
        let Some(last) = batch.last().map(|c| c.digest) else { break };
        for c in batch {
            if dry_run {
                tally.counts.links_removed += c.unreferenced_links;
                if c.unreferenced {
                    tally.blob(c.digest.to_string(), c.size);
                }
                continue;
            }
            hold::at(dir, Point::Decide, &c.digest).await;
            let verdict = state.db.sweep().collect(&c.digest, cutoff, hold::at(dir, Point::Marked, &c.digest)).await;
            match verdict {
                Ok(BlobVerdict::Kept) => {}
                Ok(BlobVerdict::LinksRemoved(n)) => tally.counts.links_removed += n,
                Ok(BlobVerdict::Marked(n)) => {
                    tally.counts.links_removed += n;
                    marked.push(c.digest);
                    if marked.len() >= batch_size {
                        delete_marked(state, tally, &mut marked).await;
                    }
                }
                Err(e) => tally.error(format!("deciding on blob {}: {e}", c.digest)),
            }
        }
        after = Some(last);
    }
    delete_marked(state, tally, &mut marked).await;
    Ok(())
}

/// Deletes the blobs marked so far, and empties the list.
async fn delete_marked(state: &AppState, tally: &mut Tally, marked: &mut Vec<Digest>) {
    if marked.is_empty() {
        return;
    }
    for (digest, size) in finish(state, tally, marked).await {
        tally.blob(digest.to_string(), size);
    }
    marked.clear();
}

//! Steps 1 and 3 of a run: finishing deletions left pending, and sweeping
//! blobs. The decisions themselves are `metadata::Sweep`'s conditional
//! statements; this walks the candidates and deletes the bytes.

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
        let batch = state.db.sweep().pending(after.as_ref(), BATCH).await?;
        let Some(last) = batch.last().copied() else { return Ok(()) };
        for digest in batch {
            if let Some(size) = finish(state, tally, &digest).await {
                tally.details.pending_finished += 1;
                tally.blob(digest.to_string(), size);
            }
        }
        after = Some(last);
    }
}

/// Deletes a marked blob's bytes, then its row; its size if it went.
async fn finish(state: &AppState, tally: &mut Tally, digest: &Digest) -> Option<u64> {
    let dir = state.config.gc.test_hold_dir.as_deref();
    let delete_bytes = async { state.blobs.delete_blob(digest).await.map_err(|e| e.to_string()) };
    match state.db.sweep().finish(digest, delete_bytes, hold::at(dir, Point::BytesDeleted, digest)).await {
        Ok(Ok(Finished::Deleted(size))) => Some(size),
        Ok(Ok(Finished::Revived)) => None,
        Ok(Err(e)) => {
            tally.error(format!("deleting the bytes of blob {digest}: {e}"));
            None
        }
        Err(e) => {
            tally.error(format!("finishing the deletion of blob {digest}: {e}"));
            None
        }
    }
}

/// Step 3: every blob untouched since `cutoff` that some repository links
/// without referencing it, or that no manifest references.
pub(super) async fn blobs(state: &AppState, tally: &mut Tally, cutoff: i64, dry_run: bool) -> Result<()> {
    let dir = state.config.gc.test_hold_dir.as_deref();
    let mut after: Option<Digest> = None;
    loop {
        let batch = state.db.sweep().candidates(after.as_ref(), cutoff, BATCH).await?;
        let Some(last) = batch.last().map(|c| c.digest) else { return Ok(()) };
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
                    if let Some(size) = finish(state, tally, &c.digest).await {
                        tally.blob(c.digest.to_string(), size);
                    }
                }
                Err(e) => tally.error(format!("deciding on blob {}: {e}", c.digest)),
            }
        }
        after = Some(last);
    }
}

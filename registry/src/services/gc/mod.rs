//! Online garbage collection: deleting what nothing needs any more, while
//! pushes and pulls go on. There is no read-only mode.
//!
//! # What a run does
//!
//! 1. Finishes the deletions an earlier run decided and did not complete
//!    (it was killed, or the blob store failed).
//! 2. Applies each namespace's lifecycle policy (`services::lifecycle`):
//!    retention deletes tags, then the manifests that are no longer kept
//!    go (untagged past the policy's days, or left untagged by retention).
//! 3. Sweeps blobs: every blob untouched for the grace period (24 hours by
//!    default) is looked at. The links of repositories none of whose
//!    manifests reference it are removed; a blob no manifest references at
//!    all is deleted, its bytes and then its row.
//! 4. Recounts every namespace's and tenant's storage use exactly.
//!
//! A dry run works steps 2 and 3 out without deleting anything and lists
//! what they would delete. Each run is recorded in `gc_runs` with what it
//! freed, how long it took and its errors; it is written to the audit log
//! and exported as metrics.
//!
//! # Mark
//!
//! The references table is the mark. Every manifest PUT records, in the
//! transaction that stores the manifest, each blob and child manifest it
//! references (`manifest_references`), and deleting a manifest deletes those
//! rows. "Reachable from a stored manifest" (a tagged manifest; an untagged
//! one that an index lists or a referrer names, which the lifecycle rules
//! keep stored; configs, layers and index children) is therefore a lookup in
//! that table's index, made for each blob at the moment of the decision,
//! rather than a set built when the run starts, which pushes would make
//! stale while the run goes on. No mark set is held in memory.
//!
//! # The race, and why it cannot lose a blob
//!
//! The classic race: a client uploads a blob, the sweep finds it
//! unreferenced, and the client then PUTs a manifest that references it.
//! Mounts and P2P seed reads need blobs the same way. Three rules make
//! every interleaving safe:
//!
//! 1. **Whoever needs a blob takes its row first and touches it.** A
//!    manifest PUT, first thing in its transaction, runs `UPDATE blobs SET
//!    touched_at = now WHERE digest = $1 AND deleting = 0` for each blob it
//!    references (in digest order), and only then, in later statements,
//!    checks that the repository links the blob and inserts its references.
//!    A mount and the end of an upload do the same before they insert the
//!    link. If the update finds no row, the blob is gone or going: the PUT
//!    fails with `MANIFEST_BLOB_UNKNOWN` and stores nothing (a mount falls
//!    back to an upload; an upload is answered with a retryable error).
//! 2. **The sweep decides holding the same row, and re-checks.** Its
//!    decision starts with one statement that takes the row only if the
//!    blob is live and untouched since `now - grace`: `UPDATE blobs SET
//!    touched_at = touched_at WHERE digest = $1 AND deleting = 0 AND
//!    touched_at < $cutoff`. Then, in later statements of the same
//!    transaction, it reads which repositories link the blob and which
//!    manifests reference it, removes the links nothing references, and if
//!    no manifest references it at all sets `deleting = 1`. That commits.
//! 3. **Bytes go only after the decision committed**, in a later
//!    transaction that takes the row again and only if it is still marked
//!    `deleting`; the row is deleted after the bytes, in that transaction's
//!    commit. The sweep does this for a batch of marked blobs at once (see
//!    "Deleting in batches").
//!
//! *PostgreSQL* (READ COMMITTED): two transactions that update one row take
//! turns on its lock. If the PUT takes it first, the sweep's update waits
//! until the PUT commits, and PostgreSQL then re-evaluates the update's
//! condition on the row as the PUT left it: `touched_at` is recent, so the
//! sweep leaves the blob alone. The PUT won, and the blob stays. If the
//! sweep takes it first, the PUT's update waits until the sweep commits and
//! re-evaluates `deleting = 0` on the new row: it fails, and the PUT answers
//! `MANIFEST_BLOB_UNKNOWN`. The client's retry works: its HEAD now says the
//! blob is missing, it uploads it again, and the upload takes the marked row
//! back (below). Both sides read links and references in statements that
//! begin after they hold the row, so each sees all the other committed; the
//! decisions rest on the row's own columns because a condition re-evaluated
//! after a wait does not re-run its sub-selects. Every writer takes rows in
//! one order (blobs by digest, then manifests, then tags, then the
//! namespace's and the tenant's usage rows), so no two wait on each other.
//!
//! *SQLite*: every writing transaction begins `BEGIN IMMEDIATE`, taking the
//! database's one write lock; the PUT and the decision run one after the
//! other, and whichever is second sees all of the first.
//!
//! The grace period is about retries, not about safety: every interleaving
//! above is safe whatever its length. It keeps a blob that was uploaded and
//! not yet referenced for a day by default, so that a manifest PUT rarely
//! has to be retried. A HEAD of a blob (how clients ask whether to upload
//! it) touches it when its last touch is older than half the grace, so a
//! push that finds its layers present has the whole grace to reference them.
//!
//! # An upload of a blob that is being deleted
//!
//! An upload's bytes become visible under their digest only after its row
//! is claimed: `INSERT … ON CONFLICT (digest) DO UPDATE SET touched_at =
//! now + hold, deleting = 0` commits first (waiting on the row's lock if a
//! run is deleting that blob's bytes at that moment), then the bytes are
//! moved into place, then the link goes in under rule 1 (which sets the
//! touch back to now). A run that marked the blob earlier finds `deleting =
//! 0` when it comes to delete the bytes, and leaves them; a run that was
//! deleting them when the claim came has finished before the claim commits,
//! and the new bytes come after. Bytes a commit relies on are therefore
//! never deleted under it. The claim's touch lies an hour ahead
//! (`metadata::CLAIM_HOLD_SECS`), so no run considers the blob while its
//! bytes move into place (a rename, or a server-side copy in S3, which on a
//! loaded store can outlast a short grace period). Should a move ever take
//! longer than the hold and the grace together, and a run mark the claimed
//! blob meanwhile, the link step finds it marked and fails the upload with
//! a retryable error, so nothing is ever linked to missing bytes. Claims
//! are counted (`blobs.claims`): when uploads of one blob overlap, the
//! first to link leaves the hold for the others, and only the last sets
//! the touch back to now; a manifest PUT or a mount never moves a touch
//! earlier. A claim whose process died before its link is collected once
//! the hold and the grace have passed.
//!
//! # Deleting in batches
//!
//! Decisions commit one blob at a time, but bytes go in batches of up to
//! `delete_batch` marked blobs (500 by default), because a blob store answers
//! one deletion far slower than the database: against S3 each request is a
//! round trip, tens of milliseconds, which one by one would make a sweep of
//! 100,000 blobs last hours. One transaction takes the rows of the batch that
//! are still marked, one by one in digest order (the order every writer
//! takes blob rows in); the bytes of all of them are deleted with at most
//! `delete_concurrency` requests to the store in flight (on the filesystem,
//! files removed at once; on S3, DeleteObjects requests of up to 1,000 keys
//! each, the batch shared between them); then the rows whose bytes went are
//! deleted and the transaction commits. A blob whose bytes the store failed
//! to delete keeps its row, marked, and is counted as an error for the next
//! run to retry. Every rule above holds for each row of the batch as it did
//! for one: the rows are held for the whole deletion of their bytes, so an
//! upload claiming one of them waits until its row is gone and then writes
//! its bytes after the deletion, never under it.
//!
//! On SQLite the batch's transaction holds the database's write lock while
//! the bytes go, so every commit waits for it (at most the busy timeout, 10
//! s, before it fails): the batch size bounds that wait. On PostgreSQL only
//! the batch's own rows are held.
//!
//! # P2P
//!
//! The scheduler admits an agent to a blob's swarm only for a blob linked to
//! the repository the client may pull, and the seed serves pieces only of a
//! row not marked `deleting`. When a blob leaves a tenant's namespaces
//! (swept, or its last link there deleted), the transaction that removed the
//! link records it in `blob_deletions`. The tenant's agents learn of it with
//! their next heartbeat, drop it from their caches, and refuse its pieces to
//! any peer whose ticket was issued before it left; no new ticket can be had.
//!
//! # Crash safety
//!
//! Each step is a transaction of its own, and each can be cut anywhere:
//!
//! - before a decision commits, the blob and its links are as they were;
//! - after it commits, the row is marked `deleting`: readers see the blob as
//!   absent, nothing can reference it again, and the next run deletes the
//!   bytes and the row (step 1);
//! - while a batch's bytes are deleted its rows are held and still marked:
//!   if the process dies before the commit that deletes them, every row of
//!   the batch rolls back to "marked", whether its bytes went, went in part
//!   (a DeleteObjects request cut off) or not at all, and the next run
//!   deletes the bytes again (deleting what is already gone succeeds) and
//!   the rows;
//! - a run's record left `running` is marked `interrupted` by the next run.
//!
//! No blob is ever marked while anything references it, because the mark
//! commits together with the removal of every link, under the row lock that
//! any new reference must take first. So a crash at any point loses nothing
//! referenced, and the next run finishes the job.
//!
//! # One run at a time
//!
//! A run holds a lock for its whole length ([`lock`]): another replica's
//! schedule, or a second request, finds it taken and does not start.
//! Safety does not depend on it, since every step re-checks under the row's
//! lock; it avoids doing the work twice and counting it twice in reports.

pub mod config;
pub mod hold;
mod lock;
pub mod schedule;
mod sweep;

use std::time::Instant;

use serde::Serialize;
use serde_json::json;

use super::access::SystemAdmin;
use super::audit::{self, Event};
use super::lifecycle::{self, DoomedManifest, DoomedTag};
use super::{Error, Result, Thing};
use crate::metadata::{now, GcCounts, GcRun, RunState};
use crate::state::AppState;
pub use config::GcConfig;
use lock::GcLock;

/// What started a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cause {
    /// The schedule (`gc_interval_secs`).
    Schedule,
    /// `POST /api/v1/gc`.
    Api,
    /// The console's button.
    Console,
}

impl Cause {
    fn as_str(self) -> &'static str {
        match self {
            Cause::Schedule => "schedule",
            Cause::Api => "api",
            Cause::Console => "console",
        }
    }
}

/// Most entries of each list a report keeps.
const LISTED: usize = 1000;
/// Most error messages a report keeps (all are counted).
const ERRORS_KEPT: usize = 100;
/// Runs kept in `gc_runs`.
const RUNS_KEPT: i64 = 500;

/// A blob a run deleted or would delete.
#[derive(Clone, Debug, Serialize)]
pub struct DoomedBlob {
    /// Its digest.
    pub digest: String,
    /// Its size.
    pub size: u64,
}

/// A namespace's or tenant's use, when the recount found it off.
#[derive(Clone, Debug, Serialize)]
pub struct Correction {
    /// `namespace/<name>` or `tenant/<id>`.
    pub scope: String,
    /// Bytes counted before.
    pub bytes_before: i64,
    /// Bytes recounted.
    pub bytes_after: i64,
    /// Repositories counted before.
    pub repositories_before: i64,
    /// Repositories recounted.
    pub repositories_after: i64,
}

/// A run's details beyond its counts, kept as JSON with the run.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Details {
    /// What went wrong; each failed step is left for the next run.
    pub errors: Vec<String>,
    /// Deletions an earlier run decided and this one finished.
    pub pending_finished: u64,
    /// Namespaces and tenants whose use the recount corrected.
    pub usage_corrections: Vec<Correction>,
    /// Tags deleted (or, dry, that would be), at most 1000.
    pub tags: Vec<DoomedTag>,
    /// Manifests deleted (or that would be), at most 1000.
    pub manifests: Vec<DoomedManifest>,
    /// Blobs deleted (or that would be), at most 1000.
    pub blobs: Vec<DoomedBlob>,
}

/// A run in progress: its counts and details as they grow.
struct Tally {
    counts: GcCounts,
    details: Details,
}

impl Tally {
    fn error(&mut self, message: String) {
        tracing::warn!(error = message, "garbage collection step failed; the next run retries it");
        self.counts.errors += 1;
        if self.details.errors.len() < ERRORS_KEPT {
            self.details.errors.push(message);
        }
    }

    fn blob(&mut self, digest: String, size: u64) {
        self.counts.blobs_deleted += 1;
        self.counts.bytes_freed += size;
        if self.details.blobs.len() < LISTED {
            self.details.blobs.push(DoomedBlob { digest, size });
        }
    }
}

/// Starts a run, unless one is going on (here or on another replica): its
/// number, and the task that finishes it and answers with its record.
pub async fn start(
    state: &AppState,
    cause: Cause,
    actor: &str,
    dry_run: bool,
) -> Result<(i64, tokio::task::JoinHandle<Option<GcRun>>)> {
    let lock = GcLock::try_take(state).await.map_err(Error::Internal)?;
    let Some(lock) = lock else {
        let running = state.db.gc_runs().running().await?;
        let which = running.map(|r| format!(" (run {}, started by {})", r.id, r.actor)).unwrap_or_default();
        return Err(Error::conflict(
            Thing::Field,
            format!("a garbage collection run is going on{which}; wait for it to finish, then start another"),
        ));
    };
    // Holding the lock, no other run can be going on: one left `running` died with its process.
    let interrupted = state.db.gc_runs().interrupt_running().await?;
    if interrupted > 0 {
        tracing::warn!(
            interrupted,
            "an earlier garbage collection run stopped with its process; this run finishes its work"
        );
    }
    let id = state.db.gc_runs().start(cause.as_str(), actor, dry_run).await?;
    let state = state.clone();
    let actor = actor.to_owned();
    let task = tokio::spawn(async move {
        let record = execute(&state, id, cause, &actor, dry_run).await;
        lock.release().await;
        record
    });
    Ok((id, task))
}

/// Starts a run for the system administrator (API or console).
pub async fn start_as(
    state: &AppState,
    admin: &SystemAdmin,
    cause: Cause,
    dry_run: bool,
) -> Result<(i64, tokio::task::JoinHandle<Option<GcRun>>)> {
    start(state, cause, admin.caller().actor(), dry_run).await
}

/// The latest runs, newest first (system administrator).
pub async fn runs(state: &AppState, _admin: &SystemAdmin, limit: i64) -> Result<Vec<GcRun>> {
    Ok(state.db.gc_runs().list(limit.clamp(1, RUNS_KEPT)).await?)
}

/// One run (system administrator).
pub async fn run(state: &AppState, _admin: &SystemAdmin, id: i64) -> Result<GcRun> {
    state
        .db
        .gc_runs()
        .get(id)
        .await?
        .ok_or_else(|| Error::not_found(Thing::Field, format!("there is no garbage collection run {id}")))
}

async fn execute(state: &AppState, id: i64, cause: Cause, actor: &str, dry_run: bool) -> Option<GcRun> {
    let started = Instant::now();
    let mut tally = Tally { counts: GcCounts::default(), details: Details::default() };
    tracing::info!(run = id, cause = cause.as_str(), actor, dry_run, "garbage collection started");
    let outcome = steps(state, &mut tally, dry_run).await;
    let run_state = match outcome {
        Ok(()) => RunState::Done,
        Err(e) => {
            tally.error(format!("the run stopped: {e}"));
            RunState::Failed
        }
    };
    let duration_ms = started.elapsed().as_millis() as i64;
    let report = serde_json::to_string(&tally.details).unwrap_or_default();
    if let Err(e) = state.db.gc_runs().finish(id, run_state, duration_ms, &tally.counts, &report).await {
        tracing::error!(run = id, error = %e, "could not record the garbage collection run's report");
    }
    let c = tally.counts;
    tracing::info!(
        run = id, dry_run, state = ?run_state, duration_ms, blobs_deleted = c.blobs_deleted, bytes_freed = c.bytes_freed,
        links_removed = c.links_removed, manifests_deleted = c.manifests_deleted, tags_deleted = c.tags_deleted,
        errors = c.errors, "garbage collection finished"
    );
    if !dry_run {
        state.metrics.gc_finished(run_state == RunState::Done, &c);
    }
    let event = Event {
        actor,
        action: if dry_run { "gc.dry_run" } else { "gc.run" },
        object: "registry",
        tenant: None,
        source: cause.as_str(),
        outcome: if run_state == RunState::Done { "success" } else { "failure" },
        detail: Some(json!({
            "run": id,
            "duration_ms": duration_ms,
            "blobs_deleted": c.blobs_deleted,
            "bytes_freed": c.bytes_freed,
            "links_removed": c.links_removed,
            "manifests_deleted": c.manifests_deleted,
            "tags_deleted": c.tags_deleted,
            "errors": c.errors,
        })),
    };
    audit::record(state, event).await;
    state.db.gc_runs().get(id).await.ok().flatten()
}

async fn steps(state: &AppState, tally: &mut Tally, dry_run: bool) -> Result<()> {
    let grace = state.config.gc.grace_secs as i64;
    if !dry_run {
        sweep::finish_pending(state, tally).await?;
        let noted = state.db.manifests().reconcile_untagged().await?;
        if noted > 0 {
            tracing::info!(noted, "noted manifests found without a tag");
        }
    }
    policies(state, tally, dry_run).await?;
    // The cutoff is taken after the policies ran: what they freed and was untouched for the grace goes now.
    sweep::blobs(state, tally, now() - grace, dry_run).await?;
    if !dry_run {
        recount(state, tally).await?;
        let pruned = state.db.blob_deletions().prune().await? + state.db.gc_runs().prune(RUNS_KEPT).await?;
        tracing::debug!(pruned, "old notices and runs pruned");
    }
    Ok(())
}

/// Step 2: each namespace's lifecycle policy.
async fn policies(state: &AppState, tally: &mut Tally, dry_run: bool) -> Result<()> {
    for ns_name in state.db.policies().deleting().await? {
        let Some(ns) = state.db.tenancy().namespace(&ns_name).await? else { continue };
        let tenant = ns.tenant_id;
        let policy = match lifecycle::of_namespace(state, &ns).await {
            Ok(p) => p,
            Err(e) => {
                tally.error(format!("namespace {ns_name}'s lifecycle policy: {e}"));
                continue;
            }
        };
        let (outcome, errors) = lifecycle::apply(state, &ns, &policy, dry_run).await?;
        for e in errors {
            tally.error(e);
        }
        tally.counts.tags_deleted += outcome.tags.len() as u64;
        tally.counts.manifests_deleted += outcome.manifests.len() as u64;
        if !dry_run && !(outcome.tags.is_empty() && outcome.manifests.is_empty()) {
            let event = Event {
                actor: "system",
                action: "namespace.lifecycle_applied",
                object: &format!("namespace/{ns_name}"),
                tenant: Some(tenant),
                source: "gc",
                outcome: "success",
                detail: Some(json!({
                    "tags_deleted": outcome.tags.iter().take(100).map(|t| format!("{}:{}", t.repository, t.tag)).collect::<Vec<_>>(),
                    "manifests_deleted": outcome.manifests.len(),
                })),
            };
            audit::record(state, event).await;
        }
        let room = LISTED.saturating_sub(tally.details.tags.len());
        tally.details.tags.extend(outcome.tags.into_iter().take(room));
        let room = LISTED.saturating_sub(tally.details.manifests.len());
        tally.details.manifests.extend(outcome.manifests.into_iter().take(room));
    }
    Ok(())
}

/// Step 4: every namespace's and tenant's use, recounted exactly.
async fn recount(state: &AppState, tally: &mut Tally) -> Result<()> {
    let tenants = state.db.tenancy().tenants().await?;
    for t in &tenants {
        for ns in state.db.tenancy().namespaces_of(t.id).await? {
            let (before, after) = state.db.storage().recount_namespace(ns.id, &ns.name).await?;
            if before.used_bytes != after.used_bytes || before.used_repositories != after.used_repositories {
                correction(tally, format!("namespace/{}", ns.name), before, after);
            }
        }
        let (before, after) = state.db.storage().recount_tenant(t.id).await?;
        if before.used_bytes != after.used_bytes || before.used_repositories != after.used_repositories {
            correction(tally, format!("tenant/{}", t.name), before, after);
        }
    }
    Ok(())
}

fn correction(tally: &mut Tally, scope: String, before: crate::metadata::Usage, after: crate::metadata::Usage) {
    tracing::warn!(
        scope,
        bytes_before = before.used_bytes,
        bytes_after = after.used_bytes,
        repositories_before = before.used_repositories,
        repositories_after = after.used_repositories,
        "storage use recounted differs from what was kept"
    );
    tally.details.usage_corrections.push(Correction {
        scope,
        bytes_before: before.used_bytes,
        bytes_after: after.used_bytes,
        repositories_before: before.used_repositories,
        repositories_after: after.used_repositories,
    });
}

//! The `gc_runs` table: one row per garbage collection run, with what it did.

use sqlx::{AnyPool, Row};

use super::now;

/// Where a run stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RunState {
    /// Going on now.
    Running,
    /// Finished (perhaps with errors, which it counts).
    Done,
    /// Stopped by an error it could not go past.
    Failed,
    /// The process running it died; the next run finished its work.
    Interrupted,
}

impl RunState {
    fn as_str(self) -> &'static str {
        match self {
            RunState::Running => "running",
            RunState::Done => "done",
            RunState::Failed => "failed",
            RunState::Interrupted => "interrupted",
        }
    }

    fn parse(s: &str) -> RunState {
        match s {
            "running" => RunState::Running,
            "done" => RunState::Done,
            "failed" => RunState::Failed,
            _ => RunState::Interrupted,
        }
    }
}

/// What a run deleted (or, dry, would delete).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct GcCounts {
    /// Blobs whose bytes were deleted from the store.
    pub blobs_deleted: u64,
    /// Their bytes.
    pub bytes_freed: u64,
    /// Links of blobs to repositories that reference them nowhere, removed.
    pub links_removed: u64,
    /// Manifests deleted by the namespaces' policies.
    pub manifests_deleted: u64,
    /// Tags deleted by retention rules.
    pub tags_deleted: u64,
    /// Steps that failed (each is in the report, and retried next run).
    pub errors: u64,
}

/// A run as recorded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GcRun {
    /// Its number.
    pub id: i64,
    /// `schedule`, `api` or `console`.
    pub cause: String,
    /// Who started it (`system` for the schedule).
    pub actor: String,
    /// Only listed what it would delete.
    pub dry_run: bool,
    /// Where it stands.
    pub state: RunState,
    /// Unix seconds.
    pub started_at: i64,
    /// Unix seconds, once finished.
    pub finished_at: Option<i64>,
    /// How long it took, once finished.
    pub duration_ms: Option<i64>,
    /// What it did.
    pub counts: GcCounts,
    /// The report's details as JSON: errors, corrections of usage, a dry run's listing.
    pub report: Option<String>,
}

/// The `gc_runs` table.
pub struct GcRuns<'a> {
    pub(super) pool: &'a AnyPool,
}

const COLUMNS: &str = "id, cause, actor, dry_run, state, started_at, finished_at, duration_ms, blobs_deleted, \
                       bytes_freed, links_removed, manifests_deleted, tags_deleted, errors, report";

fn run(r: &sqlx::any::AnyRow) -> Result<GcRun, sqlx::Error> {
    let n = |i: usize| r.try_get::<i64, _>(i).map(|v| v.max(0) as u64);
    Ok(GcRun {
        id: r.try_get(0)?,
        cause: r.try_get(1)?,
        actor: r.try_get(2)?,
        dry_run: r.try_get::<i64, _>(3)? != 0,
        state: RunState::parse(&r.try_get::<String, _>(4)?),
        started_at: r.try_get(5)?,
        finished_at: r.try_get(6)?,
        duration_ms: r.try_get(7)?,
        counts: GcCounts {
            blobs_deleted: n(8)?,
            bytes_freed: n(9)?,
            links_removed: n(10)?,
            manifests_deleted: n(11)?,
            tags_deleted: n(12)?,
            errors: n(13)?,
        },
        report: r.try_get(14)?,
    })
}

impl GcRuns<'_> {
    /// Records a run that starts now; returns its number.
    pub async fn start(&self, cause: &str, actor: &str, dry_run: bool) -> Result<i64, sqlx::Error> {
        let row = sqlx::query(
            "INSERT INTO gc_runs (cause, actor, dry_run, state, started_at) VALUES ($1, $2, $3, 'running', $4) RETURNING id",
        )
        .bind(cause)
        .bind(actor)
        .bind(i64::from(dry_run))
        .bind(now())
        .fetch_one(self.pool)
        .await?;
        row.try_get(0)
    }

    /// Records how a run ended.
    pub async fn finish(
        &self,
        id: i64,
        state: RunState,
        duration_ms: i64,
        counts: &GcCounts,
        report: &str,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(
            "UPDATE gc_runs SET state = $1, finished_at = $2, duration_ms = $3, blobs_deleted = $4, bytes_freed = $5, \
             links_removed = $6, manifests_deleted = $7, tags_deleted = $8, errors = $9, report = $10 WHERE id = $11",
        )
        .bind(state.as_str())
        .bind(now())
        .bind(duration_ms)
        .bind(counts.blobs_deleted as i64)
        .bind(counts.bytes_freed as i64)
        .bind(counts.links_removed as i64)
        .bind(counts.manifests_deleted as i64)
        .bind(counts.tags_deleted as i64)
        .bind(counts.errors as i64)
        .bind(report)
        .bind(id)
        .execute(self.pool)
        .await?;
        Ok(())
    }

    /// Marks every run still `running` as interrupted: called by the holder
    /// of the GC lock, so no other run can be going on.
    pub async fn interrupt_running(&self) -> Result<u64, sqlx::Error> {
        let done = sqlx::query("UPDATE gc_runs SET state = 'interrupted', finished_at = $1 WHERE state = 'running'")
            .bind(now())
            .execute(self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    /// The latest runs, newest first.
    pub async fn list(&self, limit: i64) -> Result<Vec<GcRun>, sqlx::Error> {
        let rows = sqlx::query(&format!("SELECT {COLUMNS} FROM gc_runs ORDER BY id DESC LIMIT $1"))
            .bind(limit)
            .fetch_all(self.pool)
            .await?;
        rows.iter().map(run).collect()
    }

    /// One run.
    pub async fn get(&self, id: i64) -> Result<Option<GcRun>, sqlx::Error> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM gc_runs WHERE id = $1"))
            .bind(id)
            .fetch_optional(self.pool)
            .await?;
        row.as_ref().map(run).transpose()
    }

    /// The run going on now, if any.
    pub async fn running(&self) -> Result<Option<GcRun>, sqlx::Error> {
        let row =
            sqlx::query(&format!("SELECT {COLUMNS} FROM gc_runs WHERE state = 'running' ORDER BY id DESC LIMIT 1"))
                .fetch_optional(self.pool)
                .await?;
        row.as_ref().map(run).transpose()
    }

    /// When the last run that deletes (not a dry run) started, whoever ran it.
    pub async fn last_real_start(&self) -> Result<Option<i64>, sqlx::Error> {
        let row = sqlx::query("SELECT MAX(started_at) FROM gc_runs WHERE dry_run = 0").fetch_one(self.pool).await?;
        row.try_get(0)
    }

    /// The last finished run that deletes, for the metrics.
    pub async fn last_finished(&self) -> Result<Option<GcRun>, sqlx::Error> {
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM gc_runs WHERE dry_run = 0 AND state IN ('done', 'failed') ORDER BY id DESC LIMIT 1"
        ))
        .fetch_optional(self.pool)
        .await?;
        row.as_ref().map(run).transpose()
    }

    /// Keeps the newest `keep` runs.
    pub async fn prune(&self, keep: i64) -> Result<u64, sqlx::Error> {
        let done = sqlx::query(
            "DELETE FROM gc_runs WHERE state <> 'running' AND id < (SELECT COALESCE(MIN(id), 0) FROM \
             (SELECT id FROM gc_runs ORDER BY id DESC LIMIT $1) newest)",
        )
        .bind(keep)
        .execute(self.pool)
        .await?;
        Ok(done.rows_affected())
    }
}

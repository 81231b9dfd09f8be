use sqlx::{AnyPool, Row};

use super::ClusterId;

/// The `preheat_jobs` and `preheat_nodes` tables.
pub struct PreheatJobs<'a> {
    pub(super) pool: &'a AnyPool,
}

/// A job as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PreheatJobRow {
    /// Job id.
    pub id: String,
    /// Its cluster.
    pub cluster: ClusterId,
    /// The repository.
    pub repository: String,
    /// The tag.
    pub tag: String,
    /// The tag's manifest digest.
    pub manifest: String,
    /// JSON array of every blob digest the nodes fetch.
    pub blobs: String,
    /// What started it: `api` or `push`.
    pub started_by: String,
    /// The pull token the nodes join with.
    pub token: String,
    /// Milliseconds since the epoch.
    pub created_ms: i64,
}

/// One chosen node's share of a job, as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PreheatNodeRow {
    /// Agent id.
    pub agent_id: String,
    /// Node name.
    pub node: String,
    /// Its platform.
    pub platform: String,
    /// The manifest it fetches, if there is one for its platform.
    pub manifest: Option<String>,
    /// JSON array of the blob digests it fetches.
    pub blobs: String,
    /// `pending`, `running`, `done` or `failed`.
    pub state: String,
    /// Why it failed.
    pub error: Option<String>,
}

/// Work handed to an agent: a job's id, repository, the node's blobs (JSON) and the job's token.
pub type TakenWork = (String, String, String, String);

const JOB_COLUMNS: &str =
    "id, cluster_id, repository, tag, manifest, blobs, started_by, token, created_ms FROM preheat_jobs";
const NODE_COLUMNS: &str = "job_id, agent_id, node, platform, manifest, blobs, state, error FROM preheat_nodes";

fn job_row(r: &sqlx::any::AnyRow) -> Result<PreheatJobRow, sqlx::Error> {
    Ok(PreheatJobRow {
        id: r.try_get(0)?,
        cluster: ClusterId(r.try_get(1)?),
        repository: r.try_get(2)?,
        tag: r.try_get(3)?,
        manifest: r.try_get(4)?,
        blobs: r.try_get(5)?,
        started_by: r.try_get(6)?,
        token: r.try_get(7)?,
        created_ms: r.try_get(8)?,
    })
}

fn node_row(r: &sqlx::any::AnyRow) -> Result<(String, PreheatNodeRow), sqlx::Error> {
    Ok((
        r.try_get(0)?,
        PreheatNodeRow {
            agent_id: r.try_get(1)?,
            node: r.try_get(2)?,
            platform: r.try_get(3)?,
            manifest: r.try_get(4)?,
            blobs: r.try_get(5)?,
            state: r.try_get(6)?,
            error: r.try_get(7)?,
        },
    ))
}

impl PreheatJobs<'_> {
    /// Stores a new job with its nodes, and forgets jobs created before `forget_before_ms`.
    pub async fn insert(
        &self,
        job: &PreheatJobRow,
        nodes: &[PreheatNodeRow],
        forget_before_ms: i64,
    ) -> Result<(), sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM preheat_jobs WHERE created_ms < $1").bind(forget_before_ms).execute(&mut *tx).await?;
        sqlx::query(
            "INSERT INTO preheat_jobs (id, cluster_id, repository, tag, manifest, blobs, started_by, token, created_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&job.id)
        .bind(job.cluster.0)
        .bind(&job.repository)
        .bind(&job.tag)
        .bind(&job.manifest)
        .bind(&job.blobs)
        .bind(&job.started_by)
        .bind(&job.token)
        .bind(job.created_ms)
        .execute(&mut *tx)
        .await?;
        for (ordinal, n) in nodes.iter().enumerate() {
            sqlx::query(
                "INSERT INTO preheat_nodes (job_id, ordinal, agent_id, node, platform, manifest, blobs, state, error) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            )
            .bind(&job.id)
            .bind(ordinal as i64)
            .bind(&n.agent_id)
            .bind(&n.node)
            .bind(&n.platform)
            .bind(&n.manifest)
            .bind(&n.blobs)
            .bind(&n.state)
            .bind(&n.error)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await
    }

    /// The cluster's jobs created at or after `since_ms`, newest first, each with its nodes in order.
    pub async fn of_cluster(
        &self,
        cluster: ClusterId,
        since_ms: i64,
    ) -> Result<Vec<(PreheatJobRow, Vec<PreheatNodeRow>)>, sqlx::Error> {
        let jobs = sqlx::query(&format!(
            "SELECT {JOB_COLUMNS} WHERE cluster_id = $1 AND created_ms >= $2 ORDER BY created_ms DESC, id"
        ))
        .bind(cluster.0)
        .bind(since_ms)
        .fetch_all(self.pool)
        .await?;
        let nodes = sqlx::query(&format!(
            "SELECT {NODE_COLUMNS} WHERE job_id IN (SELECT id FROM preheat_jobs WHERE cluster_id = $1 AND created_ms >= $2) \
             ORDER BY job_id, ordinal"
        ))
        .bind(cluster.0)
        .bind(since_ms)
        .fetch_all(self.pool)
        .await?;
        let mut out: Vec<(PreheatJobRow, Vec<PreheatNodeRow>)> =
            jobs.iter().map(|r| Ok((job_row(r)?, Vec::new()))).collect::<Result<_, sqlx::Error>>()?;
        for r in &nodes {
            let (job, node) = node_row(r)?;
            if let Some((_, list)) = out.iter_mut().find(|(j, _)| j.id == job) {
                list.push(node);
            }
        }
        Ok(out)
    }

    /// The cluster's job `id` with its nodes, if it was created at or after `since_ms`.
    pub async fn find(
        &self,
        cluster: ClusterId,
        id: &str,
        since_ms: i64,
    ) -> Result<Option<(PreheatJobRow, Vec<PreheatNodeRow>)>, sqlx::Error> {
        let Some(job) =
            sqlx::query(&format!("SELECT {JOB_COLUMNS} WHERE id = $1 AND cluster_id = $2 AND created_ms >= $3"))
                .bind(id)
                .bind(cluster.0)
                .bind(since_ms)
                .fetch_optional(self.pool)
                .await?
        else {
            return Ok(None);
        };
        let nodes = sqlx::query(&format!("SELECT {NODE_COLUMNS} WHERE job_id = $1 ORDER BY ordinal"))
            .bind(id)
            .fetch_all(self.pool)
            .await?;
        let nodes = nodes.iter().map(|r| node_row(r).map(|(_, n)| n)).collect::<Result<_, _>>()?;
        Ok(Some((job_row(&job)?, nodes)))
    }

    /// The pending work of the cluster's agent `agent`, now marked running:
    /// each share is handed out once, whichever replica the agent asks.
    pub async fn take_work(&self, cluster: ClusterId, agent: &str) -> Result<Vec<TakenWork>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT n.job_id, j.repository, n.blobs, j.token FROM preheat_nodes n JOIN preheat_jobs j ON j.id = n.job_id \
             WHERE n.agent_id = $1 AND j.cluster_id = $2 AND n.state = 'pending' ORDER BY j.created_ms",
        )
        .bind(agent)
        .bind(cluster.0)
        .fetch_all(self.pool)
        .await?;
        let mut work = Vec::with_capacity(rows.len());
        for r in &rows {
            let job: String = r.try_get(0)?;
            let taken = sqlx::query(
                "UPDATE preheat_nodes SET state = 'running' WHERE job_id = $1 AND agent_id = $2 AND state = 'pending'",
            )
            .bind(&job)
            .bind(agent)
            .execute(self.pool)
            .await?;
            if taken.rows_affected() > 0 {
                work.push((job, r.try_get(1)?, r.try_get(2)?, r.try_get(3)?));
            }
        }
        Ok(work)
    }

    /// Records how `agent`'s share of the cluster's job `id` ended (`done`
    /// or `failed` with `error`); false if there is no such share.
    pub async fn finish(
        &self,
        cluster: ClusterId,
        id: &str,
        agent: &str,
        state: &str,
        error: Option<&str>,
    ) -> Result<bool, sqlx::Error> {
        let done = sqlx::query(
            "UPDATE preheat_nodes SET state = $1, error = $2 WHERE job_id = $3 AND agent_id = $4 \
             AND job_id IN (SELECT id FROM preheat_jobs WHERE cluster_id = $5)",
        )
        .bind(state)
        .bind(error)
        .bind(id)
        .bind(agent)
        .bind(cluster.0)
        .execute(self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Marks `agent`'s share of job `id` failed with `reason` if it is still pending or running.
    pub async fn fail_unfinished(&self, id: &str, agent: &str, reason: &str) -> Result<bool, sqlx::Error> {
        let done = sqlx::query(
            "UPDATE preheat_nodes SET state = 'failed', error = $1 WHERE job_id = $2 AND agent_id = $3 \
             AND state IN ('pending', 'running')",
        )
        .bind(reason)
        .bind(id)
        .bind(agent)
        .execute(self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }
}

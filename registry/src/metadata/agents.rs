use damselfly_core::p2p::RegisterRequest;
use sqlx::{AnyPool, Row};

use super::{now, ClusterId};

/// The `p2p_agents` table: every agent registered with a cluster, and when
/// it was last heard from.
pub struct Agents<'a> {
    pub(super) pool: &'a AnyPool,
}

/// An agent as the database keeps it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentRecord {
    /// Its id.
    pub id: String,
    /// Its cluster.
    pub cluster: ClusterId,
    /// What it said when it registered.
    pub registered: RegisterRequest,
    /// Unix seconds of its registration.
    pub registered_at: i64,
    /// Unix seconds it was last heard from.
    pub last_seen: i64,
    /// Bytes in its cache, as it last said.
    pub cache_bytes: Option<u64>,
    /// Bytes it served to peers since it started, as it last said.
    pub served_bytes: Option<u64>,
}

const COLUMNS: &str = "id, cluster_id, node, ip, peer_port, zone, upload_slots, version, platform, registered_at, \
                       last_seen, cache_bytes, served_bytes FROM p2p_agents";

fn record(r: &sqlx::any::AnyRow) -> Result<AgentRecord, sqlx::Error> {
    let count =
        |i: usize| -> Result<Option<u64>, sqlx::Error> { Ok(r.try_get::<Option<i64>, _>(i)?.map(|n| n.max(0) as u64)) };
    Ok(AgentRecord {
        id: r.try_get(0)?,
        cluster: ClusterId(r.try_get(1)?),
        registered: RegisterRequest {
            node: r.try_get(2)?,
            ip: r.try_get(3)?,
            peer_port: u16::try_from(r.try_get::<i64, _>(4)?).unwrap_or(0),
            zone: r.try_get(5)?,
            upload_slots: u32::try_from(r.try_get::<i64, _>(6)?).unwrap_or(1),
            version: r.try_get(7)?,
            platform: r.try_get(8)?,
        },
        registered_at: r.try_get(9)?,
        last_seen: r.try_get(10)?,
        cache_bytes: count(11)?,
        served_bytes: count(12)?,
    })
}

impl Agents<'_> {
    /// Records a newly registered agent.
    pub async fn insert(&self, id: &str, cluster: ClusterId, req: &RegisterRequest) -> Result<(), sqlx::Error> {
        let at = now();
        sqlx::query(
            "INSERT INTO p2p_agents (id, cluster_id, node, ip, peer_port, zone, upload_slots, version, platform, \
             registered_at, last_seen) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(id)
        .bind(cluster.0)
        .bind(&req.node)
        .bind(&req.ip)
        .bind(i64::from(req.peer_port))
        .bind(&req.zone)
        .bind(i64::from(req.upload_slots))
        .bind(&req.version)
        .bind(&req.platform)
        .bind(at)
        .bind(at)
        .execute(self.pool)
        .await?;
        Ok(())
    }

    /// Records a heartbeat and what came with it (`None` keeps what was said
    /// before); false if the cluster has no such agent.
    pub async fn heard_from(
        &self,
        cluster: ClusterId,
        id: &str,
        cache_bytes: Option<u64>,
        served_bytes: Option<u64>,
    ) -> Result<bool, sqlx::Error> {
        let done = sqlx::query(
            "UPDATE p2p_agents SET last_seen = $1, cache_bytes = COALESCE($2, cache_bytes), \
             served_bytes = COALESCE($3, served_bytes) WHERE id = $4 AND cluster_id = $5",
        )
        .bind(now())
        .bind(cache_bytes.map(|n| n.min(i64::MAX as u64) as i64))
        .bind(served_bytes.map(|n| n.min(i64::MAX as u64) as i64))
        .bind(id)
        .bind(cluster.0)
        .execute(self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// The cluster's agent `id` if it was heard from at or after `since` (Unix seconds).
    pub async fn find(&self, cluster: ClusterId, id: &str, since: i64) -> Result<Option<AgentRecord>, sqlx::Error> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} WHERE id = $1 AND cluster_id = $2 AND last_seen >= $3"))
            .bind(id)
            .bind(cluster.0)
            .bind(since)
            .fetch_optional(self.pool)
            .await?;
        row.as_ref().map(record).transpose()
    }

    /// The cluster's agents heard from at or after `since`, by node name.
    pub async fn online(&self, cluster: ClusterId, since: i64) -> Result<Vec<AgentRecord>, sqlx::Error> {
        let rows =
            sqlx::query(&format!("SELECT {COLUMNS} WHERE cluster_id = $1 AND last_seen >= $2 ORDER BY node, id"))
                .bind(cluster.0)
                .bind(since)
                .fetch_all(self.pool)
                .await?;
        rows.iter().map(record).collect()
    }

    /// Forgets an agent that left; false if the cluster had no such agent.
    pub async fn delete(&self, cluster: ClusterId, id: &str) -> Result<bool, sqlx::Error> {
        let done = sqlx::query("DELETE FROM p2p_agents WHERE id = $1 AND cluster_id = $2")
            .bind(id)
            .bind(cluster.0)
            .execute(self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Forgets every agent of a cluster; returns how many.
    pub async fn delete_all(&self, cluster: ClusterId) -> Result<u64, sqlx::Error> {
        let done =
            sqlx::query("DELETE FROM p2p_agents WHERE cluster_id = $1").bind(cluster.0).execute(self.pool).await?;
        Ok(done.rows_affected())
    }

    /// Forgets agents last heard from before `before` (Unix seconds); returns how many.
    pub async fn expire(&self, before: i64) -> Result<u64, sqlx::Error> {
        let done = sqlx::query("DELETE FROM p2p_agents WHERE last_seen < $1").bind(before).execute(self.pool).await?;
        Ok(done.rows_affected())
    }
}

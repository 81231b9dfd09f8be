use sqlx::{AnyPool, Row};

use super::{ClusterId, TenantId};

/// The `p2p_traffic`, `p2p_traffic_samples` and `p2p_swarms` tables: what
/// the acceleration dashboard shows, added to by every replica.
pub struct Traffic<'a> {
    pub(super) pool: &'a AnyPool,
}

/// Bytes agents received, per (cluster, namespace) of one tenant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrafficRow {
    /// The cluster.
    pub cluster: ClusterId,
    /// The namespace of the blobs.
    pub namespace: String,
    /// From peers.
    pub peers: u64,
    /// From the seed.
    pub seed: u64,
}

fn count(n: u64) -> i64 {
    n.min(i64::MAX as u64) as i64
}

impl Traffic<'_> {
    /// Adds bytes to a tenant's totals for (cluster, namespace) and to its sample at `bucket` (Unix seconds).
    pub async fn add(
        &self,
        tenant: TenantId,
        cluster: ClusterId,
        namespace: &str,
        (peers, seed): (u64, u64),
        bucket: i64,
    ) -> Result<(), sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO p2p_traffic (tenant_id, cluster_id, namespace, peers, seed) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (tenant_id, cluster_id, namespace) DO UPDATE SET peers = p2p_traffic.peers + excluded.peers, \
             seed = p2p_traffic.seed + excluded.seed",
        )
        .bind(tenant.0)
        .bind(cluster.0)
        .bind(namespace)
        .bind(count(peers))
        .bind(count(seed))
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO p2p_traffic_samples (tenant_id, at, peers, seed) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (tenant_id, at) DO UPDATE SET peers = p2p_traffic_samples.peers + excluded.peers, \
             seed = p2p_traffic_samples.seed + excluded.seed",
        )
        .bind(tenant.0)
        .bind(bucket)
        .bind(count(peers))
        .bind(count(seed))
        .execute(&mut *tx)
        .await?;
        tx.commit().await
    }

    /// Records that the swarm of `digest` in `cluster`, whose bytes count
    /// against `namespace` of `tenant`, was heard from at `at` (Unix
    /// seconds), with an agent still downloading it or not.
    pub async fn swarm_active(
        &self,
        cluster: ClusterId,
        digest: &str,
        tenant: TenantId,
        namespace: &str,
        at: i64,
        downloading: bool,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO p2p_swarms (cluster_id, digest, tenant_id, namespace, last_active, downloading) \
             VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (cluster_id, digest) DO UPDATE SET tenant_id = excluded.tenant_id, \
             namespace = excluded.namespace, last_active = excluded.last_active, downloading = excluded.downloading",
        )
        .bind(cluster.0)
        .bind(digest)
        .bind(tenant.0)
        .bind(namespace)
        .bind(at)
        .bind(i64::from(downloading))
        .execute(self.pool)
        .await?;
        Ok(())
    }

    /// The tenant and namespace a swarm's bytes count against, if it was joined.
    pub async fn swarm(&self, cluster: ClusterId, digest: &str) -> Result<Option<(TenantId, String)>, sqlx::Error> {
        let row = sqlx::query("SELECT tenant_id, namespace FROM p2p_swarms WHERE cluster_id = $1 AND digest = $2")
            .bind(cluster.0)
            .bind(digest)
            .fetch_optional(self.pool)
            .await?;
        row.map(|r| Ok((TenantId(r.try_get(0)?), r.try_get(1)?))).transpose()
    }

    /// A tenant's totals, by cluster and namespace.
    pub async fn totals(&self, tenant: TenantId) -> Result<Vec<TrafficRow>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT cluster_id, namespace, peers, seed FROM p2p_traffic WHERE tenant_id = $1 ORDER BY cluster_id, namespace",
        )
        .bind(tenant.0)
        .fetch_all(self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(TrafficRow {
                    cluster: ClusterId(r.try_get(0)?),
                    namespace: r.try_get(1)?,
                    peers: r.try_get::<i64, _>(2)?.max(0) as u64,
                    seed: r.try_get::<i64, _>(3)?.max(0) as u64,
                })
            })
            .collect()
    }

    /// Per cluster, how many of a tenant's swarms had an agent downloading when last heard from, at or after `since`.
    pub async fn active_swarms(&self, tenant: TenantId, since: i64) -> Result<Vec<(ClusterId, usize)>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT cluster_id, COUNT(*) FROM p2p_swarms WHERE tenant_id = $1 AND last_active >= $2 AND downloading = 1 \
             GROUP BY cluster_id ORDER BY cluster_id",
        )
        .bind(tenant.0)
        .bind(since)
        .fetch_all(self.pool)
        .await?;
        rows.iter().map(|r| Ok((ClusterId(r.try_get(0)?), r.try_get::<i64, _>(1)?.max(0) as usize))).collect()
    }

    /// A tenant's samples at or after `since` (Unix seconds), oldest first: (at, peers, seed).
    pub async fn samples(&self, tenant: TenantId, since: i64) -> Result<Vec<(i64, u64, u64)>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT at, peers, seed FROM p2p_traffic_samples WHERE tenant_id = $1 AND at >= $2 ORDER BY at",
        )
        .bind(tenant.0)
        .bind(since)
        .fetch_all(self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get::<i64, _>(1)?.max(0) as u64, r.try_get::<i64, _>(2)?.max(0) as u64)))
            .collect()
    }

    /// Forgets samples older than `samples_before` and swarms inactive since `swarms_before` (Unix seconds).
    pub async fn prune(&self, samples_before: i64, swarms_before: i64) -> Result<(), sqlx::Error> {
        sqlx::query("DELETE FROM p2p_traffic_samples WHERE at < $1").bind(samples_before).execute(self.pool).await?;
        sqlx::query("DELETE FROM p2p_swarms WHERE last_active < $1").bind(swarms_before).execute(self.pool).await?;
        Ok(())
    }
}

use sqlx::{AnyPool, Row};

use super::{now, NamespaceId, TenantId};

/// Primary key of a cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClusterId(pub i64);

/// A registered cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cluster {
    /// Key.
    pub id: ClusterId,
    /// Owning tenant.
    pub tenant_id: TenantId,
    /// Owning tenant's name.
    pub tenant: String,
    /// Name within the tenant.
    pub name: String,
    /// Unix seconds.
    pub created_at: i64,
}

/// The `clusters` table.
pub struct Clusters<'a> {
    pub(super) pool: &'a AnyPool,
}

const COLUMNS: &str =
    "c.id, c.tenant_id, t.name, c.name, c.created_at FROM clusters c JOIN tenants t ON t.id = c.tenant_id";

fn cluster(r: &sqlx::any::AnyRow) -> Result<Cluster, sqlx::Error> {
    Ok(Cluster {
        id: ClusterId(r.try_get(0)?),
        tenant_id: TenantId(r.try_get(1)?),
        tenant: r.try_get(2)?,
        name: r.try_get(3)?,
        created_at: r.try_get(4)?,
    })
}

impl Clusters<'_> {
    /// Registers a cluster with the hash of its token.
    pub async fn create(&self, tenant: TenantId, name: &str, token_sha256: &str) -> Result<ClusterId, sqlx::Error> {
        let row = sqlx::query(
            "INSERT INTO clusters (tenant_id, name, token_sha256, created_at) VALUES ($1, $2, $3, $4) RETURNING id",
        )
        .bind(tenant.0)
        .bind(name)
        .bind(token_sha256)
        .bind(now())
        .fetch_one(self.pool)
        .await?;
        Ok(ClusterId(row.try_get(0)?))
    }

    /// Forgets a cluster; its token stops working, and namespaces stop preheating into it.
    pub async fn delete(&self, id: ClusterId) -> Result<bool, sqlx::Error> {
        let done = sqlx::query("DELETE FROM clusters WHERE id = $1").bind(id.0).execute(self.pool).await?;
        Ok(done.rows_affected() > 0)
    }

    /// Replaces a cluster's token: the old one stops working at once.
    pub async fn set_token(&self, id: ClusterId, token_sha256: &str) -> Result<bool, sqlx::Error> {
        let done = sqlx::query("UPDATE clusters SET token_sha256 = $1 WHERE id = $2")
            .bind(token_sha256)
            .bind(id.0)
            .execute(self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// The cluster whose token hashes to `token_sha256`.
    pub async fn by_token(&self, token_sha256: &str) -> Result<Option<Cluster>, sqlx::Error> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} WHERE c.token_sha256 = $1"))
            .bind(token_sha256)
            .fetch_optional(self.pool)
            .await?;
        row.as_ref().map(cluster).transpose()
    }

    /// A tenant's clusters, by name.
    pub async fn of_tenant(&self, tenant: TenantId) -> Result<Vec<Cluster>, sqlx::Error> {
        let rows = sqlx::query(&format!("SELECT {COLUMNS} WHERE c.tenant_id = $1 ORDER BY c.name"))
            .bind(tenant.0)
            .fetch_all(self.pool)
            .await?;
        rows.iter().map(cluster).collect()
    }

    /// Where new tags of a namespace are preheated: (cluster, percent of its agents), by cluster name.
    pub async fn preheat_targets(&self, namespace: NamespaceId) -> Result<Vec<(Cluster, u8)>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT c.id, c.tenant_id, t.name, c.name, c.created_at, p.percent FROM namespace_preheat_targets p \
             JOIN clusters c ON c.id = p.cluster_id JOIN tenants t ON t.id = c.tenant_id \
             WHERE p.namespace_id = $1 ORDER BY c.name",
        )
        .bind(namespace.0)
        .fetch_all(self.pool)
        .await?;
        rows.iter().map(|r| Ok((cluster(r)?, u8::try_from(r.try_get::<i64, _>(5)?).unwrap_or(100)))).collect()
    }

    /// Replaces where new tags of a namespace are preheated.
    pub async fn set_preheat_targets(
        &self,
        namespace: NamespaceId,
        targets: &[(ClusterId, u8)],
    ) -> Result<(), sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM namespace_preheat_targets WHERE namespace_id = $1")
            .bind(namespace.0)
            .execute(&mut *tx)
            .await?;
        for (cluster, percent) in targets {
            sqlx::query(
                "INSERT INTO namespace_preheat_targets (namespace_id, cluster_id, percent) VALUES ($1, $2, $3)",
            )
            .bind(namespace.0)
            .bind(cluster.0)
            .bind(i64::from(*percent))
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await
    }
}

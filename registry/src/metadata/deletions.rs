//! The `blob_deletions` table: blobs that left a tenant's namespaces, for
//! the tenant's agents. An agent learns of them with its heartbeat, stops
//! serving such a blob to peers whose ticket was issued before it left, and
//! drops it from its cache.

use damselfly_core::Digest;
use sqlx::{Any, AnyPool, Row, Transaction};

use super::{now, TenantId};

/// How long a notice is kept: far longer than any ticket lives.
pub const KEPT_SECS: i64 = 86_400;

/// Most notices one heartbeat answer carries; the rest come with the next.
pub const PAGE: i64 = 1000;

/// A blob that left a tenant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Departure {
    /// Its sequence number: an agent asks for those after the last it saw.
    pub id: i64,
    /// The blob.
    pub digest: Digest,
    /// When (Unix seconds, the registry's clock, like tickets' `iat`).
    pub at: i64,
}

/// Records that `digest` left `tenant`, inside the transaction that removed its last link there.
pub(super) async fn record(tx: &mut Transaction<'_, Any>, digest: &str, tenant: TenantId) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO blob_deletions (digest, tenant_id, deleted_at) VALUES ($1, $2, $3)")
        .bind(digest)
        .bind(tenant.0)
        .bind(now())
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// The `blob_deletions` table.
pub struct BlobDeletions<'a> {
    pub(super) pool: &'a AnyPool,
}

impl BlobDeletions<'_> {
    /// A tenant's departures after `after` (an id an agent saw last), or of
    /// the last [`KEPT_SECS`] when it has seen none; oldest first, at most [`PAGE`].
    pub async fn of_tenant(&self, tenant: TenantId, after: Option<i64>) -> Result<Vec<Departure>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT id, digest, deleted_at FROM blob_deletions WHERE tenant_id = $1 AND id > $2 AND deleted_at > $3 \
             ORDER BY id LIMIT $4",
        )
        .bind(tenant.0)
        .bind(after.unwrap_or(0))
        .bind(now() - KEPT_SECS)
        .bind(PAGE)
        .fetch_all(self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let digest: String = r.try_get(1)?;
                Ok(Departure {
                    id: r.try_get(0)?,
                    digest: digest.parse().map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
                    at: r.try_get(2)?,
                })
            })
            .collect()
    }

    /// Forgets notices older than [`KEPT_SECS`]; returns how many.
    pub async fn prune(&self) -> Result<u64, sqlx::Error> {
        let done = sqlx::query("DELETE FROM blob_deletions WHERE deleted_at < $1")
            .bind(now() - KEPT_SECS)
            .execute(self.pool)
            .await?;
        Ok(done.rows_affected())
    }
}

/// Which of `tenants` no longer link `digest` in any repository of theirs,
/// given the repository names that still link it; each gets a notice.
pub(super) async fn record_departures(
    tx: &mut Transaction<'_, Any>,
    digest: &str,
    tenants: &[TenantId],
) -> Result<(), sqlx::Error> {
    if tenants.is_empty() {
        return Ok(());
    }
    let remaining = sqlx::query(
        "SELECT DISTINCT r.name FROM repository_blobs rb JOIN repositories r ON r.id = rb.repository_id WHERE rb.digest = $1",
    )
    .bind(digest)
    .fetch_all(&mut **tx)
    .await?;
    let mut still: Vec<i64> = Vec::new();
    for r in &remaining {
        let name: String = r.try_get(0)?;
        if let Some(scope) = super::usage::scope_of(tx, &name).await? {
            still.push(scope.tenant.0);
        }
    }
    let mut left: Vec<TenantId> = tenants.iter().copied().filter(|t| !still.contains(&t.0)).collect();
    left.sort_by_key(|t| t.0);
    left.dedup();
    for t in left {
        record(tx, digest, t).await?;
    }
    Ok(())
}

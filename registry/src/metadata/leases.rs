use sqlx::{AnyPool, Row};

use super::{ClusterId, Engine};

/// The `p2p_leases` table: which replica schedules each P2P cluster, until when.
///
/// Every comparison with the present reads the database's clock, never the
/// replica's: replicas whose clocks disagree still agree on who holds what.
pub struct Leases<'a> {
    pub(super) pool: &'a AnyPool,
    pub(super) engine: Engine,
}

/// Who holds a cluster's lease, as the database says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseHolder {
    /// The holder's replica id.
    pub holder: String,
    /// Where other replicas reach it.
    pub url: String,
    /// Milliseconds until the lease lapses unless renewed (0 if it has).
    pub remaining_ms: i64,
    /// How many holders the lease has had.
    pub term: i64,
}

/// Milliseconds since the epoch on the database's clock.
fn now_ms(engine: Engine) -> &'static str {
    match engine {
        Engine::Postgres => "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)",
        Engine::Sqlite => "CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)",
    }
}

impl Leases<'_> {
    /// Takes the cluster's lease for `holder` for `ttl_ms` if nobody holds it,
    /// its holder let it lapse, `holder` holds it already (a renewal), or its
    /// holder had the same URL: an earlier process of this replica, which
    /// must be gone since two processes cannot listen on one address.
    /// Returns the lease's term if `holder` holds it now.
    pub async fn acquire(
        &self,
        cluster: ClusterId,
        holder: &str,
        url: &str,
        ttl_ms: i64,
    ) -> Result<Option<i64>, sqlx::Error> {
        let now = now_ms(self.engine);
        let row = sqlx::query(&format!(
            "INSERT INTO p2p_leases (cluster_id, holder, holder_url, expires_at, term) \
             VALUES ($1, $2, $3, {now} + $4, 1) \
             ON CONFLICT (cluster_id) DO UPDATE SET holder = excluded.holder, holder_url = excluded.holder_url, \
             expires_at = excluded.expires_at, \
             term = CASE WHEN p2p_leases.holder = excluded.holder THEN p2p_leases.term ELSE p2p_leases.term + 1 END \
             WHERE p2p_leases.expires_at < {now} OR p2p_leases.holder = excluded.holder \
             OR p2p_leases.holder_url = excluded.holder_url \
             RETURNING term"
        ))
        .bind(cluster.0)
        .bind(holder)
        .bind(url)
        .bind(ttl_ms)
        .fetch_optional(self.pool)
        .await?;
        row.map(|r| r.try_get::<i64, _>(0)).transpose()
    }

    /// Who holds the cluster's lease, if anyone ever did.
    pub async fn holder(&self, cluster: ClusterId) -> Result<Option<LeaseHolder>, sqlx::Error> {
        let now = now_ms(self.engine);
        let row = sqlx::query(&format!(
            "SELECT holder, holder_url, expires_at - {now}, term FROM p2p_leases WHERE cluster_id = $1"
        ))
        .bind(cluster.0)
        .fetch_optional(self.pool)
        .await?;
        row.map(|r| {
            Ok(LeaseHolder {
                holder: r.try_get(0)?,
                url: r.try_get(1)?,
                remaining_ms: r.try_get::<i64, _>(2)?.max(0),
                term: r.try_get(3)?,
            })
        })
        .transpose()
    }

    /// Renews for `ttl_ms` every lease `holder` still holds, expired or not
    /// (nobody took an expired one over yet); returns their clusters.
    pub async fn renew(&self, holder: &str, ttl_ms: i64) -> Result<Vec<ClusterId>, sqlx::Error> {
        let now = now_ms(self.engine);
        let rows = sqlx::query(&format!(
            "UPDATE p2p_leases SET expires_at = {now} + $1 WHERE holder = $2 RETURNING cluster_id"
        ))
        .bind(ttl_ms)
        .bind(holder)
        .fetch_all(self.pool)
        .await?;
        rows.iter().map(|r| Ok(ClusterId(r.try_get(0)?))).collect()
    }

    /// Takes the cluster's lease from whoever holds it: the holder finds it
    /// gone at its next renewal and drops what it knew of the cluster, and
    /// the next call for the cluster, on any replica, starts a new term.
    pub async fn revoke(&self, cluster: ClusterId) -> Result<(), sqlx::Error> {
        let now = now_ms(self.engine);
        sqlx::query(&format!(
            "UPDATE p2p_leases SET holder = '', holder_url = '', expires_at = {now} - 1 WHERE cluster_id = $1"
        ))
        .bind(cluster.0)
        .execute(self.pool)
        .await?;
        Ok(())
    }

    /// Lets every lease of `holder` lapse at once, for a replica that stops:
    /// the next call for one of its clusters, on any replica, takes it over.
    pub async fn release_all(&self, holder: &str) -> Result<u64, sqlx::Error> {
        let now = now_ms(self.engine);
        let done = sqlx::query(&format!("UPDATE p2p_leases SET expires_at = {now} - 1 WHERE holder = $1"))
            .bind(holder)
            .execute(self.pool)
            .await?;
        Ok(done.rows_affected())
    }
}

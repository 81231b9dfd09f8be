use sqlx::{AnyPool, Row};

use super::now;

/// Primary key of a repository row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RepositoryId(pub i64);

/// The `repositories` table.
pub struct Repositories<'a> {
    pub(super) pool: &'a AnyPool,
}

impl Repositories<'_> {
    /// The id of a repository, creating it if it does not exist.
    pub async fn ensure(&self, name: &str) -> Result<RepositoryId, sqlx::Error> {
        sqlx::query("INSERT INTO repositories (name, created_at) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING")
            .bind(name)
            .bind(now())
            .execute(self.pool)
            .await?;
        let row = sqlx::query("SELECT id FROM repositories WHERE name = $1").bind(name).fetch_one(self.pool).await?;
        Ok(RepositoryId(row.try_get(0)?))
    }

    /// The id of an existing repository.
    pub async fn find(&self, name: &str) -> Result<Option<RepositoryId>, sqlx::Error> {
        let row =
            sqlx::query("SELECT id FROM repositories WHERE name = $1").bind(name).fetch_optional(self.pool).await?;
        row.map(|r| r.try_get(0).map(RepositoryId)).transpose()
    }

    /// Up to `limit` names of repositories holding a manifest or a blob,
    /// after `last`, in byte-wise order. A repository whose only activity
    /// was an unfinished upload is not listed.
    pub async fn list(&self, last: Option<&str>, limit: i64) -> Result<Vec<String>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT name FROM repositories r WHERE name > $1 \
             AND (EXISTS (SELECT 1 FROM manifests m WHERE m.repository_id = r.id) \
               OR EXISTS (SELECT 1 FROM repository_blobs b WHERE b.repository_id = r.id)) \
             ORDER BY name LIMIT $2",
        )
        .bind(last.unwrap_or(""))
        .bind(limit)
        .fetch_all(self.pool)
        .await?;
        rows.iter().map(|r| r.try_get(0)).collect()
    }

    /// Names of the repositories of one namespace that hold a manifest, in byte-wise order.
    pub async fn in_namespace(&self, namespace: &str, limit: i64) -> Result<Vec<String>, sqlx::Error> {
        // A prefix range instead of LIKE: namespace names may contain `_`, a LIKE wildcard.
        // '0' is the byte after '/', so [ns/, ns0) holds exactly the names under ns/.
        let rows = sqlx::query(
            "SELECT name FROM repositories r WHERE name > $1 AND name < $2 \
             AND EXISTS (SELECT 1 FROM manifests m WHERE m.repository_id = r.id) ORDER BY name LIMIT $3",
        )
        .bind(format!("{namespace}/"))
        .bind(format!("{namespace}0"))
        .bind(limit)
        .fetch_all(self.pool)
        .await?;
        rows.iter().map(|r| r.try_get(0)).collect()
    }
}

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

    /// The repositories of one namespace that hold a manifest, in byte-wise
    /// order, each with its tag count, stored bytes and last push.
    pub async fn in_namespace(&self, namespace: &str, limit: i64) -> Result<Vec<RepositorySummary>, sqlx::Error> {
        // A prefix range instead of LIKE: namespace names may contain `_`, a LIKE wildcard.
        // '0' is the byte after '/', so [ns/, ns0) holds exactly the names under ns/.
        // PostgreSQL sums BIGINTs as NUMERIC: cast back, so both engines answer an integer.
        let rows = sqlx::query(
            "SELECT r.name, \
               (SELECT COUNT(*) FROM tags t WHERE t.repository_id = r.id), \
               (SELECT CAST(COALESCE(SUM(b.size), 0) AS BIGINT) FROM repository_blobs rb \
                  JOIN blobs b ON b.digest = rb.digest WHERE rb.repository_id = r.id), \
               (SELECT MAX(t.updated_at) FROM tags t WHERE t.repository_id = r.id), \
               (SELECT MAX(m.created_at) FROM manifests m WHERE m.repository_id = r.id) \
             FROM repositories r WHERE r.name > $1 AND r.name < $2 \
             AND EXISTS (SELECT 1 FROM manifests m WHERE m.repository_id = r.id) ORDER BY r.name LIMIT $3",
        )
        .bind(format!("{namespace}/"))
        .bind(format!("{namespace}0"))
        .bind(limit)
        .fetch_all(self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let tagged: Option<i64> = r.try_get(3)?;
                let stored: Option<i64> = r.try_get(4)?;
                Ok(RepositorySummary {
                    name: r.try_get(0)?,
                    tags: r.try_get(1)?,
                    stored_bytes: r.try_get(2)?,
                    last_push: tagged.max(stored),
                })
            })
            .collect()
    }

    /// Every repository of a namespace, whatever it holds, by name.
    pub async fn all_in_namespace(&self, namespace: &str) -> Result<Vec<(RepositoryId, String)>, sqlx::Error> {
        let (from, to) = super::usage::name_range(namespace);
        let rows = sqlx::query("SELECT id, name FROM repositories WHERE name > $1 AND name < $2 ORDER BY name")
            .bind(from)
            .bind(to)
            .fetch_all(self.pool)
            .await?;
        rows.iter().map(|r| Ok((RepositoryId(r.try_get(0)?), r.try_get(1)?))).collect()
    }
}

/// A repository as a namespace lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RepositorySummary {
    /// Its full name.
    pub name: String,
    /// How many tags it has.
    pub tags: i64,
    /// Bytes of the blobs it holds, each counted once.
    pub stored_bytes: i64,
    /// Unix seconds of its last manifest or tag push.
    pub last_push: Option<i64>,
}

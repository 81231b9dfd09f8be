use sqlx::{AnyPool, Row};

use super::RepositoryId;

/// The `tags` table.
pub struct Tags<'a> {
    pub(super) pool: &'a AnyPool,
}

impl Tags<'_> {
    /// Up to `limit` tag names after `last`, in byte-wise order.
    pub async fn list(&self, repo: RepositoryId, last: Option<&str>, limit: i64) -> Result<Vec<String>, sqlx::Error> {
        let rows = sqlx::query("SELECT name FROM tags WHERE repository_id = $1 AND name > $2 ORDER BY name LIMIT $3")
            .bind(repo.0)
            .bind(last.unwrap_or(""))
            .bind(limit)
            .fetch_all(self.pool)
            .await?;
        rows.iter().map(|r| r.try_get(0)).collect()
    }

    /// Removes a tag; the manifest stays.
    pub async fn delete(&self, repo: RepositoryId, tag: &str) -> Result<bool, sqlx::Error> {
        let done = sqlx::query("DELETE FROM tags WHERE repository_id = $1 AND name = $2")
            .bind(repo.0)
            .bind(tag)
            .execute(self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }
}

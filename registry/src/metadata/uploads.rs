use sqlx::{AnyPool, Row};

use super::{now, RepositoryId};

/// The `uploads` table: sessions started and not yet finished or cancelled.
pub struct Uploads<'a> {
    pub(super) pool: &'a AnyPool,
}

impl Uploads<'_> {
    /// Records a new session.
    pub async fn create(&self, id: &str, repo: RepositoryId) -> Result<(), sqlx::Error> {
        sqlx::query("INSERT INTO uploads (id, repository_id, created_at) VALUES ($1, $2, $3)")
            .bind(id)
            .bind(repo.0)
            .bind(now())
            .execute(self.pool)
            .await?;
        Ok(())
    }

    /// The session's repository, if the session exists and belongs to the named repository.
    pub async fn find(&self, id: &str, name: &str) -> Result<Option<RepositoryId>, sqlx::Error> {
        let row = sqlx::query(
            "SELECT r.id FROM uploads u JOIN repositories r ON r.id = u.repository_id WHERE u.id = $1 AND r.name = $2",
        )
        .bind(id)
        .bind(name)
        .fetch_optional(self.pool)
        .await?;
        row.map(|r| r.try_get(0).map(RepositoryId)).transpose()
    }

    /// Sessions created before `before` (Unix seconds), oldest first.
    pub async fn created_before(&self, before: i64, limit: i64) -> Result<Vec<String>, sqlx::Error> {
        let rows = sqlx::query("SELECT id FROM uploads WHERE created_at < $1 ORDER BY created_at LIMIT $2")
            .bind(before)
            .bind(limit)
            .fetch_all(self.pool)
            .await?;
        rows.iter().map(|r| r.try_get(0)).collect()
    }

    /// Forgets a session; true if it existed.
    pub async fn delete(&self, id: &str) -> Result<bool, sqlx::Error> {
        let done = sqlx::query("DELETE FROM uploads WHERE id = $1").bind(id).execute(self.pool).await?;
        Ok(done.rows_affected() > 0)
    }
}

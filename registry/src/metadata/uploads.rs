use sqlx::{AnyPool, Row};

use super::{now, RepositoryId};

/// The `uploads` table: sessions started and not yet finished or cancelled.
pub struct Uploads<'a> {
    pub(super) pool: &'a AnyPool,
}

/// A session as the database holds it.
#[derive(Debug)]
pub struct UploadRow {
    /// The repository it uploads into.
    pub repository: RepositoryId,
    /// Bytes acknowledged to the client.
    pub length: u64,
    /// The blob store's state of the session (`None` on the filesystem).
    pub store_state: Option<String>,
    /// When a request last changed the session (Unix seconds).
    pub updated_at: i64,
}

impl Uploads<'_> {
    /// Records a new session with the store's initial state of it.
    pub async fn create(&self, id: &str, repo: RepositoryId, store_state: Option<&str>) -> Result<(), sqlx::Error> {
        let at = now();
        sqlx::query(
            "INSERT INTO uploads (id, repository_id, created_at, updated_at, length, store_state) VALUES ($1, $2, $3, $4, 0, $5)",
        )
        .bind(id)
        .bind(repo.0)
        .bind(at)
        .bind(at)
        .bind(store_state)
        .execute(self.pool)
        .await?;
        Ok(())
    }

    /// The session, if it exists and belongs to the named repository.
    pub async fn find(&self, id: &str, name: &str) -> Result<Option<UploadRow>, sqlx::Error> {
        let row = sqlx::query(
            "SELECT r.id, u.length, u.store_state, u.updated_at FROM uploads u \
             JOIN repositories r ON r.id = u.repository_id WHERE u.id = $1 AND r.name = $2",
        )
        .bind(id)
        .bind(name)
        .fetch_optional(self.pool)
        .await?;
        row.map(|r| {
            Ok(UploadRow {
                repository: RepositoryId(r.try_get(0)?),
                length: r.try_get::<i64, _>(1)? as u64,
                store_state: r.try_get(2)?,
                updated_at: r.try_get(3)?,
            })
        })
        .transpose()
    }

    /// Saves a session's progress if it still holds `from` bytes, that is if
    /// no other request moved it on meanwhile; true if saved.
    pub async fn advance(&self, id: &str, from: u64, to: u64, store_state: Option<&str>) -> Result<bool, sqlx::Error> {
        let done = sqlx::query(
            "UPDATE uploads SET length = $1, store_state = $2, updated_at = $3 WHERE id = $4 AND length = $5",
        )
        .bind(to as i64)
        .bind(store_state)
        .bind(now())
        .bind(id)
        .bind(from as i64)
        .execute(self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// The next part number of the session's multipart upload, never handed out before.
    pub async fn next_part(&self, id: &str) -> Result<Option<u32>, sqlx::Error> {
        let row = sqlx::query("UPDATE uploads SET last_part = last_part + 1 WHERE id = $1 RETURNING last_part")
            .bind(id)
            .fetch_optional(self.pool)
            .await?;
        row.map(|r| r.try_get::<i64, _>(0).map(|n| n as u32)).transpose()
    }

    /// True while the session exists.
    pub async fn exists(&self, id: &str) -> Result<bool, sqlx::Error> {
        let row = sqlx::query("SELECT 1 FROM uploads WHERE id = $1").bind(id).fetch_optional(self.pool).await?;
        Ok(row.is_some())
    }

    /// Sessions last changed before `before` (Unix seconds), oldest first,
    /// with their store state.
    pub async fn idle_since(&self, before: i64, limit: i64) -> Result<Vec<(String, Option<String>)>, sqlx::Error> {
        let rows =
            sqlx::query("SELECT id, store_state FROM uploads WHERE updated_at < $1 ORDER BY updated_at LIMIT $2")
                .bind(before)
                .bind(limit)
                .fetch_all(self.pool)
                .await?;
        rows.iter().map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).collect()
    }

    /// Forgets a session; true if it existed.
    pub async fn delete(&self, id: &str) -> Result<bool, sqlx::Error> {
        let done = sqlx::query("DELETE FROM uploads WHERE id = $1").bind(id).execute(self.pool).await?;
        Ok(done.rows_affected() > 0)
    }
}

use sqlx::{AnyPool, Row};

use super::RepositoryId;

/// A tag with the manifest it points at, as the console lists it.
#[derive(Clone, Debug)]
pub struct TagDetail {
    /// Tag name.
    pub name: String,
    /// Manifest digest.
    pub digest: String,
    /// Manifest media type.
    pub media_type: String,
    /// The manifest's bytes (small: capped by `max_manifest_bytes`).
    pub content: Vec<u8>,
    /// Unix seconds of the last push to this tag.
    pub pushed_at: i64,
}

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

    /// Up to `limit` tags with their manifests, by name.
    pub async fn details(&self, repo: RepositoryId, limit: i64) -> Result<Vec<TagDetail>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT t.name, t.manifest_digest, m.media_type, m.content, t.updated_at FROM tags t \
             JOIN manifests m ON m.repository_id = t.repository_id AND m.digest = t.manifest_digest \
             WHERE t.repository_id = $1 ORDER BY t.name LIMIT $2",
        )
        .bind(repo.0)
        .bind(limit)
        .fetch_all(self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(TagDetail {
                    name: r.try_get(0)?,
                    digest: r.try_get(1)?,
                    media_type: r.try_get(2)?,
                    content: r.try_get(3)?,
                    pushed_at: r.try_get(4)?,
                })
            })
            .collect()
    }
}

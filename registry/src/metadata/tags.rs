use damselfly_core::Digest;
use sqlx::{AnyPool, Row};

use super::{now, RepositoryId};

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

/// A tag as the retention rules see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TagRow {
    /// Tag name.
    pub name: String,
    /// The manifest it points at.
    pub digest: Digest,
    /// Unix seconds of the last push to it.
    pub pushed_at: i64,
    /// Unix seconds of its last recorded pull, if any.
    pub pulled_at: Option<i64>,
}

/// A tag's pull is recorded at most this often: "not pulled for D days" needs no more.
pub const PULL_RESOLUTION_SECS: i64 = 3600;

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

    /// Removes a tag; the manifest stays. Returns the manifest it pointed at.
    pub async fn delete(&self, repo: RepositoryId, tag: &str) -> Result<Option<Digest>, sqlx::Error> {
        let row = sqlx::query("DELETE FROM tags WHERE repository_id = $1 AND name = $2 RETURNING manifest_digest")
            .bind(repo.0)
            .bind(tag)
            .fetch_optional(self.pool)
            .await?;
        let Some(digest) = row.map(|r| r.try_get::<String, _>(0)).transpose()? else { return Ok(None) };
        let digest: Digest = digest.parse().map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
        self.noted_untagged(repo, &digest).await;
        Ok(Some(digest))
    }

    /// Removes a tag the retention rules chose, if it is as they saw it: same
    /// manifest, not pushed or pulled since. True if removed.
    pub async fn delete_if_unchanged(&self, repo: RepositoryId, seen: &TagRow) -> Result<bool, sqlx::Error> {
        let done = sqlx::query(
            "DELETE FROM tags WHERE repository_id = $1 AND name = $2 AND manifest_digest = $3 AND updated_at = $4 \
             AND COALESCE(pulled_at, 0) = $5",
        )
        .bind(repo.0)
        .bind(&seen.name)
        .bind(seen.digest.to_string())
        .bind(seen.pushed_at)
        .bind(seen.pulled_at.unwrap_or(0))
        .execute(self.pool)
        .await?;
        if done.rows_affected() == 0 {
            return Ok(false);
        }
        self.noted_untagged(repo, &seen.digest).await;
        Ok(true)
    }

    /// Records, apart from the tag's own deletion (a PUT takes the manifest's
    /// row before the tag's; this takes them the other way round), that the
    /// manifest has no tag left. Losing the note only delays the
    /// untagged-manifest policy, which each GC run reconciles.
    async fn noted_untagged(&self, repo: RepositoryId, digest: &Digest) {
        let noted = sqlx::query(
            "UPDATE manifests SET untagged_at = $1 WHERE repository_id = $2 AND digest = $3 AND untagged_at IS NULL \
             AND NOT EXISTS (SELECT 1 FROM tags t WHERE t.repository_id = $2 AND t.manifest_digest = $3)",
        )
        .bind(now())
        .bind(repo.0)
        .bind(digest.to_string())
        .execute(self.pool)
        .await;
        if let Err(e) = noted {
            tracing::warn!(error = %e, manifest = %digest, "could not record that the manifest lost its last tag");
        }
    }

    /// The tags pointing at a manifest.
    pub async fn pointing_at(&self, repo: RepositoryId, digest: &Digest) -> Result<Vec<String>, sqlx::Error> {
        let rows = sqlx::query("SELECT name FROM tags WHERE repository_id = $1 AND manifest_digest = $2 ORDER BY name")
            .bind(repo.0)
            .bind(digest.to_string())
            .fetch_all(self.pool)
            .await?;
        rows.iter().map(|r| r.try_get(0)).collect()
    }

    /// Every tag of the repository, for the retention rules.
    pub async fn rows(&self, repo: RepositoryId) -> Result<Vec<TagRow>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT name, manifest_digest, updated_at, pulled_at FROM tags WHERE repository_id = $1 ORDER BY name",
        )
        .bind(repo.0)
        .fetch_all(self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let digest: String = r.try_get(1)?;
                Ok(TagRow {
                    name: r.try_get(0)?,
                    digest: digest.parse().map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
                    pushed_at: r.try_get(2)?,
                    pulled_at: r.try_get(3)?,
                })
            })
            .collect()
    }

    /// Records a pull of the tag, unless one was recorded within [`PULL_RESOLUTION_SECS`].
    pub async fn record_pull(&self, repository: &str, tag: &str) -> Result<(), sqlx::Error> {
        let at = now();
        sqlx::query(
            "UPDATE tags SET pulled_at = $1 WHERE name = $2 AND (pulled_at IS NULL OR pulled_at < $3) \
             AND repository_id = (SELECT id FROM repositories WHERE name = $4)",
        )
        .bind(at)
        .bind(tag)
        .bind(at - PULL_RESOLUTION_SECS)
        .bind(repository)
        .execute(self.pool)
        .await?;
        Ok(())
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

use damselfly_core::Digest;
use sqlx::{AnyPool, Row};

use super::{now, RepositoryId};

/// What a manifest points at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TargetKind {
    /// A config or layer blob.
    Blob,
    /// A child manifest of an index.
    Manifest,
}

impl TargetKind {
    fn as_str(self) -> &'static str {
        match self {
            TargetKind::Blob => "blob",
            TargetKind::Manifest => "manifest",
        }
    }
}

/// A manifest about to be stored.
pub struct NewManifest<'a> {
    /// Digest of `content`.
    pub digest: Digest,
    /// The media type it was pushed with.
    pub media_type: &'a str,
    /// `artifactType`, or the config media type of an image manifest.
    pub artifact_type: Option<&'a str>,
    /// The `subject` it refers to, for the referrers API.
    pub subject: Option<Digest>,
    /// The `annotations` object as JSON text.
    pub annotations: Option<String>,
    /// The exact bytes pushed.
    pub content: &'a [u8],
    /// Blobs and child manifests it references.
    pub references: Vec<(Digest, TargetKind)>,
}

/// A stored manifest.
#[derive(Clone, Debug)]
pub struct ManifestRecord {
    /// Content digest.
    pub digest: Digest,
    /// Media type it was pushed with.
    pub media_type: String,
    /// The exact bytes pushed.
    pub content: Vec<u8>,
}

/// A manifest whose `subject` is a given digest.
#[derive(Clone, Debug)]
pub struct Referrer {
    /// Its digest.
    pub digest: Digest,
    /// Its media type.
    pub media_type: String,
    /// Its size in bytes.
    pub size: u64,
    /// Its artifact type, if any.
    pub artifact_type: Option<String>,
    /// Its annotations as JSON text, if any.
    pub annotations: Option<String>,
}

/// The `manifests`, `manifest_references` and `tags` writes that go with them.
pub struct Manifests<'a> {
    pub(super) pool: &'a AnyPool,
}

impl Manifests<'_> {
    /// Stores a manifest and optionally points a tag at it, atomically.
    /// Storing the same manifest again only moves the tag.
    pub async fn put(&self, repo: RepositoryId, m: &NewManifest<'_>, tag: Option<&str>) -> Result<(), sqlx::Error> {
        let digest = m.digest.to_string();
        let at = now();
        let mut tx = self.pool.begin().await?;
        let inserted = sqlx::query(
            "INSERT INTO manifests (repository_id, digest, media_type, artifact_type, subject_digest, annotations, content, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (repository_id, digest) DO NOTHING",
        )
        .bind(repo.0)
        .bind(&digest)
        .bind(m.media_type)
        .bind(m.artifact_type)
        .bind(m.subject.map(|s| s.to_string()))
        .bind(m.annotations.as_deref())
        .bind(m.content)
        .bind(at)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if inserted > 0 {
            for (target, kind) in &m.references {
                sqlx::query(
                    "INSERT INTO manifest_references (repository_id, manifest_digest, target_digest, target_kind) \
                     VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                )
                .bind(repo.0)
                .bind(&digest)
                .bind(target.to_string())
                .bind(kind.as_str())
                .execute(&mut *tx)
                .await?;
            }
        }
        if let Some(tag) = tag {
            sqlx::query(
                "INSERT INTO tags (repository_id, name, manifest_digest, updated_at) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (repository_id, name) DO UPDATE SET manifest_digest = excluded.manifest_digest, updated_at = excluded.updated_at",
            )
            .bind(repo.0)
            .bind(tag)
            .bind(&digest)
            .bind(at)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await
    }

    /// The manifest a tag points at, in one query.
    pub async fn find_by_tag(&self, name: &str, tag: &str) -> Result<Option<ManifestRecord>, sqlx::Error> {
        let row = sqlx::query(
            "SELECT m.digest, m.media_type, m.content FROM repositories r \
             JOIN tags t ON t.repository_id = r.id \
             JOIN manifests m ON m.repository_id = r.id AND m.digest = t.manifest_digest \
             WHERE r.name = $1 AND t.name = $2",
        )
        .bind(name)
        .bind(tag)
        .fetch_optional(self.pool)
        .await?;
        row.map(|r| decode(&r)).transpose()
    }

    /// A manifest by digest.
    pub async fn find_by_digest(&self, name: &str, digest: &Digest) -> Result<Option<ManifestRecord>, sqlx::Error> {
        let row = sqlx::query(
            "SELECT m.digest, m.media_type, m.content FROM repositories r \
             JOIN manifests m ON m.repository_id = r.id WHERE r.name = $1 AND m.digest = $2",
        )
        .bind(name)
        .bind(digest.to_string())
        .fetch_optional(self.pool)
        .await?;
        row.map(|r| decode(&r)).transpose()
    }

    /// True when the repository holds this manifest.
    pub async fn exists(&self, repo: RepositoryId, digest: &Digest) -> Result<bool, sqlx::Error> {
        let row = sqlx::query("SELECT 1 FROM manifests WHERE repository_id = $1 AND digest = $2")
            .bind(repo.0)
            .bind(digest.to_string())
            .fetch_optional(self.pool)
            .await?;
        Ok(row.is_some())
    }

    /// Deletes a manifest and every tag pointing at it.
    pub async fn delete(&self, repo: RepositoryId, digest: &Digest) -> Result<bool, sqlx::Error> {
        let digest = digest.to_string();
        let mut tx = self.pool.begin().await?;
        for sql in [
            "DELETE FROM tags WHERE repository_id = $1 AND manifest_digest = $2",
            "DELETE FROM manifest_references WHERE repository_id = $1 AND manifest_digest = $2",
        ] {
            sqlx::query(sql).bind(repo.0).bind(&digest).execute(&mut *tx).await?;
        }
        let done = sqlx::query("DELETE FROM manifests WHERE repository_id = $1 AND digest = $2")
            .bind(repo.0)
            .bind(&digest)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(done.rows_affected() > 0)
    }

    /// Manifests in the repository whose `subject` is `subject`, optionally of one artifact type.
    pub async fn referrers(
        &self,
        repo: RepositoryId,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Vec<Referrer>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT digest, media_type, CAST(LENGTH(content) AS BIGINT), artifact_type, annotations FROM manifests \
             WHERE repository_id = $1 AND subject_digest = $2 AND ($3 IS NULL OR artifact_type = $3) ORDER BY digest",
        )
        .bind(repo.0)
        .bind(subject.to_string())
        .bind(artifact_type)
        .fetch_all(self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let digest: String = r.try_get(0)?;
                let size: i64 = r.try_get(2)?;
                Ok(Referrer {
                    digest: parse_digest(&digest)?,
                    media_type: r.try_get(1)?,
                    size: size as u64,
                    artifact_type: r.try_get(3)?,
                    annotations: r.try_get(4)?,
                })
            })
            .collect()
    }
}

fn parse_digest(s: &str) -> Result<Digest, sqlx::Error> {
    s.parse().map_err(|e| sqlx::Error::Decode(Box::new(e)))
}

fn decode(row: &sqlx::any::AnyRow) -> Result<ManifestRecord, sqlx::Error> {
    let digest: String = row.try_get(0)?;
    Ok(ManifestRecord { digest: parse_digest(&digest)?, media_type: row.try_get(1)?, content: row.try_get(2)? })
}

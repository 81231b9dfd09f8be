use damselfly_core::Digest;
use sqlx::{Any, AnyPool, Row, Transaction};

use super::usage::{self, Delta, QuotaExceeded};
use super::{blobs, now, RepositoryId};

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
    /// When the tag it was found by was last pulled, if it was found by tag and ever pulled.
    pub tag_pulled_at: Option<i64>,
}

/// Why a manifest was not stored. Nothing of it was written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Unstored {
    /// A blob it references is not in the repository, or is being collected.
    Blob(Digest),
    /// A child manifest it references is not in the repository.
    Manifest(Digest),
    /// Storing it would take a quota past its limit.
    Quota(QuotaExceeded),
    /// The tag is immutable and points at another manifest.
    Immutable {
        /// The manifest the tag points at.
        current: Digest,
    },
}

/// What became of a manifest PUT.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PutOutcome {
    /// Stored (or stored already), and the tag, if any, points at it.
    Stored {
        /// The manifest the tag pointed at before, if the tag moved.
        moved_from: Option<Digest>,
    },
    /// Refused; nothing changed.
    Refused(Unstored),
}

/// How a PUT may treat its tag.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TagRule {
    /// The tag matches an immutable pattern: it may be created, or pushed
    /// again with the same manifest, but never moved to another.
    pub immutable: bool,
}

/// A stored manifest as the lifecycle rules see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManifestRow {
    /// Its digest.
    pub digest: Digest,
    /// Its `subject`, if it is a referrer.
    pub subject: Option<Digest>,
    /// A tag points at it.
    pub tagged: bool,
    /// Since when it has no tag, as recorded (`None` while tagged, or not yet noticed).
    pub untagged_at: Option<i64>,
    /// The child manifests it lists, if it is an index.
    pub children: Vec<Digest>,
    /// Its size in bytes.
    pub size: u64,
}

/// A manifest's `untagged_at` refreshed by a PUT that needs it: cleared when
/// tagged, and otherwise moved past its old value, so that a collector that
/// decided on the old value leaves it alone.
const REFRESH_UNTAGGED: &str = "CASE WHEN $1 = 1 THEN NULL WHEN untagged_at IS NULL THEN NULL \
     WHEN untagged_at >= $2 THEN untagged_at + 1 ELSE $2 END";

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
    ///
    /// In one transaction, and in this order (every writer takes rows in
    /// the same order: blobs, manifests, tags, usage): it holds each blob
    /// the manifest references and touches it, refusing if one is being
    /// collected or is not linked to the repository; holds each child
    /// manifest and refreshes it; stores the manifest; moves the tag unless
    /// the tag is immutable and points elsewhere; and counts the manifest's
    /// bytes against the quotas.
    pub async fn put(
        &self,
        repo: RepositoryId,
        m: &NewManifest<'_>,
        tag: Option<&str>,
        rule: TagRule,
    ) -> Result<PutOutcome, sqlx::Error> {
        let digest = m.digest.to_string();
        let at = now();
        let mut blob_refs: Vec<String> =
            m.references.iter().filter(|(_, k)| *k == TargetKind::Blob).map(|(d, _)| d.to_string()).collect();
        let mut children: Vec<String> =
            m.references.iter().filter(|(_, k)| *k == TargetKind::Manifest).map(|(d, _)| d.to_string()).collect();
        blob_refs.sort();
        blob_refs.dedup();
        children.sort();
        children.dedup();
        let mut tx = super::begin_write(self.pool).await?;
        for b in &blob_refs {
            if blobs::touch_live(&mut tx, b).await?.is_none() || !blobs::is_linked(&mut tx, repo, b).await? {
                return Ok(PutOutcome::Refused(Unstored::Blob(parse_digest(b)?)));
            }
        }
        for c in &children {
            if refresh(&mut tx, repo, c, false, at).await? == 0 {
                return Ok(PutOutcome::Refused(Unstored::Manifest(parse_digest(c)?)));
            }
        }
        let mut inserted = false;
        if refresh(&mut tx, repo, &digest, tag.is_some(), at).await? == 0 {
            inserted = sqlx::query(
                "INSERT INTO manifests (repository_id, digest, media_type, artifact_type, subject_digest, annotations, content, created_at, untagged_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (repository_id, digest) DO NOTHING",
            )
            .bind(repo.0)
            .bind(&digest)
            .bind(m.media_type)
            .bind(m.artifact_type)
            .bind(m.subject.map(|s| s.to_string()))
            .bind(m.annotations.as_deref())
            .bind(m.content)
            .bind(at)
            .bind(if tag.is_some() { None } else { Some(at) })
            .execute(&mut *tx)
            .await?
            .rows_affected()
                > 0;
        }
        if inserted {
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
        let mut moved_from = None;
        if let Some(tag) = tag {
            let previous = sqlx::query("SELECT manifest_digest FROM tags WHERE repository_id = $1 AND name = $2")
                .bind(repo.0)
                .bind(tag)
                .fetch_optional(&mut *tx)
                .await?
                .map(|r| r.try_get::<String, _>(0))
                .transpose()?;
            // An immutable tag is written only if it is new or already points here.
            let guard = if rule.immutable { " WHERE tags.manifest_digest = excluded.manifest_digest" } else { "" };
            let written = sqlx::query(&format!(
                "INSERT INTO tags (repository_id, name, manifest_digest, updated_at) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (repository_id, name) DO UPDATE SET manifest_digest = excluded.manifest_digest, updated_at = excluded.updated_at{guard}"
            ))
            .bind(repo.0)
            .bind(tag)
            .bind(&digest)
            .bind(at)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if written == 0 {
                let current = previous.as_deref().map(parse_digest).transpose()?.unwrap_or(m.digest);
                return Ok(PutOutcome::Refused(Unstored::Immutable { current }));
            }
            moved_from = previous.filter(|p| *p != digest).as_deref().map(parse_digest).transpose()?;
        }
        if inserted {
            if let Some(scope) = blobs::scope_of_repository(&mut tx, repo).await? {
                let mut held = usage::hold_one(&mut tx, scope).await?;
                let delta = Delta {
                    bytes: m.content.len() as i64,
                    repositories: i64::from(holds_only(&mut tx, repo, &digest).await?),
                };
                if let Err(refused) = usage::apply(&mut tx, &mut held, delta).await? {
                    return Ok(PutOutcome::Refused(Unstored::Quota(refused)));
                }
            }
        }
        tx.commit().await?;
        if let Some(previous) = &moved_from {
            // Outside the transaction: it would take rows out of the writers' order.
            // A failure only delays when the untagged-manifest policy sees it untagged.
            if let Err(e) = self.note_untagged(repo, previous).await {
                tracing::warn!(error = %e, manifest = %previous, "could not record that the manifest lost its tag");
            }
        }
        Ok(PutOutcome::Stored { moved_from })
    }

    /// Records that a manifest has no tag any more, if so, from now.
    pub async fn note_untagged(&self, repo: RepositoryId, digest: &Digest) -> Result<(), sqlx::Error> {
        sqlx::query(
            "UPDATE manifests SET untagged_at = $1 WHERE repository_id = $2 AND digest = $3 AND untagged_at IS NULL \
             AND NOT EXISTS (SELECT 1 FROM tags t WHERE t.repository_id = $2 AND t.manifest_digest = $3)",
        )
        .bind(now())
        .bind(repo.0)
        .bind(digest.to_string())
        .execute(self.pool)
        .await?;
        Ok(())
    }

    /// The manifest a tag points at, in one query.
    pub async fn find_by_tag(&self, name: &str, tag: &str) -> Result<Option<ManifestRecord>, sqlx::Error> {
        let row = sqlx::query(
            "SELECT m.digest, m.media_type, m.content, t.pulled_at FROM repositories r \
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
            "SELECT m.digest, m.media_type, m.content, CAST(NULL AS BIGINT) FROM repositories r \
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

    /// Deletes a manifest and every tag pointing at it, and frees its bytes from the quotas.
    pub async fn delete(&self, repo: RepositoryId, digest: &Digest) -> Result<bool, sqlx::Error> {
        let mut tx = super::begin_write(self.pool).await?;
        let deleted = delete_where(&mut tx, repo, &digest.to_string(), None).await?;
        if deleted.is_some() {
            tx.commit().await?;
        }
        Ok(deleted.is_some())
    }

    /// Deletes a manifest the lifecycle rules found unkept, if it still is:
    /// untagged since no later than `untagged_at` (a PUT that needed it since
    /// moved that on), with no tag, and listed by no index of the repository.
    /// Its referrers are left to their own turn. Returns its size if deleted.
    pub async fn delete_if_unkept(
        &self,
        repo: RepositoryId,
        digest: &Digest,
        untagged_at: i64,
    ) -> Result<Option<u64>, sqlx::Error> {
        let mut tx = super::begin_write(self.pool).await?;
        let deleted = delete_where(&mut tx, repo, &digest.to_string(), Some(untagged_at)).await?;
        if deleted.is_some() {
            tx.commit().await?;
        }
        Ok(deleted)
    }

    /// The repository's manifests with their tags, children and subjects, for the lifecycle rules.
    pub async fn rows(&self, repo: RepositoryId) -> Result<Vec<ManifestRow>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT m.digest, m.subject_digest, m.untagged_at, \
               CAST(CASE WHEN EXISTS (SELECT 1 FROM tags t WHERE t.repository_id = m.repository_id AND t.manifest_digest = m.digest) THEN 1 ELSE 0 END AS BIGINT), \
               CAST(LENGTH(m.content) AS BIGINT) \
             FROM manifests m WHERE m.repository_id = $1 ORDER BY m.digest",
        )
        .bind(repo.0)
        .fetch_all(self.pool)
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            let digest: String = r.try_get(0)?;
            let subject: Option<String> = r.try_get(1)?;
            let size: i64 = r.try_get(4)?;
            out.push(ManifestRow {
                digest: parse_digest(&digest)?,
                subject: subject.as_deref().map(parse_digest).transpose()?,
                untagged_at: r.try_get(2)?,
                tagged: r.try_get::<i64, _>(3)? != 0,
                children: Vec::new(),
                size: size as u64,
            });
        }
        let edges = sqlx::query(
            "SELECT manifest_digest, target_digest FROM manifest_references \
             WHERE repository_id = $1 AND target_kind = 'manifest' ORDER BY manifest_digest",
        )
        .bind(repo.0)
        .fetch_all(self.pool)
        .await?;
        for e in &edges {
            let parent = parse_digest(&e.try_get::<String, _>(0)?)?;
            let child = parse_digest(&e.try_get::<String, _>(1)?)?;
            if let Some(row) = out.iter_mut().find(|m| m.digest == parent) {
                row.children.push(child);
            }
        }
        Ok(out)
    }

    /// Notes, for every manifest without a tag whose `untagged_at` is not set
    /// (a tag moved or was deleted and the note was lost), that it is
    /// untagged from now, and clears the note of every manifest tagged again.
    pub async fn reconcile_untagged(&self) -> Result<u64, sqlx::Error> {
        let set = sqlx::query(
            "UPDATE manifests SET untagged_at = $1 WHERE untagged_at IS NULL AND NOT EXISTS \
             (SELECT 1 FROM tags t WHERE t.repository_id = manifests.repository_id AND t.manifest_digest = manifests.digest)",
        )
        .bind(now())
        .execute(self.pool)
        .await?;
        sqlx::query(
            "UPDATE manifests SET untagged_at = NULL WHERE untagged_at IS NOT NULL AND EXISTS \
             (SELECT 1 FROM tags t WHERE t.repository_id = manifests.repository_id AND t.manifest_digest = manifests.digest)",
        )
        .execute(self.pool)
        .await?;
        Ok(set.rows_affected())
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

pub(super) fn parse_digest(s: &str) -> Result<Digest, sqlx::Error> {
    s.parse().map_err(|e| sqlx::Error::Decode(Box::new(e)))
}

fn decode(row: &sqlx::any::AnyRow) -> Result<ManifestRecord, sqlx::Error> {
    let digest: String = row.try_get(0)?;
    Ok(ManifestRecord {
        digest: parse_digest(&digest)?,
        media_type: row.try_get(1)?,
        content: row.try_get(2)?,
        tag_pulled_at: row.try_get(3)?,
    })
}

/// Holds a manifest's row and refreshes its `untagged_at` ([`REFRESH_UNTAGGED`]); rows found.
async fn refresh(
    tx: &mut Transaction<'_, Any>,
    repo: RepositoryId,
    digest: &str,
    tagged: bool,
    at: i64,
) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(&format!(
        "UPDATE manifests SET untagged_at = {REFRESH_UNTAGGED} WHERE repository_id = $3 AND digest = $4"
    ))
    .bind(i64::from(tagged))
    .bind(at)
    .bind(repo.0)
    .bind(digest)
    .execute(&mut **tx)
    .await?;
    Ok(done.rows_affected())
}

/// True when the manifest `digest` is all the repository holds: no other manifest, no blob.
async fn holds_only(tx: &mut Transaction<'_, Any>, repo: RepositoryId, digest: &str) -> Result<bool, sqlx::Error> {
    let row = sqlx::query(
        "SELECT 1 WHERE EXISTS (SELECT 1 FROM repository_blobs WHERE repository_id = $1) \
         OR EXISTS (SELECT 1 FROM manifests WHERE repository_id = $1 AND digest <> $2)",
    )
    .bind(repo.0)
    .bind(digest)
    .fetch_optional(&mut **tx)
    .await?;
    Ok(row.is_none())
}

/// Deletes a manifest (its tags and references go with it), only if it is
/// still unkept when `unkept_since` is given (see [`Manifests::delete_if_unkept`]),
/// and frees its bytes; returns its size if deleted.
async fn delete_where(
    tx: &mut Transaction<'_, Any>,
    repo: RepositoryId,
    digest: &str,
    unkept_since: Option<i64>,
) -> Result<Option<u64>, sqlx::Error> {
    const UNKEPT: &str = "AND untagged_at IS NOT NULL AND untagged_at <= $3 \
         AND NOT EXISTS (SELECT 1 FROM tags t WHERE t.repository_id = $1 AND t.manifest_digest = $2) \
         AND NOT EXISTS (SELECT 1 FROM manifest_references r WHERE r.repository_id = $1 AND r.target_digest = $2 AND r.target_kind = 'manifest')";
    // The manifest's row first: PUTs take it before its tags.
    let sql = format!(
        "DELETE FROM manifests WHERE repository_id = $1 AND digest = $2 {} RETURNING CAST(LENGTH(content) AS BIGINT)",
        if unkept_since.is_some() { UNKEPT } else { "" }
    );
    let mut query = sqlx::query(&sql).bind(repo.0).bind(digest);
    if let Some(at) = unkept_since {
        query = query.bind(at);
    }
    let row = query.fetch_optional(&mut **tx).await?;
    let Some(size) = row.map(|r| r.try_get::<i64, _>(0)).transpose()? else {
        return Ok(None);
    };
    for sql in [
        "DELETE FROM tags WHERE repository_id = $1 AND manifest_digest = $2",
        "DELETE FROM manifest_references WHERE repository_id = $1 AND manifest_digest = $2",
    ] {
        sqlx::query(sql).bind(repo.0).bind(digest).execute(&mut **tx).await?;
    }
    if let Some(scope) = blobs::scope_of_repository(tx, repo).await? {
        let mut held = usage::hold_one(tx, scope).await?;
        let delta = Delta { bytes: -size, repositories: -i64::from(usage::repository_is_empty(tx, repo).await?) };
        let _ = usage::apply(tx, &mut held, delta).await?;
    }
    Ok(Some(size as u64))
}

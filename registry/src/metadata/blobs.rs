use damselfly_core::{Digest, PieceDigests};
use sqlx::{Any, AnyPool, Row, Transaction};

use super::usage::{self, Delta, QuotaExceeded};
use super::{deletions, now, RepositoryId};

/// A stored blob's metadata.
#[derive(Clone, Debug)]
pub struct BlobRecord {
    /// The content digest.
    pub digest: Digest,
    /// Length in bytes.
    pub size: u64,
    /// Per-piece SHA-256 digests.
    pub pieces: PieceDigests,
}

/// What became of linking a blob to a repository.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Linked {
    /// Linked now (and counted against the namespace's quota).
    Linked,
    /// The repository held it already.
    Already,
    /// The blob is gone (collected, or being collected), or the mount's
    /// source no longer holds it: its bytes must be uploaded again.
    Missing,
    /// The link would take a quota past its limit; nothing was linked.
    Refused(QuotaExceeded),
}

/// How long a claim keeps the collector off a blob whose bytes are being
/// moved into place, beyond the grace period: an upload whose move took
/// longer than the grace would otherwise find its blob collected at its
/// link and have to be sent again. A claim that is never linked (its
/// process died) is collected this much later than an unlinked upload.
pub const CLAIM_HOLD_SECS: i64 = 3600;

/// The `blobs` and `repository_blobs` tables.
///
/// A blob becomes readable in two steps, so that the garbage collector can
/// never delete bytes a commit relies on (see `services::gc`): [`Blobs::claim`]
/// records (or revives) the row, fresh, before the bytes are made visible in
/// the store; [`Blobs::link`] then puts it into a repository, once it has
/// checked, holding the row, that the claim still stands.
pub struct Blobs<'a> {
    pub(super) pool: &'a AnyPool,
}

impl Blobs<'_> {
    /// Records a verified blob whose bytes are about to be made visible in
    /// the store, as touched [`CLAIM_HOLD_SECS`] from now: the collector
    /// leaves it alone while the bytes move into place (a server-side copy
    /// in S3 can take a while), and for the grace period after. The link
    /// that ends the upload sets the touch back to now. A row the collector
    /// was deleting is taken back (it waits for a deletion of the bytes in
    /// progress to finish first). Claims are counted, so that when several
    /// uploads of one blob overlap, only the last link ends the hold.
    pub async fn claim(&self, blob: &BlobRecord) -> Result<(), sqlx::Error> {
        let at = now();
        let held_until = at + CLAIM_HOLD_SECS;
        sqlx::query(
            "INSERT INTO blobs (digest, size, piece_size, piece_digests, created_at, touched_at, deleting, claims) \
             VALUES ($1, $2, $3, $4, $5, $6, 0, 1) \
             ON CONFLICT (digest) DO UPDATE SET touched_at = excluded.touched_at, deleting = 0, claims = blobs.claims + 1",
        )
        .bind(blob.digest.to_string())
        .bind(blob.size as i64)
        .bind(blob.pieces.piece_size() as i64)
        .bind(blob.pieces.to_bytes())
        .bind(at)
        .bind(held_until)
        .execute(self.pool)
        .await?;
        Ok(())
    }

    /// Links a blob to a repository: the end of an upload (after
    /// [`Blobs::claim`] and the bytes), or a mount from `from`, which must
    /// hold it. Holding the blob's row, it checks that nobody is deleting
    /// it, touches it, and counts it against the namespace's and tenant's
    /// quotas, all in one transaction.
    pub async fn link(
        &self,
        repo: RepositoryId,
        digest: &Digest,
        from: Option<RepositoryId>,
    ) -> Result<Linked, sqlx::Error> {
        let digest = digest.to_string();
        let mut tx = super::begin_write(self.pool).await?;
        let touched = match from {
            Some(_) => touch_live(&mut tx, &digest).await?,
            None => end_claim(&mut *tx, &digest).await?,
        };
        let Some(size) = touched else {
            return Ok(Linked::Missing);
        };
        if let Some(from) = from {
            if !is_linked(&mut tx, from, &digest).await? {
                return Ok(Linked::Missing);
            }
        }
        if is_linked(&mut tx, repo, &digest).await? {
            tx.commit().await?;
            return Ok(Linked::Already);
        }
        if let Some(scope) = scope_of_repository(&mut tx, repo).await? {
            let mut held = usage::hold_one(&mut tx, scope).await?;
            let ns = held.scope.namespace_name.clone();
            let delta = Delta {
                bytes: if usage::linked_in_namespace(&mut tx, &digest, &ns, None).await? { 0 } else { size },
                repositories: i64::from(usage::repository_is_empty(&mut tx, repo).await?),
            };
            if let Err(refused) = usage::apply(&mut tx, &mut held, delta).await? {
                tx.rollback().await?;
                if from.is_none() {
                    // Nothing is linked, but the upload is over: its hold goes.
                    end_claim(self.pool, &digest).await?;
                }
                return Ok(Linked::Refused(refused));
            }
        }
        sqlx::query("INSERT INTO repository_blobs (repository_id, digest, created_at) VALUES ($1, $2, $3)")
            .bind(repo.0)
            .bind(&digest)
            .bind(now())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Linked::Linked)
    }

    /// The quota linking `size` bytes of `digest` to the repository would
    /// exceed, as use stands now (the link checks again when it commits).
    pub async fn quota_check(
        &self,
        repo: RepositoryId,
        digest: &Digest,
        size: u64,
    ) -> Result<Option<QuotaExceeded>, sqlx::Error> {
        let digest = digest.to_string();
        let mut tx = self.pool.begin().await?;
        let Some(scope) = scope_of_repository(&mut tx, repo).await? else { return Ok(None) };
        if is_linked(&mut tx, repo, &digest).await? {
            return Ok(None);
        }
        let delta = Delta {
            bytes: if usage::linked_in_namespace(&mut tx, &digest, &scope.namespace_name, None).await? {
                0
            } else {
                size as i64
            },
            repositories: i64::from(usage::repository_is_empty(&mut tx, repo).await?),
        };
        usage::would_exceed(&mut tx, &scope, delta).await
    }

    /// [`Blobs::claim`] then [`Blobs::link`], for a blob whose bytes are in
    /// the store already (tests and seeding).
    pub async fn insert_and_link(&self, repo: RepositoryId, blob: &BlobRecord) -> Result<Linked, sqlx::Error> {
        self.claim(blob).await?;
        self.link(repo, &blob.digest, None).await
    }

    /// Removes a blob from a repository (what stays while other repositories
    /// link it), frees its share of the quota, and tells the tenant's agents
    /// when no repository of the tenant holds it any more.
    pub async fn unlink(&self, repo: RepositoryId, digest: &Digest) -> Result<bool, sqlx::Error> {
        let digest = digest.to_string();
        let mut tx = super::begin_write(self.pool).await?;
        // Hold the blob's row, as every change of its links does.
        let size = sqlx::query("UPDATE blobs SET deleting = deleting WHERE digest = $1 RETURNING size")
            .bind(&digest)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(size) = size.map(|r| r.try_get::<i64, _>(0)).transpose()? else {
            return Ok(false);
        };
        let scope = scope_of_repository(&mut tx, repo).await?;
        let mut held = match scope {
            Some(scope) => Some(usage::hold_one(&mut tx, scope).await?),
            None => None,
        };
        let done = sqlx::query("DELETE FROM repository_blobs WHERE repository_id = $1 AND digest = $2")
            .bind(repo.0)
            .bind(&digest)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Ok(false);
        }
        if let Some(held) = held.as_mut() {
            let ns = held.scope.namespace_name.clone();
            let delta = Delta {
                bytes: if usage::linked_in_namespace(&mut tx, &digest, &ns, None).await? { 0 } else { -size },
                repositories: -i64::from(usage::repository_is_empty(&mut tx, repo).await?),
            };
            let _ = usage::apply(&mut tx, held, delta).await?;
            deletions::record_departures(&mut tx, &digest, &[held.scope.tenant]).await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    /// When something last needed the blob (Unix seconds); `None` if it is not stored.
    pub async fn touched_at(&self, digest: &Digest) -> Result<Option<i64>, sqlx::Error> {
        let row = sqlx::query("SELECT touched_at FROM blobs WHERE digest = $1 AND deleting = 0")
            .bind(digest.to_string())
            .fetch_optional(self.pool)
            .await?;
        row.map(|r| r.try_get(0)).transpose()
    }

    /// Marks the blob needed now, unless it was marked since `stale_before`
    /// or is being deleted.
    pub async fn touch(&self, digest: &Digest, stale_before: i64) -> Result<(), sqlx::Error> {
        sqlx::query("UPDATE blobs SET touched_at = $1 WHERE digest = $2 AND deleting = 0 AND touched_at < $3")
            .bind(now())
            .bind(digest.to_string())
            .bind(stale_before)
            .execute(self.pool)
            .await?;
        Ok(())
    }

    /// The blob if it is linked to the named repository.
    pub async fn find_in_repository(&self, name: &str, digest: &Digest) -> Result<Option<BlobRecord>, sqlx::Error> {
        let row = sqlx::query(
            "SELECT b.size, b.piece_size, b.piece_digests FROM blobs b \
             JOIN repository_blobs rb ON rb.digest = b.digest \
             JOIN repositories r ON r.id = rb.repository_id \
             WHERE r.name = $1 AND b.digest = $2",
        )
        .bind(name)
        .bind(digest.to_string())
        .fetch_optional(self.pool)
        .await?;
        row.map(|r| decode(*digest, &r)).transpose()
    }

    /// The blob, whichever repository holds it, unless it is being deleted.
    pub async fn find(&self, digest: &Digest) -> Result<Option<BlobRecord>, sqlx::Error> {
        let row = sqlx::query("SELECT size, piece_size, piece_digests FROM blobs WHERE digest = $1 AND deleting = 0")
            .bind(digest.to_string())
            .fetch_optional(self.pool)
            .await?;
        row.map(|r| decode(*digest, &r)).transpose()
    }

    /// Every blob that a repository of namespace `namespace` links, unless it is being deleted.
    pub async fn in_namespace(&self, namespace: &str) -> Result<Vec<BlobRecord>, sqlx::Error> {
        // A prefix compared as such: a namespace's name may hold LIKE's wildcards.
        let rows = sqlx::query(
            "SELECT DISTINCT b.size, b.piece_size, b.piece_digests, b.digest FROM blobs b \
             JOIN repository_blobs rb ON rb.digest = b.digest \
             JOIN repositories r ON r.id = rb.repository_id \
             WHERE substr(r.name, 1, length($1)) = $1 AND b.deleting = 0",
        )
        .bind(format!("{namespace}/"))
        .fetch_all(self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let digest: String = r.try_get(3)?;
                decode(super::manifests::parse_digest(&digest)?, r)
            })
            .collect()
    }

    /// Records a blob's pieces cut at another size; false if there is no such blob.
    pub async fn set_pieces(&self, digest: &Digest, pieces: &PieceDigests) -> Result<bool, sqlx::Error> {
        let done = sqlx::query("UPDATE blobs SET piece_size = $1, piece_digests = $2 WHERE digest = $3")
            .bind(pieces.piece_size() as i64)
            .bind(pieces.to_bytes())
            .bind(digest.to_string())
            .execute(self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Number of blobs and their total size.
    pub async fn totals(&self) -> Result<(i64, i64), sqlx::Error> {
        // PostgreSQL's SUM over BIGINT is NUMERIC, which the Any driver cannot decode: cast it back.
        let row = sqlx::query("SELECT CAST(COUNT(*) AS BIGINT), CAST(COALESCE(SUM(size), 0) AS BIGINT) FROM blobs")
            .fetch_one(self.pool)
            .await?;
        Ok((row.try_get(0)?, row.try_get(1)?))
    }
}

/// Holds a blob's row if nobody is deleting it, and marks it needed now
/// (never earlier than a claim's hold); its size, or `None` if it is gone or going.
pub(super) async fn touch_live(tx: &mut Transaction<'_, Any>, digest: &str) -> Result<Option<i64>, sqlx::Error> {
    let row = sqlx::query(
        "UPDATE blobs SET touched_at = CASE WHEN touched_at > $1 THEN touched_at ELSE $1 END \
         WHERE digest = $2 AND deleting = 0 RETURNING size",
    )
    .bind(now())
    .bind(digest)
    .fetch_optional(&mut **tx)
    .await?;
    row.map(|r| r.try_get(0)).transpose()
}

/// [`touch_live`] for the end of an upload: its claim is over, and unless
/// another upload of the blob still holds one, so is the hold, and the blob
/// counts as touched now.
async fn end_claim<'e>(db: impl sqlx::Executor<'e, Database = Any>, digest: &str) -> Result<Option<i64>, sqlx::Error> {
    let row = sqlx::query(
        "UPDATE blobs SET touched_at = CASE WHEN claims > 1 AND touched_at > $1 THEN touched_at ELSE $1 END, \
         claims = CASE WHEN claims > 0 THEN claims - 1 ELSE 0 END \
         WHERE digest = $2 AND deleting = 0 RETURNING size",
    )
    .bind(now())
    .bind(digest)
    .fetch_optional(db)
    .await?;
    row.map(|r| r.try_get(0)).transpose()
}

/// True when the repository links the blob.
pub(super) async fn is_linked(
    tx: &mut Transaction<'_, Any>,
    repo: RepositoryId,
    digest: &str,
) -> Result<bool, sqlx::Error> {
    let row = sqlx::query("SELECT 1 FROM repository_blobs WHERE repository_id = $1 AND digest = $2")
        .bind(repo.0)
        .bind(digest)
        .fetch_optional(&mut **tx)
        .await?;
    Ok(row.is_some())
}

/// The namespace and tenant a repository's content counts against.
pub(super) async fn scope_of_repository(
    tx: &mut Transaction<'_, Any>,
    repo: RepositoryId,
) -> Result<Option<usage::Scope>, sqlx::Error> {
    let row = sqlx::query("SELECT name FROM repositories WHERE id = $1").bind(repo.0).fetch_optional(&mut **tx).await?;
    match row {
        Some(r) => usage::scope_of(tx, &r.try_get::<String, _>(0)?).await,
        None => Ok(None),
    }
}

fn decode(digest: Digest, row: &sqlx::any::AnyRow) -> Result<BlobRecord, sqlx::Error> {
    let size: i64 = row.try_get(0)?;
    let piece_size: i64 = row.try_get(1)?;
    let raw: Vec<u8> = row.try_get(2)?;
    let pieces = PieceDigests::from_bytes(piece_size as u64, &raw).ok_or_else(|| {
        sqlx::Error::Decode(format!("piece digests of {digest} are {} bytes, not a multiple of 32", raw.len()).into())
    })?;
    Ok(BlobRecord { digest, size: size as u64, pieces })
}

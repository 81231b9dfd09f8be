use damselfly_core::{Digest, PieceDigests};
use sqlx::{AnyPool, Row};

use super::{now, RepositoryId};

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

/// The `blobs` and `repository_blobs` tables.
pub struct Blobs<'a> {
    pub(super) pool: &'a AnyPool,
}

impl Blobs<'_> {
    /// Records a blob whose bytes are in the blob store, and links it to a
    /// repository, in one transaction. Recording the same blob again is a no-op.
    pub async fn insert_and_link(&self, repo: RepositoryId, blob: &BlobRecord) -> Result<(), sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO blobs (digest, size, piece_size, piece_digests, created_at) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (digest) DO NOTHING",
        )
        .bind(blob.digest.to_string())
        .bind(blob.size as i64)
        .bind(blob.pieces.piece_size() as i64)
        .bind(blob.pieces.to_bytes())
        .bind(now())
        .execute(&mut *tx)
        .await?;
        link(&mut tx, repo, &blob.digest).await?;
        tx.commit().await
    }

    /// Links an already stored blob to another repository (cross-repository mount).
    pub async fn link(&self, repo: RepositoryId, digest: &Digest) -> Result<(), sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        link(&mut tx, repo, digest).await?;
        tx.commit().await
    }

    /// Removes a blob from a repository. The bytes stay while other repositories link them.
    pub async fn unlink(&self, repo: RepositoryId, digest: &Digest) -> Result<bool, sqlx::Error> {
        let done = sqlx::query("DELETE FROM repository_blobs WHERE repository_id = $1 AND digest = $2")
            .bind(repo.0)
            .bind(digest.to_string())
            .execute(self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
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

    /// The blob, whichever repository holds it.
    pub async fn find(&self, digest: &Digest) -> Result<Option<BlobRecord>, sqlx::Error> {
        let row = sqlx::query("SELECT size, piece_size, piece_digests FROM blobs WHERE digest = $1")
            .bind(digest.to_string())
            .fetch_optional(self.pool)
            .await?;
        row.map(|r| decode(*digest, &r)).transpose()
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

async fn link(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    repo: RepositoryId,
    digest: &Digest,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO repository_blobs (repository_id, digest, created_at) VALUES ($1, $2, $3) \
         ON CONFLICT (repository_id, digest) DO NOTHING",
    )
    .bind(repo.0)
    .bind(digest.to_string())
    .bind(now())
    .execute(&mut **tx)
    .await?;
    Ok(())
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

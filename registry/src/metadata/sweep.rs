//! The garbage collector's writes to `blobs` and `repository_blobs`: each a
//! decision re-checked while holding the blob's row, so that it holds
//! against any concurrent commit (the argument is in `services::gc`).

use std::collections::BTreeMap;
use std::future::Future;

use damselfly_core::Digest;
use sqlx::{AnyPool, Row};

use super::usage::{self, Delta, Scope};
use super::{deletions, RepositoryId};

/// A blob the sweep looks at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlobCandidate {
    /// Its digest.
    pub digest: Digest,
    /// Its size in bytes.
    pub size: u64,
    /// Repositories that link it without any of their manifests referencing it.
    pub unreferenced_links: u64,
    /// No manifest anywhere references it: the whole blob goes.
    pub unreferenced: bool,
}

/// What the sweep did with a candidate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlobVerdict {
    /// Something needed it since it was picked (or it is gone already): left alone.
    Kept,
    /// Links that nothing in their repository references were removed; the blob stays for the others.
    LinksRemoved(u64),
    /// Marked for deletion with this many links removed: nothing can reference it any more.
    Marked(u64),
}

/// What finishing a marked blob's deletion did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Finished {
    /// Bytes and row deleted: this many bytes freed.
    Deleted(u64),
    /// A commit took the blob back before its bytes went: nothing deleted.
    Revived,
}

/// The sweep's statements.
pub struct Sweep<'a> {
    pub(super) pool: &'a AnyPool,
}

fn digest(r: &sqlx::any::AnyRow) -> Result<Digest, sqlx::Error> {
    r.try_get::<String, _>(0)?.parse().map_err(|e| sqlx::Error::Decode(Box::new(e)))
}

impl Sweep<'_> {
    /// Up to `limit` blobs after `after` (by digest) untouched since
    /// `cutoff` that no manifest references, or that some repository links
    /// without referencing: what the sweep looks at.
    pub async fn candidates(
        &self,
        after: Option<&Digest>,
        cutoff: i64,
        limit: i64,
    ) -> Result<Vec<BlobCandidate>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT b.digest, b.size, \
               (SELECT CAST(COUNT(*) AS BIGINT) FROM repository_blobs rb WHERE rb.digest = b.digest AND NOT EXISTS ( \
                  SELECT 1 FROM manifest_references r WHERE r.repository_id = rb.repository_id \
                  AND r.target_digest = b.digest AND r.target_kind = 'blob')), \
               CAST(CASE WHEN EXISTS (SELECT 1 FROM manifest_references r WHERE r.target_digest = b.digest \
                  AND r.target_kind = 'blob') THEN 0 ELSE 1 END AS BIGINT) \
             FROM blobs b WHERE b.digest > $1 AND b.deleting = 0 AND b.touched_at < $2 AND ( \
               NOT EXISTS (SELECT 1 FROM manifest_references r WHERE r.target_digest = b.digest AND r.target_kind = 'blob') \
               OR EXISTS (SELECT 1 FROM repository_blobs rb WHERE rb.digest = b.digest AND NOT EXISTS ( \
                  SELECT 1 FROM manifest_references r WHERE r.repository_id = rb.repository_id \
                  AND r.target_digest = b.digest AND r.target_kind = 'blob'))) \
             ORDER BY b.digest LIMIT $3",
        )
        .bind(after.map(Digest::to_string).unwrap_or_default())
        .bind(cutoff)
        .bind(limit)
        .fetch_all(self.pool)
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            let size: i64 = r.try_get(1)?;
            let links: i64 = r.try_get(2)?;
            let unreferenced = r.try_get::<i64, _>(3)? != 0;
            out.push(BlobCandidate {
                digest: digest(r)?,
                size: size as u64,
                unreferenced_links: links as u64,
                unreferenced,
            });
        }
        Ok(out)
    }

    /// Up to `limit` blobs after `after` that a run marked for deletion and
    /// did not finish (it was stopped, or deleting the bytes failed).
    pub async fn pending(&self, after: Option<&Digest>, limit: i64) -> Result<Vec<Digest>, sqlx::Error> {
        let rows = sqlx::query("SELECT digest FROM blobs WHERE deleting = 1 AND digest > $1 ORDER BY digest LIMIT $2")
            .bind(after.map(Digest::to_string).unwrap_or_default())
            .bind(limit)
            .fetch_all(self.pool)
            .await?;
        rows.iter().map(digest).collect()
    }

    /// Decides a candidate for good, holding its row: if it is still
    /// untouched since `cutoff` and not being deleted, removes the links of
    /// repositories none of whose manifests reference it (freeing their
    /// share of the quotas, and telling tenants it left), and, when no
    /// manifest at all references it, marks it for deletion. `pause` runs
    /// just before the commit (a test hook; `std::future::ready(())` otherwise).
    pub async fn collect(
        &self,
        blob: &Digest,
        cutoff: i64,
        pause: impl Future<Output = ()>,
    ) -> Result<BlobVerdict, sqlx::Error> {
        let digest = blob.to_string();
        let mut tx = super::begin_write(self.pool).await?;
        // The row, held: every commit that needs the blob takes it first and
        // touches it, so either it went before (touched_at is recent now and
        // nothing happens) or it waits for this decision (and then finds the
        // blob marked, or its link gone).
        let size = sqlx::query(
            "UPDATE blobs SET touched_at = touched_at WHERE digest = $1 AND deleting = 0 AND touched_at < $2 RETURNING size",
        )
        .bind(&digest)
        .bind(cutoff)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(size) = size.map(|r| r.try_get::<i64, _>(0)).transpose()? else {
            return Ok(BlobVerdict::Kept);
        };
        // Read after the row is held, so every commit that referenced it before is seen.
        let links = sqlx::query(
            "SELECT rb.repository_id, r.name FROM repository_blobs rb JOIN repositories r ON r.id = rb.repository_id \
             WHERE rb.digest = $1",
        )
        .bind(&digest)
        .fetch_all(&mut *tx)
        .await?;
        let referencing: Vec<i64> = sqlx::query(
            "SELECT DISTINCT repository_id FROM manifest_references WHERE target_digest = $1 AND target_kind = 'blob'",
        )
        .bind(&digest)
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(|r| r.try_get(0))
        .collect::<Result<_, _>>()?;
        let mut unreferenced: Vec<(RepositoryId, String)> = Vec::new();
        for l in &links {
            let repo: i64 = l.try_get(0)?;
            if !referencing.contains(&repo) {
                unreferenced.push((RepositoryId(repo), l.try_get(1)?));
            }
        }
        let mark = referencing.is_empty();
        if unreferenced.is_empty() && !mark {
            tx.commit().await?;
            return Ok(BlobVerdict::Kept);
        }
        let mut scopes: Vec<Scope> = Vec::new();
        let mut scope_of_link: Vec<Option<i64>> = Vec::with_capacity(unreferenced.len());
        for (_, name) in &unreferenced {
            let scope = usage::scope_of(&mut tx, name).await?;
            scope_of_link.push(scope.as_ref().map(|s| s.namespace.0));
            if let Some(s) = scope {
                scopes.push(s);
            }
        }
        let mut held = usage::hold(&mut tx, scopes).await?;
        for (repo, _) in &unreferenced {
            sqlx::query("DELETE FROM repository_blobs WHERE repository_id = $1 AND digest = $2")
                .bind(repo.0)
                .bind(&digest)
                .execute(&mut *tx)
                .await?;
        }
        let mut deltas: BTreeMap<i64, Delta> = BTreeMap::new();
        for ((repo, _), ns) in unreferenced.iter().zip(&scope_of_link) {
            if let Some(ns) = ns {
                let empty = usage::repository_is_empty(&mut tx, *repo).await?;
                deltas.entry(*ns).or_default().repositories -= i64::from(empty);
            }
        }
        for h in held.iter_mut() {
            let mut delta = deltas.get(&h.scope.namespace.0).copied().unwrap_or_default();
            if !usage::linked_in_namespace(&mut tx, &digest, &h.scope.namespace_name, None).await? {
                delta.bytes = -size;
            }
            let _ = usage::apply(&mut tx, h, delta).await?;
        }
        if mark {
            sqlx::query("UPDATE blobs SET deleting = 1, claims = 0 WHERE digest = $1")
                .bind(&digest)
                .execute(&mut *tx)
                .await?;
        }
        let tenants: Vec<_> = held.iter().map(|h| h.scope.tenant).collect();
        deletions::record_departures(&mut tx, &digest, &tenants).await?;
        pause.await;
        tx.commit().await?;
        let removed = unreferenced.len() as u64;
        Ok(if mark { BlobVerdict::Marked(removed) } else { BlobVerdict::LinksRemoved(removed) })
    }

    /// Finishes the deletion of marked blobs together, holding their rows in
    /// one transaction: takes each row still marked, in digest order as every
    /// writer takes rows; runs `delete_bytes` on those (it answers for each,
    /// in order); then `pause` (a test hook); then deletes the rows whose
    /// bytes went, and commits. A blob whose bytes could not be deleted keeps
    /// its row, marked, for a later run; a blob a commit took back meanwhile
    /// is left alone. If the process dies before the commit, every row is
    /// still marked and a later run deletes the bytes again and the rows.
    pub async fn finish<D, DF, P, PF>(
        &self,
        blobs: &[Digest],
        delete_bytes: D,
        pause: P,
    ) -> Result<Vec<(Digest, Result<Finished, String>)>, sqlx::Error>
    where
        D: FnOnce(Vec<Digest>) -> DF,
        DF: Future<Output = Vec<Result<(), String>>>,
        P: FnOnce(Vec<Digest>) -> PF,
        PF: Future<Output = ()>,
    {
        let mut blobs = blobs.to_vec();
        blobs.sort();
        blobs.dedup();
        let mut out = Vec::with_capacity(blobs.len());
        let mut held: Vec<(Digest, i64)> = Vec::with_capacity(blobs.len());
        let mut tx = super::begin_write(self.pool).await?;
        for blob in blobs {
            let size = sqlx::query(
                "UPDATE blobs SET touched_at = touched_at WHERE digest = $1 AND deleting = 1 RETURNING size",
            )
            .bind(blob.to_string())
            .fetch_optional(&mut *tx)
            .await?;
            match size.map(|r| r.try_get::<i64, _>(0)).transpose()? {
                Some(size) => held.push((blob, size)),
                None => out.push((blob, Ok(Finished::Revived))),
            }
        }
        if held.is_empty() {
            tx.commit().await?;
            return Ok(out);
        }
        let digests: Vec<Digest> = held.iter().map(|(d, _)| *d).collect();
        let mut deleted = delete_bytes(digests.clone()).await;
        // An answer missing for a blob counts as a failure: its row stays marked.
        deleted.resize_with(held.len(), || Err("the blob store gave no answer for this blob".to_owned()));
        pause(digests).await;
        for ((blob, size), outcome) in held.into_iter().zip(deleted) {
            if let Err(e) = outcome {
                out.push((blob, Err(e)));
                continue;
            }
            sqlx::query("DELETE FROM blobs WHERE digest = $1 AND deleting = 1")
                .bind(blob.to_string())
                .execute(&mut *tx)
                .await?;
            out.push((blob, Ok(Finished::Deleted(size as u64))));
        }
        tx.commit().await?;
        Ok(out)
    }
}

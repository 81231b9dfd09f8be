//! Content-addressed blobs on the local filesystem.
//!
//! Layout under the data directory:
//! `blobs/sha256/<2 hex>/<64 hex>` for committed blobs, `uploads/<id>` for
//! upload sessions and `tmp/` for single-request uploads. Bytes reach
//! `blobs/` only by a rename after their digest has been verified, so a
//! failed, truncated or lying upload never leaves a blob behind.

use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use damselfly_core::{BlobHasher, Digest};
use futures_util::{Stream, StreamExt};
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio_util::io::ReaderStream;

use super::{BlobStream, OrphanSweep, StoreError};

/// Bytes gathered before one write and hash step.
const WRITE_CHUNK: usize = 1024 * 1024;
/// Read size when streaming a blob out.
const READ_CHUNK: usize = 256 * 1024;

/// Blob files, upload sessions and temporary files.
#[derive(Clone, Debug)]
pub struct FilesystemStore {
    root: PathBuf,
    piece_size: u64,
}

impl FilesystemStore {
    /// Opens (creating) the store under `root` and clears leftovers of interrupted single-request uploads.
    pub async fn open(root: &Path, piece_size: u64) -> std::io::Result<FilesystemStore> {
        for dir in ["blobs/sha256", "uploads", "tmp"] {
            tokio::fs::create_dir_all(root.join(dir)).await?;
        }
        let tmp = root.join("tmp");
        let mut entries = tokio::fs::read_dir(&tmp).await?;
        while let Some(e) = entries.next_entry().await? {
            let _ = tokio::fs::remove_file(e.path()).await;
        }
        Ok(FilesystemStore { root: root.to_owned(), piece_size })
    }

    /// A fresh hasher with the store's piece size.
    pub fn hasher(&self) -> BlobHasher {
        BlobHasher::new(self.piece_size)
    }

    /// Where a committed blob lives.
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        let hex = digest.hex();
        self.root.join("blobs/sha256").join(&hex[..2]).join(hex)
    }

    /// `len` bytes of a committed blob from `start`; `None` if its file is missing.
    pub async fn read(&self, digest: &Digest, start: u64, len: u64) -> std::io::Result<Option<BlobStream>> {
        let mut file = match tokio::fs::File::open(self.blob_path(digest)).await {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        if start > 0 {
            file.seek(SeekFrom::Start(start)).await?;
        }
        Ok(Some(ReaderStream::with_capacity(file.take(len), READ_CHUNK).boxed()))
    }

    /// Checks the data directory takes writes, for `/readyz`.
    pub async fn probe(&self) -> Result<(), String> {
        let probe = self.root.join("tmp").join(".ready-probe");
        tokio::fs::write(&probe, b"ok")
            .await
            .map_err(|e| format!("blob store not writable at {}: {e}", probe.display()))
    }

    /// True when the blob's bytes are present.
    pub async fn contains(&self, digest: &Digest) -> bool {
        tokio::fs::metadata(self.blob_path(digest)).await.is_ok()
    }

    /// Deletes a committed blob's file; a missing file is not an error.
    pub async fn delete_blob(&self, digest: &Digest) -> std::io::Result<()> {
        match tokio::fs::remove_file(self.blob_path(digest)).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    fn upload_path(&self, id: &str) -> PathBuf {
        self.root.join("uploads").join(id)
    }

    /// Creates the empty file of a new upload session.
    pub async fn create_upload(&self, id: &str) -> std::io::Result<()> {
        tokio::fs::File::create(self.upload_path(id)).await.map(|_| ())
    }

    /// When an upload session last received bytes; `None` if its file is gone.
    pub async fn upload_modified(&self, id: &str) -> Option<std::time::SystemTime> {
        tokio::fs::metadata(self.upload_path(id)).await.ok()?.modified().ok()
    }

    /// Deletes an upload session's bytes.
    pub async fn remove_upload(&self, id: &str) {
        let _ = tokio::fs::remove_file(self.upload_path(id)).await;
    }

    /// Re-reads the first `length` bytes of an upload session, the bytes the
    /// database recorded, to rebuild its hasher after a restart or when
    /// another replica took the earlier chunks. Bytes past `length` are the
    /// part of a chunk a crash cut short: never acknowledged, they are not
    /// counted, and the next append writes over them. `None` if the file is
    /// gone or holds less than was recorded.
    pub async fn rehash_upload(&self, id: &str, length: u64) -> std::io::Result<Option<BlobHasher>> {
        let path = self.upload_path(id);
        let mut hasher = self.hasher();
        tokio::task::spawn_blocking(move || {
            let file = match std::fs::File::open(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(e),
            };
            let mut recorded = std::io::Read::take(file, length);
            let mut buf = vec![0u8; WRITE_CHUNK];
            loop {
                let n = std::io::Read::read(&mut recorded, &mut buf)?;
                if n == 0 {
                    return Ok((hasher.len() == length).then_some(hasher));
                }
                hasher.update(&buf[..n]);
            }
        })
        .await
        .map_err(std::io::Error::other)?
    }

    /// Deletes the files in `uploads/` that no session owns (`live` says
    /// which do) and that took no bytes for `older_than`: what a crash
    /// leaves between creating a session's file and recording the session,
    /// or between forgetting a session and deleting its file.
    pub async fn sweep_orphans<L, F>(&self, older_than: Duration, mut live: L) -> Result<OrphanSweep, String>
    where
        L: FnMut(String) -> F,
        F: std::future::Future<Output = bool>,
    {
        let dir = self.root.join("uploads");
        let explain = |e: std::io::Error| format!("cannot list upload sessions in {}: {e}", dir.display());
        let mut sweep = OrphanSweep::default();
        let mut entries = tokio::fs::read_dir(&dir).await.map_err(explain)?;
        while let Some(entry) = entries.next_entry().await.map_err(explain)? {
            let idle = entry
                .metadata()
                .await
                .ok()
                .and_then(|m| m.modified().ok())
                .and_then(|m| SystemTime::now().duration_since(m).ok());
            if idle.is_none_or(|idle| idle < older_than) {
                continue;
            }
            let id = entry.file_name().to_string_lossy().into_owned();
            if live(id).await {
                continue;
            }
            if tokio::fs::remove_file(entry.path()).await.is_ok() {
                sweep.deleted += 1;
            }
        }
        Ok(sweep)
    }

    /// Appends a body to an upload session at `hasher.len()`, the length the
    /// session has acknowledged. The hasher advances only if the whole body
    /// was written (and, if `expected_len` is given, was exactly that long);
    /// otherwise the file is cut back to where it was.
    pub async fn append_upload<S, E>(
        &self,
        id: &str,
        hasher: &mut BlobHasher,
        body: S,
        expected_len: Option<u64>,
    ) -> Result<(), StoreError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let path = self.upload_path(id);
        let start = hasher.len();
        let file = std::fs::OpenOptions::new().write(true).open(&path)?;
        let mut rollback = Rollback { path, on_drop: Some(Undo::Truncate(start)) };
        let mut next = hasher.clone();
        write_stream(file, start, &mut next, body).await?;
        let got = next.len() - start;
        if let Some(expected) = expected_len.filter(|e| *e != got) {
            return Err(StoreError::Size { expected, got });
        }
        rollback.on_drop = None;
        *hasher = next;
        Ok(())
    }

    /// Moves a verified upload into place as the blob `digest`.
    pub async fn commit_upload(&self, id: &str, digest: &Digest) -> std::io::Result<()> {
        self.commit_file(&self.upload_path(id), digest).await
    }

    /// Streams a whole blob from one request into a temporary file, and
    /// moves it into place only if it hashes to `digest` and `claim` then
    /// succeeds; otherwise, or if the request fails, the file is deleted.
    pub async fn write_blob<S, E, C, F>(&self, digest: &Digest, body: S, claim: C) -> Result<BlobHasher, StoreError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
        C: FnOnce(&BlobHasher) -> F,
        F: std::future::Future<Output = Result<(), StoreError>>,
    {
        let path = self.root.join("tmp").join(uuid::Uuid::new_v4().simple().to_string());
        let file = std::fs::OpenOptions::new().write(true).create_new(true).open(&path)?;
        let mut guard = Rollback { path, on_drop: Some(Undo::Remove) };
        let mut hasher = self.hasher();
        write_stream(file, 0, &mut hasher, body).await?;
        let actual = hasher.clone().finish().0;
        if actual != *digest {
            return Err(StoreError::Mismatch { actual });
        }
        claim(&hasher).await?;
        self.commit_file(&guard.path, digest).await?;
        guard.on_drop = None;
        Ok(hasher)
    }

    async fn commit_file(&self, from: &Path, digest: &Digest) -> std::io::Result<()> {
        let to = self.blob_path(digest);
        if tokio::fs::metadata(&to).await.is_ok() {
            // Same digest, same bytes: keep the stored copy untouched.
            return tokio::fs::remove_file(from).await;
        }
        if let Some(parent) = to.parent() {
            tokio::fs::create_dir_all(parent).await?;
        }
        tokio::fs::rename(from, &to).await
    }
}

enum Undo {
    Truncate(u64),
    Remove,
}

/// Undoes a partial write when the request fails or its future is dropped
/// (the client disconnected). Runs synchronously in `Drop`, so nothing is
/// left half-written even when no code after the failure point runs.
struct Rollback {
    path: PathBuf,
    on_drop: Option<Undo>,
}

impl Drop for Rollback {
    fn drop(&mut self) {
        match self.on_drop {
            Some(Undo::Truncate(len)) => {
                let _ = std::fs::OpenOptions::new().write(true).open(&self.path).and_then(|f| f.set_len(len));
            }
            Some(Undo::Remove) => {
                let _ = std::fs::remove_file(&self.path);
            }
            None => {}
        }
    }
}

/// Writes the body at `start`, hashing as it goes, in 1 MiB steps. The
/// disk write and hash run with `block_in_place`, so when the request future
/// is dropped no write is still in flight behind the rollback.
async fn write_stream<S, E>(
    mut file: std::fs::File,
    start: u64,
    hasher: &mut BlobHasher,
    mut body: S,
) -> Result<(), StoreError>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    file.set_len(start)?;
    file.seek(SeekFrom::Start(start))?;
    let mut buf: Vec<u8> = Vec::with_capacity(WRITE_CHUNK);
    let mut flush = |buf: &mut Vec<u8>, hasher: &mut BlobHasher| -> std::io::Result<()> {
        tokio::task::block_in_place(|| {
            hasher.update(buf);
            file.write_all(buf)
        })?;
        buf.clear();
        Ok(())
    };
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| StoreError::Body(e.to_string()))?;
        if buf.len() + chunk.len() > WRITE_CHUNK && !buf.is_empty() {
            flush(&mut buf, hasher)?;
        }
        if chunk.len() >= WRITE_CHUNK {
            buf.extend_from_slice(&chunk);
            flush(&mut buf, hasher)?;
        } else {
            buf.extend_from_slice(&chunk);
        }
    }
    if !buf.is_empty() {
        flush(&mut buf, hasher)?;
    }
    Ok(())
}

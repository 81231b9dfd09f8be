//! Blob bytes: content-addressed, in one of two stores chosen by
//! configuration (`[storage]`): files under the data directory, or an
//! S3-compatible bucket that any number of registry replicas share.
//!
//! Both keep the same promises. A blob is readable under its digest only
//! after its bytes were hashed and matched the digest the client named; a
//! failed, lying or cut-off upload leaves nothing readable behind. An upload
//! session survives a restart, and with S3 continues on any replica: what it
//! holds is described by [`Upload`], which the metadata database keeps
//! between requests.

mod config;
mod filesystem;
mod s3;

use std::path::Path;

use bytes::Bytes;
use damselfly_core::{BlobHasher, Digest};
use futures_util::stream::BoxStream;
use futures_util::{Stream, StreamExt};

pub use config::{StorageBackend, StorageConfig};
pub use filesystem::FilesystemStore;
pub use s3::{OrphanSweep, S3Store};

/// A blob's bytes as they are read from the store.
pub type BlobStream = BoxStream<'static, std::io::Result<Bytes>>;

/// Why a blob store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The client's body ended early or the connection broke. Nothing from the request is kept.
    #[error("request body could not be read: {0}")]
    Body(String),
    /// The body's length differs from what `Content-Range` announced. Nothing from the request is kept.
    #[error("expected {expected} bytes, got {got}")]
    Size {
        /// Announced length.
        expected: u64,
        /// Bytes actually received.
        got: u64,
    },
    /// The bytes hash to another digest than the one named. Nothing was stored.
    #[error("the content has digest {actual}")]
    Mismatch {
        /// What the bytes hash to.
        actual: Digest,
    },
    /// The upload outgrew what the store accepts in one object.
    #[error("{0}")]
    TooLarge(String),
    /// A local disk operation failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// Object storage failed or is unreachable; the message says what an operator should check.
    #[error("{0}")]
    Unavailable(String),
    /// Recording the blob in the metadata database failed. Nothing was stored.
    #[error("metadata database error: {0}")]
    Database(#[from] sqlx::Error),
    /// Storing the blob would take a quota past its limit. Nothing was stored.
    #[error("quota exceeded")]
    Quota(crate::metadata::QuotaExceeded),
    /// Garbage collection deleted the blob's bytes while the upload was
    /// completing (they were found, then gone). Nothing was stored; the
    /// upload can be sent again.
    #[error("the blob was collected while the upload completed")]
    Collected,
}

/// Where blob bytes live.
#[derive(Clone)]
pub enum BlobStore {
    /// Files under the data directory.
    Filesystem(FilesystemStore),
    /// An S3-compatible bucket.
    S3(S3Store),
}

/// Why the blob store could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The data directory could not be prepared.
    #[error("cannot use data directory {path}: {source}; check that it is writable or pass --data-dir")]
    DataDir {
        /// The directory.
        path: std::path::PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The object store settings are unusable, or the bucket cannot be reached.
    #[error("{0}")]
    S3(String),
}

/// An upload session as this process holds it while a request appends to it.
#[derive(Clone)]
pub struct Upload {
    /// The session id.
    pub id: String,
    /// The hash of every byte the session has acknowledged.
    pub hasher: BlobHasher,
    /// Where those bytes are, beyond the filesystem's session file.
    parts: Option<s3::Session>,
}

impl Upload {
    /// Bytes the session has acknowledged.
    pub fn len(&self) -> u64 {
        self.hasher.len()
    }

    /// True before the first byte.
    pub fn is_empty(&self) -> bool {
        self.hasher.is_empty()
    }

    /// What the database keeps of the session between requests; `None` on the
    /// filesystem, where the session file is the state.
    pub fn saved(&self) -> Option<String> {
        self.parts.as_ref().map(|p| p.save(&self.hasher))
    }
}

impl BlobStore {
    /// Opens the configured store; for S3, checks the bucket answers.
    pub async fn open(config: &StorageConfig, data_dir: &Path, piece_size: u64) -> Result<BlobStore, OpenError> {
        match config.backend {
            StorageBackend::Filesystem => {
                let data_error = |source| OpenError::DataDir { path: data_dir.to_owned(), source };
                tokio::fs::create_dir_all(data_dir).await.map_err(data_error)?;
                Ok(BlobStore::Filesystem(FilesystemStore::open(data_dir, piece_size).await.map_err(data_error)?))
            }
            StorageBackend::S3 => Ok(BlobStore::S3(S3Store::open(config, piece_size).await.map_err(OpenError::S3)?)),
        }
    }

    /// Where the bytes are, for the startup log.
    pub fn describe(&self, data_dir: &Path) -> String {
        match self {
            BlobStore::Filesystem(_) => format!("filesystem {}", data_dir.display()),
            BlobStore::S3(s) => s.describe(),
        }
    }

    /// True when the blob's bytes are present.
    pub async fn contains(&self, digest: &Digest) -> Result<bool, StoreError> {
        match self {
            BlobStore::Filesystem(f) => Ok(f.contains(digest).await),
            BlobStore::S3(s) => s.contains(digest).await,
        }
    }

    /// `len` bytes of a blob from `start`, streamed; `None` if the store lacks the blob.
    pub async fn read(&self, digest: &Digest, start: u64, len: u64) -> Result<Option<BlobStream>, StoreError> {
        match self {
            BlobStore::Filesystem(f) => Ok(f.read(digest, start, len).await?),
            BlobStore::S3(s) => s.read(digest, start, len).await,
        }
    }

    /// Deletes blobs' bytes, with at most `concurrency` requests to the store
    /// in flight (files removed at once; S3 DeleteObjects requests, each with
    /// an equal share of the keys); the outcome of each, in order. Deleting
    /// bytes that are not there succeeds. Only the garbage collector calls
    /// this, holding the blobs' rows marked for deletion (see `services::gc`).
    pub async fn delete_blobs(&self, digests: &[Digest], concurrency: usize) -> Vec<Result<(), StoreError>> {
        match self {
            BlobStore::Filesystem(f) => {
                futures_util::stream::iter(digests.iter().copied())
                    .map(|d| async move { f.delete_blob(&d).await.map_err(StoreError::Io) })
                    .buffered(concurrency.max(1))
                    .collect()
                    .await
            }
            BlobStore::S3(s) => s.delete_blobs(digests, concurrency).await,
        }
    }

    /// A presigned URL a client may fetch the blob from directly, when the
    /// store is configured to hand those out.
    pub async fn redirect_url(&self, digest: &Digest) -> Result<Option<String>, StoreError> {
        match self {
            BlobStore::Filesystem(_) => Ok(None),
            BlobStore::S3(s) => s.redirect_url(digest).await,
        }
    }

    /// Checks the store takes writes (filesystem) or answers (S3), for `/readyz`.
    pub async fn probe(&self) -> Result<(), String> {
        match self {
            BlobStore::Filesystem(f) => f.probe().await,
            BlobStore::S3(s) => s.probe().await,
        }
    }

    /// Stores a whole blob sent in one request, under `digest`, if the bytes
    /// hash to it; returns their hasher. Once they are verified and before
    /// they become visible under the digest, `claim` runs (it records the
    /// blob, see `services::gc`); if it fails, nothing is stored. On any
    /// failure nothing is stored.
    pub async fn write_blob<S, E, C, F>(&self, digest: &Digest, body: S, claim: C) -> Result<BlobHasher, StoreError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin + Send,
        E: std::fmt::Display,
        C: FnOnce(&BlobHasher) -> F + Send,
        F: std::future::Future<Output = Result<(), StoreError>> + Send,
    {
        match self {
            BlobStore::Filesystem(f) => f.write_blob(digest, body, claim).await,
            BlobStore::S3(s) => s.write_blob(digest, body, claim).await,
        }
    }

    /// Starts an upload session's storage; the caller records [`Upload::saved`].
    pub async fn create_upload(&self, id: &str) -> Result<Upload, StoreError> {
        match self {
            BlobStore::Filesystem(f) => {
                f.create_upload(id).await?;
                Ok(Upload { id: id.to_owned(), hasher: f.hasher(), parts: None })
            }
            BlobStore::S3(s) => s.create_upload(id).await,
        }
    }

    /// The session as the database last saved it (`saved`, from [`Upload::saved`],
    /// and `length`, the bytes it acknowledged); `None` if its storage is gone.
    pub async fn load_upload(&self, id: &str, saved: Option<&str>, length: u64) -> Result<Option<Upload>, StoreError> {
        match self {
            BlobStore::Filesystem(f) => {
                let hasher = f.rehash_upload(id, length).await?;
                Ok(hasher.map(|hasher| Upload { id: id.to_owned(), hasher, parts: None }))
            }
            BlobStore::S3(s) => s.load_upload(id, saved),
        }
    }

    /// Appends a request body to a session. On success `upload` holds the new
    /// state, which the caller saves; on failure it is unchanged and nothing
    /// of the body is kept. `next_part` hands out part numbers no other
    /// request on the session will use (S3 only).
    pub async fn append_upload<S, E, N, F>(
        &self,
        upload: &mut Upload,
        body: S,
        expected_len: Option<u64>,
        next_part: N,
    ) -> Result<AppendDone, StoreError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin + Send,
        E: std::fmt::Display,
        N: FnMut() -> F + Send,
        F: std::future::Future<Output = Result<u32, StoreError>> + Send,
    {
        match self {
            BlobStore::Filesystem(f) => {
                f.append_upload(&upload.id, &mut upload.hasher, body, expected_len).await?;
                Ok(AppendDone::default())
            }
            BlobStore::S3(s) => s.append_upload(upload, body, expected_len, next_part).await,
        }
    }

    /// Moves a verified session into place as the blob `digest`, and frees its storage.
    pub async fn commit_upload<N, F>(&self, upload: Upload, digest: &Digest, next_part: N) -> Result<(), StoreError>
    where
        N: FnMut() -> F + Send,
        F: std::future::Future<Output = Result<u32, StoreError>> + Send,
    {
        match self {
            BlobStore::Filesystem(f) => Ok(f.commit_upload(&upload.id, digest).await?),
            BlobStore::S3(s) => s.commit_upload(upload, digest, next_part).await,
        }
    }

    /// Frees everything a session stored. `saved` is its last saved state, if known.
    pub async fn remove_upload(&self, id: &str, saved: Option<&str>) {
        match self {
            BlobStore::Filesystem(f) => f.remove_upload(id).await,
            BlobStore::S3(s) => s.remove_upload(id, saved).await,
        }
    }

    /// When a filesystem session last received bytes; `None` for S3, whose
    /// sessions' activity the database records.
    pub async fn upload_modified(&self, id: &str) -> Option<std::time::SystemTime> {
        match self {
            BlobStore::Filesystem(f) => f.upload_modified(id).await,
            BlobStore::S3(_) => None,
        }
    }
}

/// What an append leaves for the caller to clean once the new state is saved.
#[derive(Debug, Default)]
pub struct AppendDone {
    /// An object the previous state named and the new one does not.
    superseded: Option<String>,
    /// An object the append wrote, which only the new state names.
    written: Option<String>,
}

impl BlobStore {
    /// Deletes what the state before an append held and the saved state no
    /// longer names. Call it only after the new state was saved.
    pub async fn release(&self, done: AppendDone) {
        if let (BlobStore::S3(s), Some(key)) = (self, done.superseded) {
            s.delete_key(&key).await;
        }
    }

    /// Undoes an append whose new state could not be saved (another request
    /// moved the session on first): deletes what only the new state named.
    pub async fn abandon(&self, done: AppendDone) {
        if let (BlobStore::S3(s), Some(key)) = (self, done.written) {
            s.delete_key(&key).await;
        }
    }
}

impl From<StoreError> for crate::error::RegistryError {
    /// The client's share of a storage failure: its own mistakes with their
    /// OCI codes; the store's with `503`, the operator's detail in the log.
    fn from(e: StoreError) -> Self {
        use crate::error::RegistryError;
        use damselfly_core::ErrorCode;
        match e {
            StoreError::Body(reason) => RegistryError::oci(
                ErrorCode::BlobUploadInvalid,
                format!("the upload body was cut short ({reason}); nothing was kept from this request, resend it"),
            ),
            StoreError::Size { expected, got } => RegistryError::oci(
                ErrorCode::SizeInvalid,
                format!("Content-Range announced {expected} bytes but the body had {got}; nothing was kept from this request"),
            ),
            StoreError::Mismatch { actual } => crate::error::oci::digest_invalid(format!(
                "the uploaded content has digest {actual}, not the one named; nothing was stored"
            )),
            StoreError::TooLarge(message) => RegistryError::oci(ErrorCode::SizeInvalid, message),
            StoreError::Io(e) => RegistryError::Io(e),
            StoreError::Database(e) => RegistryError::Database(e),
            StoreError::Quota(q) => RegistryError::oci(ErrorCode::Denied, q.refusal("blob")),
            StoreError::Collected => RegistryError::oci(
                ErrorCode::BlobUploadInvalid,
                "the registry's garbage collection deleted this blob while the upload completed; nothing was stored, upload it again",
            )
            .with_status(axum::http::StatusCode::SERVICE_UNAVAILABLE),
            StoreError::Unavailable(detail) => {
                tracing::error!(error = %detail, "blob storage failed");
                RegistryError::oci(
                    ErrorCode::InternalError,
                    "the registry's blob storage is unavailable; nothing was stored by this request, retry in a moment",
                )
                .with_status(axum::http::StatusCode::SERVICE_UNAVAILABLE)
            }
        }
    }
}

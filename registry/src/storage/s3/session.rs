//! Upload sessions in the bucket, resumable on any replica.
//!
//! A session owns one multipart upload, started with the session, whose
//! object is `uploads/<session>/data`. Acknowledged bytes are either in its
//! parts (each exactly `part_size` bytes, in byte order) or in one small
//! tail object holding the bytes after the last part. A request that
//! appends reads the tail back (less than a part), adds its body, sends
//! every full part and writes the remainder as a new tail. What the session
//! holds, with the hasher's state, is saved in the database as JSON; any
//! replica continues from it without reading the bytes again.
//!
//! Part numbers come from a counter in the database and are never reused,
//! so two requests racing on one session cannot overwrite each other's
//! parts; only the request whose state is saved first counts, and the
//! loser's parts are never named in the completion.

use std::time::{Duration, SystemTime};

use base64::Engine as _;
use bytes::{Bytes, BytesMut};
use damselfly_core::{BlobHasher, Digest};
use futures_util::{Stream, StreamExt, TryStreamExt};
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use serde::{Deserialize, Serialize};

use super::{cut_parts, too_large, Multipart, S3Store, MAX_PARTS};

/// Bytes copied by one part of a server-side copy.
const COPY_RANGE: u64 = 1024 * 1024 * 1024;
use crate::storage::{AppendDone, StoreError, Upload};

/// What the database keeps of an S3 upload session.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Session {
    /// Bytes per part, fixed for the session's life.
    part_size: u64,
    /// The multipart upload at `uploads/<session>/data`.
    upload_id: String,
    /// Parts holding the session's first bytes, in order: `(number, etag)`.
    parts: Vec<(u32, String)>,
    /// Full key of the object with the bytes after the last part, if any.
    tail: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct Saved {
    #[serde(flatten)]
    session: Session,
    /// [`BlobHasher::save`], base64.
    hash: String,
}

impl Session {
    pub(crate) fn save(&self, hasher: &BlobHasher) -> String {
        let hash = base64::engine::general_purpose::STANDARD.encode(hasher.save());
        serde_json::to_string(&Saved { session: self.clone(), hash }).expect("a session serializes")
    }

    fn tail_len(&self, total: u64) -> u64 {
        total - self.parts.len() as u64 * self.part_size
    }
}

impl S3Store {
    fn session_dir(&self, id: &str) -> String {
        format!("{}uploads/{id}/", self.inner.prefix)
    }

    fn data_path(&self, id: &str) -> Path {
        Path::from(format!("{}data", self.session_dir(id)))
    }

    /// Starts a session: its multipart upload, and an empty state.
    pub async fn create_upload(&self, id: &str) -> Result<Upload, StoreError> {
        let upload_id = self
            .inner
            .store
            .create_multipart(&self.data_path(id))
            .await
            .map_err(|e| self.unavailable("starting an upload session", &e))?;
        let session = Session { part_size: self.inner.part_size, upload_id, parts: Vec::new(), tail: None };
        Ok(Upload { id: id.to_owned(), hasher: BlobHasher::new(self.inner.piece_size), parts: Some(session) })
    }

    /// The session from its saved state; `None` if there is none or it does not parse.
    pub fn load_upload(&self, id: &str, saved: Option<&str>) -> Result<Option<Upload>, StoreError> {
        let Some(saved) = saved else {
            return Ok(None);
        };
        let decoded = serde_json::from_str::<Saved>(saved).ok().and_then(|s| {
            let raw = base64::engine::general_purpose::STANDARD.decode(&s.hash).ok()?;
            Some((s.session, BlobHasher::restore(&raw)?))
        });
        match decoded {
            Some((session, hasher)) => Ok(Some(Upload { id: id.to_owned(), hasher, parts: Some(session) })),
            None => {
                tracing::error!(upload = id, "the saved state of an upload session is unreadable; the session is lost");
                Ok(None)
            }
        }
    }

    /// Appends a body: see the module documentation.
    pub async fn append_upload<S, E, N, F>(
        &self,
        upload: &mut Upload,
        mut body: S,
        expected_len: Option<u64>,
        mut next_part: N,
    ) -> Result<AppendDone, StoreError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin + Send,
        E: std::fmt::Display,
        N: FnMut() -> F + Send,
        F: std::future::Future<Output = Result<u32, StoreError>> + Send,
    {
        let mut session = upload.parts.clone().expect("an S3 upload has a session");
        let mut hasher = upload.hasher.clone();
        let data = self.data_path(&upload.id);
        let part_size = session.part_size as usize;
        let mut buf = BytesMut::new();
        let mut tail_loaded = false;
        let mut received = 0u64;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| StoreError::Body(e.to_string()))?;
            if chunk.is_empty() {
                continue;
            }
            received += chunk.len() as u64;
            if let Some(expected) = expected_len.filter(|e| received > *e) {
                return Err(StoreError::Size { expected, got: received });
            }
            if !tail_loaded {
                // Only once bytes arrive: an empty PATCH costs no S3 call.
                if let Some(tail) = &session.tail {
                    let bytes = self.get_bytes(tail).await?;
                    if bytes.len() as u64 != session.tail_len(hasher.len()) {
                        return Err(StoreError::Unavailable(format!(
                            "upload {} lost bytes: its tail object {tail} holds {} bytes, the session says {}",
                            upload.id,
                            bytes.len(),
                            session.tail_len(hasher.len())
                        )));
                    }
                    buf.extend_from_slice(&bytes);
                }
                tail_loaded = true;
            }
            hasher.update(&chunk);
            for part in cut_parts(&mut buf, &chunk, part_size) {
                let number = next_part().await?;
                let etag = self.put_part(&data, &session.upload_id, number, part).await?;
                session.parts.push((number, etag));
            }
        }
        if let Some(expected) = expected_len.filter(|e| received != *e) {
            return Err(StoreError::Size { expected, got: received });
        }
        if received == 0 {
            return Ok(AppendDone::default());
        }
        let superseded = session.tail.take();
        let mut written = None;
        if !buf.is_empty() {
            let key = format!("{}tail-{}", self.session_dir(&upload.id), uuid::Uuid::new_v4().simple());
            self.inner
                .store
                .put(&Path::from(key.as_str()), PutPayload::from(buf.freeze()))
                .await
                .map_err(|e| self.unavailable("saving an upload's last bytes", &e))?;
            session.tail = Some(key.clone());
            written = Some(key);
        }
        upload.hasher = hasher;
        upload.parts = Some(session);
        Ok(AppendDone { superseded, written })
    }

    /// Writes a verified session to the blob's key and frees the session.
    pub async fn commit_upload<N, F>(&self, upload: Upload, digest: &Digest, mut next_part: N) -> Result<(), StoreError>
    where
        N: FnMut() -> F + Send,
        F: std::future::Future<Output = Result<u32, StoreError>> + Send,
    {
        let session = upload.parts.clone().expect("an S3 upload has a session");
        let target = self.blob_path(digest);
        if !self.contains(digest).await? {
            let tail = match &session.tail {
                Some(key) => self.get_bytes(key).await?,
                None => Bytes::new(),
            };
            if session.parts.is_empty() {
                // Smaller than a part: one PUT of the bytes, already verified.
                self.inner
                    .store
                    .put(&target, PutPayload::from(tail))
                    .await
                    .map_err(|e| self.unavailable("writing a blob", &e))?;
            } else {
                let data = self.data_path(&upload.id);
                let mut parts = session.parts.clone();
                if !tail.is_empty() {
                    let number = next_part().await?;
                    parts.push((number, self.put_part(&data, &session.upload_id, number, tail).await?));
                }
                self.complete_numbered(data.as_ref(), &session.upload_id, &parts)
                    .await
                    .map_err(StoreError::Unavailable)?;
                // S3 has no rename: the verified object is copied to its content address.
                self.copy_in_parts(&data, &target, upload.len()).await?;
            }
        }
        self.remove_upload(&upload.id, Some(&session.save(&upload.hasher))).await;
        Ok(())
    }

    /// Aborts the session's multipart upload and deletes its objects.
    pub async fn remove_upload(&self, id: &str, saved: Option<&str>) {
        let session = saved.and_then(|s| serde_json::from_str::<Saved>(s).ok()).map(|s| s.session);
        if let Some(session) = session {
            if let Err(e) = self.inner.store.abort_multipart(&self.data_path(id), &session.upload_id).await {
                if !matches!(e, object_store::Error::NotFound { .. }) {
                    tracing::warn!(upload = id, error = %self.explain("aborting a multipart upload", &e), "the janitor will abort it later");
                }
            }
        }
        let dir = Path::from(self.session_dir(id));
        let keys: Vec<String> = match self
            .inner
            .store
            .list(Some(&dir))
            .map_ok(|o| o.location.to_string())
            .try_collect()
            .await
        {
            Ok(keys) => keys,
            Err(e) => {
                tracing::warn!(upload = id, error = %self.explain("listing an upload's objects", &e), "the janitor will delete them later");
                return;
            }
        };
        for key in keys {
            self.delete_key(&key).await;
        }
    }

    /// Copies an object of `size` bytes inside the bucket as a multipart upload
    /// of ranges of [`COPY_RANGE`], server-side: CopyObject stops at 5 GiB.
    /// The copy appears whole or, if anything fails, not at all.
    async fn copy_in_parts(&self, from: &Path, to: &Path, size: u64) -> Result<(), StoreError> {
        let mut upload = Multipart::start(self, to).await?;
        let mut first = 0;
        while first < size {
            let last = (first + COPY_RANGE).min(size) - 1;
            let etag = self
                .copy_part(to.as_ref(), &upload.id, upload.parts.len() + 1, from.as_ref(), (first, last))
                .await
                .map_err(StoreError::Unavailable)?;
            upload.parts.push(PartId { content_id: etag });
            first = last + 1;
        }
        upload.complete().await
    }

    async fn put_part(&self, data: &Path, upload_id: &str, number: u32, bytes: Bytes) -> Result<String, StoreError> {
        if number as usize > MAX_PARTS {
            return Err(too_large(self.inner.part_size));
        }
        let part = self
            .inner
            .store
            .put_part(data, &upload_id.to_owned(), number as usize - 1, PutPayload::from(bytes))
            .await
            .map_err(|e| self.unavailable("uploading a part", &e))?;
        Ok(part.content_id)
    }

    async fn get_bytes(&self, key: &str) -> Result<Bytes, StoreError> {
        let got = self
            .inner
            .store
            .get(&Path::from(key))
            .await
            .map_err(|e| self.unavailable("reading an upload's last bytes", &e))?;
        got.bytes().await.map_err(|e| self.unavailable("reading an upload's last bytes", &e))
    }

    /// Aborts multipart uploads and deletes upload objects that no session
    /// owns and that are older than `older_than`: what a crash left.
    /// `live` tells whether a session id still exists.
    pub async fn sweep_orphans<L, F>(&self, older_than: Duration, mut live: L) -> Result<OrphanSweep, String>
    where
        L: FnMut(String) -> F,
        F: std::future::Future<Output = bool>,
    {
        let cutoff = chrono::DateTime::<chrono::Utc>::from(SystemTime::now() - older_than);
        let mut sweep = OrphanSweep::default();
        for open in self.list_open_uploads(&self.inner.prefix).await? {
            if open.initiated > cutoff {
                continue;
            }
            if let Some(id) = self.session_of(&open.key) {
                if live(id).await {
                    continue;
                }
            }
            let path = Path::from(open.key.as_str());
            match self.inner.store.abort_multipart(&path, &open.upload_id).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => sweep.aborted += 1,
                Err(e) => return Err(self.explain("aborting an orphaned multipart upload", &e)),
            }
        }
        let uploads = Path::from(format!("{}uploads/", self.inner.prefix));
        let objects: Vec<_> = self
            .inner
            .store
            .list(Some(&uploads))
            .try_collect()
            .await
            .map_err(|e| self.explain("listing upload objects", &e))?;
        for object in objects {
            let key = object.location.to_string();
            if object.last_modified > cutoff {
                continue;
            }
            if let Some(id) = self.session_of(&key) {
                if live(id).await {
                    continue;
                }
            }
            self.delete_key(&key).await;
            sweep.deleted += 1;
        }
        Ok(sweep)
    }

    /// The session id a key under `uploads/` belongs to.
    fn session_of(&self, key: &str) -> Option<String> {
        let rest = key.strip_prefix(&self.inner.prefix)?.strip_prefix("uploads/")?;
        rest.split_once('/').map(|(id, _)| id.to_owned())
    }
}

/// What one sweep of orphaned upload leftovers removed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct OrphanSweep {
    /// Multipart uploads aborted.
    pub aborted: usize,
    /// Objects deleted.
    pub deleted: usize,
}

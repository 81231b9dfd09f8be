//! Blobs in an S3-compatible bucket, through `object_store`.
//!
//! Keys under the configured prefix:
//! - `blobs/sha256/<2 hex>/<64 hex>`: committed blobs, content-addressed.
//! - `uploads/<session>/data`: the multipart upload behind an upload session.
//! - `uploads/<session>/tail-<uuid>`: the session's bytes after its last
//!   full part (S3 parts are at least 5 MiB, clients' chunks any size).
//!
//! A blob key is written only after the bytes hashed to its digest: a
//! one-request upload streams into a multipart upload at the final key and
//! completes it only when the digest matched (aborting it otherwise); a
//! session completes its multipart upload at `uploads/<session>/data` and
//! copies that, server-side and in parts of at most 1 GiB (CopyObject stops
//! at 5 GiB), to the final key once verified. A blob smaller than a part is
//! held in memory (at most one part) and written with one PUT after the
//! check. Multipart uploads a crash left open are aborted by the janitor.

mod credentials;
mod requests;
mod session;

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use damselfly_core::{BlobHasher, Digest};
use futures_util::{Stream, StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path;
use object_store::signer::Signer;
use object_store::{ClientOptions, GetOptions, GetRange, ObjectStore, ObjectStoreExt, PutPayload, RetryConfig};

use super::{BlobStream, StorageConfig, StoreError};

pub use session::{OrphanSweep, Session};

/// How long a health probe or startup check waits for the bucket.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// An S3-compatible bucket holding blobs.
#[derive(Clone)]
pub struct S3Store {
    inner: Arc<Inner>,
}

struct Inner {
    store: AmazonS3,
    /// A client for the calls `object_store` does not make (see `requests`).
    http: reqwest::Client,
    bucket: String,
    /// The bucket's base URL, `<endpoint>/<bucket>` or `https://<bucket>.s3.<region>.amazonaws.com`.
    bucket_url: String,
    /// What the endpoint is, for messages: the URL, or `AWS (<region>)`.
    endpoint: String,
    region: String,
    /// Key prefix, empty or ending in `/`.
    prefix: String,
    part_size: u64,
    piece_size: u64,
    /// Lifetime of presigned URLs handed to clients, when blob GETs redirect.
    redirect: Option<Duration>,
}

impl S3Store {
    /// Connects to the bucket and checks that it answers.
    pub async fn open(config: &StorageConfig, piece_size: u64) -> Result<S3Store, String> {
        let bucket = config.bucket.clone().unwrap_or_default();
        let region = config
            .region
            .clone()
            .or_else(|| std::env::var("AWS_REGION").ok())
            .or_else(|| std::env::var("AWS_DEFAULT_REGION").ok())
            .unwrap_or_else(|| "us-east-1".into());
        let mut builder = AmazonS3Builder::from_env()
            .with_bucket_name(&bucket)
            .with_region(&region)
            .with_virtual_hosted_style_request(!config.path_style)
            // Blob bytes are hashed on the way in already; signing each part's hash again costs CPU for nothing.
            .with_unsigned_payload(true)
            .with_retry(RetryConfig {
                max_retries: 3,
                retry_timeout: Duration::from_secs(15),
                backoff: Default::default(),
            })
            // A blob streams to a client as fast as the client reads: no deadline on a whole request.
            .with_client_options(
                ClientOptions::new()
                    .with_connect_timeout(Duration::from_secs(5))
                    .with_timeout_disabled()
                    .with_allow_http(config.endpoint.as_deref().is_some_and(|e| e.starts_with("http://"))),
            );
        let endpoint = config.endpoint.as_deref().map(|e| e.trim_end_matches('/').to_owned());
        if let Some(endpoint) = &endpoint {
            builder = builder.with_endpoint(endpoint);
        }
        if let Some(path) = &config.credentials_file {
            let keys = credentials::read(path, &config.profile)?;
            builder = builder.with_access_key_id(keys.access_key_id).with_secret_access_key(keys.secret_access_key);
            if let Some(token) = keys.session_token {
                builder = builder.with_token(token);
            }
        }
        let store = builder.build().map_err(|e| format!("S3 settings are unusable: {e}"))?;
        let bucket_url = match (&endpoint, config.path_style) {
            (Some(e), true) => format!("{e}/{bucket}"),
            (Some(e), false) => e.clone(),
            (None, true) => format!("https://s3.{region}.amazonaws.com/{bucket}"),
            (None, false) => format!("https://{bucket}.s3.{region}.amazonaws.com"),
        };
        let mut prefix = config.prefix.trim_matches('/').to_owned();
        if !prefix.is_empty() {
            prefix.push('/');
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| format!("cannot build an HTTP client for S3: {e}"))?;
        let s3 = S3Store {
            inner: Arc::new(Inner {
                store,
                http,
                bucket,
                bucket_url,
                endpoint: endpoint.unwrap_or_else(|| format!("AWS ({region})")),
                region,
                prefix,
                part_size: config.part_size,
                piece_size,
                redirect: config.redirect.then(|| Duration::from_secs(config.redirect_ttl_secs)),
            }),
        };
        s3.probe().await?;
        Ok(s3)
    }

    /// `s3://bucket/prefix at <endpoint>`, for the startup log.
    pub fn describe(&self) -> String {
        format!("s3://{}/{} at {}", self.inner.bucket, self.inner.prefix, self.inner.endpoint)
    }

    /// Checks the bucket answers a listing with these credentials.
    pub async fn probe(&self) -> Result<(), String> {
        let prefix = self.path("");
        let listing = self.inner.store.list_with_delimiter(Some(&prefix));
        match tokio::time::timeout(PROBE_TIMEOUT, listing).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(self.explain("listing the bucket", &e)),
            Err(_) => Err(format!(
                "S3 endpoint {} did not answer within {} s: is it running and reachable?",
                self.inner.endpoint,
                PROBE_TIMEOUT.as_secs()
            )),
        }
    }

    fn path(&self, key: &str) -> Path {
        Path::from(format!("{}{key}", self.inner.prefix))
    }

    fn blob_path(&self, digest: &Digest) -> Path {
        let hex = digest.hex();
        self.path(&format!("blobs/sha256/{}/{hex}", &hex[..2]))
    }

    /// True when the blob's object exists.
    pub async fn contains(&self, digest: &Digest) -> Result<bool, StoreError> {
        match self.inner.store.head(&self.blob_path(digest)).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(self.unavailable("looking up a blob", &e)),
        }
    }

    /// A ranged GET of the blob's object, streamed.
    pub async fn read(&self, digest: &Digest, start: u64, len: u64) -> Result<Option<BlobStream>, StoreError> {
        if len == 0 {
            // S3 refuses empty ranges.
            let present = self.contains(digest).await?;
            return Ok(present.then(|| futures_util::stream::empty().boxed()));
        }
        let options = GetOptions { range: Some(GetRange::Bounded(start..start + len)), ..Default::default() };
        match self.inner.store.get_opts(&self.blob_path(digest), options).await {
            Ok(got) => {
                let store = self.clone();
                Ok(Some(
                    got.into_stream()
                        .map_err(move |e| std::io::Error::other(store.explain("reading a blob", &e)))
                        .boxed(),
                ))
            }
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.unavailable("reading a blob", &e)),
        }
    }

    /// Deletes blobs' objects with DeleteObjects requests, at most
    /// `concurrency` in flight, each with an equal share of the keys (at most
    /// 1000, S3's limit); the outcome of each, in order. An object that is not
    /// there is not an error.
    pub async fn delete_blobs(&self, digests: &[Digest], concurrency: usize) -> Vec<Result<(), StoreError>> {
        let concurrency = concurrency.max(1);
        let per_request = digests.len().div_ceil(concurrency).clamp(1, MAX_KEYS_PER_DELETE);
        let requests: Vec<Vec<Path>> =
            digests.chunks(per_request).map(|c| c.iter().map(|d| self.blob_path(d)).collect()).collect();
        let answers: Vec<Vec<Result<(), StoreError>>> = futures_util::stream::iter(requests)
            .map(|keys| self.delete_keys(keys))
            .buffered(concurrency)
            .collect()
            .await;
        answers.into_iter().flatten().collect()
    }

    /// One DeleteObjects request: the outcome for each key, in order.
    async fn delete_keys(&self, keys: Vec<Path>) -> Vec<Result<(), StoreError>> {
        let n = keys.len();
        let keys = futures_util::stream::iter(keys.into_iter().map(Ok)).boxed();
        let answers: Vec<object_store::Result<Path>> = self.inner.store.delete_stream(keys).collect().await;
        if answers.len() != n {
            // The request itself failed: whichever of its keys went, the row of each stays marked and a later run retries.
            let why =
                answers.into_iter().find_map(Result::err).map(|e| self.explain("deleting blobs", &e)).unwrap_or_else(
                    || format!("S3 at {} answered a deletion of {n} blobs incompletely", self.inner.endpoint),
                );
            return (0..n).map(|_| Err(StoreError::Unavailable(why.clone()))).collect();
        }
        answers
            .into_iter()
            .map(|a| match a {
                Ok(_) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                Err(e) => Err(self.unavailable("deleting a blob", &e)),
            })
            .collect()
    }

    /// A presigned GET URL of the blob, if redirects are configured.
    pub async fn redirect_url(&self, digest: &Digest) -> Result<Option<String>, StoreError> {
        let Some(ttl) = self.inner.redirect else {
            return Ok(None);
        };
        let url = self
            .inner
            .store
            .signed_url(axum::http::Method::GET, &self.blob_path(digest), ttl)
            .await
            .map_err(|e| self.unavailable("signing a blob URL", &e))?;
        Ok(Some(url.to_string()))
    }

    /// Streams one request's blob into the bucket under `digest`, committing
    /// only if the bytes hash to it and `claim` then succeeds.
    pub async fn write_blob<S, E, C, F>(&self, digest: &Digest, mut body: S, claim: C) -> Result<BlobHasher, StoreError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin + Send,
        E: std::fmt::Display,
        C: FnOnce(&BlobHasher) -> F,
        F: std::future::Future<Output = Result<(), StoreError>>,
    {
        let mut hasher = BlobHasher::new(self.inner.piece_size);
        let path = self.blob_path(digest);
        let part_size = self.inner.part_size as usize;
        let mut buf = BytesMut::new();
        let mut upload: Option<Multipart> = None;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| StoreError::Body(e.to_string()))?;
            hasher.update(&chunk);
            for part in cut_parts(&mut buf, &chunk, part_size) {
                if upload.is_none() {
                    upload = Some(Multipart::start(self, &path).await?);
                }
                upload.as_mut().expect("started above").put(part).await?;
            }
        }
        // A mismatch, or a failed claim, drops `upload`, which aborts it: no object appears.
        let hasher = check(digest, hasher)?;
        claim(&hasher).await?;
        // Claimed, so no collection takes the blob from here on. A copy stored
        // already stays untouched and this one is dropped (aborted). The bytes
        // are sent even when a copy exists: looked up before the claim, a
        // collection could take that copy before the claim, with the body
        // already read and nothing left to store.
        if self.contains(digest).await? {
            return Ok(hasher);
        }
        match upload {
            None => {
                self.inner
                    .store
                    .put(&path, PutPayload::from(buf.freeze()))
                    .await
                    .map_err(|e| self.unavailable("writing a blob", &e))?;
            }
            Some(mut upload) => {
                if !buf.is_empty() {
                    upload.put(buf.freeze()).await?;
                }
                upload.complete().await?;
            }
        }
        Ok(hasher)
    }

    /// Deletes one object; a failure is logged, the janitor retries later.
    pub(crate) async fn delete_key(&self, key: &str) {
        if let Err(e) = self.inner.store.delete(&Path::from(key)).await {
            if !matches!(e, object_store::Error::NotFound { .. }) {
                tracing::warn!(key, error = %self.explain("deleting an object", &e), "could not delete an upload leftover; the janitor will retry");
            }
        }
    }

    fn unavailable(&self, what: &str, e: &object_store::Error) -> StoreError {
        StoreError::Unavailable(self.explain(what, e))
    }

    fn explain(&self, what: &str, e: &object_store::Error) -> String {
        // object_store's messages repeat their sources: recognise the failure
        // on the whole chain, and show its root cause.
        let mut chain = e.to_string();
        let mut root = chain.clone();
        let mut source = std::error::Error::source(e);
        while let Some(s) = source {
            root = s.to_string();
            chain.push_str(": ");
            chain.push_str(&root);
            source = s.source();
        }
        explain(&self.inner.endpoint, &self.inner.bucket, what, &chain, &root)
    }
}

/// An operator's sentence for an S3 failure: what failed, and what to check.
/// `chain` is matched on; `shown` is the detail quoted.
fn explain(endpoint: &str, bucket: &str, what: &str, chain: &str, shown: &str) -> String {
    let lower = chain.to_ascii_lowercase();
    if lower.contains("connect") || lower.contains("dns error") || lower.contains("connection refused") {
        format!("S3 endpoint {endpoint} is unreachable while {what}: is it running? ({shown})")
    } else if lower.contains("nosuchbucket") || lower.contains("bucket does not exist") {
        format!("S3 bucket {bucket} does not exist at {endpoint}: create it, or set --s3-bucket to one that does")
    } else if lower.contains("accessdenied")
        || lower.contains("invalidaccesskeyid")
        || lower.contains("signaturedoesnotmatch")
        || lower.contains("403")
    {
        format!(
            "S3 at {endpoint} refused access to bucket {bucket} while {what}: check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or --s3-credentials-file) and the bucket's policy ({shown})"
        )
    } else {
        format!("S3 at {endpoint} failed while {what} in bucket {bucket}: {shown}")
    }
}

/// Adds `bytes` to the part being gathered in `buf`, and takes out every
/// part that fills up, `part_size` bytes each; the rest stays in `buf`.
fn cut_parts(buf: &mut BytesMut, mut bytes: &[u8], part_size: usize) -> Vec<Bytes> {
    let mut full = Vec::new();
    while !bytes.is_empty() {
        let take = (part_size - buf.len()).min(bytes.len());
        buf.extend_from_slice(&bytes[..take]);
        bytes = &bytes[take..];
        if buf.len() == part_size {
            full.push(buf.split().freeze());
        }
    }
    full
}

fn check(digest: &Digest, hasher: BlobHasher) -> Result<BlobHasher, StoreError> {
    let actual = hasher.clone().finish().0;
    if actual == *digest {
        Ok(hasher)
    } else {
        Err(StoreError::Mismatch { actual })
    }
}

/// A multipart upload one request owns, numbered 1, 2, 3…; aborted when
/// dropped before [`Multipart::complete`] (the client hung up, the digest
/// did not match, S3 failed), so it never leaves parts behind.
struct Multipart {
    store: S3Store,
    path: Path,
    id: String,
    parts: Vec<PartId>,
    done: bool,
}

impl Multipart {
    async fn start(store: &S3Store, path: &Path) -> Result<Multipart, StoreError> {
        let id = store
            .inner
            .store
            .create_multipart(path)
            .await
            .map_err(|e| store.unavailable("starting a multipart upload", &e))?;
        Ok(Multipart { store: store.clone(), path: path.clone(), id, parts: Vec::new(), done: false })
    }

    async fn put(&mut self, bytes: Bytes) -> Result<(), StoreError> {
        if self.parts.len() >= MAX_PARTS {
            return Err(too_large(self.store.inner.part_size));
        }
        let part = self
            .store
            .inner
            .store
            .put_part(&self.path, &self.id, self.parts.len(), PutPayload::from(bytes))
            .await
            .map_err(|e| self.store.unavailable("uploading a part", &e))?;
        self.parts.push(part);
        Ok(())
    }

    async fn complete(mut self) -> Result<(), StoreError> {
        let parts = std::mem::take(&mut self.parts);
        self.store
            .inner
            .store
            .complete_multipart(&self.path, &self.id, parts)
            .await
            .map_err(|e| self.store.unavailable("completing a multipart upload", &e))?;
        self.done = true;
        Ok(())
    }
}

impl Drop for Multipart {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let (store, path, id) = (self.store.clone(), self.path.clone(), std::mem::take(&mut self.id));
        // Outside a runtime (the process is stopping) the janitor of the next start aborts it.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        runtime.spawn(async move {
            if let Err(e) = store.inner.store.abort_multipart(&path, &id).await {
                tracing::warn!(upload = id, error = %store.explain("aborting a multipart upload", &e), "the janitor will abort it later");
            }
        });
    }
}

/// S3 deletes at most 1,000 keys per DeleteObjects request.
const MAX_KEYS_PER_DELETE: usize = 1000;

/// S3 takes at most 10,000 parts per object.
const MAX_PARTS: usize = 10_000;

fn too_large(part_size: u64) -> StoreError {
    StoreError::TooLarge(format!(
        "the blob exceeds S3's 10,000 parts of {part_size} bytes; the operator can raise --s3-part-size"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_are_cut_at_part_size_whatever_the_chunks() {
        let data: Vec<u8> = (0..100u8).collect();
        let mut buf = BytesMut::new();
        let mut parts = Vec::new();
        for chunk in [&data[..7], &data[7..8], &data[8..70], &data[70..]] {
            parts.extend(cut_parts(&mut buf, chunk, 30));
        }
        assert_eq!(parts, [&data[..30], &data[30..60], &data[60..90]]);
        assert_eq!(&buf[..], &data[90..]);
    }
}

//! Blob GET, HEAD and DELETE.

use axum::body::Body;
use axum::http::{header, Method, StatusCode};
use axum::response::Response;
use damselfly_core::{Digest, ErrorCode, RepositoryName};
use futures_util::StreamExt;

use super::{response, Call};
use crate::error::{oci, RegistryError, Result};
use crate::state::AppState;
use damselfly_core::range::{parse_range, ByteRange};

/// The digest a read or a delete names. No blob is stored under a string
/// that is not a valid digest, so it is unknown (`404 BLOB_UNKNOWN`, with
/// the reason), as with a manifest's reference; a push that names one is
/// refused with `DIGEST_INVALID` instead.
fn existing_digest(name: &RepositoryName, s: &str) -> Result<Digest> {
    s.parse().map_err(|e: damselfly_core::DigestError| {
        RegistryError::oci(ErrorCode::BlobUnknown, format!("blob {s:?} is not in repository {name}: {e}"))
            .with_detail(serde_json::json!({ "digest": s }))
    })
}

pub(super) async fn get(state: &AppState, name: &RepositoryName, digest: &str, call: &Call) -> Result<Response> {
    let digest = existing_digest(name, digest)?;
    let blob = state
        .db
        .blobs()
        .find_in_repository(name.as_str(), &digest)
        .await?
        .ok_or_else(|| oci::blob_unknown(name, &digest))?;
    let size = blob.size;
    let mut headers = vec![
        ("docker-content-digest", digest.to_string()),
        ("content-type", "application/octet-stream".to_owned()),
        ("accept-ranges", "bytes".to_owned()),
        ("etag", format!("\"{digest}\"")),
        ("cache-control", "max-age=31536000".to_owned()),
    ];
    let (status, start, len) = match parse_range(call.header(header::RANGE), size) {
        ByteRange::Full => (StatusCode::OK, 0, size),
        ByteRange::Partial(a, b) => {
            headers.push(("content-range", format!("bytes {a}-{b}/{size}")));
            (StatusCode::PARTIAL_CONTENT, a, b - a + 1)
        }
        ByteRange::Unsatisfiable => {
            return Err(RegistryError::oci(
                ErrorCode::SizeInvalid,
                format!("range is outside the blob's {size} bytes"),
            )
            .with_status(StatusCode::RANGE_NOT_SATISFIABLE)
            .with_header(header::CONTENT_RANGE, format!("bytes */{size}")));
        }
    };
    headers.push(("content-length", len.to_string()));
    if call.method == Method::HEAD {
        keep_for_push(state, &digest).await?;
        return Ok(response(status, &headers, Body::empty()));
    }
    if let Some(url) = state.blobs.redirect_url(&digest).await? {
        // The client fetches the bytes (and its range) from object storage directly.
        let headers =
            [("location", url), ("docker-content-digest", digest.to_string()), ("content-length", "0".into())];
        return Ok(response(StatusCode::TEMPORARY_REDIRECT, &headers, Body::empty()));
    }
    let Some(stream) = state.blobs.read(&digest, start, len).await? else {
        tracing::error!(%digest, "blob is recorded in the database but missing from the blob store");
        return Err(oci::blob_unknown(name, &digest));
    };
    let metrics = state.metrics.clone();
    let stream = stream.inspect(move |chunk| {
        if let Ok(c) = chunk {
            metrics.sent("blob", c.len() as u64);
        }
    });
    Ok(response(status, &headers, Body::from_stream(stream)))
}

/// A HEAD is how a pushing client asks whether to upload a blob: one told
/// "present" skips the upload and references the blob in its manifest next.
/// Touching it (when its last touch is older than half the grace period)
/// gives that manifest the whole grace period before the blob could be
/// collected (see `services::gc`).
async fn keep_for_push(state: &AppState, digest: &damselfly_core::Digest) -> Result<()> {
    let half_grace = (state.config.gc.grace_secs / 2) as i64;
    let stale_before = crate::metadata::now() - half_grace;
    if state.db.blobs().touched_at(digest).await?.is_some_and(|at| at < stale_before) {
        state.db.blobs().touch(digest, stale_before).await?;
    }
    Ok(())
}

pub(super) async fn delete(state: &AppState, name: &RepositoryName, digest: &str, call: &Call) -> Result<Response> {
    let digest = existing_digest(name, digest)?;
    let repo = state.db.repositories().find(name.as_str()).await?.ok_or_else(|| oci::blob_unknown(name, &digest))?;
    if !state.db.blobs().unlink(repo, &digest).await? {
        return Err(oci::blob_unknown(name, &digest));
    }
    tracing::info!(repository = %name, %digest, "blob removed from repository");
    super::manifests::record(state, call, "blob.delete", &format!("{name}@{digest}"), name, None).await;
    Ok(response(StatusCode::ACCEPTED, &[("content-length", "0".into())], Body::empty()))
}

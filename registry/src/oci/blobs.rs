//! Blob GET, HEAD and DELETE.

use axum::body::Body;
use axum::http::{header, Method, StatusCode};
use axum::response::Response;
use damselfly_core::{ErrorCode, RepositoryName};
use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio_util::io::ReaderStream;

use super::{parse_digest, response, Call};
use crate::error::{oci, RegistryError, Result};
use crate::state::AppState;
use damselfly_core::range::{parse_range, ByteRange};

/// Read size when streaming a blob to a client.
const READ_CHUNK: usize = 256 * 1024;

pub(super) async fn get(state: &AppState, name: &RepositoryName, digest: &str, call: &Call) -> Result<Response> {
    let digest = parse_digest(digest)?;
    let blob = state
        .db
        .blobs()
        .find_in_repository(name.as_str(), &digest)
        .await?
        .ok_or_else(|| oci::blob_unknown(name, &digest))?;
    let Some(mut file) = state.blobs.open_blob(&digest).await? else {
        tracing::error!(%digest, "blob is recorded in the database but its file is missing from the blob store");
        return Err(oci::blob_unknown(name, &digest));
    };
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
        return Ok(response(status, &headers, Body::empty()));
    }
    if start > 0 {
        file.seek(std::io::SeekFrom::Start(start)).await?;
    }
    let metrics = state.metrics.clone();
    let stream = ReaderStream::with_capacity(file.take(len), READ_CHUNK).inspect(move |chunk| {
        if let Ok(c) = chunk {
            metrics.sent("blob", c.len() as u64);
        }
    });
    Ok(response(status, &headers, Body::from_stream(stream)))
}

pub(super) async fn delete(state: &AppState, name: &RepositoryName, digest: &str, call: &Call) -> Result<Response> {
    let digest = parse_digest(digest)?;
    let repo = state.db.repositories().find(name.as_str()).await?.ok_or_else(|| oci::blob_unknown(name, &digest))?;
    if !state.db.blobs().unlink(repo, &digest).await? {
        return Err(oci::blob_unknown(name, &digest));
    }
    tracing::info!(repository = %name, %digest, "blob removed from repository");
    super::manifests::record(state, call, "blob.delete", &format!("{name}@{digest}"), name, None).await;
    Ok(response(StatusCode::ACCEPTED, &[("content-length", "0".into())], Body::empty()))
}

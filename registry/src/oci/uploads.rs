//! Blob uploads: monolithic (POST with `digest`, or POST then PUT), chunked
//! (PATCH with `Content-Range`), streamed (PATCH without it), and
//! cross-repository mounts.

use axum::body::Body;
use axum::http::{header, StatusCode};
use axum::response::Response;
use damselfly_core::{BlobHasher, Digest, ErrorCode, RepositoryName};
use tokio::sync::OwnedMutexGuard;

use super::{parse_digest, response, Call};
use crate::error::{oci, RegistryError, Result};
use crate::metadata::{BlobRecord, RepositoryId};
use crate::state::AppState;
use crate::storage::AppendError;
use damselfly_core::range::parse_content_range;

/// `POST /v2/<name>/blobs/uploads/`
pub(super) async fn start(state: &AppState, name: &RepositoryName, call: &Call, body: Body) -> Result<Response> {
    if let (Some(mount), Some(from)) = (call.query.get("mount"), call.query.get("from")) {
        let digest = parse_digest(mount)?;
        if let Some(done) = try_mount(state, name, &digest, from, call).await? {
            return Ok(done);
        }
        // Not mountable: the client uploads the bytes instead, as the spec prescribes.
    }
    if let Some(digest) = call.query.get("digest") {
        let digest = parse_digest(digest)?;
        return monolithic(state, name, digest, body).await;
    }
    let repo = state.db.repositories().ensure(name.as_str()).await?;
    let id = uuid::Uuid::new_v4().to_string();
    state.blobs.create_upload(&id).await?;
    state.db.uploads().create(&id, repo).await?;
    Ok(session_response(StatusCode::ACCEPTED, name, &id, 0))
}

async fn try_mount(
    state: &AppState,
    name: &RepositoryName,
    digest: &Digest,
    from: &str,
    call: &Call,
) -> Result<Option<Response>> {
    let Ok(from) = from.parse::<RepositoryName>() else {
        return Ok(None);
    };
    // Mounting reads the source: without pull access there, fall back to an
    // upload, which answers exactly as it would for a blob that is not there.
    if !call.caller.may_pull(state, &from).await? {
        return Ok(None);
    }
    let Some(_) = state.db.blobs().find_in_repository(from.as_str(), digest).await? else {
        return Ok(None);
    };
    if !state.blobs.contains(digest).await {
        return Ok(None);
    }
    let repo = state.db.repositories().ensure(name.as_str()).await?;
    state.db.blobs().link(repo, digest).await?;
    tracing::info!(repository = %name, %digest, from = %from, "blob mounted");
    Ok(Some(created(name, digest)))
}

async fn monolithic(state: &AppState, name: &RepositoryName, digest: Digest, body: Body) -> Result<Response> {
    let (temp, hasher) = state.blobs.write_temp(body.into_data_stream()).await.map_err(append_error)?;
    state.metrics.received("blob", hasher.len());
    let size = hasher.len();
    let (actual, pieces) = hasher.finish();
    check_digest(&digest, &actual)?;
    // The repository appears only once something valid is stored in it.
    let repo = state.db.repositories().ensure(name.as_str()).await?;
    temp.commit(&digest).await?;
    state.db.blobs().insert_and_link(repo, &BlobRecord { digest, size, pieces }).await?;
    Ok(created(name, &digest))
}

/// `GET /v2/<name>/blobs/uploads/<id>`: how many bytes the session holds.
pub(super) async fn status(state: &AppState, name: &RepositoryName, id: &str) -> Result<Response> {
    let (_, guard) = open_session(state, name, id).await?;
    let len = guard.as_ref().map_or(0, BlobHasher::len);
    Ok(session_response(StatusCode::NO_CONTENT, name, id, len))
}

/// `PATCH /v2/<name>/blobs/uploads/<id>`: append a chunk.
pub(super) async fn patch(
    state: &AppState,
    name: &RepositoryName,
    id: &str,
    call: &Call,
    body: Body,
) -> Result<Response> {
    let (_, mut guard) = open_session(state, name, id).await?;
    let hasher = guard.as_mut().ok_or_else(|| oci::upload_unknown(id))?;
    append(state, name, id, hasher, call, body).await?;
    Ok(session_response(StatusCode::ACCEPTED, name, id, hasher.len()))
}

/// `PUT /v2/<name>/blobs/uploads/<id>?digest=…`: append the last chunk, if
/// any, verify the digest and commit the blob.
pub(super) async fn finish(
    state: &AppState,
    name: &RepositoryName,
    id: &str,
    call: &Call,
    body: Body,
) -> Result<Response> {
    let digest = call
        .query
        .get("digest")
        .ok_or_else(|| {
            oci::digest_invalid("the digest query parameter is required to finish an upload: PUT …?digest=sha256:…")
        })
        .and_then(|d| parse_digest(d))?;
    let (repo, mut guard) = open_session(state, name, id).await?;
    let hasher = guard.as_mut().ok_or_else(|| oci::upload_unknown(id))?;
    append(state, name, id, hasher, call, body).await?;
    let (actual, pieces) = hasher.clone().finish();
    let size = hasher.len();
    if let Err(e) = check_digest(&digest, &actual) {
        // A lying or corrupted upload leaves nothing behind.
        discard(state, id).await?;
        return Err(e);
    }
    state.blobs.commit_upload(id, &digest).await?;
    state.db.blobs().insert_and_link(repo, &BlobRecord { digest, size, pieces }).await?;
    state.db.uploads().delete(id).await?;
    *guard = None;
    state.uploads.forget(id);
    Ok(created(name, &digest))
}

/// `DELETE /v2/<name>/blobs/uploads/<id>`: cancel.
pub(super) async fn cancel(state: &AppState, name: &RepositoryName, id: &str) -> Result<Response> {
    let (_, _guard) = open_session(state, name, id).await?;
    discard(state, id).await?;
    Ok(response(StatusCode::NO_CONTENT, &[], Body::empty()))
}

async fn discard(state: &AppState, id: &str) -> Result<()> {
    state.db.uploads().delete(id).await?;
    state.blobs.remove_upload(id).await;
    state.uploads.forget(id);
    Ok(())
}

/// Finds the session, locks it and makes sure its hasher is loaded.
async fn open_session(
    state: &AppState,
    name: &RepositoryName,
    id: &str,
) -> Result<(RepositoryId, OwnedMutexGuard<Option<BlobHasher>>)> {
    let repo = state.db.uploads().find(id, name.as_str()).await?.ok_or_else(|| oci::upload_unknown(id))?;
    let mut guard = state.uploads.lock(id).await;
    if guard.is_none() {
        *guard = state.blobs.rehash_upload(id).await?;
        if guard.is_none() {
            return Err(oci::upload_unknown(id));
        }
    }
    Ok((repo, guard))
}

/// Appends the request body, honouring `Content-Range` if present.
async fn append(
    state: &AppState,
    name: &RepositoryName,
    id: &str,
    hasher: &mut BlobHasher,
    call: &Call,
    body: Body,
) -> Result<()> {
    let at = hasher.len();
    let expected = match call.header(header::CONTENT_RANGE) {
        Some(value) => {
            let (first, last) = parse_content_range(value).ok_or_else(|| {
                RegistryError::oci(
                    ErrorCode::BlobUploadInvalid,
                    format!("Content-Range {value:?} is malformed: use <first>-<last>"),
                )
                .with_status(StatusCode::RANGE_NOT_SATISFIABLE)
            })?;
            if first != at {
                return Err(RegistryError::oci(
                    ErrorCode::BlobUploadInvalid,
                    format!(
                        "chunk starts at byte {first} but the upload holds {at} bytes; send the chunk starting at {at}"
                    ),
                )
                .with_status(StatusCode::RANGE_NOT_SATISFIABLE)
                .with_header(header::LOCATION, upload_location(name, id))
                .with_header(header::RANGE, range_value(at))
                .with_header("docker-upload-uuid".parse().expect("static header name"), id));
            }
            Some(last - first + 1)
        }
        None => None,
    };
    let declared = call.header(header::CONTENT_LENGTH).and_then(|v| v.parse::<u64>().ok());
    if let (Some(e), Some(d)) = (expected, declared) {
        if e != d {
            return Err(RegistryError::oci(
                ErrorCode::SizeInvalid,
                format!("Content-Range covers {e} bytes but Content-Length is {d}"),
            ));
        }
    }
    state.blobs.append_upload(id, hasher, body.into_data_stream(), expected).await.map_err(append_error)?;
    state.metrics.received("blob", hasher.len() - at);
    Ok(())
}

fn check_digest(expected: &Digest, actual: &Digest) -> Result<()> {
    if expected == actual {
        return Ok(());
    }
    Err(oci::digest_invalid(format!("the uploaded content has digest {actual}, not {expected}; nothing was stored"))
        .with_detail(serde_json::json!({ "expected": expected.to_string(), "actual": actual.to_string() })))
}

fn append_error(e: AppendError) -> RegistryError {
    match e {
        AppendError::Body(reason) => RegistryError::oci(
            ErrorCode::BlobUploadInvalid,
            format!("the upload body was cut short ({reason}); nothing was kept from this request, resend it"),
        ),
        AppendError::Size { expected, got } => RegistryError::oci(
            ErrorCode::SizeInvalid,
            format!(
                "Content-Range announced {expected} bytes but the body had {got}; nothing was kept from this request"
            ),
        ),
        AppendError::Io(e) => RegistryError::Io(e),
    }
}

fn upload_location(name: &RepositoryName, id: &str) -> String {
    format!("/v2/{name}/blobs/uploads/{id}")
}

fn range_value(len: u64) -> String {
    format!("0-{}", len.saturating_sub(1))
}

fn session_response(status: StatusCode, name: &RepositoryName, id: &str, len: u64) -> Response {
    response(
        status,
        &[
            ("location", upload_location(name, id)),
            ("range", range_value(len)),
            ("docker-upload-uuid", id.to_owned()),
            ("content-length", "0".to_owned()),
        ],
        Body::empty(),
    )
}

fn created(name: &RepositoryName, digest: &Digest) -> Response {
    response(
        StatusCode::CREATED,
        &[
            ("location", format!("/v2/{name}/blobs/{digest}")),
            ("docker-content-digest", digest.to_string()),
            ("content-length", "0".to_owned()),
        ],
        Body::empty(),
    )
}

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
use crate::metadata::{BlobRecord, Linked, RepositoryId, UploadRow};
use crate::state::AppState;
use crate::storage::{AppendDone, StoreError, Upload};
use damselfly_core::range::parse_content_range;

/// `POST /v2/<name>/blobs/uploads/`
pub(super) async fn start(state: &AppState, name: &RepositoryName, call: &Call, body: Body) -> Result<Response> {
    if let (Some(mount), Some(from)) = (call.query.get("mount"), call.query.get("from")) {
        // Not mountable, a digest that is none included: the client uploads
        // the bytes instead, as the spec prescribes for invalid arguments.
        if let Ok(digest) = mount.parse() {
            if let Some(done) = try_mount(state, name, &digest, from, call).await? {
                return Ok(done);
            }
        }
    }
    if let Some(digest) = call.query.get("digest") {
        let digest = parse_digest(digest)?;
        return monolithic(state, name, digest, body).await;
    }
    let repo = state.db.repositories().ensure(name.as_str()).await?;
    let id = uuid::Uuid::new_v4().to_string();
    let upload = state.blobs.create_upload(&id).await?;
    let saved = upload.saved();
    if let Err(e) = state.db.uploads().create(&id, repo, saved.as_deref()).await {
        state.blobs.remove_upload(&id, saved.as_deref()).await;
        return Err(e.into());
    }
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
    let Some(from_repo) = state.db.repositories().find(from.as_str()).await? else {
        return Ok(None);
    };
    let Some(_) = state.db.blobs().find_in_repository(from.as_str(), digest).await? else {
        return Ok(None);
    };
    if !state.blobs.contains(digest).await? {
        return Ok(None);
    }
    let repo = state.db.repositories().ensure(name.as_str()).await?;
    // The link re-checks, holding the blob's row, that the source still holds it and nobody is collecting it.
    linked(state.db.blobs().link(repo, digest, Some(from_repo)).await?)?;
    tracing::info!(repository = %name, %digest, from = %from, "blob mounted");
    Ok(Some(created(name, digest)))
}

/// A link's outcome as the client's answer: done, or refused by a quota.
/// `Missing` after a claim means a collection took the blob while the upload
/// completed (see `services::gc`).
fn linked(outcome: Linked) -> Result<()> {
    match outcome {
        Linked::Linked | Linked::Already => Ok(()),
        Linked::Refused(q) => Err(StoreError::Quota(q).into()),
        Linked::Missing => Err(StoreError::Collected.into()),
    }
}

/// Records a verified blob before its bytes become visible (see
/// `metadata::Blobs::claim`), unless a quota refuses it already.
async fn claim(state: &AppState, repo: RepositoryId, blob: &BlobRecord) -> std::result::Result<(), StoreError> {
    if let Some(q) = state.db.blobs().quota_check(repo, &blob.digest, blob.size).await? {
        return Err(StoreError::Quota(q));
    }
    state.db.blobs().claim(blob).await?;
    Ok(())
}

async fn monolithic(state: &AppState, name: &RepositoryName, digest: Digest, body: Body) -> Result<Response> {
    let repo = state.db.repositories().ensure(name.as_str()).await?;
    let record = move |hasher: BlobHasher| {
        let size = hasher.len();
        let (_, pieces) = hasher.finish();
        BlobRecord { digest, size, pieces }
    };
    let claimed = |hasher: &BlobHasher| {
        let blob = record(hasher.clone());
        async move { claim(state, repo, &blob).await }
    };
    let hasher = match state.blobs.write_blob(&digest, body.into_data_stream(), claimed).await {
        Ok(hasher) => hasher,
        Err(StoreError::Mismatch { actual }) => return Err(digest_mismatch(&digest, &actual)),
        Err(e) => return Err(e.into()),
    };
    state.metrics.received("blob", hasher.len());
    linked(state.db.blobs().link(repo, &digest, None).await?)?;
    state.recuts.after_push(state, name, record(hasher));
    Ok(created(name, &digest))
}

/// `GET /v2/<name>/blobs/uploads/<id>`: how many bytes the session holds.
pub(super) async fn status(state: &AppState, name: &RepositoryName, id: &str) -> Result<Response> {
    let (_, guard) = open_session(state, name, id).await?;
    let len = guard.as_ref().map_or(0, Upload::len);
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
    let (row, mut guard) = open_session(state, name, id).await?;
    let upload = guard.as_mut().ok_or_else(|| oci::upload_unknown(id))?;
    let mut next = upload.clone();
    let done = append(state, name, id, &mut next, call, body).await?;
    let len = save(state, name, &row, &mut guard, next, done).await?;
    Ok(session_response(StatusCode::ACCEPTED, name, id, len))
}

/// Records an append in the database, unless another request appended first; returns the session's length.
async fn save(
    state: &AppState,
    name: &RepositoryName,
    row: &UploadRow,
    guard: &mut Option<Upload>,
    next: Upload,
    done: AppendDone,
) -> Result<u64> {
    let saved = next.saved();
    let advanced = state.db.uploads().advance(&next.id, row.length, next.len(), saved.as_deref()).await;
    // Until saved, reload from the database next time: it, not this process, knows where the session stands.
    *guard = None;
    if !advanced? {
        state.blobs.abandon(done).await;
        let held = state.db.uploads().find(&next.id, name.as_str()).await?.map_or(0, |r| r.length);
        return Err(RegistryError::oci(
            ErrorCode::BlobUploadInvalid,
            format!("another request appended to upload {} first; it holds {held} bytes, resend from there", next.id),
        )
        .with_status(StatusCode::RANGE_NOT_SATISFIABLE)
        .with_header(header::LOCATION, upload_location(name, &next.id))
        .with_header(header::RANGE, range_value(held)));
    }
    state.blobs.release(done).await;
    let len = next.len();
    *guard = Some(next);
    Ok(len)
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
    let (row, mut guard) = open_session(state, name, id).await?;
    let upload = guard.as_mut().ok_or_else(|| oci::upload_unknown(id))?;
    // The last chunk is not saved as progress: if the commit fails, the
    // session is as it was and the client sends the same PUT again.
    let mut last = upload.clone();
    *guard = None;
    append(state, name, id, &mut last, call, body).await?;
    let (actual, pieces) = last.hasher.clone().finish();
    let size = last.len();
    if let Err(e) = check_digest(&digest, &actual) {
        // A lying or corrupted upload leaves nothing behind.
        discard(state, id, last.saved().as_deref()).await?;
        return Err(e);
    }
    let blob = BlobRecord { digest, size, pieces };
    if let Err(e) = claim(state, row.repository, &blob).await {
        if matches!(e, StoreError::Quota(_)) {
            // It cannot succeed as it is: nothing of it stays.
            discard(state, id, last.saved().as_deref()).await?;
        }
        return Err(e.into());
    }
    state.blobs.commit_upload(last, &digest, || next_part(state, id)).await?;
    state.db.uploads().delete(id).await?;
    state.uploads.forget(id);
    linked(state.db.blobs().link(row.repository, &digest, None).await?)?;
    state.recuts.after_push(state, name, blob);
    Ok(created(name, &digest))
}

/// `DELETE /v2/<name>/blobs/uploads/<id>`: cancel.
pub(super) async fn cancel(state: &AppState, name: &RepositoryName, id: &str) -> Result<Response> {
    let (row, mut guard) = open_session(state, name, id).await?;
    *guard = None;
    discard(state, id, row.store_state.as_deref()).await?;
    Ok(response(StatusCode::NO_CONTENT, &[], Body::empty()))
}

async fn discard(state: &AppState, id: &str, saved: Option<&str>) -> Result<()> {
    state.db.uploads().delete(id).await?;
    state.blobs.remove_upload(id, saved).await;
    state.uploads.forget(id);
    Ok(())
}

/// Finds the session, locks it on this process and makes sure its state is
/// loaded and current: the database row read under the lock is the truth,
/// since another replica may have moved the session on.
async fn open_session(
    state: &AppState,
    name: &RepositoryName,
    id: &str,
) -> Result<(UploadRow, OwnedMutexGuard<Option<Upload>>)> {
    state.db.uploads().find(id, name.as_str()).await?.ok_or_else(|| oci::upload_unknown(id))?;
    let mut guard = state.uploads.lock(id).await;
    let Some(row) = state.db.uploads().find(id, name.as_str()).await? else {
        *guard = None;
        return Err(oci::upload_unknown(id));
    };
    // On the filesystem the cached hasher is current while the lengths agree;
    // an S3 session is always taken from its saved state, which costs no S3 call.
    let current = guard.as_ref().is_some_and(|u| u.len() == row.length && row.store_state.is_none());
    if !current {
        *guard = state.blobs.load_upload(id, row.store_state.as_deref(), row.length).await?;
        if guard.is_none() {
            return Err(oci::upload_unknown(id));
        }
    }
    Ok((row, guard))
}

/// A part number for the session's multipart upload that no request used before.
async fn next_part(state: &AppState, id: &str) -> std::result::Result<u32, StoreError> {
    match state.db.uploads().next_part(id).await {
        Ok(Some(n)) => Ok(n),
        Ok(None) => Err(StoreError::Body(format!("upload {id} was cancelled while this request wrote to it"))),
        Err(e) => Err(StoreError::Unavailable(format!("metadata database failed handing out a part number: {e}"))),
    }
}

/// Appends the request body, honouring `Content-Range` if present.
async fn append(
    state: &AppState,
    name: &RepositoryName,
    id: &str,
    upload: &mut Upload,
    call: &Call,
    body: Body,
) -> Result<AppendDone> {
    let at = upload.len();
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
    let done = state.blobs.append_upload(upload, body.into_data_stream(), expected, || next_part(state, id)).await?;
    state.metrics.received("blob", upload.len() - at);
    Ok(done)
}

fn check_digest(expected: &Digest, actual: &Digest) -> Result<()> {
    if expected == actual {
        return Ok(());
    }
    Err(digest_mismatch(expected, actual))
}

fn digest_mismatch(expected: &Digest, actual: &Digest) -> RegistryError {
    oci::digest_invalid(format!("the uploaded content has digest {actual}, not {expected}; nothing was stored"))
        .with_detail(serde_json::json!({ "expected": expected.to_string(), "actual": actual.to_string() }))
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

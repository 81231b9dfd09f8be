//! Manifest GET, HEAD, PUT and DELETE, by tag or by digest.

use axum::body::Body;
use axum::http::{header, Method, StatusCode};
use axum::response::Response;
use damselfly_core::{Digest, ErrorCode, Reference, ReferenceError, RepositoryName};

use super::{response, Call};
use crate::error::{oci, RegistryError, Result};
use crate::metadata::{ManifestRecord, NewManifest, PutOutcome, TagRule, TargetKind, Unstored};
use crate::services::audit::{self, Event};
use crate::services::{lifecycle, manifest, preheat};
use crate::state::AppState;

/// The reference a push names: one that is neither a tag nor a digest is
/// the client's mistake, said with `TAG_INVALID` or `DIGEST_INVALID`.
fn parse_reference(s: &str) -> Result<Reference> {
    s.parse().map_err(|e: ReferenceError| match e {
        ReferenceError::Tag(_) => RegistryError::oci(ErrorCode::TagInvalid, e.to_string()),
        ReferenceError::Digest(d) => oci::digest_invalid(d.to_string()),
    })
}

/// The reference a read or a delete names. No manifest can be stored under
/// one that is neither a tag nor a digest, so it is unknown, as Distribution
/// answers it: `404 MANIFEST_UNKNOWN`, with the reason.
fn existing_reference(name: &RepositoryName, s: &str) -> Result<Reference> {
    s.parse().map_err(|e: ReferenceError| {
        RegistryError::oci(ErrorCode::ManifestUnknown, format!("manifest {s:?} is not in repository {name}: {e}"))
            .with_detail(serde_json::json!({ "reference": s }))
    })
}

pub(super) async fn get(state: &AppState, name: &RepositoryName, reference: &str, call: &Call) -> Result<Response> {
    let reference = existing_reference(name, reference)?;
    let found: Option<ManifestRecord> = match &reference {
        Reference::Tag(t) => state.db.manifests().find_by_tag(name.as_str(), t.as_str()).await?,
        Reference::Digest(d) => state.db.manifests().find_by_digest(name.as_str(), d).await?,
    };
    let m = found.ok_or_else(|| oci::manifest_unknown(name, &reference))?;
    if let Reference::Tag(t) = &reference {
        record_pull(state, name, t.as_str(), m.tag_pulled_at);
    }
    let headers = [
        ("content-type", m.media_type),
        ("docker-content-digest", m.digest.to_string()),
        ("etag", format!("\"{}\"", m.digest)),
        ("content-length", m.content.len().to_string()),
    ];
    if call.method == Method::HEAD {
        return Ok(response(StatusCode::OK, &headers, Body::empty()));
    }
    state.metrics.sent("manifest", m.content.len() as u64);
    Ok(response(StatusCode::OK, &headers, Body::from(m.content)))
}

pub(super) async fn put(
    state: &AppState,
    name: &RepositoryName,
    reference: &str,
    call: &Call,
    body: Body,
) -> Result<Response> {
    let reference = parse_reference(reference)?;
    let limit = state.config.max_manifest_bytes;
    let too_large = || {
        RegistryError::oci(
            ErrorCode::SizeInvalid,
            format!("manifest is larger than the registry's limit of {limit} bytes"),
        )
        .with_status(StatusCode::PAYLOAD_TOO_LARGE)
    };
    if call.header(header::CONTENT_LENGTH).and_then(|v| v.parse::<usize>().ok()).is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    let content_type = call.header(header::CONTENT_TYPE).map(str::to_owned);
    let body = axum::body::to_bytes(body, limit).await.map_err(|e| {
        if std::error::Error::source(&e).is_some_and(|s| s.is::<http_body_util::LengthLimitError>()) {
            too_large()
        } else {
            RegistryError::oci(ErrorCode::ManifestInvalid, format!("the manifest body could not be read: {e}"))
        }
    })?;
    state.metrics.received("manifest", body.len() as u64);
    let digest = Digest::of(&body);
    if let Reference::Digest(expected) = &reference {
        if *expected != digest {
            return Err(oci::digest_invalid(format!(
                "the manifest's digest is {digest}, not {expected}; nothing was stored"
            )));
        }
    }
    let parsed = manifest::parse(&body, content_type.as_deref())?;
    let existing = state.db.repositories().find(name.as_str()).await?;
    for r in &parsed.references {
        match r.kind {
            TargetKind::Blob => {
                let blob = state.db.blobs().find_in_repository(name.as_str(), &r.digest).await?;
                let blob = blob.ok_or_else(|| missing(name, &r.digest, "blob"))?;
                if blob.size != r.size {
                    return Err(RegistryError::oci(
                        ErrorCode::ManifestInvalid,
                        format!("descriptor for {} says {} bytes but the blob has {}", r.digest, r.size, blob.size),
                    ));
                }
            }
            TargetKind::Manifest => {
                let found = match existing {
                    Some(repo) => state.db.manifests().exists(repo, &r.digest).await?,
                    None => false,
                };
                if !found {
                    return Err(missing(name, &r.digest, "manifest"));
                }
            }
        }
    }
    let new_manifest = NewManifest {
        digest,
        media_type: &parsed.media_type,
        artifact_type: parsed.artifact_type.as_deref(),
        subject: parsed.subject,
        annotations: parsed.annotations.clone(),
        content: &body,
        references: parsed.references.iter().map(|r| (r.digest, r.kind)).collect(),
    };
    let tag = match &reference {
        Reference::Tag(t) => Some(t.as_str()),
        Reference::Digest(_) => None,
    };
    let repo = match existing {
        Some(repo) => repo,
        None => state.db.repositories().ensure(name.as_str()).await?,
    };
    let immutable = match tag {
        Some(t) => lifecycle::immutable_pattern(state, name, t).await?,
        None => None,
    };
    let rule = TagRule { immutable: immutable.is_some() };
    match state.db.manifests().put(repo, &new_manifest, tag, rule).await? {
        PutOutcome::Stored { .. } => {}
        PutOutcome::Refused(Unstored::Blob(d)) => return Err(missing(name, &d, "blob")),
        PutOutcome::Refused(Unstored::Manifest(d)) => return Err(missing(name, &d, "manifest")),
        PutOutcome::Refused(Unstored::Quota(q)) => {
            return Err(RegistryError::oci(ErrorCode::Denied, q.refusal("manifest")))
        }
        PutOutcome::Refused(Unstored::Immutable { current }) => {
            let pattern = immutable.unwrap_or_default();
            let tag = tag.unwrap_or_default();
            return Err(RegistryError::oci(
                ErrorCode::Denied,
                lifecycle::immutable_message(name, tag, &pattern, "moved"),
            )
            .with_detail(serde_json::json!({ "tag": tag, "current": current.to_string(), "pattern": pattern })));
        }
    }
    tracing::info!(repository = %name, %digest, tag, media_type = parsed.media_type, "manifest stored");
    let object = match tag {
        Some(t) => format!("{name}:{t}"),
        None => format!("{name}@{digest}"),
    };
    record(state, call, "manifest.push", &object, name, Some(serde_json::json!({ "digest": digest.to_string() })))
        .await;
    if let Some(tag) = tag {
        preheat_new_tag(state, call, name, tag).await;
    }
    let mut headers = vec![
        ("location", format!("/v2/{name}/manifests/{digest}")),
        ("docker-content-digest", digest.to_string()),
        ("content-length", "0".to_owned()),
    ];
    if let Some(subject) = parsed.subject {
        headers.push(("oci-subject", subject.to_string()));
    }
    Ok(response(StatusCode::CREATED, &headers, Body::empty()))
}

/// Records a pull of `tag` for the retention rules, at most once an hour
/// per tag and off the request's path: a pull never waits on a write.
fn record_pull(state: &AppState, name: &RepositoryName, tag: &str, last: Option<i64>) {
    use crate::metadata::now;
    if last.is_some_and(|at| at >= now() - crate::metadata::PULL_RESOLUTION_SECS) {
        return;
    }
    let (db, name, tag) = (state.db.clone(), name.to_string(), tag.to_owned());
    tokio::spawn(async move {
        if let Err(e) = db.tags().record_pull(&name, &tag).await {
            tracing::debug!(error = %e, repository = name, tag, "could not record a pull");
        }
    });
}

/// Starts the preheat jobs a namespace asks for on every new tag; what
/// cannot start is logged, and the push stands either way.
async fn preheat_new_tag(state: &AppState, call: &Call, name: &RepositoryName, tag: &str) {
    for (cluster, job) in preheat::on_push(state, name, tag, &call.caller.principal).await {
        match job {
            Ok(job) => {
                tracing::info!(repository = %name, tag, cluster, job = job.id, nodes = job.nodes.len(), "preheating the new tag");
                let object = format!("{name}:{tag}");
                let detail = serde_json::json!({ "trigger": "push", "cluster": cluster, "job": job.id, "nodes": job.nodes.len() });
                record(state, call, "cluster.preheat", &object, name, Some(detail)).await;
            }
            Err(e) => tracing::warn!(repository = %name, tag, cluster, error = %e, "the new tag is not preheated"),
        }
    }
}

fn missing(name: &RepositoryName, digest: &Digest, what: &str) -> RegistryError {
    RegistryError::oci(
        ErrorCode::ManifestBlobUnknown,
        format!("the manifest references {what} {digest}, which is not in repository {name}; push it first"),
    )
    .with_detail(serde_json::json!({ "digest": digest.to_string() }))
}

pub(super) async fn delete(state: &AppState, name: &RepositoryName, reference: &str, call: &Call) -> Result<Response> {
    let reference = existing_reference(name, reference)?;
    let repo =
        state.db.repositories().find(name.as_str()).await?.ok_or_else(|| oci::manifest_unknown(name, &reference))?;
    let deleted = match &reference {
        Reference::Tag(t) => {
            lifecycle::check_tag_deletable(state, name, t.as_str()).await?;
            state.db.tags().delete(repo, t.as_str()).await?.is_some()
        }
        Reference::Digest(d) => {
            lifecycle::check_manifest_deletable(state, name, repo, d).await?;
            state.db.manifests().delete(repo, d).await?
        }
    };
    if !deleted {
        return Err(oci::manifest_unknown(name, &reference));
    }
    tracing::info!(repository = %name, %reference, "manifest deleted");
    let (action, object) = match &reference {
        Reference::Tag(t) => ("tag.delete", format!("{name}:{t}")),
        Reference::Digest(d) => ("manifest.delete", format!("{name}@{d}")),
    };
    record(state, call, action, &object, name, None).await;
    Ok(response(StatusCode::ACCEPTED, &[("content-length", "0".into())], Body::empty()))
}

/// Records a write in the audit log, attributed to the repository's tenant.
pub(super) async fn record(
    state: &AppState,
    call: &Call,
    action: &str,
    object: &str,
    name: &RepositoryName,
    detail: Option<serde_json::Value>,
) {
    let tenant = match state.auth.policy.namespace(&state.db, name.namespace()).await {
        Ok(ns) => ns.map(|n| n.tenant_id),
        Err(_) => None,
    };
    audit::record(
        state,
        Event {
            actor: call.caller.principal.actor(),
            action,
            object,
            tenant,
            source: &call.caller.source,
            outcome: "success",
            detail,
        },
    )
    .await;
}

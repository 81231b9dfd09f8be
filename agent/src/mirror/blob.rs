//! Blob GET/HEAD on the mirror: the client's token is checked offline, the
//! scheduler admits the agent to the blob's swarm on the client's behalf,
//! and bytes come from the cache, the piece engine, or (acceleration off,
//! scheduler unreachable) straight from the registry.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, HeaderMap, Response, StatusCode};
use bytes::Bytes;
use damselfly_core::p2p::JoinMode;
use damselfly_core::range::{parse_range, ByteRange};
use damselfly_core::Digest;
use futures_util::stream;

use super::relay::{bearer, oci_error, relay_response, timed_out, unreachable_registry, MirrorState, ANSWER_TIMEOUT};
use crate::error::{Error, Report};
use crate::piece::Download;
use crate::supernode::unavailable;

/// Answers a blob GET or HEAD.
pub async fn serve(state: &MirrorState, head: bool, name: &str, digest: Digest, headers: &HeaderMap) -> Response<Body> {
    let Some(challenge) = state.supernode.challenge() else {
        return passthrough(state, head, name, digest, headers).await;
    };
    let Some(token) = bearer(headers) else {
        return oci_error(
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
            "authentication required: get a token from the registry's realm",
            Some(challenge.header(Some(name))),
        );
    };
    // Checked here, before anything cached can leak: the cache is shared by every client of the node.
    if !state.supernode.client_may_pull(&token, name).await {
        return oci_error(
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
            &format!("the token does not grant pull on {name}"),
            Some(challenge.header(Some(name))),
        );
    }
    let have = state.engine.have(&digest);
    let (plan, size) = match state.supernode.join(name, digest, Some(&token), have, Default::default()).await {
        Ok(plan) if plan.mode == JoinMode::P2p => {
            state.offline.admit(name, digest);
            let size = plan.size;
            (Some(plan), size)
        }
        Ok(_) => return passthrough(state, head, name, digest, headers).await,
        // The registry refused the client: let it answer the client itself.
        Err(Error::Refused { status, .. }) => {
            tracing::info!(status, %digest, repository = name, "the registry refused the join; passing the request through");
            return passthrough(state, head, name, digest, headers).await;
        }
        // The registry cannot be reached: a blob it admitted this
        // repository's clients to, and that is complete here, is served from
        // the cache (see `super::offline`); anything else is passed through,
        // which fails as fast as the registry does.
        Err(e) => match cached_size(state, name, &digest) {
            Some(size) => {
                tracing::info!(error = %Report(&e), %digest, repository = name, "the registry cannot be reached; serving the blob from the cache");
                (None, size)
            }
            // No answer (or paused after none a moment ago): passing through to
            // the same registry would fail too, or wait out another timeout.
            None if matches!(e, Error::RegistryDown { .. } | Error::Unreachable { .. }) => {
                return unreachable_registry(&Report(&e).to_string())
            }
            None => {
                tracing::info!(error = %Report(&e), %digest, "scheduler unavailable; passing the blob through");
                return passthrough(state, head, name, digest, headers).await;
            }
        },
    };
    let asked = headers.get(header::RANGE).and_then(|v| v.to_str().ok());
    let range = match parse_range(asked, size) {
        ByteRange::Full => None,
        ByteRange::Partial(first, last) => Some((first, last + 1)),
        ByteRange::Unsatisfiable => {
            return Response::builder()
                .status(StatusCode::RANGE_NOT_SATISFIABLE)
                .header(header::CONTENT_RANGE, format!("bytes */{size}"))
                .body(Body::empty())
                .unwrap_or_default()
        }
    };
    let (start, end) = range.unwrap_or((0, size));
    let mut builder = Response::builder()
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header(header::CONTENT_LENGTH, end - start)
        .header(header::ACCEPT_RANGES, "bytes")
        .header("docker-content-digest", digest.to_string())
        .header("docker-distribution-api-version", "registry/2.0");
    if range.is_some() {
        builder = builder
            .status(StatusCode::PARTIAL_CONTENT)
            .header(header::CONTENT_RANGE, format!("bytes {start}-{}/{size}", end.saturating_sub(1)));
    }
    if head {
        return builder.body(Body::empty()).unwrap_or_default();
    }
    // Starting may re-read and re-verify a partial blob left by an earlier run: keep it off the async workers.
    let started = match plan {
        Some(plan) => tokio::task::block_in_place(|| state.engine.start(name, digest, Some(token), plan)),
        None => Ok(None),
    };
    let download = match started {
        Ok(d) => d,
        Err(e) => {
            tracing::warn!(error = %Report(&e), %digest, "cannot cache the blob; passing it through");
            return passthrough(state, head, name, digest, headers).await;
        }
    };
    let body = match download {
        Some(d) => Body::from_stream(follow(d, start, end, range.is_none())),
        None => {
            let cache = state.engine.cache().clone();
            let in_use = cache.use_blob(&digest);
            match std::fs::File::open(cache.complete_path(&digest)) {
                Ok(f) => {
                    // The guard lives as long as the body streams.
                    let s = futures_util::StreamExt::map(crate::cache::stream_range(f, start, end), move |c| {
                        let _ = &in_use;
                        c
                    });
                    Body::from_stream(s)
                }
                Err(_) => return passthrough(state, head, name, digest, headers).await,
            }
        }
    };
    builder.body(body).unwrap_or_default()
}

/// Streams `[start, end)` of a download in order, each piece as soon as it
/// is verified. For a whole-blob read, the last bytes go out only once the
/// download holds every piece, each verified (together they are the blob:
/// see the piece engine's comment): on any failure the stream errors, the
/// connection drops mid-body, and the client retries instead of keeping a
/// wrong blob.
fn follow(
    d: Arc<Download>,
    start: u64,
    end: u64,
    whole: bool,
) -> impl futures_util::Stream<Item = std::io::Result<Bytes>> {
    stream::try_unfold((d, start), move |(d, pos)| async move {
        if pos >= end {
            return Ok(None);
        }
        let index = d.layout.geometry().piece_at(pos);
        d.wait_piece(index).await.map_err(std::io::Error::other)?;
        let (piece_start, piece_len) = d.layout.span(index);
        let len = (piece_start + piece_len).min(end) - pos;
        let bytes = d.read(pos, len).await?;
        let next = pos + len;
        if whole && next >= end {
            if let Err(e) = d.wait_verified().await {
                tracing::error!(digest = %d.digest, "assembled bytes do not match the digest; aborting");
                return Err(std::io::Error::other(e));
            }
        }
        Ok(Some((bytes, (d, next))))
    })
}

/// The size of a blob the cache holds whole and the registry admitted
/// `name`'s clients to earlier in this process's life.
fn cached_size(state: &MirrorState, name: &str, digest: &Digest) -> Option<u64> {
    let cache = state.engine.cache();
    let layout = cache.layout(digest)?;
    (state.offline.was_admitted(name, digest) && cache.is_complete(digest)).then(|| layout.size())
}

/// The blob straight from the registry with the client's own credentials.
async fn passthrough(
    state: &MirrorState,
    head: bool,
    name: &str,
    digest: Digest,
    headers: &HeaderMap,
) -> Response<Body> {
    let url = format!("{}/v2/{name}/blobs/{digest}", state.supernode.base());
    let http = state.engine.http();
    let mut req = if head { http.head(url) } else { http.get(url) };
    for h in [header::AUTHORIZATION, header::ACCEPT, header::RANGE] {
        if let Some(v) = headers.get(&h) {
            req = req.header(&h, v);
        }
    }
    let sent = tokio::time::timeout(ANSWER_TIMEOUT, req.send()).await;
    state.supernode.set_down(!matches!(&sent, Ok(Ok(r)) if !unavailable(r.status().as_u16())));
    match sent {
        Ok(Ok(r)) => relay_response(r, Some(state.metrics.clone())),
        Ok(Err(e)) => unreachable_registry(&e.to_string()),
        Err(_) => unreachable_registry(&timed_out()),
    }
}

//! What the mirror's routes share: their state, the relay of a request to
//! the registry exactly as the client sent it, and the OCI error answers
//! the mirror gives itself.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderMap, HeaderName, Method, Response, StatusCode};
use futures_util::TryStreamExt;

use super::offline::{Offline, MAX_MANIFEST_BYTES};
use crate::error::Report;
use crate::metrics::Metrics;
use crate::piece::Engine;
use crate::supernode::{unavailable, Supernode};

/// What the mirror needs.
#[derive(Clone)]
pub struct MirrorState {
    /// The registry's scheduler, challenge and keys.
    pub supernode: Arc<Supernode>,
    /// Downloads.
    pub engine: Arc<Engine>,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// For relaying: follows no redirects, so clients see them.
    pub relay: reqwest::Client,
    /// What can still be served while the registry cannot be reached.
    pub offline: Arc<Offline>,
}

/// How long the registry may take to start answering a pull (its status
/// and headers; the body may take as long as it takes) before the mirror
/// treats it as unreachable: a registry that hangs (stopped, partitioned)
/// must not hold a runtime's pull forever.
pub(super) const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// Request headers passed on to the registry.
const FORWARDED: [HeaderName; 6] = [
    header::AUTHORIZATION,
    header::ACCEPT,
    header::CONTENT_TYPE,
    header::CONTENT_LENGTH,
    header::RANGE,
    header::USER_AGENT,
];

/// Sends the request to the registry and relays the answer exactly. A
/// manifest pull is also remembered, and answered from what was remembered
/// when the registry cannot answer it (see [`Offline`]).
pub(super) async fn relay(state: &MirrorState, req: Request) -> Response<Body> {
    let path_and_query = req.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/").to_owned();
    let url = format!("{}{path_and_query}", state.supernode.base());
    let method = req.method().clone();
    let pull = method == Method::GET || method == Method::HEAD;
    let manifest = manifest_path(req.uri().path()).filter(|_| pull);
    let headers = req.headers().clone();
    if let Some((name, reference)) = &manifest {
        // Known to be down a moment ago: no need to wait for it again.
        if let Err(e) = state.supernode.registry_down() {
            return match offline_manifest(state, name, reference, &headers, method == Method::HEAD).await {
                Some(answer) => answer,
                None => unreachable_registry(&Report(&e).to_string()),
            };
        }
    }
    let mut out = state.relay.request(method.clone(), url);
    for name in FORWARDED {
        for v in req.headers().get_all(&name) {
            out = out.header(&name, v);
        }
    }
    let body = req.into_body().into_data_stream();
    out = out.body(reqwest::Body::wrap_stream(body));
    // A push may take long before the registry answers; a pull may not.
    let sent = if pull {
        match tokio::time::timeout(ANSWER_TIMEOUT, out.send()).await {
            Ok(sent) => sent.map_err(|e| e.to_string()),
            Err(_) => Err(timed_out()),
        }
    } else {
        out.send().await.map_err(|e| e.to_string())
    };
    state.supernode.set_down(sent.as_ref().map_or(true, |r| unavailable(r.status().as_u16())));
    let Some((name, reference)) = manifest else {
        return match sent {
            Ok(r) => relay_response(r, None),
            Err(e) => unreachable_registry(&e),
        };
    };
    match sent {
        Ok(r) if unavailable(r.status().as_u16()) => {
            let failed = format!("the registry answered {}", r.status());
            match offline_manifest(state, &name, &reference, &headers, method == Method::HEAD).await {
                Some(answer) => answer,
                None => {
                    tracing::warn!(error = failed, repository = name, reference, "manifest pull failed");
                    relay_response(r, None)
                }
            }
        }
        Ok(r) if r.status() == StatusCode::OK && method == Method::GET => remember(state, &name, &reference, r).await,
        Ok(r) => relay_response(r, None),
        Err(e) => match offline_manifest(state, &name, &reference, &headers, method == Method::HEAD).await {
            Some(answer) => answer,
            None => unreachable_registry(&e),
        },
    }
}

/// Why a pull got no answer in time.
pub(super) fn timed_out() -> String {
    format!("no answer within {} s", ANSWER_TIMEOUT.as_secs())
}

/// `/v2/<name>/manifests/<reference>`, split from the end of the path.
fn manifest_path(path: &str) -> Option<(String, String)> {
    let rest = path.strip_prefix("/v2/")?;
    let (name, reference) = rest.rsplit_once("/manifests/")?;
    (!name.is_empty() && !reference.is_empty() && !reference.contains('/'))
        .then(|| (name.to_owned(), reference.to_owned()))
}

/// Relays a manifest the registry served, remembering it if it is small enough to.
async fn remember(state: &MirrorState, name: &str, reference: &str, r: reqwest::Response) -> Response<Body> {
    if r.content_length().is_none_or(|len| len > MAX_MANIFEST_BYTES) {
        return relay_response(r, None);
    }
    let text = |h: &str| r.headers().get(h).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let (content_type, digest) = (text("content-type").unwrap_or_default(), text("docker-content-digest"));
    let mut builder = Response::builder().status(StatusCode::OK);
    for (name, value) in r.headers() {
        if !is_hop_by_hop(name.as_str()) {
            builder = builder.header(name.as_str(), value.as_bytes());
        }
    }
    match r.bytes().await {
        Ok(body) => {
            state.offline.keep_manifest(name, reference, &content_type, digest.as_deref(), body.clone());
            builder.body(Body::from(body)).unwrap_or_else(|_| unreachable_registry("bad response headers"))
        }
        Err(e) => unreachable_registry(&e.to_string()),
    }
}

/// A remembered manifest, for a client whose token grants pull on `name`.
async fn offline_manifest(
    state: &MirrorState,
    name: &str,
    reference: &str,
    headers: &HeaderMap,
    head: bool,
) -> Option<Response<Body>> {
    let token = bearer(headers)?;
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    let stored = state.offline.manifest(name, reference, accept)?;
    if !state.supernode.client_may_pull(&token, name).await {
        return None;
    }
    tracing::info!(repository = name, reference, "the registry cannot be reached; serving the manifest last seen");
    let mut builder = Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, &stored.content_type)
        .header(header::CONTENT_LENGTH, stored.body.len())
        .header("docker-distribution-api-version", "registry/2.0");
    if let Some(d) = &stored.digest {
        builder = builder.header("docker-content-digest", d);
    }
    let body = if head { Body::empty() } else { Body::from(stored.body) };
    builder.body(body).ok()
}

/// A registry response as the mirror's response, streamed; bytes are counted if `metrics` is given.
pub(super) fn relay_response(r: reqwest::Response, metrics: Option<Arc<Metrics>>) -> Response<Body> {
    let mut builder = Response::builder().status(r.status().as_u16());
    for (name, value) in r.headers() {
        if is_hop_by_hop(name.as_str()) {
            continue;
        }
        builder = builder.header(name.as_str(), value.as_bytes());
    }
    let stream = r.bytes_stream().map_err(std::io::Error::other).inspect_ok(move |chunk| {
        if let Some(m) = &metrics {
            m.received("passthrough", chunk.len() as u64);
        }
    });
    builder.body(Body::from_stream(stream)).unwrap_or_else(|_| unreachable_registry("bad response headers"))
}

fn is_hop_by_hop(name: &str) -> bool {
    matches!(
        name,
        "connection" | "keep-alive" | "proxy-connection" | "transfer-encoding" | "upgrade" | "te" | "trailer"
    )
}

/// The OCI error body for a registry the mirror cannot reach.
pub(super) fn unreachable_registry(detail: &str) -> Response<Body> {
    tracing::warn!(error = detail, "cannot reach the registry");
    oci_error(StatusCode::BAD_GATEWAY, "UNAVAILABLE", "the agent cannot reach the registry; try again shortly", None)
}

/// An OCI error response.
pub(super) fn oci_error(status: StatusCode, code: &str, message: &str, challenge: Option<String>) -> Response<Body> {
    let body = serde_json::json!({"errors": [{"code": code, "message": message}]}).to_string();
    let mut builder = Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .header("docker-distribution-api-version", "registry/2.0");
    if let Some(c) = challenge {
        builder = builder.header(header::WWW_AUTHENTICATE, c);
    }
    builder.body(Body::from(body)).unwrap_or_default()
}

/// The client's bearer token, if it sent one.
pub(super) fn bearer(headers: &HeaderMap) -> Option<String> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim().to_owned())
}

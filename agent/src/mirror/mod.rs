//! The registry mirror (`--listen`, :65001) container runtimes pull from.
//!
//! Everything but blob reads is relayed to the registry as it is, with the
//! client's own credentials, so clients see the registry's own challenge,
//! manifests and errors. Blob GET/HEAD go through [`blob`].

mod blob;

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderName, Method, Response, StatusCode};
use axum::Router;
use damselfly_core::Digest;
use futures_util::TryStreamExt;

use crate::metrics::Metrics;
use crate::piece::Engine;
use crate::registry::RegistryClient;

/// What the mirror needs.
#[derive(Clone)]
pub struct MirrorState {
    /// Registry client.
    pub registry: Arc<RegistryClient>,
    /// Downloads.
    pub engine: Arc<Engine>,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// For relaying: follows no redirects, so clients see them.
    pub relay: reqwest::Client,
}

/// The mirror's routes: one handler that parses the path itself, since
/// repository names have any number of segments.
pub fn router(state: MirrorState) -> Router {
    Router::new().fallback(dispatch).with_state(state)
}

/// `/v2/<name>/blobs/<digest>`, split from the end of the path.
fn blob_path(path: &str) -> Option<(String, Digest)> {
    let rest = path.strip_prefix("/v2/")?;
    let (name, digest) = rest.rsplit_once("/blobs/")?;
    if name.is_empty() || digest.contains('/') {
        return None;
    }
    Some((name.to_owned(), digest.parse().ok()?))
}

async fn dispatch(State(state): State<MirrorState>, req: Request) -> Response<Body> {
    if req.method() == Method::GET || req.method() == Method::HEAD {
        if let Some((name, digest)) = blob_path(req.uri().path()) {
            return blob::serve(&state, req.method() == Method::HEAD, &name, digest, req.headers()).await;
        }
    }
    relay(&state, req).await
}

/// Request headers passed on to the registry.
const FORWARDED: [HeaderName; 6] = [
    header::AUTHORIZATION,
    header::ACCEPT,
    header::CONTENT_TYPE,
    header::CONTENT_LENGTH,
    header::RANGE,
    header::USER_AGENT,
];

/// Sends the request to the registry and relays the answer exactly.
async fn relay(state: &MirrorState, req: Request) -> Response<Body> {
    let path_and_query = req.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/").to_owned();
    let url = format!("{}{path_and_query}", state.registry.base());
    let method = req.method().clone();
    let mut out = state.relay.request(method, url);
    for name in FORWARDED {
        for v in req.headers().get_all(&name) {
            out = out.header(&name, v);
        }
    }
    let body = req.into_body().into_data_stream();
    out = out.body(reqwest::Body::wrap_stream(body));
    match out.send().await {
        Ok(r) => relay_response(r, None),
        Err(e) => unreachable_registry(&e.to_string()),
    }
}

/// A registry response as the mirror's response, streamed; bytes are counted if `metrics` is given.
pub(crate) fn relay_response(r: reqwest::Response, metrics: Option<Arc<Metrics>>) -> Response<Body> {
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
pub(crate) fn unreachable_registry(detail: &str) -> Response<Body> {
    tracing::warn!(error = detail, "cannot reach the registry");
    oci_error(StatusCode::BAD_GATEWAY, "UNAVAILABLE", "the agent cannot reach the registry; try again shortly", None)
}

/// An OCI error response.
pub(crate) fn oci_error(status: StatusCode, code: &str, message: &str, challenge: Option<String>) -> Response<Body> {
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
pub(crate) fn bearer(headers: &HeaderMap) -> Option<String> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blob_paths_parse_from_the_end() {
        let d = Digest::of(b"x");
        assert_eq!(blob_path(&format!("/v2/a/b/c/blobs/{d}")), Some(("a/b/c".to_owned(), d)));
        assert_eq!(blob_path(&format!("/v2/blobs/blobs/{d}")), Some(("blobs".to_owned(), d)));
        assert_eq!(blob_path(&format!("/v2/a/blobs/uploads/{d}")), None);
        assert_eq!(blob_path("/v2/a/manifests/latest"), None);
        assert_eq!(blob_path(&format!("/v2//blobs/{d}")), None);
    }
}

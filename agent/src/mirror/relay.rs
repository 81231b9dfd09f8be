//! What the mirror's routes share: their state, the relay of a request to
//! the registry exactly as the client sent it, and the OCI error answers
//! the mirror gives itself.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderMap, HeaderName, Response, StatusCode};
use futures_util::TryStreamExt;

use crate::metrics::Metrics;
use crate::piece::Engine;
use crate::supernode::Supernode;

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
pub(super) async fn relay(state: &MirrorState, req: Request) -> Response<Body> {
    let path_and_query = req.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/").to_owned();
    let url = format!("{}{path_and_query}", state.supernode.base());
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

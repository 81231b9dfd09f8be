//! The OCI Distribution API under `/v2/`.

mod authz;
mod blobs;
mod listing;
mod manifests;
pub mod path;
mod referrers;
mod uploads;

use std::collections::HashMap;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use damselfly_core::{Digest, ErrorCode};

use crate::error::{oci, RegistryError, Result};
use crate::services;
use crate::state::AppState;
use path::OciPath;

/// What a handler gets besides the state and the body: method, parsed query and headers.
pub(crate) struct Call {
    pub method: Method,
    pub query: HashMap<String, String>,
    pub headers: HeaderMap,
    pub caller: authz::Caller,
}

impl Call {
    fn header(&self, name: header::HeaderName) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Entry point for every `/v2` request: parse the path, then dispatch on path and method.
pub async fn dispatch(State(state): State<AppState>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let method = parts.method.clone();
    let (route, result) = match OciPath::parse(parts.uri.path()) {
        Ok(Some(path)) => {
            let route = path.route();
            let source = parts
                .extensions
                .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
                .map(|c| c.0.ip().to_string())
                .unwrap_or_default();
            match authz::authorize(&state, &path, &parts.method, &parts.headers, source).await {
                Ok(caller) => {
                    let query = parts.uri.query().map(crate::query::map).unwrap_or_default();
                    let call = Call { method: parts.method, query, headers: parts.headers, caller };
                    (route, handle(&state, path, call, body).await)
                }
                Err(e) => {
                    drain_small_body(&state, &parts.headers, body).await;
                    (route, Err(e))
                }
            }
        }
        Ok(None) => (
            crate::observe::RouteLabel::Other,
            Err(RegistryError::oci(
                ErrorCode::Unsupported,
                format!("{} is not an OCI Distribution API endpoint", parts.uri.path()),
            )
            .with_status(StatusCode::NOT_FOUND)),
        ),
        Err(e) => (crate::observe::RouteLabel::Other, Err(e)),
    };
    let failed_write = result.is_err() && !matches!(method, Method::GET | Method::HEAD);
    let mut response = result.unwrap_or_else(IntoResponse::into_response);
    if failed_write {
        // The request body may be partly unread; a pooled client must not
        // send its next request on this connection.
        response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response.extensions_mut().insert(route);
    response.headers_mut().insert("docker-distribution-api-version", HeaderValue::from_static("registry/2.0"));
    response
}

async fn handle(state: &AppState, path: OciPath, call: Call, body: Body) -> Result<Response> {
    use Method as M;
    use OciPath as P;
    match (path, call.method.clone()) {
        (P::Base, M::GET | M::HEAD) => {
            Ok((StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], "{}").into_response())
        }
        (P::Catalog, M::GET) => listing::catalog(state, &call).await,
        (P::Tags(name), M::GET) => listing::tags(state, &name, &call).await,
        (P::Manifest(name, r), M::GET | M::HEAD) => manifests::get(state, &name, &r, &call).await,
        (P::Manifest(name, r), M::PUT) => manifests::put(state, &name, &r, &call, body).await,
        (P::Manifest(name, r), M::DELETE) => manifests::delete(state, &name, &r, &call).await,
        (P::Blob(name, d), M::GET | M::HEAD) => blobs::get(state, &name, &d, &call).await,
        (P::Blob(name, d), M::DELETE) => blobs::delete(state, &name, &d, &call).await,
        (P::UploadStart(name), M::POST) => uploads::start(state, &name, &call, body).await,
        (P::Upload(name, id), M::GET) => uploads::status(state, &name, &id).await,
        (P::Upload(name, id), M::PATCH) => uploads::patch(state, &name, &id, &call, body).await,
        (P::Upload(name, id), M::PUT) => uploads::finish(state, &name, &id, &call, body).await,
        (P::Upload(name, id), M::DELETE) => uploads::cancel(state, &name, &id).await,
        (P::Referrers(name, d), M::GET) => referrers::list(state, &name, &d, &call).await,
        (_, method) => {
            Err(RegistryError::oci(ErrorCode::Unsupported, format!("{method} is not supported on this endpoint")))
        }
    }
}

/// Reads and drops a refused request's body when it is small (a manifest),
/// so the client, still sending it, reads the error instead of a broken pipe.
async fn drain_small_body(state: &AppState, headers: &HeaderMap, body: Body) {
    let limit = state.config.max_manifest_bytes;
    let small = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
        .is_some_and(|n| n > 0 && n <= limit);
    if small {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), axum::body::to_bytes(body, limit)).await;
    }
}

/// Parses a digest from a path or query, answering `DIGEST_INVALID` with the reason.
pub(crate) fn parse_digest(s: &str) -> Result<Digest> {
    s.parse().map_err(|e: damselfly_core::DigestError| oci::digest_invalid(e.to_string()))
}

/// The `n` and `last` parameters of a paginated list. `n` is capped at 1000.
pub(crate) fn pagination(call: &Call) -> Result<(i64, Option<String>)> {
    const MAX: i64 = 1000;
    let n = match call.query.get("n") {
        None => MAX,
        Some(v) => v.parse::<i64>().ok().filter(|n| *n >= 0).ok_or_else(|| {
            RegistryError::oci(ErrorCode::PaginationNumberInvalid, format!("n={v:?} is not a non-negative number"))
        })?,
    };
    Ok((n.min(MAX), call.query.get("last").cloned()))
}

/// Builds a response with headers; the builder cannot fail for the static names used here.
pub(crate) fn response(status: StatusCode, headers: &[(&str, String)], body: Body) -> Response {
    let mut r = Response::new(body);
    *r.status_mut() = status;
    for (name, value) in headers {
        if let (Ok(n), Ok(v)) = (header::HeaderName::try_from(*name), HeaderValue::from_str(value)) {
            r.headers_mut().insert(n, v);
        }
    }
    r
}

/// A service's error as the OCI code that names it most precisely: the one
/// place the Distribution API maps the services' errors.
impl From<services::Error> for RegistryError {
    fn from(e: services::Error) -> Self {
        use services::{Error as E, Thing as T};
        match e {
            E::Denied(message) => RegistryError::oci(ErrorCode::Denied, message),
            E::NotFound(p) => {
                let code = match p.what {
                    T::Manifest | T::Tag => ErrorCode::ManifestUnknown,
                    _ => ErrorCode::NameUnknown,
                };
                RegistryError::oci(code, p.message)
            }
            E::Invalid(p) => match p.what {
                T::Manifest => RegistryError::oci(ErrorCode::ManifestInvalid, p.message),
                T::Tag => RegistryError::oci(ErrorCode::TagInvalid, p.message),
                T::Repository | T::Namespace => RegistryError::oci(ErrorCode::NameInvalid, p.message),
                _ => RegistryError::oci(ErrorCode::Unsupported, p.message).with_status(StatusCode::BAD_REQUEST),
            },
            E::Conflict(p) => RegistryError::oci(ErrorCode::Denied, p.message).with_status(StatusCode::CONFLICT),
            E::Database(e) => RegistryError::Database(e),
            E::Internal(detail) => RegistryError::Internal(detail),
        }
    }
}

//! What the P2P handlers take from a request (path parameters, a JSON
//! body), each refusing with the OCI error body every
//! other `/p2p/v1` answer carries rather than axum's plain-text rejection,
//! and the answers for a path or a method the API does not have.

use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{Method, StatusCode, Uri};
use damselfly_core::ErrorCode;
use serde::de::DeserializeOwned;

use crate::error::{RegistryError, Result};

/// A request the P2P API cannot read: `UNSUPPORTED` with the status axum
/// chose (400 for what does not parse, 415 for a body that is not JSON, …).
fn unreadable(status: StatusCode, what: &str, problem: String) -> RegistryError {
    RegistryError::oci(ErrorCode::Unsupported, format!("{what}: {problem}")).with_status(status)
}

/// Path parameters, e.g. the piece index of a seed request, which must be a
/// whole number from 0 to 4294967295.
pub(super) struct P2pPath<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for P2pPath<T> {
    type Rejection = RegistryError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(P2pPath(value)),
            Err(e @ PathRejection::FailedToDeserializePathParams(_)) => Err(unreadable(
                e.status(),
                "the path does not name what this endpoint takes (a piece index is a number from 0 to 4294967295)",
                e.body_text(),
            )),
            Err(e) => Err(unreadable(e.status(), "the path could not be read", e.body_text())),
        }
    }
}

/// A JSON body (`Content-Type: application/json`).
pub(super) struct P2pJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for P2pJson<T> {
    type Rejection = RegistryError;

    async fn from_request(request: Request, state: &S) -> Result<Self> {
        axum::Json::<T>::from_request(request, state).await.map(|axum::Json(value)| P2pJson(value)).map_err(
            |e: JsonRejection| unreadable(e.status(), "the body is not the JSON this endpoint takes", e.body_text()),
        )
    }
}

/// A path under `/p2p/v1` that is no endpoint.
pub(super) async fn unknown_endpoint(uri: Uri) -> RegistryError {
    RegistryError::oci(
        ErrorCode::Unsupported,
        format!("{} is not an endpoint of the P2P API; the README lists them under \"P2P supernode\"", uri.path()),
    )
    .with_status(StatusCode::NOT_FOUND)
}

/// An endpoint asked with a method it does not take.
pub(super) async fn method_not_allowed(method: Method, uri: Uri) -> RegistryError {
    RegistryError::oci(ErrorCode::Unsupported, format!("{method} is not supported on {}", uri.path()))
        .with_status(StatusCode::METHOD_NOT_ALLOWED)
}

//! The management API's one error type, and the one place that turns it into
//! a response: `{"errors":[{"code","message"}]}` with the status of its code.
//!
//! Kept apart from [`crate::error::RegistryError`] because the OCI error
//! codes describe repositories and blobs; these describe tenants, members
//! and accounts. A service's [`services::Error`] becomes one of these in
//! [`From`], which also says where its hint is done: at which endpoint.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::services::{self, Place};

/// Everything a management request can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No usable credentials.
    #[error("{0}")]
    Unauthorized(String),
    /// The caller may not do this (or may not know whether the object exists).
    #[error("{0}")]
    Denied(String),
    /// The object does not exist (said only to callers who may know).
    #[error("{0}")]
    NotFound(String),
    /// A name that is already taken.
    #[error("{0}")]
    Conflict(String),
    /// A body, parameter or name the API cannot accept.
    #[error("{0}")]
    InvalidRequest(String),
    /// Too many failed logins from this name or address; retry after this many seconds.
    #[error("too many failed logins; wait {0} s before trying again")]
    TooManyRequests(u64),
    /// The metadata database failed.
    #[error("metadata database error: {0}")]
    Database(#[from] sqlx::Error),
    /// Anything else that is the registry's fault, with detail for the log.
    #[error("{0}")]
    Internal(String),
}

/// The error document every failed management request returns.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    /// One entry per error; the API always sends exactly one.
    pub errors: Vec<ErrorEntry>,
}

/// One error.
#[derive(Serialize, ToSchema)]
pub struct ErrorEntry {
    /// `UNAUTHORIZED`, `DENIED`, `NOT_FOUND`, `CONFLICT`, `INVALID_REQUEST`,
    /// `TOOMANYREQUESTS`, `UNAVAILABLE` (the metadata database cannot be
    /// reached; retry after `Retry-After`) or `INTERNAL_ERROR`.
    pub code: &'static str,
    /// What went wrong and what to do next.
    pub message: String,
}

/// What a management request is told while the metadata database cannot be reached.
const DATABASE_UNREACHABLE: &str =
    "the registry's metadata database is unreachable; nothing was changed by this request, retry in a few seconds";

/// `503 UNAVAILABLE` in the management API's own body, for a request met by
/// a database outage (see `crate::health::fail_fast`).
pub fn database_unreachable() -> Response {
    ApiError::Database(sqlx::Error::PoolTimedOut).into_response()
}

/// Shorthand for handler results.
pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "UNAUTHORIZED"),
            ApiError::Denied(_) => (StatusCode::FORBIDDEN, "DENIED"),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "NOT_FOUND"),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, "CONFLICT"),
            ApiError::InvalidRequest(_) => (StatusCode::BAD_REQUEST, "INVALID_REQUEST"),
            ApiError::TooManyRequests(_) => (StatusCode::TOO_MANY_REQUESTS, "TOOMANYREQUESTS"),
            ApiError::Database(e) if crate::metadata::is_unreachable(e) => {
                (StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE")
            }
            ApiError::Database(_) | ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL_ERROR"),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        let message = match &self {
            ApiError::Database(e) if crate::metadata::is_unreachable(e) => {
                tracing::error!(error = %e, "metadata database unreachable");
                DATABASE_UNREACHABLE.to_owned()
            }
            ApiError::Database(_) | ApiError::Internal(_) => {
                // Internal detail goes to the log, not to the client.
                tracing::error!(error = %self, "management request failed");
                "the registry failed to complete the request; retry, and if it persists ask the operator to check the registry log".to_owned()
            }
            other => other.to_string(),
        };
        let body = ErrorBody { errors: vec![ErrorEntry { code, message }] };
        let mut response = (status, axum::Json(body)).into_response();
        match self {
            ApiError::Unauthorized(_) => {
                response
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Basic realm=\"damselfly\""));
            }
            ApiError::TooManyRequests(secs) => {
                response.headers_mut().insert(header::RETRY_AFTER, header::HeaderValue::from(secs));
            }
            ApiError::Database(_) if status == StatusCode::SERVICE_UNAVAILABLE => {
                response.headers_mut().insert(header::RETRY_AFTER, header::HeaderValue::from_static("5"));
                response.extensions_mut().insert(crate::error::DatabaseUnreachable);
            }
            _ => {}
        }
        response
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        ApiError::InvalidRequest(format!(
            "{}; send a JSON body (Content-Type: application/json) as described in /api/v1/openapi.json",
            rejection.body_text()
        ))
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        ApiError::InvalidRequest(format!("{}; see /api/v1/openapi.json for the parameters", rejection.body_text()))
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        ApiError::InvalidRequest(rejection.body_text())
    }
}

impl From<services::Error> for ApiError {
    fn from(e: services::Error) -> Self {
        use services::Error as E;
        let said = |p: services::Problem| match &p.hint {
            Some(hint) => hint.join(&p.message, &endpoint(&hint.at)),
            None => p.message,
        };
        match e {
            E::Denied(message) => ApiError::Denied(message),
            E::NotFound(p) => ApiError::NotFound(said(p)),
            E::Conflict(p) => ApiError::Conflict(said(p)),
            E::Invalid(p) => ApiError::InvalidRequest(said(p)),
            E::Database(e) => ApiError::Database(e),
            E::Internal(detail) => ApiError::Internal(detail),
        }
    }
}

/// The endpoint that does what a hint says, as the hint ends: " with GET /api/v1/tenants".
fn endpoint(place: &Place) -> String {
    match place {
        Place::Tenants => " with GET /api/v1/tenants".to_owned(),
        Place::NewNamespace => " with POST /api/v1/tenants/{tenant}/namespaces".to_owned(),
        Place::Namespaces { tenant } => format!(" with GET /api/v1/tenants/{tenant}/namespaces"),
        Place::P2pSwitch { namespace } => format!(" (PATCH /api/v1/namespaces/{namespace} {{\"p2p_enabled\": true}})"),
        Place::Members { tenant } => format!(" with GET /api/v1/tenants/{tenant}/members"),
        Place::Robots { tenant } => format!(" with GET /api/v1/tenants/{tenant}/robots"),
        Place::NewRobot { tenant } => format!(" with POST /api/v1/tenants/{tenant}/robots"),
        Place::RotateRobot { tenant, robot } => format!(" with POST /api/v1/tenants/{tenant}/robots/{robot}/rotate"),
        Place::Clusters { tenant } => format!(" with GET /api/v1/tenants/{tenant}/clusters"),
        Place::Users => " with GET /api/v1/users".to_owned(),
        Place::NewUser => " with POST /api/v1/users".to_owned(),
    }
}

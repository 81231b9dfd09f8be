//! The Distribution API's error type, and the one place that turns it into
//! an OCI error response: `{"errors":[{"code","message","detail"}]}`. A
//! service's error becomes one in `crate::oci`.

use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use damselfly_core::ErrorCode;

/// Everything a request can fail with.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// A failure the client caused or can act on, with its OCI error code.
    #[error("{}: {}", .0.code, .0.message)]
    Oci(Box<OciError>),
    /// The metadata database failed.
    #[error("metadata database error: {0}")]
    Database(#[from] sqlx::Error),
    /// The blob store failed.
    #[error("blob store I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// Anything else that is the registry's fault, with detail for the log.
    #[error("{0}")]
    Internal(String),
}

/// An OCI error with the status, message and headers it is sent with.
#[derive(Debug)]
pub struct OciError {
    /// The spec's code.
    pub code: ErrorCode,
    /// HTTP status; the code's default unless a rule says otherwise (413, 416).
    pub status: StatusCode,
    /// A sentence for the person reading the client's output.
    pub message: String,
    /// Structured detail, `null` when there is none.
    pub detail: serde_json::Value,
    /// Extra headers such as `Range` on a 416.
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

/// What a `503` asks the client to wait before retrying, in seconds.
const RETRY_AFTER_SECS: &str = "5";

/// Shorthand for handler results.
pub type Result<T, E = RegistryError> = std::result::Result<T, E>;

impl RegistryError {
    /// An OCI error with the code's default status.
    pub fn oci(code: ErrorCode, message: impl Into<String>) -> Self {
        let status = StatusCode::from_u16(code.http_status()).unwrap_or(StatusCode::BAD_REQUEST);
        RegistryError::Oci(Box::new(OciError {
            code,
            status,
            message: message.into(),
            detail: serde_json::Value::Null,
            headers: Vec::new(),
        }))
    }

    /// Overrides the status, for rules that pair a code with another status.
    pub fn with_status(mut self, status: StatusCode) -> Self {
        if let RegistryError::Oci(e) = &mut self {
            e.status = status;
        }
        self
    }

    /// Attaches structured detail.
    pub fn with_detail(mut self, detail: serde_json::Value) -> Self {
        if let RegistryError::Oci(e) = &mut self {
            e.detail = detail;
        }
        self
    }

    /// Adds a response header. Values that are not valid header text are dropped.
    pub fn with_header(mut self, name: HeaderName, value: impl AsRef<str>) -> Self {
        if let (RegistryError::Oci(e), Ok(v)) = (&mut self, HeaderValue::from_str(value.as_ref())) {
            e.headers.push((name, v));
        }
        self
    }

    /// The OCI code this error is reported with.
    pub fn code(&self) -> ErrorCode {
        match self {
            RegistryError::Oci(e) => e.code,
            _ => ErrorCode::InternalError,
        }
    }
}

impl IntoResponse for RegistryError {
    fn into_response(self) -> Response {
        let oci = match self {
            RegistryError::Oci(e) => *e,
            RegistryError::Database(e) if crate::metadata::is_unreachable(&e) => {
                tracing::error!(error = %e, "metadata database unreachable");
                let mut response = database_unreachable(
                    "the registry's metadata database is unreachable; nothing was changed by this request, retry in \
                     a few seconds",
                );
                // So that `crate::health::fail_fast` has the database looked at now.
                response.extensions_mut().insert(DatabaseUnreachable);
                return response;
            }
            RegistryError::Io(e) if is_storage_full(&e) => {
                tracing::error!(error = %e, "blob storage is full");
                return storage_full();
            }
            RegistryError::Database(e) if crate::metadata::is_disk_full(&e) => {
                tracing::error!(error = %e, "the metadata database's disk is full");
                return storage_full();
            }
            other => {
                // Internal detail goes to the log, not to the client.
                tracing::error!(error = %other, "request failed");
                OciError {
                    code: ErrorCode::InternalError,
                    status: StatusCode::INTERNAL_SERVER_ERROR,
                    message: "the registry failed to complete the request; retry, and if it persists ask the operator to check the registry log".into(),
                    detail: serde_json::Value::Null,
                    headers: Vec::new(),
                }
            }
        };
        let body = serde_json::json!({
            "errors": [{ "code": oci.code.as_str(), "message": oci.message, "detail": oci.detail }]
        });
        let mut response = (oci.status, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response();
        for (name, value) in oci.headers {
            response.headers_mut().append(name, value);
        }
        response.extensions_mut().insert(oci.code);
        response
    }
}

/// True when a write failed because the disk (or the registry's disk quota) is full.
pub fn is_storage_full(e: &std::io::Error) -> bool {
    matches!(e.kind(), std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded)
}

/// `507 Insufficient Storage` with an OCI error body: the registry's disk is
/// full. The Distribution spec has no code for this, so the body says
/// `UNKNOWN` and the status says what happened (RFC 4918: the server cannot
/// store what the request needs); it is a 5xx, so clients may retry, which
/// succeeds once an operator has freed space. Whatever the request wrote was
/// rolled back: a partial chunk is cut off its upload session (which stays
/// usable), a single-request upload's temporary file is deleted.
pub fn storage_full() -> Response {
    RegistryError::oci(
        ErrorCode::InternalError,
        "the registry's storage is full; nothing was stored by this request. Ask the operator to free space or grow \
         the volume, then retry",
    )
    .with_status(StatusCode::INSUFFICIENT_STORAGE)
    .into_response()
}

/// Marks a response that met a connection error from the metadata database.
#[derive(Clone, Copy, Debug)]
pub struct DatabaseUnreachable;

/// `503` with `Retry-After` and an OCI error body saying `message`, for a
/// request the metadata database could not serve because it is unreachable.
pub fn database_unreachable(message: &str) -> Response {
    RegistryError::oci(ErrorCode::InternalError, message)
        .with_status(StatusCode::SERVICE_UNAVAILABLE)
        .with_header(header::RETRY_AFTER, RETRY_AFTER_SECS)
        .into_response()
}

/// Shorthand constructors for the codes used most.
pub mod oci {
    use super::*;

    /// `BLOB_UNKNOWN` for a digest in a repository.
    pub fn blob_unknown(name: &impl std::fmt::Display, digest: &impl std::fmt::Display) -> RegistryError {
        RegistryError::oci(ErrorCode::BlobUnknown, format!("blob {digest} is not in repository {name}"))
            .with_detail(serde_json::json!({ "digest": digest.to_string() }))
    }

    /// `MANIFEST_UNKNOWN` for a reference in a repository.
    pub fn manifest_unknown(name: &impl std::fmt::Display, reference: &impl std::fmt::Display) -> RegistryError {
        RegistryError::oci(ErrorCode::ManifestUnknown, format!("manifest {reference} is not in repository {name}"))
            .with_detail(serde_json::json!({ "reference": reference.to_string() }))
    }

    /// `NAME_UNKNOWN` for a repository that does not exist.
    pub fn name_unknown(name: &impl std::fmt::Display) -> RegistryError {
        RegistryError::oci(
            ErrorCode::NameUnknown,
            format!("repository {name} does not exist; push an image to create it"),
        )
        .with_detail(serde_json::json!({ "name": name.to_string() }))
    }

    /// `BLOB_UPLOAD_UNKNOWN` for an upload id.
    pub fn upload_unknown(id: &str) -> RegistryError {
        RegistryError::oci(
            ErrorCode::BlobUploadUnknown,
            format!("upload {id} is unknown, finished or cancelled; start a new upload with POST …/blobs/uploads/"),
        )
    }

    /// `DIGEST_INVALID` with the parser's explanation.
    pub fn digest_invalid(message: impl Into<String>) -> RegistryError {
        RegistryError::oci(ErrorCode::DigestInvalid, message)
    }
}

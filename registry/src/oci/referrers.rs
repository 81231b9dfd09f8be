//! The referrers API: manifests whose `subject` is a given digest.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use damselfly_core::RepositoryName;

use super::{parse_digest, Call};
use crate::error::{oci, Result};
use crate::services::manifest::OCI_INDEX;
use crate::state::AppState;

pub(super) async fn list(state: &AppState, name: &RepositoryName, digest: &str, call: &Call) -> Result<Response> {
    let subject = parse_digest(digest)?;
    let repo = state.db.repositories().find(name.as_str()).await?.ok_or_else(|| oci::name_unknown(name))?;
    let filter = call.query.get("artifactType").filter(|t| !t.is_empty());
    let referrers = state.db.manifests().referrers(repo, &subject, filter.map(String::as_str)).await?;
    let manifests: Vec<serde_json::Value> = referrers
        .into_iter()
        .map(|r| {
            let mut d = serde_json::json!({
                "mediaType": r.media_type,
                "digest": r.digest.to_string(),
                "size": r.size,
            });
            if let Some(t) = r.artifact_type {
                d["artifactType"] = t.into();
            }
            if let Some(a) = r.annotations.and_then(|a| serde_json::from_str::<serde_json::Value>(&a).ok()) {
                d["annotations"] = a;
            }
            d
        })
        .collect();
    let body = serde_json::json!({ "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests });
    let mut response = (StatusCode::OK, [(header::CONTENT_TYPE, OCI_INDEX)], body.to_string()).into_response();
    if filter.is_some() {
        response.headers_mut().insert("oci-filters-applied", header::HeaderValue::from_static("artifactType"));
    }
    Ok(response)
}

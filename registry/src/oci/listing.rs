//! Tag listing and the catalog, paginated with `n`, `last` and `Link`.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use damselfly_core::RepositoryName;

use super::{pagination, Call};
use crate::error::{oci, Result};
use crate::state::AppState;

pub(super) async fn tags(state: &AppState, name: &RepositoryName, call: &Call) -> Result<Response> {
    let (n, last) = pagination(call)?;
    let repo = state.db.repositories().find(name.as_str()).await?.ok_or_else(|| oci::name_unknown(name))?;
    // Fetch one extra row to learn whether a next page exists.
    let mut tags = if n == 0 { Vec::new() } else { state.db.tags().list(repo, last.as_deref(), n + 1).await? };
    let more = tags.len() as i64 > n;
    tags.truncate(n as usize);
    let link = more.then(|| next_link(&format!("/v2/{name}/tags/list"), n, tags.last()));
    let body = serde_json::json!({ "name": name.as_str(), "tags": tags });
    Ok(page(body, link))
}

/// Lists only the repositories the caller may pull from.
pub(super) async fn catalog(state: &AppState, call: &Call) -> Result<Response> {
    let (n, last) = pagination(call)?;
    let mut names: Vec<String> = Vec::new();
    let mut cursor = last;
    let mut more = false;
    // Scan in batches until the page is full: visible names may be sparse.
    let mut exhausted = n == 0;
    while !exhausted && !more {
        let batch = state.db.repositories().list(cursor.as_deref(), 500).await?;
        exhausted = batch.len() < 500;
        for name in batch {
            cursor = Some(name.clone());
            let visible = match name.parse::<RepositoryName>() {
                Ok(repo) => state.auth.policy.repository_actions(&state.db, &call.caller.principal, &repo).await?.pull,
                Err(_) => false,
            };
            if !visible {
                continue;
            }
            if names.len() as i64 == n {
                more = true;
                break;
            }
            names.push(name);
        }
    }
    let link = more.then(|| next_link("/v2/_catalog", n, names.last()));
    Ok(page(serde_json::json!({ "repositories": names }), link))
}

fn next_link(path: &str, n: i64, last: Option<&String>) -> String {
    // Tags and repository names only use characters that are safe in a query.
    format!("<{path}?n={n}&last={}>; rel=\"next\"", last.map(String::as_str).unwrap_or(""))
}

fn page(body: serde_json::Value, link: Option<String>) -> Response {
    let mut response = (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response();
    if let Some(link) = link.and_then(|l| l.parse().ok()) {
        response.headers_mut().insert(header::LINK, link);
    }
    response
}

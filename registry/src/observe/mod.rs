//! Metrics, request logging and health endpoints.

mod metrics;

pub use metrics::{Metrics, RouteLabel};

use std::time::Instant;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::state::AppState;

/// Counts and logs every request. Successful reads are logged at `debug`
/// (pulls are the bulk of traffic); writes and failures at `info`/`warn`.
pub async fn track_requests(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let response = next.run(request).await;
    let route = response.extensions().get::<RouteLabel>().copied().unwrap_or(RouteLabel::Other);
    let status = response.status();
    let elapsed = started.elapsed();
    state.metrics.observe_request(route, &method, status.as_u16(), elapsed);
    let code = response.extensions().get::<damselfly_core::ErrorCode>().map(|c| c.as_str()).unwrap_or("");
    let micros = elapsed.as_micros() as u64;
    if status.is_server_error() {
        tracing::warn!(%method, path, route = route.as_str(), status = status.as_u16(), code, micros, "request failed");
    } else if status.is_client_error() || !(method == axum::http::Method::GET || method == axum::http::Method::HEAD) {
        tracing::info!(%method, path, route = route.as_str(), status = status.as_u16(), code, micros, "request");
    } else {
        tracing::debug!(%method, path, route = route.as_str(), status = status.as_u16(), micros, "request");
    }
    response
}

/// `GET /metrics`: Prometheus text format.
pub async fn metrics(State(state): State<AppState>) -> Response {
    match state.db.blobs().totals().await {
        Ok((count, bytes)) => state.metrics.set_blob_store(count, bytes),
        Err(e) => tracing::warn!(error = %e, "could not read blob store totals for /metrics"),
    }
    let census = state.scheduler.census();
    state.metrics.set_p2p(census.agents, census.swarms);
    (
        [(axum::http::header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
        state.metrics.encode(),
    )
        .into_response()
}

/// `GET /healthz`: the process is up.
pub async fn healthz() -> &'static str {
    "ok\n"
}

/// `GET /readyz`: the database answers and the blob store is writable (filesystem) or answers (S3).
pub async fn readyz(State(state): State<AppState>) -> Response {
    if let Err(e) = state.db.ping().await {
        return (StatusCode::SERVICE_UNAVAILABLE, format!("metadata database unavailable: {e}\n")).into_response();
    }
    if let Err(e) = state.blobs.probe().await {
        return (StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")).into_response();
    }
    "ready\n".into_response()
}

//! Metrics and request logging. The endpoints that expose them to an
//! operator (`/metrics`, `/healthz`, `/readyz`) are in `crate::health`, so
//! that nothing here needs the registry's state.

mod metrics;

pub use metrics::{Metrics, RouteLabel};

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;

/// Counts and logs every request. Successful reads are logged at `debug`
/// (pulls are the bulk of traffic); writes and failures at `info`/`warn`.
pub async fn track_requests(State(metrics): State<Arc<Metrics>>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let response = next.run(request).await;
    let route = response.extensions().get::<RouteLabel>().copied().unwrap_or(RouteLabel::Other);
    let status = response.status();
    let elapsed = started.elapsed();
    metrics.observe_request(route, &method, status.as_u16(), elapsed);
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

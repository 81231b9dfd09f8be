//! The agents' scheduled calls (register, heartbeat, join, report, leave)
//! served where their cluster is scheduled: here when this replica holds the
//! cluster's lease, otherwise passed on to the replica that does, bodies
//! streamed both ways, and its answer passed back unchanged.

use std::time::Duration;

use axum::body::Body;
use axum::extract::{FromRequestParts, Request, State};
use axum::http::{header, HeaderName, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use damselfly_core::ErrorCode;
use futures_util::TryStreamExt;

use super::lease::Route;
use super::routes::ClusterCaller;
use crate::error::RegistryError;
use crate::metadata::ClusterId;
use crate::state::AppState;

/// Set on a call one replica passes to another, with the sender's replica id:
/// a call is passed on once at most.
pub const FORWARDED_BY: &str = "x-damselfly-forwarded-by";

/// The client replicas pass calls on with.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(2))
        // A held join waits two seconds at most; anything longer is a holder in trouble.
        .timeout(Duration::from_secs(30))
        .pool_idle_timeout(Duration::from_secs(30))
        .build()
        .unwrap_or_default()
}

/// Serves the call here if this replica schedules the caller's cluster, or
/// passes it to the replica that does. The cluster found from the token is
/// left in the request for the handler.
pub async fn to_holder(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let (mut parts, body) = request.into_parts();
    let cluster = match ClusterCaller::from_request_parts(&mut parts, &state).await {
        Ok(ClusterCaller(cluster)) => cluster,
        Err(refused) => return refused.into_response(),
    };
    let id = cluster.id;
    match state.leases.route_of(id).await {
        Ok(Route::Here) => {
            parts.extensions.insert(ClusterCaller(cluster));
            next.run(Request::from_parts(parts, body)).await
        }
        Ok(Route::Holder(url)) if parts.headers.contains_key(FORWARDED_BY) => {
            // The sender thought this replica held the lease: it must ask again.
            tracing::debug!(cluster = id.0, holder = url, "a call passed on here belongs to another replica");
            moving(id).into_response()
        }
        Ok(Route::Holder(url)) => forward(&state, id, &url, parts, body).await,
        Err(e) => {
            tracing::warn!(cluster = id.0, error = %e, "cannot tell which replica schedules the cluster");
            moving(id).into_response()
        }
    }
}

/// The answer while a cluster's scheduling moves between replicas.
fn moving(cluster: ClusterId) -> RegistryError {
    RegistryError::oci(
        ErrorCode::InternalError,
        format!(
            "the P2P scheduler of cluster {} is moving to another registry replica; retry in a few seconds",
            cluster.0
        ),
    )
    .with_status(StatusCode::SERVICE_UNAVAILABLE)
    .with_header(header::RETRY_AFTER, "2")
}

/// Headers that describe one connection, not the message: never passed on.
fn hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection" | "keep-alive" | "proxy-connection" | "transfer-encoding" | "te" | "trailer" | "upgrade" | "host"
    )
}

async fn forward(
    state: &AppState,
    cluster: ClusterId,
    holder: &str,
    parts: axum::http::request::Parts,
    body: Body,
) -> Response {
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let url = format!("{}{path}", holder.trim_end_matches('/'));
    let mut headers = axum::http::HeaderMap::with_capacity(parts.headers.len() + 1);
    for (name, value) in &parts.headers {
        if !hop_by_hop(name) {
            headers.append(name.clone(), value.clone());
        }
    }
    if let Ok(me) = state.leases.replica().parse() {
        headers.insert(FORWARDED_BY, me);
    }
    let sent = state
        .forwarder
        .request(parts.method, &url)
        .headers(headers)
        .body(reqwest::Body::wrap_stream(body.into_data_stream()))
        .send()
        .await;
    let answer = match sent {
        Ok(answer) => answer,
        Err(e) => {
            // Dead, or not listening yet: the database says who holds the lease next time.
            state.leases.forget_holder(cluster);
            tracing::warn!(cluster = cluster.0, holder, error = %e, "the replica scheduling the cluster does not answer");
            return moving(cluster).into_response();
        }
    };
    state.metrics.forwarded();
    if answer.status() == StatusCode::SERVICE_UNAVAILABLE {
        state.leases.forget_holder(cluster);
    }
    let mut response = Response::builder().status(answer.status());
    if let Some(h) = response.headers_mut() {
        for (name, value) in answer.headers() {
            if !hop_by_hop(name) {
                h.append(name.clone(), value.clone());
            }
        }
    }
    let stream = answer.bytes_stream().map_err(std::io::Error::other);
    response.body(Body::from_stream(stream)).unwrap_or_else(|_| StatusCode::BAD_GATEWAY.into_response())
}

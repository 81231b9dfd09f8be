//! The piece server other agents fetch from (`--peer-listen`, :65002).
//! A piece is served only to a holder of a ticket the registry issued for
//! that blob, verified offline against the registry's JWKS.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use damselfly_core::p2p::TICKET_AUTH_SCHEME;
use damselfly_core::Digest;
use tokio::sync::Semaphore;

use crate::metrics::Metrics;
use crate::piece::Engine;
use crate::rate::RateLimit;
use crate::registry::{RegistryClient, TicketClaims, TICKET_AUDIENCE};

/// What the piece server needs.
#[derive(Clone)]
pub struct PeerState {
    /// Downloads and cache.
    pub engine: Arc<Engine>,
    /// For the JWKS.
    pub registry: Arc<RegistryClient>,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// Upload slots.
    pub slots: Arc<Semaphore>,
    /// Testing only: flip a byte of every piece served.
    pub corrupt: bool,
    /// The node's upload budget.
    pub upload_limit: Arc<RateLimit>,
}

/// Bytes handed to the connection at a time, and taken from the upload budget.
const UPLOAD_CHUNK: usize = 64 * 1024;

/// `GET /pieces/{digest}/{index}`.
pub fn router(state: PeerState) -> Router {
    Router::new().route("/pieces/{digest}/{index}", get(piece)).with_state(state)
}

fn refuse(status: StatusCode, message: &str) -> Response {
    (status, [(header::CONTENT_TYPE, "text/plain")], format!("{message}\n")).into_response()
}

async fn piece(
    State(state): State<PeerState>,
    Path((digest, index)): Path<(String, u32)>,
    headers: HeaderMap,
) -> Response {
    let Ok(digest) = digest.parse::<Digest>() else {
        return refuse(StatusCode::BAD_REQUEST, "not a digest");
    };
    let ticket = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case(TICKET_AUTH_SCHEME))
        .map(|(_, t)| t.trim().to_owned());
    let Some(ticket) = ticket else {
        return refuse(StatusCode::UNAUTHORIZED, "pieces are served only with `Authorization: Ticket <ticket>`");
    };
    match state.registry.verify::<TicketClaims>(&ticket, TICKET_AUDIENCE).await {
        Some(claims) if claims.blob == digest => {}
        Some(_) => return refuse(StatusCode::FORBIDDEN, "the ticket is for another blob"),
        None => return refuse(StatusCode::FORBIDDEN, "the ticket is invalid or expired"),
    }
    let Ok(permit) = state.slots.clone().try_acquire_owned() else {
        return refuse(StatusCode::SERVICE_UNAVAILABLE, "every upload slot is busy; try another peer");
    };
    let Some(bytes) = state.engine.piece_for_peer(&digest, index).await else {
        return refuse(StatusCode::NOT_FOUND, "this agent does not hold that piece");
    };
    let bytes = if state.corrupt && !bytes.is_empty() {
        let mut v = bytes.to_vec();
        v[0] ^= 0xff;
        bytes::Bytes::from(v)
    } else {
        bytes
    };
    state.metrics.served(bytes.len() as u64);
    // The upload slot is held until the last chunk is handed to the
    // connection, not just until the piece is read: the slots bound how many
    // transfers this node's uplink is split between.
    let len = bytes.len();
    let body = futures_util::stream::unfold(
        (bytes, 0, permit, state.upload_limit.clone()),
        |(bytes, at, permit, limit)| async move {
            if at >= bytes.len() {
                return None;
            }
            let end = (at + UPLOAD_CHUNK).min(bytes.len());
            limit.take((end - at) as u64).await;
            Some((Ok::<_, std::convert::Infallible>(bytes.slice(at..end)), (bytes, end, permit, limit)))
        },
    );
    (
        [(header::CONTENT_TYPE, "application/octet-stream")],
        [(header::CONTENT_LENGTH, len.to_string())],
        Body::from_stream(body),
    )
        .into_response()
}

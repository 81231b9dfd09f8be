//! The piece server other agents fetch from (`--peer-listen`, :65002).
//! A piece is served only to a holder of a ticket the registry issued for
//! that blob, verified offline against the registry's JWKS.

use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::connect_info::{ConnectInfo, Connected};
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

/// Serves the piece server's `router` on `listener`.
pub async fn serve(listener: tokio::net::TcpListener, router: Router) -> std::io::Result<()> {
    axum::serve(listener, router.into_make_service_with_connect_info::<Connection>()).await
}

/// The TCP connection a piece request came on.
///
/// An upload slot stands for a share of the node's uplink, so it is held
/// while the piece's bytes are on their way, not just until they are handed
/// to the kernel: a socket's send buffer takes a whole piece at once, and a
/// slot released then would let any number of transfers split the link
/// while the node and the scheduler count none.
#[derive(Clone, Copy, Debug)]
pub struct Connection(RawFd);

impl Connected<axum::serve::IncomingStream<'_, tokio::net::TcpListener>> for Connection {
    fn connect_info(stream: axum::serve::IncomingStream<'_, tokio::net::TcpListener>) -> Self {
        Connection(stream.io().as_raw_fd())
    }
}

impl Connection {
    /// Bytes written to the connection that the other end has not acknowledged yet.
    #[allow(unsafe_code)]
    fn unacknowledged(self) -> Option<usize> {
        let mut n: libc::c_int = 0;
        // SAFETY: TIOCOUTQ (SIOCOUTQ on a TCP socket) writes one c_int
        // through the pointer, which points at `n`. The descriptor belongs
        // to the connection whose response is being written, so it is open;
        // were it not, the call would fail, which is handled.
        let r = unsafe { libc::ioctl(self.0, libc::TIOCOUTQ, &mut n) };
        (r == 0).then_some(n.max(0) as usize)
    }

    /// Waits until at most `left` bytes are still unacknowledged, for at most `limit`.
    async fn drained(self, left: usize, limit: Duration) {
        let until = Instant::now() + limit;
        while self.unacknowledged().is_some_and(|n| n > left) && Instant::now() < until {
            tokio::time::sleep(DRAIN_POLL).await;
        }
    }
}

/// How often an upload's unacknowledged bytes are looked at near its end.
const DRAIN_POLL: Duration = Duration::from_millis(5);
/// Longest an upload waits for its bytes to be acknowledged before it ends
/// anyway; a peer that stops reading is cut off by its own stall timeout.
const DRAIN_LIMIT: Duration = Duration::from_secs(10);

fn refuse(status: StatusCode, message: &str) -> Response {
    (status, [(header::CONTENT_TYPE, "text/plain")], format!("{message}\n")).into_response()
}

async fn piece(
    State(state): State<PeerState>,
    Path((digest, index)): Path<(String, u32)>,
    ConnectInfo(connection): ConnectInfo<Connection>,
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
    // The upload slot is held until the bytes before the last chunk are
    // acknowledged: the body ends once its declared length is written, so
    // the wait comes before the last chunk, which keeps the link busy.
    let len = bytes.len();
    let body = futures_util::stream::unfold(
        (bytes, 0, Some(permit), state.upload_limit.clone()),
        move |(bytes, at, mut permit, limit)| async move {
            if at >= bytes.len() {
                return None;
            }
            let end = (at + UPLOAD_CHUNK).min(bytes.len());
            if end == bytes.len() {
                connection.drained(UPLOAD_CHUNK, DRAIN_LIMIT).await;
                permit = None;
            }
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

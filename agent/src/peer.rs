//! The piece server other agents fetch from (`--peer-listen`, :65002).
//! A piece is served only to a holder of a ticket the registry issued for
//! that blob to an agent of this agent's cluster, verified offline against
//! the registry's JWKS, and not expired. Within those bounds a ticket serves
//! every piece of its blob, as many times as its download needs: a peer,
//! verifying offline, cannot know whether the agent it names is still in
//! the swarm (the registry's seed does, and refuses it once it is not).

use std::collections::HashMap;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::connect_info::{ConnectInfo, Connected};
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use damselfly_core::p2p::{bitmap_from_hex, stripe_of, FeedRequest, TicketClaims, TICKET_AUDIENCE, TICKET_AUTH_SCHEME};
use damselfly_core::Digest;
use tokio::sync::Semaphore;

use crate::metrics::Metrics;
use crate::piece::Engine;
use crate::rate::RateLimit;
use crate::supernode::Supernode;

/// What the piece server needs.
#[derive(Clone)]
pub struct PeerState {
    /// Downloads and cache.
    pub engine: Arc<Engine>,
    /// For the JWKS.
    pub supernode: Arc<Supernode>,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// Upload slots.
    pub slots: Arc<Semaphore>,
    /// The stripe feeds streaming, and how many may.
    pub feeds: Arc<FeedSlots>,
    /// Testing only: flip a byte of every piece served.
    pub corrupt: bool,
    /// The node's upload budget.
    pub upload_limit: Arc<RateLimit>,
}

/// How long a feed request waits for this agent's download of the blob to start.
const FEED_START_WAIT: Duration = Duration::from_secs(2);

/// Bytes handed to the connection at a time, and taken from the upload budget.
const UPLOAD_CHUNK: usize = 64 * 1024;

/// `GET /pieces/{digest}/{index}`, and `POST /feeds/{digest}` (a stripe's
/// pieces streamed as they arrive, see [`FeedRequest`]).
pub fn router(state: PeerState) -> Router {
    Router::new().route("/pieces/{digest}/{index}", get(piece)).route("/feeds/{digest}", post(feed)).with_state(state)
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

/// The blob a request names and the agent asking, if it carries a valid
/// ticket for that blob, issued to an agent of this agent's cluster.
async fn authorize(state: &PeerState, digest: &str, headers: &HeaderMap) -> Result<(Digest, String), Response> {
    let Ok(digest) = digest.parse::<Digest>() else {
        return Err(refuse(StatusCode::BAD_REQUEST, "not a digest"));
    };
    let ticket = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case(TICKET_AUTH_SCHEME))
        .map(|(_, t)| t.trim().to_owned());
    let Some(ticket) = ticket else {
        return Err(refuse(StatusCode::UNAUTHORIZED, "pieces are served only with `Authorization: Ticket <ticket>`"));
    };
    let Some(cluster) = state.supernode.cluster() else {
        return Err(refuse(StatusCode::SERVICE_UNAVAILABLE, "this agent has not registered with its registry yet"));
    };
    match state.supernode.verify::<TicketClaims>(&ticket, TICKET_AUDIENCE).await {
        Some(claims) if claims.cluster != cluster => {
            Err(refuse(StatusCode::FORBIDDEN, "the ticket is for another cluster's swarm"))
        }
        Some(claims) if claims.blob == digest && state.supernode.departed().refuses(&digest, claims.iat) => {
            Err(refuse(StatusCode::GONE, "this blob was deleted from the registry after the ticket was issued"))
        }
        Some(claims) if claims.blob == digest => Ok((digest, claims.sub)),
        Some(_) => Err(refuse(StatusCode::FORBIDDEN, "the ticket is for another blob")),
        None => Err(refuse(StatusCode::FORBIDDEN, "the ticket is invalid or expired")),
    }
}

/// Flips a byte of a piece when the agent runs with the testing flag that says so.
fn maybe_corrupt(state: &PeerState, bytes: bytes::Bytes) -> bytes::Bytes {
    if !state.corrupt || bytes.is_empty() {
        return bytes;
    }
    let mut v = bytes.to_vec();
    v[0] ^= 0xff;
    bytes::Bytes::from(v)
}

async fn piece(
    State(state): State<PeerState>,
    Path((digest, index)): Path<(String, u32)>,
    ConnectInfo(connection): ConnectInfo<Connection>,
    headers: HeaderMap,
) -> Response {
    let digest = match authorize(&state, &digest, &headers).await {
        Ok((digest, _)) => digest,
        Err(refused) => return refused,
    };
    let Ok(permit) = state.slots.clone().try_acquire_owned() else {
        return refuse(StatusCode::SERVICE_UNAVAILABLE, "every upload slot is busy; try another peer");
    };
    let Some(bytes) = state.engine.piece_for_peer(&digest, index).await else {
        return refuse(StatusCode::NOT_FOUND, "this agent does not hold that piece");
    };
    let bytes = maybe_corrupt(&state, bytes);
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

/// Streams one stripe of a blob to a child in its stripe tree: every piece
/// of the stripe the child lacks, each the moment this agent holds it
/// verified, as frames of the piece's index (four bytes, big-endian) and
/// the piece. A child takes every stripe from one parent each, so these
/// streams use no upload slot: the scheduler gave this agent those children.
/// They take a feed slot instead (see [`FeedSlots`]).
async fn feed(
    State(state): State<PeerState>,
    Path(digest): Path<String>,
    headers: HeaderMap,
    Json(req): Json<FeedRequest>,
) -> Response {
    let (digest, child) = match authorize(&state, &digest, &headers).await {
        Ok(asked) => asked,
        Err(refused) => return refused,
    };
    if req.stripes == 0 || req.stripe >= req.stripes {
        return refuse(StatusCode::BAD_REQUEST, "stripe must be below stripes, and stripes at least 1");
    }
    // The scheduler names a parent as soon as it joined, and its download
    // starts when the join's answer reaches it: give it a moment.
    let mut pieces = state.engine.pieces_of(&digest);
    let until = Instant::now() + FEED_START_WAIT;
    while pieces.is_none() && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(50)).await;
        pieces = state.engine.pieces_of(&digest);
    }
    let Some(pieces) = pieces else {
        return refuse(StatusCode::NOT_FOUND, "this agent is not fetching that blob and does not hold it");
    };
    let Some(have) = bitmap_from_hex(&req.have, pieces as usize) else {
        return refuse(StatusCode::BAD_REQUEST, "have is not a bitmap in hex");
    };
    let stripes = req.stripes as usize;
    let wanted: Vec<u32> =
        (0..pieces).filter(|&i| stripe_of(i, stripes) == req.stripe as usize && !have[i as usize]).collect();
    let (tx, rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(2);
    let key = FeedKey { child, digest, stripe: req.stripe };
    let feeds = state.feeds.clone();
    let started = feeds.start(key, |slot| async move {
        let _slot = slot;
        send_stripe(state, digest, wanted, tx).await;
    });
    if !started {
        return refuse(StatusCode::SERVICE_UNAVAILABLE, "every feed slot is busy; pull the stripe's pieces instead");
    }
    let body = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|chunk| (Ok::<_, std::convert::Infallible>(chunk), rx))
    });
    ([(header::CONTENT_TYPE, "application/octet-stream")], Body::from_stream(body)).into_response()
}

/// Sends the `wanted` pieces down a feed as this agent gets them, until all
/// are sent, the child hangs up, or this agent's own download fails (the
/// feed then ends early, and the child takes the rest elsewhere).
async fn send_stripe(
    state: PeerState,
    digest: Digest,
    mut wanted: Vec<u32>,
    tx: tokio::sync::mpsc::Sender<bytes::Bytes>,
) {
    while !wanted.is_empty() {
        // A child that hung up frees the feed's slot now, not when this
        // agent gets its next piece.
        let held = tokio::select! {
            held = state.engine.first_held(&digest, &wanted) => held,
            () = tx.closed() => return,
        };
        let Some(i) = held else { return };
        wanted.retain(|w| *w != i);
        let Some(bytes) = state.engine.piece_for_peer(&digest, i).await else { return };
        let bytes = maybe_corrupt(&state, bytes);
        state.metrics.served(bytes.len() as u64);
        if tx.send(bytes::Bytes::copy_from_slice(&i.to_be_bytes())).await.is_err() {
            return;
        }
        for at in (0..bytes.len()).step_by(UPLOAD_CHUNK) {
            let chunk = bytes.slice(at..(at + UPLOAD_CHUNK).min(bytes.len()));
            state.upload_limit.take(chunk.len() as u64).await;
            if tx.send(chunk).await.is_err() {
                return;
            }
        }
    }
}

/// Who a feed streams to, and what.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct FeedKey {
    /// The child's agent id, from its ticket.
    child: String,
    digest: Digest,
    stripe: u32,
}

/// The stripe feeds this agent streams: at most `limit` at once, and one per
/// child, blob and stripe. A child that asks again for a stripe it is being
/// fed (it lost the connection, or restarted) replaces that feed rather than
/// taking a second slot; the old stream ends.
pub struct FeedSlots {
    limit: usize,
    gauge: prometheus_client::metrics::gauge::Gauge,
    running: Mutex<HashMap<FeedKey, (u64, tokio::task::AbortHandle)>>,
    next: AtomicU64,
}

/// One running feed's hold on its slot, given back when its task ends or is aborted.
struct FeedSlot {
    slots: Arc<FeedSlots>,
    key: FeedKey,
    id: u64,
}

impl Drop for FeedSlot {
    fn drop(&mut self) {
        let mut running = self.slots.lock();
        if running.get(&self.key).is_some_and(|(id, _)| *id == self.id) {
            running.remove(&self.key);
            self.slots.gauge.set(running.len() as i64);
        }
    }
}

impl FeedSlots {
    /// Room for `limit` feeds at once; `gauge` follows how many stream.
    pub fn new(limit: u32, gauge: prometheus_client::metrics::gauge::Gauge) -> Arc<FeedSlots> {
        Arc::new(FeedSlots { limit: limit as usize, gauge, running: Mutex::default(), next: AtomicU64::new(0) })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<FeedKey, (u64, tokio::task::AbortHandle)>> {
        self.running.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Feeds streaming now.
    #[cfg(test)]
    fn running(&self) -> usize {
        self.lock().len()
    }

    /// Spawns the feed `key` as `task`, which holds its slot for as long as
    /// it runs. False, and nothing spawned, when every slot is taken by other feeds.
    fn start<F>(self: &Arc<Self>, key: FeedKey, task: impl FnOnce(FeedSlot) -> F) -> bool
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        let replaced = {
            let mut running = self.lock();
            if !running.contains_key(&key) && running.len() >= self.limit {
                return false;
            }
            let id = self.next.fetch_add(1, Ordering::Relaxed);
            let slot = FeedSlot { slots: self.clone(), key: key.clone(), id };
            let handle = tokio::spawn(task(slot)).abort_handle();
            let replaced = running.insert(key, (id, handle));
            self.gauge.set(running.len() as i64);
            replaced
        };
        if let Some((_, old)) = replaced {
            old.abort();
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(child: &str, stripe: u32) -> FeedKey {
        FeedKey { child: child.into(), digest: Digest::of(b"blob"), stripe }
    }

    /// A feed that runs until aborted.
    async fn forever(slot: FeedSlot) {
        let _slot = slot;
        std::future::pending::<()>().await;
    }

    async fn settle(slots: &FeedSlots, running: usize) {
        for _ in 0..100 {
            if slots.running() == running {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(slots.running(), running);
    }

    #[tokio::test]
    async fn feeds_are_capped_and_a_childs_second_ask_replaces_its_first() {
        let gauge = prometheus_client::metrics::gauge::Gauge::default();
        let slots = FeedSlots::new(2, gauge.clone());
        assert!(slots.start(key("a", 0), forever));
        assert!(slots.start(key("b", 0), forever));
        assert!(!slots.start(key("c", 0), forever), "both slots are taken");
        assert!(!slots.start(key("a", 1), forever), "another stripe is another feed");
        assert!(slots.start(key("a", 0), forever), "the same child and stripe replaces its feed");
        settle(&slots, 2).await;
        assert!(!slots.start(key("c", 0), forever), "the replaced feed's slot went to its successor");
        // A feed that ends gives its slot back.
        assert!(slots.start(key("b", 0), |slot| async move { drop(slot) }));
        settle(&slots, 1).await;
        assert!(slots.start(key("c", 0), forever));
        assert_eq!(gauge.get(), 2, "the gauge follows");
        assert!(!FeedSlots::new(0, Default::default()).start(key("a", 0), forever), "no slots, no feeds");
    }
}

//! Pieces from the seed, a batch per request: the registry streams the
//! listed pieces back to back, each is checked against its digest as its
//! bytes arrive and stored the moment it is whole, so that the client's
//! stream and the peers have it at once, whatever the fetch loop is doing.
//! The next piece is received while the last ones are being written: the
//! stream never waits for the disk unless [`STORING_AHEAD`] pieces are. An
//! agent alone in its swarm so reads a blob from the seed at the speed of
//! the link, with no request or round trip between pieces.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use damselfly_core::p2p::{pieces_query, TICKET_AUTH_SCHEME};
use sha2::Digest as _;
use tokio::sync::mpsc::UnboundedSender;
use tokio::task::JoinHandle;

use super::schedule::Failure;
use super::slots::Slot;
use super::{failed_answer, store, Download, STALL_TIMEOUT};
use crate::cache::Cache;
use crate::metrics::Metrics;
use crate::rate::RateLimit;

/// Verified pieces of one batch being written at once, before the stream
/// waits for the oldest: enough that receiving, hashing and writing overlap.
const STORING_AHEAD: usize = 3;

/// What a batch tells the fetch loop.
pub(super) enum SeedEvent {
    /// The piece arrived, matched its digest and is stored; `since` is when
    /// its first byte could have come (the request, or the piece before).
    Stored { piece: u32, len: u64, since: Instant },
    /// The piece did not match its digest; the batch ends.
    Corrupt(u32),
    /// The piece could not be written to the cache; the batch ends.
    CacheWrite(std::io::Error),
    /// The batch ended: these of its pieces did not arrive, and why (none: a corrupt piece ended it).
    Ended { left: Vec<u32>, failure: Option<Failure> },
}

/// One request for pieces from the seed.
pub(super) struct Batch {
    /// The pieces, ascending.
    pub pieces: Vec<u32>,
    /// The seed's piece endpoint for the blob.
    pub seed_url: String,
    /// The blob's ticket.
    pub ticket: String,
    pub download: Arc<Download>,
    pub cache: Arc<Cache>,
    pub http: reqwest::Client,
    pub limit: Arc<RateLimit>,
    pub metrics: Arc<Metrics>,
}

/// Fetches the batch, holding one of the node's fetch slots until it ends.
/// The one SHA-256 pass over the blob (see the engine's comment) runs
/// here, over each chunk as it arrives.
pub(super) async fn run(batch: Batch, slot: Slot, events: UnboundedSender<SeedEvent>) {
    let _slot = slot;
    let mut left: VecDeque<u32> = batch.pieces.iter().copied().collect();
    let mut storing = VecDeque::new();
    let mut failure = match receive(&batch, &mut left, &mut storing, &events).await {
        Ok(()) => None,
        Err(failure) => failure,
    };
    // Every piece taken off `left` is told of, stored or not, before the batch's end.
    while let Some(stored) = storing.pop_front() {
        if !finished(stored, &events).await {
            failure = None;
        }
    }
    let _ = events.send(SeedEvent::Ended { left: left.into(), failure });
}

/// A piece being stored; it tells the fetch loop itself once it is.
type Storing = JoinHandle<std::io::Result<()>>;

/// Stores a verified piece off the stream's task and tells the fetch loop
/// the moment it is stored, whatever the pieces before or after it do: with
/// stripe trees a root is handed two seed pieces at a time, and the report
/// of the first is what lets the scheduler hand out the next while the
/// second still arrives. Told in order after the batch's later pieces, a
/// root's reports would come a piece late.
fn store_ahead(batch: &Batch, i: u32, bytes: Bytes, since: Instant, events: &UnboundedSender<SeedEvent>) -> Storing {
    let (cache, download, events) = (batch.cache.clone(), batch.download.clone(), events.clone());
    tokio::spawn(async move {
        let len = bytes.len() as u64;
        store(&cache, &download, i, bytes).await?;
        let _ = events.send(SeedEvent::Stored { piece: i, len, since });
        Ok(())
    })
}

/// Waits for a piece's store; tells the fetch loop and returns false if it failed.
async fn finished(handle: Storing, events: &UnboundedSender<SeedEvent>) -> bool {
    match handle.await.map_err(std::io::Error::other).and_then(|r| r) {
        Ok(()) => true,
        Err(e) => {
            let _ = events.send(SeedEvent::CacheWrite(e));
            false
        }
    }
}

/// Receives the pieces in `left` in order, taking each off once it is
/// stored (or found corrupt). `Err(None)`: a corrupt piece or a cache
/// failure ended the batch, and the loop was told.
async fn receive(
    batch: &Batch,
    left: &mut VecDeque<u32>,
    storing: &mut VecDeque<Storing>,
    events: &UnboundedSender<SeedEvent>,
) -> Result<(), Option<Failure>> {
    use futures_util::StreamExt;
    let broken = |e: String| Some(Failure::Broken(e));
    // One piece alone goes to the single-piece endpoint, which every registry has.
    let url = match batch.pieces.as_slice() {
        [one] => format!("{}/{one}", batch.seed_url),
        many => format!("{}?pieces={}", batch.seed_url, pieces_query(many)),
    };
    let auth = format!("{TICKET_AUTH_SCHEME} {}", batch.ticket);
    let request = batch.http.get(&url).header(reqwest::header::AUTHORIZATION, auth).send();
    let r = tokio::time::timeout(STALL_TIMEOUT, request)
        .await
        .map_err(|_| broken(format!("no answer in {} s", STALL_TIMEOUT.as_secs())))?
        .map_err(|e| broken(e.to_string()))?;
    if r.status() == reqwest::StatusCode::SERVICE_UNAVAILABLE || r.status() == reqwest::StatusCode::TOO_MANY_REQUESTS {
        return Err(Some(Failure::Busy));
    }
    if !r.status().is_success() {
        return Err(Some(failed_answer(r).await));
    }
    let layout = &batch.download.layout;
    let mut body = r.bytes_stream();
    let mut since = Instant::now();
    let mut piece = BytesMut::new();
    let mut hasher = sha2::Sha256::new();
    while let Some(&first) = left.front() {
        let next = tokio::time::timeout(STALL_TIMEOUT, body.next())
            .await
            .map_err(|_| broken(format!("stalled for {} s in piece {first}", STALL_TIMEOUT.as_secs())))?;
        let mut chunk = match next {
            Some(chunk) => chunk.map_err(|e| broken(e.to_string()))?,
            None => return Err(broken(format!("the seed ended its answer in piece {first}"))),
        };
        batch.limit.take(chunk.len() as u64).await;
        // A chunk may end one piece and begin the next.
        while !chunk.is_empty() {
            let Some(&i) = left.front() else { return Err(broken("the seed sent more than was asked".into())) };
            let len = layout.span(i).1 as usize;
            if piece.is_empty() {
                piece.reserve(len);
            }
            let part = chunk.split_to((len - piece.len()).min(chunk.len()));
            hasher.update(&part);
            piece.extend_from_slice(&part);
            if piece.len() < len {
                continue;
            }
            left.pop_front();
            let digest: [u8; 32] = std::mem::take(&mut hasher).finalize().into();
            if layout.piece_digest(i).is_none_or(|d| *d.as_bytes() != digest) {
                let _ = events.send(SeedEvent::Corrupt(i));
                return Err(None);
            }
            // Counted before the piece is stored, as every piece the agent keeps: once stored, a
            // reader may send it on, and whoever saw those bytes sees them counted.
            if !batch.download.has(i) {
                batch.metrics.piece("verified");
                batch.metrics.received("seed", len as u64);
            }
            storing.push_back(store_ahead(batch, i, piece.split().freeze(), since, events));
            if storing.len() >= STORING_AHEAD {
                if let Some(oldest) = storing.pop_front() {
                    if !finished(oldest, events).await {
                        return Err(None);
                    }
                }
            }
            since = Instant::now();
        }
    }
    Ok(())
}

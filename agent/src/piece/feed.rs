//! The receiving end of a stripe feed: one parent of the swarm's stripe
//! trees streams this agent a stripe's pieces as it gets them (see
//! [`damselfly_core::p2p::FeedRequest`]). The task here cuts the stream
//! into pieces ([`FeedFrames`]); the fetch loop verifies each before it is kept.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use damselfly_core::p2p::{FeedFrames, FeedRequest, TICKET_AUTH_SCHEME};
use tokio::sync::mpsc::UnboundedSender;

use super::{Download, STALL_TIMEOUT};
use crate::rate::RateLimit;

/// What a feed task tells the fetch loop.
pub(super) struct FeedEvent {
    /// The stripe.
    pub stripe: usize,
    /// The parent streaming it.
    pub parent: String,
    /// What happened.
    pub what: FeedItem,
}

/// One piece, or the end of the feed.
pub(super) enum FeedItem {
    /// A piece as it arrived, not verified yet, and when its first bytes
    /// did: the piece log times a feed's piece from there, so that the
    /// parent's wait for its own next piece does not count as transfer.
    Piece(u32, Bytes, Instant),
    /// The parent sent every piece asked for.
    Ended,
    /// The parent does not have the blob (yet): it may have joined a moment
    /// ago, or restarted. Not held against it.
    Unknown,
    /// Every feed slot of the parent is taken: not held against it either.
    Busy,
    /// The feed broke: refused, disconnected, stalled mid-piece, or framed wrongly.
    Broken(String),
}

/// Where a feed comes from and what it asks for.
pub(super) struct FeedSpec {
    /// The parent's agent id.
    pub parent: String,
    /// `<parent's piece server>/feeds/<digest>`.
    pub url: String,
    /// The blob's ticket.
    pub ticket: String,
    /// Stripe, stripe count and the pieces held.
    pub request: FeedRequest,
    /// The download, for each piece's length.
    pub download: Arc<Download>,
}

/// Runs one feed until it ends or breaks, handing each piece to `events`.
pub(super) async fn run(
    http: reqwest::Client,
    spec: FeedSpec,
    limit: Arc<RateLimit>,
    events: UnboundedSender<FeedEvent>,
) {
    let stripe = spec.request.stripe as usize;
    let parent = spec.parent.clone();
    let send = |what| events.send(FeedEvent { stripe, parent: parent.clone(), what }).is_ok();
    send(receive(&http, &spec, &limit, &send).await.err().unwrap_or(FeedItem::Ended));
}

/// Receives the feed until it ends; `Err` says how it did not.
async fn receive(
    http: &reqwest::Client,
    spec: &FeedSpec,
    limit: &RateLimit,
    send: &impl Fn(FeedItem) -> bool,
) -> Result<(), FeedItem> {
    use futures_util::StreamExt;
    let broken = FeedItem::Broken;
    let request = http
        .post(&spec.url)
        .header(reqwest::header::AUTHORIZATION, format!("{TICKET_AUTH_SCHEME} {}", spec.ticket))
        .json(&spec.request)
        .send();
    let r = tokio::time::timeout(STALL_TIMEOUT, request)
        .await
        .map_err(|_| broken(format!("no answer in {} s", STALL_TIMEOUT.as_secs())))?
        .map_err(|e| broken(e.to_string()))?;
    match r.status() {
        reqwest::StatusCode::NOT_FOUND => return Err(FeedItem::Unknown),
        reqwest::StatusCode::SERVICE_UNAVAILABLE => return Err(FeedItem::Busy),
        _ => {}
    }
    if !r.status().is_success() {
        return Err(broken(format!("answered {}", r.status())));
    }
    let layout = &spec.download.layout;
    let mut frames = FeedFrames::new(layout.geometry(), spec.request.stripes, spec.request.stripe);
    let mut body = r.bytes_stream();
    let mut since = Instant::now();
    loop {
        while let Some((i, piece)) = frames.next_piece().map_err(|e| broken(e.to_string()))? {
            if !send(FeedItem::Piece(i, piece, since)) {
                return Ok(());
            }
            // The chunk that ended this piece began the next.
            since = Instant::now();
        }
        // Between pieces the parent may be waiting for its own next piece;
        // within one, it has the bytes and silence is a stall.
        let next = if frames.mid_frame() {
            let held = frames.held();
            tokio::time::timeout(STALL_TIMEOUT, body.next())
                .await
                .map_err(|_| broken(format!("stalled for {} s in a piece ({held} bytes)", STALL_TIMEOUT.as_secs())))?
        } else {
            body.next().await
        };
        match next {
            Some(Ok(chunk)) => {
                // A piece's first bytes: the time before them was the parent's wait.
                if !frames.mid_frame() {
                    since = Instant::now();
                }
                limit.take(chunk.len() as u64).await;
                frames.extend(&chunk);
            }
            Some(Err(e)) => return Err(broken(e.to_string())),
            None if !frames.mid_frame() => return Ok(()),
            None => return Err(broken("the feed ended in the middle of a piece".into())),
        }
    }
}

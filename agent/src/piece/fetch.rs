//! The fetch loop of one download: it does what its [`Schedule`] decides
//! (fetch this piece from that source, open or close a stripe's feed, join
//! again, report), verifies and keeps what arrives, and tells the schedule
//! what happened.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use damselfly_core::p2p::{bitmap_hex, FeedRequest, JoinResponse, ReportRequest, TICKET_AUTH_SCHEME};
use tokio::sync::mpsc;
use tokio::task::{AbortHandle, JoinSet};

use super::feed::{FeedEvent, FeedItem, FeedSpec};
use super::schedule::{Failure, FeedChange, Schedule, Source, REJOIN_AT_LEAST};
use super::seed::{Batch, SeedEvent};
use super::slots::Slot;
use super::{Download, Engine, STALL_TIMEOUT};
use crate::error::{Error, Report, Result};
use crate::rate::RateLimit;
use crate::supernode::Rejoin;

/// Pieces fetched at once per blob.
const PARALLEL: usize = 4;
/// How often progress is reported, and the schedule looked at again.
const REPORT_EVERY: Duration = Duration::from_millis(200);

type Fetched = (u32, Source, Instant, Result<Bytes, Failure>);

/// One download's fetching: its schedule, and the tasks that carry it out.
struct Fetch<'a> {
    engine: &'a Engine,
    d: &'a Arc<Download>,
    repository: &'a str,
    client_token: Option<&'a str>,
    seed_url: String,
    schedule: Schedule,
    /// Each stripe's running feed task.
    streams: HashMap<usize, AbortHandle>,
    stream_tasks: JoinSet<()>,
    events: mpsc::UnboundedSender<FeedEvent>,
    /// Where the seed batches say how they go, and how many run.
    seed_events: mpsc::UnboundedSender<SeedEvent>,
    batches: usize,
    /// The agent id the schedule's ticket was issued to. The agent registers
    /// again under a new id when the registry forgot it (another download's
    /// join or the heartbeat may be the one to notice); the old id's ticket
    /// is then refused by the seed, and a brief join would never replace it.
    ticket_agent: Option<String>,
}

impl Engine {
    /// Fetches every missing piece of `d`, starting from the join's plan.
    pub(super) async fn fetch_all(
        &self,
        d: &Arc<Download>,
        plan: JoinResponse,
        repository: &str,
        client_token: Option<&str>,
    ) -> Result<()> {
        let (events, mut feed_events) = mpsc::unbounded_channel();
        let (seed_events, mut from_seed) = mpsc::unbounded_channel();
        let seed_url = plan.seed_url.clone();
        let mut f = Fetch {
            engine: self,
            d,
            repository,
            client_token,
            seed_url,
            schedule: Schedule::new(plan, d.have_bits(), Instant::now()),
            streams: HashMap::new(),
            stream_tasks: JoinSet::new(),
            events,
            seed_events,
            batches: 0,
            ticket_agent: self.supernode.agent_id(),
        };
        f.follow_feeds();
        let mut tasks: JoinSet<Fetched> = JoinSet::new();
        let mut tick = tokio::time::interval(REPORT_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The wait for one of the node's fetch slots. It is kept across turns
        // of the loop so that this download keeps its place in the queue; the
        // source is chosen only once a slot is held, so it is never stale.
        let mut slot: Option<SlotWait> = None;
        while !f.schedule.missing().is_empty() {
            // Pieces the seed reserved for this agent go at once, in one
            // request, without waiting for a fetch slot behind slower peer
            // transfers: the seed's budget is the swarm's scarcest resource.
            let batch = f.schedule.next_seed_batch(Instant::now());
            if !batch.is_empty() {
                f.start_batch(batch);
            }
            if tasks.len() < PARALLEL && f.schedule.next_piece(Instant::now()).is_some() {
                slot.get_or_insert_with(|| Box::pin(self.fetch_slots.clone().peer()));
            } else {
                slot = None;
            }
            let seed_join = f.schedule.seed_join_at();
            let wait_slot = async {
                match slot.as_mut() {
                    Some(wait) => Some(wait.await),
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                Some(permit) = wait_slot => {
                    slot = None;
                    if let Some((i, source)) = f.schedule.next_piece(Instant::now()) {
                        f.start_fetch(&mut tasks, permit, i, source);
                    }
                }
                Some(Ok(fetched)) = tasks.join_next(), if !tasks.is_empty() => {
                    let busy = matches!(fetched.3, Err(Failure::Busy));
                    f.received(fetched).await?;
                    // A busy parent means the plan's upload counts are
                    // stale, and with no other source a fresh plan is due.
                    if busy && f.schedule.next_piece(Instant::now()).is_none() {
                        f.flush().await;
                        f.rejoin(REJOIN_AT_LEAST, None).await;
                    }
                }
                Some(event) = feed_events.recv() => f.on_feed(event).await?,
                Some(event) = from_seed.recv() => f.on_seed(event)?,
                // The seed hands out its next pieces as these are reported.
                () = tokio::time::sleep_until(seed_join.unwrap_or_else(Instant::now).into()), if seed_join.is_some() => {
                    f.flush().await;
                    f.rejoin(REJOIN_AT_LEAST, None).await;
                }
                _ = tick.tick() => {
                    let idle = f.schedule.idle(!tasks.is_empty() || f.batches > 0, Instant::now());
                    f.on_tick(idle).await?;
                }
            }
        }
        f.flush().await;
        Ok(())
    }
}

type SlotWait = std::pin::Pin<Box<dyn std::future::Future<Output = Slot> + Send>>;

impl Fetch<'_> {
    /// Starts fetching piece `i` from `source`, holding one of the node's fetch slots until it ends.
    fn start_fetch(&mut self, tasks: &mut JoinSet<Fetched>, slot: Slot, i: u32, source: Source) {
        let url = match &source {
            Source::Seed => format!("{}/{i}", self.seed_url),
            Source::Parent { url, .. } => format!("{url}/pieces/{}/{i}", self.d.digest),
        };
        self.schedule.started(i, source.clone());
        let http = self.engine.http.clone();
        let ticket = self.schedule.ticket().to_owned();
        let expected = self.d.layout.span(i).1;
        let limit = self.engine.download_limit.clone();
        tasks.spawn(async move {
            let _slot = slot;
            let started = Instant::now();
            (i, source, started, fetch_piece(&http, &url, &ticket, expected, &limit).await)
        });
    }

    /// Starts a request for `pieces` from the seed, holding one of the node's
    /// fetch slots (without waiting for it) until the request ends.
    fn start_batch(&mut self, pieces: Vec<u32>) {
        for &i in &pieces {
            self.schedule.started(i, Source::Seed);
        }
        self.batches += 1;
        let batch = Batch {
            pieces,
            seed_url: self.seed_url.clone(),
            ticket: self.schedule.ticket().to_owned(),
            download: self.d.clone(),
            cache: self.engine.cache.clone(),
            http: self.engine.http.clone(),
            limit: self.engine.download_limit.clone(),
            metrics: self.engine.metrics.clone(),
        };
        tokio::spawn(super::seed::run(batch, self.engine.fetch_slots.seed(), self.seed_events.clone()));
    }

    /// What a seed batch said.
    fn on_seed(&mut self, event: SeedEvent) -> Result<()> {
        let (digest, now) = (self.d.digest, Instant::now());
        let metrics = &self.engine.metrics;
        match event {
            SeedEvent::Stored { piece, len, since } => {
                self.schedule.ended(piece);
                // Stored and counted already: the batch wrote it the moment it matched its digest.
                if !self.schedule.has(piece) {
                    let millis = since.elapsed().as_millis() as u64;
                    tracing::debug!(%digest, piece, from = "seed", millis, "piece verified");
                    self.schedule.kept(piece, &Source::Seed, len, now);
                }
            }
            SeedEvent::Corrupt(piece) => {
                self.schedule.ended(piece);
                metrics.piece("rejected");
                tracing::warn!(%digest, piece, "the seed sent a piece that does not match its digest");
                self.schedule.seed_corrupt(piece);
            }
            SeedEvent::CacheWrite(e) => return Err(Error::CacheWrite(e)),
            SeedEvent::Ended { left, failure } => {
                self.batches -= 1;
                for &i in &left {
                    self.schedule.ended(i);
                }
                match failure {
                    Some(Failure::Busy) => tracing::debug!(%digest, "the seed is busy; will retry"),
                    Some(Failure::Broken(ref e)) => {
                        tracing::info!(%digest, pieces = ?left, error = e, "a seed fetch failed; will retry")
                    }
                    Some(Failure::TicketRefused(ref e)) => {
                        tracing::info!(%digest, pieces = ?left, error = e, "the seed refused the ticket; joining for a new one")
                    }
                    None => {}
                }
                if let Some(failure) = failure {
                    self.schedule.failed(Source::Seed, &failure, now);
                }
            }
        }
        Ok(self.schedule.seed_verdict()?)
    }

    /// Verifies and stores what arrived, or notes who failed.
    async fn received(&mut self, (i, source, started, result): Fetched) -> Result<()> {
        self.schedule.ended(i);
        let digest = self.d.digest;
        let metrics = &self.engine.metrics;
        match (result, source) {
            (Ok(bytes), source) if self.d.layout.verify(i, &bytes) => self.keep(i, bytes, source, started).await?,
            (Ok(_), Source::Parent { id, .. }) => self.caught_lying(i, &id),
            (Ok(_), Source::Seed) => {
                metrics.piece("rejected");
                tracing::warn!(%digest, piece = i, "the seed sent a piece that does not match its digest");
                self.schedule.seed_corrupt(i);
            }
            (Err(failure), source) => {
                match (&failure, &source) {
                    (Failure::Busy, Source::Parent { id, .. }) => {
                        tracing::debug!(%digest, piece = i, parent = id, "every upload slot of the parent is busy");
                    }
                    (Failure::Busy, Source::Seed) => {
                        tracing::debug!(%digest, piece = i, "the seed is busy; will retry")
                    }
                    (Failure::Broken(e) | Failure::TicketRefused(e), Source::Parent { id, .. }) => {
                        tracing::info!(%digest, piece = i, parent = id, error = e, "a parent failed; trying elsewhere");
                    }
                    (Failure::TicketRefused(e), Source::Seed) => {
                        tracing::info!(%digest, piece = i, error = e, "the seed refused the ticket; joining for a new one");
                    }
                    (Failure::Broken(e), Source::Seed) => {
                        tracing::info!(%digest, piece = i, error = e, "a seed fetch failed; will retry");
                    }
                }
                self.schedule.failed(source, &failure, Instant::now());
            }
        }
        Ok(self.schedule.seed_verdict()?)
    }

    /// Stores a verified piece and notes where it came from.
    async fn keep(&mut self, i: u32, bytes: Bytes, source: Source, started: Instant) -> Result<()> {
        if self.schedule.has(i) {
            // A feed and a fetch both brought it.
            return Ok(());
        }
        let metrics = &self.engine.metrics;
        let len = bytes.len() as u64;
        // Counted before the piece is stored: once stored, a reader
        // may send it on, and whoever saw those bytes sees them counted.
        metrics.piece("verified");
        metrics.received(if matches!(source, Source::Seed) { "seed" } else { "peer" }, len);
        self.engine.store(self.d, i, bytes).await.map_err(Error::CacheWrite)?;
        let from = match &source {
            Source::Seed => "seed",
            Source::Parent { id, .. } => id.as_str(),
        };
        let millis = started.elapsed().as_millis() as u64;
        tracing::debug!(digest = %self.d.digest, piece = i, from, millis, "piece verified");
        self.schedule.kept(i, &source, len, Instant::now());
        Ok(())
    }

    /// A parent sent piece `i` with the wrong bytes: never asked again, and reported.
    fn caught_lying(&mut self, i: u32, id: &str) {
        self.engine.metrics.piece("rejected");
        tracing::warn!(digest = %self.d.digest, piece = i, parent = id, "a parent sent a corrupt piece; avoiding it");
        for stripe in self.schedule.lied(id) {
            if let Some(gone) = self.streams.remove(&stripe) {
                gone.abort();
            }
        }
    }

    /// Opens, moves or closes the stripes' feeds as the schedule says.
    fn follow_feeds(&mut self) {
        while self.stream_tasks.try_join_next().is_some() {}
        for change in self.schedule.feed_changes(Instant::now()) {
            match change {
                FeedChange::Close(stripe) => {
                    if let Some(gone) = self.streams.remove(&stripe) {
                        gone.abort();
                    }
                }
                FeedChange::Open(stripe, parent) => {
                    let have = self.schedule.have();
                    let spec = FeedSpec {
                        parent: parent.agent_id.clone(),
                        url: format!("{}/feeds/{}", parent.url, self.d.digest),
                        ticket: self.schedule.ticket().to_owned(),
                        request: FeedRequest {
                            stripes: self.schedule.stripes() as u32,
                            stripe: stripe as u32,
                            have: bitmap_hex(have),
                        },
                        download: self.d.clone(),
                    };
                    let (http, limit) = (self.engine.http.clone(), self.engine.download_limit.clone());
                    let task = self.stream_tasks.spawn(super::feed::run(http, spec, limit, self.events.clone()));
                    if let Some(old) = self.streams.insert(stripe, task) {
                        old.abort();
                    }
                }
            }
        }
    }

    /// A piece, the end, or a failure from a stripe's feed.
    async fn on_feed(&mut self, FeedEvent { stripe, parent, what }: FeedEvent) -> Result<()> {
        let now = Instant::now();
        match what {
            // Logged with the time from the piece's first bytes, as a fetch is from its request.
            FeedItem::Piece(i, bytes, since) if self.d.layout.verify(i, &bytes) => {
                self.schedule.feed_brought(stripe, &parent, now);
                self.keep(i, bytes, Source::Parent { id: parent, url: String::new() }, since).await?;
            }
            FeedItem::Piece(i, ..) => self.caught_lying(i, &parent),
            FeedItem::Ended => self.schedule.feed_ended(stripe, &parent),
            FeedItem::Broken(e) => {
                if self.schedule.feed_broke(stripe, &parent, now) {
                    tracing::info!(digest = %self.d.digest, stripe, parent, error = e, "a stripe's feed failed; fetching its pieces elsewhere");
                }
            }
            FeedItem::Unknown => self.schedule.feed_unknown(stripe, &parent),
            FeedItem::Busy => {
                if self.schedule.feed_busy(stripe, &parent, now) {
                    tracing::info!(digest = %self.d.digest, stripe, parent, "every feed slot of the parent is busy; pulling the stripe meanwhile");
                }
            }
        }
        Ok(())
    }

    /// Reports, joins again for new parents and seed pieces, and notices a stall.
    async fn on_tick(&mut self, idle: bool) -> Result<()> {
        self.flush().await;
        let slot_free = self.engine.fetch_slots.free();
        if let Some((every, wait_ms)) = self.schedule.wanted_join(idle, slot_free, Instant::now()) {
            self.rejoin(every, wait_ms).await;
        }
        if let Some(pieces) = self.schedule.after_tick(idle, Instant::now())? {
            tracing::info!(digest = %self.d.digest, ?pieces, "no source for these; asking the seed");
        }
        Ok(())
    }

    /// Joins again for fresh parents, seed pieces and piece counts, unless
    /// the last join was less than `at_least` ago.
    async fn rejoin(&mut self, at_least: Duration, wait_ms: Option<u32>) {
        if !self.schedule.join_due(at_least, Instant::now()) {
            return;
        }
        if self.engine.supernode.agent_id() != self.ticket_agent {
            self.schedule.ticket_stale(Instant::now());
        }
        let brief = self.schedule.joining(Instant::now());
        let have = self.d.have_list();
        let again = Rejoin { wait_ms, brief, fetching: Some(self.engine.fetch_slots.running()) };
        match self.engine.supernode.join(self.repository, self.d.digest, self.client_token, have, again).await {
            Ok(next) => {
                if !next.ticket.is_empty() {
                    // Issued to the id the join went out under, which it may have registered anew.
                    self.ticket_agent = self.engine.supernode.agent_id();
                }
                self.schedule.planned(next, Instant::now());
                self.follow_feeds();
            }
            Err(e) => tracing::debug!(error = %Report(&e), "re-join failed"),
        }
    }

    async fn flush(&mut self) {
        if !self.schedule.owes() {
            return;
        }
        let Some(agent_id) = self.engine.supernode.agent_id() else { return };
        let owed = self.schedule.take_owed();
        let report = ReportRequest {
            agent_id,
            digest: self.d.digest,
            have: owed.have,
            failed_parents: owed.failed,
            bad_parents: owed.bad,
            bytes_from: owed.bytes_from.into_iter().collect(),
            uploading: Some(self.engine.supernode.uploading()),
        };
        self.engine.supernode.report(report).await;
    }
}

async fn fetch_piece(
    http: &reqwest::Client,
    url: &str,
    ticket: &str,
    expected: u64,
    limit: &RateLimit,
) -> Result<Bytes, Failure> {
    use futures_util::StreamExt;
    let broken = Failure::Broken;
    let request = http.get(url).header(reqwest::header::AUTHORIZATION, format!("{TICKET_AUTH_SCHEME} {ticket}")).send();
    let r = tokio::time::timeout(STALL_TIMEOUT, request)
        .await
        .map_err(|_| broken(format!("no answer in {} s", STALL_TIMEOUT.as_secs())))?
        .map_err(|e| broken(e.to_string()))?;
    if r.status() == reqwest::StatusCode::SERVICE_UNAVAILABLE || r.status() == reqwest::StatusCode::TOO_MANY_REQUESTS {
        return Err(Failure::Busy);
    }
    if !r.status().is_success() {
        return Err(super::failed_answer(r).await);
    }
    let mut body = r.bytes_stream();
    let mut piece = bytes::BytesMut::with_capacity(expected as usize);
    loop {
        let next = tokio::time::timeout(STALL_TIMEOUT, body.next())
            .await
            .map_err(|_| broken(format!("stalled for {} s after {} bytes", STALL_TIMEOUT.as_secs(), piece.len())))?;
        match next {
            Some(chunk) => {
                let chunk = chunk.map_err(|e| broken(e.to_string()))?;
                if piece.len() as u64 + chunk.len() as u64 > expected {
                    return Err(broken(format!("sent more than the piece's {expected} bytes")));
                }
                piece.extend_from_slice(&chunk);
                limit.take(chunk.len() as u64).await;
            }
            None => break,
        }
    }
    if piece.len() as u64 != expected {
        return Err(broken(format!("sent {} bytes instead of {expected}", piece.len())));
    }
    Ok(piece.freeze())
}

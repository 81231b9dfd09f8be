//! The fetch loop of one download: which piece from whom, what to do with
//! what arrives, and what to tell the scheduler.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use damselfly_core::p2p::{
    bitmap_hex, Feed, FeedRequest, JoinResponse, Parent, ReportRequest, BRIEF_TICKET_LEFT_SECS, TICKET_AUTH_SCHEME,
};
use tokio::sync::mpsc;
use tokio::task::{AbortHandle, JoinSet};

use super::feed::{FeedEvent, FeedItem, FeedSpec};
use super::slots::Slot;
use super::{Download, Engine, STALL_TIMEOUT};
use crate::error::{Error, Report, Result};
use crate::rate::RateLimit;
use crate::supernode::Rejoin;

/// Pieces fetched at once per blob.
const PARALLEL: usize = 4;
/// A feed that brought no piece for this long, while a usable peer has
/// held one of its stripe's missing pieces as long, hangs: its pieces are
/// then fetched like any other. A feed that keeps bringing pieces is left
/// alone however far behind it is, since a fetch from elsewhere would take
/// the link it needs.
const FEED_LAG: Duration = Duration::from_secs(6);
/// How often to ask the scheduler again while a piece waits for a source
/// and the node has a fetch slot free for it.
const REJOIN_EVERY: Duration = Duration::from_millis(300);
/// How often to ask again while every waiting piece has a source, or the
/// node's fetch slots are all taken: only to hear of new parents. Each
/// join's answer crosses the registry's uplink, the link the seed sends
/// on: sixteen agents pulling four layers and asking every 300 ms sent
/// 6,000 joins in a 37 s benchmark, and asking often only when it helps
/// halves that.
const REFRESH_EVERY: Duration = Duration::from_secs(2);
/// How long the registry may hold a join while this download has nothing
/// to fetch; reports and stall checks wait meanwhile, with nothing in flight.
const JOIN_WAIT_MS: u32 = 1000;
/// How often progress is reported.
const REPORT_EVERY: Duration = Duration::from_millis(200);
/// A download with no new piece for this long gives up, unless the
/// scheduler says that its blob waits its turn at the seed.
const GIVE_UP_AFTER: Duration = Duration::from_secs(60);
/// Corrupt copies of one piece from the seed before giving up on the blob.
const SEED_ATTEMPTS: u32 = 3;
/// Seed fetches failing in a row before giving up on the blob. Between
/// them the seed is left alone for a doubling pause (0.5, 1, 2, 4, 4… s):
/// about 20 s in all, enough for a registry to restart.
const SEED_FAILURES: u32 = 8;
/// How long a parent that failed is not asked again.
const FAILED_PARENT_PAUSE: Duration = Duration::from_secs(30);
/// How long a parent whose upload slots were all busy is not asked again.
/// Busy is not broken: it is neither reported nor avoided for long.
const BUSY_PARENT_PAUSE: Duration = Duration::from_millis(500);
/// How long a parent whose feed slots were all busy is not asked for a feed
/// again; its stripe's pieces are pulled meanwhile.
const BUSY_FEED_PAUSE: Duration = Duration::from_secs(2);
/// Least time between two joins, when one is wanted at once (a seed piece
/// arrived, so the seed can hand out the next).
const REJOIN_AT_LEAST: Duration = Duration::from_millis(50);
/// With nothing in flight for this long after a parent failed, the missing
/// pieces are asked of the seed directly: the seed serves any piece to a
/// ticket holder, while the scheduler keeps counting a failed parent's
/// pieces as held (a crashed peer until it misses three heartbeats) and so
/// hands them to nobody.
const STALL: Duration = Duration::from_secs(3);
/// Idle this long without a successful join, the seed is asked even if no
/// parent failed. While joins succeed the scheduler is trusted to move
/// things along: a swarm waiting its turn at a busy seed is idle by design,
/// and a seed piece reserved for an agent that went quiet is handed to
/// another when its reservation lapses.
const STALL_ANYWAY: Duration = Duration::from_secs(20);

#[derive(Clone, Debug)]
enum Source {
    Seed,
    Parent { id: String, url: String },
}

/// Why a piece did not arrive.
enum Failure {
    /// Every upload slot of the source was taken: ask elsewhere, soon ask again.
    Busy,
    /// Refused, stalled, disconnected or sent the wrong length.
    Broken(String),
}

type Fetched = (u32, Source, Instant, Result<Bytes, Failure>);

/// What is owed to the scheduler at the next report.
#[derive(Default)]
struct Owed {
    have: Vec<u32>,
    failed: Vec<String>,
    bad: Vec<String>,
    bytes_from: HashMap<String, u64>,
}

/// The state of one download's fetching.
struct Fetch<'a> {
    engine: &'a Engine,
    d: &'a Arc<Download>,
    repository: &'a str,
    client_token: Option<&'a str>,
    parents: Vec<Parent>,
    seed: BTreeSet<u32>,
    ticket: String,
    /// When the ticket expires.
    ticket_until: Instant,
    seed_url: String,
    /// Parents not to ask: until a moment (failed), or for good (sent a corrupt piece).
    avoid: HashMap<String, Option<Instant>>,
    /// Parents that were busy, not to ask until then.
    busy: HashMap<String, Instant>,
    /// Holders of each piece as of the last join: the rarest is fetched first.
    availability: Vec<u32>,
    inflight: HashMap<u32, Source>,
    seed_attempts: HashMap<u32, u32>,
    /// Seed fetches failed in a row, and until when the seed is not asked.
    seed_failures: u32,
    seed_paused_until: Option<Instant>,
    report: Owed,
    last_join: Instant,
    /// When a join last succeeded.
    last_plan: Instant,
    last_progress: Instant,
    idle_since: Option<Instant>,
    /// The stripe trees' parents as of the last join (see [`JoinResponse::feeds`]).
    feeds: Vec<Option<Feed>>,
    /// Each stripe's running feed.
    streams: Vec<Option<Stream>>,
    /// Parents whose feed slots were busy, not to ask for a feed until then.
    busy_feeds: HashMap<String, Instant>,
    stream_tasks: JoinSet<()>,
    events: mpsc::UnboundedSender<FeedEvent>,
    /// When a join first said that a usable peer holds each missing piece.
    seen: HashMap<u32, Instant>,
    /// When a feed last brought a piece.
    last_fed: Option<Instant>,
}

/// A stripe's feed: who streams it and the task receiving it.
struct Stream {
    parent: String,
    task: AbortHandle,
    /// The parent sent all it was asked for.
    done: bool,
    /// When it last brought a piece, or opened.
    last_piece: Instant,
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
        let mut f = Fetch {
            engine: self,
            d,
            repository,
            client_token,
            parents: plan.parents,
            seed: plan.seed_pieces.into_iter().collect(),
            ticket: plan.ticket,
            ticket_until: Instant::now() + Duration::from_secs(plan.ticket_expires_in),
            seed_url: plan.seed_url,
            avoid: HashMap::new(),
            busy: HashMap::new(),
            availability: plan.availability,
            inflight: HashMap::new(),
            seed_attempts: HashMap::new(),
            seed_failures: 0,
            seed_paused_until: None,
            // A resumed download announces what it holds already.
            report: Owed { have: d.have_list(), ..Owed::default() },
            last_join: Instant::now(),
            last_plan: Instant::now(),
            last_progress: Instant::now(),
            idle_since: None,
            feeds: plan.feeds,
            streams: Vec::new(),
            busy_feeds: HashMap::new(),
            stream_tasks: JoinSet::new(),
            events,
            seen: HashMap::new(),
            last_fed: None,
        };
        f.saw_holders();
        f.ensure_feeds();
        let mut tasks: JoinSet<Fetched> = JoinSet::new();
        let mut tick = tokio::time::interval(REPORT_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The wait for one of the node's fetch slots. It is kept across turns
        // of the loop so that this download keeps its place in the queue; the
        // source is chosen only once a slot is held, so it is never stale.
        let mut slot: Option<SlotWait> = None;
        while !d.missing().is_empty() {
            // Pieces the seed reserved for this agent go at once, without
            // waiting for a fetch slot behind slower peer transfers: the
            // seed's budget is the swarm's scarcest resource.
            while let Some(i) = f.next_seed_piece() {
                f.start_fetch(&mut tasks, self.fetch_slots.seed(), i, Source::Seed);
            }
            if tasks.len() < PARALLEL && f.next_piece().is_some() {
                slot.get_or_insert_with(|| Box::pin(self.fetch_slots.clone().peer()));
            } else {
                slot = None;
            }
            let wait_slot = async {
                match slot.as_mut() {
                    Some(wait) => Some(wait.await),
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                Some(permit) = wait_slot => {
                    slot = None;
                    if let Some((i, source)) = f.next_piece() {
                        f.start_fetch(&mut tasks, permit, i, source);
                    }
                }
                Some(Ok(fetched)) = tasks.join_next(), if !tasks.is_empty() => {
                    let from_seed = matches!(fetched.1, Source::Seed);
                    let busy = matches!(fetched.3, Err(Failure::Busy));
                    f.received(fetched).await?;
                    // The seed hands out its next piece when this one is
                    // reported; a busy parent means the plan's upload counts
                    // are stale, and with no other source a fresh plan is due.
                    if from_seed || (busy && f.next_piece().is_none()) {
                        f.flush().await;
                        f.rejoin(REJOIN_AT_LEAST, None).await;
                    }
                }
                Some(event) = feed_events.recv() => f.on_feed(event).await?,
                _ = tick.tick() => {
                    let idle = tasks.is_empty() && f.last_fed.is_none_or(|t| t.elapsed() >= STALL);
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
    /// The missing piece to fetch next, with its source: the rarest in the
    /// swarm first, then the lowest, so that readers in order get going soon.
    fn next_piece(&self) -> Option<(u32, Source)> {
        let rarity = |i: u32| self.availability.get(i as usize).copied().unwrap_or(0);
        let mut missing: Vec<u32> =
            self.d.missing().into_iter().filter(|i| !self.inflight.contains_key(i) && !self.fed(*i)).collect();
        missing.sort_by_key(|&i| (rarity(i), i));
        missing.into_iter().find_map(|i| self.source_of(i).map(|s| (i, s)))
    }

    /// A piece reserved for this agent at the seed that no parent can give, not yet being fetched.
    fn next_seed_piece(&self) -> Option<u32> {
        self.seed
            .iter()
            .copied()
            .filter(|i| !self.inflight.contains_key(i) && self.d.missing().contains(i))
            .find(|&i| matches!(self.source_of(i), Some(Source::Seed)))
    }

    /// Starts fetching piece `i` from `source`, holding one of the node's fetch slots until it ends.
    fn start_fetch(&mut self, tasks: &mut JoinSet<Fetched>, slot: Slot, i: u32, source: Source) {
        let url = match &source {
            Source::Seed => format!("{}/{i}", self.seed_url),
            Source::Parent { url, .. } => format!("{url}/pieces/{}/{i}", self.d.digest),
        };
        self.inflight.insert(i, source.clone());
        let http = self.engine.http.clone();
        let ticket = self.ticket.clone();
        let expected = self.d.layout.span(i).1;
        let limit = self.engine.download_limit.clone();
        tasks.spawn(async move {
            let _slot = slot;
            let started = Instant::now();
            (i, source, started, fetch_piece(&http, &url, &ticket, expected, &limit).await)
        });
    }

    /// The least busy usable parent holding piece `i`, else the seed if it was handed the piece.
    fn source_of(&self, i: u32) -> Option<Source> {
        let now = Instant::now();
        let busy =
            |id: &str| self.inflight.values().filter(|s| matches!(s, Source::Parent { id: p, .. } if p == id)).count();
        let parent = self
            .parents
            .iter()
            .filter(|p| !self.avoid.contains_key(&p.agent_id) && p.pieces.contains(&i))
            .filter(|p| self.busy.get(&p.agent_id).is_none_or(|until| *until <= now))
            .min_by_key(|p| busy(&p.agent_id));
        match parent {
            Some(p) => Some(Source::Parent { id: p.agent_id.clone(), url: p.url.clone() }),
            None if self.seed.contains(&i) && self.seed_paused_until.is_none_or(|t| t <= now) => Some(Source::Seed),
            None => None,
        }
    }

    /// Verifies and stores what arrived, or notes who failed.
    async fn received(&mut self, (i, source, started, result): Fetched) -> Result<()> {
        self.inflight.remove(&i);
        let digest = self.d.digest;
        let metrics = &self.engine.metrics;
        match (result, source) {
            (Ok(bytes), source) if self.d.layout.verify(i, &bytes) => self.keep(i, bytes, source, started).await?,
            (Ok(_), Source::Parent { id, .. }) => self.caught_lying(i, id),
            (Ok(_), Source::Seed) => {
                metrics.piece("rejected");
                tracing::warn!(%digest, piece = i, "the seed sent a piece that does not match its digest");
                *self.seed_attempts.entry(i).or_default() += 1;
            }
            (Err(Failure::Busy), Source::Parent { id, .. }) => {
                tracing::debug!(%digest, piece = i, parent = id, "every upload slot of the parent is busy");
                self.busy.insert(id, Instant::now() + BUSY_PARENT_PAUSE);
            }
            (Err(Failure::Busy), Source::Seed) => {
                tracing::debug!(%digest, piece = i, "the seed is busy; will retry");
                self.seed_failed();
            }
            (Err(Failure::Broken(e)), Source::Parent { id, .. }) => {
                tracing::info!(%digest, piece = i, parent = id, error = e, "a parent failed; trying elsewhere");
                self.avoid.insert(id.clone(), Some(Instant::now() + FAILED_PARENT_PAUSE));
                self.report.failed.push(id);
            }
            (Err(Failure::Broken(e)), Source::Seed) => {
                tracing::info!(%digest, piece = i, error = e, "a seed fetch failed; will retry");
                self.seed_failed();
            }
        }
        if self.seed_attempts.values().any(|&a| a >= SEED_ATTEMPTS) {
            return Err(Error::SeedCorrupt);
        }
        if self.seed_failures >= SEED_FAILURES {
            return Err(Error::SeedFailing(SEED_FAILURES));
        }
        Ok(())
    }

    /// Stores a verified piece and notes where it came from.
    async fn keep(&mut self, i: u32, bytes: Bytes, source: Source, started: Instant) -> Result<()> {
        if self.d.has(i) {
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
        self.last_progress = Instant::now();
        self.report.have.push(i);
        self.seed.remove(&i);
        match source {
            Source::Seed => self.seed_failures = 0,
            Source::Parent { id, .. } => *self.report.bytes_from.entry(id).or_default() += len,
        }
        Ok(())
    }

    /// A parent sent piece `i` with the wrong bytes: never asked again, and reported.
    fn caught_lying(&mut self, i: u32, id: String) {
        self.engine.metrics.piece("rejected");
        tracing::warn!(digest = %self.d.digest, piece = i, parent = id, "a parent sent a corrupt piece; avoiding it");
        for stream in &mut self.streams {
            if stream.as_ref().is_some_and(|s| s.parent == id) {
                if let Some(gone) = stream.take() {
                    gone.task.abort();
                }
            }
        }
        self.avoid.insert(id.clone(), None);
        self.report.bad.push(id);
    }

    /// Whether piece `i` is left to its stripe's feed: the feed runs, and
    /// it does not hang (see [`FEED_LAG`]).
    fn fed(&self, i: u32) -> bool {
        let k = self.streams.len();
        let Some(stream) = (k > 0).then(|| self.streams[i as usize % k].as_ref()).flatten() else { return false };
        !stream.done
            && (stream.last_piece.elapsed() < FEED_LAG || self.seen.get(&i).is_none_or(|at| at.elapsed() < FEED_LAG))
    }

    /// Whether this agent is the root of a stripe tree that it lacks pieces of.
    fn rooted(&self, missing: &[u32]) -> bool {
        let k = self.feeds.len();
        k > 0 && missing.iter().any(|&i| self.feeds[i as usize % k].is_none())
    }

    /// Notes when a usable peer was first said to hold each missing piece.
    fn saw_holders(&mut self) {
        let now = Instant::now();
        for (i, n) in self.availability.iter().enumerate() {
            if *n > 0 {
                self.seen.entry(i as u32).or_insert(now);
            }
        }
    }

    /// Opens, moves or closes each stripe's feed to follow the last join:
    /// from the parent it names, unless that parent is avoided or the agent
    /// holds the whole stripe.
    fn ensure_feeds(&mut self) {
        while self.stream_tasks.try_join_next().is_some() {}
        let k = self.feeds.len();
        for gone in self.streams.drain(k.min(self.streams.len())..).flatten() {
            gone.task.abort();
        }
        self.streams.resize_with(k, || None);
        let have = self.d.have_bits();
        for s in 0..k {
            let lacking = have.iter().enumerate().any(|(i, h)| !h && i % k == s);
            // Both maps are pruned of lapsed entries before this runs.
            let usable =
                |p: &&Feed| !self.avoid.contains_key(&p.agent_id) && !self.busy_feeds.contains_key(&p.agent_id);
            let want = self.feeds[s].as_ref().filter(|p| lacking && usable(p));
            let running = self.streams[s].as_ref().map(|st| st.parent.as_str());
            if want.map(|p| p.agent_id.as_str()) == running {
                continue;
            }
            if let Some(old) = self.streams[s].take() {
                old.task.abort();
            }
            let Some(parent) = want else { continue };
            let spec = FeedSpec {
                parent: parent.agent_id.clone(),
                url: format!("{}/feeds/{}", parent.url, self.d.digest),
                ticket: self.ticket.clone(),
                request: FeedRequest { stripes: k as u32, stripe: s as u32, have: bitmap_hex(&have) },
                download: self.d.clone(),
            };
            let (http, limit) = (self.engine.http.clone(), self.engine.download_limit.clone());
            let task = self.stream_tasks.spawn(super::feed::run(http, spec, limit, self.events.clone()));
            self.streams[s] =
                Some(Stream { parent: parent.agent_id.clone(), task, done: false, last_piece: Instant::now() });
        }
    }

    /// A piece, the end, or a failure from a stripe's feed.
    async fn on_feed(&mut self, FeedEvent { stripe, parent, what }: FeedEvent) -> Result<()> {
        let current = self.streams.get(stripe).and_then(Option::as_ref).is_some_and(|s| s.parent == parent);
        match what {
            FeedItem::Piece(i, bytes) if self.d.layout.verify(i, &bytes) => {
                self.last_fed = Some(Instant::now());
                if let Some(s) = self.streams.get_mut(stripe).and_then(Option::as_mut).filter(|_| current) {
                    s.last_piece = Instant::now();
                }
                self.keep(i, bytes, Source::Parent { id: parent, url: String::new() }, Instant::now()).await?;
            }
            FeedItem::Piece(i, _) => self.caught_lying(i, parent),
            FeedItem::Ended => {
                if let Some(s) = self.streams.get_mut(stripe).and_then(Option::as_mut).filter(|_| current) {
                    s.done = true;
                }
            }
            FeedItem::Broken(e) if current => {
                tracing::info!(digest = %self.d.digest, stripe, parent, error = e, "a stripe's feed failed; fetching its pieces elsewhere");
                self.streams[stripe] = None;
                self.avoid.insert(parent.clone(), Some(Instant::now() + FAILED_PARENT_PAUSE));
                self.report.failed.push(parent);
            }
            FeedItem::Unknown if current => self.streams[stripe] = None,
            FeedItem::Busy if current => {
                tracing::info!(digest = %self.d.digest, stripe, parent, "every feed slot of the parent is busy; pulling the stripe meanwhile");
                self.streams[stripe] = None;
                self.busy_feeds.insert(parent, Instant::now() + BUSY_FEED_PAUSE);
            }
            FeedItem::Broken(_) | FeedItem::Unknown | FeedItem::Busy => {}
        }
        Ok(())
    }

    /// Leaves the seed alone for a while after a failure, longer each time.
    fn seed_failed(&mut self) {
        self.seed_failures += 1;
        let pause = Duration::from_millis(250 << self.seed_failures.min(4));
        self.seed_paused_until = Some(Instant::now() + pause);
    }

    /// Reports, joins again for new parents and seed pieces, and notices a stall.
    async fn on_tick(&mut self, idle: bool) -> Result<()> {
        self.flush().await;
        let missing = self.d.missing();
        let waiting = missing.iter().any(|&i| !self.inflight.contains_key(&i) && !self.fed(i));
        if waiting {
            // With nothing to fetch at all, the registry holds the answer
            // until there is: the seed's next piece goes out at once. A
            // stripe's root asks often even while its fetch slots are taken:
            // the seed's pieces do not wait for a slot.
            let sourceless = self.next_piece().is_none() && self.next_seed_piece().is_none();
            let starved = sourceless && (self.engine.fetch_slots.free() || self.rooted(&missing));
            let every = if starved { REJOIN_EVERY } else { REFRESH_EVERY };
            self.rejoin(every, (idle && sourceless).then_some(JOIN_WAIT_MS)).await;
        } else if !missing.is_empty() {
            // Only pieces the feeds bring are missing: the feeds' parents
            // and the pieces' holders are still worth hearing of.
            self.rejoin(REFRESH_EVERY, None).await;
        }
        if !idle {
            self.idle_since = None;
        } else {
            let idle_for = self.idle_since.get_or_insert_with(Instant::now).elapsed();
            let unplanned = self.last_plan.elapsed() >= STALL_ANYWAY;
            if (idle_for >= STALL && !self.avoid.is_empty()) || (idle_for >= STALL_ANYWAY && unplanned) {
                // One piece at a time: the seed's link is shared by the whole swarm.
                let missing: Vec<u32> =
                    self.d.missing().into_iter().filter(|i| !self.seed.contains(i)).take(1).collect();
                tracing::info!(digest = %self.d.digest, pieces = ?missing, "no source for these; asking the seed");
                self.seed.extend(missing);
                self.idle_since = None;
            }
        }
        if self.last_progress.elapsed() > GIVE_UP_AFTER {
            return Err(Error::NoProgress(GIVE_UP_AFTER.as_secs()));
        }
        Ok(())
    }

    /// Joins again for fresh parents, seed pieces and piece counts, unless
    /// the last join was less than `at_least` ago.
    async fn rejoin(&mut self, at_least: Duration, wait_ms: Option<u32>) {
        if self.last_join.elapsed() < at_least {
            return;
        }
        self.last_join = Instant::now();
        let have = self.d.have_list();
        let supernode = &self.engine.supernode;
        let brief = self.ticket_until.saturating_duration_since(Instant::now()).as_secs() > BRIEF_TICKET_LEFT_SECS;
        let again = Rejoin { wait_ms, brief, fetching: Some(self.engine.fetch_slots.running()) };
        match supernode.join(self.repository, self.d.digest, self.client_token, have, again).await {
            Ok(next) => {
                self.last_plan = Instant::now();
                if next.queued {
                    // Waiting for the seed is not a stall (see `GIVE_UP_AFTER`).
                    self.last_progress = Instant::now();
                }
                self.parents = next.parents;
                self.seed.extend(next.seed_pieces);
                self.availability = next.availability;
                self.feeds = next.feeds;
                self.saw_holders();
                if !next.ticket.is_empty() {
                    self.ticket = next.ticket;
                    self.ticket_until = Instant::now() + Duration::from_secs(next.ticket_expires_in);
                }
                // A parent that failed gets another chance once its pause is over; a liar never does.
                let now = Instant::now();
                self.avoid.retain(|_, until| until.is_none_or(|t| t > now));
                self.busy.retain(|_, until| *until > now);
                self.busy_feeds.retain(|_, until| *until > now);
                self.ensure_feeds();
            }
            Err(e) => tracing::debug!(error = %Report(&e), "re-join failed"),
        }
    }

    async fn flush(&mut self) {
        let r = &self.report;
        if r.have.is_empty() && r.failed.is_empty() && r.bad.is_empty() {
            return;
        }
        let Some(agent_id) = self.engine.supernode.agent_id() else { return };
        let r = std::mem::take(&mut self.report);
        let report = ReportRequest {
            agent_id,
            digest: self.d.digest,
            have: r.have,
            failed_parents: r.failed,
            bad_parents: r.bad,
            bytes_from: r.bytes_from.into_iter().collect(),
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
        return Err(broken(format!("answered {}", r.status())));
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

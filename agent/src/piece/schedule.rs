//! The decisions of one download's fetch loop: which piece to fetch next
//! and from whom, what a failure or a feed's news changes, when to join the
//! scheduler again, when the download has stalled and when it gives up.
//!
//! They are a function of the state kept here and of the time, which every
//! call is handed: nothing here reads a clock, sends a request or touches
//! the cache. `fetch.rs` does what they call for, the tests below drive
//! them on a clock that moves only when told, and the simulator (`sim/`)
//! drives them for every simulated agent on its virtual clock: this file is
//! the agent's library for that reason.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use damselfly_core::p2p::{stripe_of, Feed, JoinResponse, Parent, BRIEF_TICKET_LEFT_SECS};

/// Why a download gives up: the fetch loop ends with it.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum GiveUp {
    /// The seed sent corrupt copies of one piece again and again.
    #[error("the seed sent corrupt copies of the same piece repeatedly")]
    SeedCorrupt,
    /// The seed failed fetch after fetch.
    #[error("the seed failed {0} times in a row")]
    SeedFailing(u32),
    /// No piece arrived for too long, and the blob is not waiting its turn at the seed.
    #[error("no new piece for {0} s")]
    NoProgress(u64),
}

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
/// For this long after a download starts it asks at least every
/// [`REJOIN_EVERY`]: a crowd's members join within moments of each other, and
/// each join may move the stripe trees' places, so a feed named by an early
/// join may come from a parent that is no longer the stripe's.
const YOUNG: Duration = Duration::from_secs(3);
/// How long the registry may hold a join while this download has nothing
/// to fetch; reports and stall checks wait meanwhile, with nothing in flight.
const JOIN_WAIT_MS: u32 = 1000;
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
pub const REJOIN_AT_LEAST: Duration = Duration::from_millis(50);
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

/// Where a piece comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// The registry's seed.
    Seed,
    /// A peer.
    Parent {
        /// Its agent id.
        id: String,
        /// Its piece server.
        url: String,
    },
}

/// Why a piece did not arrive.
#[derive(Debug)]
pub enum Failure {
    /// Every upload slot of the source was taken: ask elsewhere, soon ask again.
    Busy,
    /// Refused, stalled, disconnected or sent the wrong length.
    Broken(String),
    /// The registry's seed refused the ticket (`DENIED` or `UNAUTHORIZED`):
    /// it expired, or it names an agent id the registry no longer counts in
    /// the swarm because this agent registered again. A fresh ticket, from
    /// a join that is not brief, is what helps; the same one never will.
    TicketRefused(String),
}

/// What is owed to the scheduler at the next report.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Owed {
    /// Pieces now held.
    pub have: Vec<u32>,
    /// Parents that failed.
    pub failed: Vec<String>,
    /// Parents that sent a corrupt piece.
    pub bad: Vec<String>,
    /// Bytes received from each parent.
    pub bytes_from: HashMap<String, u64>,
}

/// A stripe's feed as far as the decisions go: who streams it.
#[derive(Debug)]
struct Stream {
    parent: String,
    /// The parent sent all it was asked for.
    done: bool,
    /// When it last brought a piece, or opened.
    last_piece: Instant,
}

/// A change to the stripes' feeds for the fetch loop to make.
#[derive(Debug, PartialEq, Eq)]
pub enum FeedChange {
    /// Stop the stripe's feed.
    Close(usize),
    /// Open the stripe's feed from this parent.
    Open(usize, Feed),
}

/// The state of one download's fetching, as far as its decisions go.
pub struct Schedule {
    /// The pieces held and verified.
    have: Vec<bool>,
    parents: Vec<Parent>,
    /// Pieces the seed may be asked for.
    seed: BTreeSet<u32>,
    ticket: String,
    /// When the ticket expires.
    ticket_until: Instant,
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
    owed: Owed,
    last_join: Instant,
    /// A seed piece arrived since the last join: the next is owed soon, so
    /// that the scheduler hands out the seed's next pieces.
    seed_news: bool,
    /// The ticket is no good any more (see [`Schedule::ticket_stale`]): a
    /// join for a new one is owed at once.
    ticket_news: bool,
    /// When a join last succeeded.
    last_plan: Instant,
    /// The last plan said the blob waits its turn at the seed.
    queued: bool,
    last_progress: Instant,
    idle_since: Option<Instant>,
    /// The stripe trees' parents as of the last join (see [`JoinResponse::feeds`]).
    feeds: Vec<Option<Feed>>,
    /// Each stripe's running feed.
    streams: Vec<Option<Stream>>,
    /// Parents whose feed slots were busy, not to ask for a feed until then.
    busy_feeds: HashMap<String, Instant>,
    /// When a join first said that a usable peer holds each missing piece.
    seen: HashMap<u32, Instant>,
    /// When a feed last brought a piece.
    last_fed: Option<Instant>,
    /// When the download started.
    born: Instant,
}

impl Schedule {
    /// The schedule of a download starting `now` from the join's `plan`,
    /// holding `have` already (a resumed download announces it).
    pub fn new(plan: JoinResponse, have: Vec<bool>, now: Instant) -> Schedule {
        let held = have.iter().enumerate().filter(|(_, h)| **h).map(|(i, _)| i as u32).collect();
        let mut schedule = Schedule {
            have,
            parents: plan.parents,
            seed: plan.seed_pieces.into_iter().collect(),
            ticket: plan.ticket,
            ticket_until: now + Duration::from_secs(plan.ticket_expires_in),
            avoid: HashMap::new(),
            busy: HashMap::new(),
            availability: plan.availability,
            inflight: HashMap::new(),
            seed_attempts: HashMap::new(),
            seed_failures: 0,
            seed_paused_until: None,
            owed: Owed { have: held, ..Owed::default() },
            // The join that made the plan came before the download: the first
            // seed piece's arrival is answered by a join at once. An agent
            // alone gets its run of seed pieces from that join (its first
            // gets one piece, in case a crowd is joining), and on a fast link
            // the piece comes well before REJOIN_AT_LEAST has passed.
            last_join: now.checked_sub(REJOIN_AT_LEAST).unwrap_or(now),
            seed_news: false,
            ticket_news: false,
            last_plan: now,
            queued: false,
            last_progress: now,
            idle_since: None,
            feeds: plan.feeds,
            streams: Vec::new(),
            busy_feeds: HashMap::new(),
            seen: HashMap::new(),
            last_fed: None,
            born: now,
        };
        schedule.saw_holders(now);
        schedule
    }

    /// The pieces still missing, lowest first.
    pub fn missing(&self) -> Vec<u32> {
        self.have.iter().enumerate().filter(|(_, h)| !**h).map(|(i, _)| i as u32).collect()
    }

    /// Whether piece `i` is held.
    pub fn has(&self, i: u32) -> bool {
        self.have.get(i as usize) == Some(&true)
    }

    /// The pieces held, one flag each.
    pub fn have(&self) -> &[bool] {
        &self.have
    }

    /// The ticket peers and the seed take.
    pub fn ticket(&self) -> &str {
        &self.ticket
    }

    /// The missing piece to fetch next from a parent: the rarest in the
    /// swarm first, then the lowest, so that readers in order get going
    /// soon. Pieces from the seed go in batches ([`Schedule::next_seed_batch`]).
    pub fn next_piece(&self, now: Instant) -> Option<(u32, Source)> {
        let rarity = |i: u32| self.availability.get(i as usize).copied().unwrap_or(0);
        let mut missing: Vec<u32> =
            self.missing().into_iter().filter(|i| !self.inflight.contains_key(i) && !self.fed(*i, now)).collect();
        missing.sort_by_key(|&i| (rarity(i), i));
        missing.into_iter().find_map(|i| match self.source_of(i, now) {
            Some(parent @ Source::Parent { .. }) => Some((i, parent)),
            _ => None,
        })
    }

    /// A piece reserved for this agent at the seed that no parent can give, not yet being fetched.
    pub fn next_seed_piece(&self, now: Instant) -> Option<u32> {
        self.seed_ready(now).next()
    }

    /// The seed pieces to fetch now, in one request: every piece reserved
    /// for this agent at the seed that no parent can give and that is not
    /// being fetched, ascending; none while more are already on their way
    /// from the seed than are waiting, so that the pieces of a run handed
    /// out a few at a time go in one request rather than one each. A
    /// request's pieces come one after another at the link's speed, with no
    /// round trip between them.
    pub fn next_seed_batch(&self, now: Instant) -> Vec<u32> {
        let ready: Vec<u32> = self.seed_ready(now).collect();
        if ready.len() < self.seed_pieces_coming() {
            return Vec::new();
        }
        ready
    }

    fn seed_ready(&self, now: Instant) -> impl Iterator<Item = u32> + '_ {
        self.seed
            .iter()
            .copied()
            .filter(|&i| !self.inflight.contains_key(&i) && !self.has(i))
            .filter(move |&i| matches!(self.source_of(i, now), Some(Source::Seed)))
    }

    /// Seed pieces on their way now.
    pub fn seed_pieces_coming(&self) -> usize {
        self.inflight.values().filter(|s| matches!(s, Source::Seed)).count()
    }

    /// The least busy usable parent holding piece `i`, else the seed if it was handed the piece.
    fn source_of(&self, i: u32, now: Instant) -> Option<Source> {
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

    /// Piece `i` is being fetched from `source`.
    pub fn started(&mut self, i: u32, source: Source) {
        self.inflight.insert(i, source);
    }

    /// The fetch of piece `i` ended, however it ended.
    pub fn ended(&mut self, i: u32) {
        self.inflight.remove(&i);
    }

    /// Piece `i`, `len` bytes from `source`, was verified and stored `now`.
    pub fn kept(&mut self, i: u32, source: &Source, len: u64, now: Instant) {
        if let Some(slot) = self.have.get_mut(i as usize) {
            *slot = true;
        }
        self.last_progress = now;
        self.owed.have.push(i);
        self.seed.remove(&i);
        match source {
            Source::Seed => {
                self.seed_failures = 0;
                self.seed_news = true;
            }
            Source::Parent { id, .. } => *self.owed.bytes_from.entry(id.clone()).or_default() += len,
        }
    }

    /// Parent `id` sent a corrupt piece: it is never asked again, and
    /// reported. Returns the stripes whose feeds it streamed, which close.
    pub fn lied(&mut self, id: &str) -> Vec<usize> {
        let mut closed = Vec::new();
        for (s, stream) in self.streams.iter_mut().enumerate() {
            if stream.as_ref().is_some_and(|st| st.parent == id) {
                *stream = None;
                closed.push(s);
            }
        }
        self.avoid.insert(id.to_owned(), None);
        self.owed.bad.push(id.to_owned());
        closed
    }

    /// The seed sent a corrupt copy of piece `i`.
    pub fn seed_corrupt(&mut self, i: u32) {
        *self.seed_attempts.entry(i).or_default() += 1;
    }

    /// A fetch from `source` failed `now`.
    pub fn failed(&mut self, source: Source, failure: &Failure, now: Instant) {
        match (source, failure) {
            (Source::Parent { id, .. }, Failure::Busy) => {
                self.busy.insert(id, now + BUSY_PARENT_PAUSE);
            }
            (Source::Parent { id, .. }, Failure::Broken(_) | Failure::TicketRefused(_)) => {
                self.avoid.insert(id.clone(), Some(now + FAILED_PARENT_PAUSE));
                self.owed.failed.push(id);
            }
            (Source::Seed, Failure::TicketRefused(_)) => {
                // Counted like any seed failure, so that a registry that refuses every new ticket
                // too still ends the download within SEED_FAILURES.
                self.seed_failed(now);
                self.ticket_stale(now);
            }
            (Source::Seed, _) => self.seed_failed(now),
        }
    }

    /// The ticket can no longer be used `now`: the seed refused it, or the
    /// agent registered again under a new id, which the ticket does not
    /// name. The next join is not brief, so that its answer carries a new
    /// ticket, and it goes at once.
    pub fn ticket_stale(&mut self, now: Instant) {
        self.ticket_until = self.ticket_until.min(now);
        self.ticket_news = true;
    }

    /// Leaves the seed alone for a while after a failure, longer each time.
    fn seed_failed(&mut self, now: Instant) {
        self.seed_failures += 1;
        let pause = Duration::from_millis(250 << self.seed_failures.min(4));
        self.seed_paused_until = Some(now + pause);
    }

    /// `Err` once the seed has failed the download for good.
    pub fn seed_verdict(&self) -> Result<(), GiveUp> {
        if self.seed_attempts.values().any(|&a| a >= SEED_ATTEMPTS) {
            return Err(GiveUp::SeedCorrupt);
        }
        if self.seed_failures >= SEED_FAILURES {
            return Err(GiveUp::SeedFailing(SEED_FAILURES));
        }
        Ok(())
    }

    /// Whether piece `i` is left to its stripe's feed: the feed runs, and
    /// it does not hang (see [`FEED_LAG`]).
    pub fn fed(&self, i: u32, now: Instant) -> bool {
        let k = self.streams.len();
        let Some(stream) = (k > 0).then(|| self.streams[stripe_of(i, k)].as_ref()).flatten() else { return false };
        !stream.done
            && (now.duration_since(stream.last_piece) < FEED_LAG
                || self.seen.get(&i).is_none_or(|at| now.duration_since(*at) < FEED_LAG))
    }

    /// Whether this agent is the root of a stripe tree that it lacks pieces of.
    fn rooted(&self, missing: &[u32]) -> bool {
        let k = self.feeds.len();
        k > 0 && missing.iter().any(|&i| self.feeds[stripe_of(i, k)].is_none())
    }

    /// Notes when a usable peer was first said to hold each missing piece.
    fn saw_holders(&mut self, now: Instant) {
        for (i, n) in self.availability.iter().enumerate() {
            if *n > 0 {
                self.seen.entry(i as u32).or_insert(now);
            }
        }
    }

    /// How many stripes the last join cut the blob into (0: no trees).
    pub fn stripes(&self) -> usize {
        self.feeds.len()
    }

    /// Opens, moves or closes each stripe's feed to follow the last join:
    /// from the parent it names, unless that parent is avoided or the agent
    /// holds the whole stripe. Says what to open and close.
    pub fn feed_changes(&mut self, now: Instant) -> Vec<FeedChange> {
        let mut changes = Vec::new();
        let k = self.feeds.len();
        let kept = k.min(self.streams.len());
        for (s, gone) in self.streams.drain(kept..).enumerate() {
            if gone.is_some() {
                changes.push(FeedChange::Close(kept + s));
            }
        }
        self.streams.resize_with(k, || None);
        for s in 0..k {
            let lacking = self.have.iter().enumerate().any(|(i, h)| !h && stripe_of(i as u32, k) == s);
            // Both maps are pruned of lapsed entries before this runs.
            let usable =
                |p: &&Feed| !self.avoid.contains_key(&p.agent_id) && !self.busy_feeds.contains_key(&p.agent_id);
            let want = self.feeds[s].as_ref().filter(|p| lacking && usable(p));
            let running = self.streams[s].as_ref().map(|st| st.parent.as_str());
            if want.map(|p| p.agent_id.as_str()) == running {
                continue;
            }
            let want = want.cloned();
            if self.streams[s].take().is_some() {
                changes.push(FeedChange::Close(s));
            }
            let Some(parent) = want else { continue };
            self.streams[s] = Some(Stream { parent: parent.agent_id.clone(), done: false, last_piece: now });
            changes.push(FeedChange::Open(s, parent));
        }
        changes
    }

    /// Whether `parent` is the one streaming `stripe` now.
    fn streams_now(&self, stripe: usize, parent: &str) -> bool {
        self.streams.get(stripe).and_then(Option::as_ref).is_some_and(|s| s.parent == parent)
    }

    /// `parent`'s feed of `stripe` brought a verified piece `now`.
    pub fn feed_brought(&mut self, stripe: usize, parent: &str, now: Instant) {
        self.last_fed = Some(now);
        if self.streams_now(stripe, parent) {
            if let Some(s) = self.streams[stripe].as_mut() {
                s.last_piece = now;
            }
        }
    }

    /// `parent`'s feed of `stripe` sent all it was asked for.
    pub fn feed_ended(&mut self, stripe: usize, parent: &str) {
        if self.streams_now(stripe, parent) {
            if let Some(s) = self.streams[stripe].as_mut() {
                s.done = true;
            }
        }
    }

    /// `parent`'s feed of `stripe` broke `now`; true if it was the stripe's
    /// feed still, which is then dropped and its parent reported.
    pub fn feed_broke(&mut self, stripe: usize, parent: &str, now: Instant) -> bool {
        if !self.streams_now(stripe, parent) {
            return false;
        }
        self.streams[stripe] = None;
        self.avoid.insert(parent.to_owned(), Some(now + FAILED_PARENT_PAUSE));
        self.owed.failed.push(parent.to_owned());
        true
    }

    /// `parent` does not have the blob yet: the stripe's feed is dropped
    /// without holding it against the parent.
    pub fn feed_unknown(&mut self, stripe: usize, parent: &str) {
        if self.streams_now(stripe, parent) {
            self.streams[stripe] = None;
        }
    }

    /// Every feed slot of `parent` was taken `now`; true if it was the
    /// stripe's feed still, which is then pulled for a while instead.
    pub fn feed_busy(&mut self, stripe: usize, parent: &str, now: Instant) -> bool {
        if !self.streams_now(stripe, parent) {
            return false;
        }
        self.streams[stripe] = None;
        self.busy_feeds.insert(parent.to_owned(), now + BUSY_FEED_PAUSE);
        true
    }

    /// Nothing arrives: no fetch runs and no feed brought a piece for [`STALL`].
    pub fn idle(&self, fetching: bool, now: Instant) -> bool {
        !fetching && self.last_fed.is_none_or(|t| now.duration_since(t) >= STALL)
    }

    /// Whether to join again at this tick: the least time since the last
    /// join, and how long the registry may hold the answer. `slot_free`:
    /// one of the node's fetch slots is free.
    pub fn wanted_join(&self, idle: bool, slot_free: bool, now: Instant) -> Option<(Duration, Option<u32>)> {
        let missing = self.missing();
        let waiting = missing.iter().any(|&i| !self.inflight.contains_key(&i) && !self.fed(i, now));
        if waiting {
            // With nothing to fetch at all, the registry holds the answer
            // until there is: the seed's next piece goes out at once. A
            // stripe's root asks often even while its fetch slots are taken:
            // the seed's pieces do not wait for a slot.
            let sourceless = self.next_piece(now).is_none() && self.next_seed_piece(now).is_none();
            let starved = sourceless && (slot_free || self.rooted(&missing));
            // A join held by the registry costs nothing while it waits, and
            // its answer comes the moment there is something to fetch (the
            // blob's turn at the seed, say): it goes at once.
            let every = match (starved, idle) {
                (true, true) => REJOIN_AT_LEAST,
                (true, false) => REJOIN_EVERY,
                (false, _) if now.duration_since(self.born) < YOUNG => REJOIN_EVERY,
                (false, _) => REFRESH_EVERY,
            };
            Some((every, (idle && sourceless).then_some(JOIN_WAIT_MS)))
        } else if !missing.is_empty() {
            // Only pieces the feeds bring are missing: the feeds' parents
            // and the pieces' holders are still worth hearing of.
            let young = now.duration_since(self.born) < YOUNG;
            Some((if young { REJOIN_EVERY } else { REFRESH_EVERY }, None))
        } else {
            None
        }
    }

    /// When to report and join because a seed piece arrived, or because
    /// the ticket went stale: at once, unless the last join was less than
    /// [`REJOIN_AT_LEAST`] ago, then as soon as it is that long ago; `None`
    /// if neither happened since. Without it, the seed's next pieces, or
    /// the new ticket the seed's pieces wait for, would wait for the next tick.
    pub fn seed_join_at(&self) -> Option<Instant> {
        (self.seed_news || self.ticket_news).then(|| self.last_join + REJOIN_AT_LEAST)
    }

    /// Whether the last join was at least `at_least` ago.
    pub fn join_due(&self, at_least: Duration, now: Instant) -> bool {
        now.duration_since(self.last_join) >= at_least
    }

    /// A join is sent `now`; says whether it may be brief: the ticket has
    /// long enough to run that the answer may leave it and the digests out.
    pub fn joining(&mut self, now: Instant) -> bool {
        self.last_join = now;
        self.seed_news = false;
        self.ticket_news = false;
        self.ticket_until.saturating_duration_since(now).as_secs() > BRIEF_TICKET_LEFT_SECS
    }

    /// A join answered `now` with `next`: fresh parents, seed pieces, piece
    /// counts, stripe parents, and a ticket unless the answer was brief.
    pub fn planned(&mut self, next: JoinResponse, now: Instant) {
        self.last_plan = now;
        self.queued = next.queued;
        if next.queued {
            // Waiting for the seed is not a stall (see `GIVE_UP_AFTER`).
            self.last_progress = now;
        }
        self.parents = next.parents;
        self.seed.extend(next.seed_pieces);
        self.availability = next.availability;
        self.feeds = next.feeds;
        self.saw_holders(now);
        if !next.ticket.is_empty() {
            self.ticket = next.ticket;
            self.ticket_until = now + Duration::from_secs(next.ticket_expires_in);
        }
        // A parent that failed gets another chance once its pause is over; a liar never does.
        self.avoid.retain(|_, until| until.is_none_or(|t| t > now));
        self.busy.retain(|_, until| *until > now);
        self.busy_feeds.retain(|_, until| *until > now);
    }

    /// After a tick's join: notices a stall, in which case the seed is
    /// asked for one more missing piece (returned, for the log), and gives
    /// up after [`GIVE_UP_AFTER`] without a new piece.
    pub fn after_tick(&mut self, idle: bool, now: Instant) -> Result<Option<Vec<u32>>, GiveUp> {
        let mut asked = None;
        if !idle {
            self.idle_since = None;
        } else {
            let idle_for = now.duration_since(*self.idle_since.get_or_insert(now));
            let unplanned = now.duration_since(self.last_plan) >= STALL_ANYWAY;
            // A blob waiting its turn at the seed gets nothing by design, and
            // the seed hands out its pieces in turn: a failed parent does not
            // make that a stall. Asking would send the piece from the seed
            // twice: in a thousand agents with a tenth of them killed, such
            // asks were most of the registry's egress beyond the image.
            let stalled = idle_for >= STALL && !self.avoid.is_empty() && !self.queued;
            if stalled || (idle_for >= STALL_ANYWAY && unplanned) {
                // One piece at a time: the seed's link is shared by the whole swarm.
                let missing: Vec<u32> = self.missing().into_iter().filter(|i| !self.seed.contains(i)).take(1).collect();
                self.seed.extend(missing.iter().copied());
                self.idle_since = None;
                asked = Some(missing);
            }
        }
        if now.duration_since(self.last_progress) > GIVE_UP_AFTER {
            return Err(GiveUp::NoProgress(GIVE_UP_AFTER.as_secs()));
        }
        Ok(asked)
    }

    /// Whether anything is owed to the scheduler.
    pub fn owes(&self) -> bool {
        let o = &self.owed;
        !(o.have.is_empty() && o.failed.is_empty() && o.bad.is_empty())
    }

    /// What is owed to the scheduler, which the report takes.
    pub fn take_owed(&mut self) -> Owed {
        std::mem::take(&mut self.owed)
    }
}

#[cfg(test)]
mod tests {
    use damselfly_core::p2p::JoinMode;

    use super::*;

    /// A plan for a blob of `pieces` pieces.
    fn plan(pieces: usize) -> JoinResponse {
        JoinResponse {
            mode: JoinMode::P2p,
            size: pieces as u64 * 1024,
            piece_size: 1024,
            piece_digests: Vec::new(),
            parents: Vec::new(),
            seed_pieces: Vec::new(),
            availability: vec![0; pieces],
            seed_url: "http://registry/p2p/v1/seed/x/pieces".into(),
            ticket: "ticket".into(),
            ticket_expires_in: 300,
            feeds: Vec::new(),
            queued: false,
        }
    }

    fn parent(id: &str, pieces: &[u32]) -> Parent {
        Parent { agent_id: id.into(), url: format!("http://{id}:65002"), pieces: pieces.to_vec() }
    }

    fn from(id: &str) -> Source {
        Source::Parent { id: id.into(), url: format!("http://{id}:65002") }
    }

    fn feed(id: &str) -> Feed {
        Feed { agent_id: id.into(), url: format!("http://{id}:65002") }
    }

    /// The clock of a test: `at(ms)` is that many milliseconds after the start.
    fn clock() -> impl Fn(u64) -> Instant {
        let t0 = Instant::now();
        move |ms| t0 + Duration::from_millis(ms)
    }

    #[test]
    fn the_rarest_piece_goes_first_then_the_lowest_from_the_least_busy_parent() {
        let at = clock();
        let mut p = plan(4);
        p.parents = vec![parent("a", &[0, 1, 2, 3]), parent("b", &[1, 2])];
        p.availability = vec![3, 1, 2, 1];
        let mut s = Schedule::new(p, vec![false; 4], at(0));
        let (first, source) = s.next_piece(at(0)).expect("a piece");
        assert_eq!(first, 1, "held by one peer, and lower than 3");
        s.started(first, source.clone());
        let (second, other) = s.next_piece(at(0)).expect("a piece");
        assert_eq!(second, 3);
        assert_eq!(other, from("a"), "only a holds 3");
        s.started(second, other);
        let (third, source3) = s.next_piece(at(0)).expect("a piece");
        assert_eq!(third, 2);
        assert_ne!(source3, source, "two parents hold 2: the one not already sending goes");
        s.started(third, source3);
        assert_eq!(s.next_piece(at(0)).map(|(i, _)| i), Some(0), "the commonest comes last");
        s.ended(3);
        s.kept(3, &from("a"), 1024, at(10));
        assert_eq!(s.missing(), [0, 1, 2]);
        assert_eq!(s.take_owed(), Owed { have: vec![3], bytes_from: [("a".into(), 1024)].into(), ..Owed::default() });
        assert!(!s.owes(), "a report takes what was owed");
    }

    #[test]
    fn a_seed_piece_goes_at_once_unless_a_parent_holds_it_or_the_seed_is_resting() {
        let at = clock();
        let mut p = plan(3);
        p.parents = vec![parent("a", &[0])];
        p.seed_pieces = vec![0, 2];
        let mut s = Schedule::new(p, vec![false; 3], at(0));
        assert_eq!(s.next_seed_piece(at(0)), Some(2), "a parent holds 0: it comes from the parent");
        assert_eq!(s.next_piece(at(0)), Some((0, from("a"))));
        s.started(2, Source::Seed);
        assert_eq!(s.next_seed_piece(at(0)), None, "already being fetched");
        s.ended(2);
        s.failed(Source::Seed, &Failure::Broken("refused".into()), at(0));
        assert_eq!(s.next_seed_piece(at(499)), None, "the seed rests half a second after a failure");
        assert_eq!(s.next_seed_piece(at(500)), Some(2));
        s.failed(Source::Seed, &Failure::Busy, at(500));
        assert_eq!(s.next_seed_piece(at(1499)), None, "and twice as long after a second");
        assert_eq!(s.next_seed_piece(at(1500)), Some(2));
        s.kept(2, &Source::Seed, 1024, at(1600));
        assert_eq!(s.next_seed_piece(at(1600)), None, "kept");
        assert!(s.seed_verdict().is_ok(), "a piece from the seed resets its failures");
        for n in 0..SEED_FAILURES {
            assert!(s.seed_verdict().is_ok(), "{n} failures");
            s.failed(Source::Seed, &Failure::Broken("gone".into()), at(2000));
        }
        assert!(matches!(s.seed_verdict(), Err(GiveUp::SeedFailing(8))));
    }

    #[test]
    fn a_refused_ticket_is_replaced_by_the_next_join_which_goes_at_once_and_is_not_brief() {
        let at = clock();
        let mut p = plan(2);
        p.seed_pieces = vec![0, 1];
        let mut s = Schedule::new(p.clone(), vec![false; 2], at(0));
        assert_eq!(s.seed_join_at(), None);
        assert!(s.joining(at(100)), "a ticket with 300 s to run: the join may be brief");
        s.failed(Source::Seed, &Failure::TicketRefused("DENIED".into()), at(1000));
        assert_eq!(s.seed_join_at(), Some(at(150)), "a join is owed at once");
        assert_eq!(s.next_seed_batch(at(1499)), Vec::<u32>::new(), "the seed rests as after any failure");
        assert!(!s.joining(at(1000)), "the join asks for a new ticket");
        assert_eq!(s.seed_join_at(), None, "the join was sent");
        assert!(!s.joining(at(1200)), "and so does every join until one brings it");
        let mut fresh = p.clone();
        fresh.seed_pieces = Vec::new();
        fresh.ticket = "fresh".into();
        s.planned(fresh, at(1300));
        assert_eq!(s.ticket(), "fresh");
        assert!(s.joining(at(1400)), "brief again");
        assert_eq!(s.next_seed_batch(at(1500)), [0, 1], "the seed's pieces go with the new ticket");
        s.kept(0, &Source::Seed, 1024, at(1600));
        // The agent registered again under a new id: the ticket names the old one.
        s.ticket_stale(at(2000));
        assert!(!s.joining(at(2000)));
        for n in 1..SEED_FAILURES {
            s.failed(Source::Seed, &Failure::TicketRefused("DENIED".into()), at(3000));
            assert!(s.seed_verdict().is_ok(), "{n} refusals");
        }
        s.failed(Source::Seed, &Failure::TicketRefused("DENIED".into()), at(3000));
        assert!(matches!(s.seed_verdict(), Err(GiveUp::SeedFailing(8))), "a seed that refuses every ticket ends it");
    }

    #[test]
    fn seed_pieces_go_in_one_request_and_a_few_more_wait_for_the_last_request_to_be_well_under_way() {
        let at = clock();
        let mut p = plan(8);
        p.seed_pieces = vec![0, 1, 2, 3];
        p.parents = vec![parent("a", &[2])];
        let mut s = Schedule::new(p.clone(), vec![false; 8], at(0));
        let batch = s.next_seed_batch(at(0));
        assert_eq!(batch, [0, 1, 3], "2 comes from a parent");
        for &i in &batch {
            s.started(i, Source::Seed);
        }
        let mut more = p.clone();
        more.seed_pieces = vec![4, 5];
        s.planned(more.clone(), at(10));
        assert_eq!(s.next_seed_batch(at(10)), Vec::<u32>::new(), "two wait while three are on their way");
        s.ended(0);
        s.kept(0, &Source::Seed, 1024, at(20));
        assert_eq!(s.next_seed_batch(at(20)), [4, 5], "as many wait as are on their way: they go");
        assert_eq!(s.seed_pieces_coming(), 2);
    }

    #[test]
    fn a_seed_piece_that_arrives_right_after_a_join_is_reported_as_soon_as_a_join_is_due() {
        let at = clock();
        let mut p = plan(4);
        p.seed_pieces = vec![0];
        let mut s = Schedule::new(p, vec![false; 4], at(0));
        assert_eq!(s.seed_join_at(), None);
        s.joining(at(10));
        s.started(0, Source::Seed);
        s.ended(0);
        s.kept(0, &Source::Seed, 1024, at(20));
        assert_eq!(s.seed_join_at(), Some(at(60)), "50 ms after the last join");
        s.joining(at(60));
        assert_eq!(s.seed_join_at(), None, "reported");
    }

    #[test]
    fn the_seed_sending_corrupt_copies_of_a_piece_ends_the_download() {
        let at = clock();
        let mut s = Schedule::new(plan(2), vec![false; 2], at(0));
        s.seed_corrupt(1);
        s.seed_corrupt(1);
        assert!(s.seed_verdict().is_ok());
        s.seed_corrupt(1);
        assert!(matches!(s.seed_verdict(), Err(GiveUp::SeedCorrupt)));
    }

    #[test]
    fn a_busy_parent_is_skipped_for_a_moment_a_failed_one_for_a_while_and_a_liar_for_good() {
        let at = clock();
        let mut p = plan(1);
        p.parents = vec![parent("busy", &[0]), parent("broken", &[0]), parent("liar", &[0])];
        let mut s = Schedule::new(p.clone(), vec![false], at(0));
        s.failed(from("busy"), &Failure::Busy, at(0));
        s.failed(from("broken"), &Failure::Broken("reset".into()), at(0));
        assert_eq!(s.lied("liar"), Vec::<usize>::new(), "it streamed no stripe");
        assert_eq!(s.next_piece(at(100)), None, "all three are out");
        assert_eq!(s.next_piece(at(500)), Some((0, from("busy"))), "busy is not broken");
        let owed = s.take_owed();
        assert_eq!(
            (owed.failed, owed.bad),
            (vec!["broken".to_owned()], vec!["liar".to_owned()]),
            "busy is not reported"
        );
        s.failed(from("busy"), &Failure::Busy, at(29_000));
        s.planned(p.clone(), at(29_000));
        assert_eq!(s.next_piece(at(29_000)), None, "a failed parent waits out its pause");
        s.planned(p, at(30_001));
        s.failed(from("busy"), &Failure::Busy, at(30_001));
        assert_eq!(s.next_piece(at(30_001)), Some((0, from("broken"))), "then it gets another chance");
    }

    #[test]
    fn a_stalled_download_asks_the_seed_soon_after_a_failure_and_late_without_one_then_gives_up() {
        let at = clock();
        let mut p = plan(3);
        p.parents = vec![parent("a", &[0, 1, 2])];
        let mut s = Schedule::new(p.clone(), vec![true, false, false], at(0));
        assert!(s.idle(false, at(0)), "nothing in flight and no feed");
        assert!(!s.idle(true, at(0)));
        // Without a failed parent, joins that succeed keep it waiting.
        assert_eq!(s.after_tick(true, at(0)).expect("running"), None);
        s.planned(p.clone(), at(19_000));
        assert_eq!(s.after_tick(true, at(20_000)).expect("running"), None, "a join succeeded 1 s ago");
        assert_eq!(s.after_tick(true, at(39_000)).expect("running"), Some(vec![1]), "20 s idle, 20 s unplanned");
        assert_eq!(s.after_tick(true, at(39_100)).expect("running"), None, "one piece at a time");
        // A failed parent makes 3 s of idleness a stall.
        s.failed(from("a"), &Failure::Broken("reset".into()), at(40_000));
        assert_eq!(s.after_tick(true, at(42_000)).expect("running"), None);
        assert_eq!(s.after_tick(true, at(42_100)).expect("running"), Some(vec![2]), "3 s since 39.1 s");
        assert_eq!(s.next_seed_piece(at(42_100)), Some(1));
        assert_eq!(s.after_tick(false, at(50_000)).expect("running"), None, "something arrives: not idle");
        assert!(matches!(s.after_tick(false, at(60_001)), Err(GiveUp::NoProgress(60))), "60 s without a piece");
    }

    #[test]
    fn a_blob_queued_at_the_seed_asks_the_seed_for_nothing_after_a_failed_parent() {
        let at = clock();
        let mut p = plan(3);
        p.parents = vec![parent("a", &[0])];
        let mut s = Schedule::new(p, vec![false; 3], at(0));
        s.failed(from("a"), &Failure::Broken("reset".into()), at(0));
        let mut queued = plan(3);
        queued.queued = true;
        s.planned(queued, at(100));
        assert_eq!(s.after_tick(true, at(200)).expect("running"), None);
        assert_eq!(s.after_tick(true, at(3_300)).expect("running"), None, "waiting its turn is no stall");
        s.planned(plan(3), at(3_400));
        assert_eq!(s.after_tick(true, at(3_500)).expect("running"), Some(vec![0]), "its turn came and nothing arrives");
    }

    #[test]
    fn a_blob_queued_at_the_seed_is_not_given_up() {
        let at = clock();
        let mut s = Schedule::new(plan(2), vec![false; 2], at(0));
        let mut queued = plan(2);
        queued.queued = true;
        s.planned(queued.clone(), at(50_000));
        assert!(s.after_tick(true, at(60_001)).is_ok(), "waiting its turn is no stall");
        s.planned(queued, at(100_000));
        assert!(s.after_tick(true, at(150_000)).is_ok());
        s.planned(plan(2), at(150_000));
        assert!(matches!(s.after_tick(true, at(160_001)), Err(GiveUp::NoProgress(60))), "60 s since it was queued");
    }

    #[test]
    fn a_feeds_pieces_are_left_to_it_until_it_lags_behind_a_holder() {
        let at = clock();
        let mut p = plan(4);
        p.feeds = vec![Some(feed("f0")), Some(feed("f1"))];
        p.parents = vec![parent("a", &[0, 2])];
        p.availability = vec![1, 0, 1, 0];
        let mut s = Schedule::new(p, vec![false; 4], at(0));
        let changes = s.feed_changes(at(0));
        assert_eq!(changes, [FeedChange::Open(0, feed("f0")), FeedChange::Open(1, feed("f1"))]);
        assert_eq!(s.feed_changes(at(0)), [], "running as the join says");
        assert!(s.fed(0, at(0)) && s.fed(1, at(0)));
        assert_eq!(s.next_piece(at(5_999)), None, "a holds 0 and 2, but their feed brings them");
        s.feed_brought(0, "f0", at(5_000));
        assert_eq!(s.next_piece(at(6_000)), None, "the feed of stripe 0 brought a piece 1 s ago");
        assert_eq!(s.next_piece(at(11_000)).map(|(i, _)| i), Some(0), "6 s without one while a held 0: pulled");
        assert!(!s.idle(false, at(7_999)), "a feed brought a piece lately");
        assert!(s.idle(false, at(8_000)));
        s.feed_ended(0, "f0");
        assert!(!s.fed(2, at(8_000)), "an ended feed brings no more");
    }

    #[test]
    fn a_feed_whose_parent_is_busy_is_pulled_and_asked_again_after_its_pause() {
        let at = clock();
        let mut p = plan(4);
        p.feeds = vec![Some(feed("f0")), Some(feed("f1"))];
        p.parents = vec![parent("a", &[1, 3])];
        p.availability = vec![0, 1, 0, 1];
        let mut s = Schedule::new(p.clone(), vec![false; 4], at(0));
        s.feed_changes(at(0));
        assert_eq!(s.next_piece(at(0)), None);
        assert!(!s.feed_busy(1, "someone else", at(0)), "not the stripe's feed: nothing changes");
        assert!(s.feed_busy(1, "f1", at(0)));
        assert_eq!(s.next_piece(at(0)), Some((1, from("a"))), "its stripe's pieces are pulled meanwhile");
        assert_eq!(s.feed_changes(at(100)), [], "not asked again during its pause");
        s.planned(p.clone(), at(1_000));
        assert_eq!(s.feed_changes(at(1_000)), [], "still paused");
        s.planned(p, at(2_001));
        assert_eq!(s.feed_changes(at(2_001)), [FeedChange::Open(1, feed("f1"))], "its pause is over");
        let owed = s.take_owed();
        assert!(owed.failed.is_empty() && owed.bad.is_empty(), "busy is not held against it");
    }

    #[test]
    fn a_broken_or_lying_feed_is_dropped_and_reported_and_a_finished_stripe_needs_none() {
        let at = clock();
        let mut p = plan(4);
        p.feeds = vec![Some(feed("f0")), Some(feed("f1"))];
        let mut s = Schedule::new(p.clone(), vec![false, true, false, true], at(0));
        assert_eq!(s.feed_changes(at(0)), [FeedChange::Open(0, feed("f0"))], "stripe 1 is held whole");
        assert!(s.feed_broke(0, "f0", at(1)));
        assert_eq!(s.take_owed().failed, ["f0"]);
        s.planned(p.clone(), at(2));
        assert_eq!(s.feed_changes(at(2)), [], "a failed parent is not asked for a feed during its pause");
        s.planned(p.clone(), at(30_002));
        assert_eq!(s.feed_changes(at(30_002)), [FeedChange::Open(0, feed("f0"))]);
        assert_eq!(s.lied("f0"), [0], "its feed closes");
        s.planned(p, at(90_000));
        assert_eq!(s.feed_changes(at(90_000)), [], "and never opens again");
        let mut moved = plan(4);
        moved.feeds = vec![Some(feed("g0"))];
        s.planned(moved, at(90_001));
        assert_eq!(s.feed_changes(at(90_001)), [FeedChange::Open(0, feed("g0"))], "one stripe now, another parent");
    }

    #[test]
    fn joins_are_frequent_while_a_piece_has_no_source_and_held_while_nothing_arrives() {
        let at = clock();
        let mut s = Schedule::new(plan(2), vec![false; 2], at(0));
        assert_eq!(s.wanted_join(true, true, at(0)), Some((REJOIN_AT_LEAST, Some(JOIN_WAIT_MS))), "idle, sourceless");
        assert_eq!(s.wanted_join(false, true, at(0)), Some((REJOIN_EVERY, None)), "something still arrives");
        assert_eq!(
            s.wanted_join(true, false, at(0)),
            Some((REJOIN_EVERY, Some(JOIN_WAIT_MS))),
            "young: trees may move"
        );
        assert_eq!(s.wanted_join(true, false, at(3_000)), Some((REFRESH_EVERY, Some(JOIN_WAIT_MS))), "no slot free");
        let mut p = plan(2);
        p.parents = vec![parent("a", &[0, 1])];
        s.planned(p, at(100));
        assert_eq!(s.wanted_join(true, true, at(100)), Some((REJOIN_EVERY, None)), "young, every piece has a source");
        assert_eq!(s.wanted_join(true, true, at(3_000)), Some((REFRESH_EVERY, None)), "every piece has a source");
        assert!(!s.join_due(REFRESH_EVERY, at(100)));
        assert!(s.joining(at(100)), "a ticket of 300 s may be left out of the answer");
        assert!(!s.join_due(REJOIN_EVERY, at(399)) && s.join_due(REJOIN_EVERY, at(400)));
        assert!(!s.joining(at(241_000)), "with less than 60 s left, the ticket is renewed");
        s.kept(0, &from("a"), 1024, at(241_000));
        s.kept(1, &from("a"), 1024, at(241_000));
        assert_eq!(s.wanted_join(true, true, at(241_000)), None, "done");
    }

    #[test]
    fn a_young_download_asks_often_while_its_feeds_may_still_move() {
        let at = clock();
        let mut p = plan(2);
        p.feeds = vec![Some(feed("f0")), Some(feed("f1"))];
        let mut s = Schedule::new(p, vec![false; 2], at(0));
        s.feed_changes(at(0));
        assert_eq!(s.wanted_join(false, true, at(0)), Some((REJOIN_EVERY, None)), "both stripes fed, but young");
        assert_eq!(s.wanted_join(false, true, at(2_999)), Some((REJOIN_EVERY, None)));
        assert_eq!(s.wanted_join(false, true, at(3_000)), Some((REFRESH_EVERY, None)), "settled");
    }

    #[test]
    fn a_stripe_root_asks_often_even_with_its_fetch_slots_taken() {
        let at = clock();
        let mut p = plan(2);
        p.feeds = vec![None, Some(feed("f1"))];
        let s = Schedule::new(p, vec![false; 2], at(0));
        assert_eq!(s.wanted_join(false, false, at(0)), Some((REJOIN_EVERY, None)), "the root of stripe 0");
    }
}

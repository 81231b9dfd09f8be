//! The seed's budget: which pieces a requester takes from the seed, how
//! many are out at once per cluster, and whose turn it is among the
//! cluster's blobs.
//!
//! The seed's uplink is the scarcest link of all, so each cluster has at
//! most [`SEED_PIECES_IN_FLIGHT`] seed pieces out at a time, each reserved
//! for one agent until it reports the piece or [`SEED_RESERVATION`] passes.
//! Pieces then leave the seed one after another rather than all at once,
//! and each is traded onwards by peers while the seed sends the next: the
//! seed sends each piece into the swarm about once, and the swarm starts
//! trading early.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use damselfly_core::p2p::{stripe_len, stripe_of, Feed};
use damselfly_core::Digest;

use super::availability::View;
use super::swarm::Swarm;
use crate::metadata::ClusterId;

/// Seed pieces out at once per cluster. The seed's uplink is split between
/// them, so each more delays every piece's arrival, and the swarm can trade
/// a piece only once it has arrived whole; but with one alone the uplink
/// would idle while an agent reports a piece and the next is handed out,
/// and each receiver's downlink is shared with what it fetches from peers,
/// so a seed transfer seldom gets a whole one. With three the seed's link
/// stays full: in the 16-agent benchmark the seed sent the image in 30 s
/// rather than 33 s with two.
pub const SEED_PIECES_IN_FLIGHT: usize = 3;
/// Seed pieces out at once to the root of one stripe tree: the next is on
/// its way while one is reported, so the seed's link never idles.
pub(super) const SEED_PIECES_PER_ROOT: usize = 2;
/// A new swarm with stripe trees sends nothing from the seed for this long:
/// a crowd that starts together joins within it, and the roots are then the
/// agents the trees name, not whoever happened to join first.
pub(super) const TREES_SETTLE: Duration = Duration::from_millis(250);
/// How long a seed piece may wait for an idle agent while busy ones ask.
pub(super) const SEED_WAITS_FOR_IDLE: Duration = Duration::from_millis(300);
/// How long a seed piece stays reserved for the agent it was handed to
/// after that agent was last heard from about the swarm.
const SEED_RESERVATION: Duration = Duration::from_secs(20);
/// How much an agent alone in its swarm may have out from the seed: a run
/// long enough that the next is asked for long before it ends, so that the
/// seed's link never waits for a report and a join. The agent joins again
/// at most every 50 ms as pieces arrive; on loopback or a datacenter link
/// (2-3 GB/s) 64 MiB lasted about 25 ms, and the stream waited for the join.
const SEED_RUN_BYTES: u64 = 256 << 20;
/// A swarm that stopped asking for the seed this long ago loses its turn.
pub(super) const SEED_QUEUE_STALE: Duration = Duration::from_secs(1);

/// One cluster's turns at the seed.
#[derive(Default)]
pub(super) struct SeedLine {
    /// Swarms waiting for the seed, in turn, with when each last asked.
    pub(super) queue: VecDeque<(Digest, Instant)>,
    /// Since when a seed piece has been held back from busy agents for an
    /// idle one to take.
    pub(super) held_back: Option<Instant>,
}

impl SeedLine {
    /// Drops the swarms that stopped asking; true if nothing is left to remember.
    pub(super) fn expire(&mut self, now: Instant) -> bool {
        self.queue.retain(|(_, asked)| now.duration_since(*asked) < SEED_QUEUE_STALE);
        self.queue.is_empty() && self.held_back.is_none()
    }
}

/// Seed pieces the cluster's agents are fetching now, all swarms together.
pub(super) fn in_flight(swarms: &HashMap<(ClusterId, Digest), Swarm>, cluster: ClusterId, now: Instant) -> usize {
    swarms
        .iter()
        .filter(|((c, _), _)| *c == cluster)
        .flat_map(|(_, s)| s.reserved.values())
        .filter(|(_, at)| now.duration_since(*at) < SEED_RESERVATION)
        .count()
}

/// Takes back the seed pieces reserved for members that went silent in the
/// middle of their download (a hung node): they go to another.
pub(super) fn reclaim_from_silent(swarm: &mut Swarm, view: &View, digest: Digest) {
    let hung: HashSet<&String> = swarm
        .reserved
        .values()
        .map(|(holder, _)| holder)
        .filter(|id| *id != view.me && swarm.peers.get(*id).is_some_and(|p| p.lacking()) && view.silent(id))
        .collect();
    let orphaned: Vec<u32> =
        swarm.reserved.iter().filter(|(_, (holder, _))| hung.contains(holder)).map(|(i, _)| *i).collect();
    if !orphaned.is_empty() {
        tracing::info!(%digest, silent = ?hung, pieces = ?orphaned, "an agent went silent holding seed pieces; they go to another");
        swarm.reserved.retain(|i, _| !orphaned.contains(i));
    }
}

/// What the seed step needs to know of one join.
pub(super) struct Ask<'a> {
    /// The blob.
    pub(super) digest: Digest,
    /// The pieces the requester lacks.
    pub(super) missing: &'a [u32],
    /// How many usable peers hold each piece.
    pub(super) availability: &'a [u32],
    /// The requester's place in the stripe trees (empty: none).
    pub(super) feeds: &'a [Option<Feed>],
    /// It joined the swarm just now.
    pub(super) newcomer: bool,
    /// Stripe trees the scheduler is configured for.
    pub(super) stripes: usize,
    /// Seed pieces out in the cluster (see [`in_flight`]).
    pub(super) in_flight: usize,
    /// Bytes per piece.
    pub(super) piece_size: u64,
}

/// What the seed gives a requester.
pub(super) struct Given {
    /// Pieces to fetch from the seed, lowest first.
    pub(super) pieces: Vec<u32>,
    /// The blob waits for the seed behind another blob of the cluster.
    pub(super) queued: bool,
}

/// Pieces only the seed can give: no usable peer holds them and they are
/// not reserved for another agent, rarest in the whole swarm first (nobody
/// even fetching them). One piece each, so that pieces fan out to different
/// agents and are traded from there; an agent still alone in wanting
/// pieces when it comes back takes a run of up to [`SEED_RUN_BYTES`]
/// whatever the budget, and more as it reports (not on its first join: when
/// a crowd starts cold, the first to arrive is alone only for a moment). Swarms of a cluster take the budget in turn, so that no blob
/// waits for the seed while another keeps it busy.
///
/// With stripe trees, a stripe's pieces go to its root only, a few at a
/// time, and the swarms of a cluster have the seed one after another, each
/// until every piece has left it: a tree carries a blob at the rate the
/// seed feeds it, and a seed split between four blobs would make every hop
/// of every tree four times as slow.
pub(super) fn hand_out(swarm: &mut Swarm, view: &View, ask: Ask, line: &mut SeedLine) -> Given {
    let Ask { digest, missing, availability, feeds, newcomer, stripes, in_flight, piece_size } = ask;
    let (agent, now) = (view.me, view.now);
    let trees = !feeds.is_empty();
    let root_of = |i: u32| feeds.is_empty() || feeds[stripe_of(i, feeds.len())].is_none();
    let reserved_for = |i: u32| swarm.reserved.get(&i).filter(|(_, at)| now.duration_since(*at) < SEED_RESERVATION);
    let mut seed_pieces: Vec<u32> =
        missing.iter().copied().filter(|&i| reserved_for(i).is_some_and(|(holder, _)| holder == agent)).collect();
    let unsent: Vec<u32> =
        missing.iter().copied().filter(|&i| availability[i as usize] == 0 && reserved_for(i).is_none()).collect();
    let unclaimed: Vec<u32> = unsent.iter().copied().filter(|&i| root_of(i)).collect();
    // Only whether it is more than one matters: a swarm may have thousands.
    let wanting = swarm.peers.iter().filter(|(id, p)| p.lacking() && view.live(id)).take(2).count();
    // Still alone once its first piece arrived: nobody to trade with, so it
    // takes a long run of pieces, which it reads from the seed as one stream.
    let alone = wanting <= 1 && !newcomer;
    let settling = trees && !alone && now.duration_since(swarm.born) < TREES_SETTLE;
    let run = (SEED_RUN_BYTES / piece_size.max(1)).max(SEED_PIECES_IN_FLIGHT as u64) as usize;
    let my_cap = match (trees, newcomer) {
        _ if alone => run,
        // The first member's first join: it may well be alone.
        (_, true) if swarm.peers.len() == 1 => 1,
        _ if settling => 0,
        (_, true) => 1,
        (true, false) => SEED_PIECES_PER_ROOT * feeds.iter().filter(|f| f.is_none()).count(),
        (false, false) => 1,
    };
    let room = my_cap.saturating_sub(seed_pieces.len());
    let asking = room > 0 && !unclaimed.is_empty();
    let queue = &mut line.queue;
    if asking || (trees && !unsent.is_empty()) {
        queue.retain(|(d, asked)| *d == digest || now.duration_since(*asked) < SEED_QUEUE_STALE);
        match queue.iter_mut().find(|(d, _)| *d == digest) {
            Some(entry) => entry.1 = now,
            None => queue.push_back((digest, now)),
        }
    }
    if asking {
        // A seed piece shares its receiver's downlink with whatever else
        // that node fetches: while another agent of the swarm said it
        // fetches nothing, a busy one leaves the piece to it, for a
        // moment (it may not be asking).
        let fetching = |id: &str| view.agents.get(id).and_then(|a| a.fetching);
        let busy = !trees
            && fetching(agent).is_some_and(|n| n > 0)
            && swarm.peers.iter().any(|(id, p)| p.lacking() && id != agent && view.live(id) && fetching(id) == Some(0));
        // The cluster's budget: room for every root's pieces when this
        // swarm has trees, the pull schedule's few otherwise.
        let budget =
            if trees { SEED_PIECES_IN_FLIGHT.max(stripes * SEED_PIECES_PER_ROOT) } else { SEED_PIECES_IN_FLIGHT };
        // An agent alone takes its run whatever the budget: the seed has nobody else of its swarm to send to.
        let take = if alone { room } else { room.min(budget.saturating_sub(in_flight)) };
        let my_turn = take > 0 && queue.front().is_some_and(|(d, _)| *d == digest);
        let defer = my_turn && busy && now.duration_since(*line.held_back.get_or_insert(now)) < SEED_WAITS_FOR_IDLE;
        if my_turn && !defer {
            line.held_back = None;
            let taken = if trees && !alone {
                in_step(&unclaimed, &unsent, swarm.pieces, feeds.len(), take)
            } else {
                unclaimed.iter().copied().take(take).collect()
            };
            if !trees || taken.len() == unsent.len() {
                queue.pop_front();
            }
            tracing::debug!(%digest, agent, pieces = ?taken, "seed pieces handed out");
            for i in taken {
                swarm.reserved.insert(i, (agent.to_owned(), now));
                seed_pieces.push(i);
            }
        } else {
            let front = queue.front().map(|(d, _)| d.to_string());
            tracing::debug!(%digest, agent, take, ?front, defer, "seed pieces held back");
        }
    }
    seed_pieces.sort_unstable();
    // With trees, a cluster's blobs have the seed one after another: a
    // large image's last layers may wait minutes for their first piece.
    let queued = !unsent.is_empty() && queue.front().is_some_and(|(d, _)| *d != digest);
    Given { pieces: seed_pieces, queued }
}

/// Up to `take` of the `unclaimed` pieces (lowest first) for a root to
/// fetch from the seed, keeping the stripes in step: a piece of a stripe
/// goes out only while no other stripe with pieces still to send has had
/// [`SEED_PIECES_PER_ROOT`] fewer sent. Every agent needs every stripe, so
/// a stripe the seed runs ahead of gains nothing, and its tree's links,
/// which carry their stripe at full speed already, would only fall behind.
pub(super) fn in_step(unclaimed: &[u32], unsent: &[u32], pieces: usize, stripes: usize, take: usize) -> Vec<u32> {
    let mut left = vec![0usize; stripes];
    for &i in unsent {
        left[stripe_of(i, stripes)] += 1;
    }
    let mut sent: Vec<usize> = (0..stripes).map(|s| stripe_len(pieces, stripes, s) - left[s]).collect();
    let mut taken = Vec::new();
    for &i in unclaimed {
        let s = stripe_of(i, stripes);
        let behind = (0..stripes).filter(|&o| left[o] > 0).map(|o| sent[o]).min().unwrap_or(0);
        if taken.len() == take || sent[s] >= behind + SEED_PIECES_PER_ROOT {
            continue;
        }
        taken.push(i);
        sent[s] += 1;
        left[s] -= 1;
    }
    taken
}

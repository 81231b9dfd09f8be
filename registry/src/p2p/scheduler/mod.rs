//! Swarm scheduling, in memory.
//!
//! A swarm is one blob within one cluster. Every join returns up to
//! [`MAX_PARENTS`] parents that hold pieces the requester lacks, chosen so
//! that together they cover as many of those pieces as possible, and ranked
//! by same zone, free upload slots, then measured throughput, with ties
//! going to the parent that was longest nobody's first choice, so that a
//! crowd of cold agents does not converge on one parent. Free slots come
//! from the parent's own count of running uploads, which every join and
//! report carries, less requesters sent its way in the last half second;
//! for a parent that has not said so within a second, from the requesters
//! sent its way in the last ten.
//!
//! Pieces that no usable peer holds come from the seed. The seed's uplink
//! is the scarcest link of all, so each cluster has at most
//! [`SEED_PIECES_IN_FLIGHT`] seed pieces out at a time, each reserved for one
//! agent until it reports the piece or a reservation of 20 s passes. Pieces
//! then leave the seed one after another rather than all at once, and each
//! is traded onwards by peers while the seed sends the next: the seed sends
//! each piece into the swarm about once, and the swarm starts trading early.
//!
//! Agents that start a blob of small pieces (up to [`TREE_MAX_PIECE_SIZE`])
//! or of many pieces ([`TREE_MIN_PIECES`] or more) together are also
//! placed in stripe trees (`stripes` of them, 2 by default; 0 turns them
//! off). Piece `i` belongs to stripe `i % stripes`; in each stripe's tree every agent has one
//! parent, which streams it the stripe's pieces the moment it has them
//! verified, and the root takes the stripe from the seed. An agent is an
//! inner node of one tree and a leaf of the others, so each uplink carries
//! one stripe to `stripes` children and each downlink takes every stripe
//! from one parent: every link runs full with no matching of pieces to
//! parents, and a piece is `log(N)` hops from the seed. The join's parents
//! and the pull loop stay for everything a tree does not bring: stragglers,
//! failed parents, late joiners.
//!
//! A join costs about the same in a swarm of ten thousand agents as in one
//! of ten: each swarm keeps how many members hold each piece, its members
//! in order of registration and per zone, the holders of its rare pieces,
//! and the few members that cannot serve others (`availability::census`),
//! up to date as agents join, report and leave; and a swarm of more than a
//! few hundred members has a rotating share of them looked at as parents.
//!
//! All state sits behind this one type, keyed by cluster, so that a later
//! deployment can shard it across registry replicas by cluster. It knows
//! nothing of HTTP or of an async runtime, and reads the time from a
//! [`Clock`]: the registry's routes and a simulation drive the same code.
//! A join whose plan [`Plan::is_idle`] may be held by its caller until
//! [`Scheduler::report`] says that held joins should look again.
//!
//! A join is a sequence of steps, one module each: the agent enters the
//! blob's swarm with what it holds (`swarm`); seed pieces reserved for
//! members gone silent are taken back (`seed`); the usable peers' pieces
//! are counted (`availability`); the agent is placed in the stripe trees
//! (`trees`); its parents are ranked and chosen (`parents`); and the seed
//! gives it what nobody else can, within the cluster's budget and in its
//! blob's turn (`seed`).

mod availability;
mod clock;
mod parents;
mod seed;
mod swarm;
mod trees;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use damselfly_core::p2p::{Feed, Parent, RegisterRequest, ReportRequest};
use damselfly_core::Digest;

use self::availability::View;
pub use self::clock::{Clock, ManualClock, SystemClock};
pub use self::parents::MAX_PARENTS;
use self::seed::SeedLine;
pub use self::seed::SEED_PIECES_IN_FLIGHT;
use self::swarm::Swarm;
pub use self::swarm::{Agent, Blob};
pub use self::trees::{DEFAULT_STRIPES, TREE_MAX_PIECE_SIZE, TREE_MIN_PIECES};
use crate::metadata::ClusterId;

#[derive(Default)]
struct State {
    agents: HashMap<String, Agent>,
    /// The next registration's `seq`.
    registered: u64,
    swarms: HashMap<(ClusterId, Digest), Swarm>,
    /// Per cluster, the swarms waiting for the seed.
    seed: HashMap<ClusterId, SeedLine>,
}

/// What a join gets: parents and seed pieces.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Parents, best first.
    pub parents: Vec<Parent>,
    /// Pieces to fetch from the seed.
    pub seed_pieces: Vec<u32>,
    /// How many usable peers hold each piece: the requester fetches the rarest first.
    pub availability: Vec<u32>,
    /// The requester's parent in each stripe tree, `None` where it is the
    /// root; empty when the swarm has no trees.
    pub feeds: Vec<Option<Feed>>,
    /// The blob waits for the seed behind another blob of the cluster.
    pub queued: bool,
}

impl Plan {
    /// Nothing to fetch: no parent holds a piece the requester lacks, and no seed piece is its to take.
    /// A caller may hold such a join until [`Scheduler::report`] says that something changed.
    pub fn is_idle(&self) -> bool {
        self.parents.is_empty() && self.seed_pieces.is_empty()
    }
}

/// Counts for the metrics and the console.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Census {
    /// Agents heard from recently.
    pub agents: usize,
    /// Swarms with at least one member.
    pub swarms: usize,
}

/// The in-memory scheduler.
pub struct Scheduler {
    state: Mutex<State>,
    heartbeat: Duration,
    stripes: usize,
    clock: Arc<dyn Clock>,
}

impl Scheduler {
    /// Agents silent for three heartbeats are forgotten.
    pub fn new(heartbeat: Duration) -> Scheduler {
        Scheduler {
            state: Mutex::new(State::default()),
            heartbeat,
            stripes: DEFAULT_STRIPES,
            clock: Arc::new(SystemClock),
        }
    }

    /// Places the agents of a swarm in `stripes` trees (below 2: none).
    pub fn with_stripes(mut self, stripes: usize) -> Scheduler {
        self.stripes = if stripes >= 2 { stripes } else { 0 };
        self
    }

    /// Reads the time from `clock` instead of the system's.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Scheduler {
        self.clock = clock;
        self
    }

    /// The heartbeat period agents are told to keep.
    pub fn heartbeat(&self) -> Duration {
        self.heartbeat
    }

    /// How long an agent stays known without a heartbeat.
    fn alive(&self) -> Duration {
        self.heartbeat * 3
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers an agent and returns its id.
    pub fn register(&self, cluster: ClusterId, req: &RegisterRequest) -> String {
        let id = uuid::Uuid::new_v4().simple().to_string();
        self.readmit(cluster, &id, req);
        id
    }

    /// Admits an agent under the id it registered with before, as it said
    /// then: another registry replica scheduled its cluster until it stopped.
    pub fn readmit(&self, cluster: ClusterId, id: &str, req: &RegisterRequest) {
        let now = self.clock.now();
        let mut state = self.lock();
        state.registered += 1;
        let agent = Agent {
            id: id.to_owned(),
            cluster,
            node: req.node.clone(),
            url: format!("http://{}:{}", req.ip, req.peer_port),
            zone: req.zone.clone(),
            upload_slots: req.upload_slots.max(1),
            version: req.version.clone(),
            platform: if req.platform.is_empty() { "linux/amd64".into() } else { req.platform.clone() },
            uploading: None,
            fetching: None,
            last_seen: now,
            seq: state.registered,
            heard: now,
        };
        state.agents.insert(id.to_owned(), agent);
    }

    /// Records a heartbeat; false if the agent is unknown (it must register again).
    pub fn heartbeat_from(&self, cluster: ClusterId, agent: &str) -> bool {
        let now = self.clock.now();
        let mut state = self.lock();
        match state.agents.get_mut(agent) {
            Some(a) if a.cluster == cluster => {
                a.last_seen = now;
                true
            }
            _ => false,
        }
    }

    /// The agent, if it is alive and belongs to the cluster.
    pub fn agent(&self, cluster: ClusterId, agent: &str) -> Option<Agent> {
        let (now, limit) = (self.clock.now(), self.alive());
        self.lock()
            .agents
            .get(agent)
            .filter(|a| a.cluster == cluster && now.duration_since(a.last_seen) < limit)
            .cloned()
    }

    /// Agents of a cluster heard from recently.
    pub fn agents_of(&self, cluster: ClusterId) -> Vec<Agent> {
        let (now, limit) = (self.clock.now(), self.alive());
        self.lock()
            .agents
            .values()
            .filter(|a| a.cluster == cluster && now.duration_since(a.last_seen) < limit)
            .cloned()
            .collect()
    }

    /// Forgets an agent that is leaving (it said so); false if the cluster has no such agent.
    pub fn forget(&self, cluster: ClusterId, agent: &str) -> bool {
        let mut state = self.lock();
        if state.agents.get(agent).is_none_or(|a| a.cluster != cluster) {
            return false;
        }
        state.agents.remove(agent);
        for swarm in state.swarms.values_mut() {
            swarm.forget(agent);
        }
        state.swarms.retain(|_, s| !s.peers.is_empty());
        true
    }

    /// Forgets agents silent for three heartbeats, and swarms left empty.
    /// The registry calls it every heartbeat period.
    pub fn expire(&self) {
        let (now, limit) = (self.clock.now(), self.alive());
        let mut state = self.lock();
        state.agents.retain(|_, a| now.duration_since(a.last_seen) < limit);
        let State { agents, swarms, seed, .. } = &mut *state;
        for swarm in swarms.values_mut() {
            swarm.retain_members(|id| agents.contains_key(id));
            swarm.reserved.retain(|_, (id, _)| agents.contains_key(id));
        }
        swarms.retain(|_, s| !s.peers.is_empty());
        seed.retain(|_, line| !line.expire(now));
    }

    /// Counts of live agents and swarms.
    pub fn census(&self) -> Census {
        let state = self.lock();
        Census { agents: state.agents.len(), swarms: state.swarms.len() }
    }

    /// Records how many piece uploads and downloads an agent of the cluster
    /// runs right now, as far as it said.
    pub fn load(&self, cluster: ClusterId, agent: &str, uploading: Option<u32>, fetching: Option<u32>) {
        let now = self.clock.now();
        if let Some(me) = self.lock().agents.get_mut(agent).filter(|a| a.cluster == cluster) {
            me.heard_at(now, uploading, fetching);
        }
    }

    /// Adds the agent to the blob's swarm with the pieces it holds, and plans its next fetches.
    pub fn join(&self, cluster: ClusterId, agent: &str, digest: Digest, blob: Blob, have: &[u32]) -> Plan {
        let now = self.clock.now();
        let mut state = self.lock();
        let State { agents, swarms, seed, .. } = &mut *state;
        let view = View { agents, now, alive: self.alive(), me: agent };
        let in_flight = seed::in_flight(swarms, cluster, now);
        let swarm = swarms.entry((cluster, digest)).or_insert_with(|| Swarm::new(blob.pieces, now));
        let (seq, zone) = view.agents.get(agent).map_or((u64::MAX, ""), |a| (a.seq, a.zone.as_str()));
        let swarm::Entered { newcomer, missing } = swarm.enter(agent, seq, zone, have);
        seed::reclaim_from_silent(swarm, &view, digest);
        availability::census(swarm, &view);
        let unusable = availability::unusable(swarm, &view);
        let availability = availability::count(swarm, &view, &unusable);
        let feeds = trees::place(swarm, &view, &unusable, blob, self.stripes);
        let parents = parents::choose(swarm, &view, &missing, &availability);
        let ask = seed::Ask {
            digest,
            missing: &missing,
            availability: &availability,
            feeds: &feeds,
            newcomer,
            stripes: self.stripes,
            in_flight,
            piece_size: blob.piece_size,
        };
        let given = seed::hand_out(swarm, &view, ask, seed.entry(cluster).or_default());
        Plan { parents, seed_pieces: given.pieces, availability, feeds, queued: given.queued }
    }

    /// Records progress and trouble reported by an agent. True when joins
    /// of the cluster held for agents with nothing to fetch should look
    /// again: a piece got its first holder, or a seed piece arrived and the
    /// seed can hand out another.
    pub fn report(&self, cluster: ClusterId, report: &ReportRequest) -> bool {
        let now = self.clock.now();
        let mut state = self.lock();
        let State { agents, swarms, .. } = &mut *state;
        if let Some(me) = agents.get_mut(&report.agent_id).filter(|a| a.cluster == cluster) {
            me.heard_at(now, report.uploading, None);
        }
        match swarms.get_mut(&(cluster, report.digest)) {
            Some(swarm) => swarm.record(&report.agent_id, report, now),
            None => false,
        }
    }

    /// How many agents hold each piece of a blob (for tests and the console).
    pub fn holders(&self, cluster: ClusterId, digest: Digest) -> Vec<usize> {
        self.lock().swarms.get(&(cluster, digest)).map(Swarm::holders).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests;

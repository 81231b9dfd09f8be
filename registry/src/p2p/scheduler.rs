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
//! agent until it reports the piece or [`SEED_RESERVATION`] passes. Pieces
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
//! All state sits behind this one type, keyed by cluster, so that a later
//! deployment can shard it across registry replicas by cluster.

use std::cmp::Reverse;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use damselfly_core::p2p::{Feed, Parent, RegisterRequest, ReportRequest};
use damselfly_core::Digest;

use crate::metadata::ClusterId;

/// Most parents handed out per join.
pub const MAX_PARENTS: usize = 4;
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
const SEED_PIECES_PER_ROOT: usize = 2;
/// A new swarm with stripe trees sends nothing from the seed for this long:
/// a crowd that starts together joins within it, and the roots are then the
/// agents the trees name, not whoever happened to join first.
const TREES_SETTLE: Duration = Duration::from_millis(250);
/// Largest piece size for which a swarm gets stripe trees. A piece goes on
/// from an agent only once it is whole and verified, so every level of a
/// tree adds a piece's transfer time at half a link's speed. In the 16-agent
/// benchmark on 20 Mbit/s links the trees beat the pull schedule with
/// pieces of 256 KiB (34 s against 57) and 512 KiB (36 s against 40), and
/// lost with 1 MiB (39 s against 36) and 4 MiB pieces.
pub const TREE_MAX_PIECE_SIZE: u64 = 512 * 1024;
/// Fewest pieces for which a blob of larger pieces still gets stripe trees:
/// the levels' delay is then small beside the whole transfer. For 16 agents
/// on 50 Mbit/s links pulling a 1 GiB image of 4 MiB pieces (64 per layer),
/// the trees took 220 s against the pull schedule's 237 (bound 172).
pub const TREE_MIN_PIECES: usize = 32;

/// Stripe trees per swarm unless configured otherwise.
pub const DEFAULT_STRIPES: usize = 2;
/// How long a seed piece may wait for an idle agent while busy ones ask.
const SEED_WAITS_FOR_IDLE: Duration = Duration::from_millis(300);
/// How long a seed piece stays reserved for the agent it was handed to.
const SEED_RESERVATION: Duration = Duration::from_secs(20);
/// A swarm that stopped asking for the seed this long ago loses its turn.
const SEED_QUEUE_STALE: Duration = Duration::from_secs(1);
/// How long a requester counts against a parent's upload slots after it was
/// last sent there.
const ASSIGNMENT_WINDOW: Duration = Duration::from_secs(10);
/// How long an agent's own count of its running uploads stands in for the
/// requesters sent to it. It says so with every join and report, several
/// times a second while it downloads.
const UPLOADS_FRESH: Duration = Duration::from_secs(1);
/// With a fresh upload count, requesters sent to a parent this recently
/// still count against its slots: they may not have asked it yet.
const JUST_SENT: Duration = Duration::from_millis(500);
/// Throughputs closer than this (bytes per second) rank the same, so that
/// small differences do not send every requester to one parent.
const THROUGHPUT_STEP: f64 = 1e6;
/// An agent still fetching a blob joins or reports at least every 2 s. One
/// silent for this long (a hung node, its connections open) is passed over
/// as a parent and a tree member, and the seed pieces it holds go to
/// another, long before its heartbeats lapse: a hung stripe root would
/// otherwise hold up its whole tree.
const SILENT_FOR: Duration = Duration::from_secs(6);
/// How long a parent reported as failing is skipped.
const FAILURE_PENALTY: Duration = Duration::from_secs(30);

/// A registered agent.
#[derive(Clone, Debug)]
pub struct Agent {
    /// Its id.
    pub id: String,
    /// Its cluster.
    pub cluster: ClusterId,
    /// Node name.
    pub node: String,
    /// `http://<ip>:<port>` of its piece server.
    pub url: String,
    /// Topology zone.
    pub zone: String,
    /// Concurrent uploads it accepts.
    pub upload_slots: u32,
    /// Its version.
    pub version: String,
    /// Order of registration: an agent's place in the stripe trees.
    seq: u64,
    /// When it last joined or reported.
    heard: Instant,
    /// `<os>/<architecture>[/<variant>]`.
    pub platform: String,
    /// Uploads it said it runs, and when it said so.
    uploading: Option<(u32, Instant)>,
    /// Piece downloads it last said it runs (all blobs).
    fetching: Option<u32>,
    last_seen: Instant,
}

#[derive(Default)]
struct Peer {
    have: Vec<bool>,
    /// Sent a piece that failed verification: never a parent again in this swarm.
    bad: bool,
    failed_until: Option<Instant>,
    /// Bytes per second, smoothed.
    throughput: f64,
    /// Requesters recently sent to this peer, and when: its upload slots in use.
    children: HashMap<String, Instant>,
    /// When it was last a requester's first parent: among equals, the one
    /// that waited longest goes first, so a crowd is dealt out in turn.
    first_choice: Option<Instant>,
}

/// How a candidate parent compares for one requester; greater is better.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct Rank {
    same_zone: bool,
    free: i64,
    throughput: u64,
    first_choice: Reverse<Option<Instant>>,
}

struct Swarm {
    pieces: usize,
    peers: HashMap<String, Peer>,
    /// Seed pieces handed out: piece → (agent, when).
    reserved: HashMap<u32, (String, Instant)>,
    /// When its first member joined.
    born: Instant,
}

#[derive(Default)]
struct State {
    agents: HashMap<String, Agent>,
    /// The next registration's `seq`.
    registered: u64,
    swarms: HashMap<(ClusterId, Digest), Swarm>,
    /// Per cluster, swarms waiting for the seed, in turn, with when each last asked.
    seed_queue: HashMap<ClusterId, VecDeque<(Digest, Instant)>>,
    /// Per cluster, since when a seed piece has been held back from busy
    /// agents for an idle one to take.
    seed_held_back: HashMap<ClusterId, Instant>,
    /// Per cluster, woken when a seed piece arrives (the seed can hand out
    /// another) or a piece gets its first holder: joins held open for
    /// agents with nothing to fetch look again.
    changes: HashMap<ClusterId, Arc<Notify>>,
}

/// The shape of a blob, as its per-piece digests were recorded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Blob {
    /// How many pieces.
    pub pieces: usize,
    /// Bytes per piece (the last may be shorter).
    pub piece_size: u64,
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
}

impl Scheduler {
    /// Agents silent for three heartbeats are forgotten.
    pub fn new(heartbeat: Duration) -> Scheduler {
        Scheduler { state: Mutex::new(State::default()), heartbeat, stripes: DEFAULT_STRIPES }
    }

    /// Places the agents of a swarm in `stripes` trees (below 2: none).
    pub fn with_stripes(mut self, stripes: usize) -> Scheduler {
        self.stripes = if stripes >= 2 { stripes } else { 0 };
        self
    }

    /// The heartbeat period agents are told to keep.
    pub fn heartbeat(&self) -> Duration {
        self.heartbeat
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers an agent and returns its id.
    pub fn register(&self, cluster: ClusterId, req: &RegisterRequest) -> String {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let mut state = self.lock();
        state.registered += 1;
        let agent = Agent {
            id: id.clone(),
            cluster,
            node: req.node.clone(),
            url: format!("http://{}:{}", req.ip, req.peer_port),
            zone: req.zone.clone(),
            upload_slots: req.upload_slots.max(1),
            version: req.version.clone(),
            platform: if req.platform.is_empty() { "linux/amd64".into() } else { req.platform.clone() },
            uploading: None,
            fetching: None,
            last_seen: Instant::now(),
            seq: state.registered,
            heard: Instant::now(),
        };
        state.agents.insert(id.clone(), agent);
        id
    }

    /// Records a heartbeat; false if the agent is unknown (it must register again).
    pub fn heartbeat_from(&self, cluster: ClusterId, agent: &str) -> bool {
        let mut state = self.lock();
        match state.agents.get_mut(agent) {
            Some(a) if a.cluster == cluster => {
                a.last_seen = Instant::now();
                true
            }
            _ => false,
        }
    }

    /// The agent, if it is alive and belongs to the cluster.
    pub fn agent(&self, cluster: ClusterId, agent: &str) -> Option<Agent> {
        let limit = self.heartbeat * 3;
        self.lock().agents.get(agent).filter(|a| a.cluster == cluster && a.last_seen.elapsed() < limit).cloned()
    }

    /// Agents of a cluster heard from recently.
    pub fn agents_of(&self, cluster: ClusterId) -> Vec<Agent> {
        let limit = self.heartbeat * 3;
        self.lock().agents.values().filter(|a| a.cluster == cluster && a.last_seen.elapsed() < limit).cloned().collect()
    }

    /// Forgets an agent that is leaving (it said so); false if the cluster has no such agent.
    pub fn forget(&self, cluster: ClusterId, agent: &str) -> bool {
        let mut state = self.lock();
        if state.agents.get(agent).is_none_or(|a| a.cluster != cluster) {
            return false;
        }
        state.agents.remove(agent);
        for swarm in state.swarms.values_mut() {
            swarm.peers.remove(agent);
            swarm.reserved.retain(|_, (holder, _)| holder != agent);
            for peer in swarm.peers.values_mut() {
                peer.children.remove(agent);
            }
        }
        state.swarms.retain(|_, s| !s.peers.is_empty());
        true
    }

    /// Forgets agents silent for three heartbeats, and swarms left empty.
    pub fn expire(&self) {
        let limit = self.heartbeat * 3;
        let mut state = self.lock();
        state.agents.retain(|_, a| a.last_seen.elapsed() < limit);
        let State { agents, swarms, seed_queue, .. } = &mut *state;
        for swarm in swarms.values_mut() {
            swarm.peers.retain(|id, _| agents.contains_key(id));
            swarm.reserved.retain(|_, (id, _)| agents.contains_key(id));
        }
        swarms.retain(|_, s| !s.peers.is_empty());
        for queue in seed_queue.values_mut() {
            queue.retain(|(_, asked)| asked.elapsed() < SEED_QUEUE_STALE);
        }
        seed_queue.retain(|_, q| !q.is_empty());
    }

    /// Counts of live agents and swarms.
    pub fn census(&self) -> Census {
        let state = self.lock();
        Census { agents: state.agents.len(), swarms: state.swarms.len() }
    }

    /// Records how many piece uploads and downloads an agent of the cluster
    /// runs right now, as far as it said.
    pub fn load(&self, cluster: ClusterId, agent: &str, uploading: Option<u32>, fetching: Option<u32>) {
        if let Some(me) = self.lock().agents.get_mut(agent).filter(|a| a.cluster == cluster) {
            me.heard = Instant::now();
            if let Some(n) = uploading {
                me.uploading = Some((n, Instant::now()));
            }
            if fetching.is_some() {
                me.fetching = fetching;
            }
        }
    }

    /// Adds the agent to the blob's swarm with the pieces it holds, and plans its next fetches.
    pub fn join(&self, cluster: ClusterId, agent: &str, digest: Digest, blob: Blob, have: &[u32]) -> Plan {
        let Blob { pieces, .. } = blob;
        let now = Instant::now();
        let alive = self.heartbeat * 3;
        let mut state = self.lock();
        let State { agents, swarms, seed_queue, seed_held_back, .. } = &mut *state;
        let live = |id: &str| agents.get(id).is_some_and(|a| a.last_seen.elapsed() < alive);
        // Seed pieces the cluster's agents are fetching now, all swarms together.
        let seed_in_flight = swarms
            .iter()
            .filter(|((c, _), _)| *c == cluster)
            .flat_map(|(_, s)| s.reserved.values())
            .filter(|(_, at)| now.duration_since(*at) < SEED_RESERVATION)
            .count();
        let my_zone = agents.get(agent).map(|a| a.zone.clone()).unwrap_or_default();
        let swarm = swarms.entry((cluster, digest)).or_insert_with(|| Swarm {
            pieces,
            peers: HashMap::new(),
            reserved: HashMap::new(),
            born: now,
        });
        let newcomer = !swarm.peers.contains_key(agent);
        let me = swarm.peers.entry(agent.to_owned()).or_default();
        // A join says all the agent holds now (reports only add to it): a
        // blob evicted from its cache is no longer counted.
        me.have = vec![false; pieces];
        for &i in have {
            if let Some(slot) = me.have.get_mut(i as usize) {
                *slot = true;
            }
        }
        let missing: Vec<u32> = (0..pieces as u32).filter(|&i| !me.have[i as usize]).collect();
        swarm.reserved.retain(|i, (holder, _)| holder != agent || missing.contains(i));
        let lacking = |p: &Peer| p.have.iter().any(|h| !h);
        let silent = |id: &str| agents.get(id).is_none_or(|a| now.duration_since(a.heard) > SILENT_FOR);
        let hung: HashSet<&String> =
            swarm.peers.iter().filter(|(id, p)| *id != agent && lacking(p) && silent(id)).map(|(id, _)| id).collect();
        let orphaned: Vec<u32> =
            swarm.reserved.iter().filter(|(_, (holder, _))| hung.contains(holder)).map(|(i, _)| *i).collect();
        if !orphaned.is_empty() {
            tracing::info!(%digest, silent = ?hung, pieces = ?orphaned, "an agent went silent holding seed pieces; they go to another");
            swarm.reserved.retain(|i, _| !orphaned.contains(i));
        }

        // Peers that can help: alive, heard from if still fetching, never
        // caught lying, not in a failure penalty.
        let usable = |id: &str, p: &Peer| {
            id != agent && !p.bad && p.failed_until.is_none_or(|t| t <= now) && live(id) && !(lacking(p) && silent(id))
        };
        let mut availability = vec![0u32; pieces];
        for (id, p) in &swarm.peers {
            if usable(id, p) {
                for (n, held) in availability.iter_mut().zip(&p.have) {
                    *n += u32::from(*held);
                }
            }
        }

        // The stripe trees, over the members this agent may fetch from and
        // itself, in order of registration. Zones come first: a swarm that
        // spans several has no trees, and the pull loop keeps its
        // transfers within a zone where it can.
        let mut members: Vec<(u64, &String)> = swarm
            .peers
            .iter()
            .filter(|(id, p)| *id == agent || usable(id, p))
            .filter_map(|(id, _)| agents.get(id).map(|a| (a.seq, id)))
            .collect();
        let one_zone = members.iter().all(|(_, id)| agents.get(*id).is_some_and(|a| a.zone == my_zone));
        members.sort_unstable();
        let me_at = members.iter().position(|(_, id)| *id == agent);
        let feeds: Vec<Option<Feed>> = match me_at {
            Some(me_at) if self.stripes >= 2 && one_zone && treelike(blob) => {
                tree_parents(members.len(), me_at, self.stripes)
                    .into_iter()
                    .map(|parent| {
                        let id = members[parent?].1;
                        agents.get(id).map(|a| Feed { agent_id: id.clone(), url: a.url.clone() })
                    })
                    .collect()
            }
            _ => Vec::new(),
        };
        let root_of = |i: u32| feeds.is_empty() || feeds[i as usize % feeds.len()].is_none();

        let mut ranked: Vec<(Rank, &String, Vec<u32>)> = Vec::new();
        for (id, peer) in swarm.peers.iter_mut() {
            if !usable(id, peer) {
                continue;
            }
            let Some(info) = agents.get(id) else { continue };
            let useful: Vec<u32> =
                missing.iter().copied().filter(|&i| peer.have.get(i as usize) == Some(&true)).collect();
            if useful.is_empty() {
                continue;
            }
            peer.children.retain(|child, at| child != agent && now.duration_since(*at) < ASSIGNMENT_WINDOW);
            // Its own count of running uploads when fresh, plus requesters just
            // sent its way; else every requester sent there lately.
            let busy = match info.uploading.filter(|(_, at)| now.duration_since(*at) < UPLOADS_FRESH) {
                Some((n, _)) => {
                    i64::from(n)
                        + peer.children.values().filter(|at| now.duration_since(**at) < JUST_SENT).count() as i64
                }
                None => peer.children.len() as i64,
            };
            let free = i64::from(info.upload_slots) - busy;
            let rank = Rank {
                same_zone: !my_zone.is_empty() && info.zone == my_zone,
                free,
                throughput: (peer.throughput / THROUGHPUT_STEP) as u64,
                first_choice: Reverse(peer.first_choice),
            };
            ranked.push((rank, id, useful));
        }
        ranked.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(b.1)));

        // Best first, but a parent that adds no piece the others lack is
        // skipped while another could: spread over the holders of every piece.
        let mut covered: HashSet<u32> = HashSet::new();
        let mut chosen: Vec<(String, Vec<u32>)> = Vec::new();
        for pass in 0..2 {
            for (_, id, useful) in &ranked {
                if chosen.len() == MAX_PARENTS {
                    break;
                }
                let adds = useful.iter().any(|i| !covered.contains(i));
                if chosen.iter().any(|(c, _)| c == *id) || (pass == 0 && !adds) {
                    continue;
                }
                covered.extend(useful.iter().copied());
                chosen.push(((*id).clone(), useful.clone()));
            }
        }
        for peer in swarm.peers.values_mut() {
            peer.children.remove(agent);
        }
        let mut parents = Vec::with_capacity(chosen.len());
        for (id, useful) in chosen {
            if let (Some(peer), Some(info)) = (swarm.peers.get_mut(&id), agents.get(&id)) {
                peer.children.insert(agent.to_owned(), now);
                if parents.is_empty() {
                    peer.first_choice = Some(now);
                }
                parents.push(Parent { agent_id: id, url: info.url.clone(), pieces: useful });
            }
        }

        // Pieces only the seed can give: no usable peer holds them and they
        // are not reserved for another agent, rarest in the whole swarm first
        // (nobody even fetching them). One piece each, so that pieces fan out
        // to different agents and are traded from there; an agent still
        // alone in wanting pieces when it comes back may take the whole
        // budget (not on its first join: when a crowd starts cold, the first
        // to arrive is alone only for a moment). Swarms of
        // a cluster take the budget in turn, so that no blob waits for the
        // seed while another keeps it busy.
        //
        // With stripe trees, a stripe's pieces go to its root only, a few at
        // a time, and the swarms of a cluster have the seed one after
        // another, each until every piece has left it: a tree carries a blob
        // at the rate the seed feeds it, and a seed split between four blobs
        // would make every hop of every tree four times as slow.
        let trees = !feeds.is_empty();
        let reserved_for = |i: u32| swarm.reserved.get(&i).filter(|(_, at)| now.duration_since(*at) < SEED_RESERVATION);
        let mut seed_pieces: Vec<u32> =
            missing.iter().copied().filter(|&i| reserved_for(i).is_some_and(|(holder, _)| holder == agent)).collect();
        let unsent: Vec<u32> =
            missing.iter().copied().filter(|&i| availability[i as usize] == 0 && reserved_for(i).is_none()).collect();
        let unclaimed: Vec<u32> = unsent.iter().copied().filter(|&i| root_of(i)).collect();
        let wanting = swarm.peers.iter().filter(|(id, p)| live(id) && lacking(p)).count();
        let settling = trees && now.duration_since(swarm.born) < TREES_SETTLE;
        let my_cap = match (trees, newcomer) {
            _ if settling => 0,
            (_, true) => 1,
            (true, false) => SEED_PIECES_PER_ROOT * feeds.iter().filter(|f| f.is_none()).count(),
            (false, false) if wanting <= 1 => SEED_PIECES_IN_FLIGHT,
            (false, false) => 1,
        };
        let room = my_cap.saturating_sub(seed_pieces.len());
        let asking = room > 0 && !unclaimed.is_empty();
        let queue = seed_queue.entry(cluster).or_default();
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
            let fetching = |id: &str| agents.get(id).and_then(|a| a.fetching);
            let busy = !trees
                && fetching(agent).is_some_and(|n| n > 0)
                && swarm.peers.iter().any(|(id, p)| id != agent && live(id) && lacking(p) && fetching(id) == Some(0));
            // The cluster's budget: room for every root's pieces when this
            // swarm has trees, the pull schedule's few otherwise.
            let budget = if trees {
                SEED_PIECES_IN_FLIGHT.max(self.stripes * SEED_PIECES_PER_ROOT)
            } else {
                SEED_PIECES_IN_FLIGHT
            };
            let take = room.min(budget.saturating_sub(seed_in_flight));
            let my_turn = take > 0 && queue.front().is_some_and(|(d, _)| *d == digest);
            let defer = my_turn
                && busy
                && now.duration_since(*seed_held_back.entry(cluster).or_insert(now)) < SEED_WAITS_FOR_IDLE;
            if my_turn && !defer {
                seed_held_back.remove(&cluster);
                let taken = if trees {
                    in_step(&unclaimed, &unsent, pieces, feeds.len(), take)
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
        Plan { parents, seed_pieces, availability, feeds, queued }
    }

    /// What wakes the cluster's held joins: take `notified()` of it before
    /// [`Scheduler::join`], so that nothing between the two is missed.
    pub fn changes(&self, cluster: ClusterId) -> Arc<Notify> {
        self.lock().changes.entry(cluster).or_default().clone()
    }

    /// Records progress and trouble reported by an agent.
    pub fn report(&self, cluster: ClusterId, report: &ReportRequest) {
        let ReportRequest { agent_id, digest, have, failed_parents: failed, bad_parents: bad, bytes_from, uploading } =
            report;
        self.load(cluster, agent_id, *uploading, None);
        let (agent, digest) = (agent_id.as_str(), *digest);
        let now = Instant::now();
        let mut state = self.lock();
        let State { swarms, changes, .. } = &mut *state;
        let Some(swarm) = swarms.get_mut(&(cluster, digest)) else { return };
        let first_copies =
            have.iter().filter(|&&i| !swarm.peers.values().any(|p| p.have.get(i as usize) == Some(&true))).count();
        if let Some(me) = swarm.peers.get_mut(agent) {
            for &i in have {
                if let Some(slot) = me.have.get_mut(i as usize) {
                    *slot = true;
                }
            }
        }
        let mut seed_done = 0;
        for &i in have {
            if swarm.reserved.get(&i).is_some_and(|(holder, _)| holder == agent) {
                swarm.reserved.remove(&i);
                seed_done += 1;
            }
        }
        if first_copies + seed_done > 0 {
            if let Some(notify) = changes.get(&cluster) {
                notify.notify_waiters();
            }
        }
        // A finished agent no longer takes anyone's upload slots.
        if swarm.peers.get(agent).is_some_and(|me| me.have.iter().all(|h| *h)) {
            for p in swarm.peers.values_mut() {
                p.children.remove(agent);
            }
        }
        for id in failed.iter().chain(bad) {
            // A seed piece it was given goes to another, rather than wait out its reservation.
            swarm.reserved.retain(|_, (holder, _)| holder != id);
        }
        for id in failed {
            if let Some(p) = swarm.peers.get_mut(id) {
                p.failed_until = Some(now + FAILURE_PENALTY);
            }
        }
        for id in bad {
            if let Some(p) = swarm.peers.get_mut(id) {
                p.bad = true;
            }
        }
        for (id, bytes) in bytes_from {
            if let Some(p) = swarm.peers.get_mut(id) {
                // Reports come about once a second: treat the bytes as a rate and smooth it.
                p.throughput = 0.7 * p.throughput + 0.3 * (*bytes as f64);
            }
        }
    }

    /// How many agents hold each piece of a blob (for tests and the console).
    pub fn holders(&self, cluster: ClusterId, digest: Digest) -> Vec<usize> {
        let state = self.lock();
        let Some(swarm) = state.swarms.get(&(cluster, digest)) else { return Vec::new() };
        (0..swarm.pieces).map(|i| swarm.peers.values().filter(|p| p.have.get(i) == Some(&true)).count()).collect()
    }
}

/// Whether a blob's swarm gets stripe trees: its pieces are small, or many.
fn treelike(blob: Blob) -> bool {
    blob.piece_size <= TREE_MAX_PIECE_SIZE || blob.pieces >= TREE_MIN_PIECES
}

/// Up to `take` of the `unclaimed` pieces (lowest first) for a root to
/// fetch from the seed, keeping the stripes in step: a piece of a stripe
/// goes out only while no other stripe with pieces still to send has had
/// [`SEED_PIECES_PER_ROOT`] fewer sent. Every agent needs every stripe, so
/// a stripe the seed runs ahead of gains nothing, and its tree's links,
/// which carry their stripe at full speed already, would only fall behind.
fn in_step(unclaimed: &[u32], unsent: &[u32], pieces: usize, stripes: usize, take: usize) -> Vec<u32> {
    let mut left = vec![0usize; stripes];
    for &i in unsent {
        left[i as usize % stripes] += 1;
    }
    let total = |s: usize| (pieces + stripes - 1 - s) / stripes;
    let mut sent: Vec<usize> = (0..stripes).map(|s| total(s) - left[s]).collect();
    let mut taken = Vec::new();
    for &i in unclaimed {
        let s = i as usize % stripes;
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

/// The parent of the agent at `me` (of `members`, in order of registration)
/// in each of `stripes` trees, as an index into the members; `None` where it
/// is the root. Tree `s` is a `stripes`-ary heap whose first (inner) places
/// go to the members `p` with `p % stripes == s`, the rest being leaves: every
/// member is an inner node of one tree, its uplink is shared by that tree's
/// children alone, and a tree of N members is about `log(N, stripes)` deep.
/// A member that joins later may move some leaves to another parent: a
/// crowd joins within moments, and a changed parent changes only where the
/// stripe's next pieces come from.
fn tree_parents(members: usize, me: usize, stripes: usize) -> Vec<Option<usize>> {
    (0..stripes)
        .map(|s| {
            let inner = (0..members).filter(|p| p % stripes == s);
            let order: Vec<usize> = inner.chain((0..members).filter(|p| p % stripes != s)).collect();
            let place = order.iter().position(|&p| p == me)?;
            (place > 0).then(|| order[(place - 1) / stripes])
        })
        .collect()
}

/// Forgets silent agents every heartbeat period until the process stops.
pub async fn expire_periodically(scheduler: std::sync::Arc<Scheduler>) {
    let mut tick = tokio::time::interval(scheduler.heartbeat());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        scheduler.expire();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(node: &str, zone: &str) -> RegisterRequest {
        RegisterRequest {
            node: node.into(),
            ip: "10.0.0.1".into(),
            peer_port: 65002,
            zone: zone.into(),
            upload_slots: 4,
            version: "test".into(),
            platform: String::new(),
        }
    }

    const C: ClusterId = ClusterId(1);

    /// A blob of `pieces` pieces small enough for stripe trees.
    fn blob(pieces: usize) -> Blob {
        Blob { pieces, piece_size: 256 * 1024 }
    }

    /// A scheduler without stripe trees: every agent pulls.
    fn pull_only() -> Scheduler {
        Scheduler::new(Duration::from_secs(10)).with_stripes(0)
    }

    fn progress(agent: &str, digest: Digest, have: &[u32], failed: &[String], bad: &[String]) -> ReportRequest {
        ReportRequest {
            agent_id: agent.to_owned(),
            digest,
            have: have.to_vec(),
            failed_parents: failed.to_vec(),
            bad_parents: bad.to_vec(),
            bytes_from: Vec::new(),
            uploading: None,
        }
    }

    #[test]
    fn the_seed_sends_a_few_pieces_at_a_time_to_different_agents_who_then_trade() {
        let s = pull_only();
        let d = Digest::of(b"blob");
        let a = s.register(C, &req("a", "z1"));
        let b = s.register(C, &req("b", "z1"));
        let c = s.register(C, &req("c", "z1"));
        let pa = s.join(C, &a, d, blob(8), &[]);
        assert_eq!(pa.seed_pieces, [0], "a newcomer gets one piece: others of a crowd may be a moment behind");
        let pa = s.join(C, &a, d, blob(8), &[]);
        assert_eq!(pa.seed_pieces, [0, 1, 2], "still alone when it comes back, it takes the whole seed budget");
        let pb = s.join(C, &b, d, blob(8), &[]);
        assert!(pb.seed_pieces.is_empty(), "the cluster's seed budget is spent");
        assert!(pa.parents.is_empty() && pb.parents.is_empty());
        s.report(C, &progress(&a, d, &[0, 1, 2], &[], &[]));
        let pb = s.join(C, &b, d, blob(8), &[]);
        assert_eq!(pb.parents.len(), 1);
        assert_eq!(pb.parents[0].agent_id, a);
        assert_eq!(pb.parents[0].pieces, [0, 1, 2]);
        assert_eq!(pb.seed_pieces, [3], "with others wanting pieces, one seed piece per agent");
        assert_eq!(pb.availability, [1, 1, 1, 0, 0, 0, 0, 0]);
        let pc = s.join(C, &c, d, blob(8), &[]);
        assert_eq!(pc.seed_pieces, [4], "each agent gets a different piece from the seed");
        let pa = s.join(C, &a, d, blob(8), &[0, 1, 2]);
        assert_eq!(pa.seed_pieces, [5], "a third piece goes out");
        let pb = s.join(C, &b, d, blob(8), &[]);
        assert_eq!(pb.seed_pieces, [3], "three pieces are out: b keeps its own, and nothing more");
        s.report(C, &progress(&b, d, &[3], &[], &[]));
        let pb = s.join(C, &b, d, blob(8), &[3]);
        assert_eq!(pb.seed_pieces, [6], "a piece arrived, so the next goes out");
        assert_eq!(s.holders(C, d), [1, 1, 1, 1, 0, 0, 0, 0]);
    }

    #[test]
    fn blobs_of_one_cluster_take_turns_at_the_seed() {
        let s = pull_only();
        let (x, y) = (Digest::of(b"x"), Digest::of(b"y"));
        let xs: Vec<String> = (0..3).map(|i| s.register(C, &req(&format!("x{i}"), ""))).collect();
        let ys: Vec<String> = (0..3).map(|i| s.register(C, &req(&format!("y{i}"), ""))).collect();
        assert_eq!(s.join(C, &xs[0], x, blob(8), &[]).seed_pieces, [0], "a newcomer takes one piece");
        assert_eq!(s.join(C, &xs[0], x, blob(8), &[]).seed_pieces, [0, 1, 2], "alone, x0 takes the whole budget");
        // Both blobs now wait for the seed: y asked first.
        assert!(s.join(C, &ys[0], y, blob(8), &[]).seed_pieces.is_empty());
        assert!(s.join(C, &xs[1], x, blob(8), &[]).seed_pieces.is_empty());
        s.report(C, &progress(&xs[0], x, &[0], &[], &[]));
        assert!(s.join(C, &xs[1], x, blob(8), &[]).seed_pieces.is_empty(), "y is first in line");
        assert_eq!(s.join(C, &ys[1], y, blob(8), &[]).seed_pieces, [0], "y's turn");
        s.report(C, &progress(&xs[0], x, &[1], &[], &[]));
        assert!(s.join(C, &ys[2], y, blob(8), &[]).seed_pieces.is_empty(), "x is first in line now");
        assert_eq!(s.join(C, &xs[1], x, blob(8), &[]).seed_pieces, [3], "and x's turn again");
    }

    #[test]
    fn a_crowd_spreads_over_the_holders_instead_of_converging_on_one() {
        let s = pull_only();
        let d = Digest::of(b"blob");
        let holders: Vec<String> = (0..4).map(|i| s.register(C, &req(&format!("h{i}"), "z1"))).collect();
        for h in &holders {
            s.join(C, h, d, blob(4), &[0, 1, 2, 3]);
        }
        let mut load: HashMap<String, usize> = HashMap::new();
        for i in 0..16 {
            let me = s.register(C, &req(&format!("n{i}"), "z1"));
            let plan = s.join(C, &me, d, blob(4), &[]);
            assert!(!plan.parents.is_empty());
            *load.entry(plan.parents[0].agent_id.clone()).or_default() += 1;
        }
        assert_eq!(load.len(), 4, "every holder is somebody's first choice: {load:?}");
        assert!(load.values().all(|&n| n == 4), "first choices are dealt out in turn: {load:?}");
    }

    #[test]
    fn bad_and_failing_parents_are_avoided_and_same_zone_comes_first() {
        let s = pull_only();
        let d = Digest::of(b"blob");
        let near = s.register(C, &req("near", "z1"));
        let far = s.register(C, &req("far", "z2"));
        let liar = s.register(C, &req("liar", "z1"));
        let me = s.register(C, &req("me", "z1"));
        for id in [&near, &far, &liar] {
            s.join(C, id, d, blob(2), &[0, 1]);
        }
        let plan = s.join(C, &me, d, blob(2), &[]);
        let order: Vec<&str> = plan.parents.iter().map(|p| p.agent_id.as_str()).collect();
        assert_eq!(order.len(), 3);
        assert_eq!(order[2], far.as_str(), "another zone ranks last");
        assert!(plan.seed_pieces.is_empty(), "the seed is the last resort");
        s.report(C, &progress(&me, d, &[], std::slice::from_ref(&near), std::slice::from_ref(&liar)));
        let plan = s.join(C, &me, d, blob(2), &[]);
        let order: Vec<&str> = plan.parents.iter().map(|p| p.agent_id.as_str()).collect();
        assert_eq!(order, [far.as_str()]);
        assert!(plan.seed_pieces.is_empty(), "a healthy peer still holds every piece");
        // With every holder failing or bad, the seed serves the pieces.
        s.report(C, &progress(&me, d, &[], std::slice::from_ref(&far), &[]));
        let plan = s.join(C, &me, d, blob(2), &[]);
        assert!(plan.parents.is_empty());
        assert_eq!(plan.seed_pieces, [0, 1]);
    }

    #[test]
    fn a_swarm_of_large_pieces_keeps_the_pull_schedules_seed_budget_while_trees_are_configured() {
        let s = Scheduler::new(Duration::from_secs(10));
        let large = Blob { pieces: 8, piece_size: 4 << 20 };
        let d = Digest::of(b"large");
        let [a, b, c, e] = ["a", "b", "c", "e"].map(|n| s.register(C, &req(n, "z1")));
        for (agent, piece) in [(&a, 0), (&b, 1), (&c, 2)] {
            let plan = s.join(C, agent, d, large, &[]);
            assert!(plan.feeds.is_empty(), "no trees for pieces above the limit");
            assert_eq!(plan.seed_pieces, [piece]);
        }
        assert!(s.join(C, &e, d, large, &[]).seed_pieces.is_empty(), "three, not the trees' four");
    }

    #[test]
    fn a_busy_agent_leaves_a_seed_piece_to_an_idle_one_for_a_moment() {
        let s = pull_only();
        let d = Digest::of(b"blob");
        let [a, b, c, e] = ["a", "b", "c", "e"].map(|n| s.register(C, &req(n, "z1")));
        assert_eq!(s.join(C, &a, d, blob(8), &[]).seed_pieces, [0]);
        assert_eq!(s.join(C, &b, d, blob(8), &[]).seed_pieces, [1]);
        assert_eq!(s.join(C, &c, d, blob(8), &[]).seed_pieces, [2]);
        assert!(s.join(C, &e, d, blob(8), &[]).seed_pieces.is_empty(), "the budget of three is spent");
        s.report(C, &progress(&a, d, &[0], &[], &[]));
        s.load(C, &b, None, Some(2));
        s.load(C, &e, None, Some(0));
        assert_eq!(
            s.join(C, &b, d, blob(8), &[]).seed_pieces,
            [1],
            "only its own: b's downlink is busy and e's is free"
        );
        assert_eq!(s.join(C, &e, d, blob(8), &[]).seed_pieces, [3], "the idle agent takes it");
        s.report(C, &progress(&b, d, &[1], &[], &[]));
        assert!(s.join(C, &b, d, blob(8), &[1]).seed_pieces.is_empty(), "e said it is idle");
        std::thread::sleep(SEED_WAITS_FOR_IDLE + Duration::from_millis(50));
        assert_eq!(
            s.join(C, &b, d, blob(8), &[1]).seed_pieces,
            [4],
            "nobody idle came: the busy agent takes it after all"
        );
    }

    #[test]
    fn a_join_says_what_the_agent_holds_now_so_an_evicted_blob_is_fetched_again() {
        let s = pull_only();
        let d = Digest::of(b"blob");
        let a = s.register(C, &req("a", "z1"));
        let b = s.register(C, &req("b", "z1"));
        s.join(C, &a, d, blob(2), &[]);
        s.report(C, &progress(&a, d, &[0, 1], &[], &[]));
        assert_eq!(s.holders(C, d), [1, 1]);
        // Its cache evicted the blob; it asks again with nothing.
        let plan = s.join(C, &a, d, blob(2), &[]);
        assert_eq!(s.holders(C, d), [0, 0], "it is no holder any more");
        assert_eq!(plan.seed_pieces, [0, 1], "alone, it takes the pieces from the seed again");
        assert!(s.join(C, &b, d, blob(2), &[]).parents.is_empty(), "nobody is sent to it for pieces it lost");
    }

    #[test]
    fn an_agent_that_leaves_is_no_parent_and_holds_no_seed_piece() {
        let s = pull_only();
        let d = Digest::of(b"blob");
        let a = s.register(C, &req("a", ""));
        let b = s.register(C, &req("b", ""));
        s.join(C, &a, d, blob(8), &[0, 1]);
        assert_eq!(s.join(C, &b, d, blob(8), &[]).parents.len(), 1);
        assert!(!s.forget(ClusterId(2), &a), "only its own cluster can make it leave");
        assert!(s.forget(C, &a));
        assert!(s.agent(C, &a).is_none());
        let plan = s.join(C, &b, d, blob(8), &[]);
        assert!(plan.parents.is_empty());
        assert_eq!(plan.availability, [0; 8]);
        assert_eq!(s.census().agents, 1);
    }

    #[test]
    fn swarms_are_per_cluster() {
        let s = pull_only();
        let d = Digest::of(b"blob");
        let a = s.register(C, &req("a", ""));
        let other = s.register(ClusterId(2), &req("b", ""));
        s.join(C, &a, d, blob(1), &[0]);
        let plan = s.join(ClusterId(2), &other, d, blob(1), &[]);
        assert!(plan.parents.is_empty(), "an agent of another cluster is never a parent");
        assert_eq!(plan.seed_pieces, [0]);
        assert!(s.agent(C, &other).is_none());
    }

    #[test]
    fn a_parent_that_says_its_uploads_are_idle_goes_first() {
        let s = pull_only();
        let d = Digest::of(b"blob");
        // req() gives every agent 4 upload slots.
        let (busy, idle) = (s.register(C, &req("busy", "")), s.register(C, &req("idle", "")));
        s.join(C, &busy, d, blob(2), &[0, 1]);
        s.join(C, &idle, d, blob(2), &[0, 1]);
        // By name "busy" would win the tie; its own count says all four slots are taken.
        s.load(C, &busy, Some(4), None);
        s.load(C, &idle, Some(0), None);
        s.load(ClusterId(2), &idle, Some(4), None);
        let me = s.register(C, &req("me", ""));
        assert_eq!(s.join(C, &me, d, blob(2), &[]).parents[0].agent_id, idle);
        // Both free again: the one that was not just somebody's first choice goes first.
        s.load(C, &busy, Some(0), None);
        let other = s.register(C, &req("other", ""));
        assert_eq!(s.join(C, &other, d, blob(2), &[]).parents[0].agent_id, busy, "idle was just my first choice");
    }
    #[test]
    fn every_agent_has_one_parent_per_stripe_and_children_in_one_stripe_only() {
        for n in [1usize, 2, 3, 5, 8, 16, 33] {
            let parents: Vec<Vec<Option<usize>>> = (0..n).map(|me| tree_parents(n, me, 2)).collect();
            for s in 0..2 {
                let roots: Vec<usize> = (0..n).filter(|&m| parents[m][s].is_none()).collect();
                assert_eq!(roots, [if s < n { s } else { 0 }], "n={n}: one root per stripe");
                for m in 0..n {
                    let children = (0..n).filter(|&c| parents[c][s] == Some(m)).count();
                    assert!(children <= 2, "n={n}: {m} has {children} children in stripe {s}");
                    // Up the tree to the root, within log2(n) + 1 hops.
                    let (mut at, mut hops) = (m, 0);
                    while let Some(p) = parents[at][s] {
                        (at, hops) = (p, hops + 1);
                        assert!(hops <= n.ilog2() as usize + 1, "n={n}: {m} is {hops} hops deep in stripe {s}");
                    }
                }
            }
            for m in 0..n {
                let feeds = (0..2).filter(|&s| (0..n).any(|c| parents[c][s] == Some(m))).count();
                assert!(feeds <= 1, "n={n}: {m} forwards more than one stripe");
            }
        }
    }

    #[test]
    fn with_stripe_trees_each_stripe_leaves_the_seed_for_its_root_only() {
        let s = Scheduler::new(Duration::from_secs(10));
        let d = Digest::of(b"blob");
        let ids: Vec<String> = (0..4).map(|i| s.register(C, &req(&format!("n{i}"), "z1"))).collect();
        let plans: Vec<Plan> = ids.iter().map(|id| s.join(C, id, d, blob(8), &[])).collect();
        assert!(plans.iter().all(|p| p.seed_pieces.is_empty()), "a new swarm waits a moment for the crowd to join");
        std::thread::sleep(TREES_SETTLE);
        let feeds = |p: &Plan| p.feeds.iter().map(|f| f.as_ref().map(|f| f.agent_id.clone())).collect::<Vec<_>>();
        let mut plans: Vec<Plan> = ids.iter().map(|id| s.join(C, id, d, blob(8), &[])).collect();
        // Stripe 0's tree: n0 → n2, n1; n2 → n3. Stripe 1's: n1 → n3, n0; n3 → n2.
        assert_eq!(feeds(&plans[0]), [None, Some(ids[1].clone())]);
        assert_eq!(feeds(&plans[1]), [Some(ids[0].clone()), None]);
        assert_eq!(feeds(&plans[2]), [Some(ids[0].clone()), Some(ids[3].clone())]);
        assert_eq!(feeds(&plans[3]), [Some(ids[2].clone()), Some(ids[1].clone())]);
        assert_eq!(plans[0].feeds[1].as_ref().map(|f| f.url.as_str()), Some("http://10.0.0.1:65002"));
        assert_eq!(plans[0].seed_pieces, [0, 2], "the root of stripe 0 takes its stripe's pieces");
        assert_eq!(plans[1].seed_pieces, [1, 3], "and the root of stripe 1 its own");
        assert!(plans[2].seed_pieces.is_empty() && plans[3].seed_pieces.is_empty(), "the others take none");
        s.report(C, &progress(&ids[0], d, &[0, 2], &[], &[]));
        plans[0] = s.join(C, &ids[0], d, blob(8), &[0, 2]);
        assert_eq!(plans[0].seed_pieces, [4, 6], "two more of stripe 0 go out as two arrive");
        s.report(C, &progress(&ids[0], d, &[4, 6], &[], &[]));
        plans[0] = s.join(C, &ids[0], d, blob(8), &[0, 2, 4, 6]);
        assert!(plans[0].seed_pieces.is_empty(), "stripe 0 is all sent");
        // A root reported failing loses its place, and its seed pieces go to the new root.
        s.report(C, &progress(&ids[2], d, &[], std::slice::from_ref(&ids[1]), &[]));
        let p2 = s.join(C, &ids[2], d, blob(8), &[]);
        assert_eq!(feeds(&p2), [Some(ids[0].clone()), None], "n2 is stripe 1's root now");
        assert_eq!(p2.seed_pieces, [1, 3], "and takes the pieces n1 was given");
    }

    #[test]
    fn the_seed_keeps_the_stripes_in_step() {
        // Ten pieces in two stripes; stripe 0 has had four sent, stripe 1 two.
        let unsent = [5, 7, 8, 9];
        assert_eq!(in_step(&[8], &unsent, 10, 2, 2), Vec::<u32>::new(), "stripe 0 is two ahead");
        assert_eq!(in_step(&[5, 7, 9], &unsent, 10, 2, 2), [5, 7], "stripe 1 catches up");
        assert_eq!(in_step(&[8], &[8], 10, 2, 2), [8], "a stripe with nothing left holds nobody back");
    }

    #[test]
    fn with_stripe_trees_the_seed_sends_one_blob_before_the_next() {
        let s = Scheduler::new(Duration::from_secs(10));
        let (x, y) = (Digest::of(b"x"), Digest::of(b"y"));
        let (a, b) = (s.register(C, &req("a", "")), s.register(C, &req("b", "")));
        for d in [x, y] {
            s.join(C, &a, d, blob(4), &[]);
            s.join(C, &b, d, blob(4), &[]);
        }
        std::thread::sleep(TREES_SETTLE);
        let plan = s.join(C, &a, x, blob(4), &[]);
        assert_eq!(plan.seed_pieces, [0, 2]);
        assert!(!plan.queued);
        let plan = s.join(C, &a, y, blob(4), &[]);
        assert!(plan.seed_pieces.is_empty(), "x has pieces the seed has not sent yet");
        assert!(plan.queued, "y waits its turn, and its agents are told so");
        assert_eq!(s.join(C, &b, x, blob(4), &[]).seed_pieces, [1, 3], "x's last pieces leave the seed");
        s.report(C, &progress(&a, x, &[0, 2], &[], &[]));
        let plan = s.join(C, &a, y, blob(4), &[]);
        assert_eq!(plan.seed_pieces, [0, 2], "now y's turn");
        assert!(!plan.queued);
    }
    #[test]
    fn swarms_across_zones_and_blobs_of_a_few_large_pieces_have_no_trees() {
        let s = Scheduler::new(Duration::from_secs(10));
        let d = Digest::of(b"blob");
        let (a, b) = (s.register(C, &req("a", "z1")), s.register(C, &req("b", "z1")));
        s.join(C, &a, d, blob(4), &[]);
        assert_eq!(s.join(C, &b, d, blob(4), &[]).feeds.len(), 2, "one zone, small pieces");
        let large = Blob { pieces: 4, piece_size: 4 << 20 };
        assert!(s.join(C, &b, Digest::of(b"large"), large, &[]).feeds.is_empty(), "a few 4 MiB pieces");
        let many = Blob { pieces: TREE_MIN_PIECES, piece_size: 4 << 20 };
        s.join(C, &a, Digest::of(b"many"), many, &[]);
        assert_eq!(s.join(C, &b, Digest::of(b"many"), many, &[]).feeds.len(), 2, "many 4 MiB pieces");
        let far = s.register(C, &req("far", "z2"));
        assert!(s.join(C, &far, d, blob(4), &[]).feeds.is_empty(), "a second zone");
        assert!(s.join(C, &b, d, blob(4), &[]).feeds.is_empty(), "for everyone in the swarm");
    }
}

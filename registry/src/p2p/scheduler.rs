//! Swarm scheduling, in memory.
//!
//! A swarm is one blob within one cluster. Every join returns up to
//! [`MAX_PARENTS`] parents that hold pieces the requester lacks, best
//! first: same zone, free upload slots, measured throughput. Pieces that no
//! peer holds go to the seed, but each is handed to one agent at a time
//! (and at most [`SEED_PIECES_PER_JOIN`] per join), so that agents starting
//! cold at the same moment split the seed's pieces between them and then
//! trade; the seed sends each piece into the swarm about once.
//!
//! All state sits behind this one type, keyed by cluster, so that a later
//! deployment can shard it across registry replicas by cluster.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use damselfly_core::p2p::{Parent, RegisterRequest};
use damselfly_core::Digest;

use crate::metadata::ClusterId;

/// Most parents handed out per join.
pub const MAX_PARENTS: usize = 4;
/// Most seed pieces handed to one agent per join; it joins again for more.
pub const SEED_PIECES_PER_JOIN: usize = 4;
/// How long a seed piece stays reserved for the agent it was handed to.
const SEED_RESERVATION: Duration = Duration::from_secs(20);
/// How long a parent assignment counts against the parent's upload slots.
const ASSIGNMENT_WINDOW: Duration = Duration::from_secs(10);
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
    assignments: VecDeque<Instant>,
}

struct Swarm {
    pieces: usize,
    peers: HashMap<String, Peer>,
    /// Seed pieces handed out: piece → (agent, when).
    reserved: HashMap<u32, (String, Instant)>,
}

#[derive(Default)]
struct State {
    agents: HashMap<String, Agent>,
    swarms: HashMap<(ClusterId, Digest), Swarm>,
}

/// What a join gets: parents and seed pieces.
#[derive(Debug, PartialEq, Eq)]
pub struct Plan {
    /// Parents, best first.
    pub parents: Vec<Parent>,
    /// Pieces to fetch from the seed.
    pub seed_pieces: Vec<u32>,
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
}

impl Scheduler {
    /// Agents silent for three heartbeats are forgotten.
    pub fn new(heartbeat: Duration) -> Scheduler {
        Scheduler { state: Mutex::new(State::default()), heartbeat }
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
        let agent = Agent {
            id: id.clone(),
            cluster,
            node: req.node.clone(),
            url: format!("http://{}:{}", req.ip, req.peer_port),
            zone: req.zone.clone(),
            upload_slots: req.upload_slots.max(1),
            version: req.version.clone(),
            last_seen: Instant::now(),
        };
        self.lock().agents.insert(id.clone(), agent);
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

    /// Forgets agents silent for three heartbeats, and swarms left empty.
    pub fn expire(&self) {
        let limit = self.heartbeat * 3;
        let mut state = self.lock();
        state.agents.retain(|_, a| a.last_seen.elapsed() < limit);
        let State { agents, swarms } = &mut *state;
        for swarm in swarms.values_mut() {
            swarm.peers.retain(|id, _| agents.contains_key(id));
            swarm.reserved.retain(|_, (id, _)| agents.contains_key(id));
        }
        swarms.retain(|_, s| !s.peers.is_empty());
    }

    /// Counts of live agents and swarms.
    pub fn census(&self) -> Census {
        let state = self.lock();
        Census { agents: state.agents.len(), swarms: state.swarms.len() }
    }

    /// Adds the agent to the blob's swarm with the pieces it holds, and plans its next fetches.
    pub fn join(&self, cluster: ClusterId, agent: &str, digest: Digest, pieces: usize, have: &[u32]) -> Plan {
        let now = Instant::now();
        let alive = self.heartbeat * 3;
        let mut state = self.lock();
        let State { agents, swarms } = &mut *state;
        let my_zone = agents.get(agent).map(|a| a.zone.clone()).unwrap_or_default();
        let swarm = swarms.entry((cluster, digest)).or_insert_with(|| Swarm {
            pieces,
            peers: HashMap::new(),
            reserved: HashMap::new(),
        });
        let me = swarm.peers.entry(agent.to_owned()).or_default();
        me.have.resize(pieces, false);
        for &i in have {
            if let Some(slot) = me.have.get_mut(i as usize) {
                *slot = true;
            }
        }
        let missing: Vec<u32> = (0..pieces as u32).filter(|&i| !me.have[i as usize]).collect();

        // Rank the peers that can help.
        let mut ranked: Vec<(f64, String, Vec<u32>)> = Vec::new();
        for (id, peer) in swarm.peers.iter_mut() {
            let Some(info) = agents.get(id) else { continue };
            if id == agent || peer.bad || info.last_seen.elapsed() >= alive {
                continue;
            }
            if peer.failed_until.is_some_and(|t| t > now) {
                continue;
            }
            let useful: Vec<u32> =
                missing.iter().copied().filter(|&i| peer.have.get(i as usize) == Some(&true)).collect();
            if useful.is_empty() {
                continue;
            }
            while peer.assignments.front().is_some_and(|t| now.duration_since(*t) > ASSIGNMENT_WINDOW) {
                peer.assignments.pop_front();
            }
            let free = info.upload_slots as f64 - peer.assignments.len() as f64;
            let zone = if !my_zone.is_empty() && info.zone == my_zone { 1.0 } else { 0.0 };
            let score = zone * 1e6 + free.max(0.0) * 1e3 + peer.throughput / 1e6 + useful.len() as f64 / pieces as f64;
            ranked.push((score, id.clone(), useful));
        }
        ranked.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
        ranked.truncate(MAX_PARENTS);
        let mut parents = Vec::with_capacity(ranked.len());
        for (_, id, useful) in ranked {
            if let (Some(peer), Some(info)) = (swarm.peers.get_mut(&id), agents.get(&id)) {
                peer.assignments.push_back(now);
                parents.push(Parent { agent_id: id, url: info.url.clone(), pieces: useful });
            }
        }

        // Pieces only the seed can give: not held by a usable peer (alive, not
        // reported bad, not in its failure penalty), not reserved for another agent.
        let held_by_peer = |i: u32, peers: &HashMap<String, Peer>| {
            peers.iter().any(|(id, p)| {
                id != agent
                    && !p.bad
                    && !p.failed_until.is_some_and(|t| t > now)
                    && p.have.get(i as usize) == Some(&true)
                    && agents.get(id).is_some_and(|a| a.last_seen.elapsed() < alive)
            })
        };
        let mut seed_pieces = Vec::new();
        for &i in &missing {
            if seed_pieces.len() == SEED_PIECES_PER_JOIN {
                break;
            }
            if held_by_peer(i, &swarm.peers) {
                continue;
            }
            match swarm.reserved.get(&i) {
                Some((holder, at)) if holder != agent && now.duration_since(*at) < SEED_RESERVATION => continue,
                _ => {}
            }
            swarm.reserved.insert(i, (agent.to_owned(), now));
            seed_pieces.push(i);
        }
        Plan { parents, seed_pieces }
    }

    /// Records progress and trouble reported by an agent.
    pub fn report(
        &self,
        cluster: ClusterId,
        agent: &str,
        digest: Digest,
        have: &[u32],
        failed: &[String],
        bad: &[String],
        bytes_from: &[(String, u64)],
    ) {
        let now = Instant::now();
        let mut state = self.lock();
        let Some(swarm) = state.swarms.get_mut(&(cluster, digest)) else { return };
        if let Some(me) = swarm.peers.get_mut(agent) {
            for &i in have {
                if let Some(slot) = me.have.get_mut(i as usize) {
                    *slot = true;
                }
            }
        }
        for &i in have {
            if swarm.reserved.get(&i).is_some_and(|(holder, _)| holder == agent) {
                swarm.reserved.remove(&i);
            }
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
        }
    }

    const C: ClusterId = ClusterId(1);

    #[test]
    fn cold_agents_split_the_seed_pieces_then_trade() {
        let s = Scheduler::new(Duration::from_secs(10));
        let d = Digest::of(b"blob");
        let a = s.register(C, &req("a", "z1"));
        let b = s.register(C, &req("b", "z1"));
        let pa = s.join(C, &a, d, 8, &[]);
        let pb = s.join(C, &b, d, 8, &[]);
        assert_eq!(pa.seed_pieces, [0, 1, 2, 3]);
        assert_eq!(pb.seed_pieces, [4, 5, 6, 7], "the second cold agent takes other pieces from the seed");
        assert!(pa.parents.is_empty() && pb.parents.is_empty());
        s.report(C, &a, d, &[0, 1, 2, 3], &[], &[], &[]);
        let pb = s.join(C, &b, d, 8, &[4, 5]);
        assert_eq!(pb.parents.len(), 1);
        assert_eq!(pb.parents[0].agent_id, a);
        assert_eq!(pb.parents[0].pieces, [0, 1, 2, 3]);
        assert_eq!(pb.seed_pieces, [6, 7], "its own reservations stay its own");
        assert_eq!(s.holders(C, d), [1, 1, 1, 1, 1, 1, 0, 0]);
    }

    #[test]
    fn bad_and_failing_parents_are_avoided_and_same_zone_comes_first() {
        let s = Scheduler::new(Duration::from_secs(10));
        let d = Digest::of(b"blob");
        let near = s.register(C, &req("near", "z1"));
        let far = s.register(C, &req("far", "z2"));
        let liar = s.register(C, &req("liar", "z1"));
        let me = s.register(C, &req("me", "z1"));
        for id in [&near, &far, &liar] {
            s.join(C, id, d, 2, &[0, 1]);
        }
        let plan = s.join(C, &me, d, 2, &[]);
        let order: Vec<&str> = plan.parents.iter().map(|p| p.agent_id.as_str()).collect();
        assert_eq!(order.len(), 3);
        assert_eq!(order[2], far.as_str(), "another zone ranks last");
        assert!(plan.seed_pieces.is_empty(), "the seed is the last resort");
        s.report(C, &me, d, &[], &[near.clone()], &[liar.clone()], &[]);
        let plan = s.join(C, &me, d, 2, &[]);
        let order: Vec<&str> = plan.parents.iter().map(|p| p.agent_id.as_str()).collect();
        assert_eq!(order, [far.as_str()]);
        assert!(plan.seed_pieces.is_empty(), "a healthy peer still holds every piece");
        // With every holder failing or bad, the seed serves the pieces.
        s.report(C, &me, d, &[], &[far.clone()], &[], &[]);
        let plan = s.join(C, &me, d, 2, &[]);
        assert!(plan.parents.is_empty());
        assert_eq!(plan.seed_pieces, [0, 1]);
    }

    #[test]
    fn swarms_are_per_cluster() {
        let s = Scheduler::new(Duration::from_secs(10));
        let d = Digest::of(b"blob");
        let a = s.register(C, &req("a", ""));
        let other = s.register(ClusterId(2), &req("b", ""));
        s.join(C, &a, d, 1, &[0]);
        let plan = s.join(ClusterId(2), &other, d, 1, &[]);
        assert!(plan.parents.is_empty(), "an agent of another cluster is never a parent");
        assert_eq!(plan.seed_pieces, [0]);
        assert!(s.agent(C, &other).is_none());
    }
}

//! The scheduler's records: the agents it knows, and per blob and cluster
//! the swarm of agents that want or hold it, with what each holds and what
//! the scheduler learnt about it as a parent.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use crate::metadata::ClusterId;

/// How long a parent reported as failing is skipped.
const FAILURE_PENALTY: Duration = Duration::from_secs(30);

/// The shape of a blob, as its per-piece digests were recorded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Blob {
    /// How many pieces.
    pub pieces: usize,
    /// Bytes per piece (the last may be shorter).
    pub piece_size: u64,
}

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
    pub(super) seq: u64,
    /// When it last joined or reported.
    pub(super) heard: Instant,
    /// `<os>/<architecture>[/<variant>]`.
    pub platform: String,
    /// Uploads it said it runs, and when it said so.
    pub(super) uploading: Option<(u32, Instant)>,
    /// Piece downloads it last said it runs (all blobs).
    pub(super) fetching: Option<u32>,
    /// When it last registered, heartbeat or said it leaves.
    pub(super) last_seen: Instant,
}

impl Agent {
    /// Notes the uploads and downloads it says it runs, as of `now`.
    pub(super) fn heard_at(&mut self, now: Instant, uploading: Option<u32>, fetching: Option<u32>) {
        self.heard = now;
        if let Some(n) = uploading {
            self.uploading = Some((n, now));
        }
        if fetching.is_some() {
            self.fetching = fetching;
        }
    }
}

/// The requesters sent to a parent lately, each with when it was last sent
/// there. Every sending is also kept in order, so that those made too long
/// ago fall off the front, and those made lately are counted from the back,
/// without a look at the others: a parent in a large swarm may have hundreds.
#[derive(Default)]
pub(super) struct Children {
    /// Each child's latest sending, by its number.
    latest: HashMap<String, u64>,
    /// Every sending, oldest first: when, to whom, and whether it is still
    /// its child's latest (a child sent again or taken off is not).
    sent: VecDeque<(Instant, String, bool)>,
    /// The number of the first sending in `sent`.
    first: u64,
}

impl Children {
    /// `child` is sent to the parent at `at` (the scheduler's clock only moves on).
    pub(super) fn insert(&mut self, child: &str, at: Instant) {
        self.remove(child);
        let number = self.first + self.sent.len() as u64;
        self.latest.insert(child.to_owned(), number);
        self.sent.push_back((at, child.to_owned(), true));
    }

    /// `child` no longer counts against the parent.
    pub(super) fn remove(&mut self, child: &str) {
        if let Some(number) = self.latest.remove(child) {
            if let Some(entry) = self.sent.get_mut((number - self.first) as usize) {
                entry.2 = false;
            }
        }
    }

    /// Forgets the children last sent `window` or longer before `now`.
    pub(super) fn expire(&mut self, now: Instant, window: Duration) {
        while let Some((at, child, latest)) = self.sent.front() {
            if now.duration_since(*at) < window {
                break;
            }
            if *latest {
                self.latest.remove(child);
            }
            self.sent.pop_front();
            self.first += 1;
        }
    }

    /// How many children count.
    pub(super) fn len(&self) -> usize {
        self.latest.len()
    }

    /// How many children were last sent less than `recent` before `now`.
    pub(super) fn sent_within(&self, now: Instant, recent: Duration) -> usize {
        let fresh = self.sent.iter().rev().take_while(|(at, _, _)| now.duration_since(*at) < recent);
        fresh.filter(|(_, _, latest)| *latest).count()
    }
}

/// One member of a swarm.
#[derive(Default)]
pub(super) struct Peer {
    pub(super) have: Vec<bool>,
    /// How many pieces it holds.
    pub(super) held: usize,
    /// Its agent's order of registration, and its zone.
    pub(super) seq: u64,
    pub(super) zone: String,
    /// Sent a piece that failed verification: never a parent again in this swarm.
    pub(super) bad: bool,
    /// It is one of the swarm's suspects (see [`Swarm::suspects`]).
    pub(super) suspect: bool,
    pub(super) failed_until: Option<Instant>,
    /// Bytes per second, smoothed.
    pub(super) throughput: f64,
    /// Requesters recently sent to this peer, and when: its upload slots in use.
    pub(super) children: Children,
    /// The parents it was given at its last join, whose `children` it is in.
    pub(super) parents: Vec<String>,
    /// When it was last a requester's first parent: among equals, the one
    /// that waited longest goes first, so a crowd is dealt out in turn.
    pub(super) first_choice: Option<Instant>,
}

impl Peer {
    /// It still lacks a piece of the blob.
    pub(super) fn lacking(&self) -> bool {
        self.held < self.have.len()
    }

    /// It holds piece `i`.
    pub(super) fn holds(&self, i: u32) -> bool {
        self.have.get(i as usize) == Some(&true)
    }
}

/// The agents of one cluster that want or hold one blob.
///
/// A join must cost about the same in a swarm of ten thousand agents as in
/// one of ten, so what every join needs is kept up to date as members come,
/// report and go, rather than counted over all members each time: how many
/// hold each piece, the members in order of registration and per zone, and
/// the few members that cannot serve others (see `availability::census`).
pub(super) struct Swarm {
    pub(super) pieces: usize,
    pub(super) peers: HashMap<String, Peer>,
    /// Seed pieces handed out: piece → (agent, when).
    pub(super) reserved: HashMap<u32, (String, Instant)>,
    /// When its first member joined.
    pub(super) born: Instant,
    /// How many members hold each piece.
    pub(super) holders: Vec<u32>,
    /// The members by order of registration: the stripe trees' order, and
    /// the order in which a large swarm's members are looked at as parents.
    pub(super) order: Vec<(u64, String)>,
    /// The members of each zone, by order of registration: each zone's stripe trees.
    pub(super) zones: HashMap<String, Vec<(u64, String)>>,
    /// The members that cannot serve others now, or may stop being able to
    /// before `next_census`; every other member can until then.
    pub(super) suspects: Vec<String>,
    /// How many suspects hold each piece: a join subtracts the unusable
    /// members' pieces from `holders` by adding back those of the few
    /// suspects that are usable, rather than going over every unusable
    /// member's pieces (after a crowd of agents is killed, a thousand).
    pub(super) suspect_held: Vec<u32>,
    pub(super) next_census: Instant,
    /// Where in `order` the last look for parents stopped, in a large swarm.
    pub(super) cursor: usize,
    /// The holders of each piece that has at most [`RARE`] of them: a large
    /// swarm's joins look at these first, since a look at some members
    /// would seldom find them.
    pub(super) rare: HashMap<u32, Vec<String>>,
}

/// Pieces with at most this many holders have them listed (see [`Swarm::rare`]).
pub(super) const RARE: u32 = 16;

/// An agent's place in a swarm after it joined.
pub(super) struct Entered {
    /// It was not a member before.
    pub(super) newcomer: bool,
    /// The pieces it lacks, lowest first.
    pub(super) missing: Vec<u32>,
}

impl Swarm {
    /// An empty swarm of a blob of `pieces` pieces, born `now`.
    pub(super) fn new(pieces: usize, now: Instant) -> Swarm {
        Swarm {
            pieces,
            peers: HashMap::new(),
            reserved: HashMap::new(),
            born: now,
            holders: vec![0; pieces],
            order: Vec::new(),
            zones: HashMap::new(),
            suspects: Vec::new(),
            suspect_held: vec![0; pieces],
            next_census: now,
            cursor: 0,
            rare: HashMap::new(),
        }
    }

    /// `id` holds piece `i` now.
    fn gained(&mut self, i: usize, id: &str) {
        self.holders[i] += 1;
        if self.holders[i] <= RARE {
            self.rare.entry(i as u32).or_default().push(id.to_owned());
        } else {
            self.rare.remove(&(i as u32));
        }
    }

    /// `id` no longer holds piece `i` (or is leaving; the caller drops it from `peers` first).
    fn lost(&mut self, i: usize, id: &str) {
        self.holders[i] -= 1;
        if self.holders[i] > RARE {
            return;
        }
        match self.rare.get_mut(&(i as u32)) {
            Some(list) => list.retain(|h| h != id),
            None => {
                // Rare again: list its holders.
                let list = self.peers.iter().filter(|(h, p)| *h != id && p.holds(i as u32)).map(|(h, _)| h.clone());
                let list = list.collect();
                self.rare.insert(i as u32, list);
            }
        }
    }

    /// Makes `agent` (registered `seq`-th, in `zone`) a member holding
    /// `have`. A join says all the agent holds now (reports only add to it):
    /// a blob evicted from its cache is no longer counted. Seed pieces
    /// reserved for it that it now holds are done with.
    pub(super) fn enter(&mut self, agent: &str, seq: u64, zone: &str, have: &[u32]) -> Entered {
        let newcomer = !self.peers.contains_key(agent);
        if newcomer {
            let at = self.order.partition_point(|(s, id)| (*s, id.as_str()) < (seq, agent));
            self.order.insert(at, (seq, agent.to_owned()));
            let here = self.zones.entry(zone.to_owned()).or_default();
            let at = here.partition_point(|(s, id)| (*s, id.as_str()) < (seq, agent));
            here.insert(at, (seq, agent.to_owned()));
            let peer = Peer { have: vec![false; self.pieces], seq, zone: zone.to_owned(), ..Peer::default() };
            self.peers.insert(agent.to_owned(), peer);
        }
        let Some(me) = self.peers.get_mut(agent) else { return Entered { newcomer, missing: Vec::new() } };
        let mut now_held = vec![false; self.pieces];
        for &i in have {
            if let Some(slot) = now_held.get_mut(i as usize) {
                *slot = true;
            }
        }
        let changed: Vec<(usize, bool)> = me
            .have
            .iter()
            .zip(&now_held)
            .enumerate()
            .filter(|(_, (was, is))| was != is)
            .map(|(i, (_, is))| (i, *is))
            .collect();
        me.held = now_held.iter().filter(|h| **h).count();
        me.have = now_held;
        let missing: Vec<u32> = (0..self.pieces as u32).filter(|&i| !me.have[i as usize]).collect();
        if me.suspect {
            for &(i, gained) in &changed {
                if gained {
                    self.suspect_held[i] += 1;
                } else {
                    self.suspect_held[i] -= 1;
                }
            }
        }
        for (i, gained) in changed {
            if gained {
                self.gained(i, agent);
            } else {
                self.lost(i, agent);
            }
        }
        self.reserved.retain(|i, (holder, _)| holder != agent || missing.contains(i));
        Entered { newcomer, missing }
    }

    /// Counts `id` among the suspects (see [`Swarm::suspects`]).
    pub(super) fn suspect(&mut self, id: &str) {
        if let Some(p) = self.peers.get_mut(id).filter(|p| !p.suspect) {
            p.suspect = true;
            for (n, held) in self.suspect_held.iter_mut().zip(&p.have) {
                *n += u32::from(*held);
            }
            self.suspects.push(id.to_owned());
        }
    }

    /// Makes `ids`, members all, the suspects, in place of the last.
    pub(super) fn set_suspects(&mut self, ids: Vec<String>) {
        for id in std::mem::take(&mut self.suspects) {
            if let Some(p) = self.peers.get_mut(&id) {
                p.suspect = false;
            }
        }
        self.suspect_held.iter_mut().for_each(|n| *n = 0);
        for id in ids {
            self.suspect(&id);
        }
    }

    /// Records a report of `agent`: the pieces it now holds, the parents
    /// that failed it or lied to it, and the bytes each sent. True when a
    /// piece got its first holder or a seed piece arrived: joins held open
    /// for agents with nothing to fetch should look again.
    pub(super) fn record(&mut self, agent: &str, report: &damselfly_core::p2p::ReportRequest, now: Instant) -> bool {
        let damselfly_core::p2p::ReportRequest { have, failed_parents: failed, bad_parents: bad, bytes_from, .. } =
            report;
        let first_copies = have.iter().filter(|&&i| self.holders.get(i as usize).is_none_or(|&n| n == 0)).count();
        let mut gained = Vec::new();
        if let Some(me) = self.peers.get_mut(agent) {
            for &i in have {
                if let Some(slot) = me.have.get_mut(i as usize) {
                    if !*slot {
                        *slot = true;
                        me.held += 1;
                        gained.push(i as usize);
                    }
                }
            }
            if me.suspect {
                for &i in &gained {
                    self.suspect_held[i] += 1;
                }
            }
        }
        for i in gained {
            self.gained(i, agent);
        }
        let mut seed_done = 0;
        for &i in have {
            if self.reserved.get(&i).is_some_and(|(holder, _)| holder == agent) {
                self.reserved.remove(&i);
                seed_done += 1;
            }
        }
        // An agent that reports is alive and fetching: the rest of its run
        // of seed pieces stays its own, however long the run takes.
        for (holder, at) in self.reserved.values_mut() {
            if holder == agent {
                *at = now;
            }
        }
        // A finished agent no longer takes anyone's upload slots.
        if self.peers.get(agent).is_some_and(|me| !me.lacking()) {
            self.leave_parents(agent);
        }
        for id in failed.iter().chain(bad) {
            // A seed piece it was given goes to another, rather than wait out its reservation.
            self.reserved.retain(|_, (holder, _)| holder != id);
        }
        for id in failed {
            if let Some(p) = self.peers.get_mut(id) {
                p.failed_until = Some(now + FAILURE_PENALTY);
                self.suspect(id);
            }
        }
        for id in bad {
            if let Some(p) = self.peers.get_mut(id) {
                p.bad = true;
                self.suspect(id);
            }
        }
        for (id, bytes) in bytes_from {
            if let Some(p) = self.peers.get_mut(id) {
                // Reports come about once a second: treat the bytes as a rate and smooth it.
                p.throughput = 0.7 * p.throughput + 0.3 * (*bytes as f64);
            }
        }
        first_copies + seed_done > 0
    }

    /// Takes `agent` off the upload slots of the parents it was last given.
    pub(super) fn leave_parents(&mut self, agent: &str) {
        let parents = self.peers.get_mut(agent).map(|me| std::mem::take(&mut me.parents)).unwrap_or_default();
        for p in parents {
            if let Some(parent) = self.peers.get_mut(&p) {
                parent.children.remove(agent);
            }
        }
    }

    /// Drops `agent` from the swarm: no parent, no holder of seed pieces, nobody's child.
    pub(super) fn forget(&mut self, agent: &str) {
        self.leave_parents(agent);
        if let Some(gone) = self.peers.remove(agent) {
            for (i, held) in gone.have.iter().enumerate() {
                if *held {
                    self.lost(i, agent);
                    if gone.suspect {
                        self.suspect_held[i] -= 1;
                    }
                }
            }
            if let Ok(at) = self.order.binary_search_by(|(s, id)| (*s, id.as_str()).cmp(&(gone.seq, agent))) {
                self.order.remove(at);
            }
            if let Some(here) = self.zones.get_mut(&gone.zone) {
                if let Ok(at) = here.binary_search_by(|(s, id)| (*s, id.as_str()).cmp(&(gone.seq, agent))) {
                    here.remove(at);
                }
                if here.is_empty() {
                    self.zones.remove(&gone.zone);
                }
            }
            if gone.suspect {
                self.suspects.retain(|s| s != agent);
            }
        }
        self.reserved.retain(|_, (holder, _)| holder != agent);
    }

    /// Drops every member `keep` says no to.
    pub(super) fn retain_members(&mut self, keep: impl Fn(&str) -> bool) {
        let gone: Vec<String> = self.peers.keys().filter(|id| !keep(id)).cloned().collect();
        for id in gone {
            self.forget(&id);
        }
    }

    /// How many members hold each piece.
    pub(super) fn holders(&self) -> Vec<usize> {
        self.holders.iter().map(|&n| n as usize).collect()
    }
}

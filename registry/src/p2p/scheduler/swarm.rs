//! The scheduler's records: the agents it knows, and per blob and cluster
//! the swarm of agents that want or hold it, with what each holds and what
//! the scheduler learnt about it as a parent.

use std::collections::HashMap;
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

/// One member of a swarm.
#[derive(Default)]
pub(super) struct Peer {
    pub(super) have: Vec<bool>,
    /// Sent a piece that failed verification: never a parent again in this swarm.
    pub(super) bad: bool,
    pub(super) failed_until: Option<Instant>,
    /// Bytes per second, smoothed.
    pub(super) throughput: f64,
    /// Requesters recently sent to this peer, and when: its upload slots in use.
    pub(super) children: HashMap<String, Instant>,
    /// When it was last a requester's first parent: among equals, the one
    /// that waited longest goes first, so a crowd is dealt out in turn.
    pub(super) first_choice: Option<Instant>,
}

impl Peer {
    /// It still lacks a piece of the blob.
    pub(super) fn lacking(&self) -> bool {
        self.have.iter().any(|h| !h)
    }

    /// It holds piece `i`.
    pub(super) fn holds(&self, i: u32) -> bool {
        self.have.get(i as usize) == Some(&true)
    }
}

/// The agents of one cluster that want or hold one blob.
pub(super) struct Swarm {
    pub(super) pieces: usize,
    pub(super) peers: HashMap<String, Peer>,
    /// Seed pieces handed out: piece → (agent, when).
    pub(super) reserved: HashMap<u32, (String, Instant)>,
    /// When its first member joined.
    pub(super) born: Instant,
}

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
        Swarm { pieces, peers: HashMap::new(), reserved: HashMap::new(), born: now }
    }

    /// Makes `agent` a member holding `have`. A join says all the agent
    /// holds now (reports only add to it): a blob evicted from its cache is
    /// no longer counted. Seed pieces reserved for it that it now holds are
    /// done with.
    pub(super) fn enter(&mut self, agent: &str, have: &[u32]) -> Entered {
        let newcomer = !self.peers.contains_key(agent);
        let me = self.peers.entry(agent.to_owned()).or_default();
        me.have = vec![false; self.pieces];
        for &i in have {
            if let Some(slot) = me.have.get_mut(i as usize) {
                *slot = true;
            }
        }
        let missing: Vec<u32> = (0..self.pieces as u32).filter(|&i| !me.have[i as usize]).collect();
        self.reserved.retain(|i, (holder, _)| holder != agent || missing.contains(i));
        Entered { newcomer, missing }
    }

    /// Records a report of `agent`: the pieces it now holds, the parents
    /// that failed it or lied to it, and the bytes each sent. True when a
    /// piece got its first holder or a seed piece arrived: joins held open
    /// for agents with nothing to fetch should look again.
    pub(super) fn record(&mut self, agent: &str, report: &damselfly_core::p2p::ReportRequest, now: Instant) -> bool {
        let damselfly_core::p2p::ReportRequest { have, failed_parents: failed, bad_parents: bad, bytes_from, .. } =
            report;
        let first_copies = have.iter().filter(|&&i| !self.peers.values().any(|p| p.holds(i))).count();
        if let Some(me) = self.peers.get_mut(agent) {
            for &i in have {
                if let Some(slot) = me.have.get_mut(i as usize) {
                    *slot = true;
                }
            }
        }
        let mut seed_done = 0;
        for &i in have {
            if self.reserved.get(&i).is_some_and(|(holder, _)| holder == agent) {
                self.reserved.remove(&i);
                seed_done += 1;
            }
        }
        // A finished agent no longer takes anyone's upload slots.
        if self.peers.get(agent).is_some_and(|me| !me.lacking()) {
            for p in self.peers.values_mut() {
                p.children.remove(agent);
            }
        }
        for id in failed.iter().chain(bad) {
            // A seed piece it was given goes to another, rather than wait out its reservation.
            self.reserved.retain(|_, (holder, _)| holder != id);
        }
        for id in failed {
            if let Some(p) = self.peers.get_mut(id) {
                p.failed_until = Some(now + FAILURE_PENALTY);
            }
        }
        for id in bad {
            if let Some(p) = self.peers.get_mut(id) {
                p.bad = true;
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

    /// Drops `agent` from the swarm: no parent, no holder of seed pieces, nobody's child.
    pub(super) fn forget(&mut self, agent: &str) {
        self.peers.remove(agent);
        self.reserved.retain(|_, (holder, _)| holder != agent);
        for peer in self.peers.values_mut() {
            peer.children.remove(agent);
        }
    }

    /// How many members hold each piece.
    pub(super) fn holders(&self) -> Vec<usize> {
        (0..self.pieces).map(|i| self.peers.values().filter(|p| p.have.get(i) == Some(&true)).count()).collect()
    }
}

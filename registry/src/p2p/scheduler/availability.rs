//! Who in a swarm can serve a requester right now, and how many of them
//! hold each piece: the requester fetches the rarest first, and the seed
//! gives only what nobody usable holds.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::swarm::{Agent, Peer, Swarm};

/// An agent still fetching a blob joins or reports at least every 2 s. One
/// silent for this long (a hung node, its connections open) is passed over
/// as a parent and a tree member, and the seed pieces it holds go to
/// another, long before its heartbeats lapse: a hung stripe root would
/// otherwise hold up its whole tree.
pub(super) const SILENT_FOR: Duration = Duration::from_secs(6);

/// The cluster's agents as one join sees them, at one instant.
pub(super) struct View<'a> {
    /// Every registered agent.
    pub(super) agents: &'a HashMap<String, Agent>,
    /// The instant of the join.
    pub(super) now: Instant,
    /// An agent not heard from (heartbeat, registration) for this long is gone.
    pub(super) alive: Duration,
    /// The requester.
    pub(super) me: &'a str,
}

impl View<'_> {
    /// The agent is registered and its heartbeats have not lapsed.
    pub(super) fn live(&self, id: &str) -> bool {
        self.agents.get(id).is_some_and(|a| self.now.duration_since(a.last_seen) < self.alive)
    }

    /// The agent has not joined or reported for [`SILENT_FOR`].
    pub(super) fn silent(&self, id: &str) -> bool {
        self.agents.get(id).is_none_or(|a| self.now.duration_since(a.heard) > SILENT_FOR)
    }

    /// A peer that can help the requester: another agent, alive, heard
    /// from if still fetching, never caught lying, not in a failure penalty.
    pub(super) fn usable(&self, id: &str, p: &Peer) -> bool {
        id != self.me
            && !p.bad
            && p.failed_until.is_none_or(|t| t <= self.now)
            && self.live(id)
            && !(p.lacking() && self.silent(id))
    }

    /// The requester's topology zone (empty: none).
    pub(super) fn my_zone(&self) -> &str {
        self.agents.get(self.me).map_or("", |a| a.zone.as_str())
    }
}

/// How many usable peers hold each piece of the swarm's blob.
pub(super) fn count(swarm: &Swarm, view: &View) -> Vec<u32> {
    let mut availability = vec![0u32; swarm.pieces];
    for (id, p) in &swarm.peers {
        if view.usable(id, p) {
            for (n, held) in availability.iter_mut().zip(&p.have) {
                *n += u32::from(*held);
            }
        }
    }
    availability
}

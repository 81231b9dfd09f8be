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

/// How long a census of a swarm's suspects stands.
const CENSUS_EVERY: Duration = Duration::from_secs(1);

/// Whether the member may be unusable at some moment until `until`: it is
/// bad, in a failure penalty, or its heartbeats or (while it still fetches)
/// its joins and reports may lapse by then. Hearing from an agent only ever
/// makes it more usable, so a member that is none of these stays usable.
fn suspect(view: &View, id: &str, p: &Peer, until: Instant) -> bool {
    p.bad
        || p.failed_until.is_some_and(|t| t > view.now)
        || view.agents.get(id).is_none_or(|a| {
            until.saturating_duration_since(a.last_seen) >= view.alive
                || (p.lacking() && until.saturating_duration_since(a.heard) > SILENT_FOR)
        })
}

/// Looks at every member of the swarm at most every [`CENSUS_EVERY`] and
/// keeps as suspects those that may be unusable before the next census; the
/// requester, whose lacking pieces may have changed as it joined, is looked
/// at every time. Between censuses a report adds the parents it blames, so
/// that a join needs to look only at the suspects to know who is usable.
pub(super) fn census(swarm: &mut Swarm, view: &View) {
    if view.now >= swarm.next_census {
        let until = view.now + CENSUS_EVERY;
        let suspects =
            swarm.peers.iter().filter(|(id, p)| suspect(view, id, p, until)).map(|(id, _)| id.clone()).collect();
        swarm.set_suspects(suspects);
        swarm.next_census = until;
    } else if swarm.peers.get(view.me).is_some_and(|p| suspect(view, view.me, p, swarm.next_census)) {
        swarm.suspect(view.me);
    }
}

/// The members other than the requester that cannot serve it now, in order of registration.
pub(super) fn unusable<'a>(swarm: &'a Swarm, view: &View) -> Vec<(u64, &'a str)> {
    let mut out: Vec<(u64, &str)> = swarm
        .suspects
        .iter()
        .filter(|id| id.as_str() != view.me)
        .filter_map(|id| swarm.peers.get_key_value(id))
        .filter(|(id, p)| !view.usable(id, p))
        .map(|(id, p)| (p.seq, id.as_str()))
        .collect();
    out.sort_unstable();
    out
}

/// How many usable peers hold each piece of the swarm's blob: every
/// holder, less the requester and the members that cannot serve it.
/// `unusable` are suspects all, so when they are most of the suspects the
/// pieces of the others are added back to the holders that are not
/// suspects, rather than theirs taken away.
pub(super) fn count(swarm: &Swarm, view: &View, unusable: &[(u64, &str)]) -> Vec<u32> {
    let mut availability = swarm.holders.clone();
    let subtract = |availability: &mut Vec<u32>, p: &Peer| {
        for (n, held) in availability.iter_mut().zip(&p.have) {
            *n -= u32::from(*held);
        }
    };
    if 2 * unusable.len() <= swarm.suspects.len() {
        for (_, id) in unusable {
            if let Some(p) = swarm.peers.get(*id) {
                subtract(&mut availability, p);
            }
        }
    } else {
        // Every suspect's pieces out, then those of the suspects that are
        // not unusable (the requester among them: it is taken out below) back.
        for (n, s) in availability.iter_mut().zip(&swarm.suspect_held) {
            *n -= s;
        }
        for (id, p) in swarm.suspects.iter().filter_map(|id| swarm.peers.get_key_value(id)) {
            if id == view.me || view.usable(id, p) {
                for (n, held) in availability.iter_mut().zip(&p.have) {
                    *n += u32::from(*held);
                }
            }
        }
    }
    if let Some(me) = swarm.peers.get(view.me) {
        subtract(&mut availability, me);
    }
    availability
}
